"""VM containers refused at create on this host, each with one line, exit status 1 and nothing left
behind (no state directory, no cgroup): a missing guest kernel or agent initrd, KVM unavailable, a
PVM host, and hostile or out-of-range sizing annotations. The VM's own lifecycle boots Linux and is
tested in the testbed (tests/testbed/test_sandbox.py)."""
import os
import shutil
import stat
import subprocess

import pytest

from conftest import CAPSULE, procs_cgroup_dir

PVM = os.path.isdir("/sys/module/kvm_pvm") and not any(
    os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))
PREFIX = "capsule: cannot run a VM container: "


@pytest.fixture
def vm_bin(tmp_path):
    """A copy of capsule with a (fake) kernel and agent initrd next to it: every check before KVM passes."""
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(CAPSULE, d / "capsule")
    os.symlink("capsule", d / "capsule-vm")
    (d / "capsule-vmlinux").write_bytes(b"\0" * 4096)
    (d / "capsule-guest.initrd").write_bytes(b"\0" * 512)
    return d


def create(root, bundle, *flags, binary=CAPSULE, env=None, wrap=()):
    env = dict(os.environ if env is None else env)
    return subprocess.run([*wrap, str(binary), "--root", str(root), *flags, "create", "--bundle", bundle.path, bundle.id],
                          capture_output=True, text=True, env=env, timeout=60)


def assert_refused(p, root, bundle, message):
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("\n") == 1 and p.stdout == ""
    assert p.stderr.strip() == message or p.stderr.startswith(message), p.stderr
    assert not os.path.exists(root) or os.listdir(root) == []
    assert not os.path.exists(procs_cgroup_dir(f"capsule-test/{bundle.id}"))


def no_kernel_env(tmp_path):
    return dict(os.environ, CAPSULE_KERNEL=str(tmp_path / "no-such-kernel"))


def test_missing_kernel(tmp_path, bundle):
    root = tmp_path / "root"
    p = create(root, bundle, "--vm", env=no_kernel_env(tmp_path))
    assert_refused(p, root, bundle, PREFIX + f"$CAPSULE_KERNEL: VM kernel `{tmp_path}/no-such-kernel` does not exist")


@pytest.mark.parametrize("selected_by", ["--vm", "capsule-vm", "annotation"])
def test_default_kernel_next_to_the_binary(tmp_path, bundle, vm_bin, selected_by):
    """Next to the installed binary, however the VM was selected: capsule-vm and --vm run from it,
    the annotation's create from a sealed copy. A CAPSULE_EXE_DIR in the caller's environment
    does not move it."""
    (vm_bin / "capsule-vmlinux").unlink()
    env = dict(os.environ, CAPSULE_EXE_DIR=str(tmp_path))
    env.pop("CAPSULE_KERNEL", None)
    root = tmp_path / "root"
    flags, binary = {"--vm": (["--vm"], "capsule"), "capsule-vm": ([], "capsule-vm"), "annotation": ([], "capsule")}[selected_by]
    if selected_by == "annotation":
        bundle.config["annotations"] = {"run.oci.handler": "vm"}
        bundle.write()
    p = create(root, bundle, *flags, binary=vm_bin / binary, env=env)
    assert_refused(p, root, bundle, PREFIX + f"VM kernel `{vm_bin}/capsule-vmlinux` does not exist")


def test_missing_initrd(tmp_path, bundle, vm_bin):
    (vm_bin / "capsule-guest.initrd").unlink()
    root = tmp_path / "root"
    p = create(root, bundle, "--vm", binary=vm_bin / "capsule", env=dict(os.environ, CAPSULE_KERNEL=str(vm_bin / "capsule-vmlinux")))
    assert_refused(p, root, bundle, PREFIX + f"VM initrd (the guest agent) `{vm_bin}/capsule-guest.initrd` does not exist")


