/* The control channel's socket: a listening Unix socket, its clients and the hard-stop timer,
 * all served on the event loop and never blocking it (non-blocking fds, one read per wake-up,
 * a bounded line buffer per client). Requests go to api_request() (api_cmd.c).
 * A client that does not read its answers is dropped rather than buffered for: an answer that
 * does not fit in the socket's send buffer closes the connection. */
#include "vmm/api.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define API_BACKLOG 16

struct api_conn {
        struct api_conn *next;
        struct api *api;
        int fd;
        bool watched;  /* on the event loop: not while a pause answer is due */
        bool waiting;  /* a pause answer is due */
        unsigned int gen; /* api.resume_gen when it began to wait */
        struct api_lines in;
};

struct api {
        struct api_vm vm;
        struct evloop *loop;
        char *path;
        dev_t dev;
        ino_t ino;
        int listen_fd, timer_fd;
        bool listen_watched, timer_watched, pause_watched;
        bool stop_armed;
        unsigned int resume_gen; /* counts resumes: a pause that waited across one failed */
        unsigned int stop_timeout_s;
        struct api_conn *conns;
        int n_conns;
};

static void api_conn_ready(void *opaque, uint32_t events);

char *api_lines_space(struct api_lines *l, size_t *room)
{
        if (l->start) {
                memmove(l->buf, l->buf + l->start, l->len - l->start);
                l->len -= l->start;
                l->start = 0;
        }
        *room = sizeof(l->buf) - l->len;
        return l->buf + l->len;
}

void api_lines_added(struct api_lines *l, size_t n)
{
        l->len += n;
}

bool api_lines_next(struct api_lines *l, const char **line, size_t *len)
{
        char *nl = memchr(l->buf + l->start, '\n', l->len - l->start);
        if (!nl)
                return false;
        *line = l->buf + l->start;
        *len = (size_t)(nl - *line);
        l->start += *len + 1;
        return true;
}

bool api_lines_overlong(const struct api_lines *l)
{
        return l->len - l->start >= API_LINE_MAX;
}

static void api_conn_close(struct api_conn *c)
{
        struct api *a = c->api;
        if (c->watched)
                evloop_del(a->loop, c->fd);
        close(c->fd);
        for (struct api_conn **pp = &a->conns; *pp; pp = &(*pp)->next) {
                if (*pp == c) {
                        *pp = c->next;
                        break;
                }
        }
        a->n_conns--;
        free(c);
}

/* One answer line; false when the connection had to be closed. */
static bool api_send(struct api_conn *c, char *text)
{
        cleanup_free char *line = xasprintf("%s\n", text);
        free(text);
        size_t n = strlen(line);
        ssize_t w = send(c->fd, line, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w != (ssize_t)n) {
                api_conn_close(c);
                return false;
        }
        return true;
}

static void api_apply(struct api *a, const struct api_reply *r)
{
        if (r->stop_timeout_s >= 0 && !a->stop_armed) {
                struct itimerspec t = { .it_value = { .tv_sec = r->stop_timeout_s, .tv_nsec = r->stop_timeout_s ? 0 : 1 } };
                if (timerfd_settime(a->timer_fd, 0, &t, NULL) == 0) {
                        a->stop_armed = true;
                        a->stop_timeout_s = (unsigned int)r->stop_timeout_s;
                } else {
                        log_warning("api-socket: cannot arm the stop timer: %s", strerror(errno));
                }
        }
        if (r->resumed)
                a->resume_gen++;
}

/* Run the complete lines in c's buffer until one must wait; false when c was closed. */
static bool api_conn_lines(struct api_conn *c)
{
        struct api *a = c->api;
        const char *line;
        size_t n;
        while (!c->waiting && api_lines_next(&c->in, &line, &n)) {
                struct api_reply r;
                api_request(&a->vm, line, n, &r);
                c->waiting = r.pending;
                c->gen = a->resume_gen;
                api_apply(a, &r);
                if (r.text && !api_send(c, r.text))
                        return false;
        }
        if (!c->waiting && api_lines_overlong(&c->in)) {
                cleanup_free char *msg = xasprintf("request longer than %d bytes", API_LINE_MAX);
                if (api_send(c, api_error_text(msg)))
                        api_conn_close(c);
                return false;
        }
        return true;
}

/* Watch c again once it can take requests (after a pause answer). */
static void api_conn_rewatch(struct api_conn *c)
{
        if (c->watched || c->waiting)
                return;
        cleanup_error cap_error_t err = NULL;
        if (evloop_add(c->api->loop, c->fd, EPOLLIN, api_conn_ready, c, &err) < 0) {
                log_warning("api-socket: %s", err->msg);
                api_conn_close(c);
                return;
        }
        c->watched = true;
}

/* Answer the clients whose pause is decided: every vCPU parked, or a resume came first.
 * Their buffered requests then run, which may close them or make them wait again, so the
 * list is walked afresh after each. */
static void api_settle(struct api *a)
{
        bool paused = a->vm.paused(a->vm.vm);
        for (struct api_conn *c = a->conns; c;) {
                bool cancelled = c->gen != a->resume_gen;
                if (!c->waiting || (!cancelled && !paused)) {
                        c = c->next;
                        continue;
                }
                c->waiting = false;
                char *text = cancelled ? api_error_text("pause: resumed before every vCPU had stopped") : api_paused_text();
                if (api_send(c, text) && api_conn_lines(c))
                        api_conn_rewatch(c);
                paused = a->vm.paused(a->vm.vm);
                c = a->conns;
        }
}

