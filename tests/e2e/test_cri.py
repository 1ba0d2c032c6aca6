"""Kubernetes' path: containerd's CRI plugin drives capsule as a RuntimeClass handler, and the runtime
answers the shim as runc does.

The first tests run capsule and runc side by side on the calls the shim and conmon make on containers
that have stopped or do not exist, and check the texts those clients parse (containerd's
checkKillError and task delete, podman's state check). The others drive containerd's CRI plugin as
kubelet does (see the comment above them).
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import BUILD, CAPSULE, Capsule
from podman_env import CgroupParent, cgroup_dirs, cgroup_of, mounts_below, pid_alive, rmdir_unless_used, wait_for
from test_containerd import IMAGE, SERVER_CONFIG, Containerd, oci_image_archive

RUNC = shutil.which("runc")
RUNTIMES = ["capsule", "runc"]  # the CRI handlers
# the runtime-level tests also run capsule's ASan+UBSan build
BINARIES = {"capsule": CAPSULE, "asan": os.path.join(BUILD, "asan", "capsule"), "runc": RUNC}


class Runtime(Capsule):
    def run(self, *args, **kw):
        p = super().run(*args, **kw)
        # an expected failure is no excuse for a sanitizer report
        assert "Sanitizer" not in p.stderr and "runtime error:" not in p.stderr, p.stderr
        return p


@pytest.fixture(params=list(BINARIES))
def runtime(request, tmp_path):
    assert RUNC, "runc is not installed: run scripts/install-deps"
    rt = Runtime(str(tmp_path / "state"), BINARIES[request.param])
    yield rt
    rt.cleanup()
    assert not os.path.isdir(rt.root) or os.listdir(rt.root) == []


def without_pid_namespace(bundle):
    """The container shares a pid namespace (here the host's, in a pod the pause container's): its
    init is not pid 1 there, so its exit does not take the other processes with it."""
    ns = bundle.config["linux"]["namespaces"]
    bundle.config["linux"]["namespaces"] = [n for n in ns if n["type"] != "pid"]


def wait_stopped(rt, cid):
    wait_for(lambda: rt.status(cid) == "stopped", what=f"{cid} to stop")


def test_kill_all_after_init_exit_signals_what_is_left(runtime, bundle):
    without_pid_namespace(bundle)
    bundle.set_args("sh", "-c", "sleep 1000 & echo $! > /left.pid")
    runtime.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    wait_stopped(runtime, bundle.id)
    with open(os.path.join(bundle.rootfs, "left.pid")) as f:
        left = int(f.read())
    assert pid_alive(left)
    # plain kill: init is gone, which the shim must read as "process already finished"
    p = runtime.run("kill", bundle.id, "KILL")
    assert p.returncode != 0
    assert "container not running" in p.stderr, p.stderr
    assert pid_alive(left)
    # --all: what is left in the cgroup gets the signal, and the call succeeds
    runtime.run("kill", "--all", bundle.id, "KILL", check=True)
    wait_for(lambda: not pid_alive(left), what=f"leftover {left} to die")
    # and again, with nothing left
    runtime.run("kill", "--all", bundle.id, "KILL", check=True)
    runtime.run("delete", bundle.id, check=True)


def test_kill_all_keeps_a_non_fatal_signal(runtime, bundle):
    """--all delivers the signal asked for, not SIGKILL: a leftover that traps TERM stays alive."""
    without_pid_namespace(bundle)
    bundle.set_args("sh", "-c", "sh -c 'trap \"echo got TERM > /term\" TERM; while :; do sleep 0.1; done' & "
                    "echo $! > /left.pid")
    runtime.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    wait_stopped(runtime, bundle.id)
    with open(os.path.join(bundle.rootfs, "left.pid")) as f:
        left = int(f.read())
    runtime.run("kill", "--all", bundle.id, "TERM", check=True)
    term = os.path.join(bundle.rootfs, "term")
    wait_for(lambda: os.path.exists(term) and open(term).read() == "got TERM\n", what="the trap to run")
    assert pid_alive(left)
    runtime.run("delete", "--force", bundle.id, check=True)
    wait_for(lambda: not pid_alive(left), what=f"leftover {left} to die with delete --force")


def test_kill_stopped_container_with_own_pid_namespace(runtime, bundle):
    bundle.set_args("true")
    runtime.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    wait_stopped(runtime, bundle.id)
    p = runtime.run("kill", bundle.id)
    assert p.returncode != 0 and "container not running" in p.stderr, p.stderr
    runtime.run("kill", "--all", bundle.id, "KILL", check=True)
    runtime.run("delete", bundle.id, check=True)


@pytest.mark.parametrize("all_", [False, True], ids=["init", "all"])
def test_sigkill_reaches_a_paused_container(runtime, bundle, all_):
    """A frozen task cannot die: SIGKILL to a paused container (its init, or with --all every
    process in its cgroup) thaws it, as runc does."""
    bundle.set_args("sleep", "1000")
    runtime.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    runtime.run("pause", bundle.id, check=True)
    assert runtime.status(bundle.id) == "paused"
    runtime.run("kill", *(["--all"] if all_ else []), bundle.id, "KILL", check=True)
    wait_stopped(runtime, bundle.id)
    runtime.run("delete", bundle.id, check=True)


@pytest.mark.parametrize("args", [["state"], ["kill"], ["kill", "--all"], ["delete"], ["pause"], ["resume"],
                                  ["ps"], ["exec"]])
def test_missing_container_does_not_exist(runtime, args):
    """containerd ignores a failed delete and kill, and podman a failed state, when the text says
    "does not exist"."""
    tail = ["/bin/true"] if args == ["exec"] else []
    p = runtime.run(*args, "no-such-ctr", *tail)
    assert p.returncode != 0
    assert "does not exist" in p.stderr, p.stderr


# ---- containerd's CRI plugin, driven as kubelet drives it ----
#
# A private containerd (test_containerd.Containerd: every file below one temporary directory) with the
# CRI plugin on, two runtime handlers of type io.containerd.runc.v2, "capsule" (BinaryName =
# build/capsule) and "runc", both with their state below that directory, and
# restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE; the CRI asks for -998 for the pause
# container). Network namespaces are bind-mounted below containerd's state directory
# (netns_mounts_under_state_dir), CNI binaries and configuration come from test-owned directories.
#
# The test speaks the CRI v1 gRPC API itself: tests/e2e/cri/runtime_v1.proto holds the messages it
# uses, compiled with protoc into a temporary directory when the module starts (so the generated
# code always matches the installed python3-protobuf, and nothing generated is kept in the tree);
# the calls go through grpc's channel.unary_unary with those messages' serializers.
#
# Images come from no registry: a pause image (a shell that reaps orphans, as pause does) and a
# workload image, both busybox, are written as OCI archives and imported with `ctr -n k8s.io images
# import`; the pause image is the plugin's sandbox_image.

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cri")
PAUSE_IMAGE = "localhost/capsule-pause:test"
PAUSE_CMD = ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"]
CNI_BIN = "/usr/lib/cni"
VAR_LIB_CNI = "/var/lib/cni"
RUN_NETNS = "/run/netns"

# CNI: containerd's CRI wants an address on eth0 for a pod with its own network namespace. The
# `static` IPAM plugin reports one without touching any namespace, and `loopback` brings the pod's lo
# up and passes that result on: no host interface, route or address is created. The address reported
# is the pod's own loopback one.
CNI_CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "capsule-test-lo",
    "plugins": [
        {"type": "static", "ipam": {"type": "static", "addresses": [{"address": "127.0.0.1/8"}]}},
        {"type": "loopback"},
    ],
}

CRI_CONFIG = """\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

