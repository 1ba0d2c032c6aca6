"""capsule's side of the agent protocol (src/common/agent_proto.h) without booting: a fake agent
behind a Unix socket that speaks the VMM's hybrid vsock CONNECT line, and a state directory as
`capsule create` leaves it for a VM container (a `sleep` stands in for the VMM). It checks what
start, state, list, kill, exec, delete, pause, resume, ps and update send and make of the replies, including a hostile
guest's: an error text with control characters, an exit status out of range, garbage."""
import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import CAPSULE
from sandbox_vm_env import proc_status
from test_terminal import ConsoleSocket, read_until


SANDBOX_ID_BASE = 0x70000000


def start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return int(s[s.rindex(")") + 2:].split()[19])


def recv_exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            return None
        b += x
    return b


def recv_frame(c):
    h = recv_exact(c, 4)
    return None if h is None else json.loads(recv_exact(c, struct.unpack("<I", h)[0]))


def send_frame(c, obj):
    b = json.dumps(obj).encode()
    c.sendall(struct.pack("<I", len(b)) + b)


class FakeAgent:
    """Answers each connection's request with self.reply(op, request, conn); keeps "stdio" streams."""

    def __init__(self, path):
        self.requests = []
        self.streams = {}
        self.status = "running"
        self.wait_status = 5
        self.kill_reply = {"ok": True}
        self.ps_reply = {"ok": True, "pids": [1, 7]}
        self.hang_up = False  # a guest powering off: the connection shuts before the request
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(16)
        self.server = threading.Thread(target=self.serve, daemon=True)
        self.server.start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        line = b""
        while not line.endswith(b"\n") and len(line) < 32:
            line += c.recv(1)
        assert line == b"CONNECT 1024\n"
        if self.hang_up:  # shut before the answer, so that every write after it meets EPIPE
            c.shutdown(socket.SHUT_RD)
            c.sendall(b"OK 1073741824\n")
            c.close()
            return
        c.sendall(b"OK 1073741824\n")
        req = recv_frame(c)
        self.requests.append(req)
        op = req["op"]
        if op == "state":
            send_frame(c, {"ok": True, "status": self.status, "pid": 1})
        elif op in ("start", "exec"):
            send_frame(c, {"ok": True, "pid": 2})
        elif op == "kill" and self.kill_reply is None:  # a guest powering off: no reply
            pass
        elif op == "kill":
            send_frame(c, self.kill_reply)
        elif op in ("pause", "resume", "update", "resize"):
            send_frame(c, {"ok": True})
        elif op == "ps":
            send_frame(c, self.ps_reply)
        elif op == "stdio":
            send_frame(c, {"ok": True})
            self.streams[(req["exec"], req["fd"])] = c
            return
        elif op == "wait" and (req["exec"], 1) not in self.streams:  # a terminal: one stream, both ways
            term = self.streams[(req["exec"], 0)]
            data = b""
            while not data.endswith(b"\n"):
                data += term.recv(4096)
            term.sendall(b"tty got: " + data)
            term.close()
            send_frame(c, {"ok": True, "status": 3})
        elif op == "wait":
            stdin = self.streams[(req["exec"], 0)]
            data = b""
            while (x := stdin.recv(4096)):
                data += x
            try:
                self.streams[(req["exec"], 1)].sendall(b"guest got: " + data)
                self.streams[(req["exec"], 2)].sendall(b"to stderr\n")
                for fd in range(3):
                    self.streams[(req["exec"], fd)].close()
                send_frame(c, {"ok": True, "status": self.wait_status})
            except OSError:  # a relay that was killed: nobody reads any more
                pass
        c.close()

    def ops(self):
        return [r["op"] for r in self.requests]

    def close(self):
        """Ends serve() before the listening fd is closed. Closing it under a blocked accept()
        leaves that accept() waiting, and the kernel restarts it (after any signal, a child's
        SIGCHLD included) with the fd's number, which the next test's agent reuses: that test's
        connections then reach this agent and its replies (ps_reply, status...)."""
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() with an error
        self.server.join(timeout=10)
        assert not self.server.is_alive(), "the fake agent's accept loop did not end"
        self.sock.close()