static void api_conn_ready(void *opaque, uint32_t events)
{
        struct api_conn *c = opaque;
        struct api *a = c->api;
        (void)events;
        size_t room;
        char *space = api_lines_space(&c->in, &room);
        ssize_t n = read(c->fd, space, room);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                api_conn_close(c);
                return;
        }
        api_lines_added(&c->in, (size_t)n);
        if (api_conn_lines(c) && c->waiting) {
                /* No more requests from this client until its pause is answered, in order. */
                evloop_del(a->loop, c->fd);
                c->watched = false;
        }
        api_settle(a);
}

static void api_pause_ready(void *opaque, uint32_t events)
{
        struct api *a = opaque;
        uint64_t v;
        (void)events;
        while (read(a->vm.pause_fd, &v, sizeof(v)) == sizeof(v))
                ;
        api_settle(a);
}

static void api_timer_ready(void *opaque, uint32_t events)
{
        struct api *a = opaque;
        uint64_t v;
        (void)events;
        if (read(a->timer_fd, &v, sizeof(v)) == sizeof(v))
                a->vm.hard_stop(a->vm.vm, a->stop_timeout_s);
}

static void api_accept_ready(void *opaque, uint32_t events)
{
        struct api *a = opaque;
        (void)events;
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
                return;
        if (a->n_conns >= API_MAX_CONNS) {
                cleanup_free char *msg = xasprintf("too many connections (at most %d)", API_MAX_CONNS);
                cleanup_free char *text = api_error_text(msg);
                cleanup_free char *line = xasprintf("%s\n", text);
                (void)!send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
                close(fd);
                return;
        }
        struct api_conn *c = xmalloc0(sizeof(*c));
        c->api = a;
        c->fd = fd;
        c->next = a->conns;
        a->conns = c;
        a->n_conns++;
        api_conn_rewatch(c);
}

/* An existing path: a socket nobody listens on any more (a VM that was killed) is removed;
 * a live one, or anything else, is left alone and refused. */
static int api_clear_path(const char *path, const struct sockaddr_un *addr, cap_error_t *err)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : cap_fail(err, errno, "api-socket: %s", path);
        if (!S_ISSOCK(st.st_mode))
                return cap_fail(err, 0, "api-socket: %s exists and is not a socket; not replacing it", path);
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "api-socket: socket");
        if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 || errno == EAGAIN)
                return cap_fail(err, 0, "api-socket: %s is in use by a running process", path);
        if (errno != ECONNREFUSED)
                return cap_fail(err, errno, "api-socket: %s", path);
        log_warning("api-socket: removing the stale socket %s (nothing listens on it)", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return cap_fail(err, errno, "api-socket: cannot remove the stale socket %s", path);
        return 0;
}

static int api_listen(struct api *a, const char *path, cap_error_t *err)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (!*path || strlen(path) >= sizeof(addr.sun_path))
                return cap_fail(err, 0, "api-socket: `%s` is not a usable socket path (1 to %zu bytes)", path,
                                sizeof(addr.sun_path) - 1);
        memcpy(addr.sun_path, path, strlen(path));
        if (api_clear_path(path, &addr, err) < 0)
                return -1;
        a->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (a->listen_fd < 0)
                return cap_fail(err, errno, "api-socket: socket");
        /* The file is born 0600: the socket is the whole VM's remote control. Only the main
         * thread creates files while the VM is being set up, so the umask change races nothing. */
        mode_t old = umask(0177);
        int r = bind(a->listen_fd, (const struct sockaddr *)&addr, sizeof(addr));
        int e = errno;
        umask(old);
        if (r < 0)
                return cap_fail(err, e, "api-socket: cannot create %s", path);
        struct stat st;
        if (lstat(path, &st) < 0) {
                e = errno;
                unlink(path);
                return cap_fail(err, e, "api-socket: %s", path);
        }
        a->path = xstrdup(path);
        a->dev = st.st_dev;
        a->ino = st.st_ino;
        if (listen(a->listen_fd, API_BACKLOG) < 0)
                return cap_fail(err, errno, "api-socket: listen on %s", path);
        return 0;
}

static int api_setup(struct api *a, const char *path, cap_error_t *err)
{
        if (api_listen(a, path, err) < 0)
                return -1;
        a->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (a->timer_fd < 0)
                return cap_fail(err, errno, "api-socket: timerfd_create");
        if (evloop_add(a->loop, a->listen_fd, EPOLLIN, api_accept_ready, a, err) < 0)
                return -1;
        a->listen_watched = true;
        if (evloop_add(a->loop, a->timer_fd, EPOLLIN, api_timer_ready, a, err) < 0)
                return -1;
        a->timer_watched = true;
        if (evloop_add(a->loop, a->vm.pause_fd, EPOLLIN, api_pause_ready, a, err) < 0)
                return -1;
        a->pause_watched = true;
        return 0;
}

int api_open(struct api **out, const char *path, struct evloop *loop, const struct api_vm *vm, cap_error_t *err)
{
        struct api *a = xmalloc0(sizeof(*a));
        a->vm = *vm;
        a->loop = loop;
        a->listen_fd = a->timer_fd = -1;
        if (api_setup(a, path, err) < 0) {
                api_close(a);
                return -1;
        }
        *out = a;
        return 0;
}

void api_close(struct api *a)
{
        if (!a)
                return;
        while (a->conns)
                api_conn_close(a->conns);
        if (a->pause_watched)
                evloop_del(a->loop, a->vm.pause_fd);
        if (a->timer_watched)
                evloop_del(a->loop, a->timer_fd);
        if (a->listen_watched)
                evloop_del(a->loop, a->listen_fd);
        if (a->timer_fd >= 0)
                close(a->timer_fd);
        if (a->listen_fd >= 0)
                close(a->listen_fd);
        struct stat st;
        /* Only our own socket: someone may have replaced the path since. */
        if (a->path && lstat(a->path, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino)
                unlink(a->path);
        free(a->path);
        free(a);
}
