/* pid 1's system setup and shutdown: see system.h. */
#include "agent/system.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/agent_proto.h"
#include "common/util.h"

long long system_uptime_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int mount_at(const char *source, const char *target, const char *type, unsigned long flags, const char *data,
                    cap_error_t *err)
{
        if (mkdir(target, 0755) < 0 && errno != EEXIST)
                return cap_fail(err, errno, "mkdir `%s`", target);
        if (mount(source, target, type, flags, data) < 0)
                return cap_fail(err, errno, "mount %s on `%s`", type, target);
        return 0;
}

/* The kernel's initramfs is the namespace's root mount, which pivot_root cannot move: put a
 * tmpfs over it and chroot there, so the container's pivot_root has a parent mount. */
static int root_to_tmpfs(cap_error_t *err)
{
        if (mount_at("tmpfs", "/newroot", "tmpfs", MS_NOSUID, "mode=0755", err) < 0)
                return -1;
        if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
                return cap_fail(err, errno, "move the root to a tmpfs");
        return 0;
}

static int console_stdio(cap_error_t *err)
{
        int fd = open("/dev/console", O_RDWR | O_NOCTTY);
        if (fd < 0)
                return cap_fail(err, errno, "open /dev/console");
        for (int i = 0; i < 3; i++)
                if (fd != i && dup2(fd, i) < 0)
                        return cap_fail(err, errno, "dup2 /dev/console");
        if (fd > 2)
                close(fd);
        return 0;
}

static int loopback_up(cap_error_t *err)
{
        cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr = { 0 };
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
        if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
                return cap_fail(err, errno, "lo: get flags");
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
                return cap_fail(err, errno, "lo: up");
        return 0;
}

int system_setup(cap_error_t *err)
{
        umask(022);
        if (root_to_tmpfs(err) < 0)
                return -1;
        if (mount_at("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", err) < 0 || console_stdio(err) < 0)
                return -1;
        static const struct {
                const char *source, *target, *type;
                unsigned long flags;
                const char *data;
        } mounts[] = {
                { "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
                { "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
                { "cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
                { "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5" },
                { "shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" },
                { "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755" },
                { "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(mounts); i++)
                if (mount_at(mounts[i].source, mounts[i].target, mounts[i].type, mounts[i].flags, mounts[i].data, err) < 0)
                        return -1;
        if (mkdir_p(AGENT_BUNDLE, 0700, err) < 0 || mkdir_p(AGENT_STATE, 0700, err) < 0)
                return -1;
        return loopback_up(err);
}

/* The block rootfs, once mounted: power-off checkpoints its journal first. */
static bool rootfs_block_mounted;

int system_mount_rootfs(enum agent_rootfs from, cap_error_t *err)
{
        static bool mounted;
        if (mounted)
                return 0;
        if (from == AGENT_ROOTFS_FROM_VIRTIOFS) {
                if (mount_at(AGENT_ROOTFS_TAG, AGENT_ROOTFS, "virtiofs", 0, NULL, err) < 0)
                        return cap_error_prefix(err, "the container's rootfs (virtio-fs tag %s)", AGENT_ROOTFS_TAG);
        } else {
                unsigned long flags = from == AGENT_ROOTFS_FROM_BLOCK_RO ? MS_RDONLY : 0;
                if (mount_at(AGENT_ROOTFS_DEVICE, AGENT_ROOTFS, AGENT_ROOTFS_FSTYPE, flags, NULL, err) < 0)
                        return cap_error_prefix(err, "the container's rootfs (the disk %s, %s)", AGENT_ROOTFS_DEVICE,
                                                AGENT_ROOTFS_FSTYPE);
                rootfs_block_mounted = true;
        }
        mounted = true;
        return 0;
}

int system_mount_binds(cap_error_t *err)
{
        if (mount_at(AGENT_BINDS_TAG, AGENT_BINDS, "virtiofs", MS_NOSUID | MS_NODEV, NULL, err) < 0)
                return cap_error_prefix(err, "the host's bind mount sources (virtio-fs tag %s)", AGENT_BINDS_TAG);
        return 0;
}

int system_mount_members(cap_error_t *err)
{
        if (mount_at(AGENT_MEMBERS_TAG, AGENT_MEMBERS, "virtiofs", MS_NOSUID | MS_NODEV, NULL, err) < 0)
                return cap_error_prefix(err, "the pod's members (virtio-fs tag %s)", AGENT_MEMBERS_TAG);
        return 0;
}

void system_poweroff(void)
{
        sync();
        /* Read-only, ext4 writes its journal out to where the data belongs and marks itself
         * clean: the host reads the image without a journal replay. It fails (and the next mount
         * replays the journal) only while something still writes, which nothing should by now. */
        if (rootfs_block_mounted)
                mount(NULL, AGENT_ROOTFS, NULL, MS_REMOUNT | MS_RDONLY, NULL);
        reboot(RB_POWER_OFF);
        /* Only a kernel without power-off support gets here: halting leaves the VMM to notice. */
        for (;;)
                pause();
}

void system_fatal(const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
        dprintf(fd >= 0 ? fd : STDERR_FILENO, "capsule-guest: %s\n", msg);
        system_poweroff();
}
