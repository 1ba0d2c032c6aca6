/* create in a VM: the state directory and the cgroup as for a plain container, then the sandbox
 * process. It is the VMM (vm_run() on its main thread) inside the container's cgroup, confined
 * once the VM is built, and the container's stdio: its relay thread keeps create's fds and relays
 * them over the agent's "stdio" connections. It has the agent create the container, reports to
 * `capsule create`, and exits with the container init's status. A pod's member (sandbox_pod.c)
 * gets a process that is that relay alone, talking to its pod's agent. */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/agent_proto.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup.h"
#include "runtime/hooks.h"
#include "sandbox/sandbox.h"
#include "vmm/vm.h"

#define SANDBOX_CMDLINE "console=ttyS0 reboot=k panic=-1 quiet"
/* After init's status, how long the agent has to flush its streams and power the VM off. */
#define SANDBOX_POWEROFF_WAIT_MS 30000
/* How long create waits for the sandbox process to say it no longer dies with create: it answers
 * at once, unless it is stopped. */
#define SANDBOX_FINISH_ANSWER_MS 10000
/* How long a member's create waits for its pod's agent to take the connection (it listens). */
#define SANDBOX_MEMBER_CONNECT_MS 30000

struct sandbox_launch {
        const struct container_opts *opts;
        const struct spec *spec;
        const char *config_text;
        char *const *bind_sources;
        const struct sandbox_vm *vm;
        struct sandbox_net *net;
        struct cgroup *cg;
        char *dir;
        char *agent_socket;
        int report_fd;
        int finished_fd; /* a socket: create writes a byte once it has finished (or dies), we answer */
        int null_fd;     /* /dev/null, opened outside the cgroup, whose device filter may deny it */
        pid_t creator;
        bool pod;                         /* a pod's sandbox container: its VM takes members */
        const struct sandbox_record *member_of; /* a member: its pod's record (no VM of its own) */
        const char *member_dir;                 /* and its directory under the pod's members/ */
};

/* The sandbox process: its main thread runs vm_run(); once the VM is built it confines the
 * process (sandbox_jail.c) and starts the relay thread, which talks to the agent and exits the
 * process with the container's status. */
struct sandbox_proc {
        const struct sandbox_launch *l;
        struct vm_config cfg;
        int stop_fd; /* eventfd, written when vm_run() returns */
        int status;
        cap_error_t err;
        int host[3], console, winch;
        int console_log; /* the guest console's log, read for a failed create's message */
        int phases;      /* sandbox_phases_open()'s */
        long long boot_deadline; /* now_ms(): the boot timeout counts from the sandbox's start */
        pthread_t relay;
        bool relay_started;
        pthread_barrier_t relay_armed; /* the relay thread holds the parent-death signal */
        struct sandbox_filter filter;  /* the seccomp filter, built while the VM is */
};

static void *relay_main(void *arg);

/* Beside the event loop and the vCPUs, named as they are (ps -L); before the filter, which
 * allows PR_SET_NAME. A member's relay is its process's main thread and keeps its name. */
static void *vmm_relay_main(void *arg)
{
        prctl(PR_SET_NAME, "relay");
        return relay_main(arg);
}

/* vm_config.ready. The parent-death signal is per thread and only the relay thread knows when
 * create has succeeded, so it takes the signal over from the main thread; it arms its own before
 * the filter is loaded, which allows prctl(PR_SET_PDEATHSIG) only to clear it. */
static int sandbox_ready(void *arg, cap_error_t *err)
{
        struct sandbox_proc *t = arg;
        t->console_log = open(t->cfg.console_path, O_RDONLY | O_CLOEXEC);
        /* The tap exists by now; its tc filters need the privileges the jail drops. */
        if (sandbox_net_link(t->l->net, err) < 0 || sandbox_jail_enter(t->l->dir, t->l->agent_socket, err) < 0)
                return -1;
        pthread_barrier_init(&t->relay_armed, NULL, 2);
        int e = pthread_create(&t->relay, NULL, vmm_relay_main, t);
        if (e != 0)
                return cap_fail(err, e, "start the sandbox's relay thread");
        t->relay_started = true;
        pthread_barrier_wait(&t->relay_armed);
        prctl(PR_SET_PDEATHSIG, 0);
        return sandbox_seccomp_load(&t->filter, err);
}

