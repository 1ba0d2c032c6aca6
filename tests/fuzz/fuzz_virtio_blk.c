/* virtio-blk's request parser (blk_req_parse) on arbitrary chains, shaped as the
 * virtqueue hands them over: readable buffers first, none empty, totals within 32
 * bits. Each buffer is a heap block of exactly its size, so the parser reading or
 * pointing a byte past one is an ASan error; and the parsed request is checked
 * against what blk.h promises (the status byte is the chain's last writable byte,
 * the data buffers lie inside the chain's buffers of the right direction and add
 * up to len, the range lies on the disk), then written through as the device would.
 *
 * Input: a flags byte (bit 0 read-only, 1 discard, 2 write-zeroes, 3 a small
 * iovec array), an le64 capacity in sectors, then buffers until the input ends: a
 * byte whose bit 7 marks it writable and whose low bits (+1) give its length in
 * bytes (or, with bit 6, that many sectors), followed by its contents as far as the
 * input goes (zeros after). A readable buffer after a writable one becomes writable. */
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/blk.h"

#define MAX_BUFFERS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct virtq_chain chain;
static struct iovec iov[VIRTQ_MAX_SIZE];

static bool inside(const struct iovec *v, unsigned int first, unsigned int n, const struct iovec *span)
{
        for (unsigned int i = first; i < first + n; i++) {
                const uint8_t *b = v[i].iov_base, *p = span->iov_base;
                if (p >= b && p + span->iov_len <= b + v[i].iov_len)
                        return true;
        }
        return false;
}

static void check(const struct blk_limits *lim, const struct blk_req *r)
{
        const struct iovec *last = &chain.iov[chain.n_out + chain.n_in - 1];
        if (r->status_byte != (uint8_t *)last->iov_base + last->iov_len - 1)
                abort();
        *r->status_byte = r->status;
        if (r->status != VIRTIO_BLK_S_OK) {
                if (r->niov || r->len)
                        abort();
                return;
        }
        bool in = r->op == BLK_OP_READ || r->op == BLK_OP_GET_ID;
        uint64_t total = 0;
        for (unsigned int i = 0; i < r->niov; i++) {
                if (in ? !inside(chain.iov, chain.n_out, chain.n_in, &r->iov[i])
                       : !inside(chain.iov, 0, chain.n_out, &r->iov[i]))
                        abort();
                const uint8_t *p = r->iov[i].iov_base;
                if (in && r->status_byte >= p && r->status_byte < p + r->iov[i].iov_len)
                        abort();
                total += r->iov[i].iov_len;
                memset(r->iov[i].iov_base, 0x5a, r->iov[i].iov_len);
        }
        if (r->op == BLK_OP_READ || r->op == BLK_OP_WRITE || r->op == BLK_OP_GET_ID)
                if (total != r->len)
                        abort();
        if (r->op == BLK_OP_GET_ID && r->len > VIRTIO_BLK_ID_BYTES)
                abort();
        if (r->op == BLK_OP_WRITE && lim->readonly)
                abort();
        if (r->op != BLK_OP_FLUSH && r->op != BLK_OP_GET_ID &&
            (r->offset % BLK_SECTOR_SIZE || r->len > (lim->capacity << BLK_SECTOR_SHIFT) ||
             r->offset > (lim->capacity << BLK_SECTOR_SHIFT) - r->len))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 9)
                return 0;
        uint8_t flags = data[0];
        uint64_t capacity;
        memcpy(&capacity, data + 1, sizeof(capacity));
        /* Keep capacity * 512 within 64 bits, as an image's size is. */
        struct blk_limits lim = { .capacity = capacity >> 9, .readonly = flags & 1, .discard = flags & 2,
                                  .write_zeroes = flags & 4, .max_discard_sectors = 0x3fffff,
                                  .max_write_zeroes_sectors = 0x3fffff };
        data += 9;
        size -= 9;

        memset(&chain, 0, sizeof(chain));
        uint8_t *bufs[MAX_BUFFERS];
        unsigned int n = 0;
        while (size > 0 && n < MAX_BUFFERS) {
                uint8_t d = *data++;
                size--;
                size_t len = (d & 0x3f) + 1u;
                if (d & 0x40)
                        len *= BLK_SECTOR_SIZE;
                bool writable = (d & 0x80) || chain.n_in > 0;
                uint8_t *b = calloc(1, len);
                size_t copy = len < size ? len : size;
                memcpy(b, data, copy);
                data += copy;
                size -= copy;
                bufs[n++] = b;
                chain.iov[chain.n_out + chain.n_in] = (struct iovec){ .iov_base = b, .iov_len = len };
                if (writable) {
                        chain.n_in++;
                        chain.in_len += (uint32_t)len;
                } else {
                        chain.n_out++;
                        chain.out_len += (uint32_t)len;
                }
        }

        struct blk_req r;
        unsigned int iov_max = flags & 8 ? 2 : VIRTQ_MAX_SIZE;
        int ret = blk_req_parse(&chain, &lim, iov, iov_max, &r);
        if (ret == 0)
                check(&lim, &r);
        else if (ret != -1 || chain.n_in > 0)
                abort();
        for (unsigned int i = 0; i < n; i++)
                free(bufs[i]);
        return 0;
}
