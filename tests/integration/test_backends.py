"""Kernel backends against real packets (root).

Topology, made once per module in namespaces of our own (``npt-bk<pid>-*``), removed in a
finally; nothing is created in the host's namespace::

    npt-..-c1 (10.231.1.2, fd00:231:1::2) --veth-- (10.231.1.1, fd00:231:1::1)
                                                    npt-..-srv
    npt-..-c2 (10.231.2.2, fd00:231:2::2) --veth-- (10.231.2.1, fd00:231:2::1)

Servers and clients are sockets of this process opened while the thread is inside a
namespace (a socket stays in the namespace it was made in): a dual-stack TCP echo server on
8080 and 8081 and a UDP echo on 5353 in every namespace. Every test applies firewalls with
one backend and checks what real connections do; the backend's rules are removed after
each test.
"""
from __future__ import annotations

import os
from dataclasses import replace
import socket
import threading
from typing import Iterator

import pytest

from backends import base
from backends.iptables import IptablesBackend, parse_save
from backends.nftables import NftablesBackend
from enforcer import netns
from enforcer.errors import ApplyError, NetnsError
from enforcer.ir import (AddrPortSet, AddrSet, AllowRule, DirectionPolicy, PodFirewall,
                         PortMatch, Provenance)

pytestmark = pytest.mark.root

PREFIX = f"npt-bk{os.getpid()}"
SRV, C1, C2 = f"{PREFIX}-srv", f"{PREFIX}-c1", f"{PREFIX}-c2"
ADDR = {
    "srv1": ("10.231.1.1", "fd00:231:1::1"), "c1": ("10.231.1.2", "fd00:231:1::2"),
    "srv2": ("10.231.2.1", "fd00:231:2::1"), "c2": ("10.231.2.2", "fd00:231:2::2"),
}
TCP_PORTS = (8080, 8081)
UDP_PORT = 5353
BLOCKED = 0.3  # seconds a dropped SYN is waited for: a veth answers in microseconds


# ---------------------------------------------------------------------------------------
# topology and sockets


