"""The ClusterNetworkPolicy part of enforcer.compile.Compiler (a mixin, so compile.py stays
about NetworkPolicy): the tiers are added to each firewall as it is built.

Not incremental: a CNP's subject and peers may read any pod or namespace, so while CNPs
exist every change looks at every pod (a memo per cluster state keeps that cheap: the
sets and tier rules of one CNP rule are built once and shared by the pods it applies to),
and a change to the CNPs rebuilds every pod.
"""
from __future__ import annotations

from typing import Iterable

from enforcer import ir


class TiersMixin:
    cnps: tuple = ()
    pods: dict
    _cnp_memo: dict

    def _init_cnps(self, cluster) -> None:
        self.cnps = tuple(cluster.cnps.values())
        self._cnp_memo = {}  # enforcer.cnp.tiers.attach's, for one state of the cluster

    def _with_tiers(self, fw: ir.PodFirewall, pod) -> ir.PodFirewall:
        if not self.cnps:
            return fw
        from enforcer.cnp.tiers import attach
        return attach(fw, pod, self.pods.values(), self.namespace, self.cnps, self._cnp_memo)  # type: ignore[attr-defined]

    def _cnp_scope(self, pods: Iterable[str]) -> Iterable[str]:
        """The pods a change must look at: ``pods``, or every pod while CNPs exist."""
        if not self.cnps:
            return pods
        self._cnp_memo.clear()  # the state changed
        return set(pods) | set(self.pods)

    def set_cnp(self, cnp) -> set[str]:
        """Add or replace a ClusterNetworkPolicy (enforcer.cnp.model), by name."""
        return self._set_cnps(tuple(c for c in self.cnps if c.name != cnp.name) + (cnp,))

    def remove_cnp(self, name: str) -> set[str]:
        return self._set_cnps(tuple(c for c in self.cnps if c.name != name))

    def _set_cnps(self, cnps: tuple) -> set[str]:
        if sorted(cnps, key=lambda c: c.name) == sorted(self.cnps, key=lambda c: c.name):
            return set()
        had, self.cnps = bool(self.cnps), cnps
        # Every pod may gain or lose tiers; once none is left, every pod built loses them.
        return self._rebuild(self.pods if cnps or had else ())  # type: ignore[attr-defined]
