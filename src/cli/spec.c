/* capsule spec: write a default config.json, as `runc spec` does. */
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"
#include "runtime/spec.h"

static int cmd_spec(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        static const struct option opts[] = { { "bundle", required_argument, NULL, 'b' }, { "rootless", no_argument, NULL, 'r' }, { 0 } };
        const char *bundle = ".";
        bool rootless = false;
        int c;
        (void)g;
        while ((c = getopt_long_only(argc, argv, "+b:", opts, NULL)) != -1) {
                if (c == 'b')
                        bundle = optarg;
                else if (c == 'r')
                        rootless = true;
                else
                        return cli_usage(err, "spec", "unknown option `%s`", argv[optind - 1]);
        }
        if (cli_want_args(argc, argv, optind, 0, "spec [--bundle DIR] [--rootless]", err) < 0)
                return -1;
        cleanup_free char *path = xasprintf("%s/config.json", bundle);
        cleanup_free char *text = spec_default_json(rootless);
        cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST)
                return cap_fail(err, 0, "%s exists: remove it first", path);
        if (fd < 0)
                return cap_fail(err, errno, "create `%s`", path);
        if (write_all(fd, text, strlen(text)) < 0 || write_all(fd, "\n", 1) < 0)
                return cap_fail(err, errno, "write `%s`", path);
        return 0;
}

CLI_COMMAND(spec, "spec", "write a default config.json", cmd_spec)
