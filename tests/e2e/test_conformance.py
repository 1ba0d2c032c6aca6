"""OCI conformance cases found by runtime-tools' validation programs, compared with runc 1.1:
linux.devices without a host node, unavailable cgroup controllers, rootfsPropagation with a
root given as ".", and a container without a mount namespace of its own."""
import os
import shlex
import subprocess

import pytest

from conftest import procs_cgroup_dir

V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def own_hierarchy(controller):
    """The v1 hierarchy directory of our own cgroup holding controller, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split()[:3]
            if fstype == "cgroup" and controller in opts.split(","):
                mnt = left.split()[4]
                with open("/proc/self/cgroup") as g:
                    for cg in g:
                        _, ctrls, path = cg.rstrip("\n").split(":", 2)
                        if controller in ctrls.split(","):
                            return mnt + path.rstrip("/")
    return None


# Neither exists on the host: runtime-tools' linux_devices creates such nodes
NO_HOST_NODES = [
    {"path": "/dev/capsule-char", "type": "c", "major": 123, "minor": 45, "fileMode": 0o600, "uid": 1, "gid": 2},
    {"path": "/dev/capsule-block", "type": "b", "major": 240, "minor": 7, "fileMode": 0o640, "uid": 0, "gid": 0},
    {"path": "/dev/capsule-fifo", "type": "p", "fileMode": 0o620},
]


def test_devices_without_host_node_are_created(capsule, bundle):
    for d in NO_HOST_NODES:
        assert not os.path.exists(d["path"])
    bundle.config["linux"]["devices"] = NO_HOST_NODES
    assert {"allow": False, "access": "rwm"} in bundle.config["linux"]["resources"]["devices"]
    bundle.set_args("sh", "-c", "stat -c '%n %F %t:%T %a %u:%g' /dev/capsule-*")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == [
        "/dev/capsule-block block special file f0:7 640 0:0",
        "/dev/capsule-char character special file 7b:2d 600 1:2",
        "/dev/capsule-fifo fifo 0:0 620 0:0",
    ]


@pytest.mark.parametrize("field,value,controller", [
    ("classID", 0x100001, "net_cls"),
    ("priorities", [{"name": "lo", "priority": 5}], "net_prio"),
])
def test_network_limits_are_applied_or_refused(capsule, bundle, field, value, controller):
    """A limit the host cannot apply is refused, as runc does for net_cls/net_prio, never skipped."""
    bundle.config["linux"]["resources"]["network"] = {field: value}
    bundle.set_args("sleep", "100")
    p = capsule.run("run", "-d", "-b", bundle.path, bundle.id)
    hier = None if V2 else own_hierarchy(controller)
    if hier:
        assert p.returncode == 0, p.stderr
        d = os.path.join(hier, "capsule-test", bundle.id)
        text = open(os.path.join(d, "net_cls.classid" if controller == "net_cls" else "net_prio.ifpriomap")).read()
        assert (str(value) in text) if controller == "net_cls" else ("lo 5" in text)
        return
    assert p.returncode != 0
    assert p.stderr.strip().endswith(f"linux.resources.network.{field}: "
                                     + (f"cgroup v2 has no {controller} controller" if V2
                                        else f"the {controller} controller is not available")), p.stderr
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))
    assert not os.path.exists(procs_cgroup_dir(f"capsule-test/{bundle.id}"))


def root_optional_fields(mountinfo):
    """The optional fields (shared:N, master:N, unbindable) of the container's / mount."""
    for line in mountinfo.splitlines():
        f = line.split()
        if len(f) > 6 and f[4] == "/":
            return f[6:f.index("-")]
    raise AssertionError(f"no / in:\n{mountinfo}")


@pytest.mark.parametrize("root_path", [".", "rootfs"])
@pytest.mark.parametrize("propagation,expect", [
    ("shared", "shared:"), ("rshared", "shared:"), ("private", None), ("rprivate", None),
    ("slave", None), ("rslave", None), ("unbindable", "unbindable"), ("runbindable", "unbindable"),
])
def test_rootfs_propagation(capsule, bundle, root_path, propagation, expect):
    """runtime-tools gives root.path "." (the bundle is the rootfs); runc 1.1 fails (r)unbindable with EINVAL."""
    if root_path == ".":
        bundle.path = bundle.rootfs
    bundle.config["root"]["path"] = root_path
    bundle.config["linux"]["rootfsPropagation"] = propagation
    bundle.set_args("sh", "-c", "cat /proc/self/mountinfo")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0, p.stderr
    fields = root_optional_fields(p.stdout)
    if expect:
        assert any(f.startswith(expect) for f in fields), fields
    else:
        assert not any(f.startswith(("shared:", "unbindable")) for f in fields), fields
    if propagation == "runbindable":
        # every mount of the container, not only /
        info = [l.split() for l in p.stdout.splitlines()]
        assert all("unbindable" in f[6:f.index("-")] for f in info), p.stdout


def without_mount_ns(bundle):
    """runtime-tools' linux_ns_itype: no mount namespace (runc also needs no masked/read-only paths)."""
    cfg = bundle.config
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "mount"]
    cfg["linux"].pop("maskedPaths", None)
    cfg["linux"].pop("readonlyPaths", None)
    bundle.write()


