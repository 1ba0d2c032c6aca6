/* A process's stdio between the host's fds and its agent "stdio" connections, and its status
 * from the "wait" reply. Host writes block (our stdout is the caller's, not ours to make
 * non-blocking); the guest-bound stream is non-blocking with its own buffer, so a container
 * that does not read its stdin never stalls its output. */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/util.h"

struct relay_state {
        char buf[16384]; /* stdin bytes not yet taken by the guest */
        size_t len, off;
        bool in_open, out_open[3];
        bool ended; /* the status came, or the process's end can no longer come */
        int status;
        bool has_status;
};

static void stdin_closed(struct stdio_relay *r, struct relay_state *s)
{
        s->in_open = false;
        s->len = s->off = 0;
        if (r->conn[0] >= 0)
                shutdown(r->conn[0], SHUT_WR);
}

static void stdin_read(struct stdio_relay *r, struct relay_state *s)
{
        ssize_t n = read(r->host[0], s->buf, sizeof(s->buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n <= 0) {
                stdin_closed(r, s);
                return;
        }
        s->len = (size_t)n;
        s->off = 0;
}

static void stdin_write(struct stdio_relay *r, struct relay_state *s)
{
        ssize_t n = send(r->conn[0], s->buf + s->off, s->len - s->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n < 0) {
                stdin_closed(r, s); /* the guest closed its stdin: the rest is dropped */
                return;
        }
        s->off += (size_t)n;
        if (s->off == s->len)
                s->len = s->off = 0;
}

/* A guest stream's bytes go to our fd; once that fails they are read and dropped, so the
 * guest never blocks on an output nobody reads. */
static void output_read(struct stdio_relay *r, struct relay_state *s, int i)
{
        char buf[16384];
        ssize_t n = read(r->conn[i], buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n <= 0) {
                s->out_open[i] = false;
                return;
        }
        if (r->host[i] >= 0 && write_all(r->host[i], buf, (size_t)n) < 0)
                r->host[i] = -1;
}

static int wait_read(struct stdio_relay *r, struct relay_state *s, cap_error_t *err)
{
        json_t *rep = NULL;
        int got = frame_recv(r->wait_conn, &rep, err);
        s->ended = true;
        if (got < 0)
                return cap_error_prefix(err, "agent wait");
        if (got == 0)
                return 0; /* the VM ended first */
        json_t *st = json_object_get(rep, "status");
        bool ok = json_is_true(json_object_get(rep, "ok")) && json_is_integer(st) && json_integer_value(st) >= 0 &&
                  json_integer_value(st) <= 255;
        if (ok) {
                s->status = (int)json_integer_value(st);
                s->has_status = true;
        }
        json_decref(rep);
        return ok ? 0 : cap_fail(err, 0, "agent wait: the VM's reply has no exit status from 0 to 255");
}

static void resize(struct stdio_relay *r)
{
        struct winsize ws;
        /* A terminal without a size has none to give: the guest's pty keeps process.consoleSize. */
        if (ioctl(r->host[0], TIOCGWINSZ, &ws) < 0 || (ws.ws_row == 0 && ws.ws_col == 0))
                return;
        json_t *req = json_pack("{s:s,s:s,s:i,s:i}", "op", "resize", "exec", r->exec, "rows", ws.ws_row, "cols", ws.ws_col);
        cleanup_error cap_error_t ignored = NULL; /* a size that did not arrive is no reason to stop */
        agent_call(r->agent_socket, req, NULL, &ignored);
        json_decref(req);
}

int stdio_relay_run(struct stdio_relay *r, int *status, cap_error_t *err)
{
        struct relay_state *s = xmalloc0(sizeof(*s));
        int ret = 0;
        s->in_open = r->host[0] >= 0;
        s->out_open[1] = r->conn[1] >= 0;
        s->out_open[2] = r->conn[2] >= 0;
        if (!s->in_open)
                stdin_closed(r, s);
        if (r->winch_fd >= 0)
                resize(r);
        while (!s->ended || s->out_open[1] || s->out_open[2]) {
                struct pollfd p[7];
                int n = 0, in_i = -1, to_i = -1, out_i[3] = { -1, -1, -1 }, wait_i = -1, stop_i = -1, winch_i = -1;
                if (s->in_open && s->len == 0)
                        p[in_i = n++] = (struct pollfd){ .fd = r->host[0], .events = POLLIN };
                if (s->in_open && s->len > 0)
                        p[to_i = n++] = (struct pollfd){ .fd = r->conn[0], .events = POLLOUT };
                for (int i = 1; i <= 2; i++) {
                        if (s->out_open[i])
                                p[out_i[i] = n++] = (struct pollfd){ .fd = r->conn[i], .events = POLLIN };
                }
                if (!s->ended)
                        p[wait_i = n++] = (struct pollfd){ .fd = r->wait_conn, .events = POLLIN };
                if (!s->ended && r->stop_fd >= 0)
                        p[stop_i = n++] = (struct pollfd){ .fd = r->stop_fd, .events = POLLIN };
                if (!s->ended && r->winch_fd >= 0)
                        p[winch_i = n++] = (struct pollfd){ .fd = r->winch_fd, .events = POLLIN };
                if (poll(p, (nfds_t)n, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        ret = cap_fail(err, errno, "poll");
                        break;
                }
                if (in_i >= 0 && p[in_i].revents)
                        stdin_read(r, s);
                if (to_i >= 0 && p[to_i].revents)
                        stdin_write(r, s);
                for (int i = 1; i <= 2; i++) {
                        if (out_i[i] >= 0 && p[out_i[i]].revents)
                                output_read(r, s, i);
                }
                if (wait_i >= 0 && p[wait_i].revents && wait_read(r, s, err) < 0) {
                        ret = -1;
                        break;
                }
                struct signalfd_siginfo si;
                if (winch_i >= 0 && p[winch_i].revents && read(r->winch_fd, &si, sizeof(si)) == sizeof(si))
                        resize(r);
                if (stop_i >= 0 && p[stop_i].revents && !s->ended) {
                        /* A reply the VM sent before it ended is still ours to read. */
                        struct pollfd w = { .fd = r->wait_conn, .events = POLLIN };
                        if (poll(&w, 1, 0) > 0 && wait_read(r, s, err) < 0) {
                                ret = -1;
                                break;
                        }
                        s->ended = true;
                }
        }
        if (ret == 0 && s->has_status) {
                *status = s->status;
                ret = 1;
        }
        free(s);
        return ret;
}

int console_pty_open(int socket_fd, unsigned short rows, unsigned short cols, bool ctty, cap_error_t *err)
{
        int master, slave;
        struct winsize ws = { .ws_row = rows, .ws_col = cols };
        if (openpty(&master, &slave, NULL, NULL, rows && cols ? &ws : NULL) < 0)
                return cap_fail(err, errno, "open a pty for the console");
        struct termios raw;
        char name[64];
        if (ptsname_r(master, name, sizeof(name)) != 0)
                name[0] = '\0';
        if (tcgetattr(slave, &raw) == 0) {
                cfmakeraw(&raw);
                tcsetattr(slave, TCSANOW, &raw);
        }
        int r = send_fd(socket_fd, master, name, strlen(name) + 1);
        close(master);
        if (r < 0) {
                close(slave);
                return cap_fail(err, errno, "--console-socket: send the pty master");
        }
        set_cloexec(slave, true);
        if (ctty)
                ioctl(slave, TIOCSCTTY, 0);
        return slave;
}
