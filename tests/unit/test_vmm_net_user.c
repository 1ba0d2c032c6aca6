/* The user-mode network back-ends (passt, libslirp) driven as the virtio-net device drives
 * them: frames a guest would send go in through send(), the network's answers come out of
 * recv(). A tiny "guest" here asks DHCP for its address, answers ARP for it, and exchanges
 * UDP with the host: with the gateway (the host's loopback) and through a host forward. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "vmm/virtio/net_backend.h"
#include "vmm/virtio/net_user.h"

#define PASST "/usr/bin/passt"
#define WAIT_MS 10000

static const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

struct frame {
        uint8_t b[2048];
        size_t len;
};

static uint16_t ip_checksum(const uint8_t *p, size_t len)
{
        uint32_t sum = 0;
        for (size_t i = 0; i + 1 < len; i += 2)
                sum += (uint32_t)(p[i] << 8 | p[i + 1]);
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p)
{
        return (uint16_t)(p[0] << 8 | p[1]);
}

/* Ethernet + IPv4 + UDP (checksum 0: none) around payload. */
static size_t udp_frame(uint8_t *f, const uint8_t dst_mac[6], const char *src, uint16_t sport, const char *dst,
                        uint16_t dport, const void *payload, size_t plen)
{
        memcpy(f, dst_mac, 6);
        memcpy(f + 6, guest_mac, 6);
        put16(f + 12, 0x0800);
        uint8_t *ip = f + 14;
        memset(ip, 0, 20);
        ip[0] = 0x45;
        put16(ip + 2, (uint16_t)(20 + 8 + plen));
        ip[8] = 64;
        ip[9] = 17;
        inet_pton(AF_INET, src, ip + 12);
        inet_pton(AF_INET, dst, ip + 16);
        put16(ip + 10, ip_checksum(ip, 20));
        uint8_t *udp = ip + 20;
        put16(udp, sport);
        put16(udp + 2, dport);
        put16(udp + 4, (uint16_t)(8 + plen));
        put16(udp + 6, 0);
        memcpy(udp + 8, payload, plen);
        return 14 + 20 + 8 + plen;
}

/* Waits up to ms for the back-end's fd to be ready for events, running the back-end's own
 * work (slirp's sockets and timers) meanwhile, as the device's event loop does. */
static bool backend_wait(struct net_backend *b, short events, int ms)
{
        long long deadline = now_ms() + ms;
        do {
                struct pollfd p[2] = { { .fd = b->fds[0], .events = events },
                                       { .fd = b->ops->work ? b->work_fd : -1, .events = POLLIN } };
                int left = (int)(deadline - now_ms());
                if (poll(p, 2, left > 0 ? left : 0) <= 0)
                        continue;
                if (p[1].revents & POLLIN)
                        b->ops->work(b);
                if (p[0].revents)
                        return true;
        } while (now_ms() < deadline);
        return false;
}

static int send_frame(struct net_backend *b, const uint8_t *f, size_t len)
{
        /* Two pieces, as a guest's buffers may be: the back-end must join them. */
        struct iovec iov[2] = { { (void *)f, 10 }, { (void *)(f + 10), len - 10 } };
        long long deadline = now_ms() + WAIT_MS;
        for (;;) {
                ssize_t n = b->ops->send(b, 0, iov, 2);
                if (n == (ssize_t)len)
                        return 0;
                if (n != -EAGAIN || now_ms() > deadline)
                        return -1;
                backend_wait(b, POLLOUT, 100);
        }
}

/* Answers an ARP request for the guest's address (slirp asks before it sends to it). */
static void answer_arp(struct net_backend *b, const struct frame *req)
{
        uint8_t f[42];
        memcpy(f, req->b + 6, 6);
        memcpy(f + 6, guest_mac, 6);
        put16(f + 12, 0x0806);
        memcpy(f + 14, req->b + 14, 6);
        put16(f + 20, 2);
        memcpy(f + 22, guest_mac, 6);
        memcpy(f + 28, req->b + 38, 4);
        memcpy(f + 32, req->b + 22, 10);
        send_frame(b, f, sizeof(f));
}

