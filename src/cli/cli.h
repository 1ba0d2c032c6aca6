/* The capsule command line: global options, and commands that register
 * themselves (one file per command, each ending with CLI_COMMAND). */
#ifndef CAPSULE_CLI_H
#define CAPSULE_CLI_H

#include <stdbool.h>

#include "common/error.h"

struct cli_global {
        const char *root; /* state directory, --root */
        const char *log;
        const char *log_format;
        bool debug;
        bool systemd_cgroup;
        bool vm; /* --vm, or started as capsule-vm: create and run make VM containers */
};

struct cli_command {
        const char *name;
        const char *summary;
        /* argv[0] is the command name; returns the process exit status, or -1 with *err set. */
        int (*run)(struct cli_global *g, int argc, char **argv, cap_error_t *err);
};

void cli_register(const struct cli_command *cmd);

#define CLI_COMMAND(ident, cmd_name, cmd_summary, fn)                                   \
        static const struct cli_command cli_command_##ident = { cmd_name, cmd_summary, fn }; \
        __attribute__((constructor)) static void cli_register_##ident(void)              \
        {                                                                               \
                cli_register(&cli_command_##ident);                                     \
        }

/* Exit status for usage errors, as runc's. */
#define CLI_USAGE_STATUS 1

/* One-line usage error, "capsule CMD: MESSAGE"; returns -1. */
int cli_usage(cap_error_t *err, const char *cmd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Check that exactly `want` positional arguments remain. */
int cli_want_args(int argc, char **argv, int optind, int want, const char *usage, cap_error_t *err);

#endif
