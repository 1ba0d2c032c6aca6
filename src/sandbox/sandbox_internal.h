/* Shared between the sandbox's files; not part of its contract (sandbox.h). */
#ifndef CAPSULE_SANDBOX_INTERNAL_H
#define CAPSULE_SANDBOX_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/types.h>

#include <jansson.h>

#include "common/agent_proto.h"

#include "common/error.h"
#include "runtime/spec.h"

/* The state directory's sandbox files, next to state.json. */
#define SANDBOX_RECORD "sandbox.json"
#define SANDBOX_AGENT_SOCKET "agent.sock"
#define SANDBOX_CONSOLE_LOG "console.log"
#define SANDBOX_VMM_LOG "vmm.log" /* the VMM's and virtiofsd's own messages, after create */

#define SANDBOX_MIB (1024ull * 1024)
/* What the VMM and virtiofsd take from a container's memory limit besides the guest's RAM: the
 * host's cgroup, which bounds the whole VM, needs at least the guest's RAM and this. */
#define SANDBOX_VMM_OVERHEAD (32 * SANDBOX_MIB)

/* The VM for one container, resolved and checked at create before anything exists. */
struct sandbox_vm {
        char *kernel;
        char *initrd;
        int cpus;
        uint64_t memory; /* bytes */
        long long boot_timeout_ms;
        int rootfs_fd;        /* a block-device rootfs image (sandbox_rootfs_open()), -1: virtio-fs */
        bool rootfs_readonly; /* root.readonly: the VMM opens the image read-only */
};

/* sandbox_config.c: the kernel, initrd, size and rootfs from the annotations and the container's
 * limits; refuses a missing kernel or initrd, a rootfs image outside bundle, no KVM, and a PVM
 * host. vm is valid for sandbox_vm_free() even when this fails. */
int sandbox_vm_resolve(const struct spec *spec, const char *bundle, struct sandbox_vm *vm, cap_error_t *err);
/* The value of config.json's annotation key, or NULL. */
const char *sandbox_annotation(const struct spec *spec, const char *key);
void sandbox_vm_free(struct sandbox_vm *vm);
/* sandbox_rootfs.c: the disk image the annotation names inside bundle, opened O_PATH in *fd
 * (-1 without the annotation), or a refusal naming the annotation. */
#define SANDBOX_ROOTFS_BLOCK_ANNOTATION "capsule.vm.rootfs.block"
int sandbox_rootfs_open(const struct spec *spec, const char *bundle, int *fd, cap_error_t *err);
/* The limits for the host's cgroup, which bounds the whole VM: res without the devices rules and
 * with room for the VMM's own threads in the pids limit. */
void sandbox_host_resources(const struct spec_resources *res, struct spec_resources *host);

/* sandbox_binds.c: each bind mount with an absolute source gets the source GUEST_DIR/N in *out
 * (the config text for the agent; GUEST_DIR is AGENT_BINDS, or a member's under AGENT_MEMBERS);
 * *sources lists the host's sources by N, each after one character: 'r' for a read-only bind
 * ("ro" in its options), else 'w'. */
#define SANDBOX_BINDS "binds" /* in the state directory */
#define SANDBOX_BINDS_MAX 64
int sandbox_binds_plan(const char *text, const char *guest_dir, char **out, char ***sources, cap_error_t *err);
/* In the sandbox process, single-threaded: a mount namespace of its own in which each source is
 * bound onto DIR/N (DIR is created). */
int sandbox_binds_setup(const char *dir, char *const *sources, cap_error_t *err);
/* The same binds in the caller's mount namespace (a member's, under its pod's shared directory,
 * whose copies propagate: a read-only one is read-only before it is attached). */
int sandbox_binds_bind(const char *dir, char *const *sources, cap_error_t *err);

/* sandbox_pod.c: one VM per pod. A container's role from the CRI's annotations (containerd's
 * io.kubernetes.cri.*, CRI-O's): a pod's sandbox container, or a member naming its pod (*pod_id). */
struct sandbox_record;
enum sandbox_pod_role { SANDBOX_POD_NONE, SANDBOX_POD, SANDBOX_POD_MEMBER };
enum sandbox_pod_role sandbox_pod_role(const struct spec *spec, const char **pod_id);
/* The pod's totals that containerd puts on its sandbox container (the kubelet's pod-level
 * resources, LinuxPodSandboxConfig.resources), each 0 when unset or not a sandbox container. A
 * malformed, negative, overflowing or out-of-range value is refused naming its annotation. */
