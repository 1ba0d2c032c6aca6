"""virtio-vsock without vhost, seen from both ends: a Linux guest booted by capsule (over the PCI
and the MMIO transport) and host programs on the VM's Unix sockets.

One testbed run boots the guest once per transport. For each boot this file, run as a program
inside the testbed (`python3 test_virtio_vsock.py host ...`), is the host side: an echo server on
`<socket>_5000` and a checksum sink on `<socket>_5001` for the guest's connects, and clients that
write `CONNECT <port>` to the VM's socket for the guest's echo (1234) and sink (1235) servers.
The guest runs tests/guest/vsock.sh with the static tool tests/guest/vsock.c. Both directions
carry an echo, 32 connections at once (each checked), a large transfer whose checksum the other
side computes, and a connect to a port nobody serves. Last, the guest sends 4 MiB to a host reader
that takes them slowly (`<socket>_5002`) and powers off as soon as its close is acknowledged: the
host must still get every byte. The tests then assert per boot."""
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import pytest

import nested
import stuck

REPO = pathlib.Path(__file__).resolve().parents[2]
TRANSPORTS = ("pci", "mmio")
BIG = int(os.environ.get("VSOCK_TEST_BIG", str(64 << 20)))
MANY = 32
LAST = 4 << 20  # the guest's last transfer, sent just before it powers off
BLOCK = 65521
GUEST_CID = 3

pytestmark = pytest.mark.testbed


