"""virtio-blk with a stock Linux guest, over both transports (--virtio-transport pci and mmio): one
boot per transport with four disks, the guest running tests/guest/blk.sh (busybox) whose results
come back as `guest: key=value` lines, and the images checked from the host afterwards:
- vda: ext2 made and mounted by the guest (the ext4 driver), two files written, fsynced (a flush),
  read back after a remount, and read again on the host with debugfs; two queues (queues=2);
- vdb: read-only, an ext2 image the host made: the guest reads its file, cannot create one nor
  write the device, and the image's checksum does not change;
- vdc: eight parallel dd jobs with O_DIRECT, then a discard (blkdiscard) and a write-zeroes
  (BLKZEROOUT) whose zeros and freed blocks the host sees; a serial of exactly 20 bytes;
- vdd: opened with O_DIRECT (direct) on the repository's 9p file system, its size not a multiple
  of 512: aligned and unaligned guest O_DIRECT buffers, and the block size that makes Linux align.
Then bad settings, each a one-line error naming the disk and exit status 1.

Everything happens in ONE testbed run (tests/testbed/run), each boot writing its output, exit
status and images under build/testbed/; every test then asserts on one boot's results."""
import hashlib
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

import nested

import stuck

REPO = pathlib.Path(__file__).resolve().parents[2]
STUCK = REPO / "tests" / "testbed" / "stuck.py"
MIB = 1 << 20

pytestmark = pytest.mark.testbed

TRANSPORTS = ["pci", "mmio"]
PATTERN = "capsule read-only pattern"
SERIALS = {"vda": "capsule-a", "vdb": "ro-b", "vdc": "12345678901234567890", "vdd": ""}
SIZES = {"vda": 32 * MIB, "vdb": 4 * MIB, "vdc": 16 * MIB, "vdd": 8 * MIB}
D_TAIL = 100  # vdd's image is 100 bytes longer than whole sectors: the guest does not see them
CMDLINE = "console=ttyS0 panic=-1 guest_action=script:blk"
BOOT_LIMIT = 480  # seconds; a boot takes 2-4 minutes in the TCG testbed on a busy machine
# name -> the capsule vm run arguments of a settings error, and what its one line must say
BAD = {
    "missing": (["--disk", "/nonexistent/disk.img"],
                "disk[0]: cannot open /nonexistent/disk.img: No such file or directory"),
    "second": (["--disk", "{out}/pci-a.img", "--disk", "/nonexistent/second.img"],
               "disk[1]: cannot open /nonexistent/second.img: No such file or directory"),
    "serial": (["--disk", "{out}/pci-d.img,serial=abcdefghijklmnopqrstu"],
               "disk[0]: serial `abcdefghijklmnopqrstu` is longer than 20 bytes"),
    "directory": (["--disk", "/tmp,ro"], "disk[0]: /tmp is not a regular file or a block device"),
}


