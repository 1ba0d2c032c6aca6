#include "runtime/rootfs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/procfs.h"

/* Longest fd path: "/proc/self/fd/" plus an int. */
#define FD_PATH_MAX 32
#define SYMLINK_MAX_HOPS 40

struct flag_option {
        const char *name;
        bool clear;
        unsigned long flag;
};

static const struct flag_option flag_options[] = {
        { "defaults", false, 0 },
        { "ro", false, MS_RDONLY },
        { "rw", true, MS_RDONLY },
        { "suid", true, MS_NOSUID },
        { "nosuid", false, MS_NOSUID },
        { "dev", true, MS_NODEV },
        { "nodev", false, MS_NODEV },
        { "exec", true, MS_NOEXEC },
        { "noexec", false, MS_NOEXEC },
        { "sync", false, MS_SYNCHRONOUS },
        { "async", true, MS_SYNCHRONOUS },
        { "dirsync", false, MS_DIRSYNC },
        { "remount", false, MS_REMOUNT },
        { "mand", false, MS_MANDLOCK },
        { "nomand", true, MS_MANDLOCK },
        { "atime", true, MS_NOATIME },
        { "noatime", false, MS_NOATIME },
        { "diratime", true, MS_NODIRATIME },
        { "nodiratime", false, MS_NODIRATIME },
        { "relatime", false, MS_RELATIME },
        { "norelatime", true, MS_RELATIME },
        { "strictatime", false, MS_STRICTATIME },
        { "nostrictatime", true, MS_STRICTATIME },
};

struct propagation_option {
        const char *name;
        unsigned long flags;
};

static const struct propagation_option propagation_options[] = {
        { "private", MS_PRIVATE },
        { "rprivate", MS_PRIVATE | MS_REC },
        { "shared", MS_SHARED },
        { "rshared", MS_SHARED | MS_REC },
        { "slave", MS_SLAVE },
        { "rslave", MS_SLAVE | MS_REC },
        { "unbindable", MS_UNBINDABLE },
        { "runbindable", MS_UNBINDABLE | MS_REC },
};

/* statfs f_flags bits that a bind remount must repeat when they are locked
 * (a mount inherited from a more privileged user namespace). */
static const struct {
        unsigned long st, ms;
} lockable_flags[] = {
        { ST_RDONLY, MS_RDONLY },
        { ST_NOSUID, MS_NOSUID },
        { ST_NODEV, MS_NODEV },
        { ST_NOEXEC, MS_NOEXEC },
};

static unsigned long propagation_lookup(const char *name)
{
        for (size_t i = 0; i < ARRAY_SIZE(propagation_options); i++)
                if (strcmp(name, propagation_options[i].name) == 0)
                        return propagation_options[i].flags;
        return 0;
}

int mount_options_parse(char *const *options, struct mount_options *out, cap_error_t *err)
{
        struct mount_options mo = { 0 };
        size_t data_len = 0;

        for (size_t i = 0; options && options[i]; i++) {
                const char *opt = options[i];
                bool known = false;

                if (*opt == '\0')
                        continue;
                for (size_t j = 0; j < ARRAY_SIZE(flag_options); j++) {
                        if (strcmp(opt, flag_options[j].name) != 0)
                                continue;
                        if (flag_options[j].clear) {
                                mo.flags &= ~flag_options[j].flag;
                                mo.clear |= flag_options[j].flag;
                        } else {
                                mo.flags |= flag_options[j].flag;
                                mo.clear &= ~flag_options[j].flag;
                        }
                        known = true;
                        break;
                }
                if (known)
                        continue;
                unsigned long prop = propagation_lookup(opt);
                if (prop) {
                        mo.propagation = prop;
                } else if (strcmp(opt, "bind") == 0) {
                        mo.bind = true;
                        mo.flags |= MS_BIND;
                } else if (strcmp(opt, "rbind") == 0) {
                        mo.rbind = true;
                        mo.flags |= MS_BIND | MS_REC;
                } else if (strcmp(opt, "rro") == 0) {
                        mo.recursive_ro = true;
                } else if (strcmp(opt, "tmpcopyup") == 0) {
                        /* Handled by the tmpfs mount itself (rootfs_setup). */
                } else if (strcmp(opt, "idmap") == 0 || strcmp(opt, "ridmap") == 0 ||
                           str_has_prefix(opt, "idmap=") || str_has_prefix(opt, "ridmap=")) {
                        free(mo.data);
                        return cap_fail(err, EOPNOTSUPP, "mount option `%s`: idmapped mounts are not supported", opt);
                } else {
                        size_t len = strlen(opt);
                        char *nd = realloc(mo.data, data_len + len + 2);
                        if (!nd)
                                abort();
                        mo.data = nd;
                        if (data_len)
                                mo.data[data_len++] = ',';
                        memcpy(mo.data + data_len, opt, len + 1);
                        data_len += len;
                }
        }
        *out = mo;
        return 0;
}

void mount_options_free(struct mount_options *mo)
{
        free(mo->data);
        mo->data = NULL;
}

static void mount_options_freep(struct mount_options *mo)
{
        mount_options_free(mo);
}

#define cleanup_mount_options __attribute__((cleanup(mount_options_freep)))

static const char *fd_path(char buf[FD_PATH_MAX], int fd)
{
        snprintf(buf, FD_PATH_MAX, "/proc/self/fd/%d", fd);
        return buf;
}

