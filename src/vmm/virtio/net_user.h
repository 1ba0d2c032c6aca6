/* What the two user-mode back-ends (net_passt.c, net_slirp.c) share: the guest's view of
 * the network is the same whichever serves it, so a guest configured for one works with
 * the other (QEMU's -netdev user addresses). */
#ifndef CAPSULE_VMM_VIRTIO_NET_USER_H
#define CAPSULE_VMM_VIRTIO_NET_USER_H

#define NET_USER_NETWORK "10.0.2.0"
#define NET_USER_PREFIX 24
#define NET_USER_GATEWAY "10.0.2.2" /* the host: its loopback, for the guest */
#define NET_USER_DNS "10.0.2.3"     /* slirp: forwarded to the host's resolver (passt: see net_passt.c) */
#define NET_USER_GUEST "10.0.2.15"  /* what DHCP hands out */
#define NET_USER_MTU 1500

/* The largest frame either way: an MTU of 64 KiB plus the Ethernet header. A larger one
 * is dropped (sent) or ends the back-end (received: the peer broke the framing). */
#define NET_USER_MAX_FRAME (65536 + 14)
/* libslirp's frames waiting for the guest, at most (bytes); later ones are dropped. TCP
 * would retransmit them, but only after a timeout that costs throughput. */
#define NET_SLIRP_RX_BYTES (4 << 20)

#endif
