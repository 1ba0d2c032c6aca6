"""VM containers in network namespaces: the netns's interface, addresses and routes taken over by the
VM, and the refusals. Runs as test_sandbox_vm.py does."""
import concurrent.futures
import copy
import os
import re
import shutil
import subprocess
import threading

import pytest

from conftest import BUILD, Bundle, Capsule
import sandbox_vm_env
from sandbox_vm_env import BOOT, assert_nothing_left, become_subreaper, crash_leftovers, sh, vm_logs

# Their skip (hardware KVM, the kernel and the initrd) and fixtures.
pytestmark = sandbox_vm_env.pytestmark
vm = sandbox_vm_env.vm
crash_netns = sandbox_vm_env.crash_netns


# Answers every GET with the client's address: what the server sees as the source.
PEER_SERVER = """
import http.server, socket, sys
class Peer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.client_address[0] + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6
Server(("::", int(sys.argv[1])), Peer).serve_forever()
"""


def wait_listening(netns, addr, port):
    probe = (f"import socket,time\nfor _ in range(100):\n try: socket.create_connection(({addr!r},{port}),1); break\n"
             " except OSError: time.sleep(0.1)\nelse: raise SystemExit('the server does not listen')")
    sh("ip", "netns", "exec", netns, "python3", "-c", probe)