@pytest.fixture
def sandbox(tmp_path):
    """A VM container's state directory as create leaves it, with a fake VMM and agent."""
    root, cid = tmp_path / "root", "vm1"
    d = root / cid
    d.mkdir(parents=True)
    vmm = subprocess.Popen(["sleep", "1000"])
    st = start_time(vmm.pid)
    sock = str(d / "agent.sock")
    (d / "sandbox.json").write_text(json.dumps({"pid": vmm.pid, "start_time": st, "agent_socket": sock,
                                                "memory": 512 << 20}))
    (d / "state.json").write_text(json.dumps({"id": cid, "bundle": str(tmp_path), "rootfs": str(tmp_path / "rootfs"),
                                              "pid": vmm.pid, "start_time": st, "created": "2026-01-01T00:00:00Z",
                                              "owner": "root", "annotations": {}, "systemd_cgroup": False}))
    (d / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                               "process": {"args": ["sh"], "cwd": "/", "env": ["A=1"]}}))
    agent = FakeAgent(sock)
    # As the VMM's jail leaves it: the socket belongs to the VM's own uid (src/sandbox/sandbox_jail.c).
    os.chown(sock, SANDBOX_ID_BASE + vmm.pid, SANDBOX_ID_BASE + vmm.pid)

    def capsule(*args, stdin=None):
        return subprocess.run([CAPSULE, "--root", str(root), *args], input=stdin, capture_output=True, text=True, timeout=30)

    yield capsule, agent, vmm, cid
    vmm.kill()
    vmm.wait()
    agent.close()


def test_status_is_the_agents_answer(sandbox):
    capsule, agent, _, cid = sandbox
    for status in ("created", "running", "stopped"):
        agent.status = status
        assert json.loads(capsule("state", cid).stdout)["status"] == status
    agent.status = "owned"  # anything else from the guest: it runs no container
    assert json.loads(capsule("state", cid).stdout)["status"] == "stopped"
    agent.status = "running"
    assert capsule("list", "-q").stdout.split() == [cid]
    assert " running " in capsule("list").stdout


def test_a_dead_vmm_is_stopped_without_asking(sandbox):
    capsule, agent, vmm, cid = sandbox
    vmm.kill()
    vmm.wait()
    assert json.loads(capsule("state", cid).stdout)["status"] == "stopped"
    assert agent.ops() == []


def test_start_and_kill(sandbox):
    capsule, agent, _, cid = sandbox
    refused = capsule("start", cid)
    assert refused.returncode == 1 and "it is running, not created" in refused.stderr
    agent.status = "created"
    assert capsule("start", cid).returncode == 0
    assert agent.requests[-1] == {"op": "start"}
    agent.status = "running"
    assert capsule("kill", "--all", cid, "KILL").returncode == 0
    assert agent.requests[-1] == {"op": "kill", "signal": 9, "all": True}


def end_later(proc, seconds):
    threading.Timer(seconds, proc.kill).start()


def test_kill_reaching_a_vm_that_powers_off_succeeds_once_the_vmm_is_gone(sandbox):
    """podman stops a pod's containers all at once: a member's SIGKILL may reach a VM whose infra
    ended, when its agent no longer answers. kill returns once the VMM is gone, successfully: the
    container stopped."""
    capsule, agent, vmm, cid = sandbox
    agent.kill_reply = None
    end_later(vmm, 1.0)
    p = capsule("kill", cid, "KILL")
    assert (p.returncode, p.stderr) == (0, "")
    assert vmm.poll() is not None


def test_kill_of_a_stopped_one_whose_vm_still_powers_off_waits_for_its_end(sandbox):
    """A container the agent already calls stopped: the error, but only after the VMM's end, which
    podman checks by the pid right after a failed kill."""
    capsule, agent, vmm, cid = sandbox
    agent.status = "stopped"
    end_later(vmm, 1.0)
    p = capsule("kill", cid, "KILL")
    assert p.returncode == 1 and p.stderr == f'capsule: cannot kill container "{cid}": container not running\n'
    assert vmm.poll() is not None


def test_kill_reaching_a_silent_vm_that_stays_fails_in_one_line(sandbox):
    """A hung guest: the wait for its end is bounded (10 s), then kill fails naming the container."""
    capsule, agent, vmm, cid = sandbox
    agent.kill_reply = None
    p = capsule("kill", cid, "KILL")
    assert p.returncode == 1
    assert p.stderr == f'capsule: kill container "{cid}": agent kill: connection closed without a reply\n'
    assert vmm.poll() is None


