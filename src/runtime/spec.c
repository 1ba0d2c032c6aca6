#include "runtime/spec.h"

#include <jansson.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "common/util.h"

/* Largest config.json we accept; real ones are a few KiB, big seccomp profiles ~100 KiB. */
#define SPEC_MAX_SIZE (16u << 20)

/* jansson keeps integers as long long, so values above INT64_MAX (RLIM_INFINITY,
 * seccomp masks) would not parse. They are rewritten into strings starting with
 * this character before parsing, and conv_u64() reads them back. */
#define BIG_INT_MARK '\x01'

struct pctx {
        const char *origin;
        cap_error_t *err;
};

/* "origin: path: message" (or "origin: message" at the top level). */
__attribute__((format(printf, 3, 4))) static int pfail(struct pctx *c, const char *path, const char *fmt, ...)
{
        va_list ap;

        if (*c->err)
                return -1;
        va_start(ap, fmt);
        cap_failv(c->err, 0, fmt, ap);
        va_end(ap);
        if (*path)
                cap_error_prefix(c->err, "%s", path);
        return cap_error_prefix(c->err, "%s", c->origin);
}

static char *path_field(const char *parent, const char *key)
{
        return *parent ? xasprintf("%s.%s", parent, key) : xstrdup(key);
}

static char *path_index(const char *parent, size_t i)
{
        return xasprintf("%s[%zu]", parent, i);
}

/* JSON null counts as absent, as Go's encoding/json treats it. */
static json_t *member(json_t *obj, const char *key)
{
        json_t *v = json_object_get(obj, key);
        return json_is_null(v) ? NULL : v;
}

static bool is_big_integer(const char *p, size_t n)
{
        if (p[0] == '0')
                return false;
        if (n == 19)
                return strncmp(p, "9223372036854775807", 19) > 0;
        return n == 20 && strncmp(p, "18446744073709551615", 20) <= 0;
}

/* Rewrite bare integers in (INT64_MAX, UINT64_MAX] as "\u0001<digits>" strings. */
static char *quote_big_integers(const char *text)
{
        size_t len = strlen(text);
        /* A rewritten number has at least 19 digits and grows by 8 characters. */
        char *out = xmalloc0(len + len / 2 + 16);
        char *o = out;
        bool in_string = false;

        for (const char *p = text; *p;) {
                if (in_string) {
                        if (*p == '\\' && p[1]) {
                                *o++ = *p++;
                                *o++ = *p++;
                                continue;
                        }
                        if (*p == '"')
                                in_string = false;
                        *o++ = *p++;
                        continue;
                }
                if (*p == '"') {
                        in_string = true;
                        *o++ = *p++;
                        continue;
                }
                if (*p >= '0' && *p <= '9') {
                        size_t n = strspn(p, "0123456789");
                        bool whole = (p == text || !strchr("+-eE.", p[-1])) && (!p[n] || !strchr("eE.", p[n]));
                        if (whole && is_big_integer(p, n))
                                o += sprintf(o, "\"\\u%04x%.*s\"", BIG_INT_MARK, (int)n, p);
                        else
                                o = mempcpy(o, p, n);
                        p += n;
                        continue;
                }
                *o++ = *p++;
        }
        *o = '\0';
        return out;
}

/* ---- value conversions: each names the field path on failure ---- */

static int conv_str(struct pctx *c, json_t *v, const char *path, char **out)
{
        if (!json_is_string(v))
                return pfail(c, path, "must be a string");
        free(*out);
        *out = xstrdup(json_string_value(v));
        return 0;
}

static int conv_u64(struct pctx *c, json_t *v, const char *path, uint64_t max, uint64_t *out)
{
        if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                if (i < 0 || (uint64_t)i > max)
                        return pfail(c, path, "value %lld out of range 0..%llu", (long long)i, (unsigned long long)max);
                *out = (uint64_t)i;
                return 0;
        }
        if (json_is_string(v) && json_string_value(v)[0] == BIG_INT_MARK) {
                unsigned long long u;
                const char *digits = json_string_value(v) + 1;
                if (parse_u64(digits, &u) < 0 || u > max)
                        return pfail(c, path, "value %s out of range 0..%llu", digits, (unsigned long long)max);
                *out = u;
                return 0;
        }
        return pfail(c, path, "must be an unsigned integer");
}

static int conv_i64(struct pctx *c, json_t *v, const char *path, int64_t min, int64_t max, int64_t *out)
{
        if (json_is_string(v) && json_string_value(v)[0] == BIG_INT_MARK)
                return pfail(c, path, "value %s out of range %lld..%lld", json_string_value(v) + 1, (long long)min,
                             (long long)max);
        if (!json_is_integer(v))
                return pfail(c, path, "must be an integer");
        json_int_t i = json_integer_value(v);
        if (i < min || i > max)
                return pfail(c, path, "value %lld out of range %lld..%lld", (long long)i, (long long)min, (long long)max);
        *out = i;
        return 0;
}

static int conv_strv(struct pctx *c, json_t *v, const char *path, bool non_empty, char ***out)
{
        const char *what = non_empty ? "must be a non-empty array of strings" : "must be an array of strings";
        if (!json_is_array(v) || (non_empty && json_array_size(v) == 0))
                return pfail(c, path, "%s", what);
        size_t n = json_array_size(v);
        cleanup_strv char **strv = xmalloc0((n + 1) * sizeof(char *));
        for (size_t i = 0; i < n; i++) {
                json_t *s = json_array_get(v, i);
                if (!json_is_string(s)) {
                        cleanup_free char *p = path_index(path, i);
                        return pfail(c, p, "must be a string");
                }
                strv[i] = xstrdup(json_string_value(s));
        }
        cap_strvfreep(out);
        *out = steal_pointer(&strv);
        return 0;
}

/* An object of strings, flattened to key, value, ..., NULL. */
static int conv_map(struct pctx *c, json_t *v, const char *path, char ***out)
{
        if (!json_is_object(v))
                return pfail(c, path, "must be an object of strings");
        cleanup_strv char **strv = xmalloc0((2 * json_object_size(v) + 1) * sizeof(char *));
        const char *key;
        json_t *val;
        size_t n = 0;
        json_object_foreach(v, key, val) {
                if (!json_is_string(val)) {
                        cleanup_free char *p = xasprintf("%s[\"%s\"]", path, key);
                        return pfail(c, p, "must be a string");
                }
                strv[n++] = xstrdup(key);
                strv[n++] = xstrdup(json_string_value(val));
        }
        cap_strvfreep(out);
        *out = steal_pointer(&strv);
        return 0;
}

/* ---- member getters: absent (or null) members keep the default unless required ---- */

static int absent(struct pctx *c, const char *path, bool required)
{
        return required ? pfail(c, path, "is required") : 0;
}

static int get_str(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, char **out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (conv_str(c, v, path, out) < 0)
                return -1;
        if (required && !**out)
                return pfail(c, path, "must not be empty");
        return 0;
}

/* An absolute path, as the runtime-spec requires for most path fields. */
static int get_abs_path(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, char **out)
{
        if (get_str(c, obj, parent, key, required, out) < 0)
                return -1;
        if (*out && (*out)[0] != '/') {
                cleanup_free char *path = path_field(parent, key);
                return pfail(c, path, "\"%s\" is not an absolute path", *out);
        }
        return 0;
}

static int get_bool(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, bool *out, bool *set)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (!json_is_boolean(v))
                return pfail(c, path, "must be a boolean");
        *out = json_is_true(v);
        if (set)
                *set = true;
        return 0;
}

static int get_opt_bool(struct pctx *c, json_t *obj, const char *parent, const char *key, opt_bool *out)
{
        return get_bool(c, obj, parent, key, false, &out->v, &out->set);
}

static int get_u64(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, uint64_t max,
                   uint64_t *out, bool *set)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (conv_u64(c, v, path, max, out) < 0)
                return -1;
        if (set)
                *set = true;
        return 0;
}

