/* cgroup v2 resource files: one unified hierarchy, controllers enabled top-down
 * through cgroup.subtree_control. */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup_internal.h"

#define FREEZE_TIMEOUT_MS 5000

static int write_fmt(const char *dir, const char *file, const char *field, cap_error_t *err, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static int write_fmt(const char *dir, const char *file, const char *field, cap_error_t *err, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        cleanup_free char *value = xvasprintf(fmt, ap);
        va_end(ap);
        return cgroup_write(dir, file, field, value, err);
}

void cgroup_v2_delegate_all(const char *dir)
{
        cleanup_free char *avail = cgroup_read(dir, "cgroup.controllers");
        cleanup_free char *enabled = cgroup_read(dir, "cgroup.subtree_control");
        cleanup_strv char **names = strv_split(avail ? avail : "", " ");
        for (size_t i = 0; names[i]; i++) {
                if (enabled && cgroup_list_has(enabled, names[i]))
                        continue;
                cleanup_error cap_error_t err = NULL;
                cleanup_free char *plus = xasprintf("+%s", names[i]);
                if (cgroup_write(dir, "cgroup.subtree_control", "cgroup", plus, &err) < 0)
                        log_debug("%s", err->msg);
        }
}

int cgroup_v2_enable(struct cgroup_hier *h, const char *controller, const char *field, cap_error_t *err)
{
        cleanup_free char *have = cgroup_read(h->path, "cgroup.controllers");
        if (have && cgroup_list_has(have, controller))
                return 0;

        /* enable it in every ancestor, root first; only our target directory holds processes,
         * and its own subtree_control is never touched */
        cleanup_free char *dir = xstrdup(h->mount);
        cleanup_strv char **parts = strv_split(h->path + strlen(h->mount), "/");
        cleanup_free char *why = NULL;
        for (size_t i = 0; parts[i]; i++) {
                cleanup_free char *avail = cgroup_read(dir, "cgroup.controllers");
                cleanup_free char *enabled = cgroup_read(dir, "cgroup.subtree_control");
                if (!avail || !cgroup_list_has(avail, controller)) {
                        why = xasprintf("not offered by %s/cgroup.controllers", dir);
                        break;
                }
                if (!enabled || !cgroup_list_has(enabled, controller)) {
                        cleanup_error cap_error_t werr = NULL;
                        cleanup_free char *plus = xasprintf("+%s", controller);
                        if (cgroup_write(dir, "cgroup.subtree_control", "cgroup", plus, &werr) < 0) {
                                why = xstrdup(werr->msg);
                                break;
                        }
                }
                char *next = xasprintf("%s/%s", dir, parts[i]);
                free(dir);
                dir = next;
        }
        free(have);
        have = cgroup_read(h->path, "cgroup.controllers");
        if (have && cgroup_list_has(have, controller))
                return 0;
        return cap_fail(err, 0, "%s: the %s controller is not available in %s%s%s", field, controller, h->path,
                        why ? ": " : "", why ? why : "");
}

static int apply_memory(const char *dir, const struct spec_memory *m, cap_error_t *err)
{
        /* as runc: 0 leaves limit, swap and reservation alone */
        int64_t limit = m->limit.set ? m->limit.v : 0;
        int64_t swap = m->swap.set ? m->swap.v : 0;
        bool has_swap = cgroup_file_exists(dir, "memory.swap.max");

        if (limit > 0 && write_fmt(dir, "memory.max", "linux.resources.memory.limit", err, "%" PRId64, limit) < 0)
                return -1;
        if (limit == -1) {
                if (cgroup_write(dir, "memory.max", "linux.resources.memory.limit", "max", err) < 0)
                        return -1;
                if (swap == 0 && has_swap)
                        swap = -1;
        }
        if (swap != 0 && !has_swap)
                return cap_fail(err, 0, "linux.resources.memory.swap: swap accounting is off (no %s/memory.swap.max)", dir);
        if (swap == -1) {
                if (cgroup_write(dir, "memory.swap.max", "linux.resources.memory.swap", "max", err) < 0)
                        return -1;
        } else if (swap > 0) {
                /* OCI's swap is memory+swap (v1 memsw); v2 limits swap alone */
                if (limit <= 0)
                        return cap_fail(err, 0, "linux.resources.memory.swap: needs linux.resources.memory.limit on cgroup v2");
                if (swap < limit)
                        return cap_fail(err, 0, "linux.resources.memory.swap: %" PRId64 " is below memory.limit %" PRId64,
                                        swap, limit);
                if (write_fmt(dir, "memory.swap.max", "linux.resources.memory.swap", err, "%" PRId64, swap - limit) < 0)
                        return -1;
        }
        if (m->reservation.set && m->reservation.v != 0) {
                if (m->reservation.v < 0) {
                        if (cgroup_write(dir, "memory.low", "linux.resources.memory.reservation", "0", err) < 0)
                                return -1;
                } else if (write_fmt(dir, "memory.low", "linux.resources.memory.reservation", err, "%" PRId64,
                                     m->reservation.v) < 0) {
                        return -1;
                }
        }
        /* no v2 equivalent: kernel memory is always accounted, the hierarchy always on */
        if (m->kernel.set || m->kernel_tcp.set || m->swappiness.set || m->disable_oom_killer.set || m->use_hierarchy.set)
                log_debug("cgroup v2: memory kernel, kernelTCP, swappiness, disableOOMKiller and useHierarchy are ignored");
        return 0;
}

/* runc's mapping of cpu.shares [2, 262144] onto cpu.weight [1, 10000]. */
static uint64_t shares_to_weight(uint64_t shares)
{
        if (shares < 2)
                shares = 2;
        if (shares > 262144)
                shares = 262144;
        return 1 + ((shares - 2) * 9999) / 262142;
}

static int apply_cpu(const char *dir, const struct spec_cpu *c, cap_error_t *err)
{
        if (c->realtime_runtime.set || c->realtime_period.set)
                return cap_fail(err, 0, "%s: realtime scheduling has no cgroup v2 controller",
                                c->realtime_runtime.set ? "linux.resources.cpu.realtimeRuntime"
                                                        : "linux.resources.cpu.realtimePeriod");
        if (c->shares.set && c->shares.v != 0 &&
            write_fmt(dir, "cpu.weight", "linux.resources.cpu.shares", err, "%" PRIu64, shares_to_weight(c->shares.v)) < 0)
                return -1;
        if ((c->quota.set && c->quota.v != 0) || (c->period.set && c->period.v != 0)) {
                /* cpu.max holds both: keep the half that is not being set */
                cleanup_free char *cur = cgroup_read(dir, "cpu.max");
                char quota[32] = "max";
                unsigned long long period = 100000;
                if (cur) {
                        char *sp = strchr(cur, ' ');
                        if (sp) {
                                *sp = '\0';
                                parse_u64(sp + 1, &period);
                        }
                        snprintf(quota, sizeof(quota), "%s", cur);
                }
                if (c->quota.set && c->quota.v != 0) {
                        if (c->quota.v > 0)
                                snprintf(quota, sizeof(quota), "%" PRId64, c->quota.v);
                        else
                                snprintf(quota, sizeof(quota), "max");
                }
                if (c->period.set && c->period.v != 0)
                        period = c->period.v;
                if (write_fmt(dir, "cpu.max", c->quota.set ? "linux.resources.cpu.quota" : "linux.resources.cpu.period", err,
                              "%s %llu", quota, period) < 0)
                        return -1;
        }
        if (c->burst.set && write_fmt(dir, "cpu.max.burst", "linux.resources.cpu.burst", err, "%" PRIu64, c->burst.v) < 0)
                return -1;
        if (c->idle.set && write_fmt(dir, "cpu.idle", "linux.resources.cpu.idle", err, "%" PRId64, c->idle.v) < 0)
                return -1;
        return 0;
}

static int write_io_max(const char *dir, const char *key, const char *field, const struct spec_blkio_throttle *t, size_t n,
                        cap_error_t *err)
{
        for (size_t i = 0; i < n; i++) {
                cleanup_free char *name = xasprintf("%s[%zu]", field, i);
                /* v1 uses 0 to lift a limit */
                int r = t[i].rate ? write_fmt(dir, "io.max", name, err, "%" PRId64 ":%" PRId64 " %s=%" PRIu64, t[i].major,
                                              t[i].minor, key, t[i].rate)
                                  : write_fmt(dir, "io.max", name, err, "%" PRId64 ":%" PRId64 " %s=max", t[i].major,
                                              t[i].minor, key);
                if (r < 0)
                        return -1;
        }
        return 0;
}

static int apply_io(const char *dir, const struct spec_blkio *b, cap_error_t *err)
{
        /* io.bfq.weight takes blkio's 10..1000 scale; io.weight is 1..10000 */
        bool bfq = cgroup_file_exists(dir, "io.bfq.weight");
        const char *wfile = bfq ? "io.bfq.weight" : "io.weight";

        if (b->weight.set && b->weight.v != 0) {
                uint64_t w = bfq ? b->weight.v : 1 + (b->weight.v - 10) * 9999 / 990;
                if (!bfq && b->weight.v < 10)
                        return cap_fail(err, 0, "linux.resources.blockIO.weight: %" PRIu64 " is out of range 10..1000",
                                        b->weight.v);
                if (write_fmt(dir, wfile, "linux.resources.blockIO.weight", err, "%" PRIu64, w) < 0)
                        return -1;
        }
        for (size_t i = 0; i < b->n_weight_devices; i++) {
                const struct spec_blkio_weight_device *d = &b->weight_devices[i];
                if (!d->weight.set)
                        continue;
                cleanup_free char *name = xasprintf("linux.resources.blockIO.weightDevice[%zu]", i);
                if (!bfq && d->weight.v < 10)
                        return cap_fail(err, 0, "%s.weight: %" PRIu64 " is out of range 10..1000", name, d->weight.v);
                uint64_t w = bfq ? d->weight.v : 1 + (d->weight.v - 10) * 9999 / 990;
                if (write_fmt(dir, wfile, name, err, "%" PRId64 ":%" PRId64 " %" PRIu64, d->major, d->minor, w) < 0)
                        return -1;
        }
        if (b->leaf_weight.set)
                log_debug("cgroup v2: linux.resources.blockIO.leafWeight is ignored");
        if (write_io_max(dir, "rbps", "linux.resources.blockIO.throttleReadBpsDevice", b->throttle_read_bps,
                         b->n_throttle_read_bps, err) < 0 ||
            write_io_max(dir, "wbps", "linux.resources.blockIO.throttleWriteBpsDevice", b->throttle_write_bps,
                         b->n_throttle_write_bps, err) < 0 ||
            write_io_max(dir, "riops", "linux.resources.blockIO.throttleReadIOPSDevice", b->throttle_read_iops,
                         b->n_throttle_read_iops, err) < 0 ||
            write_io_max(dir, "wiops", "linux.resources.blockIO.throttleWriteIOPSDevice", b->throttle_write_iops,
                         b->n_throttle_write_iops, err) < 0)
                return -1;
        return 0;
}

static int apply_hugetlb(const char *dir, const struct spec_resources *res, cap_error_t *err)
{
        for (size_t i = 0; i < res->n_hugepage_limits; i++) {
                const struct spec_hugepage_limit *l = &res->hugepage_limits[i];
                cleanup_free char *file = xasprintf("hugetlb.%s.max", l->page_size);
                cleanup_free char *rsvd = xasprintf("hugetlb.%s.rsvd.max", l->page_size);
                cleanup_free char *field = xasprintf("linux.resources.hugepageLimits[%zu]", i);
                if (strchr(l->page_size, '/') || !cgroup_file_exists(dir, file))
                        return cap_fail(err, 0, "%s.pageSize: `%s` is not supported here (no %s/%s)", field, l->page_size,
                                        dir, file);
                if (write_fmt(dir, file, field, err, "%" PRIu64, l->limit) < 0)
                        return -1;
                /* limit reservations too, or a mapping could reserve more than the limit */
                if (cgroup_file_exists(dir, rsvd) && write_fmt(dir, rsvd, field, err, "%" PRIu64, l->limit) < 0)
                        return -1;
        }
        return 0;
}

static int apply_unified(struct cgroup_hier *h, char **kv, cap_error_t *err)
{
        for (size_t i = 0; kv[i] && kv[i + 1]; i += 2) {
                const char *key = kv[i];
                cleanup_free char *field = xasprintf("linux.resources.unified.%s", key);
                const char *dot = strchr(key, '.');
                if (!dot || dot == key || strchr(key, '/'))
                        return cap_fail(err, 0, "%s: not a cgroup file name", field);
                cleanup_free char *controller = strndup(key, (size_t)(dot - key));
                if (strcmp(controller, "cgroup") != 0 && cgroup_v2_enable(h, controller, field, err) < 0)
                        return -1;
                if (cgroup_write(h->path, key, field, kv[i + 1], err) < 0)
                        return -1;
        }
        return 0;
}

int cgroup_v2_apply(struct cgroup_hier *h, const char *group, const struct spec_resources *res, cap_error_t *err)
{
        const char *dir = h->path;
        if (strcmp(group, "memory") == 0)
                return apply_memory(dir, &res->memory, err);
        if (strcmp(group, "cpu") == 0)
                return apply_cpu(dir, &res->cpu, err);
        if (strcmp(group, "cpuset") == 0)
                return cgroup_cpuset_apply(dir, &res->cpu, err);
        if (strcmp(group, "pids") == 0)
                return res->pids_limit.v <= 0
                               ? cgroup_write(dir, "pids.max", "linux.resources.pids.limit", "max", err)
                               : write_fmt(dir, "pids.max", "linux.resources.pids.limit", err, "%" PRId64, res->pids_limit.v);
        if (strcmp(group, "blkio") == 0)
                return apply_io(dir, &res->blkio, err);
        if (strcmp(group, "hugetlb") == 0)
                return apply_hugetlb(dir, res, err);
        if (strcmp(group, "devices") == 0)
                return cgroup_bpf_apply(dir, res->devices, res->n_devices, true, err);
        if (strcmp(group, "unified") == 0)
                return apply_unified(h, res->unified, err);
        return cap_fail(err, 0, "cgroup v2: unknown resource group `%s`", group);
}

int cgroup_v2_freeze(struct cgroup_hier *h, bool frozen, cap_error_t *err)
{
        if (cgroup_write(h->path, "cgroup.freeze", "freezer", frozen ? "1" : "0", err) < 0)
                return -1;
        cleanup_free char *events = xasprintf("%s/cgroup.events", h->path);
        cleanup_close int fd = open(events, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(err, errno, "freezer: open %s", events);
        const char *want = frozen ? "frozen 1" : "frozen 0";
        long long deadline = now_ms() + FREEZE_TIMEOUT_MS;
        for (;;) {
                char buf[512];
                ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
                if (n < 0)
                        return cap_fail(err, errno, "freezer: read %s", events);
                buf[n] = '\0';
                cleanup_strv char **lines = strv_split(buf, "\n");
                if (strv_contains(lines, want))
                        return 0;
                long long left = deadline - now_ms();
                if (left <= 0)
                        break;
                /* cgroup.events signals changes with POLLPRI; the short cap covers a missed wakeup */
                struct pollfd pfd = { .fd = fd, .events = POLLPRI };
                poll(&pfd, 1, left < 100 ? (int)left : 100);
        }
        if (frozen) {
                cleanup_error cap_error_t terr = NULL;
                cgroup_write(h->path, "cgroup.freeze", "freezer", "0", &terr);
        }
        return cap_fail(err, 0, "freezer: %s never reported \"%s\" within %d ms", events, want, FREEZE_TIMEOUT_MS);
}
