/* virtio-net's guest-facing parsers on arbitrary chains, shaped as the virtqueue hands them
 * over (readable buffers first, none empty): tx chains through net_tx_prepare (header copy
 * and checks), rx frames placed by net_rx_place into chains the input describes (mergeable
 * or not), and control requests through net_ctrl_parse. Each buffer is a heap block of
 * exactly its size, so a byte read or written past one is an ASan error; and each result is
 * checked against what net.h promises.
 *
 * Input: an le64 of negotiated features (made effective as the device does), then records,
 * each starting with an op byte:
 *   op % 3 == 0: a tx chain: 12 header bytes, then buffers (below), whose readable bytes
 *                start with that header; bit 2 of op: the back-end takes the header;
 *   op % 3 == 1: an rx frame: an le16 length (with its header), then up to 16 chains, each a
 *                non-zero byte and buffers (below), a 0 byte ending the ring; bit 2: mergeable;
 *                bit 3 (mergeable only): read through the pool (net_rx_pool_*), filled to the
 *                largest frame (bit 4) or to the frame's length, the header skipped (bit 5)
 *                as for a back-end without one;
 *   op % 3 == 2: a control request: buffers (below).
 * Buffers: a count byte (% 8), then per buffer a byte whose bit 7 makes it writable (and
 * every later one) and whose low bits + 1 give its length (bit 6: times 256), then its
 * contents as far as the input goes (a tx chain's readable bytes start with its header). */
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/net.h"
#include "fuzz_input.h"

#define MAX_BUFS 8
#define MAX_CHAINS 16

struct built {
        struct virtq_chain chain;
        uint8_t *mem[MAX_BUFS];
};

static uint8_t byte(struct input *in)
{
        uint8_t b = 0;
        take(in, &b, 1);
        return b;
}

/* A chain from the input; prefix (if any) is the start of its readable bytes. */
static void chain_build(struct built *b, struct input *in, const uint8_t *prefix, size_t prefix_len)
{
        memset(&b->chain, 0, sizeof(b->chain));
        unsigned int n = byte(in) % MAX_BUFS;
        bool writable = false;
        size_t off = 0;
        for (unsigned int i = 0; i < n; i++) {
                uint8_t d = byte(in);
                size_t len = ((size_t)(d & 0x3f) + 1) * (d & 0x40 ? 256 : 1);
                writable = writable || (d & 0x80);
                b->mem[i] = calloc(1, len);
                size_t j = 0;
                for (; !writable && j < len && off < prefix_len; j++, off++)
                        b->mem[i][j] = prefix[off];
                size_t got = len - j < in->left ? len - j : in->left;
                take(in, b->mem[i] + j, got);
                if (!writable) {
                        b->chain.out_len += (uint32_t)len;
                        b->chain.n_out++;
                } else {
                        b->chain.in_len += (uint32_t)len;
                        b->chain.n_in++;
                }
                b->chain.iov[i] = (struct iovec){ b->mem[i], len };
        }
}

static void chain_free(struct built *b)
{
        for (unsigned int i = 0; i < b->chain.n_out + b->chain.n_in; i++)
                free(b->mem[i]);
}

static bool inside(const struct virtq_chain *c, const struct iovec *v)
{
        for (unsigned int i = 0; i < c->n_out; i++) {
                const uint8_t *b = c->iov[i].iov_base, *p = v->iov_base;
                if (p >= b && p + v->iov_len <= b + c->iov[i].iov_len)
                        return true;
        }
        return false;
}

static void op_tx(uint64_t features, uint8_t op, struct input *in)
{
        uint8_t hdr[NET_HDR_LEN];
        if (!take(in, hdr, sizeof(hdr)))
                return;
        static struct built b;
        chain_build(&b, in, hdr, sizeof(hdr));
        static struct net_tx_frame f;
        bool vnet_hdr = op & 4;
        if (!net_tx_prepare(&b.chain, features, vnet_hdr, &f)) {
                if (f.len + NET_HDR_LEN != b.chain.out_len || net_tx_hdr_check(&f.hdr, f.len, features))
                        abort();
                uint64_t total = 0;
                for (int i = 0; i < f.iovcnt; i++) {
                        bool local = vnet_hdr && i == 0;
                        if (local ? f.iov[i].iov_base != &f.hdr || f.iov[i].iov_len != NET_HDR_LEN
                                  : !inside(&b.chain, &f.iov[i]))
                                abort();
                        total += f.iov[i].iov_len;
                }
                if (total != f.len + (vnet_hdr ? NET_HDR_LEN : 0))
                        abort();
                if (f.hdr.gso_type != VIRTIO_NET_HDR_GSO_NONE && !(features & (1ULL << VIRTIO_NET_F_CSUM)))
                        abort();
        }
        chain_free(&b);
}

/* The first len bytes of c's writable buffers. */
static uint32_t chain_read_in(const struct virtq_chain *c, uint8_t *out, uint32_t len)
{
        uint32_t done = 0;
        for (unsigned int i = c->n_out; i < c->n_out + c->n_in && done < len; i++) {
                uint32_t n = (uint32_t)c->iov[i].iov_len < len - done ? (uint32_t)c->iov[i].iov_len : len - done;
                memcpy(out + done, c->iov[i].iov_base, n);
                done += n;
        }
        return done;
}

/* The rx ring: chains from the input, and what came back. */
static struct built ring_chains[MAX_CHAINS];
static unsigned int ring_n, ring_next, pushes;
static uint32_t pushed_len[MAX_CHAINS];
static uint16_t pushed_head[MAX_CHAINS];

