/* User-mode networking through libslirp, inside capsule, on the device's event loop as
 * QEMU runs it on its main loop: slirp's sockets sit in a nested epoll (the back-end's
 * work fd), its timeouts on a timerfd beside them. Guest frames go straight into
 * slirp_input(); slirp's frames wait in a bounded queue that recv() empties, readable
 * through an eventfd. No thread, so no wake-ups between threads per frame.
 * The guest's network is QEMU's user network: 10.0.2.0/24, the host at 10.0.2.2 (its
 * loopback included), DNS at 10.0.2.3 forwarded to the host's resolver, DHCP from .15.
 *
 * libslirp is loaded with dlopen by the first VM that asks for it: linked in, it and glib
 * would load with every capsule command and add about 2 ms of CPU to a 1 ms start-up. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <slirp/libslirp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/net_backend.h"
#include "vmm/virtio/net_user.h"

#define SLIRP_MAX_TIMERS 8
#define SLIRP_EVENTS 64

#define SLIRP_LIBRARY "libslirp.so.0"
#define SLIRP_FUNCTIONS(X) \
        X(slirp_new) X(slirp_cleanup) X(slirp_pollfds_fill) X(slirp_pollfds_poll) X(slirp_input) \
        X(slirp_handle_timer) X(slirp_add_hostfwd)

static struct {
#define SLIRP_POINTER(f) __typeof__(f) *f;
        SLIRP_FUNCTIONS(SLIRP_POINTER)
#undef SLIRP_POINTER
} lib;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static char lib_error[256];

static void lib_load(void)
{
        void *h = dlopen(SLIRP_LIBRARY, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
                snprintf(lib_error, sizeof(lib_error), "%s", dlerror());
                return;
        }
        /* Never closed: glib, which it pulls in, does not support being unloaded. */
