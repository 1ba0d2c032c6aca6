/* capsule vm: run a micro-VM (a Linux kernel, or a ring-3 test payload) on KVM.
 * Settings come from --config (JSON) and then flags, which override it. */
#include <ctype.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/vm_ctl.h"
#include "cli/vm_virtio.h"
#include "common/util.h"
#include "vmm/vm.h"

#define VM_DEFAULT_CPUS 1
#define VM_MAX_CPUS 254 /* xAPIC IDs below the broadcast ID 0xff */
#define VM_DEFAULT_MEMORY (256ULL << 20)
#define VM_MIN_MEMORY (16ULL << 20)
#define VM_MAX_MEMORY (1ULL << 40)
#define VM_DEFAULT_CMDLINE "console=ttyS0 reboot=k panic=-1"

static const char vm_help[] =
        "usage: capsule vm run [options]\n"
        "       capsule vm ctl SOCKET COMMAND [ARG]\n"
        "\n"
        "Boot a micro-VM on KVM and wait for it to stop: a Linux kernel (vmlinux or bzImage)\n"
        "with a serial console, or a test payload (a static ELF started in 64-bit ring 3).\n"
        "\n"
        "Options:\n"
        "  --kernel IMAGE     Linux kernel: vmlinux ELF (64-bit or PVH entry) or bzImage; default\n"
        "                     $CAPSULE_KERNEL, else ${CAPSULE_CACHE:-/var/cache/capsule}/kernel/current/vmlinux\n"
        "  --initrd FILE      initramfs for the kernel\n"
        "  --cmdline STR      kernel command line (default \"" VM_DEFAULT_CMDLINE "\")\n"
        "  --cpus N           number of vCPUs, 1 to 254 (default 1)\n"
        "  --memory SIZE      guest RAM: bytes or a K, M, G or T suffix (binary units), 16M to 1T\n"
        "                     (default 256M)\n"
        "  --console MODE     the guest's serial console (COM1): stdio (default), file:PATH, or none\n"
        "  --hugepages        back guest RAM with 2 MiB huge pages (reserved up front)\n"
        "  --payload ELF      run a ring-3 test payload instead of a kernel\n"
        "  --debug-exit       enable the debug exit port 0xf4: a byte the guest writes there ends the\n"
        "                     VM with that byte as the exit status (test payloads). Off by default, so\n"
        "                     that a guest cannot choose capsule's exit status\n"
        "  --bzimage-decompress WHO\n"
        "                     who decompresses a bzImage's compressed kernel: guest (default) or host.\n"
        "                     guest boots the bzImage through the 64-bit boot protocol and its own\n"
        "                     decompressor; host decompresses a gzip, xz, lzma, zstd or lz4 payload in\n"
        "                     capsule and boots the vmlinux inside (its PVH entry if it has one),\n"
        "                     falling back to guest for other codecs or a payload that fails. Guest is\n"
        "                     the default: measured, host decompression delays the guest's start by\n"
        "                     about as much as it saves it. A vmlinux needs no decompression at all.\n"
        "  --config FILE      JSON object with the same settings: kernel, initrd, cmdline (strings),\n"
        "                     cpus (integer), memory (\"512M\" or bytes), console (string), hugepages\n"
        "                     (boolean), payload, bzimage-decompress, api-socket (strings), debug-exit (boolean),\n"
        "                     and the virtio settings below under their flag's name with the flag's\n"
        "                     text as value (disk, console-port, share, net: a list of them; rng: true\n"
        "                     or the rate; balloon: true or its options); relative paths are relative\n"
        "                     to FILE's folder; flags override it, and disks, ports, shares and NICs\n"
        "                     from flags are added to its own\n"
        "  --api-socket PATH  serve the VM's control channel on the Unix socket PATH (created 0600,\n"
        "                     removed at exit; a stale socket nobody listens on is replaced, any other\n"
        "                     file is refused): see \"Control channel\" below\n"
        "  --help             this help\n"
        "\n"
        "Virtio devices (the guest's stock drivers; --virtio-transport picks how they attach):\n"
        "  --virtio-transport pci|mmio\n"
        "                     pci (default): modern virtio-pci functions on bus 0 with MSI-X;\n"
        "                     mmio: virtio-mmio (version 2) windows, announced to the guest with\n"
        "                     virtio_mmio.device= on its command line\n"
        "  --disk PATH[,ro][,direct][,serial=ID][,queues=N]\n"
        "                     a virtio-blk disk backed by the raw image PATH (repeatable: /dev/vda,\n"
        "                     /dev/vdb, ...). ro: read-only; direct: O_DIRECT, bypassing the host's\n"
        "                     page cache; serial=ID: the disk's serial (at most 20 bytes); queues=N:\n"
        "                     N request queues, 1 to 16 (default 1)\n"
        "  --console-device serial|virtio\n"
        "                     where --console attaches: serial (default: COM1, the guest's ttyS0) or\n"
        "                     virtio (virtio-console's hvc0; pass console=hvc0 in --cmdline)\n"
        "  --console-port NAME,socket=PATH\n"
        "                     a named virtio-console port (repeatable): /dev/vportNpM in the guest,\n"
        "                     whose /sys/class/virtio-ports/vportNpM/name is NAME; capsule listens on\n"
        "                     the Unix socket PATH and carries bytes both ways for one client at a time\n"
        "  --rng[=RATE]       a virtio-rng entropy device fed from the host's getrandom(); RATE limits\n"
        "                     it to that many bytes a second (K or M suffix)\n"
        "  --balloon[=free-page-reporting][,deflate-on-oom]\n"
        "                     a virtio-balloon: the control channel's `balloon SIZE` asks the guest to\n"
        "                     give SIZE of its memory back to the host, `balloon-stats` shows the\n"
        "                     guest's statistics. free-page-reporting: the guest also hands back what\n"
        "                     it frees, within seconds; deflate-on-oom: the guest takes ballooned\n"
        "                     memory back before its OOM killer runs. Not with --hugepages\n"
        "  --vsock CID,socket=PATH\n"
        "                     a virtio-vsock device for guest CID (3 or more), bridged to Unix sockets\n"
        "                     (no vhost): a host client connects to PATH and writes \"CONNECT <port>\\n\",\n"
        "                     answered \"OK <hostport>\\n\"; a guest connection to host port P goes to\n"
        "                     the Unix socket PATH_P, where a host program listens\n"
        "  --share DIR,tag=TAG[,socket=PATH]\n"
        "                     share DIR with the guest through virtio-fs (mount -t virtiofs TAG /mnt);\n"
        "                     capsule starts and stops /usr/lib/qemu/virtiofsd ($CAPSULE_VIRTIOFSD names\n"
        "                     another) for it, unless socket=PATH names a vhost-user back-end that is\n"
        "                     already listening there\n"
        "  --net tap[=NAME][,mac=MAC][,queues=N][,netns=PATH]\n"
        "  --net user[,hostfwd=tcp|udp:[HOSTADDR]:HOSTPORT-:GUESTPORT]...[,impl=passt|slirp][,mac=MAC]\n"
        "                     a virtio-net NIC (repeatable: eth0, eth1, ...). tap: a tap device\n"
        "                     (root, CAP_NET_ADMIN) with checksum and segmentation offloads; without\n"
        "                     NAME capsule creates capsuleN, brings it up and it disappears when\n"
        "                     capsule ends; NAME attaches to that tap (created the same way when it\n"
        "                     does not exist; one capsule did not create is left in place); queues=N:\n"
        "                     N queue pairs, 1 to 16 (default 1); netns=PATH: the tap lives in that\n"
        "                     network namespace (/run/netns/NAME). user: rootless user-mode\n"
        "                     networking (outbound TCP/UDP, DNS, no tap); hostfwd forwards a host\n"
        "                     port to a guest port (repeatable); impl picks passt or libslirp\n"
        "                     (default passt, or slirp when a TCP port is forwarded).\n"
        "                     mac: the NIC's MAC (default: a locally administered one)\n"
        "\n"
        "Control channel (--api-socket): one JSON request per line, one JSON answer per line,\n"
        "{\"ok\": true, ...} or {\"ok\": false, \"error\": \"...\"}; a request over 64 KiB or malformed\n"
        "is refused and changes nothing. `capsule vm ctl SOCKET COMMAND [ARG]` sends one and prints\n"
        "the answer (non-zero exit on an error). Commands ({\"command\": NAME, ...}):\n"
        "  pause, resume      stop the vCPUs (answered once every vCPU is out of the guest) and\n"
        "                     restart them; the guest's clock runs on while paused\n"
        "  info               state (running|paused), vCPUs, memory, capsule's RSS, the settings\n"
        "  balloon SIZE       {\"size\": BYTES}: the balloon's target (ctl: K, M, G suffixes)\n"
        "  balloon-stats      the balloon's target, actual size and the guest's statistics\n"
        "  stop [SECONDS]     {\"timeout\": SECONDS}: press the ACPI power button; a guest that has\n"
        "                     not powered off after SECONDS (default 10) is stopped: status 83\n"
        "\n"
        "Exit status:\n"
        "  0       the guest powered off (ACPI S5)\n"
        "  N       with --debug-exit: the guest wrote byte N to the debug exit port (0xf4)\n"
        "  1       capsule failed: bad settings, KVM errors, a KVM emulation or internal error\n"
        "  80      the guest rebooted (i8042 reset, ACPI reset register)\n"
        "  81      the guest panicked (pvpanic)\n"
        "  82      a vCPU triple-faulted\n"
        "  83      the guest ignored the power button of `vm ctl stop` until its timeout\n"
        "  128+N   stopped by signal N (SIGHUP 129, SIGINT 130, SIGQUIT 131, SIGTERM 143)\n"
        "\n"
        "On a PVM host (/dev/kvm from kvm_pvm) only payloads run: guest ring 0 is emulated there,\n"
        "so a stock kernel cannot boot; use the testbed (tests/testbed/run).\n";