#define SANDBOX_POD_MEMORY_ANNOTATION "io.kubernetes.cri.sandbox-memory"
#define SANDBOX_POD_CPU_QUOTA_ANNOTATION "io.kubernetes.cri.sandbox-cpu-quota"
#define SANDBOX_POD_CPU_PERIOD_ANNOTATION "io.kubernetes.cri.sandbox-cpu-period"
struct sandbox_pod_size {
        uint64_t memory;                /* bytes */
        uint64_t cpu_quota, cpu_period; /* microseconds */
};
int sandbox_pod_size(const struct spec *spec, struct sandbox_pod_size *size, cap_error_t *err);
#define SANDBOX_MEMBERS "members" /* in the pod's state directory, its VM's AGENT_MEMBERS_TAG */
char *sandbox_pod_members_dir(const char *root, const char *pod_id);
/* The pod's create: members/ made a shared mount before its VM starts; delete unmounts it
 * (with every member's mounts) before the state directory goes. */
int sandbox_pod_share(const char *root, const char *id, cap_error_t *err);
int sandbox_pod_unshare(const char *root, const char *id, cap_error_t *err);
/* A member's create, before anything exists: the pod is a live capsule VM pod of this root
 * (*pod its record) and the member joins the network namespace the pod recorded, by path (none
 * when the pod gave none). */
int sandbox_member_check(const char *root, const struct spec *spec, const char *pod_id, struct sandbox_record *pod,
                         cap_error_t *err);
/* A member's directory under members/, new at each create: ID (at most 64 bytes of it, for
 * the reader) and a count of nanoseconds. The pod's guest may still cache the entries of a
 * deleted member of the same id (virtio-fs keeps them for a second): a new create under the
 * old name would start out on those, and their later revalidation would detach the guest's
 * mounts on them, the container's rootfs included. */
char *sandbox_member_dir_name(const char *id);
/* The member's rootfs and bind sources under the pod's members/NAME; undone by unmount. */
int sandbox_member_mount(const char *root, const char *pod_id, const char *name, const char *rootfs, char *const *bind_sources,
                         cap_error_t *err);
void sandbox_member_unmount(const char *root, const char *pod_id, const char *name);

/* sandbox_jail.c: the sandbox process's confinement once the VM has opened everything it
 * needs, while the process has a single thread: fresh namespaces, a root that shows only
 * agent_socket, no capabilities, no_new_privs (sandbox_seccomp_load() comes next). Its mount point is
 * DIR/SANDBOX_JAIL (created), DIR being the state directory. */
#define SANDBOX_JAIL "jail"
int sandbox_jail_enter(const char *dir, const char *agent_socket, cap_error_t *err);
/* The same for a host relay (an exec's, a pod member's), which holds no VM: it becomes the uid
 * that owns agent_socket (its VM's), in a root on DIR/SANDBOX_RELAY_JAIL that shows only that
 * socket; sandbox_seccomp_relay_load() comes next. */
#define SANDBOX_RELAY_JAIL "relay-jail"
int sandbox_relay_jail_enter(const char *dir, const char *agent_socket, cap_error_t *err);
/* The jailed process's uid and gid, its own: this base plus its pid. Pids are unique among live
 * processes and below 2^22 (the kernel's PID_MAX_LIMIT), so two sandboxes never share an id, and
 * no allocation is kept anywhere. 0x70000000 is above every range the conventions hand out
 * (login users up to 60000, /etc/subuid up to login.defs's SUB_UID_MAX 600100000, systemd's
 * container ranges up to 0x6FFFFFFF) and below systemd's foreign range at 0x7FFE0000: no host
 * user owns such an id. */
#define SANDBOX_ID_BASE 0x70000000u
#define SANDBOX_ID_PIDS (1u << 22)
_Static_assert(SANDBOX_ID_BASE + SANDBOX_ID_PIDS <= 0x7FFE0000u, "the sandbox ids reach systemd's foreign range");
/* sandbox_seccomp.c: the allow-list of the sandbox's threads, synchronised to every thread; a
 * syscall outside it writes one line to stderr and kills the process with SIGSYS.
 * sandbox_seccomp_prepare() builds it ahead on a thread of its own: libseccomp's rule database
 * takes most of a millisecond, which is then spent while the VM is built rather than before its
 * vCPUs start. sandbox_seccomp_load() takes that (joined) or, with f NULL or not started,
 * builds it there. */
