/* cgroup layout and lifecycle for v1, v2 and hybrid hosts. The per-version
 * resource files live in cgroup_v1.c and cgroup_v2.c, the v2 device filter in
 * cgroup_bpf.c. */
#include "runtime/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup_internal.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP_UNIFIED CGROUP_ROOT "/unified"
#define DESTROY_TIMEOUT_MS 5000

const struct spec_device_cgroup cgroup_default_devices[] = {
        { true, 'c', 1, 3, "rwm" },    /* /dev/null */
        { true, 'c', 1, 5, "rwm" },    /* /dev/zero */
        { true, 'c', 1, 7, "rwm" },    /* /dev/full */
        { true, 'c', 1, 8, "rwm" },    /* /dev/random */
        { true, 'c', 1, 9, "rwm" },    /* /dev/urandom */
        { true, 'c', 5, 0, "rwm" },    /* /dev/tty */
        { true, 'c', 5, 1, "rwm" },    /* /dev/console */
        { true, 'c', 5, 2, "rwm" },    /* /dev/ptmx */
        { true, 'c', 136, -1, "rwm" }, /* /dev/pts/N */
};
const size_t cgroup_n_default_devices = ARRAY_SIZE(cgroup_default_devices);

static const char *const mode_names[] = {
        [CGROUP_MODE_V1] = "v1",
        [CGROUP_MODE_V2] = "v2",
        [CGROUP_MODE_HYBRID] = "hybrid",
};

const char *cgroup_mode_name(enum cgroup_mode mode)
{
        return (size_t)mode < ARRAY_SIZE(mode_names) ? mode_names[mode] : "unknown";
}

int cgroup_detect(enum cgroup_mode *mode, cap_error_t *err)
{
        struct statfs st;

        if (statfs(CGROUP_ROOT, &st) < 0)
                return cap_fail(err, errno, "statfs %s", CGROUP_ROOT);
        if (st.f_type == CGROUP2_SUPER_MAGIC) {
                *mode = CGROUP_MODE_V2;
                return 0;
        }
        if (st.f_type == TMPFS_MAGIC && statfs(CGROUP_UNIFIED, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC)
                *mode = CGROUP_MODE_HYBRID;
        else
                *mode = CGROUP_MODE_V1;
        return 0;
}

/* ---- small file helpers shared with the v1/v2 files ---- */

int cgroup_write(const char *dir, const char *file, const char *field, const char *value, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(err, errno, "%s: write %s", field, path);
        /* cgroupfs parses one value per write(): never split it */
        ssize_t n;
        do
                n = write(fd, value, strlen(value));
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return cap_fail(err, errno, "%s: write %s", field, path);
        return 0;
}

bool cgroup_file_exists(const char *dir, const char *file)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        return access(path, F_OK) == 0;
}

char *cgroup_read(const char *dir, const char *file)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        cleanup_error cap_error_t err = NULL;
        char *buf = NULL;
        size_t len = 0;

        if (read_file(path, &buf, &len, 0, &err) < 0)
                return NULL;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
                buf[--len] = '\0';
        return buf;
}

bool cgroup_list_has(const char *list, const char *word)
{
        size_t wlen = strlen(word);
        const char *p = list;

        while (p && *p) {
                size_t k = strcspn(p, ", \n");
                if (k == wlen && strncmp(p, word, wlen) == 0)
                        return true;
                p += k;
                if (*p)
                        p++;
        }
        return false;
}

/* ---- paths ---- */

/* Append the components of rel to buf, dropping empty and "." ones; ".." is refused. */
static int path_append(char **buf, const char *rel, const char *spec_path, cap_error_t *err)
{
        cleanup_strv char **parts = strv_split(rel, "/");
        for (size_t i = 0; parts[i]; i++) {
                if (strcmp(parts[i], ".") == 0)
                        continue;
                if (strcmp(parts[i], "..") == 0)
                        return cap_fail(err, 0, "linux.cgroupsPath: `%s`: `..` is not allowed", spec_path);
                char *next = xasprintf("%s/%s", *buf, parts[i]);
                free(*buf);
                *buf = next;
        }
        return 0;
}

/* "a-b-c.slice" → "/a.slice/a-b.slice/a-b-c.slice", as systemd nests slices; "-.slice" is the root. */
static int slice_expand(const char *slice, const char *spec_path, char **out, cap_error_t *err)
{
        size_t len = strlen(slice);
        const size_t suffix = strlen(".slice");

        if (strcmp(slice, "-.slice") == 0) {
                *out = xstrdup("");
                return 0;
        }
        if (len <= suffix || strcmp(slice + len - suffix, ".slice") != 0 || strchr(slice, '/'))
                return cap_fail(err, 0, "linux.cgroupsPath: `%s`: invalid slice `%s`", spec_path, slice);
        cleanup_free char *base = strndup(slice, len - suffix);
        if (base[0] == '-' || base[strlen(base) - 1] == '-' || strstr(base, "--"))
                return cap_fail(err, 0, "linux.cgroupsPath: `%s`: invalid slice `%s`", spec_path, slice);
        char *path = xstrdup("");
        for (char *dash = strchr(base, '-'); dash; dash = strchr(dash + 1, '-')) {
                char *next = xasprintf("%s/%.*s.slice", path, (int)(dash - base), base);
                free(path);
                path = next;
        }
        char *next = xasprintf("%s/%s", path, slice);
        free(path);
        *out = next;
        return 0;
}

