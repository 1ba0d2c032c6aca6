#include "vmm/console.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/vm.h"

/* A non-blocking descriptor for fd that does not change fd's own open file: stdout is
 * shared with the caller (a shell's terminal, a test's pipe). A pipe or a terminal can be
 * opened again through /proc; anything else (a socket) gets O_NONBLOCK, put back at the end. */
static int console_nonblocking(struct console_out *c, cap_error_t *err)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", c->fd);
        int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd >= 0) {
                if (c->close_fd)
                        close(c->fd);
                c->fd = fd;
                c->close_fd = true;
                return 0;
        }
        int fl = fcntl(c->fd, F_GETFL);
        if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return cap_fail(err, errno, "console: make the output non-blocking");
        if (!c->close_fd)
                c->restore_fl = fl;
        return 0;
}

/* Called on the loop thread only (or after it stopped): the one consumer of the ring. */
static void console_drain(struct console_out *c, bool final);

static void console_writable(void *opaque, uint32_t events)
{
        (void)events;
        console_drain(opaque, false);
}

static void console_kicked(void *opaque, uint32_t events)
{
        struct console_out *c = opaque;
        uint64_t n;
        (void)events;
        if (read(c->kick_fd, &n, sizeof(n)) < 0 && errno != EAGAIN && errno != EINTR)
                return;
        console_drain(c, false);
}

static void console_drain(struct console_out *c, bool final)
{
        for (;;) {
                pthread_mutex_lock(&c->lock);
                size_t head = c->head, count = c->count;
                if (!count) {
                        bool was_armed = c->armed;
                        c->armed = false; /* under the lock: the next put kicks again */
                        pthread_mutex_unlock(&c->lock);
                        if (was_armed)
                                evloop_del(c->loop, c->fd);
                        return;
                }
                pthread_mutex_unlock(&c->lock);
                /* Producers append after head + count: this part of the ring stays put. */
                size_t chunk = count < CONSOLE_RING_SIZE - head ? count : CONSOLE_RING_SIZE - head;
                ssize_t n = write(c->fd, c->ring + head, chunk);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n > 0) {
                        pthread_mutex_lock(&c->lock);
                        c->head = (head + (size_t)n) % CONSOLE_RING_SIZE;
                        c->count -= (size_t)n;
                        pthread_mutex_unlock(&c->lock);
                        continue;
                }
                bool again = n < 0 && errno == EAGAIN, wait = again && !final;
                pthread_mutex_lock(&c->lock);
                bool arm = wait && !c->armed;
                if (wait) {
                        c->armed = true;
                } else {
                        /* The output failed for good (EPIPE, EIO...), or this was the last try. */
                        c->dropped += c->count;
                        c->head = c->count = 0;
                        c->broken = c->broken || !again;
                }
                pthread_mutex_unlock(&c->lock);
                cap_error_t err = NULL;
                if (arm && evloop_add(c->loop, c->fd, EPOLLOUT, console_writable, c, &err) < 0) {
                        /* It cannot be polled: nothing will say when it can take more. */
                        cap_error_free(&err);
                        pthread_mutex_lock(&c->lock);
                        c->armed = false;
                        c->broken = true;
                        c->dropped += c->count;
                        c->head = c->count = 0;
                        pthread_mutex_unlock(&c->lock);
                }
                return;
        }
}

int console_out_open(struct console_out *c, int fd, bool close_fd, struct evloop *loop, cap_error_t *err)
{
        *c = (struct console_out){ .loop = loop, .fd = fd, .close_fd = close_fd, .restore_fl = -1, .kick_fd = -1 };
        pthread_mutex_init(&c->lock, NULL);
        struct stat st;
        if (fstat(fd, &st) < 0 && errno == EBADF && !close_fd) {
                c->fd = -1; /* stdout is closed: the output goes nowhere, as it would have */
                return 0;
        }
        if (fstat(fd, &st) < 0)
                return cap_fail(err, errno, "console: fstat");
        if (S_ISREG(st.st_mode)) {
                c->direct = true;
                return 0;
        }
        if (console_nonblocking(c, err) < 0)
                return -1;
        c->ring = xmalloc0(CONSOLE_RING_SIZE);
        c->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->kick_fd < 0)
                return cap_fail(err, errno, "console: eventfd");
        return evloop_add(loop, c->kick_fd, EPOLLIN, console_kicked, c, err);
}

void console_out_put(struct console_out *c, const uint8_t *data, size_t len)
{
        if (c->fd < 0)
                return;
        if (c->direct) {
                /* A regular file: a failed write (full disk) loses output, nothing more. */
                while (len) {
                        ssize_t n = write(c->fd, data, len);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0) {
                                pthread_mutex_lock(&c->lock);
                                c->dropped += len;
                                pthread_mutex_unlock(&c->lock);
                                return;
                        }
                        data += n;
                        len -= (size_t)n;
                }
                return;
        }
        pthread_mutex_lock(&c->lock);
        bool kick = !c->count && !c->armed;
        size_t room = c->broken ? 0 : CONSOLE_RING_SIZE - c->count;
        size_t take = len < room ? len : room;
        for (size_t i = 0; i < take; i++)
                c->ring[(c->head + c->count + i) % CONSOLE_RING_SIZE] = data[i];
        c->count += take;
        c->dropped += len - take;
        pthread_mutex_unlock(&c->lock);
        uint64_t one = 1;
        if (kick && take)
                while (write(c->kick_fd, &one, sizeof(one)) < 0 && errno == EINTR)
                        ;
}

