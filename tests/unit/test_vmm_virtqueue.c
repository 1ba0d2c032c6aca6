/* virtqueue.c against a fake driver: guest RAM is two heap blocks of exactly their
 * size with a hole between them (so ASan flags any access outside guest RAM), and a
 * few helpers lay out the split rings as a Linux driver would. One test per rule of
 * virtq_pop's validation (virtqueue.h), then signalling, notifications, wrap-around
 * and the chain copy helpers. */
#include <endian.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "common/util.h"
#include "vmm/virtio/virtqueue.h"

/* RAM: [0, 64 KiB) and [128 KiB, 192 KiB); [64 KiB, 128 KiB) is a hole. */
#define R0_SIZE 0x10000ULL
#define R1_GPA 0x20000ULL
#define R1_SIZE 0x10000ULL
#define DESC_GPA 0x1000ULL  /* up to 1024 * 16 bytes */
#define AVAIL_GPA 0x6000ULL /* up to 6 + 2 * 1024 */
#define USED_GPA 0x7000ULL  /* up to 6 + 8 * 1024 */
#define DATA_GPA 0xA000ULL
#define TABLE_GPA 0xC000ULL /* indirect tables */

#define GiB (1ULL << 30)

struct drv {
        struct guest_mem gm;
        bool heap; /* regions are heap blocks (else guest_mem_init's memfd) */
        struct virtq q;
        struct virtq_chain c;
        uint16_t size; /* the driver's ring size */
        uint16_t avail_idx;
};

static void drv_free(struct drv **dp)
{
        struct drv *d = *dp;
        if (!d)
                return;
        if (d->heap) {
                free(d->gm.regions[0].host);
                free(d->gm.regions[1].host);
        } else {
                guest_mem_destroy(&d->gm);
        }
        free(d);
}
#define cleanup_drv __attribute__((cleanup(drv_free)))

static struct drv *drv_new(void)
{
        struct drv *d = calloc(1, sizeof(*d));
        d->heap = true;
        d->gm.memfd = -1;
        d->gm.regions[0] = (struct guest_region){ .gpa = 0, .size = R0_SIZE, .host = calloc(1, R0_SIZE) };
        d->gm.regions[1] = (struct guest_region){ .gpa = R1_GPA, .size = R1_SIZE, .host = calloc(1, R1_SIZE) };
        d->gm.n_regions = 2;
        d->gm.size = R0_SIZE + R1_SIZE;
        return d;
}

static void *host(struct drv *d, uint64_t gpa, uint64_t len)
{
        return guest_mem_ptr(&d->gm, gpa, len);
}

static bool drv_enable(struct drv *d, uint16_t size, bool indirect, bool event_idx)
{
        d->q.size = d->size = size;
        d->q.desc_gpa = DESC_GPA;
        d->q.avail_gpa = AVAIL_GPA;
        d->q.used_gpa = USED_GPA;
        d->q.indirect = indirect;
        d->q.event_idx = event_idx;
        d->q.ready = true;
        return virtq_enable(&d->q, &d->gm);
}

/* A Linux-like driver with 16 entries, no features. */
static struct drv *drv_ready(uint16_t size, bool indirect, bool event_idx)
{
        struct drv *d = drv_new();
        if (!drv_enable(d, size, indirect, event_idx)) {
                drv_free(&d);
                return NULL;
        }
        return d;
}

static void desc_put(struct drv *d, uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
        struct vring_desc v = { htole64(addr), htole32(len), htole16(flags), htole16(next) };
        memcpy(host(d, table + 16ULL * i, 16), &v, 16);
}

static void desc_set(struct drv *d, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
        desc_put(d, DESC_GPA, i, addr, len, flags, next);
}

static void avail_set_idx(struct drv *d, uint16_t idx)
{
        uint16_t v = htole16(idx);
        memcpy(host(d, AVAIL_GPA + 2, 2), &v, 2);
}

static void avail_add(struct drv *d, uint16_t head)
{
        uint16_t v = htole16(head);
        memcpy(host(d, AVAIL_GPA + 4 + 2ULL * (d->avail_idx % d->size), 2), &v, 2);
        avail_set_idx(d, ++d->avail_idx);
}

