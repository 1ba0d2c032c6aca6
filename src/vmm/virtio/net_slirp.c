/* User-mode networking through libslirp, inside capsule: one thread runs slirp's poll loop
 * (its sockets, its timers) and exchanges frames with the device over a SOCK_SEQPACKET
 * socketpair, one frame per message, so the device polls an fd as with every back-end.
 * The guest's network is QEMU's user network: 10.0.2.0/24, the host at 10.0.2.2 (its
 * loopback included), DNS at 10.0.2.3 forwarded to the host's resolver, DHCP from .15.
 *
 * libslirp is loaded with dlopen by the first VM that asks for it: linked in, it and glib
 * would load with every capsule command and add about 2 ms of CPU to a 1 ms start-up. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <slirp/libslirp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/net_backend.h"
#include "vmm/virtio/net_user.h"

/* Frames slirp sends while the guest is not taking them wait in the socket: TCP would
 * retransmit a dropped one, but only after a timeout that costs throughput. */
#define SLIRP_SOCK_BUF (4 << 20)
#define SLIRP_MAX_TIMERS 8
#define SLIRP_BATCH 64

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

struct slirp_net {
        struct net_backend b;
        unsigned int index;
        Slirp *slirp;
        int sock;    /* the thread's end of the socketpair */
        int wake;    /* eventfd: stop, or slirp's notify */
        bool stop;   /* under the eventfd's write/read ordering */
        pthread_t thread;
        bool started;
        struct pollfd *pfds;
        size_t n_pfds, cap_pfds;
        struct slirp_timer timers[SLIRP_MAX_TIMERS];
        uint8_t *frame;
};

static int64_t clock_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* slirp → guest. A frame the device has no room for is dropped, as slirp allows. */
static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
        struct slirp_net *s = opaque;
        ssize_t n = send(s->sock, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        return n < 0 && errno != EAGAIN ? -errno : (ssize_t)len;
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
        (void)opaque;
        struct slirp_timer *t = timer;
        t->armed = true;
        t->expire_ms = expire_ms;
}

static void cb_register_poll_fd(int fd, void *opaque)
{
        (void)fd, (void)opaque;
}