def kernel_env(vm_bin, **more):
    env = {k: v for k, v in os.environ.items() if k != "CAPSULE_INITRD"}
    env["CAPSULE_KERNEL"] = str(vm_bin / "capsule-vmlinux")
    env.update(more)
    return env


def test_initrd_from_the_operators_variable(tmp_path, bundle, vm_bin):
    """$CAPSULE_INITRD replaces the initrd next to capsule; a missing one or a directory is refused
    with the variable named."""
    root = tmp_path / "root"
    p = create(root, bundle, "--vm", binary=vm_bin / "capsule",
               env=kernel_env(vm_bin, CAPSULE_INITRD=str(tmp_path / "no-such.initrd")))
    assert_refused(p, root, bundle, PREFIX + f"$CAPSULE_INITRD: VM initrd (the guest agent) `{tmp_path}/no-such.initrd` does not exist")
    p = create(root, bundle, "--vm", binary=vm_bin / "capsule", env=kernel_env(vm_bin, CAPSULE_INITRD=str(tmp_path)))
    assert_refused(p, root, bundle, PREFIX + f"$CAPSULE_INITRD: VM initrd (the guest agent) `{tmp_path}` is not a regular file")


def test_initrd_annotation_names_a_file_beside_the_default(tmp_path, bundle, vm_bin):
    """capsule.vm.initrd: a file name in the default initrd's directory ($CAPSULE_INITRD's, else
    capsule's); a missing one is refused naming the annotation. An existing one passes every check
    before KVM: on a PVM host KVM's refusal comes next (the boot itself is the testbed's)."""
    (vm_bin / "other.initrd").write_bytes(b"\0" * 512)
    (tmp_path / "alt").mkdir()
    (tmp_path / "alt" / "default.initrd").write_bytes(b"\0" * 512)
    root = tmp_path / "root"
    for env, d in ((kernel_env(vm_bin), vm_bin),
                   (kernel_env(vm_bin, CAPSULE_INITRD=str(tmp_path / "alt" / "default.initrd")), tmp_path / "alt")):
        bundle.config["annotations"] = {"run.oci.handler": "vm", "capsule.vm.initrd": "missing.initrd"}
        bundle.write()
        p = create(root, bundle, binary=vm_bin / "capsule", env=env)
        assert_refused(p, root, bundle, PREFIX + f"annotation capsule.vm.initrd: VM initrd (the guest agent) `{d}/missing.initrd` does not exist")
    if PVM:
        bundle.config["annotations"]["capsule.vm.initrd"] = "other.initrd"
        bundle.write()
        p = create(root, bundle, binary=vm_bin / "capsule", env=kernel_env(vm_bin))
        assert_refused(p, root, bundle, PREFIX + "this host's /dev/kvm is PVM (kvm_pvm)")


@pytest.mark.skipif(not PVM, reason="only a PVM host refuses a VM container for its KVM flavour")
def test_pvm_host_refused_with_the_reason(tmp_path, bundle, vm_bin):
    env = dict(os.environ)
    env.pop("CAPSULE_KERNEL", None)
    root = tmp_path / "root"
    p = create(root, bundle, "--vm", binary=vm_bin / "capsule", env=env)
    assert_refused(p, root, bundle, PREFIX + "this host's /dev/kvm is PVM (kvm_pvm): it emulates guest ring-0 code")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="hiding KVM takes a mount namespace")
def test_kvm_unavailable(tmp_path, bundle, vm_bin):
    """In a mount namespace of its own, without /dev/kvm and without a KVM module to be seen."""
    env = dict(os.environ)
    env.pop("CAPSULE_KERNEL", None)
    root = tmp_path / "root"
    hide = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none /sys/module && mount -t tmpfs none /dev && exec "$@"', "sh"]
    p = create(root, bundle, "--vm", binary=vm_bin / "capsule", env=env, wrap=hide)
    assert_refused(p, root, bundle, PREFIX + "/dev/kvm does not exist: KVM is not available on this host")


