/* The agent's poll loop: vsock connections, their requests, the helpers' replies, the ttys'
 * relays, children's exits, and the power-off once init's status is out. */
#include "agent/agent.h"

#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/system.h"
#include "common/agent_proto.h"
#include "common/util.h"
#include "runtime/container.h"
#include "runtime/spec.h"
#include "runtime/state.h"

void agent_reply(int fd, const json_t *msg)
{
        cleanup_error cap_error_t err = NULL;
        frame_send(fd, msg, &err);
}

void agent_reply_error(int fd, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        cleanup_free char *text = xvasprintf(fmt, ap);
        va_end(ap);
        json_t *msg = json_pack("{s:b,s:s}", "ok", 0, "error", text);
        agent_reply(fd, msg);
        json_decref(msg);
}

static void reply_ok(int fd)
{
        json_t *msg = json_pack("{s:b}", "ok", 1);
        agent_reply(fd, msg);
        json_decref(msg);
}

static void set_blocking(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
                fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

static const char *status_name(enum agent_status s)
{
        return s == AGENT_CREATED ? "created" : s == AGENT_RUNNING ? "running" : "stopped";
}

/* A process the host names: one that runs, ran, or is being started. */
static struct proc *proc_known(struct agent *a, const char *name)
{
        struct proc *p = proc_find(a, name);
        return p && (p->pid > 0 || p->busy || p->ended) ? p : NULL;
}

struct ctr *ctr_find(struct agent *a, const char *id, cap_error_t *err)
{
        if (!id || (a->main.id && strcmp(id, a->main.id) == 0))
                return &a->main;
        for (size_t i = 0; i < AGENT_MEMBERS_MAX; i++)
                if (a->members[i].id && strcmp(a->members[i].id, id) == 0)
                        return &a->members[i];
        return cap_fail(err, 0, "no container `%s`", id), NULL;
}

static int op_stdio(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        bool init = strcmp(req->exec, AGENT_INIT) == 0;
        if (init && (a->main.status != AGENT_NONE || a->main.creating))
                return cap_fail(err, 0, "stdio: the container exists already");
        if (proc_known(a, req->exec))
                return cap_fail(err, 0, "stdio: `%s` runs already", req->exec);
        struct proc *p = proc_get(a, req->exec, err);
        if (!p)
                return -1;
        if (p->stdio[req->fd] >= 0)
                return cap_fail(err, 0, "stdio: fd %d of `%s` is connected already", req->fd, req->exec);
        reply_ok(fd);
        p->stdio[req->fd] = fd;
        return 1;
}

/* A member of the pod: its init is the process named by its id, whose stdio came first. */
static int member_create(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        if (!a->pod || (a->main.status != AGENT_CREATED && a->main.status != AGENT_RUNNING))
                return cap_fail(err, 0, "create: no pod's container runs in this VM");
        cleanup_error cap_error_t unknown = NULL;
        if (ctr_find(a, req->id, &unknown) || proc_known(a, req->id))
                return cap_fail(err, 0, "create: `%s` exists already", req->id);
        struct ctr *c = NULL;
        for (size_t i = 0; i < AGENT_MEMBERS_MAX && !c; i++)
                if (!a->members[i].id)
                        c = &a->members[i];
        if (!c)
                return cap_fail(err, 0, "create: the pod has %d members already", AGENT_MEMBERS_MAX);
        if (!a->members_mounted && system_mount_members(err) < 0)
                return -1;
        a->members_mounted = true;
        struct proc *p = proc_get(a, req->id, err);
        if (!p)
                return -1;
        p->tty = req->tty;
        *c = (struct ctr){ .id = xstrdup(req->id), .creating = true };
        c->init = c->id; /* not p->name: an ended process's slot may be taken over */
        if (job_start(a, req, c, p, fd, err) < 0) {
                free(c->id);
                *c = (struct ctr){ 0 };
                return -1;
        }
        return 1;
}

/* A refused member's stdio go with it: the host may try that id again. */
static int op_create_member(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        int r = member_create(a, req, fd, err);
        struct proc *p = r < 0 ? proc_find(a, req->id) : NULL;
        if (p && !proc_known(a, req->id))
                proc_remove(a, p);
        return r;
}

static int op_create(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        if (req->member)
                return op_create_member(a, req, fd, err);
        if (a->main.status != AGENT_NONE || a->main.creating)
                return cap_fail(err, 0, "create: the container exists already");
        if (system_mount_rootfs(req->rootfs, err) < 0)
                return -1;
        if (req->binds && system_mount_binds(err) < 0)
                return -1;
        if (req->has_net && system_net_setup(&req->net, err) < 0)
                return -1;
        struct proc *p = proc_get(a, AGENT_INIT, err);
        if (!p)
                return -1;
        p->tty = req->tty;
        a->main = (struct ctr){ .id = xstrdup(req->id), .creating = true, .init = AGENT_INIT };
        a->pod = req->pod;
        if (job_start(a, req, &a->main, p, fd, err) < 0) {
                free(a->main.id);
                a->main = (struct ctr){ 0 };
                return -1;
        }
        return 1;
}

static int op_exec(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        struct ctr *c = ctr_find(a, req->id, err);
        if (!c)
                return -1;
        if (c->status != AGENT_CREATED && c->status != AGENT_RUNNING)
                return cap_fail(err, 0, "exec: the container is not running");
        if (proc_known(a, req->exec))
                return cap_fail(err, 0, "exec: `%s` is in use", req->exec);
        struct proc *p = proc_get(a, req->exec, err);
        if (!p)
                return -1;
        p->tty = req->tty;
        if (job_start(a, req, c, p, fd, err) < 0) {
                proc_remove(a, p);
                return -1;
        }
        return 1;
}

/* A created or running container whose cgroup is frozen, as the runtime itself tells. */
static bool container_paused(const struct ctr *c)
{
        cleanup_state struct state *st = NULL;
        cleanup_error cap_error_t err = NULL;
        return (c->status == AGENT_CREATED || c->status == AGENT_RUNNING) && state_load(AGENT_STATE, c->id, &st, &err) == 0 &&
               strcmp(state_status(AGENT_STATE, st), "paused") == 0;
}

static int op_state(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        struct ctr *c = ctr_find(a, req->id, err);
        if (!c)
                return -1;
        if (c->status == AGENT_NONE)
                return cap_fail(err, 0, "state: no container");
        struct proc *init = proc_find(a, c->init);
        const char *status = container_paused(c) ? "paused" : status_name(c->status);
        json_t *msg = json_pack("{s:b,s:s,s:i}", "ok", 1, "status", status, "pid", init ? (int)init->pid : 0);
        agent_reply(fd, msg);
        json_decref(msg);
        return 0;
}

static int op_resize(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        struct proc *p = proc_known(a, req->exec);
        if (!p || p->master < 0)
                return cap_fail(err, 0, "resize: `%s` has no terminal", req->exec);
        struct winsize ws = { .ws_row = req->rows, .ws_col = req->cols };
        if (ioctl(p->master, TIOCSWINSZ, &ws) < 0)
                return cap_fail(err, errno, "resize `%s`", req->exec);
        reply_ok(fd);
        return 0;
}

static int op_ps(const struct ctr *c, int fd, cap_error_t *err)
{
        cleanup_free pid_t *pids = NULL;
        size_t n = 0;
        if (container_pids(AGENT_STATE, c->id, &pids, &n, err) < 0)
                return -1;
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(list, json_integer(pids[i]));
        json_t *msg = json_pack("{s:b,s:o}", "ok", 1, "pids", list);
        agent_reply(fd, msg);
        json_decref(msg);
        return 0;
}

static int op_update(const struct ctr *c, const struct agent_req *req, int fd, cap_error_t *err)
{
        cleanup_spec struct spec *spec = NULL;
        if (spec_parse_resources(req->resources, "update", &spec, err) < 0 ||
            container_update(AGENT_STATE, c->id, spec->linux.resources, err) < 0)
                return -1;
        reply_ok(fd);
        return 0;
}

/* The ops on the container's cgroup in the guest (the runtime's own code), each quick and inline. */
static int op_container(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        struct ctr *c = ctr_find(a, req->id, err);
        if (!c)
                return -1;
        if (c->status == AGENT_NONE)
                return cap_fail(err, 0, "no container");
        switch (req->op) {
        case AGENT_OP_KILL:
                if (container_kill(AGENT_STATE, c->id, req->signal, req->all, err) < 0)
                        return -1;
                break;
        case AGENT_OP_PAUSE:
        case AGENT_OP_RESUME:
                if (container_pause(AGENT_STATE, c->id, req->op == AGENT_OP_PAUSE, err) < 0)
                        return -1;
                break;
        case AGENT_OP_PS:
                return op_ps(c, fd, err);
        case AGENT_OP_UPDATE:
                return op_update(c, req, fd, err);
        default:
                return cap_fail(err, 0, "unknown op");
        }
        reply_ok(fd);
        return 0;
}

/* A member's container goes from the guest (its processes first with force), and its name
 * with it: the host may create one of that id again. */
static int op_delete(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        struct ctr *c = ctr_find(a, req->id, err);
        if (!c)
                return -1;
        if (c == &a->main)
                return cap_fail(err, 0, "delete: `%s` is the VM's own container", req->id);
        if (c->creating)
                return cap_fail(err, 0, "delete: `%s` is being created", req->id);
        if (container_delete(AGENT_STATE, c->id, req->force, err) < 0)
                return -1;
        struct proc *p = proc_find(a, c->id);
        if (p && (p->ended || req->force))
                proc_remove(a, p);
        free(c->id);
        *c = (struct ctr){ 0 };
        reply_ok(fd);
        return 0;
}

/* Returns 1 when the connection was kept (a stream, a waiter, a helper's), 0 when it is done,
 * -1 with err set. */
static int dispatch(struct agent *a, const struct agent_req *req, int fd, cap_error_t *err)
{
        struct proc *p;
        struct ctr *c;
        switch (req->op) {
        case AGENT_OP_STDIO:
                return op_stdio(a, req, fd, err);
        case AGENT_OP_CREATE:
                return op_create(a, req, fd, err);
        case AGENT_OP_START:
                if (!(c = ctr_find(a, req->id, err)))
                        return -1;
                if (c->status != AGENT_CREATED)
                        return cap_fail(err, 0, "start: the container is %s, not created",
                                        c->status == AGENT_NONE ? "not there" : status_name(c->status));
                return job_start(a, req, c, NULL, fd, err) < 0 ? -1 : 1;
        case AGENT_OP_DELETE:
                return op_delete(a, req, fd, err);
        case AGENT_OP_KILL:
        case AGENT_OP_PAUSE:
        case AGENT_OP_RESUME:
        case AGENT_OP_PS:
        case AGENT_OP_UPDATE:
                return op_container(a, req, fd, err);
        case AGENT_OP_STATE:
                return op_state(a, req, fd, err);
        case AGENT_OP_EXEC:
                return op_exec(a, req, fd, err);
        case AGENT_OP_WAIT:
                if (!(p = proc_known(a, req->exec)))
                        return cap_fail(err, 0, "wait: no process `%s`", req->exec);
                proc_wait(a, p, fd);
                return 1;
        case AGENT_OP_RESIZE:
                return op_resize(a, req, fd, err);
        }
        return cap_fail(err, 0, "unknown op");
}

static void handle_request(struct agent *a, int fd, const json_t *msg)
{
        cleanup_error cap_error_t err = NULL;
        struct agent_req req;
        int r = agent_req_parse(msg, &req, &err);
        if (r == 0)
                r = dispatch(a, &req, fd, &err);
        if (r < 0)
                agent_reply_error(fd, "%s", err->msg);
        if (r <= 0)
                close(fd);
}

static void conn_free(struct agent *a, size_t i, bool close_fd)
{
        struct conn *c = a->conns[i];
        if (close_fd)
                close(c->fd);
        free(c->body);
        free(c);
        a->conns[i] = NULL;
}

/* A request frame arrives in pieces on a non-blocking socket: a slow host stalls nothing. */
static void conn_read(struct agent *a, size_t i)
{
        struct conn *c = a->conns[i];
        cleanup_error cap_error_t err = NULL;
        ssize_t n;
        if (c->got < FRAME_HDR)
                n = read(c->fd, c->hdr + c->got, FRAME_HDR - c->got);
        else
                n = read(c->fd, c->body + (c->got - FRAME_HDR), c->len - (c->got - FRAME_HDR));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                conn_free(a, i, true);
                return;
        }
        c->got += (size_t)n;
        if (c->got == FRAME_HDR) {
                if (frame_header_len(c->hdr, &c->len, &err) < 0) {
                        agent_reply_error(c->fd, "%s", err->msg);
                        conn_free(a, i, true);
                        return;
                }
                c->body = xmalloc0(c->len + 1);
        }
        if (c->got < FRAME_HDR || c->got - FRAME_HDR < c->len)
                return;
        json_t *msg = NULL;
        int fd = c->fd;
        set_blocking(fd);
        if (frame_decode(c->body, c->len, &msg, &err) < 0) {
                agent_reply_error(fd, "%s", err->msg);
                conn_free(a, i, true);
                return;
        }
        conn_free(a, i, false);
        handle_request(a, fd, msg);
        json_decref(msg);
}