static void avail_flags(struct drv *d, uint16_t flags)
{
        uint16_t v = htole16(flags);
        memcpy(host(d, AVAIL_GPA, 2), &v, 2);
}

static void used_event_set(struct drv *d, uint16_t ev)
{
        uint16_t v = htole16(ev);
        memcpy(host(d, AVAIL_GPA + 4 + 2ULL * d->size, 2), &v, 2);
}

static uint16_t rd16(struct drv *d, uint64_t gpa)
{
        uint16_t v;
        memcpy(&v, host(d, gpa, 2), 2);
        return le16toh(v);
}

static uint32_t rd32(struct drv *d, uint64_t gpa)
{
        uint32_t v;
        memcpy(&v, host(d, gpa, 4), 4);
        return le32toh(v);
}

static uint16_t used_idx(struct drv *d)
{
        return rd16(d, USED_GPA + 2);
}

static uint16_t avail_event(struct drv *d)
{
        return rd16(d, USED_GPA + 4 + 8ULL * d->size);
}

/* One readable and one writable buffer at head 0: the smallest request. */
static void chain_simple(struct drv *d)
{
        desc_set(d, 0, DATA_GPA, 16, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, DATA_GPA + 16, 32, VRING_DESC_F_WRITE, 0);
}

static bool broken_by(struct drv *d, const char *why)
{
        return virtq_pop(&d->q, &d->c) == -1 && d->q.broken && d->q.broken_why && strstr(d->q.broken_why, why);
}

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

/* A guest vCPU flips descriptors between a valid buffer and one outside RAM
 * (huge, in the hole, writable, looping) while the device pops: every chain that
 * comes out is one of the two versions, never a mix of checked and unchecked
 * fields. A double fetch shows up as a chain outside RAM (ASan in the asan build). */
struct flipper {
        struct drv *d;
        uint8_t *desc0, *entry0;
        bool stop;
};

static void *flip(void *arg)
{
        struct flipper *f = arg;
        struct vring_desc good = { htole64(DATA_GPA), htole32(16), 0, 0 };
        struct vring_desc evil = { htole64(0x18000), htole32(0xffffffff),
                                   htole16(VRING_DESC_F_WRITE | VRING_DESC_F_NEXT), 0 };
        uint64_t *dst[2] = { (uint64_t *)f->desc0, (uint64_t *)f->entry0 };
        for (unsigned int n = 0; !__atomic_load_n(&f->stop, __ATOMIC_RELAXED); n++) {
                const uint64_t *src = (const uint64_t *)(n & 1 ? &evil : &good);
                for (int t = 0; t < 2; t++) {
                        __atomic_store_n(&dst[t][0], src[0], __ATOMIC_RELAXED);
                        __atomic_store_n(&dst[t][1], src[1], __ATOMIC_RELAXED);
                }
        }
        return NULL;
}

