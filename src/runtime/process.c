#include "runtime/process.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/procfs.h"

/* Kernel ABI (include/uapi/linux/sched.h, ioprio.h); glibc has no wrappers. */
struct sched_attr_abi {
        uint32_t size;
        uint32_t sched_policy;
        uint64_t sched_flags;
        int32_t sched_nice;
        uint32_t sched_priority;
        uint64_t sched_runtime, sched_deadline, sched_period;
        uint32_t sched_util_min, sched_util_max;
};

#define IOPRIO_WHO_PROCESS_ABI 1
#define IOPRIO_CLASS_SHIFT_ABI 13

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct prep_rlimit {
        int resource;
        char *type;
        struct rlimit rl;
};

struct process_prep {
        struct prep_rlimit *rlimits;
        size_t n_rlimits;
        bool oom_set;
        int oom_score_adj;
        bool sched_set;
        struct sched_attr_abi sched;
        bool ioprio_set;
        int ioprio;
        bool personality_set;
        unsigned long personality;

        mode_t umask;
        uid_t uid;
        gid_t gid;
        gid_t *gids;
        size_t n_gids;
        /* Capability sets as bitmasks of the kernel's capabilities (bit n = capability n). */
        uint64_t bounding, effective, permitted, inheritable, ambient;
        int last_cap;
        bool no_new_privileges;
        char *apparmor_profile; /* NULL unless AppArmor is enabled on the host */
        char *selinux_label;    /* NULL unless SELinux is enabled on the host */
};

static const struct {
        const char *name;
        uint32_t policy;
} sched_policies[] = {
        { "SCHED_OTHER", 0 }, { "SCHED_FIFO", 1 }, { "SCHED_RR", 2 },     { "SCHED_BATCH", 3 },
        { "SCHED_ISO", 4 },   { "SCHED_IDLE", 5 }, { "SCHED_DEADLINE", 6 },
};

static const struct {
        const char *name;
        uint64_t flag;
} sched_flags[] = {
        { "SCHED_FLAG_RESET_ON_FORK", 0x01 }, { "SCHED_FLAG_RECLAIM", 0x02 },     { "SCHED_FLAG_DL_OVERRUN", 0x04 },
        { "SCHED_FLAG_KEEP_POLICY", 0x08 },   { "SCHED_FLAG_KEEP_PARAMS", 0x10 }, { "SCHED_FLAG_UTIL_CLAMP_MIN", 0x20 },
        { "SCHED_FLAG_UTIL_CLAMP_MAX", 0x40 },
};

static const struct {
        const char *name;
        int class;
} ioprio_classes[] = {
        { "IOPRIO_CLASS_RT", 1 },
        { "IOPRIO_CLASS_BE", 2 },
        { "IOPRIO_CLASS_IDLE", 3 },
};

static int kernel_last_cap(void)
{
        char buf[16] = "";
        cleanup_close int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
        unsigned long long v;

        if (fd >= 0 && read(fd, buf, sizeof(buf) - 1) > 0) {
                buf[strcspn(buf, "\n")] = '\0';
                if (parse_u64(buf, &v) == 0 && v < 64)
                        return (int)v;
        }
        return CAP_LAST_CAP;
}

static int caps_parse(char **names, const char *field, int last_cap, uint64_t *out, cap_error_t *err)
{
        *out = 0;
        for (size_t i = 0; names && names[i]; i++) {
                const char *name = names[i];
                cap_value_t v;
                bool upper = str_has_prefix(name, "CAP_");

                /* libcap also takes lower case and bare numbers; the spec wants CAP_ names. */
                for (const char *p = name; upper && *p; p++) {
                        if (*p >= 'a' && *p <= 'z')
                                upper = false;
                }
                if (!upper || cap_from_name(name, &v) < 0)
                        return cap_fail(err, 0, "%s[%zu]: unknown capability \"%s\"", field, i, name);
                if (v > last_cap) {
                        log_warning("%s[%zu]: %s is not supported by the running kernel, ignored", field, i, name);
                        continue;
                }
                *out |= 1ULL << v;
        }
        return 0;
}

