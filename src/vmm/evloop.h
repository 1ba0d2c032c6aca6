/* The VMM's event loop: one epoll thread for device I/O (stdin for the serial
 * console, later virtio queues and sockets). No busy waiting anywhere. */
#ifndef CAPSULE_VMM_EVLOOP_H
#define CAPSULE_VMM_EVLOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

typedef void (*evloop_fn)(void *opaque, uint32_t events);

struct evloop_handler;

struct evloop {
        int epfd;
        int stop_fd; /* eventfd that wakes the loop to stop */
        pthread_t thread;
        bool running;
        pthread_mutex_t lock; /* guards handlers: add/del may run on any thread */
        struct evloop_handler *handlers;
        uint64_t next_id; /* epoll carries ids, never pointers, so a deleted handler is never called */
};

int evloop_init(struct evloop *loop, cap_error_t *err);
/* events: EPOLLIN etc. The handler runs on the loop thread. */
int evloop_add(struct evloop *loop, int fd, uint32_t events, evloop_fn fn, void *opaque, cap_error_t *err);
/* Change the events watched on fd (0: only errors and hang-ups). */
int evloop_mod(struct evloop *loop, int fd, uint32_t events, cap_error_t *err);
/* After it returns, the handler is not called again (unless it is running right now on the loop thread). */
int evloop_del(struct evloop *loop, int fd);
int evloop_start(struct evloop *loop, cap_error_t *err);
void evloop_stop(struct evloop *loop); /* wakes and joins the thread */
void evloop_destroy(struct evloop *loop);

#endif
