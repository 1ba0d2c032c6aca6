/* virtio-vsock without vhost: queues rx (0), tx (1) and event (2), config guest_cid. Each tx
 * chain goes through vsock_chain_tx (vsock_pkt.c: header copied out and parsed once) to the
 * host muxer (vsock_mux.c); rx buffers are filled by the muxer, straight from the host
 * sockets. Everything runs on the event loop (or a vCPU at activation and reset) under the
 * device lock. */
#include <endian.h>
#include <linux/virtio_vsock.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/virtio.h"
#include "vmm/virtio/vsock_mux.h"
#include "vmm/virtio/vsock_pkt.h"
#include "vmm/vm.h"

#define VSOCK_QUEUE_RX 0
#define VSOCK_QUEUE_TX 1
#define VSOCK_QUEUE_EVENT 2
#define VSOCK_QUEUE_SIZE 256
/* How long a stopping VM waits for host peers to take what its guest sent them last. */
#define VSOCK_STOP_LINGER_MS 5000

struct vsock_dev {
        struct virtio_dev vdev;
        struct virtio_vsock_config config;
        uint64_t guest_cid;
        struct vsock_mux *mux;
        struct evloop *loop;
        struct virtq_chain chain;    /* the tx chain being handled */
        struct virtq_chain rx_chain; /* an rx buffer taken but not filled yet (rx_held) */
        bool rx_held;
        struct iovec iov[VIRTQ_MAX_SIZE];
};

/* Give the guest every packet the muxer has, while it gives buffers. */
static void vsock_rx_fill(struct vsock_dev *d)
{
        struct virtio_dev *dev = &d->vdev;
        bool pushed = false;
        for (;;) {
                if (!d->rx_held) {
                        if (!vsock_mux_rx_pending(d->mux) || virtio_queue_pop(dev, VSOCK_QUEUE_RX, &d->rx_chain) != 1)
                                break;
                        d->rx_held = true;
                }
                uint32_t written = 0;
                if (vsock_chain_rx(d->mux, &d->rx_chain, d->iov, &written) == 0)
                        break; /* nothing after all: keep the buffer for the next packet */
                virtio_queue_push(dev, VSOCK_QUEUE_RX, d->rx_chain.head, written);
                d->rx_held = false;
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(dev, VSOCK_QUEUE_RX);
}

static void vsock_tx(struct vsock_dev *d)
{
        struct virtio_dev *dev = &d->vdev;
        bool pushed = false;
        while (virtio_queue_pop(dev, VSOCK_QUEUE_TX, &d->chain) == 1) {
                vsock_chain_tx(d->mux, d->guest_cid, &d->chain, d->iov);
                virtio_queue_push(dev, VSOCK_QUEUE_TX, d->chain.head, 0);
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(dev, VSOCK_QUEUE_TX);
}

static int vsock_activate(struct virtio_dev *dev, cap_error_t *err)
{
        (void)err;
        vsock_rx_fill(dev->opaque);
        return 0;
}

/* The event queue's buffers stay with the device: TRANSPORT_RESET is only for a guest
 * whose connections vanished under it (a restored snapshot), which capsule does not do yet. */
static void vsock_notify(struct virtio_dev *dev, unsigned int q)
{
        struct vsock_dev *d = dev->opaque;
        if (q == VSOCK_QUEUE_TX)
                vsock_tx(d);
        if (q == VSOCK_QUEUE_TX || q == VSOCK_QUEUE_RX)
                vsock_rx_fill(d);
}

/* The VM is stopping: the packets a guest queued just before it powered off (its last bytes,
 * its close) were kicked, but the event loop may not have reached them; and host peers get a
 * bounded time for what is buffered for them. */
static void vsock_stop(struct virtio_dev *dev)
{
        struct vsock_dev *d = dev->opaque;
        vsock_tx(d);
        vsock_mux_linger(d->mux, VSOCK_STOP_LINGER_MS);
}

/* Before the rings go: the packets the driver made available last (Linux resets the device
 * as it powers off, maybe before the event loop reached its last kick) still count. */
static void vsock_reset(struct virtio_dev *dev)
{
        struct vsock_dev *d = dev->opaque;
        vsock_tx(d);
        d->rx_held = false;
        vsock_mux_reset(d->mux);
}

static void vsock_destroy(struct virtio_dev *dev)
{
        struct vsock_dev *d = dev->opaque;
        vsock_mux_destroy(d->mux);
        free(d);
}

static const struct virtio_dev_ops vsock_ops = {
        .activate = vsock_activate,
        .notify = vsock_notify,
        .reset = vsock_reset,
        .destroy = vsock_destroy,
        .stop = vsock_stop,
};

/* ---- the muxer's view of the device ---------------------------------------------- */

static int vsock_watch(void *opaque, int fd, evloop_fn fn, void *arg, cap_error_t *err)
{
        struct vsock_dev *d = opaque;
        return evloop_add(d->loop, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, fn, arg, err);
}

static void vsock_unwatch(void *opaque, int fd)
{
        struct vsock_dev *d = opaque;
        evloop_del(d->loop, fd);
}

static void vsock_lock(void *opaque)
{
        virtio_dev_lock(&((struct vsock_dev *)opaque)->vdev);
}

static void vsock_unlock(void *opaque)
{
        virtio_dev_unlock(&((struct vsock_dev *)opaque)->vdev);
}

static void vsock_rx_wake(void *opaque)
{
        vsock_rx_fill(opaque);
}

static int vsock_init(struct vm_devices *ctx, cap_error_t *err)
{
        const struct vm_config *cfg = ctx->config;
        if (!cfg->vsock_cid)
                return 0;
        struct vsock_dev *d = xmalloc0(sizeof(*d));
        d->guest_cid = cfg->vsock_cid;
        d->config.guest_cid = htole64(d->guest_cid);
        d->vdev = (struct virtio_dev){
                .name = "virtio-vsock",
                .device_id = VIRTIO_ID_VSOCK,
                .n_queues = VSOCK_QUEUE_EVENT + 1,
                .queue_max = VSOCK_QUEUE_SIZE,
                .config = &d->config,
                .config_len = sizeof(d->config),
                .ops = &vsock_ops,
                .opaque = d,
        };
        d->loop = ctx->loop;
        const struct vsock_mux_host host = {
                .watch = vsock_watch,
                .unwatch = vsock_unwatch,
                .lock = vsock_lock,
                .unlock = vsock_unlock,
                .rx_wake = vsock_rx_wake,
                .opaque = d,
        };
        if (vsock_mux_create(&d->mux, cfg->vsock_socket, d->guest_cid, &host, err) < 0) {
                free(d);
                return -1;
        }
        if (virtio_dev_add(ctx, &d->vdev, err) < 0) {
                vsock_mux_destroy(d->mux);
                free(d);
                return -1;
        }
        return 0;
}

DEVICE_REGISTER(virtio_vsock, DEVICE_ORDER_VIRTIO, .name = "virtio-vsock", .init = vsock_init)
