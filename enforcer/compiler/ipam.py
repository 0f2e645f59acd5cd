"""Address planning, pure: pod addresses for pods that have no ``status.podIP``, and the
lab's address plan (its pod CIDRs and gateways, each node's pod CIDR when it has several,
conflicts, the node's addresses facing external hosts).

Deterministic: pods are numbered in sorted order, skipping addresses already taken, so the
model, ``render`` and the lab agree on every address without talking to each other. The
first address of each pod CIDR is the node's gateway (always allowed, SEMANTICS 12).
An existing assignment (a running lab) is kept so that adding a pod never renumbers others.
enforcer/compiler/frontend.py composes these into the one address step (``assign``) that
the CLI and the lab take; the lab wires what is planned here (enforcer/lab/topology.py,
nodes.py); nothing here touches a kernel.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Iterable, Mapping

from enforcer.load import services
from enforcer.errors import InputError, LabError
from enforcer.model import Cluster

DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_POD_CIDR6 = "fd00:10:244::/64"
EXT_PREFIX = {4: 24, 6: 64}  # an external host's subnet, around each of its addresses
POD_EXTRA_PREFIX = {4: 24, 6: 64}  # a pod subnet around a fixed address outside the pod CIDRs
UNDERLAY = "169.254.244.0/24"  # several nodes: link-local, never a pod's or an external host's address
FIRST_NODE_OCTET = 101  # node K's pod CIDR is 10.244.(100+K).0/24 unless a pod's address is there


def gateway(cidr: str) -> str:
    """The node's address on the pod network: the CIDR's first host."""
    net = ipaddress.ip_network(cidr)
    return str(net.network_address + 1)


def node_ips(cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,)) -> tuple[str, ...]:
    return tuple(gateway(c) for c in cidrs)


def pod_cidrs(cluster: Cluster, cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,), *, ipv6: bool = False,
              addresses: Iterable[str] = ()) -> tuple[str, ...]:
    """``cidrs``, plus the default IPv6 pod range when asked or when any address (a pod's,
    or one of ``addresses``: kept ones) is IPv6: a pod without an address then gets one of
    each family."""
    ips = [ip for p in cluster.pods.values() for ip in p.ips] + list(addresses)
    if (ipv6 or any(":" in ip for ip in ips)) and DEFAULT_POD_CIDR6 not in cidrs:
        return tuple(cidrs) + (DEFAULT_POD_CIDR6,)
    return tuple(cidrs)


def assign_ips(cluster: Cluster, cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,),
               existing: Mapping[str, tuple[str, ...]] | None = None, *, reserved: Iterable[str] = (),
               nodes: Iterable[Mapping[str, str]] = (), placement: Mapping[str, str] | None = None) -> Cluster:
    """Return a cluster in which every pod has one address per CIDR's family.

    Pods with addresses from their manifests keep them; pods in ``existing`` keep what they
    had; the rest get the lowest free address of each CIDR (after the gateway). No pod gets
    an address of ``existing`` or ``reserved``, nor a gateway. Several nodes: a pod that
    ``placement`` puts on one of ``nodes`` gets one address from that node's ``cidr``.
    """
    existing = existing or {}
    placement = placement or {}
    nets = [ipaddress.ip_network(c) for c in cidrs]
    node_nets = {n["name"]: ipaddress.ip_network(n["cidr"]) for n in nodes}
    taken: set[str] = {gateway(c) for c in cidrs} | {gateway(str(n)) for n in node_nets.values()}
    for p in cluster.pods.values():
        taken.update(p.ips)
    for ips in existing.values():
        taken.update(ips)
    taken.update(reserved)
    cursors = {n: n.network_address + 2 for n in nets + list(node_nets.values())}
    pods = dict(cluster.pods)
    for key in sorted(pods):
        pod = pods[key]
        if pod.ips:
            continue
        if key in existing:
            pods[key] = replace(pod, ips=tuple(existing[key]))
            continue
        node = placement.get(key) if node_nets else None
        ips = []
        for net in [node_nets[node]] if node is not None else nets:
            addr = cursors[net]
            while str(addr) in taken:
                addr += 1
            if addr not in net or addr == net.broadcast_address:
                if node is not None:
                    raise LabError(f"node {node}'s pod CIDR {net} has no free address left for pod {key}")
                raise InputError(f"pod CIDR {net} has no free address left for pod {key}")
            taken.add(str(addr))
            cursors[net] = addr + 1
            ips.append(str(addr))
        pods[key] = replace(pod, ips=tuple(ips))
    # Services keep their clusterIP (from the manifest, or derived from their name).
    svcs = services.assign_cluster_ips(cluster.services)
    return replace(cluster, namespaces=dict(cluster.namespaces), pods=pods,
                   policies=dict(cluster.policies), externals=dict(cluster.externals), services=svcs)


# ---------------------------------------------------------------- the lab's address plan


def _ip(a: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(a)


def wants_ipv6(cluster: Cluster, ipv6: bool = False) -> bool:
    """Whether the lab needs an IPv6 pod CIDR: asked for, or any pod or external host has
    an IPv6 address (the lab wires external hosts; the model alone looks at pods only,
    ``pod_cidrs``)."""
    addrs = [a for p in cluster.pods.values() for a in p.ips]
    addrs += [a for e in cluster.externals.values() for a in e.ips]
    return ipv6 or any(_ip(a).version == 6 for a in addrs)


def gateway_cidrs(cluster: Cluster, cidrs: Iterable[str]) -> tuple[str, ...]:
    """``cidrs`` plus a /24 (/64) around every pod address that lies outside all of them:
    pods with fixed addresses from their manifests still get a gateway on the bridge."""
    out = list(dict.fromkeys(cidrs))
    nets = [ipaddress.ip_network(c) for c in out]
    for key in sorted(cluster.pods):
        for a in cluster.pods[key].ips:
            ip = _ip(a)
            if not any(ip in n for n in nets if n.version == ip.version):
                net = ipaddress.ip_network(f"{ip}/{POD_EXTRA_PREFIX[ip.version]}", strict=False)
                nets.append(net)
                out.append(str(net))
    return tuple(out)


def cidr_of(addr: str, cidrs: Iterable[str]) -> str:
    """The CIDR of ``cidrs`` that holds ``addr`` (LabError when none does)."""
    ip = _ip(addr)
    for c in cidrs:
        net = ipaddress.ip_network(c)
        if net.version == ip.version and ip in net:
            return c
    raise LabError(f"address {addr} is in none of the lab's pod CIDRs {', '.join(cidrs)}")


def check_addresses(cluster: Cluster, cidrs: tuple[str, ...],
                    node_addrs: Iterable[str] = ()) -> None:
    """Refuse address plans the lab cannot wire: duplicates, a pod on the gateway, an
    external host inside a pod CIDR (the bridge would claim it), an external host on a
    node address already in use."""
    gateways = {gateway(c) for c in cidrs}
    owner: dict[str, str] = {}
    for key, pod in sorted(cluster.pods.items()):
        if not pod.ips:
            raise LabError(f"pod {key} has no address")
        for a in pod.ips:
            if a in gateways:
                raise LabError(f"pod {key}: address {a} is the lab node's gateway")
            if a in owner:
                raise LabError(f"address {a} is used by both {owner[a]} and pod {key}")
            owner[a] = f"pod {key}"
    nets = [ipaddress.ip_network(c) for c in cidrs]
    busy = set(node_addrs)
    for key, ext in sorted(cluster.externals.items()):
        if not ext.ips:
            raise LabError(f"external host {key} has no address (spec.ips)")
        for a in ext.ips:
            ip = _ip(a)
            if any(ip in n for n in nets if n.version == ip.version):
                raise LabError(f"external host {key}: address {a} lies inside the lab's pod CIDR; "
                               "give external hosts addresses outside the pod network")
            if a in owner:
                raise LabError(f"address {a} is used by both {owner[a]} and external host {key}")
            if a in busy:
                raise LabError(f"external host {key}: address {a} is the lab node's address on "
                               "another external link; recreate the lab (lab down, lab up)")
            owner[a] = f"external host {key}"


def external_node_addrs(cluster: Cluster, key: str) -> tuple[str, ...]:
    """The node's address facing external host ``key``: one per address of the host, in
    its /24 (/64): the first host address unless an external host has it, then the last."""
    others = {a for e in cluster.externals.values() for a in e.ips}
    out: list[str] = []
    for a in cluster.externals[key].ips:
        ip = _ip(a)
        net = ipaddress.ip_network(f"{ip}/{EXT_PREFIX[ip.version]}", strict=False)
        first = net.network_address + 1
        last = net.broadcast_address - (1 if ip.version == 4 else 0)
        candidates = [first, last] + [first + i for i in range(1, 256)]
        for c in candidates:
            if str(c) not in others:
                out.append(str(c))
                break
        else:
            raise LabError(f"external host {key}: no free node address in {net}")
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------- several nodes


def node_cidrs(n: int, cluster: Cluster) -> list[str]:
    """A /24 pod CIDR of 10.244.0.0/16 for each of ``n`` nodes, holding no address a
    manifest gave a pod (so a node's gateway is nobody's address)."""
    fixed = {_ip(a) for p in cluster.pods.values() for a in p.ips}
    if any(a.version == 6 for a in fixed):
        raise LabError("a lab of several nodes is IPv4 only: a pod has an IPv6 address")
    out: list[str] = []
    octet = FIRST_NODE_OCTET
    for k in range(1, n + 1):
        while True:
            if octet > 254:
                raise LabError(f"no free /24 left in {DEFAULT_POD_CIDR} for node {k}")
            cidr = ipaddress.ip_network(f"10.244.{octet}.0/24")
            octet += 1
            if not any(a in cidr for a in fixed):
                break
        out.append(str(cidr))
    return out


def underlay_addr(k: int) -> str:
    """Node ``k``'s address on the underlay."""
    return str(ipaddress.ip_network(UNDERLAY).network_address + k)


def check_nodes(cluster: Cluster, nodes: Iterable[Mapping[str, str]]) -> None:
    """A pod on a node's gateway cannot be wired; nor an external host on the underlay."""
    gateways = {n["gateway"]: n["name"] for n in nodes}
    under = ipaddress.ip_network(UNDERLAY)
    for key, pod in sorted(cluster.pods.items()):
        for a in pod.ips:
            if a in gateways:
                raise LabError(f"pod {key}: address {a} is node {gateways[a]}'s gateway")
            if _ip(a).version == 6:
                raise LabError(f"pod {key}: a lab of several nodes is IPv4 only ({a})")
    for key, ext in sorted(cluster.externals.items()):
        for a in ext.ips:
            if _ip(a) in under:
                raise LabError(f"external host {key}: address {a} is in the lab's underlay {UNDERLAY}")
