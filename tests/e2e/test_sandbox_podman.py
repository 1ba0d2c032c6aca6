"""podman with --runtime capsule-vm: every container is a VM container, with no annotation. Needs
hardware KVM, so on this host tests/testbed/test_sandbox.py runs it in the testbed. One boot per
test (nested TCG boots take 10-90 s)."""
import os
import re

import pytest

from podman_env import IMAGE, Podman, podman_session
from test_podman import image_tar  # noqa: F401 (the module's busybox image)
from test_sandbox_vm import guest_release, install_runtime, pytestmark  # noqa: F401 (hardware KVM, kernel and initrd, or skip)


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


def test_run_prints_output_and_returns_exit_code(podman):
    p = podman.run("run", "--rm", *podman.container_args(), IMAGE, "sh", "-c", "echo hello; uname -r; exit 5",
                   check=False, timeout=400)
    assert p.returncode == 5, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == ["hello", guest_release()]


def test_detached_exec_memory_sizing_and_stop(podman):
    cid = podman.create_detached("sh", "-c", "echo up >/tmp/up; exec sleep 1000", opts=["--memory", "300m"])
    insp = podman.inspect(cid)
    assert insp["OCIRuntime"] == podman.runtime and insp["State"]["Running"]
    p = podman.run("exec", cid, "sh", "-c", "cat /tmp/up; grep MemTotal /proc/meminfo; echo oops >&2; exit 7",
                   check=False, timeout=120)
    assert p.returncode == 7, p.stderr
    assert p.stdout.startswith("up\n") and p.stderr == "oops\n"
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", p.stdout).group(1))
    assert 200 * 1024 < mem_kib <= (300 - 32) * 1024, p.stdout  # --memory minus the VMM's share
    podman.run("stop", "--time", "2", cid, timeout=120)
    assert podman.inspect(cid)["State"]["Status"] == "exited"
    podman.run("rm", cid, timeout=120)
