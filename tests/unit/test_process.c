#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "runtime/process.h"

#define NAMES(...) ((char *[]){ __VA_ARGS__, NULL })

/* Prepare proc, then apply it in a forked child and run verify there; returns
 * the child's exit code (0: all good), or -1 if prepare failed or the child died. */
static int apply_in_child(const struct spec_process *proc, const char *domain, int (*verify)(void))
{
        struct process_prep *prep = NULL;
        cap_error_t err = NULL;
        int status;

        if (process_prepare(proc, domain, &prep, &err) < 0) {
                fprintf(stderr, "process_prepare: %s\n", err->msg);
                cap_error_free(&err);
                return -1;
        }
        pid_t pid = fork();
        if (pid == 0) {
                if (process_apply_oom(prep, &err) < 0 || process_apply_early(prep, &err) < 0 || process_apply_final(prep, &err) < 0) {
                        fprintf(stderr, "apply: %s\n", err->msg);
                        _exit(100);
                }
                _exit(verify());
        }
        process_prep_free(prep);
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
                return -1;
        return WEXITSTATUS(status);
}

static char *prepare_error(const struct spec_process *proc, const char *domain)
{
        struct process_prep *prep = NULL;
        cap_error_t err = NULL;
        char *msg;

        if (process_prepare(proc, domain, &prep, &err) == 0) {
                process_prep_free(prep);
                return NULL;
        }
        msg = xstrdup(err->msg);
        cap_error_free(&err);
        return msg;
}

/* Whether a /proc/self/status line has the value want, e.g. status_is("CapEff", "0000000000000020"). */
static bool status_is(const char *field, const char *want)
{
        cleanup_file FILE *f = fopen("/proc/self/status", "re");
        char line[512];
        size_t n = strlen(field);

        while (f && fgets(line, sizeof(line), f)) {
                if (strncmp(line, field, n) == 0 && line[n] == ':') {
                        char *v = line + n + 1;
                        v += strspn(v, " \t");
                        v[strcspn(v, "\n")] = '\0';
                        /* Groups: ends with a space. */
                        for (size_t len = strlen(v); len && v[len - 1] == ' '; len--)
                                v[len - 1] = '\0';
                        if (strcmp(v, want) != 0)
                                fprintf(stderr, "%s: got \"%s\", want \"%s\"\n", field, v, want);
                        return strcmp(v, want) == 0;
                }
        }
        return false;
}

static int verify_early(void)
{
        struct rlimit rl;
        char buf[16] = "";
        FILE *f;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur != 100 || rl.rlim_max != 200)
                return 1;
        if (getrlimit(RLIMIT_CORE, &rl) < 0 || rl.rlim_cur != 0 || rl.rlim_max != 0)
                return 2;
        f = fopen("/proc/self/oom_score_adj", "re");
        if (!f || !fgets(buf, sizeof(buf), f) || atoi(buf) != 500)
                return 3;
        fclose(f);
        return 0;
}

TEST(rlimits_and_oom_score_adj)
{
        struct spec_rlimit rlimits[] = {
                { RLIMIT_NOFILE, "RLIMIT_NOFILE", 100, 200 },
                { RLIMIT_CORE, "RLIMIT_CORE", 0, 0 },
        };
        struct spec_process proc = { .rlimits = rlimits, .n_rlimits = 2, .oom_score_adj = { true, 500 } };

        CHECK(apply_in_child(&proc, NULL, verify_early) == 0);
}

static int verify_user_caps(void)
{
        if (!status_is("Uid", "1000\t1000\t1000\t1000") || !status_is("Gid", "1000\t1000\t1000\t1000"))
                return 1;
        if (!status_is("Groups", "5 6"))
                return 2;
        if (!status_is("CapBnd", "0000000000000020") || !status_is("CapEff", "0000000000000020") ||
            !status_is("CapPrm", "0000000000000020") || !status_is("CapInh", "0000000000000000") ||
            !status_is("CapAmb", "0000000000000000"))
                return 3;
        if (!status_is("NoNewPrivs", "0"))
                return 4;
        return 0;
}

