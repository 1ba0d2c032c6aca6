"""Runs pytest modules inside ONE boot of the QEMU TCG testbed and reports every inner test as an
outer test of its own. A test module subclasses Suite as a Test* class: its inner tests are
collected on the host (pytest --collect-only), the inner run writes JUnit XML into build/testbed/,
and test_inner[<node id>] passes, fails (with the inner report) or skips (with the inner reason)
as that inner test did, so the closing summary counts them; test_inner_run fails when the run as
a whole went wrong (timeout, its precondition, no XML, an inner test the host did not collect, a
module of which nothing ran)."""
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
COLLECTION_FAILED = "<collection failed>"


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
    pytest_cmd = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", "-rfEs",
                  "-k", kexpr, f"--junitxml={junit}"] + modules
    env = dict(os.environ, TESTBED_MODE="qemu", TESTBED_TIMEOUT=str(timeout), TESTBED_VERBOSE="1")
    try:
        rc, out = stream([str(RUN), f"{precondition}\nexec {shlex.join(pytest_cmd)}\n"], env, timeout + 120)
        inner.summary = "\n".join(out.splitlines()[-40:])
        if rc is None or rc == 124:
            inner.problem = "the inner run timed out"
        elif ready not in out:
            inner.problem = f"the testbed's precondition failed (no '{ready}', exit {rc})"
        elif not junit.exists():
            inner.problem = f"the inner run wrote no {junit.name} (exit {rc})"
        else:
            inner.results = junit_results(junit)
            if rc != 0 and not any(o == "failed" for o, _ in inner.results.values()):
                inner.problem = f"the inner pytest run failed (exit {rc}) with no failed test"
    finally:
        junit.unlink(missing_ok=True)
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
