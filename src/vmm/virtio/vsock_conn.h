/* Inside the vsock muxer: the state both of its files share. vsock_conn.c is one connection
 * (the table it is found in, its turn on the rx list, its bytes and credit both ways);
 * vsock_mux.c is the host's sockets (the VM's listening socket, its clients' CONNECT lines,
 * the guest's connects), the guest's packets sorted to their connection, and the life cycle. */
#ifndef CAPSULE_VMM_VIRTIO_VSOCK_CONN_H
#define CAPSULE_VMM_VIRTIO_VSOCK_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/virtio/vsock_mux.h"

#define VSOCK_HASH_SIZE 512

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
        struct vsock_conn *hash[VSOCK_HASH_SIZE];
        struct vsock_conn *rx_head, *rx_tail; /* connections with something for the guest */
        struct vsock_rst rst[VSOCK_RST_QUEUE];
        unsigned int rst_head, rst_len;
        uint32_t next_host_port;
};

/* A free slot for fd in state; NULL when all VSOCK_CONN_MAX are taken. */
struct vsock_conn *vsock_conn_alloc(struct vsock_mux *m, int fd, enum conn_state state);
/* Forget c without a word to the guest (closes its socket). */
void vsock_conn_free(struct vsock_conn *c);
/* Close c and send the guest an RST, if the guest knows the connection. */
void vsock_conn_reset(struct vsock_conn *c);
/* Queue an RST for the guest; dropped when VSOCK_RST_QUEUE are waiting. */
void vsock_rst_queue(struct vsock_mux *m, uint32_t local_port, uint32_t peer_port, uint16_t type);

struct vsock_conn *vsock_conn_find(struct vsock_mux *m, uint32_t local_port, uint32_t peer_port);
/* Make c findable; for a CONNECTING or ESTABLISHED connection. */
void vsock_conn_hash_add(struct vsock_conn *c);
/* Put c on the rx list if it has something for the guest; take it off. */
void vsock_conn_schedule(struct vsock_conn *c);
void vsock_conn_unschedule(struct vsock_conn *c);

/* Guest bytes for the host peer (an ESTABLISHED c): written now or kept in c's ring. */
void vsock_conn_write(struct vsock_conn *c, const struct iovec *payload, unsigned int n, uint32_t len);
/* Write what c's ring holds while the host socket takes it. */
void vsock_conn_flush(struct vsock_conn *c);
/* The guest's SHUTDOWN flags for an ESTABLISHED c. */
void vsock_conn_guest_shutdown(struct vsock_conn *c, uint32_t flags);
/* The guest is done with c: its ring still reaches the host peer, then c closes. */
void vsock_conn_drain(struct vsock_conn *c);
/* c's next packet for the guest (vsock_mux_rx's arguments). 1: a packet; 0: nothing (c may be gone). */
int vsock_conn_rx(struct vsock_conn *c, struct vsock_pkt *pkt, struct iovec *buf, unsigned int n, uint32_t room);

#endif
