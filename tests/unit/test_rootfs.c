/* rootfs: option parsing in-process; everything that mounts runs in a forked
 * child with its own mount namespace (so nothing reaches the host), checks
 * from inside the container view and reports through its exit status. */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "runtime/rootfs.h"

/* In a child: print what failed and exit non-zero. */
#define EXPECT(cond)                                                                          \
        do {                                                                                  \
                if (!(cond)) {                                                                \
                        fprintf(stderr, "%s:%d: child check failed: %s (errno %d)\n", __FILE__, \
                                __LINE__, #cond, errno);                                      \
                        _exit(1);                                                             \
                }                                                                             \
        } while (0)

static bool parse_ok(char **opts, struct mount_options *mo)
{
        cap_error_t err = NULL;
        int r = mount_options_parse(opts, mo, &err);
        cap_error_free(&err);
        return r == 0;
}

TEST(options_flags)
{
        struct mount_options mo;
        char *opts[] = { "defaults", "ro", "nosuid", "nodev", "noexec", "sync", "dirsync", "mand", "noatime",
                         "nodiratime", "relatime", "strictatime", NULL };
        CHECK(parse_ok(opts, &mo));
        CHECK(mo.flags == (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_SYNCHRONOUS | MS_DIRSYNC |
                           MS_MANDLOCK | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME));
        CHECK(mo.clear == 0 && mo.propagation == 0 && mo.data == NULL);
        CHECK(!mo.bind && !mo.rbind && !mo.recursive_ro);
        mount_options_free(&mo);
}

TEST(options_clear_and_last_wins)
{
        struct mount_options mo;
        char *opts[] = { "ro", "rw", "nosuid", "suid", "dev", "exec", "async", "nomand", "atime", "diratime",
                         "norelatime", "nostrictatime", "noexec", NULL };
        CHECK(parse_ok(opts, &mo));
        CHECK(mo.flags == MS_NOEXEC);
        CHECK(mo.clear == (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_SYNCHRONOUS | MS_MANDLOCK | MS_NOATIME |
                           MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME));
        mount_options_free(&mo);
}

TEST(options_bind_propagation_data)
{
        struct mount_options mo;
        char *opts[] = { "rbind", "size=1m", "rprivate", "remount", "mode=755", "rslave", "rro", "tmpcopyup", NULL };
        CHECK(parse_ok(opts, &mo));
        CHECK(mo.rbind && !mo.bind && mo.recursive_ro);
        CHECK(mo.flags == (MS_BIND | MS_REC | MS_REMOUNT));
        CHECK(mo.propagation == (MS_SLAVE | MS_REC));
        CHECK_STR(mo.data, "size=1m,mode=755");
        mount_options_free(&mo);

        static const struct {
                const char *name;
                unsigned long flags;
        } props[] = {
                { "private", MS_PRIVATE },       { "rprivate", MS_PRIVATE | MS_REC },
                { "shared", MS_SHARED },         { "rshared", MS_SHARED | MS_REC },
                { "slave", MS_SLAVE },           { "rslave", MS_SLAVE | MS_REC },
                { "unbindable", MS_UNBINDABLE }, { "runbindable", MS_UNBINDABLE | MS_REC },
        };
        for (size_t i = 0; i < ARRAY_SIZE(props); i++) {
                char *one[] = { (char *)props[i].name, "bind", NULL };
                CHECK(parse_ok(one, &mo));
                CHECK(mo.propagation == props[i].flags && mo.bind && mo.flags == MS_BIND && !mo.data);
                mount_options_free(&mo);
        }
        CHECK(parse_ok(NULL, &mo));
        CHECK(mo.flags == 0 && mo.data == NULL);
}

TEST(options_idmap_rejected)
{
        struct mount_options mo;
        cap_error_t err = NULL;
        char *opts[] = { "rbind", "idmap", NULL };
        CHECK(mount_options_parse(opts, &mo, &err) < 0);
        CHECK(err && strstr(err->msg, "idmap") && strstr(err->msg, "not supported"));
        cap_error_free(&err);
        char *ropts[] = { "ridmap", NULL };
        CHECK(mount_options_parse(ropts, &mo, &err) < 0);
        cap_error_free(&err);
}

struct fixture {
        char base[64];
        char rootfs[96], hostdir[96], hostfile[96];
};

static int write_text(const char *path, const char *text)
{
        cap_error_t err = NULL;
        int r = write_file(path, text, strlen(text), &err);
        cap_error_free(&err);
        return r;
}

static bool fixture_make(struct fixture *fx)
{
        strcpy(fx->base, "/tmp/capsule-test-rootfs-XXXXXX");
        if (!mkdtemp(fx->base))
                return false;
        snprintf(fx->rootfs, sizeof(fx->rootfs), "%s/rootfs", fx->base);
        snprintf(fx->hostdir, sizeof(fx->hostdir), "%s/hostdir", fx->base);
        snprintf(fx->hostfile, sizeof(fx->hostfile), "%s/hostfile", fx->base);
        static const char *const dirs[] = { "rootfs", "rootfs/proc", "rootfs/dev", "rootfs/etc", "rootfs/tmp",
                                            "rootfs/tmp/ro", "rootfs/masked_dir", "hostdir" };
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
                cleanup_free char *p = xasprintf("%s/%s", fx->base, dirs[i]);
                if (mkdir(p, 0755) < 0)
                        return false;
        }
        cleanup_free char *marker = xasprintf("%s/marker", fx->rootfs);
        cleanup_free char *ro_file = xasprintf("%s/tmp/ro/file", fx->rootfs);
        cleanup_free char *secret = xasprintf("%s/masked_dir/secret", fx->rootfs);
        cleanup_free char *masked_file = xasprintf("%s/etc/masked", fx->rootfs);
        cleanup_free char *hello = xasprintf("%s/hello", fx->hostdir);
        cleanup_free char *evil = xasprintf("%s/evil", fx->rootfs);
        cleanup_free char *rel = xasprintf("%s/etc/rel", fx->rootfs);
        cleanup_free char *abs = xasprintf("%s/etc/abs", fx->rootfs);
        return write_text(marker, "marker") == 0 && write_text(ro_file, "copied") == 0 &&
               write_text(secret, "secret") == 0 && write_text(masked_file, "masked") == 0 &&
               write_text(hello, "hello") == 0 &&
               write_text(fx->hostfile, "hostfile") == 0 && symlink("/../../etc", evil) == 0 &&
               symlink("../../../../../../etc", rel) == 0 && symlink("/opt", abs) == 0;
}