""" + SERVER_CONFIG + """
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "capsule"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capsule]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capsule.options]
  BinaryName = "{capsule}"
  Root = "{base}/runc"
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{base}/runc"
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{base}/cni/bin"
  conf_dir = "{base}/cni/conf"
  max_conf_num = 1
"""


def load_cri_messages(tmp):
    """Compile runtime_v1.proto with protoc into tmp and import the generated module."""
    protoc = shutil.which("protoc")
    assert protoc, "protoc is not installed: run scripts/install-deps"
    subprocess.run([protoc, f"--proto_path={PROTO_DIR}", f"--python_out={tmp}", "runtime_v1.proto"],
                   check=True, capture_output=True, text=True)
    spec = importlib.util.spec_from_file_location("runtime_v1_pb2", os.path.join(tmp, "runtime_v1_pb2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CriClient:
    """runtime.v1.RuntimeService and ImageService over containerd's socket."""

    def __init__(self, sock, pb):
        import grpc
        self.grpc = grpc
        self.pb = pb
        self.channel = grpc.insecure_channel(f"unix://{sock}")

    def close(self):
        self.channel.close()

    def call(self, method, service="RuntimeService", deadline=60, **fields):
        request = getattr(self.pb, f"{method}Request")(**fields)
        stub = self.channel.unary_unary(f"/runtime.v1.{service}/{method}",
                                        request_serializer=type(request).SerializeToString,
                                        response_deserializer=getattr(self.pb, f"{method}Response").FromString)
        return stub(request, timeout=deadline)


