"""The control channel of a running Linux guest (`capsule vm run --api-socket`, `capsule vm ctl`),
seen from a client of the socket. One testbed run boots the busybox guest twice:

- counter: tests/guest/ctl_counter.sh prints "tick N" every 100 ms and ignores the power button.
  The host checks the socket (0600), info, bad requests (refused, the VM goes on), pause (no new
  tick for 2 s; info says paused) and resume (ticks again), then `stop 3`: the guest does not power
  off, so capsule stops it after 3 s with status 83, and the socket is gone.
- powerbtn: tests/guest/powerbtn.c waits for KEY_POWER; `stop` presses the ACPI power button and
  the guest powers itself off (status 0).

This file, run inside the testbed as `python3 test_vm_control.py host OUT INITRD`, is the host side
of both boots; it writes OUT/<boot>/results.json and the tests then assert per boot."""
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import nested
import stuck

REPO = pathlib.Path(__file__).resolve().parents[2]
HARD_STOP = 83
PAUSE_SECONDS = 2

pytestmark = pytest.mark.testbed


# ---- the host side, run inside the testbed ----------------------------------------------

def ctl(sock, *args):
    t = time.monotonic()
    p = subprocess.run(["capsule", "vm", "ctl", str(sock), *map(str, args)], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    try:
        answer = json.loads(p.stdout) if p.returncode == 0 else None
    except ValueError:
        answer = None
    return {"rc": p.returncode, "answer": answer, "stderr": p.stderr.strip(), "seconds": round(time.monotonic() - t, 2)}


def raw(sock, data):
    """The first answer line to data on a fresh connection, and whether the server closed it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(60)
        c.connect(str(sock))
        try:
            c.sendall(data)
        except OSError:
            pass
        buf = b""
        while b"\n" not in buf:
            try:
                b = c.recv(4096)
            except OSError:
                b = b""
            if not b:
                return buf.decode(errors="replace"), True
            buf += b
        line = buf.split(b"\n")[0].decode(errors="replace")
        c.settimeout(5)  # a server that closes does so right after its answer
        try:
            closed = c.recv(1) == b""
        except socket.timeout:
            closed = False
        except OSError:
            closed = True
        return line, closed


class Guest:
    def __init__(self, out, name, initrd, sock):
        self.console = out / "console"
        self.overrun = out / "overrun"
        cmd = ["capsule", "vm", "run", "--initrd", initrd, "--memory", "256M", "--cpus", "2", "--api-socket", sock,
               "--cmdline", f"console=ttyS0 panic=-1 loglevel=1 guest_action=script:{name}"]
        with open(self.console, "w") as o, open(out / "stderr", "w") as e:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)

    def text(self):
        return self.console.read_text(errors="replace")

    def wait_for(self, needle, timeout=300):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if needle in self.text():
                return True
            time.sleep(0.1)
        return needle in self.text()

    def wait(self, limit):
        return stuck.wait(self.proc, limit, self.overrun, self.console)

    def end(self, r):
        """In the end it has an exit status, stopped with the overrun's report when it was still running."""
        if self.proc.poll() is None and "rc" not in r:
            r["rc"] = stuck.end(self.proc, self.overrun, self.console, "was still running when the host side gave up")
        r.setdefault("rc", self.proc.returncode)

    def ticks(self):
        return max([int(n) for n in re.findall(r"^tick (\d+)\r?$", self.text(), re.M)] or [-1])


def counter_boot(out, initrd, sock):
    r = {}
    g = Guest(out, "ctl_counter", initrd, sock)
    try:
        r["started"] = g.wait_for("tick 3")
        if not r["started"]:
            return r
        st = os.lstat(sock)
        r["socket"] = [stat.S_ISSOCK(st.st_mode), oct(stat.S_IMODE(st.st_mode))]
        r["info_running"] = ctl(sock, "info")
        r["bad"] = [raw(sock, b"pause please\n"), raw(sock, b'{"command": "reboot"}\n'),
                    raw(sock, b'{"command": "pause", "vcpu": 0}\n'), raw(sock, b"[" * 70000)]
        r["bad_ctl"] = ctl(sock, "frobnicate")
        r["after_bad"] = [g.ticks(), ctl(sock, "info")]
        time.sleep(1)
        r["after_bad"].append(g.ticks())

        r["pause"] = ctl(sock, "pause")
        time.sleep(0.5)  # lines the guest wrote before its vCPUs parked reach the console file
        first = g.ticks()
        time.sleep(PAUSE_SECONDS)
        r["paused_ticks"] = [first, g.ticks()]
        r["info_paused"] = ctl(sock, "info")
        r["pause_again"] = ctl(sock, "pause")
        r["resume"] = ctl(sock, "resume")
        # A loaded TCG testbed runs the guest slowly: wait for a few ticks rather than a fixed time.
        deadline = time.monotonic() + 30
        while g.ticks() <= first + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        r["resumed_ticks"] = g.ticks()

        t = time.monotonic()
        r["stop"] = ctl(sock, "stop", 3)
        r["rc"] = g.wait(300)
        r["stop_seconds"] = round(time.monotonic() - t, 1)
    finally:
        g.end(r)
        r["socket_left"] = os.path.exists(sock)
    return r


def powerbtn_boot(out, initrd, sock):
    r = {}
    g = Guest(out, "ctl_powerbtn", initrd, sock)
    try:
        r["started"] = g.wait_for("powerbtn: ready")
        if not r["started"]:
            return r
        t = time.monotonic()
        r["stop"] = ctl(sock, "stop", 120)
        r["rc"] = g.wait(300)
        r["stop_seconds"] = round(time.monotonic() - t, 1)
    finally:
        g.end(r)
        r["socket_left"] = os.path.exists(sock)
    return r


def host_main(out, initrd):
    out = pathlib.Path(out)
    tmp = tempfile.mkdtemp(prefix="ctl-")
    for name, boot in (("counter", counter_boot), ("powerbtn", powerbtn_boot)):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        r = boot(d, initrd, f"{tmp}/{name}.sock")
        r["seconds"] = round(time.monotonic() - t, 1)
        (d / "results.json").write_text(json.dumps(r))
    shutil.rmtree(tmp, ignore_errors=True)


# ---- the tests, on the host -----------------------------------------------------------------

class Boot:
    def __init__(self, out, name):
        d = out / name
        self.name = name
        self.console = (d / "console").read_text(errors="replace").replace("\r", "") \
            if (d / "console").exists() else ""
        self.stderr = (d / "stderr").read_text(errors="replace") if (d / "stderr").exists() else ""
        self.r = json.loads((d / "results.json").read_text()) if (d / "results.json").exists() else {}
        self.rc = self.r.get("rc", -1)  # capsule's status, for nested.py
        self.overrun = stuck.report_tail(d / "overrun")

    def result(self, key):
        assert self.r.get("started"), f"{self.name}: the guest did not start\n{self.tail()}"
        assert key in self.r, f"{self.name}: no result {key}: {self.r}\n{self.tail()}"
        return self.r[key]

    def tail(self):
        return ("--- console (last 30 lines)\n" + "\n".join(self.console.splitlines()[-30:]) +
                f"\n--- stderr\n{self.stderr}\n--- results {self.r}" + self.overrun)


@pytest.fixture(scope="module")
def boots(request):
    k = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert k.returncode == 0, k.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    me = shlex.quote(str(pathlib.Path(__file__).resolve()))

    def script(out):
        return f"python3 {me} host {shlex.quote(str(out))} {shlex.quote(initrd)} 2>{shlex.quote(str(out))}/host-err\n"
    out, r, boots = nested.run("ctl", script, lambda out: {n: Boot(out, n) for n in ("counter", "powerbtn")},
                               timeout=1500, env={"TESTBED_VERBOSE": "1", "TESTBED_TIMEOUT": "1400"})
    try:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_vm_control] testbed exit {r.returncode}; " + ", ".join(
                f"{n}: {json.loads((out / n / 'results.json').read_text()).get('seconds')} s"
                for n in ("counter", "powerbtn") if (out / n / "results.json").exists()))
        host_err = (out / "host-err").read_text(errors="replace") if (out / "host-err").exists() else ""
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:] + host_err[-4000:]
        yield boots
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def counter(boots):
    return boots["counter"]


