/* User-mode networking through passt (https://passt.top): capsule starts it in the
 * foreground on one end of a stream socketpair and exchanges Ethernet frames with it in
 * QEMU's -netdev stream framing (a 32-bit big-endian length, then the frame). passt
 * turns the guest's TCP/UDP/ICMP into ordinary host sockets from its own sandboxed,
 * unprivileged process: a bug it has with a hostile guest stays out of capsule. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/virtio/net_backend.h"
#include "vmm/virtio/net_user.h"
#include "vmm/virtio/vhost_user_backend.h"

#define PASST_DEFAULT "/usr/bin/passt"
#define PASST_ENV "CAPSULE_PASST"
/* From exec to its first answer; passt starts in milliseconds, a loaded testbed is slower. */
#define PASST_START_MS 15000
#define LEN_BYTES 4
#define RX_BUF_SIZE (4 * (LEN_BYTES + NET_USER_MAX_FRAME))

struct passt {
        struct net_backend b;
        struct vhost_user_backend proc;
        /* Bytes read from the stream: whole frames and the start of the next one. */
        uint8_t *rx;
        size_t rx_start, rx_end;
        /* The rest of the last frame sent when the socket took only part of it. */
        uint8_t *tx;
        size_t tx_off, tx_len;
};

/* passt's -t/-u spec for one forward: [ADDR/]HOSTPORT:GUESTPORT. */
static char *forward_spec(const struct vm_net_forward *f)
{
        if (f->host_addr)
                return xasprintf("%s/%u:%u", f->host_addr, f->host_port, f->guest_port);
        return xasprintf("%u:%u", f->host_port, f->guest_port);
}

/* DNS: passt hands the guest the host's resolvers; one on the host's loopback becomes the
 * gateway, which reaches it. (Its --dns-forward answers from the forward address even to a
 * query sent to the gateway, which resolvers drop.) */
static char **passt_argv(const char *prog, const struct vm_net *cfg)
{
        _Static_assert(VHOST_USER_BACKEND_LISTEN_FD == 3, "passt's --fd below");
        static const char *const fixed[] = {
                "--foreground", "--quiet", "--stderr", "--one-off", "--ipv4-only", "--fd", "3",
                "--address", NET_USER_GUEST, "--netmask", "24", "--gateway", NET_USER_GATEWAY, "--mtu", "1500",
        };
        size_t n = 1 + ARRAY_SIZE(fixed) + 2 * (size_t)cfg->n_forwards + 4 + 1, i = 0;
        char **argv = xmalloc0(n * sizeof(*argv));
        argv[i++] = xstrdup(prog);
        for (size_t k = 0; k < ARRAY_SIZE(fixed); k++)
                argv[i++] = xstrdup(fixed[k]);
        bool tcp = false, udp = false;
        for (int k = 0; k < cfg->n_forwards; k++) {
                argv[i++] = xstrdup(cfg->forwards[k].udp ? "--udp-ports" : "--tcp-ports");
                argv[i++] = forward_spec(&cfg->forwards[k]);
                tcp |= !cfg->forwards[k].udp;
                udp |= cfg->forwards[k].udp;
        }
        /* Without a forward of its kind, passt binds nothing on the host. */
        if (!tcp) {
                argv[i++] = xstrdup("--tcp-ports");
                argv[i++] = xstrdup("none");
        }
        if (!udp) {
                argv[i++] = xstrdup("--udp-ports");
                argv[i++] = xstrdup("none");
        }
        return argv;
}

static int passt_spawn(struct passt *p, const struct vm_net *cfg, int sock, cap_error_t *err)
{
        const char *prog = getenv(PASST_ENV);
        if (!prog || !*prog)
                prog = PASST_DEFAULT;
        if (access(prog, X_OK) < 0)
                return cap_fail(err, errno, "cannot run %s (set %s to passt's path)", prog, PASST_ENV);
        struct passwd drop_to, *drop = NULL;
        if (geteuid() == 0) {
                struct passwd *nobody = getpwnam("nobody");
                drop_to = (struct passwd){ .pw_uid = nobody ? nobody->pw_uid : 65534,
                                           .pw_gid = nobody ? nobody->pw_gid : 65534 };
                drop = &drop_to;
        }
        cleanup_strv char **argv = passt_argv(prog, cfg);
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                return cap_fail(err, errno, "fork");
        if (pid == 0)
                vhost_user_backend_child_exec(argv, sock, parent, drop);
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                int e = errno;
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return cap_fail(err, e, "pidfd_open");
        }
        p->proc = (struct vhost_user_backend){ .pid = pid, .pidfd = pidfd };
        return 0;
}