def test_a_guest_that_hangs_up_before_the_request_is_one_that_does_not_answer(sandbox):
    """podman's `pod stop` deletes a member while the pod's VM powers off: the agent's end may
    close before capsule writes its request. state and delete --force then act as for a silent
    guest; before, the write's SIGPIPE killed capsule (podman: "signal: broken pipe")."""
    capsule, agent, vmm, cid = sandbox
    agent.hang_up = True
    p = capsule("state", cid)
    assert (p.returncode, json.loads(p.stdout)["status"], p.stderr) == (0, "stopped", "")
    p = capsule("delete", "--force", cid)
    assert (p.returncode, p.stderr) == (0, "")
    assert vmm.wait(timeout=10) == -9


def test_exec_relays_stdio_and_the_exit_status(sandbox):
    capsule, agent, _, cid = sandbox
    p = capsule("exec", "--env", "B=2", cid, "cat", stdin="some input\n")
    assert (p.returncode, p.stdout, p.stderr) == (5, "guest got: some input\n", "to stderr\n")
    exec_req = next(r for r in agent.requests if r["op"] == "exec")
    proc = json.loads(exec_req["process"])
    assert proc["args"] == ["cat"] and proc["env"] == ["A=1", "B=2"] and exec_req["stdio"] == "pipes"
    streams = [r for r in agent.requests if r["op"] == "stdio"]
    assert sorted(r["fd"] for r in streams) == [0, 1, 2] and {r["exec"] for r in streams} == {exec_req["exec"]}


def test_hostile_replies(sandbox):
    capsule, agent, _, cid = sandbox
    agent.kill_reply = {"ok": False, "error": "no\x1b[31m such\nprocess" + "x" * 5000}
    p = capsule("kill", cid)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert p.stderr.startswith('capsule: kill container "vm1": in the VM: no?[31m such?processxxx')
    assert len(p.stderr) < 300
    agent.kill_reply = ["not", "an", "object"]
    p = capsule("kill", cid)
    assert p.returncode == 1 and "not a JSON object" in p.stderr
    # The relay, which took the status, fails with the relay's own status (255).
    agent.wait_status = 999
    p = capsule("exec", cid, "true", stdin="")
    assert p.returncode == 255 and p.stderr.splitlines()[-1] == ("capsule: agent wait: the VM's reply has no exit "
                                                                 "status from 0 to 255"), p.stderr


def test_delete_refuses_a_running_one_and_force_kills_the_vmm(sandbox, tmp_path):
    capsule, agent, vmm, cid = sandbox
    refused = capsule("delete", cid)
    assert refused.returncode == 1 and "not stopped: running" in refused.stderr
    assert capsule("delete", "--force", cid).returncode == 0
    assert vmm.wait(timeout=10) == -9
    assert not (tmp_path / "root" / cid).exists()


def test_exec_with_a_terminal_uses_one_stream_both_ways(sandbox):
    capsule, agent, _, cid = sandbox
    p = capsule("exec", "-t", cid, "sh", stdin="typed\n")
    assert (p.returncode, p.stdout) == (3, "tty got: typed\n"), p.stderr
    exec_req = next(r for r in agent.requests if r["op"] == "exec")
    assert exec_req["stdio"] == "tty" and json.loads(exec_req["process"])["terminal"] is True
    assert [r["fd"] for r in agent.requests if r["op"] == "stdio"] == [0]


def test_detached_exec_leaves_a_relay_that_exits_with_the_status(sandbox, tmp_path):
    """As conmon sees it: `exec -d --pid-file` returns at once; the pid it names is the host's
    stand-in for the process, reparented to the subreaper, and exits with the process's status."""
    import ctypes
    capsule, agent, _, cid = sandbox
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    pidfile = tmp_path / "exec.pid"
    p = capsule("exec", "-d", "--pid-file", str(pidfile), cid, "cat", stdin="")
    assert p.returncode == 0, p.stderr
    pid = int(pidfile.read_text())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5


def assert_relay_confined(pid, vmm, sock):
    """An exec's relay as the jail leaves it: the VM's uid, no capability, no_new_privs, a seccomp
    filter, its own network namespace, and a mount namespace whose root shows only the agent's socket."""
    f = proc_status(pid)
    uid = str(SANDBOX_ID_BASE + vmm.pid)
    assert f["Seccomp"] == "2" and f["NoNewPrivs"] == "1", f
    assert f["CapEff"] == f["CapPrm"] == f["CapBnd"] == "0000000000000000", f
    assert f["Uid"].split() == [uid] * 4 and f["Gid"].split() == [uid] * 4, f
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    seen = []
    for top, dirs, files in os.walk(f"/proc/{pid}/root"):
        seen += [os.path.join(top, n)[len(f"/proc/{pid}/root"):] for n in files]
    assert seen == [sock], seen


