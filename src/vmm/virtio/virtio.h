/* A virtio device's whole contract with capsule's virtio layer (src/vmm/virtio/).
 *
 * A device fills a struct virtio_dev (an instance: several disks are several structs)
 * with its id, features, queues and config space as data, plus a few callbacks, and
 * calls virtio_dev_add(). The core (virtio.c) owns the status state machine, feature
 * negotiation, config-space bounds and the kick/interrupt plumbing, and picks the
 * transport (PCI or MMIO, per VM). Devices never see transport registers.
 *
 * Threads and locking: every callback runs with dev->lock held. Transport accesses
 * come from vCPU threads; kicks (ioeventfds) are served on the event loop thread,
 * which calls ops->notify. A device's own event-loop handlers (sockets, io_uring
 * completions) take virtio_dev_lock() before touching queues. Nothing blocks while
 * holding the lock: no blocking I/O, no waiting for the guest. */
#ifndef CAPSULE_VMM_VIRTIO_VIRTIO_H
#define CAPSULE_VMM_VIRTIO_VIRTIO_H

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_ring.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/device.h"
#include "vmm/virtio/virtqueue.h"

#define VIRTIO_MAX_QUEUES 64

struct virtio_dev;
struct virtio_kick;
struct virtio_transport;

struct virtio_dev_ops {
        /* The driver set DRIVER_OK: the queues in dev->queues are set up. Start serving.
         * A failure puts the device in DEVICE_NEEDS_RESET (and logs err). */
        int (*activate)(struct virtio_dev *dev, cap_error_t *err);
        /* The driver kicked queue q (event loop thread). */
        void (*notify)(struct virtio_dev *dev, unsigned int q);
        /* The driver reset the device (status 0), or the VM is stopping: drop in-flight work
         * so that nothing touches guest memory afterwards, and return to the initial state. */
        void (*reset)(struct virtio_dev *dev);
        /* Optional: the driver writes data to config bytes [offset, offset+len), already
         * inside config_len. The device copies in only the fields the spec lets the driver
         * write: the core never changes dev->config, so a device that reads its own config
         * (a disk's capacity) cannot be fed a forged value. Without it, writes are dropped. */
        void (*config_write)(struct virtio_dev *dev, uint32_t offset, const uint8_t *data, uint32_t len);
        /* Optional: the VM is going away (after reset): close files, join threads. */
        void (*destroy)(struct virtio_dev *dev);
        /* Optional: the VM is stopping (vCPUs joined, event loop stopped), before reset, with
         * guest memory and the queues still live: finish what the driver handed over before it
         * stopped (chains made available that the event loop did not reach, data owed to host
         * peers). The only callback that may wait, and only for a bounded time. */
        void (*stop)(struct virtio_dev *dev);
};

struct virtio_queue_io {
        int kick_fd;        /* eventfd: the transport's ioeventfd at this queue's notify address */
        int call_fd;        /* eventfd the core writes to interrupt the driver for this queue */
        uint16_t msix_vector; /* PCI: the queue's MSI-X vector (VIRTIO_MSI_NO_VECTOR: none) */
};

struct virtio_dev {
        /* Filled by the device before virtio_dev_add(). */
        char name[32];                 /* "virtio-blk0": logs and errors */
        uint32_t device_id;            /* VIRTIO_ID_* */
        uint64_t features;             /* device-specific feature bits; the core adds VERSION_1,
                                        * RING_INDIRECT_DESC and RING_EVENT_IDX */
        unsigned int n_queues;         /* 1 .. VIRTIO_MAX_QUEUES */
        uint16_t queue_max;            /* largest queue size offered: a power of two <= VIRTQ_MAX_SIZE */
        void *config;                  /* device config space, little-endian as the spec lays it out */
        uint32_t config_len;
        bool vhost;                    /* the queues are served by a vhost-user back-end: the core does
                                        * not poll the kick fds (virtio_queue_fds() hands them over) */
        const struct virtio_dev_ops *ops;
        void *opaque;                  /* the device's own state */

