#include "cli/vm_virtio.h"

#include <stdlib.h>
#include <string.h>

#include "cli/vm_net.h"
#include "common/util.h"

#define VSOCK_CID_MIN 3 /* 0-2 are the hypervisor, the local loopback and the host */
#define VSOCK_CID_MAX 0xfffffffeULL
#define DISK_QUEUES_MAX 16

static char *path_from(const char *value, const char *base_dir)
{
        return value[0] != '/' && base_dir ? xasprintf("%s/%s", base_dir, value) : xstrdup(value);
}

/* Splits "FIRST,key=value,flag" in place: *first is the part before the first comma. */
struct opt_list {
        char *buf, *cursor;
};

static char *opt_list_next(struct opt_list *l)
{
        if (!l->cursor)
                return NULL;
        char *item = l->cursor;
        char *comma = strchr(item, ',');
        l->cursor = comma ? comma + 1 : NULL;
        if (comma)
                *comma = '\0';
        return item;
}

static int parse_count(const char *text, unsigned long long min, unsigned long long max, unsigned long long *out)
{
        return parse_u64(text, out) < 0 || *out < min || *out > max ? -1 : 0;
}

static int set_disk(struct vm_config *cfg, const char *text, const char *base_dir, const char *origin, cap_error_t *err)
{
        struct opt_list l = { .buf = xstrdup(text) };
        cleanup_free char *buf = l.buf;
        l.cursor = buf;
        const char *path = opt_list_next(&l);
        if (!path || !*path)
                return cap_fail(err, 0, "%s: `%s` has no image path (PATH[,ro][,direct][,serial=ID][,queues=N])", origin, text);
        struct vm_disk d = { .queues = 1 };
        for (char *o; (o = opt_list_next(&l));) {
                unsigned long long n;
                if (strcmp(o, "ro") == 0) {
                        d.readonly = true;
                } else if (strcmp(o, "direct") == 0) {
                        d.direct = true;
                } else if (str_has_prefix(o, "serial=")) {
                        free(d.serial);
                        d.serial = xstrdup(o + 7);
                } else if (str_has_prefix(o, "queues=")) {
                        if (parse_count(o + 7, 1, DISK_QUEUES_MAX, &n) < 0) {
                                free(d.serial);
                                return cap_fail(err, 0, "%s: queues=%s is not a number from 1 to %d", origin, o + 7,
                                                DISK_QUEUES_MAX);
                        }
                        d.queues = (int)n;
                } else {
                        free(d.serial);
                        return cap_fail(err, 0, "%s: unknown disk option `%s` (ro, direct, serial=ID, queues=N)", origin, o);
                }
        }
        d.path = path_from(path, base_dir);
        cfg->disks = xrealloc(cfg->disks, (size_t)(cfg->n_disks + 1) * sizeof(*cfg->disks));
        cfg->disks[cfg->n_disks++] = d;
        return 0;
}

/* "NAME,socket=PATH" and "CID,socket=PATH" and "DIR,tag=TAG[,socket=PATH]" share this: the
 * first item, then key=value items from the allowed set. */
static int split_keyed(const char *text, const char *origin, const char *usage, const char *const keys[], char *values[],
                       char **first, cap_error_t *err)
{
        struct opt_list l = { .buf = xstrdup(text) };
        cleanup_free char *buf = l.buf;
        l.cursor = buf;
        *first = xstrdup(opt_list_next(&l));
        for (char *o; (o = opt_list_next(&l));) {
                char *eq = strchr(o, '=');
                int k = -1;
                for (int i = 0; eq && keys[i]; i++)
                        if ((size_t)(eq - o) == strlen(keys[i]) && strncmp(o, keys[i], (size_t)(eq - o)) == 0)
                                k = i;
                if (k < 0 || !eq[1]) {
                        for (int i = 0; keys[i]; i++) {
                                free(values[i]);
                                values[i] = NULL;
                        }
                        free(*first);
                        *first = NULL;
                        return cap_fail(err, 0, "%s: `%s` is not understood (%s)", origin, o, usage);
                }
                free(values[k]);
                values[k] = xstrdup(eq + 1);
        }
        return 0;
}

static int set_console_port(struct vm_config *cfg, const char *text, const char *base_dir, const char *origin,
                            cap_error_t *err)
{
        static const char *const keys[] = { "socket", NULL };
        char *values[1] = { NULL };
        char *name;
        if (split_keyed(text, origin, "NAME,socket=PATH", keys, values, &name, err) < 0)
                return -1;
        cleanup_free char *socket = values[0];
        if (!*name || !socket) {
                free(name);
                return cap_fail(err, 0, "%s: `%s` needs a port name and socket=PATH", origin, text);
        }
        cfg->console_ports = xrealloc(cfg->console_ports, (size_t)(cfg->n_console_ports + 1) * sizeof(*cfg->console_ports));
        cfg->console_ports[cfg->n_console_ports++] = (struct vm_console_port){ .name = name, .socket = path_from(socket, base_dir) };
        return 0;
}