static int scheduler_prepare(const struct spec_scheduler *s, struct sched_attr_abi *attr, cap_error_t *err)
{
        size_t k;

        if (!s->policy)
                return cap_fail(err, 0, "process.scheduler.policy: missing");
        for (k = 0; k < ARRAY_SIZE(sched_policies); k++) {
                if (strcmp(s->policy, sched_policies[k].name) == 0)
                        break;
        }
        if (k == ARRAY_SIZE(sched_policies))
                return cap_fail(err, 0, "process.scheduler.policy: unknown policy \"%s\"", s->policy);
        memset(attr, 0, sizeof(*attr));
        attr->size = sizeof(*attr);
        attr->sched_policy = sched_policies[k].policy;
        if (s->nice < -20 || s->nice > 19)
                return cap_fail(err, 0, "process.scheduler.nice: %d out of range -20..19", s->nice);
        attr->sched_nice = s->nice;
        bool realtime = attr->sched_policy == 1 || attr->sched_policy == 2;
        if (s->priority != 0 && !realtime)
                return cap_fail(err, 0, "process.scheduler.priority: only SCHED_FIFO and SCHED_RR take a priority");
        if (realtime && (s->priority < 1 || s->priority > 99))
                return cap_fail(err, 0, "process.scheduler.priority: %d out of range 1..99 for %s", s->priority, s->policy);
        attr->sched_priority = s->priority;
        if ((s->runtime || s->deadline || s->period) && attr->sched_policy != 6)
                return cap_fail(err, 0, "process.scheduler: runtime, deadline and period are only for SCHED_DEADLINE");
        attr->sched_runtime = s->runtime;
        attr->sched_deadline = s->deadline;
        attr->sched_period = s->period;
        for (size_t i = 0; s->flags && s->flags[i]; i++) {
                for (k = 0; k < ARRAY_SIZE(sched_flags); k++) {
                        if (strcmp(s->flags[i], sched_flags[k].name) == 0)
                                break;
                }
                if (k == ARRAY_SIZE(sched_flags))
                        return cap_fail(err, 0, "process.scheduler.flags[%zu]: unknown flag \"%s\"", i, s->flags[i]);
                attr->sched_flags |= sched_flags[k].flag;
        }
        return 0;
}

static int ioprio_prepare(const struct spec_io_priority *io, int *out, cap_error_t *err)
{
        size_t k;

        for (k = 0; k < ARRAY_SIZE(ioprio_classes); k++) {
                if (io->class_name && strcmp(io->class_name, ioprio_classes[k].name) == 0)
                        break;
        }
        if (k == ARRAY_SIZE(ioprio_classes))
                return cap_fail(err, 0, "process.ioPriority.class: unknown class \"%s\"", io->class_name ? io->class_name : "");
        if (io->priority < 0 || io->priority > 7)
                return cap_fail(err, 0, "process.ioPriority.priority: %d out of range 0..7", io->priority);
        *out = (ioprio_classes[k].class << IOPRIO_CLASS_SHIFT_ABI) | io->priority;
        return 0;
}

static void process_prep_freep(struct process_prep **prep)
{
        process_prep_free(*prep);
}

#define cleanup_process_prep __attribute__((cleanup(process_prep_freep)))

static bool path_exists(const char *path)
{
        return access(path, F_OK) == 0;
}

