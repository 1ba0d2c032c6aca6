/* VM-isolated containers, the host side: the container runs inside a micro-VM (src/vmm/) whose
 * pid 1 is capsule-guest (src/agent/), reached over vsock (common/agent_proto.h). The CLI picks
 * this path for create and run (sandbox_wanted) and, for every other command, when the state
 * directory holds a sandbox record (sandbox_owns). The runtime never calls in here: this side
 * reuses the runtime's state, cgroup and hook code. */
#ifndef CAPSULE_SANDBOX_SANDBOX_H
#define CAPSULE_SANDBOX_SANDBOX_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/error.h"
#include "runtime/container.h"
#include "runtime/state.h"

/* The annotation (with the value "vm") that selects a VM, as crun's run.oci.handler=krun. */
#define SANDBOX_HANDLER_ANNOTATION "run.oci.handler"
/* capsule's own directory, exported before it re-executes from its sealed copy (whose
 * /proc/self/exe is no longer the installed file): the default kernel and initrd sit next to
 * the binary. */
#define SANDBOX_EXE_DIR_ENV "CAPSULE_EXE_DIR"

/* Whether the container runs in a VM: flag (--vm, capsule-vm) or the bundle's annotation. */
bool sandbox_wanted(bool flag, const char *bundle);
/* Whether <root>/<id> is a VM container's. */
bool sandbox_owns(const char *root, const char *id);

/* create: the state directory, the cgroup and the sandbox process (the VMM, with the container
 * created in the guest). *pid is the sandbox process, which exits with the container's status. */
int sandbox_create(const struct container_opts *o, pid_t *pid, cap_error_t *err);
int sandbox_start(const char *root, const char *id, cap_error_t *err);
int sandbox_kill(const char *root, const char *id, int sig, bool all, cap_error_t *err);
int sandbox_delete(const char *root, const char *id, bool force, cap_error_t *err);
/* Freeze (pause) or thaw the container's cgroup in the guest; the VM keeps running, so its agent
 * answers state, kill and delete meanwhile. */
int sandbox_pause(const char *root, const char *id, bool pause, cap_error_t *err);
/* The container's processes, as guest pids (*pids allocated; they are no host pids). */
#define SANDBOX_PIDS_MAX 65536
int sandbox_pids(const char *root, const char *id, pid_t **pids, size_t *n, cap_error_t *err);
/* New limits: the host's cgroup (which bounds the whole VM) takes res, then the agent applies
 * resources_json (the LinuxResources object res was parsed from) to the guest's. */
int sandbox_update(const char *root, const char *id, const char *resources_json, const struct spec_resources *res,
                   cap_error_t *err);
/* For run: wait for the sandbox process pid (our child), passing the signals we get to the
 * container through the agent; *status is the container's exit status. */
int sandbox_wait(const char *root, const char *id, pid_t pid, int *status, cap_error_t *err);
/* As state_status(), from the live VMM and the agent's answer. */
const char *sandbox_status(const char *root, const struct state *st);
struct sandbox_exec_opts {
        const char *process_json; /* an OCI process object */
        bool tty;                 /* process.terminal */
        int console_fd;           /* a --console-socket connection, or -1 */
        unsigned short rows, cols; /* process.consoleSize: the console's pty starts with it (0: none) */
        bool detach;
        const char *pid_file;     /* NULL: none */
};
/* Run o->process_json in the container; unless detach, relay our stdio (with tty, our terminal,
 * raw meanwhile, to the guest's pty; with console_fd, the pty whose master went to that socket
 * instead) and set *status to its exit status as a shell reports it. With detach a child of ours
 * does that, and exits with the status; --pid-file names whichever process relays. */
int sandbox_exec(const char *root, const char *id, const struct sandbox_exec_opts *o, int *status, cap_error_t *err);

#endif
