#include "vmm/irq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/util.h"

uint32_t irq_routing_build(const struct irq_msi *msi, uint32_t n_gsi, struct kvm_irq_routing_entry *out)
{
        uint32_t n = 0;
        /* As KVM's default table: GSI i is IOAPIC pin i, and GSIs 0-15 also reach the
         * PICs (master pins 0-7, slave pins 0-7), so replacing the table keeps them. */
        for (uint32_t gsi = 0; gsi < IRQ_IOAPIC_PINS; gsi++) {
                out[n++] = (struct kvm_irq_routing_entry){ .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
                                                           .u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi } };
                if (gsi < IRQ_PIC_PINS)
                        out[n++] = (struct kvm_irq_routing_entry){
                                .gsi = gsi,
                                .type = KVM_IRQ_ROUTING_IRQCHIP,
                                .u.irqchip = { .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
                                               .pin = gsi % 8 },
                        };
        }
        if (n_gsi > IRQ_GSI_MAX)
                n_gsi = IRQ_GSI_MAX;
        for (uint32_t gsi = IRQ_IOAPIC_PINS; gsi < n_gsi; gsi++) {
                if (!msi[gsi].installed)
                        continue;
                out[n++] = (struct kvm_irq_routing_entry){
                        .gsi = gsi,
                        .type = KVM_IRQ_ROUTING_MSI,
                        .u.msi = { .address_lo = (uint32_t)msi[gsi].addr,
                                   .address_hi = (uint32_t)(msi[gsi].addr >> 32),
                                   .data = msi[gsi].data },
                };
        }
        return n;
}

int vm_irq_init(struct vm_irq *irq, int vm_fd, int gsi_limit, cap_error_t *err)
{
        memset(irq, 0, sizeof(*irq));
        irq->vm_fd = vm_fd;
        pthread_mutex_init(&irq->lock, NULL);
        irq->gsi_limit = gsi_limit > IRQ_GSI_MAX ? IRQ_GSI_MAX : (uint32_t)(gsi_limit > 0 ? gsi_limit : 0);
        if (irq->gsi_limit < IRQ_IOAPIC_PINS)
                return cap_fail(err, 0, "KVM supports only %d GSI routes (KVM_CAP_IRQ_ROUTING)", gsi_limit);
        irq->table = calloc(1, sizeof(*irq->table) + IRQ_ROUTES_MAX * sizeof(irq->table->entries[0]));
        if (!irq->table)
                return cap_fail(err, errno, "GSI routing table");
        return 0;
}

void vm_irq_destroy(struct vm_irq *irq)
{
        free(irq->table);
        irq->table = NULL;
        pthread_mutex_destroy(&irq->lock);
}

int vm_irq_ioeventfd(struct vm_irq *irq, int fd, uint64_t addr, uint32_t len, bool pio, const uint64_t *data,
                     bool assign, cap_error_t *err)
{
        struct kvm_ioeventfd io = { .addr = addr, .len = len, .fd = fd };
        if (pio)
                io.flags |= KVM_IOEVENTFD_FLAG_PIO;
        if (data) {
                io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
                io.datamatch = *data;
        }
        if (!assign)
                io.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
        if (ioctl(irq->vm_fd, KVM_IOEVENTFD, &io) < 0)
                return cap_fail(err, errno, "KVM_IOEVENTFD %s %s %#llx/%u", assign ? "assign" : "deassign",
                                pio ? "port" : "mmio", (unsigned long long)addr, len);
        return 0;
}

int vm_irq_irqfd(struct vm_irq *irq, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        struct kvm_irqfd req = { .fd = (uint32_t)fd, .gsi = gsi, .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN };
        if (ioctl(irq->vm_fd, KVM_IRQFD, &req) < 0)
                return cap_fail(err, errno, "KVM_IRQFD %s GSI %u", assign ? "assign" : "deassign", gsi);
        return 0;
}

int vm_irq_gsi_alloc(struct vm_irq *irq, uint32_t *gsi, cap_error_t *err)
{
        pthread_mutex_lock(&irq->lock);
        for (uint32_t g = IRQ_IOAPIC_PINS; g < irq->gsi_limit; g++) {
                if (!irq->msi[g].allocated) {
                        irq->msi[g].allocated = true;
                        *gsi = g;
                        pthread_mutex_unlock(&irq->lock);
                        return 0;
                }
        }
        pthread_mutex_unlock(&irq->lock);
        return cap_fail(err, 0, "no free GSI for an MSI route (%u in use)", irq->gsi_limit - IRQ_IOAPIC_PINS);
}

/* Called with irq->lock held. */
static int irq_commit(struct vm_irq *irq, cap_error_t *err)
{
        irq->table->nr = irq_routing_build(irq->msi, irq->gsi_limit, irq->table->entries);
        irq->table->flags = 0;
        if (ioctl(irq->vm_fd, KVM_SET_GSI_ROUTING, irq->table) < 0)
                return cap_fail(err, errno, "KVM_SET_GSI_ROUTING (%u routes)", irq->table->nr);
        return 0;
}

int vm_irq_msi_route(struct vm_irq *irq, uint32_t gsi, uint64_t addr, uint32_t data, bool mask, cap_error_t *err)
{
        if (gsi < IRQ_IOAPIC_PINS || gsi >= irq->gsi_limit)
                return cap_fail(err, 0, "MSI route for GSI %u, outside [%d, %u)", gsi, IRQ_IOAPIC_PINS, irq->gsi_limit);
        pthread_mutex_lock(&irq->lock);
        struct irq_msi *m = &irq->msi[gsi];
        int r = 0;
        if (!m->allocated) {
                r = cap_fail(err, 0, "MSI route for GSI %u, which was never allocated", gsi);
        } else {
                /* A masked route changes nothing in KVM's table until it is unmasked. */
                bool changed = m->installed == mask || (!mask && (m->addr != addr || m->data != data));
                struct irq_msi old = *m;
                *m = (struct irq_msi){ .allocated = true, .installed = !mask, .addr = addr, .data = data };
                if (changed && (r = irq_commit(irq, err)) < 0)
                        *m = old;
        }
        pthread_mutex_unlock(&irq->lock);
        return r;
}
