/* One VM per pod, as Kata runs pods: the pod's sandbox ("pause") container boots the VM and
 * takes the pod's interface; each workload container that names it (the CRI's annotations)
 * joins that VM as a member instead of booting one. podman (4.x) marks no pod's infra
 * container, only its other containers (CRI-O's annotations naming the infra's id): as under
 * Kata, a container podman made with no container type is a pod that members may join. A member's rootfs and bind sources reach
 * the guest through a directory of the pod's state directory, `members`, which the pod's VM
 * shares as AGENT_MEMBERS_TAG: it is a shared mount, so a member's bind mounts, made under it
 * after the VM started, propagate into virtiofsd's mount namespace (a slave of it). */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "sandbox/sandbox.h"

static const char *const type_keys[] = { "io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType" };
static const char *const sandbox_id_keys[] = { "io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID" };
#define MANAGER_KEY "io.container.manager"

enum sandbox_pod_role sandbox_pod_role(const struct spec *spec, const char **pod_id)
{
        *pod_id = NULL;
        bool typed = false;
        for (size_t i = 0; i < ARRAY_SIZE(type_keys); i++) {
                const char *type = sandbox_annotation(spec, type_keys[i]);
                typed = typed || type;
                if (type && strcmp(type, "sandbox") == 0)
                        return SANDBOX_POD;
                if (type && strcmp(type, "container") == 0 && (*pod_id = sandbox_annotation(spec, sandbox_id_keys[i])))
                        return SANDBOX_POD_MEMBER;
        }
        const char *manager = sandbox_annotation(spec, MANAGER_KEY);
        if (!typed && manager && strcmp(manager, "libpod") == 0)
                return SANDBOX_POD;
        return SANDBOX_POD_NONE;
}

/* A decimal from min to max, or "0"; nothing else (no sign, space or suffix). */
static int pod_value(const struct spec *spec, const char *key, uint64_t min, uint64_t max, const char *what, uint64_t *v,
                     cap_error_t *err)
{
        *v = 0;
        const char *s = sandbox_annotation(spec, key);
        if (!s)
                return 0;
        unsigned long long n;
        if (!*s || strspn(s, "0123456789") != strlen(s) || parse_u64(s, &n) < 0 || (n && (n < min || n > max)))
                return cap_fail(err, 0, "annotation %s: `%s` is not %s (0: unset)", key, s, what);
        *v = n;
        return 0;
}

/* cgroup v2's cpu.max bounds (and the kubelet's minimum quota). */
#define POD_CPU_PERIOD_MIN 1000
#define POD_CPU_PERIOD_MAX 1000000
#define POD_CPU_QUOTA_MIN 1000

int sandbox_pod_size(const struct spec *spec, struct sandbox_pod_size *size, cap_error_t *err)
{
        const char *id;
        *size = (struct sandbox_pod_size){ 0 };
        if (sandbox_pod_role(spec, &id) != SANDBOX_POD)
                return 0;
        if (pod_value(spec, SANDBOX_POD_MEMORY_ANNOTATION, 1, INT64_MAX, "a number of bytes", &size->memory, err) < 0 ||
            pod_value(spec, SANDBOX_POD_CPU_QUOTA_ANNOTATION, POD_CPU_QUOTA_MIN, INT64_MAX, "a CPU quota of 1000 microseconds or more",
                      &size->cpu_quota, err) < 0 ||
            pod_value(spec, SANDBOX_POD_CPU_PERIOD_ANNOTATION, POD_CPU_PERIOD_MIN, POD_CPU_PERIOD_MAX,
                      "a CPU period from 1000 to 1000000 microseconds", &size->cpu_period, err) < 0)
                return -1;
        return 0;
}

char *sandbox_pod_members_dir(const char *root, const char *pod_id)
{
        return xasprintf("%s/%s/" SANDBOX_MEMBERS, root, pod_id);
}

int sandbox_pod_share(const char *root, const char *id, cap_error_t *err)
{
        cleanup_free char *dir = sandbox_pod_members_dir(root, id);
        if (mkdir(dir, 0700) < 0)
                return cap_fail(err, errno, "mkdir `%s`", dir);
        if (mount(dir, dir, NULL, MS_BIND, NULL) < 0)
                return cap_fail(err, errno, "the pod's members: bind `%s`", dir);
        if (mount(NULL, dir, NULL, MS_SHARED, NULL) < 0) {
                umount2(dir, MNT_DETACH);
                return cap_fail(err, errno, "the pod's members: make `%s` a shared mount", dir);
        }
        return 0;
}

/* Lazily: a member's mounts beneath go with it. The state directory's removal (rm_rf, which
 * stays on one file system: a bind of the same one is not told apart) must follow this. */
