"""The README's main job, scripts/demo, as a user runs it: one busybox container on the host, a
micro-VM booting the guest kernel, and the same bundle as a VM-isolated container (in the testbed
on this PVM host, directly on hardware KVM). Its output shows where each ran. A run whose guest died
under the testbed's nested KVM runs again, as tests/testbed/nested.py repeats a file's boots."""
import os
import pathlib
import platform
import subprocess

import pytest

import inner
import nested

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.testbed


def guest_died(r):
    """What capsule said of a guest that died in the demo's run r, or None: the micro-VM's status
    (capsule vm run's, the demo's own) or the VM container's words."""
    if r.returncode in (80, 81, 82):
        return f"exit {r.returncode} ({nested.CRASHES[r.returncode]})"
    death = inner.DEATH.search(r.stdout + r.stderr)
    return death and f"exit {r.returncode} ({death.group(0)})"


def run_demo():
    for attempt in range(nested.REPEATS + 1):
        r = subprocess.run([str(REPO / "scripts" / "demo")], cwd=REPO, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=1800)
        died = r.returncode != 0 and guest_died(r)
        if attempt == nested.REPEATS or not died:
            return r
        nested.incident(f"test_demo, scripts/demo ran again: {died}", r.stdout + r.stderr)


def test_demo_runs_a_container_a_micro_vm_and_a_vm_container():
    r = run_demo()
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


def test_demo_repeats_only_a_guests_death():
    def ran(rc, out):
        return subprocess.CompletedProcess([], rc, out, "")
    assert guest_died(ran(82, "")) == "exit 82 (triple fault)"
    start = 'capsule: start container "demo-vm": the VM ended: the guest kernel panicked (status 81)'
    assert guest_died(ran(1, start)) == "exit 1 (the VM ended: the guest)"
    assert not guest_died(ran(1, "capsule: create container \"demo-vm\": linux.namespaces: bad"))
    assert not guest_died(ran(0, "demo: the VM container exited"))