class Servers:
    """Echo servers inside a namespace, served by threads of this process."""

    def __init__(self, name: str) -> None:
        self.socks: list[socket.socket] = []
        with netns.entered(name):
            for port in TCP_PORTS:
                s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::", port))
                s.listen(64)
                self.socks.append(s)
                threading.Thread(target=self._tcp, args=(s,), daemon=True).start()
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            u.bind(("::", UDP_PORT))
            self.socks.append(u)
            threading.Thread(target=self._udp, args=(u,), daemon=True).start()

    @staticmethod
    def _tcp(s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.sendall(conn.recv(100))
                except OSError:
                    pass

    @staticmethod
    def _udp(u: socket.socket) -> None:
        while True:
            try:
                data, peer = u.recvfrom(100)
                if peer is None:  # shut down
                    return
                u.sendto(data, peer)
            except OSError:
                return

    def close(self) -> None:
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def tcp(src: str, addr: str, port: int, timeout: float = BLOCKED) -> str:
    """connected | refused | timeout, for a TCP connection from namespace ``src``."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with netns.entered(src):
        s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
        except ConnectionRefusedError:
            return "refused"
        except (socket.timeout, TimeoutError):
            return "timeout"
        s.settimeout(2)
        s.sendall(b"ping")
        assert s.recv(100) == b"ping"
        return "connected"
    finally:
        s.close()


def udp(src: str, addr: str, port: int = UDP_PORT, timeout: float = BLOCKED) -> bool:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with netns.entered(src):
        s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(b"hello", (addr, port))
        try:
            return s.recv(100) == b"hello"
        except (socket.timeout, TimeoutError):
            return False
    finally:
        s.close()


def _veth(a: str, a_if: str, b: str, b_if: str, a_addrs, b_addrs) -> None:
    netns.run(a, ["ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b])
    for ns, ifname, (v4, v6) in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
        netns.run(ns, ["ip", "addr", "add", f"{v4}/24", "dev", ifname])
        netns.run(ns, ["ip", "-6", "addr", "add", f"{v6}/64", "dev", ifname, "nodad"])
        netns.run(ns, ["ip", "link", "set", ifname, "up"])


@pytest.fixture(scope="module")
def topo() -> Iterator[None]:
    made: list[str] = []
    servers: list[Servers] = []
    try:
        for name in (SRV, C1, C2):
            netns.create(name)
            made.append(name)
            netns.run(name, ["ip", "link", "set", "lo", "up"])
        _veth(SRV, "v1", C1, "p1", ADDR["srv1"], ADDR["c1"])
        _veth(SRV, "v2", C2, "p2", ADDR["srv2"], ADDR["c2"])
        servers = [Servers(n) for n in (SRV, C1, C2)]
        yield
    finally:
        for s in servers:
            s.close()
        for name in made:
            netns.remove(name)
    assert not netns.list_names(PREFIX)


def _all_backends() -> list:
    return [NftablesBackend("libnft"), NftablesBackend("cli"),
            IptablesBackend("nft"), IptablesBackend("legacy")]


@pytest.fixture(params=["nftables-libnft", "nftables-netlink", "nftables-cli", "iptables", "iptables-legacy"])
def backend(request, topo):
    b = {"nftables-libnft": lambda: NftablesBackend("libnft"),
         "nftables-netlink": lambda: NftablesBackend("netlink"),  # whole tables as netlink batches
         "nftables-cli": lambda: NftablesBackend("cli"),
         "iptables": lambda: IptablesBackend("nft"),
         "iptables-legacy": lambda: IptablesBackend("legacy")}[request.param]()
    b.check()
    try:
        yield b
    finally:
        for ns in (SRV, C1, C2):
            for other in _all_backends():
                other.remove(ns)
        close = getattr(b, "close", None)
        if close:
            close()


# ---------------------------------------------------------------------------------------
# firewalls


def rule(policy: str, direction: str, index: int, **kw) -> AllowRule:
    return AllowRule(Provenance(policy, direction, index), **kw)


def peers(*who: str, name: str = "in0", interval: bool = False) -> AddrSet:
    """The addresses of ``who`` (a host set, or the same addresses in an interval set)."""
    return AddrSet(name, v4=tuple(f"{ADDR[w][0]}/32" for w in who),
                   v6=tuple(f"{ADDR[w][1]}/128" for w in who), interval=interval)


def server_fw(*allowed: str, egress_closed: bool = True, node: tuple[str, ...] = (),
              interval: bool = False) -> PodFirewall:
    """srv: ingress from ``allowed`` on TCP 8080 and UDP 5353; egress allows nothing."""
    return PodFirewall(
        pod="x/srv", node_ips=node,
        ingress=DirectionPolicy(True, ("x/allow",), (
            rule("x/allow", "ingress", 0, peers="in0",
                 ports=(PortMatch("TCP", 8080), PortMatch("UDP", UDP_PORT))),)),
        egress=DirectionPolicy(egress_closed, ("x/deny-egress",) if egress_closed else (), ()),
        sets=(peers(*allowed, interval=interval),))


# ---------------------------------------------------------------------------------------
# tests


def test_allows_only_listed_peers_and_ports_v4_and_v6(backend):
    fw = server_fw("c1")
    assert backend.apply(SRV, fw).kind == "full"
    assert backend.verify(SRV, fw)
    for fam in (0, 1):
        srv1, srv2 = ADDR["srv1"][fam], ADDR["srv2"][fam]
        # conntrack lets the replies out although srv's egress allows nothing
        assert tcp(C1, srv1, 8080) == "connected"
        assert tcp(C1, srv1, 8081) == "timeout"
        assert tcp(C2, srv2, 8080) == "timeout"
        assert udp(C1, srv1)
        assert not udp(C2, srv2)
        # egress isolated with no rules: srv cannot start connections
        assert tcp(SRV, ADDR["c1"][fam], 8080) == "timeout"
    # loopback is always allowed
    assert tcp(SRV, "127.0.0.1", 8081) == "connected"
    assert tcp(SRV, ADDR["srv1"][0], 8081) == "connected"  # a pod reaching its own IP
    counts = dict((c, p) for c, p, _ in backend.counters(SRV))
    assert counts["x/allow ingress[0]"] >= 4
    assert counts["ingress isolated by x/allow"] >= 4


def test_not_isolated_allows_everything_and_node_is_always_allowed(backend):
    open_fw = PodFirewall(pod="x/srv")
    backend.apply(SRV, open_fw)
    assert tcp(C2, ADDR["srv2"][0], 8081) == "connected"
    assert tcp(SRV, ADDR["c2"][1], 8081) == "connected"
    # c2 as the node: allowed both ways although srv is isolated and c2 is no peer
    fw = server_fw("c1", node=ADDR["c2"])
    backend.apply(SRV, fw, open_fw)
    assert tcp(C2, ADDR["srv2"][0], 8081) == "connected"
    assert tcp(C2, ADDR["srv2"][1], 8081) == "connected"
    assert tcp(SRV, ADDR["c2"][0], 8080) == "connected"
    assert tcp(C1, ADDR["srv1"][0], 8081) == "timeout"


def test_peers_none_ports_empty_and_protocol_only_rules(backend):
    fw = PodFirewall(pod="x/srv", ingress=DirectionPolicy(True, ("x/udp",), (
        rule("x/udp", "ingress", 0, ports=(PortMatch("UDP"),)),
        rule("x/c1", "ingress", 0, peers="in0"))), sets=(peers("c1"),))
    backend.apply(SRV, fw)
    assert udp(C2, ADDR["srv2"][0]) and udp(C2, ADDR["srv2"][1])  # any peer, UDP only
    assert tcp(C2, ADDR["srv2"][0], 8080) == "timeout"
    assert tcp(C1, ADDR["srv1"][1], 8081) == "connected"  # c1: any port
    everyone = PodFirewall(pod="x/srv", ingress=DirectionPolicy(True, ("x/all",), (
        rule("x/all", "ingress", 0),)))
    backend.apply(SRV, everyone, fw)
    assert tcp(C2, ADDR["srv2"][1], 8081) == "connected"


def test_named_port_elements_and_interval_sets_on_egress(backend):
    fw = PodFirewall(pod="x/c1", egress=DirectionPolicy(True, ("x/eg",), (
        rule("x/eg", "egress", 0, addr_ports="eg0_ap"),
        rule("x/eg", "egress", 1, peers="eg1", ports=(PortMatch("UDP", UDP_PORT),)))),
        sets=(AddrPortSet("eg0_ap", v4=((ADDR["srv1"][0], "TCP", 8080),),
                          v6=((ADDR["srv1"][1], "TCP", 8081),)),
              AddrSet("eg1", v4=("10.231.0.0/16",), v6=("fd00:231::/32",), interval=True)))
    backend.apply(C1, fw)
    assert backend.verify(C1, fw)
    assert tcp(C1, ADDR["srv1"][0], 8080) == "connected"
    assert tcp(C1, ADDR["srv1"][0], 8081) == "timeout"
    assert tcp(C1, ADDR["srv1"][1], 8081) == "connected"
    assert tcp(C1, ADDR["srv1"][1], 8080) == "timeout"
    assert udp(C1, ADDR["srv1"][0]) and udp(C1, ADDR["srv1"][1])


def test_delta_changes_behaviour_without_replacing_rules(backend):
    fw1 = server_fw("c1")
    backend.apply(SRV, fw1)
    assert tcp(C1, ADDR["srv1"][0], 8080) == "connected"
    assert tcp(C2, ADDR["srv2"][0], 8080) == "timeout"
    before = _rule_identity(backend, SRV)
    fw2 = server_fw("c1", "c2")
    result = backend.apply(SRV, fw2, fw1)
    assert (result.kind, result.elements_added, result.elements_removed) == ("delta", 2, 0)
    assert tcp(C2, ADDR["srv2"][0], 8080) == "connected"
    assert tcp(C2, ADDR["srv2"][1], 8080) == "connected"
    assert backend.verify(SRV, fw2) and not backend.verify(SRV, fw1)
    assert _rule_identity(backend, SRV) == before
    # and back: c1 removed, c2 stays
    fw3 = server_fw("c2")
    assert backend.apply(SRV, fw3, fw2).kind == "delta"
    assert tcp(C1, ADDR["srv1"][0], 8080) == "timeout"
    assert tcp(C2, ADDR["srv2"][1], 8080) == "connected"
    assert _rule_identity(backend, SRV) == before


def test_delta_on_interval_sets_recollapsed(backend):
    wide = lambda cidrs: PodFirewall(pod="x/srv", ingress=DirectionPolicy(True, ("x/b",), (  # noqa: E731
        rule("x/b", "ingress", 0, peers="blk"),)), sets=(AddrSet("blk", v4=cidrs, interval=True),))
    fw1 = wide(("10.231.1.0/25",))
    backend.apply(SRV, fw1)
    assert tcp(C2, ADDR["srv2"][0], 8080) == "timeout"
    fw2 = wide(("10.231.0.0/22",))  # now covers c2's 10.231.2.2 too; replaces the /25
    assert backend.apply(SRV, fw2, fw1).kind == "delta"
    assert backend.verify(SRV, fw2)
    assert tcp(C2, ADDR["srv2"][0], 8080) == "connected"


def test_large_delta_beyond_one_netlink_attribute(backend):
    """10,000 peers added in one delta: more than one netlink attribute (64 KiB) holds, so
    the element batch must be split, yet stay one transaction; c2 then gets in."""
    many = tuple(f"10.{200 + i // 65536}.{(i // 256) % 256}.{i % 256}/32" for i in range(10_000))
    fw1 = server_fw("c1")
    backend.apply(SRV, fw1)
    big = AddrSet("in0", v4=many + (f"{ADDR['c1'][0]}/32", f"{ADDR['c2'][0]}/32"),
                  v6=(f"{ADDR['c1'][1]}/128",))
    fw2 = replace(fw1, sets=(big,))
    result = backend.apply(SRV, fw2, fw1)
    assert result.kind == "delta" and result.elements_added == 10_001
    assert backend.verify(SRV, fw2)
    assert tcp(C2, ADDR["srv2"][0], 8080) == "connected"
    assert tcp(C2, ADDR["srv2"][1], 8080) == "timeout"  # c2's v6 address is not in the set


def _rule_identity(backend, ns: str):
    """Something that changes when the rules are replaced rather than their sets edited:
    nft table and rule handles; for iptables the packet counters, which a rewrite zeroes
    (so they are compared as "never went down")."""
    if isinstance(backend, NftablesBackend):
        text = netns.run(ns, ["nft", "-a", "list", "table", "inet", "netpol"]).stdout
        return [ln.split("# handle")[1] for ln in text.splitlines()
                if "# handle" in ln and "elements" not in ln]
    st = parse_save(netns.run(ns, [backend._inst().save[4], "-c", "-t", "filter"]).stdout)
    return Counts(p for p, _ in st.counts["NETPOL-INGRESS"])


class Counts(tuple):
    def __eq__(self, before) -> bool:  # type: ignore[override]
        return len(self) == len(before) and all(a >= b for a, b in zip(self, before)) \
            and sum(self) > 0

    __hash__ = tuple.__hash__


def test_unchanged_state_is_none_and_full_reapply_is_idempotent(backend):
    fw = server_fw("c1")
    backend.apply(SRV, fw)
    assert backend.apply(SRV, fw, fw).kind == "none"
    # a full apply over what is there (daemon restart) swaps cleanly: one jump, same rules
    assert backend.apply(SRV, fw).kind == "full"
    assert backend.apply(SRV, fw, None).kind == "full"
    assert backend.verify(SRV, fw)
    if isinstance(backend, IptablesBackend):
        for fam in (4, 6):
            st = backend._inst().read_state(SRV, fam)
            assert st.jumps == {"INPUT": [1], "OUTPUT": [1]}
        names = netns.run(SRV, ["ipset", "list", "-n"]).stdout.split()
        assert sorted(names) == ["np.in0.ip4", "np.in0.ip6"]
    assert tcp(C1, ADDR["srv1"][0], 8080) == "connected"


def _refused_by_kernel(backend, fw: PodFirewall, name: str = "in0") -> AddrSet:
    """A set Python lets through and the kernel refuses: for nft an interval inside one
    added before it (the concatenated ipBlock set, pipapo, refuses it as existing; it
    takes a wider one), an IPv6 address in an IPv4 ipset for iptables (hash:net takes
    overlaps, nft files an IPv6 address under the IPv6 set)."""
    if isinstance(backend, NftablesBackend):
        return AddrSet(name, v4=(f"{ADDR['c1'][0]}/32", "10.231.1.0/24", "10.231.1.128/25"), interval=True)
    return AddrSet(name, v4=(f"{ADDR['c1'][0]}/32", f"{ADDR['c2'][1]}/128"), interval=True)


def test_refused_apply_keeps_the_previous_rules(backend):
    fw = server_fw("c1", interval=True)
    backend.apply(SRV, fw)
    bad = PodFirewall(pod=fw.pod, ingress=fw.ingress, egress=fw.egress,
                      sets=(_refused_by_kernel(backend, fw),))
    assert base.plan(fw, bad) == "delta"
    with pytest.raises(ApplyError) as err:
        backend.apply(SRV, bad, fw)
    assert "previous rules stay in force" in str(err.value)
    restructured = PodFirewall(pod=fw.pod, ingress=fw.ingress, egress=DirectionPolicy(),
                               sets=bad.sets)
    assert base.plan(fw, restructured) == "full"
    with pytest.raises(ApplyError):
        backend.apply(SRV, restructured, fw)
    assert backend.verify(SRV, fw)
    assert tcp(C1, ADDR["srv1"][0], 8080) == "connected"
    assert tcp(C2, ADDR["srv2"][0], 8080) == "timeout"
    if isinstance(backend, IptablesBackend):
        names = netns.run(SRV, ["ipset", "list", "-n"]).stdout.split()
        assert sorted(names) == ["np.in0.net4", "np.in0.net6"]  # temporaries cleaned up


def test_refused_first_apply_leaves_nothing(backend):
    bad = PodFirewall(pod="x/c2", ingress=DirectionPolicy(True, ("x/p",), ()),
                      sets=(_refused_by_kernel(backend, None),))
    with pytest.raises(ApplyError):
        backend.apply(C2, bad)
    assert backend.read(C2) is None
    assert tcp(C1, ADDR["srv1"][0], 8081) == "connected"


def test_verify_detects_external_flush_and_full_apply_repairs(backend):
    fw = server_fw("c1")
    backend.apply(SRV, fw)
    assert backend.verify(SRV, fw)
    if isinstance(backend, NftablesBackend):
        netns.run(SRV, ["nft", "flush", "ruleset"])
    else:
        tool = "iptables" if backend.flavour == "nft" else "iptables-legacy"
        netns.run(SRV, [tool, "-F", "NETPOL-INGRESS"])
    assert not backend.verify(SRV, fw)
    assert tcp(C2, ADDR["srv2"][0], 8080) == "connected"  # drift: open
    backend.apply(SRV, fw)  # what the daemon's repair does: previous unknown, full
    assert backend.verify(SRV, fw)
    assert tcp(C2, ADDR["srv2"][0], 8080) == "timeout"


def test_verify_detects_a_moved_jump_and_an_extra_element(backend):
    fw = server_fw("c1")
    backend.apply(SRV, fw)
    if isinstance(backend, NftablesBackend):
        netns.run(SRV, ["nft", "add", "element", "inet", "netpol", "in0_4", "{", ADDR["c2"][0], "}"])
    else:
        tool = "iptables" if backend.flavour == "nft" else "iptables-legacy"
        netns.run(SRV, [tool, "-I", "INPUT", "1", "-p", "tcp", "--dport", "9", "-j", "ACCEPT"])
        assert not backend.verify(SRV, fw)
        backend.apply(SRV, fw)  # repair: our jump first again, the foreign rule kept
        assert backend.verify(SRV, fw)
        saved = netns.run(SRV, [backend._inst().save[4], "-t", "filter"]).stdout
        inputs = [ln for ln in saved.splitlines() if ln.startswith("-A INPUT")]
        assert len(inputs) == 2 and "NETPOL-INGRESS" in inputs[0] and "--dport 9" in inputs[1]
        netns.run(SRV, [tool, "-D", "INPUT", "2"])
        netns.run(SRV, ["ipset", "add", "np.in0.ip4", ADDR["c2"][0]])
    assert not backend.verify(SRV, fw)


def test_sctp_rules_load(backend):
    fw = PodFirewall(pod="x/srv", ingress=DirectionPolicy(True, ("x/s",), (
        rule("x/s", "ingress", 0, peers="in0", ports=(PortMatch("SCTP", 9), PortMatch("SCTP", 100, 200),
                                                     PortMatch("SCTP", 300))),
        rule("x/s", "ingress", 1, ports=(PortMatch("SCTP"),)))),
        sets=(peers("c1"),))
    backend.apply(SRV, fw)
    assert backend.verify(SRV, fw)
    assert "sctp" in backend.read(SRV)


def test_remove_leaves_nothing(backend):
    fw = server_fw("c1")
    backend.apply(SRV, fw)
    backend.remove(SRV)
    backend.remove(SRV)  # idempotent
    assert backend.read(SRV) is None
    assert not backend.verify(SRV, fw)
    if isinstance(backend, NftablesBackend):
        assert "netpol" not in netns.run(SRV, ["nft", "list", "tables"]).stdout
    else:
        for tool in backend._inst().save.values():
            assert "NETPOL" not in netns.run(SRV, [tool]).stdout
        assert netns.run(SRV, ["ipset", "list", "-n"]).stdout.split() == []
    assert tcp(C2, ADDR["srv2"][0], 8080) == "connected"
    backend.remove(f"{PREFIX}-gone")  # a namespace that does not exist: nothing to do


def test_nft_context_stays_in_its_namespace(topo):
    """A libnftables context made in namespace A acts on A after the thread has left A."""
    from backends import libnft

    with netns.entered(C1):
        ctx = libnft.Context()
        ctx.run("list tables")
    with netns.entered(C2):
        ctx.run("add table inet npt_probe")  # the thread is in C2, the context in C1
    try:
        assert "npt_probe" in netns.run(C1, ["nft", "list", "tables"]).stdout
        assert "npt_probe" not in netns.run(C2, ["nft", "list", "tables"]).stdout
    finally:
        ctx.run("delete table inet npt_probe")
        ctx.close()


def test_libnft_runner_notices_a_recreated_namespace(topo):
    b = NftablesBackend("libnft")
    name = f"{PREFIX}-re"
    try:
        netns.create(name)
        b.apply(name, PodFirewall(pod="x/re"))
        netns.remove(name)
        netns.create(name)  # same name, new namespace: the old context must not be used
        assert b.read(name) is None
        b.apply(name, PodFirewall(pod="x/re"))
        assert "netpol" in netns.run(name, ["nft", "list", "tables"]).stdout
    finally:
        b.close()
        netns.remove(name)


def test_registry_names_and_backends():
    from backends import registry
    from enforcer.errors import BackendUnavailable

    assert registry.names() == ["nftables", "iptables", "iptables-legacy", "fake"]
    assert registry.get("nftables").method == "libnft"
    assert registry.get("iptables").flavour == "nft"
    assert registry.get("iptables-legacy").flavour == "legacy"
    assert isinstance(registry.get("fake"), base.FakeBackend)
    with pytest.raises(BackendUnavailable, match="choose one of"):
        registry.get("pf")
    registry.reset()


def test_named_port_delta_and_apply_many(backend):
    """Element deltas of address . protocol . port sets (raw netlink keys for nft), and
    apply_many over several namespaces with a per-job result."""
    def fw(*elems):
        return PodFirewall(pod="x/c", egress=DirectionPolicy(True, ("x/eg",), (
            rule("x/eg", "egress", 0, addr_ports="ap"),)),
            sets=(AddrPortSet("ap", v4=tuple(e for e in elems if ":" not in e[0]),
                              v6=tuple(e for e in elems if ":" in e[0])),))
    fw1 = fw((ADDR["srv1"][0], "TCP", 8080))
    fw2 = fw((ADDR["srv1"][0], "TCP", 8081), (ADDR["srv1"][1], "TCP", 8080),
             (ADDR["srv2"][0], "UDP", UDP_PORT))
    results = backend.apply_many([(C1, fw1, None), (C2, fw2, None)])
    assert [r.kind for r in results] == ["full", "full"]
    assert tcp(C1, ADDR["srv1"][0], 8080) == "connected"
    assert tcp(C1, ADDR["srv1"][0], 8081) == "timeout"
    results = backend.apply_many([(C1, fw2, fw1), (C2, fw2, fw2), (f"{PREFIX}-gone", fw1, None)])
    assert [getattr(r, "kind", None) for r in results[:2]] == ["delta", "none"]
    assert isinstance(results[2], Exception)
    assert backend.verify(C1, fw2) and backend.verify(C2, fw2)
    assert tcp(C1, ADDR["srv1"][0], 8081) == "connected"
    assert tcp(C1, ADDR["srv1"][0], 8080) == "timeout"
    assert tcp(C1, ADDR["srv1"][1], 8080) == "connected"
    assert udp(C2, ADDR["srv2"][0])


def test_malformed_input_is_an_apply_error_not_a_traceback(backend):
    bad = PodFirewall(pod="x/srv", sets=(AddrSet("h", v4=("10.0.0.0/24",)),))  # network in a host set
    with pytest.raises(ApplyError):
        backend.apply(SRV, bad)
    bad = PodFirewall(pod="x/srv", sets=(AddrSet("h", v4=("10.0.0.300/32",)),))
    with pytest.raises(ApplyError):
        backend.apply(SRV, bad)
    assert backend.read(SRV) is None
    with pytest.raises(NetnsError):
        backend.apply(f"{PREFIX}-gone", PodFirewall(pod="x/gone"))


def test_compiled_set_names_load(backend):
    """The compiler's set names (in0, in1, in0B for a second policy, eg0p for an egress
    named port) load in every backend and read back equal, and still decide packets."""
    from enforcer.compiler import compile as comp
    from enforcer.model import ContainerPort, PortSpec
    from tests.unit.clusters import cluster, peer_block, peer_pods, pod, policy, rule as mrule, sel

    cl = cluster(
        pod("x", "srv", {"app": "srv"}, ips=ADDR["srv1"], ports=[ContainerPort(8080, "TCP", "http")]),
        pod("x", "c1", {"app": "c1"}, ips=ADDR["c1"], ports=[ContainerPort(8080, "TCP", "http")]),
        pod("x", "c2", {"app": "c2"}, ips=ADDR["c2"]),
        policy("x", "a", sel({"app": "srv"}),
               ingress=[mrule(peer_pods({"app": "c1"}), ports=[("TCP", 8080)]), mrule(peer_block("10.99.0.0/16"))],
               egress=[mrule(peer_pods({"app": "c1"}), ports=[PortSpec("TCP", "http")])]),
        policy("x", "b", sel({"app": "srv"}), ingress=[mrule(peer_pods({"app": "c2"}), ports=[("UDP", UDP_PORT)])]),
    )
    fw = comp.compile_cluster(cl)["x/srv"]
    assert sorted(s.name for s in fw.sets) == ["eg0p", "in0", "in0B", "in1"]
    # every element says where it comes from (element comments; ipset's comment extension)
    assert {s.name: s.notes for s in fw.sets}["in1"] == (("10.99.0.0/16", "ipBlock 10.99.0.0/16"),)
    assert dict({s.name: s.notes for s in fw.sets}["in0"])[f"{ADDR['c1'][0]}/32"] == "x/c1"
    backend.apply(SRV, fw)
    assert backend.verify(SRV, fw)
    listing = backend.read(SRV) or ""
    assert "x/c1" in listing and "ipBlock 10.99.0.0/16" in listing  # the kernel keeps the comments
    assert tcp(C1, ADDR["srv1"][0], 8080) == "connected"
    assert tcp(C2, ADDR["srv2"][0], 8080) == "timeout"
    assert udp(C2, ADDR["srv2"][0])


def test_ipv6_block_with_a_zero_prefix_reads_back_equal(backend):
    """An ipBlock in ::/96 (nft lists ::173.80.0.0, we render ::ad50:0; ip6tables lists its
    own form): read back equal, so verify never sees drift that is not there."""
    from enforcer.compiler import compile as comp
    from tests.unit.clusters import cluster, peer_block, pod, policy, rule as mrule, sel

    cl = cluster(pod("x", "srv", {"app": "srv"}, ips=ADDR["srv1"]),
                 policy("x", "a", sel({"app": "srv"}), ingress=[mrule(peer_block("::173.80.0.0/112"))]))
    fw = comp.compile_cluster(cl)["x/srv"]
    backend.apply(SRV, fw)
    assert backend.verify(SRV, fw)
    assert backend.apply(SRV, fw, fw).kind == "none"


def _set_handles(backend, ns: str) -> list[str]:
    listing = netns.run(ns, ["nft", "-a", "list", "table", "inet", "netpol"]).stdout
    return [ln.split("# handle")[1].strip() for ln in listing.splitlines()
            if ln.strip().startswith("set ") and "# handle" in ln]


def test_rule_change_keeps_the_sets(backend):
    """A port change replaces the rules and keeps the sets (nftables: flushed chains, the
    sets' handles unchanged, no element sent again); elements that move with it move too."""
    fw1 = server_fw("c1")
    backend.apply(SRV, fw1)
    on_8081 = lambda fw: replace(fw, ingress=DirectionPolicy(True, ("x/allow",), (  # noqa: E731
        rule("x/allow", "ingress", 0, peers="in0", ports=(PortMatch("TCP", 8081),)),)))
    fw2 = on_8081(fw1)
    handles = _set_handles(backend, SRV) if isinstance(backend, NftablesBackend) else None
    result = backend.apply(SRV, fw2, fw1)
    assert result.kind == "full" and backend.verify(SRV, fw2)
    assert tcp(C1, ADDR["srv1"][0], 8081) == "connected"
    assert tcp(C1, ADDR["srv1"][0], 8080) == "timeout"
    if handles is not None:
        assert (result.elements_added, result.elements_removed) == (0, 0)
        assert _set_handles(backend, SRV) == handles
    fw3 = replace(server_fw("c2"), ingress=fw1.ingress)  # rules back, and c2 instead of c1
    result = backend.apply(SRV, fw3, fw2)
    assert backend.verify(SRV, fw3) and not backend.verify(SRV, fw2)
    assert tcp(C2, ADDR["srv2"][1], 8080) == "connected"
    assert tcp(C1, ADDR["srv1"][0], 8080) == "timeout"
    if handles is not None:
        assert (result.elements_added, result.elements_removed) == (2, 2)
        assert _set_handles(backend, SRV) == handles
