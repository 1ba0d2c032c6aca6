"""virtio-console and virtio-rng with the stock Linux drivers, over both transports: capsule boots the
busybox guest (tests/testbed/mkguestinitramfs) with hvc0 as its console (console=hvc0), a named port
and /dev/hwrng, and the guest script tests/guest/console_rng.sh reports what it sees.

- hvc0: the guest's whole output (its /init's "guest:" lines) reaches capsule's stdout, or the
  --console file, and a line typed on capsule's stdin reaches the guest's console.
- The named port: /dev/vportNpM found by its name in /sys/class/virtio-ports; a host client on the
  Unix socket sends a line and 256 KiB, the guest answers with a line and 256 KiB of its own, both
  checked by MD5 on the other side.
- /dev/hwrng: the current rng is virtio's, 1 KiB is not all zeros, and with --rng=1K reading 4 KiB
  more takes at least ~3 s by the guest's own clock (the bucket holds at most one second).

All boots happen in ONE testbed run (tests/testbed/run), as in test_vm_linux.py; every test then
asserts on one boot's results."""
import json
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

import nested

REPO = pathlib.Path(__file__).resolve().parents[2]
PORT = "org.capsule.test"
LINE = "ping 7f3a"
BLOB = 262144
LINE_IN = "a line typed into hvc0"

pytestmark = pytest.mark.testbed

CMDLINE = "console=hvc0 quiet panic=-1 guest_action=script:console_rng guest_args={args}"
# name -> (capsule vm run arguments, the port's name or None, rng limit in bytes a second or None).
BOOTS = {
    "pci": (["--virtio-transport", "pci", "--console-device", "virtio", "--rng=1K"], PORT, 1024),
    "mmio": (["--virtio-transport", "mmio", "--console-device", "virtio", "--rng=1K"], PORT, 1024),
    # hvc0 alone into a file, an unlimited rng.
    "mmio_file": (["--virtio-transport", "mmio", "--console-device", "virtio", "--console", "file:{console}",
                   "--rng"], None, None),
}

# The host's end of the named port, run inside the testbed next to capsule: connect once the socket
# is there (while capsule runs), send a line and a blob, take the guest's answer, say bye, and
# wait for capsule to close the connection when the VM stops. Results go to a JSON file.
CLIENT = r'''
import hashlib, json, os, socket, sys, time
path, out, pid, blob_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
res = {}
s = None
while s is None:
    try:
        os.kill(pid, 0)
    except OSError:
        break
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
    except OSError:
        s.close()
        s = None
        time.sleep(0.05)
if s is not None:
    s.settimeout(600)
    blob = os.urandom(blob_size)
    res["sent_md5"] = hashlib.md5(blob).hexdigest()
    try:
        s.sendall(sys.argv[5].encode() + b"\n" + blob)
        buf = b""
        while b"\n" not in buf or len(buf.split(b"\n", 1)[1]) < blob_size:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        line, _, rest = buf.partition(b"\n")
        res.update(line=line.decode(errors="replace"), recv_bytes=len(rest), recv_md5=hashlib.md5(rest).hexdigest())
        s.sendall(b"bye\n")
        while s.recv(65536):
            pass
        res["closed"] = True
    except OSError as e:
        res["error"] = str(e)
json.dump(res, open(out, "w"))
'''


def boot_script(out, initrd):
    o, i = shlex.quote(str(out)), shlex.quote(str(initrd))
    lines = [
        f"out={o} initrd={i}",
        # Unix sockets cannot live on the repository's 9p share: the testbed's own /tmp.
        'socks=$(mktemp -d /tmp/virtio-console-rng.XXXXXX)',
        'now() { date +%s%N; }',
        f"client={shlex.quote(CLIENT)}",
    ]
    for name, (args, port, _) in BOOTS.items():
        args = [a.replace("{console}", f"{out}/{name}.console") for a in args]
        cmdline = CMDLINE.format(args=port or "-")
        quoted = " ".join(shlex.quote(a) for a in args + ["--cmdline", cmdline])
        if port:
            quoted += f' --console-port {shlex.quote(port + ",socket=")}"$socks/{name}.sock"'
        lines += [
            't=$(now)',
            f'capsule vm run --initrd "$initrd" {quoted} >"$out/{name}.out" 2>"$out/{name}.err" </dev/null & pid=$!',
        ]
        if port:
            lines.append(f'python3 -c "$client" "$socks/{name}.sock" "$out/{name}.client" $pid {BLOB} '
                         f'{shlex.quote(LINE)} 2>"$out/{name}.client-err"')
        lines += [
            f'wait $pid; echo $? >"$out/{name}.rc"; echo $((($(now) - t) / 1000000)) >"$out/{name}.ms"',
            f'if [ -e "$socks/{name}.sock" ]; then echo yes >"$out/{name}.sock-left"; fi',
        ]
    # stdin reaches the guest through hvc0: feed a line once the guest waits for it.
    lines += [
        'fifo=$(mktemp -u /tmp/virtio-console-in.XXXXXX); mkfifo "$fifo"',
        'capsule vm run --initrd "$initrd" --console-device virtio --cmdline "console=hvc0 quiet panic=-1 '
        'guest_action=read" <"$fifo" >"$out/read.out" 2>"$out/read.err" & pid=$!',
        'exec 3>"$fifo"',
        'while kill -0 $pid 2>/dev/null && ! grep -q "guest: waiting for a line" "$out/read.out"; do sleep 0.1; done',
        f"(echo {shlex.quote(LINE_IN)} >&3) 2>/dev/null; exec 3>&-",
        'wait $pid; echo $? >"$out/read.rc"; rm -f "$fifo"',
        'rm -rf "$socks"',
    ]
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(self, out, name):
        def read(ext):
            p = out / f"{name}.{ext}"
            return p.read_text(errors="replace") if p.exists() else ""
        self.name = name
        self.rc = int(read("rc") or -1)
        self.stdout = read("out").replace("\r", "")
        self.stderr = read("err")
        self.console = read("console").replace("\r", "")
        self.client = json.loads(read("client") or "{}")
        self.client_err = read("client-err")
        self.sock_left = read("sock-left").strip() == "yes"

    @property
    def text(self):
        return self.stdout or self.console

    def guest(self, key):
        m = re.search(rf"^guest: {re.escape(key)}=(.*)$", self.text, re.M)
        assert m, f"{self.name}: no 'guest: {key}=' line:\n{self.tail()}"
        return m.group(1)

    def tail(self):
        return f"exit {self.rc}\n--- console (last 30 lines)\n" + "\n".join(self.text.splitlines()[-30:]) + \
            f"\n--- stderr\n{self.stderr}\n--- client\n{self.client} {self.client_err}"


