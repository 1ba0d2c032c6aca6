/* Resource files: the small helpers shared with cgroup_v1.c and cgroup_v2.c, and linux.resources
 * dispatched to the hierarchy that holds each group. */
#include "runtime/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>

#include "common/util.h"
#include "runtime/cgroup_internal.h"

/* ---- small file helpers shared with the v1/v2 files ---- */

int cgroup_write(const char *dir, const char *file, const char *field, const char *value, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(err, errno, "%s: write %s", field, path);
        /* cgroupfs parses one value per write(): never split it */
        ssize_t n;
        do
                n = write(fd, value, strlen(value));
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return cap_fail(err, errno, "%s: write %s", field, path);
        return 0;
}

bool cgroup_file_exists(const char *dir, const char *file)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        return access(path, F_OK) == 0;
}

char *cgroup_read(const char *dir, const char *file)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        cleanup_error cap_error_t err = NULL;
        char *buf = NULL;
        size_t len = 0;

        if (read_file(path, &buf, &len, 0, &err) < 0)
                return NULL;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
                buf[--len] = '\0';
        return buf;
}

bool cgroup_list_has(const char *list, const char *word)
{
        size_t wlen = strlen(word);
        const char *p = list;

        while (p && *p) {
                size_t k = strcspn(p, ", \n");
                if (k == wlen && strncmp(p, word, wlen) == 0)
                        return true;
                p += k;
                if (*p)
                        p++;
        }
        return false;
}

/* ---- resources ---- */

int cgroup_cpuset_apply(const char *dir, const struct spec_cpu *c, cap_error_t *err)
{
        if (c->cpus && cgroup_write(dir, "cpuset.cpus", "linux.resources.cpu.cpus", c->cpus, err) < 0)
                return -1;
        if (c->mems && cgroup_write(dir, "cpuset.mems", "linux.resources.cpu.mems", c->mems, err) < 0)
                return -1;
        return 0;
}

/* The first set field of each group, as named in config.json; NULL if none is set. */
static const char *memory_field(const struct spec_memory *m)
{
        return m->limit.set                ? "linux.resources.memory.limit"
               : m->reservation.set        ? "linux.resources.memory.reservation"
               : m->swap.set               ? "linux.resources.memory.swap"
               : m->kernel.set             ? "linux.resources.memory.kernel"
               : m->kernel_tcp.set         ? "linux.resources.memory.kernelTCP"
               : m->swappiness.set         ? "linux.resources.memory.swappiness"
               : m->disable_oom_killer.set ? "linux.resources.memory.disableOOMKiller"
               : m->use_hierarchy.set      ? "linux.resources.memory.useHierarchy"
                                           : NULL;
}

static const char *cpu_field(const struct spec_cpu *c)
{
        return c->shares.set             ? "linux.resources.cpu.shares"
               : c->quota.set            ? "linux.resources.cpu.quota"
               : c->period.set           ? "linux.resources.cpu.period"
               : c->burst.set            ? "linux.resources.cpu.burst"
               : c->realtime_runtime.set ? "linux.resources.cpu.realtimeRuntime"
               : c->realtime_period.set  ? "linux.resources.cpu.realtimePeriod"
               : c->idle.set             ? "linux.resources.cpu.idle"
                                         : NULL;
}

static const char *blkio_field(const struct spec_blkio *b)
{
        return b->weight.set                ? "linux.resources.blockIO.weight"
               : b->leaf_weight.set         ? "linux.resources.blockIO.leafWeight"
               : b->n_weight_devices        ? "linux.resources.blockIO.weightDevice"
               : b->n_throttle_read_bps     ? "linux.resources.blockIO.throttleReadBpsDevice"
               : b->n_throttle_write_bps    ? "linux.resources.blockIO.throttleWriteBpsDevice"
               : b->n_throttle_read_iops    ? "linux.resources.blockIO.throttleReadIOPSDevice"
               : b->n_throttle_write_iops   ? "linux.resources.blockIO.throttleWriteIOPSDevice"
                                            : NULL;
}

