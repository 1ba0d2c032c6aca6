/* The virtio-pci modern transport (virtio 1.2, 4.1): one PCI function per device on
 * bus 0, vendor 0x1af4, device 0x1040 + the virtio id, revision 1 (no legacy interface).
 *
 * Config space carries the capability chain: MSI-X, then the vendor capabilities that
 * point into BAR 0 (common configuration, notifications, ISR, device configuration) and
 * the PCI configuration access capability. BAR 0 holds each register block in a page
 * of its own (pci_internal.h). A kick is a write to the queue's own notify address,
 * which an ioeventfd turns into an eventfd signal inside KVM; the ioeventfds follow BAR 0
 * when the guest moves it or turns memory decoding off. Interrupts: pci_msix.c.
 *
 * Locking: the transport's state lives under dev->lock. The virtio_core_* helpers take
 * it themselves, so they are called without it. Config-space callbacks run with the PCI
 * lock held and take dev->lock inside it (PCI lock, then dev->lock); nothing here takes
 * the PCI lock while holding dev->lock. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <linux/virtio_pci.h>

#include "common/util.h"
#include "vmm/virtio/pci_internal.h"
#include "vmm/virtio/transport.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define VIRTIO_PCI_REVISION 1
#define PCI_CAP_ID_VENDOR 0x09
#define PCI_CAP_ID_MSIX_ 0x11
#define MSIX_CAP_SIZE 12
#define COMMON_SIZE ((uint32_t)sizeof(struct virtio_pci_common_cfg))

_Static_assert(COMMON_SIZE <= VPCI_BLOCK_SIZE, "common configuration fits its block");
_Static_assert(VIRTIO_MAX_QUEUES * VPCI_NOTIFY_MULTIPLIER <= VPCI_BLOCK_SIZE, "notify addresses fit their block");
_Static_assert(VPCI_MAX_VECTORS * MSIX_ENTRY_SIZE <= VPCI_BLOCK_SIZE, "MSI-X table fits its block");
_Static_assert(VPCI_MSIX_PBA + VPCI_BLOCK_SIZE <= VPCI_BAR_SIZE, "every block fits BAR 0");

/* The PCI configuration access capability: a vendor capability plus its 4-byte data window. */
#define PCI_CFG_CAP_SIZE ((uint32_t)sizeof(struct virtio_pci_cfg_cap))

static void put16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Class code (base class << 8 | subclass) by device type, as other VMMs present them. */
static uint16_t virtio_pci_class(uint32_t device_id)
{
        switch (device_id) {
        case VIRTIO_ID_NET:
                return 0x0200; /* Ethernet controller */
        case VIRTIO_ID_BLOCK:
        case VIRTIO_ID_FS:
                return 0x0180; /* mass storage controller, other */
        case VIRTIO_ID_CONSOLE:
                return 0x0780; /* communication controller, other */
        default:
                return 0xff00; /* unassigned class */
        }
}

/* ---- capabilities ---- */

struct cap_chain {
        uint8_t *config;
        uint32_t next; /* where the next capability goes */
        uint32_t last; /* the previous capability, whose next pointer is patched */
};

static uint8_t *cap_add(struct cap_chain *c, uint8_t id, uint32_t len)
{
        uint32_t at = c->next;

        if (c->last)
                c->config[c->last + 1] = (uint8_t)at;
        else
                c->config[PCI_CAPABILITY_LIST] = (uint8_t)at;
        c->config[at] = id;
        c->config[at + 1] = 0;
        c->last = at;
        c->next = (at + len + 3) & ~3u;
        return &c->config[at];
}

static uint8_t *vendor_cap_add(struct cap_chain *c, uint8_t type, uint32_t len, uint32_t offset, uint32_t length)
{
        uint8_t *p = cap_add(c, PCI_CAP_ID_VENDOR, len);

        p[VIRTIO_PCI_CAP_LEN] = (uint8_t)len;
        p[VIRTIO_PCI_CAP_CFG_TYPE] = type;
        p[VIRTIO_PCI_CAP_BAR] = VPCI_BAR;
        put32(p + VIRTIO_PCI_CAP_OFFSET, offset);
        put32(p + VIRTIO_PCI_CAP_LENGTH, length);
        return p;
}