@pytest.fixture
def powerbtn(boots):
    return boots["powerbtn"]


def test_socket_is_private_while_running_and_gone_after_exit(counter, powerbtn):
    assert counter.result("socket") == [True, "0o600"]
    assert counter.result("socket_left") is False
    assert powerbtn.result("socket_left") is False


def test_info_shows_the_state_and_the_settings(counter):
    info = counter.result("info_running")
    assert info["rc"] == 0, info
    a = info["answer"]
    assert a["ok"] is True and a["state"] == "running" and a["vcpus"] == 2, a
    assert a["memory"] == 256 << 20 and a["rss"] > 0, a
    assert "guest_action=script:ctl_counter" in a["config"]["cmdline"], a
    paused = counter.result("info_paused")
    assert paused["rc"] == 0 and paused["answer"]["state"] == "paused", paused


def test_pause_stops_the_guest_and_resume_restarts_it(counter):
    pause = counter.result("pause")
    assert pause["rc"] == 0 and pause["answer"] == {"ok": True, "state": "paused"}, pause
    first, last = counter.result("paused_ticks")
    assert first >= 3, counter.tail()
    assert last == first, f"the guest printed ticks {first + 1}..{last} while paused\n{counter.tail()}"
    again = counter.result("pause_again")
    assert again["rc"] == 0 and again["answer"]["state"] == "paused", again
    resume = counter.result("resume")
    assert resume["rc"] == 0 and resume["answer"] == {"ok": True, "state": "running"}, resume
    assert counter.result("resumed_ticks") > last + 3, counter.tail()
    print(f"paused at tick {first} for {PAUSE_SECONDS} s without a tick; ticking again after resume; pause "
          f"answered in {pause['seconds']} s")


