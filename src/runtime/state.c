#include "runtime/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "common/version.h"
#include "runtime/cgroup.h"

int state_check_id(const char *id, cap_error_t *err)
{
        size_t len = id ? strlen(id) : 0;
        if (len == 0)
                return cap_fail(err, 0, "container id must not be empty");
        if (len > 1024)
                return cap_fail(err, 0, "container id is too long (%zu bytes, at most 1024)", len);
        for (size_t i = 0; i < len; i++) {
                char c = id[i];
                bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
                if (alnum || (i > 0 && strchr("_.+-", c)))
                        continue;
                return cap_fail(err, 0, "invalid container id `%s`: use letters, digits and _.+- (not first)", id);
        }
        return 0;
}

char *state_dir(const char *root, const char *id)
{
        return xasprintf("%s/%s", root, id);
}

int state_create_dir(const char *root, const char *id, cap_error_t *err)
{
        if (mkdir_p(root, 0700, err) < 0)
                return cap_error_prefix(err, "--root");
        cleanup_free char *dir = state_dir(root, id);
        if (mkdir(dir, 0700) < 0) {
                if (errno == EEXIST)
                        return cap_fail(err, 0, "container \"%s\" already exists", id);
                return cap_fail(err, errno, "mkdir `%s`", dir);
        }
        return 0;
}

static json_t *strv_pairs_to_json(char **kv)
{
        json_t *o = json_object();
        for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2)
                json_object_set_new(o, kv[i], json_string(kv[i + 1]));
        return o;
}

static char **json_to_strv_pairs(json_t *o)
{
        size_t n = json_is_object(o) ? json_object_size(o) : 0, i = 0;
        char **kv = xmalloc0((2 * n + 1) * sizeof(char *));
        const char *key;
        json_t *val;
        if (n)
                json_object_foreach (o, key, val) {
                        kv[i++] = xstrdup(key);
                        kv[i++] = xstrdup(json_string_value(val));
                }
        return kv;
}

int state_save(const char *root, const struct state *st, cap_error_t *err)
{
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:o,s:b}", "id", st->id, "bundle", st->bundle, "rootfs", st->rootfs,
                              "pid", (json_int_t)st->pid, "start_time", (json_int_t)st->start_time, "created", st->created, "owner",
                              st->owner ? st->owner : "", "annotations", strv_pairs_to_json(st->annotations), "systemd_cgroup",
                              st->systemd_cgroup);
        if (!o)
                return cap_fail(err, ENOMEM, "state.json");
        if (st->cgroup)
                json_object_set(o, "cgroup", st->cgroup);
        if (st->creator > 0) {
                json_object_set_new(o, "creator", json_integer(st->creator));
                json_object_set_new(o, "creator_start_time", json_integer((json_int_t)st->creator_start_time));
        }
        cleanup_free char *text = json_dumps(o, JSON_INDENT(2));
        json_decref(o);
        cleanup_free char *path = xasprintf("%s/%s/state.json", root, st->id);
        return write_file_atomic(path, text, strlen(text), err);
}

int state_save_cgroup(const char *root, const char *id, json_t *cgroup, cap_error_t *err)
{
        cleanup_free char *text = json_dumps(cgroup, JSON_INDENT(2));
        if (!text)
                return cap_fail(err, ENOMEM, STATE_CGROUP);
        cleanup_free char *path = xasprintf("%s/%s/" STATE_CGROUP, root, id);
        return write_file_atomic(path, text, strlen(text), err);
}

/* <root>/<id>/<name> as a JSON object: 1, or 0 if the file does not exist. */
static int state_read_json(const char *root, const char *id, const char *name, json_t **out, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/%s/%s", root, id, name);
        cleanup_free char *text = NULL;
        cleanup_error cap_error_t local = NULL;
        *out = NULL;
        if (read_file(path, &text, NULL, 1 << 24, &local) < 0) {
                if (local->errnum == ENOENT)
                        return 0;
                return cap_fail(err, local->errnum, "read `%s`", path);
        }
        json_error_t jerr;
        json_t *o = json_loads(text, 0, &jerr);
        if (!o)
                return cap_fail(err, 0, "%s: corrupt state: %s", path, jerr.text);
        if (!json_is_object(o)) {
                json_decref(o);
                return cap_fail(err, 0, "%s: corrupt state: not a JSON object", path);
        }
        *out = o;
        return 1;
}

/* Missing members become "" or 0. */
static struct state *state_from_json(json_t *o)
{
        struct state *st = xmalloc0(sizeof(*st));
        st->id = xstrdup(json_string_value(json_object_get(o, "id")));
        st->bundle = xstrdup(json_string_value(json_object_get(o, "bundle")));
        st->rootfs = xstrdup(json_string_value(json_object_get(o, "rootfs")));
        st->created = xstrdup(json_string_value(json_object_get(o, "created")));
        st->owner = xstrdup(json_string_value(json_object_get(o, "owner")));
        st->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
        st->start_time = (unsigned long long)json_integer_value(json_object_get(o, "start_time"));
        st->annotations = json_to_strv_pairs(json_object_get(o, "annotations"));
        st->systemd_cgroup = json_is_true(json_object_get(o, "systemd_cgroup"));
        st->creator = (pid_t)json_integer_value(json_object_get(o, "creator"));
        st->creator_start_time = (unsigned long long)json_integer_value(json_object_get(o, "creator_start_time"));
        json_t *cg = json_object_get(o, "cgroup");
        st->cgroup = cg ? json_incref(cg) : NULL;
        return st;
}

