/* The guest system capsule-guest runs as pid 1: what it mounts, and how it ends. */
#ifndef CAPSULE_AGENT_SYSTEM_H
#define CAPSULE_AGENT_SYSTEM_H

#include "agent/request.h"
#include "common/agent_proto.h"
#include "common/error.h"

#define AGENT_RUN "/run/capsule"
#define AGENT_ROOTFS AGENT_RUN "/rootfs"
#define AGENT_BUNDLE AGENT_RUN "/bundle"
#define AGENT_STATE AGENT_RUN "/state"

/* Move from the initramfs to a tmpfs root (pivot_root cannot leave the initramfs, and the
 * runtime pivots into the container's rootfs), mount /proc, /sys, /dev and the rest, make
 * /dev/console our stdio and bring lo up. */
int system_setup(cap_error_t *err);
/* The container's rootfs at AGENT_ROOTFS, from where create says: the virtio-fs tag
 * AGENT_ROOTFS_TAG or the disk AGENT_ROOTFS_DEVICE (read-only with block-ro). Once only: a
 * later call does nothing. */
int system_mount_rootfs(enum agent_rootfs from, cap_error_t *err);
/* The host's bind mount sources (virtio-fs tag AGENT_BINDS_TAG) at AGENT_BINDS. */
int system_mount_binds(cap_error_t *err);
/* The pod's members' rootfs and bind sources (virtio-fs tag AGENT_MEMBERS_TAG) at AGENT_MEMBERS. */
int system_mount_members(cap_error_t *err);
/* The guest's CLOCK_BOOTTIME in µs: how long since its kernel's clock started. */
long long system_uptime_us(void);
/* net.c: the guest's NIC whose MAC is n->mac (the VMM gave it the host interface's) gets
 * n's MTU and addresses, comes up, and takes n's routes in their order. The container shares
 * this, the guest's own network namespace. */
int system_net_setup(const struct agent_net *n, cap_error_t *err);
/* Sync and power the VM off. */
__attribute__((noreturn)) void system_poweroff(void);
/* One line on the console, then power off: the agent cannot go on. */
__attribute__((noreturn, format(printf, 1, 2))) void system_fatal(const char *fmt, ...);

#endif
