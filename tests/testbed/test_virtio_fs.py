"""virtio-fs: a Linux guest booted by capsule mounts host directories served by virtiofsd,
over both transports (PCI and MMIO):
- share[0] is a directory capsule starts virtiofsd on; share[1] is the socket of a virtiofsd
  the test started itself. The guest (tests/guest/fs.sh) lists each, reads the host's file,
  writes one the host then reads, and sees a file the host creates while it runs;
- a virtiofsd killed while the guest runs (tests/guest/fs_kill.sh): the guest's file
  operations fail, the guest keeps running and powers off, capsule exits with the guest's
  status and logs one line;
- bad settings (a missing directory, a missing virtiofsd, a socket nobody listens on, one
  that never answers, a virtiofsd that exits at once): one-line errors naming share[i],
  exit status 1, and no process or socket file left behind.

Everything runs in ONE testbed run (tests/testbed/run), each boot writing its output and
exit status to a folder under build/; the tests then assert per boot."""
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

import nested

REPO = pathlib.Path(__file__).resolve().parents[2]
TRANSPORTS = ("pci", "mmio")
CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet"
HOST_HELLO = "hello from the host"
EXT_HELLO = "hello from the external virtiofsd"
LATE = "created by the host while the guest runs"
# name -> capsule vm run arguments of a setting that must fail before the guest runs.
BAD = {
    "missing_dir": ("", ["--share", "$work/nope,tag=x"]),
    "missing_binary": ("CAPSULE_VIRTIOFSD=$work/no-virtiofsd", ["--share", "$work/bad,tag=x"]),
    "exits_at_once": ("CAPSULE_VIRTIOFSD=/bin/false", ["--share", "$work/bad,tag=x"]),
    "no_listener": ("", ["--share", ",tag=x,socket=$work/none.sock"]),
    "mute_socket": ("", ["--share", ",tag=x,socket=$work/mute.sock"]),
    "long_tag": ("", ["--share", "$work/bad,tag=" + "t" * 37]),
}

pytestmark = pytest.mark.testbed


def boot_script(out, initrd):
    """The shell command run in the testbed: every boot, one after the other."""
    q = shlex.quote
    lines = [
        f"out={q(str(out))} initrd={q(str(initrd))}",
        "set -u",
        "work=$(mktemp -d /tmp/virtio-fs.XXXXXX)",
        # capsule's private socket directories go here: it must be empty after every run.
        'export TMPDIR="$work/tmp"; mkdir "$TMPDIR" "$work/bad"',
        "virtiofsd=/usr/lib/qemu/virtiofsd",
        'procs() { ps -eo comm= | grep -c "^virtiofsd$"; }',
        "until_line() {  # until_line FILE TEXT PID: wait (bounded) for TEXT in FILE while PID lives",
        "        i=0",
        '        while kill -0 "$3" 2>/dev/null && ! grep -q "$2" "$1" && [ $i -lt 6000 ]; do sleep 0.1; i=$((i + 1)); done',
        "}",
        "after() {  # after NAME: what a run left behind",
        '        procs >"$out/$1.procs"; ls -A "$TMPDIR" | wc -l >"$out/$1.tmpfiles"',
        "}",
        'echo "procs_before=$(procs)" >"$out/setup"',
    ]
    for t in TRANSPORTS:
        lines += [
            f"t={t}",
            'd="$work/$t-dir" e="$work/$t-ext" sock="$work/$t-ext.sock"',
            'mkdir "$d" "$e"',
            f'echo {q(HOST_HELLO)} >"$d/hello.txt"; echo {q(EXT_HELLO)} >"$e/hello.txt"',
            '"$virtiofsd" --socket-path="$sock" -o source="$e" -o log_level=err 2>"$out/$t.ext.err" & ext=$!',
            'i=0; while [ ! -S "$sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done',
            'capsule vm run --initrd "$initrd" --virtio-transport $t --share "$d,tag=main" '
            '--share ",tag=ext,socket=$sock" '
            f'--cmdline {q(CMDLINE + " guest_action=script:fs guest_args=main,ext")} '
            '>"$out/$t.out" 2>"$out/$t.err" </dev/null & pid=$!',
            'until_line "$out/$t.out" "guest: mounted" $pid',
            # Written aside, then renamed: the guest waits for the name, and must not find it empty.
            f'for x in "$d" "$e"; do echo {q(LATE)} >"$x/.late"; mv "$x/.late" "$x/late.txt"; done',
            'wait $pid; echo $? >"$out/$t.rc"',
            'cat "$d/from-guest.txt" >"$out/$t.main-written"; cat "$e/from-guest.txt" >"$out/$t.ext-written"',
            # The external virtiofsd ends when its front-end goes.
            'wait $ext; echo $? >"$out/$t.ext.rc"',
            'after $t',
            # Kill capsule's virtiofsd (its only child) once the guest has mounted. Its DIR is
            # relative (to $work): capsule hands virtiofsd an absolute one.
            'k="$work/$t-kill"; mkdir "$k"; echo hi >"$k/hello.txt"',
            '(cd "$work" && exec capsule vm run --initrd "$initrd" --virtio-transport $t --share "$t-kill,tag=k" '
            f'--cmdline {q(CMDLINE + " guest_action=script:fs_kill guest_args=k")} '
            '>"$out/$t-kill.out" 2>"$out/$t-kill.err" </dev/null) & pid=$!',
            'until_line "$out/$t-kill.out" "guest: mounted" $pid',
            'children=$(cat /proc/$pid/task/*/children 2>/dev/null); echo "$children" >"$out/$t-kill.children"',
            '[ -z "$children" ] || kill -KILL $children',
            'wait $pid; echo $? >"$out/$t-kill.rc"',
            'after $t-kill',
        ]
    lines += [
        "python3 -c 'import socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); time.sleep(60)' "
        '"$work/mute.sock" & mute=$!',
        'i=0; while [ ! -S "$work/mute.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done',
    ]
    for name, (env, args) in BAD.items():
        lines += [
            f"{env} capsule vm run --initrd \"$initrd\" {' '.join(a if '$' in a else q(a) for a in args)} "
            f'>"$out/{name}.out" 2>"$out/{name}.err" </dev/null; echo $? >"$out/{name}.rc"',
            f"after {name}",
        ]
    lines += ['kill $mute; wait $mute', 'rm -rf "$work"']
    return "\n".join(lines) + "\n"


