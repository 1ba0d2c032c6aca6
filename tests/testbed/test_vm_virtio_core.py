"""The virtio core and both transports as a stock Linux guest sees them: capsule boots the busybox
guest (tests/testbed/mkguestinitramfs) with virtio devices over virtio-mmio and over virtio-pci,
and the guest script tests/guest/virtio_core.sh lists every virtio device (id, driver, status),
reads through each (/dev/vd*, /dev/hwrng), unbinds and rebinds every driver (a device reset
and a second setup) and reads again.

The "many" boot has more virtio-mmio devices than capsule has free ISA interrupt lines, so some
share a line: each must still be found and answer.

All boots happen in ONE testbed run (tests/testbed/run); each test asserts on one boot."""
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

import nested

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.testbed

CMDLINE = "console=ttyS0 panic=-1 guest_action=script:virtio_core guest_args=rebind"
MANY_DISKS = 9
BOOT_TIMEOUT = 420  # seconds; a boot and its script take 1-3 minutes in a busy testbed
# name -> capsule vm run arguments; {img} is a folder of empty disk images.
BOOTS = {
    "mmio": ["--virtio-transport", "mmio", "--rng", "--disk", "{img}/a.img", "--disk", "{img}/b.img,ro"],
    "pci": ["--virtio-transport", "pci", "--rng", "--disk", "{img}/a.img", "--disk", "{img}/b.img,ro"],
    "many": ["--virtio-transport", "mmio", "--rng"] +
            [a for i in range(MANY_DISKS) for a in ("--disk", f"{{img}}/m{i}.img")],
}
# Device ids (virtio 1.2, 5): block 2, entropy 4.
BLK, RNG = "0x0002", "0x0004"
# The 4 KiB windows and edge-triggered ISA GSIs capsule hands out, in order.
MMIO_BASE = 0xC0000000
MMIO_GSIS = [5, 6, 7, 10, 11, 14, 15, 3]


def boot_script(out, initrd):
    o, i = shlex.quote(str(out)), shlex.quote(str(initrd))
    lines = [
        f"out={o} initrd={i} img={o}/img",
        'mkdir -p "$img"',
        'for n in a b m0 m1 m2 m3 m4 m5 m6 m7 m8; do truncate -s 4M "$img/$n.img"; done',
        'printf "capsule-disk-a" | dd of="$img/a.img" conv=notrunc 2>/dev/null',
    ]
    for name, args in BOOTS.items():
        quoted = " ".join(shlex.quote(a.replace("{img}", f"{out}/img")) for a in args)
        # Each boot is bounded, so that one that hangs fails its own tests only.
        lines.append(f'timeout -k 5 {BOOT_TIMEOUT} capsule vm run --initrd "$initrd" --memory 256M --cpus 2 --console file:"$out/{name}.out" '
                     f'--cmdline {shlex.quote(CMDLINE)} {quoted} >"$out/{name}.err" 2>&1 </dev/null; '
                     f'echo $? >"$out/{name}.rc"')
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(self, out, name):
        def read(ext):
            p = out / f"{name}.{ext}"
            return p.read_text(errors="replace") if p.exists() else ""
        self.name = name
        self.rc = int(read("rc") or -1)
        self.console = read("out").replace("\r", "")
        self.stderr = read("err")

    def lines(self, phase, kind):
        """The guest script's `virtio: PHASE KIND ...` lines, without the prefix."""
        prefix = f"virtio: {phase} {kind}"
        return [line[len(prefix):].strip() for line in self.console.splitlines() if line.startswith(prefix)]

    def devices(self, phase):
        """{device: (id, driver, status)} as the guest listed them."""
        found = {}
        for line in self.console.splitlines():
            m = re.match(rf"^virtio: {phase} (virtio\d+) id=(\S+) driver=(\S+) status=(\S+)$", line)
            if m:
                found[m.group(1)] = (m.group(2), m.group(3), int(m.group(4), 16))
        return found

    def reads(self, phase):
        out = {}
        for line in self.console.splitlines():
            m = re.match(rf"^virtio: {phase} read (\S+) bytes=(\d+)$", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def tail(self):
        return f"exit {self.rc}\n--- console (last 40 lines)\n" + \
            "\n".join(self.console.splitlines()[-40:]) + f"\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="module")
def boots():
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    budget = len(BOOTS) * (BOOT_TIMEOUT + 10) + 120
    out, r, found = nested.run("vm-virtio-core", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in BOOTS}, timeout=budget + 60,
                               env={"TESTBED_TIMEOUT": str(budget)})
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield found
    finally:
        shutil.rmtree(out, ignore_errors=True)