enum vm_opt { OPT_KERNEL, OPT_INITRD, OPT_CMDLINE, OPT_CPUS, OPT_MEMORY, OPT_CONSOLE, OPT_HUGEPAGES, OPT_PAYLOAD,
              OPT_BZIMAGE_DECOMPRESS, OPT_DEBUG_EXIT, OPT_VIRTIO_TRANSPORT, OPT_DISK, OPT_CONSOLE_DEVICE,
              OPT_CONSOLE_PORT, OPT_RNG, OPT_BALLOON, OPT_VSOCK, OPT_SHARE, OPT_NET, OPT_API_SOCKET, OPT_CONFIG, OPT_HELP,
              N_OPTS };

static const struct option vm_opts[] = {
        { "kernel", required_argument, NULL, OPT_KERNEL },
        { "initrd", required_argument, NULL, OPT_INITRD },
        { "cmdline", required_argument, NULL, OPT_CMDLINE },
        { "cpus", required_argument, NULL, OPT_CPUS },
        { "memory", required_argument, NULL, OPT_MEMORY },
        { "console", required_argument, NULL, OPT_CONSOLE },
        { "hugepages", no_argument, NULL, OPT_HUGEPAGES },
        { "payload", required_argument, NULL, OPT_PAYLOAD },
        { "bzimage-decompress", required_argument, NULL, OPT_BZIMAGE_DECOMPRESS },
        { "debug-exit", no_argument, NULL, OPT_DEBUG_EXIT },
        { "virtio-transport", required_argument, NULL, OPT_VIRTIO_TRANSPORT },
        { "disk", required_argument, NULL, OPT_DISK },
        { "console-device", required_argument, NULL, OPT_CONSOLE_DEVICE },
        { "console-port", required_argument, NULL, OPT_CONSOLE_PORT },
        { "rng", optional_argument, NULL, OPT_RNG },
        { "balloon", optional_argument, NULL, OPT_BALLOON },
        { "vsock", required_argument, NULL, OPT_VSOCK },
        { "share", required_argument, NULL, OPT_SHARE },
        { "net", required_argument, NULL, OPT_NET },
        { "api-socket", required_argument, NULL, OPT_API_SOCKET },
        { "config", required_argument, NULL, OPT_CONFIG },
        { "help", no_argument, NULL, OPT_HELP },
        { 0 },
};

