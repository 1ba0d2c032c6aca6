/* The OCI runtime-spec config.json, parsed into C structs.
 *
 * spec_parse() checks every type and value it can check without touching the
 * system, so that a bad config fails before anything is created. Values that
 * need a library to interpret (capability names, seccomp syscalls) stay strings
 * here and are checked by their module's prepare step, still before any side
 * effect. String arrays are NULL-terminated; struct arrays carry a count. */
#ifndef CAPSULE_RUNTIME_SPEC_H
#define CAPSULE_RUNTIME_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

typedef struct { bool set; int64_t v; } opt_i64;
typedef struct { bool set; uint64_t v; } opt_u64;
typedef struct { bool set; bool v; } opt_bool;

struct spec_id_mapping {
        uint32_t container_id, host_id, size;
};

struct spec_rlimit {
        int resource; /* RLIMIT_* */
        char *type;   /* "RLIMIT_NOFILE" */
        uint64_t soft, hard;
};

struct spec_capabilities {
        char **bounding, **effective, **inheritable, **permitted, **ambient;
};

struct spec_user {
        uint32_t uid, gid;
        opt_u64 umask;
        uint32_t *additional_gids;
        size_t n_additional_gids;
        char *username;
};

struct spec_scheduler {
        bool set;
        char *policy; /* SCHED_OTHER, SCHED_FIFO, ... */
        int32_t nice, priority;
        char **flags;
        uint64_t runtime, deadline, period;
};

struct spec_io_priority {
        bool set;
        char *class_name; /* IOPRIO_CLASS_RT | _BE | _IDLE */
        int priority;
};

struct spec_process {
        bool terminal;
        opt_u64 console_height, console_width;
        struct spec_user user;
        char **args;
        char **env;
        char *cwd;
        struct spec_capabilities *capabilities; /* NULL: keep none */
        struct spec_rlimit *rlimits;
        size_t n_rlimits;
        bool no_new_privileges;
        char *apparmor_profile;
        char *selinux_label;
        opt_i64 oom_score_adj;
        struct spec_scheduler scheduler;
        struct spec_io_priority io_priority;
};

struct spec_mount {
        char *destination;
        char *type;
        char *source;
        char **options;
};

struct spec_hook {
        char *path;
        char **args;
        char **env;
        opt_i64 timeout; /* seconds */
};

struct spec_hook_list {
        struct spec_hook *hooks;
        size_t n;
};

struct spec_hooks {
        struct spec_hook_list prestart, create_runtime, create_container, start_container, poststart, poststop;
};

struct spec_namespace {
        int type;   /* CLONE_NEW* */
        char *name; /* "pid", "network", ... as in the config */
        char *path; /* NULL: create a new one */
};

struct spec_device {
        char *path;
        char type; /* 'c', 'b', 'u', 'p' */
        int64_t major, minor;
        opt_u64 file_mode;
        opt_u64 uid, gid;
};

struct spec_device_cgroup {
        bool allow;
        char type;             /* 'a', 'c', 'b' */
        int64_t major, minor; /* -1: wildcard */
        char *access;          /* subset of "rwm" */
};

struct spec_memory {
        opt_i64 limit, reservation, swap, kernel, kernel_tcp;
        opt_u64 swappiness;
        opt_bool disable_oom_killer, use_hierarchy, check_before_update;
};

struct spec_cpu {
        opt_u64 shares, period, realtime_period, burst;
        opt_i64 quota, realtime_runtime, idle;
        char *cpus, *mems;
};

struct spec_blkio_weight_device {
        int64_t major, minor;
        opt_u64 weight, leaf_weight;
};

struct spec_blkio_throttle {
        int64_t major, minor;
        uint64_t rate;
};

struct spec_blkio {
        opt_u64 weight, leaf_weight;
        struct spec_blkio_weight_device *weight_devices;
        size_t n_weight_devices;
        struct spec_blkio_throttle *throttle_read_bps, *throttle_write_bps, *throttle_read_iops, *throttle_write_iops;
        size_t n_throttle_read_bps, n_throttle_write_bps, n_throttle_read_iops, n_throttle_write_iops;
};