def confined_child(pid, timeout=10):
    """The pid of pid's child once a seccomp filter holds it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
        if children and proc_status(children[0]).get("Seccomp") == "2":
            return children[0]
        time.sleep(0.05)
    raise AssertionError(f"no confined child of {pid} within {timeout} s")


def test_foreground_exec_relays_through_a_confined_child_that_dies_with_it(sandbox, tmp_path):
    """A foreground exec relays through a child that is confined as a detached relay is, so what
    the guest sends never reaches an unconfined process; exec waits for it and exits with the
    process's status. Killed, exec takes its relay along, whose streams close (the agent then
    ends the process)."""
    capsule, agent, vmm, cid = sandbox
    sock = str(tmp_path / "root" / cid / "agent.sock")
    for kill in (False, True):
        p = subprocess.Popen([CAPSULE, "--root", str(tmp_path / "root"), "exec", cid, "cat"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            relay = confined_child(p.pid)
            assert_relay_confined(relay, vmm, sock)
            if kill:
                p.kill()
                p.wait()
                deadline = time.monotonic() + 10
                while os.path.exists(f"/proc/{relay}") and proc_status(relay)["State"][0] != "Z":
                    assert time.monotonic() < deadline, "the relay outlived its exec"
                    time.sleep(0.05)
            else:
                out, err = p.communicate("one line\n", timeout=30)
                assert (p.returncode, out, err) == (5, "guest got: one line\n", "to stderr\n")
        finally:
            p.kill()
            p.wait()


def test_detached_exec_relay_is_confined_and_outlives_a_hostile_status(sandbox, tmp_path):
    """The relay left behind holds only its streams: the VM's uid, no capability, no_new_privs, a
    seccomp filter, and a mount namespace whose root shows nothing but the agent's socket. A
    hostile guest's status then ends it with its own error status (255), not a crash."""
    import ctypes
    capsule, agent, vmm, cid = sandbox
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    agent.wait_status = 999
    pidfile = tmp_path / "exec.pid"
    r, w = os.pipe()
    try:
        # Files, not pipes: the relay keeps exec's stdout and stderr.
        with open(tmp_path / "exec.err", "w+") as err:
            p = subprocess.run([CAPSULE, "--root", str(tmp_path / "root"), "exec", "-d", "--pid-file", str(pidfile), cid,
                                "cat"], stdin=r, stdout=subprocess.DEVNULL, stderr=err, timeout=30)
        assert p.returncode == 0, (tmp_path / "exec.err").read_text()
        pid = int(pidfile.read_text())
        # The fake agent answers the wait only once stdin ended: the relay is relaying meanwhile.
        deadline = time.monotonic() + 10
        while proc_status(pid).get("Seccomp") != "2" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_relay_confined(pid, vmm, str(tmp_path / "root" / cid / "agent.sock"))
    finally:
        os.close(r)
        os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 255


def test_poststart_and_poststop_hooks_run_on_the_host(sandbox, tmp_path):
    capsule, agent, _, cid = sandbox
    cfg_path = tmp_path / "root" / cid / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hooks"] = {name: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat >{tmp_path}/{name}.json"]}]
                    for name in ("poststart", "poststop")}
    cfg_path.write_text(json.dumps(cfg))
    agent.status = "created"
    assert capsule("start", cid).returncode == 0
    st = json.loads((tmp_path / "poststart.json").read_text())
    assert (st["id"], st["status"]) == (cid, "running")
    agent.status = "stopped"
    assert capsule("delete", cid).returncode == 0
    st = json.loads((tmp_path / "poststop.json").read_text())
    assert (st["id"], st["status"]) == (cid, "stopped")


def test_life_pause_resume_through_the_agent(sandbox):
    capsule, agent, _, cid = sandbox
    p = capsule("pause", cid)
    assert p.returncode == 0, p.stderr
    assert agent.requests[-1] == {"op": "pause"}
    agent.status = "paused"  # the guest's cgroup is frozen: the agent still answers
    assert json.loads(capsule("state", cid).stdout)["status"] == "paused"
    assert " paused " in capsule("list").stdout
    again = capsule("pause", cid)
    assert again.returncode == 1 and again.stderr == f'capsule: container "{cid}" is paused, not running\n'
    assert capsule("kill", cid, "KILL").returncode == 0  # as runc: a paused container can be killed
    assert agent.requests[-1] == {"op": "kill", "signal": 9, "all": False}
    assert capsule("resume", cid).returncode == 0
    assert agent.requests[-1] == {"op": "resume"}
    agent.status = "running"
    refused = capsule("resume", cid)
    assert refused.returncode == 1 and "is running, not paused" in refused.stderr