/* The next frame that satisfies want (ARP requests for the guest answered on the way). */
static bool recv_matching(struct net_backend *b, struct frame *fr, bool (*want)(const struct frame *, const void *),
                          const void *arg)
{
        long long deadline = now_ms() + WAIT_MS;
        while (now_ms() < deadline) {
                struct iovec iov = { fr->b, sizeof(fr->b) };
                ssize_t n = b->ops->recv(b, 0, &iov, 1);
                if (n == -EAGAIN) {
                        backend_wait(b, POLLIN, 100);
                        continue;
                }
                if (n < 0)
                        return false;
                fr->len = (size_t)n;
                if (fr->len >= 42 && get16(fr->b + 12) == 0x0806 && get16(fr->b + 20) == 1) {
                        answer_arp(b, fr);
                        continue;
                }
                if (want(fr, arg))
                        return true;
        }
        return false;
}

static const uint8_t *udp_of(const struct frame *f, uint16_t dport)
{
        if (f->len < 14 + 20 + 8 || get16(f->b + 12) != 0x0800 || f->b[14 + 9] != 17)
                return NULL;
        size_t ihl = (size_t)(f->b[14] & 0xf) * 4;
        if (f->len < 14 + ihl + 8 || get16(f->b + 14 + ihl + 2) != dport)
                return NULL;
        return f->b + 14 + ihl;
}

static bool is_dhcp_offer(const struct frame *f, const void *arg)
{
        (void)arg;
        const uint8_t *udp = udp_of(f, 68);
        /* BOOTP reply (op 2) whose yiaddr is what the guest gets. */
        return udp && f->len >= (size_t)(udp - f->b) + 8 + 240 && udp[8] == 2;
}

static bool is_udp_to(const struct frame *f, const void *port)
{
        return udp_of(f, *(const uint16_t *)port) != NULL;
}

/* DHCPDISCOVER; the offer must hand out NET_USER_GUEST with the gateway as router. */
static bool dhcp_works(struct net_backend *b)
{
        static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
        uint8_t bootp[300] = { 1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78 };
        memcpy(bootp + 28, guest_mac, 6);
        static const uint8_t opts[] = { 0x63, 0x82, 0x53, 0x63, 53, 1, 1, 55, 3, 1, 3, 6, 255 };
        memcpy(bootp + 236, opts, sizeof(opts));
        uint8_t f[400];
        size_t len = udp_frame(f, bcast, "0.0.0.0", 68, "255.255.255.255", 67, bootp, sizeof(bootp));
        if (send_frame(b, f, len) < 0)
                return false;
        struct frame fr;
        if (!recv_matching(b, &fr, is_dhcp_offer, NULL))
                return false;
        const uint8_t *reply = udp_of(&fr, 68) + 8;
        struct in_addr yiaddr;
        inet_pton(AF_INET, NET_USER_GUEST, &yiaddr);
        return memcmp(reply + 16, &yiaddr, 4) == 0 && memcmp(reply + 28, guest_mac, 6) == 0;
}

static int udp_socket(uint16_t *port)
{
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
                abort();
        *port = ntohs(sa.sin_port);
        return fd;
}

static ssize_t recv_timeout(int fd, void *buf, size_t len, struct sockaddr_in *from)
{
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, WAIT_MS) != 1)
                return -1;
        socklen_t sl = sizeof(*from);
        return recvfrom(fd, buf, len, 0, (struct sockaddr *)from, &sl);
}

/* The guest's datagram to the gateway reaches a socket on the host's loopback, and the
 * host's answer comes back to the guest's port. */
static bool udp_to_host_works(struct net_backend *b, const uint8_t gw_mac[6])
{
        uint16_t port;
        cleanup_close int fd = udp_socket(&port);
        uint8_t f[200];
        size_t len = udp_frame(f, gw_mac, NET_USER_GUEST, 4000, NET_USER_GATEWAY, port, "ping", 4);
        if (send_frame(b, f, len) < 0)
                return false;
        char buf[16];
        struct sockaddr_in from;
        if (recv_timeout(fd, buf, sizeof(buf), &from) != 4 || memcmp(buf, "ping", 4) != 0)
                return false;
        if (sendto(fd, "pong", 4, 0, (struct sockaddr *)&from, sizeof(from)) != 4)
                return false;
        struct frame fr;
        uint16_t gport = 4000;
        return recv_matching(b, &fr, is_udp_to, &gport) && memcmp(udp_of(&fr, 4000) + 8, "pong", 4) == 0 &&
               memcmp(fr.b, guest_mac, 6) == 0;
}