struct spec_hugepage_limit {
        char *page_size; /* "2MB", "1GB" */
        uint64_t limit;
};

struct spec_net_priority {
        char *name;
        uint32_t priority;
};

struct spec_resources {
        struct spec_device_cgroup *devices;
        size_t n_devices;
        struct spec_memory memory;
        struct spec_cpu cpu;
        opt_i64 pids_limit;
        struct spec_blkio blkio;
        struct spec_hugepage_limit *hugepage_limits;
        size_t n_hugepage_limits;
        opt_u64 net_class_id;
        struct spec_net_priority *net_priorities;
        size_t n_net_priorities;
        char **unified; /* key, value, key, value, ..., NULL (cgroup v2 files) */
};

struct spec_seccomp_arg {
        uint32_t index;
        uint64_t value, value_two;
        char *op; /* SCMP_CMP_* */
};

struct spec_seccomp_syscall {
        char **names;
        char *action; /* SCMP_ACT_* */
        opt_u64 errno_ret;
        struct spec_seccomp_arg *args;
        size_t n_args;
};

struct spec_seccomp {
        char *default_action;
        opt_u64 default_errno_ret;
        char **architectures; /* SCMP_ARCH_* */
        char **flags;         /* SECCOMP_FILTER_FLAG_* */
        char *listener_path;
        char *listener_metadata;
        struct spec_seccomp_syscall *syscalls;
        size_t n_syscalls;
};

struct spec_time_offset {
        bool set;
        int64_t secs;
        uint32_t nanosecs;
};

struct spec_linux {
        struct spec_namespace *namespaces;
        size_t n_namespaces;
        struct spec_id_mapping *uid_mappings, *gid_mappings;
        size_t n_uid_mappings, n_gid_mappings;
        char **sysctl; /* key, value, ..., NULL */
        struct spec_resources *resources; /* NULL if absent */
        char *cgroups_path;
        struct spec_device *devices;
        size_t n_devices;
        char **masked_paths;
        char **readonly_paths;
        char *rootfs_propagation;
        char *mount_label;
        struct spec_seccomp *seccomp; /* NULL if absent */
        char *personality_domain;   /* LINUX, LINUX32 */
        struct spec_time_offset time_boottime, time_monotonic;
};

struct spec {
        char *oci_version;
        char *root_path; /* absolute after spec_load() */
        bool root_readonly;
        struct spec_process *process; /* NULL if absent */
        char *hostname;
        char *domainname;
        struct spec_mount *mounts;
        size_t n_mounts;
        struct spec_hooks hooks;
        char **annotations; /* key, value, ..., NULL */
        struct spec_linux linux;
};

/* Parse config.json text. Errors name the field, e.g. "config.json: linux.namespaces[2].type: unknown namespace `foo`". */
int spec_parse(const char *json_text, const char *origin, struct spec **out, cap_error_t *err);
/* Read BUNDLE/config.json, parse it and make root_path absolute (relative to the bundle). */
int spec_load(const char *bundle, struct spec **out, cap_error_t *err);
/* Parse a process.json (as for `exec -p`), same rules as config.json's "process". */
int spec_parse_process(const char *json_text, const char *origin, struct spec_process **out, cap_error_t *err);

/* Parse a LinuxResources object (as for `update -r`) into a spec whose linux.resources holds it,
 * with the checks of config.json's linux.resources. */
int spec_parse_resources(const char *json_text, const char *origin, struct spec **out, cap_error_t *err);

void spec_free(struct spec *spec);
void spec_process_free(struct spec_process *p);
void spec_freep(struct spec **spec);
#define cleanup_spec __attribute__((cleanup(spec_freep)))

/* Namespace lookup: the entry of the given CLONE_NEW* type, or NULL. */
const struct spec_namespace *spec_namespace(const struct spec *spec, int type);

/* The default config.json that `capsule spec` writes (as runc's), rootless variant when asked. */
char *spec_default_json(bool rootless);

#endif
