/* cgroup v1 resource files: one hierarchy per controller (or comounted group). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup_internal.h"

#define FREEZE_TIMEOUT_MS 5000

static int write_i64(const char *dir, const char *file, const char *field, int64_t v, cap_error_t *err)
{
        char buf[32];
        snprintf(buf, sizeof(buf), "%" PRId64, v);
        return cgroup_write(dir, file, field, buf, err);
}

static int write_u64(const char *dir, const char *file, const char *field, uint64_t v, cap_error_t *err)
{
        char buf[32];
        snprintf(buf, sizeof(buf), "%" PRIu64, v);
        return cgroup_write(dir, file, field, buf, err);
}

/* A new cpuset cgroup starts with empty cpus/mems, which refuses every task: inherit the parent's. */
int cgroup_v1_copy_cpuset(const char *dir, cap_error_t *err)
{
        cleanup_free char *parent = xstrdup(dir);
        char *slash = strrchr(parent, '/');
        if (!slash || slash == parent)
                return 0;
        *slash = '\0';
        static const char *const files[] = { "cpuset.cpus", "cpuset.mems" };
        for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
                cleanup_free char *mine = cgroup_read(dir, files[i]);
                if (mine && mine[0])
                        continue;
                cleanup_free char *theirs = cgroup_read(parent, files[i]);
                if (!theirs)
                        return cap_fail(err, errno, "cgroup: read %s/%s", parent, files[i]);
                if (cgroup_write(dir, files[i], "linux.cgroupsPath", theirs, err) < 0)
                        return -1;
        }
        return 0;
}

static int apply_memory(const char *dir, const struct spec_memory *m, cap_error_t *err)
{
        /* as runc: 0 leaves limit, swap and reservation alone */
        int64_t limit = m->limit.set ? m->limit.v : 0;
        int64_t swap = m->swap.set ? m->swap.v : 0;
        bool has_memsw = cgroup_file_exists(dir, "memory.memsw.limit_in_bytes");
        const char *limit_field = "linux.resources.memory.limit", *swap_field = "linux.resources.memory.swap";

        /* lifting the memory limit lifts memory+swap too, unless swap says otherwise */
        if (limit == -1 && swap == 0 && has_memsw)
                swap = -1;
        if (swap != 0 && !has_memsw)
                return cap_fail(err, 0, "%s: swap accounting is off (no %s/memory.memsw.limit_in_bytes)", swap_field, dir);
        if (limit != 0 && swap != 0) {
                /* the kernel wants limit <= memsw at every step: order the writes accordingly */
                cleanup_free char *cur = cgroup_read(dir, "memory.limit_in_bytes");
                unsigned long long cur_limit = 0;
                if (!cur || parse_u64(cur, &cur_limit) < 0)
                        return cap_fail(err, errno, "%s: read %s/memory.limit_in_bytes", limit_field, dir);
                if (swap == -1 || cur_limit < (unsigned long long)swap) {
                        if (write_i64(dir, "memory.memsw.limit_in_bytes", swap_field, swap, err) < 0 ||
                            write_i64(dir, "memory.limit_in_bytes", limit_field, limit, err) < 0)
                                return -1;
                } else if (write_i64(dir, "memory.limit_in_bytes", limit_field, limit, err) < 0 ||
                           write_i64(dir, "memory.memsw.limit_in_bytes", swap_field, swap, err) < 0) {
                        return -1;
                }
        } else if (limit != 0) {
                if (write_i64(dir, "memory.limit_in_bytes", limit_field, limit, err) < 0)
                        return -1;
        } else if (swap != 0) {
                if (write_i64(dir, "memory.memsw.limit_in_bytes", swap_field, swap, err) < 0)
                        return -1;
        }
        if (m->reservation.set && m->reservation.v != 0 &&
            write_i64(dir, "memory.soft_limit_in_bytes", "linux.resources.memory.reservation", m->reservation.v, err) < 0)
                return -1;
        if (m->kernel.set && m->kernel.v != 0) {
                cap_error_t kerr = NULL;
                if (write_i64(dir, "memory.kmem.limit_in_bytes", "linux.resources.memory.kernel", m->kernel.v, &kerr) < 0) {
                        /* kernels >= 5.16 dropped kmem limits; runc ignores the field too */
                        if (kerr->errnum != EOPNOTSUPP && kerr->errnum != ENOENT && kerr->errnum != EINVAL) {
                                *err = kerr;
                                return -1;
                        }
                        log_debug("%s", kerr->msg);
                        cap_error_free(&kerr);
                }
        }
        if (m->kernel_tcp.set && m->kernel_tcp.v != 0 &&
            write_i64(dir, "memory.kmem.tcp.limit_in_bytes", "linux.resources.memory.kernelTCP", m->kernel_tcp.v, err) < 0)
                return -1;
        if (m->swappiness.set) {
                if (m->swappiness.v > 100)
                        return cap_fail(err, 0, "linux.resources.memory.swappiness: %" PRIu64 " is out of range 0..100",
                                        m->swappiness.v);
                if (write_u64(dir, "memory.swappiness", "linux.resources.memory.swappiness", m->swappiness.v, err) < 0)
                        return -1;
        }
        if (m->disable_oom_killer.set &&
            cgroup_write(dir, "memory.oom_control", "linux.resources.memory.disableOOMKiller",
                         m->disable_oom_killer.v ? "1" : "0", err) < 0)
                return -1;
        if (m->use_hierarchy.set &&
            cgroup_write(dir, "memory.use_hierarchy", "linux.resources.memory.useHierarchy", m->use_hierarchy.v ? "1" : "0",
                         err) < 0)
                return -1;
        return 0;
}

