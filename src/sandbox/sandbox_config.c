/* The VM a container gets: kernel, initrd, vCPUs, memory and its rootfs. config.json is hostile:
 * it may only pick a kernel or an initrd by file name inside the default one's directory, a rootfs
 * image inside the bundle (sandbox_rootfs.c), and its sizes are bounded. The environment is the
 * operator's: it may name any file. */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "sandbox/sandbox.h"
#include "vmm/kvm.h"

#define SANDBOX_KERNEL_DEFAULT "capsule-vmlinux"
#define SANDBOX_INITRD_DEFAULT "capsule-guest.initrd"
#define SANDBOX_KERNEL_ENV "CAPSULE_KERNEL"
#define SANDBOX_INITRD_ENV "CAPSULE_INITRD"
#define SANDBOX_BOOT_TIMEOUT_ENV "CAPSULE_VM_BOOT_TIMEOUT"
#define MIB SANDBOX_MIB
#define SANDBOX_MEMORY_DEFAULT (512 * MIB)
#define SANDBOX_MEMORY_MIN (64 * MIB)
/* Nested TCG boots take 10-90 s on a busy host; hardware KVM well under one. */
#define SANDBOX_BOOT_TIMEOUT_DEFAULT_S 300

const char *sandbox_annotation(const struct spec *spec, const char *key)
{
        for (size_t i = 0; spec->annotations && spec->annotations[i] && spec->annotations[i + 1]; i += 2) {
                if (strcmp(spec->annotations[i], key) == 0)
                        return spec->annotations[i + 1];
        }
        return NULL;
}

/* Only the one annotation is read: the full parse and its errors come with create, which ever
 * path it takes, and a plain create pays no second parse. */
bool sandbox_wanted(bool flag, const char *bundle)
{
        if (flag)
                return 1;
        cleanup_free char *path = xasprintf("%s/config.json", bundle);
        cleanup_free char *text = NULL;
        cleanup_error cap_error_t ignored = NULL;
        if (read_file(path, &text, NULL, 0, &ignored) < 0)
                return 0;
        json_t *cfg = json_loads(text, 0, NULL);
        const char *handler = json_string_value(json_object_get(json_object_get(cfg, "annotations"), SANDBOX_HANDLER_ANNOTATION));
        bool vm = handler && strcmp(handler, "vm") == 0;
        json_decref(cfg);
        return vm;
}

static char *exe_dir_file(const char *name, cap_error_t *err)
{
        const char *dir = getenv(SANDBOX_EXE_DIR_ENV);
        if (!dir || dir[0] != '/')
                return cap_fail(err, 0, "cannot find capsule's own directory (for %s)", name), NULL;
        return xasprintf("%s/%s", dir, name);
}

/* A file name from config.json: one plain name, nothing that leaves the directory. */
static bool file_name_ok(const char *name)
{
        if (!*name || name[0] == '.' || strlen(name) > 255)
                return false;
        for (const char *p = name; *p; p++) {
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._+-", *p)))
                        return false;
        }
        return true;
}

/* A boot file: the operator's variable, else the one next to capsule; an annotation may pick
 * another by name in that file's directory. *origin (allocated) names the setting the path came
 * from, for check_file's message: "annotation NAME: ", "$VAR: " or "" (the default). */
static int resolve_boot_file(const struct spec *spec, const char *env_name, const char *fallback, const char *annotation,
                             const char *what, char **out, char **origin, cap_error_t *err)
{
        const char *env = getenv(env_name);
        cleanup_free char *def = env && *env ? xstrdup(env) : exe_dir_file(fallback, err);
        if (!def)
                return -1;
        *origin = env && *env ? xasprintf("$%s: ", env_name) : xstrdup("");
        const char *name = sandbox_annotation(spec, annotation);
        if (!name) {
                *out = steal_pointer(&def);
                return 0;
        }
        if (!file_name_ok(name))
                return cap_fail(err, 0, "annotation %s: `%s` is not a file name (letters, digits, ._+-) in the %s directory",
                                annotation, name, what);
        cleanup_free char *copy = xstrdup(def);
        *out = xasprintf("%s/%s", dirname(copy), name);
        free(*origin);
        *origin = xasprintf("annotation %s: ", annotation);
        return 0;
}

static int check_file(const char *what, const char *path, const char *lead, cap_error_t *err)
{
        struct stat st;
        if (stat(path, &st) < 0 && errno == ENOENT)
                return cap_fail(err, 0, "%sVM %s `%s` does not exist (see capsule --help: VM containers)", lead, what, path);
        if (stat(path, &st) < 0)
                return cap_fail(err, errno, "%sVM %s `%s`", lead, what, path);
        if (!S_ISREG(st.st_mode))
                return cap_fail(err, 0, "%sVM %s `%s` is not a regular file", lead, what, path);
        return 0;
}

