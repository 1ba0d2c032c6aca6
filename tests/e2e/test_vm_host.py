"""`capsule vm run` on this host: ring-3 test payloads (which run even on PVM, where guest ring 0 is
emulated), exit statuses, signals, settings from flags and --config, and bad input. Every payload test
runs with the normal and, when built, the ASan+UBSan binary."""
import datetime
import fcntl
import json
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import termios
import time

import pytest

from conftest import BUILD, CAPSULE

ASAN_CAPSULE = os.path.join(BUILD, "asan", "capsule")
PAYLOADS = os.path.join(BUILD, "payloads")
PVM = os.path.isdir("/sys/module/kvm_pvm") and not any(
    os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))
PVM_REFUSAL = ("capsule: this host's /dev/kvm is PVM (kvm_pvm): it emulates guest ring-0 code, so a stock Linux "
               "kernel cannot boot here; run it inside the testbed (tests/testbed/run) or on a host with "
               "kvm_intel/kvm_amd")

# KVM on AMD SVM re-initialises the vCPU (its VMCB) when it intercepts a triple fault's shutdown,
# before it returns KVM_EXIT_SHUTDOWN (svm.c, shutdown_interception), so no register of the fault
# is left to dump: the testbed's nested KVM (QEMU TCG emulates SVM) is one.
with open("/proc/cpuinfo") as cpuinfo:
    SVM = not PVM and any(l.startswith("flags") and "svm" in l.split() for l in cpuinfo)
pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm")

BINARIES = [pytest.param(CAPSULE, id="normal"),
            pytest.param(ASAN_CAPSULE, id="asan",
                         marks=pytest.mark.skipif(not os.path.exists(ASAN_CAPSULE), reason="make asan not built"))]


@pytest.fixture(params=BINARIES)
def capsule_bin(request):
    return request.param


def payload(name):
    return os.path.join(PAYLOADS, name + ".elf")


def vm_run(binary, *args, timeout=30, env=None, debug_exit=True):
    """Payloads report their result through the debug exit port, which they must ask for."""
    full_env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    full_env.update(env or {})
    extra = ["--debug-exit"] if debug_exit and "--payload" in args else []
    return subprocess.run([binary, "vm", "run", *map(str, args), *extra], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=full_env)


def run_payload(binary, name, *args, **kw):
    return vm_run(binary, "--payload", payload(name), "--console", "stdio", *args, **kw)


def one_line_error(p, *needles):
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# Payloads

def test_hello(capsule_bin):
    p = run_payload(capsule_bin, "hello")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from ring 3\n"
    assert p.stderr == ""


def test_console_file(capsule_bin, tmp_path):
    out = tmp_path / "console.txt"
    p = vm_run(capsule_bin, "--payload", payload("hello"), "--console", f"file:{out}")
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    assert out.read_text() == "hello from ring 3\n"


def test_console_none(capsule_bin):
    p = vm_run(capsule_bin, "--payload", payload("hello"), "--console", "none")
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""


def test_debug_logs_each_vcpus_kvm_exit_counters(capsule_bin):
    """With --debug the VM's end logs KVM's own counters per vCPU (exits, and why), the figures
    to set beside another VMM's; without it nothing (test_hello: stderr stays empty)."""
    p = subprocess.run([capsule_bin, "--debug", "vm", "run", "--payload", payload("smp"), "--cpus", "2",
                        "--console", "stdio", "--debug-exit"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stderr
    counters = dict(re.findall(r"^capsule: debug: vCPU (\d): KVM counters: exits (\d+) io_exits \d+ mmio_exits",
                               p.stderr, re.M))
    assert sorted(counters) == ["0", "1"], p.stderr
    assert all(int(n) > 0 for n in counters.values()), counters


def test_exit_code(capsule_bin):
    assert run_payload(capsule_bin, "exit_code").returncode == 42


def test_pci_host_bridge(capsule_bin):
    p = run_payload(capsule_bin, "pci")
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"pci 00:00.0 vendor=[0-9a-f]{4} device=[0-9a-f]{4} class=0600", p.stdout), p.stdout
    assert "pci 00:1f.0 ffffffff" in p.stdout


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_smp(capsule_bin, cpus):
    p = run_payload(capsule_bin, "smp", "--cpus", cpus)
    assert p.returncode == cpus, p.stdout + p.stderr
    assert sorted(p.stdout.splitlines()) == sorted(f"cpu {i}" for i in range(cpus))


def test_rtc(capsule_bin):
    p = run_payload(capsule_bin, "rtc")
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"rtc (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", p.stdout)
    assert m, p.stdout
    guest = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    now = [datetime.datetime.utcnow(), datetime.datetime.now()]
    assert min(abs((guest - t).total_seconds()) for t in now) < 120, (guest, now)