static void fixture_remove(struct fixture *fx)
{
        cap_error_t err = NULL;
        if (rm_rf(fx->base, &err) < 0)
                cap_error_free(&err);
}

static int mountinfo_lines(void)
{
        cleanup_free char *text = NULL;
        cap_error_t err = NULL;
        if (read_file("/proc/self/mountinfo", &text, NULL, 0, &err) < 0) {
                cap_error_free(&err);
                return -1;
        }
        int n = 0;
        for (char *c = text; *c; c++)
                n += *c == '\n';
        return n;
}

/* The mountinfo line of the topmost mount at mount_point, or NULL. */
static char *mountinfo_find(const char *mount_point)
{
        cleanup_free char *text = NULL;
        cap_error_t err = NULL;
        if (read_file("/proc/self/mountinfo", &text, NULL, 0, &err) < 0) {
                cap_error_free(&err);
                return NULL;
        }
        char *found = NULL, *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                cleanup_strv char **f = strv_split(line, " ");
                if (strv_len(f) > 5 && strcmp(f[4], mount_point) == 0) {
                        free(found);
                        found = xstrdup(line);
                }
        }
        return found;
}

/* Per-mount options (field 6) of the topmost mount at mount_point contain opt. */
static bool mount_has_option(const char *mount_point, const char *opt)
{
        cleanup_free char *line = mountinfo_find(mount_point);
        if (!line)
                return false;
        cleanup_strv char **f = strv_split(line, " ");
        cleanup_strv char **opts = strv_split(f[5], ",");
        return strv_contains(opts, opt);
}

