"""Up to two repeats of a testbed file's boots when a guest kernel crashed under the nested KVM.

The testbed runs capsule's guests under KVM inside QEMU TCG's emulation of SVM. Now and then a
guest kernel there double-faults or triple-faults with no sign of capsule in it (stops 13-17: RIP 0
during boot, registers at the reset vector), or stalls. Such a boot is evidence about TCG as much as
about capsule, so the file's boots run again, up to twice (a CI run of the whole suite met three
such crashes, two of them in one file's consecutive runs), and the last run is the one the tests judge.
It is never silent: the crash (boot, status, its console's last lines, indented) goes to
build/testbed/incidents.log, which the session lists at its end (tests/conftest.py). A file whose
boots crash in all three runs fails, so a deterministic fault still shows."""
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "testbed" / "run"
BASE = REPO / "build" / "testbed"
INCIDENTS = BASE / "incidents.log"

REPEATS = 2
# capsule vm run's statuses for a guest that died (src/vmm/vm.h), and timeout(1)'s for a stalled boot.
CRASHES = {80: "the guest reset itself (a kernel panic with panic=-1, or a double fault)",
           81: "the guest kernel panicked (pvpanic)", 82: "triple fault", 124: "stalled (timeout)",
           137: "stalled (timeout's SIGKILL)"}


def crashed(boots, expected):
    """(name, status, what) of each boot whose guest died, except those expected to."""
    return [(name, b.rc, CRASHES[b.rc]) for name, b in boots.items() if b.rc in CRASHES and name not in expected]


def run(module, script, load, timeout, env=None, expected=()):
    """Run script(out) in the testbed with a fresh out directory below BASE; load(out)
    gives {name: boot}, each with .rc and .tail(). Returns (out, completed process, boots) of the
    run that counts; the caller removes out."""
    BASE.mkdir(parents=True, exist_ok=True)
    for attempt in range(REPEATS + 1):
        out = pathlib.Path(tempfile.mkdtemp(prefix=f"{module}-", dir=BASE))
        r = subprocess.run([str(RUN), script(out)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, env=dict(os.environ, **(env or {})))
        boots = load(out)
        dead = crashed(boots, expected) if r.returncode == 0 else []
        if attempt == REPEATS or not dead:
            return out, r, boots
        for name, rc, what in dead:
            incident(f"{module}, its boots ran again: boot {name} exit {rc} ({what})", boots[name].tail())
        shutil.rmtree(out, ignore_errors=True)


def incident(what, tail):
    """One line in INCIDENTS for a guest's crash, and the last 60 lines of its output, indented."""
    BASE.mkdir(parents=True, exist_ok=True)
    with open(INCIDENTS, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} nested guest crash in {what}\n")
        f.writelines(f"    {line}\n" for line in tail.splitlines()[-60:])