static int fake_pop(void *opaque, struct virtq_chain *chain)
{
        (void)opaque;
        if (ring_next == ring_n)
                return 0;
        *chain = ring_chains[ring_next].chain;
        chain->head = (uint16_t)ring_next++;
        return 1;
}

static void fake_push(void *opaque, const uint16_t *heads, const uint32_t *written, unsigned int n)
{
        (void)opaque;
        for (unsigned int i = 0; i < n; i++) {
                if (pushes == MAX_CHAINS || heads[i] >= ring_next || written[i] > ring_chains[heads[i]].chain.in_len)
                        abort();
                pushed_head[pushes] = heads[i];
                pushed_len[pushes++] = written[i];
        }
}

static void op_rx(uint8_t op, struct input *in)
{
        static struct net_rxq rq;
        static uint8_t frame[NET_HDR_LEN + NET_FRAME_MAX];
        uint16_t len = 0;
        take(in, &len, sizeof(len));
        uint32_t flen = len < NET_HDR_LEN ? NET_HDR_LEN : len;
        for (uint32_t i = 0; i < flen; i++)
                frame[i] = (uint8_t)(i * 7 + 3);
        memset(&rq, 0, sizeof(rq));
        rq.frame = frame;
        rq.len = flen;
        ring_n = ring_next = pushes = 0;
        while (ring_n < MAX_CHAINS && in->left && byte(in))
                chain_build(&ring_chains[ring_n++], in, NULL, 0);
        const struct net_rx_ring ring = { fake_pop, fake_push, NULL, MAX_CHAINS };
        bool mergeable = op & 4;
        int r;
        if (mergeable && (op & 8)) {
                uint32_t skip = op & 32 ? NET_HDR_LEN : 0;
                memset(frame, 0, skip);
                net_rx_pool_fill(&rq, &ring, op & 16 ? NET_HDR_LEN + NET_FRAME_MAX : flen);
                /* What a back-end does: the frame's bytes, in order, where the pool says. */
                static struct iovec iov[NET_RX_POOL_IOV + 1];
                int n = net_rx_pool_iov(&rq, skip, iov);
                uint64_t room = 0;
                for (uint32_t i = 0, off = skip; i < (uint32_t)n; i++) {
                        size_t chunk = off < flen ? flen - off : 0;
                        chunk = chunk < iov[i].iov_len ? chunk : iov[i].iov_len;
                        memmove(iov[i].iov_base, frame + off, chunk);
                        off += (uint32_t)chunk;
                        room += iov[i].iov_len;
                }
                if (room < NET_HDR_LEN + NET_FRAME_MAX - skip)
                        abort();
                r = net_rx_pool_take(&rq, &ring, skip != 0) ? 1 : net_rx_place(&rq, &ring, mergeable);
        } else {
                r = net_rx_place(&rq, &ring, mergeable);
        }
        if (r == 1 && rq.len != 0)
                abort();
        if (r == 0 && (rq.len == 0 || ring_next != ring_n))
                abort();
        /* The frame's chains (those written) hold it in order, num_buffers set. */
        uint32_t total = 0, frame_bufs = 0;
        for (unsigned int i = 0; i < pushes; i++) {
                total += pushed_len[i];
                frame_bufs += pushed_len[i] != 0;
        }
        if (r == 1 && total) {
                if (total != flen)
                        abort();
                static uint8_t got[NET_HDR_LEN + NET_FRAME_MAX];
                uint32_t off = 0;
                for (unsigned int i = 0; i < pushes; i++) {
                        if (pushed_len[i])
                                off += chain_read_in(&ring_chains[pushed_head[i]].chain, got + off, pushed_len[i]);
                }
                uint16_t nb = (uint16_t)(got[10] | got[11] << 8);
                if (nb != frame_bufs || memcmp(got, frame, 10) != 0 || memcmp(got + 12, frame + 12, flen - 12) != 0)
                        abort();
        }
        for (unsigned int i = 0; i < ring_n; i++)
                chain_free(&ring_chains[i]);
}

static void op_ctrl(uint64_t features, struct input *in)
{
        static struct built b;
        chain_build(&b, in, NULL, 0);
        struct net_ctrl_cmd cmd;
        uint16_t max_pairs = 4;
        int r = net_ctrl_parse(&b.chain, features, max_pairs, &cmd);
        if (r < 0 && b.chain.in_len != 0)
                abort();
        if (r == 0 && cmd.ack != VIRTIO_NET_OK && cmd.action != NET_CTRL_NONE)
                abort();
        if (cmd.action == NET_CTRL_PAIRS && (cmd.arg < 1 || cmd.arg > max_pairs))
                abort();
        if (cmd.action == NET_CTRL_OFFLOADS && (cmd.arg & ~(features & NET_GUEST_OFFLOADS)))
                abort();
        chain_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct input in = { data, size };
        uint64_t features = 0;
        if (!take(&in, &features, sizeof(features)))
                return 0;
        features = net_features_effective(features);
        for (int steps = 0; in.left > 0 && steps < 64; steps++) {
                uint8_t op = byte(&in);
                switch (op % 3) {
                case 0:
                        op_tx(features, op, &in);
                        break;
                case 1:
                        op_rx(op, &in);
                        break;
                case 2:
                        op_ctrl(features, &in);
                        break;
                }
        }
        return 0;
}
