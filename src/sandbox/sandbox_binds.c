/* Host bind mounts for a VM container: the guest sees only what virtio-fs shares, so each bind
 * mount's source is bound onto binds/N of the state directory, in a mount namespace of the
 * sandbox process's own, and binds/ is shared as AGENT_BINDS_TAG. config.json is hostile: a
 * source is what the caller asked for, as with a plain container, and a symlink as its last
 * component is refused rather than followed. */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/agent_proto.h"
#include "common/util.h"

static bool has_option(const json_t *m, const char *a, const char *b)
{
        size_t i;
        const json_t *o;
        json_array_foreach(json_object_get(m, "options"), i, o)
        {
                const char *s = json_string_value(o);
                if (s && (strcmp(s, a) == 0 || (b && strcmp(s, b) == 0)))
                        return true;
        }
        return false;
}

static bool mount_is_bind(const json_t *m)
{
        const char *type = json_string_value(json_object_get(m, "type"));
        return (type && strcmp(type, "bind") == 0) || has_option(m, "bind", "rbind");
}

int sandbox_binds_plan(const char *text, const char *guest_dir, char **out, char ***sources, cap_error_t *err)
{
        json_error_t jerr;
        json_t *cfg = json_loads(text, 0, &jerr);
        if (!cfg)
                return cap_fail(err, 0, "config.json: line %d: %s", jerr.line, jerr.text);
        cleanup_strv char **src = xmalloc0(sizeof(*src));
        size_t n = 0, i;
        json_t *m;
        json_array_foreach(json_object_get(cfg, "mounts"), i, m)
        {
                const char *s = json_string_value(json_object_get(m, "source"));
                if (!json_is_object(m) || !mount_is_bind(m) || !s || s[0] != '/')
                        continue;
                if (n == SANDBOX_BINDS_MAX) {
                        json_decref(cfg);
                        return cap_fail(err, 0, "config.json: mounts: a VM container takes at most %d bind mounts",
                                        SANDBOX_BINDS_MAX);
                }
                src = xrealloc(src, (n + 2) * sizeof(*src));
                /* A read-only bind is read-only on the host too: the guest's kernel is not trusted
                 * to honour the flag it is given. */
                src[n] = xasprintf("%c%s", has_option(m, "ro", NULL) ? 'r' : 'w', s);
                src[++n] = NULL;
                json_object_set_new(m, "source", json_sprintf("%s/%zu", guest_dir, n - 1));
        }
        *out = json_dumps(cfg, JSON_COMPACT);
        json_decref(cfg);
        if (!*out)
                return cap_fail(err, 0, "config.json: cannot encode");
        *sources = steal_pointer(&src);
        return 0;
}

/* A member's binds propagate into its pod's virtiofsd as they are attached, and a remount would
 * not follow them there: each is a detached copy, made read-only before it is attached. */
static int attach_copy(int fd, const char *target, bool ro, const char *source, cap_error_t *err)
{
        cleanup_close int tree = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
        if (tree < 0)
                return cap_fail(err, errno, "mounts: copy `%s` for the pod's VM", source);
        struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY };
        if (ro && mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
                return cap_fail(err, errno, "mounts: make the copy of `%s` read-only", source);
        if (move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return cap_fail(err, errno, "mounts: bind `%s` for the pod's VM", source);
        return 0;
}

static int bind_one(const char *dir, size_t i, const char *entry, bool propagated, cap_error_t *err)
{
        const char *source = entry + 1;
        bool ro = entry[0] == 'r';
        cleanup_close int fd = open(source, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                return cap_fail(err, errno, "mounts: bind source `%s`", source);
        if (S_ISLNK(st.st_mode))
                return cap_fail(err, 0, "mounts: bind source `%s` is a symlink", source);
        cleanup_free char *target = xasprintf("%s/%zu", dir, i);
        if (S_ISDIR(st.st_mode) ? mkdir(target, 0700) < 0 : mknodat(AT_FDCWD, target, S_IFREG | 0600, 0) < 0)
                return cap_fail(err, errno, "create `%s`", target);
        if (propagated)
                return attach_copy(fd, target, ro, source, err);
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (mount(proc, target, NULL, MS_BIND | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "mounts: bind `%s` for the VM", source);
        if (ro && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
                return cap_fail(err, errno, "mounts: make the bind of `%s` read-only", source);
        return 0;
}

static int bind_all(const char *dir, char *const *sources, bool propagated, cap_error_t *err)
{
        if (mkdir(dir, 0700) < 0)
                return cap_fail(err, errno, "mkdir `%s`", dir);
        for (size_t i = 0; sources[i]; i++)
                if (bind_one(dir, i, sources[i], propagated, err) < 0)
                        return -1;
        return 0;
}

int sandbox_binds_setup(const char *dir, char *const *sources, cap_error_t *err)
{
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
                return cap_fail(err, errno, "a mount namespace for the VM's bind mounts");
        return bind_all(dir, sources, false, err);
}

int sandbox_binds_bind(const char *dir, char *const *sources, cap_error_t *err)
{
        return bind_all(dir, sources, true, err);
}