/* "slice:prefix:name" → the absolute cgroupfs path systemd would give the unit. */
static int systemd_path(const char *spec_path, char **out, cap_error_t *err)
{
        cleanup_strv char **parts = xmalloc0(4 * sizeof(char *));
        const char *p = spec_path;
        size_t n = 0;

        for (;;) {
                const char *colon = strchr(p, ':');
                if (n == 3)
                        return cap_fail(err, 0, "linux.cgroupsPath: `%s`: expected \"slice:prefix:name\" with --systemd-cgroup",
                                        spec_path);
                parts[n++] = colon ? strndup(p, (size_t)(colon - p)) : xstrdup(p);
                if (!colon)
                        break;
                p = colon + 1;
        }
        if (n != 3 || parts[2][0] == '\0')
                return cap_fail(err, 0, "linux.cgroupsPath: `%s`: expected \"slice:prefix:name\" with --systemd-cgroup",
                                spec_path);
        if (strchr(parts[1], '/') || strchr(parts[2], '/') || strcmp(parts[2], "..") == 0)
                return cap_fail(err, 0, "linux.cgroupsPath: `%s`: prefix and name must not contain `/`", spec_path);
        cleanup_free char *slice = NULL;
        if (slice_expand(parts[0][0] ? parts[0] : "system.slice", spec_path, &slice, err) < 0)
                return -1;
        size_t nlen = strlen(parts[2]);
        if (nlen > 6 && strcmp(parts[2] + nlen - 6, ".slice") == 0)
                *out = xasprintf("%s/%s", slice, parts[2]);
        else if (parts[1][0])
                *out = xasprintf("%s/%s-%s.scope", slice, parts[1], parts[2]);
        else
                *out = xasprintf("%s/%s.scope", slice, parts[2]);
        return 0;
}

/* Undo mountinfo's octal escapes (\040 for a space). */
static void unescape(char *s)
{
        char *w = s;
        for (char *r = s; *r; r++) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
                        *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 3;
                } else {
                        *w++ = *r;
                }
        }
        *w = '\0';
}

/* Find the mount of a hierarchy in mountinfo: fstype "cgroup" whose super options name every
 * controller (or "cgroup2" when controllers is NULL, at the preferred mount point if given). */
static bool mount_find(const char *mountinfo, const char *controllers, const char *prefer, char **mount, char **root)
{
        cleanup_strv char **lines = strv_split(mountinfo, "\n");
        cleanup_strv char **want = controllers ? strv_split(controllers, ",") : NULL;

        for (size_t i = 0; lines[i]; i++) {
                cleanup_strv char **f = strv_split(lines[i], " ");
                size_t nf = strv_len(f), sep = 0;
                for (size_t k = 6; k < nf; k++)
                        if (strcmp(f[k], "-") == 0) {
                                sep = k;
                                break;
                        }
                if (sep == 0 || sep + 3 >= nf)
                        continue;
                const char *fstype = f[sep + 1], *super = f[sep + 3];
                unescape(f[3]);
                unescape(f[4]);
                if (!controllers) {
                        if (strcmp(fstype, "cgroup2") != 0 || (prefer && strcmp(f[4], prefer) != 0))
                                continue;
                } else {
                        if (strcmp(fstype, "cgroup") != 0)
                                continue;
                        bool all = true;
                        for (size_t k = 0; want[k] && all; k++)
                                all = cgroup_list_has(super, want[k]);
                        if (!all)
                                continue;
                }
                *mount = xstrdup(f[4]);
                *root = xstrdup(f[3]);
                return true;
        }
        return false;
}

static void hier_clear(struct cgroup_hier *h)
{
        free(h->controllers);
        free(h->mount);
        free(h->path);
        cap_strvfreep(&h->created);
}

static struct cgroup_hier *hier_add(struct cgroup *cg)
{
        struct cgroup_hier *n = realloc(cg->hiers, (cg->n_hiers + 1) * sizeof(*n));
        if (!n)
                abort();
        cg->hiers = n;
        memset(&n[cg->n_hiers], 0, sizeof(*n));
        n[cg->n_hiers].created = xmalloc0(sizeof(char *));
        return &n[cg->n_hiers++];
}

/* The directory for one hierarchy: absolute paths from its root, relative ones below own. */
static int hier_path(const char *mount, const char *root, const char *own, const char *path, bool absolute,
                     const char *spec_path, char **out, cap_error_t *err)
{
        char *dir = xstrdup(mount);
        if (!absolute) {
                /* a hierarchy mounted from a subdirectory (or in a cgroup namespace) shows own relative to that */
                const char *below = own;
                size_t rlen = strlen(root);
                if (strcmp(root, "/") != 0 && str_has_prefix(own, root) && (own[rlen] == '/' || own[rlen] == '\0'))
                        below = own + rlen;
                if (path_append(&dir, below, spec_path, err) < 0) {
                        free(dir);
                        return -1;
                }
        }
        if (path_append(&dir, path, spec_path, err) < 0) {
                free(dir);
                return -1;
        }
        *out = dir;
        return 0;
}