def test_selected_by_annotation_and_by_capsule_vm(tmp_path, bundle, vm_bin):
    """Each selection reaches the VM's checks (the missing kernel) instead of making a plain container."""
    env = no_kernel_env(tmp_path)
    want = PREFIX + f"$CAPSULE_KERNEL: VM kernel `{tmp_path}/no-such-kernel` does not exist"
    root = tmp_path / "root"
    assert_refused(create(root, bundle, binary=vm_bin / "capsule-vm", env=env), root, bundle, want)
    bundle.config["annotations"] = {"run.oci.handler": "vm"}
    bundle.write()
    assert_refused(create(root, bundle, env=env), root, bundle, want)


@pytest.mark.parametrize("key,value,message", [
    ("capsule.vm.kernel", "../../etc/passwd", "is not a file name"),
    ("capsule.vm.kernel", "/etc/passwd", "is not a file name"),
    ("capsule.vm.kernel", ".hidden", "is not a file name"),
    ("capsule.vm.initrd", "../x", "is not a file name"),
    ("capsule.vm.initrd", "/etc/shadow", "is not a file name"),
    ("capsule.vm.initrd", "..", "is not a file name"),
    ("capsule.vm.initrd", "", "is not a file name"),
    ("capsule.vm.cpus", "0", "is not a number of CPUs from 1 to"),
    ("capsule.vm.cpus", "100000", "is not a number of CPUs from 1 to"),
    ("capsule.vm.cpus", "two", "is not a number of CPUs from 1 to"),
    ("capsule.vm.memory", "1M", "is not a size from 64M to"),
    ("capsule.vm.memory", "999999999G", "is not a size from 64M to"),
    ("capsule.vm.memory", "512X", "is not a size from 64M to"),
])
def test_hostile_or_out_of_range_annotations(tmp_path, bundle, vm_bin, key, value, message):
    bundle.config["annotations"] = {"run.oci.handler": "vm", key: value}
    bundle.write()
    root = tmp_path / "root"
    p = create(root, bundle, binary=vm_bin / "capsule", env=dict(os.environ, CAPSULE_KERNEL=str(vm_bin / "capsule-vmlinux")))
    prefix = "capsule: cannot run a VM container: " if key in ("capsule.vm.kernel", "capsule.vm.initrd") else "capsule: "
    assert_refused(p, root, bundle, f"{prefix}annotation {key}: `{value}` {message}")


def test_a_rootfs_path_with_a_comma_is_refused(tmp_path, bundle, vm_bin):
    """virtiofsd gets the rootfs as `-o source=PATH`: a comma would pass options of config.json's
    choosing (another source= would share that directory instead)."""
    os.rename(bundle.rootfs, os.path.join(bundle.path, "rootfs,source=x"))
    bundle.config["root"]["path"] = "rootfs,source=x"
    bundle.write()
    root = tmp_path / "root"
    p = create(root, bundle, "--vm", binary=vm_bin / "capsule", env=dict(os.environ, CAPSULE_KERNEL=str(vm_bin / "capsule-vmlinux")))
    assert_refused(p, root, bundle, f"capsule: root.path: `{bundle.path}/rootfs,source=x` has a comma, which virtiofsd cannot share")


def test_memory_limit_below_the_vm_minimum(tmp_path, bundle, vm_bin):
    bundle.config["linux"].setdefault("resources", {})["memory"] = {"limit": 80 << 20}
    bundle.write()
    root = tmp_path / "root"
    p = create(root, bundle, "--vm", binary=vm_bin / "capsule", env=dict(os.environ, CAPSULE_KERNEL=str(vm_bin / "capsule-vmlinux")))
    assert_refused(p, root, bundle, f"capsule: linux.resources.memory.limit: {80 << 20} bytes is below the VM's minimum of 96M")


