/* virtio-blk: one device instance per configured disk (ctx->config->disks[i]), a
 * raw image file behind it (blk_io.c). Each request is parsed once (blk_req.c)
 * before any I/O; requests run asynchronously, up to a queue's size at a time per
 * queue, and their completions come back on the event loop, which writes the
 * status, returns the chain and interrupts the driver under the device's lock.
 *
 * The capacity is the image's size in whole 512-byte sectors: the tail of an image
 * whose size is not a multiple of 512 is not visible to the guest (a warning says
 * so), and the image never grows. */
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

/* The largest queue offered; seg_max leaves room in a chain for the header and status. */
#define BLK_QUEUE_MAX 256
#define BLK_SEG_MAX (BLK_QUEUE_MAX - 2)
/* Linux's largest request is 1.25 MiB by default: larger segments would gain nothing. */
#define BLK_SEGMENT_BYTES (1u << 20)
/* The largest discard or write-zeroes range (2 GiB - 512 bytes, as QEMU). */
#define BLK_RANGE_SECTORS 0x3fffffu
/* disk_process()'s rounds of reaping and taking per wake-up or kick. */
#define BLK_ROUNDS 8

/* A queue's requests: one slot per descriptor the driver can have in flight. */
struct blk_queue {
        struct blk_inflight *slots;  /* NULL: the driver did not enable the queue */
        struct iovec *iovs;          /* size buffers for each slot */
        uint16_t size;
        struct blk_inflight *free;
        unsigned int rw_inflight;    /* reads and writes in the kernel: a completion will come */
        bool pushed;                 /* chains returned since the last interrupt */
};

struct blk_disk {
        struct virtio_dev dev;
        struct virtio_blk_config config;
        char setting[24];            /* "disk[0]": names the setting in logs */
        char serial[VIRTIO_BLK_ID_BYTES];
        struct blk_limits limits;
        struct blk_io io;
        struct vm_devices *ctx;
        bool on_loop;
        struct blk_queue queues[VIRTIO_MAX_QUEUES];
        struct virtq_chain chain;    /* the request being parsed */
        /* What each request cost the host, logged (debug) when the VM ends: the figures to
         * read when the disk is slow. */
        struct {
                uint64_t requests, kicks, wakeups, interrupts;
        } stats;
};

static void request_finish(struct blk_disk *d, struct blk_inflight *r, uint8_t status)
{
        struct blk_queue *q = &d->queues[r->queue];
        /* The status byte lies in guest memory, which the guest may be writing too. */
        __atomic_store_n(r->req.status_byte, status, __ATOMIC_RELAXED);
        uint64_t written = 1;
        if (status == VIRTIO_BLK_S_OK && (r->req.op == BLK_OP_READ || r->req.op == BLK_OP_GET_ID))
                written += r->req.len;
        virtio_queue_push(&d->dev, r->queue, r->head, (uint32_t)written);
        q->pushed = true;
        r->next_free = q->free;
        q->free = r;
}

/* GET_ID: the serial, NUL-padded to the 20 bytes (no terminator at 20). */
static void request_get_id(struct blk_disk *d, struct blk_inflight *r)
{
        const uint8_t *src = (const uint8_t *)d->serial;
        for (unsigned int i = 0; i < r->req.niov; i++) {
                memcpy(r->req.iov[i].iov_base, src, r->req.iov[i].iov_len);
                src += r->req.iov[i].iov_len;
        }
        request_finish(d, r, VIRTIO_BLK_S_OK);
}

static void request_start(struct blk_disk *d, struct blk_inflight *r)
{
        if (r->req.status != VIRTIO_BLK_S_OK)
                request_finish(d, r, r->req.status);
        else if (r->req.op == BLK_OP_GET_ID)
                request_get_id(d, r);
        else if (r->req.op != BLK_OP_FLUSH && r->req.len == 0)
                request_finish(d, r, VIRTIO_BLK_S_OK);
        else if (blk_io_start(&d->io, r) < 0)
                request_finish(d, r, VIRTIO_BLK_S_IOERR);
        else if (r->req.op == BLK_OP_READ || r->req.op == BLK_OP_WRITE)
                d->queues[r->queue].rw_inflight++;
}

static void queue_signal(struct blk_disk *d, unsigned int qi)
{
        if (d->queues[qi].pushed) {
                d->queues[qi].pushed = false;
                d->stats.interrupts += virtio_queue_signal(&d->dev, qi);
        }
}

static void blk_io_done(struct blk_inflight *r, uint8_t status, void *opaque)
{
        struct blk_disk *d = opaque;
        if (r->req.op == BLK_OP_READ || r->req.op == BLK_OP_WRITE)
                d->queues[r->queue].rw_inflight--;
        request_finish(d, r, status);
}

