"""The testbed (tests/testbed/run): a QEMU TCG micro-VM with KVM inside, or the host itself
when its /dev/kvm is hardware-backed. Tests that need a property of the VM (pure cgroup v2,
the "inside QEMU" banner) force TESTBED_MODE=qemu; the others accept either path."""
import os
import pathlib
import subprocess
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "testbed" / "run"
BUILD = REPO / "build" / "testbed"

pytestmark = pytest.mark.testbed


def run_in_testbed(cmd, timeout=900, **env):
    """Run cmd in the testbed; the first call may build the kernel (minutes)."""
    full_env = dict(os.environ, **env)
    return subprocess.run([str(RUN), cmd], env=full_env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


def processes_with_env(marker):
    """Pids of processes whose environment holds marker (VAR=value)."""
    pids = set()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                pids.add(int(entry.name))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module", autouse=True)
def kernel():
    """Build (or find) the guest kernel once, outside every test's own timeout."""
    out = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True,
                         text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    return pathlib.Path(out.stdout.strip())


def test_exit_status_and_output_pass_through():
    r = run_in_testbed("printf 'out\\n'; printf 'err\\n' >&2; exit 7")
    assert r.returncode == 7, r.stderr
    both = r.stdout + r.stderr
    assert b"out\n" in both and b"err\n" in both
    assert b"\r" not in r.stdout


def test_qemu_banner_and_environment():
    r = run_in_testbed('pwd; echo "${PATH%%:*}"; echo "$CAPSULE_KERNEL"; echo "$CAPSULE_PROBE"',
                TESTBED_MODE="qemu", CAPSULE_PROBE="it's passed")
    assert r.returncode == 0, r.stderr
    assert b"testbed: running inside QEMU TCG testbed" in r.stderr
    assert r.stdout.decode().splitlines() == [str(REPO), str(REPO / "build"),
                                              "/usr/share/capsule/vmlinux", "it's passed"]


def test_kernel_exposed_inside(kernel):
    r = run_in_testbed('readlink -f "$CAPSULE_KERNEL"; head -c 4 "$CAPSULE_KERNEL" | od -An -c',
                TESTBED_MODE="qemu")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0] == str(kernel / "vmlinux")
    assert lines[1].split() == ["177", "E", "L", "F"]


def test_cgroup_v2_only():
    r = run_in_testbed("stat -f -c %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers",
                TESTBED_MODE="qemu")
    assert r.returncode == 0, r.stderr
    fstype, controllers = r.stdout.decode().splitlines()[:2]
    assert fstype == "cgroup2fs"
    for ctrl in ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "misc"):
        assert ctrl in controllers.split(), controllers


def test_kvm_ring0_runs():
    BUILD.mkdir(parents=True, exist_ok=True)
    binary = BUILD / "kvm_ring0"
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-static", "-o",
                    str(binary), str(REPO / "tests" / "testbed" / "kvm_ring0.c")], check=True)
    r = run_in_testbed(f"{binary.relative_to(REPO)} && ls -d /sys/module/kvm_amd /sys/module/kvm_intel 2>/dev/null")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"kvm_ring0: ok: out 0x1234 <- 42" in r.stdout
    assert b"/sys/module/kvm_" in r.stdout


def test_repo_writes_reach_host():
    probe = BUILD / f"probe-{uuid.uuid4().hex}"
    BUILD.mkdir(parents=True, exist_ok=True)
    try:
        r = run_in_testbed(f"echo written-inside > {probe}")
        assert r.returncode == 0, r.stderr
        assert probe.read_text() == "written-inside\n"
    finally:
        probe.unlink(missing_ok=True)


def test_timeout_kills_vm():
    marker = f"TESTBED_PROBE={uuid.uuid4().hex}"
    name, value = marker.split("=")
    r = run_in_testbed("sleep 1000", timeout=120, TESTBED_TIMEOUT="20", TESTBED_MODE="qemu",
                       **{name: value})
    assert r.returncode == 124
    assert b"timed out after 20 s" in r.stderr
    assert processes_with_env(marker) == set()


def first_boot_only(action, then, log, **env):
    """Run `action` in the first boot only (a marker file on the repository share tells the
    second), then `then`; incidents go to log. Returns the run and the incident log's lines."""
    marker = BUILD / f"first-boot-{uuid.uuid4().hex}"
    BUILD.mkdir(parents=True, exist_ok=True)
    try:
        r = run_in_testbed(f"if [ ! -e {marker} ]; then touch {marker}; sync; {action}; fi; {then}",
                           TESTBED_MODE="qemu", TESTBED_INCIDENTS=str(log), **env)
    finally:
        marker.unlink(missing_ok=True)
    assert r.stdout.count(b"second boot") == 1, r.stdout + r.stderr
    return r, log.read_text().splitlines()


def test_own_kernel_panic_boots_once_more(tmp_path):
    """A panic of the testbed's kernel (not of a capsule guest) is logged and the command runs in
    a second boot; here the command panics the testbed's kernel the first time only."""
    r, entries = first_boot_only("echo c >/proc/sysrq-trigger", "echo second boot; exit 5", tmp_path / "incidents.log")
    assert r.returncode == 5, r.stderr
    assert b"the testbed's own kernel panicked" in r.stderr and b"sysrq triggered crash" in r.stderr, r.stderr
    assert len(entries) == 1 and "L1 panic, booted again: Kernel panic - not syncing: sysrq triggered crash" \
        in entries[0], entries


def test_own_kernel_panicking_twice_fails(tmp_path):
    log = tmp_path / "incidents.log"
    r = run_in_testbed("echo c >/proc/sysrq-trigger", TESTBED_MODE="qemu", TESTBED_INCIDENTS=str(log))
    assert r.returncode == 125, r.stderr
    assert r.stderr.count(b"sysrq triggered crash") >= 2, r.stderr
    assert b"the guest reported no exit status" in r.stderr
    assert len(log.read_text().splitlines()) == 1


def test_own_kernel_stall_boots_once_more(tmp_path):
    """A testbed whose heartbeat stops (here the command stops the heartbeat's loop, the first time
    only; under TCG the testbed's timers have been seen to stop for good) is killed and booted again."""
    stop = "for p in $(pgrep -f 'init stage2'); do [ $p = 1 ] || kill -STOP $p; done; sleep 300"
    r, entries = first_boot_only(stop, "echo second boot", tmp_path / "incidents.log", TESTBED_STALL="20")
    assert r.returncode == 0, r.stderr
    assert b"its own kernel stopped: no heartbeat for" in r.stderr and b"booting it once more" in r.stderr, r.stderr
    assert len(entries) == 1 and "L1 stalled, booted again: no heartbeat for" in entries[0], entries


def test_timeout_works_inside():
    """coreutils' timeout(1) bounds commands in the testbed (it needs the kernel's POSIX timers)."""
    r = run_in_testbed("timeout 2 sleep 60; echo status $?", TESTBED_MODE="qemu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["status", "124"], r.stdout
