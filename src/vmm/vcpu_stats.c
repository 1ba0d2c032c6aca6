/* A vCPU's KVM counters (the binary stats interface, Linux 5.14), logged with --debug when the VM
 * ends: how often the guest left KVM and why, the figures to set beside another VMM's (QEMU's
 * query-stats reads the same counters). The stats fd is opened with the vCPU, before any
 * confinement: the sandbox's seccomp filter allows pread but not this ioctl. */
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/vcpu.h"

/* The counters that tell exits apart, in the order they are logged. */
static const char *const shown[] = { "exits",          "io_exits",         "mmio_exits",   "halt_exits",
                                     "halt_wakeup",    "irq_exits",        "irq_injections", "irq_window_exits",
                                     "signal_exits",   "insn_emulation",   "hypercalls" };

/* Bounds on what the kernel describes: a few dozen counters with short names. */
#define STATS_MAX_DESC 4096
#define STATS_MAX_NAME 1024

int vcpu_stats_open(int vcpu_fd)
{
        if (!log_debug_enabled())
                return -1;
        return ioctl(vcpu_fd, KVM_GET_STATS_FD, 0); /* close-on-exec from the kernel */
}

static bool pread_all(int fd, void *buf, size_t len, off_t off)
{
        return pread(fd, buf, len, off) == (ssize_t)len;
}

void vcpu_stats_log(int stats_fd, int index)
{
        struct kvm_stats_header h;
        if (stats_fd < 0 || !pread_all(stats_fd, &h, sizeof(h), 0) || h.num_desc > STATS_MAX_DESC ||
            h.name_size > STATS_MAX_NAME || h.name_size == 0)
                return;
        size_t desc_size = sizeof(struct kvm_stats_desc) + h.name_size;
        cleanup_free uint8_t *descs = xmalloc0(desc_size * h.num_desc);
        if (!pread_all(stats_fd, descs, desc_size * h.num_desc, h.desc_offset))
                return;
        char line[512];
        size_t used = 0;
        for (size_t s = 0; s < ARRAY_SIZE(shown); s++) {
                for (uint32_t i = 0; i < h.num_desc; i++) {
                        struct kvm_stats_desc *d = (struct kvm_stats_desc *)(descs + i * desc_size);
                        d->name[h.name_size - 1] = '\0';
                        uint64_t value;
                        if (strcmp(d->name, shown[s]) != 0 || d->size < 1 ||
                            !pread_all(stats_fd, &value, sizeof(value), (off_t)h.data_offset + d->offset))
                                continue;
                        int n = snprintf(line + used, sizeof(line) - used, " %s %" PRIu64, d->name, value);
                        if (n > 0 && (size_t)n < sizeof(line) - used)
                                used += (size_t)n;
                        break;
                }
        }
        if (used)
                log_debug("vCPU %d: KVM counters:%s", index, line);
}