static void conn_accept(struct agent *a)
{
        int fd;
        struct sockaddr_vm peer;
        socklen_t len = sizeof(peer);
        while ((fd = accept4(a->listen_fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
                size_t i;
                /* Only the host drives the agent: a container process reaching the port from inside
                 * the guest could otherwise exec with any privileges. */
                if (len != sizeof(peer) || peer.svm_cid != VMADDR_CID_HOST) {
                        close(fd);
                        len = sizeof(peer);
                        continue;
                }
                len = sizeof(peer);
                for (i = 0; i < AGENT_MAX_CONNS && a->conns[i]; i++)
                        ;
                if (i == AGENT_MAX_CONNS) {
                        close(fd);
                        continue;
                }
                a->conns[i] = xmalloc0(sizeof(struct conn));
                a->conns[i]->fd = fd;
        }
}

static int listen_vsock(cap_error_t *err)
{
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return cap_fail(err, errno, "vsock socket");
        struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = AGENT_PORT };
        if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
                close(fd);
                return cap_fail(err, errno, "vsock port %d", AGENT_PORT);
        }
        return fd;
}

/* Once init's status is out: its output is relayed to the end, every stream to the host is shut
 * down (the host's end of file comes after the last byte), and the VM powers off when the host
 * has closed them, or at the deadline. */
