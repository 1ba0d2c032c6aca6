#include "vmm/bus.h"

#include <string.h>

#include "common/util.h"

void bus_init(struct bus *bus)
{
        memset(bus, 0, sizeof(*bus));
        pthread_mutex_init(&bus->lock, NULL);
}

/* Ranges are kept sorted by base so dispatch is a binary search. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, bus_handler_fn fn, void *opaque, const char *name, cap_error_t *err)
{
        if (len == 0 || base + len - 1 < base)
                return cap_fail(err, 0, "bus range of %s at %#llx, length %#llx, is empty or wraps", name,
                                (unsigned long long)base, (unsigned long long)len);
        pthread_mutex_lock(&bus->lock);
        if (bus->n == (int)ARRAY_SIZE(bus->ranges)) {
                pthread_mutex_unlock(&bus->lock);
                return cap_fail(err, 0, "bus range of %s: the bus is full (%zu ranges)", name, ARRAY_SIZE(bus->ranges));
        }
        int pos = 0;
        while (pos < bus->n && bus->ranges[pos].base < base)
                pos++;
        const struct bus_range *prev = pos > 0 ? &bus->ranges[pos - 1] : NULL;
        const struct bus_range *next = pos < bus->n ? &bus->ranges[pos] : NULL;
        const struct bus_range *clash = NULL;
        if (prev && prev->base + (prev->len - 1) >= base)
                clash = prev;
        else if (next && next->base <= base + (len - 1))
                clash = next;
        if (clash) {
                int r = cap_fail(err, 0, "bus range [%#llx, %#llx] of %s overlaps %s at [%#llx, %#llx]",
                                 (unsigned long long)base, (unsigned long long)(base + len - 1), name, clash->name,
                                 (unsigned long long)clash->base, (unsigned long long)(clash->base + clash->len - 1));
                pthread_mutex_unlock(&bus->lock);
                return r;
        }
        memmove(&bus->ranges[pos + 1], &bus->ranges[pos], (size_t)(bus->n - pos) * sizeof(bus->ranges[0]));
        bus->ranges[pos] = (struct bus_range){ .base = base, .len = len, .fn = fn, .opaque = opaque, .name = name };
        bus->n++;
        pthread_mutex_unlock(&bus->lock);
        return 0;
}

bool bus_dispatch(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
        int lo = 0, hi = bus->n - 1;
        while (lo <= hi) {
                int mid = lo + (hi - lo) / 2;
                const struct bus_range *r = &bus->ranges[mid];
                if (addr < r->base) {
                        hi = mid - 1;
                } else if (addr - r->base >= r->len) {
                        lo = mid + 1;
                } else {
                        /* An access that runs past the end of the device's range is not the device's. */
                        if (len > r->len - (addr - r->base))
                                break;
                        r->fn(r->opaque, addr - r->base, data, len, is_write);
                        return true;
                }
        }
        if (!is_write)
                memset(data, 0xff, len);
        return false;
}
