/* virtio-mmio, version 2 (virtio 1.2, 4.2): one 4 KiB register window per device in
 * [LAYOUT_MMIO_START, PCI_MMIO_START) and one edge-triggered ISA GSI, announced to the
 * guest as virtio_mmio.device=4K@<addr>:<gsi> on the kernel command line.
 *
 * Registers take aligned 32-bit accesses only and the config area (0x100 on) any width;
 * anything else reads as zero and is dropped. QueueNotify is shared by every queue, so
 * each queue's kick is a KVM ioeventfd matching its index there: a kick never leaves
 * the kernel. Interrupts go out through an irqfd on the device's GSI; Linux's driver
 * then reads InterruptStatus and acknowledges it. */
#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/devices/pci.h"
#include "vmm/virtio/transport.h"
#include "vmm/x86/layout.h"

#define MMIO_WINDOW 0x1000ULL
#define MMIO_MAGIC 0x74726976u  /* "virt" */
#define MMIO_VERSION 2
#define MMIO_VENDOR 0x53504143u /* "CAPS" */
#define MMIO_MAX_DEVICES ((PCI_MMIO_START - LAYOUT_MMIO_START) / MMIO_WINDOW)

/* ISA IRQs no other device of capsule's uses (COM1 4, i8042 1 and 12, RTC 8, SCI 9; 0 and
 * 2 are the timer and the cascade, 13 the FPU): Linux has edge-triggered, active-high
 * descriptors for them from boot, which is what an irqfd's pulse needs. More devices
 * than these share them round-robin (the driver asks for a shared IRQ and reads
 * InterruptStatus to see whether the interrupt is its own). */
static const uint32_t mmio_gsis[] = { 5, 6, 7, 10, 11, 14, 15, 3 };

struct mmio_dev {
        uint64_t base;
        uint32_t gsi;
        int irq_fd;            /* irqfd on gsi */
        bool irqfd_assigned;
        unsigned int n_ioeventfds; /* queues 0 .. n-1 have their ioeventfd */
        unsigned int n_call_polled; /* vhost: call fds polled on the event loop */
        uint32_t device_features_sel, driver_features_sel, queue_sel;
};