struct sandbox_filter {
        pthread_t thread;
        bool started;
        void *ctx; /* libseccomp's scmp_filter_ctx, built */
        int rc;    /* the build's 0 or -errno */
};
void sandbox_seccomp_prepare(struct sandbox_filter *f);
int sandbox_seccomp_load(struct sandbox_filter *f, cap_error_t *err);
#define SANDBOX_SECCOMP_DEATH "the VMM was killed by its seccomp filter "
/* The host relay's allow-list (its fds, Unix sockets, its terminal), for one thread. */
int sandbox_seccomp_relay_load(cap_error_t *err);
#define SANDBOX_SECCOMP_RELAY_DEATH "the relay was killed by its seccomp filter "
/* What the sandbox process writes in vmm.log when the guest died (a reset, a panic or a triple
 * fault), so that an agent call cut off by it can say why. */
#define SANDBOX_GUEST_DEATH "the VM ended: "
/* How long an agent call whose connection closed waits for the VMM to end and say why: its
 * teardown after a guest's death takes milliseconds. */
#define SANDBOX_DEATH_WAIT_MS 5000
/* The rest of the line of the container's vmm.log that starts with SANDBOX_LOG_PREFIX and marker,
 * from marker on, or NULL. The sandbox process writes those lines to its stderr itself: a log
 * file given to capsule (podman's --log) takes its log_*() messages instead. */
#define SANDBOX_LOG_PREFIX "capsule: "
char *sandbox_vmm_log_line(const char *root, const char *id, const char *marker);
/* sandbox_net.c: the network namespace config.json joins by path (podman, CNI or containerd
 * made it) reaches the guest: the VM's tap SANDBOX_TAP is created in it and tied to its
 * interface by tc filters, and the guest's NIC gets the interface's MAC, MTU, IPv4 and global
 * IPv6 addresses and routes. Without such a namespace, or with no usable interface in it (an
 * Ethernet one with an address; the default route's, when there is one), the guest has lo only. */
#define SANDBOX_TAP "capsule-tap0"
struct sandbox_net {
        int netns_fd; /* -1: no NIC */
        char ifname[IFNAMSIZ];
        int ifindex;
        struct agent_net nic;
        unsigned long long netns_dev, netns_ino; /* the namespace's identity */
        bool taken; /* a VM container's tap is there: another VM has the interface */
        int tap_fd; /* the VM's tap, made by plan() (vm_tap_claim()): -1 without a NIC */
        int lock_fd; /* sandbox_netns_lock()'s, from plan() until the record names the VMM */
        char *lock_path;
};
/* At create, before anything exists: refuses a path that is not a network namespace, and a
 * namespace whose interface another live VM container took (naming it when it is one of
 * root's), each naming linux.namespaces. A namespace by path stays locked (net->lock_fd) until
 * sandbox_net_unlock(): the caller unlocks once the record names its VMM. Then it makes the
 * VM's tap there (net->tap_fd): the kernel refuses a second tap of that name, so a create
 * from another --root, which this lock does not see, is refused as well. */
int sandbox_net_plan(const struct spec *spec, const char *root, struct sandbox_net *net, cap_error_t *err);
/* The same in the caller's own network namespace (net->netns_fd is left alone); a namespace
 * with a VM container's tap is only marked taken. */
int sandbox_net_gather(struct sandbox_net *net, cap_error_t *err);
/* "net" of the agent's create request. */
json_t *sandbox_net_json(const struct sandbox_net *net);
/* Once the VMM has made the tap: its MTU, and the ingress qdiscs and filters both ways. */
int sandbox_net_link(struct sandbox_net *net, cap_error_t *err);
/* After the VM: the interface's ingress qdisc (and so its filter) goes once the tap has gone
 * with the VMM (the tap's qdisc goes with the tap). The sandbox process cannot do it, jailed
 * without the privileges: a failed create does it, and delete, with forget(). */
