/* The virtio core: the instance list, the transport choice, the status state machine,
 * feature negotiation, config-space bounds and the kick/interrupt plumbing (see
 * virtio.h and transport.h). Everything the driver writes reaches here through a
 * transport's registers and is checked before it changes any state. */
#include "vmm/virtio/virtio.h"

#include <errno.h>
#include <linux/virtio_pci.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/transport.h"
#include "vmm/vm.h"

/* Offered by every device: virtio 1.x, and the ring features virtqueue.c implements. */
#define VIRTIO_CORE_FEATURES                                                                       \
        ((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC) |                    \
         (1ULL << VIRTIO_RING_F_EVENT_IDX))

/* Device failures logged as warnings; after that, only with debug logging. */
#define VIRTIO_FAIL_WARNINGS 3

#define ISR_QUEUE 0x1
#define ISR_CONFIG 0x2

/* The status bits the driver steps through, in order; FAILED and NEEDS_RESET are apart. */
#define STATUS_STEPS                                                                               \
        (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |        \
         VIRTIO_CONFIG_S_DRIVER_OK)

/* The valid transitions of the driver's steps (virtio 1.2, 3.1.1). Anything else is
 * refused and leaves the status as it was; 0 (reset) and FAILED are always accepted. */
static const struct {
        uint8_t from, to;
} status_transitions[] = {
        { 0, VIRTIO_CONFIG_S_ACKNOWLEDGE },
        { VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER },
        { VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
          VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK },
        { VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK, STATUS_STEPS },
};

struct virtio_kick {
        struct virtio_dev *dev;
        unsigned int q;
};

static bool dev_live(const struct virtio_dev *dev)
{
        return (dev->status & VIRTIO_CONFIG_S_DRIVER_OK) &&
               !(dev->status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED));
}

void virtio_dev_lock(struct virtio_dev *dev)
{
        pthread_mutex_lock(&dev->lock);
}

void virtio_dev_unlock(struct virtio_dev *dev)
{
        pthread_mutex_unlock(&dev->lock);
}

bool virtio_has_feature(const struct virtio_dev *dev, unsigned int bit)
{
        return bit < 64 && (dev->driver_features & (1ULL << bit));
}

/* With dev->lock held. */
static void raise_config_interrupt(struct virtio_dev *dev)
{
        dev->isr |= ISR_CONFIG;
        if (dev->status & VIRTIO_CONFIG_S_DRIVER_OK)
                dev->transport->interrupt(dev, -1);
}

void virtio_dev_fail(struct virtio_dev *dev, const char *why)
{
        if (dev->status & VIRTIO_CONFIG_S_NEEDS_RESET)
                return;
        dev->status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        if (dev->fails_logged < VIRTIO_FAIL_WARNINGS) {
                dev->fails_logged++;
                log_warning("%s: %s; the device needs a reset%s", dev->name, why,
                            dev->fails_logged == VIRTIO_FAIL_WARNINGS ? " (its next failures are debug messages)" : "");
        } else {
                log_debug("%s: %s; the device needs a reset", dev->name, why);
        }
        raise_config_interrupt(dev);
}

