"""The ClusterNetworkPolicy part of enforcer.compiler.compile.Compiler (a mixin, so compile.py stays
about NetworkPolicy): the tiers are added to each firewall as it is built.

Incremental, as NetworkPolicy compile is. A pod's tiers read two kinds of selection: the
subjects (which CNPs apply to it) and the peers of those CNPs' rules (its sets). The
mixin keeps, for every selection of the CNPs in force, the pods it selects (``_sel``), and
the Compiler tells it which pods and namespaces changed (``_cnp_touch``,
``_cnp_touch_ns``). At the next rebuild only these are looked at again:

* a changed pod is rebuilt itself (subject membership, ingress named ports);
* a selection that gains or loses it, or holds it while its addresses or ports changed,
  is *touched*: its elements differ, so every pod in the subject of a CNP reading that
  selection as a peer is rebuilt, and that CNP's memoised rules are forgotten;
* a namespace whose labels changed touches its pods.

A CNP added, edited or removed rebuilds the pods of its old and new subjects, nobody else.
The memo (enforcer.cnp.tiers.attach's) keeps each selection's pods and each rule's sets,
which are the same for every pod a policy selects.
"""
from __future__ import annotations

from typing import Iterable

from enforcer import ir


def selections(cnp) -> list:
    """The subject and every pods/namespaces peer selection of one CNP."""
    out = [cnp.subject]
    for rule in cnp.ingress + cnp.egress:
        out += [p.selection for p in rule.peers if p.selection is not None]
    return out


def peer_selections(cnp) -> set:
    return set(selections(cnp)[1:])


class TiersMixin:
    cnps: tuple = ()
    pods: dict
    _cnp_memo: dict

    def _init_cnps(self, cluster) -> None:
        self.cnps = tuple(cluster.cnps.values())
        self._cnp_memo = {}  # enforcer.cnp.tiers.attach's
        self._sel: dict | None = None  # selection -> pod keys; built on first use
        self._seen: dict[str, tuple] = {}  # pod -> (addresses, ports) the index last saw
        self._cnp_dirty: set[str] = set()  # pods changed since the last rebuild
        self._cnp_dirty_ns: set[str] = set()  # namespaces whose labels changed

    # -- the Compiler's calls

    def _cnp_touch(self, key: str) -> set[str]:
        """Pod ``key`` was added, changed or removed (returns nothing to rebuild yet: the
        next ``_rebuild`` works out who reads it)."""
        if self._sel is not None:
            self._cnp_dirty.add(key)
        return set()

    def _cnp_touch_ns(self, name: str) -> set[str]:
        if self._sel is not None:
            self._cnp_dirty_ns.add(name)
        return set()

    def _with_tiers(self, fw: ir.PodFirewall, pod) -> ir.PodFirewall:
        if not self.cnps:
            return fw
        from enforcer.cnp.tiers import attach
        self._selections()  # the memo holds every selection's pods
        return attach(fw, pod, self.pods.values(), self.namespace, self.cnps, self._cnp_memo)  # type: ignore[attr-defined]

    def _cnp_scope(self, pods: Iterable[str]) -> Iterable[str]:
        """The pods a change must rebuild: ``pods``, and those whose tiers read a pod or
        namespace that changed."""
        if self._sel is None or not (self._cnp_dirty or self._cnp_dirty_ns):
            return pods
        from enforcer.cnp.tiers import selects
        dirty, self._cnp_dirty = self._cnp_dirty, set()
        for name in self._cnp_dirty_ns:
            dirty |= set(self._pod_index.in_namespace(name))  # type: ignore[attr-defined]
        self._cnp_dirty_ns = set()
        out = set(pods) | {k for k in dirty if k in self.pods}
        moved = set()  # pods whose addresses or ports changed: elements of their selections
        for key in dirty:
            pod = self.pods.get(key)
            now = (pod.ips, pod.ports) if pod is not None else None
            if self._seen.get(key) != now:
                moved.add(key)
            if now is None:
                self._seen.pop(key, None)
            else:
                self._seen[key] = now
        touched = set()
        for sel, members in self._sel.items():
            for key in dirty:
                pod = self.pods.get(key)
                now = pod is not None and selects(sel, pod, self.namespace(pod.namespace))  # type: ignore[attr-defined]
                was = key in members
                if now != was or (now and key in moved):
                    touched.add(sel)
                    (members.add if now else members.discard)(key)
        if touched:
            for cnp in self.cnps:
                if peer_selections(cnp) & touched:
                    out |= self._sel[cnp.subject]
                    self._forget_rules(cnp.name)
            for sel in touched:
                self._remember(sel)
        return out

    def set_cnp(self, cnp) -> set[str]:
        """Add or replace a ClusterNetworkPolicy (enforcer.cnp.model), by name."""
        return self._set_cnps(tuple(c for c in self.cnps if c.name != cnp.name) + (cnp,))

    def remove_cnp(self, name: str) -> set[str]:
        return self._set_cnps(tuple(c for c in self.cnps if c.name != name))

    def _set_cnps(self, cnps: tuple) -> set[str]:
        old = {c.name: c for c in self.cnps}
        new = {c.name: c for c in cnps}
        changed = {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}
        if not changed:
            return set()
        # Pending pod changes are judged against the CNPs they were made under.
        affected = set(self._cnp_scope(()))
        sel = self._selections() if self.cnps else {}
        affected |= {k for n in changed if n in old for k in sel[old[n].subject]}
        self.cnps = tuple(cnps)
        for n in changed:
            self._forget_rules(n)
        if not self.cnps:
            self._sel = None
            self._cnp_memo.clear()
            return self._rebuild(affected)  # type: ignore[attr-defined]
        wanted = {s for c in self.cnps for s in selections(c)}
        for s in set(sel) - wanted:
            del self._sel[s]  # type: ignore[index]
            self._cnp_memo.pop(("sel", s), None)
        sel = self._selections()  # computes the new selections
        affected |= {k for n in changed if n in new for k in sel[new[n].subject]}
        return self._rebuild(affected)  # type: ignore[attr-defined]

    # -- internals

    def _selections(self) -> dict:
        """selection -> the pods it selects, for every selection of the CNPs in force."""
        if self._sel is None:
            self._sel = {}
            self._seen = {k: (p.ips, p.ports) for k, p in self.pods.items()}
            self._cnp_dirty.clear()
            self._cnp_dirty_ns.clear()
        missing = [s for c in self.cnps for s in selections(c) if s not in self._sel]
        if missing:
            from enforcer.cnp.tiers import selects
            for s in dict.fromkeys(missing):
                self._sel[s] = {k for k, p in self.pods.items()
                                if selects(s, p, self.namespace(p.namespace))}  # type: ignore[attr-defined]
                self._remember(s)
        return self._sel

    def _remember(self, sel) -> None:
        """The memo's pod list of ``sel``, from the index (attach reads it)."""
        self._cnp_memo[("sel", sel)] = [self.pods[k] for k in sorted(self._sel[sel])]  # type: ignore[index]

    def _forget_rules(self, name: str) -> None:
        for key in [k for k in self._cnp_memo if k[0] == "rule" and k[1] == name]:
            del self._cnp_memo[key]