def test_i8042_reset_is_reboot(capsule_bin):
    p = run_payload(capsule_bin, "i8042_reset")
    assert p.returncode == 80, p.stdout + p.stderr


def test_fault_is_triple_fault(capsule_bin):
    p = run_payload(capsule_bin, "fault")
    assert p.returncode == 82, p.stdout + p.stderr
    # One line says where: the payload runs in ring 3 (cs RPL 3) of 64-bit long mode (EFER.LMA).
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "the guest triple-faulted: vCPU 0: triple fault at rip 0x" in lines[0], p.stderr
    if SVM:
        pytest.skip("KVM on AMD SVM resets the vCPU at a triple fault before capsule can read its registers: "
                    f"{lines[0]}")
    efer = int(re.search(r"efer (0x[0-9a-f]+)", lines[0]).group(1), 16)
    cs = int(re.search(r"cs (0x[0-9a-f]+)", lines[0]).group(1), 16)
    assert efer & 0x400 and cs & 3 == 3, lines[0]


def test_mmio_outside_ram(capsule_bin):
    p = run_payload(capsule_bin, "mmio_oob", "--memory", "256M")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "mmio ok" in p.stdout


def test_high_memory(capsule_bin):
    """More than 3 GiB: RAM continues above 4 GiB (the payload's page tables cover it)."""
    p = run_payload(capsule_bin, "hello", "--memory", "5G")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from ring 3\n"


# Virtio driven end to end by ring-3 payloads over the MMIO transport

def test_virtio_rng_payload(capsule_bin):
    """The payload finds virtio-rng in the first MMIO window, sets a queue up in its own memory,
    kicks and polls the used ring: 64 bytes, not all zero."""
    p = run_payload(capsule_bin, "virtio_rng", "--virtio-transport", "mmio", "--rng")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "virtio-rng: device at 0xc0000000\n" in p.stdout
    assert "virtio-rng: used id 0 len 64\n" in p.stdout
    assert p.stderr == ""


def test_virtio_rng_payload_rate_limited(capsule_bin):
    """A limit below one request's size still serves it once the bucket holds it (64 B: at once)."""
    p = run_payload(capsule_bin, "virtio_rng", "--virtio-transport", "mmio", "--rng=64")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "virtio-rng: used id 0 len 64\n" in p.stdout


def test_virtio_rng_payload_without_the_device(capsule_bin):
    p = run_payload(capsule_bin, "virtio_rng", "--virtio-transport", "mmio")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "virtio-rng: no device" in p.stdout


def test_virtio_malformed_chains_need_a_reset(capsule_bin):
    """A buffer outside RAM, then a descriptor loop: each time the VMM goes on, the device sets
    DEVICE_NEEDS_RESET with a config interrupt and logs one line, and after a reset it works."""
    p = run_payload(capsule_bin, "virtio_bad_chain", "--virtio-transport", "mmio", "--rng")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == ["virtio-bad-chain: DEVICE_NEEDS_RESET after a buffer outside RAM",
                                     "virtio-bad-chain: DEVICE_NEEDS_RESET after a descriptor loop",
                                     "virtio-bad-chain: the device works again after a reset"], p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, p.stderr
    assert all("virtio-rng" in line and "needs a reset" in line for line in lines), p.stderr


