/* config.json's process object (also exec's process.json). */
#include "runtime/spec_internal.h"

#include <string.h>
#include <sys/resource.h>

#include "common/util.h"

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
int parse_process(struct pctx *c, json_t *obj, const char *path, struct spec_process *p)
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
