/* virtio-balloon (virtio 1.2 section 5.5): the host asks the guest to give up memory
 * (config num_pages, through balloon_set_target), the guest hands pages over on the
 * inflate queue and takes them back on the deflate queue, posts its statistics on the
 * stats queue, and with free page reporting hands over ranges it has just freed.
 *
 * Giving memory back: guest RAM is one memfd mapped shared, so the device punches holes
 * in it (fallocate PUNCH_HOLE): that frees the pages and drops them from every mapping,
 * KVM's included, and the guest's next touch finds a zero page. madvise(DONTNEED) would
 * only unmap shared memory, not free it. Deflate then has nothing to do: the pages come
 * back by themselves as the guest touches them. Every PFN and range is checked to be
 * guest RAM; anything else is skipped.
 *
 * Huge pages are refused at setup: a 2 MiB page cannot be given back while the guest
 * uses any 4 KiB of it, and the driver inflates scattered 4 KiB pages.
 *
 * Queue numbers: Linux numbers the queues densely over those that exist (inflate,
 * deflate, then stats and reporting when negotiated), as Cloud Hypervisor and QEMU
 * expect; free page hinting is not offered, so no queue sits between them.
 *
 * The event loop serves the queues in rounds of bounded work (BALLOON_ROUND pages looked
 * at or given back): a huge inflate chain or reported range is taken up again by the next
 * round, which an eventfd on the loop starts, so other devices are served in between. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/virtio_balloon.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/balloon_req.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define BALLOON_QUEUE_SIZE 128
#define BALLOON_ROUND 16384       /* pages (or chains) per round: 64 MiB given back at most */
#define BALLOON_PFN_BATCH 256     /* PFNs copied out of a chain at once: one Linux inflate buffer */
#define BALLOON_STATS_MAX 64      /* pairs read from a stats buffer (Linux sends 10 to 16) */

enum balloon_role { ROLE_INFLATE, ROLE_DEFLATE, ROLE_STATS, ROLE_REPORTING, N_ROLES };

/* A chain being worked through over several rounds. */
struct balloon_work {
        bool busy;
        unsigned int iov;  /* reporting: the buffer being given back */
        size_t off;        /* inflate: bytes of PFNs done; reporting: bytes of buffer iov done */
        struct virtq_chain chain;
};

struct balloon {
        struct virtio_dev dev;
        struct virtio_balloon_config config;
        struct vm_devices *ctx;
        const struct guest_mem *mem;
        int queue[N_ROLES];           /* the queue of each role, -1: the driver did not negotiate it */
        int more_fd;                  /* eventfd: the next round of work */
        bool more_pending;
        struct balloon_work inflate, report;
        struct virtq_chain scratch;   /* deflate and stats chains, done at once */
        bool stats_held;              /* the driver's stats buffer, kept until the host wants news */
        uint16_t stats_head;
        struct balloon_stats guest;   /* the guest fields of the latest statistics */
        bool have_stats;
        uint64_t stats_ns;
        uint64_t reported_bytes;
        bool punch_warned;
};

static uint64_t monotonic_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t balloon_pages(const struct balloon *b)
{
        return b->mem->size / BALLOON_PAGE;
}

static void balloon_punch(struct balloon *b, const struct balloon_run *run)
{
        if (fallocate(b->mem->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)run->offset, (off_t)run->len) == 0)
                return;
        if (!b->punch_warned)
                log_warning("%s: cannot give back guest memory (fallocate PUNCH_HOLE): %s", b->dev.name, strerror(errno));
        b->punch_warned = true;
}