class CriContainerd(Containerd):
    """test_containerd's private containerd, with the CRI plugin on, in containerd's k8s.io namespace."""

    def __init__(self):
        super().__init__()
        self.ns = "k8s.io"
        self.capsule_root = os.path.join(self.runc_root, self.ns)
        self.cgroup_parent = f"{cgroup_of().rstrip('/')}/capsule-cri-{self.pid}"
        self.cgroup = CgroupParent(self.cgroup_parent)
        self.cni_cache_existed = {d: os.path.isdir(d) for d in (VAR_LIB_CNI, os.path.join(VAR_LIB_CNI, "results"))}
        self.run_netns_existed = os.path.isdir(RUN_NETNS)
        self.client = None
        for d in ("cni/bin", "cni/conf", "logs"):
            os.makedirs(os.path.join(self.base, d))
        for plugin in ("static", "loopback"):
            os.symlink(os.path.join(CNI_BIN, plugin), os.path.join(self.base, "cni", "bin", plugin))
        with open(os.path.join(self.base, "cni", "conf", "10-capsule-test.conflist"), "w") as f:
            json.dump(CNI_CONFLIST, f)

    def config(self):
        return CRI_CONFIG.format(base=self.base, pause=PAUSE_IMAGE, capsule=CAPSULE, runc=RUNC)

    def import_images(self):
        for name, cmd in ((PAUSE_IMAGE, PAUSE_CMD), (IMAGE, ["/bin/sh"])):
            archive = os.path.join(self.base, "image.tar")
            oci_image_archive(archive, name, cmd)
            self.run("images", "import", archive, timeout=120)
            os.unlink(archive)

    def _our_processes(self):
        # Only what names our directory: the k8s.io namespace is not ours alone.
        return [pid for pid in super()._our_processes() if self.base in self._cmdline(pid)]

    def cleanup(self):
        # What a failed test left: pods go the CRI's way first (it unmounts their shm and netns).
        if self.client is not None and self.proc is not None and self.proc.poll() is None:
            for sandbox_id in self.ids:
                for method in ("StopPodSandbox", "RemovePodSandbox"):
                    try:
                        self.client.call(method, pod_sandbox_id=sandbox_id)
                    except self.client.grpc.RpcError:
                        pass
        problems = super().cleanup()
        # libcni keeps its result cache in /var/lib/cni/results (no setting moves it): each of our
        # entries (named after our network) goes with CNI DEL; the directories stay, ours if new.
        results = os.path.join(VAR_LIB_CNI, "results")
        if os.path.isdir(results):
            for name in os.listdir(results):
                if name.startswith(CNI_CONFLIST["name"] + "-"):
                    problems.append(f"CNI cache entry {results}/{name} left behind")
                    os.unlink(os.path.join(results, name))
        for d in (results, VAR_LIB_CNI):
            if not self.cni_cache_existed[d] and os.path.isdir(d):
                rmdir_unless_used(d)
        if not self.run_netns_existed and os.path.isdir(RUN_NETNS):
            problems.append(f"{RUN_NETNS} created")
            rmdir_unless_used(RUN_NETNS)
        return problems


