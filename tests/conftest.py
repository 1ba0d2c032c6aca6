"""Shared fixtures: the capsule binary, a temporary --root, and busybox bundles."""
import json
import os
import shutil
import subprocess
import itertools
import tempfile
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build")
CAPSULE = os.environ.get("CAPSULE", os.path.join(BUILD, "capsule"))
BUSYBOX = "/bin/busybox"
_ids = itertools.count()


def own_cgroup(controller):
    """The caller's cgroup in one v1 hierarchy (or "" for the unified one)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return path
    return None


def own_cgroup_dirs(name):
    """name below the caller's own cgroup in every mounted hierarchy."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split()[:3]
            if fstype == "cgroup2":
                mounts[""] = left.split()[4]
            elif fstype == "cgroup":
                for o in opts.split(","):
                    mounts.setdefault(o, left.split()[4])
    dirs = set()
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            mount = mounts.get(ctrls.split(",")[0])
            if mount:
                dirs.add(os.path.join(mount + path.rstrip("/"), name))
    return sorted(dirs)


def procs_cgroup_dir(rel):
    """rel below our own cgroup in the hierarchy that lists a container's processes: the v1
    pids hierarchy, or the unified one on a pure cgroup v2 host."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return os.path.join("/sys/fs/cgroup" + own_cgroup("").rstrip("/"), rel)
    return os.path.join("/sys/fs/cgroup/pids" + own_cgroup("pids").rstrip("/"), rel)


@pytest.fixture(scope="session", autouse=True)
def remove_shared_cgroup_parent():
    """Bundles share the parent cgroup "capsule-test". capsule removes a parent it made only
    when it is the last user; when a sibling that found it existing goes last, it stays (as
    with runc). Remove it at the end, if empty: rmdir fails while any container uses it."""
    yield
    for d in own_cgroup_dirs("capsule-test"):
        try:
            os.rmdir(d)
        except OSError:
            pass


def build_rootfs(dest):
    """A minimal rootfs: busybox-static and its applets, plus the usual directories."""
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "root", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = os.path.join(dest, "bin", a)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory):
    d = tmp_path_factory.mktemp("rootfs-template") / "rootfs"
    build_rootfs(str(d))
    return str(d)


# A sanitizer report is always a test failure, also on error paths where the test expects a non-zero
# exit: the build/asan binary exits SANITIZER_EXIT after one, a status capsule itself never uses.
SANITIZER_EXIT = 86
SANITIZER_ENV = {"ASAN_OPTIONS": f"exitcode={SANITIZER_EXIT}:detect_leaks=1:abort_on_error=0",
                 "UBSAN_OPTIONS": f"exitcode={SANITIZER_EXIT}:halt_on_error=1:print_stacktrace=1"}
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def assert_no_sanitizer_report(returncode, stderr, what):
    found = [m for m in SANITIZER_MARKERS if m in stderr]
    assert returncode != SANITIZER_EXIT and not found, \
        f"sanitizer report from capsule {' '.join(map(str, what))} (exit {returncode}):\n{stderr[-6000:]}"


class Capsule:
    """Runs build/capsule with a private --root and cleans up whatever is left."""

    def __init__(self, root, binary=CAPSULE):
        self.root = root
        self.binary = binary

    def cmd(self, *args, **kw):
        return [self.binary, "--root", self.root] + [str(a) for a in args]

    def run(self, *args, check=False, timeout=60, **kw):
        kw["env"] = dict(kw.get("env") or os.environ, **SANITIZER_ENV)
        # Files, not pipes: a detached container inherits stdio and would keep a pipe open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            rc = subprocess.run(self.cmd(*args), timeout=timeout, stdout=out, stderr=err, **kw).returncode
            out.seek(0)
            err.seek(0)
            p = subprocess.CompletedProcess(args, rc, out.read(), err.read())
        assert_no_sanitizer_report(p.returncode, p.stderr, args)
        if check and p.returncode != 0:
            raise AssertionError(f"capsule {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
        return p

    def state(self, cid):
        p = self.run("state", cid, check=True)
        return json.loads(p.stdout)

    def status(self, cid):
        return self.state(cid)["status"]

    def cleanup(self):
        if not os.path.isdir(self.root):
            return
        for cid in os.listdir(self.root):
            self.run("delete", "--force", cid)


def pytest_generate_tests(metafunc):
    """Modules that set ALSO_UNDER_ASAN = True run each test also with the ASan+UBSan build."""
    if "capsule_binary" in metafunc.fixturenames:
        variants = ["normal"] + (["asan"] if getattr(metafunc.module, "ALSO_UNDER_ASAN", False) else [])
        metafunc.parametrize("capsule_binary", variants, indirect=True)


@pytest.fixture
def capsule_binary(request):
    if request.param == "asan":
        return os.path.join(BUILD, "asan", "capsule")
    return CAPSULE


@pytest.fixture
def capsule(tmp_path, capsule_binary):
    c = Capsule(str(tmp_path / "state"), capsule_binary)
    yield c
    c.cleanup()
    leftover = os.listdir(c.root) if os.path.isdir(c.root) else []
    assert leftover == [], f"containers left behind: {leftover}"


class Bundle:
    def __init__(self, path, config):
        self.path = path
        self.config = config
        self.id = f"t{os.getpid()}-{next(_ids)}"

    @property
    def rootfs(self):
        return os.path.join(self.path, "rootfs")

    def write(self):
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(self.config, f, indent=2)
        return self

    def set_args(self, *args):
        self.config["process"]["args"] = list(args)
        return self.write()


@pytest.fixture
def bundle(tmp_path, rootfs_template):
    """A busybox bundle from `capsule spec`, with no terminal and a cgroup below ours."""
    path = tmp_path / "bundle"
    path.mkdir()
    shutil.copytree(rootfs_template, path / "rootfs", symlinks=True)
    subprocess.run([CAPSULE, "spec", "--bundle", str(path)], check=True)
    with open(path / "config.json") as f:
        config = json.load(f)
    b = Bundle(str(path), config)
    config["process"]["terminal"] = False
    config["root"]["readonly"] = False
    config["linux"]["cgroupsPath"] = f"capsule-test/{b.id}"
    b.write()
    return b


INCIDENTS = os.path.join(BUILD, "testbed", "incidents.log")


def pytest_configure(config):
    config.addinivalue_line("markers", "testbed: boots the QEMU TCG testbed (tests/testbed/run)")
    try:
        config.capsule_incidents_from = os.path.getsize(INCIDENTS)
    except OSError:
        config.capsule_incidents_from = 0


def pytest_terminal_summary(terminalreporter, config):
    """The testbed runs repeated because the testbed's own kernel panicked (tests/testbed/run) or a
    guest kernel crashed under the nested KVM (tests/testbed/nested.py): not failures, never silent."""
    if hasattr(config, "workerinput"):
        return
    try:
        with open(INCIDENTS, "rb") as f:
            f.seek(config.capsule_incidents_from)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return
    count = sum(1 for line in lines if line and not line.startswith(" "))  # indented: a crash's console
    if count:
        terminalreporter.section(f"testbed incidents: {count} run(s) repeated after a crash outside capsule")
        for line in lines:
            terminalreporter.line(line)


# src/sandbox/sandbox_internal.h's SANDBOX_GUEST_DEATH: what capsule writes in a VM container's
# vmm.log when its guest reset, panicked or triple-faulted.
GUEST_DEATH = "the VM ended: "


def guest_deaths(item):
    """The guest deaths in the vmm.log of each VM container below the state roots of item's
    fixtures (a Capsule's root, a client's capsule_root)."""
    found = []
    for value in getattr(item, "funcargs", {}).values():
        root = value.root if isinstance(value, Capsule) else getattr(value, "capsule_root", None)
        if not isinstance(root, str) or not os.path.isdir(root):
            continue
        for cid in sorted(os.listdir(root)):
            try:
                with open(os.path.join(root, cid, "vmm.log"), errors="replace") as f:
                    found += [f"{cid}: {line.strip()}" for line in f if GUEST_DEATH in line]
            except OSError:
                continue
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test whose VM container's guest died carries capsule's words for it, so that
    tests/testbed/inner.py repeats it even when the assert that failed (a status, say) said
    nothing of the guest: under the testbed's nested KVM guests die now and then on their own."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        deaths = guest_deaths(item)
        if deaths:
            report.longrepr = report.longreprtext + "\n\nvmm.log:\n" + "\n".join(deaths)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's --dist loadgroup (tests/run): every test on the host shares one
    worker, in order, as if run alone; each testbed file is a group of its own, since a testbed
    is a separate VM that the other worker's tests do not disturb. tryfirst: xdist reads the
    groups in its own hook of this name."""
    for item in items:
        testbed = item.get_closest_marker("testbed") is not None
        group = item.module.__name__ if testbed else "host"
        item.add_marker(pytest.mark.xdist_group(group))
