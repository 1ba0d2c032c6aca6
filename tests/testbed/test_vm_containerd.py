"""containerd driving capsule-vm (tests/e2e/test_sandbox_containerd.py: ctr --runc-binary, and the
CRI plugin with a "capsule-vm" RuntimeClass handler) needs hardware KVM, which this host lacks
(PVM): ONE testbed boot runs the module, five sandbox boots nested inside it, and every inner test
is reported here as test_inner[<its node id>] (tests/testbed/inner.py). A Suite file of its own,
so that it runs in parallel with test_sandbox.py's (each testbed file is one xdist group). On a
host with hardware KVM the module runs on the host and this skips. Run with -s to watch the inner
run."""
import pytest

import inner
from test_sandbox import HOST_KVM, PRECONDITION, READY

pytestmark = [pytest.mark.testbed,
              pytest.mark.skipif(HOST_KVM, reason="this host has hardware KVM: tests/e2e/test_sandbox_containerd.py runs on it")]


class TestSandboxContainerd(inner.Suite):
    name = "sandbox-containerd"
    modules = ["tests/e2e/test_sandbox_containerd.py"]
    kexpr = "test_sandbox_containerd"
    # Five nested boots of 10-90 s each, two containerds and the testbed's own boot; the VM is
    # killed (exit 124) after this.
    timeout = 1500
    precondition = PRECONDITION
    ready = READY
    collected = [] if HOST_KVM else inner.collect(modules, kexpr)
