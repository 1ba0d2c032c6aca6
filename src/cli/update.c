/* capsule update: change a container's cgroup limits, from flags or from a
 * LinuxResources JSON file (-r FILE, "-" for stdin). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/util.h"
#include "runtime/container.h"
#include "sandbox/sandbox.h"

/* "512m", "1G", "-1", "4096" → bytes. */
static int parse_size(const char *s, long long *out)
{
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s)
                return -1;
        long long mult = 1;
        if (*end) {
                switch (*end | 0x20) {
                case 'k': mult = 1LL << 10; break;
                case 'm': mult = 1LL << 20; break;
                case 'g': mult = 1LL << 30; break;
                case 't': mult = 1LL << 40; break;
                default: return -1;
                }
                end++;
                if ((*end | 0x20) == 'b')
                        end++;
                if (*end)
                        return -1;
        }
        *out = v * mult;
        return 0;
}

struct flag_field {
        const char *flag;
        const char *group; /* key under resources */
        const char *key;
        enum { F_SIZE, F_INT, F_STRING } kind;
};

static const struct flag_field fields[] = {
        { "memory", "memory", "limit", F_SIZE },
        { "memory-swap", "memory", "swap", F_SIZE },
        { "memory-reservation", "memory", "reservation", F_SIZE },
        { "kernel-memory", "memory", "kernel", F_SIZE },
        { "kernel-memory-tcp", "memory", "kernelTCP", F_SIZE },
        { "cpu-shares", "cpu", "shares", F_INT },
        { "cpu-quota", "cpu", "quota", F_INT },
        { "cpu-period", "cpu", "period", F_INT },
        { "cpu-rt-period", "cpu", "realtimePeriod", F_INT },
        { "cpu-rt-runtime", "cpu", "realtimeRuntime", F_INT },
        { "cpu-idle", "cpu", "idle", F_INT },
        { "cpuset-cpus", "cpu", "cpus", F_STRING },
        { "cpuset-mems", "cpu", "mems", F_STRING },
        { "pids-limit", "pids", "limit", F_INT },
        { "blkio-weight", "blockIO", "weight", F_INT },
};

static int add_flag(json_t *res, const struct flag_field *f, const char *value, cap_error_t *err)
{
        json_t *group = json_object_get(res, f->group);
        if (!group)
                json_object_set_new(res, f->group, group = json_object());
        long long v;
        switch (f->kind) {
        case F_STRING:
                return json_object_set_new(group, f->key, json_string(value));
        case F_SIZE:
                if (parse_size(value, &v) < 0)
                        return cli_usage(err, "update", "--%s: `%s` is not a size", f->flag, value);
                break;
        case F_INT:
                if (parse_i64(value, &v) < 0)
                        return cli_usage(err, "update", "--%s: `%s` is not a number", f->flag, value);
                break;
        }
        return json_object_set_new(group, f->key, json_integer(v));
}

static int cmd_update(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        struct option opts[ARRAY_SIZE(fields) + 2];
        memset(opts, 0, sizeof(opts));
        for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
                opts[i] = (struct option){ fields[i].flag, required_argument, NULL, 256 + (int)i };
        opts[ARRAY_SIZE(fields)] = (struct option){ "resources", required_argument, NULL, 'r' };
        /* declared before the first `goto fail`, which would otherwise skip their initializers */
        cleanup_spec struct spec *spec = NULL;
        cleanup_free char *text = NULL;
        json_t *res = json_object();
        const char *file = NULL;
        int c;
        while ((c = getopt_long_only(argc, argv, "+r:", opts, NULL)) != -1) {
                if (c == 'r') {
                        file = optarg;
                } else if (c >= 256 && c < 256 + (int)ARRAY_SIZE(fields)) {
                        if (add_flag(res, &fields[c - 256], optarg, err) < 0)
                                goto fail;
                } else {
                        cli_usage(err, "update", "unknown option `%s`", argv[optind - 1]);
                        goto fail;
                }
        }
        if (cli_want_args(argc, argv, optind, 1, "update [options] ID", err) < 0)
                goto fail;
        if (file) {
                json_error_t jerr;
                json_t *from = strcmp(file, "-") == 0 ? json_loadf(stdin, 0, &jerr) : json_load_file(file, 0, &jerr);
                if (!from) {
                        cap_fail(err, 0, "%s: invalid JSON at line %d column %d: %s", file, jerr.line, jerr.column, jerr.text);
                        goto fail;
                }
                /* Flags given beside -r override the file. */
                json_object_update_recursive(from, res);
                json_decref(res);
                res = from;
        }
        text = json_dumps(res, JSON_COMPACT);
        json_decref(res);
        if (!text || spec_parse_resources(text, file ? file : "update", &spec, err) < 0)
                return text ? -1 : cap_fail(err, 0, "update: cannot encode the resources");
        if (sandbox_owns(g->root, argv[optind]))
                return sandbox_update(g->root, argv[optind], text, spec->linux.resources, err) < 0 ? -1 : 0;
        return container_update(g->root, argv[optind], spec->linux.resources, err) < 0 ? -1 : 0;
fail:
        json_decref(res);
        return -1;
}

CLI_COMMAND(update, "update", "update a container's resource limits", cmd_update)
