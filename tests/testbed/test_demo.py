"""The README's main job, scripts/demo, as a user runs it: one busybox container on the host, a
micro-VM booting the guest kernel, and the same bundle as a VM-isolated container (in the testbed
on this PVM host, directly on hardware KVM). Its output shows where each ran."""
import os
import pathlib
import platform
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.testbed


def test_demo_runs_a_container_a_micro_vm_and_a_vm_container():
    r = subprocess.run([str(REPO / "scripts" / "demo")], cwd=REPO, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # Twice the same container: first on the host's kernel, then inside the guest's.
    assert out.count("hello from a capsule container") == 2, out
    kernels = [l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("kernel: ")]
    assert len(kernels) == 2, out
    assert kernels[0] == platform.release(), out
    assert kernels[1] != kernels[0], "the VM container ran on the host's kernel"
    assert "guest: hello from inside a capsule micro-VM" in out
    assert out.rstrip().endswith("demo: the VM container exited"), out
    # Its bundle, under build/, is gone with it.
    assert not [p for p in os.listdir(REPO / "build") if p.startswith("demo.")]
