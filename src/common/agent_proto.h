/* The protocol between capsule on the host (src/sandbox/) and capsule-guest, the agent that is
 * pid 1 of a sandbox VM (src/agent/). Both sides build from this one header.
 *
 * Transport: vsock streams. The agent listens on guest port AGENT_PORT. The host reaches it through
 * the VMM's hybrid vsock socket: connect to the Unix socket, write "CONNECT 1024\n", read
 * "OK <hostport>\n". Every connection starts with one request frame (frame.h: u32 LE length + a
 * JSON object with "op"); the agent answers with one reply frame {"ok":true,...} or
 * {"ok":false,"error":"one line"}. What a connection carries after that depends on the op:
 *
 *   {"op":"create","id":ID,"config":"<config.json text>","stdio":"pipes"|"tty","binds":bool,
 *    "rootfs":"virtiofs"|"block"|"block-ro"}
 *        The agent mounts the container's rootfs ("rootfs" below), writes the text as its
 *        bundle's config.json, with root.path replaced by that rootfs, and creates the container
 *        with the runtime library (the same parser and the same checks as on the host). The init's
 *        stdio are the streams of the next "stdio" connections (exec "init"). Reply once the
 *        container is created: {"ok":true,"pid":GUEST_PID,"boot_us":B,"ready_us":R}, B and R the
 *        guest's CLOCK_BOOTTIME (µs) when the agent began and when it listened (the host records
 *        them in its phases file). What only means something on the
 *        host is dropped from the config: namespace paths (a new namespace instead; a network
 *        namespace given by path becomes the guest's own, where its NICs are), linux.cgroupsPath
 *        and the hooks the host runs (prestart, createRuntime, poststart, poststop);
 *        process.terminal follows "stdio". With "binds" (optional, default false) the agent first
 *        mounts the virtio-fs tag AGENT_BINDS_TAG at AGENT_BINDS: the host has rewritten each
 *        bind mount's source to AGENT_BINDS/N. One container per VM: a second create is refused.
 *        With "net" (optional) the agent first sets up the guest's one NIC as the host's network
 *        namespace has its interface (struct agent_net), which the container then shares:
 *          "net":{"mac":"xx:xx:xx:xx:xx:xx","mtu":N,
 *                 "addresses":[{"address":"A.B.C.D","prefix":P},...],
 *                 "routes":[{"destination":"A.B.C.D","prefix":P,"gateway":"A.B.C.D"},...],
 *                 "addresses6":[{"address":"IPV6","prefix":P},...],
 *                 "routes6":[{"destination":"IPV6","prefix":P,"gateway":"IPV6"},...]}
 *        A route without "gateway" is on the link; routes are added in their order. The IPv6
 *        arrays are optional (none when missing); at least one address of either family. An
 *        IPv6 gateway may be link-local (a router's fe80:: address), an IPv6 address may not:
 *        the guest makes its own from the MAC, as the interface had. The guest's NIC runs no
 *        duplicate address detection and takes no router advertisement (no SLAAC address, no
 *        route of its own): it has exactly what the host's interface had.
 *        "rootfs" (optional, default "virtiofs") says where the container's rootfs comes from:
 *        "virtiofs" the tag AGENT_ROOTFS_TAG, "block" the VM's one disk AGENT_ROOTFS_DEVICE (an
 *        ext4 image the host's bundle ships), "block-ro" that disk mounted read-only (the host
 *        gave it read-only: root.readonly).
 *        "pod":true (optional) says the container is a pod's sandbox (pause) container: members
 *        may join its VM. "member":"DIR" (only in such a VM, once its container exists) creates
 *        a member instead: a container of its own id beside the first, its rootfs
 *        AGENT_MEMBERS/DIR/rootfs (DIR: one name, as an id is; the host makes it new at each
 *        create), its init the process named ID (its stdio and wait name ID as "exec"), sharing
 *        the guest's network; ipc, uts and pid namespaces it gives by path are the first
 *        container's. "net" and "rootfs" are refused for a member.
 *   start, kill, state, exec, pause, resume, ps, update and delete take an optional "id": a
 *        member's (absent: the first container).
 *   {"op":"delete","id":MEMBER_ID}      a stopped member is deleted in the guest (or killed first
 *                                        with "force":true); its id may be used again.
 *   {"op":"stdio","exec":"init"|EXEC_ID,"fd":0|1|2}
 *        Sent BEFORE the create/exec that uses it. After the reply, the connection is a raw byte
 *        stream: fd 0 host->guest, fd 1 and 2 guest->host; with "stdio":"tty" only fd 0 is used, and
 *        carries the terminal both ways. A shutdown of the write side is end of file.
 *   {"op":"start"}                       runs the container's process (container_start).
 *   {"op":"kill","signal":N,"all":bool}  signals the init (or, with all, every process).
 *   {"op":"state"}                       reply {"ok":true,"status":"created|running|paused|stopped","pid":N}
 *                                        (before a create: {"ok":false,"error":"state: no container"})
 *   {"op":"exec","exec":EXEC_ID,"process":"<process.json text>","stdio":"pipes"|"tty"}
 *        reply {"ok":true,"pid":GUEST_PID} once it runs.
 *   {"op":"wait","exec":"init"|EXEC_ID}
 *        the reply comes when that process has ended: {"ok":true,"status":N}, N as a shell reports it
 *        (exit code, or 128+signal). Refused for an id no create/exec has named yet. For "init",
 *        once its status went to a waiter, the agent shuts down the write side of init's streams
 *        and of the wait connections and powers the VM off when the host has closed them all (it
 *        has read everything), or after 5 s. Without a wait for "init" the VM stays up.
 *   {"op":"resize","exec":"init"|EXEC_ID,"rows":R,"cols":C}  a tty's window size.
 *   {"op":"pause"}, {"op":"resume"}     freeze or thaw the container's cgroup in the guest
 *                                        (container_pause; a created one too, as runc). The VM keeps
 *                                        running: meanwhile state answers "paused", and kill and
 *                                        wait work; start waits for the resume.
 *   {"op":"ps"}                          reply {"ok":true,"pids":[GUEST_PID,...]}: the processes in
 *                                        the container's cgroup.
 *   {"op":"update","resources":"<LinuxResources JSON text>"}
 *        the container's cgroup in the guest takes these limits (spec_parse_resources, then
 *        container_update: the checks and the code of `capsule update`).
 *
 * The host never trusts a reply's numbers beyond using them as the guest-side values they are:
 * a guest pid is never a host pid. */