static int host_cpus(void)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
}

/* The tasks the VM itself adds to the host's cgroup: the VMM's main, event-loop and relay
 * threads, one per vCPU, KVM's page-recovery thread and the virtiofsd instances' threads (11 for
 * a one-vCPU VM, measured), with room to spare. */
#define SANDBOX_PIDS_OVERHEAD 32

void sandbox_host_resources(const struct spec_resources *res, struct spec_resources *host)
{
        *host = *res;
        /* linux.resources.devices is for the container's processes, which run in the guest: on the
         * host it would deny the VMM /dev/kvm. The guest applies it. */
        host->devices = NULL;
        host->n_devices = 0;
        /* The pids limit counts the container's processes, in the guest; on the host the same
         * number would leave the VMM no threads to start the VM with. */
        int64_t overhead = SANDBOX_PIDS_OVERHEAD + host_cpus();
        if (host->pids_limit.set && host->pids_limit.v > 0 && host->pids_limit.v <= INT64_MAX - overhead)
                host->pids_limit.v += overhead;
}

/* Memory as bytes or with a K, M or G suffix. */
static int parse_size(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *s == '-' || *s == '+')
                return -1;
        unsigned shift = 0;
        if (*end && !end[1]) {
                const char *u = strchr("KMG", *end);
                if (!u)
                        return -1;
                shift = 10 * (unsigned)(u - "KMG" + 1);
                end++;
        }
        if (*end || v > (UINT64_MAX >> shift))
                return -1;
        *out = (uint64_t)v << shift;
        return 0;
}

/* Number of CPUs in a cpuset list ("0-3,6"), 0 if it does not parse. */
static int cpuset_count(const char *list)
{
        int n = 0;
        cleanup_strv char **parts = strv_split(list, ",");
        for (size_t i = 0; parts[i]; i++) {
                unsigned long long a, b;
                char *dash = strchr(parts[i], '-');
                if (dash)
                        *dash = '\0';
                if (parse_u64(parts[i], &a) < 0 || (dash ? parse_u64(dash + 1, &b) < 0 : (b = a, false)) || b < a || b - a > 65536)
                        return 0;
                n += (int)(b - a + 1);
        }
        return n;
}

/* ceil(quota / period) vCPUs, at most max: a limit above the host's CPUs is the host's. */
static int quota_cpus(uint64_t quota, uint64_t period, int max)
{
        if (!period)
                period = 100000; /* the kernel's default */
        uint64_t n = quota / period + (quota % period != 0);
        return n > (uint64_t)max ? max : (int)n;
}

/* capsule.vm.cpus; else the pod's quota (a sandbox container's); else the container's quota or
 * cpuset; else one. */
static int resolve_cpus(const struct spec *spec, const struct sandbox_pod_size *pod, int *cpus, cap_error_t *err)
{
        int max = host_cpus();
        const char *a = sandbox_annotation(spec, "capsule.vm.cpus");
        const struct spec_resources *res = spec->linux.resources;
        *cpus = 1;
        if (a) {
                unsigned long long n;
                if (parse_u64(a, &n) < 0 || n < 1 || n > (unsigned long long)max)
                        return cap_fail(err, 0, "annotation capsule.vm.cpus: `%s` is not a number of CPUs from 1 to %d (this host's)", a, max);
                *cpus = (int)n;
                return 0;
        }
        if (pod->cpu_quota) {
                *cpus = quota_cpus(pod->cpu_quota, pod->cpu_period, max);
                return 0;
        }
        if (!res)
                return 0;
        if (res->cpu.quota.set && res->cpu.quota.v > 0) {
                *cpus = quota_cpus((uint64_t)res->cpu.quota.v, res->cpu.period.set ? res->cpu.period.v : 0, max);
        } else if (res->cpu.cpus && *res->cpu.cpus) {
                int n = cpuset_count(res->cpu.cpus);
                if (n <= 0)
                        return cap_fail(err, 0, "linux.resources.cpu.cpus: `%s` is not a CPU list", res->cpu.cpus);
                *cpus = n > max ? max : n;
        }
        return 0;
}

/* A limit (named by what) bounds the whole VM: the guest gets it less the VMM's overhead, at most
 * the host's RAM. */
static int memory_from_limit(const char *what, uint64_t limit, uint64_t host, uint64_t *memory, cap_error_t *err)
{
        if (limit < SANDBOX_MEMORY_MIN + SANDBOX_VMM_OVERHEAD)
                return cap_fail(err, 0, "%s: %llu bytes is below the VM's minimum of %lluM (64M for the guest, %lluM for the VMM)",
                                what, (unsigned long long)limit, (SANDBOX_MEMORY_MIN + SANDBOX_VMM_OVERHEAD) / MIB,
                                SANDBOX_VMM_OVERHEAD / MIB);
        *memory = limit - SANDBOX_VMM_OVERHEAD;
        if (*memory > host)
                *memory = host;
        return 0;
}