/* Where each path setting came from, for error messages ("--kernel", "vm.json: kernel"). */
struct vm_settings {
        struct vm_config cfg;
        char *origin_kernel, *origin_initrd, *origin_payload, *origin_api_socket;
};

static void vm_settings_free(struct vm_settings *s)
{
        vm_config_free(&s->cfg);
        free(s->origin_kernel);
        free(s->origin_initrd);
        free(s->origin_payload);
        free(s->origin_api_socket);
}

/* "512M", "1G", "268435456", "64MiB"; -1 on garbage or overflow. */
int vm_parse_size(const char *s, uint64_t *out)
{
        static const struct {
                const char *suffix;
                int shift;
        } units[] = {
                { "", 0 },    { "B", 0 },    { "K", 10 },   { "KiB", 10 }, { "KB", 10 }, { "M", 20 }, { "MiB", 20 },
                { "MB", 20 }, { "G", 30 },   { "GiB", 30 }, { "GB", 30 },  { "T", 40 }, { "TiB", 40 }, { "TB", 40 },
        };
        if (!isdigit((unsigned char)s[0]))
                return -1;
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
                return -1;
        for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
                if (strcasecmp(end, units[i].suffix) != 0)
                        continue;
                if (v > (UINT64_MAX >> units[i].shift))
                        return -1;
                *out = (uint64_t)v << units[i].shift;
                return 0;
        }
        return -1;
}