int process_prepare(const struct spec_process *proc, const char *personality_domain, struct process_prep **out,
                    cap_error_t *err)
{
        cleanup_process_prep struct process_prep *prep = xmalloc0(sizeof(*prep));
        const struct spec_capabilities *c = proc->capabilities;

        *out = NULL;
        prep->last_cap = kernel_last_cap();
        prep->rlimits = xmalloc0(sizeof(*prep->rlimits) * proc->n_rlimits);
        for (size_t i = 0; i < proc->n_rlimits; i++) {
                const struct spec_rlimit *l = &proc->rlimits[i];
                const char *type = l->type ? l->type : "rlimit";

                if (l->soft > l->hard)
                        return cap_fail(err, 0, "process.rlimits[%zu]: %s soft limit %llu is above the hard limit %llu", i,
                                        type, (unsigned long long)l->soft, (unsigned long long)l->hard);
                prep->rlimits[i] = (struct prep_rlimit){ l->resource, xstrdup(type), { l->soft, l->hard } };
                prep->n_rlimits++;
        }
        if (proc->oom_score_adj.set) {
                if (proc->oom_score_adj.v < -1000 || proc->oom_score_adj.v > 1000)
                        return cap_fail(err, 0, "process.oomScoreAdj: %lld out of range -1000..1000",
                                        (long long)proc->oom_score_adj.v);
                prep->oom_set = true;
                prep->oom_score_adj = (int)proc->oom_score_adj.v;
        }
        if (proc->scheduler.set) {
                if (scheduler_prepare(&proc->scheduler, &prep->sched, err) < 0)
                        return -1;
                prep->sched_set = true;
        }
        if (proc->io_priority.set) {
                if (ioprio_prepare(&proc->io_priority, &prep->ioprio, err) < 0)
                        return -1;
                prep->ioprio_set = true;
        }
        if (personality_domain) {
                if (strcmp(personality_domain, "LINUX") == 0)
                        prep->personality = PER_LINUX;
                else if (strcmp(personality_domain, "LINUX32") == 0)
                        prep->personality = PER_LINUX32;
                else
                        return cap_fail(err, 0, "linux.personality.domain: unknown domain \"%s\"", personality_domain);
                prep->personality_set = true;
        }

        if (proc->user.umask.set && proc->user.umask.v > 0777)
                return cap_fail(err, 0, "process.user.umask: %#llo is not a file mode", (unsigned long long)proc->user.umask.v);
        prep->umask = proc->user.umask.set ? (mode_t)proc->user.umask.v : 0022;
        prep->uid = proc->user.uid;
        prep->gid = proc->user.gid;
        prep->n_gids = proc->user.n_additional_gids;
        prep->gids = xmalloc0(sizeof(gid_t) * prep->n_gids);
        for (size_t i = 0; i < prep->n_gids; i++)
                prep->gids[i] = proc->user.additional_gids[i];

        if (c && (caps_parse(c->bounding, "process.capabilities.bounding", prep->last_cap, &prep->bounding, err) < 0 ||
                  caps_parse(c->effective, "process.capabilities.effective", prep->last_cap, &prep->effective, err) < 0 ||
                  caps_parse(c->permitted, "process.capabilities.permitted", prep->last_cap, &prep->permitted, err) < 0 ||
                  caps_parse(c->inheritable, "process.capabilities.inheritable", prep->last_cap, &prep->inheritable, err) < 0 ||
                  caps_parse(c->ambient, "process.capabilities.ambient", prep->last_cap, &prep->ambient, err) < 0))
                return -1;
        prep->no_new_privileges = proc->no_new_privileges;

        /* Decided here, on the host's view of /sys: the container's may not show it. */
        if (proc->apparmor_profile && *proc->apparmor_profile) {
                if (path_exists("/sys/kernel/security/apparmor"))
                        prep->apparmor_profile = xasprintf("exec %s", proc->apparmor_profile);
                else
                        log_warning("process.apparmorProfile: AppArmor is not enabled on this host, \"%s\" ignored",
                                    proc->apparmor_profile);
        }
        if (proc->selinux_label && *proc->selinux_label) {
                if (path_exists("/sys/fs/selinux/enforce"))
                        prep->selinux_label = xstrdup(proc->selinux_label);
                else
                        log_warning("process.selinuxLabel: SELinux is not enabled on this host, \"%s\" ignored",
                                    proc->selinux_label);
        }
        *out = steal_pointer(&prep);
        return 0;
}

int process_apply_oom(const struct process_prep *prep, cap_error_t *err)
{
        if (!prep->oom_set)
                return 0;
        char buf[16];
        int len = snprintf(buf, sizeof(buf), "%d", prep->oom_score_adj);
        if (procfs_write("/proc/self/oom_score_adj", buf, (size_t)len, err) < 0)
                return cap_error_prefix(err, "process.oomScoreAdj");
        return 0;
}

int process_apply_early(const struct process_prep *prep, cap_error_t *err)
{
        for (size_t i = 0; i < prep->n_rlimits; i++) {
                const struct prep_rlimit *l = &prep->rlimits[i];
                if (setrlimit(l->resource, &l->rl) < 0)
                        return cap_fail(err, errno, "process.rlimits: setrlimit %s", l->type);
        }
        if (prep->sched_set && syscall(SYS_sched_setattr, 0, &prep->sched, 0) < 0)
                return cap_fail(err, errno, "process.scheduler: sched_setattr");
        if (prep->ioprio_set && syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS_ABI, 0, prep->ioprio) < 0)
                return cap_fail(err, errno, "process.ioPriority: ioprio_set");
        if (prep->personality_set && personality(prep->personality) < 0)
                return cap_fail(err, errno, "linux.personality: personality(%#lx)", prep->personality);
        return 0;
}