static void vm_started(void *arg)
{
        struct sandbox_proc *t = arg;
        sandbox_phase_write(t->phases, "guest", sandbox_phase_now());
}

/* Why the guest died, for a VMM status that says it did; else NULL. */
static const char *guest_death(int status)
{
        return status == VM_STATUS_REBOOT         ? "the guest reset itself"
               : status == VM_STATUS_PANIC        ? "the guest kernel panicked"
               : status == VM_STATUS_TRIPLE_FAULT ? "the guest triple-faulted"
                                                  : NULL;
}

static void vm_config_fill(struct vm_config *cfg, const struct sandbox_launch *l)
{
        memset(cfg, 0, sizeof(*cfg));
        cfg->kernel = xstrdup(l->vm->kernel);
        cfg->initrd = xstrdup(l->vm->initrd);
        cfg->cmdline = xstrdup(SANDBOX_CMDLINE);
        cfg->cpus = l->vm->cpus;
        cfg->memory = l->vm->memory;
        cfg->console = VM_CONSOLE_FILE;
        cfg->console_path = xasprintf("%s/" SANDBOX_CONSOLE_LOG, l->dir);
        cfg->vsock_cid = AGENT_GUEST_CID;
        cfg->vsock_socket = xstrdup(l->agent_socket);
        cfg->shares = xmalloc0(3 * sizeof(*cfg->shares));
        if (l->vm->rootfs_fd >= 0) {
                /* The VMM reopens the image we checked through our descriptor: the same inode. */
                cfg->disks = xmalloc0(sizeof(*cfg->disks));
                cfg->disks[0] = (struct vm_disk){ .path = xasprintf("/proc/self/fd/%d", l->vm->rootfs_fd),
                                                  .readonly = l->vm->rootfs_readonly, .queues = 1 };
                cfg->n_disks = 1;
        } else {
                cfg->shares[cfg->n_shares].dir = xstrdup(l->spec->root_path);
                cfg->shares[cfg->n_shares++].tag = xstrdup(AGENT_ROOTFS_TAG);
        }
        if (l->bind_sources[0]) {
                cfg->shares[cfg->n_shares].dir = xasprintf("%s/" SANDBOX_BINDS, l->dir);
                cfg->shares[cfg->n_shares++].tag = xstrdup(AGENT_BINDS_TAG);
        }
        if (l->pod) {
                cfg->shares[cfg->n_shares].dir = sandbox_pod_members_dir(l->opts->root, l->opts->id);
                cfg->shares[cfg->n_shares++].tag = xstrdup(AGENT_MEMBERS_TAG);
        }
        if (l->net->netns_fd >= 0) {
                /* The tap plan() made in the namespace: the VMM takes a copy of it. */
                cfg->nets = xmalloc0(sizeof(*cfg->nets));
                cfg->nets[0] = (struct vm_net){ .backend = VM_NET_TAP, .ifname = xstrdup(SANDBOX_TAP),
                                                .tap_fd_set = true, .tap_fd = l->net->tap_fd, .mac_set = true,
                                                .queues = 1 };
                memcpy(cfg->nets[0].mac, l->net->nic.mac, sizeof(cfg->nets[0].mac));
                cfg->n_nets = 1;
        }
}

/* Root is refused a device only by a device filter: the cgroup's or, when capsule's own allows
 * everything, an ancestor's, such as the one podman (cgroupfs on cgroup v2) puts on a pod's
 * cgroup for its containers. Said here, where KVM would only say "not permitted". */
