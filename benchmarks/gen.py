"""A scale generator: synthetic clusters with a realistic mix of selectors, ipBlocks, named
ports and port ranges. Deterministic for a given seed, so runs can be compared."""
from __future__ import annotations

import ipaddress
import random

from enforcer.model import (EGRESS, INGRESS, Cluster, ContainerPort, IPBlock, LabelSelector,
                            Namespace, NetworkPolicy, Peer, Pod, PortSpec, Requirement, Rule)

ROLES = ("web", "api", "db", "cache", "worker")


def _sel(**labels: str) -> LabelSelector:
    return LabelSelector(tuple(sorted(labels.items())))


def cluster(namespaces: int, pods: int, policies: int, *, seed: int = 1) -> Cluster:
    rnd = random.Random(seed)
    c = Cluster()
    teams = max(1, namespaces // 20)
    for i in range(namespaces):
        name = f"ns{i}"
        c.namespaces[name] = Namespace(name, {"kubernetes.io/metadata.name": name,
                                              "team": f"t{i % teams}", "env": rnd.choice(("prod", "dev"))})
    base = int(ipaddress.ip_address("10.0.0.2"))
    for j in range(pods):
        ns = f"ns{j % namespaces}"
        role = ROLES[j % len(ROLES)]
        ports = (ContainerPort(8080 + j % 3, "TCP", "http"), ContainerPort(9090, "TCP", "metrics"))
        p = Pod(ns, f"{role}-{j}", {"app": f"app{j % 97}", "role": role, "tier": rnd.choice(("a", "b", "c"))},
                (str(ipaddress.ip_address(base + j)),), ports)
        c.pods[p.key] = p
    for k in range(policies):
        ns = f"ns{k % namespaces}"
        kind = k % 4
        if kind == 0:  # the course's db policy: api of the same namespace, backups by ipBlock
            pol = NetworkPolicy(ns, f"db-{k}", _sel(role="db"), frozenset({INGRESS}), (
                Rule((Peer(pod_selector=_sel(role="api")),), (PortSpec("TCP", 3306),)),
                Rule((Peer(ip_block=IPBlock("192.168.0.0/16", ("192.168.1.0/24",))),), (PortSpec("TCP", 3306),)),
            ))
        elif kind == 1:  # from the same team's web pods in any namespace, named port
            pol = NetworkPolicy(ns, f"api-{k}", _sel(role="api"), frozenset({INGRESS}), (
                Rule((Peer(pod_selector=_sel(role="web"), namespace_selector=_sel(team=f"t{k % teams}")),),
                     (PortSpec("TCP", "http"),)),))
        elif kind == 2:  # egress to the team's dbs and a port range, plus monitoring
            pol = NetworkPolicy(ns, f"egress-{k}", _sel(app=f"app{k % 97}"), frozenset({INGRESS, EGRESS}), (
                Rule((Peer(namespace_selector=_sel(env="prod"), pod_selector=LabelSelector(
                    match_expressions=(Requirement("role", "In", ("worker", "cache")),))),),
                     (PortSpec("TCP", 9090),)),), (
                Rule((Peer(pod_selector=_sel(role="db")),), (PortSpec("TCP", 3306), PortSpec("TCP", 8000, 8100))),))
        else:  # default deny with an allow-all-from-namespace rule
            pol = NetworkPolicy(ns, f"ns-only-{k}", LabelSelector(), frozenset({INGRESS}), (
                Rule((Peer(pod_selector=LabelSelector()),)),))
        c.policies[pol.key] = pol
    return c
