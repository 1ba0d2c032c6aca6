/* A fake virtio driver for the virtqueue tests: guest RAM is two heap blocks of
 * exactly their size with a hole between them (so ASan flags any access outside
 * guest RAM), and helpers lay out split rings as a Linux driver would. */
#ifndef CAPSULE_TESTS_VIRTQ_DRV_H
#define CAPSULE_TESTS_VIRTQ_DRV_H

#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
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

static inline void drv_free(struct drv **dp)
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

static inline struct drv *drv_new(void)
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

static inline void *host(struct drv *d, uint64_t gpa, uint64_t len)
{
        return guest_mem_ptr(&d->gm, gpa, len);
}

static inline bool drv_enable(struct drv *d, uint16_t size, bool indirect, bool event_idx)
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
static inline struct drv *drv_ready(uint16_t size, bool indirect, bool event_idx)
{
        struct drv *d = drv_new();
        if (!drv_enable(d, size, indirect, event_idx)) {
                drv_free(&d);
                return NULL;
        }
        return d;
}

static inline void desc_put(struct drv *d, uint64_t table, uint16_t i, uint64_t addr, uint32_t len,
                            uint16_t flags, uint16_t next)
{
        struct vring_desc v = { htole64(addr), htole32(len), htole16(flags), htole16(next) };
        memcpy(host(d, table + 16ULL * i, 16), &v, 16);
}

static inline void desc_set(struct drv *d, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                            uint16_t next)
{
        desc_put(d, DESC_GPA, i, addr, len, flags, next);
}

static inline void avail_set_idx(struct drv *d, uint16_t idx)
{
        uint16_t v = htole16(idx);
        memcpy(host(d, AVAIL_GPA + 2, 2), &v, 2);
}

static inline void avail_add(struct drv *d, uint16_t head)
{
        uint16_t v = htole16(head);
        memcpy(host(d, AVAIL_GPA + 4 + 2ULL * (d->avail_idx % d->size), 2), &v, 2);
        avail_set_idx(d, ++d->avail_idx);
}

static inline void avail_flags(struct drv *d, uint16_t flags)
{
        uint16_t v = htole16(flags);
        memcpy(host(d, AVAIL_GPA, 2), &v, 2);
}

static inline void used_event_set(struct drv *d, uint16_t ev)
{
        uint16_t v = htole16(ev);
        memcpy(host(d, AVAIL_GPA + 4 + 2ULL * d->size, 2), &v, 2);
}

static inline uint16_t rd16(struct drv *d, uint64_t gpa)
{
        uint16_t v;
        memcpy(&v, host(d, gpa, 2), 2);
        return le16toh(v);
}

static inline uint32_t rd32(struct drv *d, uint64_t gpa)
{
        uint32_t v;
        memcpy(&v, host(d, gpa, 4), 4);
        return le32toh(v);
}

static inline uint16_t used_idx(struct drv *d)
{
        return rd16(d, USED_GPA + 2);
}

static inline uint16_t avail_event(struct drv *d)
{
        return rd16(d, USED_GPA + 4 + 8ULL * d->size);
}

/* One readable and one writable buffer at head 0: the smallest request. */
static inline void chain_simple(struct drv *d)
{
        desc_set(d, 0, DATA_GPA, 16, VRING_DESC_F_NEXT, 1);
        desc_set(d, 1, DATA_GPA + 16, 32, VRING_DESC_F_WRITE, 0);
}

static inline bool broken_by(struct drv *d, const char *why)
{
        return virtq_pop(&d->q, &d->c) == -1 && d->q.broken && d->q.broken_why && strstr(d->q.broken_why, why);
}

#endif
