/* capsule ps: the processes of a container, as JSON pids or `ps` output filtered to them (a VM
 * container's: the guest's pids). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

static bool contains(const pid_t *pids, size_t n, long pid)
{
        for (size_t i = 0; i < n; i++)
                if (pids[i] == pid)
                        return true;
        return false;
}

/* Run ps with args, print its header and the lines whose PID column is one of pids. */
static int ps_filter(char **ps_args, const pid_t *pids, size_t n, cap_error_t *err)
{
        size_t nargs = strv_len(ps_args);
        cleanup_free char **argv = xmalloc0((nargs + 3) * sizeof(char *));
        argv[0] = "ps";
        for (size_t i = 0; i < nargs; i++)
                argv[i + 1] = ps_args[i];
        if (nargs == 0)
                argv[1] = "-ef";
        int p[2];
        if (pipe(p) < 0)
                return cap_fail(err, errno, "pipe");
        pid_t child = fork();
        if (child == 0) {
                dup2(p[1], STDOUT_FILENO);
                close(p[0]);
                close(p[1]);
                execvp("ps", argv);
                _exit(127);
        }
        close(p[1]);
        FILE *in = fdopen(p[0], "r");
        char *line = NULL;
        size_t cap = 0;
        int pid_col = -1;
        while (in && getline(&line, &cap, in) > 0) {
                cleanup_strv char **cols = strv_split(line, " \t\n");
                if (pid_col < 0) {
                        for (int i = 0; cols[i]; i++)
                                if (strcmp(cols[i], "PID") == 0)
                                        pid_col = i;
                        fputs(line, stdout);
                        continue;
                }
                long long v;
                if ((int)strv_len(cols) > pid_col && parse_i64(cols[pid_col], &v) == 0 && contains(pids, n, (long)v))
                        fputs(line, stdout);
        }
        free(line);
        if (in)
                fclose(in);
        int status;
        waitpid(child, &status, 0);
        if (pid_col < 0)
                return cap_fail(err, 0, "ps: no PID column in the output of ps");
        return 0;
}

static int cmd_ps(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        static const struct option opts[] = { { "format", required_argument, NULL, 'f' }, { 0 } };
        const char *format = "table";
        int c;
        while ((c = getopt_long_only(argc, argv, "+f:", opts, NULL)) != -1) {
                if (c != 'f')
                        return cli_usage(err, "ps", "unknown option `%s`", argv[optind - 1]);
                format = optarg;
        }
        if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0)
                return cli_usage(err, "ps", "--format: `%s` is not table or json", format);
        if (optind >= argc)
                return cli_usage(err, "ps", "usage: capsule ps [--format table|json] ID [ps options]");
        cleanup_free pid_t *pids = NULL;
        size_t n = 0;
        /* A VM container's processes are the guest's: its pids, as Kata lists them, mean nothing
         * to the host's ps. */
        bool vm = sandbox_owns(g->root, argv[optind]);
        if (vm && argc - optind > 1)
                return cli_usage(err, "ps", "ps options do not apply to a VM container (its processes are in the guest)");
        if ((vm ? sandbox_pids(g->root, argv[optind], &pids, &n, err) : container_pids(g->root, argv[optind], &pids, &n, err)) < 0)
                return -1;
        if (vm && strcmp(format, "table") == 0) {
                printf("PID\n");
                for (size_t i = 0; i < n; i++)
                        printf("%d\n", (int)pids[i]);
                return 0;
        }
        if (strcmp(format, "json") == 0) {
                printf("[");
                for (size_t i = 0; i < n; i++)
                        printf("%s%d", i ? "," : "", (int)pids[i]);
                printf("]\n");
                return 0;
        }
        if (argc - optind > 1 && argv[optind + 1][0] != '-')
                return cli_usage(err, "ps", "ps options must start with '-'");
        fflush(stdout);
        return ps_filter(argv + optind + 1, pids, n, err) < 0 ? -1 : 0;
}

CLI_COMMAND(ps, "ps", "list the processes of a container", cmd_ps)
