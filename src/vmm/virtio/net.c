/* virtio-net: one device per configured NIC (ctx->config->nets[i]), a back-end behind it
 * (net_backend.h: a tap, passt or libslirp). Features: MAC and link status in config space,
 * mergeable receive buffers, the control queue (receive filters acknowledged, queue pairs,
 * guest offloads), multiqueue up to the back-end's queue pairs, and the checksum and
 * segmentation offloads the back-end carries in a vnet header.
 *
 * Everything runs on the event loop under the device lock: kicks (tx, rx refills, control)
 * and the back-end's fds, one per queue pair, level-triggered. Back-pressure both ways
 * comes from what is polled: a tx frame the back-end cannot take yet waits for EPOLLOUT
 * (so does a tx queue with frames left after a batch), and a received frame the guest has
 * no buffers for waits in the device while its fds are not read, until the next rx kick. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/net.h"
#include "vmm/vm.h"

#define NET_WARNINGS 3 /* back-end failures logged as warnings per device; later ones are debug */

/* A back-end queue pair: its fd on the loop, and transmitq (index) feeding it. */
struct net_pair {
        struct net_dev *d;
        unsigned int index;
        bool watched;                  /* fd on the loop */
        bool dead;                     /* the back-end failed: its tx frames are dropped */
        uint32_t events;               /* what is polled now */
        bool tx_held;                  /* tx_chain waits for the back-end (EAGAIN) */
        bool tx_more;                  /* the last batch left frames in the queue */
        struct virtq_chain tx_chain;
        struct net_tx_frame tx;
};

struct net_dev {
        struct virtio_dev dev;
        struct virtio_net_config config;
        char setting[16];              /* "net[0]" */
        struct net_backend *backend;
        struct evloop *loop;
        unsigned int max_pairs;
        unsigned int active_pairs;     /* receive queues in use (VQ_PAIRS_SET) */
        uint64_t features;             /* negotiated, prerequisites checked */
        bool live;                     /* activated: the fds are on the loop */
        bool working;                  /* the back-end's work fd is on the loop */
        struct net_pair *pairs;
        struct net_rxq *rxqs;
        struct virtq_chain ctrl_chain;
        uint64_t tx_dropped;
        unsigned int warnings;
};

/* An rx placement's view of receive queue q. */
struct rx_target {
        struct net_dev *d;
        unsigned int q;
        bool pushed;
};

uint64_t net_features_effective(uint64_t f)
{
        const uint64_t bit = 1;
#define HAS(name) (f & (bit << VIRTIO_NET_F_##name))
#define DROP(name) (f &= ~(bit << VIRTIO_NET_F_##name))
        if (!HAS(CSUM)) {
                DROP(HOST_TSO4);
                DROP(HOST_TSO6);
                DROP(HOST_UFO);
        }
        if (!HAS(HOST_TSO4) && !HAS(HOST_TSO6))
                DROP(HOST_ECN);
        if (!HAS(GUEST_CSUM)) {
                DROP(GUEST_TSO4);
                DROP(GUEST_TSO6);
                DROP(GUEST_UFO);
        }
        if (!HAS(GUEST_TSO4) && !HAS(GUEST_TSO6))
                DROP(GUEST_ECN);
        if (!HAS(CTRL_VQ)) {
                DROP(CTRL_RX);
                DROP(MQ);
                DROP(CTRL_GUEST_OFFLOADS);
        }
#undef HAS
#undef DROP
        return f;
}

static bool net_has(const struct net_dev *d, unsigned int bit)
{
        return d->features & (1ULL << bit);
}

/* Pairs the driver may use: all with MQ, else the first. */
static unsigned int usable_pairs(const struct net_dev *d)
{
        return net_has(d, VIRTIO_NET_F_MQ) ? d->max_pairs : 1;
}

static unsigned int ctrl_queue(const struct net_dev *d)
{
        return net_has(d, VIRTIO_NET_F_MQ) ? 2 * d->max_pairs : 2;
}

static void net_warn(struct net_dev *d, const char *what, int errnum)
{
        if (d->warnings < NET_WARNINGS) {
                d->warnings++;
                log_warning("%s: queue pair %s: %s", d->setting, what, strerror(errnum));
        } else {
                log_debug("%s: queue pair %s: %s", d->setting, what, strerror(errnum));
        }
}

/* Poll fd k for what its queues wait for: EPOLLIN while its receive queue can take a
 * frame, EPOLLOUT while a tx frame or batch waits. */