TEST(user_groups_and_capabilities)
{
        uint32_t gids[] = { 5, 6 };
        struct spec_capabilities caps = {
                .bounding = NAMES("CAP_KILL"),
                .effective = NAMES("CAP_KILL"),
                .permitted = NAMES("CAP_KILL"),
                .ambient = NAMES(NULL),
        };
        struct spec_process proc = {
                .user = { .uid = 1000, .gid = 1000, .additional_gids = gids, .n_additional_gids = 2 },
                .capabilities = &caps,
        };

        CHECK(apply_in_child(&proc, NULL, verify_user_caps) == 0);
}

static int verify_ambient(void)
{
        /* CAP_NET_BIND_SERVICE is 10, CAP_KILL 5. */
        if (!status_is("Uid", "1000\t1000\t1000\t1000"))
                return 1;
        if (!status_is("CapBnd", "0000000000000420") || !status_is("CapEff", "0000000000000400") ||
            !status_is("CapPrm", "0000000000000420") || !status_is("CapInh", "0000000000000400") ||
            !status_is("CapAmb", "0000000000000400"))
                return 2;
        return 0;
}

TEST(ambient_capabilities_are_raised)
{
        struct spec_capabilities caps = {
                .bounding = NAMES("CAP_NET_BIND_SERVICE", "CAP_KILL"),
                .effective = NAMES("CAP_NET_BIND_SERVICE"),
                .permitted = NAMES("CAP_NET_BIND_SERVICE", "CAP_KILL"),
                .inheritable = NAMES("CAP_NET_BIND_SERVICE"),
                .ambient = NAMES("CAP_NET_BIND_SERVICE"),
        };
        struct spec_process proc = { .user = { .uid = 1000, .gid = 1000 }, .capabilities = &caps };

        CHECK(apply_in_child(&proc, NULL, verify_ambient) == 0);
}

static int verify_no_caps(void)
{
        if (!status_is("Uid", "0\t0\t0\t0") || !status_is("Groups", ""))
                return 1;
        if (!status_is("CapBnd", "0000000000000000") || !status_is("CapEff", "0000000000000000") ||
            !status_is("CapPrm", "0000000000000000"))
                return 2;
        return status_is("NoNewPrivs", "1") ? 0 : 3;
}

TEST(no_capabilities_and_no_new_privileges)
{
        struct spec_process proc = { .no_new_privileges = true };

        CHECK(apply_in_child(&proc, NULL, verify_no_caps) == 0);
}

static int verify_no_ambient(void)
{
        return status_is("CapAmb", "0000000000000000") ? 0 : 1;
}