int sandbox_pod_unshare(const char *root, const char *id, cap_error_t *err)
{
        cleanup_free char *dir = sandbox_pod_members_dir(root, id);
        if (umount2(dir, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                return cap_fail(err, errno, "unmount `%s`", dir);
        return 0;
}

/* st is the network namespace of the pod's live sandbox process, and that is not ours. */
static bool vmm_netns_is(const struct sandbox_record *pod, const struct stat *st)
{
        struct stat own;
        return sandbox_vmm_in_netns(pod, st->st_dev, st->st_ino) && sandbox_vmm_alive(pod) &&
               stat("/proc/self/ns/net", &own) == 0 && !(st->st_dev == own.st_dev && st->st_ino == own.st_ino);
}

int sandbox_member_check(const char *root, const struct spec *spec, const char *pod_id, struct sandbox_record *pod,
                         cap_error_t *err)
{
        cleanup_error cap_error_t inner = NULL;
        if (state_check_id(pod_id, &inner) < 0 || !sandbox_owns(root, pod_id) ||
            sandbox_record_load(root, pod_id, pod, &inner) < 0 || !pod->pod)
                return cap_fail(err, 0, "annotations: the pod `%.64s` is no capsule VM pod in this --root", pod_id);
        if (!sandbox_vmm_alive(pod))
                return cap_fail(err, 0, "annotations: the pod `%s`'s VM does not run", pod_id);
        /* The pod's create checked its namespace to be one: the same identity is that one. A pod
         * on the host's network (none by path: the VM has lo only) takes members without one.
         * containerd names the pause's namespace (/proc/PID/ns/net) for such a pod, podman the
         * infra's for every pod: PID is the pod's sandbox process, whose jail's namespace (of
         * its own, never the host's) stands for the pod's VM as well. */
        const struct spec_namespace *ns = spec_namespace(spec, CLONE_NEWNET);
        struct stat st = { 0 };
        if (ns && ns->path && stat(ns->path, &st) < 0)
                return cap_fail(err, errno, "linux.namespaces: network: stat `%s`", ns->path);
        if ((unsigned long long)st.st_dev == pod->pod_netns_dev && (unsigned long long)st.st_ino == pod->pod_netns_ino)
                return 0;
        if (ns && ns->path && vmm_netns_is(pod, &st))
                return 0;
        if (ns && ns->path)
                return cap_fail(err, 0, "linux.namespaces: network: `%s` is not the network namespace of the pod `%s`", ns->path,
                                pod_id);
        return cap_fail(err, 0, "linux.namespaces: network: a member of the pod `%s` joins its network namespace by path", pod_id);
}

char *sandbox_member_dir_name(const char *id)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return xasprintf("%.64s.%llx", id, (unsigned long long)now.tv_sec * 1000000000ULL + (unsigned long long)now.tv_nsec);
}

/* members/NAME (a mount of its own, so that one lazy unmount takes everything beneath), the
 * member's rootfs on members/NAME/rootfs and its bind sources on members/NAME/binds/N. */
int sandbox_member_mount(const char *root, const char *pod_id, const char *name, const char *rootfs, char *const *bind_sources,
                         cap_error_t *err)
{
        cleanup_free char *members = sandbox_pod_members_dir(root, pod_id);
        cleanup_free char *dir = xasprintf("%s/%s", members, name);
        cleanup_free char *target = xasprintf("%s/rootfs", dir);
        cleanup_free char *binds = xasprintf("%s/binds", dir);
        if (mkdir(dir, 0700) < 0)
                return cap_fail(err, errno, "mkdir `%s`", dir);
        if (mount(dir, dir, NULL, MS_BIND, NULL) < 0)
                return cap_fail(err, errno, "bind `%s`", dir);
        cleanup_close int fd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(err, errno, "root.path: open `%s`", rootfs);
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (mkdir(target, 0755) < 0 || mount(proc, target, NULL, MS_BIND | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "root.path: bind `%s` for the pod's VM", rootfs);
        return bind_sources[0] ? sandbox_binds_bind(binds, bind_sources, err) : 0;
}

void sandbox_member_unmount(const char *root, const char *pod_id, const char *name)
{
        cleanup_free char *members = sandbox_pod_members_dir(root, pod_id);
        cleanup_free char *dir = xasprintf("%s/%s", members, name);
        cleanup_error cap_error_t ignored = NULL;
        /* Only what is no mount any more is removed: rm_rf would go down into a bound rootfs. */
        if (umount2(dir, MNT_DETACH) == 0 || errno == EINVAL)
                rm_rf(dir, &ignored);
}
