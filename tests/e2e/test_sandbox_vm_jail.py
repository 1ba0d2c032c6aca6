"""The VMM's confinement (sandbox_jail.c, sandbox_seccomp.c): namespaces, seccomp, a uid of its own,
its memory charged to the container. Runs as test_sandbox_vm.py does."""
import copy
import ctypes
import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time

from conftest import Bundle
import sandbox_vm_env
from sandbox_vm_env import BOOT, assert_nothing_left, become_subreaper, cgroup_value, proc_status, processes_naming, reap

# Their skip (hardware KVM, the kernel and the initrd) and fixtures.
pytestmark = sandbox_vm_env.pytestmark
vm = sandbox_vm_env.vm


class UserRegs(ctypes.Structure):
    """x86-64 struct user_regs_struct, for PTRACE_GETREGS/SETREGS."""
    _fields_ = [(n, ctypes.c_ulong) for n in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


class Tracee:
    """A process's main thread under ptrace, stopped. That thread sleeps in a syscall, so the two
    bytes before its rip are a `syscall` instruction, through which syscalls are injected."""
    PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SYSCALL = 7, 12, 13, 16, 17, 24
    WALL = 0x40000000  # a thread of another process's group: waitpid's __WALL

    def __init__(self, pid):
        self.pid = pid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.libc.ptrace.restype = ctypes.c_long
        self.ptrace(self.PTRACE_ATTACH)
        assert os.WIFSTOPPED(self.wait())
        self.saved = self.regs()
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(self.saved.rip - 2)
            assert mem.read(2) == b"\x0f\x05", "the main thread is not in a syscall"

    def ptrace(self, req, data=None):
        r = self.libc.ptrace(req, self.pid, None, data)
        assert r >= 0, f"ptrace {req}: {os.strerror(ctypes.get_errno())}"

    def wait(self):
        return os.waitpid(self.pid, self.WALL)[1]

    def regs(self):
        regs = UserRegs()
        self.ptrace(self.PTRACE_GETREGS, ctypes.addressof(regs))
        return regs

    def start_syscall(self, nr, args, req):
        """rip back to the `syscall` with rax = nr and args, then let go with req; returns the
        next stop signal (0: the thread ended)."""
        regs = UserRegs.from_buffer_copy(self.saved)
        regs.rip -= 2
        regs.rax = nr
        regs.orig_rax = ctypes.c_ulong(-1).value  # no syscall restart on the way out
        regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = (list(args) + [0] * 6)[:6]
        self.ptrace(self.PTRACE_SETREGS, ctypes.addressof(regs))
        self.ptrace(req)
        st = self.wait()
        return os.WSTOPSIG(st) if os.WIFSTOPPED(st) else 0

    def detach(self, sig=0):
        self.libc.ptrace(self.PTRACE_DETACH, self.pid, None, ctypes.c_void_p(sig))


def inject_syscall(pid, nr):
    """What a compromised VMM would do: make syscall nr (arguments 0) from the process's main
    thread. Returns the signal the thread stopped with next (the filter's SIGSYS), passed on at
    detach."""
    t = Tracee(pid)
    sig = t.start_syscall(nr, [], Tracee.PTRACE_CONT)
    t.detach(sig)
    return sig


def call_syscall(pid, nr, *args):
    """The same for a syscall the filter allows: stopped at its entry and its exit, whose rax is
    the result (-errno), then the thread goes back to the syscall it slept in, restarted as the
    kernel restarts one a stop interrupted."""
    t = Tracee(pid)
    assert t.start_syscall(nr, args, Tracee.PTRACE_SYSCALL) == signal.SIGTRAP, "no syscall-entry stop"
    t.ptrace(Tracee.PTRACE_SYSCALL)
    st = t.wait()
    assert os.WIFSTOPPED(st) and os.WSTOPSIG(st) == signal.SIGTRAP, f"no syscall-exit stop: {st:#x}"
    result = ctypes.c_long(t.regs().rax).value
    regs = t.saved
    ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
    err = -ctypes.c_long(regs.rax).value
    if ctypes.c_long(regs.orig_rax).value >= 0 and err in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK):
        regs.rax = 219 if err == ERESTART_RESTARTBLOCK else regs.orig_rax  # x86-64 restart_syscall
        regs.rip -= 2
    t.ptrace(Tracee.PTRACE_SETREGS, ctypes.addressof(regs))
    t.detach()
    return result


def jail_files(root):
    """Every path under a process's root (/proc/PID/root)."""
    found = []
    for d, dirs, files in os.walk(root):
        found += [os.path.join(d, n)[len(root):] for n in dirs + files]
    return sorted(found)


