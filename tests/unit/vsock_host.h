/* A vsock muxer's host (struct vsock_mux_host) without an event loop, for the vsock unit
 * tests and fuzz target: the sockets the muxer watches are kept in a table, and
 * vsock_fake_pump() calls each one's handler once, as epoll would report them readable and
 * writable. One thread: no locking; rx_wake only counts. */
#ifndef CAPSULE_TESTS_UNIT_VSOCK_HOST_H
#define CAPSULE_TESTS_UNIT_VSOCK_HOST_H

#include "vmm/evloop.h"
#include "vmm/virtio/vsock_mux.h"

struct vsock_watch {
        int fd;
        evloop_fn fn;
        void *arg;
};

extern const struct vsock_mux_host vsock_fake_host;
extern struct vsock_watch vsock_watches[VSOCK_CONN_MAX + 8];
extern int vsock_n_watches, vsock_wakes;

/* Forget every watch and wake (for a fresh muxer). */
void vsock_fake_reset(void);
/* Call every watched socket's handler once with EPOLLIN | EPOLLOUT. */
void vsock_fake_pump(void);

#endif