#define SLIRP_RESOLVE(f) \
        if (!lib_error[0] && !(lib.f = (__typeof__(f) *)dlsym(h, #f))) \
                snprintf(lib_error, sizeof(lib_error), "%s: no %s", SLIRP_LIBRARY, #f);
        SLIRP_FUNCTIONS(SLIRP_RESOLVE)
#undef SLIRP_RESOLVE
}

struct slirp_timer {
        bool used, armed;
        SlirpTimerId id;
        void *cb_opaque;
        int64_t expire_ms;
};

/* A frame slirp made for the guest, waiting for recv(). */
struct slirp_frame {
        struct slirp_frame *next;
        size_t len;
        uint8_t data[];
};

/* What the nested epoll holds for one of slirp's sockets (indexed by fd). */
struct slirp_watch {
        int events;      /* SLIRP_POLL_* registered; 0: not registered */
        uint32_t seen;   /* the fill that last listed it */
        uint32_t revents;
};

struct slirp_net {
        struct net_backend b;
        unsigned int index;
        Slirp *slirp;
        int epfd;      /* b.work_fd: slirp's sockets, the timer and the kick */
        int timer;     /* timerfd: slirp's next timeout */
        int kick;      /* eventfd: slirp's sockets changed, fill again */
        bool kicked;
        int rx;        /* b.fds[0], an eventfd: readable while frames wait */
        struct slirp_frame *rx_head, **rx_tail;
        size_t rx_bytes;
        struct slirp_watch *watch;
        size_t n_watch;
        uint32_t fill;
        int *polled;   /* the fds of the last fill, by slirp's index */
        size_t n_polled, cap_polled;
        struct slirp_timer timers[SLIRP_MAX_TIMERS];
        uint8_t *frame;
};

static int64_t clock_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void eventfd_raise(int fd)
{
        uint64_t one = 1;
        while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
                ;
}

/* An eventfd or timerfd back to unreadable. */
static void fd_drain(int fd)
{
        uint64_t v;
        while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
                ;
}

/* Fill again on the loop's next turn: slirp_input() or a callback changed what slirp polls. */
static void slirp_kick(struct slirp_net *s)
{
        if (s->kicked)
                return;
        s->kicked = true;
        eventfd_raise(s->kick);
}

/* slirp -> guest. Past the budget a frame is dropped, as slirp allows. */
static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
        struct slirp_net *s = opaque;
        if (len > NET_USER_MAX_FRAME || s->rx_bytes + len > NET_SLIRP_RX_BYTES)
                return (ssize_t)len;
        struct slirp_frame *f = xmalloc0(sizeof(*f) + len);
        f->next = NULL;
        f->len = len;
        memcpy(f->data, buf, len);
        if (!s->rx_head)
                eventfd_raise(s->rx);
        *s->rx_tail = f;
        s->rx_tail = &f->next;
        s->rx_bytes += len;
        return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
        struct slirp_net *s = opaque;
        log_debug("net[%u]: slirp: guest error: %s", s->index, msg);
}

static int64_t cb_clock_get_ns(void *opaque)
{
        (void)opaque;
        return clock_ns();
}

static void *cb_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque)
{
        struct slirp_net *s = opaque;
        for (size_t i = 0; i < SLIRP_MAX_TIMERS; i++) {
                if (!s->timers[i].used) {
                        s->timers[i] = (struct slirp_timer){ .used = true, .id = id, .cb_opaque = cb_opaque };
                        return &s->timers[i];
                }
        }
        /* slirp has one timer kind (IPv6 router advertisements) and this network is IPv4. */
        abort();
}

static void cb_timer_free(void *timer, void *opaque)
{
        (void)opaque;
        *(struct slirp_timer *)timer = (struct slirp_timer){ .used = false };
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
        struct slirp_timer *t = timer;
        t->armed = true;
        t->expire_ms = expire_ms;
        slirp_kick(opaque);
}

static void cb_register_poll_fd(int fd, void *opaque)
{
        (void)fd, (void)opaque;
}

static void cb_notify(void *opaque)
{
        slirp_kick(opaque);
}

static const SlirpCb slirp_callbacks = {
        .send_packet = cb_send_packet,
        .guest_error = cb_guest_error,
        .clock_get_ns = cb_clock_get_ns,
        .timer_free = cb_timer_free,
        .timer_mod = cb_timer_mod,
        .register_poll_fd = cb_register_poll_fd,
        .unregister_poll_fd = cb_register_poll_fd,
        .notify = cb_notify,
        .timer_new_opaque = cb_timer_new_opaque,
};

static uint32_t to_epoll(int events)
{
        return ((events & SLIRP_POLL_IN) ? EPOLLIN : 0) | ((events & SLIRP_POLL_OUT) ? EPOLLOUT : 0) |
               ((events & SLIRP_POLL_PRI) ? EPOLLPRI : 0);
}

static struct slirp_watch *watch_of(struct slirp_net *s, int fd)
{
        if ((size_t)fd >= s->n_watch) {
                size_t n = s->n_watch;
                while (n <= (size_t)fd)
                        n *= 2;
                s->watch = xrealloc(s->watch, n * sizeof(*s->watch));
                memset(s->watch + s->n_watch, 0, (n - s->n_watch) * sizeof(*s->watch));
                s->n_watch = n;
        }
        return &s->watch[fd];
}

/* slirp_pollfds_fill's callback: the nested epoll follows what slirp lists, with a syscall
 * only when a socket's events change. A socket slirp closed left the epoll by itself, so
 * a number it reuses is added again. */
static int add_poll(int fd, int events, void *opaque)
{
        struct slirp_net *s = opaque;
        if (fd < 0)
                return -1;
        struct slirp_watch *w = watch_of(s, fd);
        if (w->events != events) {
                struct epoll_event ev = { .events = to_epoll(events), .data.fd = fd };
                int op = w->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
                int r = epoll_ctl(s->epfd, op, fd, &ev);
                if (r < 0 && errno == ENOENT)
                        r = epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
                else if (r < 0 && errno == EEXIST)
                        r = epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
                if (r < 0) {
                        log_debug("net[%u]: slirp: cannot poll fd %d: %s", s->index, fd, strerror(errno));
                        w->events = 0;
                        return -1;
                }
                w->events = events;
        }
        w->seen = s->fill;
        if (s->n_polled == s->cap_polled) {
                s->cap_polled *= 2;
                s->polled = xrealloc(s->polled, s->cap_polled * sizeof(*s->polled));
        }
        s->polled[s->n_polled] = fd;
        return (int)s->n_polled++;
}

static int get_revents(int idx, void *opaque)
{
        struct slirp_net *s = opaque;
        if (idx < 0 || (size_t)idx >= s->n_polled)
                return 0;
        uint32_t r = s->watch[s->polled[idx]].revents;
        return ((r & EPOLLIN) ? SLIRP_POLL_IN : 0) | ((r & EPOLLOUT) ? SLIRP_POLL_OUT : 0) |
               ((r & EPOLLPRI) ? SLIRP_POLL_PRI : 0) | ((r & EPOLLERR) ? SLIRP_POLL_ERR : 0) |
               ((r & EPOLLHUP) ? SLIRP_POLL_HUP : 0);
}

/* Fire the timers that are due; the time until the next one, capped by *timeout. */
static void run_timers(struct slirp_net *s, uint32_t *timeout)
{
        int64_t now = clock_ns() / 1000000;
        for (size_t i = 0; i < SLIRP_MAX_TIMERS; i++) {
                struct slirp_timer *t = &s->timers[i];
                if (!t->used || !t->armed)
                        continue;
                if (t->expire_ms <= now) {
                        t->armed = false;
                        lib.slirp_handle_timer(s->slirp, t->id, t->cb_opaque);
                } else if ((uint64_t)(t->expire_ms - now) < *timeout) {
                        *timeout = (uint32_t)(t->expire_ms - now);
                }
        }
}

/* What slirp polls now, and its next timeout on the timerfd. */
static void slirp_refill(struct slirp_net *s)
{
        uint32_t timeout = UINT32_MAX;
        s->fill++;
        s->n_polled = 0;
        lib.slirp_pollfds_fill(s->slirp, &timeout, add_poll, s);
        for (size_t fd = 0; fd < s->n_watch; fd++) {
                struct slirp_watch *w = &s->watch[fd];
                if (w->events && w->seen != s->fill) {
                        epoll_ctl(s->epfd, EPOLL_CTL_DEL, (int)fd, NULL);
                        w->events = 0;
                }
        }
        run_timers(s, &timeout);
        struct itimerspec its = { 0 };
        if (timeout != UINT32_MAX) {
                /* 0 would disarm the timer: a timeout due now fires in a microsecond. */
                its.it_value.tv_sec = timeout / 1000;
                its.it_value.tv_nsec = timeout ? (long)(timeout % 1000) * 1000000 : 1000;
        }
        if (timerfd_settime(s->timer, 0, &its, NULL) < 0)
                log_debug("net[%u]: slirp: timerfd: %s", s->index, strerror(errno));
}

/* The device's loop found the back-end's work fd readable: slirp's sockets, its timers, or
 * a kick. One bounded turn; what is left keeps the fd readable for the next one. */
static void slirp_work(struct net_backend *b)
{
        struct slirp_net *s = b->opaque;
        struct epoll_event ev[SLIRP_EVENTS];
        int n = epoll_wait(s->epfd, ev, SLIRP_EVENTS, 0);
        for (int i = 0; i < n; i++) {
                int fd = ev[i].data.fd;
                if (fd == s->kick) {
                        fd_drain(s->kick);
                        s->kicked = false;
                } else if (fd == s->timer) {
                        fd_drain(s->timer);
                } else if ((size_t)fd < s->n_watch && s->watch[fd].events) {
                        s->watch[fd].revents = ev[i].events;
                }
        }
        lib.slirp_pollfds_poll(s->slirp, 0, get_revents, s);
        for (int i = 0; i < n; i++)
                if ((size_t)ev[i].data.fd < s->n_watch)
                        s->watch[ev[i].data.fd].revents = 0;
        slirp_refill(s);
}

static ssize_t slirp_send(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        (void)qp;
        struct slirp_net *s = b->opaque;
        size_t len = 0;
        for (int i = 0; i < iovcnt; i++) {
                if (iov[i].iov_len > NET_USER_MAX_FRAME - len)
                        return (ssize_t)(len + iov[i].iov_len);
                memcpy(s->frame + len, iov[i].iov_base, iov[i].iov_len);
                len += iov[i].iov_len;
        }
        lib.slirp_input(s->slirp, s->frame, (int)len);
        slirp_kick(s);
        return (ssize_t)len;
}

static ssize_t slirp_recv(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        (void)qp;
        struct slirp_net *s = b->opaque;
        size_t room = 0;
        for (int i = 0; i < iovcnt; i++)
                room += iov[i].iov_len;
        while (s->rx_head) {
                struct slirp_frame *f = s->rx_head;
                s->rx_head = f->next;
                if (!s->rx_head) {
                        s->rx_tail = &s->rx_head;
                        fd_drain(s->rx);
                }
                s->rx_bytes -= f->len;
                size_t len = f->len;
                /* Larger than the guest's buffers: dropped whole, the next one is tried. */
                if (len <= room) {
                        size_t off = 0;
                        for (int i = 0; i < iovcnt && off < len; i++) {
                                size_t k = iov[i].iov_len < len - off ? iov[i].iov_len : len - off;
                                memcpy(iov[i].iov_base, f->data + off, k);
                                off += k;
                        }
                }
                free(f);
                if (len <= room)
                        return (ssize_t)len;
        }
        return -EAGAIN;
}

static void slirp_destroy(struct net_backend *b)
{
        struct slirp_net *s = b->opaque;
        if (s->slirp)
                lib.slirp_cleanup(s->slirp);
        while (s->rx_head) {
                struct slirp_frame *f = s->rx_head;
                s->rx_head = f->next;
                free(f);
        }
        int fds[] = { s->rx, s->epfd, s->timer, s->kick };
        for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        free(s->watch);
        free(s->polled);
        free(s->frame);
        free(s);
}

static const struct net_backend_ops slirp_ops = {
        .send = slirp_send,
        .recv = slirp_recv,
        .work = slirp_work,
        .destroy = slirp_destroy,
};

static int slirp_forwards(struct slirp_net *s, const struct vm_net *cfg, cap_error_t *err)
{
        struct in_addr guest;
        inet_pton(AF_INET, NET_USER_GUEST, &guest);
        for (int i = 0; i < cfg->n_forwards; i++) {
                const struct vm_net_forward *f = &cfg->forwards[i];
                struct in_addr host = { .s_addr = htonl(INADDR_ANY) };
                if (f->host_addr && inet_pton(AF_INET, f->host_addr, &host) != 1)
                        return cap_fail(err, 0, "hostfwd: '%s' is not an IPv4 address", f->host_addr);
                /* slirp binds the host's port here, in capsule, with capsule's rights. */
                if (lib.slirp_add_hostfwd(s->slirp, f->udp, host, f->host_port, guest, f->guest_port) < 0)
                        return cap_fail(err, errno, "hostfwd=%s:%s:%u-:%u: cannot listen", f->udp ? "udp" : "tcp",
                                        f->host_addr ? f->host_addr : "", f->host_port, f->guest_port);
        }
        return 0;
}

static int slirp_setup(struct slirp_net *s, const struct vm_net *cfg, cap_error_t *err)
{
        s->rx = s->b.fds[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        s->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        s->timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        s->epfd = s->b.work_fd = epoll_create1(EPOLL_CLOEXEC);
        if (s->rx < 0 || s->kick < 0 || s->timer < 0 || s->epfd < 0)
                return cap_fail(err, errno, "slirp's descriptors");
        int own[] = { s->kick, s->timer };
        for (size_t i = 0; i < ARRAY_SIZE(own); i++) {
                struct epoll_event ev = { .events = EPOLLIN, .data.fd = own[i] };
                if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, own[i], &ev) < 0)
                        return cap_fail(err, errno, "slirp's epoll");
        }

        SlirpConfig sc = {
                .version = 4,
                .in_enabled = true,
                .vnetmask = { .s_addr = htonl(~0U << (32 - NET_USER_PREFIX)) },
                .vhostname = "capsule",
                .if_mtu = NET_USER_MTU,
                .if_mru = NET_USER_MTU,
        };
        inet_pton(AF_INET, NET_USER_NETWORK, &sc.vnetwork);
        inet_pton(AF_INET, NET_USER_GATEWAY, &sc.vhost);
        inet_pton(AF_INET, NET_USER_GUEST, &sc.vdhcp_start);
        inet_pton(AF_INET, NET_USER_DNS, &sc.vnameserver);
        s->slirp = lib.slirp_new(&sc, &slirp_callbacks, s);
        if (!s->slirp)
                return cap_fail(err, 0, "libslirp refused its configuration");
        if (slirp_forwards(s, cfg, err) < 0)
                return -1;
        /* A first poll sets slirp's clock, which stamps the sockets slirp_input() opens:
         * unset, a guest's first datagram would open one that has expired already. From
         * then on the timerfd runs a poll at least once a second. */
        slirp_refill(s);
        lib.slirp_pollfds_poll(s->slirp, 0, get_revents, s);
        slirp_refill(s);
        return 0;
}

