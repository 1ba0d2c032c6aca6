/* virtio-blk's backend: a raw image file driven through io_uring, several requests
 * in flight, completions announced on an eventfd that the VM's event loop watches.
 * Reads and writes go straight between the file and guest memory (readv/writev at
 * the request's offset); flush is fdatasync, discard punches a hole and write-zeroes
 * zeroes a range (or punches one where the file system cannot zero ranges, which
 * reads back as zeros all the same). Nothing here blocks but blk_io_drain(). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/blk.h"

/* The cancel request of blk_io_drain(): its completion is no request's. */
#define BLK_IO_CANCEL_TAG 0
/* A read or write through the page cache copies inside io_uring_submit(), on the event
 * loop, unless it is handed to io_uring's workers: from this size on it is, so that a
 * large copy neither stalls the loop's other devices nor waits behind the disk's other
 * copies; the workers copy in parallel. Smaller ones cost less inline than a worker's
 * wake-up. */
#define BLK_IO_ASYNC_BYTES (64u << 10)

/* O_DIRECT's alignment for this file (statx, Linux 6.1); 4096 where the file
 * system does not say, which every block size up to a page satisfies. */
static void direct_alignment(struct blk_io *io)
{
        struct statx stx;
        io->mem_align = io->offset_align = 4096;
        if (statx(io->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) &&
            stx.stx_dio_offset_align) {
                io->mem_align = stx.stx_dio_mem_align ? stx.stx_dio_mem_align : 1;
                io->offset_align = stx.stx_dio_offset_align;
        }
        log_debug("%s: O_DIRECT alignment: buffers %u, offsets %u", io->setting, io->mem_align, io->offset_align);
}

/* Whether the file system punches holes: a hole punched past the end of the file
 * changes nothing. */
static bool punch_supported(int fd, uint64_t size)
{
        uint64_t past = (size + 4095) / 4096 * 4096 + 4096;
        return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)past, 4096) == 0;
}

