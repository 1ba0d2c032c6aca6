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
#include "vmm/virtio/vsock_conn.h"

/* Host-side ports of host-initiated connections: far above what guests listen on. */
#define HOST_PORT_FIRST (1u << 30)
#define PORT_ANY 0xffffffffu

/* ---- host → guest: the CONNECT line ----------------------------------------------- */

static uint32_t host_port_pick(struct vsock_mux *m, uint32_t peer_port)
{
        for (;;) {
                uint32_t p = m->next_host_port++;
                if (m->next_host_port == PORT_ANY)
                        m->next_host_port = HOST_PORT_FIRST;
                if (!vsock_conn_find(m, p, peer_port))
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
                        vsock_conn_free(c);
                        return;
                }
                ssize_t r = recv(c->fd, c->line + c->line_len, room, MSG_PEEK | MSG_DONTWAIT);
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                        c->readable = false;
                        return;
                }
                if (r <= 0) {
                        vsock_conn_free(c);
                        return;
                }
                char *nl = memchr(c->line + c->line_len, '\n', (size_t)r);
                size_t take = nl ? (size_t)(nl - (c->line + c->line_len)) + 1 : (size_t)r;
                if (recv(c->fd, c->line + c->line_len, take, MSG_DONTWAIT) != (ssize_t)take) {
                        vsock_conn_free(c);
                        return;
                }
                c->line_len += (uint32_t)take;
                if (nl)
                        break;
        }
        uint32_t port;
        if (!line_parse(c->line, c->line_len, &port)) {
                vsock_conn_free(c);
                return;
        }
        c->peer_port = port;
        c->local_port = host_port_pick(c->mux, port);
        c->state = CONN_CONNECTING;
        c->owe = OWE_REQUEST;
        vsock_conn_hash_add(c);
        vsock_conn_schedule(c);
}

/* The guest accepted: tell the client which host port it got, then bridge. */
static void host_established(struct vsock_conn *c)
{
        char ok[24];
        int len = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);
        /* Nothing was sent on this socket yet: its buffer takes the line whole or the client is gone. */
        if (send(c->fd, ok, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) != len) {
                vsock_conn_reset(c);
                return;
        }
        c->state = CONN_ESTABLISHED;
}

/* ---- host socket events ------------------------------------------------------------ */

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
                        vsock_conn_flush(c);
                if (c->state != CONN_FREE)
                        vsock_conn_schedule(c);
                if (vsock_mux_rx_pending(m))
                        m->host.rx_wake(m->host.opaque);
        }
        m->host.unlock(m->host.opaque);
}

static int conn_watch(struct vsock_conn *c, cap_error_t *err)
{
        return c->mux->host.watch(c->mux->host.opaque, c->fd, conn_event, c, err);
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
                struct vsock_conn *c = m->n_host_conns < VSOCK_HOST_CONN_MAX ? vsock_conn_alloc(m, fd, CONN_LINE) : NULL;
                if (!c) {
                        close(fd);
                        continue;
                }
                c->from_host = true;
                m->n_host_conns++;
                cleanup_error cap_error_t err = NULL;
                if (conn_watch(c, &err) < 0)
                        vsock_conn_free(c);
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
        struct vsock_conn *c = fd >= 0 ? vsock_conn_alloc(m, fd, CONN_ESTABLISHED) : NULL;
        cleanup_error cap_error_t err = NULL;
        if (c && conn_watch(c, &err) < 0) {
                vsock_conn_free(c);
                c = NULL;
        }
        if (!c) {
                vsock_rst_queue(m, pkt->dst_port, pkt->src_port, pkt->type);
                return;
        }
        c->local_port = pkt->dst_port;
        c->peer_port = pkt->src_port;
        c->peer_buf_alloc = pkt->buf_alloc;
        c->peer_fwd_cnt = pkt->fwd_cnt;
        c->owe = OWE_RESPONSE;
        vsock_conn_hash_add(c);
        vsock_conn_schedule(c);
}

void vsock_mux_tx(struct vsock_mux *m, const struct vsock_pkt *pkt, const struct iovec *payload, unsigned int n)
{
        struct vsock_conn *c = vsock_conn_find(m, pkt->dst_port, pkt->src_port);
        if (pkt->op == VIRTIO_VSOCK_OP_REQUEST) {
                if (c) {
                        vsock_conn_reset(c); /* a second REQUEST for a live connection: both are void */
                        return;
                }
                guest_connect(m, pkt);
                return;
        }
        if (!c) {
                if (pkt->op != VIRTIO_VSOCK_OP_RST)
                        vsock_rst_queue(m, pkt->dst_port, pkt->src_port, pkt->type);
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
                        vsock_conn_drain(c);
                else
                        vsock_conn_free(c);
                return;
        case VIRTIO_VSOCK_OP_RESPONSE:
                if (c->state == CONN_CONNECTING && !(c->owe & OWE_REQUEST))
                        host_established(c);
                else
                        vsock_conn_reset(c);
                break;
        case VIRTIO_VSOCK_OP_SHUTDOWN:
                if (established)
                        vsock_conn_guest_shutdown(c, pkt->flags);
                else
                        vsock_conn_reset(c);
                break;
        case VIRTIO_VSOCK_OP_RW:
                if (established)
                        vsock_conn_write(c, payload, n, pkt->len);
                else
                        vsock_conn_reset(c);
                break;
        case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
                if (established)
                        c->owe |= OWE_CREDIT;
                else
                        vsock_conn_reset(c);
                break;
        default: /* CREDIT_UPDATE: the numbers above were all */
                if (!established)
                        vsock_conn_reset(c);
                break;
        }
        if (c->state != CONN_FREE)
                vsock_conn_schedule(c);
}

void vsock_mux_tx_invalid(struct vsock_mux *m, const struct vsock_pkt *pkt)
{
        struct vsock_conn *c = vsock_conn_find(m, pkt->dst_port, pkt->src_port);
        if (c)
                vsock_conn_reset(c);
        else if (pkt->op != VIRTIO_VSOCK_OP_RST)
                vsock_rst_queue(m, pkt->dst_port, pkt->src_port, pkt->type);
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
                vsock_conn_unschedule(c);
                int got = vsock_conn_rx(c, pkt, buf, n, room);
                if (c->state != CONN_FREE)
                        vsock_conn_schedule(c);
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
                        vsock_conn_flush(c);
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
                        vsock_conn_drain(c);
                else if (c->state != CONN_DRAINING)
                        vsock_conn_free(c);
        }
        m->rst_head = m->rst_len = 0;
}

void vsock_mux_destroy(struct vsock_mux *m)
{
        if (!m)
                return;
        for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++)
                vsock_conn_free(&m->conns[i]);
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
