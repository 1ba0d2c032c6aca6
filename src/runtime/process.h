/* The container process's attributes: user and groups, umask, the five
 * capability sets, noNewPrivileges, rlimits, oomScoreAdj, scheduler,
 * ioPriority, personality, AppArmor and SELinux labels.
 *
 * process_prepare() runs in the runtime and validates and converts everything
 * (capability names, rlimit types, policies); the apply steps run in the
 * container process and only make syscalls. */
#ifndef CAPSULE_RUNTIME_PROCESS_H
#define CAPSULE_RUNTIME_PROCESS_H

#include "common/error.h"
#include "runtime/spec.h"

struct process_prep;

int process_prepare(const struct spec_process *proc, const char *personality_domain, struct process_prep **out, cap_error_t *err);

/* In the runtime, before it forks: the children inherit oom_score_adj. They are not dumpable,
 * so inside a user namespace they could not write their own /proc/self/oom_score_adj. */
int process_apply_oom(const struct process_prep *prep, cap_error_t *err);

/* With full privileges, before pivot_root: rlimits, scheduler, ioprio, personality. */
int process_apply_early(const struct process_prep *prep, cap_error_t *err);

/* Last steps before seccomp and execve, inside the container root: umask,
 * additional groups, gid/uid (keeping capabilities across the switch), all
 * capability sets (bounding is dropped first, ambient last), noNewPrivileges,
 * AppArmor/SELinux exec labels when the host supports them. */
int process_apply_final(const struct process_prep *prep, cap_error_t *err);

void process_prep_free(struct process_prep *prep);

/* Resolve args[0] through PATH from the process env, as execvpe would, inside the current root.
 * Fails with "executable file not found in $PATH" (podman maps that to exit status 127). */
int process_find_executable(const struct spec_process *proc, char **out, cap_error_t *err);

/* Lists used by `capsule features`. */
const char *const *process_known_capabilities(void);

#endif
