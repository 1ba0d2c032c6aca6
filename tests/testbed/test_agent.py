"""capsule-guest, the sandbox VM's init and agent, driven for real: capsule boots a Linux guest
with build/capsule-guest.initrd, a busybox bundle rootfs shared as the virtio-fs tag
capsule-rootfs and a hybrid vsock socket, and this file, run as a program inside the testbed
(`python3 test_agent.py host OUT SCENARIO`), plays the host side of the sandbox with
tests/testbed/agent_client.py. Three boots; pipes and tty each run one container (the VM powers off when its init
ends):
- pipes: the container's init (in its own pid namespace) prints `echo hello` and `uname -r`,
  writes a file into its rootfs, copies its stdin to its end of file and exits 7; meanwhile two execs
  run, one with pipes and its own status, one with a tty that is resized; bad requests are
  refused with an error reply;
- tty: init runs on a terminal (no pid namespace, so SIGTERM is not ignored as a namespace
  init's would be): a resize before start shows in `stty size`, typed input comes back, and
  kill SIGTERM ends it with status 143;
- norootfs: no virtio-fs share: the agent boots and listens, since it mounts the container's rootfs
  only at create; create is refused with one error naming the tag, and nothing exists after it.
The tests then assert per boot what a user sees."""
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import nested

REPO = pathlib.Path(__file__).resolve().parents[2]
INITRD = REPO / "build" / "capsule-guest.initrd"
SCENARIOS = ("pipes", "tty", "norootfs")
CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet"
GUEST_CID = 3

pytestmark = pytest.mark.testbed


# ---- the host side, inside the testbed ------------------------------------------------------

def kernel_release(path):
    """The release in a kernel image's "Linux version X" banner (vmlinux), or in a bzImage's
    setup header (its kernel_version string)."""
    data = pathlib.Path(path).read_bytes()
    m = re.search(rb"Linux version (\S+)", data)
    if m:
        return m.group(1).decode()
    if data[0x202:0x206] == b"HdrS":
        off = struct.unpack_from("<H", data, 0x20E)[0] + 0x200
        return data[off:data.index(b"\0", off)].decode().split()[0]
    return None


