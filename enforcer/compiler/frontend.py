"""The front half of the pipeline, written once: manifests in (``load``), addresses
assigned (``assign``), a compiler out (``compiler``; ``firewalls`` when every pod's firewall
is wanted at once).

    prepare          = load + compile_cluster            the CLI's commands, ``netpol diff``
    compile_cluster  = assign + compiler                  cli lint/validate (input loaded already)
    assign(lab=...)  + firewalls                          the lab: ``lab up`` (one node or
                                                          several), ``lab apply``
    per object: manifests.decode_text, or decode.decode_kind and cnp.decode.decode_object
    (what ``load`` runs per file and object), then ``compiler``: the daemon (daemon/syncer.py)

The daemon does not take ``load`` or ``assign``: it decodes one file or API object at a time
with the decoders ``load`` runs (keeping each object's last good version), and it never
invents an address (a pod without status.podIP is nobody's peer until it has one). Its
compiler comes from ``compiler`` like everyone's.

What callers do with the warnings (print them, prefix them, collect them) is theirs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, TextIO

from enforcer.compiler import ipam
from enforcer.errors import Problem
from enforcer.model import Cluster

if TYPE_CHECKING:
    from enforcer.compiler.compile import Compiler
    from enforcer.ir import PodFirewall
    from enforcer.load.manifests import LoadResult


@dataclass
class Prepared:
    cluster: Cluster  # every pod with its addresses
    compiler: Compiler
    warnings: list[Problem] = field(default_factory=list)  # found, but the input was loaded
    notes: list[str] = field(default_factory=list)  # e.g. kinds skipped

    @property
    def firewalls(self) -> dict[str, PodFirewall]:
        return self.compiler.firewalls()


@dataclass(frozen=True)
class Wiring:
    """What the lab wires around, for ``assign``: its pod CIDRs get a subnet (and a
    gateway) around every fixed address outside them, and plans it cannot wire are refused
    (ipam.check_addresses)."""

    cidrs: tuple[str, ...] = ()  # the pod CIDRs a running lab has already
    busy: tuple[str, ...] = ()  # node addresses in use on external links that stay
    nodes: tuple[Mapping[str, str], ...] = ()  # several nodes: each one's name, pod CIDR, gateway
    placement: Mapping[str, str] = field(default_factory=dict)  # pod -> its node


@dataclass(frozen=True)
class Addresses:
    """The address step's outcome."""

    cluster: Cluster  # every pod with its addresses, every Service with its clusterIP
    cidrs: tuple[str, ...]  # the pod CIDRs
    node_ips: tuple[str, ...]  # the node's addresses on the pod network (SEMANTICS 12)
    nodes: tuple[Mapping[str, str], ...] = ()  # several nodes: a pod's node address is its node's gateway
    placement: Mapping[str, str] = field(default_factory=dict)


def load(paths: Iterable[str], *, legacy: bool = False, stdin: TextIO | None = None) -> LoadResult:
    """Load and validate ``paths`` (InputError listing every problem)."""
    from enforcer.load import manifests

    return manifests.load(list(paths), stdin=sys.stdin if stdin is None else stdin,
                          legacy_namespace_isolation=legacy)


def assign(cluster: Cluster, *, cidrs: tuple[str, ...] = (ipam.DEFAULT_POD_CIDR,), ipv6: bool = False,
           existing: Mapping[str, tuple[str, ...]] | None = None, reserved: Iterable[str] = (),
           lab: Wiring | None = None) -> Addresses:
    """The address step. Pods without an address get one per family of ``cidrs`` (IPv6
    too when ``ipv6`` or any pod's or kept address is IPv6); pods in ``existing`` keep
    theirs unless the input gives one; nobody new gets a ``reserved`` address.

    ``lab``: the lab's plan on top (enforcer/lab/converge.py, multinode.py): with several
    nodes a pod's address comes from its node's CIDR and its node address is its node's
    gateway; fixed addresses outside the pod CIDRs get a subnet with a gateway; a plan the
    lab cannot wire is a LabError."""
    existing = existing or {}
    cidrs = ipam.pod_cidrs(cluster, cidrs, ipv6=ipv6, addresses=[a for v in existing.values() for a in v])
    keep = {k: v for k, v in existing.items() if k in cluster.pods and not cluster.pods[k].ips}
    nodes = lab.nodes if lab is not None else ()
    placement = lab.placement if lab is not None else {}
    cluster = ipam.assign_ips(cluster, cidrs, keep, reserved=reserved, nodes=nodes, placement=placement)
    if lab is None:
        return Addresses(cluster, cidrs, ipam.node_ips(cidrs))
    if nodes:
        ipam.check_nodes(cluster, nodes)
    cidrs = ipam.gateway_cidrs(cluster, tuple(lab.cidrs) + cidrs)
    ipam.check_addresses(cluster, cidrs, lab.busy)
    node_ips = tuple(n["gateway"] for n in nodes) if nodes else ipam.node_ips(cidrs)
    return Addresses(cluster, cidrs, node_ips, tuple(nodes), dict(placement))


def compiler(cluster: Cluster, node_ips: tuple[str, ...], *, legacy: bool = False,
             kind: Callable[..., Compiler] | None = None) -> Compiler:
    """The compile step: a compiler of ``cluster`` (the daemon's ``kind`` is its
    BatchCompiler, which defers rebuilds to the end of a batch)."""
    if kind is None:
        from enforcer.compiler.compile import Compiler as kind  # noqa: N813

    return kind(cluster, node_ips=node_ips, legacy_namespace_isolation=legacy)


def firewalls(addresses: Addresses, *, legacy: bool = False) -> dict[str, PodFirewall]:
    """Every pod's firewall; with several nodes each pod's with its own node's gateway as
    the node address, as that node's agent compiles it (``--node-ip``)."""
    if not addresses.nodes:
        return compiler(addresses.cluster, addresses.node_ips, legacy=legacy).firewalls()
    out: dict[str, PodFirewall] = {}
    for node in addresses.nodes:
        mine = sorted(k for k, name in addresses.placement.items() if name == node["name"])
        if mine:
            c = compiler(addresses.cluster, (node["gateway"],), legacy=legacy)
            out.update({k: c.firewall(k) for k in mine if k in c.pods})
    return out


def compile_cluster(cluster: Cluster, *, legacy: bool = False,
                    existing: Mapping[str, tuple[str, ...]] | None = None,
                    cidrs: tuple[str, ...] = (ipam.DEFAULT_POD_CIDR,)) -> tuple[Cluster, Compiler]:
    """Assign addresses (pods in ``existing`` keep theirs unless the input gives one) and
    make the compiler; the cluster returned is the one with addresses."""
    a = assign(cluster, cidrs=cidrs, existing=existing)
    return a.cluster, compiler(a.cluster, a.node_ips, legacy=legacy)


def prepare(paths: Iterable[str], *, legacy: bool = False,
            existing: Mapping[str, tuple[str, ...]] | None = None,
            cidrs: tuple[str, ...] = (ipam.DEFAULT_POD_CIDR,), stdin: TextIO | None = None) -> Prepared:
    """Load and validate ``paths`` (InputError listing every problem), assign addresses,
    make the compiler. No paths: an empty cluster."""
    paths = list(paths)
    if not paths:
        cluster, warnings, notes = Cluster(), [], []
    else:
        result = load(paths, legacy=legacy, stdin=stdin)
        cluster, warnings, notes = result.cluster, result.warnings, result.notes
    cluster, c = compile_cluster(cluster, legacy=legacy, existing=existing, cidrs=cidrs)
    return Prepared(cluster, c, list(warnings), list(notes))
