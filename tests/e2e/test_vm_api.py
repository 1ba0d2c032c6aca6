"""The control channel (`capsule vm run --api-socket`, `capsule vm ctl`) on this host, with ring-3
payloads: the flood payload writes to the console without end, so the console file's growth is the
vCPUs' progress. Pause stops it and resume restarts it, bad requests are refused while the VM goes
on, the socket is 0600 and gone after exit, and stop hard-stops a guest that has no power button
driver (status 83). Linux guests and the power button itself: tests/testbed/test_vm_control.py."""
import json
import os
import socket
import stat
import subprocess
import time

import pytest

from conftest import CAPSULE
from test_vm_host import BINARIES, one_line_error, payload, vm_run

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm")
HARD_STOP = 83


@pytest.fixture(params=BINARIES)
def capsule_bin(request):
    return request.param


def ctl(binary, sock, *args):
    return subprocess.run([binary, "vm", "ctl", str(sock), *map(str, args)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def ctl_json(binary, sock, *args):
    p = ctl(binary, sock, *args)
    assert p.returncode == 0, (p.stdout, p.stderr)
    return json.loads(p.stdout)


def raw(sock, data, timeout=10):
    """Send bytes on a fresh connection; the first answer line, or '' when it was closed first."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        c.connect(str(sock))
        try:
            c.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        line = b""
        while not line.endswith(b"\n"):
            try:
                b = c.recv(4096)
            except ConnectionResetError:
                break
            if not b:
                break
            line += b
        return line.decode()


class Flood:
    """A flood payload VM with an API socket; its console goes to a file."""

    def __init__(self, binary, tmp_path, *extra):
        self.sock = tmp_path / "api.sock"
        self.console = tmp_path / "console"
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
        self.proc = subprocess.Popen([binary, "vm", "run", "--payload", payload("flood"), "--cpus", "2",
                                      "--console", f"file:{self.console}", "--api-socket", str(self.sock), *extra],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None and self.size() < 1000:
            time.sleep(0.05)
        assert self.size() >= 1000, self.proc.communicate(timeout=10) if self.proc.poll() is not None else "no output"

    def size(self):
        try:
            return self.console.stat().st_size
        except FileNotFoundError:
            return 0

    def settled(self, timeout):
        """The console's size once it has not changed for 0.5 s; fails if it keeps growing."""
        deadline = time.monotonic() + timeout
        last = self.size()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.size()
            if now == last:
                return now
            last = now
        raise AssertionError(f"the console still grew after {timeout} s")

    def grows_past(self, size, timeout):
        deadline = time.monotonic() + timeout
        while self.size() <= size and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.size() > size

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=30)
        self.console.unlink(missing_ok=True)
        return err


def test_pause_stops_progress_and_resume_restores_it(capsule_bin, tmp_path):
    vm = Flood(capsule_bin, tmp_path)
    try:
        mode = os.lstat(vm.sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert ctl_json(capsule_bin, vm.sock, "info")["state"] == "running"
        assert ctl_json(capsule_bin, vm.sock, "pause") == {"ok": True, "state": "paused"}
        # console bytes the vCPUs wrote before they parked drain to the file: on a slow host (the
        # nested testbed under ASan) that takes a while, so wait for a quiet 0.5 s first
        before = vm.settled(timeout=15)
        time.sleep(1.5)
        after = vm.size()
        info = ctl_json(capsule_bin, vm.sock, "info")  # the socket is served while paused
        assert before == after, f"the console grew by {after - before} bytes while paused"
        assert info["state"] == "paused" and info["vcpus"] == 2 and info["rss"] > 0
        assert info["config"]["cpus"] == 2 and info["config"]["api-socket"] == str(vm.sock)
        assert ctl_json(capsule_bin, vm.sock, "pause")["state"] == "paused"  # twice is fine
        assert ctl_json(capsule_bin, vm.sock, "resume")["state"] == "running"
        assert vm.grows_past(after, timeout=15), "no progress within 15 s of resume"
        assert ctl_json(capsule_bin, vm.sock, "info")["state"] == "running"
    finally:
        err = vm.stop()
    assert vm.proc.returncode == 143, err
    assert not vm.sock.exists()


def test_bad_requests_are_refused_and_the_vm_goes_on(capsule_bin, tmp_path):
    vm = Flood(capsule_bin, tmp_path)
    try:
        for data, needle in [(b"pause\n", "invalid JSON"), (b'{"command": "reboot"}\n', "unknown command"),
                             (b'{"command": "pause", "now": 1}\n', "unknown key"),
                             (b'{"command": "balloon", "size": 4096}\n', "no balloon device"),
                             (b'{"command": "stop", "timeout": "soon"}\n', "timeout"),
                             (b"{" * 70000, "longer than 65536")]:
            answer = raw(vm.sock, data)
            assert answer.endswith("\n"), (data[:40], answer)
            j = json.loads(answer)
            assert j["ok"] is False and needle in j["error"], (data[:40], j)
        p = ctl(capsule_bin, vm.sock, "balloon-stats")
        assert p.returncode == 1 and "no balloon device" in p.stderr, p.stderr
        p = ctl(capsule_bin, vm.sock, "frobnicate")
        assert p.returncode == 1 and "unknown command `frobnicate`" in p.stderr, p.stderr
        p = ctl(capsule_bin, vm.sock, "pause", "now")
        assert p.returncode == 1 and "takes no argument" in p.stderr, p.stderr
        # Nothing changed: still running, still making progress.
        assert ctl_json(capsule_bin, vm.sock, "info")["state"] == "running"
        assert vm.grows_past(vm.size(), timeout=15)
        assert vm.proc.poll() is None
    finally:
        err = vm.stop()
    assert vm.proc.returncode == 143, err


def test_stop_without_a_power_button_driver_is_a_hard_stop(capsule_bin, tmp_path):
    vm = Flood(capsule_bin, tmp_path)
    try:
        t = time.monotonic()
        assert ctl_json(capsule_bin, vm.sock, "stop", "1") == {"ok": True, "state": "stopping", "timeout": 1}
        rc = vm.proc.wait(timeout=30)
        elapsed = time.monotonic() - t
    finally:
        err = vm.stop()
    assert rc == HARD_STOP, err
    assert 0.9 <= elapsed < 10, elapsed
    assert "did not power off within 1 s" in err
    assert not vm.sock.exists()


def test_ctl_errors():
    p = subprocess.run([CAPSULE, "vm", "ctl", "/nonexistent/api.sock", "info"], capture_output=True, text=True)
    assert p.returncode == 1 and "no such socket" in p.stderr, p.stderr
    p = subprocess.run([CAPSULE, "vm", "ctl", "/tmp/x.sock", "balloon", "lots"], capture_output=True, text=True)
    assert p.returncode == 1 and "SIZE" in p.stderr, p.stderr
    p = subprocess.run([CAPSULE, "vm", "ctl", "/tmp/x.sock"], capture_output=True, text=True)
    assert p.returncode == 1 and "usage" in p.stderr, p.stderr


def test_refused_socket_path_names_the_setting(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    p = vm_run(CAPSULE, "--payload", payload("hello"), "--api-socket", taken)
    one_line_error(p, "api-socket: ", "not a socket")
    assert taken.read_text() == "keep me"
    p = vm_run(CAPSULE, "--payload", payload("hello"), "--api-socket", tmp_path / "no" / "dir.sock")
    one_line_error(p, "api-socket: cannot create")


def test_stale_socket_is_replaced_and_config_key(tmp_path):
    sock = tmp_path / "api.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))
    s.close()  # a socket file nobody listens on: what a killed VM leaves
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"payload": payload("hello"), "debug-exit": True, "api-socket": "api.sock"}))
    p = vm_run(CAPSULE, "--config", cfg)
    assert p.returncode == 0, p.stderr
    assert "removing the stale socket" in p.stderr
    assert not sock.exists()
