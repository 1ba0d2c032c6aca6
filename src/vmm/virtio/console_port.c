/* The host end of virtio-console's ports. hvc0's is the VM's console (stdin in, the
 * bounded output ring out, vmm/console.h). A named port's is a Unix socket capsule
 * listens on, created at start and removed at exit: one client at a time, everything
 * non-blocking, and the loop watches only what the port can use right now (input when
 * the guest has somewhere to put it, room when a guest write is waiting), which is
 * the back-pressure both ways. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/console.h"

static void port_client_event(void *opaque, uint32_t events)
{
        struct console_port *p = opaque;
        virtio_dev_lock(&p->con->dev);
        /* A hang-up with nothing left to pass on: the client is gone. With bytes left, they go
         * first (the read of its EOF ends it), and the hang-up, which stays raised, is not
         * watched meanwhile. */
        int unread = 0;
        if (p->fd >= 0 && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                if (p->in_off >= p->in_len && (ioctl(p->fd, FIONREAD, &unread) < 0 || unread == 0)) {
                        console_port_disconnect(p);
                        console_port_host_changed(p, false);
                } else {
                        p->hup_seen = true;
                }
        }
        console_port_pump(p);
        virtio_dev_unlock(&p->con->dev);
}

static void port_listen_event(void *opaque, uint32_t events)
{
        struct console_port *p = opaque;
        (void)events;
        virtio_dev_lock(&p->con->dev);
        if (p->fd < 0) {
                int fd = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0) {
                        p->fd = fd;
                        p->hup_seen = false;
                        log_debug("%s: console-port[%d]: a client connected to %s", p->con->dev.name, p->index,
                                  p->socket_path);
                        console_port_host_changed(p, true);
                }
        }
        console_port_pump(p);
        virtio_dev_unlock(&p->con->dev);
}

int console_port_listen(struct console_port *p, cap_error_t *err)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (strlen(p->socket_path) >= sizeof(addr.sun_path))
                return cap_fail(err, 0, "console-port[%d]: socket %s: the path is longer than %zu bytes", p->index,
                                p->socket_path, sizeof(addr.sun_path) - 1);
        strcpy(addr.sun_path, p->socket_path);
        p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (p->listen_fd < 0)
                return cap_fail(err, errno, "console-port[%d]: socket", p->index);
        if (bind(p->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
                return cap_fail(err, errno, "console-port[%d]: socket %s: bind", p->index, p->socket_path);
        p->socket_created = true;
        if (listen(p->listen_fd, 1) < 0)
                return cap_fail(err, errno, "console-port[%d]: socket %s: listen", p->index, p->socket_path);
        return 0;
}

int console_port_host_read(struct console_port *p)
{
        struct console *con = p->con;
        bool hvc = p->index < 0;
        if (hvc ? !con->in.usable : p->fd < 0)
                return 0;
        /* stdin is shared with whoever started capsule and stays blocking: read only what is there. */
        struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
        if (hvc && poll(&pfd, 1, 0) <= 0)
                return 0;
        ssize_t n;
        do
                n = read(hvc ? STDIN_FILENO : p->fd, p->in, sizeof(p->in));
        while (n < 0 && errno == EINTR);
        if (n > 0) {
                p->in_off = 0;
                p->in_len = (size_t)n;
                return 1;
        }
        if (n < 0 && errno == EAGAIN)
                return 0;
        if (hvc) {
                /* stdin ended: a hung-up stdin would wake the loop forever. */
                con->in.usable = false;
                console_in_poll(&con->in, false);
                return 0;
        }
        return -1;
}

int console_port_host_write(struct console_port *p)
{
        const struct virtq_chain *c = p->tx;
        if (p->index < 0) {
                for (unsigned int i = 0; i < c->n_out; i++)
                        console_out_put(&p->con->out, c->iov[i].iov_base, c->iov[i].iov_len);
                return 1;
        }
        if (p->fd < 0)
                return -1;
        /* The chain's readable buffers from tx_off on. */
        struct iovec iov[VIRTQ_MAX_SIZE];
        unsigned int n_iov = 0;
        size_t skip = p->tx_off;
        for (unsigned int i = 0; i < c->n_out; i++) {
                if (skip >= c->iov[i].iov_len) {
                        skip -= c->iov[i].iov_len;
                        continue;
                }
                iov[n_iov].iov_base = (uint8_t *)c->iov[i].iov_base + skip;
                iov[n_iov++].iov_len = c->iov[i].iov_len - skip;
                skip = 0;
        }
        if (!n_iov)
                return 1;
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n_iov };
        ssize_t n;
        do
                n = sendmsg(p->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EAGAIN ? 0 : -1;
        p->tx_off += (size_t)n;
        return p->tx_off >= c->out_len ? 1 : 0;
}

static void port_unpoll(struct console_port *p)
{
        if (p->polled_fd >= 0 && p->con->loop->epfd >= 0)
                evloop_del(p->con->loop, p->polled_fd);
        p->polled_fd = -1;
        p->polled_events = 0;
}

void console_port_disconnect(struct console_port *p)
{
        if (p->fd < 0)
                return;
        port_unpoll(p);
        close(p->fd);
        p->fd = -1;
        log_debug("%s: console-port[%d]: the client of %s went away", p->con->dev.name, p->index, p->socket_path);
}

void console_port_poll(struct console_port *p, bool want_in, bool want_out)
{
        struct console *con = p->con;
        struct evloop *loop = con->loop;
        if (p->index < 0) {
                console_in_poll(&con->in, want_in);
                return;
        }
        /* A client is watched for its hang-up even while nothing moves: the driver hears of it. */
        int fd = p->fd >= 0 ? p->fd : p->listen_fd;
        uint32_t events = EPOLLIN;
        if (p->fd >= 0)
                events = (want_in ? EPOLLIN : 0) | (want_out ? EPOLLOUT : 0) | (p->hup_seen ? 0 : EPOLLRDHUP);
        if (fd == p->polled_fd && events == p->polled_events)
                return;
        port_unpoll(p);
        if (fd < 0 || !events || loop->epfd < 0)
                return;
        cap_error_t err = NULL;
        if (evloop_add(loop, fd, events, fd == p->fd ? port_client_event : port_listen_event, p, &err) < 0) {
                /* The fds are fine (they were polled before): only memory or a kernel limit fails here. */
                log_warning("%s: console-port[%d]: %s", con->dev.name, p->index, err->msg);
                cap_error_free(&err);
                return;
        }
        p->polled_fd = fd;
        p->polled_events = events;
}

void console_port_close(struct console_port *p)
{
        free(p->tx);
        p->tx = NULL;
        if (p->index < 0)
                return;
        port_unpoll(p);
        if (p->fd >= 0)
                close(p->fd);
        if (p->listen_fd >= 0)
                close(p->listen_fd);
        p->fd = p->listen_fd = -1;
        if (p->socket_created)
                unlink(p->socket_path);
        p->socket_created = false;
}