static void config_header_fill(struct virtio_pci *vp)
{
        struct virtio_dev *dev = vp->dev;
        uint8_t *cfg = vp->fn.config;
        struct cap_chain chain = { .config = cfg, .next = PCI_DEVICE_CONFIG };
        uint8_t *p;

        put16(cfg + PCI_VENDOR_ID, VIRTIO_PCI_VENDOR);
        put16(cfg + PCI_DEVICE_ID, (uint16_t)(VIRTIO_PCI_DEVICE_BASE + dev->device_id));
        put16(cfg + PCI_STATUS, PCI_STATUS_CAP_LIST);
        cfg[PCI_REVISION_ID] = VIRTIO_PCI_REVISION;
        put16(cfg + PCI_CLASS_DEVICE, virtio_pci_class(dev->device_id));
        put16(cfg + PCI_SUBSYSTEM_VENDOR_ID, VIRTIO_PCI_VENDOR);
        put16(cfg + PCI_SUBSYSTEM_ID, (uint16_t)(VIRTIO_PCI_DEVICE_BASE + dev->device_id));
        cfg[PCI_INTERRUPT_PIN] = 1; /* INTA, while MSI-X is off */

        p = cap_add(&chain, PCI_CAP_ID_MSIX_, MSIX_CAP_SIZE);
        vp->msix_cap = (uint8_t)(p - cfg);
        put16(p + 2, (uint16_t)(vp->n_vectors - 1)); /* table size N-1; disabled, unmasked */
        put32(p + 4, VPCI_MSIX_TABLE | VPCI_BAR);
        put32(p + 8, VPCI_MSIX_PBA | VPCI_BAR);

        vendor_cap_add(&chain, VIRTIO_PCI_CAP_COMMON_CFG, sizeof(struct virtio_pci_cap), VPCI_COMMON, COMMON_SIZE);
        p = vendor_cap_add(&chain, VIRTIO_PCI_CAP_NOTIFY_CFG, sizeof(struct virtio_pci_notify_cap), VPCI_NOTIFY,
                           dev->n_queues * VPCI_NOTIFY_MULTIPLIER);
        put32(p + VIRTIO_PCI_NOTIFY_CAP_MULT, VPCI_NOTIFY_MULTIPLIER);
        vendor_cap_add(&chain, VIRTIO_PCI_CAP_ISR_CFG, sizeof(struct virtio_pci_cap), VPCI_ISR, 1);
        if (dev->config_len)
                vendor_cap_add(&chain, VIRTIO_PCI_CAP_DEVICE_CFG, sizeof(struct virtio_pci_cap), VPCI_DEVICE,
                               dev->config_len);
        p = vendor_cap_add(&chain, VIRTIO_PCI_CAP_PCI_CFG, PCI_CFG_CAP_SIZE, 0, 0);
        vp->pci_cfg_cap = (uint8_t)(p - cfg);
}

/* ---- the common configuration ---- */

static bool queue_writable(const struct virtio_dev *dev, const struct virtq *q)
{
        return !q->ready && !(dev->status & VIRTIO_CONFIG_S_DRIVER_OK);
}

/* The selected queue, or NULL when queue_select names none (dev->lock held). */
static struct virtq *selected_queue(struct virtio_pci *vp)
{
        return vp->queue_select < vp->dev->n_queues ? &vp->dev->queues[vp->queue_select] : NULL;
}