def make_bundle(top, args, tty, pid_ns=True):
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_rootfs
    bundle = pathlib.Path(top) / "bundle"
    rootfs = bundle / "rootfs"
    build_rootfs(str(rootfs))
    subprocess.run(["capsule", "spec"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["root"]["readonly"] = False
    cfg["process"]["args"] = args
    cfg["process"]["terminal"] = tty
    cfg["linux"].setdefault("resources", {})["pids"] = {"limit": 42}
    if not pid_ns:
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


class Reader:
    """Reads a stream connection to its end of file in a thread."""

    def __init__(self, s):
        self.data = b""
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(s,), daemon=True).start()

    def _run(self, s):
        try:
            while chunk := s.recv(65536):
                self.data += chunk
        except OSError as e:
            self.data += f"<{e!r}>".encode()
        finally:
            s.close()
            self.done.set()

    def until(self, text, timeout=120):
        deadline = time.monotonic() + timeout
        while text.encode() not in self.data and not self.done.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return text.encode() in self.data

    def text(self, timeout=120):
        self.done.wait(timeout)
        return self.data.decode(errors="replace")


def refused(agent, msg):
    """The error of a request the agent must refuse."""
    reply = agent.request(msg)
    return reply.get("error") if not reply.get("ok") else f"<accepted: {reply}>"


def raw_refused(agent, data):
    """The error reply to bytes that are no valid frame."""
    from agent_client import recv_frame
    s = agent.connect()
    try:
        s.sendall(data)
        return recv_frame(s).get("error")
    finally:
        s.close()


def scenario_pipes(agent, r, bundle):
    from agent_client import read_all
    r["before_create"] = refused(agent, {"op": "state"})
    r["unknown_op"] = refused(agent, {"op": "reboot"})
    r["bad_fd"] = refused(agent, {"op": "stdio", "exec": "init", "fd": 7})
    r["bad_id"] = refused(agent, {"op": "create", "id": "../x", "config": "{}", "stdio": "pipes"})
    r["over_long"] = raw_refused(agent, struct.pack("<I", (1 << 20) + 1) + b"{}")
    r["not_object"] = raw_refused(agent, struct.pack("<I", 5) + b"[1,2]")
    fds = [agent.stdio("init", i) for i in range(3)]
    out, err = Reader(fds[1]), Reader(fds[2])
    r["create"] = agent.call("create", id="c1", config=(bundle / "config.json").read_text(), stdio="pipes")
    r["create_again"] = refused(agent, {"op": "create", "id": "c2", "config": "{}", "stdio": "pipes"})
    r["state_created"] = agent.call("state")
    agent.call("start")
    r["state_running"] = agent.call("state")
    r["hello"] = out.until("hello\n")
    # An exec with pipes and its own status, while init runs.
    e1 = [agent.stdio("e1", i) for i in (1, 2)]
    r["exec_e1"] = agent.call("exec", exec="e1", stdio="pipes", process=json.dumps(
        {"args": ["sh", "-c", "echo exec-out $FOO $(pwd) $(id -u):$(id -g) $(cat /sys/fs/cgroup/pids.max); echo exec-err >&2; exit 3"],
         "cwd": "/tmp", "env": ["PATH=/bin", "FOO=bar"], "user": {"uid": 65534, "gid": 65534}}))
    # The wait comes once the exec runs (before, the agent does not know the id); a process that
    # ended already gets its status at once.
    r["e1_status"] = agent.wait_reply(agent.wait("e1"))
    r["e1_stdout"] = read_all(e1[0]).decode(errors="replace")
    r["e1_stderr"] = read_all(e1[1]).decode(errors="replace")
    r["exec_in_use"] = refused(agent, {"op": "exec", "exec": "e1", "stdio": "pipes",
                                       "process": json.dumps({"args": ["true"], "cwd": "/"})})
    r["exec_bad_process"] = refused(agent, {"op": "exec", "exec": "e9", "stdio": "pipes", "process": "{\"args\": 5}"})
    # An exec on a terminal, resized while it waits for its input.
    t = agent.stdio("e2", 0)
    r["exec_e2"] = agent.call("exec", exec="e2", stdio="tty", process=json.dumps(
        {"args": ["sh", "-c", "read x; stty size; echo tty-$x; exit 4"], "cwd": "/", "env": ["PATH=/bin"],
         "terminal": True}))
    w2 = agent.wait("e2")
    agent.call("resize", exec="e2", rows=33, cols=77)
    r["resize_pipes"] = refused(agent, {"op": "resize", "exec": "e1", "rows": 1, "cols": 1})
    t.sendall(b"go\n")
    r["e2_tty"] = read_all(t).decode(errors="replace")
    r["e2_status"] = agent.wait_reply(w2)
    # init's stdin: one line, then its end of file (init's `cat` ends on it); init exits 7.
    wi = agent.wait("init")
    fds[0].sendall(b"bye\n")
    fds[0].shutdown(socket.SHUT_WR)
    r["init_status"] = agent.wait_reply(wi)
    r["t_status"] = time.monotonic()
    r["stdout"] = out.text()
    r["stderr"] = err.text()
    r["written"] = (bundle / "rootfs" / "written.txt").read_text() if (bundle / "rootfs" / "written.txt").exists() else None


def scenario_tty(agent, r, bundle):
    t = agent.stdio("init", 0)
    out = Reader(t)
    r["create"] = agent.call("create", id="c1", config=(bundle / "config.json").read_text(), stdio="tty")
    agent.call("resize", exec="init", rows=40, cols=100)
    agent.call("start")
    r["size_seen"] = out.until("40 100")
    t.sendall(b"abc\n")
    r["echo_seen"] = out.until("got-abc")
    wi = agent.wait("init")
    r["bad_signal"] = refused(agent, {"op": "kill", "signal": 0})
    agent.call("kill", signal=15)
    r["init_status"] = agent.wait_reply(wi)
    r["t_status"] = time.monotonic()
    r["tty"] = out.text()


def scenario_norootfs(agent, r, bundle):
    r["create_error"] = refused(agent, {"op": "create", "id": "c1", "config": (bundle / "config.json").read_text(),
                                        "stdio": "pipes"})
    r["state_after"] = refused(agent, {"op": "state"})


def host_main(out, scenario):
    sys.path.insert(0, str(REPO / "tests" / "testbed"))
    from agent_client import Agent
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="agent-")
    r = {"kernel_release": kernel_release(os.environ["CAPSULE_KERNEL"])}
    if scenario == "norootfs":
        bundle = make_bundle(tmp, ["true"], False)  # for its config.json: the rootfs is not shared
    elif scenario == "pipes":
        bundle = make_bundle(tmp, ["sh", "-c", "echo hello; uname -r; echo from-container >/written.txt; "
                                   "cat >/stdin.txt; echo got-$(cat /stdin.txt); echo init-err >&2; exit 7"], False)
    else:
        bundle = make_bundle(tmp, ["sh", "-c", "stty size; read x; echo got-$x; exec sleep 1000"], True, pid_ns=False)
    sock = f"{tmp}/v.sock"
    share = ["--share", f"{bundle / 'rootfs'},tag=capsule-rootfs"] if scenario != "norootfs" else []
    cmd = ["capsule", "vm", "run", "--initrd", str(INITRD), "--memory", "512M", "--cpus", "2", *share,
           "--vsock", f"{GUEST_CID},socket={sock}", "--cmdline", CMDLINE]
    t0 = time.monotonic()
    with open(out / "console", "w") as o, open(out / "stderr", "w") as e:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    try:
        while p.poll() is None and not os.path.exists(sock):
            time.sleep(0.05)
        agent = Agent(sock)
        r["ready_s"] = round(agent.wait_ready(alive=lambda: p.poll() is None), 2)
        r["boot_to_ready_s"] = round(time.monotonic() - t0, 2)
        {"pipes": scenario_pipes, "tty": scenario_tty, "norootfs": scenario_norootfs}[scenario](agent, r, bundle)
    except Exception as e:  # recorded for the tests' messages
        r["host_error"] = repr(e)
    try:
        if scenario == "norootfs" and p.poll() is None:
            p.terminate()  # no container, so no init whose end powers the VM off: the VMM's orderly stop
        r["rc"] = p.wait(timeout=120)
        if "t_status" in r:
            r["status_to_exit_s"] = round(time.monotonic() - r.pop("t_status"), 2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r["seconds"] = round(time.monotonic() - t0, 1)
    (out / "results.json").write_text(json.dumps(r))
    shutil.rmtree(tmp, ignore_errors=True)


# ---- the tests, on the host -----------------------------------------------------------------

class Boot:
    def __init__(self, out, name):
        d = out / name
        self.name = name
        self.console = (d / "console").read_text(errors="replace") if (d / "console").exists() else ""
        self.stderr = (d / "stderr").read_text(errors="replace") if (d / "stderr").exists() else ""
        self.host_err = (out / f"{name}.host-err").read_text(errors="replace") if (out / f"{name}.host-err").exists() else ""
        self.r = json.loads((d / "results.json").read_text()) if (d / "results.json").exists() else {}
        self.rc = self.r.get("rc", -1)  # capsule's status, for nested.py

    def tail(self):
        return ("--- console (last 40 lines)\n" + "\n".join(self.console.splitlines()[-40:]) +
                f"\n--- stderr\n{self.stderr}\n--- host helper\n{self.host_err[-3000:]}\n--- results {self.r}")


@pytest.fixture(scope="module")
def boots(request):
    k = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert k.returncode == 0, k.stderr
    assert INITRD.exists(), "build/capsule-guest.initrd is missing: run make"
    me = shlex.quote(str(pathlib.Path(__file__).resolve()))

    def script(out):
        return "".join(f"python3 {me} host {shlex.quote(str(out / s))} {s} 2>{shlex.quote(str(out / s))}.host-err\n"
                       for s in SCENARIOS)
    # norootfs's guest has no container to run, and its end is not what its test asserts.
    out, r, boots = nested.run("agent", script, lambda out: {s: Boot(out, s) for s in SCENARIOS}, timeout=2400,
                               env={"TESTBED_VERBOSE": "1", "TESTBED_TIMEOUT": "2300"}, expected={"norootfs"})
    try:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_agent] testbed exit {r.returncode}; " + ", ".join(
                f"{s}: {b.r.get('seconds')} s" +
                (f" (agent ready after {b.r['boot_to_ready_s']} s" if "boot_to_ready_s" in b.r else "") +
                (f", power-off {b.r['status_to_exit_s']} s after init's status" if "status_to_exit_s" in b.r else "") +
                (")" if "boot_to_ready_s" in b.r else "")
                for s, b in boots.items()))
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        yield boots
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def pipes(boots):
    b = boots["pipes"]
    assert "host_error" not in b.r, b.tail()
    return b


