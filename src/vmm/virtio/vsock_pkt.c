#include "vmm/virtio/vsock_pkt.h"

#include <endian.h>
#include <linux/virtio_vsock.h>
#include <string.h>

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

void vsock_chain_tx(struct vsock_mux *m, uint64_t guest_cid, const struct virtq_chain *c, struct iovec *scratch)
{
        uint8_t hdr[VSOCK_HDR_LEN];
        if (virtq_chain_read(c, 0, hdr, sizeof(hdr)) != sizeof(hdr))
                return; /* too short to name a connection */
        struct vsock_pkt pkt;
        switch (vsock_pkt_parse(hdr, c->out_len - VSOCK_HDR_LEN, guest_cid, &pkt)) {
        case VSOCK_PKT_OK:
                vsock_mux_tx(m, &pkt, scratch, iov_slice(c->iov, c->n_out, VSOCK_HDR_LEN, pkt.len, scratch));
                break;
        case VSOCK_PKT_RESET:
                vsock_mux_tx_invalid(m, &pkt);
                break;
        case VSOCK_PKT_DROP:
                break;
        }
}

int vsock_chain_rx(struct vsock_mux *m, const struct virtq_chain *c, struct iovec *scratch, uint32_t *written)
{
        *written = 0;
        if (c->n_out > 0 || c->in_len <= VSOCK_HDR_LEN)
                return -1;
        uint32_t room = c->in_len - VSOCK_HDR_LEN;
        if (room > VSOCK_MAX_PAYLOAD)
                room = VSOCK_MAX_PAYLOAD;
        struct vsock_pkt pkt;
        if (!vsock_mux_rx(m, &pkt, scratch, iov_slice(c->iov + c->n_out, c->n_in, VSOCK_HDR_LEN, room, scratch), room))
                return 0;
        uint8_t hdr[VSOCK_HDR_LEN];
        vsock_pkt_encode(&pkt, hdr);
        virtq_chain_write(c, 0, hdr, sizeof(hdr));
        *written = VSOCK_HDR_LEN + pkt.len;
        return 1;
}
