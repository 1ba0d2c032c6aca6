/* virtqueue.c beyond validation: interrupt suppression (NO_INTERRUPT, EVENT_IDX),
 * notification suppression, 16-bit index wrap-around, the chain copy helpers, and
 * a guest rewriting descriptors while the device pops. The fake driver is virtq_drv.h. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "virtq_drv.h"

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
        /* Pops while kicks are off leave avail_event behind; enabling catches it up. */
        CHECK(virtq_pop(&e->q, &e->c) == 1);
        CHECK(avail_event(e) == 1);
        virtq_set_notification(&e->q, true);
        CHECK(avail_event(e) == 2 && rd16(e, USED_GPA) == 0);
        avail_add(e, 0);
        CHECK(virtq_pop(&e->q, &e->c) == 1);
        CHECK(avail_event(e) == 3);
}

/* Kicks off altogether (a device that looks at the queue anyway): whatever the driver adds,
 * from whatever index, it is not asked to kick, until kicks are enabled again. */
TEST(kicks_off)
{
        cleanup_drv struct drv *d = drv_ready(16, false, false);
        CHECK(d);
        virtq_kicks_off(&d->q);
        CHECK(rd16(d, USED_GPA) == VRING_USED_F_NO_NOTIFY && d->q.notify_off);
        virtq_set_notification(&d->q, true);
        CHECK(rd16(d, USED_GPA) == 0 && !d->q.notify_off);

        cleanup_drv struct drv *e = drv_ready(16, false, true);
        CHECK(e);
        chain_simple(e);
        for (uint16_t start = 0; start < 40; start++) {
                avail_add(e, 0);
                CHECK(virtq_pop(&e->q, &e->c) == 1);
                virtq_push(&e->q, 0, 0);
                virtq_kicks_off(&e->q);
                CHECK(rd16(e, USED_GPA) == 0);
                /* The driver's test (Linux's vring_need_event) for one to a full ring's worth. */
                for (uint16_t n = 1; n <= 16; n++)
                        CHECK(!vring_need_event(avail_event(e), (uint16_t)(e->avail_idx + n), e->avail_idx));
                /* Pops while off do not ask for kicks again. */
                avail_add(e, 0);
                CHECK(virtq_pop(&e->q, &e->c) == 1);
                virtq_push(&e->q, 0, 0);
                CHECK(!vring_need_event(avail_event(e), (uint16_t)(e->avail_idx + 1), e->avail_idx));
                virtq_set_notification(&e->q, true);
                CHECK(vring_need_event(avail_event(e), (uint16_t)(e->avail_idx + 1), e->avail_idx));
        }
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

TEST(push_many_publishes_once_across_the_wrap)
{
        /* A 4-entry ring whose used index is at 2: three chains come back as one index update,
         * their elements at ring slots 2, 3 and 0. */
        cleanup_drv struct drv *d = drv_ready(4, false, true);
        CHECK(d);
        chain_simple(d);
        for (unsigned int i = 0; i < 2; i++) {
                avail_add(d, 0);
                CHECK(virtq_pop(&d->q, &d->c) == 1);
                virtq_push(&d->q, 0, 1);
        }
        for (unsigned int i = 0; i < 3; i++) {
                avail_add(d, 0);
                CHECK(virtq_pop(&d->q, &d->c) == 1);
        }
        const uint16_t heads[3] = { 0, 0, 0 };
        const uint32_t lens[3] = { 100, 200, 300 };
        virtq_push_many(&d->q, heads, lens, 3);
        CHECK(used_idx(d) == 5 && d->q.used_idx == 5);
        CHECK(rd32(d, USED_GPA + 4 + 8 * 2 + 4) == 100 && rd32(d, USED_GPA + 4 + 8 * 3 + 4) == 200);
        CHECK(rd32(d, USED_GPA + 4 + 4) == 300);
        CHECK(virtq_should_signal(&d->q));
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
