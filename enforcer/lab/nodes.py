"""A lab of several nodes (``lab up --nodes N``): node namespaces joined by a routed underlay.

    netpol-<lab>  (the underlay router; external hosts hang off it as in a one-node lab)
      bridge <lab5>-ul 169.254.244.254/24
        |- <lab5>-u1 ==veth== ul0 169.254.244.1 in netpol-<lab>-node.1
        |- <lab5>-u2 ==veth== ul0 169.254.244.2 in netpol-<lab>-node.2 ...
    netpol-<lab>-node.K  (node K: ip_forward, no NAT)
      bridge <lab5>-br 10.244.(100+K).1/24 (its pod CIDR and gateway)
        |- <lab5>-<n> ==veth== eth0 of each pod bound to node K
      routes: every other node's pod CIDR via that node's underlay address, default via
      the router; /32 routes for pods whose (manifest) address is outside their node's CIDR

A packet between pods on two nodes leaves its pod, is routed by its node, crosses the
underlay to the other node, is routed there and enters the destination pod: it crosses both
nodes, with its real addresses. As in the one-node lab (topology.py), no neighbour is ever
resolved: every MAC is chosen here and pinned as a permanent entry.

Node namespaces are named ``netpol-<lab>-node.K``: Kubernetes namespace names cannot
contain a dot, so no pod's namespace (``netpol-<lab>-<ns>-<pod>``) can take that name.
Addresses (each node's pod CIDR, the pods' addresses from their node's, the checks) are
planned in enforcer/compiler/ipam.py; here the node names, the placement of pods on nodes
(pure), and ``Fabric``, the only part that touches links.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

from enforcer.compiler import ipam
from enforcer.errors import LabError
from enforcer.lab import naming, topology
from enforcer.lab.state import Endpoint, LabState
from enforcer.model import Cluster

UNDERLAY = ipam.UNDERLAY  # link-local: never a pod's or an external host's address
ROUTER_ADDR = "169.254.244.254"
UL_PREFIX = 24
MAX_NODES = 64


def node_names(n: int) -> list[str]:
    return [f"node{k}" for k in range(1, n + 1)]


def node_netns(lab: str, k: int) -> str:
    return f"{naming.node_netns(lab)}-node.{k}"


def underlay_link(lab: str, k: int) -> str:
    return naming._check_ifname(f"{naming.short(lab)}-u{k}")


def underlay_bridge(lab: str) -> str:
    return f"{naming.short(lab)}-ul"


def ul_mac(k: int) -> str:
    return f"02:6e:74:00:{(k >> 8) & 0xFF:02x}:{k & 0xFF:02x}"


# ---------------------------------------------------------------- planning (pure)

def plan_nodes(lab: str, n: int, cluster: Cluster) -> list[dict]:
    """N nodes, each with its names, a /24 pod CIDR that holds no address a manifest gave
    a pod (ipam.node_cidrs), its gateway and its underlay address."""
    if not 1 <= n <= MAX_NODES:
        raise LabError(f"--nodes must be between 1 and {MAX_NODES}, not {n}")
    return [{"name": f"node{k}", "index": k, "netns": node_netns(lab, k), "cidr": cidr,
             "gateway": ipam.gateway(cidr), "underlay": ipam.underlay_addr(k), "mac": ul_mac(k)}
            for k, cidr in enumerate(ipam.node_cidrs(n, cluster), start=1)]


def place(pods: Iterable[str], nodes: list[str], wanted: Mapping[str, str],
          current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Pod key -> node. A pod keeps the node it runs on; a pod whose manifest names a node
    (spec.nodeName) goes there; the others go, in sorted order, to the node with the fewest
    pods (the first such node on a tie): spread evenly, and the same input always gives the
    same placement."""
    current = dict(current or {})
    pods = sorted(pods)
    out: dict[str, str] = {}
    for key in pods:
        want = wanted.get(key)
        if want is not None and want not in nodes:
            raise LabError(f"pod {key}: spec.nodeName {want} is not a node of this lab "
                           f"({', '.join(nodes)})")
        if key in current:
            out[key] = current[key]
        elif want is not None:
            out[key] = want
    load = {n: 0 for n in nodes}
    for n in out.values():
        load[n] = load.get(n, 0) + 1
    for key in pods:
        if key not in out:
            target = min(nodes, key=lambda n: (load[n], nodes.index(n)))
            out[key] = target
            load[target] += 1
    return out


def outside(ip: str, node: dict) -> bool:
    """Whether a pod address needs its own /32 route (it is not in its node's CIDR)."""
    return ipaddress.ip_address(ip) not in ipaddress.ip_network(node["cidr"])


# ---------------------------------------------------------------- building (kernel)

