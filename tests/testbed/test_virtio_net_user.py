"""Rootless user-mode networking (`--net user`) through passt and libslirp, seen by a Linux guest.

One testbed run. It gives the testbed what a host has and the tests need: an interface with a
default route (passt copies its settings from it; a veth, nothing is reached through it), and a
resolver in /etc/resolv.conf: a tiny DNS responder on 127.0.0.1:53 (this file, `dns`) that
answers any A query with 192.0.2.77. Then, per boot, this file as a program (`host ...`) is the
host side: a TCP server on 127.0.0.1 the guest reaches through the gateway 10.0.2.2, the client
of the guest's server behind `hostfwd=tcp:127.0.0.1:HPORT-:8080`, and `iperf3 -s` on the loopback
for bulk data both ways (the guest's initramfs carries iperf3). The guest runs tests/guest/net_user.sh.
Boots: passt over virtio-pci and libslirp over virtio-mmio (each back-end and each transport once),
capsule killed with SIGKILL (passt must go with it), and per back-end a forward whose host port is
taken (a one-line error, nothing left)."""
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import nested
import stuck

REPO = pathlib.Path(__file__).resolve().parents[2]
GUEST_PORT = 8080
DNS_ANSWER = "192.0.2.77"
FORWARD_HELLO = "hello-through-the-forward"
# Long enough to show bulk data flowing each way; the rates themselves are bench/'s business.
IPERF_SECONDS = int(os.environ.get("NET_USER_IPERF_SECONDS", "3"))
# name: (impl, transport, iperf seconds, mode). Each back-end once, each transport once.
BOOTS = {
    "passt-pci": ("passt", "pci", IPERF_SECONDS, "normal"),
    "slirp-mmio": ("slirp", "mmio", IPERF_SECONDS, "normal"),
    "passt-kill9": ("passt", "pci", 0, "kill9"),
}

pytestmark = pytest.mark.testbed


# ---- inside the testbed ---------------------------------------------------------------------

