"""The container's filesystem: pivot_root, mounts and their options, /dev, masked and read-only paths, sysctl."""
import os
import subprocess

import pytest


def run_in(capsule, bundle, script, *flags):
    bundle.set_args("sh", "-c", script)
    p = capsule.run("run", *flags, "-b", bundle.path, bundle.id)
    assert p.returncode == 0, p.stderr
    return p.stdout


def add_mount(bundle, dest, mtype, source, options=()):
    bundle.config["mounts"].append({"destination": dest, "type": mtype, "source": str(source), "options": list(options)})
    bundle.write()


def mountinfo(text, mount_point):
    """The mountinfo fields of the last mount at mount_point: (options, optional fields, fstype)."""
    found = None
    for line in text.splitlines():
        f = line.split()
        if " - " in line and f[4] == mount_point:
            sep = f.index("-")
            found = (f[5].split(","), f[6:sep], f[sep + 1])
    assert found, f"{mount_point} not in mountinfo:\n{text}"
    return found


@pytest.fixture
def hostdir(tmp_path):
    d = tmp_path / "hostdir"
    d.mkdir()
    (d / "hello").write_text("from the host\n")
    return d


def test_pivot_root_hides_host_files(capsule, bundle):
    assert os.path.exists("/etc/debian_version")
    out = run_in(capsule, bundle, "test -e /etc/debian_version && echo visible; ls /; cat /proc/self/mountinfo")
    assert "visible" not in out
    lines = out.splitlines()
    assert "bin" in lines and "work" not in lines
    # the old root is detached: every mount inside lies below the container's /
    info = [l for l in lines if " - " in l]
    assert info and not any(l.split()[4].startswith("/work") for l in info)
    root = mountinfo("\n".join(info), "/")
    assert root[2] != "proc"


