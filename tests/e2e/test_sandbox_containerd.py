"""containerd drives capsule-vm: ctr with --runc-binary pointing at it, and the CRI plugin with a
second RuntimeClass handler, "capsule-vm", next to the plain "capsule" one. containerd-shim-runc-v2
calls capsule-vm as it calls runc (create --pid-file, start, state, kill [--all], exec --detach
--pid-file, ps, delete). The private containerd and its cleanup checks are test_containerd's and
test_cri's.

Needs hardware KVM, so on this host tests/testbed/test_vm_containerd.py runs it in the testbed.
Every VM container is a boot (10-90 s in nested TCG): three for ctr, two for the CRI pod (its pause
container and its workload each get a VM of their own).

The testbed boots the same kernel build as the guest, so `uname -r` alone cannot tell the guest
from the host there: the kernel's boot_id (random at every boot) does."""
import json
import os

import pytest

from podman_env import cgroup_of, pid_alive, wait_for
from test_containerd import IMAGE, TTY_SCRIPT, Containerd, cgroup_gone, run_under_pty, serve
from test_cri import PAUSE_CMD, CriContainerd, cri_log_lines, serve_cri
import sandbox_vm_env
from sandbox_vm_env import BOOT, guest_release, install_runtime, processes_naming

pytestmark = sandbox_vm_env.pytestmark  # hardware KVM, the kernel and the initrd, or skip

BOOT_ID = "/proc/sys/kernel/random/boot_id"
# What the workloads print: their kernel's release and the id of its boot.
WHOAMI = f"uname -r; cat {BOOT_ID}"



def host_boot_id():
    with open(BOOT_ID) as f:
        return f.read().strip()


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[:-1]


class VmContainerd(Containerd):
    def __init__(self):
        super().__init__()
        self.runtime = install_runtime(os.path.join(self.base, "bin"))

    def bundle(self, cid):
        return os.path.join(self.base, "state", "io.containerd.runtime.v2.task", self.ns, cid)


@pytest.fixture(scope="module")
def ctrd_vm():
    yield from serve(VmContainerd)


def test_ctr_run_in_vm_prints_and_returns_exit_code(ctrd_vm):
    c = ctrd_vm
    p = c.run("run", "--rm", *c.run_args("vm-run"), IMAGE, "vm-run",
              "sh", "-c", f"echo hello from the VM; {WHOAMI}; exit 3", check=False, timeout=BOOT)
    assert p.returncode == 3, f"{p.stderr}\n{c.log_tail()}"
    hello, release, boot_id = p.stdout.splitlines()
    assert (hello, release) == ("hello from the VM", guest_release())
    assert boot_id != host_boot_id()
    # --rm removed it from containerd, from capsule and from the cgroup tree; the VMM and virtiofsd are gone
    assert "vm-run" not in c.run("container", "ls", "--quiet").stdout.split()
    assert not os.path.exists(os.path.join(c.capsule_root, "vm-run"))
    assert cgroup_gone(c, "vm-run")
    assert processes_naming(c.bundle("vm-run")) == []


def test_ctr_run_tty(ctrd_vm):
    """ctr run -t: the shim's `create --console-socket`."""
    c = ctrd_vm
    run_under_pty(c, ["run", "-t", "--rm", *c.run_args("vm-tty"), IMAGE, "vm-tty", "sh", "-c", TTY_SCRIPT.format(4)], 4,
                  timeout=BOOT)
    assert "vm-tty" not in c.run("container", "ls", "--quiet").stdout.split()
    assert not os.path.exists(os.path.join(c.capsule_root, "vm-tty"))


