/* The host side of virtio-vsock without vhost (vsock_mux.c, vsock_conn.c), as Firecracker's hybrid vsock:
 * guest stream connections bridged to host Unix sockets.
 *   host → guest: a client connects to the VM's socket and writes "CONNECT <port>\n"; once the
 *                 guest accepts, it reads "OK <hostport>\n" and then the stream;
 *   guest → host: a guest connect to CID 2 port P is a connect to the Unix socket "<socket>_<P>".
 * Knows nothing of virtqueues: the device (vsock.c) hands it each parsed tx packet and asks it
 * for the next rx packet when the guest gave a buffer. Host sockets are watched edge-triggered
 * through the device's callbacks; everything is bounded (connections, bytes buffered per
 * connection, queued resets), so a guest cannot make the VMM allocate without limit. */
#ifndef CAPSULE_VMM_VIRTIO_VSOCK_MUX_H
#define CAPSULE_VMM_VIRTIO_VSOCK_MUX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/error.h"
#include "vmm/evloop.h"

#define VSOCK_HOST_CID 2
#define VSOCK_HDR_LEN 44              /* sizeof(struct virtio_vsock_hdr) */
#define VSOCK_MAX_PAYLOAD (64 * 1024) /* the most a packet carries (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE) */
#define VSOCK_CONN_MAX 256            /* connections at once, both directions together */
/* Of those, the most that host clients hold (connected to the VM's socket, whether or not
 * they said CONNECT yet): clients that say nothing cannot take the guest's share. */
#define VSOCK_HOST_CONN_MAX (VSOCK_CONN_MAX / 2)
/* Our receive credit: guest bytes buffered for a slow host peer, allocated only while some are
 * waiting. With VSOCK_CONN_MAX, at most 64 MiB however the guest behaves. */
#define VSOCK_BUF_ALLOC (256 * 1024)
#define VSOCK_RST_QUEUE 256           /* resets waiting for an rx buffer; more are dropped */
#define VSOCK_LINE_MAX 32             /* "CONNECT 4294967295\n" fits */

/* A packet header in host byte order: a tx header decoded once from its copy out of guest
 * memory (vsock_pkt_parse), or an rx header the mux fills. */
struct vsock_pkt {
        uint64_t src_cid, dst_cid;
        uint32_t src_port, dst_port;
        uint32_t len;
        uint16_t type, op;
        uint32_t flags, buf_alloc, fwd_cnt;
};

/* Bytes the peer can still take: buf_alloc - (sent - fwd_cnt) in wrapping 32-bit counters,
 * 0 when the peer's numbers claim more in flight than its buffer (a lying guest). */
uint32_t vsock_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t sent);

/* What the mux needs from its device. lock/unlock wrap every event handler; rx_wake (called
 * with the lock held) says there may be packets for the guest. watch registers fd for
 * EPOLLIN|EPOLLOUT|EPOLLRDHUP, edge-triggered (the mux reads and writes until EAGAIN). */
struct vsock_mux_host {
        int (*watch)(void *opaque, int fd, evloop_fn fn, void *arg, cap_error_t *err);
        void (*unwatch)(void *opaque, int fd);
        void (*lock)(void *opaque);
        void (*unlock)(void *opaque);
        void (*rx_wake)(void *opaque);
        void *opaque;
};

struct vsock_mux;

/* Listen on socket_path (which must not exist). Errors name "vsock: socket PATH". */
int vsock_mux_create(struct vsock_mux **out, const char *socket_path, uint64_t guest_cid,
                     const struct vsock_mux_host *host, cap_error_t *err);
/* Close every socket and remove the listening socket's file. */
void vsock_mux_destroy(struct vsock_mux *m);
/* The VM is stopping: give host peers up to timeout_ms to take the bytes the guest sent
 * them that are still buffered here (the only wait in the mux; the VM's vCPUs are gone). */
void vsock_mux_linger(struct vsock_mux *m, int timeout_ms);
/* The guest went away (device reset; Linux resets every virtio device as it powers off):
 * close every connection, keep listening. A connection still holding bytes the guest sent
 * closes once its host peer took them, as after the guest's own close. */
void vsock_mux_reset(struct vsock_mux *m);

/* A valid tx packet; payload: its pkt->len bytes (in guest memory, read once each). The
 * device then serves rx: replies are queued, not sent (rx_wake is for socket events). */
void vsock_mux_tx(struct vsock_mux *m, const struct vsock_pkt *pkt, const struct iovec *payload, unsigned int n);
/* A packet vsock_pkt_parse() found malformed: reset its connection, answer RST. */
void vsock_mux_tx_invalid(struct vsock_mux *m, const struct vsock_pkt *pkt);

/* Whether vsock_mux_rx() may have something (cheap; it may still find nothing). */
bool vsock_mux_rx_pending(const struct vsock_mux *m);
/* Fill the next packet for the guest: its header in *pkt and, for RW, pkt->len bytes read
 * from a host socket straight into buf (n entries holding room bytes, room > 0; the mux may
 * shorten the entries to the guest's credit). 1: a packet; 0: nothing. */
int vsock_mux_rx(struct vsock_mux *m, struct vsock_pkt *pkt, struct iovec *buf, unsigned int n, uint32_t room);

/* Connections open now (for tests). */
unsigned int vsock_mux_conn_count(const struct vsock_mux *m);

#endif
