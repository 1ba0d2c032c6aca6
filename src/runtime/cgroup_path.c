/* Where a container's cgroup goes: cgroupsPath (cgroupfs or systemd slice form) resolved in each hierarchy. */
#include "runtime/cgroup.h"

#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup_internal.h"

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

void hier_clear(struct cgroup_hier *h)
{
        free(h->controllers);
        free(h->mount);
        free(h->path);
        cap_strvfreep(&h->created);
}

struct cgroup_hier *hier_add(struct cgroup *cg)
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
