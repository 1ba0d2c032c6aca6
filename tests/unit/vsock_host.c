/* The vsock muxer's fake host (vsock_host.h). */
#include "vsock_host.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/util.h"

struct vsock_watch vsock_watches[VSOCK_CONN_MAX + 8];
int vsock_n_watches, vsock_wakes;

static int fake_watch(void *opaque, int fd, evloop_fn fn, void *arg, cap_error_t *err)
{
        (void)opaque;
        if (vsock_n_watches == (int)ARRAY_SIZE(vsock_watches))
                return cap_fail(err, ENOSPC, "fake watch: full");
        vsock_watches[vsock_n_watches++] = (struct vsock_watch){ fd, fn, arg };
        return 0;
}

static void fake_unwatch(void *opaque, int fd)
{
        (void)opaque;
        for (int i = 0; i < vsock_n_watches; i++)
                if (vsock_watches[i].fd == fd)
                        vsock_watches[i] = vsock_watches[--vsock_n_watches];
}

static void fake_nop(void *opaque)
{
        (void)opaque;
}

static void fake_wake(void *opaque)
{
        (void)opaque;
        vsock_wakes++;
}

const struct vsock_mux_host vsock_fake_host = {
        .watch = fake_watch, .unwatch = fake_unwatch, .lock = fake_nop, .unlock = fake_nop, .rx_wake = fake_wake,
};

void vsock_fake_reset(void)
{
        vsock_n_watches = vsock_wakes = 0;
}

/* On a copy: handlers add and remove watches. */
void vsock_fake_pump(void)
{
        struct vsock_watch copy[ARRAY_SIZE(vsock_watches)];
        int n = vsock_n_watches;
        memcpy(copy, vsock_watches, sizeof(copy));
        for (int i = 0; i < n; i++)
                copy[i].fn(copy[i].arg, EPOLLIN | EPOLLOUT);
}
