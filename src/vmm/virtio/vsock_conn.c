/* One connection of the vsock muxer (vsock_conn.h): where it is found, when it has a turn
 * on the rx list, and its bytes both ways within the credit each side gave. */
#include "vmm/virtio/vsock_conn.h"

#include <errno.h>
#include <linux/virtio_vsock.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

uint32_t vsock_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t sent)
{
        uint32_t in_flight = sent - fwd_cnt;
        return in_flight > buf_alloc ? 0 : buf_alloc - in_flight;
}

/* ---- the connection table ---------------------------------------------------------- */

static unsigned int conn_hash(uint32_t local_port, uint32_t peer_port)
{
        return (local_port * 2654435761u ^ peer_port) % VSOCK_HASH_SIZE;
}

struct vsock_conn *vsock_conn_find(struct vsock_mux *m, uint32_t local_port, uint32_t peer_port)
{
        for (struct vsock_conn *c = m->hash[conn_hash(local_port, peer_port)]; c; c = c->hash_next)
                if (c->local_port == local_port && c->peer_port == peer_port)
                        return c;
        return NULL;
}

void vsock_conn_hash_add(struct vsock_conn *c)
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

void vsock_conn_unschedule(struct vsock_conn *c)
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
void vsock_conn_schedule(struct vsock_conn *c)
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

struct vsock_conn *vsock_conn_alloc(struct vsock_mux *m, int fd, enum conn_state state)
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
void vsock_conn_free(struct vsock_conn *c)
{
        struct vsock_mux *m = c->mux;
        if (c->state == CONN_FREE)
                return;
        vsock_conn_unschedule(c);
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

void vsock_rst_queue(struct vsock_mux *m, uint32_t local_port, uint32_t peer_port, uint16_t type)
{
        if (m->rst_len == VSOCK_RST_QUEUE)
                return; /* the guest gives no rx buffers: its connect times out instead */
        m->rst[(m->rst_head + m->rst_len++) % VSOCK_RST_QUEUE] =
                (struct vsock_rst){ .local_port = local_port, .peer_port = peer_port, .type = type };
}

/* Close c and tell the guest, if it knows the connection. */
void vsock_conn_reset(struct vsock_conn *c)
{
        bool guest_knows = c->state == CONN_ESTABLISHED || (c->state == CONN_CONNECTING && !(c->owe & OWE_REQUEST));
        if (guest_knows)
                vsock_rst_queue(c->mux, c->local_port, c->peer_port, VIRTIO_VSOCK_TYPE_STREAM);
        vsock_conn_free(c);
}

/* ---- guest → host bytes ---------------------------------------------------------- */

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
void vsock_conn_flush(struct vsock_conn *c)
{
        while (c->buf_len > 0 && c->writable) {
                uint32_t first = VSOCK_BUF_ALLOC - c->buf_head;
                if (first > c->buf_len)
                        first = c->buf_len;
                struct iovec v[2] = { { c->buf + c->buf_head, first }, { c->buf, c->buf_len - first } };
                ssize_t w = conn_send(c, v, c->buf_len > first ? 2 : 1);
                if (w < 0) {
                        vsock_conn_reset(c);
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
                vsock_conn_free(c);
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
void vsock_conn_write(struct vsock_conn *c, const struct iovec *payload, unsigned int n, uint32_t len)
{
        if (c->guest_no_send || c->rx_cnt - c->fwd_cnt + (uint64_t)len > VSOCK_BUF_ALLOC) {
                vsock_conn_reset(c); /* data after its own SHUTDOWN, or more than the credit we gave */
                return;
        }
        c->rx_cnt += len;
        uint32_t done = 0;
        if (c->buf_len == 0 && c->writable && len > 0) {
                /* sendmsg() does not write to the iovecs; payload has at most VIRTQ_MAX_SIZE (IOV_MAX) */
                ssize_t w = conn_send(c, (struct iovec *)payload, n);
                if (w < 0) {
                        vsock_conn_reset(c);
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
void vsock_conn_drain(struct vsock_conn *c)
{
        vsock_conn_unschedule(c);
        conn_hash_del(c);
        c->state = CONN_DRAINING;
        c->owe = 0;
        vsock_conn_flush(c);
}

void vsock_conn_guest_shutdown(struct vsock_conn *c, uint32_t flags)
{
        if ((flags & VIRTIO_VSOCK_SHUTDOWN_RCV) && !c->guest_no_recv) {
                c->guest_no_recv = true;
                shutdown(c->fd, SHUT_RD); /* the host's further writes fail with EPIPE */
        }
        if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
                c->guest_no_send = true;
        if (!c->guest_no_recv || !c->guest_no_send) {
                vsock_conn_flush(c); /* a SEND shutdown reaches the host once the ring is empty */
                return;
        }
        /* Closed both ways: the guest waits for our RST (as Linux's own transport answers). */
        vsock_rst_queue(c->mux, c->local_port, c->peer_port, VIRTIO_VSOCK_TYPE_STREAM);
        vsock_conn_drain(c);
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
                vsock_conn_reset(c);
        }
        return 0;
}

int vsock_conn_rx(struct vsock_conn *c, struct vsock_pkt *pkt, struct iovec *buf, unsigned int n, uint32_t room)
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
