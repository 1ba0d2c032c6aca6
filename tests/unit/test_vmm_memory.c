#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "vmm/memory.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

TEST(layout_512m)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 512 * MiB, false, &err) == 0);
        CHECK(gm.n_regions == 1);
        CHECK(gm.regions[0].gpa == 0 && gm.regions[0].size == 512 * MiB && gm.regions[0].offset == 0);
        CHECK(gm.regions[0].host == gm.base);
        CHECK(guest_mem_low_end(&gm) == 512 * MiB);
        guest_mem_destroy(&gm);
}

TEST(layout_3g)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 3 * GiB, false, &err) == 0);
        CHECK(gm.n_regions == 1);
        CHECK(gm.regions[0].gpa == 0 && gm.regions[0].size == 3 * GiB);
        CHECK(guest_mem_low_end(&gm) == GUEST_PCI_HOLE_START);
        CHECK(guest_mem_ptr(&gm, 3 * GiB - 1, 1) != NULL);
        CHECK(guest_mem_ptr(&gm, 3 * GiB, 1) == NULL);
        CHECK(guest_mem_ptr(&gm, 4 * GiB, 1) == NULL);
        guest_mem_destroy(&gm);
}

TEST(layout_5g)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 5 * GiB, false, &err) == 0);
        CHECK(gm.n_regions == 2);
        CHECK(gm.size == 5 * GiB);
        CHECK(gm.regions[0].gpa == 0 && gm.regions[0].size == 3 * GiB && gm.regions[0].offset == 0);
        CHECK(gm.regions[1].gpa == 4 * GiB && gm.regions[1].size == 2 * GiB && gm.regions[1].offset == 3 * GiB);
        CHECK(gm.regions[1].host == gm.base + 3 * GiB);
        CHECK(guest_mem_low_end(&gm) == 3 * GiB);
        guest_mem_destroy(&gm);
}

TEST(bounds_region_edges)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 512 * MiB, false, &err) == 0);
        CHECK(guest_mem_ptr(&gm, 0, 512 * MiB) == gm.base);
        CHECK(guest_mem_ptr(&gm, 0, 512 * MiB + 1) == NULL);
        CHECK(guest_mem_ptr(&gm, 512 * MiB - 4, 4) == gm.base + 512 * MiB - 4);
        CHECK(guest_mem_ptr(&gm, 512 * MiB - 4, 5) == NULL);
        CHECK(guest_mem_ptr(&gm, 512 * MiB, 1) == NULL);
        CHECK(guest_mem_ptr(&gm, 512 * MiB, 0) == NULL);
        CHECK(guest_mem_ptr(&gm, 0x1000, 0) == gm.base + 0x1000);
        guest_mem_destroy(&gm);
}

TEST(bounds_overflow)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 5 * GiB, false, &err) == 0);
        /* gpa + len wraps around to a small address inside RAM. */
        CHECK(guest_mem_ptr(&gm, UINT64_MAX, 2) == NULL);
        CHECK(guest_mem_ptr(&gm, 0x1000, UINT64_MAX) == NULL);
        CHECK(guest_mem_ptr(&gm, UINT64_MAX - 0xfff, 0x2000) == NULL);
        CHECK(guest_mem_ptr(&gm, 4 * GiB + 0x1000, UINT64_MAX - 0x800) == NULL);
        uint8_t b = 0;
        CHECK(guest_mem_read(&gm, UINT64_MAX, &b, 2) == -1);
        CHECK(guest_mem_write(&gm, UINT64_MAX - 1, &b, 3) == -1);
        guest_mem_destroy(&gm);
}

TEST(bounds_hole)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 5 * GiB, false, &err) == 0);
        CHECK(guest_mem_ptr(&gm, 3 * GiB - 8, 8) != NULL);
        CHECK(guest_mem_ptr(&gm, 3 * GiB - 8, 16) == NULL); /* runs into the hole */
        CHECK(guest_mem_ptr(&gm, 3 * GiB, 1) == NULL);
        CHECK(guest_mem_ptr(&gm, 0xFEE00000ULL, 4) == NULL);
        CHECK(guest_mem_ptr(&gm, 4 * GiB - 1, 2) == NULL); /* straddles the hole's end */
        CHECK(guest_mem_ptr(&gm, 4 * GiB, 1) == gm.base + 3 * GiB);
        CHECK(guest_mem_ptr(&gm, 6 * GiB - 1, 1) == gm.base + 5 * GiB - 1);
        CHECK(guest_mem_ptr(&gm, 6 * GiB - 1, 2) == NULL);
        CHECK(guest_mem_ptr(&gm, 6 * GiB, 1) == NULL);
        /* A region never reaches across into the next one, even if both are RAM. */
        CHECK(guest_mem_ptr(&gm, 0, 6 * GiB) == NULL);
        guest_mem_destroy(&gm);
}

