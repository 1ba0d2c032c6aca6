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


class TestVmHost(inner.Suite):
    name = "vm-host"
    modules = ["tests/e2e/test_vm_host.py", "tests/e2e/test_vm_api.py", "tests/test_unit.py"]
    kexpr = "test_vm_host or test_vm_api or (test_vmm_kvm and open_real_kvm)"
    # Measured at 74-113 s of VM wall time (59-98 s of inner pytest, 79 tests) on a loaded host;
    # the VM is killed (exit 124) after this many seconds.
    timeout = 600
    precondition = ('[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "vm-host: no read-write /dev/kvm"; exit 3; }\n'
                    'echo "vm-host: /dev/kvm is ready"')
    ready = "vm-host: /dev/kvm is ready"
    collected = [] if HOST_KVM else inner.collect(modules, kexpr)
