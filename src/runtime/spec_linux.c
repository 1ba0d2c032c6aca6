/* config.json's linux object: namespaces, id mappings, devices, resources, seccomp, personality, time offsets. */
#include "runtime/spec_internal.h"

#include <sched.h>
#include <string.h>

#include "common/util.h"

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

int parse_linux(struct pctx *c, json_t *root, struct spec_linux *l)
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