def boot_script(out, initrd):
    """The shell command run in the testbed: both boots, then the bad settings."""
    o, i = shlex.quote(str(out)), shlex.quote(str(initrd))
    lines = [
        f"out={o} initrd={i}",
        "boot() {",
        "        t=$1; d=/tmp/blk-$t; mkdir -p $d/broot",
        "        truncate -s 32M $d/a.img",
        f"        echo {shlex.quote(PATTERN)} >$d/broot/pattern.txt",
        "        mke2fs -q -F -t ext2 -d $d/broot $d/b.img 4M >/dev/null 2>&1",
        "        truncate -s 16M $d/c.img",
        f"        truncate -s {8 * MIB + D_TAIL} $out/$t-d.img",
        "        md5sum <$d/b.img >$out/$t.b-before",
        "        capsule --debug vm run --virtio-transport $t --initrd \"$initrd\" --cpus 2 --memory 512M "
        f"--cmdline {shlex.quote(CMDLINE)} "
        f"--disk $d/a.img,serial={SERIALS['vda']},queues=2 --disk $d/b.img,ro,serial={SERIALS['vdb']} "
        f"--disk $d/c.img,serial={SERIALS['vdc']} --disk $out/$t-d.img,direct "
        ">$out/$t.out 2>$out/$t.err </dev/null & pid=$!",
        # A boot that hangs leaves what its threads were doing for the report (tests/testbed/stuck.py),
        # and the other boots run; one that survives SIGKILL is not waited for.
        f"        if python3 {shlex.quote(str(STUCK))} $pid {BOOT_LIMIT} $out/$t.stacks $out/$t.out; [ $? -lt 2 ]; then",
        "                wait $pid; echo $? >$out/$t.rc",
        "        else",
        "                echo -1 >$out/$t.rc",
        "        fi",
        "        md5sum <$d/b.img >$out/$t.b-after",
        "        stat -c %b $d/c.img >$out/$t.c-blocks",
        "        cp $d/a.img $out/$t-a.img && cp $d/c.img $out/$t-c.img && rm -rf $d",
        "}",
        *(f"boot {t}" for t in TRANSPORTS),
        "bad() {",
        '        name=$1; shift',
        '        capsule vm run --initrd "$initrd" "$@" >$out/$name.out 2>$out/$name.err </dev/null',
        "        echo $? >$out/$name.rc",
        "}",
    ]
    for name, (args, _) in BAD.items():
        lines.append(f"bad {name} " + " ".join(a.replace("{out}", "$out") for a in args))
    # Nothing of a refused VM stays behind.
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
        return p.read_text(errors="replace") if p.exists() else ""

    def guest(self, key):
        """The value of a `guest: key=value` line from blk.sh."""
        m = re.search(rf"^guest: {re.escape(key)}=(.*)$", self.stdout, re.M)
        assert m, f"{self.name}: no 'guest: {key}=' line:\n{self.tail()}"
        return m.group(1).strip()

    def disk(self, dev):
        """/sys/block/<dev> as blk.sh reported it: {size, ro, serial, queues, lbs, cache, ...}."""
        return dict(item.split(":", 1) for item in self.guest(f"disk_{dev}").split())

    def image(self, letter):
        return self.out / f"{self.name}-{letter}.img"

    def tail(self):
        return f"exit {self.rc}\n--- console (last 40 lines)\n" + \
            "\n".join(self.stdout.splitlines()[-40:]) + f"\n--- stderr\n{self.stderr[-3000:]}" + \
            stuck.report_tail(self.out / f"{self.name}.stacks")


@pytest.fixture(scope="module")
def kernel_dir():
    r = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    return pathlib.Path(r.stdout.strip())


@pytest.fixture(scope="module")
def boots(request, kernel_dir):
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    out, r, found = nested.run("virtio-blk", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in [*TRANSPORTS, *BAD]}, timeout=1500,
                               env={"TESTBED_TIMEOUT": "1400"})
    try:
        banner = [line for line in r.stderr.splitlines() if line.startswith("testbed: running")]
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_virtio_blk] {' / '.join(banner) or 'no testbed banner'}; testbed exit {r.returncode}")
        assert r.returncode == 0, r.stdout + r.stderr
        yield found, out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def debugfs_cat(image, path):
    r = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def md5(data):
    return hashlib.md5(data).hexdigest()


@pytest.fixture(params=TRANSPORTS)
def boot(request, boots):
    b = boots[0][request.param]
    assert b.rc == 0, b.tail()
    assert "guest: script blk exit 0" in b.stdout, b.tail()
    return b


def test_every_disk_with_its_size_serial_and_queues(boot):
    for dev, serial in SERIALS.items():
        d = boot.disk(dev)
        assert int(d["size"]) * 512 == SIZES[dev], (dev, d)
        assert d["serial"] == serial, (dev, d)
        assert d["cache"] == "write_back", (dev, d)  # VIRTIO_BLK_F_FLUSH: the guest sends flushes
    assert boot.disk("vda")["queues"] == "2"
    assert boot.disk("vdc")["queues"] == "1"


def test_transport_is_the_one_asked_for(boot):
    mmio = "virtio_mmio.device=" in boot.stdout
    assert mmio == (boot.name == "mmio"), boot.tail()
    assert re.search(r"virtio_blk virtio\d: \[vda\] 65536 512-byte logical blocks", boot.stdout), boot.tail()


def test_ext2_files_read_back_in_the_guest_and_on_the_host(boot):
    assert boot.guest("vda_hello") == "hello from the guest on vda"
    big = boot.guest("vda_big_md5")
    assert re.fullmatch(r"[0-9a-f]{32}", big) and big == boot.guest("vda_big_md5_reread")
    image = boot.image("a")
    assert debugfs_cat(image, "/hello.txt") == b"hello from the guest on vda\n"
    data = debugfs_cat(image, "/big")
    assert len(data) == 4 * MIB and md5(data) == big