static int devices_check(const struct sandbox_launch *l, cap_error_t *err)
{
        /* The tap is open already (sandbox_net_plan()): only /dev/kvm is opened in the cgroup. */
        cleanup_close int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0 && errno == EPERM)
                return cap_fail(err, 0, "linux.cgroupsPath: `%s` or a cgroup above it denies /dev/kvm to its processes, which "
                                        "the VM needs (podman's pod cgroup does: create the pod with --share-parent=false)",
                                l->spec->linux.cgroups_path ? l->spec->linux.cgroups_path : l->opts->id);
        return 0;
}

static __attribute__((noreturn)) void report_failure(int fd, cap_error_t *err)
{
        dprintf(fd, "E%s", (*err)->msg);
        _exit(1);
}

/* The guest console's last line (the state directory and its log go with a failed create), at
 * most 160 printable bytes, or NULL. From fd, opened before the jail hid the file: the last 4 KiB
 * are enough, however much the guest wrote. */
static char *console_last_line(int fd)
{
        char text[4096];
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                return NULL;
        off_t from = st.st_size > (off_t)sizeof(text) - 1 ? st.st_size - (off_t)sizeof(text) + 1 : 0;
        ssize_t n = pread(fd, text, sizeof(text) - 1, from);
        if (n <= 0)
                return NULL;
        size_t len = (size_t)n;
        text[len] = '\0';
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
                text[--len] = '\0';
        char *start = text + len;
        while (start > text && start[-1] != '\n')
                start--;
        if (!*start)
                return NULL;
        char *line = strndup(start, 160);
        for (char *c = line; *c; c++) {
                if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                        *c = '?';
        }
        return line;
}

/* The guest's own times from create's reply, recorded as they came (the guest's word only). */
static void guest_phases_mark(int phases, json_t *reply)
{
        static const char *const keys[][2] = { { "boot_us", "guest_boot_us" }, { "ready_us", "guest_ready_us" } };
        for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
                json_t *v = json_object_get(reply, keys[i][0]);
                if (json_is_integer(v) && json_integer_value(v) >= 0)
                        sandbox_phase_write(phases, keys[i][1], (long long)json_integer_value(v));
        }
}

/* The agent's part of create: stdio first, then the container, then the wait for its init. */
static int agent_create(const struct sandbox_proc *t, int conns[3], int *wait_conn, cap_error_t *err)
{
        const struct sandbox_launch *l = t->l;
        long long deadline = t->boot_deadline;
        int stop_fd = t->stop_fd;
        bool tty = l->spec->process->terminal;
        const char *init = l->member_of ? l->opts->id : "init";
        if (agent_open_stdio(l->agent_socket, init, tty, conns, deadline, stop_fd, err) < 0)
                return -1;
        sandbox_phase_write(t->phases, "agent", sandbox_phase_now());
        cleanup_close int fd = agent_connect(l->agent_socket, deadline, stop_fd, err);
        if (fd < 0)
                return -1;
        json_t *req = json_pack("{s:s,s:s,s:s,s:s,s:b}", "op", "create", "id", l->opts->id, "config", l->config_text, "stdio",
                                tty ? "tty" : "pipes", "binds", !l->member_of && l->bind_sources[0]);
        if (l->pod)
                json_object_set_new(req, "pod", json_true());
        if (l->member_of)
                json_object_set_new(req, "member", json_string(l->member_dir));
        if (l->net->netns_fd >= 0)
                json_object_set_new(req, "net", sandbox_net_json(l->net));
        if (l->vm->rootfs_fd >= 0)
                json_object_set_new(req, "rootfs", json_string(l->vm->rootfs_readonly ? AGENT_ROOTFS_BLOCK_RO : AGENT_ROOTFS_BLOCK));
        json_t *reply = NULL;
        int r = agent_request(fd, req, &reply, err);
        json_decref(req);
        if (r < 0)
                return r; /* -2: the connection closed */
        sandbox_phase_write(t->phases, "created", sandbox_phase_now());
        guest_phases_mark(t->phases, reply);
        json_decref(reply);
        if ((*wait_conn = agent_connect(l->agent_socket, deadline, stop_fd, err)) < 0)
                return -1;
        req = json_pack("{s:s,s:s}", "op", "wait", "exec", init);
        r = frame_send(*wait_conn, req, err);
        json_decref(req);
        return r;
}

