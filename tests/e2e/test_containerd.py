"""containerd 1.6 (ctr and containerd-shim-runc-v2) driving capsule: run --rm, run -d, task ls/exec/ps/
pause/resume/kill/delete, capsule's own view of the container, and a memory limit.

The module starts a private containerd whose every file lives below one temporary directory (base):
config.toml, root, state, the gRPC and ttrpc sockets, the `opt` plugin's directory, TMPDIR, and its log.
The CRI plugin and the snapshotters that need special filesystems are disabled. ctr talks to it with
--address and a namespace of its own (capsule-test-<pid>); every container is started with
--runc-binary build/capsule, --runc-root <base>/runc (the shim then runs `capsule --root
<base>/runc/<namespace> ...`), --fifo-dir <base>/fifo and --cgroup <own>/capsule-ctr-<pid>/<id>,
below this process's own cgroup (the memory one on a v1/hybrid host, the 0:: one on pure v2).

The snapshotter is containerd's default, overlayfs: what containerd users get, and it works both on
this host's ext4 /tmp and on the testbed's tmpfs /tmp. The shim mounts the rootfs below base and
unmounts it when the task is deleted.

One thing containerd 1.6 writes outside base: each shim listens on /run/containerd/s/<sha256 of
"<address>/<namespace>/<id>"> (a fixed directory, whatever the config says), removing the socket when
it exits but never the directories. The shims also outlive containerd. Teardown stops containerd
(SIGTERM, then SIGKILL), kills what is left of our shims, checks that capsule's state, the mounts,
the container cgroups and our shim sockets are gone, removes what we created (base, the
capsule-ctr-<pid> cgroups and any ancestor that did not exist, /run/containerd/s and /run/containerd
if they did not exist), and fails if anything had been left behind.
"""
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

from conftest import CAPSULE, build_rootfs
from podman_env import (CGROUP_V2, CgroupParent, cgroup_dirs, cgroup_file, cgroup_of, kill_left_behind,
                        mounts_below, pid_alive, rmdir_unless_used, wait_for)
from test_terminal import read_until, spawn_under_pty

IMAGE = "localhost/capsule-busybox:test"
RUN_CONTAINERD = "/run/containerd"
SHIM_SOCKETS = f"{RUN_CONTAINERD}/s"
# A private containerd's own sockets and directories, below {base}; test_cri.py adds its CRI part.
SERVER_CONFIG = """\
[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""
CONFIG = """\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.zfs"]

""" + SERVER_CONFIG

LIMIT_FILE = "memory.max" if CGROUP_V2 else "memory.limit_in_bytes"
# ctr copies its terminal's size to the container's after starting the process: wait for it.
TTY_SCRIPT = ("for i in $(seq 100); do [ \"$(stty size)\" = '37 91' ] && break; sleep 0.1; done; "
              "tty; stty size; echo tty-done; exit {}")


def oci_image_archive(dest, ref=IMAGE, cmd=("/bin/sh",)):
    """An OCI image layout (oci-layout, index.json, blobs/sha256/...) as a tar, for `ctr images import`:
    one gzip layer with the busybox rootfs, a config (running cmd) and a manifest, named by the index
    annotation."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    with tempfile.TemporaryDirectory() as rootfs, tempfile.TemporaryDirectory() as layout:
        os.makedirs(os.path.join(layout, "blobs", "sha256"))

        def blob(data, media_type):
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
                f.write(data)
            return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

        build_rootfs(rootfs)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in sorted(os.listdir(rootfs)):
                tar.add(os.path.join(rootfs, name), arcname=name)
        layer_tar = buf.getvalue()
        layer = blob(gzip.compress(layer_tar, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
        config = blob(json.dumps({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": list(cmd), "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
        }).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = blob(json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": [layer],
        }).encode(), "application/vnd.oci.image.manifest.v1+json")
        manifest["annotations"] = {"org.opencontainers.image.ref.name": ref}
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [manifest]}, f)
        with tarfile.open(dest, "w") as tar:
            for name in sorted(os.listdir(layout)):
                tar.add(os.path.join(layout, name), arcname=name)