int cgroup_resolve(const char *cgroups_path, const char *id, bool systemd, struct cgroup **out, cap_error_t *err)
{
        enum cgroup_mode mode;
        cleanup_free char *path = NULL;
        bool absolute;

        if (cgroup_detect(&mode, err) < 0)
                return -1;
        const char *spec_path = cgroups_path && *cgroups_path ? cgroups_path : NULL;
        if (systemd) {
                cleanup_free char *dflt = spec_path ? NULL : xasprintf("system.slice:capsule:%s", id);
                if (systemd_path(spec_path ? spec_path : dflt, &path, err) < 0)
                        return -1;
                absolute = true;
        } else if (spec_path) {
                path = xstrdup(spec_path);
                absolute = spec_path[0] == '/';
        } else {
                path = xasprintf("capsule/%s", id);
                absolute = false;
        }
        /* checked before touching /proc, so a bad path fails the same way everywhere */
        cleanup_free char *check = xstrdup("");
        if (path_append(&check, path, path, err) < 0)
                return -1;
        if (check[0] == '\0')
                return cap_fail(err, 0, "linux.cgroupsPath: `%s`: names the root cgroup", path);

        cleanup_free char *self = NULL, *mountinfo = NULL;
        if (read_file("/proc/self/cgroup", &self, NULL, 0, err) < 0 ||
            read_file("/proc/self/mountinfo", &mountinfo, NULL, 0, err) < 0)
                return -1;

        cleanup_cgroup struct cgroup *cg = xmalloc0(sizeof(*cg));
        cg->mode = mode;
        cleanup_strv char **lines = strv_split(self, "\n");
        for (size_t i = 0; lines[i]; i++) {
                char *c1 = strchr(lines[i], ':');
                char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        continue;
                cleanup_free char *controllers = strndup(c1 + 1, (size_t)(c2 - c1 - 1));
                const char *own = c2 + 1;
                cleanup_free char *mount = NULL, *root = NULL;
                bool unified = controllers[0] == '\0';

                if (unified) {
                        if (mode == CGROUP_MODE_V1)
                                continue;
                        const char *where = mode == CGROUP_MODE_V2 ? CGROUP_ROOT : CGROUP_UNIFIED;
                        if (!mount_find(mountinfo, NULL, where, &mount, &root)) {
                                mount = xstrdup(where);
                                root = xstrdup("/");
                        }
                } else {
                        if (mode == CGROUP_MODE_V2)
                                continue;
                        if (!mount_find(mountinfo, controllers, NULL, &mount, &root)) {
                                log_debug("cgroup: hierarchy %s is not mounted, skipped", controllers);
                                continue;
                        }
                }
                struct cgroup_hier *h = hier_add(cg);
                h->unified = unified;
                h->controllers = steal_pointer(&controllers);
                h->mount = steal_pointer(&mount);
                if (hier_path(h->mount, root, own, path, absolute, path, &h->path, err) < 0)
                        return -1;
        }
        if (cg->n_hiers == 0)
                return cap_fail(err, 0, "cgroup: no %s hierarchy found in /proc/self/cgroup", cgroup_mode_name(mode));
        *out = steal_pointer(&cg);
        return 0;
}

/* ---- lifecycle ---- */

static struct cgroup_hier *hier_v1(struct cgroup *cg, const char *controller)
{
        for (size_t i = 0; i < cg->n_hiers; i++)
                if (!cg->hiers[i].unified && cgroup_list_has(cg->hiers[i].controllers, controller))
                        return &cg->hiers[i];
        return NULL;
}

static struct cgroup_hier *hier_unified(struct cgroup *cg)
{
        for (size_t i = 0; i < cg->n_hiers; i++)
                if (cg->hiers[i].unified)
                        return &cg->hiers[i];
        return NULL;
}

static void strv_push(char ***v, char *s)
{
        size_t n = strv_len(*v);
        char **nv = realloc(*v, (n + 2) * sizeof(char *));
        if (!nv)
                abort();
        nv[n] = s;
        nv[n + 1] = NULL;
        *v = nv;
}

static void sleep_ms(long ms)
{
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
}

/* rmdir dir after the cgroups a container may have made inside it. */
static int rmdir_tree(const char *dir)
{
        DIR *d = opendir(dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        cleanup_free char *sub = xasprintf("%s/%s", dir, de->d_name);
                        rmdir_tree(sub);
                }
                closedir(d);
        }
        return rmdir(dir) < 0 && errno != ENOENT ? -1 : 0;
}

/* Remove the directories created in h, deepest first. The container's own directory must go;
 * a created parent may legitimately be shared by a sibling container created later. */