/* slirp wants its fds polled again (a socket can take data): wake the poll. */
static void cb_notify(void *opaque)
{
        struct slirp_net *s = opaque;
        uint64_t one = 1;
        if (write(s->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_debug("net[%u]: slirp: wake: %s", s->index, strerror(errno));
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

static int to_poll_events(int events)
{
        return ((events & SLIRP_POLL_IN) ? POLLIN : 0) | ((events & SLIRP_POLL_OUT) ? POLLOUT : 0) |
               ((events & SLIRP_POLL_PRI) ? POLLPRI : 0) | ((events & SLIRP_POLL_ERR) ? POLLERR : 0) |
               ((events & SLIRP_POLL_HUP) ? POLLHUP : 0);
}

static int add_poll(int fd, int events, void *opaque)
{
        struct slirp_net *s = opaque;
        if (s->n_pfds == s->cap_pfds) {
                s->cap_pfds *= 2;
                s->pfds = xrealloc(s->pfds, s->cap_pfds * sizeof(*s->pfds));
        }
        s->pfds[s->n_pfds] = (struct pollfd){ .fd = fd, .events = (short)to_poll_events(events) };
        return (int)s->n_pfds++;
}

static int get_revents(int idx, void *opaque)
{
        struct slirp_net *s = opaque;
        short r = s->pfds[idx].revents;
        return ((r & POLLIN) ? SLIRP_POLL_IN : 0) | ((r & POLLOUT) ? SLIRP_POLL_OUT : 0) |
               ((r & POLLPRI) ? SLIRP_POLL_PRI : 0) | ((r & POLLERR) ? SLIRP_POLL_ERR : 0) |
               ((r & POLLHUP) ? SLIRP_POLL_HUP : 0);
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

/* Frames from the guest, a bounded batch: a guest sending without pause must not keep
 * slirp from its sockets. */
static void take_frames(struct slirp_net *s)
{
        for (int i = 0; i < SLIRP_BATCH; i++) {
                ssize_t n = recv(s->sock, s->frame, NET_USER_MAX_FRAME, MSG_DONTWAIT | MSG_TRUNC);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return;
                if (n <= NET_USER_MAX_FRAME)
                        lib.slirp_input(s->slirp, s->frame, (int)n);
        }
}

static void *slirp_thread(void *arg)
{
        struct slirp_net *s = arg;
        for (;;) {
                uint32_t timeout = UINT32_MAX;
                s->n_pfds = 0;
                add_poll(s->wake, SLIRP_POLL_IN, s);
                add_poll(s->sock, SLIRP_POLL_IN, s);
                lib.slirp_pollfds_fill(s->slirp, &timeout, add_poll, s);
                run_timers(s, &timeout);
                int n = poll(s->pfds, s->n_pfds, timeout == UINT32_MAX ? -1 : (int)timeout);
                if (n < 0 && errno != EINTR) {
                        log_error("net[%u]: slirp: poll: %s", s->index, strerror(errno));
                        return NULL;
                }
                if (n > 0 && s->pfds[0].revents) {
                        uint64_t v;
                        if (read(s->wake, &v, sizeof(v)) < 0 && errno != EAGAIN)
                                log_debug("net[%u]: slirp: wake: %s", s->index, strerror(errno));
                        if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
                                return NULL;
                }
                lib.slirp_pollfds_poll(s->slirp, n < 0, get_revents, s);
                /* The device closed its end: the back-end is being destroyed. */
                if (n > 0 && (s->pfds[1].revents & (POLLHUP | POLLERR)))
                        return NULL;
                if (n > 0 && (s->pfds[1].revents & POLLIN))
                        take_frames(s);
        }
}

static ssize_t slirp_send(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        (void)qp;
        size_t len = 0;
        for (int i = 0; i < iovcnt; i++)
                len += iov[i].iov_len;
        if (len > NET_USER_MAX_FRAME)
                return (ssize_t)len;
        struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
        for (;;) {
                ssize_t n = sendmsg(b->fds[0], &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n >= 0)
                        return (ssize_t)len;
                if (errno == EINTR)
                        continue;
                /* Too many pieces for one message: this frame is lost, as on a busy wire. */
                if (errno == EMSGSIZE)
                        return (ssize_t)len;
                return -errno;
        }
}

static ssize_t slirp_recv(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        (void)qp;
        struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
        for (;;) {
                ssize_t n = recvmsg(b->fds[0], &msg, MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -EPIPE;
                /* Larger than the guest's buffers: dropped whole, the next one is tried. */
                if (msg.msg_flags & MSG_TRUNC) {
                        msg.msg_flags = 0;
                        continue;
                }
                return n;
        }
}

static void slirp_destroy(struct net_backend *b)
{
        struct slirp_net *s = b->opaque;
        if (s->started) {
                __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
                cb_notify(s);
                pthread_join(s->thread, NULL);
        }
        if (s->slirp)
                lib.slirp_cleanup(s->slirp);
        if (b->fds[0] >= 0)
                close(b->fds[0]);
        if (s->sock >= 0)
                close(s->sock);
        if (s->wake >= 0)
                close(s->wake);
        free(s->pfds);
        free(s->frame);
        free(s);
}

static const struct net_backend_ops slirp_ops = {
        .send = slirp_send,
        .recv = slirp_recv,
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
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
                return cap_fail(err, errno, "socketpair");
        s->b.fds[0] = sv[0];
        s->sock = sv[1];
        int size = SLIRP_SOCK_BUF;
        for (int i = 0; i < 2; i++) {
                /* Best effort: a smaller buffer only means earlier drops. */
                setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
                setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
        }
        s->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->wake < 0)
                return cap_fail(err, errno, "eventfd");

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

        /* The thread takes no signal meant for capsule's own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = pthread_create(&s->thread, NULL, slirp_thread, s);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0)
                return cap_fail(err, rc, "pthread_create");
        s->started = true;
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
                .b = { .ops = &slirp_ops, .n_queue_pairs = 1, .fds = { -1 }, .vnet_hdr = false, .features = 0 },
                .index = index,
                .sock = -1,
                .wake = -1,
                .cap_pfds = 16,
                .frame = xmalloc0(NET_USER_MAX_FRAME),
        };
        s->b.opaque = s;
        s->pfds = xmalloc0(s->cap_pfds * sizeof(*s->pfds));
        if (slirp_setup(s, cfg, err) < 0) {
                slirp_destroy(&s->b);
                return cap_error_prefix(err, "net[%u]", index);
        }
        *out = &s->b;
        return 0;
}