static void dev_failf(struct virtio_dev *dev, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dev_failf(struct virtio_dev *dev, const char *fmt, ...)
{
        char why[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        virtio_dev_fail(dev, why);
}

void virtio_config_changed(struct virtio_dev *dev)
{
        dev->config_generation++;
        raise_config_interrupt(dev);
}

/* ---- queues, as devices see them (dev->lock held) ---- */

int virtio_queue_pop(struct virtio_dev *dev, unsigned int q, struct virtq_chain *chain)
{
        if (q >= dev->n_queues || !dev_live(dev) || !dev->queues[q].ready)
                return 0;
        struct virtq *vq = &dev->queues[q];
        int r = virtq_pop(vq, chain);
        if (r == 0 && (vq->event_idx || vq->notify_off)) {
                /* Empty: kicks are asked for again (virtio_queue_kicks_off), and the avail_event
                 * the last pop published must be visible before the avail index is read again (a
                 * full fence, in virtq_set_notification), or a request the driver adds meanwhile
                 * sees a stale avail_event or flag, is not kicked, and waits forever. */
                virtq_set_notification(vq, true);
                r = virtq_pop(vq, chain);
        }
        if (r < 0) {
                dev_failf(dev, "queue %u: %s", q, dev->queues[q].broken_why);
                return 0;
        }
        return r;
}

void virtio_queue_push(struct virtio_dev *dev, unsigned int q, uint16_t head, uint32_t written)
{
        if (q < dev->n_queues && dev_live(dev))
                virtq_push(&dev->queues[q], head, written);
}

void virtio_queue_push_many(struct virtio_dev *dev, unsigned int q, const uint16_t *heads, const uint32_t *written,
                            unsigned int n)
{
        if (q < dev->n_queues && dev_live(dev))
                virtq_push_many(&dev->queues[q], heads, written, n);
}

void virtio_queue_kicks_off(struct virtio_dev *dev, unsigned int q)
{
        if (q < dev->n_queues && dev_live(dev) && dev->queues[q].ready)
                virtq_kicks_off(&dev->queues[q]);
}

bool virtio_queue_signal(struct virtio_dev *dev, unsigned int q)
{
        if (q >= dev->n_queues || !dev_live(dev) || !virtq_should_signal(&dev->queues[q]))
                return false;
        dev->isr |= ISR_QUEUE;
        dev->transport->interrupt(dev, (int)q);
        return true;
}

int virtio_queue_fds(struct virtio_dev *dev, unsigned int q, int *kick_fd, int *call_fd, cap_error_t *err)
{
        if (q >= dev->n_queues)
                return cap_fail(err, 0, "%s: no queue %u (it has %u)", dev->name, q, dev->n_queues);
        *kick_fd = dev->io[q].kick_fd;
        *call_fd = dev->io[q].call_fd;
        return 0;
}

void virtio_queue_adopt(struct virtio_dev *dev, unsigned int q)
{
        if (q < dev->n_queues && dev->vhost && dev_live(dev) && dev->queues[q].ready)
                virtq_adopt(&dev->queues[q]);
}

/* ---- the transports' side ---- */

uint32_t virtio_core_device_features(struct virtio_dev *dev, uint32_t select)
{
        if (select > 1)
                return 0;
        return (uint32_t)(dev->features >> (32 * select));
}

void virtio_core_driver_features(struct virtio_dev *dev, uint32_t select, uint32_t value)
{
        virtio_dev_lock(dev);
        /* Features are negotiated between DRIVER and FEATURES_OK only. */
        if (select <= 1 && (dev->status & VIRTIO_CONFIG_S_DRIVER) &&
            !(dev->status & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_FAILED))) {
                uint64_t mask = 0xffffffffULL << (32 * select);
                dev->driver_features = (dev->driver_features & ~mask) | ((uint64_t)value << (32 * select));
        }
        virtio_dev_unlock(dev);
}

uint8_t virtio_core_status(struct virtio_dev *dev)
{
        virtio_dev_lock(dev);
        uint8_t s = dev->status;
        virtio_dev_unlock(dev);
        return s;
}

/* Back to the initial state: the device drops its work, every queue is forgotten.
 * With dev->lock held. */
static void dev_reset(struct virtio_dev *dev)
{
        dev->ops->reset(dev);
        for (unsigned int q = 0; q < dev->n_queues; q++) {
                virtq_reset(&dev->queues[q]);
                dev->queues[q].size = dev->queue_max;
                dev->io[q].msix_vector = VIRTIO_MSI_NO_VECTOR;
        }
        dev->config_msix_vector = VIRTIO_MSI_NO_VECTOR;
        dev->driver_features = 0;
        dev->isr = 0;
        dev->status = 0;
}

static bool status_transition_valid(uint8_t from, uint8_t to)
{
        for (size_t i = 0; i < ARRAY_SIZE(status_transitions); i++)
                if (status_transitions[i].from == from && status_transitions[i].to == to)
                        return true;
        return false;
}

/* FEATURES_OK: only a subset of what was offered, and never without VERSION_1 (no legacy). */
static bool features_acceptable(const struct virtio_dev *dev)
{
        return !(dev->driver_features & ~dev->features) && (dev->driver_features & (1ULL << VIRTIO_F_VERSION_1));
}

static void dev_activate(struct virtio_dev *dev)
{
        cleanup_error cap_error_t err = NULL;
        if (dev->status & VIRTIO_CONFIG_S_NEEDS_RESET)
                return;
        if (dev->ops->activate(dev, &err) < 0) {
                virtio_dev_fail(dev, err ? err->msg : "activation failed");
                return;
        }
        /* Kicks that came before DRIVER_OK were dropped: have the event loop look at every
         * queue once. */
        for (unsigned int q = 0; q < dev->n_queues; q++)
                if (dev->queues[q].ready)
                        virtio_core_queue_notify(dev, q);
}

void virtio_core_set_status(struct virtio_dev *dev, uint8_t status)
{
        virtio_dev_lock(dev);
        uint8_t cur = dev->status & STATUS_STEPS;
        uint8_t want = status & STATUS_STEPS;
        if (status == 0) {
                dev_reset(dev);
        } else if (dev->status & VIRTIO_CONFIG_S_FAILED) {
                /* Given up by the driver: only a reset leaves this state. */
        } else if (status & VIRTIO_CONFIG_S_FAILED) {
                dev->status |= VIRTIO_CONFIG_S_FAILED;
                log_debug("%s: the driver gave up on the device (status %#x)", dev->name, status);
        } else if (want != cur && !status_transition_valid(cur, want)) {
                log_debug("%s: status %#x -> %#x refused", dev->name, dev->status, status);
        } else if (want != cur && (want & ~cur) == VIRTIO_CONFIG_S_FEATURES_OK && !features_acceptable(dev)) {
                log_debug("%s: FEATURES_OK refused: the driver wants %#llx, the device offers %#llx", dev->name,
                          (unsigned long long)dev->driver_features, (unsigned long long)dev->features);
        } else if (want != cur) {
                /* NEEDS_RESET is the device's: the driver's copy of it changes nothing. */
                dev->status = (uint8_t)(want | (dev->status & VIRTIO_CONFIG_S_NEEDS_RESET));
                if ((want & ~cur) == VIRTIO_CONFIG_S_FEATURES_OK) {
                        for (unsigned int q = 0; q < dev->n_queues; q++) {
                                dev->queues[q].indirect = virtio_has_feature(dev, VIRTIO_RING_F_INDIRECT_DESC);
                                dev->queues[q].event_idx = virtio_has_feature(dev, VIRTIO_RING_F_EVENT_IDX);
                        }
                } else if ((want & ~cur) == VIRTIO_CONFIG_S_DRIVER_OK) {
                        dev_activate(dev);
                }
        }
        virtio_dev_unlock(dev);
}

static bool config_in_bounds(const struct virtio_dev *dev, uint32_t offset, uint32_t len)
{
        return (len == 1 || len == 2 || len == 4 || len == 8) && dev->config && offset <= dev->config_len &&
               len <= dev->config_len - offset;
}

void virtio_core_config_read(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
        virtio_dev_lock(dev);
        if (config_in_bounds(dev, offset, len))
                memcpy(data, (const uint8_t *)dev->config + offset, len);
        else
                memset(data, 0, len);
        virtio_dev_unlock(dev);
}

void virtio_core_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
        virtio_dev_lock(dev);
        if (config_in_bounds(dev, offset, len) && !(dev->status & VIRTIO_CONFIG_S_FAILED) && dev->ops->config_write)
                dev->ops->config_write(dev, offset, data, len);
        virtio_dev_unlock(dev);
}