static int apply_cpu(const char *dir, const struct spec_cpu *c, cap_error_t *err)
{
        if (c->shares.set && c->shares.v != 0 &&
            write_u64(dir, "cpu.shares", "linux.resources.cpu.shares", c->shares.v, err) < 0)
                return -1;
        bool retry_period = false;
        if (c->period.set && c->period.v != 0) {
                cap_error_t perr = NULL;
                if (write_u64(dir, "cpu.cfs_period_us", "linux.resources.cpu.period", c->period.v, &perr) < 0) {
                        /* a shorter period can exceed the parent's quota until the new quota is in */
                        if (perr->errnum != EINVAL || !c->quota.set || c->quota.v == 0) {
                                *err = perr;
                                return -1;
                        }
                        cap_error_free(&perr);
                        retry_period = true;
                }
        }
        if (c->quota.set && c->quota.v != 0 &&
            write_i64(dir, "cpu.cfs_quota_us", "linux.resources.cpu.quota", c->quota.v, err) < 0)
                return -1;
        if (retry_period && write_u64(dir, "cpu.cfs_period_us", "linux.resources.cpu.period", c->period.v, err) < 0)
                return -1;
        if (c->burst.set && write_u64(dir, "cpu.cfs_burst_us", "linux.resources.cpu.burst", c->burst.v, err) < 0)
                return -1;
        /* the runtime may only be as large as the period allows: period first */
        if (c->realtime_period.set && c->realtime_period.v != 0 &&
            write_u64(dir, "cpu.rt_period_us", "linux.resources.cpu.realtimePeriod", c->realtime_period.v, err) < 0)
                return -1;
        if (c->realtime_runtime.set && c->realtime_runtime.v != 0 &&
            write_i64(dir, "cpu.rt_runtime_us", "linux.resources.cpu.realtimeRuntime", c->realtime_runtime.v, err) < 0)
                return -1;
        if (c->idle.set && write_i64(dir, "cpu.idle", "linux.resources.cpu.idle", c->idle.v, err) < 0)
                return -1;
        return 0;
}

static int apply_pids(const char *dir, int64_t limit, cap_error_t *err)
{
        if (limit <= 0)
                return cgroup_write(dir, "pids.max", "linux.resources.pids.limit", "max", err);
        return write_i64(dir, "pids.max", "linux.resources.pids.limit", limit, err);
}