def test_jail_seccomp_namespaces_and_a_forbidden_syscall(vm, bundle):
    """The VMM runs confined: every thread under the seccomp filter, no capabilities, fresh
    namespaces, a root that shows only the agent's socket; the container still works (exec); a
    syscall outside the allow-list kills the VMM with one line in vmm.log, the container stops
    and delete leaves nothing."""
    become_subreaper()
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    vm.run("start", bundle.id, check=True, timeout=120)
    p = vm.run("exec", bundle.id, "sh", "-c", "echo confined; exit 3", timeout=120)
    assert (p.returncode, p.stdout) == (3, "confined\n"), p.stderr

    status = proc_status(pid)
    assert status["Seccomp"] == "2" and int(status["Seccomp_filters"]) >= 1, status
    assert status["NoNewPrivs"] == "1"
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[key], 16) == 0, (key, status[key])
    names = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        thread = proc_status(f"{pid}/task/{tid}")
        assert thread["Seccomp"] == "2", f"thread {tid} is not filtered"
        names.add(thread["Name"])
    assert {"evloop", "vcpu0", "relay"} <= names, names
    for ns in ("mnt", "net", "ipc", "uts", "cgroup"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    sock = os.path.join(vm.root, bundle.id, "agent.sock")
    parts = sock.strip("/").split("/")
    assert jail_files(f"/proc/{pid}/root") == ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]

    execve = 59  # x86-64
    assert inject_syscall(pid, execve) == signal.SIGSYS
    st = reap(pid, "the VMM after a syscall outside its filter")
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGSYS
    with open(os.path.join(vm.root, bundle.id, "vmm.log")) as f:
        assert f"capsule: the VMM was killed by its seccomp filter (syscall {execve})\n" in f.read()
    assert vm.status(bundle.id) == "stopped"
    p = vm.run("delete", bundle.id, check=True, timeout=120)
    assert p.stderr == (f'capsule: warning: container "{bundle.id}": '
                        f"the VMM was killed by its seccomp filter (syscall {execve})\n")
    assert_nothing_left(vm, bundle)


SANDBOX_ID_BASE = 0x70000000  # src/sandbox/sandbox_internal.h


def held_pidfds(pid):
    """{fd: the pid it names} of the pidfds a process holds."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[pidfd]":
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            found[int(fd)] = int(info["Pid"])
    return found


def wait_reaped(pid, timeout=20):
    """pid, a process reparented to us (the subreaper), has exited within timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
        time.sleep(0.1)
    return False


def test_jail_each_vmm_runs_as_a_uid_of_its_own_that_cannot_signal_virtiofsd(vm, bundle, tmp_path):
    """Two VM containers at once: every thread of each VMM has its real, effective, saved and
    file-system uid and gid SANDBOX_ID_BASE + its pid (so the two differ, and neither is a host
    user's), and no supplementary groups. The attack: the VMM signals its virtiofsd (root) through
    the pidfd it holds, which its seccomp filter allows; the uid refuses it (EPERM), and virtiofsd
    serves on. virtiofsd's parent-death signal cannot reach it from that uid: it ends on its own
    as its socket closes, when the VMM is killed and when the VM powers off."""
    become_subreaper()
    bundle.set_args("sleep", "1000")
    other = Bundle(str(tmp_path / "other"), copy.deepcopy(bundle.config))
    shutil.copytree(bundle.path, other.path, symlinks=True)
    other.config["linux"]["cgroupsPath"] = f"capsule-test/{other.id}"
    other.write()
    pids = []
    for b in (bundle, other):
        vm.run("create", "--bundle", b.path, b.id, check=True, timeout=BOOT)
        pids.append(vm.state(b.id)["pid"])
        vm.run("start", b.id, check=True, timeout=120)
    for pid in pids:
        want = [str(SANDBOX_ID_BASE + pid)] * 4
        for tid in os.listdir(f"/proc/{pid}/task"):
            status = proc_status(f"{pid}/task/{tid}")
            assert (status["Uid"].split(), status["Gid"].split(), status["Groups"].split()) == (want, want, []), (tid, status)
        # The file it runs from (capsule itself: a VM container's create starts from no sealed
        # copy, since no host process enters the container) is out of that uid's reach even past
        # the filter, which refuses every open.
        exe = os.stat(f"/proc/{pid}/exe")
        assert exe.st_uid != SANDBOX_ID_BASE + pid and not exe.st_mode & 0o002, exe
        assert exe.st_gid != SANDBOX_ID_BASE + pid or not exe.st_mode & 0o020, exe
    assert pids[0] != pids[1]

    vmm = pids[0]
    (fd, virtiofsd), = held_pidfds(vmm).items()
    with open(f"/proc/{virtiofsd}/cmdline", "rb") as f:
        assert b"virtiofsd" in f.read()
    assert proc_status(virtiofsd)["Uid"].split()[0] == "0"
    pidfd_send_signal = 424  # x86-64
    assert call_syscall(vmm, pidfd_send_signal, fd, signal.SIGKILL) == -errno.EPERM
    assert proc_status(virtiofsd)["State"][0] in "SR", "virtiofsd was stopped"
    p = vm.run("exec", bundle.id, "sh", "-c", "echo still-served > /served; cat /served", timeout=120)
    assert (p.returncode, p.stdout) == (0, "still-served\n"), p.stderr
    with open(os.path.join(bundle.rootfs, "served")) as f:
        assert f.read() == "still-served\n"

    os.kill(vmm, signal.SIGKILL)
    reap(vmm, "the killed VMM")
    assert wait_reaped(virtiofsd), "virtiofsd outlived its killed VMM"
    assert processes_naming(bundle.rootfs) == []
    vm.run("kill", other.id, "KILL", check=True, timeout=120)
    reap(pids[1], "the other VMM after kill KILL")  # the VM powered off: the VMM stopped and reaped its virtiofsd itself
    assert processes_naming(other.rootfs) == []
    for b in (bundle, other):
        assert vm.status(b.id) == "stopped"
        vm.run("delete", b.id, check=True, timeout=120)
        assert_nothing_left(vm, b)