static unsigned long locked_flags(int fd)
{
        struct statfs st;
        unsigned long flags = 0;

        if (fstatfs(fd, &st) < 0)
                return 0;
        for (size_t i = 0; i < ARRAY_SIZE(lockable_flags); i++)
                if ((unsigned long)st.f_flags & lockable_flags[i].st)
                        flags |= lockable_flags[i].ms;
        return flags;
}

enum create_mode { CREATE_NONE, CREATE_DIR, CREATE_FILE };

static int replace_fd(int *fd, int newfd)
{
        if (newfd < 0)
                return -1;
        close(*fd);
        *fd = newfd;
        return 0;
}

/* Open path inside the root directory rootfd, resolving one component at a
 * time so that neither symlinks (absolute or relative) nor ".." lead outside
 * it, as if the process were chrooted there. Missing components are created:
 * directories, and the last one as an empty file with CREATE_FILE. Returns an
 * O_PATH fd; a mount already on the target is crossed, so the fd is its root. */
static int open_in_root(int rootfd, const char *path, enum create_mode mode, cap_error_t *err)
{
        struct stat root_st;
        if (fstat(rootfd, &root_st) < 0)
                return cap_fail(err, errno, "stat container root");

        cleanup_close int cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
        if (cur < 0)
                return cap_fail(err, errno, "dup");
        cleanup_free char *work = xstrdup(path);
        const char *p = work;
        int hops = 0;

        for (;;) {
                while (*p == '/')
                        p++;
                if (*p == '\0')
                        break;
                size_t len = strcspn(p, "/");
                cleanup_free char *name = strndup(p, len);
                if (!name)
                        abort();
                p += len;
                bool last = p[strspn(p, "/")] == '\0';

                if (strcmp(name, ".") == 0)
                        continue;
                if (strcmp(name, "..") == 0) {
                        struct stat st;
                        if (fstat(cur, &st) < 0)
                                return cap_fail(err, errno, "stat `%s`", path);
                        if (st.st_dev == root_st.st_dev && st.st_ino == root_st.st_ino)
                                continue;
                        if (replace_fd(&cur, openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
                                return cap_fail(err, errno, "open `%s`", path);
                        continue;
                }

                struct stat st;
                if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT || mode == CREATE_NONE)
                                return cap_fail(err, errno, "%s", path);
                        if (last && mode == CREATE_FILE) {
                                int fd = openat(cur, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
                                if (fd < 0 && errno != EEXIST)
                                        return cap_fail(err, errno, "create `%s`", path);
                                if (fd >= 0)
                                        close(fd);
                        } else if (mkdirat(cur, name, 0755) < 0 && errno != EEXIST) {
                                return cap_fail(err, errno, "mkdir `%s`", path);
                        }
                        if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                return cap_fail(err, errno, "%s", path);
                }

                if (S_ISLNK(st.st_mode)) {
                        if (++hops > SYMLINK_MAX_HOPS)
                                return cap_fail(err, ELOOP, "%s", path);
                        char target[PATH_MAX];
                        ssize_t n = readlinkat(cur, name, target, sizeof(target) - 1);
                        if (n < 0)
                                return cap_fail(err, errno, "readlink `%s`", path);
                        target[n] = '\0';
                        if (target[0] == '/' && replace_fd(&cur, fcntl(rootfd, F_DUPFD_CLOEXEC, 0)) < 0)
                                return cap_fail(err, errno, "dup");
                        /* Continue with the link target followed by what is left. */
                        char *next = xasprintf("%s/%s", target, p);
                        free(work);
                        work = next;
                        p = work;
                        continue;
                }
                if (replace_fd(&cur, openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0)
                        return cap_fail(err, errno, "open `%s`", path);
        }
        return steal_fd(&cur);
}

/* The mountinfo fields we need; octal escapes (\040) already decoded. */
struct mountinfo {
        int id;
        char *root, *mount_point, *optional, *fstype, *super_options;
};

static void unescape_octal(char *s)
{
        char *w = s;
        for (char *r = s; *r; r++) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
                    r[3] <= '7') {
                        *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 3;
                } else {
                        *w++ = *r;
                }
        }
        *w = '\0';
}

static void mountinfo_free(struct mountinfo *mi, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(mi[i].root);
                free(mi[i].mount_point);
                free(mi[i].optional);
                free(mi[i].fstype);
                free(mi[i].super_options);
        }
        free(mi);
}

static int mountinfo_read(struct mountinfo **out, size_t *n_out, cap_error_t *err)
{
        cleanup_free char *text = NULL;
        if (read_file("/proc/self/mountinfo", &text, NULL, 0, err) < 0)
                return -1;

        size_t n = 0, cap = 64;
        struct mountinfo *mi = xmalloc0(cap * sizeof(*mi));
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                cleanup_strv char **f = strv_split(line, " ");
                size_t nf = strv_len(f), sep = 6;
                while (sep < nf && strcmp(f[sep], "-") != 0)
                        sep++;
                if (sep + 2 >= nf)
                        continue;
                if (n == cap) {
                        cap *= 2;
                        struct mountinfo *nm = realloc(mi, cap * sizeof(*mi));
                        if (!nm)
                                abort();
                        mi = nm;
                }
                struct mountinfo *e = &mi[n++];
                *e = (struct mountinfo){ 0 };
                e->id = atoi(f[0]);
                e->root = xstrdup(f[3]);
                e->mount_point = xstrdup(f[4]);
                unescape_octal(e->root);
                unescape_octal(e->mount_point);
                e->optional = xstrdup("");
                for (size_t i = 6; i < sep; i++) {
                        char *o = xasprintf("%s%s%s", e->optional, *e->optional ? " " : "", f[i]);
                        free(e->optional);
                        e->optional = o;
                }
                e->fstype = xstrdup(f[sep + 1]);
                e->super_options = xstrdup(sep + 3 < nf ? f[sep + 3] : "");
        }
        *out = mi;
        *n_out = n;
        return 0;
}

