/* capsule resume: thaw a paused container. */
#include "cli/cli.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

static int cmd_resume(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        if (cli_want_args(argc, argv, 1, 1, "resume ID", err) < 0)
                return -1;
        if (sandbox_owns(g->root, argv[1]))
                return sandbox_pause(g->root, argv[1], false, err) < 0 ? -1 : 0;
        return container_pause(g->root, argv[1], false, err) < 0 ? -1 : 0;
}

CLI_COMMAND(resume, "resume", "resume a paused container", cmd_resume)
