/* virtqueue.c's validation against a fake driver (virtq_drv.h): enabling, normal and
 * indirect chains, then one test per rule of virtq_pop (virtqueue.h, DESIGN.md
 * "Validate each chain once"), with the limits on both sides where it matters.
 * Signalling, notifications, wrap-around and copies: test_vmm_virtqueue_ring.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "virtq_drv.h"

/* ---- enable ---------------------------------------------------------------- */

TEST(enable_checks_rings)
{
        cleanup_drv struct drv *d = drv_new();
        CHECK(drv_enable(d, 16, false, false));
        CHECK(!d->q.broken && d->q.desc && d->q.avail && d->q.used);
        CHECK(drv_enable(d, 1, false, false));
        CHECK(drv_enable(d, VIRTQ_MAX_SIZE, false, false));

        const uint16_t bad_sizes[] = { 0, 3, 12, 2 * VIRTQ_MAX_SIZE, 0xffff };
        for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
                CHECK(!drv_enable(d, bad_sizes[i], false, false));
                CHECK(d->q.broken && strstr(d->q.broken_why, "size"));
                CHECK(virtq_pop(&d->q, &d->c) == -1);
        }

        struct {
                uint64_t *field;
                uint64_t gpa;
                const char *why;
        } bad[] = {
                { &d->q.desc_gpa, DESC_GPA + 8, "descriptor" },      /* not 16-aligned */
                { &d->q.desc_gpa, R0_SIZE - 16 * 8, "descriptor" },  /* runs into the hole */
                { &d->q.desc_gpa, 0x18000, "descriptor" },           /* in the hole */
                { &d->q.desc_gpa, R1_GPA + R1_SIZE, "descriptor" },  /* past the end */
                { &d->q.avail_gpa, AVAIL_GPA + 1, "available" },
                { &d->q.avail_gpa, R0_SIZE - 6 - 2 * 16 + 2, "available" },
                { &d->q.avail_gpa, UINT64_MAX - 1, "available" },    /* gpa + len wraps */
                { &d->q.used_gpa, USED_GPA + 2, "used" },
                { &d->q.used_gpa, R1_GPA + R1_SIZE - 128, "used" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                CHECK(drv_enable(d, 16, false, false));
                *bad[i].field = bad[i].gpa;
                CHECK(!virtq_enable(&d->q, &d->gm));
                CHECK(d->q.broken && strstr(d->q.broken_why, bad[i].why));
                CHECK(d->q.desc == NULL && d->q.used == NULL);
        }
        /* Exactly fitting at the end of a region is fine. */
        CHECK(drv_enable(d, 16, false, false));
        d->q.used_gpa = R1_GPA + R1_SIZE - 6 - 8 * 16 - 2; /* 4-aligned */
        CHECK(virtq_enable(&d->q, &d->gm));
}

TEST(size_written_after_enable_is_ignored)
{
        /* The used ring ends exactly at the end of RAM; a transport that let the driver
         * grow size afterwards must not let the rings be indexed past what was checked. */
        cleanup_drv struct drv *d = drv_new();
        d->q.size = d->size = 16;
        d->q.desc_gpa = DESC_GPA;
        d->q.avail_gpa = AVAIL_GPA;
        d->q.used_gpa = R1_GPA + R1_SIZE - 6 - 8 * 16 - 2;
        d->q.event_idx = true;
        CHECK(virtq_enable(&d->q, &d->gm));
        chain_simple(d);
        d->q.size = VIRTQ_MAX_SIZE;
        for (int i = 0; i < 17; i++) {
                avail_add(d, 0);
                CHECK(virtq_pop(&d->q, &d->c) == 1);
                virtq_push(&d->q, (uint16_t)i, 0);
        }
        CHECK(virtq_should_signal(&d->q));
        CHECK(rd32(d, d->q.used_gpa + 4) == 16); /* the 17th element went to slot 0 */
        CHECK(rd16(d, d->q.used_gpa + 2) == 17);
        avail_add(d, 16);
        CHECK(broken_by(d, "head"));
}