/* capsule.vm.memory; else the pod's total (a sandbox container's); else the container's limit;
 * else the default. */
static int resolve_memory(const struct spec *spec, const struct sandbox_pod_size *pod, uint64_t *memory, cap_error_t *err)
{
        uint64_t host = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
        const char *a = sandbox_annotation(spec, "capsule.vm.memory");
        const struct spec_resources *res = spec->linux.resources;
        *memory = SANDBOX_MEMORY_DEFAULT;
        if (a) {
                if (parse_size(a, memory) < 0 || *memory < SANDBOX_MEMORY_MIN || *memory > host)
                        return cap_fail(err, 0, "annotation capsule.vm.memory: `%s` is not a size from 64M to %lluM (this host's RAM), "
                                                "in bytes or with a K, M or G suffix", a, (unsigned long long)(host / MIB));
        } else if (pod->memory) {
                if (memory_from_limit("annotation " SANDBOX_POD_MEMORY_ANNOTATION, pod->memory, host, memory, err) < 0)
                        return -1;
        } else if (res && res->memory.limit.set && res->memory.limit.v > 0) {
                if (memory_from_limit("linux.resources.memory.limit", (uint64_t)res->memory.limit.v, host, memory, err) < 0)
                        return -1;
        }
        *memory &= ~(MIB - 1);
        return 0;
}

static int resolve_boot_timeout(long long *ms, cap_error_t *err)
{
        const char *s = getenv(SANDBOX_BOOT_TIMEOUT_ENV);
        unsigned long long n = SANDBOX_BOOT_TIMEOUT_DEFAULT_S;
        if (s && *s && (parse_u64(s, &n) < 0 || n < 1 || n > 3600))
                return cap_fail(err, 0, "$" SANDBOX_BOOT_TIMEOUT_ENV ": `%s` is not a number of seconds from 1 to 3600", s);
        *ms = (long long)n * 1000;
        return 0;
}

/* In the VMM's order: PVM is known from the loaded modules alone, and says more than a
 * missing /dev/kvm would. */
static int check_kvm(cap_error_t *err)
{
        if (kvm_flavour() == KVM_FLAVOUR_PVM)
                return cap_fail(err, 0, "cannot run a VM container: " KVM_PVM_KERNEL_REFUSAL);
        cleanup_close int fd = kvm_open(NULL, err);
        if (fd < 0)
                return cap_error_prefix(err, "cannot run a VM container");
        return 0;
}

int sandbox_vm_resolve(const struct spec *spec, const char *bundle, struct sandbox_vm *vm, cap_error_t *err)
{
        *vm = (struct sandbox_vm){ .rootfs_fd = -1, .rootfs_readonly = spec->root_readonly };
        if (sandbox_rootfs_open(spec, bundle, &vm->rootfs_fd, err) < 0)
                return -1;
        /* virtiofsd takes it as -o source=PATH, a list without quoting: a comma would start
         * options of config.json's choosing. */
        if (vm->rootfs_fd < 0 && strchr(spec->root_path, ','))
                return cap_fail(err, 0, "root.path: `%s` has a comma, which virtiofsd cannot share", spec->root_path);
        struct sandbox_pod_size pod;
        if (sandbox_pod_size(spec, &pod, err) < 0 || resolve_cpus(spec, &pod, &vm->cpus, err) < 0 ||
            resolve_memory(spec, &pod, &vm->memory, err) < 0 || resolve_boot_timeout(&vm->boot_timeout_ms, err) < 0)
                return -1;
        cleanup_free char *kernel_origin = NULL, *initrd_origin = NULL;
        if (resolve_boot_file(spec, SANDBOX_KERNEL_ENV, SANDBOX_KERNEL_DEFAULT, "capsule.vm.kernel", "kernel", &vm->kernel,
                              &kernel_origin, err) < 0 ||
            check_file("kernel", vm->kernel, kernel_origin, err) < 0)
                return cap_error_prefix(err, "cannot run a VM container");
        if (resolve_boot_file(spec, SANDBOX_INITRD_ENV, SANDBOX_INITRD_DEFAULT, "capsule.vm.initrd", "initrd", &vm->initrd,
                              &initrd_origin, err) < 0 ||
            check_file("initrd (the guest agent)", vm->initrd, initrd_origin, err) < 0)
                return cap_error_prefix(err, "cannot run a VM container");
        return check_kvm(err);
}

void sandbox_vm_free(struct sandbox_vm *vm)
{
        free(vm->kernel);
        free(vm->initrd);
        cap_closep(&vm->rootfs_fd);
        *vm = (struct sandbox_vm){ .rootfs_fd = -1 };
}
