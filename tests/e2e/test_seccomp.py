"""linux.seccomp as a user sees it: ERRNO rules, argument conditions, allowlists, KILL, LOG,
the LOG filter flag, NOTIFY with a listener, and exec'd processes under the same profile."""
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from seccomp_agent import recv_listener_message, serve_notifications

SYS_mkdir = 83  # x86_64
# SECCOMP_RET_LOG and SECCOMP_FILTER_FLAG_LOG write audit records: a kernel without
# CONFIG_AUDIT (e.g. the testbed's) has none to read, and no /proc/PID/loginuid either.
KERNEL_AUDIT = os.path.exists("/proc/self/loginuid")
NO_AUDIT = "kernel without CONFIG_AUDIT: seccomp's LOG records do not exist"

# Enough for busybox sh and its applets (echo, cat, ls, uname, sleep), plus what the runtime
# calls after loading the filter (execve).
BUSYBOX_SYSCALLS = [
    "read", "write", "close", "close_range", "mmap", "mprotect", "munmap", "brk", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "ioctl", "dup", "dup2", "dup3", "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid",
    "sendfile", "clone", "clone3", "fork", "vfork", "execve", "wait4", "uname", "fcntl", "readlink", "prctl",
    "arch_prctl", "getdents64", "set_tid_address", "clock_nanosleep", "nanosleep", "open", "openat", "stat", "lstat",
    "fstat", "newfstatat", "statx", "set_robust_list", "prlimit64", "getrandom", "rseq", "exit", "exit_group",
    "lseek", "access", "faccessat", "faccessat2", "getcwd", "chdir", "pipe", "pipe2", "poll", "futex", "sigaltstack",
    "getpgrp", "setpgid", "getrlimit", "times", "clock_gettime", "kill", "tgkill", "sysinfo", "madvise",
]


def seccomp_run(capsule, bundle, seccomp, *args):
    bundle.config["linux"]["seccomp"] = seccomp
    bundle.set_args(*args)
    return capsule.run("run", "-b", bundle.path, bundle.id)


def deny_mkdir(action="SCMP_ACT_ERRNO", **extra):
    rule = dict({"names": ["mkdir", "mkdirat"], "action": action}, **extra)
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [rule]}


def test_errno_rule_default_eperm(capsule, bundle):
    p = seccomp_run(capsule, bundle, deny_mkdir(), "sh", "-c", "mkdir /tmp/x; echo rc=$?; ls -d /tmp/x")
    assert "can't create directory '/tmp/x': Operation not permitted" in p.stderr
    assert "rc=1" in p.stdout
    assert p.returncode != 0  # ls finds nothing


def test_errno_rule_with_errno_ret(capsule, bundle):
    p = seccomp_run(capsule, bundle, deny_mkdir(errnoRet=38), "mkdir", "/tmp/x")
    assert p.returncode == 1
    assert "can't create directory '/tmp/x': Function not implemented" in p.stderr


def test_without_seccomp_mkdir_works(capsule, bundle):
    bundle.config["linux"].pop("seccomp", None)
    bundle.set_args("sh", "-c", "mkdir /tmp/x && echo made")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0 and p.stdout == "made\n", p.stderr


def test_argument_condition_personality(capsule, bundle):
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
        "names": ["personality"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}  # PER_LINUX32
    p = seccomp_run(capsule, bundle, sc, "sh", "-c", "uname -m; linux64 uname -m; linux32 uname -m; echo rc=$?")
    lines = p.stdout.splitlines()
    machine = os.uname().machine
    # personality(PER_LINUX) is allowed, personality(PER_LINUX32) is not
    assert lines == [machine, machine, "rc=1"], (p.stdout, p.stderr)
    assert "Operation not permitted" in p.stderr


def test_argument_condition_socket_domain(capsule, bundle):
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
        "names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,  # EAFNOSUPPORT
        "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}  # AF_INET
    p = seccomp_run(capsule, bundle, sc, "sh", "-c", "nc 127.0.0.1 1; nc ::1 1; true")
    assert p.returncode == 0
    errs = p.stderr.splitlines()
    assert errs[0] == "nc: socket: Address family not supported by protocol", p.stderr
    # AF_INET6 gets a socket, then fails for the usual reason (no address in a new netns)
    assert len(errs) == 2 and "can't connect" in errs[1] and "Address family" not in errs[1], p.stderr


def test_argument_condition_masked_eq(capsule, bundle):
    # open/openat with O_CREAT (0o100) in flags: file creation denied, reading allowed
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 2, "value": 0o100, "valueTwo": 0o100,
                                                                     "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["open"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 0o100, "valueTwo": 0o100,
                                                                   "op": "SCMP_CMP_MASKED_EQ"}]}]}
    # (a shell redirection would open with O_CREAT itself: read through a pipe)
    p = seccomp_run(capsule, bundle, sc, "sh", "-c", "cat /etc/passwd | grep -c root; echo x > /tmp/new")
    assert p.stdout == "1\n", p.stderr
    assert "Operation not permitted" in p.stderr and p.returncode != 0