/* create's stdio belong to the container: keep them above 2 and give the VMM and virtiofsd
 * (which inherits stderr) /dev/null and a log of their own, so that nothing of theirs is mixed
 * into the container's output. */
static int stdio_take(const struct sandbox_launch *l, int host[3], cap_error_t *err)
{
        for (int i = 0; i < 3; i++)
                host[i] = fcntl(i, F_DUPFD_CLOEXEC, 3);
        cleanup_free char *path = xasprintf("%s/" SANDBOX_VMM_LOG, l->dir);
        cleanup_close int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (log < 0)
                return cap_fail(err, errno, "open `%s`", path);
        if (dup2(l->null_fd, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
                return cap_fail(err, errno, "dup2");
        close(l->null_fd);
        return 0;
}

static void *relay_main(void *arg)
{
        struct sandbox_proc *t = arg;
        const struct sandbox_launch *l = t->l;
        cleanup_error cap_error_t err = NULL;
        int conns[3] = { -1, -1, -1 }, wait_conn = -1;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != l->creator)
                _exit(1);
        pthread_barrier_wait(&t->relay_armed);
        int created = agent_create(t, conns, &wait_conn, &err);
        if (created < 0) {
                /* A closed connection is most often the VM ending: vm_run() says why once it returns. */
                struct pollfd p = { .fd = t->stop_fd, .events = POLLIN };
                bool ended = poll(&p, 1, created == -2 ? SANDBOX_DEATH_WAIT_MS : 0) > 0;
                if (ended && t->err) {
                        cap_error_free(&err);
                        err = t->err;
                        t->err = NULL;
                } else if (ended && guest_death(t->status)) {
                        cap_error_free(&err);
                        cap_fail(&err, 0, SANDBOX_GUEST_DEATH "%s (status %d) before its agent answered",
                                 guest_death(t->status), t->status);
                }
                cleanup_free char *last = console_last_line(t->console_log);
                if (last) {
                        cleanup_free char *msg = xasprintf("%s (the guest's console last said: %s)", err->msg, last);
                        cap_error_free(&err);
                        cap_fail(&err, 0, "%s", msg);
                }
                report_failure(l->report_fd, &err);
        }
        if (write_all(l->report_fd, "O", 1) < 0)
                _exit(1);
        close(l->report_fd);
        /* create still records the container and runs its hooks: a create killed meanwhile
         * leaves no VM behind, as none is left when it fails (the parent-death signal, or the
         * end of file if it died before we read). */
        char finished;
        if (read(l->finished_fd, &finished, 1) != 1)
                _exit(1);
        /* create succeeded: from here the container outlives `capsule create`, which waits for
         * this answer before it exits (its exit would otherwise race the prctl and kill us). */
        prctl(PR_SET_PDEATHSIG, 0);
        (void)!write(l->finished_fd, "A", 1);
        close(l->finished_fd);

        /* With a terminal, create's stdio are not the container's: containerd's shim reads them to
         * their end before it takes the console, so they must close with create. */
        for (int i = 0; t->console >= 0 && i < 3; i++)
                cap_closep(&t->host[i]);
        struct stdio_relay r = { .host = { t->host[0], t->host[1], t->host[2] }, .conn = { conns[0], conns[1], conns[2] },
                                 .wait_conn = wait_conn, .stop_fd = t->stop_fd, .winch_fd = t->winch,
                                 .agent_socket = l->agent_socket, .exec = l->member_of ? l->opts->id : "init" };
        if (t->console >= 0)
                r.host[0] = r.host[1] = t->console;
        int status = 0;
        int got = stdio_relay_run(&r, &status, &err);
        if (got < 0)
                log_warning("%s", err->msg);
        /* A member's pod VM is not ours to wait for: without a status, its end was the member's. */
        if (l->member_of)
                _exit(got == 1 ? status : 255);
        /* The agent powers off once the host has closed init's streams and the wait: all is read. */
        cap_closep(&wait_conn);
        agent_stdio_close(&conns);
        struct pollfd p = { .fd = t->stop_fd, .events = POLLIN };
        if (poll(&p, 1, got == 1 ? SANDBOX_POWEROFF_WAIT_MS : -1) > 0 && got != 1)
                status = t->status; /* the VM ended without the init's status: its own (panic, triple fault, ...) */
        _exit(status);
}

/* With process.terminal: the console socket's pty, and SIGWINCH (blocked) on a signalfd. */
static void terminal_take(struct sandbox_proc *t)
{
        const struct sandbox_launch *l = t->l;
        cleanup_error cap_error_t err = NULL;
        if (!l->spec->process->terminal)
                return;
        sigset_t winch_set;
        sigemptyset(&winch_set);
        sigaddset(&winch_set, SIGWINCH);
        if ((t->console = console_pty_open(l->opts->console_socket_fd, (unsigned short)l->spec->process->console_height.v,
                                           (unsigned short)l->spec->process->console_width.v, true, &err)) < 0)
                report_failure(l->report_fd, &err);
        if ((t->winch = signalfd(-1, &winch_set, SFD_CLOEXEC)) < 0) {
                cap_fail(&err, errno, "signalfd");
                report_failure(l->report_fd, &err);
        }
}

/* A member's host process: no VM, the relay part only, on its main thread; the pod's VMM's
 * end (a pidfd, checked to be that VMM's) stands for the VM's. */
static __attribute__((noreturn)) void member_main(struct sandbox_launch *l)
{
        cleanup_error cap_error_t err = NULL;
        static struct sandbox_proc t;

        t = (struct sandbox_proc){ .l = l, .console = -1, .winch = -1, .console_log = -1, .phases = -1,
                                   .boot_deadline = now_ms() + SANDBOX_MEMBER_CONNECT_MS };
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != l->creator)
                _exit(1);
        setsid();
        if (stdio_take(l, t.host, &err) < 0 || cgroup_enter(l->cg, getpid(), &err) < 0)
                report_failure(l->report_fd, &err);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGWINCH);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
        terminal_take(&t);
        t.stop_fd = (int)syscall(SYS_pidfd_open, l->member_of->pid, 0);
        if (t.stop_fd < 0 || !sandbox_vmm_alive(l->member_of)) {
                cap_fail(&err, 0, "the pod's VM does not run");
                report_failure(l->report_fd, &err);
        }
        /* It holds what it relays by now; a hostile guest's answers meet a confined process. */
        if (sandbox_relay_jail_enter(l->dir, l->agent_socket, &err) < 0 || sandbox_seccomp_relay_load(&err) < 0)
                report_failure(l->report_fd, &err);
        pthread_barrier_init(&t.relay_armed, NULL, 1);
        relay_main(&t);
        _exit(1);
}