TEST(not_enabled_queue_is_quiet)
{
        cleanup_drv struct drv *d = drv_new();
        d->q.size = 16;
        CHECK(virtq_pop(&d->q, &d->c) == 0);
        virtq_push(&d->q, 0, 1);
        CHECK(!virtq_should_signal(&d->q));
        virtq_set_notification(&d->q, false);
        CHECK(!d->q.broken);
}

TEST(reset_zeroes)
{
        cleanup_drv struct drv *d = drv_ready(16, true, true);
        CHECK(d);
        chain_simple(d);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_reset(&d->q);
        CHECK(d->q.size == 0 && d->q.desc_gpa == 0 && !d->q.ready && !d->q.indirect && !d->q.event_idx);
        CHECK(d->q.desc == NULL && d->q.mem == NULL && d->q.last_avail == 0 && !d->q.broken);
        CHECK(virtq_pop(&d->q, &d->c) == 0);
}

/* ---- normal operation ------------------------------------------------------- */

TEST(normal_chain)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        CHECK(virtq_pop(&d->q, &d->c) == 0);
        desc_set(d, 5, DATA_GPA, 16, VRING_DESC_F_NEXT, 9);
        desc_set(d, 9, R1_GPA + 0x100, 100, VRING_DESC_F_NEXT, 2);
        desc_set(d, 2, DATA_GPA + 0x100, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 3);
        desc_set(d, 3, DATA_GPA + 0x400, 1, VRING_DESC_F_WRITE, 0);
        avail_add(d, 5);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(d->c.head == 5 && d->c.n_out == 2 && d->c.n_in == 2);
        CHECK(d->c.out_len == 116 && d->c.in_len == 513);
        CHECK(d->c.iov[0].iov_base == host(d, DATA_GPA, 16) && d->c.iov[0].iov_len == 16);
        CHECK(d->c.iov[1].iov_base == host(d, R1_GPA + 0x100, 100) && d->c.iov[1].iov_len == 100);
        CHECK(d->c.iov[2].iov_base == host(d, DATA_GPA + 0x100, 512) && d->c.iov[2].iov_len == 512);
        CHECK(d->c.iov[3].iov_base == host(d, DATA_GPA + 0x400, 1) && d->c.iov[3].iov_len == 1);
        CHECK(d->q.last_avail == 1);
        CHECK(virtq_pop(&d->q, &d->c) == 0);

        virtq_push(&d->q, 5, 513);
        CHECK(used_idx(d) == 1);
        CHECK(rd32(d, USED_GPA + 4) == 5 && rd32(d, USED_GPA + 8) == 513);
        CHECK(!d->q.broken);
}

TEST(indirect_chain)
{
        cleanup_drv struct drv *d = drv_ready(16, true, false);
        CHECK(d);
        /* A direct readable buffer, then the table; a table entry's NEXT stays inside it. */
        desc_set(d, 0, DATA_GPA, 8, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, TABLE_GPA, 3 * 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE, 0); /* WRITE ignored */
        desc_put(d, TABLE_GPA, 0, DATA_GPA + 0x10, 4, VRING_DESC_F_NEXT, 2);
        desc_put(d, TABLE_GPA, 2, R1_GPA, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
        desc_put(d, TABLE_GPA, 1, R1_GPA + 64, 64, VRING_DESC_F_WRITE, 0);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(d->c.head == 0 && d->c.n_out == 2 && d->c.n_in == 2 && d->c.out_len == 12 && d->c.in_len == 128);
        CHECK(d->c.iov[1].iov_base == host(d, DATA_GPA + 0x10, 4));
        CHECK(d->c.iov[2].iov_base == host(d, R1_GPA, 64) && d->c.iov[3].iov_base == host(d, R1_GPA + 64, 64));

        /* An unaligned table in the high region, exactly size entries. */
        desc_set(d, 4, R1_GPA + 0x1003, 16 * 16, VRING_DESC_F_INDIRECT, 0);
        for (uint16_t i = 0; i < 16; i++)
                desc_put(d, R1_GPA + 0x1003, i, DATA_GPA + i, 1, i < 15 ? VRING_DESC_F_NEXT : 0, i + 1);
        avail_add(d, 4);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(d->c.n_out == 16 && d->c.out_len == 16 && d->c.iov[15].iov_base == host(d, DATA_GPA + 15, 1));
}

/* ---- rule 1: a broken queue is never read again ------------------------------- */

TEST(rule1_broken_queue_not_read_again)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        chain_simple(d);
        avail_add(d, 16); /* bad head */
        CHECK(broken_by(d, "head"));
        const char *why = d->q.broken_why;
        /* The guest "fixes" the ring: still broken, same reason, nothing taken. */
        uint16_t ok = htole16(0);
        memcpy(host(d, AVAIL_GPA + 4, 2), &ok, 2);
        CHECK(virtq_pop(&d->q, &d->c) == -1);
        CHECK(d->q.broken_why == why && d->q.last_avail == 0);
        /* Nor is the used ring written. */
        virtq_push(&d->q, 0, 1);
        CHECK(used_idx(d) == 0);
        CHECK(!virtq_should_signal(&d->q));
        virtq_set_notification(&d->q, false);
        CHECK(rd16(d, USED_GPA) == 0);
}

