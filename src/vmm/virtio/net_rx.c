/* virtio-net's receive side: a frame read from the back-end (header first) is placed into
 * the guest's receive chains. With VIRTIO_NET_F_MRG_RXBUF a frame spreads over as many
 * chains as it needs and the first one's header says how many (num_buffers); without it,
 * each frame takes one chain that holds it whole. Nothing of a frame reaches the driver
 * before all of it is in guest memory: its chains are pushed together, at the end, with
 * one update of the used index (Linux drops a frame whose later buffers it cannot see yet).
 *
 * With mergeable buffers the device takes chains ahead into a pool, enough for the largest
 * frame when the guest has them, and the back-end reads each frame straight into them: one
 * copy less than reading into frame[] first. Only the part of a frame the pool cannot hold
 * lands in frame[] and waits for more chains.
 *
 * A chain that cannot hold even a header (no writable bytes, or fewer than 12 where a
 * header goes) goes back at once with nothing written, which Linux counts as a short
 * frame. A frame is dropped only when the guest's buffers can never hold it: a whole
 * ring's worth of chains is not enough, or (without mergeable buffers) the chain offered
 * is smaller than the frame. */
#include <endian.h>
#include <stddef.h>
#include <string.h>

#include "vmm/virtio/net.h"

#define NUM_BUFFERS_OFFSET offsetof(struct virtio_net_hdr_v1, num_buffers)

/* The guest address of writable byte off of c (off < c->in_len). */
static uint8_t *chain_byte(const struct virtq_chain *c, uint32_t off)
{
        for (unsigned int i = c->n_out; i < c->n_out + c->n_in; i++) {
                if (off < c->iov[i].iov_len)
                        return (uint8_t *)c->iov[i].iov_base + off;
                off -= (uint32_t)c->iov[i].iov_len;
        }
        return NULL;
}

static void frame_done(struct net_rxq *rq)
{
        rq->len = 0;
        rq->placed = 0;
        rq->n_bufs = 0;
}

/* Take a chain into rq->chain unless one is held; false when the ring has none, or when
 * this call already took a ring's worth (a guest refilling as fast as it can does not keep
 * the device here). */
static bool chain_take(struct net_rxq *rq, const struct net_rx_ring *ring, unsigned int *taken)
{
        if (rq->have_chain)
                return true;
        if (*taken >= ring->size || ring->pop(ring->opaque, &rq->chain) != 1)
                return false;
        (*taken)++;
        rq->have_chain = true;
        return true;
}

static void push_one(const struct net_rx_ring *ring, uint16_t head, uint32_t written)
{
        ring->push(ring->opaque, &head, &written, 1);
}

/* A chain no frame can use goes back empty. */
static bool chain_useless(struct net_rxq *rq, const struct net_rx_ring *ring, uint32_t need)
{
        if (rq->chain.in_len >= need)
                return false;
        push_one(ring, rq->chain.head, 0);
        rq->have_chain = false;
        return true;
}

static int place_one(struct net_rxq *rq, const struct net_rx_ring *ring)
{
        unsigned int taken = 0;
        for (;;) {
                if (!chain_take(rq, ring, &taken))
                        return 0;
                if (!chain_useless(rq, ring, NET_HDR_LEN))
                        break;
        }
        if (rq->chain.in_len < rq->len) {
                rq->dropped++; /* the chain stays for a frame it can hold */
                frame_done(rq);
                return 1;
        }
        uint16_t one = htole16(1);
        memcpy(rq->frame + NUM_BUFFERS_OFFSET, &one, sizeof(one));
        virtq_chain_write(&rq->chain, 0, rq->frame, rq->len);
        push_one(ring, rq->chain.head, rq->len);
        rq->have_chain = false;
        frame_done(rq);
        return 1;
}

/* Even the whole ring cannot hold the frame: give its chains back empty. */
static void merged_drop(struct net_rxq *rq, const struct net_rx_ring *ring)
{
        memset(rq->lens, 0, rq->n_bufs * sizeof(rq->lens[0]));
        ring->push(ring->opaque, rq->heads, rq->lens, rq->n_bufs);
        rq->dropped++;
        frame_done(rq);
}

static int place_merged(struct net_rxq *rq, const struct net_rx_ring *ring)
{
        unsigned int taken = 0;
        while (rq->placed < rq->len) {
                if (rq->n_bufs >= ring->size) {
                        merged_drop(rq, ring);
                        return 1;
                }
                if (!chain_take(rq, ring, &taken))
                        return 0;
                if (chain_useless(rq, ring, rq->n_bufs == 0 ? NET_HDR_LEN : 1))
                        continue;
                const struct virtq_chain *c = &rq->chain;
                if (rq->n_bufs == 0) {
                        rq->num_buffers[0] = chain_byte(c, NUM_BUFFERS_OFFSET);
                        rq->num_buffers[1] = chain_byte(c, NUM_BUFFERS_OFFSET + 1);
                }
                uint32_t n = (uint32_t)virtq_chain_write(c, 0, rq->frame + rq->placed, rq->len - rq->placed);
                rq->heads[rq->n_bufs] = c->head;
                rq->lens[rq->n_bufs] = n;
                rq->n_bufs++;
                rq->placed += n;
                rq->have_chain = false;
        }
        /* Byte by byte: the field may straddle two of the guest's buffers. */
        *rq->num_buffers[0] = (uint8_t)rq->n_bufs;
        *rq->num_buffers[1] = (uint8_t)(rq->n_bufs >> 8);
        ring->push(ring->opaque, rq->heads, rq->lens, rq->n_bufs);
        frame_done(rq);
        return 1;
}

