"""Small builders for model objects in unit tests (no YAML, no loader)."""
from __future__ import annotations

from enforcer import ipam
from enforcer.compile import Compiler
from enforcer.model import (EGRESS, INGRESS, Cluster, ContainerPort, ExternalHost, IPBlock,
                            LabelSelector, Namespace, NetworkPolicy, Peer, Pod, PortSpec,
                            Requirement, Rule)
from enforcer import verdict


def sel(labels: dict | None = None, *exprs: tuple) -> LabelSelector:
    return LabelSelector(tuple(sorted((labels or {}).items())),
                         tuple(Requirement(k, op, tuple(v)) for k, op, v in exprs))


def pod(ns, name, labels=None, ips=(), ports=()):
    return Pod(ns, name, dict(labels or {}), tuple(ips),
               tuple(ContainerPort(*p) if isinstance(p, tuple) else p for p in ports))


def policy(ns, name, selector=None, *, ingress=None, egress=None, types=None):
    ingress = tuple(ingress or ())
    egress = tuple(egress or ())
    if types is None:
        types = {INGRESS} | ({EGRESS} if egress else set())
    return NetworkPolicy(ns, name, selector or sel(), frozenset(types), ingress, egress)


def rule(*peers, ports=()):
    return Rule(tuple(peers), tuple(PortSpec(*p) if isinstance(p, tuple) else p for p in ports))


def peer_pods(labels=None, *exprs):
    return Peer(pod_selector=sel(labels, *exprs))


def peer_ns(labels=None, pods=None):
    return Peer(pod_selector=sel(pods) if pods is not None else None, namespace_selector=sel(labels))


def peer_block(cidr, *excepts):
    return Peer(ip_block=IPBlock(cidr, tuple(excepts)))


def cluster(*objs) -> Cluster:
    c = Cluster()
    for o in objs:
        if isinstance(o, Namespace):
            c.namespaces[o.name] = o
        elif isinstance(o, Pod):
            c.pods[o.key] = o
            c.namespaces.setdefault(o.namespace, Namespace(o.namespace, {"kubernetes.io/metadata.name": o.namespace}))
        elif isinstance(o, NetworkPolicy):
            c.policies[o.key] = o
        elif isinstance(o, ExternalHost):
            c.externals[o.name] = o
    return ipam.assign_ips(c)


def ns(name, labels=None, legacy=False):
    return Namespace(name, {**(labels or {}), "kubernetes.io/metadata.name": name}, legacy)


def ext(name, ips, ports=((80, "TCP"),)):
    return ExternalHost(name, tuple(ips), tuple(ContainerPort(*p) for p in ports))


class World:
    """A compiled cluster that answers allowed(src, dst, port, proto)."""

    def __init__(self, *objs, legacy=False):
        self.cluster = cluster(*objs)
        self.compiler = Compiler(self.cluster, node_ips=ipam.node_ips(), legacy_namespace_isolation=legacy)

    def verdict(self, src, dst, port=80, proto="TCP", family=4):
        a = verdict.resolve(self.cluster, src)
        b = verdict.resolve(self.cluster, dst)
        return verdict.verdict(self.compiler.firewalls(), a, b, port, proto, family)

    def allowed(self, src, dst, port=80, proto="TCP", family=4) -> bool:
        return self.verdict(src, dst, port, proto, family).allowed
