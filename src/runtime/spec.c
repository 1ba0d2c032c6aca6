/* config.json → struct spec: the top level, mounts and hooks, freeing, and the default config.json. */
#include "runtime/spec_internal.h"

#include <linux/magic.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "common/util.h"

/* Largest config.json we accept; real ones are a few KiB, big seccomp profiles ~100 KiB. */
#define SPEC_MAX_SIZE (16u << 20)

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

/* ---- entry points ---- */

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

int spec_parse_resources(const char *json_text, const char *origin, struct spec **out, cap_error_t *err)
{
        struct pctx c = { origin ? origin : "resources", err };
        json_t *res = load_json(&c, json_text);
        if (!res)
                return -1;
        /* The config's own parser, on a config that holds only these: the errors then name
         * linux.resources.<field>. */
        json_t *cfg = json_pack("{s:s,s:{s:s},s:{s:o}}", "ociVersion", "1.1.0", "root", "path", "/", "linux", "resources", res);
        cleanup_free char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
        json_decref(cfg);
        if (!text)
                return cap_fail(err, 0, "%s: cannot encode", c.origin);
        return spec_parse(text, c.origin, out, err);
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