/* A register that is plain transport state or a core field read under dev->lock. */
static uint32_t common_read_locked(struct virtio_pci *vp, uint32_t field)
{
        struct virtio_dev *dev = vp->dev;
        struct virtq *q = selected_queue(vp);

        switch (field) {
        case VIRTIO_PCI_COMMON_DFSELECT:
                return vp->device_feature_select;
        case VIRTIO_PCI_COMMON_GFSELECT:
                return vp->driver_feature_select;
        case VIRTIO_PCI_COMMON_GF:
                return vp->driver_feature_select < 2 ? vp->driver_features[vp->driver_feature_select] : 0;
        case VIRTIO_PCI_COMMON_MSIX:
                return dev->config_msix_vector;
        case VIRTIO_PCI_COMMON_NUMQ:
                return dev->n_queues;
        case VIRTIO_PCI_COMMON_CFGGENERATION:
                return (uint8_t)dev->config_generation;
        case VIRTIO_PCI_COMMON_Q_SELECT:
                return vp->queue_select;
        }
        if (!q)
                return field == VIRTIO_PCI_COMMON_Q_MSIX ? VIRTIO_MSI_NO_VECTOR : 0;
        switch (field) {
        case VIRTIO_PCI_COMMON_Q_SIZE:
                return q->size;
        case VIRTIO_PCI_COMMON_Q_MSIX:
                return dev->io[vp->queue_select].msix_vector;
        case VIRTIO_PCI_COMMON_Q_ENABLE:
                return q->ready;
        case VIRTIO_PCI_COMMON_Q_NOFF:
                return vp->queue_select; /* notify address: queue index * multiplier */
        case VIRTIO_PCI_COMMON_Q_DESCLO:
                return (uint32_t)q->desc_gpa;
        case VIRTIO_PCI_COMMON_Q_DESCHI:
                return (uint32_t)(q->desc_gpa >> 32);
        case VIRTIO_PCI_COMMON_Q_AVAILLO:
                return (uint32_t)q->avail_gpa;
        case VIRTIO_PCI_COMMON_Q_AVAILHI:
                return (uint32_t)(q->avail_gpa >> 32);
        case VIRTIO_PCI_COMMON_Q_USEDLO:
                return (uint32_t)q->used_gpa;
        case VIRTIO_PCI_COMMON_Q_USEDHI:
                return (uint32_t)(q->used_gpa >> 32);
        }
        return 0;
}

static uint32_t common_read(struct virtio_pci *vp, uint32_t field)
{
        struct virtio_dev *dev = vp->dev;
        uint32_t v;

        if (field == VIRTIO_PCI_COMMON_STATUS)
                return virtio_core_status(dev);
        virtio_dev_lock(dev);
        v = common_read_locked(vp, field == VIRTIO_PCI_COMMON_DF ? VIRTIO_PCI_COMMON_DFSELECT : field);
        virtio_dev_unlock(dev);
        return field == VIRTIO_PCI_COMMON_DF ? virtio_core_device_features(dev, v) : v;
}

/* A vector number as the driver may set it: one of ours, or none. */
static uint16_t vector_checked(const struct virtio_pci *vp, uint32_t v)
{
        return v < vp->n_vectors ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
}

static void set_half(uint64_t *gpa, bool high, uint32_t v)
{
        *gpa = high ? (*gpa & 0xffffffffULL) | (uint64_t)v << 32 : (*gpa & ~0xffffffffULL) | v;
}

/* The transport's own state after the driver reset the device (dev->lock held). The
 * core has set every vector back to none and cleared the ISR: unbind, lower INTx. */
static void transport_reset(struct virtio_pci *vp)
{
        vp->device_feature_select = vp->driver_feature_select = 0;
        vp->driver_features[0] = vp->driver_features[1] = 0;
        vp->queue_select = 0;
        vpci_msix_sync(vp);
        vpci_intx_update(vp);
}

