"""The OCI lifecycle through the CLI: create, start, state, kill, delete, run, exec, list, ps, pause, resume."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import CAPSULE, procs_cgroup_dir

ALSO_UNDER_ASAN = True


def wait_status(capsule, cid, want, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = capsule.status(cid)
        if st == want:
            return
        time.sleep(0.05)
    assert capsule.status(cid) == want


def test_spec_writes_default_config_once(tmp_path):
    p = subprocess.run([CAPSULE, "spec", "--bundle", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["root"]["path"] == "rootfs"
    assert cfg["process"]["args"] == ["sh"]
    assert {"type": "pid"} in cfg["linux"]["namespaces"]
    again = subprocess.run([CAPSULE, "spec", "--bundle", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr


def test_run_foreground_output_and_exit_status(capsule, bundle):
    bundle.set_args("sh", "-c", "echo hello; echo pid=$$; exit 3")
    p = capsule.run("run", "--bundle", bundle.path, bundle.id)
    assert p.returncode == 3, p.stderr
    assert "hello\npid=1\n" == p.stdout
    # run without --keep deletes the container
    assert capsule.run("state", bundle.id).returncode != 0


def test_run_keep_leaves_stopped_container(capsule, bundle):
    bundle.set_args("true")
    assert capsule.run("run", "--keep", "-b", bundle.path, bundle.id).returncode == 0
    assert capsule.status(bundle.id) == "stopped"
    assert capsule.state(bundle.id)["pid"] == 0
    capsule.run("delete", bundle.id, check=True)


def test_create_start_state_kill_delete(capsule, bundle, tmp_path):
    bundle.set_args("sleep", "1000")
    pidfile = tmp_path / "pid"
    capsule.run("create", "--bundle", bundle.path, "--pid-file", pidfile, bundle.id, check=True)
    st = capsule.state(bundle.id)
    assert st["status"] == "created"
    assert st["id"] == bundle.id
    assert st["ociVersion"].startswith("1.")
    assert st["bundle"] == os.path.realpath(bundle.path)
    assert st["pid"] > 0 and int(pidfile.read_text()) == st["pid"]
    # the process exists but has not run the user program yet
    assert "sleep" not in open(f"/proc/{st['pid']}/cmdline").read()

    capsule.run("start", bundle.id, check=True)
    assert capsule.status(bundle.id) == "running"
    assert open(f"/proc/{st['pid']}/cmdline").read().split("\0")[0] == "sleep"
    again = capsule.run("start", bundle.id)
    assert again.returncode != 0 and "not created" in again.stderr

    refused = capsule.run("delete", bundle.id)
    assert refused.returncode != 0 and "not stopped" in refused.stderr

    capsule.run("kill", bundle.id, "KILL", check=True)
    wait_status(capsule, bundle.id, "stopped")
    capsule.run("delete", bundle.id, check=True)
    gone = capsule.run("state", bundle.id)
    assert gone.returncode != 0 and "does not exist" in gone.stderr


@pytest.mark.parametrize("sig,name", [("TERM", "TERM"), ("SIGTERM", "TERM"), ("15", "TERM"), ("sigterm", "TERM"),
                                      ("USR1", "USR1"), ("10", "USR1"), ("SIGHUP", "HUP"), ("1", "HUP")])
def test_kill_signal_names_and_numbers(capsule, bundle, sig, name):
    # The container records which signal reached it; a wrong signal would leave another name (a
    # handled one) or none at all (KILL, or one that init ignores: then it never stops).
    handlers = "; ".join(f"trap 'echo {s} > /tmp/got; exit 0' {s}" for s in ("TERM", "USR1", "HUP", "INT"))
    bundle.set_args("sh", "-c", f"{handlers}; touch /tmp/ready; while true; do sleep 0.1; done")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    ready, got = os.path.join(bundle.rootfs, "tmp", "ready"), os.path.join(bundle.rootfs, "tmp", "got")
    deadline = time.time() + 10
    while not os.path.exists(ready):
        assert time.time() < deadline, "the container never installed its handlers"
        time.sleep(0.05)
    capsule.run("kill", bundle.id, sig, check=True)
    wait_status(capsule, bundle.id, "stopped")
    with open(got) as f:
        assert f.read() == name + "\n"


def test_kill_unknown_signal_is_rejected(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    p = capsule.run("kill", bundle.id, "SIGNOPE")
    assert p.returncode != 0 and "SIGNOPE" in p.stderr
    assert capsule.status(bundle.id) == "running"


def test_kill_created_container(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("create", "-b", bundle.path, bundle.id, check=True)
    capsule.run("kill", bundle.id, "TERM", check=True)
    wait_status(capsule, bundle.id, "stopped")


def test_kill_all_reaches_every_process(capsule, bundle):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"] if n["type"] != "pid"]
    bundle.set_args("sh", "-c", "sleep 1000 & sleep 1000 & wait")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    deadline = time.time() + 5
    while len(json.loads(capsule.run("ps", "--format", "json", bundle.id, check=True).stdout)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    pids = json.loads(capsule.run("ps", "--format", "json", bundle.id, check=True).stdout)
    assert len(pids) == 3
    capsule.run("kill", "--all", bundle.id, "KILL", check=True)
    deadline = time.time() + 5
    while any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split(") ")[1][0] != "Z" for p in pids):
        assert time.time() < deadline
        time.sleep(0.05)


def test_delete_created_container_without_force(capsule, bundle):
    bundle.set_args("true")
    capsule.run("create", "-b", bundle.path, bundle.id, check=True)
    pid = capsule.state(bundle.id)["pid"]
    capsule.run("delete", bundle.id, check=True)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(") ")[1][:1]


def test_delete_force_running_and_missing(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    capsule.run("delete", "--force", bundle.id, check=True)
    assert capsule.run("delete", "--force", "no-such-container").returncode == 0
    p = capsule.run("delete", "no-such-container")
    assert p.returncode != 0 and "does not exist" in p.stderr


def test_duplicate_and_bad_ids(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("create", "-b", bundle.path, bundle.id, check=True)
    dup = capsule.run("create", "-b", bundle.path, bundle.id)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    assert capsule.status(bundle.id) == "created"
    for bad in ["../x", "a/b", ".x", "x y", ""]:
        p = capsule.run("create", "-b", bundle.path, bad)
        assert p.returncode != 0 and "id" in p.stderr
    assert sorted(os.listdir(capsule.root)) == [bundle.id]


def test_list_formats(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    table = capsule.run("list", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert table[1].split()[0] == bundle.id and table[1].split()[2] == "running"
    js = json.loads(capsule.run("list", "--format", "json", check=True).stdout)
    assert [c["id"] for c in js] == [bundle.id] and js[0]["status"] == "running"
    assert capsule.run("list", "-q", check=True).stdout == bundle.id + "\n"


def test_ps_table_and_json(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    pid = capsule.state(bundle.id)["pid"]
    assert json.loads(capsule.run("ps", "--format", "json", bundle.id, check=True).stdout) == [pid]
    table = capsule.run("ps", bundle.id, check=True).stdout.splitlines()
    assert "PID" in table[0].split()
    assert len(table) == 2 and str(pid) in table[1].split()


def test_pause_resume(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    capsule.run("pause", bundle.id, check=True)
    assert capsule.status(bundle.id) == "paused"
    p = capsule.run("exec", bundle.id, "true")
    assert p.returncode != 0 and "paused" in p.stderr
    assert capsule.run("pause", bundle.id).returncode != 0
    capsule.run("resume", bundle.id, check=True)
    assert capsule.status(bundle.id) == "running"


def test_pause_a_created_container(capsule, bundle):
    """As runc: a created container pauses, start refuses it until resume, which leaves it created."""
    bundle.set_args("sh", "-c", "echo started >/out; sleep 100")
    capsule.run("create", "-b", bundle.path, bundle.id, check=True)
    capsule.run("pause", bundle.id, check=True)
    assert capsule.status(bundle.id) == "paused"
    p = capsule.run("start", bundle.id)
    assert p.returncode == 1 and p.stderr == f'capsule: cannot start container "{bundle.id}": it is paused, not created\n'
    p = capsule.run("pause", bundle.id)
    assert p.returncode == 1 and p.stderr == f'capsule: container "{bundle.id}" is paused, not running\n'
    capsule.run("resume", bundle.id, check=True)
    assert capsule.status(bundle.id) == "created"
    capsule.run("start", bundle.id, check=True)
    assert capsule.status(bundle.id) == "running"
    out = os.path.join(bundle.rootfs, "out")
    for _ in range(100):
        if os.path.exists(out):
            break
        time.sleep(0.1)
    with open(out) as f:
        assert f.read() == "started\n"


def test_exec_output_status_env_cwd_user(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    p = capsule.run("exec", "-e", "FOO=bar", "--cwd", "/tmp", "-u", "65534:65534", bundle.id,
                    "sh", "-c", "echo $FOO $(pwd) $(id -u):$(id -g); exit 5")
    assert p.returncode == 5, p.stderr
    assert p.stdout == "bar /tmp 65534:65534\n"
    # the exec'd process shares the container's pid namespace
    ps = capsule.run("exec", bundle.id, "ps", check=True).stdout
    assert "sleep 100" in ps


def test_exec_process_json_and_detach(capsule, bundle, tmp_path):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    proc = dict(bundle.config["process"], args=["sh", "-c", "echo from-json > /tmp/out"])
    (tmp_path / "p.json").write_text(json.dumps(proc))
    pidfile = tmp_path / "exec.pid"
    capsule.run("exec", "-d", "--pid-file", pidfile, "-p", tmp_path / "p.json", bundle.id, check=True)
    assert int(pidfile.read_text()) > 0
    # The shell creates the file before it writes the line (a gap that TCG widens): wait for the line.
    out = os.path.join(bundle.rootfs, "tmp", "out")
    deadline = time.time() + 30
    while not (os.path.exists(out) and open(out).read() == "from-json\n"):
        assert time.time() < deadline, open(out).read() if os.path.exists(out) else "no /tmp/out"
        time.sleep(0.05)


def test_exec_missing_binary_says_not_found(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    p = capsule.run("exec", bundle.id, "no-such-binary")
    assert p.returncode != 0 and "executable file not found" in p.stderr


def test_exec_stopped_container_fails(capsule, bundle):
    bundle.set_args("true")
    capsule.run("run", "--keep", "-b", bundle.path, bundle.id, check=True)
    p = capsule.run("exec", bundle.id, "true")
    assert p.returncode != 0 and "stopped" in p.stderr


def test_preserve_fds(capsule, bundle, tmp_path):
    bundle.set_args("sh", "-c", "cat <&3")
    data = tmp_path / "data"
    data.write_text("passed through fd 3\n")
    with open(data) as f:
        p = subprocess.run(capsule.cmd("run", "--preserve-fds", "1", "-b", bundle.path, bundle.id),
                           pass_fds=(3,), capture_output=True, text=True, preexec_fn=lambda: os.dup2(f.fileno(), 3))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "passed through fd 3\n"


def test_fds_are_not_leaked_without_preserve(capsule, bundle, tmp_path):
    bundle.set_args("sh", "-c", "ls /proc/self/fd")
    with open(tmp_path / "x", "w") as f:
        # fd 7 reaches capsule (pass_fds) but must not reach the container
        p = subprocess.run(capsule.cmd("run", "-b", bundle.path, bundle.id), capture_output=True, text=True,
                           pass_fds=(7,), preexec_fn=lambda: os.dup2(f.fileno(), 7))
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory fd


def test_runtime_killed_then_delete_cleans_up(capsule, bundle):
    bundle.set_args("sleep", "1000")
    proc = subprocess.Popen(capsule.cmd("run", "-b", bundle.path, bundle.id))
    deadline = time.time() + 10
    while capsule.run("state", bundle.id).returncode != 0 or capsule.status(bundle.id) != "running":
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cg = procs_cgroup_dir(f"capsule-test/{bundle.id}")
    assert os.path.isdir(cg)
    capsule.run("delete", "--force", bundle.id, check=True)
    assert not os.path.exists(cg)
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


def test_version_and_help():
    v = subprocess.run([CAPSULE, "--version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("capsule version ")
    assert "spec: 1." in v.stdout
    h = subprocess.run([CAPSULE, "--help"], capture_output=True, text=True)
    for cmd in ["create", "start", "state", "kill", "delete", "run", "exec", "list", "ps", "pause", "resume", "update", "spec", "features"]:
        assert f"  {cmd} " in h.stdout
    bad = subprocess.run([CAPSULE, "--bogus"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--bogus" in bad.stderr


def test_features_document():
    p = subprocess.run([CAPSULE, "features"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    f = json.loads(p.stdout)
    assert f["ociVersionMin"] == "1.0.0"
    assert "createContainer" in f["hooks"]
    assert "rbind" in f["mountOptions"]
    assert set(f["linux"]["namespaces"]) >= {"pid", "user", "time", "cgroup"}
    assert "CAP_SYS_ADMIN" in f["linux"]["capabilities"]
    assert f["linux"]["seccomp"]["enabled"] is True
    assert "SCMP_ACT_NOTIFY" in f["linux"]["seccomp"]["actions"]