static int get_u32(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, uint32_t *out)
{
        uint64_t v = *out;
        if (get_u64(c, obj, parent, key, required, UINT32_MAX, &v, NULL) < 0)
                return -1;
        *out = (uint32_t)v;
        return 0;
}

static int get_opt_u64(struct pctx *c, json_t *obj, const char *parent, const char *key, uint64_t max, opt_u64 *out)
{
        return get_u64(c, obj, parent, key, false, max, &out->v, &out->set);
}

static int get_i64(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, int64_t min,
                   int64_t max, int64_t *out, bool *set)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (conv_i64(c, v, path, min, max, out) < 0)
                return -1;
        if (set)
                *set = true;
        return 0;
}

static int get_opt_i64(struct pctx *c, json_t *obj, const char *parent, const char *key, opt_i64 *out)
{
        return get_i64(c, obj, parent, key, false, INT64_MIN, INT64_MAX, &out->v, &out->set);
}

static int get_strv(struct pctx *c, json_t *obj, const char *parent, const char *key, char ***out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        return v ? conv_strv(c, v, path, false, out) : 0;
}

static int get_map(struct pctx *c, json_t *obj, const char *parent, const char *key, char ***out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        return v ? conv_map(c, v, path, out) : 0;
}

/* *out stays NULL when the member is absent. */
static int get_typed(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, json_type type,
                     json_t **out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        *out = NULL;
        if (!v)
                return absent(c, path, required);
        if (json_typeof(v) != type)
                return pfail(c, path, "must be %s", type == JSON_OBJECT ? "an object" : "an array");
        *out = v;
        return 0;
}

static int get_object(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, json_t **out)
{
        return get_typed(c, obj, parent, key, required, JSON_OBJECT, out);
}

static int get_array(struct pctx *c, json_t *obj, const char *parent, const char *key, json_t **out)
{
        return get_typed(c, obj, parent, key, false, JSON_ARRAY, out);
}

/* The i-th element of an array of objects, with its path. */
static int array_object(struct pctx *c, json_t *arr, const char *path, size_t i, json_t **elem, char **elem_path)
{
        *elem_path = path_index(path, i);
        *elem = json_array_get(arr, i);
        if (!json_is_object(*elem))
                return pfail(c, *elem_path, "must be an object");
        return 0;
}

static int name_lookup(const char *const *names, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(names[i], name) == 0)
                        return (int)i;
        return -1;
}

/* ---- process ---- */