void sandbox_net_release(struct sandbox_net *net);
struct sandbox_record;
/* delete: release what spec's namespace and rec's net recorded, if that namespace is still the
 * one create linked (by identity: a /proc/PID/ns path may name another one by now). */
void sandbox_net_forget(const struct spec *spec, const struct sandbox_record *rec);
void sandbox_net_unlock(struct sandbox_net *net);
void sandbox_net_free(struct sandbox_net *net);

/* sandbox_tc.c, run inside the namespace: the tap's MTU, both qdiscs and filters (undone when
 * one fails); and the interface's qdisc taken away again once the tap is gone (if it stays,
 * another VM container has it, and the qdisc is that one's). */
int sandbox_tc_link(struct sandbox_net *net, cap_error_t *err);
int sandbox_tc_unlink(struct sandbox_net *net, cap_error_t *err);

/* sandbox_netlink.c: rtnetlink requests for sandbox_net.c and sandbox_tc.c. */
struct nl_msg {
        union {
                struct nlmsghdr h;
                char buf[1024];
        };
};
int nl_open(cap_error_t *err);
/* A request of type with its fixed header (ifinfomsg, tcmsg, ...); returns &m->h. */
struct nlmsghdr *nl_msg_init(struct nl_msg *m, unsigned short type, unsigned short flags, const void *hdr, size_t len);
struct rtattr *nl_put(struct nl_msg *m, unsigned short type, const void *data, size_t len);
struct rtattr *nl_nest(struct nl_msg *m, unsigned short type);
void nl_nest_end(struct nl_msg *m, struct rtattr *nest);
/* Send with an ack requested and wait for it: < 0 with err, the kernel's -errno when it refused. */
int nl_call(int fd, struct nl_msg *m, cap_error_t *err);
/* A dump of type for family, fn called on each entry (fn < 0: too many, an error). */
int nl_dump(int fd, unsigned short type, unsigned char family, int (*fn)(const struct nlmsghdr *, void *), void *ctx,
            cap_error_t *err);
/* tb[0..max] = the attributes of that type in rta/len, NULL when absent. */
void nl_attrs(const struct rtattr *rta, int len, const struct rtattr **tb, unsigned short max);

/* sandbox_record.c: sandbox.json, the VMM's pid and start time, the agent's socket, the guest's
 * RAM and the network's identity; a pod's network namespace, or a member's pod. */
struct sandbox_record {
        pid_t pid;
        unsigned long long start_time;
        char *agent_socket;
        int net_ifindex; /* 0: no NIC; else the linked interface, in the namespace of this identity: */
        unsigned long long netns_dev, netns_ino;
        uint64_t memory; /* the guest's RAM in bytes; 0 in a record from before capsule wrote it */
        /* A pod's sandbox container, whose VM members may join from this network namespace (0, 0:
         * none by path). */
        bool pod;
        unsigned long long pod_netns_dev, pod_netns_ino;
        /* A member: its pod's id; pid is then the member's host process, agent_socket the pod's;
         * member_dir its directory under the pod's members/ (sandbox_member_dir_name()). */
        char *member_of, *member_dir;
};
int sandbox_record_save(const char *root, const char *id, const struct sandbox_record *r, cap_error_t *err);
int sandbox_record_load(const char *root, const char *id, struct sandbox_record *r, cap_error_t *err);
void sandbox_record_free(struct sandbox_record *r);
bool sandbox_vmm_alive(const struct sandbox_record *r);
/* The id of root's VM container whose live VMM took the interface of the network namespace
 * dev/ino, or NULL. */
char *sandbox_netns_holder(const char *root, unsigned long long dev, unsigned long long ino);
/* Makes the check of the network namespace dev/ino and the claim of its interface one step: two
 * creates racing for one namespace take turns, from before sandbox_net_plan() looks until the
 * record names the VMM (a killed holder's flock goes with it). The lock is the file *path under
 * root, which no container reaches. Returns its fd; unlock() unlinks and closes it (a no-op
 * when *path is NULL). */
#define SANDBOX_NETNS_LOCK_WAIT_MS 60000
int sandbox_netns_lock(const char *root, unsigned long long dev, unsigned long long ino, char **path, cap_error_t *err);
void sandbox_netns_unlock(int *fd, char **path);
/* r's process (a VMM, or a member's relay) is in the network namespace dev/ino; pid only. */
bool sandbox_vmm_in_netns(const struct sandbox_record *r, unsigned long long dev, unsigned long long ino);
/* The id of root's VM container whose live VMM (its jail) is in the network namespace dev/ino:
 * what podman names for `--network container:ID` or a pod's infra, or NULL. */
