/* Split virtqueues: the only code that reads or writes ring memory (virtqueue.c).
 * Every chain is validated once, in virtq_pop(), before a device sees it: the head and
 * avail indexes, chain length (which also catches loops), the indirect-table rules,
 * buffer order and every buffer against guest RAM. A violation marks the queue broken
 * and it is never read again; the device layer then asks the driver for a reset.
 * Descriptors are copied once into locals, so the guest rewriting them mid-way cannot
 * change what was checked. Pure logic over struct guest_mem: unit-tested and fuzzed alone. */
#ifndef CAPSULE_VMM_VIRTIO_VIRTQUEUE_H
#define CAPSULE_VMM_VIRTIO_VIRTQUEUE_H

#include <linux/virtio_ring.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/memory.h"

/* The largest queue size capsule offers; a chain never has more buffers than its queue's size. */
#define VIRTQ_MAX_SIZE 1024

/* One validated chain: readable (driver→device) buffers first, then writable ones. */
struct virtq_chain {
        uint16_t head;         /* what virtq_push() returns to the driver */
        unsigned int n_out;    /* iov[0 .. n_out) are readable */
        unsigned int n_in;     /* iov[n_out .. n_out + n_in) are writable */
        uint32_t out_len;      /* total bytes readable */
        uint32_t in_len;       /* total bytes writable */
        struct iovec iov[VIRTQ_MAX_SIZE];
};

struct virtq {
        /* Set by the transport from the driver's writes while the queue is not enabled. */
        uint16_t size;                 /* power of two, 1 .. VIRTQ_MAX_SIZE */
        uint64_t desc_gpa, avail_gpa, used_gpa;
        bool ready;
        /* Negotiated features that change the ring's behaviour. */
        bool indirect;                 /* VIRTIO_RING_F_INDIRECT_DESC */
        bool event_idx;                /* VIRTIO_RING_F_EVENT_IDX */
        /* Device-side state. */
        const struct guest_mem *mem;
        /* Host addresses of the rings and the size they were checked for by virtq_enable();
         * NULL and 0 until then. Only virtqueue.c uses them: a later write to size (a
         * transport bug) cannot make it index past what was checked. */
        struct vring_desc *desc;
        struct vring_avail *avail;
        struct vring_used *used;
        uint16_t num;
        bool broken;
        const char *broken_why;        /* a static string naming the violated rule */
        uint16_t last_avail;           /* next avail entry to take */
        uint16_t used_idx;             /* next used entry to fill (published with release order) */
        uint16_t signalled_used;       /* used_idx when the driver was last notified */
        bool signalled_used_valid;
        bool notify_off;               /* the device asked for no kicks (virtq_set_notification) */
};

/* Check the ring addresses and size once the driver enables the queue: the
 * descriptor table, avail ring and used ring must lie in RAM with their alignment.
 * Returns false (and marks the queue broken) if not. On success the device-side
 * state starts over (indexes 0, not broken); size, addresses and ready are left
 * as the transport set them. */
bool virtq_enable(struct virtq *q, const struct guest_mem *mem);
/* Back to the state before the driver set the queue up (device reset): every field
 * is zeroed, size included, so the transport sets size to its maximum again. */
void virtq_reset(struct virtq *q);
/* 1: *chain holds the next request; 0: nothing available (or the queue is not
 * enabled); -1: the queue is broken (q->broken_why says which rule). A buffer must
 * lie inside one RAM region: the regions never touch (the PCI hole lies between
 * them), so a buffer spanning two would cross a hole and is refused. */
int virtq_pop(struct virtq *q, struct virtq_chain *chain);
/* Return head to the driver with written bytes placed in its writable buffers.
 * Ignored on a queue that is not enabled or is broken. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t written);
/* Return n chains at once: the driver sees all of them or none (one index update), as a
 * virtio-net frame spread over several receive buffers must appear. */
void virtq_push_many(struct virtq *q, const uint16_t *heads, const uint32_t *written, unsigned int n);
/* Whether the driver wants an interrupt for what was pushed since the previous call
 * (VRING_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX); false if nothing was. */
bool virtq_should_signal(struct virtq *q);
/* Ask the driver to kick (true) or not (false) on new buffers: the used ring's flags,
 * or avail_event with EVENT_IDX. After enabling, re-check with virtq_pop(). */
void virtq_set_notification(struct virtq *q, bool enable);
/* Ask the driver not to kick at all until virtq_set_notification(q, true): with EVENT_IDX,
 * avail_event just behind what was taken, which the driver's index never crosses. */
void virtq_kicks_off(struct virtq *q);

/* Go on serving a ring that another party served until now (a vhost-user back-end that
 * is gone): the next used entry is the used ring's index, the next avail entry is the
 * avail_event that a back-end with EVENT_IDX leaves after each buffer it takes (else the
 * used index: right when nothing was in flight), and the driver is asked to kick again.
 * Buffers the other party took and never returned are not seen again. */
void virtq_adopt(struct virtq *q);

/* Copy helpers over a chain's iovecs: they never go past the chain's buffers. */
size_t virtq_chain_read(const struct virtq_chain *c, size_t offset, void *buf, size_t len);
size_t virtq_chain_write(const struct virtq_chain *c, size_t offset, const void *buf, size_t len);

#endif