@pytest.fixture
def netns_pair(tmp_path):
    """Network namespaces joined by a veth pair, as CNI leaves a dual-stack pod's: the container's
    side is eth0 (10.77.0.2/24 and fd77::2/64, MTU 1400, default routes via the server's 10.77.0.1
    and fd77::1, and fd99::/64 via fe80::1), and servers listen on the other side: HTTP on
    10.77.0.1:8077, and on port 8078 of fd77::1 and fd98::1 (through the default route) one that
    answers with the client's address. fe80::1 is a router of its own on the same link (a third
    namespace, bridged in by the server's) with fd99::1 and the same server: the server's namespace
    does not forward, so only the fd99::/64 route reaches it."""
    tag = os.getpid() % 100000
    srv, ctr, gw = f"capsrv{tag}", f"capctr{tag}", f"capgw{tag}"
    for ns in (srv, ctr, gw):
        sh("ip", "netns", "add", ns)
    servers = []
    try:
        # The server's side is a bridge (its addresses on br0): the router's veth joins it.
        sh("ip", "-n", srv, "link", "add", "br0", "mtu", "1400", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", ctr, "link", "add", "eth0", "mtu", "1400", "type", "veth", "peer", "name", "veth-srv", "netns", srv)
        sh("ip", "-n", gw, "link", "add", "gw0", "mtu", "1400", "type", "veth", "peer", "name", "veth-gw", "netns", srv)
        for port in ("veth-srv", "veth-gw"):
            sh("ip", "-n", srv, "link", "set", port, "mtu", "1400", "master", "br0", "up")
        sh("ip", "-n", srv, "link", "set", "br0", "up")
        sh("ip", "-n", srv, "addr", "add", "10.77.0.1/24", "dev", "br0")
        sh("ip", "-n", srv, "addr", "add", "fd77::1/64", "dev", "br0", "nodad")
        sh("ip", "-n", srv, "link", "set", "lo", "up")
        sh("ip", "-n", srv, "addr", "add", "fd98::1/128", "dev", "lo")
        sh("ip", "-n", gw, "link", "set", "lo", "up")
        sh("ip", "-n", gw, "addr", "add", "fd99::1/128", "dev", "lo")
        sh("ip", "-n", gw, "addr", "add", "fe80::1/64", "dev", "gw0", "nodad")
        sh("ip", "-n", gw, "link", "set", "gw0", "up")
        sh("ip", "-n", gw, "-6", "route", "add", "fd77::/64", "dev", "gw0")
        sh("ip", "-n", ctr, "addr", "add", "10.77.0.2/24", "dev", "eth0")
        sh("ip", "-n", ctr, "addr", "add", "fd77::2/64", "dev", "eth0")
        sh("ip", "-n", ctr, "link", "set", "eth0", "up")
        sh("ip", "-n", ctr, "route", "add", "default", "via", "10.77.0.1")
        sh("ip", "-n", ctr, "-6", "route", "add", "default", "via", "fd77::1")
        sh("ip", "-n", ctr, "-6", "route", "add", "fd99::/64", "via", "fe80::1", "dev", "eth0")
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "token.txt").write_text("served-across-the-veth\n")
        servers.append(subprocess.Popen(
            ["ip", "netns", "exec", srv, "python3", "-m", "http.server", "--bind", "10.77.0.1", "8077",
             "--directory", str(tmp_path / "www")], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        for ns in (srv, gw):
            servers.append(subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", PEER_SERVER, "8078"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(ctr, "10.77.0.1", 8077)
        wait_listening(ctr, "fd77::1", 8078)
        wait_listening(ctr, "fd99::1", 8078)
        # The premise: without its route, fd99::1 is out of reach.
        sh("ip", "-n", ctr, "-6", "route", "del", "fd99::/64")
        probe = "import socket\ntry: socket.create_connection(('fd99::1',8078),2); print('reached')\nexcept OSError: print('unreachable')"
        assert sh("ip", "netns", "exec", ctr, "python3", "-c", probe).strip() == "unreachable"
        sh("ip", "-n", ctr, "-6", "route", "add", "fd99::/64", "via", "fe80::1", "dev", "eth0")
        mac = re.search(r"link/ether (\S+)", sh("ip", "-n", ctr, "link", "show", "eth0")).group(1)
        yield ctr, mac
    finally:
        for server in servers:
            server.kill()
            server.wait()
        for ns in (ctr, gw, srv):
            sh("ip", "netns", "del", ns)


def test_net_the_netns_address_routes_dns_and_a_server_reached_through_the_veth(vm, bundle, netns_pair, tmp_path):
    ctr, mac = netns_pair
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{ctr}"})
    # DNS as podman gives it: its resolv.conf bind-mounted (the binds share carries it).
    (tmp_path / "resolv.conf").write_text("nameserver 10.77.0.1\n")
    bundle.config["mounts"].append({"destination": "/etc/resolv.conf", "type": "bind",
                                    "source": str(tmp_path / "resolv.conf"), "options": ["rbind", "ro"]})
    bundle.set_args("sh", "-c", "ip addr show; ip route show; ip -6 route show; cat /etc/resolv.conf; "
                    "cd /proc/sys/net/ipv6/conf/eth0; echo \"dad,ra,slaac: $(cat accept_dad),$(cat accept_ra),$(cat autoconf)\"; "
                    "for a in fd77::1 fd98::1 fd99::1; do echo \"$a sees $(wget -q -O - http://[$a]:8078/)\"; done; "
                    "wget -q -O - http://10.77.0.1:8077/token.txt")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "inet 10.77.0.2/24" in out  # the namespace's address, inside the VM's container
    pod6 = re.search(r"inet6 fd77::2/64 .*", out)
    assert pod6 and "scope global" in pod6.group(0), out
    assert "tentative" not in pod6.group(0) and "dadfailed" not in pod6.group(0), out  # usable at once
    assert f"link/ether {mac}" in out  # the veth's MAC: the server's neighbour entry stays valid
    assert "mtu 1400" in out
    assert "default via 10.77.0.1" in out
    assert "default via fd77::1" in out and "fd99::/64 via fe80::1" in out
    # No duplicate address detection (the address works at once), no router advertisement taken.
    assert "dad,ra,slaac: 0,0,0\n" in out, out
    assert "nameserver 10.77.0.1" in out
    # Over IPv6 on the link, through the default route and through the fd99::/64 route's link-local
    # gateway, the server sees the pod's address as the source.
    for server in ("fd77::1", "fd98::1", "fd99::1"):
        assert f"{server} sees fd77::2\n" in out, out
    assert out.rstrip().endswith("served-across-the-veth")
    # The tap went with the VMM, the veth's ingress qdisc with run's delete.
    assert "capsule-tap0" not in sh("ip", "-n", ctr, "link", "show")
    assert "ingress" not in sh("tc", "-n", ctr, "qdisc", "show", "dev", "eth0")
    assert_nothing_left(vm, bundle)


def test_net_an_ipv6_only_namespace(vm, bundle):
    """A single-stack IPv6 pod: the interface is the IPv6 default route's, the guest has no IPv4
    address, and the server sees the pod's address."""
    tag = os.getpid() % 100000
    srv, ctr = f"capsrv6{tag}", f"capctr6{tag}"
    for ns in (srv, ctr):
        sh("ip", "netns", "add", ns)
    server = None
    try:
        sh("ip", "-n", ctr, "link", "add", "eth0", "type", "veth", "peer", "name", "veth-srv", "netns", srv)
        sh("ip", "-n", srv, "link", "set", "veth-srv", "up")
        sh("ip", "-n", srv, "addr", "add", "2001:db8:6::1/64", "dev", "veth-srv", "nodad")
        sh("ip", "-n", ctr, "addr", "add", "2001:db8:6::2/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ctr, "link", "set", "eth0", "up")
        sh("ip", "-n", ctr, "-6", "route", "add", "default", "via", "2001:db8:6::1")
        server = subprocess.Popen(["ip", "netns", "exec", srv, "python3", "-c", PEER_SERVER, "8078"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(ctr, "2001:db8:6::1", 8078)
        bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"]
                                                if ns["type"] != "network"]
        bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{ctr}"})
        bundle.set_args("sh", "-c", "ip addr show eth0; ip -6 route show; "
                        "echo \"sees $(wget -q -O - http://[2001:db8:6::1]:8078/)\"")
        p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    finally:
        if server:
            server.kill()
            server.wait()
        for ns in (ctr, srv):
            sh("ip", "netns", "del", ns)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "inet6 2001:db8:6::2/64 scope global" in out and "inet " not in out, out
    assert "default via 2001:db8:6::1" in out, out
    assert "sees 2001:db8:6::2\n" in out, out
    assert_nothing_left(vm, bundle)


def test_net_a_network_namespace_path_that_is_no_namespace_is_refused(vm, bundle, tmp_path):
    (tmp_path / "not-a-netns").write_text("")
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": str(tmp_path / "not-a-netns")})
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=120)
    assert p.returncode == 1
    assert p.stderr.startswith("capsule: linux.namespaces: network: ") and "is not a network namespace" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1
    assert_nothing_left(vm, bundle)


def test_net_a_second_vm_container_in_a_namespace_whose_interface_a_vm_took_is_refused(vm, bundle, crash_netns, tmp_path):
    """As a pod's second workload container under capsule-vm: the first VM has the namespace's
    interface, so the second's create is refused in one line that names linux.namespaces and
    the holder (or, from another --root, its tap), and leaves nothing; the first keeps its tap
    and tc filters, and its container the namespace's address."""
    become_subreaper()
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{crash_netns}"})
    bundle.set_args("sleep", "1000")
    other = Bundle(str(tmp_path / "other"), copy.deepcopy(bundle.config))
    shutil.copytree(bundle.path, other.path, symlinks=True)
    other.config["linux"]["cgroupsPath"] = f"capsule-test/{other.id}"
    other.write()
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    filters = sh("tc", "-n", crash_netns, "filter", "show", "dev", "eth0", "ingress")
    assert "capsule-tap0" in filters, filters
    p = vm.run("create", "--bundle", other.path, other.id, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr == (f"capsule: linux.namespaces: network: `/run/netns/{crash_netns}`: its interface is taken by "
                        f"VM container `{bundle.id}` (one VM per network namespace)\n"), p.stderr
    assert crash_leftovers(vm, other, other.id) == []
    elsewhere = Capsule(str(tmp_path / "elsewhere"), os.path.join(BUILD, "capsule-vm"))
    p = elsewhere.run("create", "--bundle", other.path, other.id, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr == (f"capsule: linux.namespaces: network: `/run/netns/{crash_netns}`: its interface is taken by "
                        "another VM container (its tap `capsule-tap0` is there; one VM per network namespace)\n"), p.stderr
    assert crash_leftovers(elsewhere, other, other.id) == []
    assert vm.status(bundle.id) == "created"
    assert sh("tc", "-n", crash_netns, "filter", "show", "dev", "eth0", "ingress") == filters
    vm.run("start", bundle.id, check=True, timeout=120)
    p = vm.run("exec", bundle.id, "ip", "addr", "show", "eth0", timeout=120)
    assert p.returncode == 0 and "inet 10.79.0.2/24" in p.stdout, p.stdout + p.stderr
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
    assert crash_leftovers(vm, bundle, bundle.id, crash_netns) == []


def racing_bundles(bundle, netns, tmp_path, others):
    """bundle, joining netns and sleeping, and `others` copies of it with ids and cgroups of their own."""
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{netns}"})
    bundle.set_args("sleep", "1000")
    bundle.write()
    bundles = [bundle]
    for i in range(others):
        b = Bundle(str(tmp_path / f"racer{i}"), copy.deepcopy(bundle.config))
        shutil.copytree(bundle.path, b.path, symlinks=True)
        b.config["linux"]["cgroupsPath"] = f"capsule-test/{b.id}"
        b.write()
        bundles.append(b)
    return bundles


def race_creates(racers):
    """Creates of each (runtime, bundle), started at once: exactly one succeeds. Returns the winner's
    pair and (runtime, bundle, result) of each other."""
    start = threading.Barrier(len(racers))

    def create(racer):
        runtime, b = racer
        start.wait()
        return runtime.run("create", "--bundle", b.path, b.id, timeout=BOOT)

    with concurrent.futures.ThreadPoolExecutor(len(racers)) as pool:
        results = list(pool.map(create, racers))
    winners = [r for r, p in zip(racers, results) if p.returncode == 0]
    assert len(winners) == 1, [(p.returncode, p.stderr) for p in results]
    return winners[0], [(r[0], r[1], p) for r, p in zip(racers, results) if p.returncode != 0]


def test_net_creates_racing_for_one_namespace_one_wins_the_others_are_refused(vm, bundle, crash_netns, tmp_path):
    """Three creates of different ids for one namespace, started at once: the namespace's check and
    its claim are one step, so exactly one boots and each other is refused in one line naming
    linux.namespaces and the winner (its record is looked at before its tap), leaving nothing;
    the winner's delete then leaves nothing either."""
    become_subreaper()
    (_, winner), losers = race_creates([(vm, b) for b in racing_bundles(bundle, crash_netns, tmp_path, 2)])
    for _, b, p in losers:
        assert p.returncode != 0
        assert p.stderr == (f"capsule: linux.namespaces: network: `/run/netns/{crash_netns}`: its interface is taken by "
                            f"VM container `{winner.id}` (one VM per network namespace)\n"), p.stderr
        assert crash_leftovers(vm, b, b.id) == []
    assert vm.status(winner.id) == "created", vm_logs(vm, winner.id)
    vm.run("delete", "--force", winner.id, check=True, timeout=120)
    assert crash_leftovers(vm, winner, winner.id, crash_netns) == []


def test_net_creates_from_other_roots_racing_for_one_namespace_one_wins(vm, bundle, crash_netns, tmp_path):
    """As two runtimes' creates (another --root each) for one pod's namespace, started at once:
    --root's lock cannot see the others, but the VM's tap is made before the VMM starts and the
    kernel refuses a second of its name, so exactly one boots and each other is refused in one
    line naming linux.namespaces and the tap, leaving nothing behind in its root or in the
    namespace; the winner keeps its tap and filters."""
    become_subreaper()
    bundles = racing_bundles(bundle, crash_netns, tmp_path, 2)
    racers = [(vm, bundle)] + [(Capsule(str(tmp_path / f"root{i}"), os.path.join(BUILD, "capsule-vm")), b)
                               for i, b in enumerate(bundles[1:])]
    (winner, won), losers = race_creates(racers)
    for runtime, b, p in losers:
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stderr == (f"capsule: linux.namespaces: network: `/run/netns/{crash_netns}`: its interface is taken by "
                            "another VM container (its tap `capsule-tap0` is there; one VM per network namespace)\n"), p.stderr
        assert crash_leftovers(runtime, b, b.id) == []
    assert winner.status(won.id) == "created", vm_logs(winner, won.id)
    filters = sh("tc", "-n", crash_netns, "filter", "show", "dev", "eth0", "ingress")
    assert "capsule-tap0" in filters, filters
    winner.run("delete", "--force", won.id, check=True, timeout=120)
    assert crash_leftovers(winner, won, won.id, crash_netns) == []


def test_net_a_namespace_with_lo_only_gives_the_container_lo_only(vm, bundle):
    """As podman's --network none: a namespace by path with no interface to take over."""
    name = f"caplo{os.getpid() % 100000}"
    sh("ip", "netns", "add", name)
    try:
        bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"]
                                                if ns["type"] != "network"]
        bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{name}"})
        bundle.set_args("sh", "-c", "for i in /sys/class/net/*; do echo ${i##*/} $(cat $i/type); done")
        p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
        assert p.returncode == 0, p.stdout + p.stderr
        links = dict(line.split() for line in p.stdout.splitlines())
        # lo, and the guest kernel's own sit0 tunnel; no Ethernet NIC (ARPHRD_ETHER, 1)
        assert links.get("lo") == "772" and "1" not in links.values(), links
        assert "capsule-tap0" not in sh("ip", "-n", name, "link", "show")
    finally:
        sh("ip", "netns", "del", name)
    assert_nothing_left(vm, bundle)