        /* Owned by the core (read-only for devices, under dev->lock). */
        pthread_mutex_t lock;
        struct vm_devices *ctx;
        uint64_t driver_features;      /* what the driver accepted: valid from FEATURES_OK on */
        uint8_t status;                /* VIRTIO_CONFIG_S_* */
        uint32_t config_generation;
        uint32_t isr;                  /* bit 0: used buffers, bit 1: config change (MMIO, PCI INTx) */
        struct virtq queues[VIRTIO_MAX_QUEUES];
        struct virtio_queue_io io[VIRTIO_MAX_QUEUES];
        uint16_t config_msix_vector;
        const struct virtio_transport *transport;
        void *transport_data;
        struct virtio_dev *next;       /* the VM's instance list */
        struct virtio_kick *kicks;     /* the kick handlers' contexts, one per queue (not vhost) */
        unsigned int fails_logged;     /* virtio_dev_fail() warnings so far: a guest can repeat them */
};

/* Register dev on the VM's transport (ctx->config->virtio_transport). dev must stay
 * valid until the VM's devices exit; the core then resets and destroys it. Devices
 * call it from their DEVICE_REGISTER init (.order = DEVICE_ORDER_VIRTIO). On failure
 * the core keeps nothing of dev: the device frees its own state. */
int virtio_dev_add(struct vm_devices *ctx, struct virtio_dev *dev, cap_error_t *err);

void virtio_dev_lock(struct virtio_dev *dev);
void virtio_dev_unlock(struct virtio_dev *dev);

/* Whether the driver accepted feature bit (a VIRTIO_*_F_* number). */
bool virtio_has_feature(const struct virtio_dev *dev, unsigned int bit);

/* The next validated chain of queue q: 1 got one, 0 none (or the device is not live).
 * A malformed chain fails the device (virtio_dev_fail) and returns 0. */
int virtio_queue_pop(struct virtio_dev *dev, unsigned int q, struct virtq_chain *chain);
/* Return a chain; written: bytes placed in its writable buffers. No interrupt yet. */
void virtio_queue_push(struct virtio_dev *dev, unsigned int q, uint16_t head, uint32_t written);
/* Return n chains that the driver must see together (virtq_push_many). */
void virtio_queue_push_many(struct virtio_dev *dev, unsigned int q, const uint16_t *heads, const uint32_t *written,
                            unsigned int n);
/* Interrupt the driver for queue q if it asked for one (EVENT_IDX / NO_INTERRUPT): whether it did. */
bool virtio_queue_signal(struct virtio_dev *dev, unsigned int q);
/* Ask the driver not to kick queue q: for a device that will look at the queue again anyway
 * (a completion is on its way). virtio_queue_pop() asks for kicks again when it finds the
 * queue empty. */
void virtio_queue_kicks_off(struct virtio_dev *dev, unsigned int q);
/* The kick and call eventfds of queue q, for a vhost-user back-end. */
int virtio_queue_fds(struct virtio_dev *dev, unsigned int q, int *kick_fd, int *call_fd, cap_error_t *err);

/* The vhost-user back-end that served queue q is gone: the device serves it itself from
 * now on (virtio_queue_pop/push), from where the back-end left the ring (virtq_adopt).
 * The device polls the kick fd itself: the core still does not, for a vhost device. */
void virtio_queue_adopt(struct virtio_dev *dev, unsigned int q);

/* The device cannot go on: set DEVICE_NEEDS_RESET, raise a config interrupt and log why
 * once (the first few failures of a device are warnings, later ones debug messages: a
 * guest can fail and reset a device in a loop). Its queues are not read again until the
 * driver resets it. Never exits the VMM. */
void virtio_dev_fail(struct virtio_dev *dev, const char *why);
/* The device changed its config space: bump the generation and raise a config interrupt. */
void virtio_config_changed(struct virtio_dev *dev);

#endif