static void stop_step(struct agent *a)
{
        struct proc *init = proc_find(a, AGENT_INIT);
        if (!a->poweroff_deadline)
                a->poweroff_deadline = now_ms() + AGENT_FLUSH_MS;
        bool drained = !init || init->master < 0 || (init->out.eof && init->out.len == init->out.off);
        if (!a->shut && drained) {
                for (int i = 0; init && i < 3; i++)
                        if (init->stdio[i] >= 0 && (i > 0 || init->tty) && a->n_flush < ARRAY_SIZE(a->flush))
                                a->flush[a->n_flush++] = init->stdio[i];
                for (size_t i = 0; i < a->n_flush; i++)
                        shutdown(a->flush[i], SHUT_WR);
                a->shut = true;
        }
        if (a->shut && a->n_flushed == a->n_flush)
                system_poweroff();
        if (now_ms() >= a->poweroff_deadline) {
                dprintf(STDERR_FILENO, "capsule-guest: power-off after %d ms with %zu of %zu streams to the host still open\n",
                        AGENT_FLUSH_MS, a->n_flush - a->n_flushed, a->n_flush);
                system_poweroff();
        }
}

/* An exec's terminal has no slave left and its output is out: the host's end of file. init's
 * ends with the power-off sequence (stop_step), which also waits for the host to close. */