static int set_memory(struct vm_config *cfg, uint64_t bytes, const char *text, const char *origin, cap_error_t *err)
{
        if (bytes < VM_MIN_MEMORY)
                return cap_fail(err, 0, "%s: %s is too small (at least %lluM)", origin, text, VM_MIN_MEMORY >> 20);
        if (bytes > VM_MAX_MEMORY)
                return cap_fail(err, 0, "%s: %s is too large (at most %lluT)", origin, text, VM_MAX_MEMORY >> 40);
        cfg->memory = bytes;
        return 0;
}

static int set_memory_text(struct vm_config *cfg, const char *text, const char *origin, cap_error_t *err)
{
        uint64_t bytes;
        if (vm_parse_size(text, &bytes) < 0)
                return cap_fail(err, 0, "%s: `%s` is not a size (bytes, or a number with K, M, G or T)", origin, text);
        return set_memory(cfg, bytes, text, origin, err);
}

static int set_cpus(struct vm_config *cfg, long long n, const char *text, const char *origin, cap_error_t *err)
{
        if (n < 1 || n > VM_MAX_CPUS)
                return cap_fail(err, 0, "%s: %s is out of range (1 to %d)", origin, text, VM_MAX_CPUS);
        cfg->cpus = (int)n;
        return 0;
}

static int set_cpus_text(struct vm_config *cfg, const char *text, const char *origin, cap_error_t *err)
{
        long long n;
        if (parse_i64(text, &n) < 0)
                return cap_fail(err, 0, "%s: `%s` is not a number", origin, text);
        return set_cpus(cfg, n, text, origin, err);
}

static int set_console(struct vm_config *cfg, const char *text, const char *origin, cap_error_t *err)
{
        free(cfg->console_path);
        cfg->console_path = NULL;
        if (strcmp(text, "stdio") == 0) {
                cfg->console = VM_CONSOLE_STDIO;
        } else if (strcmp(text, "none") == 0) {
                cfg->console = VM_CONSOLE_NONE;
        } else if (str_has_prefix(text, "file:") && text[5]) {
                cfg->console = VM_CONSOLE_FILE;
                cfg->console_path = xstrdup(text + 5);
        } else {
                return cap_fail(err, 0, "%s: `%s` is not stdio, file:PATH or none", origin, text);
        }
        return 0;
}

static int set_bzimage_decompress(struct vm_config *cfg, const char *text, const char *origin, cap_error_t *err)
{
        if (strcmp(text, "guest") == 0)
                cfg->bzimage_decompress = VM_BZIMAGE_DECOMPRESS_GUEST;
        else if (strcmp(text, "host") == 0)
                cfg->bzimage_decompress = VM_BZIMAGE_DECOMPRESS_HOST;
        else
                return cap_fail(err, 0, "%s: `%s` is not guest or host", origin, text);
        return 0;
}

static void set_string(char **dst, const char *value)
{
        free(*dst);
        *dst = xstrdup(value);
}

/* value, or base_dir/value when it is relative and there is a base_dir */
static char *path_in(const char *value, const char *base_dir)
{
        return value[0] != '/' && base_dir ? xasprintf("%s/%s", base_dir, value) : xstrdup(value);
}

