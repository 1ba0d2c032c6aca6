/* create, start and exec run in a forked helper, as `capsule create` would run on a host: the
 * container library may block (hooks, a slow rootfs) and takes the process's stdio for the
 * container's, neither of which the agent's loop can afford. The helper sends its reply frame
 * over a pipe and exits; the container's processes are then the agent's (pid 1's) orphans. */
#include "agent/agent.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/system.h"
#include "common/util.h"
#include "runtime/container.h"
#include "runtime/spec.h"

/* The process's stdio: the host's connections for pipes; /dev/null where there is none (and
 * for a tty, whose stdio the runtime makes the pty's slave). */
static int helper_stdio(const struct proc *p, cap_error_t *err)
{
        for (int i = 0; i < 3; i++) {
                int src = p->tty ? -1 : p->stdio[i];
                cleanup_close int null = -1;
                if (src < 0 && (src = null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
                        return cap_fail(err, errno, "open /dev/null");
                if (dup2(src, i) < 0)
                        return cap_fail(err, errno, "dup2");
        }
        return 0;
}

/* A member's bundle is a directory of its own on the guest's tmpfs, its rootfs the host's share. */
static int helper_create(const struct agent *a, const struct agent_req *req, const struct proc *p, int console, pid_t *pid,
                         cap_error_t *err)
{
        cleanup_free char *config = NULL, *bundle = NULL, *rootfs = NULL;
        if (req->member) {
                const struct proc *pod_init = proc_find((struct agent *)a, AGENT_INIT);
                bundle = xasprintf(AGENT_RUN "/bundles/%s", req->id);
                rootfs = xasprintf(AGENT_MEMBERS "/%s/rootfs", req->member);
                if (!pod_init || pod_init->pid <= 0 || pod_init->ended)
                        return cap_fail(err, 0, "create: the pod's container does not run");
                if (agent_member_config_rewrite(req->config, rootfs, req->tty, pod_init->pid, &config, err) < 0 ||
                    mkdir_p(bundle, 0700, err) < 0)
                        return -1;
        } else {
                bundle = xstrdup(AGENT_BUNDLE);
                if (agent_config_rewrite(req->config, AGENT_ROOTFS, req->tty, &config, err) < 0)
                        return -1;
        }
        cleanup_free char *path = xasprintf("%s/config.json", bundle);
        if (write_file(path, config, strlen(config), err) < 0 || helper_stdio(p, err) < 0)
                return -1;
        struct container_opts o = { .root = AGENT_STATE, .id = req->id, .bundle = bundle, .console_socket_fd = console };
        return container_create(&o, pid, err);
}

static int helper_exec(const struct ctr *c, const struct agent_req *req, const struct proc *p, int console, pid_t *pid,
                       cap_error_t *err)
{
        struct spec_process *process = NULL;
        if (spec_parse_process(req->process, "process", &process, err) < 0)
                return -1;
        process->terminal = req->tty;
        int r = helper_stdio(p, err);
        if (r == 0) {
                struct exec_opts o = { .root = AGENT_STATE, .id = c->id, .process = process, .console_socket_fd = console };
                r = container_exec(&o, pid, err);
        }
        spec_process_free(process);
        return r;
}

static __attribute__((noreturn)) void helper_main(const struct agent *a, const struct ctr *c, const struct agent_req *req,
                                                  const struct proc *p, int console, int result)
{
        cleanup_error cap_error_t err = NULL;
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        pid_t pid = 0;
        int r = -1;
        switch (req->op) {
        case AGENT_OP_CREATE:
                r = helper_create(a, req, p, console, &pid, &err);
                break;
        case AGENT_OP_START:
                r = container_start(AGENT_STATE, c->id, &err);
                break;
        case AGENT_OP_EXEC:
                r = helper_exec(c, req, p, console, &pid, &err);
                break;
        default:
                cap_fail(&err, 0, "no helper for this op");
                break;
        }
        json_t *reply = r < 0 ? json_pack("{s:b,s:s}", "ok", 0, "error", err->msg) : json_pack("{s:b}", "ok", 1);
        if (r == 0 && req->op != AGENT_OP_START)
                json_object_set_new(reply, "pid", json_integer(pid));
        if (r == 0 && req->op == AGENT_OP_CREATE) {
                json_object_set_new(reply, "boot_us", json_integer(a->boot_us));
                json_object_set_new(reply, "ready_us", json_integer(a->ready_us));
        }
        cap_error_t ignored = NULL;
        _exit(frame_send(result, reply, &ignored) < 0 ? 1 : 0);
}

int job_start(struct agent *a, const struct agent_req *req, struct ctr *c, struct proc *p, int conn, cap_error_t *err)
{
        size_t slot;
        for (slot = 0; slot < AGENT_MAX_PROCS && a->jobs[slot]; slot++)
                ;
        if (slot == AGENT_MAX_PROCS)
                return cap_fail(err, 0, "too many requests in progress");
        int pipefd[2];
        int console[2] = { -1, -1 };
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return cap_fail(err, errno, "pipe");
        if (p && p->tty && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, console) < 0) {
                close(pipefd[0]);
                close(pipefd[1]);
                return cap_fail(err, errno, "socketpair");
        }
        pid_t pid = fork();
        if (pid == 0) {
                close(pipefd[0]);
                cap_closep(&console[0]);
                helper_main(a, c, req, p, console[1], pipefd[1]);
        }
        close(pipefd[1]);
        cap_closep(&console[1]);
        if (pid < 0) {
                close(pipefd[0]);
                cap_closep(&console[0]);
                return cap_fail(err, errno, "fork");
        }
        struct job *j = xmalloc0(sizeof(*j));
        *j = (struct job){ .ctr = c, .pid = pid, .result = pipefd[0], .conn = conn, .console = console[0], .op = req->op, .proc = p };
        if (p)
                p->busy = true;
        a->jobs[slot] = j;
        return 0;
}

/* The pty master the process sent before the helper's reply, so it is there already. */
static int receive_master(int console)
{
        int master = -1;
        if (console < 0 || fcntl(console, F_SETFL, O_NONBLOCK) < 0 || recv_fd(console, &master, NULL, 0) <= 0)
                return -1;
        return master;
}

/* The process holds its own stream connections: its exit is their end of file. */
static void proc_streams_handed_over(struct proc *p)
{
        for (int i = 0; i < 3; i++)
                if (!p->tty || i > 0)
                        cap_closep(&p->stdio[i]);
}

static void job_succeeded(struct agent *a, struct job *j, pid_t pid)
{
        switch (j->op) {
        case AGENT_OP_CREATE:
                j->ctr->creating = false;
                j->ctr->status = AGENT_CREATED;
                proc_started(a, j->proc, pid, receive_master(j->console));
                /* The VM's own init's streams stay for the power-off's flush; a member's are as an exec's. */
                if (j->ctr != &a->main)
                        proc_streams_handed_over(j->proc);
                break;
        case AGENT_OP_START:
                if (j->ctr->status == AGENT_CREATED)
                        j->ctr->status = AGENT_RUNNING;
                break;
        default:
                proc_started(a, j->proc, pid, receive_master(j->console));
                proc_streams_handed_over(j->proc);
                break;
        }
}

void job_finish(struct agent *a, struct job *j)
{
        cleanup_error cap_error_t err = NULL;
        json_t *reply = NULL;
        int r = frame_recv(j->result, &reply, &err);
        /* The helper exits right after its reply: reaped here, it never looks like a process
         * of the container's to proc_reap(). */
        waitpid(j->pid, NULL, 0);
        if (r <= 0) {
                agent_reply_error(j->conn, "%s: the helper ended without a reply", j->op == AGENT_OP_EXEC ? "exec" : "create");
                reply = NULL;
        }
        bool ok = reply && json_is_true(json_object_get(reply, "ok"));
        json_int_t pid = reply ? json_integer_value(json_object_get(reply, "pid")) : 0;
        if (ok) {
                job_succeeded(a, j, (pid_t)pid);
        } else if (j->op == AGENT_OP_CREATE) {
                j->ctr->creating = false;
                free(j->ctr->id);
                j->ctr->id = NULL;
        }
        if (j->proc) {
                j->proc->busy = false;
                /* Waits sent while it was being started hear that it never ran. */
                for (size_t i = 0; !ok && i < j->proc->n_waiters; i++)
                        agent_reply_error(j->proc->waiters[i], "wait: `%s` did not start", j->proc->name);
                if (!ok)
                        proc_remove(a, j->proc);
        }
        if (reply)
                agent_reply(j->conn, reply);
        json_decref(reply);
        close(j->conn);
        close(j->result);
        cap_closep(&j->console);
        for (size_t i = 0; i < AGENT_MAX_PROCS; i++)
                if (a->jobs[i] == j)
                        a->jobs[i] = NULL;
        free(j);
}