static void pair_update(struct net_dev *d, unsigned int k)
{
        struct net_pair *p = &d->pairs[k];
        if (!p->watched)
                return;
        unsigned int r = k % d->active_pairs;
        uint32_t events = 0;
        if (d->rxqs[r].len == 0 && d->dev.queues[2 * r].ready)
                events |= EPOLLIN;
        if (p->tx_held || p->tx_more)
                events |= EPOLLOUT;
        if (events == p->events)
                return;
        cleanup_error cap_error_t err = NULL;
        if (evloop_mod(d->loop, d->backend->fds[k], events, &err) < 0) {
                log_warning("%s: %s", d->setting, err->msg);
                return;
        }
        p->events = events;
}

static void pair_unwatch(struct net_dev *d, unsigned int k)
{
        struct net_pair *p = &d->pairs[k];
        if (p->watched)
                evloop_del(d->loop, d->backend->fds[k]);
        p->watched = false;
        p->events = 0;
}

static void pair_dead(struct net_dev *d, unsigned int k, int errnum)
{
        char what[64];
        snprintf(what, sizeof(what), "%u: the back-end failed (its frames are dropped)", k);
        net_warn(d, what, errnum);
        pair_unwatch(d, k);
        d->pairs[k].dead = true;
}

/* ---- tx ---- */

static void tx_run(struct net_dev *d, unsigned int k)
{
        struct net_pair *p = &d->pairs[k];
        unsigned int q = 2 * k + 1, budget = NET_BATCH;
        bool pushed = false;
        p->tx_more = false;
        /* No kicks while the queue is drained: the pop that finds it empty asks for them
         * again (virtio_queue_pop), so a frame added meanwhile is seen here or kicked. */
        virtio_queue_kicks_off(&d->dev, q);
        for (;;) {
                if (!p->tx_held) {
                        if (budget-- == 0) {
                                p->tx_more = true;
                                break;
                        }
                        if (virtio_queue_pop(&d->dev, q, &p->tx_chain) != 1)
                                break;
                        const char *why = net_tx_prepare(&p->tx_chain, d->features, d->backend->vnet_hdr, &p->tx);
                        if (why) {
                                log_debug("%s: tx frame dropped: %s", d->setting, why);
                                d->tx_dropped++;
                                virtio_queue_push(&d->dev, q, p->tx_chain.head, 0);
                                pushed = true;
                                continue;
                        }
                        p->tx_held = true;
                }
                if (!p->dead) {
                        ssize_t n = d->backend->ops->send(d->backend, k, p->tx.iov, p->tx.iovcnt);
                        if (n == -EAGAIN)
                                break;
                        if (n < 0)
                                pair_dead(d, k, (int)-n);
                }
                if (p->dead)
                        d->tx_dropped++;
                virtio_queue_push(&d->dev, q, p->tx_chain.head, 0);
                p->tx_held = false;
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&d->dev, q);
        /* EPOLLOUT brings the device back to this queue: the driver's kicks meanwhile would
         * only cost it exits. */
        if ((p->tx_held || p->tx_more) && !p->dead)
                virtio_queue_kicks_off(&d->dev, q);
        pair_update(d, k);
}

/* ---- rx ---- */

static int rx_pop(void *opaque, struct virtq_chain *chain)
{
        struct rx_target *t = opaque;
        return virtio_queue_pop(&t->d->dev, t->q, chain);
}

static void rx_push(void *opaque, const uint16_t *heads, const uint32_t *written, unsigned int n)
{
        struct rx_target *t = opaque;
        virtio_queue_push_many(&t->d->dev, t->q, heads, written, n);
        t->pushed = true;
}

/* Read back-end k's next frame into rq's pool and frame[], header first (a zeroed one when
 * the back-end has none). 1: a frame, 0: none waiting, -1: the back-end failed. */
static int rx_read(struct net_dev *d, unsigned int k, struct net_rxq *rq)
{
        struct net_backend *b = d->backend;
        uint32_t hdr = b->vnet_hdr ? 0 : NET_HDR_LEN;
        struct iovec iov[NET_RX_POOL_IOV + 1];
        for (;;) {
                if (hdr)
                        memset(rq->frame, 0, NET_HDR_LEN);
                int n_iov = net_rx_pool_iov(rq, hdr, iov);
                ssize_t n = b->ops->recv(b, k, iov, n_iov);
                if (n == -EAGAIN)
                        return 0;
                if (n < 0) {
                        pair_dead(d, k, (int)-n);
                        return -1;
                }
                if ((size_t)n + hdr < NET_HDR_LEN + NET_ETH_HLEN)
                        continue; /* not a frame: nothing to give the guest */
                rq->len = (uint32_t)n + hdr;
                return 1;
        }
}