def test_ctr_detached_exec_ps_kill_delete(ctrd_vm):
    c = ctrd_vm
    cid = "vm-detached"
    c.run("run", "-d", *c.run_args(cid), IMAGE, cid, "sleep", "1000", timeout=BOOT)
    pid, status = c.task(cid)
    assert status == "RUNNING"
    # The task's pid is the sandbox process on the host (the VMM), in the container's cgroup
    st = c.capsule_state(cid)
    assert (st["status"], st["pid"]) == ("running", pid)
    assert cgroup_of(pid) == c.cgroup_path(cid)
    assert cmdline(pid) != [b"sleep", b"1000"]
    # exec runs in the guest's container: sleep is its pid 1; output and exit status reach ctr
    p = c.run("task", "exec", "--fifo-dir", f"{c.base}/fifo", "--exec-id", "e1", cid,
              "sh", "-c", f"{WHOAMI}; tr '\\0' ' ' < /proc/1/cmdline; echo; echo oops >&2; exit 5",
              check=False, timeout=120)
    assert p.returncode == 5, f"{p.stderr}\n{c.log_tail()}"
    assert p.stderr == "oops\n"
    release, boot_id, init = p.stdout.splitlines()
    assert release == guest_release() and boot_id != host_boot_id()
    assert init == "sleep 1000 "
    # exec -t: the shim's `exec --detach --console-socket`, its resize of the pty master
    run_under_pty(c, ["task", "exec", "-t", "--fifo-dir", f"{c.base}/fifo", "--exec-id", "t1", cid,
                      "sh", "-c", TTY_SCRIPT.format(6)], 6, timeout=120)
    # `task ps` (the shim's `ps --format json`) lists the container's processes as the guest numbers
    # them (capsule ps of a VM container): the execs have ended, its init is left
    lines = c.run("task", "ps", cid).stdout.splitlines()
    assert lines[0].split() == ["PID", "INFO"], lines
    assert len(lines) == 2 and int(lines[1].split()[0]) > 0, lines
    # kill: the container's init dies in the guest, the VM powers off, ctr gets SIGKILL's status
    c.run("task", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: c.task(cid)[1] == "STOPPED", timeout=60, what=f"STOPPED:\n{c.log_tail()}")
    assert not pid_alive(pid)
    p = c.run("task", "delete", cid)
    assert "exit code 137" in p.stderr, p.stderr
    c.run("container", "delete", cid)
    assert not os.path.exists(os.path.join(c.capsule_root, cid))
    assert cgroup_gone(c, cid)
    assert processes_naming(c.bundle(cid)) == []


# ---- the CRI plugin with two runtime handlers ----

VM_HANDLER = """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capsule-vm]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capsule-vm.options]
  BinaryName = "{binary}"
  Root = "{base}/runc"
  SystemdCgroup = false
"""


class VmCriContainerd(CriContainerd):
    def __init__(self):
        super().__init__()
        self.runtime = install_runtime(os.path.join(self.base, "bin"))

    def config(self):
        return super().config() + VM_HANDLER.format(binary=self.runtime, base=self.base)


@pytest.fixture(scope="module")
def cri_vm():
    yield from serve_cri(VmCriContainerd)


