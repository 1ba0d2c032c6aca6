/* capsule exec: run a new process inside a running container. The process is
 * process.json (-p) or the container's own process with args and overrides. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/create_flags.h"
#include "common/util.h"
#include "runtime/container.h"
#include "runtime/state.h"
#include "sandbox/sandbox.h"

struct exec_flags {
        const char *process_file, *console_socket, *cwd, *user, *pid_file, *apparmor, *label;
        json_t *env, *caps, *gids;
        char **cgroups; /* --cgroup arguments, NULL-terminated */
        size_t n_cgroups;
        bool tty, detach, no_new_privs;
        int preserve_fds;
};

/* The container's config "process" object, read from the copy saved at create. */
static json_t *saved_process(const char *root, const char *id, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/%s/" STATE_CONFIG, root, id);
        json_error_t jerr;
        json_t *cfg = json_load_file(path, 0, &jerr);
        if (!cfg)
                return cap_fail(err, 0, "container \"%s\" does not exist", id), NULL;
        json_t *proc = json_deep_copy(json_object_get(cfg, "process"));
        json_decref(cfg);
        if (!proc)
                proc = json_object();
        return proc;
}

static int set_env(json_t *env, const char *kv)
{
        size_t klen = strcspn(kv, "=");
        size_t i;
        json_t *v;
        json_array_foreach (env, i, v) {
                const char *s = json_string_value(v);
                if (s && strncmp(s, kv, klen) == 0 && (s[klen] == '=' || s[klen] == '\0'))
                        return json_array_set_new(env, i, json_string(kv));
        }
        return json_array_append_new(env, json_string(kv));
}

static int apply_overrides(json_t *proc, struct exec_flags *f, int argc, char **argv, cap_error_t *err)
{
        if (argc > 0) {
                json_t *args = json_array();
                for (int i = 0; i < argc; i++)
                        json_array_append_new(args, json_string(argv[i]));
                json_object_set_new(proc, "args", args);
        }
        /* As runc: a --process file (containerd's shim passes one) says itself whether it has a
         * terminal; -t still asks for one. */
        if (!f->process_file || f->tty)
                json_object_set_new(proc, "terminal", json_boolean(f->tty));
        if (f->cwd)
                json_object_set_new(proc, "cwd", json_string(f->cwd));
        if (json_array_size(f->env)) {
                json_t *env = json_object_get(proc, "env");
                if (!json_is_array(env)) {
                        env = json_array();
                        json_object_set_new(proc, "env", env);
                }
                size_t i;
                json_t *v;
                json_array_foreach (f->env, i, v)
                        set_env(env, json_string_value(v));
        }
        if (f->user) {
                unsigned long long uid, gid = 0;
                cleanup_free char *u = xstrdup(f->user);
                char *colon = strchr(u, ':');
                if (colon)
                        *colon++ = '\0';
                if (parse_u64(u, &uid) < 0 || uid > UINT32_MAX || (colon && (parse_u64(colon, &gid) < 0 || gid > UINT32_MAX)))
                        return cli_usage(err, "exec", "--user: `%s` is not UID[:GID]", f->user);
                json_object_set_new(proc, "user", json_pack("{s:I,s:I}", "uid", (json_int_t)uid, "gid", (json_int_t)gid));
        }
        if (json_array_size(f->gids)) {
                json_t *user = json_object_get(proc, "user");
                if (!user)
                        json_object_set_new(proc, "user", user = json_pack("{s:i,s:i}", "uid", 0, "gid", 0));
                json_object_set(user, "additionalGids", f->gids);
        }
        if (json_array_size(f->caps)) {
                json_t *caps = json_object_get(proc, "capabilities");
                if (!caps)
                        json_object_set_new(proc, "capabilities", caps = json_object());
                static const char *const sets[] = { "bounding", "effective", "permitted" };
                for (size_t s = 0; s < ARRAY_SIZE(sets); s++) {
                        json_t *arr = json_object_get(caps, sets[s]);
                        if (!arr)
                                json_object_set_new(caps, sets[s], arr = json_array());
                        json_array_extend(arr, f->caps);
                }
        }
        if (f->no_new_privs)
                json_object_set_new(proc, "noNewPrivileges", json_true());
        if (f->apparmor)
                json_object_set_new(proc, "apparmorProfile", json_string(f->apparmor));
        if (f->label)
                json_object_set_new(proc, "selinuxLabel", json_string(f->label));
        return 0;
}