def serve_cri(make):
    """The fixture's body: make() a CriContainerd, start it with the images imported and the CRI
    ready, yield it; then clean up and fail if anything had been left behind."""
    for prog in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        assert shutil.which(prog), f"{prog} is not installed: run scripts/install-deps"
    assert importlib.util.find_spec("grpc"), "python3-grpcio is not installed: run scripts/install-deps"
    for plugin in ("static", "loopback"):
        assert os.path.exists(os.path.join(CNI_BIN, plugin)), \
            f"CNI plugin {plugin} is not installed (containernetworking-plugins): run scripts/install-deps"
    with tempfile.TemporaryDirectory() as gen:
        pb = load_cri_messages(gen)
    c = make()
    assert not any(os.path.isdir(d) for d in cgroup_dirs(c.cgroup_parent)), f"cgroup {c.cgroup_parent} exists already"
    try:
        c.start()
        c.import_images()
        client = c.client = CriClient(c.sock, pb)

        def network_ready():
            conds = client.call("Status").status.conditions
            return {cond.type: cond.status for cond in conds}.get("NetworkReady")

        wait_for(network_ready, timeout=30, what=f"CRI NetworkReady:\n{c.log_tail()}")
        # the plugin learns of imported images from containerd's events
        for name in (PAUSE_IMAGE, IMAGE):
            wait_for(lambda: image_tags(client, name), what=f"the CRI to see {name}:\n{c.log_tail()}")
        yield c
    finally:
        problems = c.cleanup()
        if c.client is not None:
            c.client.close()
    assert problems == []
    assert not os.path.exists(c.base)
    assert [d for d in cgroup_dirs(c.cgroup_parent) if os.path.isdir(d)] == []


@pytest.fixture(scope="module")
def cri():
    yield from serve_cri(CriContainerd)


def image_tags(client, name):
    image = client.call("ImageStatus", service="ImageService", image=client.pb.ImageSpec(image=name)).image
    return list(image.repo_tags)


def test_cri_version_and_images(cri):
    v = cri.client.call("Version", version="v1")
    assert v.runtime_name == "containerd" and v.runtime_api_version == "v1"
    for name in (PAUSE_IMAGE, IMAGE):
        assert name in image_tags(cri.client, name)


def cri_log_lines(path):
    """The CRI log format: `<RFC 3339 time> <stdout|stderr> <F|P> <text>` per line."""
    entries = []
    with open(path) as f:
        for line in f.read().splitlines():
            ts, stream, tag, text = line.split(" ", 3)
            assert ts[:4].isdigit() and "T" in ts, line
            assert stream in ("stdout", "stderr") and tag in ("F", "P"), line
            entries.append((stream, text))
    return entries


