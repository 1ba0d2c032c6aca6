/* virtio-pci interrupts: MSI-X through KVM's GSI routing and irqfd, INTx as the fallback.
 *
 * Each vector has a GSI of its own. While MSI-X is enabled and neither the function nor
 * the vector is masked, the vector's (address, data) is installed as that GSI's MSI route
 * and every eventfd that uses the vector (queues' call fds, the config fd) is bound to it
 * with irqfd: an interrupt is then a plain eventfd write that KVM injects. A masked vector
 * has its irqfds unbound first and its route removed after; an interrupt for it sets its
 * pending bit and still writes the eventfd, whose count waits there until the vector is
 * unmasked, when binding the irqfd again makes KVM deliver it. A vhost-user back-end that
 * writes the call fds itself gets the same masking for free.
 *
 * Everything runs with dev->lock held. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/virtio/pci_internal.h"
#include "vmm/virtio/transport.h"

void vpci_warn(struct virtio_pci *vp, cap_error_t *err)
{
        if (!vp->warned)
                log_warning("%s: %s (the device falls back to slower paths)", vp->dev->name,
                            *err ? (*err)->msg : "KVM interrupt plumbing failed");
        vp->warned = true;
        cap_error_free(err);
}

int vpci_msix_init(struct virtio_pci *vp, cap_error_t *err)
{
        struct vm_devices *ctx = vp->dev->ctx;

        vp->n_vectors = (uint16_t)(vp->dev->n_queues + 1);
        for (unsigned int v = 0; v < vp->n_vectors; v++) {
                /* PCI: every vector comes out of reset masked. */
                vp->vectors[v] = (struct msix_vector){ .ctrl = MSIX_ENTRY_MASKED };
                if (ctx->gsi_alloc(ctx->vm, &vp->vectors[v].gsi, err) < 0)
                        return -1;
        }
        for (unsigned int q = 0; q < VIRTIO_MAX_QUEUES; q++)
                vp->queue_gsi[q] = VPCI_NO_GSI;
        vp->config_gsi = VPCI_NO_GSI;
        return 0;
}

static bool vector_live(const struct virtio_pci *vp, uint16_t v)
{
        return vp->msix_enabled && !vp->msix_masked && v < vp->n_vectors &&
               !(vp->vectors[v].ctrl & MSIX_ENTRY_MASKED);
}

static uint64_t vector_addr(const struct msix_vector *m)
{
        return (uint64_t)m->addr_hi << 32 | m->addr_lo;
}

/* Move fd's irqfd from *bound to gsi (either may be VPCI_NO_GSI). */
static void irqfd_rebind(struct virtio_pci *vp, int fd, uint32_t *bound, uint32_t gsi)
{
        struct vm_devices *ctx = vp->dev->ctx;
        cap_error_t err = NULL;

        if (*bound == gsi || fd < 0)
                return;
        if (*bound != VPCI_NO_GSI && ctx->irqfd(ctx->vm, fd, *bound, false, &err) < 0)
                vpci_warn(vp, &err);
        *bound = VPCI_NO_GSI;
        if (gsi != VPCI_NO_GSI) {
                if (ctx->irqfd(ctx->vm, fd, gsi, true, &err) < 0)
                        vpci_warn(vp, &err);
                else
                        *bound = gsi;
        }
}

static uint32_t vector_gsi(const struct virtio_pci *vp, uint16_t v)
{
        return vector_live(vp, v) ? vp->vectors[v].gsi : VPCI_NO_GSI;
}

static void route_set(struct virtio_pci *vp, struct msix_vector *m, bool install)
{
        struct vm_devices *ctx = vp->dev->ctx;
        cap_error_t err = NULL;
        uint64_t addr = vector_addr(m);

        if (install == m->routed && (!install || (addr == m->routed_addr && m->data == m->routed_data)))
                return;
        if (ctx->msi_route(ctx->vm, m->gsi, addr, m->data, !install, &err) < 0) {
                vpci_warn(vp, &err);
                return;
        }
        m->routed = install;
        m->routed_addr = addr;
        m->routed_data = m->data;
}

