/* virtio-net's internals, shared by the device (net.c), its tx path (net_tx.c), rx path
 * (net_rx.c) and control queue (net_ctrl.c), and by the unit tests and the fuzzer, which
 * drive the guest-facing parsers with chains of their own.
 *
 * Queues: receiveq k is 2k, transmitq k is 2k+1 (k < max_virtqueue_pairs); the control
 * queue is 2 * max_virtqueue_pairs with VIRTIO_NET_F_MQ, else 2 (virtio 1.2, 5.1.2).
 * Back-end queue pair k's frames go to receiveq k % active pairs, so a frame steered
 * to a pair the guest does not use still reaches it. */
#ifndef CAPSULE_VMM_VIRTIO_NET_H
#define CAPSULE_VMM_VIRTIO_NET_H

#include <linux/virtio_net.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/device.h"
#include "vmm/virtio/net_backend.h"
#include "vmm/virtio/virtio.h"

#define NET_HDR_LEN ((uint32_t)sizeof(struct virtio_net_hdr_v1))
/* The largest frame either way: a 64 KiB GSO frame with its Ethernet and VLAN headers. */
#define NET_FRAME_MAX (65535u + 14u + 4u)
#define NET_ETH_HLEN 14u
#define NET_QUEUE_SIZE 256
/* Frames a queue moves per kick or per back-end event: the loop serves other devices too. */
#define NET_BATCH 256

/* The offloads a back-end can carry, and the feature each one needs (virtio 1.2, 5.1.3.1). */
#define NET_OFFLOAD_FEATURES                                                                                    \
        ((1ULL << VIRTIO_NET_F_CSUM) | (1ULL << VIRTIO_NET_F_GUEST_CSUM) | (1ULL << VIRTIO_NET_F_GUEST_TSO4) |   \
         (1ULL << VIRTIO_NET_F_GUEST_TSO6) | (1ULL << VIRTIO_NET_F_GUEST_ECN) | (1ULL << VIRTIO_NET_F_GUEST_UFO) | \
         (1ULL << VIRTIO_NET_F_HOST_TSO4) | (1ULL << VIRTIO_NET_F_HOST_TSO6) | (1ULL << VIRTIO_NET_F_HOST_ECN) |  \
         (1ULL << VIRTIO_NET_F_HOST_UFO))
#define NET_GUEST_OFFLOADS                                                                                     \
        ((1ULL << VIRTIO_NET_F_GUEST_CSUM) | (1ULL << VIRTIO_NET_F_GUEST_TSO4) | (1ULL << VIRTIO_NET_F_GUEST_TSO6) | \
         (1ULL << VIRTIO_NET_F_GUEST_ECN) | (1ULL << VIRTIO_NET_F_GUEST_UFO))

/* The negotiated features with every offload whose prerequisite is missing taken out: a
 * driver may accept HOST_TSO4 without CSUM, but then it gets no TSO. */
uint64_t net_features_effective(uint64_t features);

/* ---- tx (net_tx.c) ---- */

/* A tx chain checked and ready for the back-end: the header copied out once (and checked
 * against the features), then the frame, still in the guest's buffers. */
struct net_tx_frame {
        struct virtio_net_hdr_v1 hdr;
        uint32_t len;                  /* the frame, without the header */
        int iovcnt;
        struct iovec iov[NET_QUEUE_SIZE + 1]; /* [0] the local header copy when the back-end takes one */
};

/* Check a header against the negotiated (effective) features and the frame's length.
 * Returns NULL if it is acceptable, else why not. */
const char *net_tx_hdr_check(const struct virtio_net_hdr_v1 *hdr, uint32_t frame_len, uint64_t features);
/* Turn a chain into a frame for the back-end; vnet_hdr: the back-end takes the header.
 * Returns NULL, or why the frame must be dropped (never forwarded). */
const char *net_tx_prepare(const struct virtq_chain *c, uint64_t features, bool vnet_hdr, struct net_tx_frame *f);

/* ---- rx (net_rx.c) ---- */

/* Where rx placement takes and returns the guest's buffers: the device's receive queue,
 * or a test's chains. pop: 1 a chain, 0 none left. push: return n chains with the bytes
 * written into each, which the driver must see all at once (a frame's buffers). */
struct net_rx_ring {
        int (*pop)(void *opaque, struct virtq_chain *chain);
        void (*push)(void *opaque, const uint16_t *heads, const uint32_t *written, unsigned int n);
        void *opaque;
        uint16_t size; /* the queue's size: a frame never takes more chains */
};

/* iovecs a receive read may take: readv's limit (UIO_MAXIOV), less the bounce buffer's and
 * the tap's spare byte behind them. */
#define NET_RX_POOL_IOV 1022