static int set_vsock(struct vm_config *cfg, const char *text, const char *base_dir, const char *origin, cap_error_t *err)
{
        static const char *const keys[] = { "socket", NULL };
        char *values[1] = { NULL };
        cleanup_free char *cid_text = NULL;
        if (split_keyed(text, origin, "CID,socket=PATH", keys, values, &cid_text, err) < 0)
                return -1;
        cleanup_free char *socket = values[0];
        unsigned long long cid;
        if (parse_count(cid_text, VSOCK_CID_MIN, VSOCK_CID_MAX, &cid) < 0)
                return cap_fail(err, 0, "%s: the guest CID `%s` is not a number from %d to %llu", origin, cid_text,
                                VSOCK_CID_MIN, VSOCK_CID_MAX);
        if (!socket)
                return cap_fail(err, 0, "%s: `%s` needs socket=PATH (CID,socket=PATH)", origin, text);
        cfg->vsock_cid = (uint32_t)cid;
        free(cfg->vsock_socket);
        cfg->vsock_socket = path_from(socket, base_dir);
        return 0;
}

static int set_share(struct vm_config *cfg, const char *text, const char *base_dir, const char *origin, cap_error_t *err)
{
        static const char *const keys[] = { "tag", "socket", NULL };
        char *values[2] = { NULL, NULL };
        cleanup_free char *dir = NULL;
        if (split_keyed(text, origin, "DIR,tag=TAG[,socket=PATH]", keys, values, &dir, err) < 0)
                return -1;
        cleanup_free char *tag = values[0], *socket = values[1];
        if (!tag)
                return cap_fail(err, 0, "%s: `%s` needs tag=TAG (DIR,tag=TAG[,socket=PATH])", origin, text);
        if (!*dir && !socket)
                return cap_fail(err, 0, "%s: `%s` needs a directory, or socket=PATH of a running virtiofsd", origin, text);
        cfg->shares = xrealloc(cfg->shares, (size_t)(cfg->n_shares + 1) * sizeof(*cfg->shares));
        cfg->shares[cfg->n_shares++] = (struct vm_share){
                .dir = *dir ? path_from(dir, base_dir) : NULL,
                .tag = xstrdup(tag),
                .socket = socket ? path_from(socket, base_dir) : NULL,
        };
        return 0;
}

/* "--rng" alone: unlimited; "--rng=1M": at most that many bytes a second. */
static int set_rng(struct vm_config *cfg, const char *text, const char *origin, cap_error_t *err)
{
        cfg->rng = true;
        cfg->rng_bytes_per_sec = 0;
        if (!*text)
                return 0;
        unsigned long long n;
        char *end;
        n = strtoull(text, &end, 10);
        int shift = 0;
        if (*end == 'K' || *end == 'k')
                shift = 10, end++;
        else if (*end == 'M' || *end == 'm')
                shift = 20, end++;
        if (*end || end == text || n == 0 || n > (UINT32_MAX >> shift))
                return cap_fail(err, 0, "%s: `%s` is not a rate in bytes a second (a number, K or M suffix)", origin, text);
        cfg->rng_bytes_per_sec = (uint64_t)n << shift;
        return 0;
}

/* "--balloon" alone: inflate, deflate and statistics; options add free page reporting
 * and deflate on OOM. */
static int set_balloon(struct vm_config *cfg, const char *text, const char *origin, cap_error_t *err)
{
        struct opt_list l = { .buf = xstrdup(text) };
        cleanup_free char *buf = l.buf;
        l.cursor = *buf ? buf : NULL;
        cfg->balloon = true;
        cfg->balloon_free_page_reporting = cfg->balloon_deflate_on_oom = false;
        for (char *o; (o = opt_list_next(&l));) {
                if (strcmp(o, "free-page-reporting") == 0)
                        cfg->balloon_free_page_reporting = true;
                else if (strcmp(o, "deflate-on-oom") == 0)
                        cfg->balloon_deflate_on_oom = true;
                else
                        return cap_fail(err, 0, "%s: unknown balloon option `%s` (free-page-reporting, deflate-on-oom)",
                                        origin, o);
        }
        return 0;
}

int vm_virtio_setting(struct vm_config *cfg, const char *key, const char *text, const char *base_dir,
                      const char *origin, cap_error_t *err)
{
        if (strcmp(key, "disk") == 0)
                return set_disk(cfg, text, base_dir, origin, err);
        if (strcmp(key, "console-port") == 0)
                return set_console_port(cfg, text, base_dir, origin, err);
        if (strcmp(key, "vsock") == 0)
                return set_vsock(cfg, text, base_dir, origin, err);
        if (strcmp(key, "share") == 0)
                return set_share(cfg, text, base_dir, origin, err);
        if (strcmp(key, "rng") == 0)
                return set_rng(cfg, text, origin, err);
        if (strcmp(key, "net") == 0)
                return vm_net_setting(cfg, text, base_dir, origin, err);
        if (strcmp(key, "balloon") == 0)
                return set_balloon(cfg, text, origin, err);
        if (strcmp(key, "virtio-transport") == 0) {
                if (strcmp(text, "pci") == 0)
                        cfg->virtio_transport = VM_VIRTIO_PCI;
                else if (strcmp(text, "mmio") == 0)
                        cfg->virtio_transport = VM_VIRTIO_MMIO;
                else
                        return cap_fail(err, 0, "%s: `%s` is not pci or mmio", origin, text);
                return 0;
        }
        if (strcmp(key, "console-device") == 0) {
                if (strcmp(text, "serial") == 0)
                        cfg->console_hvc = false;
                else if (strcmp(text, "virtio") == 0)
                        cfg->console_hvc = true;
                else
                        return cap_fail(err, 0, "%s: `%s` is not serial or virtio", origin, text);
                return 0;
        }
        return 1;
}