static void tty_check_done(struct proc *p)
{
        if (!p->out.eof || p->out.len > p->out.off || strcmp(p->name, AGENT_INIT) == 0)
                return;
        cap_closep(&p->master);
        if (p->stdio[0] >= 0)
                shutdown(p->stdio[0], SHUT_WR);
        cap_closep(&p->stdio[0]);
}

enum slot_kind { SLOT_LISTEN, SLOT_SIGNAL, SLOT_CONN, SLOT_JOB, SLOT_RELAY_IN, SLOT_RELAY_OUT, SLOT_WAITER, SLOT_FLUSH };
#define MAX_SLOTS (2 + AGENT_MAX_CONNS + AGENT_MAX_PROCS * (3 + AGENT_MAX_WAITERS) + AGENT_MAX_WAITERS + 3)

struct slots {
        struct pollfd pfd[MAX_SLOTS];
        struct {
                enum slot_kind kind;
                size_t index;
        } what[MAX_SLOTS];
        size_t n;
};

static void slot_add(struct slots *s, int fd, short events, enum slot_kind kind, size_t index)
{
        s->pfd[s->n] = (struct pollfd){ .fd = fd, .events = events };
        s->what[s->n].kind = kind;
        s->what[s->n].index = index;
        s->n++;
}

static void slots_build(const struct agent *a, struct slots *s)
{
        s->n = 0;
        slot_add(s, a->listen_fd, POLLIN, SLOT_LISTEN, 0);
        slot_add(s, a->sig_fd, POLLIN, SLOT_SIGNAL, 0);
        for (size_t i = 0; i < AGENT_MAX_CONNS; i++)
                if (a->conns[i])
                        slot_add(s, a->conns[i]->fd, POLLIN, SLOT_CONN, i);
        for (size_t i = 0; i < AGENT_MAX_PROCS; i++)
                if (a->jobs[i])
                        slot_add(s, a->jobs[i]->result, POLLIN, SLOT_JOB, i);
        for (size_t i = 0; i < AGENT_MAX_PROCS; i++) {
                const struct proc *p = a->procs[i];
                int fd;
                short ev;
                if (!p || p->master < 0)
                        continue;
                if ((ev = (short)relay_events(&p->in, &fd)))
                        slot_add(s, fd, ev, SLOT_RELAY_IN, i);
                if ((ev = (short)relay_events(&p->out, &fd)))
                        slot_add(s, fd, ev, SLOT_RELAY_OUT, i);
        }
        /* An exec's waiters, for the host's hang-up only: the VMM passes a closed host socket on
         * as a shutdown of its sending side (the host sends nothing after "wait"). init's waiter is
         * the sandbox process itself. */
        for (size_t i = 0; i < AGENT_MAX_PROCS; i++) {
                const struct proc *p = a->procs[i];
                for (size_t w = 0; p && !p->ended && strcmp(p->name, AGENT_INIT) != 0 && w < p->n_waiters; w++)
                        slot_add(s, p->waiters[w], POLLRDHUP, SLOT_WAITER, i);
        }
        for (size_t i = 0; a->shut && i < a->n_flush; i++)
                if (!a->flushed[i])
                        slot_add(s, a->flush[i], 0, SLOT_FLUSH, i);
}

