/* Parsing and checking the host's requests: see request.h. */
#include "agent/request.h"

#include <signal.h>
#include <string.h>

#include "common/util.h"
#include "runtime/state.h"

static const char *const op_names[] = {
        [AGENT_OP_STDIO] = "stdio", [AGENT_OP_CREATE] = "create", [AGENT_OP_START] = "start", [AGENT_OP_KILL] = "kill",
        [AGENT_OP_STATE] = "state", [AGENT_OP_EXEC] = "exec",     [AGENT_OP_WAIT] = "wait",   [AGENT_OP_RESIZE] = "resize",
        [AGENT_OP_PAUSE] = "pause", [AGENT_OP_RESUME] = "resume", [AGENT_OP_PS] = "ps",       [AGENT_OP_UPDATE] = "update",
};

/* A string field without embedded NULs (C would see a shorter string than the host sent). */
static int get_string(const json_t *msg, const char *key, const char **out, cap_error_t *err)
{
        const json_t *v = json_object_get(msg, key);
        if (!json_is_string(v))
                return cap_fail(err, 0, "request: \"%s\": a string is required", key);
        if (strlen(json_string_value(v)) != json_string_length(v))
                return cap_fail(err, 0, "request: \"%s\": contains a NUL byte", key);
        *out = json_string_value(v);
        return 0;
}

static int get_int(const json_t *msg, const char *key, long long min, long long max, long long *out, cap_error_t *err)
{
        const json_t *v = json_object_get(msg, key);
        if (!json_is_integer(v))
                return cap_fail(err, 0, "request: \"%s\": an integer is required", key);
        long long n = json_integer_value(v);
        if (n < min || n > max)
                return cap_fail(err, 0, "request: \"%s\": %lld is out of range [%lld, %lld]", key, n, min, max);
        *out = n;
        return 0;
}

static int get_name(const json_t *msg, const char *key, bool init_allowed, const char **out, cap_error_t *err)
{
        if (get_string(msg, key, out, err) < 0)
                return -1;
        bool is_init = strcmp(*out, AGENT_INIT) == 0;
        if (is_init && !init_allowed)
                return cap_fail(err, 0, "request: \"%s\": \"%s\" names the container's init", key, AGENT_INIT);
        if (!is_init && state_check_id(*out, err) < 0)
                return cap_error_prefix(err, "request: \"%s\"", key);
        return 0;
}

static int get_stdio(const json_t *msg, bool *tty, cap_error_t *err)
{
        const char *mode;
        if (get_string(msg, "stdio", &mode, err) < 0)
                return -1;
        if (strcmp(mode, "tty") != 0 && strcmp(mode, "pipes") != 0)
                return cap_fail(err, 0, "request: \"stdio\": `%s` is neither \"pipes\" nor \"tty\"", mode);
        *tty = strcmp(mode, "tty") == 0;
        return 0;
}

/* An optional boolean: false when missing. */
static int get_bool(const json_t *msg, const char *key, bool *out, cap_error_t *err)
{
        const json_t *v = json_object_get(msg, key);
        if (v && !json_is_boolean(v))
                return cap_fail(err, 0, "request: \"%s\": a boolean is required", key);
        *out = json_is_true(v);
        return 0;
}

