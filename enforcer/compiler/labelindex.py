"""An inverted index of labels, so that selecting among 150,000 pods does not scan them all.

A selector's matchLabels and In/Exists terms narrow the candidates to the smallest posting
list; the full selector is then checked on those candidates only. Selectors made only of
NotIn/DoesNotExist terms (or empty) fall back to every object, which is their meaning.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from enforcer.model import LabelSelector
from enforcer.compiler.selectors import matches

_NONE: frozenset[str] = frozenset()


SCAN_LIMIT = 32  # objects: up to this many, a selector scans them all (no postings kept)


class LabelIndex:
    """Labels of objects, with posting lists built on the first selection that needs them.

    A cluster of 150,000 pods in 10,000 namespaces is 10,000 small indexes: keeping
    postings for 15 pods costs more (6 set insertions per pod, ~1 s in all) than scanning
    them on each selection, so an index of at most ``scan_limit`` objects only scans.
    """

    def __init__(self, scan_limit: int = SCAN_LIMIT) -> None:
        self.labels: dict[str, Mapping[str, str]] = {}
        self._scan_limit = scan_limit
        self._by_kv: dict[tuple[str, str], set[str]] | None = None  # None: not built yet
        self._by_key: dict[str, set[str]] = {}

    def add(self, ident: str, labels: Mapping[str, str]) -> None:
        by_kv = self._by_kv
        if by_kv is None:
            self.labels[ident] = labels
            return
        if ident in self.labels:
            self.remove(ident)
        self.labels[ident] = labels
        by_key = self._by_key
        for k, v in labels.items():
            s = by_kv.get((k, v))
            if s is None:
                s = by_kv[(k, v)] = set()
            s.add(ident)
            s = by_key.get(k)
            if s is None:
                s = by_key[k] = set()
            s.add(ident)

    def remove(self, ident: str) -> None:
        labels = self.labels.pop(ident, None)
        if labels is None or self._by_kv is None:
            return
        for k, v in labels.items():
            self._by_kv[(k, v)].discard(ident)
            self._by_key[k].discard(ident)

    def _postings(self) -> dict[tuple[str, str], set[str]] | None:
        if self._by_kv is None and len(self.labels) > self._scan_limit:
            objects, self.labels = self.labels, {}
            self._by_kv, self._by_key = {}, {}
            for ident, labels in objects.items():
                self.add(ident, labels)
        return self._by_kv

    def candidates(self, selector: LabelSelector) -> Iterable[str] | None:
        """The smallest superset of the matches the index can name, or None (= everything)."""
        by_kv = self._postings()
        if by_kv is None:
            return None  # small: scanning is cheaper
        best: set[str] | None = None
        for k, v in selector.match_labels:
            s = by_kv.get((k, v), _NONE)
            if best is None or len(s) < len(best):
                best = s
        for r in selector.match_expressions:
            if r.operator == "In":
                s = set().union(*(by_kv.get((r.key, v), _NONE) for v in r.values))
            elif r.operator == "Exists":
                s = self._by_key.get(r.key, _NONE)
            else:
                continue
            if best is None or len(s) < len(best):
                best = s
        return best

    def select(self, selector: LabelSelector) -> set[str]:
        cands = self.candidates(selector)
        if cands is None:
            cands = self.labels.keys()
        labels = self.labels
        if selector.is_empty:
            return set(cands)
        return {i for i in cands if matches(selector, labels[i])}


class PodIndex:
    """Pods indexed by labels per namespace.

    A namespace-local selector (a podSelector-only peer, a policy's own podSelector) asks
    one namespace's index, so ``app=web`` in ``ns0`` costs the pods of ns0 labelled so,
    not every ``app=web`` pod of 10,000 namespaces (11.6 M selector matches for one
    compile with a cluster-wide index, issue 15). A selector over every namespace costs
    one look-up per namespace, then only the candidates.
    """

    def __init__(self) -> None:
        self.by_ns: dict[str, LabelIndex] = {}
        self.ns_of: dict[str, str] = {}

    def add(self, ident: str, namespace: str, labels: Mapping[str, str]) -> None:
        old = self.ns_of.get(ident)
        if old is not None and old != namespace:
            self.by_ns[old].remove(ident)
        self.ns_of[ident] = namespace
        idx = self.by_ns.get(namespace)
        if idx is None:
            idx = self.by_ns[namespace] = LabelIndex()
        idx.add(ident, labels)

    def remove(self, ident: str) -> None:
        ns = self.ns_of.pop(ident, None)
        if ns is not None:
            self.by_ns[ns].remove(ident)

    def in_namespace(self, namespace: str) -> Iterable[str]:
        idx = self.by_ns.get(namespace)
        return idx.labels.keys() if idx is not None else ()

    def select(self, selector: LabelSelector | None, namespaces: Iterable[str]) -> set[str]:
        """Pods of ``namespaces`` matching ``selector`` (None or empty: all of them)."""
        out: set[str] = set()
        every = selector is None or selector.is_empty
        for n in namespaces:
            idx = self.by_ns.get(n)
            if idx is not None:
                if every:
                    out.update(idx.labels)
                else:
                    out |= idx.select(selector)
        return out
