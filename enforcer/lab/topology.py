"""The lab's wiring: a node namespace with a bridge, pods and external hosts around it.

    +-------------------- netpol-<lab> (node) ---------------------+
    |  bridge <lab5>-br: 10.244.0.1/16 [fd00:10:244::1/64]        |
    |    |- <lab5>-0 ==veth== eth0 in netpol-<lab>-<ns>-<pod>      |   pods: ip/16, routed
    |    |- <lab5>-1 ==veth== eth0 in ...                          |   via the gateway
    |  <lab5>-x0: 192.168.50.1/32, route 192.168.50.10/32 ==veth== eth0 in netpol-<lab>-ext.<name>
    |  ip_forward=1 (this namespace only), no NAT                  |
    +--------------------------------------------------------------+

Every packet between two endpoints goes through the node, one routed hop, with its real
addresses (no NAT, so ipBlock rules see what they should, SEMANTICS 13). An endpoint's
address keeps its prefix (``ip/16`` for a pod, ``ip/24`` or ``/64`` for an external host)
but adds no on-link route: only the gateway is on-link, and the default route goes to it.

Why routed and not bridged: the kernel's neighbour (ARP/NDP) table is shared by ALL
network namespaces, and its hard limit (gc_thresh3, 1024 by default) can only be raised
from the host's namespace, which the lab never touches. A bridged 250-pod lab needs ~62,000
ARP entries when every pod talks to every other; a routed one needs one per pod, and the
lab writes even those as permanent entries (they do not count towards the limit) with
MAC addresses it chose itself. So a lab resolves no neighbour at all.

External hosts sit on their own veth; the node holds its address in the host's subnet
(first host address, or the last when an external host has the first) as a host address,
plus a host route to the external, so two external hosts may share a subnet.

What to wire is planned elsewhere, purely: addresses, pod CIDRs, gateways and conflicts in
enforcer/compiler/ipam.py; here only the MACs the lab chooses. The rest is the only code that
touches links, through pyroute2 sockets opened inside the lab's namespaces. Nothing here
ever opens a socket in the host's namespace.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from enforcer import interrupts, netns
from enforcer.compiler import ipam
from enforcer.errors import LabError, NetnsError
from enforcer.lab.state import Endpoint

IFA_F_NODAD = 0x02  # no duplicate address detection: a v6 address is usable at once
IFA_F_NOPREFIXROUTE = 0x200  # the address keeps its prefix but adds no on-link route
NUD_PERMANENT = 0x80
RT_SCOPE_LINK = 253
BRIDGE_MAC = "02:6e:70:00:00:01"  # locally administered; fixed so pods can pin it

# Sysctls written inside every pod and external namespace: no rate limit on ICMP errors,
# so a UDP probe to a closed port always gets its port-unreachable (an "allowed" answer)
# even when hundreds of probes arrive in the same second.
ENDPOINT_SYSCTLS = {
    "net/ipv4/icmp_ratemask": "0",
    "net/ipv4/icmp_msgs_per_sec": "1000000",
    "net/ipv4/icmp_msgs_burst": "1000000",
    "net/ipv6/icmp/ratelimit": "0",
}
NODE_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    # Pods of two pod CIDRs share the bridge; the node routes between them and must not
    # tell them to talk directly (they have no on-link route to each other).
    "net/ipv4/conf/all/send_redirects": "0",
    "net/ipv4/conf/default/send_redirects": "0",
}


# ---------------------------------------------------------------- MACs (pure)

def _ip(a: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(a)


def mac(kind: str, index: int) -> str:
    """A locally administered MAC for the endpoint with this index: ``pod`` (a pod's eth0),
    ``ext`` (an external host's eth0), ``node`` (the node's side of an external's link)."""
    prefix = {"pod": 0x71, "ext": 0x72, "node": 0x73}[kind]
    i = index & 0xFFFFFF
    return f"02:6e:{prefix:02x}:{i >> 16:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


# ---------------------------------------------------------------- building (kernel)

def _nl_error(what: str, e: Exception) -> LabError:
    return LabError(f"{what}: {e}")


def _iproute_in(name: str):
    """An IPRoute whose netlink socket lives in namespace ``name`` (opened while inside)."""
    with netns.entered(name), interrupts.deferred():  # a half-made IPRoute breaks its own __del__
        return netns.held_iproute()  # its requests, too, run with interrupts held


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """Write sysctls of namespace ``name`` only: /proc/sys/net follows the calling thread's
    namespace, and the thread is inside ``name`` while the files are written."""
    with netns.entered(name):
        for key, value in values.items():
            try:
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write(value)
            except FileNotFoundError:
                pass  # e.g. IPv6 disabled: nothing to tune


def _addr_add(ipr, index: int, addr: str, prefixlen: int, flags: int = 0) -> None:
    if _ip(addr).version == 6:
        flags |= IFA_F_NODAD
    kw = {"flags": flags} if flags else {}
    ipr.addr("add", index=index, address=addr, prefixlen=prefixlen, **kw)


def _lo_up(ipr) -> None:
    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


class Node:
    """The lab's node namespace, with one netlink socket kept open for a whole command."""

    def __init__(self, netns_name: str, bridge: str):
        self.netns = netns_name
        self.bridge = bridge
        self.ipr = _iproute_in(netns_name)
        found = self.ipr.link_lookup(ifname=bridge)
        self.bridge_index = found[0] if found else None

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def build(cls, netns_name: str, bridge: str, gateways: Iterable[tuple[str, int]]) -> "Node":
        """Create the node namespace's bridge and gateways (the namespace exists already)."""
        write_sysctls(netns_name, NODE_SYSCTLS)
        node = cls(netns_name, bridge)
        try:
            _lo_up(node.ipr)
            node.ipr.link("add", ifname=bridge, kind="bridge", address=BRIDGE_MAC)
            node.bridge_index = node.ipr.link_lookup(ifname=bridge)[0]
            for addr, prefixlen in gateways:
                _addr_add(node.ipr, node.bridge_index, addr, prefixlen)
            node.ipr.link("set", index=node.bridge_index, state="up")
        except Exception as e:
            node.close()
            raise _nl_error(f"building bridge {bridge} in {netns_name}", e) from e
        return node

    def add_gateway(self, addr: str, prefixlen: int) -> None:
        try:
            _addr_add(self.ipr, self.bridge_index, addr, prefixlen)
        except Exception as e:
            raise _nl_error(f"adding gateway {addr} in {self.netns}", e) from e

    def _veth(self, ep: Endpoint) -> int:
        kw = {"address": ep.node_mac} if ep.node_mac else {}
        self.ipr.link("add", ifname=ep.link, kind="veth", **kw,
                      peer={"ifname": "eth0", "address": ep.mac, "net_ns_fd": netns.path(ep.netns)})
        return self.ipr.link_lookup(ifname=ep.link)[0]

    def _pin(self, index: int, addr: str, lladdr: str) -> None:
        self.ipr.neigh("replace", dst=addr, lladdr=lladdr, ifindex=index, state=NUD_PERMANENT)

    def add_pod(self, ep: Endpoint, cidrs: tuple[str, ...]) -> None:
        """Join the pod's (existing, empty) namespace to the bridge and address it."""
        try:
            index = self._veth(ep)
            self.ipr.link("set", index=index, master=self.bridge_index, state="up")
            addrs = []
            routes: dict[int, str] = {}
            for a in ep.ips:
                c = ipam.cidr_of(a, cidrs)
                addrs.append((a, ipaddress.ip_network(c).prefixlen))
                routes.setdefault(_ip(a).version, ipam.gateway(c))
                self._pin(self.bridge_index, a, ep.mac)
            gateways = {ipam.gateway(ipam.cidr_of(a, cidrs)) for a in ep.ips}
            _configure_inside(ep.netns, addrs, routes, {gw: BRIDGE_MAC for gw in gateways})
        except LabError:
            raise
        except Exception as e:
            raise _nl_error(f"wiring pod {ep.key} ({ep.netns})", e) from e

    def add_external(self, ep: Endpoint) -> None:
        try:
            index = self._veth(ep)
            self.ipr.link("set", index=index, state="up")
            for na in ep.node_addrs:
                _addr_add(self.ipr, index, na, 32 if _ip(na).version == 4 else 128)
            addrs = []
            routes: dict[int, str] = {}
            for a in ep.ips:
                v = _ip(a).version
                self.ipr.route("add", dst=a, dst_len=32 if v == 4 else 128, oif=index)
                self._pin(index, a, ep.mac)
                net = ipaddress.ip_network(f"{a}/{ipam.EXT_PREFIX[v]}", strict=False)
                addrs.append((a, ipam.EXT_PREFIX[v]))
                for na in ep.node_addrs:
                    if _ip(na) in net:
                        routes.setdefault(v, na)
            _configure_inside(ep.netns, addrs, routes, {na: ep.node_mac for na in ep.node_addrs})
        except LabError:
            raise
        except Exception as e:
            raise _nl_error(f"wiring external host {ep.key} ({ep.netns})", e) from e

    def remove(self, ep: Endpoint) -> None:
        """Delete an endpoint's node-side veth (its peer goes with it) and, for a pod, the
        permanent neighbour entries on the bridge (they would outlive the pod)."""
        try:
            if ep.kind == "pod":
                for a in ep.ips:
                    try:
                        self.ipr.neigh("del", dst=a, ifindex=self.bridge_index)
                    except Exception:
                        pass  # already gone
            found = self.ipr.link_lookup(ifname=ep.link)
            if found:
                self.ipr.link("del", index=found[0])
        except Exception as e:
            raise _nl_error(f"removing link {ep.link} in {self.netns}", e) from e


def _configure_inside(name: str, addrs: list[tuple[str, int]], routes: dict[int, str],
                      neighbours: dict[str, str]) -> None:
    """Inside an endpoint's namespace: lo and eth0 up, addresses that add no on-link
    route, the gateway on-link and pinned to its MAC, default routes via the gateway."""
    write_sysctls(name, ENDPOINT_SYSCTLS)
    ipr = _iproute_in(name)
    with ipr:
        _lo_up(ipr)
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        for a, prefixlen in addrs:
            _addr_add(ipr, eth0, a, prefixlen, IFA_F_NOPREFIXROUTE)
        ipr.link("set", index=eth0, state="up")
        for gw, lladdr in neighbours.items():
            ipr.neigh("replace", dst=gw, lladdr=lladdr, ifindex=eth0, state=NUD_PERMANENT)
        for version, gw in sorted(routes.items()):
            ipr.route("add", dst=gw, dst_len=32 if version == 4 else 128, oif=eth0, scope=RT_SCOPE_LINK)
            ipr.route("add", dst="0.0.0.0/0" if version == 4 else "::/0", gateway=gw)


def create_netns(lab: str, name: str, journal) -> None:
    """Create one of the lab's namespaces, journaled first so a crash cannot leak it.

    A name that exists already is refused before it is journaled: it is not ours, and
    ``lab down`` must never remove it.
    """
    if netns.exists(name):
        raise LabError(f"network namespace {name} exists already (another lab, or a leftover: "
                       f"netpol lab down --name {lab})")
    journal(name)
    try:
        netns.create(name)
    except NetnsError as e:
        raise LabError(str(e)) from e
