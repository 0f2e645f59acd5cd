"""Hints for an unknown field: the most likely fix, and never one that changes meaning.

A field we do not know is refused (as ``kubectl apply --validate=strict`` does); the hint
says why it is probably there:

* a misspelling of a field of the same object ("did you mean podSelector?");
* ``from`` in an egress rule or ``to`` in an ingress rule;
* a peer field (podSelector, namespaceSelector, ipBlock) outside a peer: it belongs in an
  item of ``from``/``to``. We do not point at ``spec.podSelector`` even though spec has that
  field: moving a rule's selector there would change which pods the policy isolates;
* a peer field inside another peer field: beside it in the same item (both must match) or
  as an item of its own (either matches), because the two mean different things;
* a field of an enclosing object (mis-indented YAML), or of a rule when written in spec.

Pure; enforcer.load.decode calls ``unknown_field`` for every unknown key.
"""
from __future__ import annotations

import difflib

_PEER_KEYS = frozenset(("podSelector", "namespaceSelector", "ipBlock"))
_RULE_KEYS = frozenset(("from", "to", "ports"))
_NP_SPEC = frozenset(("podSelector", "ingress", "egress", "policyTypes"))


def _q(s: str) -> str:
    return '"' + s + '"'


def unknown_field(key: str, path: str, allowed: frozenset, anc: tuple[tuple[str, frozenset], ...]) -> str:
    """The message for ``key`` found in the object at ``path`` whose fields are ``allowed``;
    ``anc`` are the enclosing objects (path, fields), innermost first."""
    hint = _hint(key, path, allowed, anc)
    return f"unknown field ({hint})" if hint else "unknown field"


def _hint(key: str, path: str, allowed: frozenset, anc) -> str:
    here = path or "the object"
    is_rule = "ports" in allowed and ("from" in allowed or "to" in allowed)
    if is_rule and key in ("from", "to"):
        want = "to" if "to" in allowed else "from"
        kind = "egress" if want == "to" else "ingress"
        return f"an {kind} rule lists its peers under {_q(want)}; {_q(key)} is for {'ingress' if kind == 'egress' else 'egress'}"
    if is_rule and key in _PEER_KEYS:
        peers = "from" if "from" in allowed else "to"
        return (f"{_q(key)} is a field of a peer, not of a rule: make it an item of a {peers} list "
                f"({peers}: [{{{key}: ...}}]) in the rule whose ports it should share")
    peer = next((p for p, fields in anc if fields == _PEER_KEYS), None)
    if key in _PEER_KEYS and peer is not None:
        return (f"{_q(key)} is a field of a peer: put it beside the other field in {peer} "
                f"(both must match) or in an item of its own (either matches)")
    if key == "status" and not path and any(fields == _NP_SPEC for _, fields in anc):
        return ("a NetworkPolicy has had no status since Kubernetes 1.28 (kubectl get on older "
                "clusters printed status: {}): delete it")
    for parent_path, parent_allowed in anc:
        if key in parent_allowed:
            return f"{_q(key)} is a field of {parent_path or 'the object'}: check the indentation"
    if allowed == _NP_SPEC and key in _RULE_KEYS:
        return f"{_q(key)} is a field of a rule, an item of spec.ingress or spec.egress: check the indentation"
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    if not close:  # a field name written in the wrong case is a misspelling too
        lowered = {a.lower(): a for a in allowed}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    if close:
        return f"did you mean {_q(close[0])}? {here} has no field {_q(key)}"
    # A misspelled peer field inside a peer's selector ("namespaceSelectr" under podSelector).
    close = difflib.get_close_matches(key, sorted(_PEER_KEYS), n=1, cutoff=0.75)
    if close and peer is not None:
        return f"did you mean {_q(close[0])}? " + _hint(close[0], path, allowed, anc)
    return ""


# Real kinds of the API groups we read, which we skip on purpose: never "did you mean" these.
_OTHER_KINDS = frozenset((
    "Binding", "ComponentStatus", "ConfigMap", "Endpoints", "Event", "LimitRange", "Node",
    "PersistentVolume", "PersistentVolumeClaim", "PodTemplate", "ResourceQuota", "Secret",
    "ServiceAccount", "PodAttachOptions", "PodExecOptions", "PodLogOptions", "PodProxyOptions",
    "PodStatusResult", "ReplicationControllerDummy", "Ingress", "IngressClass", "IPAddress",
    "ServiceCIDR", "ControllerRevision", "Eviction", "Scale", "Status", "DeleteOptions",
    "AdminNetworkPolicy", "BaselineAdminNetworkPolicy",
))


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def unknown_kind(kind: str, api_version: str, known: dict[str, str]) -> str | None:
    """An error message for a kind that is no kind at all in an API group we read
    (``NetworkPolicies`` in networking.k8s.io/v1), with the kind it most likely means;
    None for kinds to skip quietly (another group, or a real kind we do not use)."""
    if kind in _OTHER_KINDS or _group(api_version) not in {_group(v) for v in known.values()}:
        return None
    close = difflib.get_close_matches(kind, sorted(known), n=1, cutoff=0.8)
    if not close:
        return None
    want = close[0]
    version = "" if known[want] == api_version else f" in {_q(known[want])}"
    return (f"no matches for kind {_q(kind)} in version {_q(api_version)} "
            f"(did you mean {_q(want)}{version}?)")