int agent_req_parse(const json_t *msg, struct agent_req *req, cap_error_t *err)
{
        const char *op;
        long long n;
        memset(req, 0, sizeof(*req));
        if (get_string(msg, "op", &op, err) < 0)
                return -1;
        size_t i;
        for (i = 0; i < ARRAY_SIZE(op_names); i++)
                if (strcmp(op, op_names[i]) == 0)
                        break;
        if (i == ARRAY_SIZE(op_names))
                return cap_fail(err, 0, "request: unknown op `%.64s`", op);
        req->op = (enum agent_op)i;
        switch (req->op) {
        case AGENT_OP_STDIO:
                if (get_name(msg, "exec", true, &req->exec, err) < 0 || get_int(msg, "fd", 0, 2, &n, err) < 0)
                        return -1;
                req->fd = (int)n;
                return 0;
        case AGENT_OP_CREATE:
                if (get_string(msg, "id", &req->id, err) < 0)
                        return -1;
                if (state_check_id(req->id, err) < 0)
                        return cap_error_prefix(err, "request: \"id\"");
                if (get_string(msg, "config", &req->config, err) < 0 || get_stdio(msg, &req->tty, err) < 0)
                        return -1;
                return get_bool(msg, "binds", &req->binds, err);
        case AGENT_OP_START:
        case AGENT_OP_STATE:
        case AGENT_OP_PAUSE:
        case AGENT_OP_RESUME:
        case AGENT_OP_PS:
                return 0;
        case AGENT_OP_UPDATE:
                return get_string(msg, "resources", &req->resources, err);
        case AGENT_OP_KILL:
                if (get_int(msg, "signal", 1, SIGRTMAX, &n, err) < 0)
                        return -1;
                req->signal = (int)n;
                return get_bool(msg, "all", &req->all, err);
        case AGENT_OP_EXEC:
                if (get_name(msg, "exec", false, &req->exec, err) < 0 || get_string(msg, "process", &req->process, err) < 0)
                        return -1;
                return get_stdio(msg, &req->tty, err);
        case AGENT_OP_WAIT:
                return get_name(msg, "exec", true, &req->exec, err);
        case AGENT_OP_RESIZE:
                if (get_name(msg, "exec", true, &req->exec, err) < 0 || get_int(msg, "rows", 0, 0xffff, &n, err) < 0)
                        return -1;
                req->rows = (unsigned short)n;
                if (get_int(msg, "cols", 0, 0xffff, &n, err) < 0)
                        return -1;
                req->cols = (unsigned short)n;
                return 0;
        }
        return cap_fail(err, 0, "request: unknown op `%.64s`", op);
}

/* An object member of obj, created empty when missing; NULL when it is there but no object. */
static json_t *object_member(json_t *obj, const char *key)
{
        json_t *v = json_object_get(obj, key);
        if (!v) {
                v = json_object();
                json_object_set_new(obj, key, v);
        }
        return json_is_object(v) ? v : NULL;
}

static int strip_host_namespaces(json_t *linux_obj, cap_error_t *err)
{
        json_t *nss = json_object_get(linux_obj, "namespaces");
        if (!nss)
                return 0;
        if (!json_is_array(nss))
                return cap_fail(err, 0, "config.json: linux.namespaces: an array is required");
        for (size_t i = 0; i < json_array_size(nss);) {
                json_t *ns = json_array_get(nss, i);
                if (!json_is_object(ns))
                        return cap_fail(err, 0, "config.json: linux.namespaces[%zu]: an object is required", i);
                const char *type = json_string_value(json_object_get(ns, "type"));
                bool joins = json_object_get(ns, "path") != NULL;
                if (joins && type && strcmp(type, "network") == 0) {
                        json_array_remove(nss, i);
                        continue;
                }
                json_object_del(ns, "path");
                i++;
        }
        return 0;
}

int agent_config_rewrite(const char *text, const char *rootfs, bool tty, char **out, cap_error_t *err)
{
        json_error_t jerr;
        json_t *cfg = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        if (!cfg)
                return cap_fail(err, 0, "config.json: line %d: %s", jerr.line, jerr.text);
        int ret = -1;
        json_t *root, *process, *linux_obj, *hooks;
        if (!json_is_object(cfg)) {
                cap_fail(err, 0, "config.json: an object is required");
                goto out;
        }
        if (!(root = object_member(cfg, "root")) || !(process = object_member(cfg, "process")) ||
            !(linux_obj = object_member(cfg, "linux"))) {
                cap_fail(err, 0, "config.json: root, process and linux must be objects");
                goto out;
        }
        json_object_set_new(root, "path", json_string(rootfs));
        json_object_set_new(process, "terminal", json_boolean(tty));
        json_object_del(linux_obj, "cgroupsPath");
        if (strip_host_namespaces(linux_obj, err) < 0)
                goto out;
        hooks = json_object_get(cfg, "hooks");
        if (json_is_object(hooks)) {
                static const char *const host_hooks[] = { "prestart", "createRuntime", "poststart", "poststop" };
                for (size_t i = 0; i < ARRAY_SIZE(host_hooks); i++)
                        json_object_del(hooks, host_hooks[i]);
        }
        *out = json_dumps(cfg, JSON_INDENT(1));
        if (!*out) {
                cap_fail(err, 0, "config.json: cannot encode");
                goto out;
        }
        ret = 0;
out:
        json_decref(cfg);
        return ret;
}