def test_life_pause_a_created_one(sandbox):
    """As a plain container and runc: a created VM container pauses, and start waits for resume."""
    capsule, agent, _, cid = sandbox
    agent.status = "created"
    p = capsule("pause", cid)
    assert p.returncode == 0, p.stderr
    assert agent.requests[-1] == {"op": "pause"}
    agent.status = "paused"
    n = len(agent.requests)
    refused = capsule("start", cid)
    assert refused.returncode == 1 and refused.stderr == f'capsule: cannot start container "{cid}": it is paused, not created\n'
    assert [r["op"] for r in agent.requests[n:]] == ["state"]
    agent.status = "stopped"
    refused = capsule("pause", cid)
    assert refused.returncode == 1 and refused.stderr == f'capsule: container "{cid}" is stopped, not running\n'


def test_life_ps_lists_the_guests_pids(sandbox):
    capsule, agent, _, cid = sandbox
    p = capsule("ps", "--format", "json", cid)
    assert (p.returncode, p.stdout) == (0, "[1,7]\n"), p.stderr
    assert agent.requests[-1] == {"op": "ps"}
    p = capsule("ps", cid)
    assert (p.returncode, p.stdout) == (0, "PID\n1\n7\n"), p.stderr
    p = capsule("ps", cid, "-o", "pid,comm")
    assert p.returncode == 1 and "ps options do not apply to a VM container" in p.stderr
    for hostile in ([0], [-3], ["1"], [2 ** 40], "1 2", [1] * 70000, None):
        agent.ps_reply = {"ok": True, "pids": hostile}
        p = capsule("ps", "-f", "json", cid)
        assert p.returncode == 1 and p.stdout == "" and p.stderr.count("\n") == 1, (hostile, p.stderr)
        assert p.stderr.startswith(f'capsule: ps of container "{cid}": the VM\'s agent sent'), p.stderr


def test_life_update_forwards_the_checked_resources(sandbox, tmp_path):
    capsule, agent, _, cid = sandbox
    p = capsule("update", "--memory", "1G", "--pids-limit", "100", cid)
    assert p.returncode == 0, p.stderr
    req = agent.requests[-1]
    assert req["op"] == "update"
    assert json.loads(req["resources"]) == {"memory": {"limit": 1 << 30}, "pids": {"limit": 100}}
    (tmp_path / "res.json").write_text(json.dumps({"cpu": {"quota": 50000, "period": 100000}}))
    assert capsule("update", "-r", str(tmp_path / "res.json"), cid).returncode == 0
    assert json.loads(agent.requests[-1]["resources"]) == {"cpu": {"quota": 50000, "period": 100000}}
    n = len(agent.requests)
    bad = capsule("update", "--cpu-shares", "many", cid)
    assert bad.returncode != 0 and "--cpu-shares" in bad.stderr
    (tmp_path / "res.json").write_text(json.dumps({"memory": {"limit": "lots"}}))
    bad = capsule("update", "-r", str(tmp_path / "res.json"), cid)
    assert bad.returncode == 1 and "linux.resources.memory.limit" in bad.stderr, bad.stderr
    assert len(agent.requests) == n  # refused on the host: nothing went to the guest


def test_life_update_below_what_the_vm_needs_is_refused(sandbox, tmp_path):
    """The host's cgroup bounds the whole VM (512M of guest RAM here, plus the VMM's 32M): a lower
    memory limit is refused before anything changes; the minimum itself and no limit pass."""
    capsule, agent, _, cid = sandbox
    n = len(agent.requests)
    for flags in (["--memory", "543M"], ["--memory", "64M", "--pids-limit", "10"]):
        p = capsule("update", *flags, cid)
        limit = int(flags[1][:-1]) << 20
        assert p.returncode == 1 and p.stderr == (
            f'capsule: update container "{cid}": linux.resources.memory.limit (--memory): {limit} bytes is below '
            "the VM's minimum of 544M (512M of guest RAM, 32M for the VMM)\n"), p.stderr
    (tmp_path / "res.json").write_text(json.dumps({"memory": {"limit": 100 << 20}}))
    p = capsule("update", "-r", str(tmp_path / "res.json"), cid)
    assert p.returncode == 1 and "below the VM's minimum of 544M" in p.stderr
    assert [r["op"] for r in agent.requests[n:] if r["op"] != "state"] == []  # the guest was never asked
    for value in ("544M", "-1"):
        assert capsule("update", "--memory", value, cid).returncode == 0
        assert json.loads(agent.requests[-1]["resources"])["memory"]["limit"] == (544 << 20 if value == "544M" else -1)