static int open_image(struct blk_io *io, const char *setting, const char *path, bool readonly, bool direct,
                      cap_error_t *err)
{
        int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
        io->fd = open(path, flags | (direct ? O_DIRECT : 0));
        if (io->fd < 0)
                return cap_fail(err, errno, "%s: cannot open %s%s", setting, path, direct ? " with O_DIRECT (direct)" : "");
        /* Two writers (or a writer and a reader) of one image would corrupt what the
         * guest sees; a file system without locks does not stop the disk. */
        if (flock(io->fd, (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0 && errno == EWOULDBLOCK)
                return cap_fail(err, 0, "%s: %s is in use by another VM or program (it is locked)", setting, path);
        struct stat st;
        if (fstat(io->fd, &st) < 0)
                return cap_fail(err, errno, "%s: %s", setting, path);
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return cap_fail(err, 0, "%s: %s is not a regular file or a block device", setting, path);
        off_t end = lseek(io->fd, 0, SEEK_END);
        if (end < 0)
                return cap_fail(err, errno, "%s: cannot find the size of %s", setting, path);
        io->size = (uint64_t)end;
        io->offset_align = io->mem_align = 1;
        if (direct) {
                io->buffered_fd = open(path, flags);
                if (io->buffered_fd < 0)
                        return cap_fail(err, errno, "%s: cannot open %s", setting, path);
                direct_alignment(io);
        }
        io->can_punch = !readonly && punch_supported(io->fd, io->size);
        return 0;
}

int blk_io_open(struct blk_io *io, const char *setting, const char *path, bool readonly, bool direct,
                unsigned int max_inflight, cap_error_t *err)
{
        memset(io, 0, sizeof(*io));
        snprintf(io->setting, sizeof(io->setting), "%s", setting);
        io->fd = io->buffered_fd = io->event_fd = -1;
        if (open_image(io, setting, path, readonly, direct, err) < 0)
                goto fail;
        /* Room for every request in flight plus drain's cancel: the queue never fills,
         * and the completion queue (twice as large) never overflows. */
        int r = io_uring_queue_init(max_inflight + 1, &io->ring, 0);
        if (r < 0) {
                cap_fail(err, -r, "%s: io_uring", setting);
                goto fail;
        }
        io->ring_ready = true;
        io->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (io->event_fd < 0) {
                cap_fail(err, errno, "%s: eventfd", setting);
                goto fail;
        }
        r = io_uring_register_eventfd(&io->ring, io->event_fd);
        if (r < 0) {
                cap_fail(err, -r, "%s: io_uring eventfd", setting);
                goto fail;
        }
        return 0;
fail:
        blk_io_close(io);
        return -1;
}

void blk_io_close(struct blk_io *io)
{
        if (io->ring_ready)
                io_uring_queue_exit(&io->ring);
        io->ring_ready = false;
        cap_closep(&io->event_fd);
        cap_closep(&io->buffered_fd);
        cap_closep(&io->fd);
}

/* Whether a direct disk's request meets O_DIRECT's alignment; one that does not
 * (Linux aligns to blk_size, which is offset_align, but a guest's own O_DIRECT
 * buffers need only be 512-aligned) goes through the page cache instead. */
static bool direct_aligned(const struct blk_io *io, const struct blk_req *req)
{
        if ((req->offset | req->len) % io->offset_align)
                return false;
        for (unsigned int i = 0; i < req->niov; i++)
                if ((uintptr_t)req->iov[i].iov_base % io->mem_align || req->iov[i].iov_len % io->offset_align)
                        return false;
        return true;
}

/* Prepare r's next step: the rest of its transfer, or its flush or fallocate. */
static int prep(struct blk_io *io, struct blk_inflight *r)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
        if (!sqe)
                return -1;
        const struct blk_req *req = &r->req;
        int fd = r->buffered ? io->buffered_fd : io->fd;
        const struct iovec *iov = req->iov + r->iov_first;
        unsigned int niov = req->niov - r->iov_first;
        switch (req->op) {
        case BLK_OP_READ:
                io_uring_prep_readv(sqe, fd, iov, niov, req->offset + r->done);
                break;
        case BLK_OP_WRITE:
                io_uring_prep_writev(sqe, fd, iov, niov, req->offset + r->done);
                break;
        case BLK_OP_FLUSH:
                io_uring_prep_fsync(sqe, io->fd, IORING_FSYNC_DATASYNC);
                break;
        case BLK_OP_DISCARD:
                io_uring_prep_fallocate(sqe, io->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, req->offset, req->len);
                break;
        case BLK_OP_WRITE_ZEROES:
                io_uring_prep_fallocate(sqe, io->fd,
                                        (r->punch ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) | FALLOC_FL_KEEP_SIZE,
                                        req->offset, req->len);
                break;
        case BLK_OP_GET_ID:
                return -1;
        }
        bool page_cache = io->buffered_fd < 0 || r->buffered;
        if ((req->op == BLK_OP_READ || req->op == BLK_OP_WRITE) && page_cache && req->len - r->done >= BLK_IO_ASYNC_BYTES)
                io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
        io_uring_sqe_set_data(sqe, r);
        io->in_kernel++;
        return 0;
}

int blk_io_start(struct blk_io *io, struct blk_inflight *r)
{
        r->done = 0;
        r->iov_first = 0;
        r->buffered = io->buffered_fd >= 0 && !direct_aligned(io, &r->req);
        if (r->buffered && !io->told_unaligned) {
                io->told_unaligned = true;
                log_debug("%s: a request not aligned for O_DIRECT goes through the page cache (said once)", io->setting);
        }
        r->punch = r->req.op == BLK_OP_WRITE_ZEROES && (r->req.unmap || io->no_zero_range);
        return prep(io, r);
}

bool blk_io_submit(struct blk_io *io)
{
        /* A failure (EAGAIN, EBUSY, EINTR) leaves the entries queued: the next kick or
         * completion submits them. */
        if (io_uring_sq_ready(&io->ring)) {
                io->submits++;
                io_uring_submit(&io->ring);
        }
        return io_uring_sq_ready(&io->ring) == 0;
}

/* Past the n bytes just transferred: 1 if some are left, 0 if r is done. */
static int advance(struct blk_inflight *r, uint64_t n)
{
        r->done += n;
        struct iovec *iov = r->req.iov;
        while (n > 0 && r->iov_first < r->req.niov) {
                struct iovec *v = &iov[r->iov_first];
                if (n < v->iov_len) {
                        v->iov_base = (uint8_t *)v->iov_base + n;
                        v->iov_len -= n;
                        n = 0;
                } else {
                        n -= v->iov_len;
                        r->iov_first++;
                }
        }
        return r->done < r->req.len;
}

/* The status r ends with, given its step's result; -1: r goes on (resubmitted). */
static int finish(struct blk_io *io, struct blk_inflight *r, int res)
{
        bool transfer = r->req.op == BLK_OP_READ || r->req.op == BLK_OP_WRITE;
        if (transfer && res > 0 && advance(r, (uint64_t)res))
                return prep(io, r) == 0 ? -1 : VIRTIO_BLK_S_IOERR;
        if (r->req.op == BLK_OP_WRITE_ZEROES && res == -EOPNOTSUPP && !r->punch && io->can_punch) {
                io->no_zero_range = true;
                r->punch = true;
                return prep(io, r) == 0 ? -1 : VIRTIO_BLK_S_IOERR;
        }
        /* A read or write that moved nothing hit the end of a file that shrank under us. */
        if (res < 0 || (transfer && res == 0))
                return VIRTIO_BLK_S_IOERR;
        return VIRTIO_BLK_S_OK;
}

bool blk_io_completed(struct blk_io *io)
{
        return io_uring_cq_ready(&io->ring) > 0;
}

void blk_io_ack(struct blk_io *io)
{
        uint64_t ticks;
        if (read(io->event_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
                log_warning("virtio-blk: completion eventfd: %s", strerror(errno));
}

void blk_io_wake(struct blk_io *io)
{
        uint64_t one = 1;
        if (write(io->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_warning("virtio-blk: completion eventfd: %s", strerror(errno));
}

void blk_io_complete(struct blk_io *io, blk_io_done_fn done, void *opaque)
{
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe(&io->ring, &cqe) == 0) {
                struct blk_inflight *r = io_uring_cqe_get_data(cqe);
                int res = cqe->res;
                io_uring_cqe_seen(&io->ring, cqe);
                if (r == (void *)BLK_IO_CANCEL_TAG)
                        continue;
                io->in_kernel--;
                int status = finish(io, r, res);
                if (status >= 0)
                        done(r, (uint8_t)status, opaque);
        }
        blk_io_submit(io);
}

void blk_io_drain(struct blk_io *io)
{
        if (!io->ring_ready)
                return;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
        if (sqe) {
                io_uring_prep_cancel64(sqe, BLK_IO_CANCEL_TAG, IORING_ASYNC_CANCEL_ANY);
                io_uring_sqe_set_data64(sqe, BLK_IO_CANCEL_TAG);
        }
        io_uring_submit(&io->ring);
        while (io->in_kernel > 0) {
                struct io_uring_cqe *cqe;
                int r = io_uring_wait_cqe(&io->ring, &cqe);
                if (r == -EINTR)
                        continue;
                if (r < 0) {
                        /* The ring itself failed: nothing more will complete through it. */
                        log_error("virtio-blk: waiting for in-flight requests: %s", strerror(-r));
                        return;
                }
                if (io_uring_cqe_get_data64(cqe) != BLK_IO_CANCEL_TAG)
                        io->in_kernel--;
                io_uring_cqe_seen(&io->ring, cqe);
        }
}
