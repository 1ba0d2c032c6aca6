"""capsule vm run boots Linux: the default guest kernel (found through CAPSULE_KERNEL, as vmlinux
and as bzImage) with a busybox initramfs (tests/testbed/mkguestinitramfs) whose /init reports
what it sees and then powers off, reboots, panics or reads a line, as guest_action= asks.

All boots happen in ONE testbed run (tests/testbed/run: directly on hardware KVM, else inside the
QEMU TCG testbed), each writing its output, exit status and wall time to a folder under build/;
every test then asserts on one boot's results. Which path was taken is printed when the boots
start, and test_path_taken states it. A guest that crashed under the nested KVM runs the boots
again (tests/testbed/nested.py)."""
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

import nested

REPO = pathlib.Path(__file__).resolve().parents[2]
MIB = 1 << 20

pytestmark = pytest.mark.testbed

# name -> (capsule vm run arguments, memory in MiB, vCPUs). "{console}" is the boot's console file.
BOOTS = {
    # Every default: CAPSULE_KERNEL's vmlinux, 1 vCPU, 256M, the default command line, stdio.
    "default": ([], 256, 1),
    "cpus2": (["--cpus", "2", "--memory", "512M",
               "--cmdline", "console=ttyS0 quiet panic=-1 guest_action=reboot capsule.probe=cmdline-7f3a"], 512, 2),
    "bzimage": (["--kernel", "BZIMAGE", "--cpus", "4", "--memory", "384M", "--console", "file:{console}",
                 "--cmdline", "console=ttyS0 panic=-1 guest_action=panic"], 384, 4),
}
# name -> capsule's global options for that boot: --debug logs which boot path the loader took.
GLOBAL_OPTS = {"bzimage": ["--debug"]}
LINE_IN = "a line typed on the host"


def kernel_has_pvpanic(kernel_dir):
    config = (kernel_dir / "config").read_text()
    return "CONFIG_PVPANIC=y" in config.splitlines() and "CONFIG_PVPANIC_MMIO=y" in config.splitlines()


def boot_script(out, initrd):
    """The shell command run in the testbed: every boot, one after the other."""
    o, i = shlex.quote(str(out)), shlex.quote(str(initrd))
    lines = [
        f"out={o} initrd={i}",
        'bz="$(dirname "$CAPSULE_KERNEL")/bzImage"',
        'now() { date +%s%N; }',
        "boot() {",
        '        name=$1; opts=$2; shift 2; t=$(now)',
        '        capsule $opts vm run --initrd "$initrd" "$@" >"$out/$name.out" 2>"$out/$name.err" </dev/null',
        '        echo $? >"$out/$name.rc"; echo $((($(now) - t) / 1000000)) >"$out/$name.ms"',
        "}",
    ]
    for name, (args, _, _) in BOOTS.items():
        args = [a.replace("{console}", f"{out}/{name}.console") for a in args]
        quoted = " ".join('"$bz"' if a == "BZIMAGE" else shlex.quote(a) for a in args)
        lines.append(f"boot {name} {shlex.quote(' '.join(GLOBAL_OPTS.get(name, [])))} {quoted}")
    # The serial console carries input: feed a line once the guest waits for it (the 8250
    # driver drops what arrived before the port was opened).
    lines += [
        'fifo=$(mktemp -u /tmp/vm-linux-in.XXXXXX); mkfifo "$fifo"; t=$(now)',
        'capsule vm run --initrd "$initrd" --cmdline "console=ttyS0 quiet panic=-1 guest_action=read" '
        '<"$fifo" >"$out/read.out" 2>"$out/read.err" & pid=$!',
        'exec 3>"$fifo"',
        'while kill -0 $pid 2>/dev/null && ! grep -q "guest: waiting for a line" "$out/read.out"; do sleep 0.1; done',
        f"(echo {shlex.quote(LINE_IN)} >&3) 2>/dev/null; exec 3>&-",
        'wait $pid; echo $? >"$out/read.rc"; echo $((($(now) - t) / 1000000)) >"$out/read.ms"; rm -f "$fifo"',
        # Without a kernel anywhere, capsule names the CAPSULE_KERNEL it tried.
        'CAPSULE_KERNEL=/nonexistent/vmlinux capsule vm run --initrd "$initrd" >"$out/nokernel.out" '
        '2>"$out/nokernel.err" </dev/null; echo $? >"$out/nokernel.rc"',
    ]
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(self, out, name):
        def read(ext):
            p = out / f"{name}.{ext}"
            return p.read_text(errors="replace") if p.exists() else ""
        self.name = name
        self.rc = int(read("rc") or -1)
        self.ms = int(read("ms") or -1)
        self.stdout = read("out").replace("\r", "")
        self.stderr = read("err")
        self.console = read("console").replace("\r", "")

    @property
    def text(self):
        """What the guest's console showed (stdout, or the --console file)."""
        return self.stdout or self.console

    def guest(self, key):
        """The value of a `guest: key=value` line from /init."""
        m = re.search(rf"^guest: {re.escape(key)}=(.*)$", self.text, re.M)
        assert m, f"{self.name}: no 'guest: {key}=' line:\n{self.tail()}"
        return m.group(1)

    def tail(self):
        return f"exit {self.rc}\n--- console (last 30 lines)\n" + \
            "\n".join(self.text.splitlines()[-30:]) + f"\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="module")
