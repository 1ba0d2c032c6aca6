#include "vmm/virtio/vsock_mux.h"

#include <errno.h>
#include <linux/virtio_vsock.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define HASH_SIZE 512
/* Host-side ports of host-initiated connections: far above what guests listen on. */
#define HOST_PORT_FIRST (1u << 30)
#define PORT_ANY 0xffffffffu

enum conn_state {
        CONN_FREE,
        CONN_LINE,        /* host client: reading its CONNECT line */
        CONN_CONNECTING,  /* host client: REQUEST to the guest, waiting for its RESPONSE */
        CONN_ESTABLISHED,
        CONN_DRAINING,    /* the guest closed or reset: write what it sent to the host, then close */
};

/* Control packets a connection owes the guest. */
#define OWE_REQUEST 1u
#define OWE_RESPONSE 2u
#define OWE_CREDIT 4u
#define OWE_SHUTDOWN 8u

struct vsock_conn {
        struct vsock_mux *mux;
        enum conn_state state;
        int fd;
        uint32_t local_port, peer_port; /* the host side's port, the guest's */
        struct vsock_conn *hash_next;
        struct vsock_conn *rx_prev, *rx_next;
        bool on_rx;
        bool from_host;                 /* a client of the VM's socket (counts in n_host_conns) */
        unsigned int owe;
        bool readable, writable;        /* edge-triggered readiness, cleared on EAGAIN */
        bool host_eof;                  /* the host peer sends no more */
        bool guest_no_send, guest_no_recv;
        bool host_shut_wr;
        /* host → guest: the guest's credit */
        uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
        /* guest → host: bytes received, bytes written to the host, fwd_cnt last told */
        uint32_t rx_cnt, fwd_cnt, fwd_cnt_told;
        uint8_t *buf; /* ring of VSOCK_BUF_ALLOC bytes the host socket did not take yet */
        uint32_t buf_head, buf_len;
        char line[VSOCK_LINE_MAX];
        uint32_t line_len;
};

struct vsock_rst {
        uint32_t local_port, peer_port;
        uint16_t type;
};

struct vsock_mux {
        struct vsock_mux_host host;
        uint64_t guest_cid;
        char *path;
        int listen_fd;
        struct vsock_conn conns[VSOCK_CONN_MAX];
        unsigned int n_conns;
        unsigned int n_host_conns;
        struct vsock_conn *hash[HASH_SIZE];
        struct vsock_conn *rx_head, *rx_tail; /* connections with something for the guest */
        struct vsock_rst rst[VSOCK_RST_QUEUE];
        unsigned int rst_head, rst_len;
        uint32_t next_host_port;
};

uint32_t vsock_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t sent)
{
        uint32_t in_flight = sent - fwd_cnt;
        return in_flight > buf_alloc ? 0 : buf_alloc - in_flight;
}

/* ---- the connection table ---------------------------------------------------------- */

static unsigned int conn_hash(uint32_t local_port, uint32_t peer_port)
{
        return (local_port * 2654435761u ^ peer_port) % HASH_SIZE;
}

static struct vsock_conn *conn_find(struct vsock_mux *m, uint32_t local_port, uint32_t peer_port)
{
        for (struct vsock_conn *c = m->hash[conn_hash(local_port, peer_port)]; c; c = c->hash_next)
                if (c->local_port == local_port && c->peer_port == peer_port)
                        return c;
        return NULL;
}

static void conn_hash_add(struct vsock_conn *c)
{
        struct vsock_conn **head = &c->mux->hash[conn_hash(c->local_port, c->peer_port)];
        c->hash_next = *head;
        *head = c;
}

static void conn_hash_del(struct vsock_conn *c)
{
        for (struct vsock_conn **pp = &c->mux->hash[conn_hash(c->local_port, c->peer_port)]; *pp; pp = &(*pp)->hash_next) {
                if (*pp == c) {
                        *pp = c->hash_next;
                        return;
                }
        }
}

static bool conn_hashed(const struct vsock_conn *c)
{
        return c->state == CONN_CONNECTING || c->state == CONN_ESTABLISHED;
}