TEST(rule4_descriptors_rewritten_during_pop)
{
        cleanup_drv struct drv *d = drv_ready(16, true, false);
        CHECK(d);
        /* Head 0 is a direct buffer, head 1 an indirect table of one: both flip. */
        desc_set(d, 0, DATA_GPA, 16, 0, 0);
        desc_set(d, 1, TABLE_GPA, 16, VRING_DESC_F_INDIRECT, 0);
        desc_put(d, TABLE_GPA, 0, DATA_GPA, 16, 0, 0);
        struct flipper f = { d, host(d, DESC_GPA, 16), host(d, TABLE_GPA, 16), false };
        pthread_t t;
        CHECK(pthread_create(&t, NULL, flip, &f) == 0);
        unsigned int good = 0, broken = 0;
        bool ok = true;
        /* On a loaded host the flipper may get little CPU: go on until both versions
         * were seen often enough, for at most a few seconds. */
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (unsigned int n = 0; ok; n++) {
                if (n % 1024 == 0) {
                        clock_gettime(CLOCK_MONOTONIC, &now);
                        if (now.tv_sec - start.tv_sec >= 5 || (n >= 200000 && good >= 1000 && broken >= 1000))
                                break;
                }
                avail_add(d, n & 1);
                int r = virtq_pop(&d->q, &d->c);
                if (r == 1) {
                        ok = d->c.n_out == 1 && d->c.n_in == 0 && d->c.out_len == 16 &&
                             d->c.iov[0].iov_base == host(d, DATA_GPA, 16) && d->c.iov[0].iov_len == 16;
                        good++;
                        continue;
                }
                ok = r == -1 && d->q.broken;
                broken++;
                d->avail_idx = 0;
                avail_set_idx(d, 0);
                ok = ok && virtq_enable(&d->q, &d->gm);
        }
        __atomic_store_n(&f.stop, true, __ATOMIC_RELAXED);
        pthread_join(t, NULL);
        CHECK(ok);
        if (good == 0 || broken == 0)
                SKIP("the flipping thread never ran alongside the pops");
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

/* ---- signalling and notifications ------------------------------------------- */

TEST(no_interrupt_flag)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        chain_simple(d);
        avail_add(d, 0);
        avail_add(d, 0);
        CHECK(!virtq_should_signal(&d->q)); /* nothing pushed yet */
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_push(&d->q, 0, 0);
        CHECK(virtq_should_signal(&d->q));
        CHECK(!virtq_should_signal(&d->q)); /* nothing new */
        avail_flags(d, VRING_AVAIL_F_NO_INTERRUPT);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_push(&d->q, 0, 0);
        CHECK(!virtq_should_signal(&d->q));
        avail_flags(d, 0);
        CHECK(!virtq_should_signal(&d->q)); /* already answered for that one */
        /* With EVENT_IDX the flag is ignored: used_event decides. */
        cleanup_drv struct drv *e = drv_ready(16, false, true);
        CHECK(e);
        chain_simple(e);
        avail_add(e, 0);
        avail_add(e, 0);
        CHECK(virtq_pop(&e->q, &e->c) == 1);
        virtq_push(&e->q, 0, 0);
        CHECK(virtq_should_signal(&e->q));
        avail_flags(e, VRING_AVAIL_F_NO_INTERRUPT);
        used_event_set(e, 1);
        CHECK(virtq_pop(&e->q, &e->c) == 1);
        virtq_push(&e->q, 0, 0);
        CHECK(virtq_should_signal(&e->q));
}

TEST(event_idx_signalling)
{
        cleanup_drv struct drv *d = drv_ready(16, false, true);
        CHECK(d);
        chain_simple(d);
        for (int i = 0; i < 8; i++)
                avail_add(d, 0);
        /* Nothing pushed: no. The first answer after a push is yes: nothing was signalled yet. */
        CHECK(!virtq_should_signal(&d->q));
        used_event_set(d, 100);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_push(&d->q, 0, 0); /* used idx 1 */
        CHECK(virtq_should_signal(&d->q));
        /* The driver wants an interrupt once entry 3 is used (used idx becomes 4). */
        used_event_set(d, 3);
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_push(&d->q, 0, 0); /* 2 */
        CHECK(!virtq_should_signal(&d->q));
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_push(&d->q, 0, 0); /* 3 */
        CHECK(!virtq_should_signal(&d->q));
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_push(&d->q, 0, 0); /* 4 */
        CHECK(virtq_should_signal(&d->q));
        /* Several pushes at once crossing the event: one yes. */
        used_event_set(d, 5);
        for (int i = 0; i < 3; i++) {
                CHECK(virtq_pop(&d->q, &d->c) == 1);
                virtq_push(&d->q, 0, 0); /* 5, 6, 7 */
        }
        CHECK(virtq_should_signal(&d->q));
        CHECK(!virtq_should_signal(&d->q));
        /* A stale used_event behind: no interrupt. */
        CHECK(virtq_pop(&d->q, &d->c) == 1);
        virtq_push(&d->q, 0, 0); /* 8 */
        CHECK(!virtq_should_signal(&d->q));
}

TEST(set_notification)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        virtq_set_notification(&d->q, false);
        CHECK(rd16(d, USED_GPA) == VRING_USED_F_NO_NOTIFY);
        virtq_set_notification(&d->q, true);
        CHECK(rd16(d, USED_GPA) == 0);

        cleanup_drv struct drv *e = drv_ready(16, false, true);
        CHECK(e);
        chain_simple(e);
        avail_add(e, 0);
        avail_add(e, 0);
        CHECK(virtq_pop(&e->q, &e->c) == 1);
        CHECK(avail_event(e) == 1);
        virtq_set_notification(&e->q, false);
        CHECK(rd16(e, USED_GPA) == 0 && avail_event(e) == 1);
        CHECK(virtq_pop(&e->q, &e->c) == 1);
        memset(host(e, USED_GPA + 4 + 8 * 16, 2), 0, 2);
        virtq_set_notification(&e->q, true);
        CHECK(avail_event(e) == 2 && rd16(e, USED_GPA) == 0);
}

