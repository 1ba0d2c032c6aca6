"""virtio-net over a tap (--net tap) with a stock Linux guest running tests/guest/net.sh, whose
results come back as `guest: key=value` lines; the host's side (inside the testbed) gives the tap
10.0.0.1/24, the guest is 10.0.0.2. Boots:
- pci: a tap capsule creates and names (capsuleN): ping both ways, the offloads the guest's
  ethtool shows, 32 MiB guest -> host and host -> guest over TCP with both ends' MD5s, a host ->
  guest connection; the tap is gone after the VM exits;
- mmio: the same over virtio-mmio, a tap capsule creates under the name given, with mac=;
- mq: --cpus 2 on an existing persistent multiqueue tap with queues=2: iperf3 streams from both
  vCPUs both ways use both queue pairs (ethtool -S); the tap, not capsule's, is still there after;
- netns: tap=NAME,netns=/run/netns/capnet: the tap is in that namespace and not the testbed's,
  and traffic flows there;
- kill: capsule killed with SIGKILL while the guest runs: its tap is gone all the same.
Then bad settings the VMM refuses: a one-line error naming the NIC, no capsule and no tap left.

Everything happens in ONE testbed run (tests/testbed/run); every test then asserts on one boot's
results."""
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

import nested

pytestmark = pytest.mark.testbed

REPO = pathlib.Path(__file__).resolve().parents[2]
MIB = 32  # each way, per transfer
BOOT_LIMIT = 480  # seconds; a boot takes 1-3 minutes in the TCG testbed on a busy machine
CMDLINE = "console=ttyS0 panic=-1 loglevel=1 guest_action=script:net guest_args="
MAC = "52:54:00:ca:b5:01"

# name -> (transport, --net value, tap name or "" for capsule's own capsuleN, guest mode, netns)
BOOTS = {
    "pci": ("pci", "tap", "", "basic", ""),
    "mmio": ("mmio", f"tap=ctapm,mac={MAC}", "ctapm", "basic", ""),
    "mq": ("pci", "tap=ctapq,queues=2", "ctapq", "mq", ""),
    "netns": ("pci", "tap=ctapn,netns=/run/netns/capnet", "ctapn", "basic", "capnet"),
    "kill": ("pci", "tap=ctapk", "ctapk", "hold", ""),
}
# name -> the --net value the VMM refuses, and what its one line must say
BAD = {
    "not-a-netns": ("tap=ctapb,netns=/proc/self/ns/uts", "net[0]: tap `ctapb`: netns /proc/self/ns/uts: not a network namespace"),
    "not-a-tap": ("tap=lo", "net[0]: tap `lo`: cannot attach it (not a tap"),
}