static void rx_del(struct vsock_conn *c)
{
        struct vsock_mux *m = c->mux;
        if (!c->on_rx)
                return;
        if (c->rx_prev)
                c->rx_prev->rx_next = c->rx_next;
        else
                m->rx_head = c->rx_next;
        if (c->rx_next)
                c->rx_next->rx_prev = c->rx_prev;
        else
                m->rx_tail = c->rx_prev;
        c->rx_prev = c->rx_next = NULL;
        c->on_rx = false;
}

static bool conn_data_ready(const struct vsock_conn *c)
{
        return c->state == CONN_ESTABLISHED && c->readable && !c->host_eof && !c->guest_no_recv &&
               vsock_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt) > 0;
}

/* Put c at the tail of the rx list if it has something for the guest. */
static void conn_schedule(struct vsock_conn *c)
{
        struct vsock_mux *m = c->mux;
        if (c->on_rx || !conn_hashed(c) || (!c->owe && !conn_data_ready(c)))
                return;
        c->rx_prev = m->rx_tail;
        c->rx_next = NULL;
        if (m->rx_tail)
                m->rx_tail->rx_next = c;
        else
                m->rx_head = c;
        m->rx_tail = c;
        c->on_rx = true;
}

static struct vsock_conn *conn_alloc(struct vsock_mux *m, int fd, enum conn_state state)
{
        for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++) {
                struct vsock_conn *c = &m->conns[i];
                if (c->state != CONN_FREE)
                        continue;
                memset(c, 0, sizeof(*c));
                c->mux = m;
                c->fd = fd;
                c->state = state;
                m->n_conns++;
                return c;
        }
        return NULL;
}

/* Forget c without a word to the guest. Its slot stays valid memory: an event fetched
 * before the unwatch finds it free. */
static void conn_free(struct vsock_conn *c)
{
        struct vsock_mux *m = c->mux;
        if (c->state == CONN_FREE)
                return;
        rx_del(c);
        if (conn_hashed(c))
                conn_hash_del(c);
        if (c->fd >= 0) {
                m->host.unwatch(m->host.opaque, c->fd);
                close(c->fd);
        }
        free(c->buf);
        c->buf = NULL;
        c->fd = -1;
        c->state = CONN_FREE;
        m->n_conns--;
        if (c->from_host)
                m->n_host_conns--;
}

static void rst_queue(struct vsock_mux *m, uint32_t local_port, uint32_t peer_port, uint16_t type)
{
        if (m->rst_len == VSOCK_RST_QUEUE)
                return; /* the guest gives no rx buffers: its connect times out instead */
        m->rst[(m->rst_head + m->rst_len++) % VSOCK_RST_QUEUE] =
                (struct vsock_rst){ .local_port = local_port, .peer_port = peer_port, .type = type };
}

/* Close c and tell the guest, if it knows the connection. */
static void conn_reset(struct vsock_conn *c)
{
        bool guest_knows = c->state == CONN_ESTABLISHED || (c->state == CONN_CONNECTING && !(c->owe & OWE_REQUEST));
        if (guest_knows)
                rst_queue(c->mux, c->local_port, c->peer_port, VIRTIO_VSOCK_TYPE_STREAM);
        conn_free(c);
}

/* ---- host sockets ------------------------------------------------------------------ */

static void conn_event(void *arg, uint32_t events);

static int conn_watch(struct vsock_conn *c, cap_error_t *err)
{
        return c->mux->host.watch(c->mux->host.opaque, c->fd, conn_event, c, err);
}

/* The guest learns fwd_cnt from every header; a blocked sender waits for it, so say it once
 * a quarter of the buffer was passed on. */
static void conn_check_credit(struct vsock_conn *c)
{
        if (c->fwd_cnt - c->fwd_cnt_told >= VSOCK_BUF_ALLOC / 4)
                c->owe |= OWE_CREDIT;
}

static ssize_t conn_send(struct vsock_conn *c, struct iovec *iov, size_t n)
{
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n };
        ssize_t w;
        do
                w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                c->writable = false;
                return 0;
        }
        return w;
}

