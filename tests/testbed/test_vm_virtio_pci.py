"""The virtio-pci transport with a stock Linux guest: capsule vm run --rng (PCI is the default
transport) boots the busybox guest, whose tests/guest/virtio_pci.sh reports the virtio PCI
function, the virtio device on it and its driver, its interrupts and bytes read from /dev/hwrng.
Two boots in ONE testbed run: with MSI-X (Linux's default), and with pci=nomsi, where the driver
falls back to INTx, routed by the DSDT's _PRT through the IOAPIC and acknowledged through the ISR."""
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

import nested

REPO = pathlib.Path(__file__).resolve().parents[2]
# loglevel=1: the kernel's own messages would interleave with the script's lines on the console.
CMDLINE = "console=ttyS0 loglevel=1 panic=-1 guest_action=script:virtio_pci"

pytestmark = pytest.mark.testbed

BOOTS = {
    "msix": ["--rng", "--cmdline", CMDLINE],
    "intx": ["--rng", "--cmdline", CMDLINE + " pci=nomsi"],
}


def boot_script(out, initrd):
    o, i = shlex.quote(str(out)), shlex.quote(str(initrd))
    lines = [f"out={o} initrd={i}"]
    for name, args in BOOTS.items():
        lines.append(f'capsule vm run --initrd "$initrd" {" ".join(map(shlex.quote, args))} '
                     f'>"$out/{name}.out" 2>"$out/{name}.err" </dev/null; echo $? >"$out/{name}.rc"')
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

    def lines(self, key):
        """The rest of every `guest: key ...` line of the script."""
        return [m.group(1) for m in re.finditer(rf"^guest: {re.escape(key)}[ =](.*)$", self.stdout, re.M)]

    def fields(self, key):
        """key=value pairs of the one `guest: key ...` line."""
        lines = self.lines(key)
        assert len(lines) == 1, f"{self.name}: {len(lines)} 'guest: {key}' lines\n{self.tail()}"
        return dict(w.split("=", 1) for w in lines[0].split() if "=" in w)

    def tail(self):
        return f"exit {self.rc}\n--- console (last 40 lines)\n" + \
            "\n".join(self.stdout.splitlines()[-40:]) + f"\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="module")
def boots():
    r = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    out, r, found = nested.run("vm-virtio-pci", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in BOOTS}, timeout=900,
                               env={"TESTBED_VERBOSE": "1", "TESTBED_TIMEOUT": "840"})
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield found
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("name", BOOTS)
def test_script_ran_and_vmm_was_quiet(boots, name):
    b = boots[name]
    assert b.rc == 0, b.tail()
    assert "guest: script virtio_pci exit 0" in b.stdout, b.tail()
    assert b.stderr == "", b.stderr


@pytest.mark.parametrize("name", BOOTS)
def test_pci_function_identifies_modern_virtio_rng(boots, name):
    b = boots[name]
    pci = b.fields("pci")
    assert pci["vendor"] == "0x1af4" and pci["device"] == "0x1044", b.tail()
    assert pci["revision"] == "0x01" and pci["class"] == "0xff0000", pci
    assert pci["subsystem"] == "0x1af4:0x1044", pci
    assert pci["driver"] == "virtio-pci", pci
    # BAR 0: 32 KiB of 32-bit memory in the PCI window below the ECAM.
    start, end, _ = (int(x, 16) for x in pci["resource0"].split(","))
    assert end - start + 1 == 0x8000 and 0xd0000000 <= start < 0xe0000000, pci


@pytest.mark.parametrize("name", BOOTS)
def test_virtio_device_is_bound_and_live(boots, name):
    b = boots[name]
    dev = b.fields("virtio")
    assert dev["device"] == "0x0004" and dev["vendor"] == "0x1af4", dev
    assert dev["driver"] == "virtio_rng", dev
    # ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    assert dev["status"] == "0x0000000f", dev
    assert dev["parent"] == b.lines("pci")[0].split()[0], dev


@pytest.mark.parametrize("name", BOOTS)
def test_hwrng_gives_bytes(boots, name):
    b = boots[name]
    assert b.lines("hwrng_current") == ["virtio_rng.0"], b.tail()
    rng = b.fields("hwrng_bytes")
    assert b.lines("hwrng_bytes")[0].startswith("64 "), b.tail()
    assert int(rng["distinct"]) >= 16, rng  # 64 random bytes repeat few values


def test_msix_vectors_per_queue_and_config(boots):
    b = boots["msix"]
    assert b.fields("pci")["msi_irqs"] == "2", b.tail()  # the config vector and the one queue's
    irqs = b.lines("irq")
    assert any("PCI-MSI" in line and "virtio0-config" in line for line in irqs), irqs
    assert any("PCI-MSI" in line and "virtio0-input" in line for line in irqs), irqs
    assert not any("IO-APIC" in line for line in irqs), irqs


def test_intx_through_the_prt_without_msi(boots):
    b = boots["intx"]
    pci = b.fields("pci")
    assert pci["msi_irqs"] == "0", pci
    # Slot 1's INTA: GSI 16 + (1 + 1 - 1) % 8, level-triggered at the IOAPIC.
    irqs = b.lines("irq")
    assert any(line.split(":")[0].strip() == pci["irq"] and "IO-APIC" in line and "fasteoi" in line and
               "virtio0" in line for line in irqs), (pci, irqs)
    assert pci["irq"] == "17", pci
