/* capsule pause: freeze every process of a container. */
#include "cli/cli.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

static int cmd_pause(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        if (cli_want_args(argc, argv, 1, 1, "pause ID", err) < 0)
                return -1;
        /* Freezing the VMM's cgroup did not complete (its vCPU threads) within the freezer's
         * timeout in the testbed: refused until the VMM's own pause is wired in. */
        if (sandbox_owns(g->root, argv[1]))
                return cap_fail(err, 0, "cannot pause container \"%s\": pausing a VM container is not supported yet", argv[1]);
        return container_pause(g->root, argv[1], true, err) < 0 ? -1 : 0;
}

CLI_COMMAND(pause, "pause", "suspend every process of a container", cmd_pause)