class Fabric:
    """The router and every node, with one netlink socket per namespace for a command.

    Quacks like topology.Node for enforcer/lab/endpoints.py and converge.py: ``add_pod``,
    ``add_external``, ``remove``, ``add_gateway``; a pod goes to the node ``ep.node`` names."""

    def __init__(self, st: LabState):
        self.st = st
        self.nodes = {n["name"]: n for n in st.nodes}
        self.router = topology.Node(st.node_netns, st.bridge)
        self.members: dict[str, topology.Node] = {}
        try:
            for n in st.nodes:
                self.members[n["name"]] = topology.Node(n["netns"], naming.bridge_link(st.name))
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        self.router.close()
        for m in self.members.values():
            m.close()

    def __enter__(self) -> "Fabric":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def build(cls, st: LabState, journal) -> "Fabric":
        """The router (its namespace exists already), then each node and its underlay link."""
        router = topology.Node.build(st.node_netns, st.bridge, [(ROUTER_ADDR, UL_PREFIX)])
        try:
            for n in st.nodes:
                topology.create_netns(st.name, n["netns"], journal)
                topology.Node.build(n["netns"], naming.bridge_link(st.name),
                                    [(n["gateway"], 24)]).close()
                _underlay_link(router, st, n)
            for n in st.nodes:
                _node_routes(st, n)
            for n in st.nodes:
                router.ipr.route("add", dst=n["cidr"], gateway=n["underlay"])
        except LabError:
            raise
        except Exception as e:
            raise LabError(f"building the underlay of lab {st.name}: {e}") from e
        finally:
            router.close()
        return cls(st)

    def add_gateway(self, addr: str, prefixlen: int) -> None:
        pass  # each node has its own gateway; a pod out of its node's CIDR gets a /32 route

    def add_pod(self, ep: Endpoint, cidrs: tuple[str, ...]) -> None:
        node = self.nodes.get(ep.node)
        if node is None:
            raise LabError(f"pod {ep.key}: no node {ep.node!r} in lab {self.st.name}")
        member = self.members[ep.node]
        try:
            index = member._veth(ep)
            member.ipr.link("set", index=index, master=member.bridge_index, state="up")
            addrs = []
            for a in ep.ips:
                addrs.append((a, ipaddress.ip_network(ipam.cidr_of(a, cidrs)).prefixlen))
                member._pin(member.bridge_index, a, ep.mac)
                if outside(a, node):
                    member.ipr.route("add", dst=a, dst_len=32, oif=member.bridge_index,
                                     scope=topology.RT_SCOPE_LINK)
                    self._host_routes("add", a, node)
            topology._configure_inside(ep.netns, addrs, {4: node["gateway"]},
                                       {node["gateway"]: topology.BRIDGE_MAC})
        except LabError:
            raise
        except Exception as e:
            raise LabError(f"wiring pod {ep.key} ({ep.netns}) on {ep.node}: {e}") from e

    def _host_routes(self, op: str, addr: str, node: dict) -> None:
        """A /32 to ``addr`` via ``node`` on the router and every other node."""
        for other, member in [("", self.router)] + list(self.members.items()):
            if other == node["name"]:
                continue
            try:
                member.ipr.route(op, dst=addr, dst_len=32, gateway=node["underlay"])
            except Exception:
                if op == "add":
                    raise

    def add_external(self, ep: Endpoint) -> None:
        self.router.add_external(ep)

    def remove(self, ep: Endpoint) -> None:
        if ep.kind != "pod":
            self.router.remove(ep)
            return
        node = self.nodes.get(ep.node)
        member = self.members.get(ep.node)
        if member is None or node is None:
            return
        member.remove(ep)
        for a in ep.ips:
            if outside(a, node):
                try:
                    member.ipr.route("del", dst=a, dst_len=32, oif=member.bridge_index)
                except Exception:
                    pass
                self._host_routes("del", a, node)


def _underlay_link(router: topology.Node, st: LabState, n: dict) -> None:
    from enforcer import netns

    link = underlay_link(st.name, n["index"])
    router.ipr.link("add", ifname=link, kind="veth",
                    peer={"ifname": "ul0", "address": n["mac"], "net_ns_fd": netns.path(n["netns"])})
    index = router.ipr.link_lookup(ifname=link)[0]
    router.ipr.link("set", index=index, master=router.bridge_index, state="up")
    router._pin(router.bridge_index, n["underlay"], n["mac"])


def _node_routes(st: LabState, n: dict) -> None:
    """Inside node ``n``: its underlay address, the neighbours pinned, the other nodes'
    pod CIDRs via their underlay addresses, the default via the router."""
    ipr = topology._iproute_in(n["netns"])
    with ipr:
        ul0 = ipr.link_lookup(ifname="ul0")[0]
        topology._addr_add(ipr, ul0, n["underlay"], UL_PREFIX)
        ipr.link("set", index=ul0, state="up")
        ipr.neigh("replace", dst=ROUTER_ADDR, lladdr=topology.BRIDGE_MAC, ifindex=ul0,
                  state=topology.NUD_PERMANENT)
        for other in st.nodes:
            if other is n:
                continue
            ipr.neigh("replace", dst=other["underlay"], lladdr=other["mac"], ifindex=ul0,
                      state=topology.NUD_PERMANENT)
            ipr.route("add", dst=other["cidr"], gateway=other["underlay"])
        ipr.route("add", dst="0.0.0.0/0", gateway=ROUTER_ADDR)
