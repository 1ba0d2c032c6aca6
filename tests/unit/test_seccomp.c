#include <errno.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "common/util.h"
#include "runtime/seccomp.h"

#define NAMES(...) ((char *[]){ __VA_ARGS__, NULL })

/* Run fn in a forked child and return its wait status. */
static int run_child(int (*fn)(const struct seccomp_prog *), const struct seccomp_prog *prog)
{
        int status;
        pid_t pid = fork();

        if (pid == 0)
                _exit(fn(prog));
        if (pid < 0 || waitpid(pid, &status, 0) != pid)
                return -1;
        return status;
}

static bool exited_ok(int status)
{
        return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int load(const struct seccomp_prog *prog)
{
        cap_error_t err = NULL;

        if (seccomp_prog_load(prog, 0, NULL, &err) < 0) {
                fprintf(stderr, "%s\n", err->msg);
                cap_error_free(&err);
                return 1;
        }
        return 0;
}

static struct seccomp_prog *prepare(const struct spec_seccomp *sc)
{
        struct seccomp_prog *prog = NULL;
        cap_error_t err = NULL;

        if (seccomp_prepare(sc, &prog, &err) < 0) {
                fprintf(stderr, "seccomp_prepare: %s\n", err->msg);
                cap_error_free(&err);
        }
        return prog;
}

/* The error message of a failing prepare, or NULL if it succeeded. */
static char *prepare_error(const struct spec_seccomp *sc)
{
        struct seccomp_prog *prog = NULL;
        cap_error_t err = NULL;
        char *msg;

        if (seccomp_prepare(sc, &prog, &err) == 0) {
                seccomp_prog_free(prog);
                return NULL;
        }
        msg = xstrdup(err->msg);
        cap_error_free(&err);
        return msg;
}

static int child_uname_errno(const struct seccomp_prog *prog)
{
        struct utsname u;

        if (load(prog))
                return 1;
        if (uname(&u) == 0 || errno != 42)
                return 2;
        if (getpid() <= 0 || access("/", F_OK) < 0)
                return 3;
        return 0;
}

TEST(errno_rule_denies_only_that_syscall)
{
        struct spec_seccomp_syscall calls[] = {
                { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO", .errno_ret = { true, 42 } },
        };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_uname_errno, prog)));
        seccomp_prog_free(prog);
}

static int child_errno_default_eperm(const struct seccomp_prog *prog)
{
        struct utsname u;

        if (load(prog))
                return 1;
        return uname(&u) < 0 && errno == EPERM ? 0 : 2;
}

TEST(errno_without_errnoret_is_eperm)
{
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO" } };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_errno_default_eperm, prog)));
        seccomp_prog_free(prog);
}

static int child_personality_arg(const struct seccomp_prog *prog)
{
        if (load(prog))
                return 1;
        if (syscall(SYS_personality, 0xffffffffUL) != -1 || errno != 43)
                return 2;
        /* 0xffffffff only queries; any other value must pass the filter. */
        if (syscall(SYS_personality, 0UL) < 0)
                return 3;
        return 0;
}

TEST(argument_condition)
{
        struct spec_seccomp_arg args[] = { { .index = 0, .value = 0xffffffff, .op = "SCMP_CMP_EQ" } };
        struct spec_seccomp_syscall calls[] = {
                { .names = NAMES("personality"), .action = "SCMP_ACT_ERRNO", .errno_ret = { true, 43 }, .args = args, .n_args = 1 },
        };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_personality_arg, prog)));
        seccomp_prog_free(prog);
}

static int child_getpgid_dup(const struct seccomp_prog *prog)
{
        if (load(prog))
                return 1;
        if (getpgid(1111) != -1 || errno != 44)
                return 2;
        if (getpgid(2222) != -1 || errno != 44)
                return 3;
        if (getpgid(0) < 0)
                return 4;
        return 0;
}

TEST(same_argument_twice_makes_one_rule_per_condition)
{
        struct spec_seccomp_arg args[] = {
                { .index = 0, .value = 1111, .op = "SCMP_CMP_EQ" },
                { .index = 0, .value = 2222, .op = "SCMP_CMP_EQ" },
        };
        struct spec_seccomp_syscall calls[] = {
                { .names = NAMES("getpgid"), .action = "SCMP_ACT_ERRNO", .errno_ret = { true, 44 }, .args = args, .n_args = 2 },
        };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_getpgid_dup, prog)));
        seccomp_prog_free(prog);
}

static int child_masked_eq(const struct seccomp_prog *prog)
{
        if (load(prog))
                return 1;
        /* arg & 0xff00 must equal 0x1200: 0x1234 matches; 0x1300 would match the swapped mask 0x1200. */
        if (getpgid(0x1234) != -1 || errno != 45)
                return 2;
        if (getpgid(0x1300) != -1 || errno != ESRCH)
                return 3;
        if (getpgid(0x3412) != -1 || errno != ESRCH)
                return 4;
        return 0;
}