/* ---- rule 2: avail index at most size ahead --------------------------------- */

TEST(rule2_avail_idx_ahead)
{
        cleanup_drv struct drv *d = drv_ready(8, false, false);
        CHECK(d);
        desc_set(d, 0, DATA_GPA, 4, 0, 0);
        /* Exactly size ahead: every entry is taken. */
        for (int i = 0; i < 8; i++)
                avail_add(d, 0);
        for (int i = 0; i < 8; i++)
                CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(virtq_pop(&d->q, &d->c) == 0);
        /* size + 1 ahead of last_avail (8): broken. */
        avail_set_idx(d, 8 + 9);
        CHECK(broken_by(d, "available index"));
        CHECK(d->q.last_avail == 8);
}

TEST(rule2_avail_idx_behind)
{
        /* An index moved backwards is 65535 ahead in 16-bit arithmetic. */
        cleanup_drv struct drv *d = drv_ready(8, false, false);
        CHECK(d);
        desc_set(d, 0, DATA_GPA, 4, 0, 0);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        avail_set_idx(d, 0);
        CHECK(broken_by(d, "available index"));
}

/* ---- rule 3: head index < size ------------------------------------------------ */

TEST(rule3_head_index)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        desc_set(d, 15, DATA_GPA, 4, 0, 0);
        avail_add(d, 15);
        CHECK(virtq_pop(&d->q, &d->c) == 1 && d->c.head == 15);
        avail_add(d, 16);
        CHECK(broken_by(d, "head"));
        CHECK(d->q.last_avail == 1);

        cleanup_drv struct drv *e = drv_ready(16, false, false);
        CHECK(e);
        avail_add(e, 0xffff);
        CHECK(broken_by(e, "head"));
}

/* ---- rule 4: descriptors are copied once -------------------------------------- */