static int hier_remove(struct cgroup_hier *h, long long deadline, cap_error_t *err)
{
        for (size_t i = strv_len(h->created); i-- > 0;) {
                const char *dir = h->created[i];
                bool leaf = strcmp(dir, h->path) == 0;
                for (;;) {
                        int r = leaf ? rmdir_tree(dir) : rmdir(dir);
                        if (r == 0 || errno == ENOENT)
                                break;
                        if (!leaf && (errno == EBUSY || errno == ENOTEMPTY)) {
                                log_debug("cgroup: %s is still in use, kept", dir);
                                break;
                        }
                        if (errno != EBUSY || now_ms() >= deadline)
                                return cap_fail(err, errno, "cgroup: rmdir %s", dir);
                        sleep_ms(10);
                }
        }
        return 0;
}

static int pids_read(const char *dir, pid_t **pids, size_t *n, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/cgroup.procs", dir);
        cleanup_free char *buf = NULL;
        cleanup_error cap_error_t rerr = NULL;

        if (read_file(path, &buf, NULL, 0, &rerr) < 0) {
                if (rerr->errnum == ENOENT || rerr->errnum == ENODEV)
                        return 0; /* removed meanwhile */
                return cap_fail(err, rerr->errnum, "cgroup: read %s", path);
        }
        cleanup_strv char **lines = strv_split(buf, "\n");
        for (size_t i = 0; lines[i]; i++) {
                long long v;
                if (parse_i64(lines[i], &v) < 0 || v <= 0)
                        continue;
                pid_t *np = realloc(*pids, (*n + 1) * sizeof(pid_t));
                if (!np)
                        abort();
                *pids = np;
                (*pids)[(*n)++] = (pid_t)v;
        }
        DIR *d = opendir(dir);
        if (!d)
                return 0;
        struct dirent *de;
        int ret = 0;
        while (ret == 0 && (de = readdir(d))) {
                if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                cleanup_free char *sub = xasprintf("%s/%s", dir, de->d_name);
                ret = pids_read(sub, pids, n, err);
        }
        closedir(d);
        return ret;
}

/* The hierarchy whose cgroup.procs lists the container's processes. */
static struct cgroup_hier *hier_for_pids(struct cgroup *cg)
{
        struct cgroup_hier *h = NULL;
        if (cg->mode != CGROUP_MODE_V2 && !(h = hier_v1(cg, "pids")) && !(h = hier_v1(cg, "freezer")))
                for (size_t i = 0; i < cg->n_hiers && !h; i++)
                        if (!cg->hiers[i].unified)
                                h = &cg->hiers[i];
        return h ? h : hier_unified(cg);
}

int cgroup_pids(struct cgroup *cg, pid_t **pids, size_t *n, cap_error_t *err)
{
        *pids = NULL;
        *n = 0;
        struct cgroup_hier *h = hier_for_pids(cg);
        if (!h)
                return 0;
        if (pids_read(h->path, pids, n, err) < 0) {
                free(*pids);
                *pids = NULL;
                *n = 0;
                return -1;
        }
        return 0;
}

static void cgroup_rollback(struct cgroup *cg)
{
        for (size_t i = 0; i < cg->n_hiers; i++) {
                cleanup_error cap_error_t err = NULL;
                if (hier_remove(&cg->hiers[i], now_ms(), &err) < 0)
                        log_debug("%s", err->msg);
                cap_strvfreep(&cg->hiers[i].created);
                cg->hiers[i].created = xmalloc0(sizeof(char *));
        }
}

/* mkdir every missing component of h->path below the mount, remembering what was made. */
static int hier_mkdir(struct cgroup_hier *h, cap_error_t *err)
{
        size_t mlen = strlen(h->mount);
        cleanup_free char *p = xstrdup(h->path);
        int retries = 10;
        for (char *s = p + mlen + 1;; s++) {
                if (*s != '/' && *s != '\0')
                        continue;
                char c = *s;
                *s = '\0';
                if (mkdir(p, 0755) == 0) {
                        strv_push(&h->created, xstrdup(p));
                } else if (errno == ENOENT && retries-- > 0) {
                        /* a sibling's delete removed a shared parent after we found it: start over */
                        *s = c;
                        s = p + mlen;
                        continue;
                } else if (errno != EEXIST) {
                        return cap_fail(err, errno, "cgroup: mkdir %s", p);
                }
                *s = c;
                if (c == '\0')
                        break;
        }
        return 0;
}

/* What the created directories need before a process can join them. */
static int hier_prepare(struct cgroup_hier *h, cap_error_t *err)
{
        size_t n = strv_len(h->created);
        /* v2 offers a new directory only what its parent enabled, so enable everything from the
         * existing directory we create below, as runc does. The root may hold processes; any
         * other cgroup that does refuses (EBUSY) and keeps offering only what it enabled. */
        if (h->unified && n > 0) {
                cleanup_free char *parent = xstrdup(h->created[0]);
                char *slash = strrchr(parent, '/');
                if (slash && (size_t)(slash - parent) >= strlen(h->mount)) {
                        *slash = '\0';
                        cgroup_v2_delegate_all(parent);
                }
        }
        for (size_t i = 0; i < n; i++) {
                if (!h->unified && cgroup_list_has(h->controllers, "cpuset") &&
                    cgroup_v1_copy_cpuset(h->created[i], err) < 0)
                        return -1;
                /* hand our own intermediate directories' controllers down to the container */
                if (h->unified && strcmp(h->created[i], h->path) != 0)
                        cgroup_v2_delegate_all(h->created[i]);
        }
        return 0;
}

