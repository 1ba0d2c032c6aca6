"""tests/testbed/nested.py, with a stand-in for tests/testbed/run (no VM): a crashed guest makes the
boots run once more and is logged, a boot expected to die does not, and a crash in both runs is what
the tests then see."""
import pytest

import nested


class Boot:
    def __init__(self, out, name):
        self.rc = int((out / f"{name}.rc").read_text())

    def tail(self):
        return f"exit {self.rc}\nlast console line"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A 'run' that executes the script on the host and counts its runs in tmp_path/count."""
    run = tmp_path / "run"
    run.write_text("#!/bin/sh\necho x >>" + str(tmp_path / "count") + "\nexec /bin/sh -c \"$1\"\n")
    run.chmod(0o755)
    monkeypatch.setattr(nested, "RUN", run)
    monkeypatch.setattr(nested, "BASE", tmp_path / "base")
    monkeypatch.setattr(nested, "INCIDENTS", tmp_path / "incidents.log")
    return tmp_path


def script(statuses):
    """A boot script writing name.rc; statuses: {name: [its status in run 1, run 2, ...]}."""
    def make(out):
        lines = []
        for name, seq in statuses.items():
            n = f'"{out}/../runs-{name}"'
            lines.append(f'i=$(cat {n} 2>/dev/null || echo 0); echo $((i + 1)) >{n}; set -- {" ".join(map(str, seq))}; '
                         f'shift $i; echo $1 >"{out}/{name}.rc"')
        return "\n".join(lines)
    return make


def load(names):
    return lambda out: {name: Boot(out, name) for name in names}


def runs(base):
    return len((base / "count").read_text().splitlines())


def incidents(base):
    p = base / "incidents.log"
    return p.read_text().splitlines() if p.exists() else []


def test_a_triple_fault_runs_the_boots_again_and_is_logged(fake):
    out, r, boots = nested.run("t", script({"a": [0, 0], "b": [82, 0]}), load("ab"), timeout=60)
    assert r.returncode == 0 and {n: b.rc for n, b in boots.items()} == {"a": 0, "b": 0}
    assert runs(fake) == 2
    assert incidents(fake)[0].endswith(" nested guest crash in t, its boots ran again: boot b exit 82 (triple fault)")
    assert incidents(fake)[1:] == ["    exit 82", "    last console line"]
    assert out.is_dir() and len(list(out.parent.glob("t-*"))) == 1  # the first run's directory is gone


def test_a_clean_run_and_an_expected_death_run_once(fake):
    _, _, boots = nested.run("t", script({"a": [0], "kill": [137]}), load(["a", "kill"]), timeout=60,
                             expected={"kill"})
    assert boots["kill"].rc == 137 and runs(fake) == 1 and incidents(fake) == []


def test_a_second_crash_runs_the_boots_a_third_time(fake):
    _, _, boots = nested.run("t", script({"a": [80, 0, 0], "b": [0, 82, 0]}), load("ab"), timeout=60)
    assert {n: b.rc for n, b in boots.items()} == {"a": 0, "b": 0} and runs(fake) == 3
    assert [line.split(": ", 1)[1] for line in incidents(fake) if not line.startswith(" ")] == [
        "boot a exit 80 (the guest reset itself (a kernel panic with panic=-1, or a double fault))",
        "boot b exit 82 (triple fault)"]


def test_a_crash_in_all_three_runs_is_what_the_tests_see(fake):
    _, _, boots = nested.run("t", script({"a": [80, 81, 82]}), load("a"), timeout=60)
    assert boots["a"].rc == 82 and runs(fake) == 3 and len(incidents(fake)) == 6


def test_a_failed_testbed_is_not_repeated_here(fake):
    make = script({"a": [82, 0]})
    _, r, _ = nested.run("t", lambda out: make(out) + "\nexit 125", load("a"), timeout=60)
    assert r.returncode == 125 and runs(fake) == 1