def test_vm_commands_on_a_missing_container(tmp_path):
    """Without a sandbox record, the commands after create behave as for any container."""
    p = subprocess.run([CAPSULE, "--root", str(tmp_path), "--vm", "state", "nope"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip() == 'capsule: container "nope" does not exist'


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist in the bundle directory"),
    ("directory", "is not a regular file (a disk image)"),
    ("fifo", "is not a regular file (a disk image)"),
    ("device", "is not a regular file (a disk image)"),
    ("hardlink", "has other hard links, which may name a file outside the bundle"),
    ("symlinked-dir", "is or passes through a symbolic link, which is not followed"),
])
def test_block_rootfs_that_is_no_image_in_the_bundle_is_refused(tmp_path, bundle, vm_bin, kind, message):
    """The annotation capsule.vm.rootfs.block takes a regular file of the bundle's own, with one link
    and reached without a symlink: anything else is refused before the VM's other checks, with
    nothing left behind (tests/e2e/test_sandbox_vm.py: `..`, an absolute path, a symlink)."""
    name = "disk.img"
    target = os.path.join(bundle.path, name)
    if kind == "directory":
        os.mkdir(target)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node takes root")
        os.mknod(target, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    elif kind == "hardlink":
        other = tmp_path / "outside.img"
        other.write_bytes(b"\0" * 4096)
        os.link(other, target)
    elif kind == "symlinked-dir":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / name).write_bytes(b"\0" * 4096)
        os.symlink(tmp_path / "elsewhere", os.path.join(bundle.path, "images"))
        name = f"images/{name}"
    bundle.config["annotations"] = {"run.oci.handler": "vm", "capsule.vm.rootfs.block": name}
    bundle.write()
    root = tmp_path / "root"
    p = create(root, bundle, binary=vm_bin / "capsule", env=dict(os.environ, CAPSULE_KERNEL=str(vm_bin / "capsule-vmlinux")))
    assert_refused(p, root, bundle, f"capsule: annotation capsule.vm.rootfs.block: `{name}` {message}")


@pytest.mark.skipif(not PVM, reason="the next check after the image's is the PVM refusal only on a PVM host")
def test_block_rootfs_image_in_the_bundle_passes_and_root_path_is_not_shared(tmp_path, bundle, vm_bin):
    """A regular file in the bundle passes, and root.path is then not virtiofsd's: a comma in it
    is no longer refused. The PVM refusal that follows shows both checks passed."""
    os.rename(bundle.rootfs, os.path.join(bundle.path, "rootfs,x"))
    bundle.config["root"]["path"] = "rootfs,x"
    with open(os.path.join(bundle.path, "disk.img"), "wb") as f:
        f.truncate(1 << 20)
    bundle.config["annotations"] = {"run.oci.handler": "vm", "capsule.vm.rootfs.block": "disk.img"}
    bundle.write()
    env = dict(os.environ)
    env.pop("CAPSULE_KERNEL", None)
    root = tmp_path / "root"
    p = create(root, bundle, binary=vm_bin / "capsule", env=env)
    assert_refused(p, root, bundle, PREFIX + "this host's /dev/kvm is PVM (kvm_pvm): it emulates guest ring-0 code")


POD_MEMORY, POD_QUOTA, POD_PERIOD = ("io.kubernetes.cri.sandbox-memory", "io.kubernetes.cri.sandbox-cpu-quota",
                                     "io.kubernetes.cri.sandbox-cpu-period")
BYTES = "is not a number of bytes (0: unset)"
QUOTA = "is not a CPU quota of 1000 microseconds or more (0: unset)"
PERIOD = "is not a CPU period from 1000 to 1000000 microseconds (0: unset)"


def pause_container(bundle, **annotations):
    """The pod's sandbox container as containerd writes it, with the pod's totals."""
    bundle.config["annotations"] = {"run.oci.handler": "vm", "io.kubernetes.cri.container-type": "sandbox",
                                    "io.kubernetes.cri.sandbox-id": bundle.id, **annotations}
    bundle.write()


