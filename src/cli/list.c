/* capsule list: the containers under --root, as a table, JSON, or ids only. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/util.h"
#include "runtime/state.h"
#include "sandbox/sandbox.h"

static int cmd_list(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        static const struct option opts[] = { { "format", required_argument, NULL, 'f' }, { "quiet", no_argument, NULL, 'q' }, { 0 } };
        const char *format = "table";
        bool quiet = false;
        int c;
        while ((c = getopt_long_only(argc, argv, "+f:q", opts, NULL)) != -1) {
                if (c == 'f')
                        format = optarg;
                else if (c == 'q')
                        quiet = true;
                else
                        return cli_usage(err, "list", "unknown option `%s`", argv[optind - 1]);
        }
        if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0)
                return cli_usage(err, "list", "--format: `%s` is not table or json", format);
        if (cli_want_args(argc, argv, optind, 0, "list [--format table|json] [-q]", err) < 0)
                return -1;
        cleanup_strv char **ids = NULL;
        if (state_list(g->root, &ids, err) < 0)
                return -1;
        json_t *arr = json_array();
        if (!quiet && strcmp(format, "table") == 0)
                printf("%-20s %-8s %-8s %-40s %-32s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER");
        for (size_t i = 0; ids[i]; i++) {
                cleanup_state struct state *st = NULL;
                cleanup_error cap_error_t ignored = NULL;
                if (state_load(g->root, ids[i], &st, &ignored) < 0)
                        continue; /* deleted meanwhile */
                const char *status = sandbox_owns(g->root, ids[i]) ? sandbox_status(g->root, st) : state_status(g->root, st);
                if (quiet)
                        printf("%s\n", st->id);
                else if (strcmp(format, "json") == 0)
                        json_array_append_new(arr, state_to_oci_json(st, status));
                else
                        printf("%-20s %-8d %-8s %-40s %-32s %s\n", st->id, strcmp(status, "stopped") ? (int)st->pid : 0, status, st->bundle,
                               st->created, st->owner);
        }
        if (!quiet && strcmp(format, "json") == 0) {
                char *text = json_dumps(arr, JSON_COMPACT);
                printf("%s\n", text);
                free(text);
        }
        json_decref(arr);
        return 0;
}

CLI_COMMAND(list, "list", "list containers", cmd_list)