/* /proc/self/setgroups says "deny" in a user namespace whose gid map was written without setgroups. */
static bool setgroups_denied(void)
{
        char buf[16] = "";
        cleanup_close int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);

        return fd >= 0 && read(fd, buf, sizeof(buf) - 1) > 0 && str_has_prefix(buf, "deny");
}

static int user_switch(const struct process_prep *prep, cap_error_t *err)
{
        if (setgroups(prep->n_gids, prep->gids) < 0 && !(errno == EPERM && prep->n_gids == 0 && setgroups_denied()))
                return cap_fail(err, errno, "process.user.additionalGids: setgroups");
        /* Keep the permitted set across the switch away from uid 0; capset restores the rest. */
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
                return cap_fail(err, errno, "prctl(PR_SET_KEEPCAPS)");
        if (setresgid(prep->gid, prep->gid, prep->gid) < 0)
                return cap_fail(err, errno, "process.user.gid: setresgid %u", prep->gid);
        if (setresuid(prep->uid, prep->uid, prep->uid) < 0)
                return cap_fail(err, errno, "process.user.uid: setresuid %u", prep->uid);
        return 0;
}

static void cap_freep_libcap(cap_t *c)
{
        if (*c)
                cap_free(*c);
}

static int caps_set(const struct process_prep *prep, cap_error_t *err)
{
        __attribute__((cleanup(cap_freep_libcap))) cap_t caps = cap_init();

        if (!caps)
                return cap_fail(err, errno, "process.capabilities: cap_init");
        for (int v = 0; v <= prep->last_cap; v++) {
                cap_value_t value = v;
                uint64_t bit = 1ULL << v;
                if ((prep->effective & bit) && cap_set_flag(caps, CAP_EFFECTIVE, 1, &value, CAP_SET) < 0)
                        return cap_fail(err, errno, "process.capabilities.effective: cap_set_flag");
                if ((prep->permitted & bit) && cap_set_flag(caps, CAP_PERMITTED, 1, &value, CAP_SET) < 0)
                        return cap_fail(err, errno, "process.capabilities.permitted: cap_set_flag");
                if ((prep->inheritable & bit) && cap_set_flag(caps, CAP_INHERITABLE, 1, &value, CAP_SET) < 0)
                        return cap_fail(err, errno, "process.capabilities.inheritable: cap_set_flag");
        }
        if (cap_set_proc(caps) < 0)
                return cap_fail(err, errno, "process.capabilities: capset (effective must be within permitted)");
        return 0;
}

static char *cap_names_by_value[64];

static const char *cap_name(int v)
{
        process_known_capabilities();
        return cap_names_by_value[v] ? cap_names_by_value[v] : "an unnamed capability";
}

/* AppArmor has its own attr directory since Linux 5.8; older kernels only have the shared one. */
static int apparmor_write(const char *value, cap_error_t *err)
{
        if (procfs_write("/proc/self/attr/apparmor/exec", value, strlen(value), err) == 0)
                return 0;
        if ((*err)->errnum != ENOENT)
                return -1;
        cap_error_free(err);
        return procfs_write("/proc/self/attr/exec", value, strlen(value), err);
}