/* Take requests from queue qi while it has free slots. */
static void queue_take(struct blk_disk *d, unsigned int qi)
{
        struct blk_queue *q = &d->queues[qi];
        if (!q->slots)
                return;
        for (;;) {
                struct blk_inflight *r = q->free;
                if (!r)
                        break; /* every slot busy: a completion comes back here */
                if (virtio_queue_pop(&d->dev, qi, &d->chain) != 1)
                        break;
                struct iovec *iov = q->iovs + (size_t)(r - q->slots) * q->size;
                if (blk_req_parse(&d->chain, &d->limits, iov, q->size, &r->req) < 0) {
                        virtio_dev_fail(&d->dev, "a request without a writable status byte");
                        break;
                }
                q->free = r->next_free;
                r->queue = (uint16_t)qi;
                r->head = d->chain.head;
                d->stats.requests++;
                request_start(d, r);
        }
        /* While reads or writes are in the kernel, their completions look at the queue: the
         * driver's kicks (VM exits) would only repeat that. A flush or discard alone, which
         * can take long, leaves kicks on. */
        if (blk_io_submit(&d->io) && q->rw_inflight > 0)
                virtio_queue_kicks_off(&d->dev, qi);
}

/* Reap what finished and take new requests, again while submissions finish at once (the
 * page cache serves small reads and writes inside the submission), then interrupt once
 * for all of it. The rounds are bounded, as a guest that keeps its queue full would
 * otherwise hold the event loop: what is left to reap wakes the loop again later. */
static void disk_process(struct blk_disk *d)
{
        for (unsigned int round = 0; round < BLK_ROUNDS; round++) {
                if (blk_io_completed(&d->io)) {
                        blk_io_ack(&d->io);
                        blk_io_complete(&d->io, blk_io_done, d);
                } else if (round > 0) {
                        break;
                }
                for (unsigned int qi = 0; qi < d->dev.n_queues; qi++)
                        queue_take(d, qi);
        }
        if (blk_io_completed(&d->io))
                blk_io_wake(&d->io);
        for (unsigned int qi = 0; qi < d->dev.n_queues; qi++)
                queue_signal(d, qi);
}

static void blk_notify(struct virtio_dev *dev, unsigned int qi)
{
        (void)qi;
        struct blk_disk *d = dev->opaque;
        d->stats.kicks++;
        disk_process(d);
}

/* The ring's eventfd (event loop thread): finish what completed, then take the
 * requests that waited for a free slot or came without a kick (queue_take). */
static void blk_on_completion(void *opaque, uint32_t events)
{
        (void)events;
        struct blk_disk *d = opaque;
        virtio_dev_lock(&d->dev);
        d->stats.wakeups++;
        /* A wake-up whose completions an earlier round reaped: disk_process() acks only
         * when there is something to reap, and a completion posted after this signals again. */
        if (!blk_io_completed(&d->io))
                blk_io_ack(&d->io);
        disk_process(d);
        virtio_dev_unlock(&d->dev);
}

static void queues_free(struct blk_disk *d)
{
        for (unsigned int qi = 0; qi < d->dev.n_queues; qi++) {
                struct blk_queue *q = &d->queues[qi];
                free(q->slots);
                free(q->iovs);
                memset(q, 0, sizeof(*q));
        }
}

static int blk_activate(struct virtio_dev *dev, cap_error_t *err)
{
        (void)err;
        struct blk_disk *d = dev->opaque;
        queues_free(d);
        /* The image's size, not the config space: the driver can write there. */
        d->limits = (struct blk_limits){
                .capacity = d->io.size >> BLK_SECTOR_SHIFT,
                .readonly = dev->features & (1ULL << VIRTIO_BLK_F_RO),
                .discard = virtio_has_feature(dev, VIRTIO_BLK_F_DISCARD),
                .write_zeroes = virtio_has_feature(dev, VIRTIO_BLK_F_WRITE_ZEROES),
                .max_discard_sectors = BLK_RANGE_SECTORS,
                .max_write_zeroes_sectors = BLK_RANGE_SECTORS,
        };
        for (unsigned int qi = 0; qi < dev->n_queues; qi++) {
                struct blk_queue *q = &d->queues[qi];
                if (!dev->queues[qi].ready)
                        continue;
                q->size = dev->queues[qi].size;
                q->slots = xmalloc0((size_t)q->size * sizeof(*q->slots));
                q->iovs = xmalloc0((size_t)q->size * q->size * sizeof(*q->iovs));
                for (unsigned int i = q->size; i > 0; i--) {
                        q->slots[i - 1].next_free = q->free;
                        q->free = &q->slots[i - 1];
                }
        }
        return 0;
}

/* Nothing may write into guest memory after a reset: wait for the requests in
 * flight (cancelled where the kernel can) before dropping them. This is the one
 * wait on a vCPU thread, bounded by the disk's latency for a queue's worth of I/O;
 * the driver waits for the reset to finish anyway. */
static void blk_reset(struct virtio_dev *dev)
{
        struct blk_disk *d = dev->opaque;
        blk_io_drain(&d->io);
        queues_free(d);
}