def in_private_mount_ns(script):
    """Run script as the "host" in a mount namespace of its own whose / is shared, as on systemd hosts:
    the container's mounts must neither stay behind nor change the propagation there."""
    p = subprocess.run(["unshare", "--mount", "--propagation", "unchanged", "sh", "-euc",
                        "mount --make-rshared /\n" + script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def host_view(bundle):
    """Shell that prints what the host sees: its mount namespace, /'s propagation, mounts below the rootfs."""
    rootfs = os.path.realpath(bundle.rootfs)
    return (f"echo host-ns $(readlink /proc/self/ns/mnt); findmnt -n -o PROPAGATION /;"
            f" grep -c ' {rootfs}/' /proc/self/mountinfo || true\n")


def test_no_mount_namespace_runs_chrooted_in_the_hosts(capsule, bundle):
    without_mount_ns(bundle)
    bundle.set_args("sh", "-c", "echo ctr-ns $(readlink /proc/self/ns/mnt); ls /; test -e /etc/debian_version && echo host-visible;"
                    " grep -c ' /proc ' /proc/self/mountinfo; echo x > /dev/null && echo devnull-ok")
    out = in_private_mount_ns(host_view(bundle) + shlex.join(capsule.cmd("run", "-b", bundle.path, bundle.id))
                              + "\n" + host_view(bundle))
    lines = out.splitlines()
    host_ns, prop, below = lines[0:3]
    assert lines[3] == "ctr-ns " + host_ns.split()[1], out  # the host's mount namespace
    assert "bin" in lines and "work" not in lines and "host-visible" not in lines, out
    assert "devnull-ok" in lines, out
    # after the container: the same propagation, and nothing mounted below its rootfs
    assert (prop, below) == ("shared", "0") and lines[-3:] == [host_ns, "shared", "0"], out


def test_no_mount_namespace_mounts_are_the_hosts_until_delete(capsule, bundle):
    without_mount_ns(bundle)
    bundle.set_args("sleep", "100")
    run = shlex.join(capsule.cmd("run", "-d", "-b", bundle.path, bundle.id))
    exe = shlex.join(capsule.cmd("exec", bundle.id, "sh", "-c", "ls /bin/busybox /proc/1/status"))
    delete = shlex.join(capsule.cmd("delete", "--force", bundle.id))
    out = in_private_mount_ns(f"{run}\n{host_view(bundle)}{exe}\n{delete}\n{host_view(bundle)}")
    lines = out.splitlines()
    assert int(lines[2]) >= 5, out  # proc, /dev, its submounts, sysfs...: in the host's namespace, as runc
    assert lines[3:5] == ["/bin/busybox", "/proc/1/status"], out  # exec enters the same chroot
    assert lines[-2:] == ["shared", "0"], out
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


def test_no_mount_namespace_failed_create_leaves_no_mount(capsule, bundle):
    without_mount_ns(bundle)
    bundle.config["mounts"].append({"destination": "/data", "type": "bind", "source": "/nonexistent-capsule-src",
                                    "options": ["bind"]})
    bundle.set_args("true")
    create = shlex.join(capsule.cmd("create", "-b", bundle.path, bundle.id))
    out = in_private_mount_ns(f"{create} 2>&1 && exit 1 || true\n{host_view(bundle)}")
    assert "mounts[" in out and "/nonexistent-capsule-src" in out, out
    assert out.splitlines()[-2:] == ["shared", "0"], out
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


@pytest.mark.parametrize("field,setting", [
    ("root.readonly", lambda c: c["root"].update(readonly=True)),
    ("linux.maskedPaths", lambda c: c["linux"].update(maskedPaths=["/proc/kcore"])),
    ("linux.readonlyPaths", lambda c: c["linux"].update(readonlyPaths=["/proc/sys"])),
    ("linux.rootfsPropagation", lambda c: c["linux"].update(rootfsPropagation="shared")),
])
def test_no_mount_namespace_refuses_what_would_touch_host_mounts(capsule, bundle, field, setting):
    without_mount_ns(bundle)
    setting(bundle.config)
    bundle.set_args("true")
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0
    assert p.stderr.strip() == f"capsule: config.json: {field}: requires a mount namespace in linux.namespaces", p.stderr
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


@pytest.mark.parametrize("dest", ["/", "/up/.."])
def test_no_mount_namespace_refuses_a_mount_over_the_rootfs(capsule, bundle, dest):
    """It would cover the host's rootfs directory, where delete could not tell it from the host's own."""
    os.symlink("/", os.path.join(bundle.rootfs, "up"))
    without_mount_ns(bundle)
    bundle.config["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": []})
    bundle.set_args("true")
    create = shlex.join(capsule.cmd("create", "-b", bundle.path, bundle.id))
    rootfs = os.path.realpath(bundle.rootfs)
    out = in_private_mount_ns(f"{create} 2>&1 && exit 1 || true\n{host_view(bundle)}"
                              f"grep -c ' {rootfs} ' /proc/self/mountinfo || true")
    assert f"({dest}): destination is the rootfs itself: that needs a mount namespace" in out, out
    assert out.splitlines()[-3:] == ["shared", "0", "0"], out
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))
