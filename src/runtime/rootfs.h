/* The container's filesystem view, built inside its new mount namespace (or, without one,
 * below the rootfs in the host's, entered by chroot):
 * rootfs propagation, the bind of the rootfs onto itself, every OCI mount
 * (bind/rbind, propagation, read-only remounts of binds, tmpfs, proc, sysfs,
 * mqueue, devpts, cgroup), the default /dev and linux.devices, pivot_root (or
 * chroot with --no-pivot), maskedPaths, readonlyPaths, a read-only root,
 * sysctl, hostname and domainname. */
#ifndef CAPSULE_RUNTIME_ROOTFS_H
#define CAPSULE_RUNTIME_ROOTFS_H

#include <stdbool.h>

#include "common/error.h"
#include "runtime/spec.h"

struct mount_options {
        unsigned long flags;       /* MS_* to set */
        unsigned long clear;       /* MS_* the options explicitly clear (rw, suid, ...) */
        unsigned long propagation; /* MS_SHARED/MS_PRIVATE/... | MS_REC, 0 if none */
        bool bind, rbind;
        bool recursive_ro;         /* "rro" */
        char *data;                /* options the kernel parses (size=, mode=, ...), comma-joined */
};

/* Turn an OCI options list into flags. Unknown options are passed as data, as runc does. */
int mount_options_parse(char *const *options, struct mount_options *out, cap_error_t *err);
void mount_options_free(struct mount_options *mo);

/* Before the runtime hooks: in the new mount namespace, with the rootfs not yet pivoted.
 * in_userns: whether the process is in a new user namespace (devices get bind-mounted then). */
int rootfs_setup(const struct spec *spec, bool in_userns, cap_error_t *err);
/* After the createContainer hooks: pivot_root (or chroot with no_pivot), then
 * maskedPaths, readonlyPaths, read-only root, sysctl, hostname and domainname. */
int rootfs_enter(const struct spec *spec, bool no_pivot, cap_error_t *err);

/* A container without a mount namespace of its own mounts in the host's, below its rootfs:
 * detach everything mounted there (delete, failed create). */
int rootfs_host_mounts_detach(const char *root, cap_error_t *err);

#endif
