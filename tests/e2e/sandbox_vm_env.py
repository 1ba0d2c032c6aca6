"""Shared by the VM container modules (test_sandbox_vm*.py, test_sandbox_podman.py,
test_sandbox_containerd.py): the guest kernel and initrd, the skip without hardware KVM, the `vm`
fixture and the checks that nothing is left behind."""
import ctypes
import os
import re
import shutil
import subprocess
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


def install_runtime(d):
    """capsule-vm as installed, in directory d: a capsule of its own, started as capsule-vm, with the
    kernel and the agent's initrd next to it (for runtimes started by clients that do not pass
    $CAPSULE_KERNEL on). Returns the capsule-vm path."""
    os.mkdir(d)
    shutil.copy(os.path.join(BUILD, "capsule"), os.path.join(d, "capsule"))
    os.symlink("capsule", os.path.join(d, "capsule-vm"))
    os.symlink(KERNEL, os.path.join(d, "capsule-vmlinux"))
    os.symlink(INITRD, os.path.join(d, "capsule-guest.initrd"))
    return os.path.join(d, "capsule-vm")


def become_subreaper():
    """As podman's conmon: the sandbox process outlives `capsule create` and is reparented to us."""
    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def guest_release():
    with open(KERNEL, "rb") as f:
        m = re.search(rb"Linux version (\S+)", f.read())
    assert m, f"{KERNEL} has no version string"
    return m.group(1).decode()


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def wait_status(vm, cid, want, timeout=60):
    deadline = time.time() + timeout
    while vm.status(cid) != want and time.time() < deadline:
        time.sleep(0.2)
    assert vm.status(cid) == want


def vm_logs(runtime, cid, lines=40):
    """The last lines of a VM container's console.log and vmm.log, for an assertion's message: a
    VM that stopped says why there."""
    told = []
    for name in ("console.log", "vmm.log"):
        try:
            with open(os.path.join(runtime.root, cid, name), errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError as e:
            tail = [f"({e.strerror})"]
        told.append(f"--- {name}:\n" + "\n".join(tail))
    return "\n".join(told)


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


def cgroup_value(bundle, name):
    with open(os.path.join(procs_cgroup_dir(f"capsule-test/{bundle.id}"), name)) as f:
        return f.read()


def reap(pid, what, timeout=120):
    """The wait status of pid, a child of ours or reparented to us (the subreaper), within timeout
    seconds. A hang fails the test with what it waited for, instead of stalling the whole run."""
    deadline = time.time() + timeout
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return status
        assert time.time() < deadline, f"{what} (pid {pid}) did not exit within {timeout} s"
        time.sleep(0.05)


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def poll_until(what, cond, timeout=BOOT, interval=0.05):
    """Poll cond every interval seconds. Under the testbed's TCG a tight loop takes CPU from the
    very VM it waits for: only a short window (a kill between two steps) wants a small interval."""
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"{what}: never came"
        time.sleep(interval)


def live_processes():
    """(pid, argv, cgroup lines) of each process that is not a zombie."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/cgroup") as f:
                cgroups = f.read().splitlines()
        except (OSError, IndexError):
            continue  # gone meanwhile
        yield pid, args, cgroups


def crash_leftovers(vm, bundle, cid, netns=None):
    """What VM container cid left: its state directory, its cgroup, a live process that names it
    (the VMM is a fork of create) or its rootfs (virtiofsd) or sits in its cgroup, a mount of its
    bundle or state directory, a socket bound in that directory, and in netns the VM's tap and
    the ingress qdisc on eth0."""
    left = []
    state = os.path.join(vm.root, cid)
    if os.path.lexists(state):
        left.append(f"state dir {os.listdir(state)}")
    if os.path.exists(procs_cgroup_dir(f"capsule-test/{cid}")):
        left.append("cgroup")
    left += [f"process {pid}: {' '.join(args).strip()}" for pid, args, cgroups in live_processes()
             if cid in args or any(bundle.rootfs in a for a in args)
             or any(c.endswith(f"/capsule-test/{cid}") for c in cgroups)]
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if bundle.path in line or state in line]
    with open("/proc/net/unix") as f:
        left += [f"socket {line.split()[-1]}" for line in f if state + "/" in line]
    if netns:
        if "capsule-tap0" in sh("ip", "-n", netns, "link", "show"):
            left.append(f"capsule-tap0 in {netns}")
        if "ingress" in sh("tc", "-n", netns, "qdisc", "show", "dev", "eth0"):
            left.append(f"the ingress qdisc of eth0 in {netns}")
    return left


def vmm_gone_on_its_own(cid, what):
    """A create that did not finish leaves no VMM running (a fork of create: it names cid)."""
    poll_until(f"{what}: the VMM's end", lambda: not any(cid in args for _, args, _ in live_processes()), timeout=30)


@pytest.fixture
def crash_netns():
    """A network namespace as CNI leaves one: eth0, one end of a veth pair, with an address."""
    tag = os.getpid() % 100000
    ns, peer = f"capcrash{tag}", f"capcrashp{tag}"
    for name in (ns, peer):
        sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "veth0", "netns", peer)
        sh("ip", "-n", ns, "addr", "add", "10.79.0.2/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", peer, "link", "set", "veth0", "up")
        yield ns
    finally:
        for name in (ns, peer):
            sh("ip", "netns", "del", name)
