/* virtio-vsock without vhost: queues rx (0), tx (1) and event (2), config guest_cid. Each tx
 * chain's header is copied out of guest memory and parsed once (vsock_pkt_parse) before the
 * host muxer (vsock_mux.c) sees it; rx buffers are filled by the muxer, straight from the
 * host sockets. Everything runs on the event loop under the device lock. */
#include <endian.h>
#include <linux/virtio_vsock.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/virtio.h"
#include "vmm/virtio/vsock_mux.h"
#include "vmm/vm.h"

#define VSOCK_QUEUE_RX 0
#define VSOCK_QUEUE_TX 1
#define VSOCK_QUEUE_EVENT 2
#define VSOCK_QUEUE_SIZE 256

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

_Static_assert(sizeof(struct virtio_vsock_hdr) == VSOCK_HDR_LEN, "virtio_vsock_hdr is 44 bytes");

enum vsock_parse vsock_pkt_parse(const void *hdr, uint32_t avail, uint64_t guest_cid, struct vsock_pkt *pkt)
{
        struct virtio_vsock_hdr h;
        memcpy(&h, hdr, sizeof(h));
        *pkt = (struct vsock_pkt){
                .src_cid = le64toh(h.src_cid),
                .dst_cid = le64toh(h.dst_cid),
                .src_port = le32toh(h.src_port),
                .dst_port = le32toh(h.dst_port),
                .len = le32toh(h.len),
                .type = le16toh(h.type),
                .op = le16toh(h.op),
                .flags = le32toh(h.flags),
                .buf_alloc = le32toh(h.buf_alloc),
                .fwd_cnt = le32toh(h.fwd_cnt),
        };
        if (pkt->src_cid != guest_cid || pkt->dst_cid != VSOCK_HOST_CID)
                return VSOCK_PKT_DROP;
        if (pkt->len > avail || pkt->len > VSOCK_MAX_PAYLOAD)
                return VSOCK_PKT_RESET;
        if (pkt->type != VIRTIO_VSOCK_TYPE_STREAM)
                return VSOCK_PKT_RESET;
        if (pkt->op < VIRTIO_VSOCK_OP_REQUEST || pkt->op > VIRTIO_VSOCK_OP_CREDIT_REQUEST)
                return VSOCK_PKT_RESET;
        if (pkt->op != VIRTIO_VSOCK_OP_RW && pkt->len != 0)
                return VSOCK_PKT_RESET;
        return VSOCK_PKT_OK;
}

void vsock_pkt_encode(const struct vsock_pkt *pkt, void *hdr)
{
        struct virtio_vsock_hdr h = {
                .src_cid = htole64(pkt->src_cid),
                .dst_cid = htole64(pkt->dst_cid),
                .src_port = htole32(pkt->src_port),
                .dst_port = htole32(pkt->dst_port),
                .len = htole32(pkt->len),
                .type = htole16(pkt->type),
                .op = htole16(pkt->op),
                .flags = htole32(pkt->flags),
                .buf_alloc = htole32(pkt->buf_alloc),
                .fwd_cnt = htole32(pkt->fwd_cnt),
        };
        memcpy(hdr, &h, sizeof(h));
}

/* Entries of iov[0 .. n) from byte skip on, at most len bytes, into out; returns the count. */
static unsigned int iov_slice(const struct iovec *iov, unsigned int n, size_t skip, size_t len, struct iovec *out)
{
        unsigned int k = 0;
        for (unsigned int i = 0; i < n && len > 0; i++) {
                if (skip >= iov[i].iov_len) {
                        skip -= iov[i].iov_len;
                        continue;
                }
                size_t take = iov[i].iov_len - skip;
                if (take > len)
                        take = len;
                out[k++] = (struct iovec){ (uint8_t *)iov[i].iov_base + skip, take };
                len -= take;
                skip = 0;
        }
        return k;
}

static void iov_to_buf(const struct iovec *iov, unsigned int n, void *buf, size_t len)
{
        uint8_t *p = buf;
        for (unsigned int i = 0; i < n; i++) {
                memcpy(p, iov[i].iov_base, iov[i].iov_len);
                p += iov[i].iov_len;
        }
        memset(p, 0, len - (size_t)(p - (uint8_t *)buf));
}

