"""Runs pytest modules inside ONE boot of the QEMU TCG testbed and reports every inner test as an
outer test of its own. A test module subclasses Suite as a Test* class: its inner tests are
collected on the host (pytest --collect-only), the inner run writes JUnit XML into build/testbed/,
and test_inner[<node id>] passes, fails (with the inner report) or skips (with the inner reason)
as that inner test did, so the closing summary counts them; test_inner_run fails when the run as
a whole went wrong (timeout, its precondition, no XML, an inner test the host did not collect, a
module of which nothing ran).

An inner test that failed because a guest died (a reset, a panic or a triple fault: what capsule
says then, DEATH) runs again in the same boot, up to twice, as tests/testbed/nested.py repeats a
file's boots: under the testbed's nested KVM such deaths come now and then with no sign of capsule
in them. Each repeat is logged as an incident; a test whose guest dies every time fails.
Run as `inner.py NAME JUNIT PYTEST-ARGS...` inside the testbed (run() does it)."""
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

import nested

REPO = pathlib.Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "testbed" / "run"
OUT = REPO / "build" / "testbed"
COLLECTION_FAILED = "<collection failed>"
PYTEST = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", "-rfEs"]
# capsule's words for a guest that died: a VM container's (src/sandbox) and `capsule vm run`'s.
DEATH = re.compile(r"the VM ended: the guest|the guest triple-faulted")
REPEATS = 2


def build_kernel():
    """Build (or find) the guest kernel, outside the inner run's own timeout."""
    out = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr


def collect(modules, kexpr):
    """Node ids of the inner tests, as pytest collects them on the host."""
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-k", kexpr] + modules, cwd=REPO, capture_output=True, text=True, timeout=300)
    ids = [l for l in p.stdout.splitlines() if "::" in l]
    if p.returncode != 0 or not ids:
        # A collection error is a failure of its own (check_run), not zero tests.
        return [COLLECTION_FAILED]
    return ids


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


def results_of(junit):
    """junit_results() of the inner run, each test's last run counting (junit, then its repeats)."""
    results = junit_results(junit)
    for n in range(1, REPEATS + 1):
        if pathlib.Path(f"{junit}.{n}").exists():
            results.update(junit_results(f"{junit}.{n}"))
    return results


def run_and_repeat(name, junit, args, pytest_run):
    """Inside the testbed: pytest_run(args, junit) (its exit status), then again for the tests whose
    guest died, each repeat writing JUNIT.N. The status: 0 once the last run of every test passed."""
    rc = pytest_run(args, junit)
    results = junit_results(junit)
    for n in range(1, REPEATS + 1):
        dead = [nodeid for nodeid, (outcome, message) in results.items() if outcome == "failed" and DEATH.search(message)]
        if not dead:
            break
        for nodeid in dead:
            nested.incident(f"{name}, its test ran again: {nodeid}", results[nodeid][1])
        pytest_run(dead, f"{junit}.{n}")
        results.update(junit_results(f"{junit}.{n}"))
    if rc == 1 and not any(outcome == "failed" for outcome, _ in results.values()):
        return 0
    return rc


class InnerRun:
    def __init__(self):
        self.problem = None  # why the run as a whole failed, or None
        self.results = {}
        self.summary = ""


def run(name, modules, kexpr, timeout, precondition, ready):
    """Run the modules in the testbed: the shell lines `precondition` run first and must print
    `ready` (else they exit non-zero with their reason), then pytest runs the selected tests."""
    inner = InnerRun()
    assert os.access(REPO / "build" / "capsule", os.X_OK), "build/capsule is missing: run make"
    OUT.mkdir(parents=True, exist_ok=True)
    junit = OUT / f"{name}-{uuid.uuid4().hex}.xml"
    inner_cmd = ["python3", "tests/testbed/inner.py", name, str(junit), "-k", kexpr] + modules
    env = dict(os.environ, TESTBED_MODE="qemu", TESTBED_TIMEOUT=str(timeout), TESTBED_VERBOSE="1")
    try:
        rc, out = stream([str(RUN), f"{precondition}\nexec {shlex.join(inner_cmd)}\n"], env, timeout + 120)
        inner.summary = "\n".join(out.splitlines()[-40:])
        if rc is None or rc == 124:
            inner.problem = "the inner run timed out"
        elif ready not in out:
            inner.problem = f"the testbed's precondition failed (no '{ready}', exit {rc})"
        elif not junit.exists():
            inner.problem = f"the inner run wrote no {junit.name} (exit {rc})"
        else:
            inner.results = results_of(junit)
            if rc != 0 and not any(o == "failed" for o, _ in inner.results.values()):
                inner.problem = f"the inner pytest run failed (exit {rc}) with no failed test"
    finally:
        for path in [junit] + [pathlib.Path(f"{junit}.{n}") for n in range(1, REPEATS + 1)]:
            path.unlink(missing_ok=True)
    return inner


def check_run(inner, collected, modules):
    assert inner.problem is None, f"{inner.problem}:\n{inner.summary}"
    assert collected != [COLLECTION_FAILED], "collecting the inner tests on the host failed"
    unknown = sorted(set(inner.results) - set(collected))
    assert not unknown, f"inner tests the host did not collect: {unknown}"
    for module in modules:
        ran = [n for n, (o, _) in inner.results.items() if n.startswith(module + "::") and o != "skipped"]
        assert ran, f"{module}: no test ran inside the testbed"


def report(inner, nodeid):
    """Pass, fail or skip as the inner test nodeid did."""
    if nodeid not in inner.results:
        pytest.fail(f"{nodeid} did not run inside the testbed"
                    f"{': ' + inner.problem if inner.problem else ''}\n{inner.summary}", pytrace=False)
    outcome, message = inner.results[nodeid]
    if outcome == "skipped":
        pytest.skip(f"inside the testbed: {message}")
    if outcome == "failed":
        pytest.fail(f"inside the testbed:\n{message}", pytrace=False)


class Suite:
    """Set these in the subclass: name (of the XML file), modules, kexpr (pytest -k), timeout
    (seconds), precondition (shell lines that print `ready` or exit non-zero with their reason) and
    collected = collect(modules, kexpr)."""
    name = modules = kexpr = timeout = precondition = ready = None
    collected = []

    def pytest_generate_tests(self, metafunc):
        if "nodeid" in metafunc.fixturenames:
            metafunc.parametrize("nodeid", self.collected)

    @pytest.fixture(scope="class", autouse=True)
    def kernel(self):
        build_kernel()

    @pytest.fixture(scope="class")
    def inner_run(self):
        return run(self.name, self.modules, self.kexpr, self.timeout, self.precondition, self.ready)

    def test_inner_run(self, inner_run):
        check_run(inner_run, self.collected, self.modules)

    def test_inner(self, inner_run, nodeid):
        report(inner_run, nodeid)


def pytest_run(args, junit):
    return subprocess.run(PYTEST + [f"--junitxml={junit}"] + args).returncode


if __name__ == "__main__":
    sys.exit(run_and_repeat(sys.argv[1], sys.argv[2], sys.argv[3:], pytest_run))