def test_bad_requests_are_refused_and_the_vm_goes_on(counter):
    garbage, unknown, extra, big = counter.result("bad")
    for (line, _closed), needle in ((garbage, "invalid JSON"), (unknown, "unknown command `reboot`"),
                                    (extra, "unknown key `vcpu`"), (big, "request longer than 65536 bytes")):
        answer = json.loads(line)
        assert answer["ok"] is False and needle in answer["error"], answer
    assert big[1] is True  # an oversized request also costs the client its connection
    bad_ctl = counter.result("bad_ctl")
    assert bad_ctl["rc"] == 1 and "unknown command `frobnicate`" in bad_ctl["stderr"], bad_ctl
    before, info, after = counter.result("after_bad")
    assert info["rc"] == 0 and info["answer"]["state"] == "running", info
    assert after > before, counter.tail()


def test_stop_hard_stops_a_guest_that_ignores_the_power_button(counter):
    stop = counter.result("stop")
    assert stop["rc"] == 0 and stop["answer"] == {"ok": True, "state": "stopping", "timeout": 3}, stop
    assert counter.result("rc") == HARD_STOP, counter.tail()
    assert 3 <= counter.result("stop_seconds") < 30, counter.r
    assert "did not power off within 3 s of the power button" in counter.stderr, counter.stderr


def test_stop_powers_off_a_guest_that_listens_for_the_power_button(powerbtn):
    stop = powerbtn.result("stop")
    assert stop["rc"] == 0 and stop["answer"]["state"] == "stopping", stop
    assert "powerbtn: KEY_POWER, powering off" in powerbtn.console, powerbtn.tail()
    assert powerbtn.result("rc") == 0, powerbtn.tail()
    assert powerbtn.result("stop_seconds") < 120, powerbtn.r
    print(f"the guest powered off {powerbtn.result('stop_seconds')} s after the power button")


if __name__ == "__main__" and sys.argv[1:2] == ["host"]:
    host_main(*sys.argv[2:4])