static void blk_destroy(struct virtio_dev *dev)
{
        struct blk_disk *d = dev->opaque;
        log_debug("%s: %llu requests, %llu kicks, %llu io_uring submissions, %llu completion wake-ups, %llu interrupts",
                  d->setting, (unsigned long long)d->stats.requests, (unsigned long long)d->stats.kicks,
                  (unsigned long long)d->io.submits, (unsigned long long)d->stats.wakeups,
                  (unsigned long long)d->stats.interrupts);
        if (d->on_loop)
                evloop_del(d->ctx->loop, d->io.event_fd);
        blk_io_close(&d->io);
        queues_free(d);
        free(d);
}

static const struct virtio_dev_ops blk_ops = {
        .activate = blk_activate,
        .notify = blk_notify,
        .reset = blk_reset,
        .destroy = blk_destroy,
};

static void config_fill(struct blk_disk *d, const struct vm_disk *disk)
{
        struct virtio_blk_config *c = &d->config;
        uint64_t features = (1ULL << VIRTIO_BLK_F_SIZE_MAX) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
                            (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_MQ);
        /* A direct disk's block size is O_DIRECT's offset alignment, so that Linux aligns
         * its requests to it (up to a page: Linux's largest logical block). */
        uint32_t blk_size = d->io.offset_align < BLK_SECTOR_SIZE ? BLK_SECTOR_SIZE : d->io.offset_align;
        if (blk_size > 4096)
                blk_size = 4096;
        c->capacity = htole64(d->io.size >> BLK_SECTOR_SHIFT);
        c->size_max = htole32(BLK_SEGMENT_BYTES);
        c->seg_max = htole32(BLK_SEG_MAX);
        c->blk_size = htole32(blk_size);
        c->num_queues = htole16((uint16_t)disk->queues);
        if (disk->readonly)
                features |= 1ULL << VIRTIO_BLK_F_RO;
        if (d->io.can_punch) {
                features |= (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
                c->max_discard_sectors = htole32(BLK_RANGE_SECTORS);
                c->max_discard_seg = htole32(1);
                /* Holes are punched in whole pages at best. */
                c->discard_sector_alignment = htole32(4096 / BLK_SECTOR_SIZE);
                c->max_write_zeroes_sectors = htole32(BLK_RANGE_SECTORS);
                c->max_write_zeroes_seg = htole32(1);
                c->write_zeroes_may_unmap = 1;
        }
        d->dev.features = features;
}

static int blk_disk_add(struct vm_devices *ctx, int i, cap_error_t *err)
{
        const struct vm_disk *disk = &ctx->config->disks[i];
        char setting[24];
        snprintf(setting, sizeof(setting), "disk[%d]", i);
        if (disk->serial && strlen(disk->serial) > VIRTIO_BLK_ID_BYTES)
                return cap_fail(err, 0, "%s: serial `%s` is longer than %d bytes", setting, disk->serial,
                                VIRTIO_BLK_ID_BYTES);
        struct blk_disk *d = xmalloc0(sizeof(*d));
        memcpy(d->setting, setting, sizeof(setting));
        d->ctx = ctx;
        if (disk->serial)
                memcpy(d->serial, disk->serial, strlen(disk->serial));
        unsigned int inflight = (unsigned int)disk->queues * BLK_QUEUE_MAX;
        if (blk_io_open(&d->io, setting, disk->path, disk->readonly, disk->direct, inflight, err) < 0)
                goto fail;
        if (d->io.size % BLK_SECTOR_SIZE)
                log_warning("%s: the size of %s is not a multiple of 512 bytes: the guest does not see its last %llu",
                            setting, disk->path, (unsigned long long)(d->io.size % BLK_SECTOR_SIZE));
        if (evloop_add(ctx->loop, d->io.event_fd, EPOLLIN, blk_on_completion, d, err) < 0)
                goto fail;
        d->on_loop = true;
        config_fill(d, disk);
        snprintf(d->dev.name, sizeof(d->dev.name), "virtio-blk%d", i);
        d->dev.device_id = VIRTIO_ID_BLOCK;
        d->dev.n_queues = (unsigned int)disk->queues;
        d->dev.queue_max = BLK_QUEUE_MAX;
        d->dev.config = &d->config;
        d->dev.config_len = sizeof(d->config);
        d->dev.ops = &blk_ops;
        d->dev.opaque = d;
        if (virtio_dev_add(ctx, &d->dev, err) < 0)
                goto fail;
        return 0;
fail:
        if (d->on_loop)
                evloop_del(ctx->loop, d->io.event_fd);
        blk_io_close(&d->io);
        free(d);
        return -1;
}

/* One instance per disk, in the order the disks were given (vda, vdb, ...). */
static int blk_init(struct vm_devices *ctx, cap_error_t *err)
{
        for (int i = 0; i < ctx->config->n_disks; i++)
                if (blk_disk_add(ctx, i, err) < 0)
                        return -1;
        return 0;
}

DEVICE_REGISTER(virtio_blk, DEVICE_ORDER_VIRTIO, .name = "virtio-blk", .init = blk_init)