def talk(master):
    """Type a line on the console and read what the container's terminal answers."""
    os.write(master, b"typed\n")
    out = read_until(master, "\n")
    os.close(master)
    return out


def test_life_exec_console_socket_gets_the_terminal(sandbox, tmp_path):
    """podman exec -t: `exec -t -d --console-socket S --pid-file P`; the master arrives on S before
    exec returns, carries the guest's terminal both ways, and P names the relay, which exits
    with the process's status."""
    import ctypes
    capsule, agent, _, cid = sandbox
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    cs = ConsoleSocket(tmp_path / "console.sock")
    pidfile = tmp_path / "exec.pid"
    p = capsule("exec", "-t", "-d", "--console-socket", cs.path, "--pid-file", str(pidfile), cid, "sh")
    assert p.returncode == 0, p.stderr
    assert talk(cs.receive_master()[0]) == "tty got: typed\n"
    _, status = os.waitpid(int(pidfile.read_text()), 0)
    assert os.waitstatus_to_exitcode(status) == 3
    exec_req = next(r for r in agent.requests if r["op"] == "exec")
    assert exec_req["stdio"] == "tty"

    # Without --detach exec itself returns the status.
    got = {}
    t = threading.Thread(target=lambda: got.update(out=talk(cs.receive_master()[0])))
    t.start()
    p = capsule("exec", "-t", "--console-socket", cs.path, cid, "sh")
    t.join(timeout=20)
    assert (p.returncode, got.get("out")) == (3, "tty got: typed\n"), p.stderr

    # With --pid-file too: it names the relay, whose session holds the console, not exec itself.
    t = threading.Thread(target=lambda: got.update(out2=talk(cs.receive_master()[0])))
    t.start()
    ex = subprocess.Popen([CAPSULE, "--root", str(tmp_path / "root"), "exec", "-t", "--console-socket", cs.path,
                           "--pid-file", str(pidfile), cid, "sh"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    _, err = ex.communicate(timeout=30)
    t.join(timeout=20)
    assert (ex.returncode, got.get("out2")) == (3, "tty got: typed\n"), err
    assert int(pidfile.read_text()) not in (ex.pid, 0)

    p = capsule("exec", "--console-socket", cs.path, cid, "true")
    assert p.returncode != 0 and "--console-socket needs a terminal" in p.stderr
    p = capsule("exec", "-t", "-d", cid, "sh")
    assert p.returncode != 0 and "--tty with --detach needs --console-socket" in p.stderr


def test_life_exec_console_size_is_the_ptys_from_the_start(sandbox, tmp_path):
    """process.consoleSize of an exec'd process (podman sends it): the console socket's pty has it
    before the process runs, and no resize undoes it; without one, no resize is sent at all."""
    import fcntl
    import termios
    capsule, agent, _, cid = sandbox
    cs = ConsoleSocket(tmp_path / "console.sock")
    for size in ((33, 77), None):
        proc = {"terminal": True, "args": ["sh"], "cwd": "/", "env": ["A=1"]}
        if size:
            proc["consoleSize"] = {"height": size[0], "width": size[1]}
        (tmp_path / "process.json").write_text(json.dumps(proc))
        got = {}

        def console():
            master = cs.receive_master()[0]
            got["size"] = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))[:2]
            got["out"] = talk(master)
        t = threading.Thread(target=console)
        t.start()
        n = len(agent.requests)
        p = capsule("exec", "--console-socket", cs.path, "-p", str(tmp_path / "process.json"), cid)
        t.join(timeout=20)
        assert (p.returncode, got.get("out")) == (3, "tty got: typed\n"), p.stderr
        assert got["size"] == (size or (0, 0))
        resizes = [(r["rows"], r["cols"]) for r in agent.requests[n:] if r["op"] == "resize"]
        assert resizes == ([size] if size else []), resizes
    cs.close()