def boot_script(out, initrd):
    o, i = shlex.quote(str(out)), shlex.quote(str(initrd))
    lines = [
        f"out={o} initrd={i}",
        "peer='/usr/bin/python3 tests/testbed/net_peer.py'",
        # The testbed's kernel has no POSIX timers: busybox ping sends one echo and never times
        # out, so each is one echo under busybox timeout (which sleeps).
        "ping1() { inns \"$1\" /bin/busybox timeout 5 /bin/busybox ping -c 1 -s $2 10.0.0.2 >/dev/null 2>&1; }",
        f"head -c {MIB << 20} /dev/urandom >/tmp/h2g && md5sum </tmp/h2g | cut -d' ' -f1 >$out/h2g.md5",
        # ip netns exec NS CMD in a namespace, CMD alone without one.
        'inns() { if [ -n "$1" ]; then ip netns exec "$@"; else shift; "$@"; fi; }',
        "until_true() { n=$1; shift; w=0; until \"$@\"; do [ $w -lt $n ] || return 1; sleep 1; w=$((w + 1)); done; }",
        "has_tap() { inns \"$1\" test -e /sys/class/net/$2; }",
        "gone() { ! has_tap \"$1\" \"$2\"; }",
        # A capsuleN tap that was not there before the boot.
        "new_tap() { for f in /sys/class/net/capsule*; do [ -e \"$f\" ] && ! grep -qx \"${f##*/}\" $out/taps-before && "
        "{ echo \"${f##*/}\"; return 0; }; done; return 1; }",
        "ready() { grep -q 'guest: net ready' $out/$name.out; }",
        "waiting() { grep -q 'guest: waiting for the host' $out/$name.out; }",
        "held() { grep -q 'guest: net hold' $out/$name.out; }",
        "boot() {",
        "        name=$1 t=$2 net=$3 tap=$4 mode=$5 ns=$6",
        "        ls /sys/class/net >$out/taps-before",
        '        if [ "$mode" = basic ]; then',
        "                inns \"$ns\" $peer sink 5001 $out/$name.g2h & s1=$!",
        "                inns \"$ns\" $peer source 5002 /tmp/h2g & s2=$!",
        "        fi",
        '        if [ "$mode" = mq ]; then',
        "                ip tuntap add dev $tap mode tap multi_queue vnet_hdr",
        "                ip addr add 10.0.0.1/24 dev $tap && ip link set $tap up",
        "                iperf3 -s -p 5201 -D -I $out/iperf-a.pid && iperf3 -s -p 5202 -D -I $out/iperf-b.pid",
        "        fi",
        "        cpus=1; [ \"$mode\" = mq ] && cpus=2",
        "        capsule vm run --virtio-transport $t --initrd \"$initrd\" --cpus $cpus --memory 512M "
        f"--cmdline \"{CMDLINE}$mode,{MIB}\" --net \"$net\" >$out/$name.out 2>$out/$name.err </dev/null & pid=$!",
        '        if [ -z "$tap" ]; then until_true 120 new_tap >/dev/null && tap=$(new_tap); fi',
        '        until_true 120 has_tap "$ns" "$tap" && echo "$tap" >$out/$name.tap',
        '        [ "$mode" = mq ] || { inns "$ns" ip addr add 10.0.0.1/24 dev $tap && inns "$ns" ip link set $tap up; }',
        '        if [ -n "$ns" ]; then has_tap "" "$tap" && echo yes >$out/$name.in-root || echo no >$out/$name.in-root; fi',
        '        if [ "$mode" = basic ] && until_true 300 ready; then',
        "                n=0; for s in 56 1400 56; do ping1 \"$ns\" $s && n=$((n + 1)); done",
        "                echo $n >$out/$name.ping",
        # The guest listens for this once its transfers are done.
        '                until_true 300 waiting && inns "$ns" $peer poke 10.0.0.2 5003',
        "        fi",
        '        if [ "$mode" = hold ] && until_true 300 held; then',
        "                kill -KILL $pid",
        "        fi",
        f"        i=0; while kill -0 $pid 2>/dev/null && [ $i -lt {BOOT_LIMIT} ]; do sleep 1; i=$((i + 1)); done",
        "        kill -KILL $pid 2>/dev/null",
        "        wait $pid; echo $? >$out/$name.rc",
        # The tap of a killed capsule goes when the kernel has closed its fds.
        '        [ "$mode" = mq ] || until_true 10 gone "$ns" "$tap" || true',
        '        has_tap "$ns" "$tap" && echo present >$out/$name.after || echo gone >$out/$name.after',
        "        [ -z \"${s1:-}\" ] || { kill $s1 $s2 2>/dev/null; wait $s1 $s2 2>/dev/null; s1=; }",
        '        if [ "$mode" = mq ]; then',
        "                kill $(cat $out/iperf-a.pid) $(cat $out/iperf-b.pid)",
        "                ip tuntap del dev $tap mode tap multi_queue",
        "        fi",
        "}",
        "ip netns add capnet",
    ]
    for name, (t, net, tap, mode, ns) in BOOTS.items():
        lines.append(f"boot {name} {t} {shlex.quote(net)} '{tap}' {mode} '{ns}'")
    lines += [
        "ip netns del capnet",
        "bad() {",
        "        name=$1; shift",
        "        ls /sys/class/net >$out/$name.taps-before",
        '        capsule vm run --initrd "$initrd" --net "$1" >$out/$name.out 2>$out/$name.err </dev/null',
        "        echo $? >$out/$name.rc",
        "        ls /sys/class/net >$out/$name.taps-after",
        "}",
    ]
    for name, (net, _) in BAD.items():
        lines.append(f"bad {name} {shlex.quote(net)}")
    lines.append("pgrep -c -x capsule >$out/leftover || true")
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(self, out, name):
        self.out, self.name = out, name
        self.rc = int(self.read("rc") or -1)
        self.stdout = self.read("out").replace("\r", "")
        self.stderr = self.read("err")

    def read(self, ext):
        p = self.out / f"{self.name}.{ext}"
        return p.read_text(errors="replace").strip() if p.exists() else ""

    def guest(self, key):
        """The value of a `guest: key=value` (or `guest: key value`) line from net.sh."""
        m = re.search(rf"^guest: {re.escape(key)}[= ](.*)$", self.stdout, re.M)
        assert m, f"{self.name}: no 'guest: {key}' line:\n{self.tail()}"
        return m.group(1).strip()

    def tail(self):
        return f"exit {self.rc}\n--- console (last 40 lines)\n" + "\n".join(self.stdout.splitlines()[-40:]) + \
            f"\n--- stderr\n{self.stderr[-3000:]}"


