"""A runtime killed at any moment leaves nothing that `delete --force` cannot remove.

capsule is killed with SIGKILL at its Nth system call, for N across every step of create, start,
exec, run and delete: right after each system call that changes something outside the process
(the world only changes there), plus an even spread over the rest. strace injects the signal; it
counts the calls of each system call apart, so the Nth call is named as the Kth of its name, and
without -f it traces capsule alone, not the container's processes. Also while hooks block.
After each kill: whatever is left settles (an init whose create did not finish dies with it),
`delete --force` leaves no state, cgroup, mount, process or socket, and the same id runs again."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import own_cgroup_dirs

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (scripts/install-deps)")

SLEEP = ["sleep", "1000"]
# System calls after which the world may look different: files, cgroups, processes, messages.
EFFECTS = {"mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "write", "writev",
           "pwrite64", "sendto", "sendmsg", "recvfrom", "recvmsg", "clone", "clone3", "fork", "vfork", "kill", "tgkill",
           "pidfd_send_signal", "bind", "listen", "connect", "shutdown", "socketpair", "wait4", "waitid", "setns",
           "unshare", "mount", "umount2", "prctl"}
SPREAD = 10


def container_cgroups(bundle):
    return own_cgroup_dirs(f"capsule-test/{bundle.id}")


def leftover_processes(bundle):
    """Live processes in the container's cgroup, or that name the bundle (hooks), or whose
    root is in it."""
    mark = f"/capsule-test/{bundle.id}"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    continue
            with open(f"/proc/{pid}/cgroup") as f:
                cgroups = [line.rstrip("\n").split(":", 2)[2] for line in f]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace").replace("\0", " ")
            root = os.readlink(f"/proc/{pid}/root")
        except (OSError, IndexError):
            continue  # gone meanwhile
        if any(c == mark or c.endswith(mark) or mark + "/" in c for c in cgroups) or bundle.path in cmdline \
                or root.startswith(bundle.path):
            found.append(f"{pid}: {cmdline.strip()}")
    return found


def leftovers(capsule, bundle):
    """Everything of the container that still exists. Its socket, the exec socket, is a file in
    the state directory held open by init."""
    left = []
    if os.path.lexists(os.path.join(capsule.root, bundle.id)):
        left.append(f"state dir: {os.listdir(os.path.join(capsule.root, bundle.id))}")
    left += [f"cgroup {d}" for d in container_cgroups(bundle) if os.path.exists(d)]
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if bundle.path in line]
    left += [f"process {p}" for p in leftover_processes(bundle)]
    return left


def kill_at(capsule, point, *args):
    """Run capsule ARGS, killed with SIGKILL when it enters a system call: point is (name, K) for
    the Kth call of that name. Returns whether it was killed (strace then kills itself with the
    same signal)."""
    name, k = point
    cmd = [STRACE, "-qq", "-o", "/dev/null", "-e", f"inject={name}:signal=KILL:when={k}"] + capsule.cmd(*args)
    with open(os.devnull, "w") as null:
        return subprocess.run(cmd, stdout=null, stderr=null, timeout=60).returncode == -signal.SIGKILL


def assert_mostly_killed(killed, what):
    """Nearly every point kills (the number of system calls varies a little between runs)."""
    assert sum(killed) >= 0.8 * len(killed), f"{what}: killed at {sum(killed)} of {len(killed)} points"


def kill_points(capsule, tmp_path, *args):
    """Run capsule ARGS under strace and return where to kill it, as (N, (name, K)) for kill_at:
    right after every system call in EFFECTS (of a run of the same call, after the first and the
    last), SPREAD points evenly over the whole run, and the last call."""
    trace = tmp_path / "trace"
    with open(os.devnull, "w") as null:
        subprocess.run([STRACE, "-qq", "-o", str(trace)] + capsule.cmd(*args), stdout=null, stderr=null, timeout=60, check=True)
    names = [line.split("(")[0] for line in trace.read_text().splitlines() if not line.startswith(("+++", "---"))]
    total = len(names)
    assert total > 30, trace.read_text()
    points = {1, total} | set(range(1, total + 1, total // SPREAD))
    for i, name in enumerate(names[:-1]):
        # names[i] is call i + 1: killing at call i + 2 kills right after it
        if name in EFFECTS and (i == 0 or names[i - 1] != name or names[i + 1] != name):
            points.add(i + 2)
    return [(n, (names[n - 1], names[:n].count(names[n - 1]))) for n in sorted(points)]


def status_of(capsule, cid):
    p = capsule.run("state", cid)
    return json.loads(p.stdout)["status"] if p.returncode == 0 else None


def settle(capsule, bundle, timeout=5):
    """Wait until what the kill left is consistent: a container that is created, running or
    paused with its init alive, or one that is stopped (or never recorded) with nothing running.
    In particular an init whose create did not finish must die on its own. Returns the status."""
    deadline = time.time() + timeout
    while True:
        status = status_of(capsule, bundle.id)
        if status in ("created", "running", "paused"):
            return status
        procs = leftover_processes(bundle)
        if not procs:
            return status
        assert time.time() < deadline, f"status {status}, but still running: {procs}"
        time.sleep(0.02)


def clean_up_and_reuse(capsule, bundle, what):
    status = settle(capsule, bundle)
    p = capsule.run("delete", "--force", bundle.id)
    assert p.returncode == 0, f"{what}: delete --force after status {status}: {p.stderr}"
    left = leftovers(capsule, bundle)
    assert not left, f"{what}: left behind after delete --force (status was {status}): {left}"
    # the id works again
    args = bundle.config["process"]["args"]
    bundle.set_args("sh", "-c", "echo again")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    bundle.set_args(*args)
    assert p.returncode == 0 and p.stdout == "again\n", f"{what}: the id cannot be used again: {p.stderr}"
    assert not leftovers(capsule, bundle)


def test_kill_create_at_every_step(capsule, bundle, tmp_path):
    bundle.set_args(*SLEEP)
    points = kill_points(capsule, tmp_path, "create", "-b", bundle.path, bundle.id)
    capsule.run("delete", "--force", bundle.id, check=True)
    seen, killed = set(), []
    for n, point in points:
        killed.append(kill_at(capsule, point, "create", "-b", bundle.path, bundle.id))
        status = settle(capsule, bundle)
        seen.add(status)
        # a container whose create was killed is stopped, or created if only the exit was left
        assert status in (None, "stopped", "created"), f"create killed at syscall {n}: status {status}"
        clean_up_and_reuse(capsule, bundle, f"create killed at syscall {n}")
    assert {None, "stopped", "created"} <= seen
    assert_mostly_killed(killed, "create")


def test_kill_start_at_every_step(capsule, bundle, tmp_path):
    bundle.set_args(*SLEEP)
    capsule.run("create", "-b", bundle.path, bundle.id, check=True)
    seen, killed = set(), []
    for n, point in kill_points(capsule, tmp_path, "start", bundle.id):
        capsule.run("delete", "--force", bundle.id, check=True)
        capsule.run("create", "-b", bundle.path, bundle.id, check=True)
        killed.append(kill_at(capsule, point, "start", bundle.id))
        status = settle(capsule, bundle)
        seen.add(status)
        # init exits when `start` dies after it took the exec socket but before it sent the state
        assert status in ("created", "running", "stopped"), f"start killed at syscall {n}: status {status}"
        clean_up_and_reuse(capsule, bundle, f"start killed at syscall {n}")
    assert {"created", "running"} <= seen
    assert_mostly_killed(killed, "start")


def test_kill_exec_at_every_step(capsule, bundle, tmp_path):
    bundle.set_args(*SLEEP)
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    killed = []
    for n, point in kill_points(capsule, tmp_path, "exec", bundle.id, "true"):
        capsule.run("delete", "--force", bundle.id, check=True)
        capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
        killed.append(kill_at(capsule, point, "exec", bundle.id, "true"))
        # the container itself is unharmed
        assert settle(capsule, bundle) == "running", f"exec killed at syscall {n}"
        clean_up_and_reuse(capsule, bundle, f"exec killed at syscall {n}")
    assert_mostly_killed(killed, "exec")


def test_exec_killed_before_execve_leaves_no_process(capsule, bundle):
    """The exec'd process dies with a runtime killed before it has learned the process's pid:
    that runtime could not have killed it on failure. (Killed later, once the process may have
    run execve, the workload stays, as with runc, and delete --force removes it.)"""
    bundle.set_args(*SLEEP)
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    init = capsule.state(bundle.id)["pid"]
    assert kill_at(capsule, ("recvmsg", 1), "exec", bundle.id, "sleep", "77")
    deadline = time.time() + 5
    while True:
        extra = [p for p in leftover_processes(bundle) if not p.startswith(f"{init}:")]
        if not extra:
            break
        assert time.time() < deadline, f"exec killed before it learned the pid, without any delete: {extra}"
        time.sleep(0.02)
    assert settle(capsule, bundle) == "running"


def test_kill_run_at_every_step(capsule, bundle, tmp_path):
    bundle.set_args("true")
    points = kill_points(capsule, tmp_path, "run", "-b", bundle.path, bundle.id)
    assert not leftovers(capsule, bundle)
    killed = []
    for n, point in points:
        killed.append(kill_at(capsule, point, "run", "-b", bundle.path, bundle.id))
        clean_up_and_reuse(capsule, bundle, f"run killed at syscall {n}")
    assert_mostly_killed(killed, "run")


def test_kill_delete_at_every_step(capsule, bundle, tmp_path):
    bundle.set_args(*SLEEP)
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    killed = []
    for n, point in kill_points(capsule, tmp_path, "delete", "--force", bundle.id):
        capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
        killed.append(kill_at(capsule, point, "delete", "--force", bundle.id))
        clean_up_and_reuse(capsule, bundle, f"delete killed at syscall {n}")
    assert_mostly_killed(killed, "delete")


def blocking_hook(bundle, where):
    """A hook that writes a marker and blocks until the file `release` appears; it names the
    bundle in its command line. Returns both paths."""
    ran, release = os.path.join(bundle.path, f"{where}.ran"), os.path.join(bundle.path, "release")
    code = ("import os, sys, time\nopen(sys.argv[1], 'w').close()\n"
            "while not os.path.exists(sys.argv[2]):\n    time.sleep(0.02)")
    bundle.config.setdefault("hooks", {})[where] = [{"path": "/usr/bin/python3", "args": ["python3", "-c", code, ran, release]}]
    bundle.write()
    return ran, release


def wait_for_hook(proc, ran):
    """Wait until the blocking hook has written its marker, while create (proc) still runs."""
    deadline = time.time() + 10
    while not os.path.exists(ran):
        assert time.time() < deadline and proc.poll() is None, "the hook did not run"
        time.sleep(0.02)


@pytest.mark.parametrize("where", ["prestart", "createRuntime", "createContainer"])
def test_kill_create_while_a_hook_blocks(capsule, bundle, where):
    bundle.set_args(*SLEEP)
    ran, _ = blocking_hook(bundle, where)
    proc = subprocess.Popen(capsule.cmd("create", "-b", bundle.path, bundle.id), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_hook(proc, ran)
        cgroup_procs = [os.path.join(d, "cgroup.procs") for d in container_cgroups(bundle)]
        # init exists, in the container's cgroup, while the hook blocks
        assert any(open(p).read().strip() for p in cgroup_procs if os.path.exists(p))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the hook and init die with the runtime, without any delete
    assert settle(capsule, bundle) == "stopped"
    assert not leftover_processes(bundle)
    listed = json.loads(capsule.run("list", "--format", "json", check=True).stdout)
    assert [(c["id"], c["status"], c["pid"]) for c in listed] == [(bundle.id, "stopped", 0)]
    del bundle.config["hooks"]
    bundle.write()
    clean_up_and_reuse(capsule, bundle, f"create killed in a {where} hook")


def test_state_of_a_container_being_created(capsule, bundle):
    bundle.set_args(*SLEEP)
    ran, release = blocking_hook(bundle, "prestart")
    proc = subprocess.Popen(capsule.cmd("create", "-b", bundle.path, bundle.id), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_hook(proc, ran)
        st = capsule.state(bundle.id)
        assert (st["status"], st["pid"], st["bundle"]) == ("creating", 0, os.path.realpath(bundle.path))
        for args in (["start"], ["kill"], ["exec"], ["delete"]):
            p = capsule.run(*args, bundle.id, *(["true"] if args == ["exec"] else []))
            assert p.returncode != 0 and "creat" in p.stderr, (args, p.stderr)
        assert proc.poll() is None, "the create was disturbed"
        # --force removes it under the running create, which then fails
        capsule.run("delete", "--force", bundle.id, check=True)
        open(release, "w").close()
        assert proc.wait(timeout=10) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    settle(capsule, bundle)
    assert not leftovers(capsule, bundle)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_delete_force_with_damaged_state(capsule, bundle, damage):
    bundle.set_args(*SLEEP)
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    pid = capsule.state(bundle.id)["pid"]
    path = os.path.join(capsule.root, bundle.id, "state.json")
    text = open(path).read()
    with open(path, "w") as f:
        f.write({"truncated": text[: len(text) // 2], "empty": "", "garbage": "[1, 2"}[damage])
    p = capsule.run("state", bundle.id)
    assert p.returncode != 0 and "state.json" in p.stderr and "corrupt" in p.stderr
    refused = capsule.run("delete", bundle.id)
    assert refused.returncode != 0 and os.path.exists(f"/proc/{pid}")
    p = capsule.run("delete", "--force", bundle.id)
    assert p.returncode == 0, p.stderr
    assert not leftovers(capsule, bundle)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    clean_up_and_reuse(capsule, bundle, f"{damage} state.json")


def test_delete_force_removes_a_state_dir_without_state(capsule, bundle):
    """A create killed right after it made the state directory."""
    os.makedirs(os.path.join(capsule.root, bundle.id))
    p = capsule.run("state", bundle.id)
    assert p.returncode != 0 and "does not exist" in p.stderr
    dup = capsule.run("create", "-b", bundle.path, bundle.id)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    capsule.run("delete", "--force", bundle.id, check=True)
    assert not leftovers(capsule, bundle)
    clean_up_and_reuse(capsule, bundle, "empty state dir")