TEST(rule4_rewrite_after_pop_does_not_change_chain)
{
        cleanup_drv struct drv *d = drv_ready(16, true, false);
        CHECK(d);
        desc_set(d, 0, DATA_GPA, 16, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, TABLE_GPA, 16, VRING_DESC_F_INDIRECT, 0);
        desc_put(d, TABLE_GPA, 0, DATA_GPA + 0x100, 32, VRING_DESC_F_WRITE, 0);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        struct virtq_chain before = d->c;
        /* The guest now points everything outside RAM and makes loops. */
        desc_set(d, 0, 0x18000, 0xffffffff, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 0);
        desc_set(d, 1, 0x18000, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
        desc_put(d, TABLE_GPA, 0, UINT64_MAX, 0xffffffff, VRING_DESC_F_NEXT, 0);
        CHECK(d->c.head == before.head && d->c.n_out == 1 && d->c.n_in == 1);
        CHECK(d->c.out_len == 16 && d->c.in_len == 32);
        CHECK(memcmp(d->c.iov, before.iov, 2 * sizeof(struct iovec)) == 0);
        CHECK(d->c.iov[1].iov_base == host(d, DATA_GPA + 0x100, 32));
        CHECK(!d->q.broken);
}
/* ---- rule 5: indirect tables --------------------------------------------------- */

static struct drv *indirect_case(bool negotiated, uint64_t table, uint32_t len, uint16_t flags)
{
        struct drv *d = drv_ready(16, negotiated, false);
        desc_set(d, 0, table, len, VRING_DESC_F_INDIRECT | flags, 1);
        desc_set(d, 1, DATA_GPA, 4, 0, 0);
        for (uint16_t i = 0; i < 16; i++)
                desc_put(d, TABLE_GPA, i, DATA_GPA + i, 1, 0, 0);
        avail_add(d, 0);
        return d;
}

TEST(rule5_indirect_not_negotiated)
{
        cleanup_drv struct drv *d = indirect_case(false, TABLE_GPA, 16, 0);
        CHECK(broken_by(d, "INDIRECT_DESC"));
        cleanup_drv struct drv *ok = indirect_case(true, TABLE_GPA, 16, 0);
        CHECK(virtq_pop(&ok->q, &ok->c) == 1 && ok->c.n_out == 1);
}

TEST(rule5_indirect_nested)
{
        cleanup_drv struct drv *d = indirect_case(true, TABLE_GPA, 32, 0);
        desc_put(d, TABLE_GPA, 0, TABLE_GPA + 0x100, 16, VRING_DESC_F_INDIRECT, 0);
        CHECK(broken_by(d, "nested"));
}

TEST(rule5_indirect_with_next)
{
        cleanup_drv struct drv *d = indirect_case(true, TABLE_GPA, 16, VRING_DESC_F_NEXT);
        CHECK(broken_by(d, "NEXT"));
}

TEST(rule5_indirect_length)
{
        const uint32_t bad[] = { 0, 8, 17, 16 * 16 + 16, 0xfffffff0 };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cleanup_drv struct drv *d = indirect_case(true, TABLE_GPA, bad[i], 0);
                CHECK(broken_by(d, "indirect table length"));
        }
        cleanup_drv struct drv *ok = indirect_case(true, TABLE_GPA, 16 * 16, 0);
        CHECK(virtq_pop(&ok->q, &ok->c) == 1);
}

TEST(rule5_indirect_table_in_ram)
{
        const uint64_t bad[] = { 0x18000, R0_SIZE - 16, R1_GPA + R1_SIZE - 16, R1_GPA + R1_SIZE, UINT64_MAX - 15 };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cleanup_drv struct drv *d = indirect_case(true, bad[i], 32, 0);
                CHECK(broken_by(d, "indirect table outside"));
        }
        cleanup_drv struct drv *ok = indirect_case(true, R1_GPA + R1_SIZE - 32, 32, 0);
        CHECK(virtq_pop(&ok->q, &ok->c) == 1 && ok->c.n_out == 0); /* zeroed entries: zero lengths */
}

TEST(rule5_indirect_next_inside_table)
{
        cleanup_drv struct drv *d = indirect_case(true, TABLE_GPA, 32, 0);
        desc_put(d, TABLE_GPA, 0, DATA_GPA, 1, VRING_DESC_F_NEXT, 2); /* the table has 2 entries */
        CHECK(broken_by(d, "indirect table"));
        cleanup_drv struct drv *ok = indirect_case(true, TABLE_GPA, 32, 0);
        desc_put(ok, TABLE_GPA, 0, DATA_GPA, 1, VRING_DESC_F_NEXT, 1);
        CHECK(virtq_pop(&ok->q, &ok->c) == 1 && ok->c.n_out == 2);
}

TEST(rule5_direct_next_in_range)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        desc_set(d, 0, DATA_GPA, 4, VRING_DESC_F_NEXT, 16);
        avail_add(d, 0);
        CHECK(broken_by(d, "next index"));
}

/* ---- rule 6: at most size buffers per chain ------------------------------------- */

TEST(rule6_loop)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        desc_set(d, 0, DATA_GPA, 4, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, DATA_GPA, 4, VRING_DESC_F_NEXT, 0);
        avail_add(d, 0);
        CHECK(broken_by(d, "longer than the queue size"));
}

