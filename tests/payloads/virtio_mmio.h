/* A minimal virtio-mmio (version 2) driver for ring-3 payloads: find a device by id in
 * the MMIO windows, negotiate VERSION_1 only, and drive one split queue that lives in
 * the payload's own memory (identity-mapped, so its addresses are guest-physical).
 * Interrupts are off in payloads: the driver polls the used ring and the status. */
#ifndef CAPSULE_PAYLOAD_VIRTIO_MMIO_H
#define CAPSULE_PAYLOAD_VIRTIO_MMIO_H

#include <stdint.h>

#include "payload.h"

#define MMIO_START 0xC0000000ULL /* LAYOUT_MMIO_START */
#define MMIO_SCAN_END (MMIO_START + 0x100000ULL)
#define MMIO_SCAN_STEP 0x1000ULL /* src/vmm/virtio/mmio.c: one 4 KiB window per device */

#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW 0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH 0x0a4

#define VIRTIO_MAGIC 0x74726976 /* "virt" */
#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 0x40
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define QSIZE 8

struct vdesc {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        uint16_t next;
};

struct vqueue {
        struct vdesc desc[QSIZE] __attribute__((aligned(16)));
        struct {
                uint16_t flags, idx, ring[QSIZE];
        } avail __attribute__((aligned(2)));
        struct {
                uint16_t flags, idx;
                struct {
                        uint32_t id, len;
                } ring[QSIZE];
        } used __attribute__((aligned(4)));
        uint16_t last_used;
};

static inline uint32_t mmio_read(uint64_t base, uint32_t reg)
{
        return *(volatile uint32_t *)(base + reg);
}

static inline void mmio_write(uint64_t base, uint32_t reg, uint32_t v)
{
        *(volatile uint32_t *)(base + reg) = v;
}

static inline void barrier(void)
{
        __asm__ volatile("mfence" ::: "memory");
}

/* The first window with this device id, or 0. */
static inline uint64_t virtio_mmio_find(uint32_t device_id)
{
        for (uint64_t base = MMIO_START; base < MMIO_SCAN_END; base += MMIO_SCAN_STEP)
                if (mmio_read(base, VIRTIO_MMIO_MAGIC_VALUE) == VIRTIO_MAGIC && mmio_read(base, VIRTIO_MMIO_VERSION) == 2 &&
                    mmio_read(base, VIRTIO_MMIO_DEVICE_ID) == device_id)
                        return base;
        return 0;
}

/* Reset, negotiate VERSION_1 (and nothing else), set queue 0 up over q and go live.
 * 0, or the step that failed (1-based). */
static inline int virtio_mmio_setup(uint64_t base, struct vqueue *q)
{
        mmio_write(base, VIRTIO_MMIO_STATUS, 0);
        if (mmio_read(base, VIRTIO_MMIO_STATUS) != 0)
                return 1;
        mmio_write(base, VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE);
        mmio_write(base, VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        mmio_write(base, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        if (!(mmio_read(base, VIRTIO_MMIO_DEVICE_FEATURES) & 1)) /* VIRTIO_F_VERSION_1, bit 32 */
                return 2;
        mmio_write(base, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        mmio_write(base, VIRTIO_MMIO_DRIVER_FEATURES, 0);
        mmio_write(base, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        mmio_write(base, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        mmio_write(base, VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        if (!(mmio_read(base, VIRTIO_MMIO_STATUS) & STATUS_FEATURES_OK))
                return 3;
        mmio_write(base, VIRTIO_MMIO_QUEUE_SEL, 0);
        if (mmio_read(base, VIRTIO_MMIO_QUEUE_NUM_MAX) < QSIZE)
                return 4;
        for (unsigned i = 0; i < sizeof(*q); i++)
                ((volatile uint8_t *)q)[i] = 0;
        mmio_write(base, VIRTIO_MMIO_QUEUE_NUM, QSIZE);
        mmio_write(base, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)(uint64_t)q->desc);
        mmio_write(base, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)((uint64_t)q->desc >> 32));
        mmio_write(base, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)(uint64_t)&q->avail);
        mmio_write(base, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)((uint64_t)&q->avail >> 32));
        mmio_write(base, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)(uint64_t)&q->used);
        mmio_write(base, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)((uint64_t)&q->used >> 32));
        mmio_write(base, VIRTIO_MMIO_QUEUE_READY, 1);
        if (mmio_read(base, VIRTIO_MMIO_QUEUE_READY) != 1)
                return 5;
        mmio_write(base, VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        if (mmio_read(base, VIRTIO_MMIO_STATUS) & STATUS_NEEDS_RESET)
                return 6;
        return 0;
}

/* Offer the chain starting at head and notify queue 0. */
static inline void virtio_mmio_kick(uint64_t base, struct vqueue *q, uint16_t head)
{
        q->avail.ring[q->avail.idx % QSIZE] = head;
        barrier();
        ((volatile struct vqueue *)q)->avail.idx = (uint16_t)(q->avail.idx + 1);
        barrier();
        mmio_write(base, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

/* Wait (bounded: the event loop serves the kick) for the next used entry: 1 got it, 0 not. */
static inline int virtio_mmio_wait_used(struct vqueue *q, uint32_t *id, uint32_t *len)
{
        volatile struct vqueue *vq = q;
        for (uint64_t spin = 0; spin < 1000000000ULL; spin++) {
                if (vq->used.idx != q->last_used) {
                        barrier();
                        *id = vq->used.ring[q->last_used % QSIZE].id;
                        *len = vq->used.ring[q->last_used % QSIZE].len;
                        q->last_used++;
                        return 1;
                }
                cpu_relax();
        }
        return 0;
}

/* Wait (bounded) until the device reports DEVICE_NEEDS_RESET. */
static inline int virtio_mmio_wait_needs_reset(uint64_t base)
{
        for (uint64_t tries = 0; tries < 1000000ULL; tries++) {
                if (mmio_read(base, VIRTIO_MMIO_STATUS) & STATUS_NEEDS_RESET)
                        return 1;
                for (int i = 0; i < 1000; i++) /* a register read is a VM exit: ask less often */
                        cpu_relax();
        }
        return 0;
}

#endif
