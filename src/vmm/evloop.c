#include "vmm/evloop.h"

#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/util.h"

struct evloop_handler {
        struct evloop_handler *next;
        uint64_t id;
        int fd;
        evloop_fn fn;
        void *opaque;
};

#define STOP_ID 0 /* handler ids start at 1 */

int evloop_init(struct evloop *loop, cap_error_t *err)
{
        memset(loop, 0, sizeof(*loop));
        loop->epfd = loop->stop_fd = -1;
        loop->next_id = STOP_ID + 1;
        pthread_mutex_init(&loop->lock, NULL);
        loop->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (loop->epfd < 0)
                return cap_fail(err, errno, "event loop: epoll_create1");
        loop->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (loop->stop_fd < 0)
                return cap_fail(err, errno, "event loop: eventfd");
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = STOP_ID };
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->stop_fd, &ev) < 0)
                return cap_fail(err, errno, "event loop: epoll_ctl");
        return 0;
}

int evloop_add(struct evloop *loop, int fd, uint32_t events, evloop_fn fn, void *opaque, cap_error_t *err)
{
        struct evloop_handler *h = xmalloc0(sizeof(*h));
        h->fd = fd;
        h->fn = fn;
        h->opaque = opaque;
        pthread_mutex_lock(&loop->lock);
        h->id = loop->next_id++;
        struct epoll_event ev = { .events = events, .data.u64 = h->id };
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                int e = errno;
                pthread_mutex_unlock(&loop->lock);
                free(h);
                return cap_fail(err, e, "event loop: cannot watch fd %d", fd);
        }
        h->next = loop->handlers;
        loop->handlers = h;
        pthread_mutex_unlock(&loop->lock);
        return 0;
}

int evloop_mod(struct evloop *loop, int fd, uint32_t events, cap_error_t *err)
{
        pthread_mutex_lock(&loop->lock);
        for (struct evloop_handler *h = loop->handlers; h; h = h->next) {
                if (h->fd != fd)
                        continue;
                struct epoll_event ev = { .events = events, .data.u64 = h->id };
                int r = epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev);
                int e = errno;
                pthread_mutex_unlock(&loop->lock);
                return r < 0 ? cap_fail(err, e, "event loop: cannot change the events of fd %d", fd) : 0;
        }
        pthread_mutex_unlock(&loop->lock);
        return cap_fail(err, ENOENT, "event loop: fd %d is not watched", fd);
}

int evloop_del(struct evloop *loop, int fd)
{
        pthread_mutex_lock(&loop->lock);
        for (struct evloop_handler **pp = &loop->handlers; *pp; pp = &(*pp)->next) {
                struct evloop_handler *h = *pp;
                if (h->fd != fd)
                        continue;
                *pp = h->next;
                epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
                pthread_mutex_unlock(&loop->lock);
                free(h);
                return 0;
        }
        pthread_mutex_unlock(&loop->lock);
        errno = ENOENT;
        return -1;
}

/* Look the id up under the lock: an event fetched before evloop_del() ran finds nothing. */
static bool evloop_lookup(struct evloop *loop, uint64_t id, evloop_fn *fn, void **opaque)
{
        bool found = false;
        pthread_mutex_lock(&loop->lock);
        for (struct evloop_handler *h = loop->handlers; h; h = h->next) {
                if (h->id == id) {
                        *fn = h->fn;
                        *opaque = h->opaque;
                        found = true;
                        break;
                }
        }
        pthread_mutex_unlock(&loop->lock);
        return found;
}

static void *evloop_thread(void *arg)
{
        struct evloop *loop = arg;
        struct epoll_event events[16];
        /* perf and top tell it from the vCPUs ("vcpu0"...) by name. */
        pthread_setname_np(pthread_self(), "evloop");
        for (;;) {
                int n = epoll_wait(loop->epfd, events, (int)ARRAY_SIZE(events), -1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return NULL;
                for (int i = 0; i < n; i++) {
                        if (events[i].data.u64 == STOP_ID)
                                return NULL;
                        evloop_fn fn;
                        void *opaque;
                        if (evloop_lookup(loop, events[i].data.u64, &fn, &opaque))
                                fn(opaque, events[i].events);
                }
        }
}

int evloop_start(struct evloop *loop, cap_error_t *err)
{
        int r = pthread_create(&loop->thread, NULL, evloop_thread, loop);
        if (r != 0)
                return cap_fail(err, r, "event loop: pthread_create");
        loop->running = true;
        return 0;
}

void evloop_stop(struct evloop *loop)
{
        if (!loop->running)
                return;
        uint64_t one = 1;
        while (write(loop->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
                ;
        pthread_join(loop->thread, NULL);
        loop->running = false;
}

void evloop_destroy(struct evloop *loop)
{
        evloop_stop(loop);
        while (loop->handlers) {
                struct evloop_handler *h = loop->handlers;
                loop->handlers = h->next;
                free(h);
        }
        if (loop->epfd >= 0)
                close(loop->epfd);
        if (loop->stop_fd >= 0)
                close(loop->stop_fd);
        loop->epfd = loop->stop_fd = -1;
        pthread_mutex_destroy(&loop->lock);
}