DRIVER_READY = 0x0F  # ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK


def check_devices(b, want):
    """want: the sorted device ids; every device bound, DRIVER_OK, and answering, before and after
    the rebind (a reset and a second setup)."""
    assert b.rc == 0, b.tail()
    assert "guest: script virtio_core exit 0" in b.console, b.tail()
    for phase in ("first", "again"):
        devs = b.devices(phase)
        assert sorted(d[0] for d in devs.values()) == want, f"{phase}: {devs}\n{b.tail()}"
        for name, (_, driver, status) in devs.items():
            assert driver in ("virtio_blk", "virtio_rng"), f"{phase}: {name} has no driver\n{b.tail()}"
            assert status == DRIVER_READY, f"{phase}: {name} status {status:#x}\n{b.tail()}"
        reads = b.reads(phase)
        assert reads.get("hwrng") == 64, f"{phase}: {reads}\n{b.tail()}"
        disks = sorted(k for k in reads if k.startswith("vd"))
        assert len(disks) == want.count(BLK), f"{phase}: {reads}\n{b.tail()}"
        assert all(reads[d] == 512 for d in disks), f"{phase}: {reads}\n{b.tail()}"


@pytest.mark.parametrize("name", ["mmio", "pci"])
def test_devices_bound_read_and_reset(boots, name):
    check_devices(boots[name], sorted([BLK, BLK, RNG]))


def test_mmio_announced_on_the_command_line(boots):
    b = boots["mmio"]
    params = re.findall(r"virtio_mmio\.device=(\S+)", b.console.split("Kernel command line:", 1)[-1].splitlines()[0])
    # Devices in init order (virtio-blk before virtio-rng), one window and one GSI each.
    assert params == [f"4K@{MMIO_BASE + i * 0x1000:#x}:{MMIO_GSIS[i]}" for i in range(3)], b.tail()
    # The user's command line comes after the devices', unchanged.
    assert re.search(r"^guest: cmdline=(virtio_mmio\.device=\S+ ){3}" + re.escape(CMDLINE) + "$", b.console,
                     re.M), b.tail()
    # Each device interrupts on its own edge-triggered IOAPIC line, and did interrupt.
    irqs = b.lines("again", "irq")
    assert len(irqs) == 3, b.tail()
    for line in irqs:
        gsi, counts = line.split(":", 1)
        assert int(gsi) in MMIO_GSIS[:3] and "IO-APIC" in counts and "edge" in counts, line
        assert sum(int(c) for c in counts.split() if c.isdigit()) > 0, line


def test_pci_devices_use_msix(boots):
    b = boots["pci"]
    assert "virtio_mmio.device=" not in b.console.split("Kernel command line:", 1)[-1].splitlines()[0]
    assert any("PCI-MSI" in line for line in b.lines("first", "irq")), b.tail()


def test_mmio_devices_sharing_interrupt_lines(boots):
    b = boots["many"]
    check_devices(b, sorted([BLK] * MANY_DISKS + [RNG]))
    assert len(re.findall(r"virtio_mmio\.device=", b.console.split("Kernel command line:", 1)[-1].splitlines()[0])) \
        == MANY_DISKS + 1