static void common_write_locked(struct virtio_pci *vp, uint32_t field, uint32_t v)
{
        struct virtio_dev *dev = vp->dev;
        struct virtq *q = selected_queue(vp);

        switch (field) {
        case VIRTIO_PCI_COMMON_DFSELECT:
                vp->device_feature_select = v;
                return;
        case VIRTIO_PCI_COMMON_GFSELECT:
                vp->driver_feature_select = v;
                return;
        case VIRTIO_PCI_COMMON_MSIX:
                dev->config_msix_vector = vector_checked(vp, v);
                vpci_msix_sync(vp);
                return;
        case VIRTIO_PCI_COMMON_Q_SELECT:
                vp->queue_select = (uint16_t)v;
                return;
        case VIRTIO_PCI_COMMON_Q_MSIX:
                if (q) {
                        dev->io[vp->queue_select].msix_vector = vector_checked(vp, v);
                        vpci_msix_sync(vp);
                }
                return;
        }
        if (!q || !queue_writable(dev, q))
                return;
        switch (field) {
        case VIRTIO_PCI_COMMON_Q_SIZE:
                /* Split rings: a power of two no larger than what the device offers. */
                if (v && !(v & (v - 1)) && v <= dev->queue_max)
                        q->size = (uint16_t)v;
                return;
        case VIRTIO_PCI_COMMON_Q_DESCLO:
        case VIRTIO_PCI_COMMON_Q_DESCHI:
                set_half(&q->desc_gpa, field == VIRTIO_PCI_COMMON_Q_DESCHI, v);
                return;
        case VIRTIO_PCI_COMMON_Q_AVAILLO:
        case VIRTIO_PCI_COMMON_Q_AVAILHI:
                set_half(&q->avail_gpa, field == VIRTIO_PCI_COMMON_Q_AVAILHI, v);
                return;
        case VIRTIO_PCI_COMMON_Q_USEDLO:
        case VIRTIO_PCI_COMMON_Q_USEDHI:
                set_half(&q->used_gpa, field == VIRTIO_PCI_COMMON_Q_USEDHI, v);
                return;
        }
}

static void common_write(struct virtio_pci *vp, uint32_t field, uint32_t v)
{
        struct virtio_dev *dev = vp->dev;
        uint32_t select;

        switch (field) {
        case VIRTIO_PCI_COMMON_STATUS:
                virtio_core_set_status(dev, (uint8_t)v);
                if ((uint8_t)v == 0) {
                        virtio_dev_lock(dev);
                        transport_reset(vp);
                        virtio_dev_unlock(dev);
                }
                return;
        case VIRTIO_PCI_COMMON_GF:
                virtio_dev_lock(dev);
                select = vp->driver_feature_select;
                if (select < 2)
                        vp->driver_features[select] = v;
                virtio_dev_unlock(dev);
                virtio_core_driver_features(dev, select, v);
                return;
        }
        virtio_dev_lock(dev);
        select = vp->queue_select;
        common_write_locked(vp, field, v);
        virtio_dev_unlock(dev);
        if (field == VIRTIO_PCI_COMMON_Q_ENABLE && v == 1)
                virtio_core_queue_enable(dev, select);
}

/* The registers' offsets and widths; 64-bit addresses are two 32-bit registers. */
static const uint8_t common_width[COMMON_SIZE] = {
        [VIRTIO_PCI_COMMON_DFSELECT] = 4,       [VIRTIO_PCI_COMMON_DF] = 4,
        [VIRTIO_PCI_COMMON_GFSELECT] = 4,       [VIRTIO_PCI_COMMON_GF] = 4,
        [VIRTIO_PCI_COMMON_MSIX] = 2,           [VIRTIO_PCI_COMMON_NUMQ] = 2,
        [VIRTIO_PCI_COMMON_STATUS] = 1,         [VIRTIO_PCI_COMMON_CFGGENERATION] = 1,
        [VIRTIO_PCI_COMMON_Q_SELECT] = 2,       [VIRTIO_PCI_COMMON_Q_SIZE] = 2,
        [VIRTIO_PCI_COMMON_Q_MSIX] = 2,         [VIRTIO_PCI_COMMON_Q_ENABLE] = 2,
        [VIRTIO_PCI_COMMON_Q_NOFF] = 2,         [VIRTIO_PCI_COMMON_Q_DESCLO] = 4,
        [VIRTIO_PCI_COMMON_Q_DESCHI] = 4,       [VIRTIO_PCI_COMMON_Q_AVAILLO] = 4,
        [VIRTIO_PCI_COMMON_Q_AVAILHI] = 4,      [VIRTIO_PCI_COMMON_Q_USEDLO] = 4,
        [VIRTIO_PCI_COMMON_Q_USEDHI] = 4,
};

/* An access inside one register (len 1, 2 or 4): a narrower one reads part of it or
 * merges into it. An access across registers reads zero and writes nothing. */
