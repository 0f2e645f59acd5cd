"""Address planning, pure: pod addresses for pods that have no ``status.podIP``, and the
lab's address plan (its pod CIDRs and gateways, conflicts, the node's addresses facing
external hosts).

Deterministic: pods are numbered in sorted order, skipping addresses already taken, so the
model, ``render`` and the lab agree on every address without talking to each other. The
first address of each pod CIDR is the node's gateway (always allowed, SEMANTICS 12).
An existing assignment (a running lab) is kept so that adding a pod never renumbers others.
The lab wires what is planned here (enforcer/lab/topology.py); nothing here touches a kernel.
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


def gateway(cidr: str) -> str:
    """The node's address on the pod network: the CIDR's first host."""
    net = ipaddress.ip_network(cidr)
    return str(net.network_address + 1)


def node_ips(cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,)) -> tuple[str, ...]:
    return tuple(gateway(c) for c in cidrs)


def assign_ips(cluster: Cluster, cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,),
               existing: Mapping[str, tuple[str, ...]] | None = None) -> Cluster:
    """Return a cluster in which every pod has one address per CIDR's family.

    Pods with addresses from their manifests keep them; pods in ``existing`` keep what they
    had; the rest get the lowest free address of each CIDR (after the gateway).
    """
    existing = existing or {}
    nets = [ipaddress.ip_network(c) for c in cidrs]
    taken: set[str] = {gateway(c) for c in cidrs}
    for p in cluster.pods.values():
        taken.update(p.ips)
    for ips in existing.values():
        taken.update(ips)
    cursors = {n: n.network_address + 2 for n in nets}
    pods = dict(cluster.pods)
    for key in sorted(pods):
        pod = pods[key]
        if pod.ips:
            continue
        if key in existing:
            pods[key] = replace(pod, ips=tuple(existing[key]))
            continue
        ips = []
        for net in nets:
            addr = cursors[net]
            while str(addr) in taken:
                addr += 1
            if addr not in net or addr == net.broadcast_address:
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
    an IPv6 address."""
    addrs = [a for p in cluster.pods.values() for a in p.ips]
    addrs += [a for e in cluster.externals.values() for a in e.ips]
    return ipv6 or any(_ip(a).version == 6 for a in addrs)


def base_cidrs(ipv6: bool) -> tuple[str, ...]:
    return (DEFAULT_POD_CIDR,) + ((DEFAULT_POD_CIDR6,) if ipv6 else ())


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
