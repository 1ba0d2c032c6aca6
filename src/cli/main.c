/* capsule: dispatch global options and the command. */
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/exe_seal.h"
#include "common/log.h"
#include "common/util.h"
#include "common/version.h"
#include "sandbox/sandbox.h"

static const struct cli_command *commands[64];
static int n_commands;

void cli_register(const struct cli_command *cmd)
{
        if (n_commands < (int)ARRAY_SIZE(commands))
                commands[n_commands++] = cmd;
}

int cli_usage(cap_error_t *err, const char *cmd, const char *fmt, ...)
{
        va_list ap;
        if (*err)
                return -1;
        va_start(ap, fmt);
        cap_failv(err, 0, fmt, ap);
        va_end(ap);
        return cap_error_prefix(err, "%s", cmd);
}

int cli_want_args(int argc, char **argv, int optind, int want, const char *usage, cap_error_t *err)
{
        if (argc - optind != want)
                return cli_usage(err, argv[0], "expects %d argument%s, got %d; usage: capsule %s", want, want == 1 ? "" : "s",
                                 argc - optind, usage);
        return 0;
}

static int compare_commands(const void *a, const void *b)
{
        return strcmp((*(const struct cli_command *const *)a)->name, (*(const struct cli_command *const *)b)->name);
}

static void usage(FILE *out)
{
        qsort(commands, (size_t)n_commands, sizeof(commands[0]), compare_commands);
        fprintf(out, "usage: capsule [global options] COMMAND [options] ARGS\n\n"
                     "An OCI container runtime and KVM virtual machine monitor.\n\nCommands:\n");
        for (int i = 0; i < n_commands; i++)
                fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
        fprintf(out, "\nGlobal options:\n"
                     "  --root DIR           state directory (default /run/capsule, or $XDG_RUNTIME_DIR/capsule when rootless)\n"
                     "  --log FILE           log file\n"
                     "  --log-format FORMAT  text or json\n"
                     "  --debug              log debug messages\n"
                     "  --systemd-cgroup     interpret cgroupsPath as slice:prefix:name\n"
                     "  --vm                 create and run containers inside a micro-VM (also: the annotation\n"
                     "                       run.oci.handler=vm, or capsule started as capsule-vm); see README\n"
                     "  --version, -v        print the version\n"
                     "  --help, -h           this help\n"
                     "\nVM containers (--vm, capsule-vm, or the annotation run.oci.handler=vm):\n"
                     "  the guest kernel is $CAPSULE_KERNEL, else capsule-vmlinux next to capsule; the guest\n"
                     "  agent's initrd is $CAPSULE_INITRD, else capsule-guest.initrd next to capsule.\n"
                     "  Annotations: capsule.vm.kernel and capsule.vm.initrd (a file name in the default one's\n"
                     "  directory, never a path), capsule.vm.cpus (1 to the host's CPUs), capsule.vm.memory (64M\n"
                     "  to the host's RAM; K, M, G suffixes). Without them the container's cpu quota or cpuset\n"
                     "  and memory limit (minus 32M for the VMM) size the VM, else 1 CPU and 512M.\n"
                     "  $CAPSULE_VM_BOOT_TIMEOUT: seconds to wait for the agent (300).\n");
}

static const char *default_root(void)
{
        static char buf[4096];
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (geteuid() != 0 && xdg && *xdg) {
                snprintf(buf, sizeof(buf), "%s/capsule", xdg);
                return buf;
        }
        return "/run/capsule";
}

/* Commands that start a container's processes. */
static bool starts_container(const char *cmd)
{
        return strcmp(cmd, "create") == 0 || strcmp(cmd, "run") == 0 || strcmp(cmd, "exec") == 0;
}

/* Of those, the ones whose children enter the container: they start from a sealed copy of the
 * binary (exe_seal.c). A VM container's create and run do not: its processes live in the guest,
 * and no host process ever joins their namespaces (Kata's shim does not re-execute either).
 * exec does, even with --vm: the container it names may be a plain one. */
static bool enters_container(const char *cmd, bool vm)
{
        return !vm || strcmp(cmd, "exec") == 0;
}

int main(int argc, char **argv)
{
        struct cli_global g = { .root = default_root(), .log_format = "text" };
        cleanup_error cap_error_t err = NULL;
        enum { OPT_ROOT = 256, OPT_LOG, OPT_LOG_FORMAT, OPT_DEBUG, OPT_SYSTEMD, OPT_ROOTLESS, OPT_CRIU, OPT_VM };
        static const struct option opts[] = {
                { "root", required_argument, NULL, OPT_ROOT },
                { "log", required_argument, NULL, OPT_LOG },
                { "log-format", required_argument, NULL, OPT_LOG_FORMAT },
                { "debug", no_argument, NULL, OPT_DEBUG },
                { "systemd-cgroup", no_argument, NULL, OPT_SYSTEMD },
                { "rootless", required_argument, NULL, OPT_ROOTLESS },
                { "criu", required_argument, NULL, OPT_CRIU },
                { "vm", no_argument, NULL, OPT_VM },
                { "version", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        int c;
        const char *base = strrchr(argv[0], '/');

        g.vm = strcmp(base ? base + 1 : argv[0], "capsule-vm") == 0;
        opterr = 0;
        while ((c = getopt_long_only(argc, argv, "+vh", opts, NULL)) != -1) {
                switch (c) {
                case OPT_ROOT:
                        g.root = optarg;
                        break;
                case OPT_LOG:
                        g.log = optarg;
                        break;
                case OPT_LOG_FORMAT:
                        g.log_format = optarg;
                        break;
                case OPT_DEBUG:
                        g.debug = true;
                        break;
                case OPT_SYSTEMD:
                        g.systemd_cgroup = true;
                        break;
                case OPT_VM:
                        g.vm = true;
                        break;
                case OPT_ROOTLESS: /* accepted for runc compatibility: capsule detects rootless mode itself */
                case OPT_CRIU:
                        break;
                case 'v':
                        printf("capsule version %s\nspec: %s\ncommit: %s\n", CAPSULE_VERSION, CAPSULE_OCI_VERSION, CAPSULE_COMMIT);
                        return 0;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        fprintf(stderr, "capsule: unknown global option `%s`; see capsule --help\n", argv[optind - 1]);
                        return CLI_USAGE_STATUS;
                }
        }
        if (optind < argc && starts_container(argv[optind]) && !exe_sealed()) {
                exe_dir_export();
                if (enters_container(argv[optind], g.vm)) {
                        exe_reexec_sealed(g.root, argv, &err);
                        cap_error_report(&err);
                        return 1;
                }
        }
        if (log_init(g.log, g.log_format, g.debug) < 0) {
                fprintf(stderr, "capsule: --log/--log-format: cannot use log `%s` with format `%s`\n", g.log ? g.log : "-", g.log_format);
                return CLI_USAGE_STATUS;
        }
        if (optind >= argc) {
                usage(stderr);
                return CLI_USAGE_STATUS;
        }
        int cmd_argc = argc - optind;
        char **cmd_argv = argv + optind;
        for (int i = 0; i < n_commands; i++) {
                if (strcmp(commands[i]->name, cmd_argv[0]) != 0)
                        continue;
                optind = 0; /* reset getopt for the command's own options */
                int status = commands[i]->run(&g, cmd_argc, cmd_argv, &err);
                if (status < 0) {
                        cap_error_report(&err);
                        return 1;
                }
                return status;
        }
        fprintf(stderr, "capsule: unknown command `%s`; see capsule --help\n", cmd_argv[0]);
        return CLI_USAGE_STATUS;
}
