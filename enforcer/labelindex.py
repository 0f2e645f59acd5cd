"""An inverted index of labels, so that selecting among 150,000 pods does not scan them all.

A selector's matchLabels and In/Exists terms narrow the candidates to the smallest posting
list; the full selector is then checked on those candidates only. Selectors made only of
NotIn/DoesNotExist terms (or empty) fall back to every object, which is their meaning.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from enforcer.model import LabelSelector
from enforcer.selectors import matches


class LabelIndex:
    def __init__(self) -> None:
        self.labels: dict[str, Mapping[str, str]] = {}
        self._by_kv: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._by_key: dict[str, set[str]] = defaultdict(set)

    def add(self, ident: str, labels: Mapping[str, str]) -> None:
        if ident in self.labels:
            self.remove(ident)
        self.labels[ident] = labels
        for k, v in labels.items():
            self._by_kv[(k, v)].add(ident)
            self._by_key[k].add(ident)

    def remove(self, ident: str) -> None:
        labels = self.labels.pop(ident, None)
        if labels is None:
            return
        for k, v in labels.items():
            self._by_kv[(k, v)].discard(ident)
            self._by_key[k].discard(ident)

    def candidates(self, selector: LabelSelector) -> Iterable[str] | None:
        """The smallest superset of the matches the index can name, or None (= everything)."""
        best: set[str] | None = None
        for k, v in selector.match_labels:
            s = self._by_kv.get((k, v), set())
            if best is None or len(s) < len(best):
                best = s
        for r in selector.match_expressions:
            if r.operator == "In":
                s = set().union(*(self._by_kv.get((r.key, v), set()) for v in r.values))
            elif r.operator == "Exists":
                s = self._by_key.get(r.key, set())
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
