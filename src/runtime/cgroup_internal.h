/* Shared between cgroup.c (detection, lifecycle, persistence), cgroup_fork.c (a process's way
 * in), cgroup_path.c (path resolution), cgroup_resources.c (file helpers, resource dispatch),
 * cgroup_v1.c, cgroup_v2.c and cgroup_bpf.c (the v2 device filter). Not part of the public
 * contract. */
#ifndef CAPSULE_RUNTIME_CGROUP_INTERNAL_H
#define CAPSULE_RUNTIME_CGROUP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/cgroup.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP_UNIFIED CGROUP_ROOT "/unified"

struct cgroup_hier {
        char *controllers; /* v1: "cpu,cpuacct", "name=systemd"; "" for the unified hierarchy */
        char *mount;       /* where the hierarchy is mounted */
        char *path;        /* the container's directory */
        char **created;    /* directories this runtime made, outermost first */
        bool unified;
};

struct cgroup {
        enum cgroup_mode mode;
        struct cgroup_hier *hiers;
        size_t n_hiers;
        char *denied; /* rootless: why hierarchies were left out, NULL otherwise */
        bool unified_entered; /* cgroup_fork's child: born in the unified hierarchy's cgroup */
};

void hier_clear(struct cgroup_hier *h);
struct cgroup_hier *hier_add(struct cgroup *cg);
struct cgroup_hier *hier_v1(struct cgroup *cg, const char *controller);
struct cgroup_hier *hier_unified(struct cgroup *cg);

/* Write value to DIR/FILE; on failure the error reads "FIELD: write DIR/FILE: strerror". */
int cgroup_write(const char *dir, const char *file, const char *field, const char *value, cap_error_t *err);
bool cgroup_file_exists(const char *dir, const char *file);
/* Read DIR/FILE with trailing whitespace removed; NULL if unreadable. */
char *cgroup_read(const char *dir, const char *file);
/* Whether the comma or space separated list contains word. */
bool cgroup_list_has(const char *list, const char *word);
/* cpuset.cpus and cpuset.mems: the same files in v1 and v2. */
int cgroup_cpuset_apply(const char *dir, const struct spec_cpu *c, cap_error_t *err);

/* The OCI default devices (null, zero, full, random, urandom, tty, console, ptmx, pts),
 * appended after the spec's rules so a container always has them. */
extern const struct spec_device_cgroup cgroup_default_devices[];
extern const size_t cgroup_n_default_devices;

int cgroup_v1_apply(struct cgroup_hier *h, const char *group, const struct spec_resources *res, cap_error_t *err);
int cgroup_v1_freeze(struct cgroup_hier *h, bool frozen, cap_error_t *err);
int cgroup_v1_copy_cpuset(const char *dir, cap_error_t *err);

int cgroup_v2_apply(struct cgroup_hier *h, const char *group, const struct spec_resources *res, cap_error_t *err);
int cgroup_v2_freeze(struct cgroup_hier *h, bool frozen, cap_error_t *err);
/* Make controller available in h->path by enabling it in every ancestor's subtree_control. */
int cgroup_v2_enable(struct cgroup_hier *h, const char *controller, const char *field, cap_error_t *err);
/* Enable in dir's subtree_control every controller dir offers (best effort). */
void cgroup_v2_delegate_all(const char *dir);

/* Build the eBPF device filter: rules evaluated per access bit, last match wins, default deny. */
int cgroup_bpf_build(const struct spec_device_cgroup *rules, size_t n, void **insns, size_t *n_insns,
                     cap_error_t *err);
/* BPF_PROG_LOAD the filter; returns the program fd. */
int cgroup_bpf_load(const struct spec_device_cgroup *rules, size_t n, cap_error_t *err);
/* Load the filter for rules (plus the default devices if asked), attach it to the cgroup
 * directory and detach the device programs attached before it. */
int cgroup_bpf_apply(const char *dir, const struct spec_device_cgroup *rules, size_t n, bool defaults,
                     cap_error_t *err);

#endif
