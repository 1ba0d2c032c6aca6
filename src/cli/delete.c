/* capsule delete: remove a stopped container (any container with --force). */
#include <getopt.h>

#include "cli/cli.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

static int cmd_delete(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        static const struct option opts[] = { { "force", no_argument, NULL, 'f' }, { 0 } };
        bool force = false;
        int c;
        while ((c = getopt_long_only(argc, argv, "+f", opts, NULL)) != -1) {
                if (c != 'f')
                        return cli_usage(err, "delete", "unknown option `%s`", argv[optind - 1]);
                force = true;
        }
        if (cli_want_args(argc, argv, optind, 1, "delete [--force] ID", err) < 0)
                return -1;
        if (sandbox_owns(g->root, argv[optind]))
                return sandbox_delete(g->root, argv[optind], force, err) < 0 ? -1 : 0;
        return container_delete(g->root, argv[optind], force, err) < 0 ? -1 : 0;
}

CLI_COMMAND(delete, "delete", "delete a container and its resources", cmd_delete)