static const struct {
        const char *name;
        int resource;
} rlimit_names[] = {
        { "RLIMIT_AS", RLIMIT_AS },           { "RLIMIT_CORE", RLIMIT_CORE },
        { "RLIMIT_CPU", RLIMIT_CPU },         { "RLIMIT_DATA", RLIMIT_DATA },
        { "RLIMIT_FSIZE", RLIMIT_FSIZE },     { "RLIMIT_LOCKS", RLIMIT_LOCKS },
        { "RLIMIT_MEMLOCK", RLIMIT_MEMLOCK }, { "RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE },
        { "RLIMIT_NICE", RLIMIT_NICE },       { "RLIMIT_NOFILE", RLIMIT_NOFILE },
        { "RLIMIT_NPROC", RLIMIT_NPROC },     { "RLIMIT_RSS", RLIMIT_RSS },
        { "RLIMIT_RTPRIO", RLIMIT_RTPRIO },   { "RLIMIT_RTTIME", RLIMIT_RTTIME },
        { "RLIMIT_SIGPENDING", RLIMIT_SIGPENDING }, { "RLIMIT_STACK", RLIMIT_STACK },
};

static const char *const sched_policies[] = {
        "SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE",
};

static const char *const sched_flags[] = {
        "SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM",        "SCHED_FLAG_DL_OVERRUN",     "SCHED_FLAG_KEEP_POLICY",
        "SCHED_FLAG_KEEP_PARAMS",   "SCHED_FLAG_UTIL_CLAMP_MIN", "SCHED_FLAG_UTIL_CLAMP_MAX",
};

static const char *const ioprio_classes[] = { "IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE" };

static int parse_user(struct pctx *c, json_t *obj, const char *parent, struct spec_user *u)
{
        cleanup_free char *path = path_field(parent, "user");
        json_t *user, *gids;

        if (get_object(c, obj, parent, "user", false, &user) < 0)
                return -1;
        if (!user)
                return 0;
        if (get_u32(c, user, path, "uid", false, &u->uid) < 0 || get_u32(c, user, path, "gid", false, &u->gid) < 0 ||
            get_opt_u64(c, user, path, "umask", UINT32_MAX, &u->umask) < 0 ||
            get_str(c, user, path, "username", false, &u->username) < 0 ||
            get_array(c, user, path, "additionalGids", &gids) < 0)
                return -1;
        if (!gids)
                return 0;
        cleanup_free char *gids_path = path_field(path, "additionalGids");
        u->n_additional_gids = json_array_size(gids);
        u->additional_gids = xmalloc0(u->n_additional_gids * sizeof(uint32_t));
        for (size_t i = 0; i < u->n_additional_gids; i++) {
                cleanup_free char *p = path_index(gids_path, i);
                uint64_t gid;
                if (conv_u64(c, json_array_get(gids, i), p, UINT32_MAX, &gid) < 0)
                        return -1;
                u->additional_gids[i] = (uint32_t)gid;
        }
        return 0;
}

static int parse_capabilities(struct pctx *c, json_t *obj, const char *parent, struct spec_capabilities **out)
{
        cleanup_free char *path = path_field(parent, "capabilities");
        json_t *caps;

        if (get_object(c, obj, parent, "capabilities", false, &caps) < 0)
                return -1;
        if (!caps)
                return 0;
        struct spec_capabilities *sc = *out = xmalloc0(sizeof(*sc));
        if (get_strv(c, caps, path, "bounding", &sc->bounding) < 0 ||
            get_strv(c, caps, path, "effective", &sc->effective) < 0 ||
            get_strv(c, caps, path, "inheritable", &sc->inheritable) < 0 ||
            get_strv(c, caps, path, "permitted", &sc->permitted) < 0 ||
            get_strv(c, caps, path, "ambient", &sc->ambient) < 0)
                return -1;
        return 0;
}

static int parse_rlimits(struct pctx *c, json_t *obj, const char *parent, struct spec_process *p)
{
        cleanup_free char *path = path_field(parent, "rlimits");
        json_t *arr;

        if (get_array(c, obj, parent, "rlimits", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        p->n_rlimits = json_array_size(arr);
        p->rlimits = xmalloc0(p->n_rlimits * sizeof(*p->rlimits));
        for (size_t i = 0; i < p->n_rlimits; i++) {
                struct spec_rlimit *rl = &p->rlimits[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, path, i, &e, &ep) < 0 || get_str(c, e, ep, "type", true, &rl->type) < 0 ||
                    get_u64(c, e, ep, "soft", true, UINT64_MAX, &rl->soft, NULL) < 0 ||
                    get_u64(c, e, ep, "hard", true, UINT64_MAX, &rl->hard, NULL) < 0)
                        return -1;
                cleanup_free char *tp = path_field(ep, "type");
                rl->resource = -1;
                for (size_t k = 0; k < ARRAY_SIZE(rlimit_names); k++)
                        if (strcmp(rlimit_names[k].name, rl->type) == 0)
                                rl->resource = rlimit_names[k].resource;
                if (rl->resource < 0)
                        return pfail(c, tp, "unknown rlimit \"%s\"", rl->type);
                for (size_t k = 0; k < i; k++)
                        if (p->rlimits[k].resource == rl->resource)
                                return pfail(c, tp, "duplicate rlimit \"%s\"", rl->type);
                if (rl->soft > rl->hard) {
                        cleanup_free char *sp = path_field(ep, "soft");
                        return pfail(c, sp, "soft limit %llu is greater than hard limit %llu",
                                     (unsigned long long)rl->soft, (unsigned long long)rl->hard);
                }
        }
        return 0;
}

static int parse_scheduler(struct pctx *c, json_t *obj, const char *parent, struct spec_scheduler *s)
{
        cleanup_free char *path = path_field(parent, "scheduler");
        json_t *sched;
        int64_t v;

        if (get_object(c, obj, parent, "scheduler", false, &sched) < 0)
                return -1;
        if (!sched)
                return 0;
        s->set = true;
        if (get_str(c, sched, path, "policy", true, &s->policy) < 0)
                return -1;
        if (name_lookup(sched_policies, ARRAY_SIZE(sched_policies), s->policy) < 0) {
                cleanup_free char *pp = path_field(path, "policy");
                return pfail(c, pp, "unknown scheduler policy \"%s\"", s->policy);
        }
        v = 0;
        if (get_i64(c, sched, path, "nice", false, -20, 19, &v, NULL) < 0)
                return -1;
        s->nice = (int32_t)v;
        v = 0;
        if (get_i64(c, sched, path, "priority", false, INT32_MIN, INT32_MAX, &v, NULL) < 0)
                return -1;
        s->priority = (int32_t)v;
        if (get_strv(c, sched, path, "flags", &s->flags) < 0 ||
            get_u64(c, sched, path, "runtime", false, UINT64_MAX, &s->runtime, NULL) < 0 ||
            get_u64(c, sched, path, "deadline", false, UINT64_MAX, &s->deadline, NULL) < 0 ||
            get_u64(c, sched, path, "period", false, UINT64_MAX, &s->period, NULL) < 0)
                return -1;
        for (size_t i = 0; s->flags && s->flags[i]; i++) {
                if (name_lookup(sched_flags, ARRAY_SIZE(sched_flags), s->flags[i]) < 0) {
                        cleanup_free char *fp = path_field(path, "flags");
                        cleanup_free char *ip = path_index(fp, i);
                        return pfail(c, ip, "unknown scheduler flag \"%s\"", s->flags[i]);
                }
        }
        return 0;
}

static int parse_io_priority(struct pctx *c, json_t *obj, const char *parent, struct spec_io_priority *io)
{
        cleanup_free char *path = path_field(parent, "ioPriority");
        json_t *ioprio;
        int64_t prio = 0;

        if (get_object(c, obj, parent, "ioPriority", false, &ioprio) < 0)
                return -1;
        if (!ioprio)
                return 0;
        io->set = true;
        if (get_str(c, ioprio, path, "class", true, &io->class_name) < 0)
                return -1;
        if (name_lookup(ioprio_classes, ARRAY_SIZE(ioprio_classes), io->class_name) < 0) {
                cleanup_free char *cp = path_field(path, "class");
                return pfail(c, cp, "unknown I/O priority class \"%s\"", io->class_name);
        }
        if (get_i64(c, ioprio, path, "priority", true, 0, 7, &prio, NULL) < 0)
                return -1;
        io->priority = (int)prio;
        return 0;
}

static int parse_env(struct pctx *c, json_t *obj, const char *parent, char ***env)
{
        if (get_strv(c, obj, parent, "env", env) < 0)
                return -1;
        for (size_t i = 0; *env && (*env)[i]; i++) {
                const char *eq = strchr((*env)[i], '=');
                if (!eq || eq == (*env)[i]) {
                        cleanup_free char *ep = path_field(parent, "env");
                        cleanup_free char *ip = path_index(ep, i);
                        return pfail(c, ip, "\"%s\" is not of the form NAME=VALUE", (*env)[i]);
                }
        }
        return 0;
}

/* `path` is "process" in config.json and "" for a standalone process.json. */
static int parse_process(struct pctx *c, json_t *obj, const char *path, struct spec_process *p)
{
        json_t *console, *args;

        if (!json_is_object(obj))
                return pfail(c, path, "must be an object");
        if (get_bool(c, obj, path, "terminal", false, &p->terminal, NULL) < 0 ||
            get_object(c, obj, path, "consoleSize", false, &console) < 0)
                return -1;
        if (console) {
                cleanup_free char *cp = path_field(path, "consoleSize");
                if (get_u64(c, console, cp, "height", true, UINT16_MAX, &p->console_height.v, &p->console_height.set) < 0 ||
                    get_u64(c, console, cp, "width", true, UINT16_MAX, &p->console_width.v, &p->console_width.set) < 0)
                        return -1;
        }
        cleanup_free char *args_path = path_field(path, "args");
        args = member(obj, "args");
        if (conv_strv(c, args, args_path, true, &p->args) < 0)
                return -1;
        if (parse_user(c, obj, path, &p->user) < 0 || parse_env(c, obj, path, &p->env) < 0 ||
            get_abs_path(c, obj, path, "cwd", true, &p->cwd) < 0 ||
            parse_capabilities(c, obj, path, &p->capabilities) < 0 || parse_rlimits(c, obj, path, p) < 0 ||
            get_bool(c, obj, path, "noNewPrivileges", false, &p->no_new_privileges, NULL) < 0 ||
            get_str(c, obj, path, "apparmorProfile", false, &p->apparmor_profile) < 0 ||
            get_str(c, obj, path, "selinuxLabel", false, &p->selinux_label) < 0 ||
            get_i64(c, obj, path, "oomScoreAdj", false, -1000, 1000, &p->oom_score_adj.v, &p->oom_score_adj.set) < 0 ||
            parse_scheduler(c, obj, path, &p->scheduler) < 0 || parse_io_priority(c, obj, path, &p->io_priority) < 0)
                return -1;
        return 0;
}

/* ---- mounts and hooks ---- */

static int parse_mounts(struct pctx *c, json_t *root, struct spec *spec)
{
        json_t *arr;

        if (get_array(c, root, "", "mounts", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        spec->n_mounts = json_array_size(arr);
        spec->mounts = xmalloc0(spec->n_mounts * sizeof(*spec->mounts));
        for (size_t i = 0; i < spec->n_mounts; i++) {
                struct spec_mount *m = &spec->mounts[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, "mounts", i, &e, &ep) < 0 ||
                    get_abs_path(c, e, ep, "destination", true, &m->destination) < 0 ||
                    get_str(c, e, ep, "type", false, &m->type) < 0 || get_str(c, e, ep, "source", false, &m->source) < 0 ||
                    get_strv(c, e, ep, "options", &m->options) < 0)
                        return -1;
        }
        return 0;
}

static int parse_hook_list(struct pctx *c, json_t *hooks, const char *parent, const char *key, struct spec_hook_list *l)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *arr;

        if (get_array(c, hooks, parent, key, &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        l->n = json_array_size(arr);
        l->hooks = xmalloc0(l->n * sizeof(*l->hooks));
        for (size_t i = 0; i < l->n; i++) {
                struct spec_hook *h = &l->hooks[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, path, i, &e, &ep) < 0 || get_abs_path(c, e, ep, "path", true, &h->path) < 0 ||
                    get_strv(c, e, ep, "args", &h->args) < 0 || get_strv(c, e, ep, "env", &h->env) < 0 ||
                    get_i64(c, e, ep, "timeout", false, 1, INT32_MAX, &h->timeout.v, &h->timeout.set) < 0)
                        return -1;
        }
        return 0;
}

static int parse_hooks(struct pctx *c, json_t *root, struct spec_hooks *h)
{
        json_t *hooks;

        if (get_object(c, root, "", "hooks", false, &hooks) < 0)
                return -1;
        if (!hooks)
                return 0;
        if (parse_hook_list(c, hooks, "hooks", "prestart", &h->prestart) < 0 ||
            parse_hook_list(c, hooks, "hooks", "createRuntime", &h->create_runtime) < 0 ||
            parse_hook_list(c, hooks, "hooks", "createContainer", &h->create_container) < 0 ||
            parse_hook_list(c, hooks, "hooks", "startContainer", &h->start_container) < 0 ||
            parse_hook_list(c, hooks, "hooks", "poststart", &h->poststart) < 0 ||
            parse_hook_list(c, hooks, "hooks", "poststop", &h->poststop) < 0)
                return -1;
        return 0;
}

/* ---- linux ---- */

static const struct {
        const char *name;
        int type;
} namespace_names[] = {
        { "pid", CLONE_NEWPID }, { "network", CLONE_NEWNET },     { "mount", CLONE_NEWNS }, { "ipc", CLONE_NEWIPC },
        { "uts", CLONE_NEWUTS }, { "user", CLONE_NEWUSER }, { "cgroup", CLONE_NEWCGROUP }, { "time", CLONE_NEWTIME },
};

static int parse_namespaces(struct pctx *c, json_t *lx, struct spec_linux *l)
{
        json_t *arr;

        if (get_array(c, lx, "linux", "namespaces", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        l->n_namespaces = json_array_size(arr);
        l->namespaces = xmalloc0(l->n_namespaces * sizeof(*l->namespaces));
        for (size_t i = 0; i < l->n_namespaces; i++) {
                struct spec_namespace *ns = &l->namespaces[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, "linux.namespaces", i, &e, &ep) < 0 ||
                    get_str(c, e, ep, "type", true, &ns->name) < 0 || get_abs_path(c, e, ep, "path", false, &ns->path) < 0)
                        return -1;
                cleanup_free char *tp = path_field(ep, "type");
                for (size_t k = 0; k < ARRAY_SIZE(namespace_names); k++)
                        if (strcmp(namespace_names[k].name, ns->name) == 0)
                                ns->type = namespace_names[k].type;
                if (!ns->type)
                        return pfail(c, tp, "unknown namespace \"%s\"", ns->name);
                for (size_t k = 0; k < i; k++)
                        if (l->namespaces[k].type == ns->type)
                                return pfail(c, tp, "duplicate namespace \"%s\"", ns->name);
        }
        return 0;
}

static int parse_id_mappings(struct pctx *c, json_t *lx, const char *key, struct spec_id_mapping **out, size_t *n_out)
{
        cleanup_free char *path = path_field("linux", key);
        json_t *arr;

        if (get_array(c, lx, "linux", key, &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        *n_out = json_array_size(arr);
        *out = xmalloc0(*n_out * sizeof(**out));
        for (size_t i = 0; i < *n_out; i++) {
                struct spec_id_mapping *m = &(*out)[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, path, i, &e, &ep) < 0 ||
                    get_u32(c, e, ep, "containerID", true, &m->container_id) < 0 ||
                    get_u32(c, e, ep, "hostID", true, &m->host_id) < 0 || get_u32(c, e, ep, "size", true, &m->size) < 0)
                        return -1;
                cleanup_free char *sp = path_field(ep, "size");
                if (m->size == 0)
                        return pfail(c, sp, "must be greater than 0");
                if ((uint64_t)m->container_id + m->size > (uint64_t)UINT32_MAX + 1 ||
                    (uint64_t)m->host_id + m->size > (uint64_t)UINT32_MAX + 1)
                        return pfail(c, sp, "range %u+%u or %u+%u overflows 32-bit ids", m->container_id, m->size,
                                     m->host_id, m->size);
        }
        return 0;
}

/* A one-character string among `allowed`; absent leaves *out unchanged. */
static int get_type_char(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required,
                         const char *allowed, char *out)
{
        cleanup_free char *path = path_field(parent, key);
        cleanup_free char *s = NULL;

        if (get_str(c, obj, parent, key, required, &s) < 0)
                return -1;
        if (!s)
                return 0;
        if (strlen(s) != 1 || !strchr(allowed, s[0]))
                return pfail(c, path, "unknown device type \"%s\"", s);
        *out = s[0];
        return 0;
}

static int parse_devices(struct pctx *c, json_t *lx, struct spec_linux *l)
{
        json_t *arr;

        if (get_array(c, lx, "linux", "devices", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        l->n_devices = json_array_size(arr);
        l->devices = xmalloc0(l->n_devices * sizeof(*l->devices));
        for (size_t i = 0; i < l->n_devices; i++) {
                struct spec_device *d = &l->devices[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, "linux.devices", i, &e, &ep) < 0 ||
                    get_type_char(c, e, ep, "type", true, "cbup", &d->type) < 0 ||
                    get_abs_path(c, e, ep, "path", true, &d->path) < 0)
                        return -1;
                bool needs_numbers = d->type != 'p';
                if (get_i64(c, e, ep, "major", needs_numbers, 0, INT64_MAX, &d->major, NULL) < 0 ||
                    get_i64(c, e, ep, "minor", needs_numbers, 0, INT64_MAX, &d->minor, NULL) < 0 ||
                    get_opt_u64(c, e, ep, "fileMode", UINT32_MAX, &d->file_mode) < 0 ||
                    get_opt_u64(c, e, ep, "uid", UINT32_MAX, &d->uid) < 0 ||
                    get_opt_u64(c, e, ep, "gid", UINT32_MAX, &d->gid) < 0)
                        return -1;
        }
        return 0;
}

static int parse_device_cgroup(struct pctx *c, json_t *res, const char *parent, struct spec_resources *r)
{
        cleanup_free char *path = path_field(parent, "devices");
        json_t *arr;

        if (get_array(c, res, parent, "devices", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        r->n_devices = json_array_size(arr);
        r->devices = xmalloc0(r->n_devices * sizeof(*r->devices));
        for (size_t i = 0; i < r->n_devices; i++) {
                struct spec_device_cgroup *d = &r->devices[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                d->type = 'a';
                d->major = d->minor = -1;
                if (array_object(c, arr, path, i, &e, &ep) < 0 || get_bool(c, e, ep, "allow", true, &d->allow, NULL) < 0 ||
                    get_type_char(c, e, ep, "type", false, "acb", &d->type) < 0 ||
                    get_i64(c, e, ep, "major", false, -1, INT64_MAX, &d->major, NULL) < 0 ||
                    get_i64(c, e, ep, "minor", false, -1, INT64_MAX, &d->minor, NULL) < 0 ||
                    get_str(c, e, ep, "access", false, &d->access) < 0)
                        return -1;
                if (!d->access)
                        d->access = xstrdup("rwm");
                if (!*d->access || strspn(d->access, "rwm") != strlen(d->access)) {
                        cleanup_free char *ap = path_field(ep, "access");
                        return pfail(c, ap, "\"%s\" is not a subset of \"rwm\"", d->access);
                }
        }
        return 0;
}

static int parse_memory(struct pctx *c, json_t *res, const char *parent, struct spec_memory *m)
{
        cleanup_free char *path = path_field(parent, "memory");
        json_t *mem;

        if (get_object(c, res, parent, "memory", false, &mem) < 0)
                return -1;
        if (!mem)
                return 0;
        if (get_opt_i64(c, mem, path, "limit", &m->limit) < 0 ||
            get_opt_i64(c, mem, path, "reservation", &m->reservation) < 0 ||
            get_opt_i64(c, mem, path, "swap", &m->swap) < 0 || get_opt_i64(c, mem, path, "kernel", &m->kernel) < 0 ||
            get_opt_i64(c, mem, path, "kernelTCP", &m->kernel_tcp) < 0 ||
            get_opt_u64(c, mem, path, "swappiness", 100, &m->swappiness) < 0 ||
            get_opt_bool(c, mem, path, "disableOOMKiller", &m->disable_oom_killer) < 0 ||
            get_opt_bool(c, mem, path, "useHierarchy", &m->use_hierarchy) < 0 ||
            get_opt_bool(c, mem, path, "checkBeforeUpdate", &m->check_before_update) < 0)
                return -1;
        return 0;
}

static int parse_cpu(struct pctx *c, json_t *res, const char *parent, struct spec_cpu *cpu)
{
        cleanup_free char *path = path_field(parent, "cpu");
        json_t *o;

        if (get_object(c, res, parent, "cpu", false, &o) < 0)
                return -1;
        if (!o)
                return 0;
        if (get_opt_u64(c, o, path, "shares", UINT64_MAX, &cpu->shares) < 0 ||
            get_opt_i64(c, o, path, "quota", &cpu->quota) < 0 ||
            get_opt_u64(c, o, path, "burst", UINT64_MAX, &cpu->burst) < 0 ||
            get_opt_u64(c, o, path, "period", UINT64_MAX, &cpu->period) < 0 ||
            get_opt_i64(c, o, path, "realtimeRuntime", &cpu->realtime_runtime) < 0 ||
            get_opt_u64(c, o, path, "realtimePeriod", UINT64_MAX, &cpu->realtime_period) < 0 ||
            get_str(c, o, path, "cpus", false, &cpu->cpus) < 0 || get_str(c, o, path, "mems", false, &cpu->mems) < 0 ||
            get_opt_i64(c, o, path, "idle", &cpu->idle) < 0)
                return -1;
        return 0;
}

static int parse_throttle(struct pctx *c, json_t *blkio, const char *parent, const char *key,
                          struct spec_blkio_throttle **out, size_t *n_out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *arr;

        if (get_array(c, blkio, parent, key, &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        *n_out = json_array_size(arr);
        *out = xmalloc0(*n_out * sizeof(**out));
        for (size_t i = 0; i < *n_out; i++) {
                struct spec_blkio_throttle *t = &(*out)[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, path, i, &e, &ep) < 0 ||
                    get_i64(c, e, ep, "major", true, 0, INT64_MAX, &t->major, NULL) < 0 ||
                    get_i64(c, e, ep, "minor", true, 0, INT64_MAX, &t->minor, NULL) < 0 ||
                    get_u64(c, e, ep, "rate", true, UINT64_MAX, &t->rate, NULL) < 0)
                        return -1;
        }
        return 0;
}

static int parse_blkio(struct pctx *c, json_t *res, const char *parent, struct spec_blkio *b)
{
        cleanup_free char *path = path_field(parent, "blockIO");
        cleanup_free char *wd_path = path_field(path, "weightDevice");
        json_t *o, *wd;

        if (get_object(c, res, parent, "blockIO", false, &o) < 0)
                return -1;
        if (!o)
                return 0;
        if (get_opt_u64(c, o, path, "weight", UINT16_MAX, &b->weight) < 0 ||
            get_opt_u64(c, o, path, "leafWeight", UINT16_MAX, &b->leaf_weight) < 0 ||
            get_array(c, o, path, "weightDevice", &wd) < 0 ||
            parse_throttle(c, o, path, "throttleReadBpsDevice", &b->throttle_read_bps, &b->n_throttle_read_bps) < 0 ||
            parse_throttle(c, o, path, "throttleWriteBpsDevice", &b->throttle_write_bps, &b->n_throttle_write_bps) < 0 ||
            parse_throttle(c, o, path, "throttleReadIOPSDevice", &b->throttle_read_iops, &b->n_throttle_read_iops) < 0 ||
            parse_throttle(c, o, path, "throttleWriteIOPSDevice", &b->throttle_write_iops, &b->n_throttle_write_iops) < 0)
                return -1;
        if (!wd)
                return 0;
        b->n_weight_devices = json_array_size(wd);
        b->weight_devices = xmalloc0(b->n_weight_devices * sizeof(*b->weight_devices));
        for (size_t i = 0; i < b->n_weight_devices; i++) {
                struct spec_blkio_weight_device *w = &b->weight_devices[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, wd, wd_path, i, &e, &ep) < 0 ||
                    get_i64(c, e, ep, "major", true, 0, INT64_MAX, &w->major, NULL) < 0 ||
                    get_i64(c, e, ep, "minor", true, 0, INT64_MAX, &w->minor, NULL) < 0 ||
                    get_opt_u64(c, e, ep, "weight", UINT16_MAX, &w->weight) < 0 ||
                    get_opt_u64(c, e, ep, "leafWeight", UINT16_MAX, &w->leaf_weight) < 0)
                        return -1;
        }
        return 0;
}

static int parse_hugepages(struct pctx *c, json_t *res, const char *parent, struct spec_resources *r)
{
        cleanup_free char *path = path_field(parent, "hugepageLimits");
        json_t *arr;

        if (get_array(c, res, parent, "hugepageLimits", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        r->n_hugepage_limits = json_array_size(arr);
        r->hugepage_limits = xmalloc0(r->n_hugepage_limits * sizeof(*r->hugepage_limits));
        for (size_t i = 0; i < r->n_hugepage_limits; i++) {
                struct spec_hugepage_limit *h = &r->hugepage_limits[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, path, i, &e, &ep) < 0 || get_str(c, e, ep, "pageSize", true, &h->page_size) < 0 ||
                    get_u64(c, e, ep, "limit", true, UINT64_MAX, &h->limit, NULL) < 0)
                        return -1;
        }
        return 0;
}

static int parse_network(struct pctx *c, json_t *res, const char *parent, struct spec_resources *r)
{
        cleanup_free char *path = path_field(parent, "network");
        cleanup_free char *prio_path = path_field(path, "priorities");
        json_t *net, *arr;

        if (get_object(c, res, parent, "network", false, &net) < 0)
                return -1;
        if (!net)
                return 0;
        if (get_opt_u64(c, net, path, "classID", UINT32_MAX, &r->net_class_id) < 0 ||
            get_array(c, net, path, "priorities", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        r->n_net_priorities = json_array_size(arr);
        r->net_priorities = xmalloc0(r->n_net_priorities * sizeof(*r->net_priorities));
        for (size_t i = 0; i < r->n_net_priorities; i++) {
                struct spec_net_priority *p = &r->net_priorities[i];
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, prio_path, i, &e, &ep) < 0 || get_str(c, e, ep, "name", true, &p->name) < 0 ||
                    get_u32(c, e, ep, "priority", true, &p->priority) < 0)
                        return -1;
        }
        return 0;
}

static int parse_resources(struct pctx *c, json_t *lx, struct spec_linux *l)
{
        const char *path = "linux.resources";
        json_t *res, *pids;

        if (get_object(c, lx, "linux", "resources", false, &res) < 0)
                return -1;
        if (!res)
                return 0;
        struct spec_resources *r = l->resources = xmalloc0(sizeof(*r));
        if (parse_device_cgroup(c, res, path, r) < 0 || parse_memory(c, res, path, &r->memory) < 0 ||
            parse_cpu(c, res, path, &r->cpu) < 0 || get_object(c, res, path, "pids", false, &pids) < 0)
                return -1;
        if (pids && get_opt_i64(c, pids, "linux.resources.pids", "limit", &r->pids_limit) < 0)
                return -1;
        if (parse_blkio(c, res, path, &r->blkio) < 0 || parse_hugepages(c, res, path, r) < 0 ||
            parse_network(c, res, path, r) < 0 || get_map(c, res, path, "unified", &r->unified) < 0)
                return -1;
        return 0;
}

static int parse_seccomp_syscall(struct pctx *c, json_t *e, const char *ep, struct spec_seccomp_syscall *sc)
{
        cleanup_free char *names_path = path_field(ep, "names");
        cleanup_free char *args_path = path_field(ep, "args");
        json_t *names, *args;

        names = member(e, "names");
        if (!names)
                return pfail(c, names_path, "is required");
        if (conv_strv(c, names, names_path, false, &sc->names) < 0 ||
            get_str(c, e, ep, "action", true, &sc->action) < 0 ||
            get_opt_u64(c, e, ep, "errnoRet", UINT32_MAX, &sc->errno_ret) < 0 || get_array(c, e, ep, "args", &args) < 0)
                return -1;
        if (!args)
                return 0;
        sc->n_args = json_array_size(args);
        sc->args = xmalloc0(sc->n_args * sizeof(*sc->args));
        for (size_t i = 0; i < sc->n_args; i++) {
                struct spec_seccomp_arg *a = &sc->args[i];
                cleanup_free char *ap = NULL;
                json_t *arg;
                uint64_t index = 0;
                if (array_object(c, args, args_path, i, &arg, &ap) < 0 ||
                    get_u64(c, arg, ap, "index", true, 5, &index, NULL) < 0 ||
                    get_u64(c, arg, ap, "value", true, UINT64_MAX, &a->value, NULL) < 0 ||
                    get_u64(c, arg, ap, "valueTwo", false, UINT64_MAX, &a->value_two, NULL) < 0 ||
                    get_str(c, arg, ap, "op", true, &a->op) < 0)
                        return -1;
                a->index = (uint32_t)index;
        }
        return 0;
}

static int parse_seccomp(struct pctx *c, json_t *lx, struct spec_linux *l)
{
        const char *path = "linux.seccomp";
        json_t *o, *arr;

        if (get_object(c, lx, "linux", "seccomp", false, &o) < 0)
                return -1;
        if (!o)
                return 0;
        struct spec_seccomp *sc = l->seccomp = xmalloc0(sizeof(*sc));
        if (get_str(c, o, path, "defaultAction", true, &sc->default_action) < 0 ||
            get_opt_u64(c, o, path, "defaultErrnoRet", UINT32_MAX, &sc->default_errno_ret) < 0 ||
            get_strv(c, o, path, "architectures", &sc->architectures) < 0 || get_strv(c, o, path, "flags", &sc->flags) < 0 ||
            get_abs_path(c, o, path, "listenerPath", false, &sc->listener_path) < 0 ||
            get_str(c, o, path, "listenerMetadata", false, &sc->listener_metadata) < 0 ||
            get_array(c, o, path, "syscalls", &arr) < 0)
                return -1;
        if (!arr)
                return 0;
        sc->n_syscalls = json_array_size(arr);
        sc->syscalls = xmalloc0(sc->n_syscalls * sizeof(*sc->syscalls));
        for (size_t i = 0; i < sc->n_syscalls; i++) {
                cleanup_free char *ep = NULL;
                json_t *e;
                if (array_object(c, arr, "linux.seccomp.syscalls", i, &e, &ep) < 0 ||
                    parse_seccomp_syscall(c, e, ep, &sc->syscalls[i]) < 0)
                        return -1;
        }
        return 0;
}

static int parse_personality(struct pctx *c, json_t *lx, struct spec_linux *l)
{
        const char *path = "linux.personality";
        cleanup_strv char **flags = NULL;
        json_t *o;

        if (get_object(c, lx, "linux", "personality", false, &o) < 0)
                return -1;
        if (!o)
                return 0;
        if (get_str(c, o, path, "domain", true, &l->personality_domain) < 0)
                return -1;
        if (strcmp(l->personality_domain, "LINUX") != 0 && strcmp(l->personality_domain, "LINUX32") != 0)
                return pfail(c, "linux.personality.domain", "unknown personality domain \"%s\"", l->personality_domain);
        /* The runtime-spec defines no flags yet; only their type can be checked. */
        return get_strv(c, o, path, "flags", &flags);
}

static int parse_time_offsets(struct pctx *c, json_t *lx, struct spec_linux *l)
{
        const char *path = "linux.timeOffsets";
        const char *clock;
        json_t *o, *v;

        if (get_object(c, lx, "linux", "timeOffsets", false, &o) < 0)
                return -1;
        if (!o)
                return 0;
        json_object_foreach(o, clock, v) {
                cleanup_free char *cp = path_field(path, clock);
                struct spec_time_offset *t;
                uint64_t ns = 0;
                if (strcmp(clock, "boottime") == 0)
                        t = &l->time_boottime;
                else if (strcmp(clock, "monotonic") == 0)
                        t = &l->time_monotonic;
                else
                        return pfail(c, cp, "unknown clock \"%s\"", clock);
                if (!json_is_object(v))
                        return pfail(c, cp, "must be an object");
                if (get_i64(c, v, cp, "secs", false, INT64_MIN, INT64_MAX, &t->secs, NULL) < 0 ||
                    get_u64(c, v, cp, "nanosecs", false, 999999999, &ns, NULL) < 0)
                        return -1;
                t->nanosecs = (uint32_t)ns;
                t->set = true;
        }
        return 0;
}

static int check_abs_paths(struct pctx *c, const char *path, char **paths)
{
        for (size_t i = 0; paths && paths[i]; i++) {
                if (paths[i][0] != '/') {
                        cleanup_free char *ip = path_index(path, i);
                        return pfail(c, ip, "\"%s\" is not an absolute path", paths[i]);
                }
        }
        return 0;
}

static const char *const propagations[] = {
        "shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate", "runbindable",
};

static bool device_has_own_rule(const struct spec_resources *r, size_t n, char type, int64_t major, int64_t minor)
{
        for (size_t i = 0; i < n; i++) {
                const struct spec_device_cgroup *c = &r->devices[i];
                if ((c->type == type || c->type == 'a') && c->major == major && (c->minor == -1 || c->minor == minor))
                        return true;
        }
        return false;
}

/* The nodes of linux.devices are made with mknod once init is in its device cgroup: allow
 * that mknod, and only that (reading and writing them stays for linux.resources.devices to
 * allow). Appended, so it holds after a deny-all; a device that linux.resources.devices names
 * by number keeps exactly its rules. runc allows mknod of every device instead. */
static void allow_device_nodes(struct spec_linux *l)
{
        struct spec_resources *r = l->resources;
        if (!r || !r->n_devices)
                return;
        size_t n = r->n_devices;
        r->devices = realloc(r->devices, (n + l->n_devices) * sizeof(*r->devices));
        if (!r->devices)
                abort();
        for (size_t i = 0; i < l->n_devices; i++) {
                const struct spec_device *d = &l->devices[i];
                char type = d->type == 'b' ? 'b' : 'c';
                if (d->type == 'p' || device_has_own_rule(r, r->n_devices, type, d->major, d->minor))
                        continue;
                r->devices[n++] = (struct spec_device_cgroup){ .allow = true, .type = type,
                                                               .major = d->major, .minor = d->minor,
                                                               .access = xstrdup("m") };
        }
        r->n_devices = n;
}

static int parse_linux(struct pctx *c, json_t *root, struct spec_linux *l)
{
        json_t *lx;

        if (get_object(c, root, "", "linux", false, &lx) < 0)
                return -1;
        if (!lx)
                return 0;
        if (parse_namespaces(c, lx, l) < 0 ||
            parse_id_mappings(c, lx, "uidMappings", &l->uid_mappings, &l->n_uid_mappings) < 0 ||
            parse_id_mappings(c, lx, "gidMappings", &l->gid_mappings, &l->n_gid_mappings) < 0 ||
            get_map(c, lx, "linux", "sysctl", &l->sysctl) < 0 || parse_resources(c, lx, l) < 0 ||
            get_str(c, lx, "linux", "cgroupsPath", false, &l->cgroups_path) < 0 || parse_devices(c, lx, l) < 0 ||
            get_strv(c, lx, "linux", "maskedPaths", &l->masked_paths) < 0 ||
            check_abs_paths(c, "linux.maskedPaths", l->masked_paths) < 0 ||
            get_strv(c, lx, "linux", "readonlyPaths", &l->readonly_paths) < 0 ||
            check_abs_paths(c, "linux.readonlyPaths", l->readonly_paths) < 0 ||
            get_str(c, lx, "linux", "rootfsPropagation", false, &l->rootfs_propagation) < 0 ||
            get_str(c, lx, "linux", "mountLabel", false, &l->mount_label) < 0 || parse_seccomp(c, lx, l) < 0 ||
            parse_personality(c, lx, l) < 0 || parse_time_offsets(c, lx, l) < 0)
                return -1;
        if (l->rootfs_propagation && *l->rootfs_propagation &&
            name_lookup(propagations, ARRAY_SIZE(propagations), l->rootfs_propagation) < 0)
                return pfail(c, "linux.rootfsPropagation", "unknown propagation \"%s\"", l->rootfs_propagation);
        allow_device_nodes(l);
        return 0;
}

/* ---- entry points ---- */

static json_t *load_json(struct pctx *c, const char *text)
{
        cleanup_free char *quoted = quote_big_integers(text);
        json_error_t jerr;
        json_t *root = json_loads(quoted, 0, &jerr);

        if (!root) {
                cap_fail(c->err, 0, "%s: invalid JSON at line %d column %d: %s", c->origin, jerr.line, jerr.column,
                         jerr.text);
                return NULL;
        }
        if (!json_is_object(root)) {
                json_decref(root);
                pfail(c, "", "must be a JSON object");
                return NULL;
        }
        return root;
}

static int parse_root_object(struct pctx *c, json_t *root, struct spec *spec)
{
        json_t *ro, *proc;

        if (get_str(c, root, "", "ociVersion", true, &spec->oci_version) < 0 ||
            get_object(c, root, "", "root", true, &ro) < 0 || get_str(c, ro, "root", "path", true, &spec->root_path) < 0 ||
            get_bool(c, ro, "root", "readonly", false, &spec->root_readonly, NULL) < 0)
                return -1;
        proc = member(root, "process");
        if (proc) {
                spec->process = xmalloc0(sizeof(*spec->process));
                if (parse_process(c, proc, "process", spec->process) < 0)
                        return -1;
        }
        if (get_str(c, root, "", "hostname", false, &spec->hostname) < 0 ||
            get_str(c, root, "", "domainname", false, &spec->domainname) < 0 || parse_mounts(c, root, spec) < 0 ||
            parse_hooks(c, root, &spec->hooks) < 0 || get_map(c, root, "", "annotations", &spec->annotations) < 0 ||
            parse_linux(c, root, &spec->linux) < 0)
                return -1;
        /* Setting them without a private UTS namespace would change the host's. */
        if (!spec_namespace(spec, CLONE_NEWUTS)) {
                if (spec->hostname && *spec->hostname)
                        return pfail(c, "hostname", "requires a uts namespace in linux.namespaces");
                if (spec->domainname && *spec->domainname)
                        return pfail(c, "domainname", "requires a uts namespace in linux.namespaces");
        }
        /* Without a mount namespace of its own, these would remount or cover the host's paths
         * (runc refuses the masked and read-only paths; it ignores root.readonly and applies
         * rootfsPropagation to the host's /). */
        if (!spec_namespace(spec, CLONE_NEWNS)) {
                const char *field = spec->root_readonly                                          ? "root.readonly"
                                    : spec->linux.masked_paths && spec->linux.masked_paths[0]     ? "linux.maskedPaths"
                                    : spec->linux.readonly_paths && spec->linux.readonly_paths[0] ? "linux.readonlyPaths"
                                    : spec->linux.rootfs_propagation && *spec->linux.rootfs_propagation
                                            ? "linux.rootfsPropagation"
                                            : NULL;
                if (field)
                        return pfail(c, field, "requires a mount namespace in linux.namespaces");
        }
        return 0;
}

int spec_parse(const char *json_text, const char *origin, struct spec **out, cap_error_t *err)
{
        struct pctx c = { origin ? origin : "config.json", err };
        cleanup_spec struct spec *spec = xmalloc0(sizeof(*spec));
        json_t *root = load_json(&c, json_text);

        if (!root)
                return -1;
        int r = parse_root_object(&c, root, spec);
        json_decref(root);
        if (r < 0)
                return -1;
        *out = steal_pointer(&spec);
        return 0;
}

int spec_parse_process(const char *json_text, const char *origin, struct spec_process **out, cap_error_t *err)
{
        struct pctx c = { origin ? origin : "process.json", err };
        struct spec_process *p = xmalloc0(sizeof(*p));
        json_t *root = load_json(&c, json_text);
        int r = root ? parse_process(&c, root, "", p) : -1;

        json_decref(root);
        if (r < 0) {
                spec_process_free(p);
                return -1;
        }
        *out = p;
        return 0;
}

int spec_load(const char *bundle, struct spec **out, cap_error_t *err)
{
        cleanup_free char *bundle_abs = realpath(bundle, NULL);
        cleanup_free char *config = xasprintf("%s/config.json", bundle);
        cleanup_free char *text = NULL;
        cleanup_spec struct spec *spec = NULL;
        struct stat st;

        if (!bundle_abs)
                return cap_fail(err, errno, "bundle `%s`", bundle);
        if (read_file(config, &text, NULL, SPEC_MAX_SIZE, err) < 0 || spec_parse(text, "config.json", &spec, err) < 0)
                return -1;
        if (spec->root_path[0] != '/') {
                char *abs = xasprintf("%s/%s", bundle_abs, spec->root_path);
                free(spec->root_path);
                spec->root_path = abs;
        }
        if (stat(spec->root_path, &st) < 0 || !S_ISDIR(st.st_mode))
                return cap_fail(err, 0, "%s: rootfs does not exist", spec->root_path);
        *out = steal_pointer(&spec);
        return 0;
}

/* ---- freeing ---- */

static void strv_free(char **v)
{
        cap_strvfreep(&v);
}

void spec_process_free(struct spec_process *p)
{
        if (!p)
                return;
        free(p->user.additional_gids);
        free(p->user.username);
        strv_free(p->args);
        strv_free(p->env);
        free(p->cwd);
        if (p->capabilities) {
                strv_free(p->capabilities->bounding);
                strv_free(p->capabilities->effective);
                strv_free(p->capabilities->inheritable);
                strv_free(p->capabilities->permitted);
                strv_free(p->capabilities->ambient);
                free(p->capabilities);
        }
        for (size_t i = 0; i < p->n_rlimits; i++)
                free(p->rlimits[i].type);
        free(p->rlimits);
        free(p->apparmor_profile);
        free(p->selinux_label);
        free(p->scheduler.policy);
        strv_free(p->scheduler.flags);
        free(p->io_priority.class_name);
        free(p);
}

static void hook_list_free(struct spec_hook_list *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->hooks[i].path);
                strv_free(l->hooks[i].args);
                strv_free(l->hooks[i].env);
        }
        free(l->hooks);
}

static void resources_free(struct spec_resources *r)
{
        if (!r)
                return;
        for (size_t i = 0; i < r->n_devices; i++)
                free(r->devices[i].access);
        free(r->devices);
        free(r->cpu.cpus);
        free(r->cpu.mems);
        free(r->blkio.weight_devices);
        free(r->blkio.throttle_read_bps);
        free(r->blkio.throttle_write_bps);
        free(r->blkio.throttle_read_iops);
        free(r->blkio.throttle_write_iops);
        for (size_t i = 0; i < r->n_hugepage_limits; i++)
                free(r->hugepage_limits[i].page_size);
        free(r->hugepage_limits);
        for (size_t i = 0; i < r->n_net_priorities; i++)
                free(r->net_priorities[i].name);
        free(r->net_priorities);
        strv_free(r->unified);
        free(r);
}

static void seccomp_free(struct spec_seccomp *sc)
{
        if (!sc)
                return;
        free(sc->default_action);
        strv_free(sc->architectures);
        strv_free(sc->flags);
        free(sc->listener_path);
        free(sc->listener_metadata);
        for (size_t i = 0; i < sc->n_syscalls; i++) {
                struct spec_seccomp_syscall *s = &sc->syscalls[i];
                strv_free(s->names);
                free(s->action);
                for (size_t k = 0; k < s->n_args; k++)
                        free(s->args[k].op);
                free(s->args);
        }
        free(sc->syscalls);
        free(sc);
}

void spec_free(struct spec *spec)
{
        if (!spec)
                return;
        free(spec->oci_version);
        free(spec->root_path);
        spec_process_free(spec->process);
        free(spec->hostname);
        free(spec->domainname);
        for (size_t i = 0; i < spec->n_mounts; i++) {
                free(spec->mounts[i].destination);
                free(spec->mounts[i].type);
                free(spec->mounts[i].source);
                strv_free(spec->mounts[i].options);
        }
        free(spec->mounts);
        hook_list_free(&spec->hooks.prestart);
        hook_list_free(&spec->hooks.create_runtime);
        hook_list_free(&spec->hooks.create_container);
        hook_list_free(&spec->hooks.start_container);
        hook_list_free(&spec->hooks.poststart);
        hook_list_free(&spec->hooks.poststop);
        strv_free(spec->annotations);

        struct spec_linux *l = &spec->linux;
        for (size_t i = 0; i < l->n_namespaces; i++) {
                free(l->namespaces[i].name);
                free(l->namespaces[i].path);
        }
        free(l->namespaces);
        free(l->uid_mappings);
        free(l->gid_mappings);
        strv_free(l->sysctl);
        resources_free(l->resources);
        free(l->cgroups_path);
        for (size_t i = 0; i < l->n_devices; i++)
                free(l->devices[i].path);
        free(l->devices);
        strv_free(l->masked_paths);
        strv_free(l->readonly_paths);
        free(l->rootfs_propagation);
        free(l->mount_label);
        seccomp_free(l->seccomp);
        free(l->personality_domain);
        free(spec);
}

void spec_freep(struct spec **spec)
{
        spec_free(*spec);
        *spec = NULL;
}

const struct spec_namespace *spec_namespace(const struct spec *spec, int type)
{
        for (size_t i = 0; i < spec->linux.n_namespaces; i++)
                if (spec->linux.namespaces[i].type == type)
                        return &spec->linux.namespaces[i];
        return NULL;
}

/* ---- the default config.json ---- */

static json_t *json_strv(const char *const *v)
{
        json_t *arr = json_array();
        for (; *v; v++)
                json_array_append_new(arr, json_string(*v));
        return arr;
}

static json_t *json_id_mapping(unsigned int host_id)
{
        json_t *arr = json_array();
        json_array_append_new(arr, json_pack("{s:i, s:I, s:i}", "containerID", 0, "hostID", (json_int_t)host_id,
                                             "size", 1));
        return arr;
}

static json_t *json_mount(const char *dest, const char *type, const char *source, const char *const *options,
                          bool rootless)
{
        json_t *m = json_pack("{s:s, s:s, s:s}", "destination", dest, "type", type, "source", source);
        if (!options)
                return m;
        json_t *opts = json_array();
        for (; *options; options++) {
                /* Without a mapped group 5 the devpts gid= option fails in a user namespace. */
                if (rootless && (str_has_prefix(*options, "gid=") || str_has_prefix(*options, "uid=")))
                        continue;
                json_array_append_new(opts, json_string(*options));
        }
        json_object_set_new(m, "options", opts);
        return m;
}

static bool cgroup2_unified(void)
{
        struct statfs fs;
        return statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

/* Go's MarshalIndent (which runc uses) indents with tabs; jansson only with spaces. */
static char *indent_with_tabs(const char *text)
{
        char *out = xmalloc0(strlen(text) + 1);
        char *o = out;
        bool line_start = true;

        for (const char *p = text; *p; p++) {
                if (line_start && *p == ' ') {
                        *o++ = '\t';
                        continue;
                }
                line_start = *p == '\n';
                *o++ = *p;
        }
        return out;
}

char *spec_default_json(bool rootless)
{
        static const char *const env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                           "TERM=xterm", NULL };
        static const char *const caps[] = { "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", NULL };
        static const char *const dev_opts[] = { "nosuid", "strictatime", "mode=755", "size=65536k", NULL };
        static const char *const pts_opts[] = { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5", NULL };
        static const char *const shm_opts[] = { "nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL };
        static const char *const mqueue_opts[] = { "nosuid", "noexec", "nodev", NULL };
        static const char *const sys_opts[] = { "nosuid", "noexec", "nodev", "ro", NULL };
        static const char *const sys_bind_opts[] = { "rbind", "nosuid", "noexec", "nodev", "ro", NULL };
        static const char *const cgroup_opts[] = { "nosuid", "noexec", "nodev", "relatime", "ro", NULL };
        static const char *const masked[] = { "/proc/acpi",      "/proc/asound",        "/proc/interrupts",
                                              "/proc/kcore",     "/proc/keys",          "/proc/latency_stats",
                                              "/proc/timer_list", "/proc/timer_stats",  "/proc/sched_debug",
                                              "/sys/firmware",   "/proc/scsi",          "/sys/devices/virtual/powercap",
                                              "/sys/devices/virtual/tpm", NULL };
        static const char *const readonly[] = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
                                                NULL };

        json_t *caps_obj = json_pack("{s:o, s:o, s:o}", "bounding", json_strv(caps), "effective", json_strv(caps),
                                     "permitted", json_strv(caps));
        json_t *process = json_pack("{s:b, s:{s:i, s:i}, s:[s], s:o, s:s, s:o, s:[{s:s, s:i, s:i}], s:b}", "terminal", 1,
                                    "user", "uid", 0, "gid", 0, "args", "sh", "env", json_strv(env), "cwd", "/",
                                    "capabilities", caps_obj, "rlimits", "type", "RLIMIT_NOFILE", "hard", 1024, "soft",
                                    1024, "noNewPrivileges", 1);

        json_t *mounts = json_array();
        json_array_append_new(mounts, json_mount("/proc", "proc", "proc", NULL, rootless));
        json_array_append_new(mounts, json_mount("/dev", "tmpfs", "tmpfs", dev_opts, rootless));
        json_array_append_new(mounts, json_mount("/dev/pts", "devpts", "devpts", pts_opts, rootless));
        json_array_append_new(mounts, json_mount("/dev/shm", "tmpfs", "shm", shm_opts, rootless));
        json_array_append_new(mounts, json_mount("/dev/mqueue", "mqueue", "mqueue", mqueue_opts, rootless));
        if (rootless) /* sysfs cannot be mounted without owning the network namespace */
                json_array_append_new(mounts, json_mount("/sys", "none", "/sys", sys_bind_opts, rootless));
        else
                json_array_append_new(mounts, json_mount("/sys", "sysfs", "sysfs", sys_opts, rootless));
        json_array_append_new(mounts, json_mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_opts, rootless));

        json_t *linux_obj = json_object();
        if (rootless) {
                json_object_set_new(linux_obj, "uidMappings", json_id_mapping(geteuid()));
                json_object_set_new(linux_obj, "gidMappings", json_id_mapping(getegid()));
        } else {
                json_object_set_new(linux_obj, "resources",
                                    json_pack("{s:[{s:b, s:s}]}", "devices", "allow", 0, "access", "rwm"));
        }
        json_t *namespaces = json_array();
        static const char *const ns_names[] = { "pid", "network", "ipc", "uts", "mount", "cgroup", "user" };
        for (size_t i = 0; i < ARRAY_SIZE(ns_names); i++) {
                const char *ns = ns_names[i];
                if ((rootless && strcmp(ns, "network") == 0) || (!rootless && strcmp(ns, "user") == 0) ||
                    (strcmp(ns, "cgroup") == 0 && !cgroup2_unified()))
                        continue;
                json_array_append_new(namespaces, json_pack("{s:s}", "type", ns));
        }
        json_object_set_new(linux_obj, "namespaces", namespaces);
        json_object_set_new(linux_obj, "maskedPaths", json_strv(masked));
        json_object_set_new(linux_obj, "readonlyPaths", json_strv(readonly));

        json_t *root = json_pack("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", "1.1.0", "process", process,
                                 "root", "path", "rootfs", "readonly", 1, "hostname", "capsule", "mounts", mounts,
                                 "linux", linux_obj);
        if (!root)
                abort();
        cleanup_free char *text = json_dumps(root, JSON_INDENT(1));
        json_decref(root);
        if (!text)
                abort();
        return indent_with_tabs(text);
}