TEST(masked_eq_uses_value_two)
{
        struct spec_seccomp_arg args[] = { { .index = 0, .value = 0xff00, .value_two = 0x1200, .op = "SCMP_CMP_MASKED_EQ" } };
        struct spec_seccomp_syscall calls[] = {
                { .names = NAMES("getpgid"), .action = "SCMP_ACT_ERRNO", .errno_ret = { true, 45 }, .args = args, .n_args = 1 },
        };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_masked_eq, prog)));
        seccomp_prog_free(prog);
}

TEST(unknown_syscall_names_its_path)
{
        struct spec_seccomp_syscall calls[] = {
                { .names = NAMES("getpid"), .action = "SCMP_ACT_ERRNO" },
                { .names = NAMES("uname", "foo"), .action = "SCMP_ACT_ERRNO" },
        };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 2 };
        cleanup_free char *msg = prepare_error(&sc);

        CHECK_STR(msg, "linux.seccomp.syscalls[1].names[1]: unknown syscall \"foo\"");
}

TEST(unknown_syscall_fails_even_with_the_default_action)
{
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("foo"), .action = "SCMP_ACT_ALLOW" } };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        cleanup_free char *msg = prepare_error(&sc);

        CHECK_STR(msg, "linux.seccomp.syscalls[0].names[0]: unknown syscall \"foo\"");
}

