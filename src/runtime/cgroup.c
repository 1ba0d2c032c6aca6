/* cgroup layout and lifecycle for v1, v2 and hybrid hosts. Paths are resolved in
 * cgroup_path.c; resources go through cgroup_resources.c to the per-version files
 * in cgroup_v1.c and cgroup_v2.c, the v2 device filter is in cgroup_bpf.c. */
#include "runtime/cgroup.h"

#include <dirent.h>
#include <linux/magic.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup_internal.h"

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

/* ---- lifecycle ---- */

struct cgroup_hier *hier_v1(struct cgroup *cg, const char *controller)
{
        for (size_t i = 0; i < cg->n_hiers; i++)
                if (!cg->hiers[i].unified && cgroup_list_has(cg->hiers[i].controllers, controller))
                        return &cg->hiers[i];
        return NULL;
}

struct cgroup_hier *hier_unified(struct cgroup *cg)
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