TEST(read_write_high_region)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 5 * GiB, false, &err) == 0);
        const char msg[] = "high";
        CHECK(guest_mem_write(&gm, 4 * GiB + 16, msg, sizeof(msg)) == 0);
        CHECK(memcmp(gm.base + 3 * GiB + 16, msg, sizeof(msg)) == 0);
        char back[sizeof(msg)] = { 0 };
        CHECK(guest_mem_read(&gm, 4 * GiB + 16, back, sizeof(back)) == 0);
        CHECK_STR(back, "high");
        CHECK(guest_mem_write(&gm, 3 * GiB + 16, msg, sizeof(msg)) == -1);
        guest_mem_destroy(&gm);
}

TEST(zero_size_fails)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 0, false, &err) == -1);
        CHECK(err && strstr(err->msg, "size"));
}

/* With no free huge pages (as on the CI hosts) the error must say so. */
TEST(hugepages_unavailable)
{
        cleanup_free char *text = NULL;
        cleanup_error cap_error_t ignored = NULL;
        if (read_file("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", &text, NULL, 64, &ignored) < 0 ||
            atoi(text) >= 64)
                SKIP("free 2 MiB huge pages unknown or 64 or more here: no shortage to show");
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 128 * MiB, true, &err) == -1);
        CHECK(err && strstr(err->msg, "huge pages"));
}

/* A fill through the memfd (a kernel image's size, of an odd length, and a small one): every
 * byte lands where the mapping shows it, nothing around the range changes, and a range outside
 * guest RAM is refused. */
TEST(fill_copies_every_byte)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 64 * MiB, false, &err) == 0);
        size_t lens[] = { 13 * MiB + 4097, 3 };
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
                size_t len = lens[i];
                uint8_t *src = malloc(len);
                CHECK(src != NULL);
                for (size_t j = 0; j < len; j++)
                        src[j] = (uint8_t)(j * 131 + j / 4096 + 1);
                memset(gm.base, 0xaa, len + 2);
                CHECK(guest_mem_fill(&gm, 1, src, len) == 0);
                CHECK(memcmp(gm.base + 1, src, len) == 0);
                CHECK(gm.base[0] == 0xaa && gm.base[len + 1] == 0xaa);
                free(src);
        }
        const uint8_t byte = 1;
        CHECK(guest_mem_fill(&gm, 64 * MiB, &byte, 1) == -1);
        CHECK(guest_mem_fill(&gm, 64 * MiB - 1, &byte, 2) == -1);
        guest_mem_destroy(&gm);
}

/* A load from a file: the bytes from the given offset land where the mapping shows them, nothing
 * around the range changes, and a range outside guest RAM or past the file's end is refused with
 * a message that says which. */
TEST(load_file_copies_every_byte_from_the_offset)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        const size_t off = 4099, len = 13 * MiB + 4097;
        FILE *f = tmpfile();
        uint8_t *src = malloc(off + len);
        CHECK(f != NULL && src != NULL);
        for (size_t j = 0; j < off + len; j++)
                src[j] = (uint8_t)(j * 131 + j / 4096 + 1);
        CHECK(write_all(fileno(f), src, off + len) == 0);
        CHECK(guest_mem_init(&gm, 64 * MiB, false, &err) == 0);
        memset(gm.base, 0xaa, len + 2);
        CHECK(guest_mem_load_file(&gm, 1, fileno(f), off, len, &err) == 0);
        CHECK(memcmp(gm.base + 1, src + off, len) == 0);
        CHECK(gm.base[0] == 0xaa && gm.base[len + 1] == 0xaa);

        CHECK(guest_mem_load_file(&gm, 64 * MiB - 1, fileno(f), 0, 2, &err) == -1);
        CHECK(err && strstr(err->msg, "outside guest RAM"));
        cap_error_free(&err);
        CHECK(guest_mem_load_file(&gm, 0, fileno(f), off, len + 1, &err) == -1);
        CHECK(err && strstr(err->msg, "ends at"));
        guest_mem_destroy(&gm);
        free(src);
        fclose(f);
}
