"""tests/testbed/inner.py's repeats, with a stand-in for the inner pytest run (no VM): a test whose
guest died runs again and is logged, other failures do not, and a death in every run is what the
outer test then reports."""
import os
import pathlib
import subprocess
import sys

import pytest

import inner
import nested


def junit(path, outcomes):
    """A JUnit XML file as pytest writes it: outcomes {node id: (outcome, message)}."""
    cases = []
    for nodeid, (outcome, message) in outcomes.items():
        module, name = nodeid.split("::")
        body = {"passed": "", "failed": f'<failure message="x">{message}</failure>',
                "skipped": f'<skipped message="{message}"/>'}[outcome]
        cases.append(f'<testcase classname="{module[:-3].replace("/", ".")}" name="{name}">{body}</testcase>')
    path.write_text(f'<testsuites><testsuite>{"".join(cases)}</testsuite></testsuites>')


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setattr(nested, "BASE", tmp_path)
    monkeypatch.setattr(nested, "INCIDENTS", tmp_path / "incidents.log")
    return tmp_path


def runner(runs):
    """A pytest_run whose k-th call writes runs[k] and records its arguments."""
    calls = []

    def run(args, path):
        outcomes = runs[len(calls)]
        calls.append(args)
        junit(pathlib.Path(path), outcomes)
        return 1 if any(o == "failed" for o, _ in outcomes.values()) else 0
    return run, calls


A, B = "tests/e2e/m.py::test_a", "tests/e2e/m.py::test_b"
DIED = ("failed", 'start container "x": the VM ended: the guest triple-faulted (status 82)')


def incidents(base):
    p = base / "incidents.log"
    return [line for line in p.read_text().splitlines() if not line.startswith(" ")] if p.exists() else []


def test_a_guest_death_runs_that_test_again_and_is_logged(fake):
    run, calls = runner([{A: ("passed", ""), B: DIED}, {B: ("passed", "")}])
    rc = inner.run_and_repeat("s", str(fake / "j.xml"), ["-k", "x", "tests/e2e/m.py"], run)
    assert rc == 0 and calls == [["-k", "x", "tests/e2e/m.py"], [B]]
    assert inner.results_of(fake / "j.xml") == {A: ("passed", ""), B: ("passed", "")}
    assert [line.split(" ", 1)[1] for line in incidents(fake)] == [f"nested guest crash in s, its test ran again: {B}"]


def test_another_failure_runs_once(fake):
    run, calls = runner([{A: ("failed", "assert 1 == 2"), B: ("passed", "")}])
    assert inner.run_and_repeat("s", str(fake / "j.xml"), [], run) == 1
    assert len(calls) == 1 and incidents(fake) == []


def test_a_death_in_all_three_runs_is_what_the_outer_test_sees(fake):
    run, calls = runner([{A: DIED}, {A: DIED}, {A: DIED}])
    assert inner.run_and_repeat("s", str(fake / "j.xml"), [], run) == 1
    assert len(calls) == 3 and len(incidents(fake)) == 2
    assert inner.results_of(fake / "j.xml") == {A: DIED}


FAILING_STATUS_TEST = '''
import os
import pytest
from conftest import Capsule

@pytest.fixture
def vm(tmp_path):
    return Capsule(str(tmp_path / "state"))

def test_status(vm):
    os.makedirs(os.path.join(vm.root, "c1"))
    with open(os.path.join(vm.root, "c1", "vmm.log"), "w") as f:
        f.write(os.environ["VMM_LOG"])
    assert "stopped" == "running"
'''


@pytest.mark.parametrize("vmm_log, repeated", [
    ("capsule: the VM ended: the guest triple-faulted (status 82)\n", True),
    ("capsule: the guest agent's connection closed\n", False),
], ids=["guest-died", "other-failure"])
def test_a_failed_status_assert_carries_the_guests_death(tmp_path, vmm_log, repeated):
    """tests/conftest.py adds a VM container's death from its vmm.log to a failure that did not
    name it, so that inner.py repeats a status assert that failed because the guest died."""
    (tmp_path / "test_m.py").write_text(FAILING_STATUS_TEST)
    env = dict(os.environ, PYTHONPATH=str(inner.REPO / "tests"), VMM_LOG=vmm_log)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                        f"--junitxml={tmp_path / 'j.xml'}", "test_m.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    [(outcome, message)] = inner.junit_results(tmp_path / "j.xml").values()
    assert outcome == "failed" and "assert 'stopped' == 'running'" in message, message
    assert bool(inner.DEATH.search(message)) == repeated, message