def kernel_dir():
    """Build (or find) the guest kernel once, outside the boots' timeout."""
    r = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    return pathlib.Path(r.stdout.strip())


@pytest.fixture(scope="module")
def boots(request, kernel_dir):
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    # cpus2 reboots and bzimage panics on purpose: their statuses are what their tests assert.
    out, r, found = nested.run("vm-linux", lambda out: boot_script(out, initrd),
                               lambda out: {name: Boot(out, name) for name in [*BOOTS, "read", "nokernel"]},
                               timeout=900, env={"TESTBED_VERBOSE": "1"}, expected=("cpus2", "bzimage"))
    try:
        banner = [line for line in r.stderr.splitlines() if line.startswith("testbed: running")]
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_vm_linux] {' / '.join(banner) or 'no testbed banner'}; "
                  f"testbed exit {r.returncode}; boot wall times (ms): " +
                  ", ".join(f"{p.stem}={p.read_text().strip()}" for p in sorted(out.glob("*.ms"))))
        assert r.returncode == 0, r.stdout + r.stderr
        yield found, banner, kernel_dir
    finally:
        shutil.rmtree(out, ignore_errors=True)


def memtotal_bounds(mib):
    """MemTotal (KiB) of a guest with mib MiB of RAM. The kernel keeps out of MemTotal: its own image
    (code, data, bss: about 12.5 MiB for guest/kernel.config), struct page for every 4 KiB page
    (64 bytes: 1/64 of RAM), the BIOS area below 1 MiB (0.4 MiB) and a few early allocations. So
    MemTotal is at most RAM - RAM/64 - 8 MiB and, unless capsule lost RAM, at least
    RAM - RAM/64 - 20 MiB (measured: 256 MiB -> 238.2 MiB, 512 MiB -> 489.3 MiB)."""
    top = mib - mib / 64
    return (top - 20) * 1024, (top - 8) * 1024


def check_memory(boot, mib):
    lo, hi = memtotal_bounds(mib)
    kb = int(boot.guest("memtotal_kb"))
    assert lo <= kb <= hi, f"{boot.name}: MemTotal {kb} kB not in [{lo:.0f}, {hi:.0f}] for {mib} MiB"
    # The kernel's own count of the RAM capsule's e820 map gave it: all of it but the 640K-1M hole.
    m = re.search(r"^Memory: \d+K/(\d+)K available", boot.guest("memory"))
    assert m, boot.tail()
    assert mib * 1024 - 1024 <= int(m.group(1)) <= mib * 1024, m.group(0)


def test_path_taken(boots):
    _, banner, _ = boots
    assert len(banner) == 1, banner
    assert banner[0] in ("testbed: running inside QEMU TCG testbed", "testbed: running directly on hardware KVM",
                         "testbed: running directly on the host (TESTBED_MODE=direct)"), banner
    print(banner[0])