@pytest.mark.parametrize("handler", ["capsule-vm", "capsule"])
def test_cri_pod_under_handler(cri_vm, handler):
    """A pod with kubelet's defaults but the host's network (this test does not depend on a pod
    network): under capsule-vm its workload sees the guest kernel, under capsule the host's. A
    second container of the pod runs beside the first: under capsule-vm in the same VM (the same
    guest boot_id), and its exit status reaches the CRI. The pod's resources (the kubelet's sums
    of its containers' limits) size the VM: 1.5 CPUs are 2 vCPUs, 352M is 320M of guest RAM."""
    c = cri_vm
    pb = c.client.pb
    call = c.client.call
    vm = handler == "capsule-vm"
    name = f"{handler}-pod"
    log_dir = os.path.join(c.base, "logs", name)
    namespaces = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
    sandbox_config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="capsule-test"),
        log_directory=log_dir,
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=c.cgroup_parent,
                                       security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespaces),
                                       resources=pb.LinuxContainerResources(cpu_period=100000, cpu_quota=150000,
                                                                            memory_limit_in_bytes=352 << 20)))
    sandbox_id = call("RunPodSandbox", config=sandbox_config, runtime_handler=handler, deadline=BOOT).pod_sandbox_id
    c.ids.append(sandbox_id)
    status = call("PodSandboxStatus", pod_sandbox_id=sandbox_id, verbose=True)
    assert status.status.state == pb.SANDBOX_READY
    assert status.status.runtime_handler == handler
    pause_pid = json.loads(status.info["info"])["pid"]
    assert c.capsule_state(sandbox_id)["pid"] == pause_pid
    # In a VM the host sees the sandbox process, not the pause container's shell
    assert (cmdline(pause_pid) == [a.encode() for a in PAUSE_CMD]) == (not vm)

    script = f"trap 'exit 3' TERM; {WHOAMI}; echo to stderr >&2; while :; do sleep 1; done"
    container_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="work"),
        image=pb.ImageSpec(image=IMAGE),
        command=["sh", "-c", script],
        log_path="work.log",
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(namespace_options=namespaces)))
    cid = call("CreateContainer", pod_sandbox_id=sandbox_id, config=container_config,
               sandbox_config=sandbox_config).container_id
    call("StartContainer", container_id=cid, deadline=BOOT)
    st = call("ContainerStatus", container_id=cid, verbose=True)
    assert st.status.state == pb.CONTAINER_RUNNING
    assert c.capsule_state(cid)["pid"] == json.loads(st.info["info"])["pid"]

    release = guest_release() if vm else os.uname().release
    log = os.path.join(log_dir, "work.log")
    wait_for(lambda: os.path.exists(log) and len(cri_log_lines(log)) >= 3, timeout=30, what="the container log")
    lines = cri_log_lines(log)
    out = [text for stream, text in lines if stream == "stdout"]
    assert [text for stream, text in lines if stream == "stderr"] == ["to stderr"], lines
    assert out[0] == release, lines
    assert (out[1] != host_boot_id()) == vm, lines

    r = call("ExecSync", container_id=cid, cmd=["sh", "-c", f"{WHOAMI}; echo oops >&2; exit 7"], timeout=60,
             deadline=120)
    assert (r.stdout.decode().splitlines(), r.stderr, r.exit_code) == (out, b"oops\n", 7)
    if vm:
        r = call("ExecSync", container_id=cid, cmd=["sh", "-c", "nproc; grep MemTotal /proc/meminfo"], timeout=60,
                 deadline=120)
        nproc, memtotal = r.stdout.decode().splitlines()
        assert nproc == "2" and 264 * 1024 < int(memtotal.split()[1]) <= 320 * 1024, (nproc, memtotal)

    second = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="second"), image=pb.ImageSpec(image=IMAGE),
        command=["sh", "-c", f"{WHOAMI}; exit 4"], log_path="second.log",
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(namespace_options=namespaces)))
    cid2 = call("CreateContainer", pod_sandbox_id=sandbox_id, config=second, sandbox_config=sandbox_config).container_id
    call("StartContainer", container_id=cid2, deadline=BOOT)
    wait_for(lambda: call("ContainerStatus", container_id=cid2).status.state == pb.CONTAINER_EXITED, timeout=60,
             what="the second container's exit")
    assert call("ContainerStatus", container_id=cid2).status.exit_code == 4
    log2 = os.path.join(log_dir, "second.log")
    wait_for(lambda: os.path.exists(log2) and len(cri_log_lines(log2)) >= 2, timeout=30, what="the second container's log")
    second_out = [text for stream, text in cri_log_lines(log2) if stream == "stdout"]
    assert second_out == out[:2], second_out  # the same kernel: in a VM, the pod's one VM
    call("RemoveContainer", container_id=cid2)
    assert not os.path.exists(os.path.join(c.capsule_root, cid2))
    assert cgroup_gone(c, cid2)

    # StopContainer: SIGTERM reaches the trap, whose exit status reaches the CRI
    call("StopContainer", container_id=cid, timeout=30, deadline=120)
    st = call("ContainerStatus", container_id=cid).status
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 3), f"{st}\n{c.log_tail(80)}"
    call("RemoveContainer", container_id=cid)
    assert not os.path.exists(os.path.join(c.capsule_root, cid))
    assert cgroup_gone(c, cid)

    call("StopPodSandbox", pod_sandbox_id=sandbox_id, deadline=120)
    assert call("PodSandboxStatus", pod_sandbox_id=sandbox_id).status.state == pb.SANDBOX_NOTREADY
    assert not pid_alive(pause_pid)
    call("RemovePodSandbox", pod_sandbox_id=sandbox_id)
    assert not os.path.exists(os.path.join(c.capsule_root, sandbox_id))
    assert cgroup_gone(c, sandbox_id)
    # the shims exit, and with the VM handler no VMM or virtiofsd is left
    wait_for(lambda: not [pid for pid in c._our_processes() if sandbox_id in c._cmdline(pid) or cid in c._cmdline(pid)],
             timeout=30, what="the pod's processes to exit")