static void rx_signal(struct net_dev *d, struct rx_target *t)
{
        if (t->pushed)
                virtio_queue_signal(&d->dev, t->q);
        t->pushed = false;
}

/* Every fd feeding receive queue r polls again (or stops) as r's frame allows. */
static void rxq_update(struct net_dev *d, unsigned int r)
{
        for (unsigned int k = 0; k < d->max_pairs; k++)
                if (k % d->active_pairs == r)
                        pair_update(d, k);
}

/* Back-end k has frames: move up to a batch into receive queue k % active pairs. */
static void rx_run(struct net_dev *d, unsigned int k)
{
        unsigned int r = k % d->active_pairs;
        struct net_rxq *rq = &d->rxqs[r];
        struct rx_target t = { d, 2 * r, false };
        const struct net_rx_ring ring = { rx_pop, rx_push, &t, d->dev.queues[2 * r].size };
        bool mergeable = net_has(d, VIRTIO_NET_F_MRG_RXBUF);
        for (unsigned int i = 0; i < NET_BATCH && d->pairs[k].watched; i++) {
                if (rq->len == 0) {
                        if (mergeable)
                                net_rx_pool_fill(rq, &ring, NET_HDR_LEN + NET_FRAME_MAX);
                        if (rx_read(d, k, rq) <= 0)
                                break;
                        if (net_rx_pool_take(rq, &ring, !d->backend->vnet_hdr))
                                continue;
                }
                if (!net_rx_place(rq, &ring, mergeable))
                        break;
        }
        rx_signal(d, &t);
        rxq_update(d, r);
}

/* The driver added receive buffers to queue r: place the frame that waited for them. */
static void rx_kick(struct net_dev *d, unsigned int r)
{
        struct net_rxq *rq = &d->rxqs[r];
        struct rx_target t = { d, 2 * r, false };
        const struct net_rx_ring ring = { rx_pop, rx_push, &t, d->dev.queues[2 * r].size };
        net_rx_place(rq, &ring, net_has(d, VIRTIO_NET_F_MRG_RXBUF));
        rx_signal(d, &t);
        rxq_update(d, r);
}

/* ---- control queue ---- */

static void pairs_set(struct net_dev *d, unsigned int pairs)
{
        /* Frames waiting for receive queues the driver stops using are dropped. */
        for (unsigned int r = pairs; r < d->active_pairs; r++) {
                struct rx_target t = { d, 2 * r, false };
                const struct net_rx_ring ring = { rx_pop, rx_push, &t, d->dev.queues[2 * r].size };
                net_rxq_drop_frame(&d->rxqs[r], &ring);
                rx_signal(d, &t);
        }
        d->active_pairs = pairs;
        for (unsigned int k = 0; k < d->max_pairs; k++)
                pair_update(d, k);
}

static int offloads_set(struct net_dev *d, uint64_t offloads)
{
        struct net_backend *b = d->backend;
        cleanup_error cap_error_t err = NULL;
        if (!b->vnet_hdr || !b->ops->set_offloads)
                return offloads ? -1 : 0;
        if (b->ops->set_offloads(b, offloads, &err) < 0) {
                log_warning("%s: %s", d->setting, err->msg);
                return -1;
        }
        return 0;
}

static void ctrl_run(struct net_dev *d)
{
        unsigned int q = ctrl_queue(d);
        bool pushed = false;
        /* A guest refilling the queue as fast as it can waits for its next kick. */
        for (unsigned int i = 0; i < NET_BATCH && virtio_queue_pop(&d->dev, q, &d->ctrl_chain) == 1; i++) {
                struct net_ctrl_cmd cmd;
                pushed = true;
                if (net_ctrl_parse(&d->ctrl_chain, d->features, (uint16_t)d->max_pairs, &cmd) < 0) {
                        virtio_queue_push(&d->dev, q, d->ctrl_chain.head, 0);
                        continue;
                }
                if (cmd.action == NET_CTRL_PAIRS)
                        pairs_set(d, (unsigned int)cmd.arg);
                else if (cmd.action == NET_CTRL_OFFLOADS && offloads_set(d, cmd.arg) < 0)
                        cmd.ack = VIRTIO_NET_ERR;
                virtq_chain_write(&d->ctrl_chain, 0, &cmd.ack, sizeof(cmd.ack));
                virtio_queue_push(&d->dev, q, d->ctrl_chain.head, sizeof(cmd.ack));
        }
        if (pushed)
                virtio_queue_signal(&d->dev, q);
}