class Run:
    def __init__(self, out, name):
        def read(ext):
            p = out / f"{name}.{ext}"
            return p.read_text(errors="replace") if p.exists() else ""
        self.name = name
        self.read = read
        self.rc = int(read("rc") or -1)
        self.stdout = read("out").replace("\r", "")
        self.stderr = read("err")
        self.procs = int(read("procs") or -1)
        self.tmpfiles = int(read("tmpfiles") or -1)

    def guest(self, key):
        """The value of a `guest: key=value` line from the guest's script."""
        m = re.search(rf"^guest: {re.escape(key)}=(.*)$", self.stdout, re.M)
        assert m, f"{self.name}: no 'guest: {key}=' line:\n{self.tail()}"
        return m.group(1)

    def tail(self):
        return f"exit {self.rc}\n--- console (last 30 lines)\n" + \
            "\n".join(self.stdout.splitlines()[-30:]) + f"\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="module")
def runs(request):
    kernel = subprocess.run([str(REPO / "scripts" / "build-kernel")], capture_output=True, text=True, timeout=1800)
    assert kernel.returncode == 0, kernel.stderr
    initrd = subprocess.run([str(REPO / "tests" / "testbed" / "mkguestinitramfs")], capture_output=True,
                            text=True, check=True).stdout.strip()
    names = [*TRANSPORTS, *(f"{t}-kill" for t in TRANSPORTS), *BAD]
    # Every boot ends in a power-off, a killed virtiofsd's too (test_killed_virtiofsd): a guest that
    # died, before the kill (a CI run met one at the reset vector) or after it, is a crash to repeat.
    out, r, found = nested.run("virtio-fs", lambda out: boot_script(out, initrd),
                               lambda out: {name: Run(out, name) for name in names}, timeout=2400,
                               env={"TESTBED_TIMEOUT": "2100"})
    try:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n[test_virtio_fs] testbed exit {r.returncode}")
        assert r.returncode == 0, r.stdout + r.stderr
        yield found, (out / "setup").read_text()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_no_virtiofsd_before(runs):
    assert runs[1].strip() == "procs_before=0", runs[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guest_lists_reads_and_writes(runs, transport):
    r = runs[0][transport]
    assert r.rc == 0, r.tail()
    assert "guest: script fs exit 0" in r.stdout, r.tail()
    for tag, hello in (("main", HOST_HELLO), ("ext", EXT_HELLO)):
        assert r.guest(f"{tag} mount") == "ok", r.tail()
        assert r.guest(f"{tag} ls").split() == ["hello.txt"], r.tail()
        assert r.guest(f"{tag} read") == hello, r.tail()
        assert r.read(f"{tag}-written") == f"written by the guest into {tag}\n", r.tail()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_host_change_seen_by_running_guest(runs, transport):
    r = runs[0][transport]
    for tag in ("main", "ext"):
        assert r.guest(f"{tag} late") == LATE, r.tail()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_clean_run_leaves_nothing(runs, transport):
    r = runs[0][transport]
    assert "virtio-fs" not in r.stderr and "share[" not in r.stderr, r.stderr
    assert r.procs == 0 and r.tmpfiles == 0, (r.procs, r.tmpfiles)
    # The virtiofsd the test started saw its front-end leave and ended cleanly.
    assert r.read("ext.rc").strip() == "0", r.read("ext.err")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_killed_virtiofsd(runs, transport):
    r = runs[0][f"{transport}-kill"]
    assert r.read("children").split(), f"capsule had no child to kill\n{r.tail()}"
    # The guest saw errors rather than a hang, went on and powered off: capsule's status is 0.
    assert r.rc == 0, r.tail()
    assert "Input/output error" in r.guest("error"), r.tail()
    assert "Input/output error" in r.guest("second error"), r.tail()
    assert "guest: a file system operation hangs" not in r.stdout, r.tail()
    assert "guest: still running, alive" in r.stdout, r.tail()
    assert "guest: script fs_kill exit 0" in r.stdout, r.tail()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "share[0]" in lines[0] and "virtiofsd" in lines[0] and "killed by signal 9" in lines[0], lines
    assert r.procs == 0 and r.tmpfiles == 0, (r.procs, r.tmpfiles)


@pytest.mark.parametrize("name", BAD)
def test_bad_setting(runs, name):
    r = runs[0][name]
    assert r.rc == 1, r.tail()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "share[0]" in lines[0], r.stderr
    assert r.procs == 0 and r.tmpfiles == 0, (r.procs, r.tmpfiles)
    assert "guest:" not in r.stdout, r.stdout
    expect = {
        "missing_dir": "/nope: No such file or directory",
        "missing_binary": "no-virtiofsd: No such file or directory",
        "exits_at_once": "virtiofsd exited with status 1",
        "no_listener": "none.sock: No such file or directory",
        "mute_socket": "GET_FEATURES: no answer within",
        "long_tag": "is not 1 to 36 bytes",
    }[name]
    assert expect in lines[0], lines[0]