int net_slirp_open(const struct vm_net *cfg, unsigned int index, struct net_backend **out, cap_error_t *err)
{
        pthread_once(&lib_once, lib_load);
        if (lib_error[0])
                return cap_fail(err, 0, "net[%u]: impl=slirp needs libslirp (Debian's libslirp0): %s", index,
                                lib_error);
        struct slirp_net *s = xmalloc0(sizeof(*s));
        *s = (struct slirp_net){
                .b = { .ops = &slirp_ops, .n_queue_pairs = 1, .fds = { -1 }, .work_fd = -1, .vnet_hdr = false },
                .index = index,
                .rx = -1,
                .epfd = -1,
                .timer = -1,
                .kick = -1,
                .n_watch = 64,
                .cap_polled = 16,
                .frame = xmalloc0(NET_USER_MAX_FRAME),
        };
        s->b.opaque = s;
        s->rx_tail = &s->rx_head;
        s->watch = xmalloc0(s->n_watch * sizeof(*s->watch));
        s->polled = xmalloc0(s->cap_polled * sizeof(*s->polled));
        if (slirp_setup(s, cfg, err) < 0) {
                slirp_destroy(&s->b);
                return cap_error_prefix(err, "net[%u]", index);
        }
        *out = &s->b;
        return 0;
}
