/* capsule state: print the runtime-spec state JSON. */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "cli/cli.h"
#include "runtime/state.h"
#include "sandbox/sandbox.h"

static int cmd_state(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        if (cli_want_args(argc, argv, 1, 1, "state ID", err) < 0 || state_load(g->root, argv[1], &st, err) < 0)
                return -1;
        const char *status = sandbox_owns(g->root, argv[1]) ? sandbox_status(g->root, st) : state_status(g->root, st);
        json_t *o = state_to_oci_json(st, status);
        char *text = json_dumps(o, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
        json_decref(o);
        return 0;
}

CLI_COMMAND(state, "state", "print the state of a container (JSON)", cmd_state)