/* The next whole frame in the receive buffer, reading the stream as needed: its length
 * (*frame points into the buffer), -EAGAIN, -EPIPE when passt closed, -EPROTO when the
 * framing is broken. */
static ssize_t passt_next_frame(struct passt *p, const uint8_t **frame)
{
        for (;;) {
                size_t have = p->rx_end - p->rx_start;
                if (have >= LEN_BYTES) {
                        uint32_t be;
                        memcpy(&be, p->rx + p->rx_start, LEN_BYTES);
                        size_t len = ntohl(be);
                        if (len > NET_USER_MAX_FRAME)
                                return -EPROTO;
                        if (have >= LEN_BYTES + len) {
                                *frame = p->rx + p->rx_start + LEN_BYTES;
                                p->rx_start += LEN_BYTES + len;
                                return (ssize_t)len;
                        }
                }
                if (p->rx_start > 0 && p->rx_end + LEN_BYTES + NET_USER_MAX_FRAME > RX_BUF_SIZE) {
                        memmove(p->rx, p->rx + p->rx_start, have);
                        p->rx_start = 0;
                        p->rx_end = have;
                }
                ssize_t n = recv(p->b.fds[0], p->rx + p->rx_end, RX_BUF_SIZE - p->rx_end, MSG_DONTWAIT);
                if (n == 0)
                        return -EPIPE;
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p->rx_end += (size_t)n;
        }
}

static ssize_t passt_recv(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        struct passt *p = b->opaque;
        (void)qp;
        for (;;) {
                const uint8_t *frame = NULL;
                ssize_t len = passt_next_frame(p, &frame);
                if (len < 0)
                        return len;
                size_t room = 0;
                for (int i = 0; i < iovcnt; i++)
                        room += iov[i].iov_len;
                if ((size_t)len > room)
                        continue;
                size_t off = 0;
                for (int i = 0; i < iovcnt && off < (size_t)len; i++) {
                        size_t chunk = iov[i].iov_len < (size_t)len - off ? iov[i].iov_len : (size_t)len - off;
                        memcpy(iov[i].iov_base, frame + off, chunk);
                        off += chunk;
                }
                return len;
        }
}

