/* The agent's requests (common/agent_proto.h), checked field by field: the host's frames are
 * parsed here and nowhere else, so what the rest of the agent sees is well-formed. */
#ifndef CAPSULE_AGENT_REQUEST_H
#define CAPSULE_AGENT_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "common/agent_proto.h"
#include "common/error.h"

#define AGENT_INIT "init"

enum agent_op { AGENT_OP_STDIO, AGENT_OP_CREATE, AGENT_OP_START, AGENT_OP_KILL, AGENT_OP_STATE, AGENT_OP_EXEC, AGENT_OP_WAIT, AGENT_OP_RESIZE,
               AGENT_OP_PAUSE, AGENT_OP_RESUME, AGENT_OP_PS, AGENT_OP_UPDATE, AGENT_OP_DELETE };

/* Where create's rootfs comes from ("rootfs"). */
enum agent_rootfs { AGENT_ROOTFS_FROM_VIRTIOFS, AGENT_ROOTFS_FROM_BLOCK, AGENT_ROOTFS_FROM_BLOCK_RO };

/* The strings are borrowed from the message the request was parsed from. */
struct agent_req {
        enum agent_op op;
        const char *id;      /* create; a member's in the others (optional), NULL: the first container */
        bool pod;            /* create (optional) */
        const char *member;  /* create (optional): a member's directory under AGENT_MEMBERS */
        bool force;          /* delete (optional) */
        const char *exec;    /* stdio, wait, resize: "init" or an exec id; exec: an exec id */
        const char *config;  /* create: config.json text */
        const char *process; /* exec: process.json text */
        const char *resources; /* update: LinuxResources text */
        bool tty;            /* create, exec */
        bool binds;          /* create (optional): mount the host's bind sources first */
        enum agent_rootfs rootfs; /* create (optional) */
        bool has_net;        /* create (optional): "net" was given, in net */
        struct agent_net net;
        int fd;              /* stdio: 0, 1 or 2 */
        int signal;          /* kill */
        bool all;            /* kill */
        unsigned short rows, cols; /* resize */
};

/* Fields an op does not use are ignored; every field it uses is required unless said optional
 * ("all", "binds", "net", "net.addresses6", "net.routes6", "rootfs"), and must have its type and
 * range. "net" is refused unless it has an address, each IPv4 address is a host's (not 0.0.0.0,
 * loopback, multicast or broadcast), each IPv6 one a host's global one (not ::, ::1, multicast,
 * IPv4-mapped or link-local) on a link with IPv6's MTU, each route's destination has no host
 * bits and each gateway is a host's (an IPv6 one may be link-local). */
int agent_req_parse(const json_t *msg, struct agent_req *req, cap_error_t *err);

/* The config.json the guest creates from the host's text: root.path is the rootfs the agent
 * mounted, process.terminal follows the stdio mode, and what only means something on the host
 * goes: the namespace paths (a new namespace instead; the network namespace is the guest's own,
 * where its NICs are), linux.cgroupsPath (the guest's default), and the hooks the host runs
 * (prestart, createRuntime, poststart, poststop). Returns 0 with *out allocated. */
int agent_config_rewrite(const char *text, const char *rootfs, bool tty, char **out, cap_error_t *err);
/* A member's: the same, except that an ipc, uts or pid namespace given by path is the pod's,
 * the one of pod_init (the first container's init, a guest pid). */
int agent_member_config_rewrite(const char *text, const char *rootfs, bool tty, pid_t pod_init, char **out, cap_error_t *err);

#endif