TEST(ambient_without_inheritable_is_skipped)
{
        struct spec_capabilities caps = {
                .bounding = NAMES("CAP_KILL"),
                .effective = NAMES("CAP_KILL"),
                .permitted = NAMES("CAP_KILL"),
                .ambient = NAMES("CAP_KILL"),
        };
        struct spec_process proc = { .user = { .uid = 1000, .gid = 1000 }, .capabilities = &caps };

        struct process_prep *prep = NULL;
        cap_error_t err = NULL;
        int status = -1;

        CHECK(process_prepare(&proc, NULL, &prep, &err) == 0);
        pid_t pid = fork();
        if (pid == 0)
                _exit(process_apply_final(prep, &err) == 0 ? verify_no_ambient() : 1);
        process_prep_free(prep);
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int verify_umask_077(void)
{
        return umask(0) == 077 ? 0 : 1;
}

static int verify_umask_022(void)
{
        return umask(0) == 022 ? 0 : 1;
}

TEST(umask_given_or_default)
{
        struct spec_process proc = { .user = { .umask = { true, 077 } } };
        CHECK(apply_in_child(&proc, NULL, verify_umask_077) == 0);

        umask(0);
        struct spec_process dflt = { 0 };
        CHECK(apply_in_child(&dflt, NULL, verify_umask_022) == 0);
        umask(022);
}

static int verify_ioprio(void)
{
        /* IOPRIO_WHO_PROCESS, class BE (2) << 13 | 3 */
        return syscall(SYS_ioprio_get, 1, 0) == ((2 << 13) | 3) ? 0 : 1;
}

TEST(io_priority)
{
        struct spec_process proc = { .io_priority = { .set = true, .class_name = "IOPRIO_CLASS_BE", .priority = 3 } };

        CHECK(apply_in_child(&proc, NULL, verify_ioprio) == 0);
}

static int verify_batch(void)
{
        if (sched_getscheduler(0) != SCHED_BATCH)
                return 1;
        errno = 0;
        return getpriority(PRIO_PROCESS, 0) == 5 && errno == 0 ? 0 : 2;
}

TEST(scheduler_batch_with_nice)
{
        struct spec_process proc = { .scheduler = { .set = true, .policy = "SCHED_BATCH", .nice = 5 } };

        CHECK(apply_in_child(&proc, NULL, verify_batch) == 0);
}

static int verify_linux32(void)
{
        return (personality(0xffffffff) & PER_MASK) == PER_LINUX32 ? 0 : 1;
}

TEST(personality_linux32)
{
        struct spec_process proc = { 0 };

        CHECK(apply_in_child(&proc, "LINUX32", verify_linux32) == 0);
}

static int verify_nothing(void)
{
        return 0;
}

TEST(rlimit_error_names_the_type)
{
        /* Unprivileged, the hard limit cannot be raised above the current one. */
        struct spec_rlimit rlimits[] = { { RLIMIT_NOFILE, "RLIMIT_NOFILE", 10, 20 } };
        struct spec_process proc = { .rlimits = rlimits, .n_rlimits = 1 };
        struct process_prep *prep = NULL;
        cap_error_t err = NULL;
        int status = -1;

        CHECK(process_prepare(&proc, NULL, &prep, &err) == 0);
        pid_t pid = fork();
        if (pid == 0) {
                struct rlimit low = { 5, 5 };
                setrlimit(RLIMIT_NOFILE, &low);
                _exit(process_apply_early(prep, &err) < 0 && err->errnum == EPERM &&
                                      strcmp(err->msg, "process.rlimits: setrlimit RLIMIT_NOFILE: Operation not permitted") == 0 ?
                              0 : 1);
        }
        process_prep_free(prep);
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(security_labels_are_skipped_when_the_host_lacks_the_lsm)
{
        struct spec_process proc = { .apparmor_profile = "capsule-test-profile", .selinux_label = "system_u:system_r:container_t:s0" };

        if (access("/sys/kernel/security/apparmor", F_OK) == 0 || access("/sys/fs/selinux/enforce", F_OK) == 0)
                SKIP("this host has AppArmor or SELinux");
        CHECK(apply_in_child(&proc, NULL, verify_nothing) == 0);
}

TEST(bad_values_name_the_field)
{
        struct spec_capabilities caps = { .bounding = NAMES("CAP_KILL", "CAP_CHOWN", "CAP_FOO") };
        struct spec_capabilities lower = { .ambient = NAMES("cap_kill") };
        struct spec_capabilities number = { .effective = NAMES("12") };
        struct spec_rlimit rl[] = { { RLIMIT_NOFILE, "RLIMIT_NOFILE", 300, 200 } };
        struct {
                struct spec_process proc;
                const char *domain;
                const char *want;
        } cases[] = {
                { { .capabilities = &caps }, NULL, "process.capabilities.bounding[2]: unknown capability \"CAP_FOO\"" },
                { { .capabilities = &lower }, NULL, "process.capabilities.ambient[0]: unknown capability \"cap_kill\"" },
                { { .capabilities = &number }, NULL, "process.capabilities.effective[0]: unknown capability \"12\"" },
                { { .rlimits = rl, .n_rlimits = 1 }, NULL,
                  "process.rlimits[0]: RLIMIT_NOFILE soft limit 300 is above the hard limit 200" },
                { { .oom_score_adj = { true, 1001 } }, NULL, "process.oomScoreAdj: 1001 out of range -1000..1000" },
                { { .scheduler = { .set = true, .policy = "SCHED_FAST" } }, NULL,
                  "process.scheduler.policy: unknown policy \"SCHED_FAST\"" },
                { { .scheduler = { .set = true, .policy = "SCHED_OTHER", .flags = NAMES("SCHED_FLAG_RECLAIM", "SCHED_FLAG_X") } },
                  NULL, "process.scheduler.flags[1]: unknown flag \"SCHED_FLAG_X\"" },
                { { .scheduler = { .set = true, .policy = "SCHED_BATCH", .priority = 5 } }, NULL,
                  "process.scheduler.priority: only SCHED_FIFO and SCHED_RR take a priority" },
                { { .scheduler = { .set = true, .policy = "SCHED_OTHER", .nice = 20 } }, NULL,
                  "process.scheduler.nice: 20 out of range -20..19" },
                { { .io_priority = { .set = true, .class_name = "IOPRIO_CLASS_FAST" } }, NULL,
                  "process.ioPriority.class: unknown class \"IOPRIO_CLASS_FAST\"" },
                { { .io_priority = { .set = true, .class_name = "IOPRIO_CLASS_RT", .priority = 8 } }, NULL,
                  "process.ioPriority.priority: 8 out of range 0..7" },
                { { 0 }, "LINUX64", "linux.personality.domain: unknown domain \"LINUX64\"" },
        };

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                cleanup_free char *msg = prepare_error(&cases[i].proc, cases[i].domain);
                if (!msg || strcmp(msg, cases[i].want) != 0)
                        fprintf(stderr, "case %zu: got \"%s\"\n", i, msg ? msg : "(success)");
                CHECK_STR(msg, cases[i].want);
        }
}

static char *find(char **args, char **env, char **errmsg)
{
        struct spec_process proc = { .args = args, .env = env };
        cap_error_t err = NULL;
        char *out = NULL;

        *errmsg = NULL;
        if (process_find_executable(&proc, &out, &err) < 0) {
                *errmsg = xstrdup(err->msg);
                cap_error_free(&err);
        }
        return out;
}

TEST(find_executable)
{
        char dir[] = "/tmp/capsule-process-XXXXXX";
        CHECK(mkdtemp(dir));
        cleanup_free char *tool = xasprintf("%s/mytool", dir);
        cleanup_free char *noexec = xasprintf("%s/noexec", dir);
        cleanup_free char *path_env = xasprintf("PATH=/nonexistent::%s", dir);
        cleanup_free char *found = NULL, *abs = NULL, *sh = NULL, *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL, *m5 = NULL, *m6 = NULL, *m7 = NULL, *m8 = NULL;
        cap_error_t err = NULL;

        bool setup = write_file(tool, "#!/bin/sh\n", 10, &err) == 0 && chmod(tool, 0755) == 0 &&
                     write_file(noexec, "data", 4, &err) == 0 && chmod(noexec, 0644) == 0;
        cap_error_free(&err);
        if (setup) {
                char **env = NAMES("HOME=/", path_env);
                found = find(NAMES("mytool"), env, &m1);
                free(find(NAMES("nothere"), env, &m2));
                free(find(NAMES(noexec), env, &m3));
                free(find(NAMES("/nonexistent/x"), env, &m4));
                free(find(NAMES(dir), env, &m5));
                free(find(NAMES("noexec"), env, &m6));
                abs = find(NAMES(tool), env, &m7);
                sh = find(NAMES("sh"), NAMES("HOME=/"), &m8);
        }
        unlink(tool);
        unlink(noexec);
        rmdir(dir);
        CHECK(setup);
        CHECK_STR(found, tool);
        CHECK_STR(abs, tool);
        CHECK_STR(m2, "exec: \"nothere\": executable file not found in $PATH");
        CHECK(m3 && strstr(m3, "permission denied"));
        CHECK_STR(m4, "exec: \"/nonexistent/x\": stat /nonexistent/x: no such file or directory");
        CHECK(m5 && strstr(m5, "permission denied"));
        CHECK(m6 && strstr(m6, "permission denied"));
        /* The default PATH applies when the env has none. */
        CHECK(sh && str_has_prefix(sh, "/") && access(sh, X_OK) == 0);
}

TEST(known_capabilities)
{
        const char *const *names = process_known_capabilities();
        cleanup_free char *last = NULL;
        cleanup_error cap_error_t err = NULL;
        size_t n = 0;

        CHECK(read_file("/proc/sys/kernel/cap_last_cap", &last, NULL, 0, &err) == 0);
        while (names[n])
                n++;
        CHECK(n >= (size_t)atoi(last) + 1);
        CHECK_STR(names[0], "CAP_CHOWN");
        CHECK_STR(names[5], "CAP_KILL");
        CHECK(strv_contains((char *const *)names, "CAP_SYS_ADMIN"));
}
