/* capsule start: run the user process of a created container. */
#include "cli/cli.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

static int cmd_start(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        if (cli_want_args(argc, argv, 1, 1, "start ID", err) < 0)
                return -1;
        if (sandbox_owns(g->root, argv[1]))
                return sandbox_start(g->root, argv[1], err) < 0 ? -1 : 0;
        return container_start(g->root, argv[1], err) < 0 ? -1 : 0;
}

CLI_COMMAND(start, "start", "start a created container", cmd_start)
