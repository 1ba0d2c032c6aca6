"""podman 4.3 (via conmon) driving capsule: run, run -d, exec, stop, kill, pause, rm, ps, logs, -it, memory.

Every test gets its own podman storage, config and cgroup parent (see podman_env.py) and must leave
nothing behind: containers, capsule state, mounts, cgroups. Runs on cgroup v1 (hybrid) and pure v2 hosts.
"""
import fcntl
import os
import re
import select
import shutil
import struct
import subprocess
import termios
import time

import pytest

from conftest import CAPSULE
from podman_env import (CAPSULE_ROOT, CGROUP_V2, IMAGE, build_rootfs_tar, cgroup_file, cgroup_of, pid_alive,
                        podman_session)

@pytest.fixture(scope="module")
def image_tar(tmp_path_factory):
    assert shutil.which("podman"), "podman is not installed: run scripts/install-deps"
    assert shutil.which("conmon"), "conmon is not installed: run scripts/install-deps"
    tar = str(tmp_path_factory.mktemp("podman-image") / "busybox.tar")
    build_rootfs_tar(tar)
    return tar


@pytest.fixture
def podman(image_tar):
    yield from podman_session(image_tar, "capsule-podman")


def status_of(pm, cid):
    p = pm.run("ps", "--all", "--no-trunc", "--filter", f"id={cid}", "--format", "{{.ID}} {{.Status}}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(cid)]
    return lines[0].split(" ", 1)[1] if lines else None


def test_podman_really_uses_capsule(podman):
    info = podman.run("info", "--format", "{{.Host.OCIRuntime.Path}} {{.Host.CgroupManager}} {{.Store.GraphDriverName}}")
    assert info.stdout.split() == [CAPSULE, "cgroupfs", "vfs"]
    cid = podman.create_detached("sleep", "1000")
    insp = podman.inspect(cid)
    assert insp["OCIRuntime"] == CAPSULE
    # capsule itself knows the container, with podman's pid and podman's bundle
    st = podman.capsule_state(cid)
    assert st is not None, f"capsule has no state for {cid} in {CAPSULE_ROOT}"
    assert st["status"] == "running"
    assert st["pid"] == insp["State"]["Pid"] > 0
    assert st["bundle"].startswith(podman.base)
    assert cgroup_of(st["pid"]) == f"{podman.cgroup_parent}/libpod-{cid}"


def test_run_prints_output_and_returns_exit_code(podman):
    p = podman.run("run", "--rm", *podman.container_args(), IMAGE,
                   "sh", "-c", "echo hello from capsule; echo pid=$$; echo err >&2; exit 5", check=False)
    assert p.returncode == 5, p.stderr
    assert p.stdout == "hello from capsule\npid=1\n"
    assert "err" in p.stderr
    # --rm removed it, from podman and from capsule
    assert podman.run("ps", "--all", "--quiet").stdout.strip() == ""
    storage = os.listdir(os.path.join(podman.base, "root", "vfs-containers"))
    assert [d for d in storage if re.fullmatch(r"[0-9a-f]{64}", d)] == []


def test_run_stdin_reaches_container(podman):
    p = podman.run("run", "--rm", "-i", *podman.container_args(), IMAGE, "sh", "-c", "read x; echo got:$x",
                   input="piped-line\n")
    assert p.stdout == "got:piped-line\n"


def test_run_detached_then_exec(podman):
    cid = podman.create_detached("sh", "-c", "echo up > /tmp/up; exec sleep 1000")
    assert status_of(podman, cid).startswith("Up")
    p = podman.run("exec", cid, "sh", "-c", "cat /tmp/up; cat /proc/1/comm; echo oops >&2; exit 7", check=False)
    assert p.returncode == 7, p.stderr
    assert p.stdout == "up\nsleep\n"
    assert p.stderr == "oops\n"
    # exec as another user, in another directory
    p = podman.run("exec", "--user", "65534", "--workdir", "/tmp", cid, "sh", "-c", "id -u; pwd")
    assert p.stdout == "65534\n/tmp\n"
    # a detached exec runs in the container too
    podman.run("exec", "-d", cid, "sh", "-c", "echo detached > /tmp/d")
    podman.wait_for(lambda: podman.run("exec", cid, "cat", "/tmp/d", check=False).stdout == "detached\n",
                    what="the detached exec")
    # exec of a missing program fails with podman's 127
    assert podman.run("exec", cid, "/no/such/program", check=False).returncode == 127


def test_stop_sends_sigterm(podman):
    cid = podman.create_detached("sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; "
                                 "while :; do sleep 0.1; done")
    podman.wait_for(lambda: "ready" in podman.run("logs", cid).stdout, what="ready")
    pid = podman.inspect(cid)["State"]["Pid"]
    t0 = time.monotonic()
    podman.run("stop", "--time", "20", cid)
    assert time.monotonic() - t0 < 10, "SIGTERM was not delivered: stop waited for its timeout"
    assert not pid_alive(pid)
    insp = podman.inspect(cid)
    assert insp["State"]["Status"] == "exited"
    assert insp["State"]["ExitCode"] == 3
    assert status_of(podman, cid).startswith("Exited (3)")
    assert "got-term" in podman.run("logs", cid).stdout
    # podman's cleanup deleted the container from capsule
    podman.wait_for(lambda: not os.path.exists(os.path.join(CAPSULE_ROOT, cid)), what="capsule delete")


def test_stop_falls_back_to_sigkill(podman):
    cid = podman.create_detached("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done")
    podman.wait_for(lambda: "ready" in podman.run("logs", cid).stdout, what="ready")
    pid = podman.inspect(cid)["State"]["Pid"]
    t0 = time.monotonic()
    p = podman.run("stop", "--time", "1", cid)
    elapsed = time.monotonic() - t0
    assert 1 <= elapsed < 10
    assert "SIGKILL" in p.stderr
    assert not pid_alive(pid)
    assert podman.inspect(cid)["State"]["ExitCode"] == 137
    assert status_of(podman, cid).startswith("Exited (137)")


def test_kill_with_signal(podman):
    cid = podman.create_detached("sh", "-c", "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.1; done")
    podman.wait_for(lambda: "ready" in podman.run("logs", cid).stdout, what="ready")
    podman.run("kill", "--signal", "USR1", cid)
    podman.wait_for(lambda: "got-usr1" in podman.run("logs", cid).stdout, what="USR1 in the logs")
    assert status_of(podman, cid).startswith("Up")
    podman.run("kill", cid)
    podman.wait_for(lambda: podman.inspect(cid)["State"]["Status"] == "exited", what="exit after SIGKILL")
    assert podman.inspect(cid)["State"]["ExitCode"] == 137


def test_ps_shows_status_through_the_lifecycle(podman):
    cid = podman.create_detached("sleep", "1000", opts=["--name", "capsule-ps"])
    p = podman.run("ps", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.Command}} {{.Status}}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith(cid)]
    assert len(line) == 1
    assert re.match(rf"{cid} capsule-ps sleep 1000 Up ", line[0]), line[0]
    podman.run("pause", cid)
    assert status_of(podman, cid) == "Paused"
    assert podman.capsule_state(cid)["status"] == "paused"
    podman.run("unpause", cid)
    assert status_of(podman, cid).startswith("Up")
    podman.run("stop", "--time", "0", cid)
    assert status_of(podman, cid).startswith("Exited (137)")
    # not running: only `ps --all` lists it
    assert cid not in podman.run("ps", "--no-trunc", "--quiet").stdout
    assert cid in podman.run("ps", "--all", "--no-trunc", "--quiet").stdout