def test_default_errno_with_allowlist(capsule, bundle):
    sc = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": BUSYBOX_SYSCALLS, "action": "SCMP_ACT_ALLOW"}]}
    p = seccomp_run(capsule, bundle, sc, "sh", "-c", "echo hi; cat /etc/group; uname -s; mkdir /tmp/x; echo rc=$?")
    assert p.stdout == "hi\nroot:x:0:\nnogroup:x:65534:\nLinux\nrc=1\n", p.stderr
    assert "can't create directory '/tmp/x': Operation not permitted" in p.stderr


def test_default_errno_ret(capsule, bundle):
    sc = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
          "syscalls": [{"names": BUSYBOX_SYSCALLS, "action": "SCMP_ACT_ALLOW"}]}
    p = seccomp_run(capsule, bundle, sc, "sh", "-c", "echo hi; mkdir /tmp/x")
    assert p.stdout == "hi\n" and "Function not implemented" in p.stderr


def test_allowlist_missing_execve_fails_to_start(capsule, bundle):
    calls = [c for c in BUSYBOX_SYSCALLS if c != "execve"]
    sc = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": calls, "action": "SCMP_ACT_ALLOW"}]}
    p = seccomp_run(capsule, bundle, sc, "true")
    assert p.returncode != 0 and "exec" in p.stderr and "Operation not permitted" in p.stderr


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"])
def test_kill_action_sigsys(capsule, bundle, action):
    p = seccomp_run(capsule, bundle, deny_mkdir(action), "mkdir", "/tmp/x")
    assert p.returncode == 128 + 31  # SIGSYS
    assert not os.path.exists(os.path.join(bundle.rootfs, "tmp", "x"))


def test_kill_action_seen_by_shell(capsule, bundle):
    p = seccomp_run(capsule, bundle, deny_mkdir("SCMP_ACT_KILL"), "sh", "-c", "mkdir /tmp/x; echo status=$?")
    assert p.stdout == "status=159\n"


def seccomp_audit_lines(pid):
    """The kernel's audit records (type 1326 = AUDIT_SECCOMP) for pid."""
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [l for l in out if "type=1326" in l and re.search(rf"\bpid={pid}\b", l)]


def run_until_stopped(capsule, bundle, seccomp, *args):
    """create + start and wait for the process to exit; returns its host pid."""
    bundle.config["linux"]["seccomp"] = seccomp
    bundle.set_args(*args)
    capsule.run("create", "-b", bundle.path, bundle.id, check=True)
    pid = capsule.state(bundle.id)["pid"]
    capsule.run("start", bundle.id, check=True)
    deadline = time.time() + 10
    while capsule.status(bundle.id) != "stopped":
        assert time.time() < deadline
        time.sleep(0.05)
    return pid


def run_init_as(capsule, bundle, seccomp, *args):
    """create + start + delete, so the host pid of the process making the syscalls is known."""
    pid = run_until_stopped(capsule, bundle, seccomp, *args)
    capsule.run("delete", bundle.id, check=True)
    return pid


def logged_run(capsule, bundle, seccomp, *args):
    """Run and return the audit records of the container process. The kernel rate-limits
    these messages (printk_ratelimit: 10 per 5 s) without auditd, so retry after a pause."""
    for attempt in range(3):
        pid = run_init_as(capsule, bundle, seccomp, *args)
        deadline = time.time() + 2
        while time.time() < deadline:
            lines = seccomp_audit_lines(pid)
            if lines:
                return lines
            time.sleep(0.1)
        time.sleep(5)
    return []


def test_log_action_allows_and_logs(capsule, bundle):
    if not KERNEL_AUDIT:
        run_init_as(capsule, bundle, deny_mkdir("SCMP_ACT_LOG"), "mkdir", "/tmp/logged")
        assert os.path.isdir(os.path.join(bundle.rootfs, "tmp", "logged"))
        pytest.skip(NO_AUDIT)
    lines = logged_run(capsule, bundle, deny_mkdir("SCMP_ACT_LOG"), "mkdir", "/tmp/logged")
    assert os.path.isdir(os.path.join(bundle.rootfs, "tmp", "logged"))
    assert any(f"syscall={SYS_mkdir}" in l and "code=0x7ffc0000" in l for l in lines), lines  # SECCOMP_RET_LOG


def test_filter_flag_log(capsule, bundle):
    # with SECCOMP_FILTER_FLAG_LOG the kernel logs the ERRNO action too
    sc = deny_mkdir()
    sc["flags"] = ["SECCOMP_FILTER_FLAG_LOG"]
    if not KERNEL_AUDIT:
        run_init_as(capsule, bundle, sc, "mkdir", "/tmp/x")
        assert not os.path.exists(os.path.join(bundle.rootfs, "tmp", "x"))
        pytest.skip(NO_AUDIT)
    lines = logged_run(capsule, bundle, sc, "mkdir", "/tmp/x")
    assert any(f"syscall={SYS_mkdir}" in l and "code=0x50000" in l for l in lines), lines  # SECCOMP_RET_ERRNO (audit omits the errno)
    assert not os.path.exists(os.path.join(bundle.rootfs, "tmp", "x"))


