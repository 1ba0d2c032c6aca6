#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "vmm/evloop.h"

struct waiter {
        int fd;
        atomic_int hits;
        int done_fd; /* eventfd the test thread blocks on */
};

static void on_ready(void *opaque, uint32_t events)
{
        struct waiter *w = opaque;
        uint64_t v;
        if ((events & EPOLLIN) && read(w->fd, &v, sizeof(v)) == sizeof(v)) {
                atomic_fetch_add(&w->hits, 1);
                uint64_t one = 1;
                if (write(w->done_fd, &one, sizeof(one)) < 0)
                        return;
        }
}

TEST(dispatch_and_stop)
{
        struct evloop loop;
        cleanup_error cap_error_t err = NULL;
        CHECK(evloop_init(&loop, &err) == 0);
        struct waiter w = { .fd = eventfd(0, EFD_NONBLOCK), .done_fd = eventfd(0, 0) };
        CHECK(w.fd >= 0 && w.done_fd >= 0);
        CHECK(evloop_add(&loop, w.fd, EPOLLIN, on_ready, &w, &err) == 0);
        CHECK(evloop_start(&loop, &err) == 0);
        uint64_t one = 1, got;
        CHECK(write(w.fd, &one, sizeof(one)) == sizeof(one));
        CHECK(read(w.done_fd, &got, sizeof(got)) == sizeof(got));
        CHECK(atomic_load(&w.hits) == 1);
        CHECK(evloop_del(&loop, w.fd) == 0);
        CHECK(evloop_del(&loop, w.fd) == -1);
        /* After del, events on the fd are not dispatched. */
        CHECK(write(w.fd, &one, sizeof(one)) == sizeof(one));
        evloop_stop(&loop);
        CHECK(!loop.running);
        CHECK(atomic_load(&w.hits) == 1);
        evloop_destroy(&loop);
        close(w.fd);
        close(w.done_fd);
}

TEST(add_bad_fd_fails)
{
        struct evloop loop;
        cleanup_error cap_error_t err = NULL;
        CHECK(evloop_init(&loop, &err) == 0);
        CHECK(evloop_add(&loop, -1, EPOLLIN, on_ready, NULL, &err) == -1);
        CHECK(err && strstr(err->msg, "fd -1"));
        evloop_destroy(&loop);
}

TEST(stop_without_events)
{
        struct evloop loop;
        cleanup_error cap_error_t err = NULL;
        CHECK(evloop_init(&loop, &err) == 0);
        CHECK(evloop_start(&loop, &err) == 0);
        evloop_stop(&loop);
        evloop_stop(&loop);
        evloop_destroy(&loop);
}
