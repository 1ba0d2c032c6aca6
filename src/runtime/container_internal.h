/* Shared between container.c (start, kill, delete, pause, update, pids), container_sync.c
 * (the sync protocol and the children's common steps), container_create.c and
 * container_exec.c. Not part of the public contract. */
#ifndef CAPSULE_RUNTIME_CONTAINER_INTERNAL_H
#define CAPSULE_RUNTIME_CONTAINER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/cgroup.h"
#include "runtime/container.h"
#include "runtime/process.h"
#include "runtime/seccomp.h"
#include "runtime/state.h"

enum sync_type {
        SYNC_GO = 1,      /* runtime → setup (or init): you are in the cgroup */
        SYNC_USERMAP,     /* setup (or init) → runtime: write my id maps */
        SYNC_USERMAP_ACK,
        SYNC_CHILD_PID,   /* setup → runtime: carries a pidfd of init (or exec's process), cloned as our child */
        SYNC_HOOKS,       /* init → runtime: rootfs ready, run prestart/createRuntime */
        SYNC_HOOKS_ACK,   /* runtime → init: carries the state JSON, and init's pid as the runtime sees it */
        SYNC_READY,       /* init → runtime: created */
        SYNC_CREATED,     /* runtime → init: the state is saved, create is done */
        SYNC_EXEC_WAIT,   /* exec'd process → runtime: send me SYNC_EXEC_ACK before I execve */
        SYNC_EXEC_ACK,    /* runtime → exec'd process: carries its pid as the runtime sees it */
        SYNC_ERROR,       /* any → runtime: carries the message */
};

struct sync_hdr {
        uint32_t type;
        int32_t value;
};

#define SYNC_MAX (64 * 1024)

/* container_sync.c */
int sync_send(int fd, enum sync_type type, int value, const char *text);
int sync_recv(int fd, struct sync_hdr *h, char **text, int *passed);
int sync_expect(int fd, enum sync_type want, int *value, char **text, cap_error_t *err);
__attribute__((noreturn)) void child_fail(int sync_fd, cap_error_t *err);
void child_fork_report(int sync_fd, const char *what);
pid_t own_child_pid(int pidfd, cap_error_t *err);
int fds_mark_cloexec(int from, cap_error_t *err);
pid_t child_fork(int fds[2], int clone_flags, struct cgroup *cg, cap_error_t *err);
void child_die_with_runtime(pid_t runtime);
int unix_connect_at(const char *dir, const char *name, cap_error_t *err);
int unix_listen_at(const char *dir, const char *name, cap_error_t *err);
int process_exec_prepare(const struct spec_process *proc, int console_fd, bool console_mount, char **exe, cap_error_t *err);
__attribute__((noreturn)) void process_exec_final(const struct spec_process *proc, const struct process_prep *prep,
                                                  const struct seccomp_prog *seccomp, pid_t host_pid, const char *state_json,
                                                  const char *exe, int report_fd, bool sync);

/* container_create.c */
#define N_NS 8
extern const int ns_order[N_NS];
extern const char *const ns_proc_names[N_NS];
void kill_and_reap(pid_t pid);

/* container.c */
int load_with_status(const char *root, const char *id, struct state **st, const char **status, cap_error_t *err);
int state_cgroup(const struct state *st, struct cgroup **cg, cap_error_t *err);

#endif
