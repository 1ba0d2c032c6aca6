/* KVM interrupt and notification plumbing for one VM: ioeventfds, irqfds, GSI
 * allocation and the GSI routing table (the IOAPIC and PIC pins as in KVM's default
 * table, plus one MSI route per allocated GSI that is not masked). These back the
 * struct vm_devices hooks of the same names. */
#ifndef CAPSULE_VMM_IRQ_H
#define CAPSULE_VMM_IRQ_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define IRQ_IOAPIC_PINS 24
#define IRQ_PIC_PINS 16
/* GSIs for MSI routes: IRQ_IOAPIC_PINS .. IRQ_GSI_MAX - 1. */
#define IRQ_GSI_MAX 1024
#define IRQ_ROUTES_MAX (IRQ_IOAPIC_PINS + IRQ_PIC_PINS + IRQ_GSI_MAX)

struct irq_msi {
        bool allocated; /* handed out by irq_gsi_alloc */
        bool installed; /* in the routing table (allocated, given an address and not masked) */
        uint64_t addr;
        uint32_t data;
};

struct vm_irq {
        int vm_fd;
        pthread_mutex_t lock; /* vCPU threads program MSI-X while others may allocate */
        uint32_t gsi_limit;   /* min(IRQ_GSI_MAX, KVM_CAP_IRQ_ROUTING) */
        struct irq_msi msi[IRQ_GSI_MAX]; /* indexed by GSI; entries below IRQ_IOAPIC_PINS are unused */
        struct kvm_irq_routing *table; /* scratch for KVM_SET_GSI_ROUTING */
};

/* The routing table KVM gets: the default irqchip routes, then every installed MSI
 * route. Pure: fills out (room for IRQ_ROUTES_MAX entries) and returns the count. */
uint32_t irq_routing_build(const struct irq_msi *msi, uint32_t n_gsi, struct kvm_irq_routing_entry *out);

int vm_irq_init(struct vm_irq *irq, int vm_fd, int gsi_limit, cap_error_t *err);
void vm_irq_destroy(struct vm_irq *irq);

int vm_irq_ioeventfd(struct vm_irq *irq, int fd, uint64_t addr, uint32_t len, bool pio, const uint64_t *data,
                     bool assign, cap_error_t *err);
int vm_irq_irqfd(struct vm_irq *irq, int fd, uint32_t gsi, bool assign, cap_error_t *err);
int vm_irq_gsi_alloc(struct vm_irq *irq, uint32_t *gsi, cap_error_t *err);
int vm_irq_msi_route(struct vm_irq *irq, uint32_t gsi, uint64_t addr, uint32_t data, bool mask, cap_error_t *err);

#endif