@pytest.fixture
def tty(boots):
    b = boots["tty"]
    assert "host_error" not in b.r, b.tail()
    return b


def test_init_output_and_exit_code(pipes):
    r = pipes.r
    assert r["hello"], pipes.tail()
    lines = r["stdout"].splitlines()
    assert lines[0] == "hello" and lines[-1] == "got-bye", pipes.tail()
    assert r["stderr"] == "init-err\n", pipes.tail()
    assert r["init_status"] == 7, pipes.tail()


def test_uname_shows_the_guest_kernel(pipes):
    release = pipes.r["stdout"].splitlines()[1]
    assert release == pipes.r["kernel_release"], pipes.tail()
    assert release != os.uname().release, "the guest kernel is the host's: nothing shows it ran in the VM"


def test_file_written_in_the_container_is_in_the_bundle(pipes):
    assert pipes.r["written"] == "from-container\n", pipes.tail()


def test_state_and_pids(pipes):
    r = pipes.r
    assert r["state_created"]["status"] == "created" and r["state_created"]["pid"] == r["create"]["pid"] > 0, pipes.tail()
    assert r["state_running"]["status"] == "running", pipes.tail()


def test_exec_with_pipes_has_its_own_status(pipes):
    r = pipes.r
    assert r["exec_e1"]["pid"] > 0 and r["exec_e1"]["pid"] != r["create"]["pid"], pipes.tail()
    # Its env, cwd and user are the process.json's; its cgroup (v2, in the guest) has the config's
    # pids limit.
    assert (r["e1_status"], r["e1_stdout"], r["e1_stderr"]) == \
        (3, "exec-out bar /tmp 65534:65534 42\n", "exec-err\n"), pipes.tail()