int net_rx_place(struct net_rxq *rq, const struct net_rx_ring *ring, bool mergeable)
{
        if (rq->len == 0)
                return 1;
        return mergeable ? place_merged(rq, ring) : place_one(rq, ring);
}

/* ---- the pool: chains taken ahead, read into directly ---- */

static void pool_clear(struct net_rx_pool *p)
{
        p->n = p->n_iov = 0;
        p->bytes = 0;
}

void net_rx_pool_fill(struct net_rxq *rq, const struct net_rx_ring *ring, uint32_t want)
{
        struct net_rx_pool *p = &rq->pool;
        unsigned int taken = 0;
        while (p->bytes < want && p->n < ring->size) {
                if (!chain_take(rq, ring, &taken))
                        return;
                if (chain_useless(rq, ring, NET_HDR_LEN))
                        continue;
                const struct virtq_chain *c = &rq->chain;
                /* No room for its buffers: it stays in rq->chain, and after the pool's chains
                 * it is the next one a frame takes. */
                if (c->n_in > NET_RX_POOL_IOV - p->n_iov)
                        return;
                memcpy(p->iov + p->n_iov, c->iov + c->n_out, c->n_in * sizeof(c->iov[0]));
                p->heads[p->n] = c->head;
                p->room[p->n] = c->in_len;
                p->iovs[p->n] = (uint16_t)c->n_in;
                p->n++;
                p->n_iov += c->n_in;
                p->bytes += c->in_len;
                rq->have_chain = false;
        }
}

int net_rx_pool_iov(const struct net_rxq *rq, uint32_t skip, struct iovec *out)
{
        const struct net_rx_pool *p = &rq->pool;
        int n = 0;
        size_t s = skip;
        for (unsigned int i = 0; i < p->n_iov; i++) {
                size_t len = p->iov[i].iov_len;
                if (s >= len) {
                        s -= len;
                        continue;
                }
                out[n++] = (struct iovec){ (uint8_t *)p->iov[i].iov_base + s, len - s };
                s = 0;
        }
        uint64_t off = p->bytes > skip ? p->bytes : skip;
        if (off < NET_HDR_LEN + NET_FRAME_MAX)
                out[n++] = (struct iovec){ rq->frame + off, NET_HDR_LEN + NET_FRAME_MAX - (uint32_t)off };
        return n;
}

/* The guest address of byte off (< NET_HDR_LEN) of the pool's first chain. */
static uint8_t *pool_hdr_byte(const struct net_rx_pool *p, uint32_t off)
{
        for (unsigned int i = 0;; i++) {
                if (off < p->iov[i].iov_len)
                        return (uint8_t *)p->iov[i].iov_base + off;
                off -= (uint32_t)p->iov[i].iov_len;
        }
}

bool net_rx_pool_take(struct net_rxq *rq, const struct net_rx_ring *ring, bool zero_hdr)
{
        struct net_rx_pool *p = &rq->pool;
        if (p->n == 0 || rq->len == 0)
                return false;
        if (zero_hdr)
                for (uint32_t i = 0; i < NET_HDR_LEN; i++)
                        *pool_hdr_byte(p, i) = 0;
        rq->num_buffers[0] = pool_hdr_byte(p, NUM_BUFFERS_OFFSET);
        rq->num_buffers[1] = pool_hdr_byte(p, NUM_BUFFERS_OFFSET + 1);
        unsigned int m = 0, iovs = 0;
        uint32_t left = rq->len;
        uint64_t used = 0;
        while (left && m < p->n) {
                uint32_t w = left < p->room[m] ? left : p->room[m];
                rq->heads[m] = p->heads[m];
                rq->lens[m] = w;
                left -= w;
                used += p->room[m];
                iovs += p->iovs[m];
                m++;
        }
        rq->n_bufs = (uint16_t)m;
        rq->placed = rq->len - left;
        if (m == p->n) {
                pool_clear(p);
        } else {
                memmove(p->heads, p->heads + m, (p->n - m) * sizeof(p->heads[0]));
                memmove(p->room, p->room + m, (p->n - m) * sizeof(p->room[0]));
                memmove(p->iovs, p->iovs + m, (p->n - m) * sizeof(p->iovs[0]));
                memmove(p->iov, p->iov + iovs, (p->n_iov - iovs) * sizeof(p->iov[0]));
                p->n -= m;
                p->n_iov -= iovs;
                p->bytes -= used;
        }
        if (left)
                return false;
        *rq->num_buffers[0] = (uint8_t)m;
        *rq->num_buffers[1] = (uint8_t)(m >> 8);
        ring->push(ring->opaque, rq->heads, rq->lens, m);
        frame_done(rq);
        return true;
}

void net_rxq_drop_frame(struct net_rxq *rq, const struct net_rx_ring *ring)
{
        if (rq->len == 0)
                return;
        if (rq->n_bufs) {
                merged_drop(rq, ring);
                return;
        }
        rq->dropped++;
        frame_done(rq);
}

void net_rxq_clear(struct net_rxq *rq)
{
        frame_done(rq);
        rq->have_chain = false;
        pool_clear(&rq->pool);
}
