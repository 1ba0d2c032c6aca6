/* capsule pause: freeze every process of a container. */
#include "cli/cli.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

static int cmd_pause(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        if (cli_want_args(argc, argv, 1, 1, "pause ID", err) < 0)
                return -1;
        /* A VM container's processes are frozen in the guest: freezing the VMM's host cgroup
         * would leave the agent unable to answer state or kill. */
        if (sandbox_owns(g->root, argv[1]))
                return sandbox_pause(g->root, argv[1], true, err) < 0 ? -1 : 0;
        return container_pause(g->root, argv[1], true, err) < 0 ? -1 : 0;
}

CLI_COMMAND(pause, "pause", "suspend every process of a container", cmd_pause)