char *sandbox_vmm_netns_holder(const char *root, unsigned long long dev, unsigned long long ino);

/* sandbox_phases.c: "phases" in the state directory, one line "NAME VALUE" per step, appended as
 * it happens. The host's steps are CLOCK_MONOTONIC nanoseconds: "create" (capsule create began),
 * "vmm" (the sandbox process began), "guest" (the vCPUs were started), "agent" (the agent took
 * the first connection), "created" (it created the container), "started" (its start answered).
 * The guest's own, CLOCK_BOOTTIME microseconds in the guest as its agent reported them:
 * "guest_boot_us" (the agent began: the kernel's boot) and "guest_ready_us" (it listened). */
#define SANDBOX_PHASES "phases"
long long sandbox_phase_now(void);
/* The file open for appends (-1: it cannot be; the marks are then lost, never the container): the
 * sandbox process opens it before its jail hides the state directory. */
int sandbox_phases_open(const char *dir);
void sandbox_phase_write(int fd, const char *name, long long value);
/* Open, write one, close. */
void sandbox_phase_mark(const char *dir, const char *name, long long value);

/* agent.c: connections to the agent through the VMM's hybrid vsock socket. */
/* A connection's replies wait AGENT_REPLY_TIMEOUT_S at most, until this lifts the bound (for a
 * stream or a "wait"). */
void agent_no_timeout(int fd);
/* Connect; until deadline_ms (now_ms()), a refused connection (the agent does not listen yet)
 * is retried, unless stop_fd (>= 0) becomes readable: the VM has ended. */
int agent_connect(const char *socket, long long deadline_ms, int stop_fd, cap_error_t *err);
/* Send req on a fresh connection's fd and read its reply; an {"ok":false} reply is an error
 * carrying the agent's text. *reply may be NULL when the caller needs nothing from it. -2 (with
 * err) when no reply came: the guest closed the connection (as one powering off does). */
int agent_request(int fd, json_t *req, json_t **reply, cap_error_t *err);
/* Connect (no retry), request, close: the one-shot operations (start, kill, state). -2 (with
 * err) when the agent did not answer: nothing listens, or no reply came. */
int agent_call(const char *socket, json_t *req, json_t **reply, cap_error_t *err);
/* Open the three "stdio" connections of exec (0: host->guest, 1 and 2: guest->host), or with tty
 * the one that carries the terminal both ways (conns[0] == conns[1], conns[2] -1). */
int agent_open_stdio(const char *socket, const char *exec, bool tty, int conns[3], long long deadline_ms, int stop_fd,
                     cap_error_t *err);
/* Close what agent_open_stdio() opened (each fd once); for the cleanup attribute. */
void agent_stdio_close(int (*conns)[3]);
#define cleanup_stdio __attribute__((cleanup(agent_stdio_close)))

/* relay.c: a process's stdio between host fds and its agent connections. */
struct stdio_relay {
        int host[3];     /* our stdin, stdout, stderr */
        int conn[3];     /* agent_open_stdio()'s connections */
        int wait_conn;   /* the "wait" request's connection: its reply carries the status */
        int stop_fd;     /* readable once the VM has ended; -1: none */
        /* A terminal: a signalfd for SIGWINCH (-1: none), on which host[0]'s window size goes to
         * the agent as a "resize" of exec. */
        int winch_fd;
        const char *agent_socket, *exec;
};
/* A console socket's terminal: the socket gets the master of a new pty, whose slave (returned)
 * is relayed raw to the guest's terminal, where the line discipline is. With ctty the slave
 * becomes our controlling terminal (call it as a session leader without one), so that a resize
 * of the master reaches us as SIGWINCH. rows or cols 0: the pty's default size. */
int console_pty_open(int socket_fd, unsigned short rows, unsigned short cols, bool ctty, cap_error_t *err);
/* Relay until the status has come and both output streams ended (or the VM ended). Returns 1
 * with *status, 0 when the VM ended without one, -1 with err. */
int stdio_relay_run(struct stdio_relay *r, int *status, cap_error_t *err);

#endif
