/* The split virtqueue (src/vmm/virtio/virtqueue.c) against a hostile driver: the
 * input lays out rings, descriptor tables, indirect tables and avail entries in
 * SPARSE guest RAM (two heap blocks of exactly their size with a hole between them,
 * like the RAM around the PCI hole), and interleaves pops, pushes, signalling and
 * notification changes. Every chain virtq_pop() returns must lie wholly in guest
 * RAM with totals that match its buffers; its bytes are then all read and written
 * through the chain helpers, so ASan catches a buffer that is not really RAM.
 *
 * Input: a 7-byte header, then records, each an op byte and its arguments:
 *   header:  b0: queue size 1 << ((b0 & 63) % 11), bit 7 INDIRECT_DESC, bit 6 EVENT_IDX;
 *            le16 desc, avail, used ring addresses (each times 2)
 *   op 0:    guest memory write: le16 gpa, length byte, the bytes
 *   op 1:    descriptor at le16 gpa (times 2): le16 addr, le16 len, flags byte, le16 next
 *   op 2:    avail entry: le16 head (the index moves on)
 *   op 3:    avail index: le16
 *   op 4:    pop (a popped chain waits for op 5)
 *   op 5:    push the oldest popped chain, written = le16 clamped to its in_len
 *   op 6:    should_signal
 *   op 7:    set_notification(byte & 1)
 *   op 8:    reset and enable again with features from a byte (bit 0 indirect, bit 1 event idx)
 *   op 9:    adopt the ring (virtq_adopt: indexes from the used ring, as after a vhost-user back-end) */
#include <assert.h>
#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/virtqueue.h"
#include "fuzz_input.h"

#define R0_SIZE 0x4000ULL
#define R1_GPA 0x8000ULL
#define R1_SIZE 0x4000ULL
#define INFLIGHT 64


static uint8_t u8(struct input *in)
{
        uint8_t v = 0;
        take(in, &v, 1);
        return v;
}

static uint16_t u16(struct input *in)
{
        uint16_t v = 0;
        take(in, &v, 2);
        return le16toh(v);
}

struct inflight {
        uint16_t head;
        uint32_t in_len;
};

struct state {
        struct guest_mem gm;
        struct virtq q;
        struct virtq_chain c;
        uint16_t avail_idx;
        struct inflight fl[INFLIGHT];
        unsigned int n_fl;
        uint8_t scratch[0x10000];
};

static void wr16(struct state *s, uint64_t gpa, uint16_t v)
{
        v = htole16(v);
        guest_mem_write(&s->gm, gpa, &v, 2);
}

static bool in_region(const struct guest_region *r, const struct iovec *v)
{
        uintptr_t b = (uintptr_t)v->iov_base, h = (uintptr_t)r->host;
        return b >= h && v->iov_len <= r->size && b - h <= r->size - v->iov_len;
}

/* Everything a device may rely on for a chain virtq_pop() returned. */
static void check_chain(struct state *s)
{
        const struct virtq_chain *c = &s->c;
        assert(c->head < s->q.size);
        assert(c->n_out + c->n_in <= s->q.size);
        uint64_t out = 0, in = 0;
        for (unsigned int i = 0; i < c->n_out + c->n_in; i++) {
                const struct iovec *v = &c->iov[i];
                assert(v->iov_len > 0);
                assert(in_region(&s->gm.regions[0], v) || in_region(&s->gm.regions[1], v));
                if (i < c->n_out)
                        out += v->iov_len;
                else
                        in += v->iov_len;
        }
        assert(out == c->out_len && in == c->in_len);
        /* Touch every byte (ASan: it must be RAM), a bounded amount per chain. */
        size_t n = c->out_len < sizeof(s->scratch) ? c->out_len : sizeof(s->scratch);
        assert(virtq_chain_read(c, 0, s->scratch, sizeof(s->scratch)) == n);
        n = c->in_len < sizeof(s->scratch) ? c->in_len : sizeof(s->scratch);
        assert(virtq_chain_write(c, 0, s->scratch, sizeof(s->scratch)) == n);
        assert(virtq_chain_read(c, c->out_len, s->scratch, 1) == 0);
        assert(virtq_chain_write(c, c->in_len, s->scratch, 1) == 0);
}

