/* A micro-VM: KVM VM fd, guest memory, in-kernel irqchip (and PIT for Linux), devices,
 * one thread per vCPU and one event-loop thread. */
#ifndef CAPSULE_VMM_VM_H
#define CAPSULE_VMM_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

enum vm_console { VM_CONSOLE_STDIO, VM_CONSOLE_FILE, VM_CONSOLE_NONE };

/* Who decompresses a bzImage's payload (the compressed vmlinux). */
enum vm_bzimage_decompress {
        VM_BZIMAGE_DECOMPRESS_GUEST, /* the kernel's own decompressor, entered through the 64-bit boot protocol */
        VM_BZIMAGE_DECOMPRESS_HOST,  /* capsule, which then boots the vmlinux inside (PVH entry when it has one) */
};

/* Virtio devices (src/vmm/virtio/). Every string and number here comes from the user's
 * settings; the VMM's errors name the setting ("disk[1]: path"), never a CLI flag. */
enum vm_virtio_transport { VM_VIRTIO_PCI, VM_VIRTIO_MMIO };

struct vm_disk {
        char *path;
        bool readonly;
        bool direct;   /* O_DIRECT */
        char *serial;  /* NULL: none; at most 20 bytes (VIRTIO_BLK_ID_BYTES) */
        int queues;    /* num_queues, 1 or more */
};

struct vm_console_port {
        char *name;    /* the port's name in the guest (/sys/class/virtio-ports/vportNpM/name) */
        char *socket;  /* the host's Unix socket, which capsule listens on */
};

struct vm_share {
        char *dir;     /* shared directory (capsule starts virtiofsd on it), or NULL with socket */
        char *tag;     /* the guest's mount tag */
        char *socket;  /* an already running vhost-user back-end's socket, or NULL */
};

/* virtio-net (src/vmm/virtio/net*.c). */
enum vm_net_backend {
        VM_NET_TAP,  /* a tap device: capsule's own (removed at exit) or an existing one by name */
        VM_NET_USER, /* rootless user-mode networking: no root, no tap */
};

enum vm_net_user_impl {
        VM_NET_USER_DEFAULT, /* whichever the README's measurement chose */
        VM_NET_USER_PASST,   /* a passt process on a socketpair (QEMU's -netdev stream framing) */
        VM_NET_USER_SLIRP,   /* libslirp inside capsule */
};

struct vm_net_forward {
        bool udp;            /* hostfwd=udp:..., else tcp */
        char *host_addr;     /* NULL: every host address (hostfwd=tcp::PORT-:PORT) */
        uint16_t host_port;
        uint16_t guest_port;
};

struct vm_net {
        enum vm_net_backend backend;
        char *ifname;        /* tap: NULL: capsule creates one and it disappears when capsule exits */
        char *netns;         /* tap: a network namespace's path (/run/netns/NAME, /proc/PID/ns/net) to create the tap in */
        bool tap_fd_set;     /* tap: the caller made the tap (vm_tap_claim()); the VM uses a copy of tap_fd */
        int tap_fd;
        uint8_t mac[6];
        bool mac_set;        /* else a locally administered MAC derived from capsule's pid and the NIC's index */
        int queues;          /* queue pairs, 1 or more (tap: one tap queue per pair) */
        enum vm_net_user_impl user_impl;
        struct vm_net_forward *forwards;
        int n_forwards;
};

struct vm_config {
        char *kernel;  /* vmlinux (ELF, 64-bit or PVH entry) or bzImage */
        char *initrd;  /* NULL: none */
        char *cmdline;
        char *payload; /* test payload ELF started in 64-bit ring 3 (instead of a kernel) */
        int cpus;
        uint64_t memory; /* bytes */
        bool hugepages;
        enum vm_console console;
        char *console_path; /* for VM_CONSOLE_FILE */
        enum vm_bzimage_decompress bzimage_decompress;
        bool debug_exit; /* the debug exit port 0xf4 (test payloads); off, so no guest sets capsule's status */
        enum vm_virtio_transport virtio_transport;
        struct vm_disk *disks;
        int n_disks;
        bool console_hvc;      /* the guest console on virtio-console's hvc0 */
        struct vm_console_port *console_ports;
        int n_console_ports;
        bool rng;
        uint64_t rng_bytes_per_sec; /* 0: unlimited */
        uint32_t vsock_cid;    /* 0: no vsock device */
        char *vsock_socket;
        struct vm_share *shares;
        int n_shares;
        struct vm_net *nets;
        int n_nets;
        bool balloon;          /* a virtio-balloon device */
        bool balloon_free_page_reporting;
        bool balloon_deflate_on_oom;
        char *api_socket;      /* the control socket (line-delimited JSON), NULL: none */
        /* Called on vm_run()'s thread once every file, device and helper process the VM needs is
         * open and before any thread of the VM starts (the caller confines itself here:
         * namespaces, privileges, seccomp); a failure stops the VM before it runs. NULL: none. */
        int (*ready)(void *arg, cap_error_t *err);
        void *ready_arg;
        /* Called on vm_run()'s thread once every vCPU thread has started (the guest's first
         * instruction is next), NULL: none. The sandbox records when its guest began. */
        void (*started)(void *arg);
        void *started_arg;
};

/* Why the VM stopped. The process exit status for each is documented in the README. */
enum vm_exit_reason {
        VM_EXIT_POWEROFF,     /* ACPI S5: status 0 */
        VM_EXIT_REBOOT,       /* i8042 reset or ACPI reset register: status 80 */
        VM_EXIT_PANIC,        /* pvpanic: status 81 */
        VM_EXIT_TRIPLE_FAULT, /* KVM_EXIT_SHUTDOWN: status 82 */
        VM_EXIT_DEBUG_PORT,   /* the guest wrote a byte to the debug exit port: that byte */
        VM_EXIT_SIGNAL,       /* SIGINT/SIGTERM: 128 + signal */
        VM_EXIT_HARD_STOP,    /* the control channel's stop: no poweroff within its timeout: status 83 */
        VM_EXIT_ERROR,        /* a VMM failure (emulation failure, internal error): status 1 */
};

#define VM_STATUS_REBOOT 80
#define VM_STATUS_PANIC 81
#define VM_STATUS_TRIPLE_FAULT 82
#define VM_STATUS_HARD_STOP 83

/* Boot the VM and run it to the end. *status is the process exit status for the reason. */
int vm_run(const struct vm_config *cfg, int *status, cap_error_t *err);

void vm_config_free(struct vm_config *cfg);

/* A new tap named name in the caller's network namespace, up, as vm_net.tap_fd wants it. The
 * kernel refuses it when any interface has that name already (errnum EBUSY), so making it is an
 * atomic claim on the name. */
int vm_tap_claim(const char *name, cap_error_t *err);

#endif
