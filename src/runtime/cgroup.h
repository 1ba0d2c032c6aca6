/* cgroups for containers: v1, v2 and the hybrid layout (v1 controllers plus a
 * v2 mount that holds the rest, e.g. only hugetlb).
 *
 * Paths: an absolute linux.cgroupsPath is taken from each hierarchy's root; a
 * relative one (and the default, "capsule/<id>") lives below the cgroup the
 * caller already sits in, read per hierarchy from /proc/self/cgroup.
 * With --systemd-cgroup, "slice:prefix:name" is mapped to the cgroupfs path
 * systemd would use (slice/prefix-name.scope); cgroupfs does the work. */
#ifndef CAPSULE_RUNTIME_CGROUP_H
#define CAPSULE_RUNTIME_CGROUP_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

#include "common/error.h"
#include "runtime/spec.h"

enum cgroup_mode { CGROUP_MODE_V1, CGROUP_MODE_V2, CGROUP_MODE_HYBRID };

struct cgroup; /* resolved directories, one per hierarchy */

int cgroup_detect(enum cgroup_mode *mode, cap_error_t *err);
const char *cgroup_mode_name(enum cgroup_mode mode); /* "v1", "v2", "hybrid" */

/* Resolve where the container's cgroup goes; creates nothing. */
int cgroup_resolve(const char *cgroups_path, const char *id, bool systemd, struct cgroup **out, cap_error_t *err);
/* Fill in the directories cgroup_create would make (those missing now), so that they can be
 * saved before they exist: cgroup_destroy removes those that then exist. */
void cgroup_plan(struct cgroup *cg);
/* mkdir in every hierarchy; fails if the cgroup already holds processes. */
int cgroup_create(struct cgroup *cg, cap_error_t *err);
/* Write the limits. Used by create and by `update` (only the fields that are set). */
int cgroup_apply(struct cgroup *cg, const struct spec_resources *res, cap_error_t *err);
/* Move pid (and thus its future children) into the cgroup in every hierarchy: by its one thread
 * through a v1 hierarchy's `tasks` when it is single-threaded (no threadgroup lock), and not into
 * the unified hierarchy when cgroup_fork created it there. */
int cgroup_enter(struct cgroup *cg, pid_t pid, cap_error_t *err);
/* fork(), or a clone into the namespaces ns_flags asks for, with the child created in the
 * unified hierarchy's cgroup when cg is given, the host has one and the caller is
 * single-threaded (clone3 CLONE_INTO_CGROUP): a migration there waits for an RCU grace period
 * (5-30 ms measured on a nested host, per create). cgroup_enter (by the parent or the child)
 * moves the child through the rest. -1 with errno as fork's. */
pid_t cgroup_fork(struct cgroup *cg, unsigned long ns_flags);
/* Move pid into an existing sub-cgroup of the container's, as `exec --cgroup` names it (like runc):
 * "PATH" in every hierarchy, or "controller[,controller...]:PATH" in those controllers' v1
 * hierarchies only. PATH is relative to the container's cgroup, without `..`; errors name --cgroup. */
int cgroup_enter_sub(struct cgroup *cg, const char *sub, pid_t pid, cap_error_t *err);
/* Every pid in the cgroup (recursively). *pids is malloc'd. */
int cgroup_pids(struct cgroup *cg, pid_t **pids, size_t *n, cap_error_t *err);
/* Signal every process in the cgroup. */
int cgroup_kill(struct cgroup *cg, int sig, cap_error_t *err);
int cgroup_freeze(struct cgroup *cg, bool frozen, cap_error_t *err);
/* "paused" if frozen, else "running". */
bool cgroup_is_frozen(struct cgroup *cg);
/* Kill what is left (SIGKILL, wait until empty) and rmdir every directory created. Idempotent. */
int cgroup_destroy(struct cgroup *cg, cap_error_t *err);
void cgroup_free(struct cgroup *cg);
void cgroup_freep(struct cgroup **cg);
#define cleanup_cgroup __attribute__((cleanup(cgroup_freep)))

/* Persist in the state file, so that delete works after the runtime was killed. */
json_t *cgroup_save(const struct cgroup *cg);
int cgroup_load(json_t *saved, struct cgroup **out, cap_error_t *err);

/* The cgroup v2 path for the container's cgroup namespace and /proc/self/cgroup checks. */
const char *cgroup_unified_path(const struct cgroup *cg); /* NULL on pure v1 */
/* Directory of one v1 controller ("memory", "cpu", ...) or NULL. */
const char *cgroup_controller_path(const struct cgroup *cg, const char *controller);

#endif