class Containerd:
    def __init__(self):
        self.pid = os.getpid()
        self.base = tempfile.mkdtemp(prefix="cctr-", dir="/tmp")
        for d in ("root", "state", "opt", "tmp", "fifo"):
            os.makedirs(os.path.join(self.base, d))
        self.sock = os.path.join(self.base, "containerd.sock")
        self.log = os.path.join(self.base, "containerd.log")
        self.ns = f"capsule-test-{self.pid}"
        self.runc_root = os.path.join(self.base, "runc")
        self.capsule_root = os.path.join(self.runc_root, self.ns)  # where the shim's --root points
        self.cgroup_parent = f"{cgroup_of().rstrip('/')}/capsule-ctr-{self.pid}"
        self.cgroup = CgroupParent(self.cgroup_parent)
        self.run_containerd_existed = os.path.isdir(RUN_CONTAINERD)
        self.shim_sockets_existed = os.path.isdir(SHIM_SOCKETS)
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "TMPDIR": os.path.join(self.base, "tmp")}
        self.ids = []
        self.proc = None
        self.runtime = CAPSULE  # the --runc-binary

    # the daemon

    def config(self):
        return CONFIG.format(base=self.base)

    def start(self):
        with open(os.path.join(self.base, "config.toml"), "w") as f:
            f.write(self.config())
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["containerd", "--config", os.path.join(self.base, "config.toml")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env,
                                         cwd=self.base, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (os.path.exists(self.sock) and self.run("version", check=False).returncode == 0):
            assert self.proc.poll() is None, f"containerd exited ({self.proc.returncode}):\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"containerd did not come up on {self.sock}:\n{self.log_tail()}"
            time.sleep(0.05)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines=40):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    # ctr

    def cmd(self, *args):
        return ["ctr", "--address", self.sock, "--namespace", self.ns] + [str(a) for a in args]

    def run(self, *args, check=True, timeout=60):
        # Files, not pipes: a detached container must not hold our pipe open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            rc = subprocess.run(self.cmd(*args), env=self.env, timeout=timeout, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, cwd=self.base).returncode
            out.seek(0)
            err.seek(0)
            p = subprocess.CompletedProcess(args, rc, out.read(), err.read())
        if check and p.returncode != 0:
            raise AssertionError(f"ctr {' '.join(map(str, args))} failed ({rc}): {p.stderr}\n"
                                 f"containerd log:\n{self.log_tail()}")
        return p

    def import_image(self):
        archive = os.path.join(self.base, "image.tar")
        oci_image_archive(archive)
        self.run("images", "import", archive, timeout=120)
        os.unlink(archive)
        assert IMAGE in self.run("images", "ls", "--quiet").stdout.split()

    def cgroup_path(self, cid):
        return f"{self.cgroup_parent}/{cid}"

    def run_args(self, cid, *opts):
        """`ctr run` options every container gets: capsule as the runtime, its root, FIFOs and cgroup."""
        self.ids.append(cid)
        return ["--runc-binary", self.runtime, "--runc-root", self.runc_root, "--fifo-dir", f"{self.base}/fifo",
                "--cgroup", self.cgroup_path(cid)] + list(opts)

    def run_detached(self, cid, *args, opts=()):
        self.run("run", "-d", *self.run_args(cid, *opts), IMAGE, cid, *args)
        return self.task(cid)

    def tasks(self):
        """`ctr task ls` as {id: (pid, status)}."""
        lines = self.run("task", "ls").stdout.splitlines()
        assert lines and lines[0].split() == ["TASK", "PID", "STATUS"], lines
        return {t: (int(pid), status) for t, pid, status in (ln.split() for ln in lines[1:])}

    def task(self, cid):
        return self.tasks().get(cid)

    def capsule_state(self, cid):
        p = subprocess.run([CAPSULE, "--root", self.capsule_root, "state", cid], capture_output=True, text=True)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def remove(self, cid):
        """SIGKILL, then delete task and container, as a containerd user would."""
        self.run("task", "kill", "-s", "SIGKILL", cid, check=False)
        wait_for(lambda: (self.task(cid) or (0, "STOPPED"))[1] == "STOPPED", what=f"{cid} to stop")
        self.run("task", "delete", cid, check=False)
        self.run("container", "delete", cid)

    # teardown

    def _shim_socket(self, cid):
        digest = hashlib.sha256(os.path.join(self.sock, self.ns, cid).encode()).hexdigest()
        return os.path.join(SHIM_SOCKETS, digest)

    def _our_processes(self):
        """Shims (and anything else but containerd) with our directory or namespace on their command line."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) in (self.pid, self.proc.pid if self.proc else None):
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = b"\0" + f.read()
            except OSError:
                continue
            if self.base.encode() in argv or f"\0{self.ns}\0".encode() in argv:
                pids.append(int(p))
        return pids

    def cleanup(self):
        """Stop everything and remove what we created; return what had been left behind."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            for cid in self.run("container", "ls", "--quiet", check=False).stdout.split():
                self.run("task", "delete", "--force", cid, check=False)
                self.run("container", "delete", cid, check=False)
            self.run("images", "rm", IMAGE, check=False)
            # The shims exit once their task is deleted, but not synchronously.
            try:
                wait_for(lambda: not self._our_processes(), what="the shims to exit")
            except AssertionError:
                pass
        self.stop()
        kill_left_behind(self._our_processes(), problems, lambda pid: f": {self._cmdline(pid)}")
        if os.path.isdir(self.capsule_root):
            for cid in os.listdir(self.capsule_root):
                problems.append(f"capsule state {self.capsule_root}/{cid} left behind")
                subprocess.run([CAPSULE, "--root", self.capsule_root, "delete", "--force", cid],
                               capture_output=True)
        for cid in self.ids:
            sock = self._shim_socket(cid)
            if os.path.lexists(sock):
                problems.append(f"shim socket {sock} (of {cid}) left behind")
                os.unlink(sock)
        for mp in mounts_below(self.base):
            problems.append(f"mount {mp} left behind")
            subprocess.run(["umount", "-l", mp], check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        for parent in cgroup_dirs(self.cgroup_parent):
            if not os.path.isdir(parent):
                continue
            for sub in sorted(os.listdir(parent)):
                d = os.path.join(parent, sub)
                if not os.path.isdir(d):
                    continue
                problems.append(f"container cgroup {d} left behind")
                with open(os.path.join(d, "cgroup.procs")) as f:
                    kill_left_behind(f.read().split(), problems, lambda pid: f" in {d}")
                try:
                    wait_for(lambda: not open(os.path.join(d, "cgroup.procs")).read().strip(),
                             what=f"{d} to empty")
                except AssertionError as e:
                    problems.append(str(e))
        self.cgroup.remove()
        problems += self._clean_run_containerd()
        return problems

    def _cmdline(self, pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return "(gone)"

    def _clean_run_containerd(self):
        """Our shims' sockets are gone (checked above). The directories they created stay: remove
        them when they are new and empty. If /run/containerd is new, all of it is ours: anything else
        there was left behind by us. If it is not, the rest belongs to another containerd."""
        problems = []
        if not self.run_containerd_existed and os.path.isdir(RUN_CONTAINERD):
            for name in sorted(os.listdir(RUN_CONTAINERD)):
                path = os.path.join(RUN_CONTAINERD, name)
                if path != SHIM_SOCKETS:
                    problems.append(f"{path} left behind")
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
        for d, existed in ((SHIM_SOCKETS, self.shim_sockets_existed), (RUN_CONTAINERD, self.run_containerd_existed)):
            # Unless another containerd's shims (or another copy of this module's) live there now.
            if not existed and os.path.isdir(d):
                rmdir_unless_used(d)
        return problems


def serve(make):
    """The fixture's body: make() a Containerd (or a subclass), start it with the image imported, yield it; then
    clean up and fail if anything had been left behind."""
    for prog in ("containerd", "ctr", "containerd-shim-runc-v2"):
        assert shutil.which(prog), f"{prog} is not installed: run scripts/install-deps"
    c = make()
    assert not any(os.path.isdir(d) for d in cgroup_dirs(c.cgroup_parent)), \
        f"cgroup {c.cgroup_parent} exists already"
    try:
        c.start()
        c.import_image()
        yield c
    finally:
        problems = c.cleanup()
    assert problems == []
    assert not os.path.exists(c.base)
    assert [d for d in cgroup_dirs(c.cgroup_parent) if os.path.isdir(d)] == []


@pytest.fixture(scope="module")
def ctrd():
    yield from serve(Containerd)


def run_under_pty(c, args, rc, timeout):
    """Run ctr on a 37x91 terminal of its own until TTY_SCRIPT is done; check its exit status and
    the terminal the container saw (a pty of the guest, of that size)."""
    p, master = spawn_under_pty(c.cmd(*args), rows=37, cols=91)
    out = ""
    try:
        out = read_until(master, "tty-done", timeout=timeout)
        assert p.wait(timeout=60) == rc, out
    except (AssertionError, subprocess.TimeoutExpired) as e:
        raise AssertionError(f"{e}\nctr said: {out!r}\ncontainerd log:\n{c.log_tail()}") from e
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = [ln.strip() for ln in out.splitlines()]
    assert [ln for ln in lines if ln.startswith("/dev/pts/")] and "37 91" in lines, out


def cgroup_gone(c, cid):
    return [d for d in cgroup_dirs(c.cgroup_path(cid)) if os.path.exists(d)] == []


def test_run_prints_output_and_returns_exit_code(ctrd):
    p = ctrd.run("run", "--rm", *ctrd.run_args("run-rm"), IMAGE, "run-rm",
                 "sh", "-c", "echo hello from capsule; echo pid=$$; exit 3", check=False)
    assert p.returncode == 3, f"{p.stderr}\n{ctrd.log_tail()}"
    assert p.stdout == "hello from capsule\npid=1\n"
    # --rm removed it from containerd, from capsule and from the cgroup tree
    assert "run-rm" not in ctrd.run("container", "ls", "--quiet").stdout.split()
    assert not os.path.exists(os.path.join(ctrd.capsule_root, "run-rm"))
    assert cgroup_gone(ctrd, "run-rm")


def test_detached_lifecycle(ctrd):
    cid = "lifecycle"
    pid, status = ctrd.run_detached(cid, "sleep", "1000")
    assert status == "RUNNING" and pid > 0
    assert os.path.isdir(os.path.join(ctrd.capsule_root, cid))
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read() == b"sleep\x001000\x00"
    # exec runs inside the container: its own pid namespace, where sleep is pid 1
    p = ctrd.run("task", "exec", "--fifo-dir", f"{ctrd.base}/fifo", "--exec-id", "e1", cid,
                 "sh", "-c", "echo pid=$$; tr '\\0' ' ' < /proc/1/cmdline; echo; exit 5", check=False)
    assert p.returncode == 5, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1] == "sleep 1000 ", p.stdout
    assert lines[0].startswith("pid=") and int(lines[0][4:]) > 1, p.stdout
    # a detached exec shows up in `task ps` next to the init process
    ctrd.run("task", "exec", "-d", "--fifo-dir", f"{ctrd.base}/fifo", "--exec-id", "e2", cid, "sleep", "999")

    def ps_pids():
        lines = ctrd.run("task", "ps", cid).stdout.splitlines()
        assert lines[0].split() == ["PID", "INFO"], lines
        return [int(ln.split()[0]) for ln in lines[1:]]

    pids = wait_for(lambda: len(ps_pids()) == 2 and ps_pids(), what="the exec in `task ps`")
    assert pid in pids
    exec_pid = [p for p in pids if p != pid][0]
    with open(f"/proc/{exec_pid}/cmdline", "rb") as f:
        assert f.read() == b"sleep\x00999\x00"
    # pause and resume
    ctrd.run("task", "pause", cid)
    assert ctrd.task(cid) == (pid, "PAUSED")
    assert ctrd.capsule_state(cid)["status"] == "paused"
    ctrd.run("task", "resume", cid)
    assert ctrd.task(cid) == (pid, "RUNNING")
    assert ctrd.capsule_state(cid)["status"] == "running"
    # kill: the task stops, with SIGKILL's status
    ctrd.run("task", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: ctrd.task(cid)[1] == "STOPPED", what="STOPPED")
    assert not pid_alive(pid)
    wait_for(lambda: not pid_alive(exec_pid), what="the exec to die with the container")
    p = ctrd.run("task", "delete", cid)
    assert "exit code 137" in p.stderr, p.stderr  # ctr reports the status it collected
    assert ctrd.task(cid) is None
    ctrd.run("container", "delete", cid)
    assert cid not in ctrd.run("container", "ls", "--quiet").stdout.split()
    # capsule's state and the container's cgroup are gone
    assert not os.path.exists(os.path.join(ctrd.capsule_root, cid))
    assert cgroup_gone(ctrd, cid)


def test_runtime_is_capsule(ctrd):
    cid = "state"
    pid, status = ctrd.run_detached(cid, "sleep", "1000")
    assert status == "RUNNING"
    st = ctrd.capsule_state(cid)
    assert st is not None, f"capsule has no state for {cid} in {ctrd.capsule_root}"
    assert st["id"] == cid
    assert st["status"] == "running"
    assert st["pid"] == pid
    assert st["bundle"] == os.path.join(ctrd.base, "state", "io.containerd.runtime.v2.task", ctrd.ns, cid)
    assert cgroup_of(pid) == ctrd.cgroup_path(cid)
    ctrd.remove(cid)
    assert ctrd.capsule_state(cid) is None


def test_memory_limit_reaches_cgroup(ctrd):
    cid = "memory"
    ctrd.run_detached(cid, "sleep", "1000", opts=["--memory-limit", str(64 << 20)])
    with open(cgroup_file(ctrd.cgroup_path(cid), LIMIT_FILE)) as f:
        assert int(f.read()) == 64 << 20
    # and holds: 32 MiB fit, a 100 MiB buffer gets the process OOM-killed
    for n, (size, rc) in enumerate([("32M", 0), ("100M", 137)]):
        p = ctrd.run("task", "exec", "--fifo-dir", f"{ctrd.base}/fifo", "--exec-id", f"dd{n}", cid,
                     "dd", "if=/dev/zero", "of=/dev/null", f"bs={size}", "count=1", check=False)
        assert p.returncode == rc, f"dd bs={size}: {p.stderr}"
    ctrd.remove(cid)
    assert cgroup_gone(ctrd, cid)


def test_tty_run_and_exec(ctrd):
    """ctr run -t and task exec -t: the shim's create and exec --detach with --console-socket, and
    the process file's "terminal" (no -t flag)."""
    run_under_pty(ctrd, ["run", "-t", "--rm", *ctrd.run_args("tty-run"), IMAGE, "tty-run", "sh", "-c",
                         TTY_SCRIPT.format(4)], 4, timeout=60)
    cid = "tty-exec"
    ctrd.run_detached(cid, "sleep", "1000")
    run_under_pty(ctrd, ["task", "exec", "-t", "--fifo-dir", f"{ctrd.base}/fifo", "--exec-id", "t1", cid,
                         "sh", "-c", TTY_SCRIPT.format(6)], 6, timeout=60)
    ctrd.remove(cid)
