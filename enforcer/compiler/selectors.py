"""Label selector matching (SEMANTICS 8), pure.

matchLabels AND matchExpressions; In, NotIn, Exists, DoesNotExist. NotIn and DoesNotExist
also match objects that lack the key (as the API machinery does).
"""
from __future__ import annotations

from typing import Mapping

from enforcer.model import LabelSelector, Requirement


def requirement_matches(req: Requirement, labels: Mapping[str, str]) -> bool:
    op = req.operator
    if op == "In":
        return req.key in labels and labels[req.key] in req.values
    if op == "NotIn":
        return req.key not in labels or labels[req.key] not in req.values
    if op == "Exists":
        return req.key in labels
    if op == "DoesNotExist":
        return req.key not in labels
    raise ValueError(f"unknown selector operator {op!r}")  # validation rejects these earlier


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    for key, value in selector.match_labels:
        if labels.get(key) != value:
            return False
    return all(requirement_matches(r, labels) for r in selector.match_expressions)


def describe(selector: LabelSelector, scope: str = "pods") -> str:
    """Human words for a selector: 'pods labelled role=api' / 'all pods'."""
    if selector.is_empty:
        return f"all {scope}"
    return f"{scope} labelled {selector}"
