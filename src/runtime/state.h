/* A container's state on disk, in <root>/<id>/: state.json, cgroup.json (where its cgroups
 * are), the bundle's config.json copied as config.json and, while "created", the exec socket.
 * `create` writes state.json and cgroup.json before it makes anything else, so that `delete`
 * finds whatever exists at any moment. cgroup.json repeats state.json's record of the cgroups,
 * for `delete --force` when state.json is damaged: it is written before the cgroups exist and
 * rarely rewritten. The status is never stored: it is derived from the live processes (the
 * `create` still at work, then the container's init). */
#ifndef CAPSULE_RUNTIME_STATE_H
#define CAPSULE_RUNTIME_STATE_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

#include "common/error.h"

struct state {
        char *id;
        char *bundle;
        char *rootfs;
        pid_t pid;
        unsigned long long start_time; /* of pid, from /proc/PID/stat: detects pid reuse */
        char *created;                 /* RFC 3339 */
        char *owner;
        char **annotations;            /* key, value, ..., NULL */
        json_t *cgroup;                /* cgroup_save() output, NULL without cgroups */
        bool systemd_cgroup;
        pid_t creator;                 /* the `capsule create` still making it; 0 once created */
        unsigned long long creator_start_time;
};

#define STATE_EXEC_SOCKET "exec.sock"
#define STATE_CONFIG "config.json"
#define STATE_CGROUP "cgroup.json"

/* Container ids: [A-Za-z0-9][A-Za-z0-9_.+-]* (as runc), at most 1024 bytes. */
int state_check_id(const char *id, cap_error_t *err);

char *state_dir(const char *root, const char *id);
/* Creates <root>/<id>/, failing with "container ID already exists". */
int state_create_dir(const char *root, const char *id, cap_error_t *err);
/* Write state.json atomically. */
int state_save(const char *root, const struct state *st, cap_error_t *err);
/* Write cgroup.json atomically: the copy of st->cgroup state_salvage() falls back to. */
int state_save_cgroup(const char *root, const char *id, json_t *cgroup, cap_error_t *err);
/* Fails with `container "ID" does not exist` without state.json, and on a corrupt one. */
int state_load(const char *root, const char *id, struct state **out, cap_error_t *err);
/* For `delete --force` when state_load failed: what can still be read (state.json's content if
 * it parses, else only cgroup.json), the rest empty. */
struct state *state_salvage(const char *root, const char *id);
void state_free(struct state *st);
void state_freep(struct state **st);
#define cleanup_state __attribute__((cleanup(state_freep)))

/* "creating", "created", "running", "paused" or "stopped" (also when create died half way). */
const char *state_status(const char *root, const struct state *st);
/* The OCI state JSON as the runtime-spec defines it (what `capsule state` prints and hooks read). */
json_t *state_to_oci_json(const struct state *st, const char *status);
char *state_oci_string(const struct state *st, const char *status);

/* List the ids under root (sorted). */
int state_list(const char *root, char ***ids, cap_error_t *err);

/* Current time in RFC 3339 with nanoseconds, as runc writes "created". */
char *state_now_rfc3339(void);

#endif
