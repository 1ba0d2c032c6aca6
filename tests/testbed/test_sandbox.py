"""VM containers (tests/e2e/test_sandbox_vm*.py; podman with capsule-vm, test_sandbox_podman.py) need
hardware KVM, which this host lacks (PVM): ONE testbed boot (the QEMU TCG micro-VM, whose kernel has
KVM built in) runs the modules, one sandbox boot nested inside it per test that runs a container, and every inner test is reported
here as test_inner[<its node id>] (tests/testbed/inner.py). On a host with hardware KVM the modules run on the host and this skips.
Run with -s to watch the inner run."""
import os

import pytest

import inner

PVM = os.path.isdir("/sys/module/kvm_pvm") and not any(
    os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))
HOST_KVM = os.access("/dev/kvm", os.R_OK | os.W_OK) and not PVM
pytestmark = [pytest.mark.testbed,
              pytest.mark.skipif(HOST_KVM, reason="this host has hardware KVM: tests/e2e/test_sandbox_vm*.py run on it")]

# The inner run's precondition: the testbed's /dev/kvm and the agent's initrd.
PRECONDITION = ('[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "sandbox: no read-write /dev/kvm"; exit 3; }\n'
                '[ -f build/capsule-guest.initrd ] || { echo "sandbox: build/capsule-guest.initrd is missing"; exit 3; }\n'
                'echo "sandbox: /dev/kvm is ready"')
READY = "sandbox: /dev/kvm is ready"


class TestSandbox(inner.Suite):
    name = "sandbox"
    modules = ["tests/e2e/test_sandbox_vm.py", "tests/e2e/test_sandbox_vm_crash.py", "tests/e2e/test_sandbox_vm_jail.py",
               "tests/e2e/test_sandbox_vm_net.py", "tests/e2e/test_sandbox_vm_pod.py", "tests/e2e/test_sandbox_podman.py"]
    kexpr = "test_sandbox_vm or test_sandbox_podman"  # a substring: test_sandbox_vm_* too
    # About twenty-two nested boots of 10-90 s each plus the testbed's own; the VM is killed (exit 124) after this.
    timeout = 2700
    precondition = PRECONDITION
    ready = READY
    collected = [] if HOST_KVM else inner.collect(modules, kexpr)
