/* capsule create: set up a container and leave it waiting for `start`. */
#include <unistd.h>

#include "cli/create_flags.h"
#include "sandbox/sandbox.h"

static int cmd_create(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        struct create_flags f;
        pid_t pid;
        if (create_flags_parse(g, argc, argv, false, &f, err) < 0)
                return -1;
        int r = sandbox_wanted(g->vm, f.opts.bundle) ? sandbox_create(&f.opts, &pid, err) : container_create(&f.opts, &pid, err);
        if (f.opts.console_socket_fd >= 0)
                close(f.opts.console_socket_fd);
        return r < 0 ? -1 : 0;
}

CLI_COMMAND(create, "create", "create a container from a bundle; it waits for start", cmd_create)