static int write_throttle(const char *dir, const char *file, const char *field, const struct spec_blkio_throttle *t, size_t n,
                          cap_error_t *err)
{
        for (size_t i = 0; i < n; i++) {
                char buf[96], name[128];
                snprintf(buf, sizeof(buf), "%" PRId64 ":%" PRId64 " %" PRIu64, t[i].major, t[i].minor, t[i].rate);
                snprintf(name, sizeof(name), "%s[%zu]", field, i);
                if (cgroup_write(dir, file, name, buf, err) < 0)
                        return -1;
        }
        return 0;
}

static int apply_blkio(const char *dir, const struct spec_blkio *b, cap_error_t *err)
{
        /* CFQ's blkio.weight is gone from current kernels; BFQ offers blkio.bfq.weight */
        const char *weight = cgroup_file_exists(dir, "blkio.weight") ? "blkio.weight" : "blkio.bfq.weight";
        const char *weight_dev = cgroup_file_exists(dir, "blkio.weight_device") ? "blkio.weight_device"
                                                                                 : "blkio.bfq.weight_device";

        if (b->weight.set && b->weight.v != 0 && write_u64(dir, weight, "linux.resources.blockIO.weight", b->weight.v, err) < 0)
                return -1;
        if (b->leaf_weight.set && b->leaf_weight.v != 0 &&
            write_u64(dir, "blkio.leaf_weight", "linux.resources.blockIO.leafWeight", b->leaf_weight.v, err) < 0)
                return -1;
        for (size_t i = 0; i < b->n_weight_devices; i++) {
                const struct spec_blkio_weight_device *d = &b->weight_devices[i];
                char buf[96], name[96];
                snprintf(name, sizeof(name), "linux.resources.blockIO.weightDevice[%zu]", i);
                if (d->weight.set) {
                        snprintf(buf, sizeof(buf), "%" PRId64 ":%" PRId64 " %" PRIu64, d->major, d->minor, d->weight.v);
                        if (cgroup_write(dir, weight_dev, name, buf, err) < 0)
                                return -1;
                }
                if (d->leaf_weight.set) {
                        snprintf(buf, sizeof(buf), "%" PRId64 ":%" PRId64 " %" PRIu64, d->major, d->minor, d->leaf_weight.v);
                        if (cgroup_write(dir, "blkio.leaf_weight_device", name, buf, err) < 0)
                                return -1;
                }
        }
        if (write_throttle(dir, "blkio.throttle.read_bps_device", "linux.resources.blockIO.throttleReadBpsDevice",
                           b->throttle_read_bps, b->n_throttle_read_bps, err) < 0 ||
            write_throttle(dir, "blkio.throttle.write_bps_device", "linux.resources.blockIO.throttleWriteBpsDevice",
                           b->throttle_write_bps, b->n_throttle_write_bps, err) < 0 ||
            write_throttle(dir, "blkio.throttle.read_iops_device", "linux.resources.blockIO.throttleReadIOPSDevice",
                           b->throttle_read_iops, b->n_throttle_read_iops, err) < 0 ||
            write_throttle(dir, "blkio.throttle.write_iops_device", "linux.resources.blockIO.throttleWriteIOPSDevice",
                           b->throttle_write_iops, b->n_throttle_write_iops, err) < 0)
                return -1;
        return 0;
}

static int apply_hugetlb(const char *dir, const struct spec_resources *res, cap_error_t *err)
{
        for (size_t i = 0; i < res->n_hugepage_limits; i++) {
                const struct spec_hugepage_limit *l = &res->hugepage_limits[i];
                cleanup_free char *file = xasprintf("hugetlb.%s.limit_in_bytes", l->page_size);
                cleanup_free char *field = xasprintf("linux.resources.hugepageLimits[%zu]", i);
                if (strchr(l->page_size, '/') || !cgroup_file_exists(dir, file))
                        return cap_fail(err, 0, "%s.pageSize: `%s` is not supported here (no %s/%s)", field, l->page_size,
                                        dir, file);
                if (write_u64(dir, file, field, l->limit, err) < 0)
                        return -1;
        }
        return 0;
}

static int apply_net_prio(const char *dir, const struct spec_resources *res, cap_error_t *err)
{
        for (size_t i = 0; i < res->n_net_priorities; i++) {
                cleanup_free char *field = xasprintf("linux.resources.network.priorities[%zu]", i);
                cleanup_free char *line = xasprintf("%s %" PRIu32, res->net_priorities[i].name, res->net_priorities[i].priority);
                if (cgroup_write(dir, "net_prio.ifpriomap", field, line, err) < 0)
                        return -1;
        }
        return 0;
}