static void buf_to_iov(const void *buf, const struct iovec *iov, unsigned int n)
{
        const uint8_t *p = buf;
        for (unsigned int i = 0; i < n; i++) {
                memcpy(iov[i].iov_base, p, iov[i].iov_len);
                p += iov[i].iov_len;
        }
}

/* Give the guest every packet the muxer has, while it gives buffers. */
static void vsock_rx_fill(struct vsock_dev *d)
{
        struct virtio_dev *dev = &d->vdev;
        bool pushed = false;
        for (;;) {
                struct virtq_chain *c = &d->rx_chain;
                if (!d->rx_held) {
                        if (!vsock_mux_rx_pending(d->mux) || virtio_queue_pop(dev, VSOCK_QUEUE_RX, c) != 1)
                                break;
                        if (c->n_out > 0 || c->in_len <= VSOCK_HDR_LEN) {
                                virtio_queue_push(dev, VSOCK_QUEUE_RX, c->head, 0); /* not a usable rx buffer */
                                pushed = true;
                                continue;
                        }
                        d->rx_held = true;
                }
                uint32_t room = c->in_len - VSOCK_HDR_LEN;
                if (room > VSOCK_MAX_PAYLOAD)
                        room = VSOCK_MAX_PAYLOAD;
                unsigned int n = iov_slice(c->iov, c->n_in, VSOCK_HDR_LEN, room, d->iov);
                struct vsock_pkt pkt;
                if (!vsock_mux_rx(d->mux, &pkt, d->iov, n, room))
                        break;
                uint8_t hdr[VSOCK_HDR_LEN];
                vsock_pkt_encode(&pkt, hdr);
                n = iov_slice(c->iov, c->n_in, 0, VSOCK_HDR_LEN, d->iov);
                buf_to_iov(hdr, d->iov, n);
                virtio_queue_push(dev, VSOCK_QUEUE_RX, c->head, VSOCK_HDR_LEN + pkt.len);
                d->rx_held = false;
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(dev, VSOCK_QUEUE_RX);
}

static void vsock_tx_one(struct vsock_dev *d, const struct virtq_chain *c)
{
        if (c->out_len < VSOCK_HDR_LEN)
                return; /* names no connection */
        uint8_t hdr[VSOCK_HDR_LEN];
        unsigned int n = iov_slice(c->iov, c->n_out, 0, VSOCK_HDR_LEN, d->iov);
        iov_to_buf(d->iov, n, hdr, sizeof(hdr));
        struct vsock_pkt pkt;
        switch (vsock_pkt_parse(hdr, c->out_len - VSOCK_HDR_LEN, d->guest_cid, &pkt)) {
        case VSOCK_PKT_OK:
                n = iov_slice(c->iov, c->n_out, VSOCK_HDR_LEN, pkt.len, d->iov);
                vsock_mux_tx(d->mux, &pkt, d->iov, n);
                break;
        case VSOCK_PKT_RESET:
                vsock_mux_tx_invalid(d->mux, &pkt);
                break;
        case VSOCK_PKT_DROP:
                break;
        }
}

static void vsock_tx(struct vsock_dev *d)
{
        struct virtio_dev *dev = &d->vdev;
        bool pushed = false;
        while (virtio_queue_pop(dev, VSOCK_QUEUE_TX, &d->chain) == 1) {
                vsock_tx_one(d, &d->chain);
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

static void vsock_reset(struct virtio_dev *dev)
{
        struct vsock_dev *d = dev->opaque;
        d->rx_held = false;
        vsock_mux_reset(d->mux);
}

/* The config space is read-only: undo a driver's write. */
static void vsock_config_write(struct virtio_dev *dev, uint32_t offset, uint32_t len)
{
        struct vsock_dev *d = dev->opaque;
        (void)offset;
        (void)len;
        d->config.guest_cid = htole64(d->guest_cid);
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
        .config_write = vsock_config_write,
        .destroy = vsock_destroy,
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
                .n_queues = 3,
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