def test_logs_show_output(podman):
    cid = podman.create_detached("sh", "-c", "echo line-one; echo line-two >&2; echo line-three; sleep 1000")
    podman.wait_for(lambda: "line-three" in podman.run("logs", cid).stdout, what="logs")
    p = podman.run("logs", cid)
    assert p.stdout == "line-one\nline-three\n"
    assert p.stderr == "line-two\n"
    podman.run("stop", "--time", "0", cid)
    # logs outlive the container's process
    assert podman.run("logs", cid).stdout == "line-one\nline-three\n"


def test_rm_removes_container(podman):
    stopped = podman.create_detached("true")
    podman.wait_for(lambda: podman.inspect(stopped)["State"]["Status"] == "exited", what="exit")
    running = podman.create_detached("sleep", "1000")
    pid = podman.inspect(running)["State"]["Pid"]
    refused = podman.run("rm", running, check=False)
    assert refused.returncode != 0
    podman.run("rm", stopped)
    podman.run("rm", "--force", "--time", "0", running)
    assert not pid_alive(pid)
    assert podman.run("ps", "--all", "--quiet").stdout.strip() == ""
    for cid in (stopped, running):
        assert not os.path.exists(os.path.join(CAPSULE_ROOT, cid))
        assert not os.path.exists(os.path.join(podman.base, "root", "vfs-containers", cid))
        assert podman.run("inspect", cid, check=False).returncode != 0


