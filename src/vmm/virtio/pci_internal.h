/* Between the virtio-pci transport's two files only: pci.c (the PCI function, its
 * capabilities, the common configuration and notify registers) and pci_msix.c (MSI-X
 * and the INTx fallback). Everything here is guarded by dev->lock. */
#ifndef CAPSULE_VMM_VIRTIO_PCI_INTERNAL_H
#define CAPSULE_VMM_VIRTIO_PCI_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/devices/pci.h"
#include "vmm/virtio/virtio.h"

/* BAR 0 (32-bit memory) holds every register block, each in its own page. */
#define VPCI_BAR 0
#define VPCI_COMMON 0x0000
#define VPCI_ISR 0x1000
#define VPCI_DEVICE 0x2000
#define VPCI_NOTIFY 0x3000
#define VPCI_MSIX_TABLE 0x4000
#define VPCI_MSIX_PBA 0x5000
#define VPCI_BAR_SIZE 0x8000
#define VPCI_BLOCK_SIZE 0x1000
/* Each queue has its own notify address, so an ioeventfd needs no data match. */
#define VPCI_NOTIFY_MULTIPLIER 4
#define VPCI_NOTIFY_LEN 2 /* the driver writes the queue index as 16 bits */

/* A queue's vector and the config vector: at most one per queue, plus one. */
#define VPCI_MAX_VECTORS (VIRTIO_MAX_QUEUES + 1)
#define VPCI_NO_GSI UINT32_MAX

/* The MSI-X capability's Message Control bits (PCI 3.0, 6.8.2.3). */
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_MASKALL 0x4000
#define MSIX_ENTRY_SIZE 16
#define MSIX_ENTRY_MASKED 0x1u

struct msix_vector {
        uint32_t addr_lo, addr_hi, data, ctrl; /* the table entry as the guest wrote it */
        uint32_t gsi;                          /* its MSI route */
        bool routed;                           /* the route is installed in KVM */
        uint64_t routed_addr;
        uint32_t routed_data;
};

struct virtio_pci {
        struct pci_function fn;
        struct virtio_dev *dev;
        /* Common configuration state of the transport itself. */
        uint32_t device_feature_select, driver_feature_select;
        uint32_t driver_features[2]; /* what the driver wrote, read back as guest_feature */
        uint16_t queue_select;
        /* Where BAR 0 decodes (0: nowhere): the kick ioeventfds sit at its notify block. */
        uint64_t notify_base;
        uint64_t kicks_assigned; /* bit q: queue q's ioeventfd is in KVM */
        uint8_t pci_cfg_cap;     /* config-space offset of VIRTIO_PCI_CAP_PCI_CFG */
        /* MSI-X: the capability's state (mirrored from config space), the table and PBA. */
        uint8_t msix_cap;           /* config-space offset of the capability */
        bool msix_enabled, msix_masked;
        uint16_t n_vectors;
        struct msix_vector vectors[VPCI_MAX_VECTORS];
        uint64_t pba[(VPCI_MAX_VECTORS + 63) / 64];
        /* The GSI each queue's call eventfd (and the config eventfd) is bound to with
         * irqfd, or VPCI_NO_GSI. */
        uint32_t queue_gsi[VIRTIO_MAX_QUEUES];
        int config_fd;
        uint32_t config_gsi;
        bool intx_level; /* the INTx line is asserted */
        bool warned;     /* a KVM plumbing failure was logged once */
};

/* pci_msix.c */
/* Allocate a GSI per vector, all masked; -1 with err. */
int vpci_msix_init(struct virtio_pci *vp, cap_error_t *err);
/* Unbind every irqfd and route, lower INTx (device removal). */
void vpci_msix_teardown(struct virtio_pci *vp);
/* Make KVM's routes and irqfd bindings match the MSI-X state and the vectors chosen
 * by the driver: routes for unmasked vectors only, irqfds only on those routes. */
void vpci_msix_sync(struct virtio_pci *vp);
/* The INTx line follows the ISR while MSI-X is off. */
void vpci_intx_update(struct virtio_pci *vp);
/* The table and PBA blocks of BAR 0; offset relative to the block. */
void vpci_msix_table_access(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
void vpci_msix_pba_read(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len);
/* A Message Control write from config space. */
void vpci_msix_control(struct virtio_pci *vp, uint16_t control);
void vpci_interrupt(struct virtio_dev *dev, int q);
/* Log a KVM plumbing failure once per device (the guest can provoke them at will). */
void vpci_warn(struct virtio_pci *vp, cap_error_t *err);

#endif