def test_root_sees_itself_as_slash(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    pid = capsule.state(bundle.id)["pid"]
    # from the host, /proc/PID/root is the bundle's rootfs
    assert os.path.samefile(f"/proc/{pid}/root/bin/busybox", os.path.join(bundle.rootfs, "bin", "busybox"))
    assert os.readlink(f"/proc/{pid}/root") == "/"


def test_no_pivot(capsule, bundle):
    out = run_in(capsule, bundle, "test -e /etc/debian_version && echo visible; ls /bin/busybox; echo ok", "--no-pivot")
    assert out.splitlines()[-2:] == ["/bin/busybox", "ok"]
    assert "visible" not in out


def test_bind_mount_and_ro_bind(capsule, bundle, hostdir):
    add_mount(bundle, "/data", "bind", hostdir, ["bind"])
    add_mount(bundle, "/rodata", "bind", hostdir, ["bind", "ro"])
    out = run_in(capsule, bundle, "cat /data/hello; echo written > /data/new; { echo x > /rodata/nope; } 2>&1; "
                                  "cat /rodata/new; echo rc=$?")
    assert "from the host\n" in out
    assert "Read-only file system" in out
    assert (hostdir / "new").read_text() == "written\n"
    assert out.endswith("written\nrc=0\n")
    assert not (hostdir / "nope").exists()


def test_bind_mount_of_a_file_creates_it(capsule, bundle, hostdir):
    add_mount(bundle, "/etc/injected.conf", "none", hostdir / "hello", ["bind", "ro"])
    assert run_in(capsule, bundle, "cat /etc/injected.conf") == "from the host\n"
    # the mount point was created in the rootfs, as an empty file
    assert os.path.getsize(os.path.join(bundle.rootfs, "etc", "injected.conf")) == 0


def unshared(script):
    """Run script as root in a private mount namespace, so test mounts vanish with it."""
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-euc", script],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_bind_vs_rbind_submounts(capsule, bundle, hostdir):
    (hostdir / "sub").mkdir()
    add_mount(bundle, "/b", "bind", hostdir, ["bind"])
    add_mount(bundle, "/rb", "bind", hostdir, ["rbind"])
    bundle.set_args("sh", "-c", "ls /b/sub; echo ==; ls /rb/sub")
    out = unshared(f"mount -t tmpfs capsule-sub {hostdir}/sub; echo in-submount > {hostdir}/sub/f; "
                   f"{' '.join(capsule.cmd('run', '-b', bundle.path, bundle.id))}")
    assert out == "==\nf\n"


def test_rro_makes_submounts_read_only(capsule, bundle, hostdir):
    (hostdir / "sub").mkdir()
    add_mount(bundle, "/rb", "bind", hostdir, ["rbind", "rro"])
    bundle.set_args("sh", "-c", "touch /rb/sub/x 2>&1; touch /rb/y 2>&1; echo done")
    out = unshared(f"mount -t tmpfs capsule-sub {hostdir}/sub; {' '.join(capsule.cmd('run', '-b', bundle.path, bundle.id))}")
    assert out.count("Read-only file system") == 2, out


@pytest.mark.parametrize("prop,appears,field", [("rslave", True, "master:"), ("rshared", True, "shared:"),
                                                ("rprivate", False, None)])
def test_bind_propagation(capsule, bundle, hostdir, prop, appears, field):
    """A mount made on the host under a shared bind source after start shows up inside unless private."""
    (hostdir / "late").mkdir()
    add_mount(bundle, "/prop", "bind", hostdir, ["rbind", prop])
    bundle.set_args("sleep", "100")
    run = " ".join(capsule.cmd("run", "-d", "-b", bundle.path, bundle.id))
    ex = " ".join(capsule.cmd("exec", bundle.id, "cat", "/proc/self/mountinfo"))
    out = unshared(f"mount --bind {hostdir} {hostdir}; mount --make-shared {hostdir}; {run}; "
                   f"mount -t tmpfs capsule-late {hostdir}/late; {ex}; "
                   f"{' '.join(capsule.cmd('delete', '-f', bundle.id))}")
    opts, optional, _ = mountinfo(out, "/prop")
    if field:
        assert any(o.startswith(field) for o in optional), optional
    else:
        assert optional == []
    assert any(l.split()[4] == "/prop/late" for l in out.splitlines()) == appears


def test_bind_remount_read_only_keeps_flags(capsule, bundle, hostdir):
    add_mount(bundle, "/data", "bind", hostdir, ["rbind", "ro", "nosuid", "noexec", "nodev"])
    opts, _, _ = mountinfo(run_in(capsule, bundle, "cat /proc/self/mountinfo"), "/data")
    assert {"ro", "nosuid", "noexec", "nodev"} <= set(opts)


def test_tmpfs_with_size_and_mode(capsule, bundle):
    add_mount(bundle, "/scratch", "tmpfs", "tmpfs", ["size=2m", "mode=1770", "nosuid"])
    out = run_in(capsule, bundle, "df -k /scratch | tail -1; stat -c %a /scratch; cat /proc/self/mountinfo")
    lines = out.splitlines()
    assert lines[0].split()[1] == "2048"
    assert lines[1] == "1770"
    opts, _, fstype = mountinfo(out, "/scratch")
    assert fstype == "tmpfs" and "nosuid" in opts


def test_default_filesystems(capsule, bundle):
    out = run_in(capsule, bundle, "cat /proc/self/mountinfo")
    assert mountinfo(out, "/proc")[2] == "proc"
    assert mountinfo(out, "/sys")[2] == "sysfs"
    assert "ro" in mountinfo(out, "/sys")[0]
    assert mountinfo(out, "/dev")[2] == "tmpfs"
    assert mountinfo(out, "/dev/pts")[2] == "devpts"
    assert mountinfo(out, "/dev/shm")[2] == "tmpfs"
    assert mountinfo(out, "/dev/mqueue")[2] == "mqueue"


def test_proc_is_the_containers(capsule, bundle):
    out = run_in(capsule, bundle, "ls /proc | grep -E '^[0-9]+$'")
    # only pid 1 (sh) and its child (grep's pipeline) exist in the new pid namespace
    assert "1" in out.split() and len(out.split()) <= 3


def test_devpts_ptmx_allocates_a_pty(capsule, bundle):
    out = run_in(capsule, bundle, "ls /dev/pts; exec 3<>/dev/ptmx; echo ==; ls /dev/pts; stat -c '%N' /dev/ptmx")
    before, after = out.split("==\n")
    assert before.split() == ["ptmx"]
    assert after.splitlines()[:2] == ["0", "ptmx"]
    assert "pts/ptmx" in after.splitlines()[2]


def test_cgroup_mount_lists_controllers(capsule, bundle):
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        # pure v2 (`capsule spec` adds a cgroup namespace): the container's own cgroup as the
        # root of a cgroup2 mount, with the controllers capsule delegated to it
        out = run_in(capsule, bundle, "ls /sys/fs/cgroup; echo ==; cat /sys/fs/cgroup/cgroup.controllers "
                                      "/sys/fs/cgroup/pids.max; touch /sys/fs/cgroup/x 2>&1; cat /proc/self/mountinfo")
        listing, rest = out.split("==\n")
        assert {"cgroup.controllers", "cgroup.procs", "pids.max", "memory.max", "cpu.max"} <= set(listing.split())
        assert {"cpu", "memory", "pids"} <= set(rest.splitlines()[0].split())
        assert rest.splitlines()[1] == "max"
        assert "Read-only file system" in out
        opts, _, fstype = mountinfo(out, "/sys/fs/cgroup")
        assert fstype == "cgroup2" and "ro" in opts
        return
    out = run_in(capsule, bundle, "ls /sys/fs/cgroup; echo ==; cat /sys/fs/cgroup/pids/pids.max; "
                                  "touch /sys/fs/cgroup/pids/x 2>&1; cat /proc/self/mountinfo")
    listing = out.split("==\n")[0].split()
    assert {"cpu", "memory", "pids", "devices", "freezer"} <= set(listing)
    # the container sees its own cgroup as the hierarchy's root, read-only
    assert "Read-only file system" in out
    opts, _, fstype = mountinfo(out, "/sys/fs/cgroup/pids")
    assert fstype == "cgroup" and "ro" in opts


def test_readonly_root(capsule, bundle):
    bundle.config["root"]["readonly"] = True
    out = run_in(capsule, bundle, "touch /x 2>&1; touch /tmp/y 2>&1; echo ok > /dev/shm/z && cat /dev/shm/z")
    assert out.count("Read-only file system") == 2, out
    assert out.endswith("ok\n")
    assert not os.path.exists(os.path.join(bundle.rootfs, "x"))


def test_masked_paths(capsule, bundle):
    os.makedirs(os.path.join(bundle.rootfs, "secret"))
    with open(os.path.join(bundle.rootfs, "secret", "key"), "w") as f:
        f.write("hidden")
    with open(os.path.join(bundle.rootfs, "etc", "secret.conf"), "w") as f:
        f.write("hidden")
    bundle.config["linux"]["maskedPaths"] += ["/secret", "/etc/secret.conf", "/does/not/exist"]
    # /proc/timer_list is in the default maskedPaths (this kernel has no /proc/kcore)
    assert os.path.getsize("/proc/timer_list") == 0 and open("/proc/timer_list").read() != ""
    out = run_in(capsule, bundle, "wc -c < /proc/timer_list; ls -A /secret | wc -l; wc -c < /etc/secret.conf; "
                                  "touch /secret/x 2>&1; echo end")
    lines = out.splitlines()
    assert lines[:3] == ["0", "0", "0"]
    assert "Read-only file system" in lines[3]
    # the rootfs itself is untouched
    assert open(os.path.join(bundle.rootfs, "secret", "key")).read() == "hidden"


def test_readonly_paths(capsule, bundle):
    add_caps = bundle.config["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        add_caps[kind].append("CAP_SYS_ADMIN")
    # a missing path (this kernel has no /proc/sysrq-trigger) is skipped
    bundle.config["linux"]["readonlyPaths"] += ["/etc", "/no/such/path"]
    out = run_in(capsule, bundle, "{ echo 1 > /proc/sys/kernel/domainname; } 2>&1; touch /etc/x 2>&1; "
                                  "cat /proc/self/mountinfo")
    # CAP_SYS_ADMIN would allow both writes: the read-only mounts are what stops them
    assert out.count("Read-only file system") == 2, out
    assert "ro" in mountinfo(out, "/proc/sys")[0]
    assert "ro" in mountinfo(out, "/etc")[0]


def test_default_dev(capsule, bundle):
    nodes = "null zero full random urandom tty"
    out = run_in(capsule, bundle, f"cd /dev; for n in {nodes}; do stat -c '%n|%F|%t:%T|%a' $n; done; "
                                  "for l in fd stdin stdout stderr ptmx; do stat -c '%N' $l; done; "
                                  "test -e /dev/console && echo console; ls /dev/shm /dev/mqueue >/dev/null && echo dirs; "
                                  "head -c 4 /dev/zero | wc -c; { echo x > /dev/full; } 2>&1; true")
    lines = out.splitlines()
    want = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9", "tty": "5:0"}
    for line, name in zip(lines, nodes.split()):
        assert line.split("|") == [name, "character special file", want[name], "666"]
    links = dict(l.replace("'", "").split(" -> ") for l in lines[6:11])
    assert links == {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                     "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
    # without a terminal there is no /dev/console
    assert "console" not in lines
    assert "dirs" in lines
    assert "4" in lines
    assert "No space left on device" in out


def test_linux_devices(capsule, bundle):
    bundle.config["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                          "fileMode": 0o600, "uid": 1000, "gid": 1000}]
    bundle.config["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 3,
                                                           "access": "rwm"})
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    st = capsule.run("exec", bundle.id, "stat", "-c", "%F %t:%T %a %u:%g", "/dev/mynull", check=True).stdout
    assert st == "character special file 1:3 600 1000:1000\n"
    # the owner can write it, someone else cannot
    assert capsule.run("exec", "-u", "1000:1000", bundle.id, "sh", "-c", "echo x > /dev/mynull").returncode == 0
    p = capsule.run("exec", "-u", "1001:1001", bundle.id, "sh", "-c", "echo x > /dev/mynull")
    assert p.returncode != 0 and "Permission denied" in p.stderr


def test_device_outside_the_allowlist_is_made_but_cannot_be_opened(capsule, bundle):
    """The device cgroup applies before /dev is built: a linux.devices node is still made (mknod only
    is allowed for it, as runc allows), but only linux.resources.devices can let it be opened."""
    bundle.config["linux"]["devices"] = [{"path": "/dev/mem0", "type": "c", "major": 1, "minor": 1, "fileMode": 0o666}]
    bundle.set_args("sh", "-c", "stat -c '%F %t:%T' /dev/mem0; head -c1 /dev/mem0 >/dev/null && echo read")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.stdout == "character special file 1:1\n", p.stderr
    assert "Operation not permitted" in p.stderr


def allow_without_mknod(bundle, major, minor):
    bundle.config["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": major, "minor": minor,
                                                           "access": "rw"})


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse on the host")
def test_device_without_mknod_permission_binds_the_host_node(capsule, bundle):
    """The device cgroup allows using /dev/fuse but not mknod: the host's node is bound instead, as runc does."""
    host = os.stat("/dev/fuse")
    major, minor = os.major(host.st_rdev), os.minor(host.st_rdev)
    bundle.config["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": major, "minor": minor}]
    allow_without_mknod(bundle, major, minor)
    out = run_in(capsule, bundle, "stat -c '%F %t:%T' /dev/fuse; grep -c ' /dev/fuse ' /proc/self/mountinfo; "
                                  f"mknod /dev/fuse2 c {major} {minor}; echo rc=$?")
    lines = out.splitlines()
    assert lines[0] == f"character special file {major:x}:{minor:x}", out
    assert lines[1] == "1"  # a bind mount, not a node of its own
    assert lines[2] == "rc=1"  # mknod itself stays denied
    assert not os.path.exists(os.path.join(bundle.rootfs, "dev", "fuse"))  # no mount point left in the bundle


@pytest.mark.parametrize("path,minor_delta", [("/dev/fuse-capsule-none", 0), ("/dev/fuse", 1)])
def test_device_without_mknod_and_no_matching_host_node_fails(capsule, bundle, path, minor_delta):
    """Without mknod permission, a device the host does not have at that path (or has as another
    device) cannot be bound instead: create fails and names it."""
    host = os.stat("/dev/fuse")
    major, minor = os.major(host.st_rdev), os.minor(host.st_rdev) + minor_delta
    bundle.config["linux"]["devices"] = [{"path": path, "type": "c", "major": major, "minor": minor}]
    allow_without_mknod(bundle, major, minor)
    bundle.write()
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and path in p.stderr and "Operation not permitted" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


@pytest.mark.parametrize("prop,field", [("shared", "shared:"), ("private", None)])
def test_rootfs_propagation(capsule, bundle, prop, field):
    bundle.config["linux"]["rootfsPropagation"] = prop
    out = run_in(capsule, bundle, "cat /proc/self/mountinfo")
    _, optional, _ = mountinfo(out, "/")
    if field:
        assert any(o.startswith(field) for o in optional), optional
    else:
        assert optional == []


def test_sysctl_in_container_netns(capsule, bundle):
    host = open("/proc/sys/net/ipv4/ip_forward").read()
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1" if host.strip() == "0" else "0",
                                        "kernel.shmmax": "12345678"}
    out = run_in(capsule, bundle, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax")
    assert out.split() == ["1" if host.strip() == "0" else "0", "12345678"]
    assert open("/proc/sys/net/ipv4/ip_forward").read() == host


def test_sysctl_outside_namespace_is_refused(capsule, bundle):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"] if n["type"] != "network"]
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.write()
    host = open("/proc/sys/net/ipv4/ip_forward").read()
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "net.ipv4.ip_forward" in p.stderr
    assert open("/proc/sys/net/ipv4/ip_forward").read() == host
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


def test_hostname_and_domainname_inside(capsule, bundle):
    bundle.config["hostname"] = "rootfs-box"
    bundle.config["domainname"] = "rootfs.example"
    assert run_in(capsule, bundle, "hostname; domainname 2>/dev/null || cat /proc/sys/kernel/domainname").split() == \
        ["rootfs-box", "rootfs.example"]