@pytest.mark.parametrize("key,value,message", [
    (POD_MEMORY, "-1", BYTES), (POD_MEMORY, "1G", BYTES), (POD_MEMORY, " 1073741824", BYTES), (POD_MEMORY, "", BYTES),
    (POD_MEMORY, "9223372036854775808", BYTES), (POD_MEMORY, "184467440737095516160", BYTES),
    (POD_QUOTA, "-100000", QUOTA), (POD_QUOTA, "999", QUOTA), (POD_QUOTA, "+200000", QUOTA), (POD_QUOTA, "0x30d40", QUOTA),
    (POD_QUOTA, "99999999999999999999", QUOTA),
    (POD_PERIOD, "999", PERIOD), (POD_PERIOD, "1000001", PERIOD), (POD_PERIOD, "-100000", PERIOD), (POD_PERIOD, "1e5", PERIOD),
])
def test_pod_sizing_annotations_malformed_or_out_of_range(tmp_path, bundle, vm_bin, key, value, message):
    """containerd's pod-level totals on a pause container (the kubelet's pod resources) size its VM:
    each value that is not "0" (unset) or a decimal within its bounds is refused, naming it."""
    pause_container(bundle, **{POD_MEMORY: "0", POD_QUOTA: "0", POD_PERIOD: "0", key: value})
    root = tmp_path / "root"
    p = create(root, bundle, binary=vm_bin / "capsule", env=kernel_env(vm_bin))
    assert_refused(p, root, bundle, f"capsule: annotation {key}: `{value}` {message}")


def test_pod_memory_below_the_vm_minimum(tmp_path, bundle, vm_bin):
    """The pod's total pays for the VMM too, as a container's memory limit does."""
    pause_container(bundle, **{POD_MEMORY: str(80 << 20)})
    root = tmp_path / "root"
    p = create(root, bundle, binary=vm_bin / "capsule", env=kernel_env(vm_bin))
    assert_refused(p, root, bundle, f"capsule: annotation {POD_MEMORY}: {80 << 20} bytes is below the VM's minimum of 96M "
                                    "(64M for the guest, 32M for the VMM)")


@pytest.mark.skipif(not PVM, reason="the next check after the sizes is the PVM refusal only on a PVM host")
@pytest.mark.parametrize("annotations", [
    {POD_MEMORY: str(1 << 30), POD_QUOTA: "250000", POD_PERIOD: "100000"},
    {POD_MEMORY: "0", POD_QUOTA: "0", POD_PERIOD: "0"},
    # capsule.vm.* win: the pod's total is not used, so not held to the VM's minimum.
    {"capsule.vm.memory": "128M", "capsule.vm.cpus": "1", POD_MEMORY: str(80 << 20), POD_QUOTA: "1000000000"},
])
def test_pod_sizing_annotations_in_bounds_pass(tmp_path, bundle, vm_bin, annotations):
    """The PVM refusal that follows the sizes shows they passed."""
    pause_container(bundle, **annotations)
    root = tmp_path / "root"
    p = create(root, bundle, binary=vm_bin / "capsule", env=kernel_env(vm_bin))
    assert_refused(p, root, bundle, PREFIX + "this host's /dev/kvm is PVM (kvm_pvm)")


@pytest.mark.skipif(not PVM, reason="the next check after the sizes is the PVM refusal only on a PVM host")
def test_pod_sizing_annotations_of_a_container_that_is_no_pause_are_not_read(tmp_path, bundle, vm_bin):
    """Only a pod's sandbox container has the pod's totals; on another they mean nothing."""
    bundle.config["annotations"] = {"run.oci.handler": "vm", POD_MEMORY: "junk", POD_QUOTA: "-1"}
    bundle.write()
    root = tmp_path / "root"
    p = create(root, bundle, binary=vm_bin / "capsule", env=kernel_env(vm_bin))
    assert_refused(p, root, bundle, PREFIX + "this host's /dev/kvm is PVM (kvm_pvm)")