@pytest.fixture(scope="module")
def boots(request):
    r = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    out, r, found = nested.run("virtio-net", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in [*BOOTS, *BAD]}, timeout=2700,
                               env={"TESTBED_TIMEOUT": "2600"}, expected={"kill"})
    try:
        banner = [line for line in r.stderr.splitlines() if line.startswith("testbed: running")]
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_virtio_net] {' / '.join(banner) or 'no testbed banner'}; testbed exit {r.returncode}")
        assert r.returncode == 0, r.stdout + r.stderr
        yield found, out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def finished(boots, name):
    b = boots[0][name]
    assert b.rc == 0, b.tail()
    assert "guest: script net exit 0" in b.stdout, b.tail()
    return b


@pytest.fixture(params=["pci", "mmio", "netns"])
def basic(request, boots):
    return finished(boots, request.param)


def test_transport_is_the_one_asked_for(basic):
    assert ("virtio_mmio.device=" in basic.stdout) == (basic.name == "mmio"), basic.tail()
    assert basic.guest("driver") == "virtio_net"


def test_ping_both_ways(basic):
    assert basic.guest("ping") == "5 of 5"
    assert basic.read("ping") == "3", basic.tail()


def test_tcp_transfers_arrive_whole(basic):
    """32 MiB each way: what the host's sink counted and hashed is what the guest sent, and the
    guest's hash of what it received is the host's file's."""
    assert basic.guest("g2h_rc").startswith("0 "), basic.tail()
    assert basic.read("g2h") == f"{MIB << 20} {basic.guest('g2h_md5')}"
    assert basic.guest("h2g_rc").startswith("0 "), basic.tail()
    md5, size = basic.guest("h2g_md5").split(" bytes=")
    assert (md5, int(size)) == (basic.out.joinpath("h2g.md5").read_text().strip(), MIB << 20)
    assert basic.guest("host_done_rc") == "0"


def test_offloads_negotiated(basic):
    """The tap's offloads reach the guest: checksums and TSO on."""
    for feature in ("tx-checksumming", "rx-checksumming", "scatter-gather", "tcp-segmentation-offload"):
        assert basic.guest(f"offload {feature}") == "on", (feature, basic.tail())


def test_capsules_tap_is_named_and_gone_after_exit(boots):
    pci, mmio = finished(boots, "pci"), finished(boots, "mmio")
    assert re.fullmatch(r"capsule\d+", pci.read("tap")), pci.read("tap")
    assert mmio.read("tap") == "ctapm"
    assert pci.read("after") == "gone" and mmio.read("after") == "gone"


def test_mac_from_the_setting(boots):
    mmio, pci = finished(boots, "mmio"), finished(boots, "pci")
    assert mmio.guest("mac") == MAC
    # Without mac=: a locally administered unicast address.
    first = int(pci.guest("mac").split(":")[0], 16)
    assert first & 2 and not first & 1, pci.guest("mac")


def test_multiqueue_uses_both_queue_pairs(boots):
    b = finished(boots, "mq")
    assert b.guest("combined") == "2", b.tail()
    for line in ("iperf", "iperf-R"):
        value = b.guest(line)
        assert value.startswith("rc=0,0 "), (line, value)
        assert len(value.split()) == 3, (line, value)  # both clients' receiver summaries
    stats = {m.group(1): int(m.group(2)) for m in re.finditer(r"^guest: stat (\w+)=(\d+)$", b.stdout, re.M)}
    for q in ("rx_queue_0_packets", "rx_queue_1_packets", "tx_queue_0_packets", "tx_queue_1_packets"):
        assert stats.get(q, 0) > 100, (q, stats)


def test_existing_tap_is_left_in_place(boots):
    b = finished(boots, "mq")
    assert b.read("tap") == "ctapq" and b.read("after") == "present"


def test_tap_in_a_network_namespace(boots):
    b = finished(boots, "netns")
    assert b.read("tap") == "ctapn", b.tail()
    assert b.read("in-root") == "no"
    assert b.read("after") == "gone"


def test_tap_gone_after_kill_9(boots):
    b = boots[0]["kill"]
    assert "guest: net hold" in b.stdout, b.tail()
    assert b.rc == 128 + 9 or b.rc == -9 or b.rc == 137, b.tail()
    assert b.read("tap") == "ctapk"
    assert b.read("after") == "gone"


@pytest.mark.parametrize("name", BAD)
def test_bad_settings_one_line_error(boots, name):
    b = boots[0][name]
    assert b.rc == 1, b.tail()
    lines = b.stderr.strip().splitlines()
    assert len(lines) == 1 and BAD[name][1] in lines[0], b.stderr
    assert b.read("taps-before") == b.read("taps-after")


def test_nothing_left_behind(boots):
    assert (boots[1] / "leftover").read_text().strip() == "0"