void cgroup_plan(struct cgroup *cg)
{
        for (size_t i = 0; i < cg->n_hiers; i++) {
                struct cgroup_hier *h = &cg->hiers[i];
                cleanup_free char *p = xstrdup(h->path);
                cap_strvfreep(&h->created);
                h->created = xmalloc0(sizeof(char *));
                for (char *s = p + strlen(h->mount) + 1;; s++) {
                        if (*s != '/' && *s != '\0')
                                continue;
                        char c = *s;
                        *s = '\0';
                        if (h->created[0] || access(p, F_OK) < 0)
                                strv_push(&h->created, xstrdup(p));
                        *s = c;
                        if (c == '\0')
                                break;
                }
        }
}

int cgroup_create(struct cgroup *cg, cap_error_t *err)
{
        bool rootless = geteuid() != 0;

        for (size_t i = 0; i < cg->n_hiers;) {
                struct cgroup_hier *h = &cg->hiers[i];
                cleanup_error cap_error_t merr = NULL;
                cap_strvfreep(&h->created);
                h->created = xmalloc0(sizeof(char *));
                if (hier_mkdir(h, &merr) == 0) {
                        i++;
                        continue;
                }
                int e = merr->errnum;
                if (!rootless || (e != EACCES && e != EPERM && e != EROFS)) {
                        *err = steal_pointer(&merr);
                        cgroup_rollback(cg);
                        return -1;
                }
                /* rootless without a delegated cgroup: run without this hierarchy */
                log_debug("cgroup: rootless, %s: running without the %s hierarchy", merr->msg,
                          h->unified ? "unified" : h->controllers);
                if (!cg->denied)
                        cg->denied = xstrdup(merr->msg);
                cleanup_error cap_error_t rerr = NULL;
                if (hier_remove(h, now_ms(), &rerr) < 0)
                        log_debug("%s", rerr->msg);
                hier_clear(h);
                memmove(h, h + 1, (cg->n_hiers - i - 1) * sizeof(*h));
                cg->n_hiers--;
        }

        for (size_t i = 0; i < cg->n_hiers; i++) {
                if (hier_prepare(&cg->hiers[i], err) < 0) {
                        cgroup_rollback(cg);
                        return -1;
                }
        }
        cleanup_free pid_t *pids = NULL;
        size_t n = 0;
        for (size_t i = 0; i < cg->n_hiers; i++) {
                if (pids_read(cg->hiers[i].path, &pids, &n, err) < 0) {
                        cgroup_rollback(cg);
                        return -1;
                }
                if (n > 0) {
                        cgroup_rollback(cg);
                        return cap_fail(err, 0, "linux.cgroupsPath: cgroup %s already holds processes (pid %d)",
                                        cg->hiers[i].path, (int)pids[0]);
                }
        }
        return 0;
}

int cgroup_enter(struct cgroup *cg, pid_t pid, cap_error_t *err)
{
        char buf[32];
        snprintf(buf, sizeof(buf), "%d", (int)pid);
        for (size_t i = 0; i < cg->n_hiers; i++)
                if (cgroup_write(cg->hiers[i].path, "cgroup.procs", "linux.cgroupsPath", buf, err) < 0)
                        return -1;
        return 0;
}