static uint32_t le32_get(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32_put(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t mmio_read(struct virtio_dev *dev, struct mmio_dev *m, uint64_t off)
{
        uint32_t v = 0;
        switch (off) {
        case VIRTIO_MMIO_MAGIC_VALUE:
                return MMIO_MAGIC;
        case VIRTIO_MMIO_VERSION:
                return MMIO_VERSION;
        case VIRTIO_MMIO_DEVICE_ID:
                return dev->device_id;
        case VIRTIO_MMIO_VENDOR_ID:
                return MMIO_VENDOR;
        case VIRTIO_MMIO_DEVICE_FEATURES:
                return virtio_core_device_features(dev, __atomic_load_n(&m->device_features_sel, __ATOMIC_RELAXED));
        case VIRTIO_MMIO_STATUS:
                return virtio_core_status(dev);
        /* No shared memory regions: Linux takes all ones as "none". */
        case VIRTIO_MMIO_SHM_LEN_LOW:
        case VIRTIO_MMIO_SHM_LEN_HIGH:
        case VIRTIO_MMIO_SHM_BASE_LOW:
        case VIRTIO_MMIO_SHM_BASE_HIGH:
                return 0xffffffffu;
        case VIRTIO_MMIO_QUEUE_NUM_MAX:
        case VIRTIO_MMIO_QUEUE_READY:
        case VIRTIO_MMIO_INTERRUPT_STATUS:
        case VIRTIO_MMIO_CONFIG_GENERATION:
                break;
        default:
                return 0;
        }
        virtio_dev_lock(dev);
        const struct virtq *q = virtio_core_queue(dev, __atomic_load_n(&m->queue_sel, __ATOMIC_RELAXED));
        if (off == VIRTIO_MMIO_QUEUE_NUM_MAX)
                v = q ? dev->queue_max : 0;
        else if (off == VIRTIO_MMIO_QUEUE_READY)
                v = q && q->ready;
        else if (off == VIRTIO_MMIO_INTERRUPT_STATUS)
                v = dev->isr;
        else
                v = dev->config_generation;
        virtio_dev_unlock(dev);
        return v;
}

static void set_half(uint64_t *field, bool high, uint32_t v)
{
        if (high)
                *field = (*field & 0xffffffffULL) | (uint64_t)v << 32;
        else
                *field = (*field & ~0xffffffffULL) | v;
}

/* QueueNum, QueueReady 0 and the ring addresses: only while the selected queue is not
 * ready and the driver has not set DRIVER_OK (before that, Linux disables a queue it
 * gives up on by writing 0 to QueueReady). */
static void mmio_queue_write(struct virtio_dev *dev, struct mmio_dev *m, uint64_t off, uint32_t v)
{
        virtio_dev_lock(dev);
        struct virtq *q = virtio_core_queue(dev, __atomic_load_n(&m->queue_sel, __ATOMIC_RELAXED));
        if (q && !(dev->status & VIRTIO_CONFIG_S_DRIVER_OK)) {
                if (off == VIRTIO_MMIO_QUEUE_READY || q->ready)
                        q->ready = off != VIRTIO_MMIO_QUEUE_READY && q->ready;
                else if (off == VIRTIO_MMIO_QUEUE_NUM)
                        q->size = v > UINT16_MAX ? 0 : (uint16_t)v; /* 0: refused at QueueReady */
                else if (off == VIRTIO_MMIO_QUEUE_DESC_LOW || off == VIRTIO_MMIO_QUEUE_DESC_HIGH)
                        set_half(&q->desc_gpa, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, v);
                else if (off == VIRTIO_MMIO_QUEUE_AVAIL_LOW || off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH)
                        set_half(&q->avail_gpa, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH, v);
                else
                        set_half(&q->used_gpa, off == VIRTIO_MMIO_QUEUE_USED_HIGH, v);
        }
        virtio_dev_unlock(dev);
}

static void mmio_write(struct virtio_dev *dev, struct mmio_dev *m, uint64_t off, uint32_t v)
{
        switch (off) {
        case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
                __atomic_store_n(&m->device_features_sel, v, __ATOMIC_RELAXED);
                break;
        case VIRTIO_MMIO_DRIVER_FEATURES:
                virtio_core_driver_features(dev, __atomic_load_n(&m->driver_features_sel, __ATOMIC_RELAXED), v);
                break;
        case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
                __atomic_store_n(&m->driver_features_sel, v, __ATOMIC_RELAXED);
                break;
        case VIRTIO_MMIO_QUEUE_SEL:
                __atomic_store_n(&m->queue_sel, v, __ATOMIC_RELAXED);
                break;
        case VIRTIO_MMIO_QUEUE_READY:
                if (v == 1)
                        virtio_core_queue_enable(dev, __atomic_load_n(&m->queue_sel, __ATOMIC_RELAXED));
                else if (v == 0)
                        mmio_queue_write(dev, m, off, v);
                break;
        case VIRTIO_MMIO_QUEUE_NUM:
        case VIRTIO_MMIO_QUEUE_DESC_LOW:
        case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        case VIRTIO_MMIO_QUEUE_USED_LOW:
        case VIRTIO_MMIO_QUEUE_USED_HIGH:
                mmio_queue_write(dev, m, off, v);
                break;
        case VIRTIO_MMIO_QUEUE_NOTIFY:
                /* Reached only when no ioeventfd matched the value. */
                virtio_core_queue_notify(dev, v);
                break;
        case VIRTIO_MMIO_INTERRUPT_ACK:
                virtio_core_isr_ack(dev, v);
                break;
        case VIRTIO_MMIO_STATUS:
                if (v <= UINT8_MAX)
                        virtio_core_set_status(dev, (uint8_t)v);
                break;
        default:
                break;
        }
}

/* vCPU threads. The selectors are kept without dev->lock: each is one word that only the
 * driver changes (relaxed atomics, since vCPUs may race), and every use reads it once. */
static void mmio_access(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
        struct virtio_dev *dev = opaque;
        struct mmio_dev *m = dev->transport_data;
        if (off >= VIRTIO_MMIO_CONFIG) {
                if (is_write)
                        virtio_core_config_write(dev, (uint32_t)(off - VIRTIO_MMIO_CONFIG), data, len);
                else
                        virtio_core_config_read(dev, (uint32_t)(off - VIRTIO_MMIO_CONFIG), data, len);
                return;
        }
        if (len != 4 || off % 4) {
                if (!is_write)
                        memset(data, 0, len);
                return;
        }
        if (is_write)
                mmio_write(dev, m, off, le32_get(data));
        else
                le32_put(data, mmio_read(dev, m, off));
}

static void mmio_interrupt(struct virtio_dev *dev, int q)
{
        struct mmio_dev *m = dev->transport_data;
        uint64_t one = 1;
        (void)q;
        /* The counter only overflows if the guest never takes the interrupt: it is pending anyway. */
        if (write(m->irq_fd, &one, sizeof(one)) < 0)
                return;
}

/* vhost: the back-end signals a queue's call fd; the driver needs InterruptStatus set
 * before the interrupt, so the event loop relays it (any queue: one GSI). */
static void mmio_call_ready(void *opaque, uint32_t events)
{
        struct virtio_dev *dev = opaque;
        uint64_t n;
        bool called = false;
        (void)events;
        for (unsigned int q = 0; q < dev->n_queues; q++)
                if (read(dev->io[q].call_fd, &n, sizeof(n)) == sizeof(n))
                        called = true;
        if (!called)
                return;
        virtio_dev_lock(dev);
        if (dev->status & VIRTIO_CONFIG_S_DRIVER_OK) {
                dev->isr |= VIRTIO_MMIO_INT_VRING;
                mmio_interrupt(dev, 0);
        }
        virtio_dev_unlock(dev);
}

static void mmio_remove(struct virtio_dev *dev)
{
        struct mmio_dev *m = dev->transport_data;
        struct vm_devices *ctx = dev->ctx;
        cleanup_error cap_error_t err = NULL;
        if (!m)
                return;
        for (unsigned int q = 0; q < m->n_call_polled; q++)
                evloop_del(ctx->loop, dev->io[q].call_fd);
        /* Failures here are only possible if the VM is already gone: nothing to undo then. */
        for (unsigned int q = 0; q < m->n_ioeventfds; q++)
                ctx->ioeventfd_match(ctx->vm, dev->io[q].kick_fd, m->base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, false, q, false,
                                     &err);
        if (m->irqfd_assigned)
                ctx->irqfd(ctx->vm, m->irq_fd, m->gsi, false, &err);
        for (unsigned int q = 0; q < dev->n_queues; q++) {
                if (dev->io[q].kick_fd >= 0)
                        close(dev->io[q].kick_fd);
                if (dev->io[q].call_fd >= 0)
                        close(dev->io[q].call_fd);
                dev->io[q].kick_fd = dev->io[q].call_fd = -1;
        }
        if (m->irq_fd >= 0)
                close(m->irq_fd);
        free(m);
        dev->transport_data = NULL;
}

static unsigned int mmio_count(const struct vm_devices *ctx)
{
        unsigned int n = 0;
        for (const struct virtio_dev *d = ctx->virtio_devs; d; d = d->next)
                if (d->transport == &virtio_mmio_transport)
                        n++;
        return n;
}

static int mmio_wire(struct virtio_dev *dev, struct mmio_dev *m, cap_error_t *err)
{
        struct vm_devices *ctx = dev->ctx;
        m->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->irq_fd < 0)
                return cap_fail(err, errno, "eventfd");
        for (unsigned int q = 0; q < dev->n_queues; q++) {
                dev->io[q].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                dev->io[q].call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (dev->io[q].kick_fd < 0 || dev->io[q].call_fd < 0)
                        return cap_fail(err, errno, "eventfd");
        }
        if (ctx->irqfd(ctx->vm, m->irq_fd, m->gsi, true, err) < 0)
                return -1;
        m->irqfd_assigned = true;
        for (unsigned int q = 0; q < dev->n_queues; q++) {
                if (ctx->ioeventfd_match(ctx->vm, dev->io[q].kick_fd, m->base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, false, q,
                                         true, err) < 0)
                        return -1;
                m->n_ioeventfds = q + 1;
        }
        if (dev->vhost)
                for (unsigned int q = 0; q < dev->n_queues; q++) {
                        if (evloop_add(ctx->loop, dev->io[q].call_fd, EPOLLIN, mmio_call_ready, dev, err) < 0)
                                return -1;
                        m->n_call_polled = q + 1;
                }
        return bus_register(ctx->mmio, m->base, MMIO_WINDOW, mmio_access, dev, dev->name, err);
}

static int mmio_add(struct virtio_dev *dev, cap_error_t *err)
{
        struct vm_devices *ctx = dev->ctx;
        unsigned int index = mmio_count(ctx);
        if (index >= MMIO_MAX_DEVICES)
                return cap_fail(err, 0, "virtio-mmio: no room for more than %llu devices", MMIO_MAX_DEVICES);
        struct mmio_dev *m = xmalloc0(sizeof(*m));
        m->base = LAYOUT_MMIO_START + index * MMIO_WINDOW;
        m->gsi = mmio_gsis[index % ARRAY_SIZE(mmio_gsis)];
        m->irq_fd = -1;
        dev->transport_data = m;
        if (mmio_wire(dev, m, err) < 0) {
                mmio_remove(dev);
                return -1;
        }
        char param[80];
        snprintf(param, sizeof(param), "virtio_mmio.device=4K@%#llx:%u", (unsigned long long)m->base, m->gsi);
        ctx->cmdline_append(ctx->vm, param);
        return 0;
}

const struct virtio_transport virtio_mmio_transport = {
        .name = "mmio",
        .add = mmio_add,
        .remove = mmio_remove,
        .interrupt = mmio_interrupt,
};
