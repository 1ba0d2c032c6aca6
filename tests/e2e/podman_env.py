"""A private podman installation that drives build/capsule.

Everything podman writes goes below one temporary directory: storage (vfs), run root, libpod's tmpdir
(file locks instead of /dev/shm/libpod_lock, events, exit files), network config (CNI backend; containers
use --network none) and TMPDIR. Two things podman would still write on the host are kept private:
`podman import` records blobs in /var/lib/containers/cache (root ignores the graph root there), so it runs
in a private mount namespace with an empty /var/lib bound over the real one; and the default ulimits are
lowered to what this process may set (it lacks CAP_SYS_RESOURCE).

podman has no way to pass --root to the runtime for `podman container cleanup` (conmon's exit command
drops --runtime-flag), so capsule keeps its state in its default root, /run/capsule; each container's
entry there is checked to be gone at teardown.

cgroups go below this process's own cgroup: on a pure cgroup v2 host (/sys/fs/cgroup is cgroup2fs) the
one in /proc/self/cgroup's "0::" line, in the unified hierarchy mounted there; otherwise the memory cgroup,
in every hierarchy (the others are at their root, so the same path is below them too). The parent,
conmon's cgroup and any ancestor podman had to create are removed at teardown.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

from conftest import CAPSULE, build_rootfs

CAPSULE_ROOT = "/run/capsule"
IMAGE = "localhost/capsule-busybox:test"
CGROUP_FS = "/sys/fs/cgroup"
CGROUP_V2 = subprocess.run(["stat", "-f", "-c", "%T", CGROUP_FS], capture_output=True, text=True,
                           check=True).stdout.strip() == "cgroup2fs"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=10000:10000"]
log_driver = "k8s-file"
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
tmp_dir = "{base}/libpod"
volume_path = "{base}/volumes"

[network]
network_backend = "cni"
network_config_dir = "{base}/netconf"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{base}/root"
runroot = "{base}/runroot"
"""


_sessions = [0]


def podman_session(image_tar, prefix, cls=None):
    """For a fixture (yield from): a private podman with the busybox image imported, and, at the
    end, nothing of it left: no process, mount, cgroup or file."""
    _sessions[0] += 1
    pm = (cls or Podman)(image_tar, f"{prefix}-{os.getpid()}-{_sessions[0]}")
    try:
        pm.import_image()
        yield pm
    finally:
        problems = pm.cleanup()
    # Not a test module: pytest does not rewrite these asserts, so each names what it found.
    assert problems == [], problems
    leftovers = pm.cgroup_leftovers()
    assert leftovers == [], leftovers
    assert not os.path.exists(pm.base), f"{pm.base} is left"


def build_rootfs_tar(dest_tar):
    """A busybox rootfs as an uncompressed tarball, for `podman import`."""
    with tempfile.TemporaryDirectory() as d:
        build_rootfs(d)
        with tarfile.open(dest_tar, "w") as tar:
            for name in sorted(os.listdir(d)):
                tar.add(os.path.join(d, name), arcname=name)


def cgroup_of(pid="self"):
    """pid's cgroup path in the hierarchy that holds our cgroups: the unified one on pure v2, else memory."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if CGROUP_V2 and hid == "0" and ctrls == "":
                return path
            if not CGROUP_V2 and "memory" in ctrls.split(","):
                return path
    raise AssertionError(f"/proc/{pid}/cgroup has no {'0::' if CGROUP_V2 else 'memory'} line")


def cgroup_file(rel, name):
    """The path of interface file name of cgroup rel (as cgroup_of gives it) in that hierarchy."""
    hierarchy = CGROUP_FS if CGROUP_V2 else f"{CGROUP_FS}/memory"
    return f"{hierarchy}{rel.rstrip('/')}/{name}"


def cgroup_hierarchies():
    """Mount points of every cgroup hierarchy: /sys/fs/cgroup itself on pure v2, else the v1
    controllers, named ones and the unified one below it."""
    if CGROUP_V2:
        return [CGROUP_FS]
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2") and fields[4].startswith(CGROUP_FS + "/"):
                mounts.append(fields[4])
    return sorted(set(mounts))


def mounts_below(path):
    """Mount points at or below path, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def rmdir_tree(path):
    """Remove a cgroup directory and its children (cgroup dirs hold only virtual files)."""
    if not os.path.isdir(path):
        return
    for top, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            os.rmdir(os.path.join(top, d))
    os.rmdir(path)


