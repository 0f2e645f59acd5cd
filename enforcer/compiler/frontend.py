"""The front half of the pipeline, written once: manifests in, addresses assigned, a
compiler out (it builds each pod's firewall when asked).

The CLI's commands, ``netpol diff`` (twice, before and after) and anything else that reads
files all go through ``prepare``; what they do with the warnings (print them, prefix
them, collect them) is theirs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, TextIO

from enforcer.compiler import ipam
from enforcer.errors import Problem
from enforcer.model import Cluster

if TYPE_CHECKING:
    from enforcer.compiler.compile import Compiler
    from enforcer.ir import PodFirewall


@dataclass
class Prepared:
    cluster: Cluster  # every pod with its addresses
    compiler: Compiler
    warnings: list[Problem] = field(default_factory=list)  # found, but the input was loaded
    notes: list[str] = field(default_factory=list)  # e.g. kinds skipped

    @property
    def firewalls(self) -> dict[str, PodFirewall]:
        return self.compiler.firewalls()


def pod_cidrs(cluster: Cluster, existing: Mapping[str, tuple[str, ...]] | None = None,
              cidrs: tuple[str, ...] = (ipam.DEFAULT_POD_CIDR,)) -> tuple[str, ...]:
    """``cidrs``, plus the default IPv6 pod range when any address (given or kept) is IPv6:
    a pod without an address then gets one of each family."""
    ips = [ip for p in cluster.pods.values() for ip in p.ips]
    ips += [ip for v in (existing or {}).values() for ip in v]
    if any(":" in ip for ip in ips) and ipam.DEFAULT_POD_CIDR6 not in cidrs:
        return cidrs + (ipam.DEFAULT_POD_CIDR6,)
    return cidrs


def compile_cluster(cluster: Cluster, *, legacy: bool = False,
                    existing: Mapping[str, tuple[str, ...]] | None = None,
                    cidrs: tuple[str, ...] = (ipam.DEFAULT_POD_CIDR,)) -> tuple[Cluster, Compiler]:
    """Assign addresses (pods in ``existing`` keep theirs unless the input gives one) and
    make the compiler; the cluster returned is the one with addresses."""
    from enforcer.compiler.compile import Compiler

    cidrs = pod_cidrs(cluster, existing, cidrs)
    keep = {k: v for k, v in (existing or {}).items() if k in cluster.pods and not cluster.pods[k].ips}
    cluster = ipam.assign_ips(cluster, cidrs, existing=keep)
    return cluster, Compiler(cluster, node_ips=ipam.node_ips(cidrs), legacy_namespace_isolation=legacy)


def prepare(paths: Iterable[str], *, legacy: bool = False,
            existing: Mapping[str, tuple[str, ...]] | None = None,
            cidrs: tuple[str, ...] = (ipam.DEFAULT_POD_CIDR,), stdin: TextIO | None = None) -> Prepared:
    """Load and validate ``paths`` (InputError listing every problem), assign addresses,
    make the compiler. No paths: an empty cluster."""
    from enforcer.load import manifests

    paths = list(paths)
    if not paths:
        cluster, warnings, notes = Cluster(), [], []
    else:
        result = manifests.load(paths, stdin=sys.stdin if stdin is None else stdin,
                                legacy_namespace_isolation=legacy)
        cluster, warnings, notes = result.cluster, result.warnings, result.notes
    cluster, compiler = compile_cluster(cluster, legacy=legacy, existing=existing, cidrs=cidrs)
    return Prepared(cluster, compiler, list(warnings), list(notes))