/* ---- the device ---- */

static void net_notify(struct virtio_dev *dev, unsigned int q)
{
        struct net_dev *d = dev->opaque;
        if (!d->live)
                return;
        if (net_has(d, VIRTIO_NET_F_CTRL_VQ) && q == ctrl_queue(d))
                ctrl_run(d);
        else if (q / 2 < usable_pairs(d) && (q & 1))
                tx_run(d, q / 2);
        else if (q / 2 < usable_pairs(d))
                rx_kick(d, q / 2);
}

/* Back-end fd k is ready (event loop thread). */
static void net_fd_ready(void *opaque, uint32_t events)
{
        struct net_pair *p = opaque;
        struct net_dev *d = p->d;
        virtio_dev_lock(&d->dev);
        /* A handler already fetched when the device was reset finds its fd unwatched. */
        if (d->live && p->watched) {
                if (events & (EPOLLERR | EPOLLHUP)) {
                        pair_dead(d, p->index, events & EPOLLERR ? EIO : EPIPE);
                } else {
                        if ((events & EPOLLOUT) && p->index < usable_pairs(d))
                                tx_run(d, p->index);
                        if (events & EPOLLIN)
                                rx_run(d, p->index);
                }
                /* A back-end that failed under frames waiting to go out: they are dropped
                 * now, and the driver's kicks come back. */
                if (p->dead && (p->tx_held || p->tx_more) && p->index < usable_pairs(d))
                        tx_run(d, p->index);
        }
        virtio_dev_unlock(&d->dev);
}

static void net_stop(struct net_dev *d)
{
        for (unsigned int k = 0; k < d->max_pairs; k++) {
                pair_unwatch(d, k);
                struct net_pair *p = &d->pairs[k];
                p->dead = p->tx_held = p->tx_more = false;
                net_rxq_clear(&d->rxqs[k]);
        }
        d->live = false;
}

static int net_activate(struct virtio_dev *dev, cap_error_t *err)
{
        struct net_dev *d = dev->opaque;
        net_stop(d);
        d->features = net_features_effective(dev->driver_features);
        d->active_pairs = 1;
        if (offloads_set(d, d->features & NET_GUEST_OFFLOADS) < 0)
                return cap_fail(err, 0, "%s: the back-end refused the guest's offloads", d->setting);
        d->live = true;
        for (unsigned int k = 0; k < d->max_pairs; k++) {
                if (evloop_add(d->loop, d->backend->fds[k], 0, net_fd_ready, &d->pairs[k], err) < 0) {
                        net_stop(d);
                        return cap_error_prefix(err, "%s", d->setting);
                }
                d->pairs[k].watched = true;
                pair_update(d, k);
        }
        return 0;
}

static void net_reset(struct virtio_dev *dev)
{
        net_stop(dev->opaque);
}

/* The back-end's own work (slirp), outside the device lock: it touches only the back-end,
 * whose send and recv run on this same loop thread. */
static void net_work_ready(void *opaque, uint32_t events)
{
        struct net_backend *b = opaque;
        (void)events;
        b->ops->work(b);
}

static void net_free(struct net_dev *d)
{
        if (d->working)
                evloop_del(d->loop, d->backend->work_fd);
        if (d->backend)
                d->backend->ops->destroy(d->backend);
        if (d->rxqs)
                for (unsigned int r = 0; r < d->max_pairs; r++)
                        free(d->rxqs[r].frame);
        free(d->rxqs);
        free(d->pairs);
        free(d);
}

static void net_destroy(struct virtio_dev *dev)
{
        struct net_dev *d = dev->opaque;
        if (d->tx_dropped)
                log_debug("%s: %llu tx frames dropped", d->setting, (unsigned long long)d->tx_dropped);
        net_free(d);
}

static const struct virtio_dev_ops net_ops = {
        .activate = net_activate,
        .notify = net_notify,
        .reset = net_reset,
        .destroy = net_destroy,
};