struct virtq *virtio_core_queue(struct virtio_dev *dev, uint32_t q)
{
        return q < dev->n_queues ? &dev->queues[q] : NULL;
}

void virtio_core_queue_enable(struct virtio_dev *dev, uint32_t q)
{
        virtio_dev_lock(dev);
        struct virtq *vq = virtio_core_queue(dev, q);
        /* Queues are set up after FEATURES_OK (the ring features are known) and before DRIVER_OK. */
        if (vq && !vq->ready && (dev->status & VIRTIO_CONFIG_S_FEATURES_OK) &&
            !(dev->status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED))) {
                if (vq->size > dev->queue_max)
                        dev_failf(dev, "queue %u: size %u is larger than the device's %u", q, vq->size, dev->queue_max);
                else if (!virtq_enable(vq, dev->ctx->mem))
                        dev_failf(dev, "queue %u: %s", q, vq->broken_why);
                else
                        vq->ready = true;
        }
        virtio_dev_unlock(dev);
}

void virtio_core_queue_notify(struct virtio_dev *dev, uint32_t q)
{
        if (q >= dev->n_queues || dev->io[q].kick_fd < 0)
                return;
        uint64_t one = 1;
        /* A full counter already means "kicked": nothing is lost when this fails. */
        if (write(dev->io[q].kick_fd, &one, sizeof(one)) < 0)
                return;
}

uint32_t virtio_core_isr_read_clear(struct virtio_dev *dev)
{
        virtio_dev_lock(dev);
        uint32_t isr = dev->isr;
        dev->isr = 0;
        virtio_dev_unlock(dev);
        return isr;
}

void virtio_core_isr_ack(struct virtio_dev *dev, uint32_t bits)
{
        virtio_dev_lock(dev);
        dev->isr &= ~bits;
        virtio_dev_unlock(dev);
}

/* ---- instances ---- */

/* An ioeventfd fired: the driver kicked queue k->q (event loop thread). */
static void virtio_kick_ready(void *opaque, uint32_t events)
{
        struct virtio_kick *k = opaque;
        struct virtio_dev *dev = k->dev;
        uint64_t n;
        (void)events;
        if (read(dev->io[k->q].kick_fd, &n, sizeof(n)) != sizeof(n))
                return;
        virtio_dev_lock(dev);
        if (dev_live(dev) && dev->queues[k->q].ready)
                dev->ops->notify(dev, k->q);
        virtio_dev_unlock(dev);
}

static const struct virtio_transport *transport_for(const struct vm_config *cfg)
{
        return cfg->virtio_transport == VM_VIRTIO_MMIO ? &virtio_mmio_transport : &virtio_pci_transport;
}

