"""VM containers end to end: capsule-vm boots the guest kernel with capsule-guest, the agent, and the
container runs in it. Needs hardware KVM (a PVM host refuses, see test_sandbox_host.py), so on this
host tests/testbed/test_sandbox.py runs the module inside the testbed. Each test is one boot (10-90 s
in nested TCG), so the checks are batched into few tests; the test_jail_ ones are the VMM's confinement."""
import ctypes
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, Capsule, procs_cgroup_dir

PVM = os.path.isdir("/sys/module/kvm_pvm") and not any(
    os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))
KERNEL = os.environ.get("CAPSULE_KERNEL", os.path.join(BUILD, "capsule-vmlinux"))
INITRD = os.path.join(BUILD, "capsule-guest.initrd")
# capsule waits this long for the agent ($CAPSULE_VM_BOOT_TIMEOUT's default); a command that boots
# gets a little more.
BOOT = 360

pytestmark = [
    pytest.mark.skipif(PVM or not os.access("/dev/kvm", os.R_OK | os.W_OK),
                       reason="a VM container needs hardware KVM: tests/testbed/test_sandbox.py runs this in the testbed"),
    pytest.mark.skipif(not os.path.isfile(KERNEL), reason=f"no guest kernel at {KERNEL} ($CAPSULE_KERNEL)"),
    pytest.mark.skipif(not os.path.isfile(INITRD), reason="build/capsule-guest.initrd is missing: run make"),
]


@pytest.fixture
def vm(tmp_path):
    c = Capsule(str(tmp_path / "state"), os.path.join(BUILD, "capsule-vm"))
    yield c
    c.cleanup()
    leftover = os.listdir(c.root) if os.path.isdir(c.root) else []
    assert leftover == [], f"containers left behind: {leftover}"


def become_subreaper():
    """As podman's conmon: the sandbox process outlives `capsule create` and is reparented to us."""
    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def guest_release():
    with open(KERNEL, "rb") as f:
        m = re.search(rb"Linux version (\S+)", f.read())
    assert m, f"{KERNEL} has no version string"
    return m.group(1).decode()


def wait_status(vm, cid, want, timeout=60):
    deadline = time.time() + timeout
    while vm.status(cid) != want and time.time() < deadline:
        time.sleep(0.2)
    assert vm.status(cid) == want


def processes_naming(text):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def assert_nothing_left(vm, bundle):
    assert not os.path.exists(os.path.join(vm.root, bundle.id))
    assert not os.path.exists(procs_cgroup_dir(f"capsule-test/{bundle.id}"))
    assert processes_naming(bundle.rootfs) == [], "virtiofsd (or the VMM) still serves the rootfs"


def test_run_output_exit_status_guest_kernel_size_rootfs_writes_and_host_binds(vm, bundle, tmp_path):
    bundle.config["annotations"] = {"capsule.vm.memory": "256M", "capsule.vm.cpus": "1"}
    # As podman's /etc/hosts and volumes: host files and directories outside the rootfs.
    (tmp_path / "hosts").write_text("10.1.2.3 from-the-host\n")
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "in.txt").write_text("in-volume\n")
    bundle.config["mounts"] += [
        {"destination": "/etc/hosts", "type": "bind", "source": str(tmp_path / "hosts"), "options": ["rbind", "ro"]},
        {"destination": "/vol", "type": "bind", "source": str(tmp_path / "vol"), "options": ["rbind", "rw"]}]
    bundle.set_args("sh", "-c", "echo hello; uname -r; grep MemTotal /proc/meminfo; nproc; "
                    "echo from-guest >/written.txt; echo to-stderr >&2; "
                    "cat /etc/hosts /vol/in.txt; echo out-of-volume >/vol/out.txt; exit 7")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 7, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "hello"
    assert lines[1] == guest_release()
    mem_kib = int(lines[2].split()[1])
    assert 200 * 1024 < mem_kib <= 256 * 1024, lines[2]  # the guest's RAM, not the host's
    assert lines[3] == "1"
    assert lines[4:] == ["10.1.2.3 from-the-host", "in-volume"]
    assert p.stderr == "to-stderr\n"
    with open(os.path.join(bundle.rootfs, "written.txt")) as f:
        assert f.read() == "from-guest\n"
    assert (tmp_path / "vol" / "out.txt").read_text() == "out-of-volume\n"
    assert_nothing_left(vm, bundle)