def pattern(n, seed):
    """The bytes tests/guest/vsock.c sends and checks (see its comment)."""
    block = bytes((k * 131 + seed * 7) % 251 for k in range(BLOCK))
    return (block * (n // BLOCK + 1))[:n]


# ---- the host side, run inside the testbed ----------------------------------------------

def read_line(s, limit=64):
    line = b""
    while not line.endswith(b"\n") and len(line) < limit:
        b = s.recv(1)
        if not b:
            break
        line += b
    return line.decode(errors="replace")


def exchange(s, data):
    """Send data (then half-close) while reading to EOF: (bytes, crc32) of what came back."""
    def send():
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    t = threading.Thread(target=send)
    t.start()
    n, crc = 0, 0
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        n, crc = n + len(b), zlib.crc32(b, crc)
    t.join()
    return n, crc


def host_connect(sock, port, line=None):
    """A client of the VM's socket: (socket, the answer line)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)  # per send or receive: a guest that stops answering fails the check
    s.connect(sock)
    s.sendall((line if line is not None else f"CONNECT {port}\n").encode())
    try:
        return s, read_line(s)
    except ConnectionResetError:
        return s, "<reset>"


def serve(path, handler, record):
    l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    l.bind(path)
    l.listen(128)

    def loop():
        while True:
            c, _ = l.accept()
            threading.Thread(target=handler, args=(c, record), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def echo_handler(c, record):
    with c:
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            c.sendall(b)
        c.shutdown(socket.SHUT_WR)


def sink_handler(c, record):
    with c:
        n, crc = 0, 0
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            n, crc = n + len(b), zlib.crc32(b, crc)
        record.append([n, crc])
        c.sendall(f"{n} {crc:08x}\n".encode())


def slow_sink_handler(c, record):
    """A host peer slower than the guest: what the guest sent last is still on its way when
    the guest powers off."""
    with c:
        n, crc = 0, 0
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            n, crc = n + len(b), zlib.crc32(b, crc)
            time.sleep(0.05)
        record.append([n, crc])


def host_checks(sock, r, big):
    s, ok = host_connect(sock, 1234)
    data = pattern(100000, 11)
    r["h2g_echo_ok"] = ok
    r["h2g_echo"] = list(exchange(s, data)) + [zlib.crc32(data)]
    s.close()

    results = [None] * MANY

    def one(i):
        try:
            c, ok = host_connect(sock, 1234)
            d = pattern(65536, 100 + i)
            n, crc = exchange(c, d)
            results[i] = ok.startswith("OK ") and n == len(d) and crc == zlib.crc32(d)
            c.close()
        except OSError as e:
            results[i] = repr(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(MANY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r["h2g_many"] = results

    t = time.monotonic()
    s, ok = host_connect(sock, 1235)
    data = pattern(big, 5)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    r["h2g_big"] = [ok, read_line(s), f"{len(data)} {zlib.crc32(data):08x}\n", round(time.monotonic() - t, 1)]
    s.close()

    s, ok = host_connect(sock, 4444)
    r["h2g_refused"] = [ok, s.recv(16).decode(errors="replace") if ok != "<reset>" else ""]
    s.close()
    s, ok = host_connect(sock, 0, "CONNECT x\n")
    r["h2g_badline"] = ok
    s.close()


def host_main(out, transport, initrd, big):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="vsock-")
    sock = f"{tmp}/v.sock"
    r = {"g2h_sink": [], "g2h_last": []}
    serve(f"{sock}_5000", echo_handler, None)
    serve(f"{sock}_5001", sink_handler, r["g2h_sink"])
    serve(f"{sock}_5002", slow_sink_handler, r["g2h_last"])
    console = out / "console"
    cmd = ["capsule", "vm", "run", "--initrd", initrd, "--memory", "512M", "--cpus", "2",
           "--virtio-transport", transport, "--vsock", f"{GUEST_CID},socket={sock}",
           "--cmdline", f"console=ttyS0 panic=-1 guest_action=script:vsock guest_args={big}"]
    t0 = time.monotonic()
    with open(console, "w") as o, open(out / "stderr", "w") as e:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    try:
        while p.poll() is None and "guest: vsock ready" not in console.read_text(errors="replace"):
            time.sleep(0.2)
        if p.poll() is None:
            r["socket_while_running"] = os.path.exists(sock)
            try:
                host_checks(sock, r, big)
            except OSError as e:
                r["host_error"] = repr(e)
            try:
                host_connect(sock, 1236)[0].close()
            except OSError as e:
                r["done_error"] = repr(e)
        r["rc"] = stuck.wait(p, 300, out / "overrun", console)
        deadline = time.monotonic() + 30  # the slow reader's last reads after the VMM closed
        while not r["g2h_last"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if p.poll() is None and "rc" not in r:
            stuck.end(p, out / "overrun", console, "was still running when the host side failed")
    r["seconds"] = round(time.monotonic() - t0, 1)
    r["socket_left"] = os.path.exists(sock)
    (out / "results.json").write_text(json.dumps(r))
    shutil.rmtree(tmp, ignore_errors=True)


# ---- the tests, on the host -----------------------------------------------------------------

def boot_script(out, initrd):
    o, i, me = shlex.quote(str(out)), shlex.quote(str(initrd)), shlex.quote(str(pathlib.Path(__file__).resolve()))
    lines = [f"out={o} initrd={i}"]
    for t in TRANSPORTS:
        lines.append(f"python3 {me} host \"$out/{t}\" {t} \"$initrd\" {BIG} 2>\"$out/{t}.host-err\"")
    # Bad settings: the error names the setting, and a file already at the path is left alone.
    lines += [
        'capsule vm run --initrd "$initrd" --vsock 3,socket=/nonexistent/dir/v.sock >/dev/null '
        '2>"$out/nodir.err" </dev/null; echo $? >"$out/nodir.rc"',
        'touch "$out/taken"; capsule vm run --initrd "$initrd" --vsock 3,socket="$out/taken" >/dev/null '
        '2>"$out/taken.err" </dev/null; echo $? >"$out/taken.rc"',
    ]
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(self, out, transport):
        d = out / transport
        self.transport = transport
        self.console = (d / "console").read_text(errors="replace").replace("\r", "") \
            if (d / "console").exists() else ""
        self.stderr = (d / "stderr").read_text(errors="replace") if (d / "stderr").exists() else ""
        host_err = out / f"{transport}.host-err"
        self.host_err = host_err.read_text(errors="replace") if host_err.exists() else ""
        self.r = json.loads((d / "results.json").read_text()) if (d / "results.json").exists() else {}
        self.rc = self.r.get("rc", -1)  # capsule's status, for nested.py
        self.overrun = stuck.report_tail(d / "overrun")

    def guest(self, key):
        m = re.search(rf"^guest: vsock {re.escape(key)} (.*)$", self.console, re.M)
        assert m, f"{self.transport}: no 'guest: vsock {key}' line\n{self.tail()}"
        return m.group(1)

    def result(self, key):
        assert key in self.r, f"{self.transport}: no host result {key}: {self.r}\n{self.tail()}"
        return self.r[key]

    def tail(self):
        return ("--- console (last 40 lines)\n" + "\n".join(self.console.splitlines()[-40:]) +
                f"\n--- stderr\n{self.stderr}\n--- host helper\n{self.host_err[-3000:]}\n--- results {self.r}" +
                self.overrun)


@pytest.fixture(scope="module")
def boots(request):
    k = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert k.returncode == 0, k.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    out, r, boots = nested.run("vsock", lambda out: boot_script(out, initrd),
                               lambda out: {t: Boot(out, t) for t in TRANSPORTS}, timeout=2400,
                               env={"TESTBED_VERBOSE": "1", "TESTBED_TIMEOUT": "2300"})
    try:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_virtio_vsock] testbed exit {r.returncode}; " + ", ".join(
                f"{t}: {json.loads((out / t / 'results.json').read_text()).get('seconds')} s"
                for t in TRANSPORTS if (out / t / "results.json").exists()))
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        yield out, boots
    finally:
        shutil.rmtree(out, ignore_errors=True)


def read(out, name):
    p = out / name
    return p.read_text(errors="replace") if p.exists() else ""


@pytest.fixture(params=TRANSPORTS)
def boot(request, boots):
    return boots[1][request.param]


def test_guest_ran_and_powered_off(boot):
    assert "guest: vsock ready" in boot.console, boot.tail()
    assert "guest: vsock host done" in boot.console, boot.tail()
    assert "guest: script vsock exit 0" in boot.console, boot.tail()
    assert boot.result("rc") == 0, boot.tail()
    assert "host_error" not in boot.r, boot.tail()


def test_socket_exists_while_running_and_is_removed_at_exit(boot):
    assert boot.result("socket_while_running") is True
    assert boot.result("socket_left") is False


def test_host_to_guest_echo(boot):
    ok = boot.result("h2g_echo_ok")
    assert re.fullmatch(r"OK \d+\n", ok), ok
    assert int(ok.split()[1]) >= 1 << 30, ok  # a host-side port that guest listeners do not use
    n, crc, want = boot.result("h2g_echo")
    assert (n, crc) == (100000, want), boot.tail()


def test_host_to_guest_many_connections(boot):
    assert boot.result("h2g_many") == [True] * MANY, boot.tail()


def test_host_to_guest_large_transfer_checked_by_the_guest(boot):
    ok, reply, want, seconds = boot.result("h2g_big")
    assert ok.startswith("OK "), boot.tail()
    assert reply == want, f"{BIG} bytes in {seconds} s: the guest saw {reply!r}, sent {want!r}"
    print(f"{boot.transport}: {BIG >> 20} MiB host -> guest in {seconds} s")


def test_host_connect_to_refused_port_closes_without_ok(boot):
    ok, after = boot.result("h2g_refused")
    assert ok in ("", "<reset>") and after == "", boot.r["h2g_refused"]


def test_bad_connect_line_is_closed_without_answer(boot):
    assert boot.result("h2g_badline") in ("", "<reset>")


def test_guest_to_host_echo(boot):
    want = zlib.crc32(pattern(100000, 1))
    assert boot.guest("g2h echo") == f"bytes=100000 crc={want:08x}", boot.tail()


def test_guest_to_host_many_connections(boot):
    assert boot.guest("g2h many") == f"ok={MANY} of {MANY}", boot.tail()


def test_guest_to_host_large_transfer_checked_by_the_host(boot):
    want = [BIG, zlib.crc32(pattern(BIG, 3))]
    assert boot.guest("g2h big") == f"reply={want[0]} {want[1]:08x}", boot.tail()
    assert want in boot.result("g2h_sink"), boot.tail()


def test_guest_last_bytes_before_poweroff_reach_a_slow_host_reader(boot):
    assert boot.guest("g2h last") == f"pushed={LAST}", boot.tail()
    assert boot.result("g2h_last") == [[LAST, zlib.crc32(pattern(LAST, 13))]], boot.tail()


def test_guest_connect_to_refused_port_is_reset(boot):
    assert boot.guest("g2h refused") in ("error=ECONNRESET", "error=ECONNREFUSED"), boot.tail()


def test_unusable_socket_path_names_the_setting(boots):
    out = boots[0]
    for name in ("nodir", "taken"):
        err = read(out, f"{name}.err")
        assert read(out, f"{name}.rc").strip() == "1", err
        assert "vsock: socket " in err and len(err.strip().splitlines()) == 1, err
    assert (out / "taken").is_file()  # someone else's file is left alone


if __name__ == "__main__" and sys.argv[1:2] == ["host"]:
    host_main(*sys.argv[2:5], int(sys.argv[5]))