TEST(other_architectures_syscalls_are_known)
{
        struct spec_seccomp_syscall calls[] = {
                { .names = NAMES("arm_fadvise64_64", "socketcall", "uname"), .action = "SCMP_ACT_ERRNO" },
        };
        struct spec_seccomp sc = {
                .default_action = "SCMP_ACT_ALLOW",
                .architectures = NAMES("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
                .syscalls = calls,
                .n_syscalls = 1,
        };
        cleanup_free char *msg = prepare_error(&sc);

        CHECK(msg == NULL);
}

TEST(bad_values_name_the_field)
{
        struct spec_seccomp_arg bad_op[] = { { .index = 0, .value = 1, .op = "SCMP_CMP_XX" } };
        struct spec_seccomp_arg bad_index[] = { { .index = 6, .value = 1, .op = "SCMP_CMP_EQ" } };
        struct spec_seccomp_syscall bad_action[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_BOGUS" } };
        struct spec_seccomp_syscall op[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO", .args = bad_op, .n_args = 1 } };
        struct spec_seccomp_syscall index[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO", .args = bad_index, .n_args = 1 } };
        struct spec_seccomp_syscall notify[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_NOTIFY" } };
        struct {
                struct spec_seccomp sc;
                const char *want;
        } cases[] = {
                { { .default_action = "SCMP_ACT_ALLOW", .syscalls = bad_action, .n_syscalls = 1 },
                  "linux.seccomp.syscalls[0].action: unknown action \"SCMP_ACT_BOGUS\"" },
                { { .default_action = "SCMP_ACT_NOPE" }, "linux.seccomp.defaultAction: unknown action \"SCMP_ACT_NOPE\"" },
                { { .default_action = "SCMP_ACT_ALLOW", .architectures = NAMES("SCMP_ARCH_Z80") },
                  "linux.seccomp.architectures[0]: unknown architecture \"SCMP_ARCH_Z80\"" },
                { { .default_action = "SCMP_ACT_ALLOW", .flags = NAMES("SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_X") },
                  "linux.seccomp.flags[1]: unknown flag \"SECCOMP_FILTER_FLAG_X\"" },
                { { .default_action = "SCMP_ACT_ALLOW", .syscalls = op, .n_syscalls = 1 },
                  "linux.seccomp.syscalls[0].args[0].op: unknown operator \"SCMP_CMP_XX\"" },
                { { .default_action = "SCMP_ACT_ALLOW", .syscalls = index, .n_syscalls = 1 },
                  "linux.seccomp.syscalls[0].args[0].index: 6 out of range 0-5" },
                { { .default_action = "SCMP_ACT_ALLOW", .syscalls = notify, .n_syscalls = 1 },
                  "linux.seccomp.listenerPath: required with SCMP_ACT_NOTIFY" },
                { { .default_action = "SCMP_ACT_ALLOW", .flags = NAMES("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") },
                  "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY rules" },
        };

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                cleanup_free char *msg = prepare_error(&cases[i].sc);
                if (!msg || strcmp(msg, cases[i].want) != 0)
                        fprintf(stderr, "case %zu: got \"%s\"\n", i, msg ? msg : "(success)");
                CHECK_STR(msg, cases[i].want);
        }
}

static int child_uname(const struct seccomp_prog *prog)
{
        struct utsname u;

        if (load(prog))
                return 1;
        return uname(&u) == 0 ? 0 : 2;
}

TEST(kill_actions_kill_with_sigsys)
{
        const char *actions[] = { "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS" };

        for (size_t i = 0; i < ARRAY_SIZE(actions); i++) {
                struct spec_seccomp_syscall calls[] = { { .names = NAMES("uname"), .action = (char *)actions[i] } };
                struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
                struct seccomp_prog *prog = prepare(&sc);

                CHECK(prog);
                int status = run_child(child_uname, prog);
                seccomp_prog_free(prog);
                CHECK(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS);
        }
}

static void sigsys_handler(int sig, siginfo_t *info, void *uc)
{
        (void)uc;
        _exit(sig == SIGSYS && info->si_code == 1 /* SYS_SECCOMP */ && info->si_syscall == SYS_uname ? 0 : 4);
}

static int child_trap(const struct seccomp_prog *prog)
{
        struct sigaction sa = { .sa_sigaction = sigsys_handler, .sa_flags = SA_SIGINFO };
        struct utsname u;

        if (sigaction(SIGSYS, &sa, NULL) < 0 || load(prog))
                return 1;
        uname(&u);
        return 2;
}

TEST(trap_delivers_sigsys)
{
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_TRAP" } };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_trap, prog)));
        seccomp_prog_free(prog);
}

TEST(log_and_allow_let_the_syscall_run)
{
        struct spec_seccomp_syscall calls[] = {
                { .names = NAMES("uname"), .action = "SCMP_ACT_LOG" },
                { .names = NAMES("getppid"), .action = "SCMP_ACT_ALLOW" },
        };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 2 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_uname, prog)));
        seccomp_prog_free(prog);

        /* LOG as the default action, an ERRNO rule still applies. */
        struct spec_seccomp_syscall deny[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO", .errno_ret = { true, 42 } } };
        struct spec_seccomp sc2 = { .default_action = "SCMP_ACT_LOG", .syscalls = deny, .n_syscalls = 1 };
        prog = prepare(&sc2);
        CHECK(prog);
        CHECK(exited_ok(run_child(child_uname_errno, prog)));
        seccomp_prog_free(prog);
}

static int child_trace(const struct seccomp_prog *prog)
{
        struct utsname u;

        if (load(prog))
                return 1;
        /* Without a tracer the kernel fails a TRACE'd syscall with ENOSYS. */
        return uname(&u) < 0 && errno == ENOSYS ? 0 : 2;
}

TEST(trace_without_tracer_gives_enosys)
{
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_TRACE", .errno_ret = { true, 7 } } };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_trace, prog)));
        seccomp_prog_free(prog);
}

static int tsync_pipe[2];

static void *thread_uname(void *arg)
{
        struct utsname u;
        char c;

        (void)arg;
        if (read(tsync_pipe[0], &c, 1) != 1)
                return (void *)1;
        return (void *)(intptr_t)(uname(&u) < 0 && errno == 42 ? 0 : 2);
}

static int child_tsync(const struct seccomp_prog *prog)
{
        pthread_t t;
        void *ret;

        if (pipe(tsync_pipe) < 0 || pthread_create(&t, NULL, thread_uname, NULL) != 0)
                return 1;
        if (load(prog))
                return 2;
        if (write(tsync_pipe[1], "x", 1) != 1 || pthread_join(t, &ret) != 0)
                return 3;
        return ret == NULL ? 0 : 4;
}

TEST(tsync_flag_filters_other_threads)
{
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO", .errno_ret = { true, 42 } } };
        struct spec_seccomp sc = {
                .default_action = "SCMP_ACT_ALLOW",
                .flags = NAMES("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"),
                .syscalls = calls,
                .n_syscalls = 1,
        };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_tsync, prog)));
        seccomp_prog_free(prog);

        /* Without TSYNC the other thread stays unfiltered. */
        sc.flags = NULL;
        prog = prepare(&sc);
        CHECK(prog);
        CHECK(WEXITSTATUS(run_child(child_tsync, prog)) == 4);
        seccomp_prog_free(prog);
}

static int child_unprivileged(const struct seccomp_prog *prog)
{
        cap_t caps = cap_get_proc();
        cap_value_t admin = CAP_SYS_ADMIN;
        cap_error_t err = NULL;

        if (!caps || cap_set_flag(caps, CAP_EFFECTIVE, 1, &admin, CAP_CLEAR) < 0 || cap_set_proc(caps) < 0)
                return 1;
        if (seccomp_prog_load(prog, 0, NULL, &err) == 0 || err->errnum != EACCES || !strstr(err->msg, "no_new_privs"))
                return 2;
        cap_error_free(&err);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return 3;
        return child_uname_errno(prog) ? 4 : 0;
}