static void device_rule(const struct spec_device_cgroup *d, char *buf, size_t len)
{
        const char *access = d->access && d->access[0] ? d->access : "rwm";
        if (d->type == 'a') {
                snprintf(buf, len, "a *:* %s", access);
                return;
        }
        char major[24] = "*", minor[24] = "*";
        if (d->major >= 0)
                snprintf(major, sizeof(major), "%" PRId64, d->major);
        if (d->minor >= 0)
                snprintf(minor, sizeof(minor), "%" PRId64, d->minor);
        snprintf(buf, len, "%c %s:%s %s", d->type, major, minor, access);
}

static int apply_devices(const char *dir, const struct spec_resources *res, cap_error_t *err)
{
        /* start from deny-all, as the v2 filter does, then replay the rules in order */
        if (cgroup_write(dir, "devices.deny", "linux.resources.devices", "a", err) < 0)
                return -1;
        for (size_t i = 0; i < res->n_devices + cgroup_n_default_devices; i++) {
                bool dflt = i >= res->n_devices;
                const struct spec_device_cgroup *d = dflt ? &cgroup_default_devices[i - res->n_devices] : &res->devices[i];
                char rule[96];
                device_rule(d, rule, sizeof(rule));
                cleanup_free char *field = dflt ? xasprintf("default device rule `%s`", rule)
                                                : xasprintf("linux.resources.devices[%zu]", i);
                if (cgroup_write(dir, d->allow ? "devices.allow" : "devices.deny", field, rule, err) < 0)
                        return -1;
        }
        return 0;
}

int cgroup_v1_apply(struct cgroup_hier *h, const char *group, const struct spec_resources *res, cap_error_t *err)
{
        const char *dir = h->path;
        if (strcmp(group, "memory") == 0)
                return apply_memory(dir, &res->memory, err);
        if (strcmp(group, "cpu") == 0)
                return apply_cpu(dir, &res->cpu, err);
        if (strcmp(group, "cpuset") == 0)
                return cgroup_cpuset_apply(dir, &res->cpu, err);
        if (strcmp(group, "pids") == 0)
                return apply_pids(dir, res->pids_limit.v, err);
        if (strcmp(group, "blkio") == 0)
                return apply_blkio(dir, &res->blkio, err);
        if (strcmp(group, "hugetlb") == 0)
                return apply_hugetlb(dir, res, err);
        if (strcmp(group, "net_cls") == 0)
                return write_u64(dir, "net_cls.classid", "linux.resources.network.classID", res->net_class_id.v, err);
        if (strcmp(group, "net_prio") == 0)
                return apply_net_prio(dir, res, err);
        if (strcmp(group, "devices") == 0)
                return apply_devices(dir, res, err);
        return cap_fail(err, 0, "cgroup v1: unknown resource group `%s`", group);
}

int cgroup_v1_freeze(struct cgroup_hier *h, bool frozen, cap_error_t *err)
{
        const char *want = frozen ? "FROZEN" : "THAWED";
        struct timespec step = { 0, 1000000 };

        /* FREEZING can linger while tasks are busy; writing FROZEN again retries them */
        for (int waited = 0; waited < FREEZE_TIMEOUT_MS; waited++) {
                if (waited % 10 == 0 && cgroup_write(h->path, "freezer.state", "freezer", want, err) < 0)
                        return -1;
                cleanup_free char *state = cgroup_read(h->path, "freezer.state");
                if (!state)
                        return cap_fail(err, errno, "freezer: read %s/freezer.state", h->path);
                if (strcmp(state, want) == 0)
                        return 0;
                nanosleep(&step, NULL);
        }
        if (frozen) {
                cleanup_error cap_error_t terr = NULL;
                cgroup_write(h->path, "freezer.state", "freezer", "THAWED", &terr);
        }
        return cap_fail(err, 0, "freezer: %s/freezer.state did not become %s within %d ms", h->path, want,
                        FREEZE_TIMEOUT_MS);
}