static bool mount_has_fstype(const char *mount_point, const char *fstype)
{
        cleanup_free char *line = mountinfo_find(mount_point);
        if (!line)
                return false;
        const char *sep = strstr(line, " - ");
        return sep && str_has_prefix(sep + 3, fstype) && sep[3 + strlen(fstype)] == ' ';
}

static bool read_equals(const char *path, const char *want)
{
        cleanup_free char *text = NULL;
        cap_error_t err = NULL;
        if (read_file(path, &text, NULL, 0, &err) < 0) {
                cap_error_free(&err);
                return false;
        }
        return strcmp(text, want) == 0;
}

static void child_setup_enter(const struct spec *spec, bool in_userns, bool no_pivot)
{
        cap_error_t err = NULL;
        if (rootfs_setup(spec, in_userns, &err) < 0 || rootfs_enter(spec, no_pivot, &err) < 0) {
                fprintf(stderr, "rootfs: %s\n", err->msg);
                _exit(1);
        }
}

/* Fork a child in new mount and UTS namespaces (plus extra), run fn, return its exit status. */
static int run_child(void (*fn)(struct fixture *), struct fixture *fx, int extra_ns)
{
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                if (unshare(CLONE_NEWNS | CLONE_NEWUTS | extra_ns) < 0) {
                        perror("unshare");
                        _exit(2);
                }
                fn(fx);
                _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0)
                return -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* run_child on a fresh fixture, counting mountinfo lines around it; false if the
 * fixture could not be made. */
struct fixture_run {
        int status, before, after;
};

static bool fixture_run(void (*fn)(struct fixture *), int extra_ns, struct fixture_run *r)
{
        struct fixture fx;
        if (!fixture_make(&fx))
                return false;
        r->before = mountinfo_lines();
        r->status = run_child(fn, &fx, extra_ns);
        r->after = mountinfo_lines();
        fixture_remove(&fx);
        return true;
}

static struct spec_namespace test_namespaces[] = {
        { CLONE_NEWNS, "mount", NULL },
        { CLONE_NEWUTS, "uts", NULL },
};

static void spec_base(struct spec *spec, struct fixture *fx)
{
        *spec = (struct spec){ 0 };
        spec->root_path = fx->rootfs;
        spec->linux.namespaces = test_namespaces;
        spec->linux.n_namespaces = ARRAY_SIZE(test_namespaces);
}