/* Write buffered guest bytes to the host socket. */
static void conn_flush(struct vsock_conn *c)
{
        while (c->buf_len > 0 && c->writable) {
                uint32_t first = VSOCK_BUF_ALLOC - c->buf_head;
                if (first > c->buf_len)
                        first = c->buf_len;
                struct iovec v[2] = { { c->buf + c->buf_head, first }, { c->buf, c->buf_len - first } };
                ssize_t w = conn_send(c, v, c->buf_len > first ? 2 : 1);
                if (w < 0) {
                        conn_reset(c);
                        return;
                }
                c->buf_head = (uint32_t)((c->buf_head + (size_t)w) % VSOCK_BUF_ALLOC);
                c->buf_len -= (uint32_t)w;
                c->fwd_cnt += (uint32_t)w;
        }
        conn_check_credit(c);
        if (c->buf_len > 0)
                return;
        free(c->buf);
        c->buf = NULL;
        c->buf_head = 0;
        if (c->state == CONN_DRAINING) {
                conn_free(c);
                return;
        }
        if (c->guest_no_send && !c->host_shut_wr) {
                shutdown(c->fd, SHUT_WR);
                c->host_shut_wr = true;
        }
}

/* Copy len bytes of iov, from offset on, to dst. */
static void iov_copy_out(const struct iovec *iov, unsigned int n, size_t offset, uint8_t *dst, size_t len)
{
        for (unsigned int i = 0; i < n && len > 0; i++) {
                if (offset >= iov[i].iov_len) {
                        offset -= iov[i].iov_len;
                        continue;
                }
                size_t k = iov[i].iov_len - offset;
                if (k > len)
                        k = len;
                memcpy(dst, (const uint8_t *)iov[i].iov_base + offset, k);
                dst += k;
                len -= k;
                offset = 0;
        }
}

/* Guest data for the host: straight to the socket, the rest into the ring. */
static void conn_write(struct vsock_conn *c, const struct iovec *payload, unsigned int n, uint32_t len)
{
        if (c->guest_no_send || c->rx_cnt - c->fwd_cnt + (uint64_t)len > VSOCK_BUF_ALLOC) {
                conn_reset(c); /* data after its own SHUTDOWN, or more than the credit we gave */
                return;
        }
        c->rx_cnt += len;
        uint32_t done = 0;
        if (c->buf_len == 0 && c->writable && len > 0) {
                /* sendmsg() does not write to the iovecs; payload has at most VIRTQ_MAX_SIZE (IOV_MAX) */
                ssize_t w = conn_send(c, (struct iovec *)payload, n);
                if (w < 0) {
                        conn_reset(c);
                        return;
                }
                done = (uint32_t)w;
                c->fwd_cnt += done;
        }
        if (done < len) {
                if (!c->buf)
                        c->buf = xmalloc0(VSOCK_BUF_ALLOC);
                size_t tail = (c->buf_head + c->buf_len) % VSOCK_BUF_ALLOC;
                size_t rest = len - done, first = VSOCK_BUF_ALLOC - tail;
                if (first > rest)
                        first = rest;
                iov_copy_out(payload, n, done, c->buf + tail, first);
                iov_copy_out(payload, n, done + first, c->buf, rest - first);
                c->buf_len += (uint32_t)rest;
        }
        conn_check_credit(c);
}

/* The guest is done with c: the host still gets every byte the guest sent before (we took
 * them within the credit we gave, as a TCP peer's kernel takes them before a FIN), then its
 * end of the connection closes. */
static void conn_drain(struct vsock_conn *c)
{
        rx_del(c);
        conn_hash_del(c);
        c->state = CONN_DRAINING;
        c->owe = 0;
        conn_flush(c);
}

static void conn_guest_shutdown(struct vsock_conn *c, uint32_t flags)
{
        if ((flags & VIRTIO_VSOCK_SHUTDOWN_RCV) && !c->guest_no_recv) {
                c->guest_no_recv = true;
                shutdown(c->fd, SHUT_RD); /* the host's further writes fail with EPIPE */
        }
        if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
                c->guest_no_send = true;
        if (!c->guest_no_recv || !c->guest_no_send) {
                conn_flush(c); /* a SEND shutdown reaches the host once the ring is empty */
                return;
        }
        /* Closed both ways: the guest waits for our RST (as Linux's own transport answers). */
        rst_queue(c->mux, c->local_port, c->peer_port, VIRTIO_VSOCK_TYPE_STREAM);
        conn_drain(c);
}