static void common_access(struct virtio_pci *vp, uint32_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        uint32_t field = offset;

        while (field > 0 && !common_width[field])
                field--;
        uint32_t shift = 8 * (offset - field), width = common_width[field];
        if (offset - field + len > width) {
                if (!is_write)
                        memset(data, 0, len);
                return;
        }
        uint32_t v = !is_write || len < width ? common_read(vp, field) : 0;
        if (!is_write) {
                for (uint32_t i = 0; i < len; i++)
                        data[i] = (uint8_t)(v >> (shift + 8 * i));
                return;
        }
        if (len < width)
                for (uint32_t i = 0; i < len; i++)
                        v = (v & ~(0xffu << (shift + 8 * i))) | (uint32_t)data[i] << (shift + 8 * i);
        else
                v = len == 4 ? get32(data) : len == 2 ? (uint32_t)(data[0] | data[1] << 8) : data[0];
        common_write(vp, field, v);
}

/* ---- BAR 0 ---- */

static void isr_read(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len)
{
        memset(data, 0, len);
        if (offset != 0)
                return;
        data[0] = (uint8_t)virtio_core_isr_read_clear(vp->dev);
        virtio_dev_lock(vp->dev);
        vpci_intx_update(vp);
        virtio_dev_unlock(vp->dev);
}

static void notify_write(struct virtio_pci *vp, uint64_t offset)
{
        uint64_t q = offset / VPCI_NOTIFY_MULTIPLIER;

        if (q < vp->dev->n_queues)
                virtio_core_queue_notify(vp->dev, (uint32_t)q);
}

/* One access at offset of BAR 0 (len 1, 2 or 4, inside the BAR). */
static void bar_access4(struct virtio_pci *vp, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        uint64_t block = offset & ~(uint64_t)(VPCI_BLOCK_SIZE - 1), in = offset - block;

        if (block == VPCI_COMMON && in + len <= COMMON_SIZE) {
                common_access(vp, (uint32_t)in, data, len, is_write);
                return;
        }
        if (block == VPCI_DEVICE && in + len <= VPCI_BLOCK_SIZE) {
                if (is_write)
                        virtio_core_config_write(vp->dev, (uint32_t)in, data, len);
                else
                        virtio_core_config_read(vp->dev, (uint32_t)in, data, len);
                return;
        }
        if (block == VPCI_ISR && !is_write) {
                isr_read(vp, in, data, len);
                return;
        }
        if (block == VPCI_NOTIFY && is_write) {
                notify_write(vp, in);
                return;
        }
        if (block == VPCI_MSIX_TABLE || (block == VPCI_MSIX_PBA && !is_write)) {
                virtio_dev_lock(vp->dev);
                if (block == VPCI_MSIX_TABLE)
                        vpci_msix_table_access(vp, in, data, len, is_write);
                else
                        vpci_msix_pba_read(vp, in, data, len);
                virtio_dev_unlock(vp->dev);
                return;
        }
        if (!is_write)
                memset(data, 0, len); /* unused space and write-only registers read as zero */
}

static void vpci_bar_access(struct pci_function *fn, int bar, uint64_t offset, uint8_t *data, uint32_t len,
                            bool is_write)
{
        struct virtio_pci *vp = fn->opaque;

        (void)bar; /* BAR 0 is the only one */
        /* Device config takes 64-bit accesses; elsewhere they are two 32-bit ones. */
        if (len == 8 && (offset & ~(uint64_t)(VPCI_BLOCK_SIZE - 1)) != VPCI_DEVICE) {
                bar_access4(vp, offset, data, 4, is_write);
                bar_access4(vp, offset + 4, data + 4, 4, is_write);
                return;
        }
        if (len == 8) {
                if (is_write)
                        virtio_core_config_write(vp->dev, (uint32_t)(offset - VPCI_DEVICE), data, len);
                else
                        virtio_core_config_read(vp->dev, (uint32_t)(offset - VPCI_DEVICE), data, len);
                return;
        }
        bar_access4(vp, offset, data, len, is_write);
}

/* ---- config space: MSI-X control and the PCI configuration access capability ---- */