def run_in_pty(argv, env, steps, timeout=30):
    """Run argv on a new pty as its controlling terminal. steps: (regex to wait for, text to type then).
    Returns (exit status, everything the terminal showed)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))

    def make_ctty():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=make_ctty)
    os.close(slave)
    seen = b""
    deadline = time.time() + timeout
    try:
        for pattern, reply in steps:
            while not re.search(pattern.encode(), seen):
                left = deadline - time.time()
                assert left > 0, f"timed out waiting for {pattern!r}; terminal showed {seen!r}"
                r, _, _ = select.select([master], [], [], left)
                if not r:
                    continue
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"terminal closed before {pattern!r}; it showed {seen!r}"
                seen += chunk
            if reply is not None:
                os.write(master, reply.encode())
        rc = proc.wait(timeout=max(1, deadline - time.time()))
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        return rc, seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_run_interactive_tty(podman):
    argv = podman.cmd("run", "--rm", "-it", *podman.container_args(), IMAGE,
                      "sh", "-c", "tty; stty size; echo ready; read line; echo got:$line; exit 4")
    rc, out = run_in_pty(argv, podman.env, [(r"ready", "typed-into-tty\r"), (r"got:typed-into-tty", None)])
    assert rc == 4, out
    assert re.search(r"^/dev/pts/\d+\r?$", out, re.M), out
    assert re.search(r"^40 100\r?$", out, re.M), out  # the window size crossed conmon and capsule


def test_exec_interactive_tty(podman):
    cid = podman.create_detached("sleep", "1000")
    argv = podman.cmd("exec", "-it", cid, "sh", "-c", "tty; echo ready; read line; echo got:$line")
    rc, out = run_in_pty(argv, podman.env, [(r"ready", "exec-typed\r"), (r"got:exec-typed", None)])
    assert rc == 0, out
    assert re.search(r"^/dev/pts/\d+\r?$", out, re.M), out


# The memory limit, as the container's cgroup and the container itself see it, and how often it was hit.
if CGROUP_V2:
    LIMIT_FILE, LIMIT_INSIDE = "memory.max", "/sys/fs/cgroup/memory.max"
else:
    LIMIT_FILE, LIMIT_INSIDE = "memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.limit_in_bytes"


def memory_limit(pm, cid):
    with open(cgroup_file(f"{pm.cgroup_parent}/libpod-{cid}", LIMIT_FILE)) as f:
        return int(f.read())


def memory_limit_hits(pm, cid):
    """v1: memory.failcnt; v2: the OOM kills in memory.events (its "max" also counts reclaim that worked)."""
    rel = f"{pm.cgroup_parent}/libpod-{cid}"
    if not CGROUP_V2:
        with open(cgroup_file(rel, "memory.failcnt")) as f:
            return int(f.read())
    with open(cgroup_file(rel, "memory.events")) as f:
        return int(dict(line.split() for line in f)["oom_kill"])


def test_memory_limit(podman):
    cid = podman.create_detached("sleep", "1000", opts=["--memory", "64m"])
    assert memory_limit(podman, cid) == 64 << 20
    inside = podman.run("exec", cid, "cat", LIMIT_INSIDE)
    assert int(inside.stdout) == 64 << 20
    # the limit holds: 32 MiB fits, a 100 MiB buffer gets the process OOM-killed
    ok = podman.run("exec", cid, "dd", "if=/dev/zero", "of=/dev/null", "bs=32M", "count=1", check=False)
    assert ok.returncode == 0, ok.stderr
    big = podman.run("exec", cid, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1", check=False)
    assert big.returncode == 137, big.stderr
    assert memory_limit_hits(podman, cid) > 0
    # podman update changes the limit through capsule update
    podman.run("update", "--memory", "128m", cid)
    assert memory_limit(podman, cid) == 128 << 20
    ok = podman.run("exec", cid, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1", check=False)
    assert ok.returncode == 0, ok.stderr