/* ---- host → guest: the CONNECT line ----------------------------------------------- */

static uint32_t host_port_pick(struct vsock_mux *m, uint32_t peer_port)
{
        for (;;) {
                uint32_t p = m->next_host_port++;
                if (m->next_host_port == PORT_ANY)
                        m->next_host_port = HOST_PORT_FIRST;
                if (!conn_find(m, p, peer_port))
                        return p;
        }
}

/* "CONNECT <port>\n", the port in decimal without sign or leading zeros. */
static bool line_parse(const char *line, uint32_t len, uint32_t *port)
{
        static const char prefix[] = "CONNECT ";
        const uint32_t plen = sizeof(prefix) - 1;
        if (len < plen + 2 || memcmp(line, prefix, plen) != 0 || line[len - 1] != '\n')
                return false;
        uint64_t v = 0;
        uint32_t digits = len - 1 - plen;
        if (digits > 10 || (digits > 1 && line[plen] == '0'))
                return false;
        for (uint32_t i = plen; i < len - 1; i++) {
                if (line[i] < '0' || line[i] > '9')
                        return false;
                v = v * 10 + (uint64_t)(line[i] - '0');
        }
        if (v >= PORT_ANY)
                return false;
        *port = (uint32_t)v;
        return true;
}

/* Read the line without reading past it: peek, then take up to the newline. */
static void host_line(struct vsock_conn *c)
{
        for (;;) {
                uint32_t room = VSOCK_LINE_MAX - c->line_len;
                if (room == 0) {
                        conn_free(c);
                        return;
                }
                ssize_t r = recv(c->fd, c->line + c->line_len, room, MSG_PEEK | MSG_DONTWAIT);
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                        c->readable = false;
                        return;
                }
                if (r <= 0) {
                        conn_free(c);
                        return;
                }
                char *nl = memchr(c->line + c->line_len, '\n', (size_t)r);
                size_t take = nl ? (size_t)(nl - (c->line + c->line_len)) + 1 : (size_t)r;
                if (recv(c->fd, c->line + c->line_len, take, MSG_DONTWAIT) != (ssize_t)take) {
                        conn_free(c);
                        return;
                }
                c->line_len += (uint32_t)take;
                if (nl)
                        break;
        }
        uint32_t port;
        if (!line_parse(c->line, c->line_len, &port)) {
                conn_free(c);
                return;
        }
        c->peer_port = port;
        c->local_port = host_port_pick(c->mux, port);
        c->state = CONN_CONNECTING;
        c->owe = OWE_REQUEST;
        conn_hash_add(c);
        conn_schedule(c);
}

/* The guest accepted: tell the client which host port it got, then bridge. */
static void host_established(struct vsock_conn *c)
{
        char ok[24];
        int len = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);
        /* Nothing was sent on this socket yet: its buffer takes the line whole or the client is gone. */
        if (send(c->fd, ok, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) != len) {
                conn_reset(c);
                return;
        }
        c->state = CONN_ESTABLISHED;
}

static void conn_event(void *arg, uint32_t events)
{
        struct vsock_conn *c = arg;
        struct vsock_mux *m = c->mux;
        m->host.lock(m->host.opaque);
        if (c->state != CONN_FREE) {
                if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                        c->readable = true;
                if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                        c->writable = true;
                if (c->state == CONN_LINE)
                        host_line(c);
                else
                        conn_flush(c);
                if (c->state != CONN_FREE)
                        conn_schedule(c);
                if (vsock_mux_rx_pending(m))
                        m->host.rx_wake(m->host.opaque);
        }
        m->host.unlock(m->host.opaque);
}