#ifndef CAPSULE_COMMON_AGENT_PROTO_H
#define CAPSULE_COMMON_AGENT_PROTO_H

#include <netinet/in.h>
#include <stdint.h>

#define AGENT_PORT 1024
#define AGENT_ROOTFS_TAG "capsule-rootfs"
/* create's "rootfs" values, and the disk the block ones name: a sandbox VM has no other. */
#define AGENT_ROOTFS_VIRTIOFS "virtiofs"
#define AGENT_ROOTFS_BLOCK "block"
#define AGENT_ROOTFS_BLOCK_RO "block-ro"
#define AGENT_ROOTFS_DEVICE "/dev/vda"
#define AGENT_ROOTFS_FSTYPE "ext4"
/* The host's bind mount sources, one entry per mount: with "binds":true in create, the agent
 * mounts this tag at AGENT_BINDS, and the config's sources name AGENT_BINDS/N. */
#define AGENT_BINDS_TAG "capsule-binds"
#define AGENT_BINDS "/run/capsule/binds"
/* A pod's VM (its first container created with "pod":true) takes members: the host shares each
 * member's rootfs as AGENT_MEMBERS/DIR/rootfs and its bind sources as AGENT_MEMBERS/DIR/binds/N
 * through this tag, which the agent mounts at the first member's create. */
#define AGENT_MEMBERS_TAG "capsule-members"
#define AGENT_MEMBERS "/run/capsule/members"
#define AGENT_MEMBERS_MAX 16
/* "net" in create: bounded, and checked again by the agent (request.c). */
#define AGENT_NET_ADDRS_MAX 8
#define AGENT_NET_ROUTES_MAX 16
#define AGENT_NET_MTU_MIN 68 /* IPv4's minimum */
#define AGENT_NET_MTU_MAX 65535
struct agent_net_addr {
        struct in_addr addr;
        unsigned int prefix; /* 1 to 32 */
};
struct agent_net_route {
        struct in_addr dst;     /* its host bits zero */
        unsigned int prefix;    /* 0 (default route) to 32 */
        struct in_addr gateway; /* 0.0.0.0: on the link */
};
/* IPv6 needs this MTU: the kernel turns IPv6 off on a link with less. */
#define AGENT_NET_MTU_IPV6_MIN 1280
struct agent_net_addr6 {
        struct in6_addr addr;
        unsigned int prefix; /* 1 to 128 */
};
struct agent_net_route6 {
        struct in6_addr dst;     /* its host bits zero */
        unsigned int prefix;     /* 0 (default route) to 128 */
        struct in6_addr gateway; /* ::, on the link */
};
struct agent_net {
        uint8_t mac[6];
        unsigned int mtu;
        int n_addrs; /* n_addrs + n_addrs6 at least 1 */
        struct agent_net_addr addrs[AGENT_NET_ADDRS_MAX];
        int n_routes;
        struct agent_net_route routes[AGENT_NET_ROUTES_MAX];
        int n_addrs6;
        struct agent_net_addr6 addrs6[AGENT_NET_ADDRS_MAX];
        int n_routes6;
        struct agent_net_route6 routes6[AGENT_NET_ROUTES_MAX];
};

/* The guest kernel's vsock CID for every sandbox VM (each VM has its own device). */
#define AGENT_GUEST_CID 3

#endif
