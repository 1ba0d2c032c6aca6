/* virtio-rng: one request queue whose writable buffers are filled from the host's
 * getrandom(), with GRND_NONBLOCK so the event loop never waits on the host's pool.
 * Until the host's pool is initialised (a freshly booted host, or the testbed) that
 * fails, and GRND_INSECURE gives what /dev/urandom would: the same bytes QEMU's and
 * kvmtool's back-ends read, and no worse than what the host itself has then.
 * With a rate (rng_bytes_per_sec) a token bucket holding one second's worth limits
 * it: when the bucket runs dry the device stops taking requests and a timerfd on the
 * event loop brings it back, so nothing ever sleeps. The bucket survives a device
 * reset, or a guest could reset its way past the limit. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define RNG_QUEUE_SIZE 256
#define RNG_CHUNK (64 * 1024) /* per request: the loop has other devices to serve */
#define RNG_BATCH 256         /* a limited device waits for this much budget (or a full bucket) */
#define NSEC 1000000000ULL

struct rng {
        struct virtio_dev dev;
        struct evloop *loop;
        uint64_t rate;        /* bytes a second; 0: unlimited */
        uint64_t budget;      /* bytes * NSEC that may be served now */
        uint64_t refilled_ns; /* CLOCK_MONOTONIC of the last refill */
        int timer_fd;         /* -1 without a rate */
        bool waiting;         /* the timer is armed: requests wait for it */
        struct virtq_chain chain;
};

static uint64_t monotonic_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static void rng_refill(struct rng *r)
{
        uint64_t now = monotonic_ns(), elapsed = now - r->refilled_ns, cap = r->rate * NSEC;
        r->refilled_ns = now;
        /* The bucket holds one second: more elapsed time adds nothing (and cannot overflow). */
        if (elapsed > NSEC)
                elapsed = NSEC;
        r->budget = cap - r->budget <= elapsed * r->rate ? cap : r->budget + elapsed * r->rate;
}

static uint64_t rng_batch(const struct rng *r)
{
        return r->rate < RNG_BATCH ? r->rate : RNG_BATCH;
}

/* Out of budget: come back when a batch is there. */
static void rng_wait(struct rng *r)
{
        uint64_t missing = rng_batch(r) * NSEC - r->budget;
        uint64_t ns = (missing + r->rate - 1) / r->rate;
        struct itimerspec when = { .it_value = { .tv_sec = (time_t)(ns / NSEC), .tv_nsec = (long)(ns % NSEC) } };
        if (when.it_value.tv_sec == 0 && when.it_value.tv_nsec == 0)
                when.it_value.tv_nsec = 1;
        if (timerfd_settime(r->timer_fd, 0, &when, NULL) < 0) {
                virtio_dev_fail(&r->dev, "cannot arm the rate limit's timer");
                return;
        }
        r->waiting = true;
}

/* Fill up to max bytes of the chain's writable buffers; returns how many were filled. */
static uint32_t rng_fill(const struct virtq_chain *c, uint64_t max)
{
        uint32_t done = 0;
        for (unsigned int i = c->n_out; i < c->n_out + c->n_in && done < max; i++) {
                uint8_t *p = c->iov[i].iov_base;
                size_t left = c->iov[i].iov_len < max - done ? c->iov[i].iov_len : max - done;
                while (left) {
                        ssize_t n = getrandom(p, left, GRND_NONBLOCK);
                        if (n < 0 && errno == EAGAIN)
                                n = getrandom(p, left, GRND_INSECURE);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0)
                                return done; /* hand back what there is */
                        p += n;
                        left -= (size_t)n;
                        done += (uint32_t)n;
                }
        }
        return done;
}

static void rng_serve(struct rng *r)
{
        bool pushed = false;
        while (!r->waiting) {
                uint64_t allowed = RNG_CHUNK;
                if (r->rate) {
                        rng_refill(r);
                        if (r->budget < rng_batch(r) * NSEC) {
                                rng_wait(r);
                                break;
                        }
                        if (r->budget / NSEC < allowed)
                                allowed = r->budget / NSEC;
                }
                if (virtio_queue_pop(&r->dev, 0, &r->chain) <= 0)
                        break;
                uint32_t n = rng_fill(&r->chain, allowed);
                if (r->rate)
                        r->budget -= (uint64_t)n * NSEC;
                virtio_queue_push(&r->dev, 0, r->chain.head, n);
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&r->dev, 0);
}

static void rng_timer(void *opaque, uint32_t events)
{
        struct rng *r = opaque;
        uint64_t expirations;
        (void)events;
        if (read(r->timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN && errno != EINTR)
                return;
        virtio_dev_lock(&r->dev);
        if (r->waiting) {
                r->waiting = false;
                rng_serve(r);
        }
        virtio_dev_unlock(&r->dev);
}

/* Nothing to start: requests are served as the driver kicks. */
static int rng_activate(struct virtio_dev *dev, cap_error_t *err)
{
        (void)dev;
        (void)err;
        return 0;
}

static void rng_notify(struct virtio_dev *dev, unsigned int q)
{
        if (q == 0)
                rng_serve(dev->opaque);
}

static void rng_reset(struct virtio_dev *dev)
{
        struct rng *r = dev->opaque;
        if (r->waiting)
                timerfd_settime(r->timer_fd, 0, &(struct itimerspec){ 0 }, NULL);
        r->waiting = false;
}

static void rng_free(struct rng *r)
{
        if (r->timer_fd >= 0) {
                if (r->loop->epfd >= 0)
                        evloop_del(r->loop, r->timer_fd);
                close(r->timer_fd);
        }
        free(r);
}

static void rng_destroy(struct virtio_dev *dev)
{
        rng_free(dev->opaque);
}

static const struct virtio_dev_ops rng_ops = {
        .activate = rng_activate,
        .notify = rng_notify,
        .reset = rng_reset,
        .destroy = rng_destroy,
};

static int rng_init(struct vm_devices *ctx, cap_error_t *err)
{
        const struct vm_config *cfg = ctx->config;
        if (!cfg || !cfg->rng)
                return 0;
        struct rng *r = xmalloc0(sizeof(*r));
        r->timer_fd = -1;
        r->loop = ctx->loop;
        r->rate = cfg->rng_bytes_per_sec;
        snprintf(r->dev.name, sizeof(r->dev.name), "virtio-rng");
        r->dev.device_id = VIRTIO_ID_RNG;
        r->dev.n_queues = 1;
        r->dev.queue_max = RNG_QUEUE_SIZE;
        r->dev.ops = &rng_ops;
        r->dev.opaque = r;
        if (r->rate) {
                r->budget = r->rate * NSEC; /* a full bucket: the first second's worth at once */
                r->refilled_ns = monotonic_ns();
                r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
                if (r->timer_fd < 0) {
                        cap_fail(err, errno, "rng: timerfd_create");
                        rng_free(r);
                        return -1;
                }
                if (evloop_add(ctx->loop, r->timer_fd, EPOLLIN, rng_timer, r, err) < 0) {
                        rng_free(r);
                        return cap_error_prefix(err, "rng");
                }
        }
        if (virtio_dev_add(ctx, &r->dev, err) < 0) {
                rng_free(r);
                return -1;
        }
        return 0;
}

DEVICE_REGISTER(virtio_rng, DEVICE_ORDER_VIRTIO, .name = "virtio-rng", .init = rng_init)