static __attribute__((noreturn)) void sandbox_main(struct sandbox_launch *l)
{
        cleanup_error cap_error_t err = NULL;
        static struct sandbox_proc t;

        t = (struct sandbox_proc){ .l = l, .console = -1, .winch = -1, .console_log = -1, .boot_deadline = now_ms() + l->vm->boot_timeout_ms };
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != l->creator)
                _exit(1);
        t.phases = sandbox_phases_open(l->dir);
        sandbox_phase_write(t.phases, "vmm", sandbox_phase_now());
        setsid();
        if (stdio_take(l, t.host, &err) < 0)
                report_failure(l->report_fd, &err);
        if (cgroup_enter(l->cg, getpid(), &err) < 0 || devices_check(l, &err) < 0)
                report_failure(l->report_fd, &err);
        /* The VMM's signalfd takes SIGINT/SIGTERM/SIGQUIT/SIGHUP for an orderly stop: no thread
         * may take them first. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGQUIT);
        sigaddset(&set, SIGHUP);
        sigaddset(&set, SIGWINCH);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
        /* Once the process is in its cgroups (a single thread moves through v1's `tasks`) and
         * with the signals above blocked, which the thread inherits. */
        sandbox_seccomp_prepare(&t.filter);
        terminal_take(&t);
        if (l->bind_sources[0]) {
                cleanup_free char *binds = xasprintf("%s/" SANDBOX_BINDS, l->dir);
                if (sandbox_binds_setup(binds, l->bind_sources, &err) < 0)
                        report_failure(l->report_fd, &err);
        }
        vm_config_fill(&t.cfg, l);
        t.cfg.ready = sandbox_ready;
        t.cfg.ready_arg = &t;
        t.cfg.started = vm_started;
        t.cfg.started_arg = &t;
        if ((t.stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
                cap_fail(&err, errno, "eventfd");
                report_failure(l->report_fd, &err);
        }
        if (vm_run(&t.cfg, &t.status, &t.err) < 0)
                t.status = 1;
        /* For an agent call the death cut off (sandbox.c). */
        if (guest_death(t.status))
                dprintf(STDERR_FILENO, SANDBOX_LOG_PREFIX SANDBOX_GUEST_DEATH "%s (status %d)\n", guest_death(t.status),
                        t.status);
        eventfd_write(t.stop_fd, 1);
        /* A VM that failed before it was confined never started the relay: the failure is create's. */
        if (!t.relay_started)
                report_failure(l->report_fd, &t.err);
        pthread_join(t.relay, NULL); /* the relay exits the process */
        _exit(t.status);
}

