/* capsule-guest's server: one poll loop (a create or exec runs in a forked helper, so it never
 * blocks a kill, a state or a wait), the container's processes, and the helpers. */
#ifndef CAPSULE_AGENT_AGENT_H
#define CAPSULE_AGENT_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/request.h"
#include "common/error.h"
#include "common/frame.h"

/* How many processes (init and execs, running or waited for) and connections the agent keeps. */
#define AGENT_MAX_PROCS 64
#define AGENT_MAX_CONNS 32
#define AGENT_MAX_WAITERS 8
/* After init's status went out: how long the host has to read the last output. */
#define AGENT_FLUSH_MS 5000

/* One direction of a tty's relay, non-blocking on both sides so that neither the host nor the
 * container can stall the loop. to < 0 drops what is read. */
struct relay {
        int from, to;
        size_t off, len;
        bool eof;
        char buf[16384];
};

struct proc {
        char *name; /* "init" or an exec id */
        pid_t pid;  /* 0 until it runs */
        bool tty, busy, ended;
        int status;
        int stdio[3];    /* the host's "stdio" connections, -1 when none */
        int master;      /* tty: the pty master, -1 when none */
        struct relay in, out; /* tty: host -> pty, pty -> host */
        int waiters[AGENT_MAX_WAITERS];
        size_t n_waiters;
};

enum agent_status { AGENT_NONE, AGENT_CREATED, AGENT_RUNNING, AGENT_STOPPED };

/* A container in the guest: the VM's first, or a member of its pod. */
struct ctr {
        char *id;    /* NULL: none */
        bool creating;
        enum agent_status status;
        const char *init; /* its init's process name: AGENT_INIT, or a member's id */
};

struct job {
        struct ctr *ctr;
        pid_t pid;
        int result;  /* the helper's reply frame arrives here */
        int conn;    /* the request's connection */
        int console; /* tty: where the process sends its pty master */
        enum agent_op op;
        struct proc *proc;
};

struct conn {
        int fd;
        uint8_t hdr[FRAME_HDR];
        size_t got; /* bytes of the header, then of the body */
        uint32_t len;
        char *body;
};

struct agent {
        int listen_fd, sig_fd;
        struct conn *conns[AGENT_MAX_CONNS];
        struct job *jobs[AGENT_MAX_PROCS];
        struct proc *procs[AGENT_MAX_PROCS];
        struct ctr main;
        bool pod; /* main is a pod's sandbox container: members may join */
        bool members_mounted; /* AGENT_MEMBERS_TAG, at the first member's create */
        struct ctr members[AGENT_MEMBERS_MAX];
        /* Exits the reaper saw before a helper told whose pid it was. */
        struct {
                pid_t pid;
                int status;
        } early[16];
        size_t n_early;
        bool stopping, shut; /* init's status went out; the streams were shut down */
        long long poweroff_deadline;
        int flush[AGENT_MAX_WAITERS + 3];
        bool flushed[AGENT_MAX_WAITERS + 3]; /* the host closed it */
        size_t n_flush, n_flushed;
        /* CLOCK_BOOTTIME when the agent began (the kernel's boot) and when it listened, in µs:
         * create's reply tells the host (bench/vm_container.py). */
        long long boot_us, ready_us;
};

/* server.c */
void agent_reply(int fd, const json_t *msg);
void agent_reply_error(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
__attribute__((noreturn)) void agent_serve(struct agent *a);

/* proc.c */
struct proc *proc_find(struct agent *a, const char *name);
struct proc *proc_get(struct agent *a, const char *name, cap_error_t *err);
void proc_remove(struct agent *a, struct proc *p);
void proc_started(struct agent *a, struct proc *p, pid_t pid, int master);
void proc_reap(struct agent *a);
void proc_wait(struct agent *a, struct proc *p, int conn);
/* The host closed fd, one of p's waiters: its exec (or the detached relay standing in for the
 * process) is gone. The last one gone kills an exec'd process that still runs. */
void proc_waiter_gone(struct proc *p, int fd);
int relay_events(const struct relay *r, int *fd);
void relay_step(struct relay *r, short revents_from, short revents_to);

/* server.c: the container a request names (its "id"), or NULL with err. */
struct ctr *ctr_find(struct agent *a, const char *id, cap_error_t *err);

/* job.c */
int job_start(struct agent *a, const struct agent_req *req, struct ctr *c, struct proc *p, int conn, cap_error_t *err);
void job_finish(struct agent *a, struct job *j);

#endif