def test_jail_run_reports_the_seccomp_kill(vm, bundle):
    """`capsule run` in the foreground, whose VMM a syscall outside its list kills: run says why
    in one line (its delete does), exits 128 + SIGSYS, and removes the container."""
    bundle.set_args("sleep", "1000")
    with tempfile.TemporaryFile("w+") as err:
        run = subprocess.Popen(vm.cmd("run", "--bundle", bundle.path, bundle.id), stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + BOOT
        while time.time() < deadline and run.poll() is None:
            p = vm.run("state", bundle.id)
            if p.returncode == 0 and '"running"' in p.stdout:
                break
            time.sleep(0.5)
        assert vm.status(bundle.id) == "running"
        execve = 59  # x86-64
        assert inject_syscall(vm.state(bundle.id)["pid"], execve) == signal.SIGSYS
        assert run.wait(timeout=120) == 128 + signal.SIGSYS
        err.seek(0)
        assert err.read() == (f'capsule: warning: container "{bundle.id}": '
                              f"the VMM was killed by its seccomp filter (syscall {execve})\n")
    assert_nothing_left(vm, bundle)


def test_jail_vmm_memory_is_charged_to_the_container_and_its_oom_stops_it(vm, bundle):
    """Guest RAM the guest touches is the VMM's RSS, charged to the container's cgroup; a VM
    sized above the limit that touches more than it is stopped by the cgroup's OOM killer."""
    become_subreaper()
    bundle.config["annotations"] = {"capsule.vm.memory": "512M"}
    bundle.config["linux"]["resources"] = {"memory": {"limit": 320 << 20}}
    bundle.config["mounts"].append({"destination": "/fill", "type": "tmpfs", "source": "tmpfs", "options": ["size=480m"]})
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    vm.run("start", bundle.id, check=True, timeout=120)
    before = int(cgroup_value(bundle, "memory.current"))
    p = vm.run("exec", bundle.id, "dd", "if=/dev/zero", "of=/fill/a", "bs=1M", "count=100", timeout=120)
    assert p.returncode == 0, p.stderr
    grown = int(cgroup_value(bundle, "memory.current")) - before
    # A little of it may reuse pages the guest had touched and freed since it booted.
    assert grown >= 80 << 20, f"memory.current grew by {grown >> 20} MiB for 100 MiB the guest touched"

    p = vm.run("exec", bundle.id, "dd", "if=/dev/zero", "of=/fill/b", "bs=1M", "count=300", timeout=300)
    assert p.returncode != 0
    st = reap(pid, "the VMM after the cgroup's OOM kill")
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
    events = dict(line.split() for line in cgroup_value(bundle, "memory.events").splitlines())
    assert int(events["oom_kill"]) >= 1, events
    assert vm.status(bundle.id) == "stopped"
    vm.run("delete", bundle.id, check=True, timeout=120)
    assert_nothing_left(vm, bundle)