static void set_path(char **dst, char **origin_dst, const char *value, const char *base_dir, const char *origin)
{
        free(*dst);
        *dst = path_in(value, base_dir);
        set_string(origin_dst, origin);
}

static int json_string_setting(json_t *v, const char *origin, const char **out, cap_error_t *err)
{
        if (!json_is_string(v))
                return cap_fail(err, 0, "%s: expected a string", origin);
        *out = json_string_value(v);
        return 0;
}

/* Settings given more than once add a device each: a list in the JSON config. */
static bool is_repeatable(const char *key)
{
        return strcmp(key, "disk") == 0 || strcmp(key, "console-port") == 0 || strcmp(key, "share") == 0 ||
               strcmp(key, "net") == 0;
}

static int load_config_key(struct vm_settings *s, const char *key, json_t *v, const char *origin, const char *dir, cap_error_t *err)
{
        struct vm_config *cfg = &s->cfg;
        const char *str = NULL;
        if (strcmp(key, "cpus") == 0) {
                if (!json_is_integer(v))
                        return cap_fail(err, 0, "%s: expected an integer", origin);
                char text[32];
                snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(v));
                return set_cpus(cfg, json_integer_value(v), text, origin, err);
        }
        if (strcmp(key, "memory") == 0) {
                if (json_is_integer(v)) {
                        char text[32];
                        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(v));
                        if (json_integer_value(v) < 0)
                                return cap_fail(err, 0, "%s: %s is negative", origin, text);
                        return set_memory(cfg, (uint64_t)json_integer_value(v), text, origin, err);
                }
                if (!json_is_string(v))
                        return cap_fail(err, 0, "%s: expected a size string (\"512M\") or a number of bytes", origin);
                return set_memory_text(cfg, json_string_value(v), origin, err);
        }
        if (strcmp(key, "hugepages") == 0 || strcmp(key, "debug-exit") == 0) {
                if (!json_is_boolean(v))
                        return cap_fail(err, 0, "%s: expected true or false", origin);
                *(strcmp(key, "hugepages") == 0 ? &cfg->hugepages : &cfg->debug_exit) = json_is_true(v);
                return 0;
        }
        if (strcmp(key, "kernel") == 0 || strcmp(key, "initrd") == 0 || strcmp(key, "payload") == 0 ||
            strcmp(key, "cmdline") == 0 || strcmp(key, "console") == 0 || strcmp(key, "bzimage-decompress") == 0 ||
            strcmp(key, "api-socket") == 0) {
                if (json_string_setting(v, origin, &str, err) < 0)
                        return -1;
                if (strcmp(key, "kernel") == 0)
                        set_path(&cfg->kernel, &s->origin_kernel, str, dir, origin);
                else if (strcmp(key, "initrd") == 0)
                        set_path(&cfg->initrd, &s->origin_initrd, str, dir, origin);
                else if (strcmp(key, "payload") == 0)
                        set_path(&cfg->payload, &s->origin_payload, str, dir, origin);
                else if (strcmp(key, "cmdline") == 0)
                        set_string(&cfg->cmdline, str);
                else if (strcmp(key, "api-socket") == 0)
                        set_path(&cfg->api_socket, &s->origin_api_socket, str, dir, origin);
                else if (strcmp(key, "bzimage-decompress") == 0)
                        return set_bzimage_decompress(cfg, str, origin, err);
                else if (set_console(cfg, str, origin, err) < 0)
                        return -1;
                else if (cfg->console == VM_CONSOLE_FILE) {
                        char *path = path_in(cfg->console_path, dir);
                        free(cfg->console_path);
                        cfg->console_path = path;
                }
                return 0;
        }
        if (is_repeatable(key) && json_is_array(v)) {
                size_t i;
                json_t *item;
                json_array_foreach (v, i, item) {
                        cleanup_free char *item_origin = xasprintf("%s[%zu]", origin, i);
                        if (json_string_setting(item, item_origin, &str, err) < 0 ||
                            vm_virtio_setting(cfg, key, str, dir, item_origin, err) < 0)
                                return -1;
                }
                return 0;
        }
        if (strcmp(key, "rng") == 0 && json_is_boolean(v)) {
                cfg->rng = json_is_true(v);
                return 0;
        }
        if (strcmp(key, "balloon") == 0 && json_is_boolean(v)) {
                cfg->balloon = json_is_true(v);
                return 0;
        }
        if (json_is_string(v)) {
                int r = vm_virtio_setting(cfg, key, json_string_value(v), dir, origin, err);
                if (r <= 0)
                        return r;
        }
        return cap_fail(err, 0, "%s: unknown key `%s` or not a string (known: kernel, initrd, cmdline, cpus, memory, console, "
                        "hugepages, payload, bzimage-decompress, debug-exit, virtio-transport, disk, console-device, "
                        "console-port, rng, balloon, vsock, share, net, api-socket)",
                        origin, key);
}

