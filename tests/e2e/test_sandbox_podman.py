"""podman with --runtime capsule-vm: every container is a VM container, with no annotation. Needs
hardware KVM, so on this host tests/testbed/test_sandbox.py runs it in the testbed. One boot per
test (nested TCG boots take 10-90 s)."""
import os
import re
import subprocess

import pytest

from podman_env import IMAGE, Podman, podman_session
from test_podman import image_tar, run_in_pty  # noqa: F401 (the module's busybox image)
import sandbox_vm_env
from sandbox_vm_env import guest_release, install_runtime

pytestmark = sandbox_vm_env.pytestmark  # hardware KVM, the kernel and the initrd, or skip


class VmPodman(Podman):
    """podman does not pass its environment ($CAPSULE_KERNEL) to the runtime: as installed, the
    kernel and the agent's initrd sit next to a capsule of its own, started as capsule-vm."""

    def __init__(self, *args):
        super().__init__(*args)
        self.runtime = install_runtime(os.path.join(self.base, "bin"))

    def global_args(self):
        args = super().global_args()
        assert args[-2] == "--runtime"
        return args[:-1] + [self.runtime]


@pytest.fixture
def podman(image_tar):  # noqa: F811
    yield from podman_session(image_tar, "capsule-vm-podman", VmPodman)


def test_run_prints_output_and_returns_exit_code_and_podmans_dns(podman):
    """In a network namespace by path (podman writes and binds its resolv.conf, which --network none
    has not), with lo only: the resolv.conf podman made from --dns reaches the container in the VM."""
    netns = f"capdns{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        p = podman.run("run", "--rm", "--network", f"ns:/run/netns/{netns}", "--dns", "10.77.0.53",
                       "--dns-search", "pod.example", "--cgroup-parent", podman.cgroup_parent, IMAGE,
                       "sh", "-c", "echo hello; uname -r; cat /etc/resolv.conf; exit 5", check=False, timeout=400)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)
    assert p.returncode == 5, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == ["hello", guest_release()]
    assert "nameserver 10.77.0.53" in lines and "search pod.example" in lines, p.stdout


def test_detached_exec_tty_pause_memory_sizing_and_stop(podman):
    cid = podman.create_detached("sh", "-c", "echo up >/tmp/up; exec sleep 1000", opts=["--memory", "300m"])
    insp = podman.inspect(cid)
    assert insp["OCIRuntime"] == podman.runtime and insp["State"]["Running"]
    p = podman.run("exec", cid, "sh", "-c", "cat /tmp/up; grep MemTotal /proc/meminfo; echo oops >&2; exit 7",
                   check=False, timeout=120)
    assert p.returncode == 7, p.stderr
    assert p.stdout.startswith("up\n") and p.stderr == "oops\n"
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", p.stdout).group(1))
    assert 200 * 1024 < mem_kib <= (300 - 32) * 1024, p.stdout  # --memory minus the VMM's share
    # exec -it: conmon hands capsule-vm a --console-socket, with --detach.
    argv = podman.cmd("exec", "-it", cid, "sh", "-c", "tty; echo ready; read line; echo got:$line; exit 3")
    rc, out = run_in_pty(argv, podman.env, [(r"ready", "exec-typed\r"), (r"got:exec-typed", None)], timeout=180)
    assert rc == 3, out
    assert re.search(r"^/dev/pts/\d+\r?$", out, re.M), out
    podman.run("pause", cid, timeout=120)
    assert podman.inspect(cid)["State"]["Status"] == "paused"
    podman.run("unpause", cid, timeout=120)
    assert podman.inspect(cid)["State"]["Status"] == "running"
    podman.run("stop", "--time", "2", cid, timeout=120)
    assert podman.inspect(cid)["State"]["Status"] == "exited"
    podman.run("rm", cid, timeout=120)
