/* virtio-net's transmit side: a tx chain becomes a frame for the back-end. The header is
 * copied out of guest memory once and checked against what the driver negotiated; the
 * back-end is handed that local copy, never the guest's, so a guest rewriting its header
 * after the check cannot slip an offload request past it. A frame that fails a check is
 * dropped: the tap would refuse most of them, but a malformed GSO request must never
 * reach a back-end that trusts its header. */
#include <endian.h>
#include <string.h>

#include "vmm/virtio/net.h"

static bool has(uint64_t features, unsigned int bit)
{
        return features & (1ULL << bit);
}

const char *net_tx_hdr_check(const struct virtio_net_hdr_v1 *hdr, uint32_t frame_len, uint64_t features)
{
        if (frame_len < NET_ETH_HLEN)
                return "a frame shorter than an Ethernet header";
        if (frame_len > NET_FRAME_MAX)
                return "a frame larger than 64 KiB";
        if (hdr->flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
                return "receive-only header flags";
        bool csum = hdr->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
        if (csum) {
                if (!has(features, VIRTIO_NET_F_CSUM))
                        return "a checksum request without VIRTIO_NET_F_CSUM";
                uint32_t start = le16toh(hdr->csum_start), offset = le16toh(hdr->csum_offset);
                if (start + offset + 2 > frame_len)
                        return "a checksum outside the frame";
        }
        uint8_t gso = hdr->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
        if (gso == VIRTIO_NET_HDR_GSO_NONE)
                return hdr->gso_type == VIRTIO_NET_HDR_GSO_NONE ? NULL : "ECN without segmentation";
        unsigned int needs = gso == VIRTIO_NET_HDR_GSO_TCPV4   ? VIRTIO_NET_F_HOST_TSO4
                             : gso == VIRTIO_NET_HDR_GSO_TCPV6 ? VIRTIO_NET_F_HOST_TSO6
                             : gso == VIRTIO_NET_HDR_GSO_UDP   ? VIRTIO_NET_F_HOST_UFO
                                                               : 64;
        if (needs == 64 || !has(features, needs))
                return "a segmentation type the driver did not negotiate";
        if ((hdr->gso_type & VIRTIO_NET_HDR_GSO_ECN) && !has(features, VIRTIO_NET_F_HOST_ECN))
                return "ECN segmentation without VIRTIO_NET_F_HOST_ECN";
        if (!csum)
                return "segmentation without a checksum request";
        if (le16toh(hdr->gso_size) == 0)
                return "segmentation with a segment size of 0";
        if (le16toh(hdr->hdr_len) > frame_len)
                return "segmentation headers longer than the frame";
        return NULL;
}

const char *net_tx_prepare(const struct virtq_chain *c, uint64_t features, bool vnet_hdr, struct net_tx_frame *f)
{
        if (c->out_len < NET_HDR_LEN)
                return "a chain shorter than the virtio-net header";
        if (c->n_out > NET_QUEUE_SIZE)
                return "a chain of more buffers than the queue has";
        virtq_chain_read(c, 0, &f->hdr, NET_HDR_LEN);
        f->len = c->out_len - NET_HDR_LEN;
        const char *why = net_tx_hdr_check(&f->hdr, f->len, features);
        if (why)
                return why;
        f->hdr.num_buffers = 0; /* meaningless on tx: the back-end sees a clean header */
        f->iovcnt = 0;
        if (vnet_hdr)
                f->iov[f->iovcnt++] = (struct iovec){ &f->hdr, NET_HDR_LEN };
        size_t skip = NET_HDR_LEN;
        for (unsigned int i = 0; i < c->n_out; i++) {
                size_t n = c->iov[i].iov_len;
                if (skip >= n) {
                        skip -= n;
                        continue;
                }
                f->iov[f->iovcnt++] = (struct iovec){ (uint8_t *)c->iov[i].iov_base + skip, n - skip };
                skip = 0;
        }
        return NULL;
}
