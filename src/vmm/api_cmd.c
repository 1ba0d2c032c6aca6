/* The control channel's requests: one JSON object per line, checked whole (type of every
 * field, no unknown keys) before anything changes; then the command runs and its answer is
 * built. Every byte of a request comes from a client of the socket and is not trusted. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "vmm/api_internal.h"
#include "vmm/vm.h"

#define API_JSON_FLAGS (JSON_COMPACT | JSON_ENSURE_ASCII)

char *api_dump(json_t *j)
{
        char *text = json_dumps(j, API_JSON_FLAGS);
        json_decref(j);
        if (!text)
                abort(); /* jansson fails only when out of memory, as xmalloc would */
        return text;
}

char *api_error_text(const char *msg)
{
        return api_dump(json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

static void api_fail(struct api_reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void api_fail(struct api_reply *r, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        cleanup_free char *msg = xvasprintf(fmt, ap);
        va_end(ap);
        r->text = api_error_text(msg);
}

json_t *api_ok(void)
{
        return json_pack("{s:b}", "ok", 1);
}

char *api_paused_text(void)
{
        json_t *j = api_ok();
        json_object_set_new(j, "state", json_string("paused"));
        return api_dump(j);
}

static const char *api_state(const struct api_vm *vm)
{
        return vm->paused(vm->vm) ? "paused" : "running";
}

/* VmRSS of /proc/self/status in bytes; -1 when it cannot be read. */
static json_int_t api_rss(void)
{
        cleanup_file FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        long long kb;
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
                        return (json_int_t)kb * 1024;
        return -1;
}

static json_t *api_str_or_null(const char *s)
{
        return s ? json_string(s) : json_null();
}

/* The settings a client may want back; paths as given, no host state. */
static json_t *api_config_json(const struct vm_config *c)
{
        json_t *j = json_object();
        json_object_set_new(j, "kernel", api_str_or_null(c->kernel));
        json_object_set_new(j, "initrd", api_str_or_null(c->initrd));
        json_object_set_new(j, "payload", api_str_or_null(c->payload));
        json_object_set_new(j, "cmdline", api_str_or_null(c->cmdline));
        json_object_set_new(j, "cpus", json_integer(c->cpus));
        json_object_set_new(j, "memory", json_integer((json_int_t)c->memory));
        json_object_set_new(j, "hugepages", json_boolean(c->hugepages));
        json_object_set_new(j, "virtio-transport", json_string(c->virtio_transport == VM_VIRTIO_MMIO ? "mmio" : "pci"));
        json_t *disks = json_array();
        for (int i = 0; i < c->n_disks; i++)
                json_array_append_new(disks, json_pack("{s:s, s:b}", "path", c->disks[i].path, "readonly",
                                                       c->disks[i].readonly));
        json_object_set_new(j, "disks", disks);
        json_t *nets = json_array();
        for (int i = 0; i < c->n_nets; i++)
                json_array_append_new(nets, json_pack("{s:s, s:o}", "backend", c->nets[i].backend == VM_NET_TAP ? "tap" : "user",
                                                      "ifname", api_str_or_null(c->nets[i].ifname)));
        json_object_set_new(j, "nets", nets);
        json_t *shares = json_array();
        for (int i = 0; i < c->n_shares; i++)
                json_array_append_new(shares, json_string(c->shares[i].tag));
        json_object_set_new(j, "shares", shares);
        json_object_set_new(j, "rng", json_boolean(c->rng));
        json_object_set_new(j, "vsock-cid", c->vsock_cid ? json_integer(c->vsock_cid) : json_null());
        json_object_set_new(j, "balloon", json_boolean(c->balloon));
        json_object_set_new(j, "api-socket", api_str_or_null(c->api_socket));
        return j;
}

static void api_info(const struct api_vm *vm, json_int_t arg, struct api_reply *r)
{
        (void)arg;
        json_t *j = api_ok();
        json_object_set_new(j, "state", json_string(api_state(vm)));
        json_object_set_new(j, "vcpus", json_integer(vm->n_vcpus));
        json_object_set_new(j, "memory", json_integer((json_int_t)vm->config->memory));
        json_object_set_new(j, "rss", json_integer(api_rss()));
        json_object_set_new(j, "config", api_config_json(vm->config));
        r->text = api_dump(j);
}

static void api_pause(const struct api_vm *vm, json_int_t arg, struct api_reply *r)
{
        (void)arg;
        if (vm->pause(vm->vm))
                r->text = api_paused_text();
        else
                r->pending = true;
}

static void api_resume(const struct api_vm *vm, json_int_t arg, struct api_reply *r)
{
        (void)arg;
        vm->resume(vm->vm);
        r->resumed = true;
        json_t *j = api_ok();
        json_object_set_new(j, "state", json_string("running"));
        r->text = api_dump(j);
}

static void api_stop(const struct api_vm *vm, json_int_t timeout_s, struct api_reply *r)
{
        /* A paused guest cannot see the button: it runs again to answer it. */
        vm->resume(vm->vm);
        r->resumed = true;
        vm->power_button(vm->vm);
        r->stop_timeout_s = (int)timeout_s;
        json_t *j = api_ok();
        json_object_set_new(j, "state", json_string("stopping"));
        json_object_set_new(j, "timeout", json_integer(timeout_s));
        r->text = api_dump(j);
}

enum api_arg { ARG_NONE, ARG_SIZE, ARG_TIMEOUT };

static const struct api_command {
        const char *name;
        enum api_arg arg;
        bool balloon; /* needs the balloon device */
        void (*run)(const struct api_vm *vm, json_int_t arg, struct api_reply *r);
} api_commands[] = {
        { "pause", ARG_NONE, false, api_pause },
        { "resume", ARG_NONE, false, api_resume },
        { "info", ARG_NONE, false, api_info },
        { "balloon", ARG_SIZE, true, api_balloon },
        { "balloon-stats", ARG_NONE, true, api_balloon_stats },
        { "stop", ARG_TIMEOUT, false, api_stop },
};

/* The command's one argument, checked; returns false with r->text set on a bad request. */
static bool api_check_args(json_t *req, const struct api_command *c, json_int_t *arg, struct api_reply *r)
{
        const char *key;
        json_t *v;
        json_object_foreach (req, key, v) {
                if (strcmp(key, "command") == 0)
                        continue;
                bool known = (c->arg == ARG_SIZE && strcmp(key, "size") == 0) ||
                             (c->arg == ARG_TIMEOUT && strcmp(key, "timeout") == 0);
                if (!known) {
                        api_fail(r, "%s: unknown key `%.64s`", c->name, key);
                        return false;
                }
        }
        if (c->arg == ARG_SIZE) {
                v = json_object_get(req, "size");
                if (!json_is_integer(v) || json_integer_value(v) < 0) {
                        api_fail(r, "balloon: size must be a number of bytes, 0 or more");
                        return false;
                }
                *arg = json_integer_value(v);
        } else if (c->arg == ARG_TIMEOUT) {
                v = json_object_get(req, "timeout");
                *arg = API_STOP_TIMEOUT_DEFAULT;
                if (v && (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > API_STOP_TIMEOUT_MAX)) {
                        api_fail(r, "stop: timeout must be whole seconds from 0 to %d", API_STOP_TIMEOUT_MAX);
                        return false;
                }
                if (v)
                        *arg = json_integer_value(v);
        }
        return true;
}

void api_request(const struct api_vm *vm, const char *line, size_t len, struct api_reply *r)
{
        *r = (struct api_reply){ .stop_timeout_s = -1 };
        json_error_t jerr;
        json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!req) {
                api_fail(r, "invalid JSON at column %d: %s", jerr.column, jerr.text);
                return;
        }
        json_t *cmd = json_is_object(req) ? json_object_get(req, "command") : NULL;
        if (!json_is_object(req)) {
                api_fail(r, "a request is a JSON object");
        } else if (!json_is_string(cmd)) {
                api_fail(r, "a request needs \"command\": a string");
        } else {
                const char *name = json_string_value(cmd);
                const struct api_command *c = NULL;
                for (size_t i = 0; i < ARRAY_SIZE(api_commands); i++)
                        if (strcmp(name, api_commands[i].name) == 0)
                                c = &api_commands[i];
                json_int_t arg = 0;
                if (!c)
                        api_fail(r, "unknown command `%.64s` (pause, resume, info, balloon, balloon-stats, stop)", name);
                else if (api_check_args(req, c, &arg, r) && c->balloon && !vm->balloon)
                        api_fail(r, "%s: the VM has no balloon device (--balloon)", c->name);
                else if (!r->text)
                        c->run(vm, arg, r);
        }
        json_decref(req);
}
