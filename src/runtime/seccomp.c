#include "runtime/seccomp.h"

#include <ctype.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/util.h"
#include "common/version.h"

/* Kernel ABI values, defined here when the installed headers predate them. */
#ifndef SECCOMP_FILTER_FLAG_TSYNC_ESRCH
#define SECCOMP_FILTER_FLAG_TSYNC_ESRCH (1UL << 4)
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

struct seccomp_prog {
        struct sock_filter *insns;
        unsigned short len;
        unsigned int flags; /* SECCOMP_FILTER_FLAG_*, NEW_LISTENER included when notify */
        bool notify;
        char *listener_path;
        char *listener_metadata; /* NULL when the config has none */
        int listener_sock; /* connected by seccomp_prog_connect(), -1 until then */
};

static void seccomp_ctx_releasep(scmp_filter_ctx *ctx)
{
        if (*ctx)
                seccomp_release(*ctx);
}

#define cleanup_scmp_ctx __attribute__((cleanup(seccomp_ctx_releasep)))

static const struct {
        const char *name;
        unsigned int flag;
} filter_flags[] = {
        { "SECCOMP_FILTER_FLAG_TSYNC", SECCOMP_FILTER_FLAG_TSYNC },
        { "SECCOMP_FILTER_FLAG_LOG", SECCOMP_FILTER_FLAG_LOG },
        { "SECCOMP_FILTER_FLAG_SPEC_ALLOW", SECCOMP_FILTER_FLAG_SPEC_ALLOW },
        { "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV },
};

static const struct {
        const char *name;
        enum scmp_compare op;
} compare_ops[] = {
        { "SCMP_CMP_NE", SCMP_CMP_NE }, { "SCMP_CMP_LT", SCMP_CMP_LT }, { "SCMP_CMP_LE", SCMP_CMP_LE },
        { "SCMP_CMP_EQ", SCMP_CMP_EQ }, { "SCMP_CMP_GE", SCMP_CMP_GE }, { "SCMP_CMP_GT", SCMP_CMP_GT },
        { "SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ },
};

/* errno_ret is the rule's errnoRet (ERRNO's errno, TRACE's message value). */
static int action_parse(const char *name, const opt_u64 *errno_ret, const char *field, uint32_t *out, cap_error_t *err)
{
        if (errno_ret->set && errno_ret->v > 0xffff)
                return cap_fail(err, 0, "%s: errnoRet %llu out of range", field, (unsigned long long)errno_ret->v);
        if (strcmp(name, "SCMP_ACT_KILL") == 0 || strcmp(name, "SCMP_ACT_KILL_THREAD") == 0)
                *out = SCMP_ACT_KILL_THREAD;
        else if (strcmp(name, "SCMP_ACT_KILL_PROCESS") == 0)
                *out = SCMP_ACT_KILL_PROCESS;
        else if (strcmp(name, "SCMP_ACT_TRAP") == 0)
                *out = SCMP_ACT_TRAP;
        else if (strcmp(name, "SCMP_ACT_ERRNO") == 0)
                *out = SCMP_ACT_ERRNO(errno_ret->set ? errno_ret->v : EPERM);
        else if (strcmp(name, "SCMP_ACT_TRACE") == 0)
                *out = SCMP_ACT_TRACE(errno_ret->set ? errno_ret->v : 0);
        else if (strcmp(name, "SCMP_ACT_ALLOW") == 0)
                *out = SCMP_ACT_ALLOW;
        else if (strcmp(name, "SCMP_ACT_LOG") == 0)
                *out = SCMP_ACT_LOG;
        else if (strcmp(name, "SCMP_ACT_NOTIFY") == 0)
                *out = SCMP_ACT_NOTIFY;
        else
                return cap_fail(err, 0, "%s: unknown action \"%s\"", field, name);
        return 0;
}

/* SCMP_ARCH_X86_64 -> libseccomp's "x86_64". */
static uint32_t arch_resolve(const char *name)
{
        char lower[32];
        size_t i;

        if (!str_has_prefix(name, "SCMP_ARCH_"))
                return 0;
        name += strlen("SCMP_ARCH_");
        for (i = 0; name[i] && i < sizeof(lower) - 1; i++)
                lower[i] = tolower((unsigned char)name[i]);
        if (name[i])
                return 0;
        lower[i] = '\0';
        return seccomp_arch_resolve_name(lower);
}

/* A syscall name is known when libseccomp resolves it for at least one of the
 * filter's architectures (it gives pseudo numbers for other arches' syscalls). */
static int syscall_resolve(const uint32_t *arches, size_t n_arches, const char *name)
{
        for (size_t i = 0; i < n_arches; i++) {
                if (seccomp_syscall_resolve_name_arch(arches[i], name) != __NR_SCMP_ERROR)
                        return seccomp_syscall_resolve_name(name);
        }
        return __NR_SCMP_ERROR;
}

static int rule_add(scmp_filter_ctx ctx, uint32_t action, int nr, const struct scmp_arg_cmp *cmps, unsigned int n,
                    const char *field, const char *name, cap_error_t *err)
{
        int r = seccomp_rule_add_array(ctx, action, nr, n, cmps);
        if (r < 0)
                return cap_fail(err, -r, "%s: cannot add rule for \"%s\"", field, name);
        return 0;
}

static int syscall_add(scmp_filter_ctx ctx, const struct spec_seccomp_syscall *call, uint32_t action,
                       const uint32_t *arches, size_t n_arches, size_t index, cap_error_t *err)
{
        struct scmp_arg_cmp cmps[6];
        bool seen[6] = { false }, duplicate = false;
        char field[96];

        snprintf(field, sizeof(field), "linux.seccomp.syscalls[%zu]", index);
        if (call->n_args > ARRAY_SIZE(cmps))
                return cap_fail(err, 0, "%s.args: at most %zu conditions are supported", field, ARRAY_SIZE(cmps));
        for (size_t i = 0; i < call->n_args; i++) {
                const struct spec_seccomp_arg *a = &call->args[i];
                size_t k;

                if (a->index >= 6)
                        return cap_fail(err, 0, "%s.args[%zu].index: %u out of range 0-5", field, i, a->index);
                for (k = 0; k < ARRAY_SIZE(compare_ops); k++) {
                        if (a->op && strcmp(a->op, compare_ops[k].name) == 0)
                                break;
                }
                if (k == ARRAY_SIZE(compare_ops))
                        return cap_fail(err, 0, "%s.args[%zu].op: unknown operator \"%s\"", field, i, a->op ? a->op : "");
                cmps[i] = (struct scmp_arg_cmp){ a->index, compare_ops[k].op, a->value, a->value_two };
                if (seen[a->index])
                        duplicate = true;
                seen[a->index] = true;
        }
        for (size_t j = 0; call->names && call->names[j]; j++) {
                const char *name = call->names[j];
                int nr = syscall_resolve(arches, n_arches, name);

                if (nr == __NR_SCMP_ERROR)
                        return cap_fail(err, 0, "%s.names[%zu]: unknown syscall \"%s\"", field, j, name);
                /* libseccomp refuses two conditions on one argument in a rule, so
                 * then each condition becomes a rule of its own (as runc does). */
                if (duplicate) {
                        for (size_t i = 0; i < call->n_args; i++) {
                                if (rule_add(ctx, action, nr, &cmps[i], 1, field, name, err) < 0)
                                        return -1;
                        }
                } else if (rule_add(ctx, action, nr, cmps, call->n_args, field, name, err) < 0) {
                        return -1;
                }
        }
        return 0;
}

/* libseccomp 2.5 exports only to an fd; a memfd keeps the program in memory. */
static int filter_export(scmp_filter_ctx ctx, struct seccomp_prog *prog, cap_error_t *err)
{
        cleanup_close int fd = memfd_create("capsule-seccomp", MFD_CLOEXEC);
        struct stat st;
        int r;

        if (fd < 0)
                return cap_fail(err, errno, "seccomp: memfd_create");
        r = seccomp_export_bpf(ctx, fd);
        if (r < 0)
                return cap_fail(err, -r, "seccomp: cannot export the filter");
        if (fstat(fd, &st) < 0)
                return cap_fail(err, errno, "seccomp: fstat");
        if (st.st_size == 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
            st.st_size / sizeof(struct sock_filter) > BPF_MAXINSNS)
                return cap_fail(err, 0, "seccomp: filter has an invalid size of %lld bytes", (long long)st.st_size);
        prog->insns = xmalloc0(st.st_size);
        if (pread(fd, prog->insns, st.st_size, 0) != st.st_size)
                return cap_fail(err, errno, "seccomp: cannot read back the filter");
        prog->len = st.st_size / sizeof(struct sock_filter);
        return 0;
}

/* The kernel checks the flags before it reads the program: with a NULL program,
 * EFAULT means it accepts them and EINVAL that it does not. Nothing is loaded. */
static bool filter_flags_supported(unsigned int flags)
{
        return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, NULL) < 0 && errno == EFAULT;
}

int seccomp_prepare(const struct spec_seccomp *sc, struct seccomp_prog **out, cap_error_t *err)
{
        cleanup_scmp_ctx scmp_filter_ctx ctx = NULL;
        uint32_t arches[32];
        size_t n_arches = 0;
        uint32_t default_action;
        struct seccomp_prog *prog;
        int r;

        *out = NULL;
        if (!sc->default_action)
                return cap_fail(err, 0, "linux.seccomp.defaultAction: missing");
        if (action_parse(sc->default_action, &sc->default_errno_ret, "linux.seccomp.defaultAction", &default_action, err) < 0)
                return -1;
        ctx = seccomp_init(default_action);
        if (!ctx)
                return cap_fail(err, 0, "linux.seccomp.defaultAction: libseccomp rejects \"%s\"", sc->default_action);
        /* The runtime sets no_new_privs itself when the config asks for it. */
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
        if (r < 0)
                return cap_fail(err, -r, "seccomp: cannot clear the no_new_privs attribute");

        arches[n_arches++] = seccomp_arch_native();
        for (size_t i = 0; sc->architectures && sc->architectures[i]; i++) {
                uint32_t arch = arch_resolve(sc->architectures[i]);

                if (arch == 0)
                        return cap_fail(err, 0, "linux.seccomp.architectures[%zu]: unknown architecture \"%s\"", i,
                                        sc->architectures[i]);
                r = seccomp_arch_add(ctx, arch);
                if (r == -EEXIST)
                        continue;
                if (r < 0)
                        return cap_fail(err, -r, "linux.seccomp.architectures[%zu]: cannot add \"%s\"", i,
                                        sc->architectures[i]);
                if (n_arches == ARRAY_SIZE(arches))
                        return cap_fail(err, 0, "linux.seccomp.architectures: too many architectures");
                arches[n_arches++] = arch;
        }

        unsigned int flags = 0;
        for (size_t i = 0; sc->flags && sc->flags[i]; i++) {
                size_t k;
                for (k = 0; k < ARRAY_SIZE(filter_flags); k++) {
                        if (strcmp(sc->flags[i], filter_flags[k].name) == 0)
                                break;
                }
                if (k == ARRAY_SIZE(filter_flags))
                        return cap_fail(err, 0, "linux.seccomp.flags[%zu]: unknown flag \"%s\"", i, sc->flags[i]);
                flags |= filter_flags[k].flag;
        }

        bool notify = default_action == SCMP_ACT_NOTIFY;
        for (size_t i = 0; i < sc->n_syscalls; i++) {
                const struct spec_seccomp_syscall *call = &sc->syscalls[i];
                char field[64];
                uint32_t action;

                snprintf(field, sizeof(field), "linux.seccomp.syscalls[%zu].action", i);
                if (!call->action)
                        return cap_fail(err, 0, "%s: missing", field);
                if (action_parse(call->action, &call->errno_ret, field, &action, err) < 0)
                        return -1;
                if (action == SCMP_ACT_NOTIFY)
                        notify = true;
                /* libseccomp refuses rules that repeat the default action; they change nothing. */
                if (action == default_action) {
                        for (size_t j = 0; call->names && call->names[j]; j++) {
                                if (syscall_resolve(arches, n_arches, call->names[j]) == __NR_SCMP_ERROR)
                                        return cap_fail(err, 0, "linux.seccomp.syscalls[%zu].names[%zu]: unknown syscall \"%s\"",
                                                        i, j, call->names[j]);
                        }
                        continue;
                }
                if (syscall_add(ctx, call, action, arches, n_arches, i, err) < 0)
                        return -1;
        }

        if (notify) {
                if (!sc->listener_path || !*sc->listener_path)
                        return cap_fail(err, 0, "linux.seccomp.listenerPath: required with SCMP_ACT_NOTIFY");
                if (strlen(sc->listener_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                        return cap_fail(err, 0, "linux.seccomp.listenerPath: \"%s\" is too long for a unix socket",
                                        sc->listener_path);
                flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
                /* The kernel only combines TSYNC with a listener when a failed sync reports ESRCH. */
                if (flags & SECCOMP_FILTER_FLAG_TSYNC)
                        flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        } else if (flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
                return cap_fail(err, 0, "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY rules");
        }
        if (flags && !filter_flags_supported(flags)) {
                for (size_t i = 0; sc->flags && sc->flags[i]; i++) {
                        for (size_t k = 0; k < ARRAY_SIZE(filter_flags); k++) {
                                unsigned int f = filter_flags[k].flag;
                                if (strcmp(sc->flags[i], filter_flags[k].name) == 0 &&
                                    !filter_flags_supported(f | (f == SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ?
                                                                 SECCOMP_FILTER_FLAG_NEW_LISTENER : 0)))
                                        return cap_fail(err, 0, "linux.seccomp.flags[%zu]: %s is not supported by the kernel",
                                                        i, sc->flags[i]);
                        }
                }
                return cap_fail(err, 0, "linux.seccomp.flags: the kernel does not support this combination of flags");
        }

        prog = xmalloc0(sizeof(*prog));
        prog->listener_sock = -1;
        prog->flags = flags;
        prog->notify = notify;
        prog->listener_path = notify ? xstrdup(sc->listener_path) : NULL;
        prog->listener_metadata = notify && sc->listener_metadata ? xstrdup(sc->listener_metadata) : NULL;
        if (filter_export(ctx, prog, err) < 0) {
                seccomp_prog_free(prog);
                return -1;
        }
        *out = prog;
        return 0;
}

static int listener_connect(const char *path, cap_error_t *err)
{
        cleanup_close int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un addr = { .sun_family = AF_UNIX };

        if (sock < 0)
                return cap_fail(err, errno, "seccomp: socket");
        strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
        if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
                return cap_fail(err, errno, "linux.seccomp.listenerPath: connect to %s", path);
        return steal_fd(&sock);
}

int seccomp_prog_connect(struct seccomp_prog *prog, cap_error_t *err)
{
        if (!prog->notify || prog->listener_sock >= 0)
                return 0;
        prog->listener_sock = listener_connect(prog->listener_path, err);
        return prog->listener_sock < 0 ? -1 : 0;
}

bool seccomp_prog_notifies(const struct seccomp_prog *prog)
{
        return prog->notify;
}

/* The runtime-spec's containerProcessState; "seccompFd" names the one fd sent with it. */
static char *listener_message(const struct seccomp_prog *prog, pid_t pid, const char *state_json, cap_error_t *err)
{
        json_error_t jerr;
        json_t *state = json_loads(state_json ? state_json : "{}", 0, &jerr);
        char *text;

        if (!json_is_object(state)) {
                json_decref(state);
                return cap_fail(err, 0, "seccomp: the container state is not a JSON object"), NULL;
        }
        json_t *msg = json_pack("{s:s,s:[s],s:I,s:o}", "ociVersion", CAPSULE_OCI_VERSION, "fds", "seccompFd", "pid",
                                (json_int_t)pid, "state", state);
        if (prog->listener_metadata)
                json_object_set_new(msg, "metadata", json_string(prog->listener_metadata));
        text = json_dumps(msg, JSON_COMPACT);
        json_decref(msg);
        return text;
}

static int listener_send(const struct seccomp_prog *prog, int listener, const char *msg, cap_error_t *err)
{
        cleanup_close int own = -1;
        int sock = prog->listener_sock;

        if (sock < 0 && (sock = own = listener_connect(prog->listener_path, err)) < 0)
                return -1;
        if (send_fd(sock, listener, msg, strlen(msg)) < 0)
                return cap_fail(err, errno, "seccomp: send the listener fd to %s", prog->listener_path);
        return 0;
}

int seccomp_prog_load(const struct seccomp_prog *prog, pid_t pid, const char *state_json, cap_error_t *err)
{
        struct sock_fprog fprog = { .len = prog->len, .filter = prog->insns };
        cleanup_free char *msg = NULL;
        long r;

        /* Built first: the filter may deny what allocating needs. */
        if (prog->notify && !(msg = listener_message(prog, pid, state_json, err)))
                return -1;
        r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, prog->flags, &fprog);
        if (r < 0 && errno == ENOSYS && prog->flags == 0)
                r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
        if (r < 0 && errno == EACCES)
                return cap_fail(err, errno, "seccomp: load the filter (without CAP_SYS_ADMIN it needs no_new_privs)");
        if (r < 0)
                return cap_fail(err, errno, "seccomp: load the filter");
        if (!prog->notify) {
                /* With TSYNC, a positive result is the id of a thread that could not be synced. */
                if (r > 0)
                        return cap_fail(err, 0, "seccomp: thread %ld could not be synchronized", r);
                return 0;
        }
        cleanup_close int listener = (int)r;
        return listener_send(prog, listener, msg, err);
}

void seccomp_prog_free(struct seccomp_prog *prog)
{
        if (!prog)
                return;
        cap_closep(&prog->listener_sock);
        free(prog->insns);
        free(prog->listener_path);
        free(prog->listener_metadata);
        free(prog);
}