int state_load(const char *root, const char *id, struct state **out, cap_error_t *err)
{
        if (state_check_id(id, err) < 0)
                return -1;
        json_t *o;
        int r = state_read_json(root, id, "state.json", &o, err);
        if (r <= 0)
                return r < 0 ? -1 : cap_fail(err, 0, "container \"%s\" does not exist", id);
        cleanup_state struct state *st = state_from_json(o);
        json_decref(o);
        if (strcmp(st->id, id) != 0 || st->pid < 0 || st->creator < 0)
                return cap_fail(err, 0, "%s/%s/state.json: corrupt state: wrong id or pid", root, id);
        *out = steal_pointer(&st);
        return 0;
}

struct state *state_salvage(const char *root, const char *id)
{
        json_t *o = NULL;
        cleanup_error cap_error_t ignored = NULL;
        state_read_json(root, id, "state.json", &o, &ignored);
        struct state *st = state_from_json(o);
        json_decref(o);
        cap_error_free(&ignored);
        if (strcmp(st->id, id) != 0 || st->pid < 0 || st->creator < 0) {
                state_free(st); /* not this container's */
                st = state_from_json(NULL);
        }
        free(st->id);
        st->id = xstrdup(id);
        if (!st->cgroup)
                state_read_json(root, id, STATE_CGROUP, &st->cgroup, &ignored);
        return st;
}

void state_free(struct state *st)
{
        if (!st)
                return;
        free(st->id);
        free(st->bundle);
        free(st->rootfs);
        free(st->created);
        free(st->owner);
        cap_strvfreep(&st->annotations);
        json_decref(st->cgroup);
        free(st);
}

void state_freep(struct state **st)
{
        state_free(*st);
        *st = NULL;
}

static bool process_alive(pid_t pid, unsigned long long start_time)
{
        if (pid <= 0)
                return false;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
                return false; /* a zombie has already exited */
        return proc_start_time(pid) == start_time;
}

const char *state_status(const char *root, const struct state *st)
{
        if (st->creator > 0) /* until create has finished, the status is that of the create */
                return process_alive(st->creator, st->creator_start_time) ? "creating" : "stopped";
        if (!process_alive(st->pid, st->start_time))
                return "stopped";
        /* Frozen first: as runc, a created container can be paused too (and resumes created). */
        if (st->cgroup) {
                cleanup_error cap_error_t err = NULL;
                cleanup_cgroup struct cgroup *cg = NULL;
                if (cgroup_load(st->cgroup, &cg, &err) == 0 && cgroup_is_frozen(cg))
                        return "paused";
        }
        cleanup_free char *sock = xasprintf("%s/%s/" STATE_EXEC_SOCKET, root, st->id);
        return access(sock, F_OK) == 0 ? "created" : "running";
}

json_t *state_to_oci_json(const struct state *st, const char *status)
{
        bool stopped = strcmp(status, "stopped") == 0;
        return json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:o}", "ociVersion", CAPSULE_OCI_VERSION, "id", st->id, "status", status,
                         "pid", (json_int_t)(stopped ? 0 : st->pid), "bundle", st->bundle, "rootfs", st->rootfs, "created", st->created,
                         "owner", st->owner ? st->owner : "", "annotations", strv_pairs_to_json(st->annotations));
}

char *state_oci_string(const struct state *st, const char *status)
{
        json_t *o = state_to_oci_json(st, status);
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        return s;
}

static int compare_strings(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

int state_list(const char *root, char ***ids, cap_error_t *err)
{
        DIR *d = opendir(root);
        size_t n = 0, cap = 16;
        char **v = xmalloc0(cap * sizeof(char *));
        if (!d) {
                if (errno == ENOENT) {
                        *ids = v;
                        return 0;
                }
                free(v);
                return cap_fail(err, errno, "open --root `%s`", root);
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                cleanup_free char *p = xasprintf("%s/%s/state.json", root, de->d_name);
                if (access(p, F_OK) < 0)
                        continue; /* a create in its first step (or killed there), or not ours */
                if (n + 1 >= cap) {
                        cap *= 2;
                        char **nv = realloc(v, cap * sizeof(char *));
                        if (!nv)
                                abort();
                        v = nv;
                }
                v[n++] = xstrdup(de->d_name);
                v[n] = NULL;
        }
        closedir(d);
        qsort(v, n, sizeof(char *), compare_strings);
        *ids = v;
        return 0;
}

char *state_now_rfc3339(void)
{
        struct timespec ts;
        struct tm tm;
        char buf[64];
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
        return xasprintf("%s.%09ldZ", buf, ts.tv_nsec);
}