def test_flush_reaches_the_device(boot):
    """fsync on ext2 sends a flush: the guest's count of completed flushes for vda."""
    assert int(boot.guest("vda_flushes")) > 0


def test_readonly_disk_refuses_writes(boot):
    d = boot.disk("vdb")
    assert d["ro"] == "1" and d["discard"] == "0" and d["zeroes"] == "0", d
    assert boot.guest("vdb_mount") == "ro"
    assert boot.guest("vdb_pattern") == PATTERN
    assert boot.guest("vdb_create").startswith("failed") and "Read-only file system" in boot.guest("vdb_create")
    write = boot.guest("vdb_write")
    assert write.startswith("failed") and re.search(r"Operation not permitted|Read-only|Permission denied|I/O error",
                                                    write), write
    before, after = boot.read("b-before").split()[0], boot.read("b-after").split()[0]
    assert before == after


def test_parallel_dd_jobs(boot):
    image = boot.image("c").read_bytes()
    for i in range(8):
        wrote, read, rc = boot.guest(f"vdc_job{i}").split()
        assert rc == "dd_exit:0" and wrote == read, boot.guest(f"vdc_job{i}")
        if i not in (4, 6):  # discarded and zeroed afterwards
            assert md5(image[i * MIB:(i + 1) * MIB]) == wrote, f"MiB {i} on the host"


def test_discard_and_write_zeroes_seen_from_the_host(boot):
    d = boot.disk("vdc")
    assert int(d["discard"]) > 0 and int(d["zeroes"]) > 0, d
    assert boot.guest("vdc_discard") == "ok" and boot.guest("vdc_zeroout") == "ok"
    assert int(boot.guest("vdc_discards")) > 0
    assert boot.guest("vdc_mib4") == boot.guest("zeros_1m")
    assert boot.guest("vdc_mib6") == boot.guest("zeros_512k")
    image = boot.image("c").read_bytes()
    assert image[4 * MIB:5 * MIB] == bytes(MIB)
    assert image[6 * MIB:6 * MIB + 512 * 1024] == bytes(512 * 1024)
    assert image[6 * MIB + 512 * 1024:7 * MIB] != bytes(512 * 1024)
    # The discarded MiB was punched out of the image: of the 8 MiB written, at most 7 stay allocated.
    assert int(boot.read("c-blocks")) * 512 <= 7 * MIB, boot.read("c-blocks")


def test_direct_disk_aligns_and_takes_unaligned_buffers(boot):
    d = boot.disk("vdd")
    m = re.search(r"disk\[3\]: O_DIRECT alignment: buffers (\d+), offsets (\d+)", boot.stderr)
    assert m, boot.stderr
    # Linux aligns to the block size capsule offers: O_DIRECT's offset alignment (512 to 4096).
    assert int(d["lbs"]) == min(max(int(m.group(2)), 512), 4096), (d, m.group(0))
    assert boot.guest("vdd_aligned") == "ok" and boot.guest("vdd_unaligned") == "ok"
    assert boot.guest("vdd_buffered") == "0"
    if int(m.group(1)) > 512:
        assert "disk[3]: a request not aligned for O_DIRECT goes through the page cache" in boot.stderr
    image = boot.image("d").read_bytes()
    assert len(image) == 8 * MIB + D_TAIL
    assert image[:65536] == b"\x5a" * 65536 and image[65536:131072] == b"\xa5" * 65536
    assert image[256 * 512:257 * 512] == b"through the guest page cache".ljust(512, b"\0")
    assert (f"disk[3]: the size of {boot.image('d')} is not a multiple of 512 bytes: the guest does not see its "
            f"last {D_TAIL}") in boot.stderr


@pytest.mark.parametrize("name", BAD)
def test_bad_settings_one_line_error(boots, name):
    b = boots[0][name]
    assert b.rc == 1, b.tail()
    lines = b.stderr.strip().splitlines()
    assert len(lines) == 1 and BAD[name][1] in lines[0], b.stderr
    assert b.stdout == ""


def test_nothing_left_behind(boots):
    assert (boots[1] / "leftover").read_text().strip() == "0"