/* One step of an inflate chain: true when it is done, false when the budget ran out. */
static bool inflate_step(struct balloon *b, struct balloon_work *w, long *budget)
{
        uint32_t pfns[BALLOON_PFN_BATCH];
        struct balloon_run runs[BALLOON_PFN_BATCH];
        while (*budget > 0) {
                /* Copied once: the guest may rewrite the array while it is being used. */
                size_t n = virtq_chain_read(&w->chain, w->off, pfns, sizeof(pfns)) / sizeof(pfns[0]);
                if (n == 0)
                        return true;
                w->off += n * sizeof(pfns[0]);
                *budget -= (long)n;
                size_t skipped;
                size_t n_runs = balloon_pfns_to_runs(b->mem, pfns, n, runs, &skipped);
                if (skipped)
                        log_debug("%s: %zu inflated PFNs are not guest RAM: skipped", b->dev.name, skipped);
                for (size_t i = 0; i < n_runs; i++)
                        balloon_punch(b, &runs[i]);
        }
        return false;
}

/* One step of a free page report: each buffer (the driver marks them writable; either
 * kind is taken) is a range of freed memory. */
static bool report_step(struct balloon *b, struct balloon_work *w, long *budget)
{
        const struct virtq_chain *c = &w->chain;
        for (; w->iov < c->n_out + c->n_in; w->iov++, w->off = 0) {
                const struct iovec *v = &c->iov[w->iov];
                while (w->off < v->iov_len) {
                        if (*budget <= 0)
                                return false;
                        size_t len = v->iov_len - w->off;
                        if (len > (size_t)*budget * BALLOON_PAGE)
                                len = (size_t)*budget * BALLOON_PAGE;
                        struct balloon_run run;
                        if (balloon_buffer_run(b->mem, (const uint8_t *)v->iov_base + w->off, len, &run)) {
                                balloon_punch(b, &run);
                                b->reported_bytes += run.len;
                        }
                        w->off += len;
                        *budget -= (long)((len + BALLOON_PAGE - 1) / BALLOON_PAGE);
                }
        }
        return true;
}

/* Serve a queue of chains worked through by step: true when the queue is empty, false
 * when the budget ran out first. */
static bool work_serve(struct balloon *b, enum balloon_role role, struct balloon_work *w, long *budget,
                       bool (*step)(struct balloon *, struct balloon_work *, long *))
{
        int q = b->queue[role];
        bool pushed = false, empty = true;
        while (q >= 0) {
                if (!w->busy) {
                        if (*budget <= 0) {
                                empty = false;
                                break;
                        }
                        if (virtio_queue_pop(&b->dev, (unsigned int)q, &w->chain) <= 0)
                                break;
                        w->busy = true;
                        w->iov = 0;
                        w->off = 0;
                        (*budget)--;
                }
                if (!step(b, w, budget)) {
                        empty = false;
                        break;
                }
                w->busy = false;
                virtio_queue_push(&b->dev, (unsigned int)q, w->chain.head, 0);
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&b->dev, (unsigned int)q);
        return empty;
}

/* Deflated pages come back as the guest touches them: the chains only need returning. */
static bool deflate_serve(struct balloon *b, long *budget)
{
        int q = b->queue[ROLE_DEFLATE];
        bool pushed = false, empty = true;
        while (q >= 0) {
                if (*budget <= 0) {
                        empty = false;
                        break;
                }
                if (virtio_queue_pop(&b->dev, (unsigned int)q, &b->scratch) <= 0)
                        break;
                (*budget)--;
                virtio_queue_push(&b->dev, (unsigned int)q, b->scratch.head, 0);
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&b->dev, (unsigned int)q);
        return empty;
}

/* The driver's stats buffer: keep the numbers, and the buffer until the host wants news. */
static bool stats_serve(struct balloon *b, long *budget)
{
        int q = b->queue[ROLE_STATS];
        uint8_t buf[BALLOON_STATS_MAX * BALLOON_STAT_SIZE];
        while (q >= 0) {
                if (*budget <= 0)
                        return false;
                if (virtio_queue_pop(&b->dev, (unsigned int)q, &b->scratch) <= 0)
                        break;
                (*budget)--;
                /* A driver has one stats buffer out at a time; an older one goes back unread. */
                if (b->stats_held) {
                        virtio_queue_push(&b->dev, (unsigned int)q, b->stats_head, 0);
                        virtio_queue_signal(&b->dev, (unsigned int)q);
                }
                size_t len = virtq_chain_read(&b->scratch, 0, buf, sizeof(buf));
                balloon_stats_parse(buf, len, &b->guest);
                b->have_stats = true;
                b->stats_ns = monotonic_ns();
                b->stats_held = true;
                b->stats_head = b->scratch.head;
        }
        return true;
}

