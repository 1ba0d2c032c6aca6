/* seccomp through libseccomp. The filter is compiled to BPF in the runtime,
 * before anything is created, so that an unknown syscall or action fails early;
 * the container process only loads the ready program. */
#ifndef CAPSULE_RUNTIME_SECCOMP_H
#define CAPSULE_RUNTIME_SECCOMP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"
#include "runtime/spec.h"

struct seccomp_prog;

int seccomp_prepare(const struct spec_seccomp *sc, struct seccomp_prog **out, cap_error_t *err);
/* (Not named seccomp_load: libseccomp exports that symbol.)
 * Load into the calling thread with seccomp(2); it allocates only before the
 * filter is in place, so it can run in the container process right before execve
 * whatever the filter denies. Without CAP_SYS_ADMIN the kernel requires
 * no_new_privs: callers load after process_apply_final() when noNewPrivileges is
 * true, and before it (while still privileged) otherwise; both points work.
 * With SCMP_ACT_NOTIFY rules the listener fd is sent with SCM_RIGHTS to the unix
 * socket listenerPath, with the runtime-spec's containerProcessState as the
 * message body: {"ociVersion", "fds": ["seccompFd"], "pid": pid (the caller's
 * pid as the runtime sees it), "metadata": listenerMetadata (if set), "state":
 * state_json (the container state)}. It goes over the socket
 * seccomp_prog_connect() opened, or else connects to listenerPath in the
 * caller's current root. */
int seccomp_prog_load(const struct seccomp_prog *prog, pid_t pid, const char *state_json, cap_error_t *err);
/* Whether the filter has SCMP_ACT_NOTIFY rules (the loader then needs its pid as the runtime sees it). */
bool seccomp_prog_notifies(const struct seccomp_prog *prog);
/* In the runtime, before the container process changes its root: connect to
 * listenerPath as the host sees it (a no-op without SCMP_ACT_NOTIFY). The socket
 * is close-on-exec and stays with prog for seccomp_prog_load() in a child. */
int seccomp_prog_connect(struct seccomp_prog *prog, cap_error_t *err);
void seccomp_prog_free(struct seccomp_prog *prog);

#endif