void vpci_msix_sync(struct virtio_pci *vp)
{
        struct virtio_dev *dev = vp->dev;

        /* Routes first, so that a newly bound irqfd never fires into an empty GSI... */
        for (uint16_t v = 0; v < vp->n_vectors; v++)
                if (vector_live(vp, v))
                        route_set(vp, &vp->vectors[v], true);
        for (unsigned int q = 0; q < dev->n_queues; q++)
                irqfd_rebind(vp, dev->io[q].call_fd, &vp->queue_gsi[q], vector_gsi(vp, dev->io[q].msix_vector));
        irqfd_rebind(vp, vp->config_fd, &vp->config_gsi, vector_gsi(vp, dev->config_msix_vector));
        /* ...and irqfds unbound before their route goes. A pending vector that is live again
         * is delivered by KVM on binding, from its eventfd's count. */
        for (uint16_t v = 0; v < vp->n_vectors; v++) {
                if (vector_live(vp, v))
                        vp->pba[v / 64] &= ~(1ULL << (v % 64));
                else
                        route_set(vp, &vp->vectors[v], false);
        }
}

void vpci_msix_teardown(struct virtio_pci *vp)
{
        struct vm_devices *ctx = vp->dev->ctx;

        vp->msix_enabled = false;
        vpci_msix_sync(vp);
        if (vp->intx_level)
                ctx->irq_line(ctx->vm, vp->fn.gsi, 0);
        vp->intx_level = false;
}

void vpci_intx_update(struct virtio_pci *vp)
{
        struct vm_devices *ctx = vp->dev->ctx;
        bool level = !vp->msix_enabled && vp->dev->isr != 0;

        if (level != vp->intx_level && ctx->irq_line(ctx->vm, vp->fn.gsi, level) == 0)
                vp->intx_level = level;
}

void vpci_msix_control(struct virtio_pci *vp, uint16_t control)
{
        vp->msix_enabled = control & MSIX_CTRL_ENABLE;
        vp->msix_masked = control & MSIX_CTRL_MASKALL;
        vpci_msix_sync(vp);
        vpci_intx_update(vp);
}

/* Dword-granular table access: the guest may use any size, we merge it into the dword. */
void vpci_msix_table_access(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        uint64_t v = offset / MSIX_ENTRY_SIZE;
        uint32_t reg = (uint32_t)(offset % MSIX_ENTRY_SIZE), shift = 8 * (reg & 3);

        if (v >= vp->n_vectors || (reg & 3) + len > 4) {
                if (!is_write)
                        memset(data, 0, len);
                return;
        }
        struct msix_vector *m = &vp->vectors[v];
        uint32_t *field = reg < 4 ? &m->addr_lo : reg < 8 ? &m->addr_hi : reg < 12 ? &m->data : &m->ctrl;
        uint32_t value = *field;
        if (!is_write) {
                for (uint32_t i = 0; i < len; i++)
                        data[i] = (uint8_t)(value >> (shift + 8 * i));
                return;
        }
        for (uint32_t i = 0; i < len; i++)
                value = (value & ~(0xffu << (shift + 8 * i))) | (uint32_t)data[i] << (shift + 8 * i);
        if (field == &m->ctrl)
                value &= MSIX_ENTRY_MASKED; /* the other bits are reserved */
        else if (field == &m->addr_lo)
                value &= ~3u; /* dword-aligned message address */
        *field = value;
        vpci_msix_sync(vp);
}

void vpci_msix_pba_read(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len)
{
        for (uint32_t i = 0; i < len; i++) {
                uint64_t byte = offset + i;
                data[i] = byte / 8 < sizeof(vp->pba) / sizeof(vp->pba[0]) ? (uint8_t)(vp->pba[byte / 8] >> (8 * (byte % 8))) : 0;
        }
}

static void eventfd_signal(struct virtio_pci *vp, int fd)
{
        uint64_t one = 1;

        /* EAGAIN: the count is at its maximum, so an interrupt is pending anyway. */
        if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
                cap_error_t err = NULL;
                cap_fail(&err, errno, "interrupt eventfd write");
                vpci_warn(vp, &err);
        }
}

void vpci_interrupt(struct virtio_dev *dev, int q)
{
        struct virtio_pci *vp = dev->transport_data;

        if (!vp->msix_enabled) {
                vpci_intx_update(vp);
                return;
        }
        if (q >= (int)dev->n_queues)
                return;
        uint16_t v = q >= 0 ? dev->io[q].msix_vector : dev->config_msix_vector;
        int fd = q >= 0 ? dev->io[q].call_fd : vp->config_fd;
        if (v >= vp->n_vectors)
                return; /* VIRTIO_MSI_NO_VECTOR: the driver wants no interrupt */
        if (!vector_live(vp, v))
                vp->pba[v / 64] |= 1ULL << (v % 64);
        eventfd_signal(vp, fd);
}