static int load_config(struct vm_settings *s, const char *path, cap_error_t *err)
{
        json_error_t jerr;
        json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
                if (access(path, R_OK) < 0)
                        return cap_fail(err, errno, "--config: cannot read %s", path);
                return cap_fail(err, 0, "%s: invalid JSON at line %d column %d: %s", path, jerr.line, jerr.column, jerr.text);
        }
        int r = 0;
        if (!json_is_object(root)) {
                r = cap_fail(err, 0, "%s: must be a JSON object", path);
        } else {
                cleanup_free char *copy = xstrdup(path);
                const char *dir = dirname(copy);
                const char *key;
                json_t *v;
                json_object_foreach (root, key, v) {
                        cleanup_free char *origin = xasprintf("%s: %s", path, key);
                        if ((r = load_config_key(s, key, v, origin, dir, err)) < 0)
                                break;
                }
        }
        json_decref(root);
        return r;
}

static int apply_flag(struct vm_settings *s, int opt, const char *value, cap_error_t *err)
{
        struct vm_config *cfg = &s->cfg;
        const char *name = vm_opts[opt].name;
        cleanup_free char *origin = xasprintf("--%s", name);
        switch (opt) {
        case OPT_KERNEL:
                set_path(&cfg->kernel, &s->origin_kernel, value, NULL, origin);
                return 0;
        case OPT_INITRD:
                set_path(&cfg->initrd, &s->origin_initrd, value, NULL, origin);
                return 0;
        case OPT_PAYLOAD:
                set_path(&cfg->payload, &s->origin_payload, value, NULL, origin);
                return 0;
        case OPT_CMDLINE:
                set_string(&cfg->cmdline, value);
                return 0;
        case OPT_API_SOCKET:
                set_path(&cfg->api_socket, &s->origin_api_socket, value, NULL, origin);
                return 0;
        case OPT_CPUS:
                return set_cpus_text(cfg, value, origin, err);
        case OPT_MEMORY:
                return set_memory_text(cfg, value, origin, err);
        case OPT_CONSOLE:
                return set_console(cfg, value, origin, err);
        case OPT_HUGEPAGES:
                cfg->hugepages = true;
                return 0;
        case OPT_DEBUG_EXIT:
                cfg->debug_exit = true;
                return 0;
        case OPT_BZIMAGE_DECOMPRESS:
                return set_bzimage_decompress(cfg, value, origin, err);
        case OPT_VIRTIO_TRANSPORT:
        case OPT_DISK:
        case OPT_CONSOLE_DEVICE:
        case OPT_CONSOLE_PORT:
        case OPT_RNG:
        case OPT_BALLOON:
        case OPT_VSOCK:
        case OPT_SHARE:
        case OPT_NET:
                return vm_virtio_setting(cfg, name, value, NULL, origin, err) < 0 ? -1 : 0;
        default:
                return 0;
        }
}

static int check_readable(const char *path, const char *origin, cap_error_t *err)
{
        if (access(path, R_OK) < 0)
                return cap_fail(err, errno, "%s: cannot read %s", origin, path);
        return 0;
}

/* The kernel: the setting, else $CAPSULE_KERNEL, else the cache's current kernel. */
static int resolve_kernel(struct vm_settings *s, cap_error_t *err)
{
        if (s->cfg.kernel)
                return check_readable(s->cfg.kernel, s->origin_kernel, err);
        const char *env = getenv("CAPSULE_KERNEL");
        if (env && *env) {
                set_path(&s->cfg.kernel, &s->origin_kernel, env, NULL, "$CAPSULE_KERNEL");
                return check_readable(s->cfg.kernel, s->origin_kernel, err);
        }
        const char *cache = getenv("CAPSULE_CACHE");
        cleanup_free char *def = xasprintf("%s/kernel/current/vmlinux", cache && *cache ? cache : "/var/cache/capsule");
        if (access(def, R_OK) < 0)
                return cap_fail(err, 0, "no kernel: pass --kernel or --payload, set CAPSULE_KERNEL, or install one at %s", def);
        set_path(&s->cfg.kernel, &s->origin_kernel, def, NULL, "kernel");
        return 0;
}

