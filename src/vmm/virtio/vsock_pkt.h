/* virtio-vsock packets on the wire (vsock_pkt.c): the header's layout, and the two places
 * where a chain of guest buffers becomes a packet or receives one. The device (vsock.c)
 * calls these for each chain; the unit tests and the fuzzer call them with chains of their
 * own. */
#ifndef CAPSULE_VMM_VIRTIO_VSOCK_PKT_H
#define CAPSULE_VMM_VIRTIO_VSOCK_PKT_H

#include <stdint.h>
#include <sys/uio.h>

#include "vmm/virtio/virtqueue.h"
#include "vmm/virtio/vsock_mux.h"

enum vsock_parse {
        VSOCK_PKT_OK,
        VSOCK_PKT_DROP,  /* not for us, or too short to name a connection: ignore it */
        VSOCK_PKT_RESET, /* names a connection but is malformed: reset it (vsock_mux_tx_invalid) */
};

/* hdr: VSOCK_HDR_LEN bytes already copied out of guest memory; avail: readable bytes after
 * the header. Checks the addresses (guest_cid to the host), the length against avail and
 * VSOCK_MAX_PAYLOAD, the type (STREAM only) and the op. */
enum vsock_parse vsock_pkt_parse(const void *hdr, uint32_t avail, uint64_t guest_cid, struct vsock_pkt *pkt);
void vsock_pkt_encode(const struct vsock_pkt *pkt, void *hdr);

/* A tx chain: its header copied out once and parsed, then the packet (its payload still in
 * the chain's buffers) handed to the muxer. scratch: VIRTQ_MAX_SIZE iovecs. */
void vsock_chain_tx(struct vsock_mux *m, uint64_t guest_cid, const struct virtq_chain *c, struct iovec *scratch);
/* Fill an rx chain with the muxer's next packet. 1: filled, *written bytes (header and
 * payload); 0: the muxer had nothing (keep the chain); -1: not an rx buffer (readable
 * parts, or no room past a header): return it with nothing written. */
int vsock_chain_rx(struct vsock_mux *m, const struct virtq_chain *c, struct iovec *scratch, uint32_t *written);

#endif
