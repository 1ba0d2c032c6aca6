/* virtio-blk, in three files: blk_req.c parses a request chain once into a typed
 * struct blk_req (pure logic over a validated chain: unit-tested and fuzzed alone),
 * blk_io.c runs the I/O through io_uring, and blk.c is the device (config space,
 * queues, one instance per configured disk). */
#ifndef CAPSULE_VMM_VIRTIO_BLK_H
#define CAPSULE_VMM_VIRTIO_BLK_H

#include <liburing.h>
#include <linux/virtio_blk.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/error.h"
#include "vmm/virtio/virtqueue.h"

#define BLK_SECTOR_SHIFT 9
#define BLK_SECTOR_SIZE (1u << BLK_SECTOR_SHIFT)

/* What a request may ask of its disk: fixed at activation from the image and the
 * negotiated features. */
struct blk_limits {
        uint64_t capacity;               /* 512-byte sectors */
        bool readonly;
        bool discard;                    /* VIRTIO_BLK_F_DISCARD negotiated */
        bool write_zeroes;               /* VIRTIO_BLK_F_WRITE_ZEROES negotiated */
        uint32_t max_discard_sectors;
        uint32_t max_write_zeroes_sectors;
};

enum blk_op { BLK_OP_READ, BLK_OP_WRITE, BLK_OP_FLUSH, BLK_OP_GET_ID, BLK_OP_DISCARD, BLK_OP_WRITE_ZEROES };

/* One request, parsed. status is VIRTIO_BLK_S_OK when op is to be carried out;
 * otherwise the request is answered with that status and nothing else is done. */
struct blk_req {
        enum blk_op op;
        uint8_t status;
        uint8_t *status_byte;  /* the chain's last writable byte */
        uint64_t offset;       /* bytes into the image (read, write, discard, write-zeroes) */
        uint64_t len;          /* data bytes: read/write/get-id buffers, or the range's bytes */
        bool unmap;            /* write-zeroes may deallocate (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) */
        struct iovec *iov;     /* read/write/get-id: the data buffers (status byte excluded) */
        unsigned int niov;
};

/* Parse chain c (already validated by the virtqueue: readable buffers first, all in
 * guest RAM). iov (iov_max entries) receives the data buffers. Reads the header and
 * any discard range once. Returns -1 if the chain has no writable byte for the
 * status (the device must fail), else 0 with r->status saying how to go on. */
int blk_req_parse(const struct virtq_chain *c, const struct blk_limits *lim, struct iovec *iov, unsigned int iov_max,
                  struct blk_req *r);

/* A request in flight: owned by its queue's pool, handed to blk_io while the
 * kernel works on it. */
struct blk_inflight {
        struct blk_req req;
        uint16_t queue, head;
        uint64_t done;           /* bytes transferred so far (short reads and writes) */
        unsigned int iov_first;  /* req.iov[iov_first..] is what is left to transfer */
        bool buffered;           /* an O_DIRECT disk's unaligned request: through the page cache */
        bool punch;              /* write-zeroes by punching a hole */
        struct blk_inflight *next_free;
};

/* The io_uring backend of one disk. Every call happens under the device's lock. */
struct blk_io {
        char setting[24];        /* "disk[0]": names the disk in logs */
        struct io_uring ring;
        bool ring_ready;
        int event_fd;            /* the ring's completion eventfd, on the VM's event loop */
        int fd;                  /* the image (O_DIRECT for a direct disk) */
        int buffered_fd;         /* a direct disk's page-cache descriptor, else -1 */
        uint32_t mem_align;      /* O_DIRECT alignment of buffers ... */
        uint32_t offset_align;   /* ... and of offsets and lengths (1 when not direct) */
        bool can_punch;          /* the file system punches holes (discard, write-zeroes) */
        bool no_zero_range;      /* FALLOC_FL_ZERO_RANGE failed with EOPNOTSUPP: punch instead */
        bool told_unaligned;     /* the first unaligned request of a direct disk was logged */
        unsigned int in_kernel;  /* requests submitted whose completion was not reaped */
        uint64_t submits;        /* io_uring_submit() calls, for the device's statistics */
        uint64_t size;           /* the image's size in bytes */
};

/* Open disk image path (setting names it in errors: "disk[0]") and set up a ring
 * for up to max_inflight requests. */
int blk_io_open(struct blk_io *io, const char *setting, const char *path, bool readonly, bool direct,
                unsigned int max_inflight, cap_error_t *err);
void blk_io_close(struct blk_io *io);
/* Queue r's I/O (submitted by the next blk_io_submit()). -1: no room, fail r. */
int blk_io_start(struct blk_io *io, struct blk_inflight *r);
/* Hand the queued requests to the kernel; never blocks. Whether all of them are there. */
bool blk_io_submit(struct blk_io *io);
/* Whether finished requests wait to be reaped: those the kernel served inside
 * blk_io_submit() are there at once. */
bool blk_io_completed(struct blk_io *io);
/* Reset the completion eventfd. Done before reaping: a completion posted after it
 * signals the eventfd again. */
void blk_io_ack(struct blk_io *io);
/* Signal the completion eventfd: the loop comes back to what was left to reap. */
void blk_io_wake(struct blk_io *io);
/* Reap the finished requests: done(r, status, opaque) for each; a short transfer is
 * resubmitted instead of finished. */
typedef void (*blk_io_done_fn)(struct blk_inflight *r, uint8_t status, void *opaque);
void blk_io_complete(struct blk_io *io, blk_io_done_fn done, void *opaque);
/* Cancel what can be cancelled and wait until nothing is in flight: afterwards no
 * request touches guest memory. Their completions are dropped. */
void blk_io_drain(struct blk_io *io);

#endif