/* VIRTIO_PCI_CAP_PCI_CFG: the driver names a BAR window (bar, offset, length) and reads or
 * writes it through pci_cfg_data. Only a naturally aligned 1, 2 or 4-byte window of BAR 0. */
static void pci_cfg_window(struct virtio_pci *vp, bool is_write)
{
        uint8_t *cap = &vp->fn.config[vp->pci_cfg_cap];
        uint32_t offset = get32(cap + VIRTIO_PCI_CAP_OFFSET), length = get32(cap + VIRTIO_PCI_CAP_LENGTH);
        uint8_t *window = cap + offsetof(struct virtio_pci_cfg_cap, pci_cfg_data);

        if (cap[VIRTIO_PCI_CAP_BAR] != VPCI_BAR || (length != 1 && length != 2 && length != 4) ||
            offset % length || offset >= VPCI_BAR_SIZE) {
                if (!is_write)
                        memset(window, 0, 4);
                return;
        }
        vpci_bar_access(&vp->fn, VPCI_BAR, offset, window, length, is_write);
}

/* Writable bits of each config-space dword we own. */
static uint32_t config_wmask(const struct virtio_pci *vp, uint32_t dword)
{
        if (dword == vp->msix_cap)
                return (uint32_t)(MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL) << 16;
        if (dword == vp->pci_cfg_cap + 4u)
                return 0x000000ff; /* bar */
        if (dword == vp->pci_cfg_cap + (uint32_t)VIRTIO_PCI_CAP_OFFSET ||
            dword == vp->pci_cfg_cap + (uint32_t)VIRTIO_PCI_CAP_LENGTH ||
            dword == vp->pci_cfg_cap + (uint32_t)offsetof(struct virtio_pci_cfg_cap, pci_cfg_data))
                return 0xffffffff;
        return 0;
}

/* Called with the PCI lock held (pci.h); takes dev->lock inside it. */
static void vpci_config_access(struct pci_function *fn, uint32_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct virtio_pci *vp = fn->opaque;
        uint32_t dword = offset & ~3u, shift = 8 * (offset & 3);
        bool window = dword == vp->pci_cfg_cap + (uint32_t)offsetof(struct virtio_pci_cfg_cap, pci_cfg_data);

        if (!is_write) {
                if (window)
                        pci_cfg_window(vp, false);
                memcpy(data, &fn->config[offset], len);
                return;
        }
        uint32_t old = get32(&fn->config[dword]), wmask = config_wmask(vp, dword), val = old;
        for (uint32_t i = 0; i < len; i++)
                val = (val & ~(0xffu << (shift + 8 * i))) | (uint32_t)data[i] << (shift + 8 * i);
        put32(&fn->config[dword], (old & ~wmask) | (val & wmask));
        if (window) {
                pci_cfg_window(vp, true);
        } else if (dword == vp->msix_cap && ((old ^ val) & wmask)) {
                virtio_dev_lock(vp->dev);
                vpci_msix_control(vp, (uint16_t)(get32(&fn->config[dword]) >> 16));
                virtio_dev_unlock(vp->dev);
        }
}

/* ---- kicks: ioeventfds at the notify addresses, following BAR 0 ---- */

static void kick_fds_move(struct virtio_pci *vp, uint64_t new_base)
{
        struct virtio_dev *dev = vp->dev;
        struct vm_devices *ctx = dev->ctx;
        cap_error_t err = NULL;

        for (unsigned int q = 0; q < dev->n_queues; q++) {
                uint64_t bit = 1ULL << q, off = VPCI_NOTIFY + (uint64_t)q * VPCI_NOTIFY_MULTIPLIER;
                if ((vp->kicks_assigned & bit) &&
                    ctx->ioeventfd(ctx->vm, dev->io[q].kick_fd, vp->notify_base + off, VPCI_NOTIFY_LEN, false, false,
                                   &err) < 0)
                        vpci_warn(vp, &err);
                vp->kicks_assigned &= ~bit;
                /* A failure leaves the kick to the BAR access path (an exit per kick). */
                if (new_base && ctx->ioeventfd(ctx->vm, dev->io[q].kick_fd, new_base + off, VPCI_NOTIFY_LEN, false,
                                               true, &err) < 0)
                        vpci_warn(vp, &err);
                else if (new_base)
                        vp->kicks_assigned |= bit;
        }
        vp->notify_base = new_base;
}

