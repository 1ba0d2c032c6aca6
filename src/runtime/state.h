/* A container's state on disk: <root>/<id>/state.json (plus the bundle's
 * config.json copied as config.json and, while "created", the exec socket).
 * The status is never stored: it is derived from the live process. */
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
};

#define STATE_EXEC_SOCKET "exec.sock"
#define STATE_CONFIG "config.json"

/* Container ids: [A-Za-z0-9][A-Za-z0-9_.+-]* (as runc), at most 1024 bytes. */
int state_check_id(const char *id, cap_error_t *err);

char *state_dir(const char *root, const char *id);
/* Creates <root>/<id>/, failing with "container ID already exists". */
int state_create_dir(const char *root, const char *id, cap_error_t *err);
int state_save(const char *root, const struct state *st, cap_error_t *err);
/* Fails with `container "ID" does not exist`. */
int state_load(const char *root, const char *id, struct state **out, cap_error_t *err);
void state_free(struct state *st);
void state_freep(struct state **st);
#define cleanup_state __attribute__((cleanup(state_freep)))

/* "creating", "created", "running", "paused" or "stopped". */
const char *state_status(const char *root, const struct state *st);
/* The OCI state JSON as the runtime-spec defines it (what `capsule state` prints and hooks read). */
json_t *state_to_oci_json(const struct state *st, const char *status);
char *state_oci_string(const struct state *st, const char *status);

/* List the ids under root (sorted). */
int state_list(const char *root, char ***ids, cap_error_t *err);

/* Current time in RFC 3339 with nanoseconds, as runc writes "created". */
char *state_now_rfc3339(void);

#endif
