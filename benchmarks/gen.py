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


def _team_namespaces(c: Cluster, namespaces: int, rnd: random.Random) -> int:
    """ns0, ns1, ... with their name label, a team (one per 20 namespaces) and a random
    env; returns the number of teams. Draws from ``rnd`` before any pod or policy does."""
    teams = max(1, namespaces // 20)
    for i in range(namespaces):
        name = f"ns{i}"
        c.namespaces[name] = Namespace(name, {"kubernetes.io/metadata.name": name,
                                              "team": f"t{i % teams}", "env": rnd.choice(("prod", "dev"))})
    return teams


def cluster(namespaces: int, pods: int, policies: int, *, seed: int = 1) -> Cluster:
    rnd = random.Random(seed)
    c = Cluster()
    teams = _team_namespaces(c, namespaces, rnd)
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


# ---------------------------------------------------------------------------------------
# Shapes seen in real clusters (issue 15). Each is a function (namespaces, pods, policies,
# seed) -> Cluster, so the compile benchmark can run any of them at any scale.

APPS_PER_NS = 8  # app label values repeat in every namespace: "app3" exists in all of them


def _pod(c: Cluster, ns: str, name: str, labels: dict, ip_index: int) -> None:
    base = int(ipaddress.ip_address("10.0.0.2"))
    ports = (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics"))
    p = Pod(ns, name, labels, (str(ipaddress.ip_address(base + ip_index)),), ports)
    c.pods[p.key] = p


def common(namespaces: int, pods: int, policies: int, *, seed: int = 1) -> Cluster:
    """The common shape: most policies admit pods of their own namespace by an ``app``
    label (the same few app names in every namespace, so a cluster-wide label index finds
    thousands of candidates in other namespaces); 30% also allow DNS egress to
    ``namespaceSelector: {}`` (every pod of the cluster: one huge shared group); 40% admit
    a team's namespaces by label with a matchExpressions pod selector; 30% an ipBlock with
    except (each its own /16)."""
    rnd = random.Random(seed)
    c = Cluster()
    teams = _team_namespaces(c, namespaces, rnd)
    for j in range(pods):
        i = j % namespaces
        k = j // namespaces  # the k-th pod of its namespace: p0, p1, ...
        _pod(c, f"ns{i}", f"p{k}", {"app": f"app{k % APPS_PER_NS}", "role": ROLES[k % len(ROLES)],
                                    "tier": rnd.choice(("a", "b", "c"))}, j)
    for k in range(policies):
        i = k % namespaces
        ns = f"ns{i}"
        app = f"app{(k // namespaces) % APPS_PER_NS}"
        ingress = [Rule((Peer(pod_selector=_sel(app=f"app{(k // namespaces + 1) % APPS_PER_NS}")),),
                        (PortSpec("TCP", 8080),))]
        egress = []
        draw = rnd.random()
        if draw < 0.4:
            ingress.append(Rule((Peer(namespace_selector=_sel(team=f"t{rnd.randrange(teams)}"),
                                      pod_selector=LabelSelector(match_expressions=(
                                          Requirement("role", "In", ("web", "api")),))),),
                                (PortSpec("TCP", "http"),)))
        elif draw < 0.7:
            a, b = rnd.randrange(1, 223), rnd.randrange(256)
            ingress.append(Rule((Peer(ip_block=IPBlock(f"{a}.{b}.0.0/16", (f"{a}.{b}.{rnd.randrange(256)}.0/24",))),),
                                (PortSpec("TCP", 443),)))
        types = {INGRESS}
        if rnd.random() < 0.3:
            egress.append(Rule((Peer(namespace_selector=LabelSelector()),),
                               (PortSpec("UDP", 53), PortSpec("TCP", 53))))
            types.add(EGRESS)
        pol = NetworkPolicy(ns, f"pol-{k}", _sel(app=app), frozenset(types), tuple(ingress), tuple(egress))
        c.policies[pol.key] = pol
    return c


def many_small(namespaces: int, pods: int, policies: int, *, seed: int = 1) -> Cluster:
    """Thousands of namespaces, each with a few pods and policies whose selectors stay
    inside the namespace (podSelector-only peers): per-namespace work only."""
    rnd = random.Random(seed)
    c = Cluster()
    for i in range(namespaces):
        c.namespaces[f"ns{i}"] = Namespace(f"ns{i}", {"kubernetes.io/metadata.name": f"ns{i}"})
    for j in range(pods):
        i, k = j % namespaces, j // namespaces
        _pod(c, f"ns{i}", f"p{k}", {"app": f"app{k % 3}", "role": ROLES[k % len(ROLES)]}, j)
    for k in range(policies):
        ns = f"ns{k % namespaces}"
        a, b = rnd.randrange(3), rnd.randrange(3)
        pol = NetworkPolicy(ns, f"pol-{k}", _sel(app=f"app{a}"), frozenset({INGRESS}), (
            Rule((Peer(pod_selector=_sel(app=f"app{b}")), Peer(pod_selector=LabelSelector(
                match_expressions=(Requirement("role", "In", ("web",)),)))), (PortSpec("TCP", 8080),)),))
        c.policies[pol.key] = pol
    return c


def shared_group(namespaces: int, pods: int, policies: int, *, seed: int = 1) -> Cluster:
    """One huge group that every policy shares: a monitoring namespace's scrapers are
    admitted everywhere, and every pod may reach every ``env=prod`` pod's metrics port
    (one set of tens of thousands of members, referenced by every selected pod)."""
    rnd = random.Random(seed)
    c = Cluster()
    for i in range(namespaces):
        c.namespaces[f"ns{i}"] = Namespace(f"ns{i}", {"kubernetes.io/metadata.name": f"ns{i}",
                                                     "env": "prod" if i % 2 else "dev"})
    for j in range(pods):
        i, k = j % namespaces, j // namespaces
        _pod(c, f"ns{i}", f"p{k}", {"app": f"app{k % APPS_PER_NS}", "tier": rnd.choice(("a", "b"))}, j)
    everyone_prod = Peer(namespace_selector=_sel(env="prod"), pod_selector=LabelSelector())
    for k in range(policies):
        ns = f"ns{k % namespaces}"
        pol = NetworkPolicy(ns, f"pol-{k}", _sel(app=f"app{(k // namespaces) % APPS_PER_NS}"),
                            frozenset({INGRESS, EGRESS}), (
            Rule((everyone_prod,), (PortSpec("TCP", 9090),)),), (
            Rule((everyone_prod,), (PortSpec("TCP", 9090),)),))
        c.policies[pol.key] = pol
    return c


SHAPES = {"mixed": cluster, "common": common, "many-small": many_small, "shared-group": shared_group}


def to_documents(c: Cluster) -> dict:
    """The cluster as one Kubernetes ``List`` (what ``kubectl get -o json`` prints), for
    benchmarks of the whole CLI pipeline."""
    def sel(s: LabelSelector | None) -> dict | None:
        if s is None:
            return None
        out: dict = {}
        if s.match_labels:
            out["matchLabels"] = dict(s.match_labels)
        if s.match_expressions:
            out["matchExpressions"] = [{"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
                                       for r in s.match_expressions]
        return out

    def peer(p: Peer) -> dict:
        if p.ip_block is not None:
            return {"ipBlock": {"cidr": p.ip_block.cidr, **({"except": list(p.ip_block.except_)} if p.ip_block.except_ else {})}}
        out = {}
        if p.pod_selector is not None:
            out["podSelector"] = sel(p.pod_selector)
        if p.namespace_selector is not None:
            out["namespaceSelector"] = sel(p.namespace_selector)
        return out

    def rule(r: Rule, side: str) -> dict:
        out: dict = {}
        if r.peers:
            out[side] = [peer(p) for p in r.peers]
        if r.ports:
            out["ports"] = [{"protocol": p.protocol, **({"port": p.port} if p.port is not None else {}),
                             **({"endPort": p.end_port} if p.end_port else {})} for p in r.ports]
        return out

    items: list[dict] = []
    for n in c.namespaces.values():
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.name, "labels": dict(n.labels)}})
    for p in c.pods.values():
        items.append({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": p.name, "namespace": p.namespace, "labels": dict(p.labels)},
                      "spec": {"containers": [{"name": "c", "image": "app", "ports": [
                          {"containerPort": cp.port, "protocol": cp.protocol, **({"name": cp.name} if cp.name else {})}
                          for cp in p.ports]}]},
                      "status": {"podIP": p.ips[0], "podIPs": [{"ip": ip} for ip in p.ips]} if p.ips else {}})
    for pol in c.policies.values():
        spec: dict = {"podSelector": sel(pol.pod_selector), "policyTypes": sorted(pol.policy_types)}
        if pol.ingress:
            spec["ingress"] = [rule(r, "from") for r in pol.ingress]
        if pol.egress:
            spec["egress"] = [rule(r, "to") for r in pol.egress]
        items.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": pol.name, "namespace": pol.namespace}, "spec": spec})
    return {"apiVersion": "v1", "kind": "List", "items": items}
