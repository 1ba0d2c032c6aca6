/* The container's processes as the host names them (init and exec ids): their stream
 * connections, a tty's relay, their exit and who waits for it. */
#include "agent/agent.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

struct proc *proc_find(struct agent *a, const char *name)
{
        for (size_t i = 0; i < AGENT_MAX_PROCS; i++)
                if (a->procs[i] && strcmp(a->procs[i]->name, name) == 0)
                        return a->procs[i];
        return NULL;
}

/* The process of that name, made (not yet running) when new. */
struct proc *proc_get(struct agent *a, const char *name, cap_error_t *err)
{
        struct proc *p = proc_find(a, name);
        if (p)
                return p;
        size_t slot;
        for (slot = 0; slot < AGENT_MAX_PROCS && a->procs[slot]; slot++)
                ;
        /* Full: an exec that ended, whose terminal is done and nobody waits for, makes room. */
        for (size_t i = 0; slot == AGENT_MAX_PROCS && i < AGENT_MAX_PROCS; i++) {
                struct proc *old = a->procs[i];
                if (old->ended && old->master < 0 && old->n_waiters == 0 && strcmp(old->name, AGENT_INIT) != 0) {
                        proc_remove(a, old);
                        slot = i;
                }
        }
        if (slot == AGENT_MAX_PROCS)
                return cap_fail(err, 0, "too many processes (at most %d)", AGENT_MAX_PROCS), NULL;
        p = xmalloc0(sizeof(*p));
        p->name = xstrdup(name);
        p->stdio[0] = p->stdio[1] = p->stdio[2] = p->master = -1;
        p->in.from = p->in.to = p->out.from = p->out.to = -1;
        a->procs[slot] = p;
        return p;
}

void proc_remove(struct agent *a, struct proc *p)
{
        for (int i = 0; i < 3; i++)
                cap_closep(&p->stdio[i]);
        cap_closep(&p->master);
        for (size_t i = 0; i < p->n_waiters; i++)
                close(p->waiters[i]);
        for (size_t i = 0; i < AGENT_MAX_PROCS; i++)
                if (a->procs[i] == p)
                        a->procs[i] = NULL;
        free(p->name);
        free(p);
}

static void nonblock(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
                fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void proc_exited(struct agent *a, struct proc *p, int status);

/* The helper reported the process running; a tty's master is relayed over the fd-0 connection. */
void proc_started(struct agent *a, struct proc *p, pid_t pid, int master)
{
        p->pid = pid;
        p->master = master;
        if (master >= 0) {
                nonblock(master);
                if (p->stdio[0] >= 0)
                        nonblock(p->stdio[0]);
                p->in = (struct relay){ .from = p->stdio[0], .to = master, .eof = p->stdio[0] < 0 };
                p->out = (struct relay){ .from = master, .to = p->stdio[0] };
        }
        for (size_t i = 0; i < a->n_early; i++) {
                if (a->early[i].pid != pid)
                        continue;
                int status = a->early[i].status;
                a->early[i] = a->early[--a->n_early];
                proc_exited(a, p, status);
                return;
        }
}

static void reply_status(struct agent *a, struct proc *p, int conn)
{
        json_t *msg = json_pack("{s:b,s:i}", "ok", 1, "status", p->status);
        agent_reply(conn, msg);
        json_decref(msg);
        bool init = strcmp(p->name, AGENT_INIT) == 0;
        /* init's waiters hear their end of file only once the last output is out (server.c). */
        if (init && a->n_flush < ARRAY_SIZE(a->flush)) {
                a->flush[a->n_flush++] = conn;
                if (a->shut)
                        shutdown(conn, SHUT_WR);
        } else {
                close(conn);
        }
        if (init)
                a->stopping = true;
}

static void proc_exited(struct agent *a, struct proc *p, int status)
{
        p->ended = true;
        p->status = status;
        if (strcmp(p->name, AGENT_INIT) == 0)
                a->main.status = AGENT_STOPPED;
        for (size_t i = 0; i < AGENT_MEMBERS_MAX; i++)
                if (a->members[i].id && strcmp(a->members[i].id, p->name) == 0)
                        a->members[i].status = AGENT_STOPPED;
        for (size_t i = 0; i < p->n_waiters; i++)
                reply_status(a, p, p->waiters[i]);
        p->n_waiters = 0;
}

void proc_wait(struct agent *a, struct proc *p, int conn)
{
        if (p->ended) {
                reply_status(a, p, conn);
                return;
        }
        if (p->n_waiters == AGENT_MAX_WAITERS) {
                agent_reply_error(conn, "wait: too many waiters for `%s`", p->name);
                close(conn);
                return;
        }
        p->waiters[p->n_waiters++] = conn;
}

void proc_waiter_gone(struct proc *p, int fd)
{
        for (size_t i = 0; i < p->n_waiters; i++) {
                if (p->waiters[i] != fd)
                        continue;
                close(fd);
                p->waiters[i] = p->waiters[--p->n_waiters];
                /* Nobody can collect its status or feed its stdio any more: rather than run unseen
                 * until the container ends, it goes with the host's side (README: a killed capsule). */
                if (p->n_waiters == 0 && !p->ended && p->pid > 0 && strcmp(p->name, AGENT_INIT) != 0)
                        kill(p->pid, SIGKILL);
                return;
        }
}

static bool is_helper(const struct agent *a, pid_t pid)
{
        for (size_t i = 0; i < AGENT_MAX_PROCS; i++)
                if (a->jobs[i] && a->jobs[i]->pid == pid)
                        return true;
        return false;
}

/* pid 1 reaps every orphan; the container's processes are among them. */
void proc_reap(struct agent *a)
{
        int ws;
        pid_t pid;
        while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
                int status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
                struct proc *p = NULL;
                for (size_t i = 0; i < AGENT_MAX_PROCS && !p; i++)
                        if (a->procs[i] && a->procs[i]->pid == pid && !a->procs[i]->ended)
                                p = a->procs[i];
                if (p) {
                        proc_exited(a, p, status);
                } else if (!is_helper(a, pid)) {
                        /* A process a helper is about to report: keep the newest few. */
                        if (a->n_early == ARRAY_SIZE(a->early))
                                memmove(a->early, a->early + 1, sizeof(a->early) - sizeof(a->early[0]));
                        else
                                a->n_early++;
                        a->early[a->n_early - 1].pid = pid;
                        a->early[a->n_early - 1].status = status;
                }
        }
}

/* The fd and poll events a relay waits for: its source while its buffer is empty, else its
 * destination. Returns 0 when it waits for nothing. */
int relay_events(const struct relay *r, int *fd)
{
        if (r->len > r->off) {
                *fd = r->to;
                return POLLOUT;
        }
        if (r->eof || r->from < 0)
                return 0;
        *fd = r->from;
        return POLLIN;
}

void relay_step(struct relay *r, short revents_from, short revents_to)
{
        if (r->len > r->off && revents_to) {
                ssize_t n = write(r->to, r->buf + r->off, r->len - r->off);
                if (n > 0)
                        r->off += (size_t)n;
                else if (n < 0 && errno != EAGAIN && errno != EINTR)
                        r->off = r->len; /* the reader is gone: drop it */
                if (r->off == r->len)
                        r->off = r->len = 0;
                return;
        }
        if (!revents_from)
                return;
        ssize_t n = read(r->from, r->buf, sizeof(r->buf));
        if (n > 0) {
                r->off = 0;
                r->len = r->to >= 0 ? (size_t)n : 0;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                r->eof = true; /* EIO on a master: every slave is closed */
        }
}
