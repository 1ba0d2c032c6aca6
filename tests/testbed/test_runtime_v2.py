"""The container runtime's end-to-end suite on pure cgroup v2: ONE testbed boot (forced into the
QEMU TCG micro-VM, whose /sys/fs/cgroup is a lone cgroup2 mount with every controller and the
runner in its root cgroup) runs the e2e modules below with build/capsule, and every inner test is
reported here as a test of its own, test_inner[<its node id>]: passed, failed (with its report) or
skipped (with its reason), so the closing summary line counts the inner skips and failures. The
inner tests are collected on the host (pytest --collect-only, about 2 s); one that did not run
inside fails, and test_inner_run checks the run itself (pure cgroup v2, finished in time, no inner
test the host did not know). Run with -s to watch the inner run.
test_podman.py is among them: podman 4.3 and conmon drive capsule there, and its harness
(podman_env.py) sees /sys/fs/cgroup is cgroup2fs, so it puts the containers' cgroup parent below
the runner's "0::" cgroup and checks memory.max and the leftovers on the unified hierarchy.

Left out, on purpose:
- the [asan] variants (-k "not asan"): their 36 tests took 125 s more under TCG, and they check
  memory safety, which does not depend on the cgroup layout; the host suite runs them.
- test_vm_host.py: VM boots in the testbed are tests/testbed/test_vm_linux.py's."""
import os
import pathlib
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
    "tests/e2e/test_attacks.py",
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


def collect_inner():
    """Node ids of the inner tests, as pytest collects them on the host."""
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-k", "not asan"] + MODULES, cwd=REPO, capture_output=True, text=True, timeout=300)
    ids = [l for l in p.stdout.splitlines() if "::" in l]
    if p.returncode != 0 or not ids:
        # A collection error is a failure of its own (test_inner_run), not zero tests.
        return ["<collection failed>"]
    return ids


INNER = collect_inner()


def junit_results(path):
    """node id -> (outcome, message) from the inner run's JUnit XML."""
    results = {}
    for case in ET.parse(path).iter("testcase"):
        nodeid = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                text = el.get("message", "") if outcome == "skipped" else (el.text or el.get("message", ""))
                results[nodeid] = (outcome, text)
                break
        else:
            results[nodeid] = ("passed", "")
    return results


class InnerRun:
    def __init__(self):
        self.problem = None  # why the run as a whole failed, or None
        self.results = {}
        self.summary = ""


@pytest.fixture(scope="module")
def inner_run():
    run = InnerRun()
    assert os.access(REPO / "build" / "capsule", os.X_OK), "build/capsule is missing: run make"
    OUT.mkdir(parents=True, exist_ok=True)
    junit = OUT / f"runtime-v2-{uuid.uuid4().hex}.xml"
    env = dict(os.environ, TESTBED_MODE="qemu", TESTBED_TIMEOUT=str(INNER_TIMEOUT), TESTBED_VERBOSE="1")
    try:
        rc, out = stream([str(RUN), inner_command(junit)], env, INNER_TIMEOUT + 120)
        run.summary = "\n".join(out.splitlines()[-40:])
        if rc is None or rc == 124:
            run.problem = "the inner run timed out"
        elif "runtime-v2: cgroup2 with:" not in out:
            run.problem = "the testbed is not pure cgroup v2"
        elif not junit.exists():
            run.problem = f"the inner run wrote no {junit.name} (exit {rc})"
        else:
            run.results = junit_results(junit)
            if rc != 0 and not any(o == "failed" for o, _ in run.results.values()):
                run.problem = f"the inner pytest run failed (exit {rc}) with no failed test"
    finally:
        junit.unlink(missing_ok=True)
    return run


def test_inner_run(inner_run):
    assert inner_run.problem is None, f"{inner_run.problem}:\n{inner_run.summary}"
    assert INNER != ["<collection failed>"], "collecting the inner tests on the host failed"
    unknown = sorted(set(inner_run.results) - set(INNER))
    assert not unknown, f"inner tests the host did not collect: {unknown}"
    for module in MODULES:
        ran = [n for n, (o, _) in inner_run.results.items() if n.startswith(module + "::") and o != "skipped"]
        assert ran, f"{module}: no test ran inside the testbed"


@pytest.mark.parametrize("nodeid", INNER)
def test_inner(inner_run, nodeid):
    if nodeid not in inner_run.results:
        pytest.fail(f"{nodeid} did not run inside the testbed"
                    f"{': ' + inner_run.problem if inner_run.problem else ''}\n{inner_run.summary}", pytrace=False)
    outcome, message = inner_run.results[nodeid]
    if outcome == "skipped":
        pytest.skip(f"inside the testbed: {message}")
    if outcome == "failed":
        pytest.fail(f"inside the testbed:\n{message}", pytrace=False)
