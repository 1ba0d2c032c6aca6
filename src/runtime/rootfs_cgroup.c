/* The cgroup mount: cgroup2, or a tmpfs of v1 hierarchies, as the host's layout has it. */
#include "runtime/rootfs_internal.h"

#include <linux/magic.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/util.h"

enum cgroup_layout { CGROUP_LAYOUT_V1, CGROUP_LAYOUT_V2, CGROUP_LAYOUT_HYBRID };

static int cgroup_layout_detect(enum cgroup_layout *out, cap_error_t *err)
{
        struct statfs st;
        if (statfs("/sys/fs/cgroup", &st) < 0)
                return cap_fail(err, errno, "statfs /sys/fs/cgroup");
        if (st.f_type == CGROUP2_SUPER_MAGIC) {
                *out = CGROUP_LAYOUT_V2;
                return 0;
        }
        if (statfs("/sys/fs/cgroup/unified", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC)
                *out = CGROUP_LAYOUT_HYBRID;
        else
                *out = CGROUP_LAYOUT_V1;
        return 0;
}

/* The host directory of the caller's own cgroup in a hierarchy mounted at e,
 * given its path from /proc/self/cgroup. */
static char *cgroup_host_dir(const struct mountinfo *e, const char *cg_path)
{
        size_t rl = strlen(e->root);
        if (strcmp(e->root, "/") == 0)
                return xasprintf("%s%s", e->mount_point, cg_path);
        if (strncmp(cg_path, e->root, rl) == 0 && (cg_path[rl] == '/' || cg_path[rl] == '\0'))
                return xasprintf("%s%s", e->mount_point, cg_path + rl);
        return xstrdup(e->mount_point);
}

static bool options_contain(const char *list, const char *opt)
{
        cleanup_strv char **v = strv_split(list, ",");
        return strv_contains(v, opt);
}

/* Mount one hierarchy at dest/name: its own filesystem in a cgroup namespace
 * (where it shows the namespace root), else a bind of the container's cgroup. */
static int cgroup_hierarchy_mount(int rootfd, const char *dest, const char *name, const struct mountinfo *e,
                                  const char *cg_path, const char *fstype, const char *data, bool cgroupns,
                                  unsigned long flags, bool in_userns, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        cleanup_free char *sub = xasprintf("%s/%s", dest, name);
        if (cgroupns) {
                cleanup_close int target = open_in_root(rootfd, sub, CREATE_DIR, err);
                if (target < 0)
                        return -1;
                if (mount(fstype, fd_path(buf, target), fstype, flags, data) < 0)
                        return cap_fail(err, errno, "mount %s %s", fstype, data ? data : "");
                return 0;
        }
        cleanup_free char *source = cgroup_host_dir(e, cg_path);
        return bind_mount(rootfd, source, sub, CREATE_DIR, flags, false, in_userns, err);
}

static int cgroup_mount_v2(int rootfd, const struct spec_mount *m, const struct mount_options *mo, bool in_userns,
                           cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        cleanup_close int target = open_in_root(rootfd, m->destination, CREATE_DIR, err);
        if (target < 0)
                return -1;
        if (mount("cgroup2", fd_path(buf, target), "cgroup2", mo->flags, mo->data) == 0)
                return 0;
        /* Without the rights to mount cgroup2 (no cgroup namespace of our own),
         * show the container's own cgroup directory instead. */
        if (errno != EPERM && errno != EBUSY)
                return cap_fail(err, errno, "mount cgroup2");
        cleanup_free char *self = NULL;
        if (read_file("/proc/self/cgroup", &self, NULL, 0, err) < 0)
                return -1;
        const char *path = str_has_prefix(self, "0::") ? self + 3 : "/";
        cleanup_free char *source = xasprintf("/sys/fs/cgroup%.*s", (int)strcspn(path, "\n"), path);
        return bind_mount(rootfd, source, m->destination, CREATE_DIR, bind_remount_flags(mo), false, in_userns, err);
}

/* cgroup v1 and hybrid: a tmpfs holding one directory per hierarchy (and
 * "unified" for the v2 part of a hybrid host), as runc does. */
static int cgroup_mount_v1(int rootfd, const struct spec_mount *m, const struct mount_options *mo, bool cgroupns,
                           bool hybrid, bool in_userns, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        unsigned long flags = bind_remount_flags(mo);
        {
                cleanup_close int target = open_in_root(rootfd, m->destination, CREATE_DIR, err);
                if (target < 0)
                        return -1;
                if (mount("tmpfs", fd_path(buf, target), "tmpfs", flags & ~MS_RDONLY, "mode=755") < 0)
                        return cap_fail(err, errno, "mount tmpfs");
        }
        cleanup_close int tmpfs = open_in_root(rootfd, m->destination, CREATE_NONE, err);
        if (tmpfs < 0)
                return -1;

        cleanup_free char *self = NULL;
        if (read_file("/proc/self/cgroup", &self, NULL, 0, err) < 0)
                return -1;
        struct mountinfo *mi;
        size_t n_mi;
        if (mountinfo_read(&mi, &n_mi, err) < 0)
                return -1;

        int ret = 0;
        char *save = NULL;
        for (char *line = strtok_r(self, "\n", &save); line && ret == 0; line = strtok_r(NULL, "\n", &save)) {
                char *ctrls = strchr(line, ':');
                char *cg_path = ctrls ? strchr(ctrls + 1, ':') : NULL;
                if (!cg_path)
                        continue;
                *ctrls++ = '\0';
                *cg_path++ = '\0';
                cleanup_strv char **names = strv_split(ctrls, ",");
                const char *fstype = names[0] ? "cgroup" : "cgroup2";
                if (!names[0] && !hybrid)
                        continue;
                const struct mountinfo *e = NULL;
                for (size_t i = 0; i < n_mi && !e; i++) {
                        if (strcmp(mi[i].fstype, fstype) != 0)
                                continue;
                        if (!names[0] || options_contain(mi[i].super_options, names[0]))
                                e = &mi[i];
                }
                if (!e)
                        continue;
                const char *base = strrchr(e->mount_point, '/');
                base = base ? base + 1 : e->mount_point;
                ret = cgroup_hierarchy_mount(rootfd, m->destination, base, e, cg_path, fstype,
                                             names[0] ? ctrls : NULL, cgroupns, flags, in_userns, err);
                /* Co-mounted controllers ("cpu,cpuacct") get a link per name. */
                for (char **c = names; ret == 0 && strchr(base, ',') && *c; c++)
                        if (strcmp(*c, base) != 0 && symlinkat(base, tmpfs, *c) < 0 && errno != EEXIST)
                                ret = cap_fail(err, errno, "symlink %s/%s", m->destination, *c);
        }
        mountinfo_free(mi, n_mi);
        if (ret < 0)
                return -1;
        if ((flags & MS_RDONLY) && mount(NULL, fd_path(buf, tmpfs), NULL, MS_REMOUNT | flags, "mode=755") < 0)
                return cap_fail(err, errno, "remount tmpfs read-only");
        return 0;
}

int cgroup_mount(int rootfd, const struct spec *spec, const struct spec_mount *m,
                        const struct mount_options *mo, bool in_userns, cap_error_t *err)
{
        enum cgroup_layout layout;
        if (cgroup_layout_detect(&layout, err) < 0)
                return -1;
        if (layout == CGROUP_LAYOUT_V2)
                return cgroup_mount_v2(rootfd, m, mo, in_userns, err);
        return cgroup_mount_v1(rootfd, m, mo, spec_namespace(spec, CLONE_NEWCGROUP) != NULL,
                               layout == CGROUP_LAYOUT_HYBRID, in_userns, err);
}