TEST(without_cap_sys_admin_loading_needs_no_new_privs)
{
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO", .errno_ret = { true, 42 } } };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog);
        CHECK(exited_ok(run_child(child_unprivileged, prog)));
        seccomp_prog_free(prog);
}

static const char state_json[] = "{\"ociVersion\":\"1.1.0\",\"id\":\"c1\",\"status\":\"created\",\"pid\":4321,\"bundle\":\"/b\"}";

static int child_notify(const struct seccomp_prog *prog)
{
        cap_error_t err = NULL;

        if (seccomp_prog_load(prog, 4321, state_json, &err) < 0) {
                fprintf(stderr, "%s\n", err->msg);
                return 1;
        }
        /* The supervisor in the parent answers 4242. */
        return getppid() == 4242 ? 0 : 2;
}

/* Load a NOTIFY filter for getppid in a child, answer its notification and return the message
 * that came with the listener fd (malloc'd, "" if none). */
static char *notify_roundtrip(const char *metadata, bool *child_ok)
{
        char dir[] = "/tmp/capsule-seccomp-XXXXXX";
        char body[4096] = "";
        int status = -1;

        *child_ok = false;
        if (!mkdtemp(dir))
                return xstrdup("");
        cleanup_free char *path = xasprintf("%s/agent.sock", dir);
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("getppid"), .action = "SCMP_ACT_NOTIFY" } };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .listener_path = path, .listener_metadata = (char *)metadata,
                                   .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);
        cleanup_close int srv = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un addr = { .sun_family = AF_UNIX };

        strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
        bool listening = prog && seccomp_prog_notifies(prog) && srv >= 0 && bind(srv, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
                         listen(srv, 1) == 0;
        pid_t pid = listening ? fork() : -1;
        if (pid == 0)
                _exit(child_notify(prog));
        if (pid > 0) {
                cleanup_close int conn = accept4(srv, NULL, NULL, SOCK_CLOEXEC);
                cleanup_close int listener = -1;
                struct seccomp_notif req;
                struct seccomp_notif_resp resp;

                if (conn >= 0 && recv_fd(conn, &listener, body, sizeof(body) - 1) >= 0 && listener >= 0) {
                        memset(&req, 0, sizeof(req));
                        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) == 0 && req.data.nr == SYS_getppid) {
                                resp = (struct seccomp_notif_resp){ .id = req.id, .val = 4242 };
                                ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
                        }
                }
                if (listener < 0)
                        kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
        }
        unlink(path);
        rmdir(dir);
        seccomp_prog_free(prog);
        *child_ok = exited_ok(status);
        return xstrdup(body);
}

TEST(notify_sends_listener_and_container_process_state)
{
        bool child_ok;
        cleanup_free char *body = notify_roundtrip("MKNOD=/dev/null", &child_ok);
        json_error_t jerr;
        json_t *msg = json_loads(body, 0, &jerr);
        json_t *want_state = json_loads(state_json, 0, &jerr);

        CHECK(child_ok);
        CHECK(json_is_object(msg));
        CHECK_STR(json_string_value(json_object_get(msg, "ociVersion")), "1.1.0");
        json_t *fds = json_object_get(msg, "fds");
        CHECK(json_array_size(fds) == 1);
        CHECK_STR(json_string_value(json_array_get(fds, 0)), "seccompFd");
        CHECK(json_integer_value(json_object_get(msg, "pid")) == 4321);
        CHECK_STR(json_string_value(json_object_get(msg, "metadata")), "MKNOD=/dev/null");
        CHECK(json_equal(json_object_get(msg, "state"), want_state));
        CHECK(json_object_size(msg) == 5);
        json_decref(msg);
        json_decref(want_state);
}

TEST(notify_without_metadata_leaves_it_out)
{
        bool child_ok;
        cleanup_free char *body = notify_roundtrip(NULL, &child_ok);
        json_error_t jerr;
        json_t *msg = json_loads(body, 0, &jerr);

        CHECK(child_ok);
        CHECK(json_is_object(msg));
        CHECK(json_object_get(msg, "metadata") == NULL);
        CHECK(json_integer_value(json_object_get(msg, "pid")) == 4321);
        CHECK(json_is_object(json_object_get(msg, "state")));
        json_decref(msg);
}

TEST(only_notify_rules_make_a_listener)
{
        struct spec_seccomp_syscall calls[] = { { .names = NAMES("uname"), .action = "SCMP_ACT_ERRNO" } };
        struct spec_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .syscalls = calls, .n_syscalls = 1 };
        struct seccomp_prog *prog = prepare(&sc);

        CHECK(prog && !seccomp_prog_notifies(prog));
        seccomp_prog_free(prog);
}