static void listen_event(void *arg, uint32_t events)
{
        struct vsock_mux *m = arg;
        (void)events;
        m->host.lock(m->host.opaque);
        /* Edge-triggered: accept until EAGAIN; each client is kept or closed at once. */
        for (;;) {
                int fd = accept4(m->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
                        continue;
                if (fd < 0)
                        break;
                struct vsock_conn *c = m->n_host_conns < VSOCK_HOST_CONN_MAX ? conn_alloc(m, fd, CONN_LINE) : NULL;
                if (!c) {
                        close(fd);
                        continue;
                }
                c->from_host = true;
                m->n_host_conns++;
                cleanup_error cap_error_t err = NULL;
                if (conn_watch(c, &err) < 0)
                        conn_free(c);
        }
        m->host.unlock(m->host.opaque);
}

/* ---- guest → host ------------------------------------------------------------------ */

/* A Unix connect completes or fails at once (a full backlog is EAGAIN: refused too). */
static int guest_connect_fd(struct vsock_mux *m, uint32_t port)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int len = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", m->path, port);
        if (len < 0 || (size_t)len >= sizeof(sa.sun_path))
                return -1;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

static void guest_connect(struct vsock_mux *m, const struct vsock_pkt *pkt)
{
        int fd = m->n_conns < VSOCK_CONN_MAX ? guest_connect_fd(m, pkt->dst_port) : -1;
        struct vsock_conn *c = fd >= 0 ? conn_alloc(m, fd, CONN_ESTABLISHED) : NULL;
        cleanup_error cap_error_t err = NULL;
        if (c && conn_watch(c, &err) < 0) {
                conn_free(c);
                c = NULL;
        }
        if (!c) {
                rst_queue(m, pkt->dst_port, pkt->src_port, pkt->type);
                return;
        }
        c->local_port = pkt->dst_port;
        c->peer_port = pkt->src_port;
        c->peer_buf_alloc = pkt->buf_alloc;
        c->peer_fwd_cnt = pkt->fwd_cnt;
        c->owe = OWE_RESPONSE;
        conn_hash_add(c);
        conn_schedule(c);
}

void vsock_mux_tx(struct vsock_mux *m, const struct vsock_pkt *pkt, const struct iovec *payload, unsigned int n)
{
        struct vsock_conn *c = conn_find(m, pkt->dst_port, pkt->src_port);
        if (pkt->op == VIRTIO_VSOCK_OP_REQUEST) {
                if (c) {
                        conn_reset(c); /* a second REQUEST for a live connection: both are void */
                        return;
                }
                guest_connect(m, pkt);
                return;
        }
        if (!c) {
                if (pkt->op != VIRTIO_VSOCK_OP_RST)
                        rst_queue(m, pkt->dst_port, pkt->src_port, pkt->type);
                return;
        }
        c->peer_buf_alloc = pkt->buf_alloc;
        c->peer_fwd_cnt = pkt->fwd_cnt;
        bool established = c->state == CONN_ESTABLISHED;
        switch (pkt->op) {
        case VIRTIO_VSOCK_OP_RST:
                /* Linux's guest ends a close with an RST (when ours does not come in time, or
                 * after the host's own shutdown): what it sent first still reaches the host.
                 * A refused CONNECT closes the client without an answer. */
                if (established)
                        conn_drain(c);
                else
                        conn_free(c);
                return;
        case VIRTIO_VSOCK_OP_RESPONSE:
                if (c->state == CONN_CONNECTING && !(c->owe & OWE_REQUEST))
                        host_established(c);
                else
                        conn_reset(c);
                break;
        case VIRTIO_VSOCK_OP_SHUTDOWN:
                if (established)
                        conn_guest_shutdown(c, pkt->flags);
                else
                        conn_reset(c);
                break;
        case VIRTIO_VSOCK_OP_RW:
                if (established)
                        conn_write(c, payload, n, pkt->len);
                else
                        conn_reset(c);
                break;
        case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
                if (established)
                        c->owe |= OWE_CREDIT;
                else
                        conn_reset(c);
                break;
        default: /* CREDIT_UPDATE: the numbers above were all */
                if (!established)
                        conn_reset(c);
                break;
        }
        if (c->state != CONN_FREE)
                conn_schedule(c);
}

void vsock_mux_tx_invalid(struct vsock_mux *m, const struct vsock_pkt *pkt)
{
        struct vsock_conn *c = conn_find(m, pkt->dst_port, pkt->src_port);
        if (c)
                conn_reset(c);
        else if (pkt->op != VIRTIO_VSOCK_OP_RST)
                rst_queue(m, pkt->dst_port, pkt->src_port, pkt->type);
}

/* ---- host → guest packets ------------------------------------------------------------ */

static void conn_header(struct vsock_conn *c, struct vsock_pkt *pkt, uint16_t op)
{
        *pkt = (struct vsock_pkt){
                .src_cid = VSOCK_HOST_CID,
                .dst_cid = c->mux->guest_cid,
                .src_port = c->local_port,
                .dst_port = c->peer_port,
                .type = VIRTIO_VSOCK_TYPE_STREAM,
                .op = op,
                .buf_alloc = VSOCK_BUF_ALLOC,
                .fwd_cnt = c->fwd_cnt,
        };
        c->fwd_cnt_told = c->fwd_cnt;
        c->owe &= ~OWE_CREDIT;
}

/* Shorten buf to at most len bytes; returns the entries left. */
static unsigned int iov_trim(struct iovec *buf, unsigned int n, size_t len)
{
        for (unsigned int i = 0; i < n; i++) {
                if (buf[i].iov_len >= len) {
                        buf[i].iov_len = len;
                        return i + 1;
                }
                len -= buf[i].iov_len;
        }
        return n;
}

/* Read host bytes straight into the guest's buffer. 1: a packet; 0: nothing (c may be gone). */
static int conn_rx_data(struct vsock_conn *c, struct vsock_pkt *pkt, struct iovec *buf, unsigned int n, uint32_t room)
{
        uint32_t want = vsock_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
        if (want > room)
                want = room;
        if (want > VSOCK_MAX_PAYLOAD)
                want = VSOCK_MAX_PAYLOAD;
        struct msghdr msg = { .msg_iov = buf, .msg_iovlen = iov_trim(buf, n, want) };
        ssize_t r;
        do
                r = recvmsg(c->fd, &msg, MSG_DONTWAIT);
        while (r < 0 && errno == EINTR);
        if (r > 0) {
                conn_header(c, pkt, VIRTIO_VSOCK_OP_RW);
                pkt->len = (uint32_t)r;
                c->tx_cnt += (uint32_t)r;
                return 1;
        }
        c->readable = false;
        if (r == 0) {
                c->host_eof = true;
                c->owe |= OWE_SHUTDOWN;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                conn_reset(c);
        }
        return 0;
}

static int conn_rx(struct vsock_conn *c, struct vsock_pkt *pkt, struct iovec *buf, unsigned int n, uint32_t room)
{
        if (c->owe & OWE_REQUEST) {
                c->owe &= ~OWE_REQUEST;
                conn_header(c, pkt, VIRTIO_VSOCK_OP_REQUEST);
                return 1;
        }
        if (c->owe & OWE_RESPONSE) {
                c->owe &= ~OWE_RESPONSE;
                conn_header(c, pkt, VIRTIO_VSOCK_OP_RESPONSE);
                return 1;
        }
        if (conn_data_ready(c) && conn_rx_data(c, pkt, buf, n, room))
                return 1;
        if (c->state == CONN_FREE)
                return 0;
        if (c->owe & OWE_CREDIT) {
                conn_header(c, pkt, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
                return 1;
        }
        if (c->owe & OWE_SHUTDOWN) {
                c->owe &= ~OWE_SHUTDOWN;
                conn_header(c, pkt, VIRTIO_VSOCK_OP_SHUTDOWN);
                pkt->flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
                return 1;
        }
        return 0;
}

bool vsock_mux_rx_pending(const struct vsock_mux *m)
{
        return m->rst_len > 0 || m->rx_head != NULL;
}

int vsock_mux_rx(struct vsock_mux *m, struct vsock_pkt *pkt, struct iovec *buf, unsigned int n, uint32_t room)
{
        /* Every connection gets one turn at most: one that yields nothing leaves the list. */
        for (unsigned int turn = 0; turn <= VSOCK_CONN_MAX; turn++) {
                if (m->rst_len > 0) {
                        struct vsock_rst r = m->rst[m->rst_head];
                        m->rst_head = (m->rst_head + 1) % VSOCK_RST_QUEUE;
                        m->rst_len--;
                        *pkt = (struct vsock_pkt){
                                .src_cid = VSOCK_HOST_CID,
                                .dst_cid = m->guest_cid,
                                .src_port = r.local_port,
                                .dst_port = r.peer_port,
                                .type = r.type,
                                .op = VIRTIO_VSOCK_OP_RST,
                        };
                        return 1;
                }
                struct vsock_conn *c = m->rx_head;
                if (!c)
                        return 0;
                rx_del(c);
                int got = conn_rx(c, pkt, buf, n, room);
                if (c->state != CONN_FREE)
                        conn_schedule(c);
                if (got)
                        return 1;
        }
        return 0;
}

/* ---- life cycle ------------------------------------------------------------------- */

int vsock_mux_create(struct vsock_mux **out, const char *socket_path, uint64_t guest_cid,
                     const struct vsock_mux_host *host, cap_error_t *err)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return cap_fail(err, ENAMETOOLONG, "vsock: socket %s", socket_path);
        strcpy(sa.sun_path, socket_path);
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "vsock: socket %s", socket_path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return cap_fail(err, errno, "vsock: socket %s", socket_path);
        struct vsock_mux *m = xmalloc0(sizeof(*m));
        m->host = *host;
        m->guest_cid = guest_cid;
        m->path = xstrdup(socket_path);
        m->next_host_port = HOST_PORT_FIRST;
        for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++) {
                m->conns[i].mux = m;
                m->conns[i].fd = -1;
        }
        m->listen_fd = steal_fd(&fd);
        if (listen(m->listen_fd, 128) < 0 || host->watch(host->opaque, m->listen_fd, listen_event, m, err) < 0) {
                cap_fail(err, errno, "vsock: socket %s: listen", socket_path);
                close(m->listen_fd);
                m->listen_fd = -1;
                vsock_mux_destroy(m);
                return -1;
        }
        *out = m;
        return 0;
}

