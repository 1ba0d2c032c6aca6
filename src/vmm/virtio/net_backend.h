/* Where a virtio-net NIC's frames go: the device (net.c) knows only this interface; the
 * back-ends are a tap (net_tap.c), a passt process (net_passt.c) and libslirp (net_slirp.c).
 *
 * A frame crosses the interface as one Ethernet frame, preceded by a struct
 * virtio_net_hdr_v1 (12 bytes, num_buffers included) when backend->vnet_hdr: the tap
 * carries checksum and segmentation offloads in that header, both ways. Without it the
 * device offers no offloads and hands over complete frames.
 *
 * Threads: send, recv and work run on the device's event-loop handlers, one queue pair at
 * a time per pair; they never block (the fds are non-blocking). */
#ifndef CAPSULE_VMM_VIRTIO_NET_BACKEND_H
#define CAPSULE_VMM_VIRTIO_NET_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common/error.h"
#include "vmm/vm.h"

#define NET_MAX_QUEUE_PAIRS 16

struct net_backend;

struct net_backend_ops {
        /* One frame (iov: the guest's tx buffers after the device's checks). Returns its
         * length when sent or dropped for good (too big, refused by the peer), -EAGAIN when
         * the back-end is full (the device waits for EPOLLOUT on fds[qp] and retries the
         * same frame), another -errno when the back-end is gone. */
        ssize_t (*send)(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt);
        /* One frame into iov (header first when vnet_hdr): its length, -EAGAIN when none is
         * waiting (the device polls EPOLLIN on fds[qp]), another -errno when the back-end is
         * gone. A frame larger than iov is dropped whole and the next one is tried. */
        ssize_t (*recv)(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt);
        /* Optional: the guest accepted features (VIRTIO_NET_F_GUEST_* bits): the offloads the
         * back-end may now put in front of received frames (the tap's TUNSETOFFLOAD). */
        int (*set_offloads)(struct net_backend *b, uint64_t guest_features, cap_error_t *err);
        /* Optional: the back-end's own work (libslirp's sockets and timers), run on the
         * device's loop whenever work_fd is readable, from the device's creation on. */
        void (*work)(struct net_backend *b);
        /* Close everything: a tap capsule created disappears, a passt process is reaped,
         * slirp's sockets close. */
        void (*destroy)(struct net_backend *b);
};

struct net_backend {
        const struct net_backend_ops *ops;
        unsigned int n_queue_pairs;
        int fds[NET_MAX_QUEUE_PAIRS]; /* per queue pair: what the device polls */
        int work_fd;                  /* with ops->work: polled for EPOLLIN */
        bool vnet_hdr;                /* frames carry struct virtio_net_hdr_v1 */
        uint64_t features;            /* the VIRTIO_NET_F_* offload bits the back-end carries
                                       * (CSUM, GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, GUEST_UFO,
                                       * HOST_TSO4/6, HOST_ECN, HOST_UFO); 0 without vnet_hdr */
        void *opaque;                 /* the back-end's own state */
};

/* Open the back-end cfg names for NIC number index, with queue_pairs pairs (1 unless a tap).
 * Errors name the setting: "net[INDEX]: ...". */
int net_backend_open(const struct vm_net *cfg, unsigned int index, unsigned int queue_pairs, struct net_backend **out,
                     cap_error_t *err);

/* The back-ends, which net_backend_open() picks from. */
int net_tap_open(const struct vm_net *cfg, unsigned int index, unsigned int queue_pairs, struct net_backend **out,
                 cap_error_t *err);
int net_passt_open(const struct vm_net *cfg, unsigned int index, struct net_backend **out, cap_error_t *err);
int net_slirp_open(const struct vm_net *cfg, unsigned int index, struct net_backend **out, cap_error_t *err);

#endif