void console_out_close(struct console_out *c)
{
        if (c->fd < 0 && c->kick_fd < 0)
                return;
        bool loop_alive = c->loop && c->loop->epfd >= 0;
        if (c->armed && loop_alive)
                evloop_del(c->loop, c->fd);
        c->armed = false;
        if (c->ring && c->fd >= 0)
                console_drain(c, true);
        if (c->kick_fd >= 0) {
                if (loop_alive)
                        evloop_del(c->loop, c->kick_fd);
                close(c->kick_fd);
        }
        if (c->restore_fl >= 0)
                fcntl(c->fd, F_SETFL, c->restore_fl);
        if (c->close_fd && c->fd >= 0)
                close(c->fd);
        if (c->dropped)
                log_warning("console: %" PRIu64 " bytes of guest output dropped: the output %s", c->dropped,
                            c->broken ? "failed" : "did not take them fast enough");
        free(c->ring);
        pthread_mutex_destroy(&c->lock);
        *c = (struct console_out){ .fd = -1, .kick_fd = -1, .restore_fl = -1 };
}

int console_out_open_config(struct console_out *c, const struct vm_config *cfg, struct evloop *loop, cap_error_t *err)
{
        *c = (struct console_out){ .fd = -1, .kick_fd = -1, .restore_fl = -1 };
        switch (cfg ? cfg->console : VM_CONSOLE_NONE) {
        case VM_CONSOLE_STDIO:
                return console_out_open(c, STDOUT_FILENO, false, loop, err);
        case VM_CONSOLE_FILE: {
                if (!cfg->console_path || !cfg->console_path[0])
                        return cap_fail(err, 0, "--console file: needs a path");
                int fd = open(cfg->console_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
                if (fd < 0)
                        return cap_fail(err, errno, "--console file:%s: open", cfg->console_path);
                return console_out_open(c, fd, true, loop, err);
        }
        case VM_CONSOLE_NONE:
                break;
        }
        return 0;
}

/* Raw mode so keys reach the guest as typed. ISIG stays on: Ctrl-C stops the VM
 * (SIGINT) instead of reaching the guest, so a wedged guest can always be left. */
static int console_in_raw(struct console_in *in, cap_error_t *err)
{
        if (!isatty(STDIN_FILENO))
                return 0;
        if (tcgetattr(STDIN_FILENO, &in->saved_tio) < 0)
                return cap_fail(err, errno, "--console stdio: read the terminal settings");
        struct termios raw = in->saved_tio;
        cfmakeraw(&raw);
        raw.c_lflag |= ISIG;
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0)
                return cap_fail(err, errno, "--console stdio: set the terminal to raw mode");
        in->tty_raw = true;
        return 0;
}

int console_in_open(struct console_in *in, struct evloop *loop, evloop_fn fn, void *opaque, cap_error_t *err)
{
        *in = (struct console_in){ .loop = loop, .fn = fn, .opaque = opaque };
        int fl = fcntl(STDIN_FILENO, F_GETFL);
        if (fl < 0 || (fl & O_ACCMODE) == O_WRONLY)
                return 0; /* no readable stdin: the guest gets no input */
        /* A terminal we do not own (capsule run in the background) would stop us with SIGTTIN/SIGTTOU. */
        pid_t fg = isatty(STDIN_FILENO) ? tcgetpgrp(STDIN_FILENO) : -1;
        if (fg >= 0 && fg != getpgrp())
                return 0;
        if (evloop_add(loop, STDIN_FILENO, EPOLLIN, fn, opaque, err) < 0) {
                /* Regular files and /dev/null cannot be polled; the guest then gets no input. */
                if (*err && (*err)->errnum == EPERM) {
                        cap_error_free(err);
                        return 0;
                }
                return cap_error_prefix(err, "--console stdio: poll stdin");
        }
        in->usable = in->polled = true;
        return console_in_raw(in, err);
}

void console_in_poll(struct console_in *in, bool on)
{
        if (on && in->usable && !in->polled) {
                cap_error_t err = NULL;
                /* It was polled before: failing now leaves the guest without input, nothing worse. */
                in->polled = evloop_add(in->loop, STDIN_FILENO, EPOLLIN, in->fn, in->opaque, &err) == 0;
                cap_error_free(&err);
        } else if (!on && in->polled) {
                /* The loop may already be destroyed (epfd -1) when the VM tears down. */
                if (in->loop->epfd >= 0)
                        evloop_del(in->loop, STDIN_FILENO);
                in->polled = false;
        }
}

void console_in_close(struct console_in *in)
{
        if (in->loop)
                console_in_poll(in, false);
        in->usable = false;
        if (in->tty_raw)
                tcsetattr(STDIN_FILENO, TCSANOW, &in->saved_tio);
        in->tty_raw = false;
}