static int vm_settings_finish(struct vm_settings *s, cap_error_t *err)
{
        struct vm_config *cfg = &s->cfg;
        if (cfg->payload) {
                if (cfg->kernel)
                        return cap_fail(err, 0, "%s and %s: a VM runs either a kernel or a payload", s->origin_kernel, s->origin_payload);
                if (cfg->initrd)
                        return cap_fail(err, 0, "%s: an initrd needs a kernel, not a payload", s->origin_initrd);
                return check_readable(cfg->payload, s->origin_payload, err);
        }
        if (resolve_kernel(s, err) < 0)
                return -1;
        if (cfg->initrd && check_readable(cfg->initrd, s->origin_initrd, err) < 0)
                return -1;
        if (!cfg->cmdline)
                cfg->cmdline = xstrdup(VM_DEFAULT_CMDLINE);
        return 0;
}

static int vm_cmd_run(int argc, char **argv, cap_error_t *err)
{
        const char *flags[N_OPTS] = { 0 };
        /* Repeatable flags, in order: each adds a device after the config's own. */
        cleanup_free struct { int opt; const char *value; } *repeated = xmalloc0((size_t)argc * sizeof(*repeated));
        int n_repeated = 0;
        int c;
        opterr = 0;
        while ((c = getopt_long_only(argc, argv, "+:", vm_opts, NULL)) != -1) {
                if (c == OPT_HELP) {
                        fputs(vm_help, stdout);
                        return 0;
                }
                if (c == ':')
                        return cli_usage(err, "vm run", "%s needs a value", argv[optind - 1]);
                if (c < 0 || c >= N_OPTS)
                        return cli_usage(err, "vm run", "unknown option `%s`; see capsule vm --help", argv[optind - 1]);
                if (is_repeatable(vm_opts[c].name))
                        repeated[n_repeated++] = (typeof(*repeated)){ c, optarg };
                else
                        flags[c] = optarg ? optarg : ""; /* the last one wins */
        }
        if (optind < argc)
                return cli_usage(err, "vm run", "unexpected argument `%s`; see capsule vm --help", argv[optind]);

        __attribute__((cleanup(vm_settings_free))) struct vm_settings s = {
                .cfg = { .cpus = VM_DEFAULT_CPUS, .memory = VM_DEFAULT_MEMORY, .console = VM_CONSOLE_STDIO },
        };
        if (flags[OPT_CONFIG] && load_config(&s, flags[OPT_CONFIG], err) < 0)
                return -1;
        for (int opt = 0; opt < N_OPTS; opt++)
                if (flags[opt] && apply_flag(&s, opt, flags[opt], err) < 0)
                        return -1;
        for (int i = 0; i < n_repeated; i++)
                if (apply_flag(&s, repeated[i].opt, repeated[i].value, err) < 0)
                        return -1;
        if (vm_settings_finish(&s, err) < 0)
                return -1;
        int status = 0;
        if (vm_run(&s.cfg, &status, err) < 0)
                return -1;
        return status;
}

static int cmd_vm(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        (void)g;
        if (argc < 2)
                return cli_usage(err, "vm", "missing subcommand; usage: capsule vm run [options] | ctl SOCKET COMMAND (see capsule vm --help)");
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
                fputs(vm_help, stdout);
                return 0;
        }
        if (strcmp(argv[1], "run") == 0)
                return vm_cmd_run(argc - 1, argv + 1, err);
        if (strcmp(argv[1], "ctl") == 0)
                return vm_ctl_main(argc - 1, argv + 1, err);
        return cli_usage(err, "vm", "unknown subcommand `%s`; usage: capsule vm run [options] | ctl SOCKET COMMAND", argv[1]);
}

CLI_COMMAND(vm, "vm", "run a micro-VM (a Linux kernel or a test payload) on KVM", cmd_vm)
