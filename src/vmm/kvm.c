#include "vmm/kvm.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

static const struct {
        long cap;
        const char *name;
} required_caps[] = {
        { KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
        { KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
        { KVM_CAP_PIT2, "KVM_CAP_PIT2" },
        { KVM_CAP_HLT, "KVM_CAP_HLT" },
        { KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
        { KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR" },
        { KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
        { KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
};

int kvm_cap(int kvm_fd, long cap)
{
        int r = ioctl(kvm_fd, KVM_CHECK_EXTENSION, cap);
        return r < 0 ? 0 : r;
}

int kvm_open(const char *path, cap_error_t *err)
{
        if (!path)
                path = "/dev/kvm";
        cleanup_close int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return cap_fail(err, 0, "%s does not exist: KVM is not available on this host", path);
                if (errno == EACCES || errno == EPERM)
                        return cap_fail(err, 0, "cannot open %s: not permitted: add the user to the kvm group", path);
                return cap_fail(err, errno, "cannot open %s", path);
        }
        int version = ioctl(fd, KVM_GET_API_VERSION, 0);
        if (version != KVM_API_VERSION)
                return cap_fail(err, 0, "%s: KVM API version %d, capsule needs %d", path, version, KVM_API_VERSION);
        for (size_t i = 0; i < ARRAY_SIZE(required_caps); i++)
                if (kvm_cap(fd, required_caps[i].cap) <= 0)
                        return cap_fail(err, 0, "%s lacks the required capability %s", path, required_caps[i].name);
        return steal_fd(&fd);
}

static bool module_loaded(const char *sys_module, const char *name)
{
        cleanup_free char *p = xasprintf("%s/%s", sys_module, name);
        struct stat st;
        return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

enum kvm_flavour kvm_flavour_at(const char *sys_module)
{
        if (module_loaded(sys_module, "kvm_pvm") && !module_loaded(sys_module, "kvm_intel") &&
            !module_loaded(sys_module, "kvm_amd"))
                return KVM_FLAVOUR_PVM;
        return KVM_FLAVOUR_HW;
}

enum kvm_flavour kvm_flavour(void)
{
        return kvm_flavour_at("/sys/module");
}
