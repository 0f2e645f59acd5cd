"""Address assignment for pods that have no ``status.podIP`` (the lab's IPAM).

Deterministic: pods are numbered in sorted order, skipping addresses already taken, so the
model, ``render`` and the lab agree on every address without talking to each other. The
first address of each pod CIDR is the node's gateway (always allowed, SEMANTICS 12).
An existing assignment (a running lab) is kept so that adding a pod never renumbers others.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Mapping

from enforcer import services
from enforcer.errors import InputError
from enforcer.model import Cluster

DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_POD_CIDR6 = "fd00:10:244::/64"


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