/* One group of resources: the v1 controller that holds it, or its v2 controller ("" when it
 * needs none, NULL when v2 has no equivalent). */
static int apply_group(struct cgroup *cg, const char *group, const char *v1, const char *v2, const char *field,
                       const struct spec_resources *res, cap_error_t *err)
{
        struct cgroup_hier *h = hier_v1(cg, v1);
        if (h)
                return cgroup_v1_apply(h, group, res, err);
        h = hier_unified(cg);
        if (h && v2) {
                if (v2[0] && cgroup_v2_enable(h, v2, field, err) < 0)
                        return -1;
                return cgroup_v2_apply(h, group, res, err);
        }
        /* A limit that cannot be applied is an error, never skipped (runc refuses net_cls and
         * net_prio too when they are not mounted). */
        if (!v2 && cg->mode == CGROUP_MODE_V2)
                return cap_fail(err, 0, "%s: cgroup v2 has no %s controller", field, v1);
        if (cg->denied)
                return cap_fail(err, 0, "%s: the %s controller is not available (rootless: %s)", field, v1, cg->denied);
        return cap_fail(err, 0, "%s: the %s controller is not available", field, v1);
}

int cgroup_apply(struct cgroup *cg, const struct spec_resources *res, cap_error_t *err)
{
        const char *f;

        if (!res)
                return 0;
        if (cg->n_hiers == 0) {
                bool any = memory_field(&res->memory) || cpu_field(&res->cpu) || res->cpu.cpus || res->cpu.mems ||
                           res->pids_limit.set || blkio_field(&res->blkio) || res->n_hugepage_limits ||
                           res->net_class_id.set || res->n_net_priorities || res->n_devices ||
                           (res->unified && res->unified[0]);
                if (any && cg->denied)
                        return cap_fail(err, 0, "linux.resources: limits are set but no cgroup could be created (rootless: %s)",
                                        cg->denied);
                if (any)
                        return cap_fail(err, 0, "linux.resources: limits are set but there is no cgroup");
                return 0;
        }
        if ((f = memory_field(&res->memory)) && apply_group(cg, "memory", "memory", "memory", f, res, err) < 0)
                return -1;
        if ((f = cpu_field(&res->cpu)) && apply_group(cg, "cpu", "cpu", "cpu", f, res, err) < 0)
                return -1;
        if ((res->cpu.cpus || res->cpu.mems) &&
            apply_group(cg, "cpuset", "cpuset", "cpuset",
                        res->cpu.cpus ? "linux.resources.cpu.cpus" : "linux.resources.cpu.mems", res, err) < 0)
                return -1;
        if (res->pids_limit.set && apply_group(cg, "pids", "pids", "pids", "linux.resources.pids.limit", res, err) < 0)
                return -1;
        if ((f = blkio_field(&res->blkio)) && apply_group(cg, "blkio", "blkio", "io", f, res, err) < 0)
                return -1;
        if (res->n_hugepage_limits &&
            apply_group(cg, "hugetlb", "hugetlb", "hugetlb", "linux.resources.hugepageLimits", res, err) < 0)
                return -1;
        if (res->net_class_id.set &&
            apply_group(cg, "net_cls", "net_cls", NULL, "linux.resources.network.classID", res, err) < 0)
                return -1;
        if (res->n_net_priorities &&
            apply_group(cg, "net_prio", "net_prio", NULL, "linux.resources.network.priorities", res, err) < 0)
                return -1;
        if (res->n_devices && apply_group(cg, "devices", "devices", "", "linux.resources.devices", res, err) < 0)
                return -1;
        if (res->unified && res->unified[0]) {
                struct cgroup_hier *u = hier_unified(cg);
                if (!u)
                        return cap_fail(err, 0, "linux.resources.unified: needs cgroup v2, this host uses %s",
                                        cgroup_mode_name(cg->mode));
                if (cgroup_v2_apply(u, "unified", res, err) < 0)
                        return -1;
        }
        return 0;
}
