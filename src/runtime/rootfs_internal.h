/* Shared between rootfs.c (setup, pivot_root, sysctls, masked and readonly paths),
 * rootfs_options.c, rootfs_mount.c, rootfs_cgroup.c and rootfs_dev.c.
 * Not part of the public contract. */
#ifndef CAPSULE_RUNTIME_ROOTFS_INTERNAL_H
#define CAPSULE_RUNTIME_ROOTFS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/rootfs.h"

/* Longest fd path: "/proc/self/fd/" plus an int. */
#define FD_PATH_MAX 32

enum create_mode { CREATE_NONE, CREATE_DIR, CREATE_FILE };

/* The mountinfo fields we need; octal escapes (\040) already decoded. */
struct mountinfo {
        int id;
        char *root, *mount_point, *optional, *fstype, *super_options;
};

/* rootfs_options.c */
unsigned long propagation_lookup(const char *name);

/* rootfs_mount.c */
const char *fd_path(char buf[FD_PATH_MAX], int fd);
unsigned long locked_flags(int fd);
int open_in_root(int rootfd, const char *path, enum create_mode mode, cap_error_t *err);
void mountinfo_free(struct mountinfo *mi, size_t n);
int mountinfo_read(struct mountinfo **out, size_t *n_out, cap_error_t *err);
int rootfs_parent_mount_private(const char *root, cap_error_t *err);
unsigned long bind_remount_flags(const struct mount_options *mo);
int bind_mount(int rootfd, const char *source, const char *dest, enum create_mode create, unsigned long flags,
               bool recursive, bool in_userns, cap_error_t *err);
bool is_bind(const struct spec_mount *m, const struct mount_options *mo);
int mount_entry(int rootfd, const struct spec *spec, const struct spec_mount *m, bool in_userns,
                cap_error_t *err);

/* rootfs_cgroup.c */
int cgroup_mount(int rootfd, const struct spec *spec, const struct spec_mount *m,
                 const struct mount_options *mo, bool in_userns, cap_error_t *err);

/* rootfs_dev.c */
bool dev_is_bind_mounted(const struct spec *spec);
int dev_setup(int rootfd, const struct spec *spec, bool in_userns, cap_error_t *err);

#endif