def wait_for(pred, timeout=10, what="condition"):
    """Poll pred until it returns something true (which is returned), or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill_left_behind(pids, problems, where=lambda pid: ""):
    """SIGKILL processes a teardown found still running, each reported in problems."""
    for pid in pids:
        problems.append(f"process {pid} still running{where(pid)}")
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def rmdir_unless_used(d):
    """Remove the directory d we created, unless someone else started using it meanwhile: theirs now."""
    try:
        os.rmdir(d)
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise


def cgroup_dirs(rel):
    """rel (a path as cgroup_of gives it) in every hierarchy."""
    return [os.path.join(h, rel.lstrip("/")) for h in cgroup_hierarchies()]


class CgroupParent:
    """The cgroup a test client puts its containers below, in every hierarchy: remove() takes it away
    with each ancestor that did not exist when the client was set up."""

    def __init__(self, rel):
        self.rel = rel
        parts = rel.strip("/").split("/")
        self.ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
        self.existing = {d for a in self.ancestors + [rel] for d in cgroup_dirs(a) if os.path.isdir(d)}

    def leftovers(self):
        return [d for d in cgroup_dirs(self.rel) if os.path.isdir(d)]

    def remove(self):
        for d in cgroup_dirs(self.rel):
            if d not in self.existing:
                rmdir_tree(d)
        for a in reversed(self.ancestors):
            for d in cgroup_dirs(a):
                if d not in self.existing and os.path.isdir(d):
                    rmdir_unless_used(d)


class Podman:
    def __init__(self, image_tar, name):
        self.base = tempfile.mkdtemp(prefix="cpm-", dir="/tmp")
        for d in ("libpod", "volumes", "netconf", "root", "runroot", "tmp", "varlib"):
            os.makedirs(os.path.join(self.base, d))
        self.conf = os.path.join(self.base, "containers.conf")
        with open(self.conf, "w") as f:
            f.write(CONTAINERS_CONF.format(base=self.base))
        self.storage_conf = os.path.join(self.base, "storage.conf")
        with open(self.storage_conf, "w") as f:
            f.write(STORAGE_CONF.format(base=self.base))
        self.registries_conf = os.path.join(self.base, "registries.conf")
        open(self.registries_conf, "w").close()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": self.base,
            "CONTAINERS_CONF": self.conf,
            "CONTAINERS_STORAGE_CONF": self.storage_conf,
            "CONTAINERS_REGISTRIES_CONF": self.registries_conf,
            "TMPDIR": os.path.join(self.base, "tmp"),
        }
        self.cgroup_parent = f"{cgroup_of().rstrip('/')}/{name}"
        self.cgroup = CgroupParent(self.cgroup_parent)
        self.capsule_root_existed = os.path.isdir(CAPSULE_ROOT)
        self.capsule_root = CAPSULE_ROOT  # where tests/conftest.py looks for a guest's death
        self.ids = []
        self.image_tar = image_tar

    def global_args(self):
        b = self.base
        return ["podman", "--root", f"{b}/root", "--runroot", f"{b}/runroot", "--tmpdir", f"{b}/libpod",
                "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "--network-backend", "cni", "--network-config-dir", f"{b}/netconf", "--runtime", CAPSULE]

    def cmd(self, *args):
        return self.global_args() + [str(a) for a in args]

    def run(self, *args, check=True, timeout=180, input=None):
        # timeout: a hung command fails; 180 s because the first podman command of a fresh store,
        # inside the TCG testbed with another testbed beside it (make check), took over 60.
        # Files, not pipes: conmon of a detached container would otherwise hold a pipe open.
        # cwd: conmon writes an `oom` file into its working directory when the container is OOM-killed.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            rc = subprocess.run(self.cmd(*args), env=self.env, timeout=timeout, stdout=out, stderr=err, cwd=self.base,
                                stdin=subprocess.DEVNULL if input is None else None, input=input,
                                text=True).returncode
            out.seek(0)
            err.seek(0)
            p = subprocess.CompletedProcess(args, rc, out.read(), err.read())
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(map(str, args))} failed ({rc}): {p.stderr}")
        return p

    def import_image(self):
        # /var/lib/containers/cache would be written on the host: give podman an empty /var/lib
        # (mount -n: no /run/mount/utab on the host either).
        script = 'mount -n --make-rprivate / && mount -n --bind "$1" /var/lib && shift && exec "$@"'
        argv = ["unshare", "-m", "sh", "-c", script, "sh", os.path.join(self.base, "varlib")]
        argv += self.cmd("import", "--change", "CMD=/bin/sh", self.image_tar, IMAGE)
        p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"podman import failed: {p.stderr}"

    def container_args(self, *extra):
        """Options every container gets: no network, cgroups below ours."""
        return ["--network", "none", "--cgroup-parent", self.cgroup_parent] + list(extra)

    def create_detached(self, *args, opts=()):
        p = self.run("run", "-d", *self.container_args(*opts), IMAGE, *args)
        cid = p.stdout.strip().splitlines()[-1]
        self.ids.append(cid)
        return cid

    def inspect(self, cid):
        return json.loads(self.run("inspect", cid).stdout)[0]

    def capsule_state(self, cid):
        p = subprocess.run([CAPSULE, "--root", CAPSULE_ROOT, "state", cid], capture_output=True, text=True)
        return json.loads(p.stdout) if p.returncode == 0 else None

    wait_for = staticmethod(wait_for)

    def cgroup_leftovers(self):
        return self.cgroup.leftovers()

    # teardown

    def _our_processes(self):
        """conmon (and anything else) still running with our directory on its command line."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if self.base.encode() in f.read():
                        pids.append(int(p))
            except OSError:
                pass
        return pids

    def cleanup(self):
        """Remove containers, images, storage, mounts and cgroups; return what had been left behind."""
        problems = []
        self.run("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        self.run("rmi", "--all", "--force", check=False, timeout=120)
        kill_left_behind(self._our_processes(), problems)
        for cid in self.ids:
            st = os.path.join(CAPSULE_ROOT, cid)
            if os.path.exists(st):
                problems.append(f"capsule state {st} left behind")
                subprocess.run([CAPSULE, "--root", CAPSULE_ROOT, "delete", "--force", cid], capture_output=True)
        for mp in mounts_below(self.base):
            problems.append(f"mount {mp} left behind")
            subprocess.run(["umount", "-l", mp], check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        left = self.cgroup_leftovers()
        # The container cgroups must be gone; conmon's (podman's, not capsule's) and the parent stay.
        busy = [d for d in left if os.path.exists(os.path.join(d, "cgroup.procs"))
                and open(os.path.join(d, "cgroup.procs")).read().strip()]
        for d in left:
            for sub in os.listdir(d):
                if sub.startswith("libpod-") and os.path.isdir(os.path.join(d, sub)):
                    problems.append(f"container cgroup {d}/{sub} left behind")
        if busy:
            problems.append(f"cgroups still in use: {busy}")
        self.cgroup.remove()
        if not self.capsule_root_existed:
            try:
                os.rmdir(CAPSULE_ROOT)
            except OSError:
                pass
        return problems