def test_without_flag_log_errno_is_not_logged(capsule, bundle):
    pid = run_init_as(capsule, bundle, deny_mkdir(), "mkdir", "/tmp/x")
    time.sleep(0.5)
    assert seccomp_audit_lines(pid) == []


def test_unknown_flag_and_syscall_rejected(capsule, bundle):
    sc = deny_mkdir()
    sc["flags"] = ["SECCOMP_FILTER_FLAG_BOGUS"]
    p = seccomp_run(capsule, bundle, sc, "true")
    assert p.returncode != 0 and "SECCOMP_FILTER_FLAG_BOGUS" in p.stderr
    sc = deny_mkdir()
    sc["syscalls"][0]["names"].append("no_such_syscall")
    p = seccomp_run(capsule, bundle, sc, "true")
    assert p.returncode != 0 and "no_such_syscall" in p.stderr


def test_exec_gets_the_container_profile(capsule, bundle):
    bundle.config["linux"]["seccomp"] = deny_mkdir(errnoRet=38)
    bundle.set_args("sleep", "1000")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    p = capsule.run("exec", bundle.id, "mkdir", "/tmp/x")
    assert p.returncode == 1 and "Function not implemented" in p.stderr
    status = capsule.run("exec", bundle.id, "grep", "Seccomp:", "/proc/self/status", check=True).stdout
    assert status.split() == ["Seccomp:", "2"]


# ---- SCMP_ACT_NOTIFY ----

class Listener(threading.Thread):
    """Accepts capsule's connections on a unix socket, takes the seccomp fd and state JSON,
    and answers every notification with -EACCES, recording the syscall numbers."""

    def __init__(self, path, connections):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(20)
        self.connections = connections
        self.states = []
        self.syscalls = []
        self.error = None

    def answer(self, _notif_id, _pid, nr):
        self.syscalls.append(nr)
        return 0, -13, 0  # -EACCES

    def run(self):
        try:
            for _ in range(self.connections):
                conn, _ = self.sock.accept()
                with conn:
                    msg, fds = recv_listener_message(conn)
                self.states.append(json.loads(msg))
                assert len(fds) == 1, fds
                threading.Thread(target=serve_notifications, args=(fds[0], self.answer), daemon=True).start()
        except Exception as e:  # reported by the test
            self.error = e


def notify_profile(listener_path):
    return {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": listener_path,
            "listenerMetadata": "capsule-e2e",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}


def test_notify_listener_receives_fd_and_state(capsule, bundle, tmp_path):
    path = str(tmp_path / "listener.sock")
    lst = Listener(path, connections=1)
    lst.start()
    pid = run_until_stopped(capsule, bundle, notify_profile(path), "sh", "-c", "mkdir /tmp/x; echo rc=$?")
    lst.join(5)
    assert lst.error is None, lst.error
    assert len(lst.states) == 1
    # runtime-spec containerProcessState: the fd's name, the process's pid, the metadata, the state
    st = lst.states[0]
    assert st["ociVersion"] and st["fds"] == ["seccompFd"] and st["pid"] == pid
    assert st["metadata"] == "capsule-e2e"
    assert st["state"]["id"] == bundle.id and st["state"]["pid"] == pid
    assert st["state"]["bundle"] == os.path.realpath(bundle.path)
    assert set(st) == {"ociVersion", "fds", "pid", "metadata", "state"}
    assert lst.syscalls == [SYS_mkdir]
    assert not os.path.exists(os.path.join(bundle.rootfs, "tmp", "x"))


def test_notify_run_foreground_and_exec(capsule, bundle, tmp_path):
    path = str(tmp_path / "listener.sock")
    lst = Listener(path, connections=2)
    lst.start()
    bundle.config["linux"]["seccomp"] = notify_profile(path)
    bundle.set_args("sh", "-c", "mkdir /tmp/x 2>&1; sleep 1000")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    init_pid = capsule.state(bundle.id)["pid"]
    pid_file = tmp_path / "exec.pid"
    p = capsule.run("exec", "--pid-file", pid_file, bundle.id, "mkdir", "/tmp/y")
    assert p.returncode == 1 and "Permission denied" in p.stderr, p.stderr
    lst.join(5)
    assert lst.error is None, lst.error
    assert len(lst.states) == 2
    assert sorted(lst.syscalls) == [SYS_mkdir, SYS_mkdir]
    # the exec'd process's message names its own pid; its state is the container's
    init, exe = lst.states
    assert init["pid"] == init_pid and init["state"]["pid"] == init_pid
    assert exe["pid"] == int(pid_file.read_text()) != init_pid
    assert exe["state"]["pid"] == init_pid and exe["state"]["id"] == bundle.id
    assert exe["fds"] == ["seccompFd"] and exe["metadata"] == "capsule-e2e"


def test_notify_without_listener_fails_cleanly(capsule, bundle, tmp_path):
    bundle.config["linux"]["seccomp"] = notify_profile(str(tmp_path / "nobody-listens.sock"))
    p = seccomp_run(capsule, bundle, bundle.config["linux"]["seccomp"], "true")
    assert p.returncode != 0 and "listenerPath" in p.stderr and "nobody-listens.sock" in p.stderr