/* Write what each connection still holds for its host peer, waiting (poll) while a peer
 * does not read, until timeout_ms have passed. */
void vsock_mux_linger(struct vsock_mux *m, int timeout_ms)
{
        long long deadline = now_ms() + timeout_ms;
        for (;;) {
                struct pollfd pfd[VSOCK_CONN_MAX];
                nfds_t n = 0;
                uint64_t left = 0;
                for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++) {
                        struct vsock_conn *c = &m->conns[i];
                        if ((c->state != CONN_ESTABLISHED && c->state != CONN_DRAINING) || c->buf_len == 0)
                                continue;
                        c->writable = true; /* a spurious try costs one EAGAIN */
                        conn_flush(c);
                        if (c->state != CONN_FREE && c->buf_len > 0) {
                                pfd[n++] = (struct pollfd){ .fd = c->fd, .events = POLLOUT };
                                left += c->buf_len;
                        }
                }
                long long wait = deadline - now_ms();
                if (n == 0)
                        return;
                if (wait <= 0) {
                        log_warning("vsock: %llu bytes the guest sent were dropped: host peers (%u) did not "
                                    "read them within %d ms of the VM's stop",
                                    (unsigned long long)left, (unsigned int)n, timeout_ms);
                        return;
                }
                if (poll(pfd, n, (int)wait) < 0 && errno != EINTR)
                        return;
        }
}

void vsock_mux_reset(struct vsock_mux *m)
{
        for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++) {
                struct vsock_conn *c = &m->conns[i];
                if (c->state == CONN_ESTABLISHED && c->buf_len > 0)
                        conn_drain(c);
                else if (c->state != CONN_DRAINING)
                        conn_free(c);
        }
        m->rst_head = m->rst_len = 0;
}

void vsock_mux_destroy(struct vsock_mux *m)
{
        if (!m)
                return;
        for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++)
                conn_free(&m->conns[i]);
        m->rst_head = m->rst_len = 0;
        if (m->listen_fd >= 0) {
                m->host.unwatch(m->host.opaque, m->listen_fd);
                close(m->listen_fd);
        }
        unlink(m->path);
        free(m->path);
        free(m);
}

unsigned int vsock_mux_conn_count(const struct vsock_mux *m)
{
        return m->n_conns;
}
