"""The VMM's host tests (tests/e2e/test_vm_host.py, normal and ASan builds, and the C unit test that
opens /dev/kvm) on a host without a read-write /dev/kvm, where they would all skip: ONE testbed boot
(the QEMU TCG micro-VM, whose kernel has KVM built in) runs them, and every inner test is reported
here as test_inner[<its node id>] (tests/testbed/inner.py), so the closing summary counts the inner
passes, skips and failures. On a host with /dev/kvm they run on the host and this module skips.
Run with -s to watch the inner run."""
import os

import pytest

import inner

HOST_KVM = os.access("/dev/kvm", os.R_OK | os.W_OK)
pytestmark = [pytest.mark.testbed,
              pytest.mark.skipif(HOST_KVM, reason="this host has /dev/kvm: tests/e2e/test_vm_host.py runs on it")]

MODULES = ["tests/e2e/test_vm_host.py", "tests/test_unit.py"]
KEXPR = "test_vm_host or (test_vmm_kvm and open_real_kvm)"
# Measured at about N minutes for both builds; the VM is killed (exit 124) after this many seconds.
INNER_TIMEOUT = 900
PRECONDITION = ('[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "vm-host: no read-write /dev/kvm"; exit 3; }\n'
                'echo "vm-host: /dev/kvm is ready"')

INNER = [] if HOST_KVM else inner.collect(MODULES, KEXPR)


@pytest.fixture(scope="module", autouse=True)
def kernel():
    inner.build_kernel()


@pytest.fixture(scope="module")
def inner_run():
    return inner.run("vm-host", MODULES, KEXPR, INNER_TIMEOUT, PRECONDITION, "vm-host: /dev/kvm is ready")


def test_inner_run(inner_run):
    inner.check_run(inner_run, INNER, MODULES)


@pytest.mark.parametrize("nodeid", INNER)
def test_inner(inner_run, nodeid):
    inner.report(inner_run, nodeid)