def test_default_kernel_from_capsule_kernel_powers_off(boots):
    b = boots[0]["default"]
    assert b.rc == 0, b.tail()
    assert "guest: hello from inside a capsule micro-VM (Linux 6.1" in b.stdout, b.tail()
    assert "Run /init as init process" in b.stdout
    assert "reboot: Power down" in b.stdout
    assert b.guest("action") == "poweroff"
    assert b.stderr == "", b.stderr


def test_default_cmdline(boots):
    b = boots[0]["default"]
    assert b.guest("cmdline") == "console=ttyS0 reboot=k panic=-1"


def test_capsule_kernel_is_what_is_booted(boots):
    b = boots[0]["nokernel"]
    assert b.rc == 1, b.tail()
    assert "/nonexistent/vmlinux" in b.stderr and len(b.stderr.strip().splitlines()) == 1, b.stderr


@pytest.mark.parametrize("name", BOOTS)
def test_nproc_equals_cpus(boots, name):
    b = boots[0][name]
    assert b.guest("nproc") == str(BOOTS[name][2]), b.tail()


@pytest.mark.parametrize("name", BOOTS)
def test_memtotal_matches_memory(boots, name):
    check_memory(boots[0][name], BOOTS[name][1])


@pytest.mark.parametrize("name", BOOTS)
def test_no_nested_virtualization_offered(boots, name):
    """capsule hides VMX and SVM: the guest's /proc/cpuinfo shows neither flag."""
    assert boots[0][name].guest("nested_virt_flags").strip() == "", boots[0][name].tail()


def test_cmdline_reaches_guest(boots):
    b = boots[0]["cpus2"]
    assert b.guest("cmdline") == "console=ttyS0 quiet panic=-1 guest_action=reboot capsule.probe=cmdline-7f3a"


def test_reboot_exits_80(boots):
    b = boots[0]["cpus2"]
    assert b.guest("action") == "reboot"
    assert b.rc == 80, b.tail()
    assert "reboot: Restarting system" in b.stdout


def test_panic_exit_status(boots):
    b = boots[0]["bzimage"]
    assert "Kernel panic - not syncing: Attempted to kill init" in b.console, b.tail()
    # With the pvpanic driver the guest reports the panic (81); without it, panic=-1 reboots (80).
    want = 81 if kernel_has_pvpanic(boots[2]) else 80
    assert b.rc == want, b.tail()


def test_bzimage_boots_with_console_file(boots):
    b = boots[0]["bzimage"]
    assert "guest: hello from inside a capsule micro-VM" in b.console, b.tail()
    assert b.guest("cmdline") == "console=ttyS0 panic=-1 guest_action=panic"
    assert b.stdout == "", "--console file: the console went to stdout too"


def test_bzimage_boots_through_the_64bit_boot_protocol(boots, kernel_dir):
    """By default the bzImage is not decompressed by capsule: its protected-mode kernel is loaded at
    pref_address (the kernel is not relocatable) and entered at +0x200 with a zero page, and the
    kernel's own decompressor runs in the guest. capsule --debug says which path it took."""
    b = boots[0]["bzimage"]
    image = (kernel_dir / "bzImage").read_bytes()
    pref_address = int.from_bytes(image[0x258:0x260], "little")
    assert b.rc in (80, 81), b.tail()
    assert "decompressed on the host" not in b.stderr, b.stderr
    assert (f"bzImage booted through the 64-bit boot protocol: protected-mode kernel at {pref_address:#x}, "
            f"entry {pref_address + 0x200:#x}, the guest decompresses its payload") in b.stderr, b.stderr


def test_serial_console_carries_input(boots):
    b = boots[0]["read"]
    assert f"guest: read '{LINE_IN}'" in b.stdout, b.tail()
    assert b.rc == 0, b.tail()


def test_kernel_has_pvpanic(boots):
    """guest/kernel.config asks for pvpanic, so a guest panic ends as status 81, not as a reboot."""
    assert kernel_has_pvpanic(boots[2])