static void slot_handle(struct agent *a, const struct slots *s, size_t k)
{
        short rev = s->pfd[k].revents;
        size_t i = s->what[k].index;
        struct relay *r;
        switch (s->what[k].kind) {
        case SLOT_LISTEN:
                conn_accept(a);
                return;
        case SLOT_SIGNAL: {
                struct signalfd_siginfo si;
                while (read(a->sig_fd, &si, sizeof(si)) == sizeof(si))
                        ;
                proc_reap(a);
                return;
        }
        case SLOT_CONN:
                if (a->conns[i])
                        conn_read(a, i);
                return;
        case SLOT_JOB:
                if (a->jobs[i])
                        job_finish(a, a->jobs[i]);
                return;
        case SLOT_RELAY_IN:
        case SLOT_RELAY_OUT:
                if (!a->procs[i])
                        return;
                r = s->what[k].kind == SLOT_RELAY_IN ? &a->procs[i]->in : &a->procs[i]->out;
                if (s->pfd[k].events & POLLOUT)
                        relay_step(r, 0, rev);
                else
                        relay_step(r, rev, 0);
                if (r == &a->procs[i]->out)
                        tty_check_done(a->procs[i]);
                return;
        case SLOT_WAITER:
                if (a->procs[i] && (rev & (POLLRDHUP | POLLHUP | POLLERR)))
                        proc_waiter_gone(a->procs[i], s->pfd[k].fd);
                return;
        case SLOT_FLUSH:
                /* The host has closed it: the fd stays open (no reuse), unpolled. */
                if (rev & (POLLHUP | POLLERR)) {
                        a->flushed[i] = true;
                        a->n_flushed++;
                }
                return;
        }
}

void agent_serve(struct agent *a)
{
        cleanup_error cap_error_t err = NULL;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        if ((a->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
                system_fatal("signalfd: %s", strerror(errno));
        if ((a->listen_fd = listen_vsock(&err)) < 0)
                system_fatal("%s", err->msg);
        a->ready_us = system_uptime_us();
        dprintf(STDERR_FILENO, "capsule-guest: listening on vsock port %d\n", AGENT_PORT);
        static struct slots s;
        for (;;) {
                slots_build(a, &s);
                int timeout = -1;
                if (a->stopping) {
                        long long left = a->poweroff_deadline - now_ms();
                        timeout = left > 0 ? (int)left : 0;
                }
                int n = poll(s.pfd, s.n, timeout);
                if (n < 0 && errno != EINTR)
                        system_fatal("poll: %s", strerror(errno));
                for (size_t k = 0; n > 0 && k < s.n; k++)
                        if (s.pfd[k].revents)
                                slot_handle(a, &s, k);
                if (a->stopping)
                        stop_step(a);
        }
}