def dns_main():
    """Answer every query with one A record (DNS_ANSWER): enough for nslookup."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 53))
    while True:
        q, peer = s.recvfrom(512)
        if len(q) < 12:
            continue
        end = 12
        while end < len(q) and q[end] != 0:
            end += q[end] + 1
        question = q[12:end + 5]
        qtype = struct.unpack("!H", q[end + 1:end + 3])[0] if end + 3 <= len(q) else 0
        header = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if qtype == 1 else 0, 0, 0)
        answer = struct.pack("!HHHIH", 0xc00c, 1, 1, 60, 4) + socket.inet_aton(DNS_ANSWER) if qtype == 1 else b""
        s.sendto(header + question + answer, peer)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_server(record):
    """Answers one line with 'hello-from-host LINE'."""
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(8)

    def loop():
        while True:
            c, _ = l.accept()
            with c:
                c.settimeout(30)
                line = b""
                while not line.endswith(b"\n"):
                    b = c.recv(256)
                    if not b:
                        break
                    line += b
                record.append(line.decode(errors="replace").strip())
                c.sendall(b"hello-from-host " + line)
    threading.Thread(target=loop, daemon=True).start()
    return l.getsockname()[1]


def children(pid):
    """Pids whose parent is pid, with their names."""
    found = {}
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == pid:
            found[int(d.name)] = name
    return found


def alive(pid):
    try:
        os.kill(pid, 0)
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError):
        return False


def fd_targets(pid):
    out = []
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.append(os.readlink(fd))
        except OSError:
            pass
    return out


def host_main(out, impl, transport, initrd, iperf, mode):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    r = {"tcp_lines": []}
    port = tcp_server(r["tcp_lines"])
    hport = free_port()
    iperf_server = None
    if iperf:
        iperf_server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
    net = f"user,hostfwd=tcp:127.0.0.1:{hport}-:{GUEST_PORT},impl={impl}"
    cmd = ["capsule", "vm", "run", "--initrd", initrd, "--memory", "512M", "--cpus", "2",
           "--virtio-transport", transport, "--net", net,
           "--cmdline", f"console=ttyS0 panic=-1 loglevel=1 guest_action=script:net_user "
                        f"guest_args={port},{GUEST_PORT},{iperf}"]
    console = out / "console"
    t0 = time.monotonic()
    with open(console, "w") as o, open(out / "stderr", "w") as e:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    helpers = {}
    try:
        deadline = time.monotonic() + 900
        while p.poll() is None and "guest: net_user listening" not in console.read_text(errors="replace") \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        if p.poll() is None:
            helpers = {pid: name for pid, name in children(p.pid).items() if name.startswith("passt")}
            r["helpers"] = list(helpers.values())
            r["helper_fds"] = {str(pid): fd_targets(pid) for pid in helpers}
            if mode == "kill9":
                # Killed while the guest is up, whatever its forward does.
                p.send_signal(signal.SIGKILL)
            # A forward that answers nothing is retried for a while: the guest's server may
            # not be there yet when the forward takes the connection. The client speaks first:
            # Debian's passt completes a forwarded connection's handshake with the guest only
            # once the host side sends data (README).
            end = time.monotonic() + 120
            while True:
                data = b""
                try:
                    with socket.create_connection(("127.0.0.1", hport), timeout=60) as c:
                        c.sendall(FORWARD_HELLO.encode() + b"\n")
                        while True:
                            b = c.recv(256)
                            if not b:
                                break
                            data += b
                    r["hostfwd"] = data.decode(errors="replace").strip()
                except OSError as e:
                    r["hostfwd"] = data.decode(errors="replace").strip() + repr(e)
                if r["hostfwd"].startswith("guest-token") or time.monotonic() > end or p.poll() is not None:
                    break
                time.sleep(2)
        r["rc"] = stuck.wait(p, 600, out / "overrun", console)
    finally:
        if p.poll() is None and "rc" not in r:
            stuck.end(p, out / "overrun", console, "was still running when the host side failed")
        if iperf_server:
            iperf_server.terminate()
            try:
                iperf_server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                r["iperf_server"] = "ignored SIGTERM for 30 s"
                iperf_server.kill()
                iperf_server.wait(timeout=30)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    r["helpers_left"] = [pid for pid in helpers if alive(pid)]
    r["seconds"] = round(time.monotonic() - t0, 1)
    (out / "results.json").write_text(json.dumps(r))


# ---- the tests, on the host -----------------------------------------------------------------

def boot_script(out, initrd):
    o, i, me = shlex.quote(str(out)), shlex.quote(str(initrd)), shlex.quote(str(pathlib.Path(__file__).resolve()))
    lines = [
        f"out={o} initrd={i} me={me}",
        # A default route for passt to take its template from, and the test's resolver.
        "ip link add nu0 type veth peer name nu1 && ip addr add 198.51.100.1/24 dev nu0 && ip link set nu0 up && "
        "ip link set nu1 up && ip route add default via 198.51.100.254 || echo 'no veth' >&2",
        "rm -f /etc/resolv.conf && echo 'nameserver 127.0.0.1' >/etc/resolv.conf",
        'python3 "$me" dns 2>"$out/dns.err" & dns=$!',
    ]
    for name, (impl, transport, iperf, mode) in BOOTS.items():
        lines.append(f'python3 "$me" host "$out/{name}" {impl} {transport} "$initrd" {iperf} {mode} '
                     f'2>"$out/{name}.host-err"')
    # A forward whose host port is taken: one line naming the NIC, exit 1, no passt left.
    for impl in ("passt", "slirp"):
        lines.append(
            f'python3 -c "import socket,time; s=socket.socket(); s.bind((\'127.0.0.1\', 47001)); s.listen(); '
            f'time.sleep(600)" & holder=$!; '
            f'until grep -q ":B799 00000000:0000 0A" /proc/net/tcp; do sleep 0.2; done; '
            f'capsule vm run --initrd "$initrd" --net user,hostfwd=tcp:127.0.0.1:47001-:80,impl={impl} '
            f'>/dev/null 2>"$out/taken-{impl}.err" </dev/null; echo $? >"$out/taken-{impl}.rc"; '
            f'pgrep -x passt.avx2 >"$out/taken-{impl}.left"; pgrep -x passt >>"$out/taken-{impl}.left"; '
            f'kill $holder')
    lines.append("kill $dns")
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(self, out, name):
        d = out / name
        self.name = name
        self.console = (d / "console").read_text(errors="replace").replace("\r", "") \
            if (d / "console").exists() else ""
        self.stderr = (d / "stderr").read_text(errors="replace") if (d / "stderr").exists() else ""
        host_err = out / f"{name}.host-err"
        self.host_err = host_err.read_text(errors="replace") if host_err.exists() else ""
        self.r = json.loads((d / "results.json").read_text()) if (d / "results.json").exists() else {}
        self.rc = self.r.get("rc", -1)  # capsule's status, for nested.py
        self.overrun = stuck.report_tail(d / "overrun")

    def guest(self, key):
        m = re.search(rf"^guest: net_user {re.escape(key)}(?: (.*))?$", self.console, re.M)
        assert m, f"{self.name}: no 'guest: net_user {key}' line\n{self.tail()}"
        return (m.group(1) or "").strip()

    def result(self, key):
        assert key in self.r, f"{self.name}: no host result {key}: {self.r}\n{self.tail()}"
        return self.r[key]

    def tail(self):
        return ("--- console (last 40 lines)\n" + "\n".join(self.console.splitlines()[-40:]) +
                f"\n--- stderr\n{self.stderr[-3000:]}\n--- host helper\n{self.host_err[-3000:]}\n--- results {self.r}" +
                self.overrun)


@pytest.fixture(scope="module")
def boots(request):
    k = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert k.returncode == 0, k.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    # passt-kill9's passt is killed on purpose; its status is what its test asserts.
    out, r, boots = nested.run("net-user", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in BOOTS}, timeout=3000,
                               env={"TESTBED_VERBOSE": "1", "TESTBED_TIMEOUT": "2900"}, expected={"passt-kill9"})
    try:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_virtio_net_user] testbed exit {r.returncode}; " + ", ".join(
                f"{n}: {b.r.get('seconds')} s" for n, b in boots.items()))
            for n, b in boots.items():
                for line in b.console.splitlines():
                    if line.startswith("guest: net_user iperf"):
                        print(f"[test_virtio_net_user] {n}: {line}")
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        yield out, boots
    finally:
        shutil.rmtree(out, ignore_errors=True)


def read(out, name):
    p = out / name
    return p.read_text(errors="replace") if p.exists() else ""


NORMAL = [n for n, b in BOOTS.items() if b[3] == "normal"]


@pytest.fixture(params=NORMAL)
def boot(request, boots):
    return boots[1][request.param]


def test_guest_ran_and_powered_off(boot):
    assert "guest: script net_user exit 0" in boot.console, boot.tail()
    assert boot.result("rc") == 0, boot.tail()


def test_dhcp_gives_the_user_network(boot):
    assert boot.guest("ip") == "10.0.2.15/24", boot.tail()
    assert boot.guest("route") == "10.0.2.2", boot.tail()


def test_dns_is_answered_by_the_hosts_resolver(boot):
    assert boot.guest("dns") == DNS_ANSWER, boot.tail()


def test_outbound_tcp_reaches_the_hosts_loopback(boot):
    assert boot.guest("tcp_out") == "hello-from-host hello-from-guest", boot.tail()
    assert "hello-from-guest" in boot.result("tcp_lines")


def test_host_forward_reaches_the_guests_server(boot):
    # The guest's server read the host's line and answered with it: data went both ways.
    assert boot.result("hostfwd") == f"guest-token-{GUEST_PORT} {FORWARD_HELLO}", boot.tail()
    assert boot.guest("hostfwd served") == "", boot.tail()


def test_passt_runs_beside_capsule_without_its_fds_and_is_gone_after(boot):
    impl = BOOTS[boot.name][0]
    helpers = boot.result("helpers")
    if impl == "slirp":
        assert helpers == [], boot.tail()
        return
    assert len(helpers) == 1, boot.tail()
    for fds in boot.result("helper_fds").values():
        leaked = [t for t in fds if "kvm" in t or "memfd" in t]
        assert not leaked, fds
    assert boot.result("helpers_left") == [], boot.tail()


def test_passt_dies_with_a_killed_capsule(boots):
    b = boots[1]["passt-kill9"]
    assert b.result("rc") == -signal.SIGKILL, b.tail()
    assert len(b.result("helpers")) == 1, b.tail()
    assert b.result("helpers_left") == [], b.tail()


@pytest.mark.parametrize("impl", ["passt", "slirp"])
def test_taken_forward_port_is_a_one_line_error(boots, impl):
    out = boots[0]
    err = read(out, f"taken-{impl}.err")
    assert read(out, f"taken-{impl}.rc").strip() == "1", err
    capsule_lines = [l for l in err.splitlines() if l.startswith("capsule:")]
    assert len(capsule_lines) == 1 and "net[0]" in capsule_lines[0], err
    assert read(out, f"taken-{impl}.left").strip() == "", err


def test_iperf_moves_bulk_data_both_ways(boots):
    """Bulk TCP through each back-end, guest to host and back; a run without iperf3 is a failure."""
    for name in ("passt-pci", "slirp-mmio"):
        b = boots[1][name]
        for way in ("g2h", "h2g"):
            m = re.fullmatch(r"([\d.]+) Mbit/s", b.guest(f"iperf {way}"))
            assert m and float(m.group(1)) > 0, b.tail()


if __name__ == "__main__":
    if sys.argv[1:2] == ["dns"]:
        dns_main()
    elif sys.argv[1:2] == ["host"]:
        host_main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7])