TEST(rule6_zero_length_loop)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        desc_set(d, 3, DATA_GPA, 0, VRING_DESC_F_NEXT, 3);
        avail_add(d, 3);
        CHECK(broken_by(d, "longer than the queue size"));
}

TEST(rule6_exactly_size_buffers)
{
        cleanup_drv struct drv *d = drv_ready(VIRTQ_MAX_SIZE, false, false);
        CHECK(d);
        for (uint16_t i = 0; i < VIRTQ_MAX_SIZE; i++)
                desc_set(d, i, DATA_GPA + i, 1, i + 1 < VIRTQ_MAX_SIZE ? VRING_DESC_F_NEXT : 0, i + 1);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(d->c.n_out == VIRTQ_MAX_SIZE && d->c.out_len == VIRTQ_MAX_SIZE);
        CHECK(d->c.iov[VIRTQ_MAX_SIZE - 1].iov_base == host(d, DATA_GPA + VIRTQ_MAX_SIZE - 1, 1));
}

TEST(rule6_counted_across_indirect)
{
        /* One direct buffer plus a full table of 16 is 17 > 16. */
        cleanup_drv struct drv *d = drv_ready(16, true, false);
        CHECK(d);
        desc_set(d, 0, DATA_GPA, 4, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, TABLE_GPA, 16 * 16, VRING_DESC_F_INDIRECT, 0);
        for (uint16_t i = 0; i < 16; i++)
                desc_put(d, TABLE_GPA, i, DATA_GPA + i, 1, i < 15 ? VRING_DESC_F_NEXT : 0, i + 1);
        avail_add(d, 0);
        CHECK(broken_by(d, "longer than the queue size"));
}

TEST(rule6_loop_inside_indirect)
{
        cleanup_drv struct drv *d = drv_ready(16, true, false);
        CHECK(d);
        desc_set(d, 0, TABLE_GPA, 32, VRING_DESC_F_INDIRECT, 0);
        desc_put(d, TABLE_GPA, 0, DATA_GPA, 0, VRING_DESC_F_NEXT, 1);
        desc_put(d, TABLE_GPA, 1, DATA_GPA, 0, VRING_DESC_F_NEXT, 0);
        avail_add(d, 0);
        CHECK(broken_by(d, "longer than the queue size"));
}

/* ---- rule 7: each buffer ------------------------------------------------------ */

TEST(rule7_zero_length_skipped)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        /* A zero-length buffer anywhere, even at an address outside RAM, adds nothing. */
        desc_set(d, 0, 0x18000, 0, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, DATA_GPA, 8, VRING_DESC_F_NEXT, 2);
        desc_set(d, 2, UINT64_MAX, 0, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 3);
        desc_set(d, 3, DATA_GPA + 8, 8, VRING_DESC_F_WRITE, 0);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(d->c.n_out == 1 && d->c.n_in == 1 && d->c.out_len == 8 && d->c.in_len == 8);
        CHECK(d->c.iov[0].iov_base == host(d, DATA_GPA, 8) && d->c.iov[1].iov_base == host(d, DATA_GPA + 8, 8));
}

TEST(rule7_buffer_in_ram)
{
        const struct {
                uint64_t addr;
                uint32_t len;
        } bad[] = {
                { 0x18000, 1 },                   /* the hole */
                { R0_SIZE - 4, 8 },               /* runs into the hole */
                { R1_GPA - 1, 2 },                /* straddles the hole's end */
                { R1_GPA + R1_SIZE, 1 },          /* past the end */
                { R1_GPA + R1_SIZE - 1, 2 },
                { UINT64_MAX, 2 },                /* addr + len wraps to 0 */
                { UINT64_MAX - 0xfff, 0x2000 },
                { 0, 0xffffffff },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                for (int w = 0; w < 2; w++) {
                        cleanup_drv struct drv *d = drv_ready(16, false, false);
                        CHECK(d);
                        desc_set(d, 0, bad[i].addr, bad[i].len, w ? VRING_DESC_F_WRITE : 0, 0);
                        avail_add(d, 0);
                        CHECK(broken_by(d, "outside guest RAM"));
                }
        }
        /* The last byte of each region, and all of it. */
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        desc_set(d, 0, R0_SIZE - 1, 1, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, R1_GPA, R1_SIZE, VRING_DESC_F_WRITE, 0);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1 && d->c.out_len == 1 && d->c.in_len == R1_SIZE);
        uint8_t two[2] = { 0x5a, 0x5a };
        CHECK(virtq_chain_read(&d->c, 0, two, 2) == 1);
        CHECK(virtq_chain_write(&d->c, R1_SIZE - 1, two, 2) == 1);
}