/* Write what is left of the last frame: 0 once it is all out. */
static int passt_flush(struct passt *p)
{
        while (p->tx_off < p->tx_len) {
                ssize_t n = send(p->b.fds[0], p->tx + p->tx_off, p->tx_len - p->tx_off, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p->tx_off += (size_t)n;
        }
        p->tx_off = p->tx_len = 0;
        return 0;
}

/* A frame the socket took only part of is finished before send() reports it sent: until
 * then it says -EAGAIN, the device waits for EPOLLOUT and offers the same frame again,
 * which then only completes (nothing else would wake the device to flush it). */
static ssize_t passt_send(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        struct passt *p = b->opaque;
        (void)qp;
        size_t len = 0;
        for (int i = 0; i < iovcnt; i++)
                len += iov[i].iov_len;
        if (p->tx_len) {
                int rc = passt_flush(p);
                return rc < 0 ? rc : (ssize_t)len;
        }
        if (len > NET_USER_MAX_FRAME)
                return (ssize_t)len;
        /* One buffer, one send: the header and the frame leave together or wait together. */
        uint32_t be = htonl((uint32_t)len);
        memcpy(p->tx, &be, LEN_BYTES);
        size_t off = LEN_BYTES;
        for (int i = 0; i < iovcnt; i++) {
                memcpy(p->tx + off, iov[i].iov_base, iov[i].iov_len);
                off += iov[i].iov_len;
        }
        p->tx_len = off;
        p->tx_off = 0;
        int rc = passt_flush(p);
        if (rc == -EAGAIN && p->tx_off == 0)
                p->tx_len = 0;
        return rc < 0 ? rc : (ssize_t)len;
}

static void passt_destroy(struct net_backend *b)
{
        struct passt *p = b->opaque;
        /* passt runs --one-off: the closed socket ends it; the signals are for one stuck. */
        if (b->fds[0] >= 0)
                close(b->fds[0]);
        int status;
        if (!vhost_user_backend_exited(&p->proc, 1000, &status))
                vhost_user_backend_stop(&p->proc);
        free(p->rx);
        free(p->tx);
        free(p);
}

static const struct net_backend_ops passt_ops = {
        .send = passt_send,
        .recv = passt_recv,
        .destroy = passt_destroy,
};

/* An ARP request for the gateway, from a locally administered address. */
static size_t arp_probe(uint8_t *f)
{
        static const uint8_t mac[6] = { 0x02, 0xca, 0x95, 0x00, 0x00, 0x01 };
        memset(f, 0xff, 6);
        memcpy(f + 6, mac, 6);
        f[12] = 0x08, f[13] = 0x06;                             /* ARP */
        f[14] = 0, f[15] = 1, f[16] = 0x08, f[17] = 0, f[18] = 6, f[19] = 4; /* Ethernet, IPv4 */
        f[20] = 0, f[21] = 1;                                   /* request */
        memcpy(f + 22, mac, 6);
        inet_pton(AF_INET, NET_USER_GUEST, f + 28);
        memset(f + 32, 0, 6);
        inet_pton(AF_INET, NET_USER_GATEWAY, f + 38);
        return 42;
}

/* passt is ready once it answers: ask it for the gateway's address and wait for the reply
 * (or for it to exit, when its settings did not work: a port already taken, no
 * interface to take the host's addresses from). */
static int passt_wait_ready(struct passt *p, cap_error_t *err)
{
        uint8_t probe[42];
        struct iovec iov = { probe, arp_probe(probe) };
        ssize_t rc = passt_send(&p->b, 0, &iov, 1);
        long long deadline = now_ms() + PASST_START_MS;
        for (;;) {
                if (rc == -EAGAIN)
                        rc = passt_send(&p->b, 0, &iov, 1);
                if (rc < 0 && rc != -EAGAIN)
                        break;
                uint8_t frame[64];
                struct iovec in = { frame, sizeof(frame) };
                ssize_t n = passt_recv(&p->b, 0, &in, 1);
                if (n >= 22 && frame[12] == 0x08 && frame[13] == 0x06 && frame[21] == 2)
                        return 0;
                if (n < 0 && n != -EAGAIN) {
                        rc = n;
                        break;
                }
                long long left = deadline - now_ms();
                if (left <= 0)
                        return cap_fail(err, 0, "passt did not answer within %d s", PASST_START_MS / 1000);
                struct pollfd pf[2] = { { .fd = p->b.fds[0], .events = POLLIN | (rc == -EAGAIN ? POLLOUT : 0) },
                                        { .fd = p->proc.pidfd, .events = POLLIN } };
                if (poll(pf, 2, (int)left) < 0 && errno != EINTR)
                        return cap_fail(err, errno, "poll");
                if (pf[1].revents)
                        break;
        }
        int status;
        char how[64];
        if (vhost_user_backend_exited(&p->proc, 1000, &status))
                return cap_fail(err, 0, "passt %s at start-up (its message is above)",
                                vhost_user_backend_describe(status, how, sizeof(how)));
        return cap_fail(err, (int)-rc, "passt closed its socket at start-up");
}

int net_passt_open(const struct vm_net *cfg, unsigned int index, struct net_backend **out, cap_error_t *err)
{
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return cap_fail(err, errno, "net[%u]: socketpair", index);
        cleanup_close int mine = sv[0], theirs = sv[1];
        struct passt *p = xmalloc0(sizeof(*p));
        *p = (struct passt){
                .b = { .ops = &passt_ops, .n_queue_pairs = 1, .fds = { -1 }, .vnet_hdr = false, .features = 0 },
                .proc = { .pid = 0, .pidfd = -1 },
                .rx = xmalloc0(RX_BUF_SIZE),
                .tx = xmalloc0(LEN_BYTES + NET_USER_MAX_FRAME),
        };
        p->b.opaque = p;
        int rc = passt_spawn(p, cfg, theirs, err);
        if (rc == 0 && fcntl(mine, F_SETFL, O_NONBLOCK) < 0)
                rc = cap_fail(err, errno, "fcntl");
        if (rc == 0) {
                /* Only passt holds its end now: its exit is a hang-up here. */
                close(steal_fd(&theirs));
                p->b.fds[0] = steal_fd(&mine);
                rc = passt_wait_ready(p, err);
        }
        if (rc < 0) {
                passt_destroy(&p->b);
                return cap_error_prefix(err, "net[%u]", index);
        }
        *out = &p->b;
        return 0;
}