def test_exec_with_a_resized_tty(pipes):
    r = pipes.r
    assert r["e2_status"] == 4, pipes.tail()
    assert "33 77" in r["e2_tty"] and "tty-go" in r["e2_tty"], pipes.tail()


def test_bad_requests_are_refused(pipes):
    r = pipes.r
    assert r["before_create"] == "state: no container", pipes.tail()
    assert r["unknown_op"] == "request: unknown op `reboot`", pipes.tail()
    assert "\"fd\": 7 is out of range" in r["bad_fd"], pipes.tail()
    assert "invalid container id" in r["bad_id"], pipes.tail()
    assert "is over" in r["over_long"] and "not a JSON object" in r["not_object"], pipes.tail()
    assert r["create_again"] == "create: the container exists already", pipes.tail()
    assert r["exec_in_use"] == "exec: `e1` is in use", pipes.tail()
    assert "args" in r["exec_bad_process"], pipes.tail()
    assert r["resize_pipes"] == "resize: `e1` has no terminal", pipes.tail()


def test_tty_init_resize_input_and_sigterm(tty):
    r = tty.r
    assert r["size_seen"] and r["echo_seen"], tty.tail()
    assert "\"signal\"" in r["bad_signal"], tty.tail()
    assert r["init_status"] == 143, tty.tail()


def test_create_without_the_rootfs_share_is_one_error_and_leaves_no_container(boots):
    b = boots["norootfs"]
    assert "host_error" not in b.r and b.r.get("rc") is not None, b.tail()
    err = b.r["create_error"]
    assert "\n" not in err and "capsule-rootfs" in err and "mount virtiofs" in err, b.tail()
    assert b.r["state_after"] == "state: no container", b.tail()


def test_refuses_to_run_outside_a_vm():
    p = subprocess.run([str(REPO / "build" / "capsule-guest")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stderr == "capsule-guest: runs only as pid 1 of a capsule sandbox VM\n", p


@pytest.mark.parametrize("scenario", ("pipes", "tty"))
def test_vm_powers_off_when_init_ends(boots, scenario):
    b = boots[scenario]
    assert b.r.get("rc") == 0, b.tail()
    # Nothing else from the agent: no fatal error, and no power-off at the flush deadline (the host
    # closed every stream once it had read it all).
    assert "capsule-guest:" not in b.console.replace("capsule-guest: listening on vsock port 1024", ""), b.tail()


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "host":
    host_main(sys.argv[2], sys.argv[3])