static uint64_t net_offer(const struct net_backend *b)
{
        uint64_t f = (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS) | (1ULL << VIRTIO_NET_F_MRG_RXBUF) |
                     (1ULL << VIRTIO_NET_F_CTRL_VQ) | (1ULL << VIRTIO_NET_F_CTRL_RX);
        if (b->n_queue_pairs > 1)
                f |= 1ULL << VIRTIO_NET_F_MQ;
        /* The guest's offloads only from a back-end that can be told which it accepted. */
        if (b->vnet_hdr && b->ops->set_offloads) {
                f |= b->features & NET_OFFLOAD_FEATURES;
                if (b->features & NET_GUEST_OFFLOADS)
                        f |= 1ULL << VIRTIO_NET_F_CTRL_GUEST_OFFLOADS;
        } else if (b->vnet_hdr) {
                f |= b->features & NET_OFFLOAD_FEATURES & ~NET_GUEST_OFFLOADS;
        }
        return f;
}

int net_dev_create(struct vm_devices *ctx, unsigned int index, const struct vm_net *cfg, struct net_backend *b,
                   cap_error_t *err)
{
        struct net_dev *d = xmalloc0(sizeof(*d));
        d->backend = b;
        snprintf(d->setting, sizeof(d->setting), "net[%u]", index);
        if (b->n_queue_pairs < 1 || b->n_queue_pairs > NET_MAX_QUEUE_PAIRS) {
                cap_fail(err, 0, "%s: the back-end has %u queue pairs (1 to %d)", d->setting, b->n_queue_pairs,
                         NET_MAX_QUEUE_PAIRS);
                net_free(d);
                return -1;
        }
        d->max_pairs = d->active_pairs = b->n_queue_pairs;
        d->loop = ctx->loop;
        d->pairs = xmalloc0(d->max_pairs * sizeof(*d->pairs));
        d->rxqs = xmalloc0(d->max_pairs * sizeof(*d->rxqs));
        for (unsigned int k = 0; k < d->max_pairs; k++) {
                d->pairs[k].d = d;
                d->pairs[k].index = k;
                d->rxqs[k].frame = xmalloc0(NET_HDR_LEN + NET_FRAME_MAX);
        }
        if (cfg->mac_set) {
                memcpy(d->config.mac, cfg->mac, sizeof(d->config.mac));
        } else {
                /* Locally administered, unicast: 02:ca, then the pid's low 24 bits and the index. */
                uint32_t pid = (uint32_t)getpid();
                const uint8_t mac[6] = { 0x02, 0xca, (uint8_t)(pid >> 16), (uint8_t)(pid >> 8), (uint8_t)pid,
                                         (uint8_t)index };
                memcpy(d->config.mac, mac, sizeof(mac));
        }
        d->config.status = htole16(VIRTIO_NET_S_LINK_UP);
        d->config.max_virtqueue_pairs = htole16((uint16_t)d->max_pairs);
        snprintf(d->dev.name, sizeof(d->dev.name), "virtio-net%u", index);
        d->dev.device_id = VIRTIO_ID_NET;
        d->dev.features = net_offer(b);
        d->dev.n_queues = 2 * d->max_pairs + 1;
        d->dev.queue_max = NET_QUEUE_SIZE;
        d->dev.config = &d->config;
        d->dev.config_len = sizeof(d->config);
        d->dev.ops = &net_ops;
        d->dev.opaque = d;
        if (b->ops->work) {
                if (evloop_add(d->loop, b->work_fd, EPOLLIN, net_work_ready, b, err) < 0) {
                        net_free(d);
                        return cap_error_prefix(err, "%s", d->setting);
                }
                d->working = true;
        }
        if (virtio_dev_add(ctx, &d->dev, err) < 0) {
                net_free(d);
                return -1;
        }
        return 0;
}

static int net_init(struct vm_devices *ctx, cap_error_t *err)
{
        const struct vm_config *cfg = ctx->config;
        for (int i = 0; i < cfg->n_nets; i++) {
                const struct vm_net *net = &cfg->nets[i];
                unsigned int pairs = net->queues > 0 ? (unsigned int)net->queues : 1;
                struct net_backend *b;
                if (net_backend_open(net, (unsigned int)i, pairs, &b, err) < 0)
                        return -1;
                if (net_dev_create(ctx, (unsigned int)i, net, b, err) < 0)
                        return -1;
        }
        return 0;
}

DEVICE_REGISTER(virtio_net, DEVICE_ORDER_VIRTIO, .name = "virtio-net", .init = net_init)