def test_create_start_state_exec_kill_delete(vm, bundle, tmp_path):
    become_subreaper()
    # Without a pid namespace init is not pid 1 in the guest, so SIGTERM's default action kills it.
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "pid"]
    bundle.set_args("sleep", "1000")
    pidfile = tmp_path / "pid"
    vm.run("create", "--bundle", bundle.path, "--pid-file", pidfile, bundle.id, check=True, timeout=BOOT)
    st = vm.state(bundle.id)
    assert st["status"] == "created"
    pid = st["pid"]
    assert pid > 0 and int(pidfile.read_text()) == pid
    # The sandbox process is the VMM, inside the container's cgroup.
    with open(os.path.join(procs_cgroup_dir(f"capsule-test/{bundle.id}"), "cgroup.procs")) as f:
        assert str(pid) in f.read().split()
    assert "console.log" in os.listdir(os.path.join(vm.root, bundle.id))

    vm.run("start", bundle.id, check=True, timeout=120)
    assert vm.status(bundle.id) == "running"
    again = vm.run("start", bundle.id, timeout=120)
    assert again.returncode != 0 and "not created" in again.stderr
    refused = vm.run("delete", bundle.id, timeout=120)
    assert refused.returncode != 0 and "not stopped" in refused.stderr
    listed = vm.run("list", "-q", check=True, timeout=120).stdout.split()
    assert listed == [bundle.id]
    # not yet: the cgroup freezer did not stop the VMM's vCPU threads in time
    p = vm.run("pause", bundle.id, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().endswith("pausing a VM container is not supported yet")
    assert vm.status(bundle.id) == "running"

    p = vm.run("exec", bundle.id, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5", timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (5, "exec-out\n", "exec-err\n")
    p = vm.run("exec", "-t", bundle.id, "sh", "-c", "tty; exit 4", timeout=120)
    assert p.returncode == 4 and p.stdout.startswith("/dev/pts/"), (p.returncode, p.stdout, p.stderr)

    vm.run("kill", bundle.id, "TERM", check=True, timeout=120)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 143
    wait_status(vm, bundle.id, "stopped")
    vm.run("delete", bundle.id, check=True, timeout=120)
    gone = vm.run("state", bundle.id)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    assert_nothing_left(vm, bundle)


def test_delete_force_after_the_vmm_was_killed(vm, bundle):
    become_subreaper()
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert vm.status(bundle.id) == "stopped"
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
    assert_nothing_left(vm, bundle)


@pytest.mark.skipif(os.environ.get("TESTBED") != "qemu", reason="on hardware KVM the guest may answer within 1 s")
def test_boot_timeout_leaves_nothing(vm, bundle):
    """A guest that does not answer in time (1 s: nested TCG boots take 10 s and more): create
    fails with one line and kills the VMM; no state, cgroup or virtiofsd is left."""
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=120,
               env=dict(os.environ, CAPSULE_VM_BOOT_TIMEOUT="1"))
    assert p.returncode == 1
    assert p.stderr.startswith("capsule: the VM's agent did not answer within the boot timeout"), p.stderr
    assert p.stderr.count("\n") == 1
    assert_nothing_left(vm, bundle)


class UserRegs(ctypes.Structure):
    """x86-64 struct user_regs_struct, for PTRACE_GETREGS/SETREGS."""
    _fields_ = [(n, ctypes.c_ulong) for n in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


def inject_syscall(pid, nr):
    """What a compromised VMM would do: make syscall nr (arguments 0) from the process's main
    thread, with ptrace. That thread sleeps in a syscall, so the two bytes before its rip are a
    `syscall` instruction: rip goes back to it with rax = nr, and the thread is let go. Returns
    the signal the thread stopped with next (the filter's SIGSYS), passed on at detach."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_ATTACH, PTRACE_DETACH = 7, 12, 13, 16, 17
    WALL = 0x40000000  # a thread of another process's group: waitpid's __WALL

    def ptrace(req, data=None):
        r = libc.ptrace(req, pid, None, data)
        assert r >= 0, f"ptrace {req}: {os.strerror(ctypes.get_errno())}"

    ptrace(PTRACE_ATTACH)
    _, st = os.waitpid(pid, WALL)
    assert os.WIFSTOPPED(st)
    regs = UserRegs()
    ptrace(PTRACE_GETREGS, ctypes.addressof(regs))
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(regs.rip - 2)
        assert mem.read(2) == b"\x0f\x05", "the main thread is not in a syscall"
    regs.rip -= 2
    regs.rax = nr
    regs.orig_rax = ctypes.c_ulong(-1).value  # no syscall restart on the way out
    regs.rdi = regs.rsi = regs.rdx = regs.r10 = regs.r8 = regs.r9 = 0
    ptrace(PTRACE_SETREGS, ctypes.addressof(regs))
    ptrace(PTRACE_CONT)
    _, st = os.waitpid(pid, WALL)
    sig = os.WSTOPSIG(st) if os.WIFSTOPPED(st) else 0
    libc.ptrace(PTRACE_DETACH, pid, None, ctypes.c_void_p(sig))
    return sig


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


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
    for tid in os.listdir(f"/proc/{pid}/task"):
        assert proc_status(tid)["Seccomp"] == "2", f"thread {tid} is not filtered"
    for ns in ("mnt", "net", "ipc", "uts", "cgroup"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    sock = os.path.join(vm.root, bundle.id, "agent.sock")
    parts = sock.strip("/").split("/")
    assert jail_files(f"/proc/{pid}/root") == ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]

    execve = 59  # x86-64
    assert inject_syscall(pid, execve) == signal.SIGSYS
    _, st = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGSYS
    with open(os.path.join(vm.root, bundle.id, "vmm.log")) as f:
        assert f"capsule: the VMM was killed by its seccomp filter (syscall {execve})\n" in f.read()
    assert vm.status(bundle.id) == "stopped"
    p = vm.run("delete", bundle.id, check=True, timeout=120)
    assert p.stderr == (f'capsule: warning: container "{bundle.id}": '
                        f"the VMM was killed by its seccomp filter (syscall {execve})\n")
    assert_nothing_left(vm, bundle)


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


def cgroup_value(bundle, name):
    with open(os.path.join(procs_cgroup_dir(f"capsule-test/{bundle.id}"), name)) as f:
        return f.read()


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
    _, st = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
    events = dict(line.split() for line in cgroup_value(bundle, "memory.events").splitlines())
    assert int(events["oom_kill"]) >= 1, events
    assert vm.status(bundle.id) == "stopped"
    vm.run("delete", bundle.id, check=True, timeout=120)
    assert_nothing_left(vm, bundle)