@pytest.fixture
def mute_backend(tmp_path):
    """A vhost-user socket that accepts and never answers."""
    path = str(tmp_path / "mute.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    yield path
    server.close()


def test_share_handshake_runs_beside_the_boot(capsule_bin, tmp_path, mute_backend):
    """virtio-fs's handshake does not hold the vCPUs back: a guest that never reaches the device's
    DRIVER_OK runs to its end while the back-end has not answered yet."""
    p = run_payload(capsule_bin, "hello", "--share", f"{tmp_path},tag=t,socket={mute_backend}")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from ring 3\n" and p.stderr == ""


def test_share_backend_failing_its_handshake_stops_the_running_vm(capsule_bin, tmp_path):
    """The payload runs (and spins) before the handshake ends; a virtiofsd that exits with status 1
    a second later, before answering, then stops the VM with status 1 and one line with its status.
    (A mute back-end's 30 s: tests/testbed/test_virtio_fs.py.)"""
    backend = tmp_path / "failing-virtiofsd"
    backend.write_text("#!/bin/sh\nsleep 1\nexit 1\n")
    backend.chmod(0o755)
    p = run_payload(capsule_bin, "spin", "--share", f"{tmp_path},tag=t", env={"CAPSULE_VIRTIOFSD": str(backend)})
    assert p.stdout == "spinning\n", p.stdout + p.stderr
    one_line_error(p, "share[0]", "virtiofsd exited with status 1 before it was ready")


def test_console_device_virtio_leaves_the_8250_unconnected(capsule_bin):
    """With hvc0 as the console, the 8250 no longer owns stdio: what the payload writes to COM1 is
    not on stdout."""
    p = run_payload(capsule_bin, "hello", "--console-device", "virtio")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == ""


def test_console_port_socket_lives_as_long_as_the_vm(tmp_path):
    """capsule listens on the port's socket while the VM runs (one client at a time) and removes
    it at exit."""
    sock = tmp_path / "port.sock"
    proc = subprocess.Popen([CAPSULE, "vm", "run", "--payload", payload("spin"), "--console", "none",
                             "--console-port", f"org.test.port,socket={sock}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), proc.stderr.read() if proc.poll() is not None else "no socket"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(sock))
            c.sendall(b"bytes for a guest that never opens the port\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not sock.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_vm(capsule_bin, sig):
    proc = subprocess.Popen([capsule_bin, "vm", "run", "--payload", payload("spin"), "--cpus", "2",
                             "--console", "stdio"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline() == "spinning\n"
        start = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=5)
        assert time.monotonic() - start < 1.0
    finally:
        proc.kill()
        proc.wait()
    assert rc == 128 + sig
    assert proc.stderr.read() == ""


def test_sigterm_restores_terminal(capsule_bin):
    """With the console on a terminal, the terminal settings are put back after a signal stop."""
    master, slave = pty.openpty()
    proc = None
    try:
        before = termios.tcgetattr(slave)
        proc = subprocess.Popen([capsule_bin, "vm", "run", "--payload", payload("spin"), "--console", "stdio"],
                                stdin=slave, stdout=slave, stderr=subprocess.PIPE)
        buf = b""
        deadline = time.monotonic() + 10
        while b"spinning" not in buf and time.monotonic() < deadline:
            buf += os.read(master, 100)
        assert b"spinning" in buf
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 143
        assert termios.tcgetattr(slave) == before
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def thread_names(pid):
    names = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.add(f.read().strip())
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            pass
    return names


def test_debug_exit_port_is_off_by_default(capsule_bin):
    """Without --debug-exit a guest's write to port 0xf4 does nothing: exit_code.elf writes 42
    there, then spins, so the VM runs on until it is stopped."""
    proc = subprocess.Popen([capsule_bin, "vm", "run", "--payload", payload("exit_code"), "--console", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        # the VM runs once its threads exist, each named for perf and top (signals are routed to
        # the event loop before that); a slow ASan build under nested KVM can take more than a
        # second to get there
        deadline = time.time() + 30
        while not {"evloop", "vcpu0"} <= thread_names(proc.pid):
            assert proc.poll() is None, f"capsule ended ({proc.returncode}): {proc.stderr.read()}"
            assert time.time() < deadline, thread_names(proc.pid)
            time.sleep(0.05)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 143
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr.read() == ""


def pipe_bytes(fd):
    """How many bytes wait in a pipe."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def ended(err):
    """What capsule said on stderr (the file err) as it ended: a guest's death under the testbed's
    nested KVM then reads as one, and tests/testbed/inner.py repeats the test."""
    err.flush()
    err.seek(0)
    return err.read().strip()


def test_stalled_console_reader_never_blocks(capsule_bin, tmp_path):
    """stdout is a pipe nobody reads and the guest floods the console: the vCPU and the event loop
    go on (what does not fit in capsule's ring is dropped), SIGTERM stops the VM at once with 143,
    and the number of bytes dropped (with what was left in the ring) is reported on stderr."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([capsule_bin, "vm", "run", "--payload", payload("flood"), "--console", "stdio"],
                            stdout=w, stderr=err, stdin=subprocess.DEVNULL)
    os.close(w)
    try:
        # The pipe is full when what it holds stops growing (a one-page pipe may refuse a write
        # that does not fit in what is left of the page); then the output piles up in the ring.
        deadline = time.monotonic() + 60
        held, still = -1, 0
        while still < 5:
            assert proc.poll() is None, f"capsule ended on its own: {ended(err)}"
            assert time.monotonic() < deadline, "the guest's output never filled the pipe"
            time.sleep(0.1)
            now = pipe_bytes(r)
            held, still = now, (still + 1 if now == held and now > 0 else 0)
        time.sleep(1)
        assert proc.poll() is None, f"capsule ended on its own: {ended(err)}"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        assert time.monotonic() - start < 2.0
    finally:
        proc.kill()
        proc.wait()
        os.close(r)
    assert rc == 143
    err.seek(0)
    text = err.read()
    m = re.search(r"console: (\d+) bytes of guest output dropped", text)
    assert m and int(m.group(1)) > 0, text


def test_console_output_to_a_closed_pipe(capsule_bin):
    """SIGPIPE must not kill the VMM: the guest's output is lost, the guest runs to its end."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([capsule_bin, "vm", "run", "--payload", payload("hello"), "--console", "stdio",
                            "--debug-exit"], stdout=w, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           text=True, timeout=30)
    finally:
        os.close(w)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert re.search(r"console: \d+ bytes of guest output dropped: the output failed", p.stderr), p.stderr


def test_pvpanic_notices_are_rate_limited(capsule_bin):
    """A guest that writes "crash kernel loaded" to pvpanic 20000 times gets a notice a second."""
    start = time.monotonic()
    p = run_payload(capsule_bin, "pvpanic_flood", timeout=120)
    took = time.monotonic() - start
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines and all("crash kernel is running" in line for line in lines), p.stderr
    assert len(lines) <= 2 + took, (took, p.stderr)


def test_sigquit_from_the_terminal_restores_it(capsule_bin):
    """Ctrl-\\ on the console's terminal (SIGQUIT from the line discipline) stops the VM in order,
    with 131, and the terminal is no longer raw."""
    master, slave = pty.openpty()
    proc = None

    def controlling_tty():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        before = termios.tcgetattr(slave)
        proc = subprocess.Popen([capsule_bin, "vm", "run", "--payload", payload("spin"), "--console", "stdio"],
                                stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=controlling_tty)
        buf = b""
        deadline = time.monotonic() + 10
        while b"spinning" not in buf and time.monotonic() < deadline:
            buf += os.read(master, 100)
        assert b"spinning" in buf
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON and during[3] & termios.ISIG  # raw, signals on
        os.write(master, before[6][termios.VQUIT])
        assert proc.wait(timeout=5) == 128 + signal.SIGQUIT
        after = termios.tcgetattr(slave)
        assert after == before
        assert after[3] & termios.ICANON and after[3] & termios.ECHO
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


# Settings

def test_config_file_and_flag_override(capsule_bin, tmp_path):
    os.symlink(payload("smp"), tmp_path / "smp.elf")
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"payload": "smp.elf", "cpus": 2, "memory": "64M", "console": "stdio",
                               "hugepages": False, "debug-exit": True}))
    p = vm_run(capsule_bin, "--config", cfg)
    assert p.returncode == 2, p.stderr
    p = vm_run(capsule_bin, "--config", cfg, "--cpus", "3")
    assert p.returncode == 3, p.stderr
    cfg.write_text(json.dumps({"payload": str(tmp_path / "smp.elf"), "memory": 67108864, "console": "file:out.txt",
                               "debug-exit": True}))
    p = vm_run(capsule_bin, "--config", cfg)
    assert p.returncode == 1, p.stderr
    assert (tmp_path / "out.txt").read_text() == "cpu 0\n"
    p = vm_run(capsule_bin, "--config", cfg, "--console", "stdio")
    assert (p.returncode, p.stdout) == (1, "cpu 0\n"), p.stderr


def test_help_documents_everything():
    p = subprocess.run([CAPSULE, "vm", "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for opt in ("--kernel", "--initrd", "--cmdline", "--cpus", "--memory", "--console", "--hugepages",
                "--payload", "--bzimage-decompress", "--debug-exit", "--config", "--help", "--net tap[=NAME]",
                "--net user[,hostfwd="):
        assert opt in p.stdout, opt
    for status in ("80", "81", "82", "128+N", "0xf4", "SIGQUIT 131"):
        assert status in p.stdout, status
    assert subprocess.run([CAPSULE, "vm", "run", "--help"], capture_output=True, text=True).stdout == p.stdout
    assert "vm" in subprocess.run([CAPSULE, "--help"], capture_output=True, text=True).stdout


# Bad input: one line, status 1

def test_missing_kernel_file():
    one_line_error(vm_run(CAPSULE, "--kernel", "/nonexistent/vmlinux"), "--kernel", "/nonexistent/vmlinux",
                   "No such file")


def test_no_default_kernel(tmp_path):
    p = vm_run(CAPSULE, env={"CAPSULE_KERNEL": "", "CAPSULE_CACHE": str(tmp_path)})
    one_line_error(p, "no kernel", str(tmp_path / "kernel/current/vmlinux"))


def test_missing_initrd(tmp_path):
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"\0" * 1024)
    one_line_error(vm_run(CAPSULE, "--kernel", kernel, "--initrd", tmp_path / "nope"), "--initrd", "nope")


def test_non_elf_payload(tmp_path):
    f = tmp_path / "junk.elf"
    f.write_text("#!/bin/sh\necho not an ELF\n")
    one_line_error(vm_run(CAPSULE, "--payload", f), str(f), "not an ELF file")


def test_dynamic_elf_payload():
    one_line_error(vm_run(CAPSULE, "--payload", "/bin/true"), "/bin/true")


@pytest.mark.parametrize("value,needle", [("garbage", "not a size"), ("1M", "1M is too small (at least 16M)"),
                                          ("12Q", "not a size"), ("99999999999999999999", "not a size"),
                                          ("2T", "too large")])
def test_bad_memory(value, needle):
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--memory", value), "--memory", needle)


@pytest.mark.parametrize("value", ["0", "-1", "255", "two"])
def test_bad_cpus(value):
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--cpus", value), "--cpus")


def test_bad_console():
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--console", "tty"), "--console", "tty")


def test_bad_bzimage_decompress():
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--bzimage-decompress", "both"),
                   "--bzimage-decompress", "both", "guest or host")


def test_unknown_flag():
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--frobnicate"), "--frobnicate")


def test_kernel_and_payload_exclusive(tmp_path):
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--kernel", payload("hello")), "--kernel",
                   "--payload")


@pytest.mark.parametrize("content,needles", [
    ('{"cpus": 2,', ["vm.json", "invalid JSON", "line"]),
    ('[1, 2]', ["vm.json", "JSON object"]),
    ('{"cpuz": 2}', ["vm.json", "cpuz", "unknown key"]),
    ('{"cpus": "2"}', ["vm.json: cpus", "integer"]),
    ('{"memory": true}', ["vm.json: memory"]),
    ('{"memory": "lots"}', ["vm.json: memory", "not a size"]),
    ('{"hugepages": "yes"}', ["vm.json: hugepages", "true or false"]),
    ('{"kernel": 5}', ["vm.json: kernel", "string"]),
    ('{"bzimage-decompress": "auto"}', ["vm.json: bzimage-decompress", "auto", "guest or host"]),
    ('{"bzimage-decompress": true}', ["vm.json: bzimage-decompress", "string"]),
    ('{"balloon": 5}', ["vm.json: balloon"]),
    ('{"balloon": "free-page-reporting,oops"}', ["vm.json: balloon", "oops", "free-page-reporting, deflate-on-oom"]),
])
def test_bad_config(tmp_path, content, needles):
    cfg = tmp_path / "vm.json"
    cfg.write_text(content)
    one_line_error(vm_run(CAPSULE, "--config", cfg, "--payload", payload("hello")), *needles)


def test_console_port_socket_error(tmp_path):
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--console-port",
                          f"org.test.port,socket={tmp_path}/missing/port.sock"),
                   "console-port[0]: socket", f"{tmp_path}/missing/port.sock", "No such file")


def test_console_port_socket_in_use(tmp_path):
    """An existing file at the socket's path is left alone: an error, not a clobbered file."""
    (tmp_path / "port.sock").write_text("mine")
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--console-port", f"b,socket={tmp_path}/port.sock"),
                   "console-port[0]: socket", "in use")
    assert (tmp_path / "port.sock").read_text() == "mine"


@pytest.mark.parametrize("name,needle", [("has space", "has a space"), ("a/b", "a slash"), ("x" * 129, "1 to 128")])
def test_console_port_bad_name(tmp_path, name, needle):
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--console-port",
                          f"{name},socket={tmp_path}/port.sock"), "console-port[0]", needle)
    assert not (tmp_path / "port.sock").exists()


@pytest.mark.parametrize("value,needle", [
    ("eth0", "`eth0` is neither tap"),
    ("tap,mac=52:54:00:12:34", "mac=52:54:00:12:34 is not a MAC address"),
    ("tap,mac=52-54-00-12-34-56", "is not a MAC address"),
    ("user,mac=01:00:5e:00:00:01", "is a multicast address"),
    ("tap,queues=0", "queues=0 is not a number from 1 to 16"),
    ("tap,queues=17", "queues=17 is not a number from 1 to 16"),
    ("tap=capsule-tap-too-long", "tap name `capsule-tap-too-long` is not 1 to 15 bytes"),
    ("tap=", "tap name `` is not 1 to 15 bytes"),
    ("tap=a/b", "is not an interface name"),
    ("tap,netns=/nonexistent/netns", "netns /nonexistent/netns: No such file"),
    ("tap,netns=", "netns= needs a path"),
    ("tap,hostfwd=tcp::8080-:80", "unknown option `hostfwd=tcp::8080-:80`"),
    ("tap,frob", "unknown option `frob`"),
    ("user,queues=2", "unknown option `queues=2`"),
    ("user,impl=vde", "impl=vde is not passt or slirp"),
    ("user,hostfwd=tcp::0-:80", "hostfwd=tcp::0-:80 is not"),
    ("user,hostfwd=tcp::8080-:0", "hostfwd=tcp::8080-:0 is not"),
    ("user,hostfwd=tcp::65536-:80", "is not"),
    ("user,hostfwd=sctp::8080-:80", "is not"),
    ("user,hostfwd=tcp:8080-:80", "is not"),
    ("user,hostfwd=tcp::8080:80", "is not"),
    ("user,hostfwd=tcp:1.2.3:8080-:80", "is not"),
])
def test_bad_net(value, needle):
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--net", "tap", "--net", value), "--net: ",
                   needle)


def test_bad_net_in_config_names_the_entry(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"net": ["tap", "user,hostfwd=tcp::22-:22", "tap=x,queues=99"]}))
    one_line_error(vm_run(CAPSULE, "--config", cfg, "--payload", payload("hello")),
                   "vm.json: net[2]: queues=99 is not a number from 1 to 16")
    cfg.write_text(json.dumps({"net": ["tap,netns=missing-ns"]}))
    one_line_error(vm_run(CAPSULE, "--config", cfg, "--payload", payload("hello")),
                   f"vm.json: net[0]: netns {tmp_path}/missing-ns: No such file")
def test_balloon_settings(tmp_path):
    """Every form of the setting starts the VM (the device itself is tested in
    tests/unit/test_vmm_virtio_balloon.c and, with Linux, in the testbed); a bad option is one line."""
    for flag in ("--balloon", "--balloon=free-page-reporting", "--balloon=deflate-on-oom,free-page-reporting"):
        p = run_payload(CAPSULE, "hello", flag)
        assert p.returncode == 0 and p.stderr == "", (flag, p.stderr)
    cfg = tmp_path / "vm.json"
    for value in (True, "free-page-reporting,deflate-on-oom"):
        cfg.write_text(json.dumps({"balloon": value}))
        p = run_payload(CAPSULE, "hello", "--config", cfg)
        assert p.returncode == 0 and p.stderr == "", (value, p.stderr)
    one_line_error(run_payload(CAPSULE, "hello", "--balloon=inflate-everything"), "--balloon", "inflate-everything")


def test_missing_config(tmp_path):
    one_line_error(vm_run(CAPSULE, "--config", tmp_path / "nope.json"), "--config", "nope.json")


def test_hugepages_unavailable():
    with open("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") as f:
        if int(f.read()) >= 128:
            pytest.skip("this host has huge pages")
    one_line_error(vm_run(CAPSULE, "--payload", payload("hello"), "--hugepages"), "--hugepages", "huge pages")


@pytest.mark.skipif(not PVM, reason="only a PVM host refuses stock kernels")
def test_pvm_refuses_kernel(tmp_path):
    """A (fake) bzImage: refused with one line before anything is set up."""
    image = bytearray(8192)
    image[0x1f1] = 4                      # setup_sects
    image[0x1fe:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    image[0x206:0x208] = (0x020f).to_bytes(2, "little")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(bytes(image))
    p = vm_run(CAPSULE, "--kernel", kernel, "--console", "stdio")
    assert p.returncode == 1
    assert p.stderr.strip() == PVM_REFUSAL
    assert p.stdout == ""
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": "bzImage"}))
    assert vm_run(CAPSULE, "--config", cfg).stderr.strip() == PVM_REFUSAL


def test_hugepages_back_guest_memory(tmp_path):
    """Reserve 2 MiB pages for the test only (restored afterwards); the guest runs on them."""
    nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    free = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
    with open(nr) as f:
        before = int(f.read())
    try:
        with open(nr, "w") as f:
            f.write(str(before + 16))
        with open(free) as f:
            assert int(f.read()) >= 16, "the kernel could not reserve 16 huge pages"
        p = run_payload(CAPSULE, "hello", "--hugepages", "--memory", "32M")
        assert p.returncode == 0, p.stderr
        assert "hello from ring 3" in p.stdout
        # while a guest runs, its 32 MiB are 16 huge pages in use or reserved
        spin = subprocess.Popen([CAPSULE, "vm", "run", "--payload", payload("spin"), "--hugepages", "--memory", "32M",
                                 "--console", "none"], stdin=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while True:
                info = dict(line.split(":") for line in open("/proc/meminfo") if line.startswith("HugePages_"))
                taken = int(info["HugePages_Total"]) - int(info["HugePages_Free"]) + int(info["HugePages_Rsvd"])
                if taken >= 16 or time.time() > deadline:
                    break
                time.sleep(0.05)
            assert taken >= 16, info
        finally:
            spin.terminate()
            assert spin.wait(timeout=10) == 143
    finally:
        with open(nr, "w") as f:
            f.write(str(before))
    with open(nr) as f:
        assert int(f.read()) == before