def netns_inode(pid="self"):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def handler_state(cri, handler, cid):
    """(status, pid) as the handler's own binary reports from the root the shim gave it: capsule's
    and runc's state files differ, so this also tells which one runs the container."""
    binary = CAPSULE if handler == "capsule" else RUNC
    p = subprocess.run([binary, "--root", cri.capsule_root, "state", cid], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    state = json.loads(p.stdout)
    return state["status"], state["pid"]


def container_procs(cri, cid):
    files = [os.path.join(d, "cgroup.procs") for d in cgroup_dirs(f"{cri.cgroup_parent}/{cid}")]
    return sorted({int(p) for f in files if os.path.exists(f) for p in open(f).read().split()})


def netns_mounts(cri):
    return {m for m in mounts_below(cri.base) if "/netns/" in m}


def shim_pids(cri, sandbox_id):
    return [pid for pid in cri._our_processes() if sandbox_id in cri._cmdline(pid)]


@pytest.mark.parametrize("network", ["host", "pod"])
@pytest.mark.parametrize("handler", RUNTIMES)
def test_pod_lifecycle(cri, handler, network):
    pb = cri.client.pb
    call = cri.client.call
    name = f"{handler}-{network}"
    ns_mode = pb.NODE if network == "host" else pb.POD
    log_dir = os.path.join(cri.base, "logs", name)
    sandbox_config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="capsule-test"),
        hostname="" if network == "host" else name,
        log_directory=log_dir,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cri.cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=ns_mode, pid=pb.POD, ipc=pb.POD))))

    netns_before = netns_mounts(cri)
    sandbox_id = call("RunPodSandbox", config=sandbox_config, runtime_handler=handler).pod_sandbox_id
    cri.ids.append(sandbox_id)
    status = call("PodSandboxStatus", pod_sandbox_id=sandbox_id, verbose=True)
    assert status.status.state == pb.SANDBOX_READY
    assert status.status.runtime_handler == handler
    assert status.status.network.ip == ("" if network == "host" else "127.0.0.1")
    pause_pid = json.loads(status.info["info"])["pid"]
    assert handler_state(cri, handler, sandbox_id) == ("running", pause_pid)

    # The workload leaves a child behind when it is stopped: it shares the pod's pid namespace, so
    # its init's death does not take the child along, and the shim's `kill --all` must.
    script = ("echo hello from the pod; echo to stderr >&2; sleep 1000 & "
              "while :; do sleep 1; done")
    container_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="work"),
        image=pb.ImageSpec(image=IMAGE),
        command=["sh", "-c", script],
        envs=[pb.KeyValue(key="GREETING", value="hi there")],
        log_path="work.log",
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=ns_mode, pid=pb.POD, ipc=pb.POD))))
    cid = call("CreateContainer", pod_sandbox_id=sandbox_id, config=container_config,
               sandbox_config=sandbox_config).container_id
    assert call("ContainerStatus", container_id=cid).status.state == pb.CONTAINER_CREATED
    call("StartContainer", container_id=cid)
    st = call("ContainerStatus", container_id=cid, verbose=True)
    assert st.status.state == pb.CONTAINER_RUNNING
    init_pid = json.loads(st.info["info"])["pid"]
    assert handler_state(cri, handler, cid) == ("running", init_pid)

    # ExecSync: output, exit codes, and the pod's namespaces
    r = call("ExecSync", container_id=cid, cmd=["sh", "-c", "echo $GREETING; echo oops >&2; exit 7"], timeout=30)
    assert (r.stdout, r.stderr, r.exit_code) == (b"hi there\n", b"oops\n", 7)
    r = call("ExecSync", container_id=cid, cmd=["cat", "/proc/1/cmdline"], timeout=30)
    assert r.stdout.split(b"\0")[:-1] == [a.encode() for a in PAUSE_CMD], r  # pid 1 is the pause container
    r = call("ExecSync", container_id=cid, cmd=["ip", "-o", "link"], timeout=30)
    assert r.exit_code == 0, r.stderr
    if network == "host":
        assert netns_inode(init_pid) == netns_inode()
    else:
        assert netns_inode(init_pid) != netns_inode()
        assert netns_inode(init_pid) == netns_inode(pause_pid)
        # loopback brought lo up; nothing else is (a kernel may add its own down tunnel devices, sit0...)
        link_re = re.compile(r"^\d+: ([^:@]+)(?:@\S+)?: <([^>]*)>", re.M)
        flags = {m[1]: m[2].split(",") for m in link_re.finditer(r.stdout.decode())}
        assert "UP" in flags["lo"], r.stdout
        assert [link for link, f in flags.items() if link != "lo" and "UP" in f] == [], r.stdout
    r = call("ExecSync", container_id=cid, cmd=["sh", "-c", "exit 0"], timeout=30)
    assert (r.stdout, r.stderr, r.exit_code) == (b"", b"", 0)

    # the container log, in the CRI format
    log = os.path.join(log_dir, "work.log")
    assert call("ContainerStatus", container_id=cid).status.log_path == log
    wait_for(lambda: os.path.exists(log) and len(cri_log_lines(log)) >= 2, what="the container log")
    assert sorted(cri_log_lines(log)) == [("stderr", "to stderr"), ("stdout", "hello from the pod")]

    procs = wait_for(lambda: len(container_procs(cri, cid)) >= 2 and container_procs(cri, cid),
                     what="sh and its sleeps in the container's cgroup")
    assert init_pid in procs

    # StopContainer: TERM to init, then the shim's kill --all for what is left
    call("StopContainer", container_id=cid, timeout=10)
    st = call("ContainerStatus", container_id=cid).status
    assert st.state == pb.CONTAINER_EXITED
    assert st.exit_code == 128 + signal.SIGTERM, f"{st}\n{cri.log_tail(80)}"
    for pid in procs:
        wait_for(lambda: not pid_alive(pid), what=f"container process {pid} to die")
    call("RemoveContainer", container_id=cid)
    assert not os.path.exists(os.path.join(cri.capsule_root, cid))
    assert [d for d in cgroup_dirs(f"{cri.cgroup_parent}/{cid}") if os.path.isdir(d)] == []

    # kubelet's default for a pod: each container in a pid namespace of its own, where it is pid 1
    # (so SIGTERM needs a trap) and its exit takes everything in that namespace along
    solo_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="solo"),
        image=pb.ImageSpec(image=IMAGE),
        command=["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & while :; do sleep 1; done"],
        log_path="solo.log",
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=ns_mode, pid=pb.CONTAINER, ipc=pb.POD))))
    solo = call("CreateContainer", pod_sandbox_id=sandbox_id, config=solo_config,
                sandbox_config=sandbox_config).container_id
    call("StartContainer", container_id=solo)
    solo_pid = json.loads(call("ContainerStatus", container_id=solo, verbose=True).info["info"])["pid"]
    solo_procs = wait_for(lambda: len(container_procs(cri, solo)) >= 2 and container_procs(cri, solo),
                          what="sh and its sleeps in the container's cgroup")
    assert solo_pid in solo_procs
    r = call("ExecSync", container_id=solo, cmd=["cat", "/proc/1/cmdline"], timeout=30)
    assert r.exit_code == 0 and r.stdout.split(b"\0")[2].startswith(b"trap 'exit 0' TERM"), r.stdout
    assert netns_inode(solo_pid) == netns_inode(pause_pid)
    call("StopContainer", container_id=solo, timeout=10)
    st = call("ContainerStatus", container_id=solo).status
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 0), f"{st}\n{cri.log_tail(80)}"
    for pid in solo_procs:
        wait_for(lambda: not pid_alive(pid), what=f"container process {pid} to die")
    call("RemoveContainer", container_id=solo)
    assert not os.path.exists(os.path.join(cri.capsule_root, solo))
    assert [d for d in cgroup_dirs(f"{cri.cgroup_parent}/{solo}") if os.path.isdir(d)] == []

    # and the pod
    call("StopPodSandbox", pod_sandbox_id=sandbox_id)
    assert call("PodSandboxStatus", pod_sandbox_id=sandbox_id).status.state == pb.SANDBOX_NOTREADY
    assert not pid_alive(pause_pid)
    call("RemovePodSandbox", pod_sandbox_id=sandbox_id)
    wait_for(lambda: not shim_pids(cri, sandbox_id), what="the pod's shim to exit")
    assert not os.path.exists(os.path.join(cri.capsule_root, sandbox_id))
    assert [d for d in cgroup_dirs(f"{cri.cgroup_parent}/{sandbox_id}") if os.path.isdir(d)] == []
    assert [m for m in mounts_below(cri.base) if sandbox_id in m or cid in m or solo in m] == []
    assert netns_mounts(cri) - netns_before == set()
    assert not os.path.exists(cri._shim_socket(sandbox_id))
