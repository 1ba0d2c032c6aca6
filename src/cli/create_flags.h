/* Flags shared by `create` and `run`. */
#ifndef CAPSULE_CLI_CREATE_FLAGS_H
#define CAPSULE_CLI_CREATE_FLAGS_H

#include "cli/cli.h"
#include "runtime/container.h"

struct create_flags {
        struct container_opts opts;
        const char *console_socket;
        bool detach, keep; /* run only */
};

/* Parses argv (argv[0] is the command), fills flags->opts. is_run adds --detach and --keep. */
int create_flags_parse(struct cli_global *g, int argc, char **argv, bool is_run, struct create_flags *flags, cap_error_t *err);
/* Connect to a --console-socket path; returns the fd. */
int console_socket_connect(const char *path, cap_error_t *err);

#endif