@pytest.fixture(scope="module")
def boots(request):
    r = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    out, r, found = nested.run("virtio-console-rng", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in [*BOOTS, "read"]}, timeout=1200,
                               env={"TESTBED_VERBOSE": "1"})
    try:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_virtio_console_rng] testbed exit {r.returncode}; boot wall times (ms): " +
                  ", ".join(f"{p.stem}={p.read_text().strip()}" for p in sorted(out.glob("*.ms"))))
        assert r.returncode == 0, r.stdout + r.stderr
        yield found
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("name", BOOTS)
def test_guest_runs_with_hvc0_as_its_console(boots, name):
    b = boots[name]
    assert b.rc == 0, b.tail()
    assert "guest: hello from inside a capsule micro-VM (Linux 6.1" in b.text, b.tail()
    assert "guest: script console_rng exit 0" in b.text, b.tail()
    assert "console=hvc0" in b.guest("cmdline").split(), b.tail()
    assert b.stderr == "", b.stderr


def test_stdin_reaches_the_guest_through_hvc0(boots):
    b = boots["read"]
    assert b.rc == 0, b.tail()
    assert f"guest: read '{LINE_IN}'" in b.stdout, b.tail()
    assert b.stderr == "", b.stderr


def test_hvc0_output_goes_to_the_console_file(boots):
    b = boots["mmio_file"]
    assert b.stdout == "", b.stdout
    assert "guest: script console_rng exit 0" in b.console, b.tail()


@pytest.mark.parametrize("name", [n for n, (_, port, _) in BOOTS.items() if port])
def test_named_port_carries_data_both_ways(boots, name):
    b = boots[name]
    assert re.fullmatch(r"/dev/vport\d+p\d+", b.guest("port_dev")), b.tail()
    # Host to guest: the line and the blob, as sent.
    assert b.guest("port_line") == LINE, b.tail()
    assert b.guest("port_in_bytes") == str(BLOB), b.tail()
    assert b.guest("port_in_md5") == b.client.get("sent_md5"), b.tail()
    # Guest to host: the answer and the guest's blob, as the guest wrote them.
    assert b.client.get("line") == f"pong {LINE}", b.tail()
    assert b.client.get("recv_bytes") == BLOB, b.tail()
    assert b.client.get("recv_md5") == b.guest("port_out_md5"), b.tail()
    assert b.guest("port_ack") == "bye", b.tail()
    # capsule closed the client when the VM stopped, and removed the socket.
    assert b.client.get("closed"), b.tail()
    assert not b.sock_left


@pytest.mark.parametrize("name", BOOTS)
def test_hwrng_gives_bytes(boots, name):
    b = boots[name]
    assert "virtio_rng" in b.guest("rng_current"), b.tail()
    assert b.guest("hwrng_bytes") == "1024", b.tail()
    # 1024 random bytes hold about 4 zeros; all but a few are not zero.
    assert int(b.guest("hwrng_nonzero")) > 1000, b.tail()
    assert b.guest("hwrng_4k_bytes") == "4096", b.tail()


@pytest.mark.parametrize("name", [n for n, (_, _, limit) in BOOTS.items() if limit])
def test_hwrng_rate_limit(boots, name):
    """At 1 KiB/s, with at most one second's worth in the bucket, 4 KiB take at least 3 s; generous
    bounds for the testbed's loaded nested guest clock."""
    b = boots[name]
    cs = int(b.guest("hwrng_4k_cs"))
    assert 270 <= cs <= 6000, f"{name}: 4 KiB took {cs / 100:.2f} s\n{b.tail()}"