TEST(rule7_buffer_across_adjacent_regions_refused)
{
        /* capsule's regions never touch (the PCI hole separates them); if two did, a
         * buffer across the seam is still refused rather than split. */
        cleanup_drv struct drv *d = drv_new();
        d->gm.regions[1].gpa = R0_SIZE;
        CHECK(drv_enable(d, 16, false, false));
        desc_set(d, 0, R0_SIZE - 8, 16, 0, 0);
        avail_add(d, 0);
        CHECK(broken_by(d, "outside guest RAM"));
}

TEST(rule7_readable_after_writable)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        desc_set(d, 0, DATA_GPA, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, DATA_GPA + 4, 4, 0, 0);
        avail_add(d, 0);
        CHECK(broken_by(d, "readable buffer after a writable"));

        /* Same inside an indirect table. */
        cleanup_drv struct drv *e = drv_ready(16, true, false);
        CHECK(e);
        desc_set(e, 0, DATA_GPA, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
        desc_set(e, 1, TABLE_GPA, 16, VRING_DESC_F_INDIRECT, 0);
        desc_put(e, TABLE_GPA, 0, DATA_GPA + 8, 4, 0, 0);
        avail_add(e, 0);
        CHECK(broken_by(e, "readable buffer after a writable"));
}

TEST(rule7_totals_within_32_bits)
{
        /* Large buffers need large RAM: a sparse memfd, never touched. */
        cleanup_drv struct drv *d = calloc(1, sizeof(*d));
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&d->gm, 3 * GiB, false, &err) == 0);
        CHECK(drv_enable(d, 16, false, false));
        desc_set(d, 0, 0x10000, 0x80000000, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, 0x10000, 0x7fffffff, VRING_DESC_F_NEXT, 2);
        desc_set(d, 2, 0x10000, 0x80000000, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 3);
        desc_set(d, 3, 0x10000, 0x7fffffff, VRING_DESC_F_WRITE, 0);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(d->c.out_len == UINT32_MAX && d->c.in_len == UINT32_MAX);

        desc_set(d, 1, 0x10000, 0x80000000, VRING_DESC_F_NEXT, 2);
        avail_add(d, 0);
        CHECK(broken_by(d, "readable buffers total"));

        CHECK(drv_enable(d, 16, false, false));
        d->avail_idx = 0;
        avail_set_idx(d, 0);
        desc_set(d, 1, 0x10000, 0x7fffffff, VRING_DESC_F_NEXT, 2);
        desc_set(d, 3, 0x10000, 0x80000000, VRING_DESC_F_WRITE, 0);
        avail_add(d, 0);
        CHECK(broken_by(d, "writable buffers total"));
}

/* ---- rule 8: state moves only after a valid chain -------------------------------- */

TEST(rule8_advance_after_validation)
{
        cleanup_drv struct drv *d = drv_ready(16, false, true);
        CHECK(d);
        chain_simple(d);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(d->q.last_avail == 1 && avail_event(d) == 1);
        /* The second chain's last buffer is bad: nothing moves. */
        desc_set(d, 2, DATA_GPA, 4, VRING_DESC_F_NEXT, 3);
        desc_set(d, 3, 0x18000, 4, 0, 0);
        avail_add(d, 2);
        CHECK(broken_by(d, "outside guest RAM"));
        CHECK(d->q.last_avail == 1 && avail_event(d) == 1);
}

TEST(rule8_no_avail_event_without_event_idx)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        chain_simple(d);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        CHECK(avail_event(d) == 0);
}
