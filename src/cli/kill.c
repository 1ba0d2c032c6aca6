/* capsule kill: send a signal to the container's init, or with --all to every process. */
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "common/util.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

static int parse_signal(const char *s)
{
        unsigned long long n;
        if (parse_u64(s, &n) == 0)
                return n > 0 && n < (unsigned long long)NSIG ? (int)n : -1;
        if (strncasecmp(s, "SIG", 3) == 0)
                s += 3;
        for (int sig = 1; sig < SIGRTMIN; sig++) {
                const char *abbrev = sigabbrev_np(sig);
                if (abbrev && strcasecmp(abbrev, s) == 0)
                        return sig;
        }
        if (strncasecmp(s, "RTMIN", 5) == 0 || strncasecmp(s, "RTMAX", 5) == 0) {
                long long off = 0;
                if (s[5] && parse_i64(s + 5, &off) < 0)
                        return -1;
                int sig = (strncasecmp(s, "RTMIN", 5) == 0 ? SIGRTMIN : SIGRTMAX) + (int)off;
                return sig >= SIGRTMIN && sig <= SIGRTMAX ? sig : -1;
        }
        return -1;
}

static int cmd_kill(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        static const struct option opts[] = { { "all", no_argument, NULL, 'a' }, { 0 } };
        bool all = false;
        int c;
        while ((c = getopt_long_only(argc, argv, "+a", opts, NULL)) != -1) {
                if (c != 'a')
                        return cli_usage(err, "kill", "unknown option `%s`", argv[optind - 1]);
                all = true;
        }
        if (argc - optind < 1 || argc - optind > 2)
                return cli_usage(err, "kill", "usage: capsule kill [--all] ID [SIGNAL]");
        const char *name = argc - optind == 2 ? argv[optind + 1] : "SIGTERM";
        int sig = parse_signal(name);
        if (sig < 0)
                return cli_usage(err, "kill", "unknown signal `%s`", name);
        if (sandbox_owns(g->root, argv[optind]))
                return sandbox_kill(g->root, argv[optind], sig, all, err) < 0 ? -1 : 0;
        return container_kill(g->root, argv[optind], sig, all, err) < 0 ? -1 : 0;
}

CLI_COMMAND(kill, "kill", "send a signal (name or number, default SIGTERM) to a container", cmd_kill)
