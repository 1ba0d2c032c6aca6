#include <stdint.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "vmm/bus.h"

struct rec {
        int calls;
        uint64_t offset;
        uint32_t len;
        bool is_write;
        uint8_t last[8];
};

static void handler(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct rec *r = opaque;
        r->calls++;
        r->offset = offset;
        r->len = len;
        r->is_write = is_write;
        if (is_write)
                memcpy(r->last, data, len);
        else
                memset(data, 0x42, len);
}

TEST(overlap_rejected)
{
        struct bus bus;
        struct rec a = { 0 };
        bus_init(&bus);
        cleanup_error cap_error_t err = NULL;
        CHECK(bus_register(&bus, 0x100, 0x10, handler, &a, "a", &err) == 0);
        CHECK(bus_register(&bus, 0x10f, 1, handler, &a, "b", &err) == -1);
        CHECK(err && strstr(err->msg, "overlaps a"));
        cap_error_free(&err);
        CHECK(bus_register(&bus, 0xf8, 0x10, handler, &a, "c", &err) == -1);
        cap_error_free(&err);
        CHECK(bus_register(&bus, 0x0, 0x1000, handler, &a, "d", &err) == -1); /* covers a */
        cap_error_free(&err);
        CHECK(bus_register(&bus, 0x104, 2, handler, &a, "e", &err) == -1); /* inside a */
        cap_error_free(&err);
        /* Adjacent ranges are fine. */
        CHECK(bus_register(&bus, 0xf0, 0x10, handler, &a, "below", &err) == 0);
        CHECK(bus_register(&bus, 0x110, 0x10, handler, &a, "above", &err) == 0);
        CHECK(bus.n == 3);
}

TEST(bad_ranges_rejected)
{
        struct bus bus;
        bus_init(&bus);
        cleanup_error cap_error_t err = NULL;
        CHECK(bus_register(&bus, 0x100, 0, handler, NULL, "empty", &err) == -1);
        cap_error_free(&err);
        CHECK(bus_register(&bus, UINT64_MAX - 2, 8, handler, NULL, "wraps", &err) == -1);
        cap_error_free(&err);
        CHECK(bus_register(&bus, UINT64_MAX - 7, 8, handler, NULL, "top", &err) == 0);
}

TEST(full_bus_rejected)
{
        struct bus bus;
        bus_init(&bus);
        cleanup_error cap_error_t err = NULL;
        for (int i = 0; i < (int)ARRAY_SIZE(bus.ranges); i++)
                CHECK(bus_register(&bus, (uint64_t)i * 16, 16, handler, NULL, "r", &err) == 0);
        CHECK(bus_register(&bus, 0x10000, 16, handler, NULL, "one more", &err) == -1);
        CHECK(err && strstr(err->msg, "full"));
}

TEST(dispatch_offsets)
{
        struct bus bus;
        struct rec lo = { 0 }, mid = { 0 }, hi = { 0 };
        bus_init(&bus);
        cleanup_error cap_error_t err = NULL;
        /* Registered out of order: dispatch must still find each. */
        CHECK(bus_register(&bus, 0x3f8, 8, handler, &hi, "com1", &err) == 0);
        CHECK(bus_register(&bus, 0x60, 1, handler, &lo, "i8042", &err) == 0);
        CHECK(bus_register(&bus, 0x70, 2, handler, &mid, "rtc", &err) == 0);

        uint8_t data[4] = { 0xaa };
        CHECK(bus_dispatch(&bus, 0x3fd, data, 1, false));
        CHECK(hi.calls == 1 && hi.offset == 5 && hi.len == 1 && !hi.is_write && data[0] == 0x42);
        data[0] = 0x99;
        CHECK(bus_dispatch(&bus, 0x71, data, 1, true));
        CHECK(mid.calls == 1 && mid.offset == 1 && mid.is_write && mid.last[0] == 0x99);
        CHECK(bus_dispatch(&bus, 0x60, data, 1, true));
        CHECK(lo.calls == 1 && lo.offset == 0);
        CHECK(bus_dispatch(&bus, 0x3f8, data, 4, false));
        CHECK(hi.calls == 2 && hi.offset == 0 && hi.len == 4);
}

TEST(unclaimed_reads_all_ones)
{
        struct bus bus;
        struct rec r = { 0 };
        bus_init(&bus);
        cleanup_error cap_error_t err = NULL;
        CHECK(bus_register(&bus, 0x70, 2, handler, &r, "rtc", &err) == 0);
        uint8_t data[4] = { 1, 2, 3, 4 };
        CHECK(!bus_dispatch(&bus, 0x72, data, 4, false));
        CHECK(data[0] == 0xff && data[1] == 0xff && data[2] == 0xff && data[3] == 0xff);
        CHECK(!bus_dispatch(&bus, 0x6f, data, 1, true));
        /* An access that runs past a device's range is not the device's. */
        memset(data, 0, sizeof(data));
        CHECK(!bus_dispatch(&bus, 0x71, data, 2, false));
        CHECK(data[0] == 0xff && data[1] == 0xff);
        CHECK(r.calls == 0);
        /* An empty bus. */
        struct bus empty;
        bus_init(&empty);
        CHECK(!bus_dispatch(&empty, 0, data, 1, false) && data[0] == 0xff);
}