/* pivot_root refuses a new root whose parent mount is shared, and a shared
 * parent would also propagate the rootfs bind to the host: make it private. */
static int rootfs_parent_mount_private(const char *root, cap_error_t *err)
{
        struct statx stx;
        if (statx(AT_FDCWD, root, 0, STATX_MNT_ID, &stx) < 0)
                return cap_fail(err, errno, "root.path: statx `%s`", root);
        if (!(stx.stx_mask & STATX_MNT_ID))
                return cap_fail(err, ENOSYS, "root.path: mount id of `%s`", root);

        struct mountinfo *mi;
        size_t n;
        if (mountinfo_read(&mi, &n, err) < 0)
                return -1;
        int ret = 0;
        for (size_t i = 0; i < n; i++) {
                if ((unsigned long long)mi[i].id != stx.stx_mnt_id)
                        continue;
                if (strstr(mi[i].optional, "shared:") && mount(NULL, mi[i].mount_point, NULL, MS_PRIVATE, NULL) < 0)
                        ret = cap_fail(err, errno, "make `%s` private", mi[i].mount_point);
                break;
        }
        mountinfo_free(mi, n);
        return ret;
}

static int set_propagation(int fd, unsigned long propagation, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        if (propagation && mount(NULL, fd_path(buf, fd), NULL, propagation, NULL) < 0)
                return cap_fail(err, errno, "set propagation");
        return 0;
}

static int set_recursive_ro(int fd, cap_error_t *err)
{
        struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY };
        if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
                return cap_fail(err, errno, "mount_setattr rro");
        return 0;
}

/* Flags a bind remount applies: what was asked (binds ignore them on the first mount). */
static unsigned long bind_remount_flags(const struct mount_options *mo)
{
        return mo->flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
}

