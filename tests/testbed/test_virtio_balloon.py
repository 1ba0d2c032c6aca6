"""virtio-balloon with the stock Linux driver: capsule boots the busybox guest with 512 MiB and a
balloon; the guest script tests/guest/balloon.sh has memhog (tests/guest/memhog.c) take and write
some memory, free it, and then idles, printing MemTotal and MemAvailable every second. On the host
a sampler reads capsule's RSS (RssAnon + RssShmem of /proc/PID/status: guest RAM is a shared
memfd) four times a second, tagged with the guest's last phase.

- Free page reporting: the guest gives back what it freed without anyone asking, so capsule's RSS
  falls within seconds; the same boot without it keeps the memory (the control that shows the
  fall is the feature's).
- Inflating through the control channel (`capsule vm ctl SOCK balloon 256M`) lowers the guest's
  MemTotal and capsule's RSS; `balloon 0` gives the guest its memory back; `balloon-stats` shows
  the guest's statistics. Skipped while capsule has no control channel (--api-socket).

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
CAPSULE = REPO / "build" / "capsule"
MIB = 1024  # KiB

pytestmark = pytest.mark.testbed

CMDLINE = "console=ttyS0 quiet panic=-1 guest_action=script:balloon guest_args={mib},{idle}"
HOG = 256


def have_ctl():
    if not CAPSULE.exists():
        return False
    r = subprocess.run([str(CAPSULE), "vm", "--help"], capture_output=True, text=True)
    return "--api-socket" in r.stdout + r.stderr


CTL = have_ctl()

# name -> (capsule vm run arguments, MiB for memhog, idle seconds afterwards).
BOOTS = {
    "reporting": (["--balloon=free-page-reporting"], HOG, 12),
    "plain": (["--balloon"], HOG, 12),
}
if CTL:
    # Most of the guest's memory touched and freed first, so that the pages the balloon takes are
    # backed on the host; no reporting, so that only the balloon gives them back.
    BOOTS["ctl"] = (["--balloon", "--api-socket", "{sock}"], 384, 45)

# One python process samples a whole boot: under TCG, a shell loop that started awk, grep and
# date four times a second (or read files byte by byte with its own `read`) took a good part of
# a testbed vCPU beside the guest's. Times are /proc/uptime's, in ms, for samples and events alike.
SAMPLER = r'''
now() {
        read -r up _ </proc/uptime
        echo "${up%.*}${up#*.}0"
}
sample() {
        python3 -c '
import re, sys, time
pid, console = sys.argv[1], sys.argv[2]
phase, seen = "none", 0
while True:
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        break
    if "State:\tZ" in status:
        break
    rss = sum(int(m) for m in re.findall(r"^Rss(?:Anon|Shmem):\s+(\d+)", status, re.M))
    with open(console, "rb") as f:
        f.seek(seen)
        new = f.read()
    cut = new.rfind(b"\n") + 1
    seen += cut
    for m in re.finditer(rb"guest: phase=([a-z]+)", new[:cut]):
        phase = m.group(1).decode()
    with open("/proc/uptime") as f:
        ms = round(float(f.read().split()[0]) * 1000)
    print(ms, rss, phase, flush=True)
    time.sleep(0.25)
' "$1" "$2"
}
wait_line() {
        while kill -0 "$1" 2>/dev/null && ! grep -q "$2" "$3"; do sleep 0.1; done
}
'''


def boot_script(out, initrd):
    o, i = shlex.quote(str(out)), shlex.quote(str(initrd))
    lines = [
        f"out={o} initrd={i}",
        # Unix sockets cannot live on the repository's 9p share: the testbed's own /tmp.
        'socks=$(mktemp -d /tmp/virtio-balloon.XXXXXX)',
        SAMPLER,
    ]
    for name, (args, mib, idle) in BOOTS.items():
        args = [a.replace("{sock}", f"$socks/{name}.sock") for a in args]
        quoted = " ".join(shlex.quote(a) if "$socks" not in a else f'"{a}"' for a in args)
        cmdline = shlex.quote(CMDLINE.format(mib=mib, idle=idle))
        lines += [
            f'capsule vm run --initrd "$initrd" --memory 512M --cmdline {cmdline} {quoted} '
            f'>"$out/{name}.out" 2>"$out/{name}.err" </dev/null & pid=$!',
            f'sample $pid "$out/{name}.out" >"$out/{name}.samples" & sampler=$!',
        ]
        if name == "ctl":
            ctl = f'capsule vm ctl "$socks/{name}.sock"'
            lines += [
                f'wait_line $pid "guest: mem t=2 " "$out/{name}.out"',
                f'echo "$(now) inflate" >>"$out/{name}.events"',
                f'{ctl} balloon 256M >"$out/{name}.inflate" 2>&1; echo $? >"$out/{name}.inflate-rc"',
                f'wait_line $pid "guest: mem t=20 " "$out/{name}.out"',
                # The first answer asks the guest for fresh numbers; the second has them.
                f'{ctl} balloon-stats >"$out/{name}.stats-first" 2>&1; sleep 2',
                f'{ctl} balloon-stats >"$out/{name}.stats" 2>&1; echo $? >"$out/{name}.stats-rc"',
                f'echo "$(now) deflate" >>"$out/{name}.events"',
                f'{ctl} balloon 0 >"$out/{name}.deflate" 2>&1; echo $? >"$out/{name}.deflate-rc"',
                f'{ctl} balloon 1G >"$out/{name}.toobig" 2>&1; echo $? >"$out/{name}.toobig-rc"',
            ]
        lines += [f'wait $pid; echo $? >"$out/{name}.rc"; wait $sampler']
    lines.append('rm -rf "$socks"')
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(self, out, name):
        def read(ext):
            p = out / f"{name}.{ext}"
            return p.read_text(errors="replace") if p.exists() else ""
        self.name = name
        self.read = read
        self.rc = int(read("rc") or -1)
        self.stdout = read("out").replace("\r", "")
        self.stderr = read("err")
        # (ms, rss KiB, the guest's phase)
        self.samples = [(int(t), int(r), p) for t, r, p in (line.split() for line in read("samples").splitlines())]
        self.events = {e: int(t) for t, e in (line.split() for line in read("events").splitlines())}
        # The guest's idle seconds: (t, MemTotal KiB, MemAvailable KiB)
        self.mem = [tuple(map(int, m)) for m in
                    re.findall(r"^guest: mem t=(\d+) total_kb=(\d+) avail_kb=(\d+)$", self.stdout, re.M)]

    def guest(self, key):
        m = re.search(rf"^guest: {re.escape(key)}=(.*)$", self.stdout, re.M)
        assert m, f"{self.name}: no 'guest: {key}=' line:\n{self.tail()}"
        return m.group(1)

    def rss(self, phase):
        return [r for _, r, p in self.samples if p == phase]

    def tail(self):
        return f"exit {self.rc}\n--- console (last 30 lines)\n" + "\n".join(self.stdout.splitlines()[-30:]) + \
            f"\n--- stderr\n{self.stderr}\n--- samples: {len(self.samples)}"


@pytest.fixture(scope="module")
def boots(request):
    r = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    out, r, found = nested.run("virtio-balloon", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in BOOTS}, timeout=1500,
                               env={"TESTBED_VERBOSE": "1", "TESTBED_TIMEOUT": "1200"})
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield found
    finally:
        shutil.rmtree(out, ignore_errors=True)


def report(request, text):
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n[test_virtio_balloon] {text}")


@pytest.mark.parametrize("name", BOOTS)
def test_guest_runs_with_a_balloon(boots, name):
    b = boots[name]
    assert b.rc == 0, b.tail()
    assert "guest: script balloon exit 0" in b.stdout, b.tail()
    assert b.stderr == "", b.stderr
    # The driver bound: its feature bits as sysfs lists them (bit N is character N).
    features = b.guest("balloon_features")
    assert features[1] == "1", b.tail()  # VIRTIO_BALLOON_F_STATS_VQ
    assert features[5] == ("1" if name == "reporting" else "0"), b.tail()  # VIRTIO_BALLOON_F_REPORTING


def freed_drop(b):
    """capsule's RSS while the guest held memhog's memory, and its lowest in the 10 s after the guest
    freed it (with the seconds that took)."""
    held = max(b.rss("touched"), default=0)
    freed = [(t, r) for t, r, p in b.samples if p != "touched" and p != "boot" and p != "none"]
    assert held and freed, b.tail()
    t0 = freed[0][0]
    window = [(t, r) for t, r in freed if t - t0 <= 10000]
    low_t, low = min(window, key=lambda s: s[1])
    return held, low, (low_t - t0) / 1000


def test_free_page_reporting_lowers_rss_within_seconds(boots, request):
    b = boots["reporting"]
    held, low, secs = freed_drop(b)
    report(request, f"free page reporting: RSS {held // MIB} MiB with {HOG} MiB held, {low // MIB} MiB "
                    f"{secs:.1f} s after the guest freed it")
    assert held >= HOG * MIB, b.tail()
    assert low <= held - (HOG - 64) * MIB, f"RSS {held} -> {low} KiB\n{b.tail()}"


def test_without_reporting_freed_memory_stays_with_the_vm(boots, request):
    b = boots["plain"]
    held, low, _ = freed_drop(b)
    report(request, f"no reporting: RSS {held // MIB} MiB with {HOG} MiB held, {low // MIB} MiB after the free")
    assert held >= HOG * MIB, b.tail()
    assert low >= held - 64 * MIB, f"RSS {held} -> {low} KiB\n{b.tail()}"


def ctl_boot(boots):
    if not CTL:
        pytest.skip("capsule has no control channel yet (vm run --api-socket)")
    b = boots["ctl"]
    if "unknown command `balloon`" in b.read("inflate"):
        pytest.skip("the control channel has no balloon command yet")
    return b


def test_inflate_lowers_memtotal_and_rss_and_deflate_gives_it_back(boots, request):
    b = ctl_boot(boots)
    assert b.read("inflate-rc").strip() == "0", b.read("inflate")
    assert b.read("deflate-rc").strip() == "0", b.read("deflate")
    before = [total for t, total, _ in b.mem if t <= 2]
    during = [total for t, total, _ in b.mem if 12 <= t <= 20]
    after = [total for t, total, _ in b.mem if t >= 35]
    assert before and during and after, b.tail()
    rss_before = [r for t, r, _ in b.samples if t < b.events["inflate"]]
    rss_during = [r for t, r, _ in b.samples if b.events["inflate"] < t < b.events["deflate"]]
    report(request, f"balloon 256M: guest MemTotal {before[-1] // MIB} -> {min(during) // MIB} -> "
                    f"{after[-1] // MIB} MiB; capsule RSS {rss_before[-1] // MIB} -> {min(rss_during) // MIB} MiB")
    assert min(during) <= before[-1] - 250 * MIB, b.tail()
    assert after[-1] >= before[-1] - 4 * MIB, b.tail()
    assert min(rss_during) <= rss_before[-1] - 128 * MIB, b.tail()


def test_balloon_stats_and_a_target_too_big(boots, request):
    b = ctl_boot(boots)
    assert b.read("stats-rc").strip() == "0", b.read("stats")
    stats = json.loads(b.read("stats"))
    report(request, f"balloon-stats with the balloon at 256M: {json.dumps(stats)}")
    # The guest holds all it was asked for, and says so in fresh statistics.
    assert stats["target"] == stats["actual"] == 256 << 20, stats
    guest = stats["guest"]
    assert guest and guest["age-ms"] < 10000, stats
    assert 200 << 20 <= guest["total-memory"] <= 256 << 20, stats
    assert guest["free-memory"] <= guest["total-memory"], stats
    assert b.read("toobig-rc").strip() != "0", b.read("toobig")
    assert "1024 MiB is more than the VM's 512 MiB" in b.read("toobig"), b.read("toobig")