static void vpci_bar_moved(struct pci_function *fn, int bar, uint64_t old_addr, uint64_t new_addr)
{
        struct virtio_pci *vp = fn->opaque;

        (void)old_addr;
        if (bar != VPCI_BAR)
                return;
        virtio_dev_lock(vp->dev);
        kick_fds_move(vp, new_addr);
        virtio_dev_unlock(vp->dev);
}

/* ---- the transport ---- */

static void eventfds_close(struct virtio_pci *vp)
{
        struct virtio_dev *dev = vp->dev;

        for (unsigned int q = 0; q < dev->n_queues; q++) {
                if (dev->io[q].kick_fd >= 0)
                        close(dev->io[q].kick_fd);
                if (dev->io[q].call_fd >= 0)
                        close(dev->io[q].call_fd);
                dev->io[q].kick_fd = dev->io[q].call_fd = -1;
        }
        if (vp->config_fd >= 0)
                close(vp->config_fd);
        vp->config_fd = -1;
}

static int eventfds_open(struct virtio_pci *vp, cap_error_t *err)
{
        struct virtio_dev *dev = vp->dev;

        for (unsigned int q = 0; q < dev->n_queues; q++)
                dev->io[q].kick_fd = dev->io[q].call_fd = -1;
        vp->config_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (vp->config_fd < 0)
                return cap_fail(err, errno, "%s: eventfd", dev->name);
        for (unsigned int q = 0; q < dev->n_queues; q++) {
                dev->io[q].kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
                dev->io[q].call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
                if (dev->io[q].kick_fd < 0 || dev->io[q].call_fd < 0)
                        return cap_fail(err, errno, "%s: eventfd", dev->name);
        }
        return 0;
}

static void vpci_free(struct virtio_pci *vp)
{
        eventfds_close(vp);
        vp->dev->transport_data = NULL;
        free(vp);
}

static int vpci_add(struct virtio_dev *dev, cap_error_t *err)
{
        struct virtio_pci *vp;

        if (dev->n_queues < 1 || dev->n_queues > VIRTIO_MAX_QUEUES)
                return cap_fail(err, 0, "%s: %u queues, virtio-pci takes 1 to %d", dev->name, dev->n_queues,
                                VIRTIO_MAX_QUEUES);
        if (dev->config_len > VPCI_BLOCK_SIZE)
                return cap_fail(err, 0, "%s: a config space of %u bytes is over virtio-pci's %d", dev->name,
                                dev->config_len, VPCI_BLOCK_SIZE);
        vp = xmalloc0(sizeof(*vp));
        vp->dev = dev;
        dev->transport_data = vp;
        if (eventfds_open(vp, err) < 0 || vpci_msix_init(vp, err) < 0) {
                vpci_free(vp);
                return -1;
        }
        config_header_fill(vp);
        vp->fn.bar_size[VPCI_BAR] = VPCI_BAR_SIZE;
        vp->fn.bar_access = vpci_bar_access;
        vp->fn.config_access = vpci_config_access;
        vp->fn.bar_moved = vpci_bar_moved;
        vp->fn.opaque = vp;
        if (pci_register_function(-1, &vp->fn, err) < 0) {
                vpci_free(vp);
                return -1;
        }
        return 0;
}

static void vpci_remove(struct virtio_dev *dev)
{
        struct virtio_pci *vp = dev->transport_data;

        if (!vp)
                return;
        pci_unregister_function(&vp->fn);
        virtio_dev_lock(dev);
        kick_fds_move(vp, 0);
        vpci_msix_teardown(vp);
        virtio_dev_unlock(dev);
        vpci_free(vp);
}

const struct virtio_transport virtio_pci_transport = {
        .name = "pci",
        .add = vpci_add,
        .remove = vpci_remove,
        .interrupt = vpci_interrupt,
};