static bool is_syn_ack(const struct frame *f, const void *port)
{
        if (f->len < 14 + 20 + 20 || get16(f->b + 12) != 0x0800 || f->b[14 + 9] != 6)
                return false;
        const uint8_t *tcp = f->b + 14 + (size_t)(f->b[14] & 0xf) * 4;
        return get16(tcp + 2) == *(const uint16_t *)port && (tcp[13] & 0x12) == 0x12;
}

/* A SYN from the guest to the gateway: the host's listener on its loopback gets the
 * connection and the guest its SYN-ACK. */
static bool tcp_connect_works(struct net_backend *b, const uint8_t gw_mac[6])
{
        cleanup_close int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0 ||
            getsockname(l, (struct sockaddr *)&sa, &sl) < 0)
                return false;
        uint8_t f[14 + 20 + 20];
        memcpy(f, gw_mac, 6);
        memcpy(f + 6, guest_mac, 6);
        put16(f + 12, 0x0800);
        uint8_t *ip = f + 14, *tcp = f + 34;
        memset(ip, 0, 40);
        ip[0] = 0x45;
        put16(ip + 2, 40);
        ip[8] = 64;
        ip[9] = 6;
        inet_pton(AF_INET, NET_USER_GUEST, ip + 12);
        inet_pton(AF_INET, NET_USER_GATEWAY, ip + 16);
        put16(ip + 10, ip_checksum(ip, 20));
        put16(tcp, 4001);
        put16(tcp + 2, ntohs(sa.sin_port));
        put16(tcp + 4, 0x1234);
        tcp[12] = 5 << 4;
        tcp[13] = 0x02; /* SYN */
        put16(tcp + 14, 65535);
        uint8_t pseudo[12 + 20];
        memcpy(pseudo, ip + 12, 8);
        pseudo[8] = 0;
        pseudo[9] = 6;
        put16(pseudo + 10, 20);
        memcpy(pseudo + 12, tcp, 20);
        put16(tcp + 16, ip_checksum(pseudo, sizeof(pseudo)));
        if (send_frame(b, f, sizeof(f)) < 0)
                return false;
        struct frame fr;
        uint16_t gport = 4001;
        if (!recv_matching(b, &fr, is_syn_ack, &gport))
                return false;
        struct pollfd p = { .fd = l, .events = POLLIN };
        return poll(&p, 1, WAIT_MS) == 1;
}

/* A datagram to the forwarded host port arrives at the guest's port. */
static bool hostfwd_works(struct net_backend *b, uint16_t host_port, uint16_t guest_port)
{
        cleanup_close int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(host_port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct frame fr;
        /* The forward may take a moment to listen (passt binds before answering, slirp at once). */
        for (int i = 0; i < 20; i++) {
                if (sendto(fd, "fwd!", 4, 0, (struct sockaddr *)&sa, sizeof(sa)) != 4)
                        return false;
                if (backend_wait(b, POLLIN, 500) && recv_matching(b, &fr, is_udp_to, &guest_port))
                        return memcmp(udp_of(&fr, guest_port) + 8, "fwd!", 4) == 0 &&
                               memcmp(fr.b, guest_mac, 6) == 0;
        }
        return false;
}

static uint16_t free_udp_port(void)
{
        uint16_t port;
        close(udp_socket(&port));
        return port;
}

static struct vm_net user_net(enum vm_net_user_impl impl, struct vm_net_forward *fwd, uint16_t host_port)
{
        *fwd = (struct vm_net_forward){ .udp = true, .host_addr = "127.0.0.1", .host_port = host_port,
                                        .guest_port = 5353 };
        return (struct vm_net){ .backend = VM_NET_USER, .queues = 1, .user_impl = impl, .forwards = fwd,
                                .n_forwards = 1 };
}

static const uint8_t any_mac[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 };

/* libslirp with a UDP forward from a free port of the host's loopback to the guest's 5353. */
static struct net_backend *slirp_forwarding(struct vm_net_forward *fwd, uint16_t *host_port)
{
        *host_port = free_udp_port();
        struct vm_net cfg = user_net(VM_NET_USER_SLIRP, fwd, *host_port);
        struct net_backend *b = NULL;
        cleanup_error cap_error_t err = NULL;
        return net_slirp_open(&cfg, 0, &b, &err) == 0 ? b : NULL;
}

TEST(slirp_dhcp_udp_tcp_and_hostfwd)
{
        struct vm_net_forward fwd;
        uint16_t host_port;
        struct net_backend *b = slirp_forwarding(&fwd, &host_port);
        CHECK(b != NULL);
        CHECK(b->n_queue_pairs == 1 && !b->vnet_hdr && b->features == 0);
        bool dhcp = dhcp_works(b), udp = udp_to_host_works(b, any_mac), fwd_ok = hostfwd_works(b, host_port, 5353);
        bool tcp = tcp_connect_works(b, any_mac);
        b->ops->destroy(b);
        CHECK(dhcp);
        CHECK(udp);
        CHECK(fwd_ok);
        CHECK(tcp);
}

TEST(slirp_forward_port_taken)
{
        uint16_t port;
        cleanup_close int taken = udp_socket(&port);
        struct vm_net_forward fwd;
        struct vm_net cfg = user_net(VM_NET_USER_SLIRP, &fwd, port);
        struct net_backend *b = NULL;
        cleanup_error cap_error_t err = NULL;
        CHECK(net_slirp_open(&cfg, 2, &b, &err) < 0);
        CHECK(strstr(err->msg, "net[2]: hostfwd=udp:127.0.0.1:") != NULL);
        cap_error_free(&err);

        cleanup_close int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        CHECK(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 1) == 0 &&
              getsockname(l, (struct sockaddr *)&sa, &sl) == 0);
        fwd.udp = false;
        fwd.host_port = ntohs(sa.sin_port);
        CHECK(net_slirp_open(&cfg, 2, &b, &err) < 0);
        CHECK(strstr(err->msg, "net[2]: hostfwd=tcp:127.0.0.1:") != NULL);
}

