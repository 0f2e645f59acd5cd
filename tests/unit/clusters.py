"""Small clusters for tests: builders of model objects (no YAML, no loader), and the one
small cluster that many test files load as manifest text (three_pods)."""
from __future__ import annotations

from enforcer.compiler import ipam
from enforcer.compiler.compile import Compiler
from enforcer.model import (EGRESS, INGRESS, Cluster, ContainerPort, ExternalHost, IPBlock,
                            LabelSelector, Namespace, NetworkPolicy, Peer, Pod, PortSpec,
                            Requirement, Rule)
from enforcer.views import verdict


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


# ---- as manifest text ---------------------------------------------------------------------
# Namespace x and pods x/a, x/b, x/c labelled app=<name>, each serving 80/TCP: the cluster
# of the diff, daemon and lab-observation tests. Without addresses, IPAM gives the pods
# THREE_POD_IPS in this order (after the gateway 10.244.0.1); with_ips writes those same
# addresses into status.podIP, as `kubectl get -o yaml` of a real cluster has them.
THREE_POD_IPS = {"a": "10.244.0.2", "b": "10.244.0.3", "c": "10.244.0.4"}


def three_pods(with_ips: bool = False) -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"]
    for name, ip in THREE_POD_IPS.items():
        doc = (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x, labels: {{app: {name}}}}}\n"
               "spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n")
        docs.append(doc + (f"status: {{podIP: {ip}}}\n" if with_ips else ""))
    return "---\n".join(docs)


THREE_PODS = three_pods()