static int dev_check(const struct virtio_dev *dev, cap_error_t *err)
{
        if (dev->n_queues == 0 || dev->n_queues > VIRTIO_MAX_QUEUES)
                return cap_fail(err, 0, "%s: %u queues (1 to %d)", dev->name, dev->n_queues, VIRTIO_MAX_QUEUES);
        if (dev->queue_max == 0 || dev->queue_max > VIRTQ_MAX_SIZE || (dev->queue_max & (dev->queue_max - 1)))
                return cap_fail(err, 0, "%s: queue size %u is not a power of two up to %d", dev->name, dev->queue_max,
                                VIRTQ_MAX_SIZE);
        if (!dev->ops || !dev->ops->activate || !dev->ops->reset || (!dev->vhost && !dev->ops->notify))
                return cap_fail(err, 0, "%s: device callbacks missing", dev->name);
        if (dev->config_len && !dev->config)
                return cap_fail(err, 0, "%s: config space of %u bytes without a buffer", dev->name, dev->config_len);
        return 0;
}

static void kicks_stop(struct virtio_dev *dev, unsigned int n)
{
        for (unsigned int q = 0; q < n; q++)
                evloop_del(dev->ctx->loop, dev->io[q].kick_fd);
        free(dev->kicks);
        dev->kicks = NULL;
}

static int kicks_start(struct virtio_dev *dev, cap_error_t *err)
{
        dev->kicks = xmalloc0(dev->n_queues * sizeof(*dev->kicks));
        for (unsigned int q = 0; q < dev->n_queues; q++) {
                dev->kicks[q] = (struct virtio_kick){ .dev = dev, .q = q };
                if (evloop_add(dev->ctx->loop, dev->io[q].kick_fd, EPOLLIN, virtio_kick_ready, &dev->kicks[q], err) < 0) {
                        kicks_stop(dev, q);
                        return -1;
                }
        }
        return 0;
}

int virtio_dev_add(struct vm_devices *ctx, struct virtio_dev *dev, cap_error_t *err)
{
        if (dev_check(dev, err) < 0)
                return -1;
        dev->ctx = ctx;
        dev->features |= VIRTIO_CORE_FEATURES;
        dev->driver_features = 0;
        dev->status = 0;
        dev->config_generation = 0;
        dev->fails_logged = 0;
        dev->isr = 0;
        dev->config_msix_vector = VIRTIO_MSI_NO_VECTOR;
        for (unsigned int q = 0; q < VIRTIO_MAX_QUEUES; q++) {
                virtq_reset(&dev->queues[q]);
                dev->queues[q].size = q < dev->n_queues ? dev->queue_max : 0;
                dev->io[q] = (struct virtio_queue_io){ .kick_fd = -1, .call_fd = -1, .msix_vector = VIRTIO_MSI_NO_VECTOR };
        }
        dev->transport = transport_for(ctx->config);
        dev->transport_data = NULL;
        dev->kicks = NULL;
        dev->next = NULL;
        pthread_mutex_init(&dev->lock, NULL);
        if (dev->transport->add(dev, err) < 0) {
                pthread_mutex_destroy(&dev->lock);
                return cap_error_prefix(err, "%s", dev->name);
        }
        if (!dev->vhost && kicks_start(dev, err) < 0) {
                dev->transport->remove(dev);
                pthread_mutex_destroy(&dev->lock);
                return cap_error_prefix(err, "%s", dev->name);
        }
        struct virtio_dev **tail = &ctx->virtio_devs;
        while (*tail)
                tail = &(*tail)->next;
        *tail = dev;
        return 0;
}

static int virtio_core_init(struct vm_devices *ctx, cap_error_t *err)
{
        (void)err;
        ctx->virtio_devs = NULL;
        return 0;
}

/* The VM is stopping (vCPUs joined, event loop stopped): let every device finish what its
 * driver handed over, reset it so that nothing touches guest memory any more, then take it
 * off its transport and destroy it. */
static void virtio_core_exit(struct vm_devices *ctx)
{
        struct virtio_dev *dev = ctx->virtio_devs;
        ctx->virtio_devs = NULL;
        while (dev) {
                struct virtio_dev *next = dev->next;
                virtio_dev_lock(dev);
                if (dev->ops->stop)
                        dev->ops->stop(dev);
                dev_reset(dev);
                virtio_dev_unlock(dev);
                if (dev->kicks)
                        kicks_stop(dev, dev->n_queues);
                dev->transport->remove(dev);
                pthread_mutex_destroy(&dev->lock);
                if (dev->ops->destroy)
                        dev->ops->destroy(dev);
                dev = next;
        }
}

DEVICE_REGISTER(virtio, DEVICE_ORDER_VIRTIO_CORE, .name = "virtio", .init = virtio_core_init,
                .exit = virtio_core_exit)