/* The directories sub names, one per hierarchy it applies to (NULL where it does not). */
static int sub_dirs(struct cgroup *cg, const char *sub, char **dirs, cap_error_t *err)
{
        const char *colon = strchr(sub, ':');
        const char *path = colon ? colon + 1 : sub;
        cleanup_free char *list = colon ? strndup(sub, (size_t)(colon - sub)) : NULL;
        cleanup_strv char **ctrls = list ? strv_split(list, ",") : NULL;

        if (colon && !ctrls[0])
                return cap_fail(err, 0, "--cgroup: `%s`: no controller before `:`", sub);
        if (path[0] == '/')
                return cap_fail(err, 0, "--cgroup: `%s`: the path must be relative to the container's cgroup", sub);
        cleanup_strv char **parts = strv_split(path, "/");
        cleanup_free char *rel = xstrdup("");
        for (size_t i = 0; parts[i]; i++) {
                if (strcmp(parts[i], "..") == 0)
                        return cap_fail(err, 0, "--cgroup: `%s`: `..` is not allowed", sub);
                if (strcmp(parts[i], ".") == 0)
                        continue;
                char *next = xasprintf("%s/%s", rel, parts[i]);
                free(rel);
                rel = next;
        }
        for (size_t i = 0; ctrls && ctrls[i]; i++) {
                if (!hier_v1(cg, ctrls[i]))
                        return cap_fail(err, 0, "--cgroup: `%s`: the container has no cgroup v1 hierarchy for `%s`", sub,
                                        ctrls[i]);
        }
        for (size_t i = 0; i < cg->n_hiers; i++) {
                struct cgroup_hier *h = &cg->hiers[i];
                bool named = !ctrls;
                for (size_t k = 0; ctrls && ctrls[k] && !named; k++)
                        named = !h->unified && cgroup_list_has(h->controllers, ctrls[k]);
                if (!named)
                        continue;
                struct stat st;
                dirs[i] = xasprintf("%s%s", h->path, rel);
                if (stat(dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
                        return cap_fail(err, 0, "--cgroup: `%s`: %s does not exist", sub, dirs[i]);
        }
        return 0;
}

int cgroup_enter_sub(struct cgroup *cg, const char *sub, pid_t pid, cap_error_t *err)
{
        char buf[32];

        if (cg->n_hiers == 0)
                return cap_fail(err, 0, "--cgroup: `%s`: the container has no cgroup", sub);
        char **dirs = xmalloc0(cg->n_hiers * sizeof(char *));
        /* Every directory is checked before the process moves anywhere. */
        int ret = sub_dirs(cg, sub, dirs, err);
        snprintf(buf, sizeof(buf), "%d", (int)pid);
        for (size_t i = 0; ret == 0 && i < cg->n_hiers; i++)
                if (dirs[i] && cgroup_write(dirs[i], "cgroup.procs", "--cgroup", buf, err) < 0)
                        ret = -1;
        for (size_t i = 0; i < cg->n_hiers; i++)
                free(dirs[i]);
        free(dirs);
        return ret;
}

static bool freezer_find(struct cgroup *cg, struct cgroup_hier **h)
{
        if ((*h = hier_v1(cg, "freezer")))
                return true;
        *h = hier_unified(cg);
        return *h && cgroup_file_exists((*h)->path, "cgroup.freeze");
}

int cgroup_freeze(struct cgroup *cg, bool frozen, cap_error_t *err)
{
        struct cgroup_hier *h;
        if (!freezer_find(cg, &h)) {
                if (cg->denied)
                        return cap_fail(err, 0, "cgroup: no freezer available (rootless: %s)", cg->denied);
                return cap_fail(err, 0, "cgroup: no freezer available");
        }
        return h->unified ? cgroup_v2_freeze(h, frozen, err) : cgroup_v1_freeze(h, frozen, err);
}

bool cgroup_is_frozen(struct cgroup *cg)
{
        struct cgroup_hier *h;
        if (!freezer_find(cg, &h))
                return false;
        cleanup_free char *state = cgroup_read(h->path, h->unified ? "cgroup.freeze" : "freezer.state");
        return state && strcmp(state, h->unified ? "1" : "FROZEN") == 0;
}

int cgroup_kill(struct cgroup *cg, int sig, cap_error_t *err)
{
        struct cgroup_hier *u = hier_unified(cg), *fh;

        if (sig == SIGKILL && u && cgroup_file_exists(u->path, "cgroup.kill"))
                return cgroup_write(u->path, "cgroup.kill", "cgroup.kill", "1", err);

        /* freezing first keeps a forking process from escaping between listing and signalling */
        bool can_freeze = freezer_find(cg, &fh);
        bool was_frozen = can_freeze && cgroup_is_frozen(cg);
        if (can_freeze && !was_frozen) {
                cleanup_error cap_error_t ferr = NULL;
                if (cgroup_freeze(cg, true, &ferr) < 0) {
                        log_debug("cgroup: kill without freezing: %s", ferr->msg);
                        can_freeze = false;
                }
        }
        cleanup_free pid_t *pids = NULL;
        size_t n = 0;
        int ret = cgroup_pids(cg, &pids, &n, err);
        for (size_t i = 0; ret == 0 && i < n; i++)
                if (kill(pids[i], sig) < 0 && errno != ESRCH)
                        ret = cap_fail(err, errno, "cgroup: kill pid %d", (int)pids[i]);
        /* a frozen v1 task cannot die; other signals keep a paused container paused */
        if (can_freeze && (!was_frozen || sig == SIGKILL)) {
                cleanup_error cap_error_t terr = NULL;
                if (cgroup_freeze(cg, false, &terr) < 0 && ret == 0) {
                        *err = steal_pointer(&terr);
                        ret = -1;
                }
        }
        return ret;
}

int cgroup_destroy(struct cgroup *cg, cap_error_t *err)
{
        long long deadline = now_ms() + DESTROY_TIMEOUT_MS;

        for (;;) {
                cleanup_free pid_t *pids = NULL;
                size_t n = 0;
                if (cgroup_pids(cg, &pids, &n, err) < 0)
                        return -1;
                if (n == 0)
                        break;
                if (now_ms() >= deadline)
                        return cap_fail(err, 0, "cgroup: %zu process(es) still in %s after %d ms (pid %d)", n,
                                        hier_for_pids(cg)->path, DESTROY_TIMEOUT_MS, (int)pids[0]);
                cleanup_error cap_error_t kerr = NULL;
                if (cgroup_kill(cg, SIGKILL, &kerr) < 0)
                        log_debug("%s", kerr->msg);
                sleep_ms(10);
        }
        for (size_t i = 0; i < cg->n_hiers; i++)
                if (hier_remove(&cg->hiers[i], deadline, err) < 0)
                        return -1;
        return 0;
}

void cgroup_free(struct cgroup *cg)
{
        if (!cg)
                return;
        for (size_t i = 0; i < cg->n_hiers; i++)
                hier_clear(&cg->hiers[i]);
        free(cg->hiers);
        free(cg->denied);
        free(cg);
}

void cgroup_freep(struct cgroup **cg)
{
        cgroup_free(*cg);
        *cg = NULL;
}

/* ---- persistence ---- */

json_t *cgroup_save(const struct cgroup *cg)
{
        json_t *hiers = json_array();
        for (size_t i = 0; i < cg->n_hiers; i++) {
                const struct cgroup_hier *h = &cg->hiers[i];
                json_t *created = json_array();
                for (size_t k = 0; h->created[k]; k++)
                        json_array_append_new(created, json_string(h->created[k]));
                json_array_append_new(hiers, json_pack("{s:s,s:s,s:s,s:b,s:o}", "controllers", h->controllers, "mount",
                                                       h->mount, "path", h->path, "unified", h->unified, "created",
                                                       created));
        }
        json_t *o = json_pack("{s:s,s:o}", "mode", cgroup_mode_name(cg->mode), "hierarchies", hiers);
        if (o && cg->denied)
                json_object_set_new(o, "denied", json_string(cg->denied));
        return o;
}

int cgroup_load(json_t *saved, struct cgroup **out, cap_error_t *err)
{
        const char *mode = json_string_value(json_object_get(saved, "mode"));
        json_t *hiers = json_object_get(saved, "hierarchies");
        if (!mode || !json_is_array(hiers))
                return cap_fail(err, 0, "state: cgroup: missing mode or hierarchies");

        cleanup_cgroup struct cgroup *cg = xmalloc0(sizeof(*cg));
        size_t m;
        for (m = 0; m < ARRAY_SIZE(mode_names); m++)
                if (strcmp(mode, mode_names[m]) == 0)
                        break;
        if (m == ARRAY_SIZE(mode_names))
                return cap_fail(err, 0, "state: cgroup: unknown mode `%s`", mode);
        cg->mode = (enum cgroup_mode)m;
        const char *denied = json_string_value(json_object_get(saved, "denied"));
        cg->denied = denied ? xstrdup(denied) : NULL;

        size_t i;
        json_t *jh;
        json_array_foreach (hiers, i, jh) {
                const char *controllers = json_string_value(json_object_get(jh, "controllers"));
                const char *mount = json_string_value(json_object_get(jh, "mount"));
                const char *path = json_string_value(json_object_get(jh, "path"));
                json_t *created = json_object_get(jh, "created");
                if (!controllers || !mount || !path || !json_is_array(created) || !str_has_prefix(path, mount))
                        return cap_fail(err, 0, "state: cgroup: hierarchies[%zu] is malformed", i);
                struct cgroup_hier *h = hier_add(cg);
                h->controllers = xstrdup(controllers);
                h->mount = xstrdup(mount);
                h->path = xstrdup(path);
                h->unified = json_is_true(json_object_get(jh, "unified"));
                size_t k;
                json_t *jc;
                json_array_foreach (created, k, jc) {
                        const char *dir = json_string_value(jc);
                        /* only ever remove directories inside this hierarchy */
                        if (!dir || !str_has_prefix(dir, mount) || strstr(dir, "/.."))
                                return cap_fail(err, 0, "state: cgroup: hierarchies[%zu].created[%zu] is malformed", i, k);
                        strv_push(&h->created, xstrdup(dir));
                }
        }
        *out = steal_pointer(&cg);
        return 0;
}

const char *cgroup_unified_path(const struct cgroup *cg)
{
        struct cgroup_hier *h = hier_unified((struct cgroup *)cg);
        return h ? h->path : NULL;
}

const char *cgroup_controller_path(const struct cgroup *cg, const char *controller)
{
        struct cgroup_hier *h = hier_v1((struct cgroup *)cg, controller);
        return h ? h->path : NULL;
}

/* ---- resources ---- */

int cgroup_cpuset_apply(const char *dir, const struct spec_cpu *c, cap_error_t *err)
{
        if (c->cpus && cgroup_write(dir, "cpuset.cpus", "linux.resources.cpu.cpus", c->cpus, err) < 0)
                return -1;
        if (c->mems && cgroup_write(dir, "cpuset.mems", "linux.resources.cpu.mems", c->mems, err) < 0)
                return -1;
        return 0;
}

/* The first set field of each group, as named in config.json; NULL if none is set. */
static const char *memory_field(const struct spec_memory *m)
{
        return m->limit.set                ? "linux.resources.memory.limit"
               : m->reservation.set        ? "linux.resources.memory.reservation"
               : m->swap.set               ? "linux.resources.memory.swap"
               : m->kernel.set             ? "linux.resources.memory.kernel"
               : m->kernel_tcp.set         ? "linux.resources.memory.kernelTCP"
               : m->swappiness.set         ? "linux.resources.memory.swappiness"
               : m->disable_oom_killer.set ? "linux.resources.memory.disableOOMKiller"
               : m->use_hierarchy.set      ? "linux.resources.memory.useHierarchy"
                                           : NULL;
}

static const char *cpu_field(const struct spec_cpu *c)
{
        return c->shares.set             ? "linux.resources.cpu.shares"
               : c->quota.set            ? "linux.resources.cpu.quota"
               : c->period.set           ? "linux.resources.cpu.period"
               : c->burst.set            ? "linux.resources.cpu.burst"
               : c->realtime_runtime.set ? "linux.resources.cpu.realtimeRuntime"
               : c->realtime_period.set  ? "linux.resources.cpu.realtimePeriod"
               : c->idle.set             ? "linux.resources.cpu.idle"
                                         : NULL;
}

static const char *blkio_field(const struct spec_blkio *b)
{
        return b->weight.set                ? "linux.resources.blockIO.weight"
               : b->leaf_weight.set         ? "linux.resources.blockIO.leafWeight"
               : b->n_weight_devices        ? "linux.resources.blockIO.weightDevice"
               : b->n_throttle_read_bps     ? "linux.resources.blockIO.throttleReadBpsDevice"
               : b->n_throttle_write_bps    ? "linux.resources.blockIO.throttleWriteBpsDevice"
               : b->n_throttle_read_iops    ? "linux.resources.blockIO.throttleReadIOPSDevice"
               : b->n_throttle_write_iops   ? "linux.resources.blockIO.throttleWriteIOPSDevice"
                                            : NULL;
}

/* One group of resources: the v1 controller that holds it, or its v2 controller ("" when it
 * needs none, NULL when v2 has no equivalent). */
static int apply_group(struct cgroup *cg, const char *group, const char *v1, const char *v2, const char *field,
                       const struct spec_resources *res, cap_error_t *err)
{
        struct cgroup_hier *h = hier_v1(cg, v1);
        if (h)
                return cgroup_v1_apply(h, group, res, err);
        h = hier_unified(cg);
        if (h && v2) {
                if (v2[0] && cgroup_v2_enable(h, v2, field, err) < 0)
                        return -1;
                return cgroup_v2_apply(h, group, res, err);
        }
        /* A limit that cannot be applied is an error, never skipped (runc refuses net_cls and
         * net_prio too when they are not mounted). */
        if (!v2 && cg->mode == CGROUP_MODE_V2)
                return cap_fail(err, 0, "%s: cgroup v2 has no %s controller", field, v1);
        if (cg->denied)
                return cap_fail(err, 0, "%s: the %s controller is not available (rootless: %s)", field, v1, cg->denied);
        return cap_fail(err, 0, "%s: the %s controller is not available", field, v1);
}

int cgroup_apply(struct cgroup *cg, const struct spec_resources *res, cap_error_t *err)
{
        const char *f;

        if (!res)
                return 0;
        if (cg->n_hiers == 0) {
                bool any = memory_field(&res->memory) || cpu_field(&res->cpu) || res->cpu.cpus || res->cpu.mems ||
                           res->pids_limit.set || blkio_field(&res->blkio) || res->n_hugepage_limits ||
                           res->net_class_id.set || res->n_net_priorities || res->n_devices ||
                           (res->unified && res->unified[0]);
                if (any && cg->denied)
                        return cap_fail(err, 0, "linux.resources: limits are set but no cgroup could be created (rootless: %s)",
                                        cg->denied);
                if (any)
                        return cap_fail(err, 0, "linux.resources: limits are set but there is no cgroup");
                return 0;
        }
        if ((f = memory_field(&res->memory)) && apply_group(cg, "memory", "memory", "memory", f, res, err) < 0)
                return -1;
        if ((f = cpu_field(&res->cpu)) && apply_group(cg, "cpu", "cpu", "cpu", f, res, err) < 0)
                return -1;
        if ((res->cpu.cpus || res->cpu.mems) &&
            apply_group(cg, "cpuset", "cpuset", "cpuset",
                        res->cpu.cpus ? "linux.resources.cpu.cpus" : "linux.resources.cpu.mems", res, err) < 0)
                return -1;
        if (res->pids_limit.set && apply_group(cg, "pids", "pids", "pids", "linux.resources.pids.limit", res, err) < 0)
                return -1;
        if ((f = blkio_field(&res->blkio)) && apply_group(cg, "blkio", "blkio", "io", f, res, err) < 0)
                return -1;
        if (res->n_hugepage_limits &&
            apply_group(cg, "hugetlb", "hugetlb", "hugetlb", "linux.resources.hugepageLimits", res, err) < 0)
                return -1;
        if (res->net_class_id.set &&
            apply_group(cg, "net_cls", "net_cls", NULL, "linux.resources.network.classID", res, err) < 0)
                return -1;
        if (res->n_net_priorities &&
            apply_group(cg, "net_prio", "net_prio", NULL, "linux.resources.network.priorities", res, err) < 0)
                return -1;
        if (res->n_devices && apply_group(cg, "devices", "devices", "", "linux.resources.devices", res, err) < 0)
                return -1;
        if (res->unified && res->unified[0]) {
                struct cgroup_hier *u = hier_unified(cg);
                if (!u)
                        return cap_fail(err, 0, "linux.resources.unified: needs cgroup v2, this host uses %s",
                                        cgroup_mode_name(cg->mode));
                if (cgroup_v2_apply(u, "unified", res, err) < 0)
                        return -1;
        }
        return 0;
}