/* Bind source onto dest (created as a directory or a file), then remount it with flags. */
static int bind_mount(int rootfd, const char *source, const char *dest, enum create_mode create, unsigned long flags,
                      bool recursive, bool in_userns, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        cleanup_close int target = open_in_root(rootfd, dest, create, err);
        if (target < 0)
                return -1;
        if (mount(source, fd_path(buf, target), NULL, MS_BIND | (recursive ? MS_REC : 0), NULL) < 0)
                return cap_fail(err, errno, "mount %s", source);
        if (!flags)
                return 0;
        /* The fd still points below the new mount: reopen to reach its root. */
        cleanup_close int mnt = open_in_root(rootfd, dest, CREATE_NONE, err);
        if (mnt < 0)
                return -1;
        if (in_userns)
                flags |= locked_flags(mnt);
        if (mount(NULL, fd_path(buf, mnt), NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
                return cap_fail(err, errno, "remount %s", dest);
        return 0;
}

/* tmpcopyup walks the image's tree with a stack of open directories, not by recursion: a
 * deep tree must not overflow init's stack. Two fds per level bound it under RLIMIT_NOFILE. */
#define COPYUP_MAX_DEPTH 256

/* Copy the entry name of src into dst (both directory fds), keeping its mode and owner. For a
 * directory, *sub_src and *sub_dst receive the pair to copy next. */
static int copy_entry(int src, int dst, const char *name, int *sub_src, int *sub_dst, cap_error_t *err)
{
        struct stat st;
        if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return cap_fail(err, errno, "tmpcopyup: stat `%s`", name);
        if (S_ISDIR(st.st_mode)) {
                if (mkdirat(dst, name, st.st_mode & 07777) < 0)
                        return cap_fail(err, errno, "tmpcopyup: mkdir `%s`", name);
                *sub_src = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                *sub_dst = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (*sub_src < 0 || *sub_dst < 0)
                        return cap_fail(err, errno, "tmpcopyup: open `%s`", name);
        } else if (S_ISLNK(st.st_mode)) {
                char target[PATH_MAX];
                ssize_t n = readlinkat(src, name, target, sizeof(target) - 1);
                if (n < 0)
                        return cap_fail(err, errno, "tmpcopyup: readlink `%s`", name);
                target[n] = '\0';
                if (symlinkat(target, dst, name) < 0)
                        return cap_fail(err, errno, "tmpcopyup: symlink `%s`", name);
        } else if (S_ISREG(st.st_mode)) {
                cleanup_close int s = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                cleanup_close int t = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777);
                char buf[65536];
                ssize_t n = 0;
                if (s < 0 || t < 0)
                        return cap_fail(err, errno, "tmpcopyup: open `%s`", name);
                while ((n = read(s, buf, sizeof(buf))) > 0)
                        if (write_all(t, buf, (size_t)n) < 0)
                                break;
                if (n != 0)
                        return cap_fail(err, errno, "tmpcopyup: copy `%s`", name);
        } else if (mknodat(dst, name, st.st_mode, st.st_rdev) < 0) {
                return cap_fail(err, errno, "tmpcopyup: mknod `%s`", name);
        }
        if (fchownat(dst, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
            (!S_ISLNK(st.st_mode) && fchmodat(dst, name, st.st_mode & 07777, 0) < 0))
                return cap_fail(err, errno, "tmpcopyup: set owner and mode of `%s`", name);
        return 0;
}

struct copy_level {
        DIR *src;
        int dst;
};

/* Push the pair (src, dst), taking both fds; a full stack is the depth error. */
static int copy_push(struct copy_level *stack, int *depth, int src, int dst, const char *name, cap_error_t *err)
{
        DIR *d = *depth < COPYUP_MAX_DEPTH ? fdopendir(src) : NULL;
        if (!d) {
                int e = errno;
                close(src);
                close(dst);
                if (*depth >= COPYUP_MAX_DEPTH)
                        return cap_fail(err, 0, "tmpcopyup: `%s` is nested deeper than %d directories", name, COPYUP_MAX_DEPTH);
                return cap_fail(err, e, "tmpcopyup: opendir `%s`", name);
        }
        stack[(*depth)++] = (struct copy_level){ d, dst };
        return 0;
}

/* Copy the tree below src into dst (both directory fds, not taken), keeping modes and owners. */
static int copy_tree(int src, int dst, cap_error_t *err)
{
        cleanup_free struct copy_level *stack = xmalloc0(sizeof(*stack) * COPYUP_MAX_DEPTH);
        int depth = 0, ret;
        int s = openat(src, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int t = s < 0 ? -1 : fcntl(dst, F_DUPFD_CLOEXEC, 0);
        if (s < 0 || t < 0) {
                ret = cap_fail(err, errno, "tmpcopyup: open");
                cap_closep(&s);
                return ret;
        }
        ret = copy_push(stack, &depth, s, t, ".", err);
        while (ret == 0 && depth > 0) {
                struct copy_level *top = &stack[depth - 1];
                errno = 0;
                struct dirent *de = readdir(top->src);
                if (!de) {
                        if (errno)
                                ret = cap_fail(err, errno, "tmpcopyup: readdir");
                        closedir(top->src);
                        close(top->dst);
                        depth--;
                        continue;
                }
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                int sub_src = -1, sub_dst = -1;
                ret = copy_entry(dirfd(top->src), top->dst, de->d_name, &sub_src, &sub_dst, err);
                if (ret == 0 && sub_src >= 0)
                        ret = copy_push(stack, &depth, sub_src, sub_dst, de->d_name, err);
                else if (ret < 0) {
                        cap_closep(&sub_src);
                        cap_closep(&sub_dst);
                }
        }
        while (depth > 0) {
                depth--;
                closedir(stack[depth].src);
                close(stack[depth].dst);
        }
        return ret;
}

/* A filesystem mount (tmpfs, proc, ...) on dest, which must be a directory. */
static int fs_mount(int rootfd, const struct spec_mount *m, const struct mount_options *mo, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        cleanup_close int target = open_in_root(rootfd, m->destination, CREATE_DIR, err);
        if (target < 0)
                return -1;
        /* Keep the directory below the tmpfs open: it is the tmpcopyup source. */
        cleanup_close int below = -1;
        if (strcmp(m->type, "tmpfs") == 0 && strv_contains(m->options, "tmpcopyup")) {
                below = openat(target, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (below < 0)
                        return cap_fail(err, errno, "open %s", m->destination);
        }
        const char *source = m->source && *m->source ? m->source : m->type;
        if (mount(source, fd_path(buf, target), m->type, mo->flags, mo->data) < 0)
                return cap_fail(err, errno, "mount %s", source);
        if (below >= 0) {
                cleanup_close int mnt = open_in_root(rootfd, m->destination, CREATE_NONE, err);
                if (mnt < 0)
                        return -1;
                cleanup_close int dir = openat(mnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dir < 0)
                        return cap_fail(err, errno, "open %s", m->destination);
                if (copy_tree(below, dir, err) < 0)
                        return -1;
        }
        return 0;
}

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

static int cgroup_mount(int rootfd, const struct spec *spec, const struct spec_mount *m,
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

static bool is_bind(const struct spec_mount *m, const struct mount_options *mo)
{
        return mo->bind || mo->rbind || (m->type && strcmp(m->type, "bind") == 0);
}

/* Filesystems a user namespace may not mount without owning the matching
 * namespace; runc then binds the host's instance. */
static const char *userns_fallback_source(const char *type)
{
        if (strcmp(type, "sysfs") == 0)
                return "/sys";
        if (strcmp(type, "mqueue") == 0)
                return "/dev/mqueue";
        return NULL;
}

/* Whether dest resolves to the root itself. In the host's mount namespace a mount there would
 * cover the rootfs directory, where it cannot be told from a mount the host made. */
static bool is_root(int rootfd, const char *dest)
{
        cleanup_error cap_error_t ignored = NULL;
        cleanup_close int fd = open_in_root(rootfd, dest, CREATE_NONE, &ignored);
        struct stat a, b;
        return fd >= 0 && fstat(fd, &a) == 0 && fstat(rootfd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int mount_entry(int rootfd, const struct spec *spec, const struct spec_mount *m, bool in_userns,
                       cap_error_t *err)
{
        cleanup_mount_options struct mount_options mo = { 0 };
        if (mount_options_parse(m->options, &mo, err) < 0)
                return -1;
        if (!m->destination || m->destination[0] != '/')
                return cap_fail(err, EINVAL, "destination must be an absolute path");
        if (!spec_namespace(spec, CLONE_NEWNS) && is_root(rootfd, m->destination))
                return cap_fail(err, EINVAL, "destination is the rootfs itself: that needs a mount namespace");

        int ret;
        if (is_bind(m, &mo)) {
                if (!m->source)
                        return cap_fail(err, EINVAL, "bind mount without a source");
                struct stat st;
                if (stat(m->source, &st) < 0)
                        return cap_fail(err, errno, "mount %s", m->source);
                ret = bind_mount(rootfd, m->source, m->destination, S_ISDIR(st.st_mode) ? CREATE_DIR : CREATE_FILE,
                                 bind_remount_flags(&mo), mo.rbind, in_userns, err);
        } else if (!m->type || !*m->type) {
                return cap_fail(err, EINVAL, "type is required unless the mount is a bind");
        } else if (strcmp(m->type, "cgroup") == 0) {
                ret = cgroup_mount(rootfd, spec, m, &mo, in_userns, err);
        } else {
                ret = fs_mount(rootfd, m, &mo, err);
                const char *fallback = userns_fallback_source(m->type);
                if (ret < 0 && in_userns && fallback && (*err)->errnum == EPERM) {
                        /* Without the host's instance to bind, the EPERM is the error that explains. */
                        cleanup_error cap_error_t bind_err = NULL;
                        ret = bind_mount(rootfd, fallback, m->destination, CREATE_DIR, bind_remount_flags(&mo),
                                         true, true, &bind_err);
                        if (ret == 0)
                                cap_error_free(err);
                }
        }
        if (ret < 0)
                return -1;
        if (mo.propagation || mo.recursive_ro) {
                cleanup_close int mnt = open_in_root(rootfd, m->destination, CREATE_NONE, err);
                if (mnt < 0)
                        return -1;
                if (mo.recursive_ro && set_recursive_ro(mnt, err) < 0)
                        return -1;
                if (set_propagation(mnt, mo.propagation, err) < 0)
                        return -1;
        }
        return 0;
}

struct default_device {
        const char *name;
        unsigned int major, minor;
};

static const struct default_device default_devices[] = {
        { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
};

static const char *const default_links[][2] = {
        { "fd", "/proc/self/fd" },
        { "stdin", "/proc/self/fd/0" },
        { "stdout", "/proc/self/fd/1" },
        { "stderr", "/proc/self/fd/2" },
};

/* Create an empty file at dirfd/base and bind source onto it. */
static int device_bind(int dirfd, const char *base, const char *source, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        int fd = openat(dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return cap_fail(err, errno, "create");
        close(fd);
        cleanup_close int target = openat(dirfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (target < 0)
                return cap_fail(err, errno, "open");
        if (mount(source, fd_path(buf, target), NULL, MS_BIND, NULL) < 0)
                return cap_fail(err, errno, "bind mount %s", source);
        return 0;
}

/* mknod was refused (the device cgroup may allow a device but not mknod): bind the host's
 * node at the same path instead, as runc does, if it is the very same device. */
static int device_bind_host(int dirfd, const char *base, const char *path, mode_t type, unsigned int major,
                            unsigned int minor, cap_error_t *err)
{
        char src[FD_PATH_MAX];
        struct stat st;
        cleanup_close int host = open(path, O_PATH | O_CLOEXEC);
        if (host < 0)
                return cap_fail(err, EPERM, "mknod (no host node `%s` to bind instead)", path);
        if (fstat(host, &st) < 0)
                return cap_fail(err, errno, "stat the host's `%s`", path);
        if ((st.st_mode & S_IFMT) != type || st.st_rdev != makedev(major, minor))
                return cap_fail(err, EPERM, "mknod (the host's `%s` is another device, not bound instead)", path);
        return device_bind(dirfd, base, fd_path(src, host), err);
}

/* Create one device node at path inside the root: mknod, or a bind of the
 * host's node at the same path where mknod is not allowed (in a user namespace;
 * or refused by the device cgroup, if the host's node is the same device).
 * An existing node is kept, so linux.devices win over the defaults. */
static int device_create(int rootfd, const char *path, mode_t type, unsigned int major, unsigned int minor,
                         mode_t mode, uid_t uid, gid_t gid, bool in_userns, cap_error_t *err)
{
        cleanup_free char *dir = xstrdup(path);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        if (slash)
                *slash = '\0';
        if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
                return cap_fail(err, EINVAL, "invalid device path");
        cleanup_close int dirfd = open_in_root(rootfd, slash ? dir : "/", CREATE_DIR, err);
        if (dirfd < 0)
                return -1;

        if (in_userns) {
                struct stat st;
                if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        return 0;
                return device_bind(dirfd, base, path, err);
        }
        if (mknodat(dirfd, base, type | (mode & 07777), makedev(major, minor)) < 0) {
                if (errno == EEXIST)
                        return 0;
                if (errno == EPERM)
                        return device_bind_host(dirfd, base, path, type, major, minor, err);
                return cap_fail(err, errno, "mknod");
        }
        /* mknod applied the umask; set the exact mode. */
        if (fchmodat(dirfd, base, mode & 07777, 0) < 0)
                return cap_fail(err, errno, "chmod");
        if (fchownat(dirfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                return cap_fail(err, errno, "chown");
        return 0;
}

static int spec_device_create(int rootfd, const struct spec_device *d, bool in_userns, cap_error_t *err)
{
        mode_t type;
        switch (d->type) {
        case 'c':
        case 'u':
                type = S_IFCHR;
                break;
        case 'b':
                type = S_IFBLK;
                break;
        case 'p':
                type = S_IFIFO;
                break;
        default:
                return cap_fail(err, EINVAL, "type: unknown device type `%c`", d->type);
        }
        mode_t mode = d->file_mode.set ? (mode_t)d->file_mode.v : 0666;
        return device_create(rootfd, d->path, type, (unsigned int)d->major, (unsigned int)d->minor, mode,
                             d->uid.set ? (uid_t)d->uid.v : 0, d->gid.set ? (gid_t)d->gid.v : 0, in_userns, err);
}

static bool dev_is_bind_mounted(const struct spec *spec)
{
        for (size_t i = 0; i < spec->n_mounts; i++) {
                const struct spec_mount *m = &spec->mounts[i];
                const char *d = m->destination;
                if (!d || strncmp(d, "/dev", 4) != 0 || d[4 + strspn(d + 4, "/")] != '\0')
                        continue;
                struct mount_options mo = { 0 };
                cap_error_t ignored = NULL;
                if (mount_options_parse(m->options, &mo, &ignored) < 0) {
                        cap_error_free(&ignored);
                        continue;
                }
                bool bind = is_bind(m, &mo);
                mount_options_free(&mo);
                if (bind)
                        return true;
        }
        return false;
}

/* /dev as runc sets it up unless /dev is bind-mounted: linux.devices, the
 * default nodes and the standard links. */
static int dev_setup(int rootfd, const struct spec *spec, bool in_userns, cap_error_t *err)
{
        for (size_t i = 0; i < spec->linux.n_devices; i++) {
                const struct spec_device *d = &spec->linux.devices[i];
                if (!d->path || d->path[0] != '/')
                        return cap_fail(err, EINVAL, "linux.devices[%zu]: path must be absolute", i);
                if (spec_device_create(rootfd, d, in_userns, err) < 0)
                        return cap_error_prefix(err, "linux.devices[%zu] (%s)", i, d->path);
        }
        for (size_t i = 0; i < ARRAY_SIZE(default_devices); i++) {
                const struct default_device *d = &default_devices[i];
                cleanup_free char *path = xasprintf("/dev/%s", d->name);
                if (device_create(rootfd, path, S_IFCHR, d->major, d->minor, 0666, 0, 0, in_userns, err) < 0)
                        return cap_error_prefix(err, "%s", path);
        }

        cleanup_close int dev = open_in_root(rootfd, "/dev", CREATE_DIR, err);
        if (dev < 0)
                return -1;
        cleanup_close int devdir = openat(dev, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (devdir < 0)
                return cap_fail(err, errno, "open /dev");
        for (size_t i = 0; i < ARRAY_SIZE(default_links); i++)
                if (symlinkat(default_links[i][1], devdir, default_links[i][0]) < 0 && errno != EEXIST)
                        return cap_fail(err, errno, "symlink /dev/%s", default_links[i][0]);
        if (access("/proc/kcore", F_OK) == 0 && symlinkat("/proc/kcore", devdir, "core") < 0 && errno != EEXIST)
                return cap_fail(err, errno, "symlink /dev/core");
        /* The devpts instance mounted on /dev/pts brings its own ptmx. */
        if (unlinkat(devdir, "ptmx", 0) < 0 && errno != ENOENT)
                return cap_fail(err, errno, "remove /dev/ptmx");
        if (symlinkat("pts/ptmx", devdir, "ptmx") < 0)
                return cap_fail(err, errno, "symlink /dev/ptmx");
        return 0;
}

static int rootfs_propagation_flags(const struct spec *spec, unsigned long *out, cap_error_t *err)
{
        const char *p = spec->linux.rootfs_propagation;
        *out = 0;
        if (!p || !*p)
                return 0;
        *out = propagation_lookup(p);
        if (!*out)
                return cap_fail(err, EINVAL, "linux.rootfsPropagation: unknown propagation `%s`", p);
        return 0;
}

/* In the container's mount namespace: nothing mounted from now on may reach the host, and the
 * rootfs becomes a mount point, which pivot_root needs. */
static int rootfs_private_root(const char *root, unsigned long prop, const char *prop_name, cap_error_t *err)
{
        if (mount(NULL, "/", NULL, prop ? prop : MS_SLAVE | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "make / %s", prop ? prop_name : "rslave");
        if (rootfs_parent_mount_private(root, err) < 0)
                return -1;
        if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "root.path: bind mount `%s`", root);
        return 0;
}

int rootfs_setup(const struct spec *spec, bool in_userns, cap_error_t *err)
{
        const char *root = spec->root_path;
        unsigned long prop;

        if (!root || !*root)
                return cap_fail(err, EINVAL, "root.path: missing");
        if (rootfs_propagation_flags(spec, &prop, err) < 0)
                return -1;
        /* An unbindable / could not be bound from: rootfs_enter makes the new / unbindable
         * once everything is in place. */
        if (prop & MS_UNBINDABLE)
                prop = 0;
        /* Without a mount namespace of its own (as runc allows), the host's mount tree is left
         * as it is: the config's mounts go below the rootfs, which is entered by chroot. */
        if (spec_namespace(spec, CLONE_NEWNS) && rootfs_private_root(root, prop, spec->linux.rootfs_propagation, err) < 0)
                return -1;
        cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return cap_fail(err, errno, "root.path: open `%s`", root);

        for (size_t i = 0; i < spec->n_mounts; i++)
                if (mount_entry(rootfd, spec, &spec->mounts[i], in_userns, err) < 0)
                        return cap_error_prefix(err, "mounts[%zu] (%s)", i,
                                                spec->mounts[i].destination ? spec->mounts[i].destination : "");
        if (!dev_is_bind_mounted(spec) && dev_setup(rootfd, spec, in_userns, err) < 0)
                return -1;
        return 0;
}

static int pivot_into(const char *root, cap_error_t *err)
{
        cleanup_close int oldroot = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (oldroot < 0)
                return cap_fail(err, errno, "open /");
        cleanup_close int newroot = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (newroot < 0)
                return cap_fail(err, errno, "root.path: open `%s`", root);
        if (fchdir(newroot) < 0)
                return cap_fail(err, errno, "root.path: chdir `%s`", root);
        /* Stack the old root under the new one, then detach it from there. */
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return cap_fail(err, errno, "pivot_root `%s`", root);
        if (fchdir(oldroot) < 0)
                return cap_fail(err, errno, "chdir to the old root");
        /* The unmount must not propagate to the host's mounts. */
        if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "make the old root rslave");
        if (umount2(".", MNT_DETACH) < 0)
                return cap_fail(err, errno, "unmount the old root");
        if (chdir("/") < 0)
                return cap_fail(err, errno, "chdir /");
        return 0;
}

static int chroot_into(const char *root, cap_error_t *err)
{
        if (chdir(root) < 0)
                return cap_fail(err, errno, "root.path: chdir `%s`", root);
        if (mount(root, "/", NULL, MS_MOVE, NULL) < 0)
                return cap_fail(err, errno, "move `%s` to /", root);
        if (chroot(".") < 0)
                return cap_fail(err, errno, "chroot `%s`", root);
        if (chdir("/") < 0)
                return cap_fail(err, errno, "chdir /");
        return 0;
}

/* The mount fd refers to, or -1. */
static long long mount_id_of(int fd)
{
        struct statx stx;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) < 0 || !(stx.stx_mask & STATX_MNT_ID))
                return -1;
        return (long long)stx.stx_mnt_id;
}

int rootfs_host_mounts_detach(const char *root, cap_error_t *err)
{
        cleanup_free char *real = realpath(root, NULL);
        if (!real)
                return cap_fail(err, errno, "root.path: `%s`", root);
        cleanup_close int rootfd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return cap_fail(err, errno, "root.path: open `%s`", real);
        struct mountinfo *mi;
        size_t n;
        if (mountinfo_read(&mi, &n, err) < 0)
                return -1;
        size_t len = strlen(real);
        int ret = 0;
        /* Newest first: submounts, and the top of a stack, go before what they cover. */
        for (size_t i = n; i-- > 0;) {
                const char *mp = mi[i].mount_point;
                if (strncmp(mp, real, len) != 0 || mp[len] != '/' || mp[len + 1] == '\0')
                        continue;
                /* The container could have swapped a directory on the way for a symlink: reach
                 * the mount beneath the rootfs, following none, and check it is that mount. */
                struct open_how how = { .flags = O_PATH | O_CLOEXEC,
                                        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
                cleanup_close int fd = (int)syscall(SYS_openat2, rootfd, mp + len + 1, &how, sizeof(how));
                if (fd < 0 || mount_id_of(fd) != mi[i].id)
                        continue;
                char buf[FD_PATH_MAX];
                if (umount2(fd_path(buf, fd), MNT_DETACH) < 0 && ret == 0)
                        ret = cap_fail(err, errno, "unmount `%s`", mp);
        }
        mountinfo_free(mi, n);
        return ret;
}

/* In the host's mount namespace: chroot only; moving the rootfs onto / (--no-pivot) would
 * move it over the host's /. */
static int chroot_only(const char *root, cap_error_t *err)
{
        if (chdir(root) < 0)
                return cap_fail(err, errno, "root.path: chdir `%s`", root);
        if (chroot(".") < 0)
                return cap_fail(err, errno, "chroot `%s`", root);
        if (chdir("/") < 0)
                return cap_fail(err, errno, "chdir /");
        return 0;
}

static const char *const ipc_sysctls[] = {
        "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
        "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
};

/* Only namespaced sysctls may be set, and only in a namespace of the
 * container's own, as runc's validation has it. */
static int sysctl_validate(const struct spec *spec, const char *key, cap_error_t *err)
{
        cleanup_strv char **parts = strv_split(key, "./");
        size_t n_parts = 0;
        for (const char *c = key; *c; c++)
                n_parts += *c == '.' || *c == '/';
        if (strv_len(parts) != n_parts + 1 || strv_contains(parts, ".."))
                return cap_fail(err, EINVAL, "linux.sysctl.%s: invalid key", key);

        bool ipc = str_has_prefix(key, "fs.mqueue.");
        for (size_t i = 0; i < ARRAY_SIZE(ipc_sysctls); i++)
                ipc = ipc || strcmp(key, ipc_sysctls[i]) == 0;
        if (ipc) {
                if (!spec_namespace(spec, CLONE_NEWIPC))
                        return cap_fail(err, EPERM, "linux.sysctl.%s: not allowed in the host's IPC namespace",
                                        key);
                return 0;
        }
        if (str_has_prefix(key, "net.")) {
                if (!spec_namespace(spec, CLONE_NEWNET))
                        return cap_fail(err, EPERM,
                                        "linux.sysctl.%s: not allowed in the host's network namespace", key);
                return 0;
        }
        if (spec_namespace(spec, CLONE_NEWUTS) != NULL) {
                if (strcmp(key, "kernel.domainname") == 0)
                        return 0;
                if (strcmp(key, "kernel.hostname") == 0)
                        return cap_fail(err, EPERM, "linux.sysctl.%s: not allowed, set the \"hostname\" field",
                                        key);
        }
        return cap_fail(err, EPERM, "linux.sysctl.%s: not in a separate kernel namespace", key);
}

static int validate_enter(const struct spec *spec, cap_error_t *err)
{
        char *const *sysctl = spec->linux.sysctl;
        for (size_t i = 0; sysctl && sysctl[i] && sysctl[i + 1]; i += 2)
                if (sysctl_validate(spec, sysctl[i], err) < 0)
                        return -1;
        bool uts = spec_namespace(spec, CLONE_NEWUTS) != NULL;
        if (spec->hostname && *spec->hostname && !uts)
                return cap_fail(err, EPERM, "hostname: setting it requires a private UTS namespace");
        if (spec->domainname && *spec->domainname && !uts)
                return cap_fail(err, EPERM, "domainname: setting it requires a private UTS namespace");
        return 0;
}

static int sysctl_write(const struct spec *spec, cap_error_t *err)
{
        char *const *sysctl = spec->linux.sysctl;
        for (size_t i = 0; sysctl && sysctl[i] && sysctl[i + 1]; i += 2) {
                cleanup_free char *path = xasprintf("/proc/sys/%s", sysctl[i]);
                for (char *c = path + strlen("/proc/sys/"); *c; c++)
                        if (*c == '.')
                                *c = '/';
                if (procfs_write(path, sysctl[i + 1], strlen(sysctl[i + 1]), err) < 0)
                        return cap_error_prefix(err, "linux.sysctl.%s", sysctl[i]);
        }
        return 0;
}

static unsigned long path_locked_flags(const char *path)
{
        cleanup_close int fd = open(path, O_PATH | O_CLOEXEC);
        return fd < 0 ? 0 : locked_flags(fd);
}

static int readonly_paths_apply(const struct spec *spec, cap_error_t *err)
{
        char *const *paths = spec->linux.readonly_paths;
        for (size_t i = 0; paths && paths[i]; i++) {
                const char *p = paths[i];
                if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return cap_fail(err, errno, "linux.readonlyPaths[%zu] (%s): bind mount", i, p);
                }
                unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
                if (mount(NULL, p, NULL, flags | path_locked_flags(p), NULL) < 0)
                        return cap_fail(err, errno, "linux.readonlyPaths[%zu] (%s): remount read-only", i, p);
        }
        return 0;
}

static int masked_paths_apply(const struct spec *spec, cap_error_t *err)
{
        char *const *paths = spec->linux.masked_paths;
        for (size_t i = 0; paths && paths[i]; i++) {
                const char *p = paths[i];
                struct stat st;
                if (stat(p, &st) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return cap_fail(err, errno, "linux.maskedPaths[%zu] (%s): stat", i, p);
                }
                int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL)
                                            : mount("/dev/null", p, NULL, MS_BIND, NULL);
                if (r < 0)
                        return cap_fail(err, errno, "linux.maskedPaths[%zu] (%s): mount", i, p);
        }
        return 0;
}

int rootfs_enter(const struct spec *spec, bool no_pivot, cap_error_t *err)
{
        unsigned long prop;

        if (validate_enter(spec, err) < 0 || rootfs_propagation_flags(spec, &prop, err) < 0)
                return -1;
        if (!spec_namespace(spec, CLONE_NEWNS)) {
                if (chroot_only(spec->root_path, err) < 0)
                        return -1;
        } else if ((no_pivot ? chroot_into(spec->root_path, err) : pivot_into(spec->root_path, err)) < 0) {
                return -1;
        }

        /* runc's order: sysctls before readonlyPaths (which usually hold /proc/sys). */
        if (spec->hostname && *spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
                return cap_fail(err, errno, "hostname: sethostname `%s`", spec->hostname);
        if (spec->domainname && *spec->domainname && setdomainname(spec->domainname, strlen(spec->domainname)) < 0)
                return cap_fail(err, errno, "domainname: setdomainname `%s`", spec->domainname);
        if (sysctl_write(spec, err) < 0 || readonly_paths_apply(spec, err) < 0 || masked_paths_apply(spec, err) < 0)
                return -1;
        if (spec->root_readonly) {
                unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | path_locked_flags("/");
                if (mount(NULL, "/", NULL, flags, NULL) < 0)
                        return cap_fail(err, errno, "root.readonly: remount / read-only");
        }
        /* Last: the paths above are bind mounts, which an unbindable / would refuse. */
        if (prop && mount(NULL, "/", NULL, prop, NULL) < 0)
                return cap_fail(err, errno, "linux.rootfsPropagation: apply `%s` to /", spec->linux.rootfs_propagation);
        return 0;
}
