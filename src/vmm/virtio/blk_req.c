/* The virtio-blk request parser: one validated chain in, one typed request out,
 * before any I/O. The chain comes from a hostile guest: the header and the discard
 * range are copied out once, every length is checked against the disk, and a bad
 * request is answered with IOERR (UNSUPP for what the device does not do). */
#include <endian.h>
#include <string.h>

#include "vmm/virtio/blk.h"

/* The buffers covering bytes [skip, skip + len) of iov[0..n), into out (max entries).
 * Returns how many, or -1 if they do not fit. */
static int iov_slice(const struct iovec *iov, unsigned int n, uint64_t skip, uint64_t len, struct iovec *out,
                     unsigned int max)
{
        unsigned int k = 0;
        for (unsigned int i = 0; i < n && len > 0; i++) {
                uint64_t l = iov[i].iov_len;
                if (skip >= l) {
                        skip -= l;
                        continue;
                }
                if (k == max)
                        return -1;
                uint64_t take = l - skip < len ? l - skip : len;
                out[k].iov_base = (uint8_t *)iov[i].iov_base + skip;
                out[k].iov_len = take;
                k++;
                len -= take;
                skip = 0;
        }
        return (int)k;
}

/* Whether [sector, sector + sectors) lies on the disk, without overflow. */
static bool range_ok(const struct blk_limits *lim, uint64_t sector, uint64_t sectors)
{
        return sector <= lim->capacity && sectors <= lim->capacity - sector;
}

/* Read or write: the data are the writable buffers but the status byte (read) or
 * the readable ones after the header (write); the other direction carries nothing. */
static uint8_t parse_rw(const struct virtq_chain *c, const struct blk_limits *lim, uint64_t sector, struct iovec *iov,
                     unsigned int iov_max, struct blk_req *r)
{
        bool write = r->op == BLK_OP_WRITE;
        if (write && lim->readonly)
                return VIRTIO_BLK_S_IOERR;
        if (write ? c->in_len != 1 : c->out_len != sizeof(struct virtio_blk_outhdr))
                return VIRTIO_BLK_S_IOERR;
        uint64_t len = write ? c->out_len - sizeof(struct virtio_blk_outhdr) : c->in_len - 1u;
        if (len % BLK_SECTOR_SIZE || !range_ok(lim, sector, len >> BLK_SECTOR_SHIFT))
                return VIRTIO_BLK_S_IOERR;
        int n = write ? iov_slice(c->iov, c->n_out, sizeof(struct virtio_blk_outhdr), len, iov, iov_max)
                      : iov_slice(c->iov + c->n_out, c->n_in, 0, len, iov, iov_max);
        if (n < 0)
                return VIRTIO_BLK_S_IOERR;
        r->offset = sector << BLK_SECTOR_SHIFT;
        r->len = len;
        r->niov = (unsigned int)n;
        return VIRTIO_BLK_S_OK;
}

/* The serial goes into the writable buffers before the status byte. */
static uint8_t parse_get_id(const struct virtq_chain *c, struct iovec *iov, unsigned int iov_max, struct blk_req *r)
{
        if (c->out_len != sizeof(struct virtio_blk_outhdr))
                return VIRTIO_BLK_S_IOERR;
        uint64_t len = c->in_len - 1u;
        if (len > VIRTIO_BLK_ID_BYTES)
                len = VIRTIO_BLK_ID_BYTES;
        int n = iov_slice(c->iov + c->n_out, c->n_in, 0, len, iov, iov_max);
        if (n < 0)
                return VIRTIO_BLK_S_IOERR;
        r->len = len;
        r->niov = (unsigned int)n;
        return VIRTIO_BLK_S_OK;
}

/* Discard and write-zeroes carry one range after the header (max_discard_seg and
 * max_write_zeroes_seg are 1). */
static uint8_t parse_range(const struct virtq_chain *c, const struct blk_limits *lim, struct blk_req *r)
{
        bool discard = r->op == BLK_OP_DISCARD;
        if (lim->readonly || !(discard ? lim->discard : lim->write_zeroes))
                return VIRTIO_BLK_S_UNSUPP;
        struct virtio_blk_discard_write_zeroes range;
        if (c->in_len != 1 || c->out_len != sizeof(struct virtio_blk_outhdr) + sizeof(range))
                return VIRTIO_BLK_S_IOERR;
        virtq_chain_read(c, sizeof(struct virtio_blk_outhdr), &range, sizeof(range));
        uint64_t sector = le64toh(range.sector);
        uint32_t sectors = le32toh(range.num_sectors), flags = le32toh(range.flags);
        /* The spec: discard takes no flag, write-zeroes only UNMAP; others are unsupported. */
        if (flags & ~(discard ? 0u : (uint32_t)VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))
                return VIRTIO_BLK_S_UNSUPP;
        if (sectors > (discard ? lim->max_discard_sectors : lim->max_write_zeroes_sectors) ||
            !range_ok(lim, sector, sectors))
                return VIRTIO_BLK_S_IOERR;
        r->offset = sector << BLK_SECTOR_SHIFT;
        r->len = (uint64_t)sectors << BLK_SECTOR_SHIFT;
        r->unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
        return VIRTIO_BLK_S_OK;
}

int blk_req_parse(const struct virtq_chain *c, const struct blk_limits *lim, struct iovec *iov, unsigned int iov_max,
                  struct blk_req *r)
{
        memset(r, 0, sizeof(*r));
        r->iov = iov;
        /* The status is the last writable byte; the virtqueue drops empty buffers, but a
         * chain that still ends in one must not be taken for having a status byte. */
        const struct iovec *last = NULL;
        for (unsigned int i = c->n_out + c->n_in; i > c->n_out && !last; i--)
                if (c->iov[i - 1].iov_len)
                        last = &c->iov[i - 1];
        if (!last || c->in_len == 0)
                return -1;
        r->status_byte = (uint8_t *)last->iov_base + last->iov_len - 1;

        struct virtio_blk_outhdr hdr;
        if (c->out_len < sizeof(hdr)) {
                r->status = VIRTIO_BLK_S_IOERR;
                return 0;
        }
        virtq_chain_read(c, 0, &hdr, sizeof(hdr));
        uint32_t type = le32toh(hdr.type);
        uint64_t sector = le64toh(hdr.sector);
        switch (type) {
        case VIRTIO_BLK_T_IN:
        case VIRTIO_BLK_T_OUT:
                r->op = type == VIRTIO_BLK_T_IN ? BLK_OP_READ : BLK_OP_WRITE;
                r->status = parse_rw(c, lim, sector, iov, iov_max, r);
                break;
        case VIRTIO_BLK_T_FLUSH:
                /* The driver should send no data and sector 0; neither matters to a flush. */
                r->op = BLK_OP_FLUSH;
                r->status = VIRTIO_BLK_S_OK;
                break;
        case VIRTIO_BLK_T_GET_ID:
                r->op = BLK_OP_GET_ID;
                r->status = parse_get_id(c, iov, iov_max, r);
                break;
        case VIRTIO_BLK_T_DISCARD:
        case VIRTIO_BLK_T_WRITE_ZEROES:
                r->op = type == VIRTIO_BLK_T_DISCARD ? BLK_OP_DISCARD : BLK_OP_WRITE_ZEROES;
                r->status = parse_range(c, lim, r);
                break;
        default:
                r->status = VIRTIO_BLK_S_UNSUPP;
                break;
        }
        if (r->status != VIRTIO_BLK_S_OK) {
                r->niov = 0;
                r->len = 0;
        }
        return 0;
}
