/* Between the virtio core (virtio.c) and the transports (pci.c, mmio.c) only; devices
 * never include it. A transport owns registers and interrupt delivery and never reads
 * rings; the core owns the status state machine, features, config bounds and queues. */
#ifndef CAPSULE_VMM_VIRTIO_TRANSPORT_H
#define CAPSULE_VMM_VIRTIO_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/virtio/virtio.h"

struct virtio_transport {
        const char *name;
        /* Claim registers (a PCI function, or an MMIO window and a GSI) for dev, create its
         * kick/call eventfds (non-blocking) and wire them to KVM (ioeventfd at the notify
         * addresses, irqfd on the interrupt). Called with dev->lock not held, before the VM
         * runs; the core then polls the kick fds (unless dev->vhost). On failure it leaves
         * nothing behind. */
        int (*add)(struct virtio_dev *dev, cap_error_t *err);
        /* Undo add (the VM is stopping: no vCPU runs, the event loop has stopped). */
        void (*remove)(struct virtio_dev *dev);
        /* Deliver an interrupt: for queue q (q >= 0) or a config change (q < 0). The core
         * has already set dev->isr. Called with dev->lock held. */
        void (*interrupt)(struct virtio_dev *dev, int q);
};

extern const struct virtio_transport virtio_pci_transport;
extern const struct virtio_transport virtio_mmio_transport;

/* Register-file helpers for the transports; all take dev->lock themselves unless noted. */
/* 32 feature bits at select (0: bits 0-31, 1: 32-63; others read 0). */
uint32_t virtio_core_device_features(struct virtio_dev *dev, uint32_t select);
/* The driver's feature word; ignored outside FEATURES negotiation. */
void virtio_core_driver_features(struct virtio_dev *dev, uint32_t select, uint32_t value);
uint8_t virtio_core_status(struct virtio_dev *dev);
/* The status state machine: only valid transitions take (FEATURES_OK only with a
 * feature set the device accepts, DRIVER_OK activates, 0 resets). */
void virtio_core_set_status(struct virtio_dev *dev, uint8_t status);
/* Config space access, bounds-checked against config_len (outside reads as zero,
 * writes are dropped). len 1, 2, 4 or 8. */
void virtio_core_config_read(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len);
void virtio_core_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data, uint32_t len);
/* Queue setup from the driver: only while the queue is not ready and the device is not
 * live; enabling checks the ring addresses (virtq_enable). virtio_core_queue() does not
 * lock: the transport holds dev->lock while it writes the queue's size and addresses.
 * The core sets each queue's size to queue_max at add and at every reset. */
struct virtq *virtio_core_queue(struct virtio_dev *dev, uint32_t q); /* NULL if q is out of range */
void virtio_core_queue_enable(struct virtio_dev *dev, uint32_t q);
/* A kick that came through a register write rather than an ioeventfd: forwarded to the
 * queue's kick fd, so that notify still runs on the event loop (or the vhost back-end). */
void virtio_core_queue_notify(struct virtio_dev *dev, uint32_t q);
/* Read-and-clear of the ISR (PCI ISR capability, MMIO InterruptACK clears given bits). */
uint32_t virtio_core_isr_read_clear(struct virtio_dev *dev);
void virtio_core_isr_ack(struct virtio_dev *dev, uint32_t bits);

#endif