static void balloon_serve(struct balloon *b)
{
        long budget = BALLOON_ROUND;
        bool done = work_serve(b, ROLE_INFLATE, &b->inflate, &budget, inflate_step);
        done &= work_serve(b, ROLE_REPORTING, &b->report, &budget, report_step);
        done &= deflate_serve(b, &budget);
        done &= stats_serve(b, &budget);
        if (done || b->more_pending)
                return;
        uint64_t one = 1;
        /* The counter cannot be full: the loop reads it before each round. */
        if (write(b->more_fd, &one, sizeof(one)) == sizeof(one))
                b->more_pending = true;
        else
                virtio_dev_fail(&b->dev, "cannot schedule the next round of work");
}

static void balloon_more(void *opaque, uint32_t events)
{
        struct balloon *b = opaque;
        uint64_t n;
        (void)events;
        if (read(b->more_fd, &n, sizeof(n)) < 0 && errno != EAGAIN && errno != EINTR)
                return;
        virtio_dev_lock(&b->dev);
        if (b->more_pending) {
                b->more_pending = false;
                balloon_serve(b);
        }
        virtio_dev_unlock(&b->dev);
}

static int balloon_activate(struct virtio_dev *dev, cap_error_t *err)
{
        struct balloon *b = dev->opaque;
        int next = 0;
        (void)err;
        b->queue[ROLE_INFLATE] = next++;
        b->queue[ROLE_DEFLATE] = next++;
        b->queue[ROLE_STATS] = virtio_has_feature(dev, VIRTIO_BALLOON_F_STATS_VQ) ? next++ : -1;
        b->queue[ROLE_REPORTING] = virtio_has_feature(dev, VIRTIO_BALLOON_F_REPORTING) ? next++ : -1;
        return 0;
}

static void balloon_notify(struct virtio_dev *dev, unsigned int q)
{
        (void)q;
        balloon_serve(dev->opaque);
}

/* The guest starts over with all its memory; the host's target stays. */
static void balloon_reset(struct virtio_dev *dev)
{
        struct balloon *b = dev->opaque;
        b->inflate.busy = b->report.busy = false;
        b->stats_held = false;
        b->more_pending = false;
        b->config.actual = 0;
        for (int r = 0; r < N_ROLES; r++)
                b->queue[r] = -1;
}

/* The driver may write only "actual", the pages it holds; never more than the VM has. */
static void balloon_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
        struct balloon *b = dev->opaque;
        const uint32_t at = offsetof(struct virtio_balloon_config, actual);
        if (offset < at || offset - at + len > sizeof(b->config.actual))
                return;
        uint8_t bytes[sizeof(b->config.actual)];
        memcpy(bytes, &b->config.actual, sizeof(bytes));
        memcpy(bytes + (offset - at), data, len);
        uint32_t actual;
        memcpy(&actual, bytes, sizeof(actual));
        if (le32toh(actual) > balloon_pages(b)) {
                log_debug("%s: the driver says it holds %u pages, the VM has %llu: ignored", dev->name, le32toh(actual),
                          (unsigned long long)balloon_pages(b));
                return;
        }
        b->config.actual = actual;
}

static void balloon_free(struct balloon *b)
{
        if (b->more_fd >= 0) {
                if (b->ctx->loop->epfd >= 0)
                        evloop_del(b->ctx->loop, b->more_fd);
                close(b->more_fd);
        }
        free(b);
}

static void balloon_destroy(struct virtio_dev *dev)
{
        struct balloon *b = dev->opaque;
        if (b->ctx->balloon == b)
                b->ctx->balloon = NULL;
        balloon_free(b);
}