/* ---- 16-bit wrap-around --------------------------------------------------------- */

TEST(index_wrap_around)
{
        cleanup_drv struct drv *d = drv_ready(4, false, true);
        CHECK(d);
        chain_simple(d);
        desc_set(d, 2, DATA_GPA + 64, 8, 0, 0);
        unsigned int total = 0;
        for (unsigned int n = 0; n < 0x10000 + 10; n++) {
                avail_add(d, n % 2 ? 2 : 0);
                total++;
                if (n % 3 == 0) {
                        avail_add(d, 2);
                        total++;
                }
                while (virtq_pop(&d->q, &d->c) == 1)
                        virtq_push(&d->q, d->c.head, d->c.head == 2 ? 0 : 32);
                CHECK(!d->q.broken);
                CHECK(d->q.last_avail == d->avail_idx && used_idx(d) == d->avail_idx);
                CHECK(avail_event(d) == d->avail_idx);
        }
        CHECK(total > 0x10000 && d->q.last_avail == (uint16_t)total); /* it wrapped */
        /* Across the wrap, "size + 1 ahead" is still caught. */
        avail_set_idx(d, (uint16_t)(d->avail_idx + 5));
        CHECK(broken_by(d, "available index"));
}

/* ---- chain copy helpers -------------------------------------------------------- */

TEST(chain_read_write_bounds)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        uint8_t *ram = host(d, 0, R0_SIZE);
        memcpy(ram + DATA_GPA, "abc", 3);
        memcpy(ram + DATA_GPA + 0x10, "defgh", 5);
        memset(ram + DATA_GPA + 0x100, '.', 0x40);
        desc_set(d, 0, DATA_GPA, 3, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, DATA_GPA + 0x10, 5, VRING_DESC_F_NEXT, 2);
        desc_set(d, 2, DATA_GPA + 0x101, 2, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 3);
        desc_set(d, 3, DATA_GPA + 0x110, 4, VRING_DESC_F_WRITE, 0);
        avail_add(d, 0);
        CHECK(virtq_pop(&d->q, &d->c) == 1);

        char buf[32] = { 0 };
        CHECK(virtq_chain_read(&d->c, 0, buf, sizeof(buf)) == 8);
        CHECK(memcmp(buf, "abcdefgh", 8) == 0);
        memset(buf, 0, sizeof(buf));
        CHECK(virtq_chain_read(&d->c, 2, buf, 3) == 3 && memcmp(buf, "cde", 3) == 0);
        CHECK(virtq_chain_read(&d->c, 7, buf, 10) == 1 && buf[0] == 'h');
        CHECK(virtq_chain_read(&d->c, 8, buf, 10) == 0);
        CHECK(virtq_chain_read(&d->c, SIZE_MAX, buf, 10) == 0);
        CHECK(virtq_chain_read(&d->c, 0, buf, 0) == 0);

        CHECK(virtq_chain_write(&d->c, 1, "XYZW", 4) == 4);
        CHECK(memcmp(ram + DATA_GPA + 0x100, "..X.", 4) == 0);
        CHECK(memcmp(ram + DATA_GPA + 0x110, "YZW.", 4) == 0);
        CHECK(virtq_chain_write(&d->c, 0, "0123456789", 10) == 6);
        CHECK(memcmp(ram + DATA_GPA + 0x100, ".01.", 4) == 0);
        CHECK(memcmp(ram + DATA_GPA + 0x110, "2345.", 5) == 0);
        CHECK(virtq_chain_write(&d->c, 6, "x", 1) == 0);
        CHECK(virtq_chain_write(&d->c, SIZE_MAX - 1, "xy", 2) == 0);
        /* Writing never touches the readable buffers. */
        CHECK(memcmp(ram + DATA_GPA, "abc", 3) == 0 && memcmp(ram + DATA_GPA + 0x10, "defgh", 5) == 0);
}