static void pop(struct state *s)
{
        bool was_broken = s->q.broken;
        uint16_t last = s->q.last_avail;
        int r = virtq_pop(&s->q, &s->c);
        if (was_broken || !s->q.desc) {
                assert(r == (was_broken ? -1 : 0));
                return;
        }
        if (r < 0) {
                assert(s->q.broken && s->q.broken_why && s->q.last_avail == last);
                return;
        }
        if (r == 0) {
                assert(s->q.last_avail == last);
                return;
        }
        assert(r == 1 && s->q.last_avail == (uint16_t)(last + 1));
        check_chain(s);
        if (s->n_fl == INFLIGHT) {
                virtq_push(&s->q, s->c.head, 0);
                return;
        }
        s->fl[s->n_fl++] = (struct inflight){ s->c.head, s->c.in_len };
}

static void push(struct state *s, uint16_t written)
{
        if (s->n_fl == 0)
                return;
        struct inflight f = s->fl[0];
        memmove(s->fl, s->fl + 1, --s->n_fl * sizeof(s->fl[0]));
        uint16_t before = s->q.used_idx;
        virtq_push(&s->q, f.head, written < f.in_len ? written : f.in_len);
        assert(s->q.used_idx == (uint16_t)(before + (s->q.used && !s->q.broken)));
}

static void enable(struct state *s, uint16_t size, uint64_t desc, uint64_t avail, uint64_t used, uint8_t features)
{
        virtq_reset(&s->q);
        s->q.size = size;
        s->q.desc_gpa = desc;
        s->q.avail_gpa = avail;
        s->q.used_gpa = used;
        s->q.indirect = features & 1;
        s->q.event_idx = features & 2;
        s->q.ready = true;
        bool ok = virtq_enable(&s->q, &s->gm);
        assert(ok == !s->q.broken);
        assert(ok == (s->q.desc != NULL));
        s->n_fl = 0;
        s->avail_idx = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct input in = { data, size };
        struct state *s = calloc(1, sizeof(*s));
        s->gm.memfd = -1;
        s->gm.regions[0] = (struct guest_region){ .gpa = 0, .size = R0_SIZE, .host = calloc(1, R0_SIZE) };
        s->gm.regions[1] = (struct guest_region){ .gpa = R1_GPA, .size = R1_SIZE, .host = calloc(1, R1_SIZE) };
        s->gm.n_regions = 2;
        s->gm.size = R0_SIZE + R1_SIZE;

        uint8_t b0 = u8(&in);
        uint64_t desc = 2ULL * u16(&in), avail = 2ULL * u16(&in), used = 2ULL * u16(&in);
        enable(s, (uint16_t)(1u << ((b0 & 63) % 11)), desc, avail, used, (b0 >> 7) | ((b0 >> 5) & 2));

        while (in.left > 0) {
                uint8_t op = u8(&in) % 10;
                switch (op) {
                case 0: {
                        uint64_t gpa = u16(&in);
                        uint8_t n = u8(&in), buf[256];
                        if (take(&in, buf, n))
                                guest_mem_write(&s->gm, gpa, buf, n);
                        break;
                }
                case 1: {
                        uint64_t gpa = 2ULL * u16(&in);
                        uint16_t addr = u16(&in), len = u16(&in);
                        uint8_t flags = u8(&in);
                        uint16_t next = u16(&in);
                        struct vring_desc d = { htole64(addr), htole32(len), htole16(flags), htole16(next) };
                        guest_mem_write(&s->gm, gpa, &d, sizeof(d));
                        break;
                }
                case 2:
                        if (s->q.desc) {
                                wr16(s, s->q.avail_gpa + 4 + 2ULL * (s->avail_idx % s->q.size), u16(&in));
                                wr16(s, s->q.avail_gpa + 2, ++s->avail_idx);
                        }
                        break;
                case 3:
                        s->avail_idx = u16(&in);
                        if (s->q.desc)
                                wr16(s, s->q.avail_gpa + 2, s->avail_idx);
                        break;
                case 4:
                        pop(s);
                        break;
                case 5:
                        push(s, u16(&in));
                        break;
                case 6:
                        virtq_should_signal(&s->q);
                        break;
                case 7:
                        virtq_set_notification(&s->q, u8(&in) & 1);
                        break;
                case 8:
                        enable(s, (uint16_t)(1u << ((b0 & 63) % 11)), desc, avail, used, u8(&in));
                        break;
                case 9:
                        virtq_adopt(&s->q);
                        break;
                }
        }

        free(s->gm.regions[0].host);
        free(s->gm.regions[1].host);
        free(s);
        return 0;
}