static const struct virtio_dev_ops balloon_ops = {
        .activate = balloon_activate,
        .notify = balloon_notify,
        .reset = balloon_reset,
        .config_write = balloon_config_write,
        .destroy = balloon_destroy,
};

int balloon_set_target(struct balloon *b, uint64_t bytes, cap_error_t *err)
{
        if (bytes > b->mem->size)
                return cap_fail(err, 0, "%llu MiB is more than the VM's %llu MiB of memory",
                                (unsigned long long)(bytes >> 20), (unsigned long long)(b->mem->size >> 20));
        virtio_dev_lock(&b->dev);
        b->config.num_pages = htole32((uint32_t)(bytes / BALLOON_PAGE));
        virtio_config_changed(&b->dev);
        virtio_dev_unlock(&b->dev);
        return 0;
}

void balloon_get_stats(struct balloon *b, struct balloon_stats *out)
{
        virtio_dev_lock(&b->dev);
        *out = b->guest;
        out->target_bytes = (uint64_t)le32toh(b->config.num_pages) * BALLOON_PAGE;
        out->actual_bytes = (uint64_t)le32toh(b->config.actual) * BALLOON_PAGE;
        out->reported_bytes = b->reported_bytes;
        out->have_guest_stats = b->have_stats;
        out->age_ms = b->have_stats ? (monotonic_ns() - b->stats_ns) / 1000000 : 0;
        /* Handing the buffer back is the spec's way to ask for fresh numbers. */
        if (b->stats_held && b->queue[ROLE_STATS] >= 0) {
                b->stats_held = false;
                virtio_queue_push(&b->dev, (unsigned int)b->queue[ROLE_STATS], b->stats_head, 0);
                virtio_queue_signal(&b->dev, (unsigned int)b->queue[ROLE_STATS]);
        }
        virtio_dev_unlock(&b->dev);
}

static int balloon_init(struct vm_devices *ctx, cap_error_t *err)
{
        const struct vm_config *cfg = ctx->config;
        if (!cfg || !cfg->balloon)
                return 0;
        if (ctx->mem->hugepages)
                return cap_fail(err, 0, "balloon: not available with hugepages (the guest gives back 4 KiB pages, "
                                        "the host can only free whole 2 MiB ones)");
        struct balloon *b = xmalloc0(sizeof(*b));
        b->ctx = ctx;
        b->mem = ctx->mem;
        for (int r = 0; r < N_ROLES; r++)
                b->queue[r] = -1;
        b->more_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (b->more_fd < 0) {
                cap_fail(err, errno, "balloon: eventfd");
                balloon_free(b);
                return -1;
        }
        if (evloop_add(ctx->loop, b->more_fd, EPOLLIN, balloon_more, b, err) < 0) {
                close(b->more_fd);
                b->more_fd = -1;
                balloon_free(b);
                return cap_error_prefix(err, "balloon");
        }
        balloon_stats_parse(NULL, 0, &b->guest); /* every guest number "not reported" */
        snprintf(b->dev.name, sizeof(b->dev.name), "virtio-balloon");
        b->dev.device_id = VIRTIO_ID_BALLOON;
        b->dev.features = 1ULL << VIRTIO_BALLOON_F_STATS_VQ;
        if (cfg->balloon_deflate_on_oom)
                b->dev.features |= 1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
        if (cfg->balloon_free_page_reporting)
                b->dev.features |= 1ULL << VIRTIO_BALLOON_F_REPORTING;
        b->dev.n_queues = cfg->balloon_free_page_reporting ? 4 : 3;
        b->dev.queue_max = BALLOON_QUEUE_SIZE;
        b->dev.config = &b->config;
        b->dev.config_len = sizeof(b->config);
        b->dev.ops = &balloon_ops;
        b->dev.opaque = b;
        if (virtio_dev_add(ctx, &b->dev, err) < 0) {
                balloon_free(b);
                return -1;
        }
        ctx->balloon = b;
        return 0;
}

DEVICE_REGISTER(virtio_balloon, DEVICE_ORDER_VIRTIO, .name = "virtio-balloon", .init = balloon_init)