/* Receive chains taken ahead of the next frame (mergeable buffers only): the back-end reads
 * the frame straight into them, and only what they cannot hold goes through frame[]. The
 * chains keep the driver's order; their writable buffers are iov[], chain after chain. */
struct net_rx_pool {
        unsigned int n;                /* chains held */
        unsigned int n_iov;
        uint64_t bytes;                /* their writable bytes */
        uint16_t heads[VIRTQ_MAX_SIZE];
        uint32_t room[VIRTQ_MAX_SIZE]; /* each chain's writable bytes (at least NET_HDR_LEN) */
        uint16_t iovs[VIRTQ_MAX_SIZE]; /* each chain's iovecs */
        struct iovec iov[NET_RX_POOL_IOV];
};

/* One receive queue's frame in flight: read from the back-end into the pool's chains, then
 * frame[], placed into the guest's chains as they come. A frame that finds the guest short
 * of buffers stays here until the next rx kick; the back-end is not read meanwhile. */
struct net_rxq {
        uint8_t *frame;                /* NET_HDR_LEN + NET_FRAME_MAX bytes */
        uint32_t len;                  /* the frame with its header; 0: none pending */
        uint32_t placed;               /* bytes of it copied into chains so far */
        uint16_t n_bufs;               /* chains taken for it (mergeable) */
        uint8_t *num_buffers[2];       /* where the first chain holds the header's num_buffers */
        bool have_chain;               /* chain was taken but not used (too small for a frame) */
        struct virtq_chain chain;
        uint16_t heads[VIRTQ_MAX_SIZE];
        uint32_t lens[VIRTQ_MAX_SIZE];
        uint64_t dropped;              /* frames the guest's buffers could never hold */
        struct net_rx_pool pool;
};

/* Place rq's pending frame. mergeable: across chains, num_buffers set; else into one chain
 * at least as big as the frame (a smaller chain drops the frame, and is kept for the next).
 * 1: the frame is placed and its chains pushed (or it was dropped), 0: the ring ran out of
 * buffers first (the frame stays pending). */
int net_rx_place(struct net_rxq *rq, const struct net_rx_ring *ring, bool mergeable);
/* Take chains into rq's pool until it holds want bytes (mergeable buffers, no frame
 * pending). A chain too small for a header goes back at once with nothing written. */
void net_rx_pool_fill(struct net_rxq *rq, const struct net_rx_ring *ring, uint32_t want);
/* Where the back-end reads the next frame: the pool's buffers from byte skip on (skip: the
 * header the device writes itself), then frame[] from the pool's end. Fills out (at most
 * NET_RX_POOL_IOV + 1 entries, at least NET_HDR_LEN + NET_FRAME_MAX - skip bytes) and
 * returns how many it used. */
int net_rx_pool_iov(const struct net_rxq *rq, uint32_t skip, struct iovec *out);
/* The frame of rq->len bytes was read where net_rx_pool_iov() said. zero_hdr: its header
 * was skipped and is written as zeroes. true: it fitted the pool's chains, which are
 * pushed; false: the pool's chains (if any) start it and net_rx_place() places the rest. */
bool net_rx_pool_take(struct net_rxq *rq, const struct net_rx_ring *ring, bool zero_hdr);
/* The driver stopped using rq's queue (fewer queue pairs): the pending frame is dropped and
 * the chains it took go back empty; chains taken ahead (the pool, a held one) stay for when
 * the queue is used again, or the guest would never get those buffers back. */
void net_rxq_drop_frame(struct net_rxq *rq, const struct net_rx_ring *ring);
/* Forget the pending frame and any chain held (device reset: nothing is pushed). */
void net_rxq_clear(struct net_rxq *rq);

/* ---- control queue (net_ctrl.c) ---- */

enum net_ctrl_action {
        NET_CTRL_NONE,         /* acknowledged, nothing to change */
        NET_CTRL_PAIRS,        /* use arg queue pairs */
        NET_CTRL_OFFLOADS,     /* the guest offloads are now arg */
};

struct net_ctrl_cmd {
        uint8_t ack;           /* VIRTIO_NET_OK or VIRTIO_NET_ERR */
        enum net_ctrl_action action;
        uint64_t arg;
};

/* Parse one control request against the negotiated (effective) features. Returns -1 for a
 * chain that has no writable byte for the ack (return it with nothing written); else 0 and
 * cmd says what to answer and do. */
int net_ctrl_parse(const struct virtq_chain *c, uint64_t features, uint16_t max_pairs, struct net_ctrl_cmd *cmd);

/* ---- the device (net.c) ---- */

/* Add NIC number index over back-end b (taken over: destroyed with the device, or on
 * failure). The registration opens b from ctx->config->nets[index]; tests pass their own. */
int net_dev_create(struct vm_devices *ctx, unsigned int index, const struct vm_net *cfg, struct net_backend *b,
                   cap_error_t *err);

#endif