static struct state *state_new(const struct container_opts *o, const struct spec *spec, struct cgroup *cg)
{
        struct state *st = xmalloc0(sizeof(*st));
        struct passwd *pw = getpwuid(geteuid());
        st->id = xstrdup(o->id);
        st->bundle = realpath(o->bundle, NULL);
        if (!st->bundle)
                st->bundle = xstrdup(o->bundle);
        st->rootfs = xstrdup(spec->root_path);
        st->created = state_now_rfc3339();
        st->owner = xstrdup(pw ? pw->pw_name : "");
        st->annotations = strv_dup(spec->annotations);
        st->cgroup = cg ? cgroup_save(cg) : NULL;
        st->systemd_cgroup = o->systemd_cgroup;
        st->creator = getpid();
        st->creator_start_time = proc_start_time(st->creator);
        return st;
}

/* The sandbox process's answer: "O", or "E" and the message. */
static int read_report(int fd, cap_error_t *err)
{
        char msg[4096];
        ssize_t n = read_all(fd, msg, sizeof(msg) - 1);
        if (n <= 0)
                return cap_fail(err, 0, "the VM's sandbox process exited during create");
        msg[n] = '\0';
        if (msg[0] == 'O')
                return 0;
        return cap_fail(err, 0, "%s", msg + 1);
}