/* A guest flooding frames nobody reads: send() says -EAGAIN or drops, never blocks. */
TEST(slirp_send_never_blocks)
{
        struct vm_net cfg = { .backend = VM_NET_USER, .queues = 1, .user_impl = VM_NET_USER_SLIRP };
        struct net_backend *b = NULL;
        cap_error_t err = NULL;
        CHECK(net_slirp_open(&cfg, 0, &b, &err) == 0);
        uint8_t f[1514] = { 0 };
        struct iovec iov = { f, sizeof(f) };
        long long start = now_ms();
        for (int i = 0; i < 20000; i++)
                b->ops->send(b, 0, &iov, 1);
        long long took = now_ms() - start;
        b->ops->destroy(b);
        CHECK(took < 10000);
}

/* Runs the back-end's work until it has had none for ms. */
static void work_until_idle(struct net_backend *b, int ms)
{
        struct pollfd p = { .fd = b->work_fd, .events = POLLIN };
        while (poll(&p, 1, ms) == 1)
                b->ops->work(b);
}

/* A guest that takes no frames while the host floods its forward: slirp's frames for it
 * fill the back-end's queue up to its budget, and no further. */
TEST(slirp_rx_queue_is_bounded)
{
        struct vm_net_forward fwd;
        uint16_t host_port;
        struct net_backend *b = slirp_forwarding(&fwd, &host_port);
        CHECK(b != NULL);
        /* slirp learns the guest's MAC (ARP) on the way. */
        CHECK(hostfwd_works(b, host_port, 5353));
        cleanup_close int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(host_port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        static const char payload[1400];
        size_t sent = 0;
        for (int i = 0; i < 2 * NET_SLIRP_RX_BYTES / (int)sizeof(payload); i++) {
                if (sendto(fd, payload, sizeof(payload), 0, (struct sockaddr *)&sa, sizeof(sa)) > 0)
                        sent += sizeof(payload);
                if (i % 20 == 19)
                        work_until_idle(b, 0);
        }
        work_until_idle(b, 200);
        size_t queued = 0;
        uint8_t buf[2048];
        struct iovec iov = { buf, sizeof(buf) };
        for (ssize_t n; (n = b->ops->recv(b, 0, &iov, 1)) > 0;)
                queued += (size_t)n;
        b->ops->destroy(b);
        CHECK(sent >= 2 * NET_SLIRP_RX_BYTES - sizeof(payload));
        CHECK(queued > NET_SLIRP_RX_BYTES - 2 * sizeof(buf) && queued <= NET_SLIRP_RX_BYTES);
}

/* A guest frame past the back-end's limit, in pieces whose sum only crosses it at the end:
 * dropped whole (its length returned), nothing written past the back-end's frame buffer. */
TEST(slirp_drops_a_frame_past_its_limit)
{
        struct vm_net cfg = { .backend = VM_NET_USER, .queues = 1, .user_impl = VM_NET_USER_SLIRP };
        struct net_backend *b = NULL;
        cap_error_t err = NULL;
        CHECK(net_slirp_open(&cfg, 0, &b, &err) == 0);
        static uint8_t big[NET_USER_MAX_FRAME];
        struct iovec iov[2] = { { big, sizeof(big) - 1 }, { big, 2 } };
        ssize_t n = b->ops->send(b, 0, iov, 2);
        b->ops->destroy(b);
        CHECK(n == (ssize_t)sizeof(big) + 1);
}

static bool have_passt(void)
{
        return access(PASST, X_OK) == 0;
}

TEST(passt_dhcp_udp_tcp_and_hostfwd)
{
        if (!have_passt())
                SKIP(PASST " is not installed");
        struct vm_net_forward fwd;
        uint16_t host_port = free_udp_port();
        struct vm_net cfg = user_net(VM_NET_USER_PASST, &fwd, host_port);
        struct net_backend *b = NULL;
        cap_error_t err = NULL;
        CHECK(net_passt_open(&cfg, 0, &b, &err) == 0);
        CHECK(b->n_queue_pairs == 1 && !b->vnet_hdr && b->features == 0);
        bool dhcp = dhcp_works(b), udp = udp_to_host_works(b, any_mac), fwd_ok = hostfwd_works(b, host_port, 5353);
        bool tcp = tcp_connect_works(b, any_mac);
        b->ops->destroy(b);
        CHECK(dhcp);
        CHECK(udp);
        CHECK(fwd_ok);
        CHECK(tcp);
        /* destroy reaped passt: capsule has no child left. */
        CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
}

TEST(passt_missing_or_failing)
{
        struct vm_net cfg = { .backend = VM_NET_USER, .queues = 1, .user_impl = VM_NET_USER_PASST };
        struct net_backend *b = NULL;
        cleanup_error cap_error_t err = NULL;
        setenv("CAPSULE_PASST", "/nonexistent/passt", 1);
        int rc = net_passt_open(&cfg, 1, &b, &err);
        unsetenv("CAPSULE_PASST");
        CHECK(rc < 0);
        CHECK(strstr(err->msg, "net[1]: cannot run /nonexistent/passt") != NULL);
        cap_error_free(&err);

        /* passt refuses the forward (a port taken): its exit is the error, nothing is left. */
        if (!have_passt())
                SKIP(PASST " is not installed");
        uint16_t port;
        cleanup_close int taken = udp_socket(&port);
        struct vm_net_forward fwd;
        cfg = user_net(VM_NET_USER_PASST, &fwd, port);
        CHECK(net_passt_open(&cfg, 1, &b, &err) < 0);
        CHECK(strstr(err->msg, "net[1]: passt exited with status") != NULL);
        CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
}

/* Without impl=, a NIC runs passt unless it forwards a TCP port (README): passt here is a
 * path that does not exist, so which back-end ran shows in whether the NIC opened. */
TEST(default_impl_is_passt_unless_a_tcp_port_is_forwarded)
{
        uint16_t port = free_udp_port();
        struct vm_net_forward fwd;
        struct vm_net cfg = user_net(VM_NET_USER_DEFAULT, &fwd, port);
        struct net_backend *b = NULL;
        cleanup_error cap_error_t err = NULL;
        setenv("CAPSULE_PASST", "/nonexistent/passt", 1);
        int udp_rc = net_backend_open(&cfg, 0, 1, &b, &err);
        bool udp_passt = udp_rc < 0 && strstr(err->msg, "cannot run /nonexistent/passt") != NULL;
        cap_error_free(&err);
        fwd.udp = false;
        int tcp_rc = net_backend_open(&cfg, 0, 1, &b, &err);
        unsetenv("CAPSULE_PASST");
        CHECK(udp_passt);
        CHECK(tcp_rc == 0);
        b->ops->destroy(b);
}

/* A stand-in for passt (CAPSULE_PASST): answers the start-up ARP in one-byte writes, then
 * sends three frames in one write, one too large for the guest's buffer, and a length no
 * frame can have. capsule must reassemble, drop the large one alone, and give up on the
 * broken framing without reading past its buffer. */
static const char fake_passt[] =
        "#!/usr/bin/python3\n"
        "import os, socket, struct, time\n"
        "s = socket.socket(fileno=3)\n"
        "n = struct.unpack('!I', s.recv(4, socket.MSG_WAITALL))[0]\n"
        "s.recv(n, socket.MSG_WAITALL)\n"
        "arp = bytes(12) + b'\\x08\\x06' + bytes(7) + b'\\x02' + bytes(20)\n"
        "for b in struct.pack('!I', len(arp)) + arp:\n"
        "    s.send(bytes([b]))\n"
        "time.sleep(0.2)\n"
        "f = lambda d: struct.pack('!I', len(d)) + d\n"
        "s.send(f(b'A' * 60) + f(b'B' * 3000) + f(b'C' * 61))\n"
        "s.send(struct.pack('!I', 0xffffffff) + b'x' * 100)\n"
        "time.sleep(30)\n";

/* Opens the passt back-end on a stand-in: script, run by /usr/bin/python3. *b stays NULL
 * when that failed (reported) or cannot run here (skipped). */
static void fake_passt_open(const char *script, struct net_backend **b)
{
        if (access("/usr/bin/python3", X_OK) != 0)
                SKIP("no /usr/bin/python3 for the stand-in passt");
        char path[] = "/tmp/capsule-fake-passt-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        bool written = write(fd, script, strlen(script)) == (ssize_t)strlen(script);
        close(fd);
        chmod(path, 0755);
        CHECK(written);
        struct vm_net cfg = { .backend = VM_NET_USER, .queues = 1, .user_impl = VM_NET_USER_PASST };
        cap_error_t err = NULL;
        setenv("CAPSULE_PASST", path, 1);
        int rc = net_passt_open(&cfg, 0, b, &err);
        unsetenv("CAPSULE_PASST");
        unlink(path);
        if (rc < 0)
                cap_error_report(&err);
        CHECK(rc == 0);
}

TEST(passt_stream_framing)
{
        struct net_backend *b = NULL;
        fake_passt_open(fake_passt, &b);
        if (!b)
                return;
        uint8_t buf[2048];
        ssize_t got[3];
        for (int i = 0; i < 3; i++) {
                struct iovec iov[2] = { { buf, 7 }, { buf + 7, sizeof(buf) - 7 } };
                long long deadline = now_ms() + WAIT_MS;
                while ((got[i] = b->ops->recv(b, 0, iov, 2)) == -EAGAIN && now_ms() < deadline)
                        backend_wait(b, POLLIN, 100);
                if (i == 0)
                        CHECK(got[0] == 60 && buf[0] == 'A' && buf[59] == 'A');
                if (i == 1)
                        CHECK(got[1] == 61 && buf[0] == 'C' && buf[60] == 'C');
        }
        b->ops->destroy(b);
        CHECK(got[2] == -EPROTO);
}

/* A passt that neither ends with its socket (--one-off) nor on SIGTERM: the VM's exit must
 * not wait for it for ever. It is killed after the grace periods (1 s for the close, 2 s
 * after SIGTERM; 8 s leaves a loaded machine room) and reaped: nothing is left. */
static const char deaf_passt[] =
        "#!/usr/bin/python3\n"
        "import signal, socket, struct, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(fileno=3)\n"
        "n = struct.unpack('!I', s.recv(4, socket.MSG_WAITALL))[0]\n"
        "s.recv(n, socket.MSG_WAITALL)\n"
        "arp = bytes(12) + b'\\x08\\x06' + bytes(7) + b'\\x02' + bytes(20)\n"
        "s.send(struct.pack('!I', len(arp)) + arp)\n"
        "while True:\n"
        "    time.sleep(60)\n";

TEST(passt_deaf_to_close_and_sigterm_is_killed_in_bounded_time)
{
        struct net_backend *b = NULL;
        fake_passt_open(deaf_passt, &b);
        if (!b)
                return;
        long long t = now_ms();
        b->ops->destroy(b);
        long long took = now_ms() - t;
        CHECK(took < 8000);
        CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
}
