"""The container runtime's end-to-end suite on pure cgroup v2: ONE testbed boot (forced into the
QEMU TCG micro-VM, whose /sys/fs/cgroup is a lone cgroup2 mount with every controller and the
runner in its root cgroup) runs the e2e modules below with build/capsule, and this test passes
only if that inner pytest run passed, collected tests from every module and finished in time.
Run with -s to watch the inner run; its summary is in the failure message either way.
test_podman.py is among them: podman 4.3 and conmon drive capsule there, and its harness
(podman_env.py) sees /sys/fs/cgroup is cgroup2fs, so it puts the containers' cgroup parent below
the runner's "0::" cgroup and checks memory.max and the leftovers on the unified hierarchy.

Left out, on purpose:
- the [asan] variants (-k "not asan"): their 36 tests took 125 s more under TCG, and they check
  memory safety, which does not depend on the cgroup layout; the host suite runs them.
- test_vm_host.py: VM boots in the testbed are tests/testbed/test_vm_linux.py's.
Inside the testbed three tests of the selected modules skip, and the summary says why: seccomp's
two LOG-record checks (the guest kernel has no CONFIG_AUDIT) and exec --cgroup per v1 controller."""
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import threading
import uuid
import xml.etree.ElementTree as ET

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "testbed" / "run"
OUT = REPO / "build" / "testbed"

pytestmark = pytest.mark.testbed

MODULES = [
    "tests/e2e/test_bad_input.py",
    "tests/e2e/test_cgroups.py",
    "tests/e2e/test_conformance.py",
    "tests/e2e/test_containerd.py",
    "tests/e2e/test_hooks.py",
    "tests/e2e/test_lifecycle.py",
    "tests/e2e/test_namespaces.py",
    "tests/e2e/test_podman.py",
    "tests/e2e/test_process.py",
    "tests/e2e/test_rootfs.py",
    "tests/e2e/test_seccomp.py",
    "tests/e2e/test_terminal.py",
]
# Measured at 7-8 minutes with test_podman.py (which alone once took 6 under host load); the
# VM is killed (exit 124) after this many seconds.
INNER_TIMEOUT = 900


@pytest.fixture(scope="module", autouse=True)
def kernel():
    """Build (or find) the guest kernel once, outside the run's own timeout."""
    out = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr


def inner_command(junit):
    """Refuse to run anywhere but on pure cgroup v2, then run the selected modules."""
    pytest_cmd = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", "-rfEs",
                  "-k", "not asan", f"--junitxml={junit}"] + MODULES
    return ('fs=$(stat -f -c %T /sys/fs/cgroup)\n'
            '[ "$fs" = cgroup2fs ] || { echo "runtime-v2: /sys/fs/cgroup is $fs, not cgroup2"; exit 3; }\n'
            'echo "runtime-v2: cgroup2 with: $(cat /sys/fs/cgroup/cgroup.controllers); in $(cat /proc/self/cgroup)"\n'
            f"exec {shlex.join(pytest_cmd)}\n")


def stream(cmd, env, timeout):
    """Run cmd, echoing its output as it comes; return (status or None if killed, output)."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    # tests/testbed/run kills the VM at TESTBED_TIMEOUT; this is the backstop if it hangs itself
    killed = []
    timer = threading.Timer(timeout, lambda: (killed.append(True), os.killpg(proc.pid, signal.SIGTERM)))
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return (None if killed else proc.returncode), "".join(lines)


def junit_counts(path):
    """module -> {"tests", "failed", "skipped"} from the inner run's JUnit XML."""
    counts = {}
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "").split(".")[-1] + ".py"
        c = counts.setdefault(module, {"tests": 0, "failed": 0, "skipped": 0})
        c["tests"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            c["failed"] += 1
        elif case.find("skipped") is not None:
            c["skipped"] += 1
    return counts


def test_e2e_suite_passes_on_pure_cgroup_v2():
    assert os.access(REPO / "build" / "capsule", os.X_OK), "build/capsule is missing: run make"
    OUT.mkdir(parents=True, exist_ok=True)
    junit = OUT / f"runtime-v2-{uuid.uuid4().hex}.xml"
    env = dict(os.environ, TESTBED_MODE="qemu", TESTBED_TIMEOUT=str(INNER_TIMEOUT), TESTBED_VERBOSE="1")
    try:
        rc, out = stream([str(RUN), inner_command(junit)], env, INNER_TIMEOUT + 120)
        summary = "\n".join(out.splitlines()[-40:])
        assert rc is not None and rc != 124, f"the inner run timed out:\n{summary}"
        assert "runtime-v2: cgroup2 with:" in out, f"the testbed is not pure cgroup v2:\n{summary}"
        assert rc == 0, f"the inner pytest run failed (exit {rc}):\n{summary}"
        final = [l for l in out.splitlines() if re.search(r"\d+ passed.* in [\d.]+s", l)]
        assert final and "failed" not in final[-1] and "error" not in final[-1], summary
        assert junit.exists(), f"the inner run wrote no {junit.name}:\n{summary}"
        counts = junit_counts(junit)
        for module in MODULES:
            name = os.path.basename(module)
            c = counts.get(name)
            assert c and c["tests"] > c["skipped"], f"{name}: no test ran inside the testbed ({c}):\n{summary}"
            assert c["failed"] == 0, f"{name}: {c}:\n{summary}"
    finally:
        junit.unlink(missing_ok=True)