int sandbox_create(const struct container_opts *o, pid_t *pid, cap_error_t *err)
{
        cleanup_spec struct spec *spec = NULL;
        cleanup_cgroup struct cgroup *cg = NULL;
        cleanup_state struct state *st = NULL;
        cleanup_free char *config_text = NULL, *config_path = NULL, *dir = NULL, *sock = NULL, *saved = NULL;
        cleanup_free char *json = NULL, *prestart_json = NULL, *agent_config = NULL;
        cleanup_free char *member_binds = NULL, *member_dir = NULL;
        cleanup_strv char **bind_sources = NULL;
        struct sandbox_vm vm = { .rootfs_fd = -1 };
        struct sandbox_net net = { .netns_fd = -1, .lock_fd = -1, .tap_fd = -1 };
        struct sandbox_record rec = { 0 }, pod_rec = { 0 };
        struct sandbox_launch l;
        int report[2] = { -1, -1 }, finished[2] = { -1, -1 };
        cleanup_close int null_fd = -1;
        pid_t child = -1;
        int ret = -1;
        bool dir_created = false, cg_created = false, shared = false, member_mounted = false;
        long long began = sandbox_phase_now();

        *pid = -1;
        if (container_load_bundle(o, &spec, err) < 0)
                return -1;
        config_path = xasprintf("%s/config.json", o->bundle);
        if (read_file(config_path, &config_text, NULL, FRAME_MAX / 2, err) < 0)
                return -1;
        /* A pod's members join its VM instead of booting one. */
        const char *pod_id;
        enum sandbox_pod_role role = sandbox_pod_role(spec, &pod_id);
        bool member = role == SANDBOX_POD_MEMBER, pod = role == SANDBOX_POD;
        if (member) {
                member_dir = sandbox_member_dir_name(o->id);
                member_binds = xasprintf(AGENT_MEMBERS "/%s/binds", member_dir);
                if (sandbox_member_check(o->root, spec, pod_id, &pod_rec, err) < 0 ||
                    sandbox_binds_plan(config_text, member_binds, &agent_config, &bind_sources, err) < 0)
                        goto out;
        } else if (sandbox_binds_plan(config_text, AGENT_BINDS, &agent_config, &bind_sources, err) < 0 ||
                   sandbox_vm_resolve(spec, o->bundle, &vm, err) < 0 || sandbox_net_plan(spec, o->root, &net, err) < 0) {
                goto out;
        }
        dir = state_dir(o->root, o->id);
        sock = member ? xstrdup(pod_rec.agent_socket) : xasprintf("%s/" SANDBOX_AGENT_SOCKET, dir);
        if (strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
                cap_fail(err, 0, "the VM's agent socket `%s` is longer than a Unix socket path may be: use a shorter --root or id", sock);
                goto out;
        }
        if (cgroup_resolve(spec->linux.cgroups_path, o->id, o->systemd_cgroup, &cg, err) < 0)
                goto out;

        if (state_create_dir(o->root, o->id, err) < 0)
                goto out;
        dir_created = true;
        sandbox_phase_mark(dir, "create", began);
        /* As the runtime does: record everything before it exists, so that `delete` finds it. */
        cgroup_plan(cg);
        st = state_new(o, spec, cg);
        rec.agent_socket = sock;
        rec.memory = vm.memory;
        rec.pod = pod;
        rec.pod_netns_dev = net.netns_dev;
        rec.pod_netns_ino = net.netns_ino;
        rec.member_of = member ? (char *)pod_id : NULL;
        rec.member_dir = member_dir;
        if (net.netns_fd >= 0) {
                rec.net_ifindex = net.ifindex;
                rec.netns_dev = net.netns_dev;
                rec.netns_ino = net.netns_ino;
        }
        saved = xasprintf("%s/" STATE_CONFIG, dir);
        if (state_save(o->root, st, err) < 0 || state_save_cgroup(o->root, o->id, st->cgroup, err) < 0 ||
            sandbox_record_save(o->root, o->id, &rec, err) < 0 || write_file(saved, config_text, strlen(config_text), err) < 0)
                goto out;
        if (cgroup_create(cg, err) < 0)
                goto out;
        cg_created = true;
        json_decref(st->cgroup);
        st->cgroup = cgroup_save(cg);
        if (state_save_cgroup(o->root, o->id, st->cgroup, err) < 0)
                goto out;
        if (spec->linux.resources) {
                struct spec_resources host_res;
                sandbox_host_resources(spec->linux.resources, &host_res);
                if (cgroup_apply(cg, &host_res, err) < 0)
                        goto out;
        }

        if (pod) {
                if (sandbox_pod_share(o->root, o->id, err) < 0)
                        goto out;
                shared = true;
        }
        if (member) {
                member_mounted = true;
                if (sandbox_member_mount(o->root, pod_id, member_dir, spec->root_path, bind_sources, err) < 0)
                        goto out;
        }
        if (pipe2(report, O_CLOEXEC) < 0) {
                cap_fail(err, errno, "pipe");
                goto out;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, finished) < 0) {
                cap_fail(err, errno, "socketpair");
                goto out;
        }
        /* Here: the sandbox process is born in the cgroup (cgroup_fork). */
        if ((null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
                cap_fail(err, errno, "open /dev/null");
                goto out;
        }
        l = (struct sandbox_launch){ .opts = o, .spec = spec, .config_text = agent_config, .bind_sources = bind_sources, .vm = &vm, .net = &net, .cg = cg, .dir = dir,
                                    .agent_socket = sock, .report_fd = report[1], .finished_fd = finished[0], .null_fd = null_fd, .creator = getpid(),
                                    .pod = pod, .member_of = member ? &pod_rec : NULL, .member_dir = member_dir };
        child = cgroup_fork(cg, 0);
        if (child < 0) {
                cap_fail(err, errno, "fork the VM's sandbox process");
                goto out;
        }
        if (child == 0) {
                close(report[0]);
                close(finished[1]);
                /* Its flock is the open file's: a copy here would hold the namespace's lock for the VM's life. */
                cap_closep(&net.lock_fd);
                if (member)
                        member_main(&l);
                sandbox_main(&l);
        }
        cap_closep(&report[1]);
        cap_closep(&finished[0]);
        /* The child holds the tap now: it goes with the VM, and a failed create waits for that. */
        cap_closep(&net.tap_fd);
        rec.pid = child;
        rec.start_time = proc_start_time(child);
        if (sandbox_record_save(o->root, o->id, &rec, err) < 0)
                goto out;
        /* The claim is recorded: a create racing for the namespace sees its holder now. */
        sandbox_net_unlock(&net);
        if (read_report(report[0], err) < 0)
                goto out;
        st->pid = child;
        st->start_time = rec.start_time;
        st->creator = 0;
        if (state_save(o->root, st, err) < 0 || write_pid_file(o->pid_file, child, err) < 0)
                goto out;
        /* The hooks the runtime-spec runs in the runtime's namespace run on the host. */
        json = state_oci_string(st, "creating");
        prestart_json = state_oci_string(st, "created");
        if (hooks_run(&spec->hooks.prestart, "prestart", prestart_json, err) < 0 ||
            hooks_run(&spec->hooks.create_runtime, "createRuntime", json, err) < 0)
                goto out;
        if (send_all(finished[1], "F", 1) < 0) { /* a VM gone meanwhile: EPIPE, not a SIGPIPE that kills us */
                cap_fail(err, errno, "tell the VM's sandbox process that create has finished");
                goto out;
        }
        /* Its answer (or its end: the VM may have stopped already, which is the container's
         * business now) says it no longer dies with us. */
        struct pollfd answer = { .fd = finished[1], .events = POLLIN };
        char a;
        if (poll(&answer, 1, SANDBOX_FINISH_ANSWER_MS) > 0)
                (void)!read(finished[1], &a, 1);
        log_debug("created VM container %s: sandbox pid %d, %d vCPUs, %llu MiB", o->id, (int)child, vm.cpus,
                  (unsigned long long)(vm.memory >> 20));
        *pid = child;
        ret = 0;
out:
        cap_closep(&report[0]);
        cap_closep(&report[1]);
        cap_closep(&finished[0]);
        cap_closep(&finished[1]);
        if (ret < 0) {
                /* A failed create leaves nothing behind. */
                if (child > 0) {
                        kill(child, SIGKILL);
                        waitpid(child, NULL, 0);
                }
                cleanup_error cap_error_t ignored = NULL;
                if (cg_created)
                        cgroup_destroy(cg, &ignored);
                sandbox_net_release(&net);
                cap_error_free(&ignored);
                if (member_mounted)
                        sandbox_member_unmount(o->root, pod_id, member_dir);
                /* Never rm_rf through a mount that stayed. */
                if (shared && sandbox_pod_unshare(o->root, o->id, &ignored) < 0)
                        dir_created = false;
                if (dir_created)
                        rm_rf(dir, &ignored);
        }
        sandbox_record_free(&pod_rec);
        sandbox_vm_free(&vm);
        sandbox_net_free(&net);
        return ret;
}