static char *dev_opts[] = { "nosuid", "strictatime", "mode=755", "size=65536k", NULL };
static char *pts_opts[] = { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", NULL };

static void full_child(struct fixture *fx)
{
        char *ro_bind[] = { "rbind", "ro", "nosuid", NULL };
        char *file_bind[] = { "bind", NULL };
        char *rro_bind[] = { "rbind", "rro", "rshared", NULL };
        char *tmp_opts[] = { "nosuid", "size=1m", "tmpcopyup", NULL };
        struct spec_mount mounts[] = {
                { "/proc", "proc", "proc", NULL },
                { "/dev", "tmpfs", "tmpfs", dev_opts },
                { "/dev/pts", "devpts", "devpts", pts_opts },
                { "/data", "bind", fx->hostdir, ro_bind },
                { "/etc/hostfile", "none", fx->hostfile, file_bind },
                { "/tmp", "tmpfs", "tmpfs", tmp_opts },
                { "/evil/capsule-abs", "tmpfs", "tmpfs", NULL },
                { "/etc/rel/capsule-rel", "tmpfs", "tmpfs", NULL },
                { "/etc/abs/capsule-opt", "tmpfs", "tmpfs", NULL },
                { "/data-rro", "bind", fx->hostdir, rro_bind },
        };
        char *masked[] = { "/proc/kcore", "/etc/masked", "/masked_dir", "/missing-masked", NULL };
        char *readonly[] = { "/tmp/ro", "/proc/sys", "/missing-ro", NULL };
        char *sysctl[] = { "kernel.domainname", "capsule.dom", NULL };
        struct spec_device devices[] = {
                { .path = "/dev/custom/mydev", .type = 'c', .major = 1, .minor = 5,
                  .file_mode = { true, 0600 }, .uid = { true, 1000 }, .gid = { true, 1001 } },
        };
        struct spec spec;
        spec_base(&spec, fx);
        spec.root_readonly = true;
        spec.hostname = "capsule-test";
        spec.mounts = mounts;
        spec.n_mounts = ARRAY_SIZE(mounts);
        spec.linux.masked_paths = masked;
        spec.linux.readonly_paths = readonly;
        spec.linux.sysctl = sysctl;
        spec.linux.devices = devices;
        spec.linux.n_devices = ARRAY_SIZE(devices);
        child_setup_enter(&spec, false, false);

        struct stat st;
        char buf[256];
        /* The new root, with the host's paths gone. */
        EXPECT(read_equals("/marker", "marker"));
        EXPECT(access(fx->hostfile, F_OK) < 0);
        EXPECT(mount_has_option("/", "ro"));
        EXPECT(mkdir("/newdir", 0755) < 0 && errno == EROFS);

        EXPECT(mount_has_fstype("/proc", "proc"));
        EXPECT(access("/proc/self/status", R_OK) == 0);

        EXPECT(mount_has_fstype("/dev", "tmpfs") && mount_has_option("/dev", "nosuid"));
        EXPECT(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
        EXPECT(major(st.st_rdev) == 1 && minor(st.st_rdev) == 3 && (st.st_mode & 0777) == 0666);
        int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        EXPECT(fd >= 0 && write(fd, "x", 1) == 1);
        close(fd);
        EXPECT(stat("/dev/tty", &st) == 0 && major(st.st_rdev) == 5 && minor(st.st_rdev) == 0);
        EXPECT(stat("/dev/urandom", &st) == 0 && major(st.st_rdev) == 1 && minor(st.st_rdev) == 9);
        EXPECT(stat("/dev/custom/mydev", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 5);
        EXPECT((st.st_mode & 0777) == 0600 && st.st_uid == 1000 && st.st_gid == 1001);
        EXPECT(readlink("/dev/ptmx", buf, sizeof(buf)) == 8 && memcmp(buf, "pts/ptmx", 8) == 0);
        EXPECT(readlink("/dev/fd", buf, sizeof(buf)) == 13 && memcmp(buf, "/proc/self/fd", 13) == 0);
        EXPECT(readlink("/dev/stderr", buf, sizeof(buf)) == 15 && memcmp(buf, "/proc/self/fd/2", 15) == 0);
        EXPECT(mount_has_fstype("/dev/pts", "devpts"));
        EXPECT(stat("/dev/ptmx", &st) == 0 && S_ISCHR(st.st_mode));

        /* Read-only bind of a host directory. */
        EXPECT(mount_has_option("/data", "ro") && mount_has_option("/data", "nosuid"));
        EXPECT(read_equals("/data/hello", "hello"));
        EXPECT(open("/data/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644) < 0 && errno == EROFS);
        /* rro: read-only through mount_setattr; rshared: a peer group of its own. */
        EXPECT(open("/data-rro/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644) < 0 && errno == EROFS);
        cleanup_free char *rro_line = mountinfo_find("/data-rro");
        EXPECT(rro_line && strstr(rro_line, " shared:") && mount_has_option("/data-rro", "ro"));
        /* File bind: an empty file was created as its mount point. */
        EXPECT(read_equals("/etc/hostfile", "hostfile"));

        /* tmpfs size=1m with tmpcopyup, and a readonly path on it. */
        struct statfs sf;
        EXPECT(statfs("/tmp", &sf) == 0 && (unsigned long long)sf.f_blocks * sf.f_bsize == 1024 * 1024);
        EXPECT(mount_has_fstype("/tmp", "tmpfs") && mount_has_option("/tmp", "rw"));
        EXPECT(read_equals("/tmp/ro/file", "copied"));
        fd = open("/tmp/writable", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        EXPECT(fd >= 0);
        close(fd);
        EXPECT(open("/tmp/ro/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644) < 0 && errno == EROFS);
        EXPECT(mount_has_option("/tmp/ro", "ro") && mount_has_option("/tmp/ro", "noexec"));
        EXPECT(open("/proc/sys/kernel/domainname", O_WRONLY | O_CLOEXEC) < 0 && errno == EROFS);

        /* Masked paths: a file reads empty, a directory is an empty read-only tmpfs. */
        fd = open("/etc/masked", O_RDONLY | O_CLOEXEC);
        EXPECT(fd >= 0 && read(fd, buf, sizeof(buf)) == 0);
        close(fd);
        EXPECT(access("/masked_dir/secret", F_OK) < 0 && errno == ENOENT);
        EXPECT(mount_has_fstype("/masked_dir", "tmpfs") && mount_has_option("/masked_dir", "ro"));

        /* Symlinks pointing out of the rootfs resolved inside it. */
        EXPECT(mount_has_fstype("/etc/capsule-abs", "tmpfs"));
        EXPECT(mount_has_fstype("/etc/capsule-rel", "tmpfs"));
        EXPECT(mount_has_fstype("/opt/capsule-opt", "tmpfs"));

        EXPECT(gethostname(buf, sizeof(buf)) == 0 && strcmp(buf, "capsule-test") == 0);
        EXPECT(getdomainname(buf, sizeof(buf)) == 0 && strcmp(buf, "capsule.dom") == 0);
}

TEST(full_rootfs)
{
        struct fixture fx;
        CHECK(fixture_make(&fx));
        int before = mountinfo_lines();
        int status = run_child(full_child, &fx, 0);
        int after = mountinfo_lines();
        cleanup_free char *abs = xasprintf("%s/etc/capsule-abs", fx.rootfs);
        cleanup_free char *rel = xasprintf("%s/etc/capsule-rel", fx.rootfs);
        struct stat st;
        bool inside = stat(abs, &st) == 0 && S_ISDIR(st.st_mode) && stat(rel, &st) == 0 && S_ISDIR(st.st_mode);
        bool host_clean = access("/etc/capsule-abs", F_OK) < 0 && access("/etc/capsule-rel", F_OK) < 0;
        fixture_remove(&fx);
        CHECK(status == 0);
        CHECK(before > 0 && before == after);
        CHECK(inside);
        CHECK(host_clean);
}

/* Set up and enter a rootfs with only /proc and a tmpfs /dev mounted. */
static void child_enter_proc_dev(struct fixture *fx, bool in_userns, bool no_pivot)
{
        struct spec_mount mounts[] = {
                { "/proc", "proc", "proc", NULL },
                { "/dev", "tmpfs", "tmpfs", dev_opts },
        };
        struct spec spec;
        spec_base(&spec, fx);
        spec.mounts = mounts;
        spec.n_mounts = ARRAY_SIZE(mounts);
        child_setup_enter(&spec, in_userns, no_pivot);
}

static void no_pivot_child(struct fixture *fx)
{
        child_enter_proc_dev(fx, false, true);
        EXPECT(read_equals("/marker", "marker"));
        EXPECT(access(fx->hostfile, F_OK) < 0);
        struct stat st;
        EXPECT(stat("/dev/zero", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 5);
}

TEST(no_pivot_chroot)
{
        struct fixture_run r;
        CHECK(fixture_run(no_pivot_child, 0, &r));
        CHECK(r.status == 0);
        CHECK(r.before == r.after);
}

static void userns_devices_child(struct fixture *fx)
{
        child_enter_proc_dev(fx, true, false);
        /* Devices are bind mounts of the host's nodes, not mknod'd. */
        struct stat st;
        EXPECT(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 3);
        EXPECT(mountinfo_find("/dev/null") != NULL && mountinfo_find("/dev/full") != NULL);
        EXPECT(mountinfo_find("/dev/ptmx") == NULL);
}

TEST(userns_binds_devices)
{
        struct fixture_run r;
        CHECK(fixture_run(userns_devices_child, 0, &r));
        CHECK(r.status == 0);
}

static void bad_source_child(struct fixture *fx)
{
        char *bind[] = { "rbind", NULL };
        struct spec_mount mounts[] = {
                { "/proc", "proc", "proc", NULL },
                { "/data", "bind", "/nonexistent-capsule-src", bind },
        };
        struct spec spec;
        spec_base(&spec, fx);
        spec.mounts = mounts;
        spec.n_mounts = ARRAY_SIZE(mounts);
        cap_error_t err = NULL;
        EXPECT(rootfs_setup(&spec, false, &err) < 0);
        fprintf(stderr, "error: %s\n", err->msg);
        EXPECT(strcmp(err->msg, "mounts[1] (/data): mount /nonexistent-capsule-src: No such file or directory") == 0);
        cap_error_free(&err);
}

TEST(error_names_mount)
{
        struct fixture_run r;
        CHECK(fixture_run(bad_source_child, 0, &r));
        CHECK(r.status == 0);
}

struct enter_error_case {
        const char *key, *value, *hostname, *want;
        int ns_type;
};

static const struct enter_error_case enter_errors[] = {
        { "net.ipv4.ip_forward", "1", NULL, "linux.sysctl.net.ipv4.ip_forward: not allowed in the host's network", 0 },
        { "kernel.shmmax", "1", NULL, "linux.sysctl.kernel.shmmax: not allowed in the host's IPC", 0 },
        { "fs.mqueue.msg_max", "1", NULL, "linux.sysctl.fs.mqueue.msg_max: not allowed in the host's IPC", 0 },
        { "vm.swappiness", "1", NULL, "linux.sysctl.vm.swappiness: not in a separate kernel namespace", 0 },
        { "kernel.hostname", "x", NULL, "linux.sysctl.kernel.hostname: not allowed", CLONE_NEWUTS },
        { "kernel..x", "1", NULL, "linux.sysctl.kernel..x: invalid key", 0 },
        { "net/../../x", "1", NULL, "linux.sysctl.net/../../x: invalid key", CLONE_NEWNET },
        { NULL, NULL, "box", "hostname: ", 0 },
};

static void enter_errors_child(struct fixture *fx)
{
        for (size_t i = 0; i < ARRAY_SIZE(enter_errors); i++) {
                const struct enter_error_case *c = &enter_errors[i];
                char *sysctl[] = { (char *)c->key, (char *)c->value, NULL };
                struct spec_namespace ns[] = { { c->ns_type, "extra", NULL } };
                struct spec spec;
                spec_base(&spec, fx);
                spec.linux.sysctl = sysctl;
                spec.hostname = (char *)c->hostname;
                spec.linux.namespaces = ns;
                spec.linux.n_namespaces = c->ns_type ? 1 : 0;
                cap_error_t err = NULL;
                EXPECT(rootfs_enter(&spec, false, &err) < 0);
                if (!str_has_prefix(err->msg, c->want))
                        fprintf(stderr, "case %zu: got `%s`\n", i, err->msg);
                EXPECT(str_has_prefix(err->msg, c->want));
                cap_error_free(&err);
                /* Validation failed before pivoting. */
                EXPECT(access(fx->rootfs, F_OK) == 0);
        }
}

TEST(enter_validates_sysctl_and_hostname)
{
        struct fixture_run r;
        CHECK(fixture_run(enter_errors_child, 0, &r));
        CHECK(r.status == 0);
}

/* The host directory of this process's memory cgroup (v1) or unified cgroup. */
static char *own_cgroup_dir(const char *controller)
{
        cleanup_free char *text = NULL;
        cap_error_t err = NULL;
        if (read_file("/proc/self/cgroup", &text, NULL, 0, &err) < 0) {
                cap_error_free(&err);
                return NULL;
        }
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *ctrls = strchr(line, ':');
                char *path = ctrls ? strchr(ctrls + 1, ':') : NULL;
                if (!path)
                        continue;
                *path++ = '\0';
                if (strcmp(ctrls + 1, controller) == 0)
                        return xasprintf("/sys/fs/cgroup/%s%s", controller, path);
        }
        return NULL;
}

static void cgroup_child(struct fixture *fx)
{
        char *cg_opts[] = { "nosuid", "noexec", "nodev", "relatime", "ro", NULL };
        struct spec_mount mounts[] = {
                { "/proc", "proc", "proc", NULL },
                { "/sys/fs/cgroup", "cgroup", "cgroup", cg_opts },
        };
        struct spec spec;
        spec_base(&spec, fx);
        spec.mounts = mounts;
        spec.n_mounts = ARRAY_SIZE(mounts);

        struct stat host_mem;
        cleanup_free char *mem_dir = own_cgroup_dir("memory");
        bool v1 = mem_dir && stat(mem_dir, &host_mem) == 0;
        child_setup_enter(&spec, false, false);

        if (!v1) {
                EXPECT(mount_has_fstype("/sys/fs/cgroup", "cgroup2") && mount_has_option("/sys/fs/cgroup", "ro"));
                EXPECT(access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0);
                return;
        }
        struct stat st;
        EXPECT(mount_has_fstype("/sys/fs/cgroup", "tmpfs") && mount_has_option("/sys/fs/cgroup", "ro"));
        /* The container's own memory cgroup, not the hierarchy root. */
        EXPECT(stat("/sys/fs/cgroup/memory", &st) == 0);
        EXPECT(st.st_dev == host_mem.st_dev && st.st_ino == host_mem.st_ino);
        EXPECT(mount_has_option("/sys/fs/cgroup/memory", "ro") && mount_has_option("/sys/fs/cgroup/memory", "nosuid"));
        EXPECT(open("/sys/fs/cgroup/memory/cgroup.procs", O_WRONLY | O_CLOEXEC) < 0 && errno == EROFS);
        EXPECT(access("/sys/fs/cgroup/systemd/cgroup.procs", F_OK) == 0);
        if (access("/sys/fs/cgroup/unified", F_OK) == 0)
                EXPECT(mount_has_fstype("/sys/fs/cgroup/unified", "cgroup2"));
        EXPECT(mkdir("/sys/fs/cgroup/new", 0755) < 0 && errno == EROFS);
}

TEST(cgroup_mount_host_layout)
{
        struct fixture_run r;
        CHECK(fixture_run(cgroup_child, 0, &r));
        CHECK(r.status == 0);
        CHECK(r.before == r.after);
}

static void cgroupns_child(struct fixture *fx)
{
        char *cg_opts[] = { "nosuid", "noexec", "nodev", NULL };
        struct spec_mount mounts[] = {
                { "/proc", "proc", "proc", NULL },
                { "/sys/fs/cgroup", "cgroup", "cgroup", cg_opts },
        };
        struct spec_namespace ns[] = { { CLONE_NEWNS, "mount", NULL }, { CLONE_NEWCGROUP, "cgroup", NULL } };
        struct spec spec;
        spec_base(&spec, fx);
        spec.mounts = mounts;
        spec.n_mounts = ARRAY_SIZE(mounts);
        spec.linux.namespaces = ns;
        spec.linux.n_namespaces = ARRAY_SIZE(ns);
        bool v1 = access("/sys/fs/cgroup/memory", F_OK) == 0;
        child_setup_enter(&spec, false, false);

        /* Mounted in the cgroup namespace, the root is this process's cgroup. */
        const char *procs = v1 ? "/sys/fs/cgroup/memory/cgroup.procs" : "/sys/fs/cgroup/cgroup.procs";
        EXPECT(mount_has_fstype(v1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup", v1 ? "cgroup" : "cgroup2"));
        cleanup_free char *text = NULL;
        cap_error_t err = NULL;
        EXPECT(read_file(procs, &text, NULL, 0, &err) == 0);
        cleanup_free char *me = xasprintf("%d\n", (int)getpid());
        EXPECT(strstr(text, me) != NULL);
}

TEST(cgroup_mount_in_cgroupns)
{
        struct fixture_run r;
        CHECK(fixture_run(cgroupns_child, CLONE_NEWCGROUP, &r));
        CHECK(r.status == 0);
}

static void write_or_die(const char *path, const char *text)
{
        EXPECT(write_text(path, text) == 0);
}

/* In a real user namespace: mounts inherited from the parent namespace have
 * locked flags, mknod is refused and sysfs needs a network namespace. */
static void userns_child(struct fixture *fx)
{
        EXPECT(mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) == 0);
        EXPECT(mount("tmpfs", fx->hostdir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k") == 0);
        cleanup_free char *hello = xasprintf("%s/hello", fx->hostdir);
        write_or_die(hello, "locked");
        EXPECT(unshare(CLONE_NEWUSER) == 0);
        write_or_die("/proc/self/setgroups", "deny");
        write_or_die("/proc/self/uid_map", "0 0 1");
        write_or_die("/proc/self/gid_map", "0 0 1");
        EXPECT(unshare(CLONE_NEWNS) == 0);

        char *ro_bind[] = { "bind", "ro", NULL };
        char *sys_opts[] = { "nosuid", "noexec", "nodev", "ro", NULL };
        struct spec_mount mounts[] = {
                { "/dev", "tmpfs", "tmpfs", dev_opts },
                { "/data", "bind", fx->hostdir, ro_bind },
                { "/sys", "sysfs", "sysfs", sys_opts },
        };
        struct spec spec;
        spec_base(&spec, fx);
        spec.mounts = mounts;
        spec.n_mounts = ARRAY_SIZE(mounts);
        spec.root_readonly = true;
        child_setup_enter(&spec, true, false);

        struct statvfs sv;
        EXPECT(statvfs("/data", &sv) == 0);
        EXPECT((sv.f_flag & ST_RDONLY) && (sv.f_flag & ST_NOSUID) && (sv.f_flag & ST_NODEV) && (sv.f_flag & ST_NOEXEC));
        EXPECT(read_equals("/data/hello", "locked"));
        struct statfs sf;
        EXPECT(statfs("/sys", &sf) == 0 && sf.f_type == SYSFS_MAGIC);
        EXPECT(statvfs("/sys", &sv) == 0 && (sv.f_flag & ST_RDONLY));
        EXPECT(access("/sys/kernel", F_OK) == 0);
        struct stat st;
        EXPECT(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 3);
        EXPECT(statvfs("/", &sv) == 0 && (sv.f_flag & ST_RDONLY));
}

TEST(user_namespace)
{
        struct fixture_run r;
        CHECK(fixture_run(userns_child, 0, &r));
        CHECK(r.status == 0);
        CHECK(r.before == r.after);
}

/* The default config.json (as `capsule spec` writes it) builds a working rootfs. */
static void default_spec_child(struct fixture *fx)
{
        cleanup_free char *json = spec_default_json(false);
        cleanup_spec struct spec *spec = NULL;
        cap_error_t err = NULL;
        EXPECT(spec_parse(json, "default", &spec, &err) == 0);
        free(spec->root_path);
        spec->root_path = xstrdup(fx->rootfs);
        child_setup_enter(spec, false, false);

        EXPECT(read_equals("/marker", "marker"));
        EXPECT(mount_has_fstype("/proc", "proc") && mount_has_fstype("/dev", "tmpfs"));
        EXPECT(mount_has_fstype("/dev/pts", "devpts") && mount_has_fstype("/dev/shm", "tmpfs"));
        EXPECT(mount_has_fstype("/dev/mqueue", "mqueue"));
        EXPECT(mount_has_fstype("/sys", "sysfs") && mount_has_option("/sys", "ro"));
        EXPECT(mount_has_option("/sys/fs/cgroup", "ro"));
        EXPECT(mount_has_option("/", "ro"));
        struct stat st;
        EXPECT(stat("/dev/random", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 8);
}

TEST(default_spec)
{
        struct fixture_run r;
        CHECK(fixture_run(default_spec_child, 0, &r));
        CHECK(r.status == 0);
        CHECK(r.before == r.after);
}
