/* Container lifecycle as the OCI runtime-spec defines it. */
#ifndef CAPSULE_RUNTIME_CONTAINER_H
#define CAPSULE_RUNTIME_CONTAINER_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/error.h"
#include "runtime/spec.h"

struct container_opts {
        const char *root; /* state directory */
        const char *id;
        const char *bundle;
        const char *pid_file;   /* NULL: none */
        int console_socket_fd;  /* receives the pty master when process.terminal; -1: none */
        int preserve_fds;       /* extra fds after stdio passed to the process */
        bool no_pivot;
        bool no_new_keyring;
        bool systemd_cgroup;
};

struct exec_opts {
        const char *root;
        const char *id;
        const char *pid_file;
        struct spec_process *process; /* what to run (process.json, or the config's with overrides) */
        int console_socket_fd;
        /* process.terminal without a console socket: capsule itself is the console. The pty master
         * is returned here, already sized like our stdin when the process starts to run. */
        int *pty_master;
        int preserve_fds;
        char *const *cgroups; /* exec --cgroup arguments (cgroup_enter_sub()); NULL: the container's cgroup */
};

int container_create(const struct container_opts *o, pid_t *init_pid, cap_error_t *err);
/* Check the id, load and validate the bundle's config.json, and the process create needs;
 * *spec is the caller's on success and on failure (free it either way). */
int container_load_bundle(const struct container_opts *o, struct spec **spec, cap_error_t *err);
int container_start(const char *root, const char *id, cap_error_t *err);
int container_kill(const char *root, const char *id, int sig, bool all, cap_error_t *err);
int container_delete(const char *root, const char *id, bool force, cap_error_t *err);
int container_pause(const char *root, const char *id, bool pause, cap_error_t *err);
int container_update(const char *root, const char *id, const struct spec_resources *res, cap_error_t *err);
int container_pids(const char *root, const char *id, pid_t **pids, size_t *n, cap_error_t *err);
int container_exec(const struct exec_opts *o, pid_t *pid, cap_error_t *err);
/* The poststart hooks of a container that just started (st: its state). */
struct state;
int container_poststart(const char *root, const char *id, const struct state *st, cap_error_t *err);
/* Write pid to path (--pid-file) atomically; path NULL: nothing. */
int write_pid_file(const char *path, pid_t pid, cap_error_t *err);
/* Load the config saved at create time (for exec defaults). */
int container_load_spec(const char *root, const char *id, struct spec **out, cap_error_t *err);

/* Wait for pid (a child, or reparented to us as subreaper), forwarding signals to it and, with a pty
 * master, relaying between our stdio and the terminal. Returns the exit status as a shell would
 * (128+N for signal N). */
int container_wait(pid_t pid, int pty_master, int *status, cap_error_t *err);

#endif