/* The process as parsed, and as JSON text in *json (a VM's agent parses it again). */
static int build_process(struct cli_global *g, const char *id, struct exec_flags *f, int argc, char **argv, struct spec_process **out,
                         char **json, cap_error_t *err)
{
        json_t *proc;
        const char *origin;
        if (f->process_file) {
                json_error_t jerr;
                proc = json_load_file(f->process_file, 0, &jerr);
                if (!proc)
                        return cap_fail(err, 0, "%s: invalid JSON at line %d column %d: %s", f->process_file, jerr.line, jerr.column, jerr.text);
                origin = f->process_file;
                if (argc > 0)
                        return cli_usage(err, "exec", "give either --process or a command, not both");
        } else {
                if (argc == 0)
                        return cli_usage(err, "exec", "usage: capsule exec [options] ID COMMAND [ARGS...] (or -p process.json ID)");
                if (!(proc = saved_process(g->root, id, err)))
                        return -1;
                origin = "process";
        }
        int r = apply_overrides(proc, f, argc, argv, err);
        char *text = r < 0 ? NULL : json_dumps(proc, JSON_COMPACT);
        json_decref(proc);
        if (r < 0)
                return -1;
        r = spec_parse_process(text, origin, out, err);
        *json = text;
        return r;
}

static int cmd_exec(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        enum { OPT_CONSOLE = 256, OPT_CWD, OPT_PIDFILE, OPT_PRESERVE, OPT_NNP, OPT_APPARMOR, OPT_LABEL, OPT_IGNORE_PAUSED, OPT_CGROUP };
        static const struct option opts[] = {
                { "process", required_argument, NULL, 'p' },    { "console-socket", required_argument, NULL, OPT_CONSOLE },
                { "cwd", required_argument, NULL, OPT_CWD },    { "env", required_argument, NULL, 'e' },
                { "tty", no_argument, NULL, 't' },              { "user", required_argument, NULL, 'u' },
                { "additional-gids", required_argument, NULL, 'g' }, { "pid-file", required_argument, NULL, OPT_PIDFILE },
                { "detach", no_argument, NULL, 'd' },           { "preserve-fds", required_argument, NULL, OPT_PRESERVE },
                { "cap", required_argument, NULL, 'c' },        { "no-new-privs", no_argument, NULL, OPT_NNP },
                { "apparmor", required_argument, NULL, OPT_APPARMOR }, { "process-label", required_argument, NULL, OPT_LABEL },
                { "ignore-paused", no_argument, NULL, OPT_IGNORE_PAUSED }, { "cgroup", required_argument, NULL, OPT_CGROUP },
                { 0 },
        };
        struct exec_flags f = { .env = json_array(), .caps = json_array(), .gids = json_array(),
                                .cgroups = xmalloc0((size_t)(argc + 1) * sizeof(char *)) };
        cleanup_close int console_fd = -1;
        cleanup_close int master = -1;
        struct spec_process *proc = NULL;
        cleanup_free char *proc_json = NULL;
        int c, ret = -1;
        unsigned long long n;

        while ((c = getopt_long_only(argc, argv, "+p:e:tu:g:dc:", opts, NULL)) != -1) {
                switch (c) {
                case 'p': f.process_file = optarg; break;
                case OPT_CONSOLE: f.console_socket = optarg; break;
                case OPT_CWD: f.cwd = optarg; break;
                case 'e': json_array_append_new(f.env, json_string(optarg)); break;
                case 't': f.tty = true; break;
                case 'u': f.user = optarg; break;
                case 'g':
                        if (parse_u64(optarg, &n) < 0 || n > UINT32_MAX) {
                                cli_usage(err, "exec", "--additional-gids: `%s` is not a gid", optarg);
                                goto out;
                        }
                        json_array_append_new(f.gids, json_integer((json_int_t)n));
                        break;
                case OPT_PIDFILE: f.pid_file = optarg; break;
                case 'd': f.detach = true; break;
                case OPT_PRESERVE:
                        if (parse_u64(optarg, &n) < 0 || n > 65536) {
                                cli_usage(err, "exec", "--preserve-fds: `%s` is not a number of fds", optarg);
                                goto out;
                        }
                        f.preserve_fds = (int)n;
                        break;
                case 'c': json_array_append_new(f.caps, json_string(optarg)); break;
                case OPT_NNP: f.no_new_privs = true; break;
                case OPT_APPARMOR: f.apparmor = optarg; break;
                case OPT_LABEL: f.label = optarg; break;
                case OPT_IGNORE_PAUSED: break;
                case OPT_CGROUP: f.cgroups[f.n_cgroups++] = optarg; break;
                default:
                        cli_usage(err, "exec", "unknown option `%s`", argv[optind - 1]);
                        goto out;
                }
        }
        if (optind >= argc) {
                cli_usage(err, "exec", "usage: capsule exec [options] ID COMMAND [ARGS...]");
                goto out;
        }
        const char *id = argv[optind];
        for (size_t i = 0; f.n_cgroups > 1 && i < f.n_cgroups; i++) {
                if (!strchr(f.cgroups[i], ':')) {
                        cli_usage(err, "exec", "--cgroup: `%s`: without a `controller:` prefix it must be the only --cgroup", f.cgroups[i]);
                        goto out;
                }
        }
        if (build_process(g, id, &f, argc - optind - 1, argv + optind + 1, &proc, &proc_json, err) < 0)
                goto out;
        if (sandbox_owns(g->root, id)) {
                int status;
                struct sandbox_exec_opts so = { .process_json = proc_json, .tty = proc->terminal, .console_fd = -1,
                                                .rows = (unsigned short)proc->console_height.v,
                                                .cols = (unsigned short)proc->console_width.v, .detach = f.detach,
                                                .pid_file = f.pid_file };
                if (f.preserve_fds || f.n_cgroups)
                        cli_usage(err, "exec", "--preserve-fds and --cgroup do not apply to a VM container");
                else if (f.console_socket && !proc->terminal)
                        cli_usage(err, "exec", "--console-socket needs a terminal (--tty or process.terminal)");
                else if (proc->terminal && f.detach && !f.console_socket)
                        cli_usage(err, "exec", "--tty with --detach needs --console-socket");
                else if (!f.console_socket || (console_fd = so.console_fd = console_socket_connect(f.console_socket, err)) >= 0)
                        if (sandbox_exec(g->root, id, &so, &status, err) == 0)
                                ret = status;
                goto out;
        }
        if (f.console_socket && (console_fd = console_socket_connect(f.console_socket, err)) < 0)
                goto out;
        if (proc->terminal && console_fd < 0 && f.detach) {
                cli_usage(err, "exec", "--tty with --detach needs --console-socket");
                goto out;
        }
        if (!f.detach && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
                cap_fail(err, errno, "become a child subreaper");
                goto out;
        }
        struct exec_opts o = { .root = g->root, .id = id, .pid_file = f.pid_file, .process = proc, .console_socket_fd = console_fd,
                               .preserve_fds = f.preserve_fds, .cgroups = f.cgroups,
                               /* without a console socket, capsule itself is the console and relays */
                               .pty_master = console_fd < 0 ? &master : NULL };
        pid_t pid;
        if (container_exec(&o, &pid, err) < 0)
                goto out;
        if (f.detach) {
                ret = 0;
                goto out;
        }
        int status;
        if (container_wait(pid, master, &status, err) == 0)
                ret = status;
out:
        spec_process_free(proc);
        json_decref(f.env);
        json_decref(f.caps);
        json_decref(f.gids);
        free(f.cgroups);
        return ret;
}

CLI_COMMAND(exec, "exec", "run a process in a running container", cmd_exec)