int process_apply_final(const struct process_prep *prep, cap_error_t *err)
{
        umask(prep->umask);
        /* The bounding set can only shrink while CAP_SETPCAP is effective, so before the uid switch. */
        for (int v = 0; v <= prep->last_cap; v++) {
                if (!(prep->bounding & (1ULL << v)) && prctl(PR_CAPBSET_DROP, v, 0, 0, 0) < 0) {
                        int e = errno; /* cap_name() may change errno */
                        return cap_fail(err, e, "process.capabilities.bounding: drop %s", cap_name(v));
                }
        }
        if (user_switch(prep, err) < 0)
                return -1;
        if (caps_set(prep, err) < 0)
                return -1;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return cap_fail(err, errno, "process.capabilities.ambient: clear");
        for (int v = 0; v <= prep->last_cap; v++) {
                /* As runc and crun: an ambient capability that is not also permitted and inheritable
                 * (runc's own default config has such) is skipped with a warning, not an error. */
                if ((prep->ambient & (1ULL << v)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, v, 0, 0) < 0)
                        log_warning("process.capabilities.ambient: %s not raised: it must be permitted and inheritable", cap_name(v));
        }
        if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
                return cap_fail(err, errno, "prctl(PR_SET_KEEPCAPS)");
        if (prep->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return cap_fail(err, errno, "process.noNewPrivileges: prctl(PR_SET_NO_NEW_PRIVS)");
        if (prep->apparmor_profile && apparmor_write(prep->apparmor_profile, err) < 0)
                return cap_error_prefix(err, "process.apparmorProfile: cannot set \"%s\"", prep->apparmor_profile + strlen("exec "));
        if (prep->selinux_label && procfs_write("/proc/self/attr/exec", prep->selinux_label, strlen(prep->selinux_label), err) < 0)
                return cap_error_prefix(err, "process.selinuxLabel: cannot set \"%s\"", prep->selinux_label);
        return 0;
}

void process_prep_free(struct process_prep *prep)
{
        if (!prep)
                return;
        for (size_t i = 0; i < prep->n_rlimits; i++)
                free(prep->rlimits[i].type);
        free(prep->rlimits);
        free(prep->gids);
        free(prep->apparmor_profile);
        free(prep->selinux_label);
        free(prep);
}

/* 0 if path is an executable regular file, else the errno execve would give. */
static int executable_check(const char *path)
{
        struct stat st;

        if (stat(path, &st) < 0)
                return errno;
        if (S_ISDIR(st.st_mode) || access(path, X_OK) < 0)
                return EACCES;
        return 0;
}

int process_find_executable(const struct spec_process *proc, char **out, cap_error_t *err)
{
        const char *name = proc->args ? proc->args[0] : NULL;
        const char *path = DEFAULT_PATH;
        bool denied = false;
        int e;

        *out = NULL;
        if (!name || !*name)
                return cap_fail(err, 0, "process.args: no command given");
        if (strchr(name, '/')) {
                e = executable_check(name);
                if (e == EACCES)
                        return cap_fail(err, 0, "exec: \"%s\": permission denied", name);
                if (e == ENOENT)
                        return cap_fail(err, 0, "exec: \"%s\": stat %s: no such file or directory", name, name);
                if (e)
                        return cap_fail(err, e, "exec: \"%s\": stat %s", name, name);
                *out = xstrdup(name);
                return 0;
        }
        for (size_t i = 0; proc->env && proc->env[i]; i++) {
                if (str_has_prefix(proc->env[i], "PATH=")) {
                        path = proc->env[i] + strlen("PATH=");
                        break;
                }
        }
        /* Split by hand: an empty entry means the current directory, as for execvp. */
        for (const char *p = path;;) {
                size_t n = strcspn(p, ":");
                cleanup_free char *candidate = n ? xasprintf("%.*s/%s", (int)n, p, name) : xasprintf("./%s", name);

                e = executable_check(candidate);
                if (e == 0) {
                        *out = steal_pointer(&candidate);
                        return 0;
                }
                if (e == EACCES)
                        denied = true;
                if (!p[n])
                        break;
                p += n + 1;
        }
        if (denied)
                return cap_fail(err, 0, "exec: \"%s\": permission denied", name);
        return cap_fail(err, 0, "exec: \"%s\": executable file not found in $PATH", name);
}

const char *const *process_known_capabilities(void)
{
        static const char *names[ARRAY_SIZE(cap_names_by_value) + 1];
        static bool done;

        if (done)
                return names;
        int last = kernel_last_cap();
        int n = 0;
        for (int v = 0; v < (int)ARRAY_SIZE(cap_names_by_value) && (v <= last || v < (int)cap_max_bits()); v++) {
                char *s = cap_to_name(v);
                if (!s)
                        break;
                /* libcap prints capabilities it has no name for as numbers. */
                if (str_has_prefix(s, "cap_")) {
                        char *upper = xstrdup(s);
                        for (char *q = upper; *q; q++)
                                *q = (*q >= 'a' && *q <= 'z') ? *q - 'a' + 'A' : *q;
                        cap_names_by_value[v] = upper;
                        names[n++] = upper;
                }
                cap_free(s);
        }
        names[n] = NULL;
        done = true;
        return names;
}
