"""Strict decoding of a ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2).

As strict as the API server with the standard-channel CRD (deploy/crds/) and strict field
validation: unknown fields, wrong types, required fields, enums, bounds (priority 0..1000,
ports 1..65535, at most 25 rules, peers, protocols and networks), "exactly one field" objects
(minProperties/maxProperties 1), the CEL rules (range start < end, isCIDR, no named port
with a networks peer) and duplicate networks (a list of type set). Problems go to ``errs``
as (field path, message); decoding never stops at the first one.

Stricter than the CRD, on purpose: label selectors are checked as Kubernetes checks them
elsewhere (a CRD schema does not), because a selector the API machinery cannot parse
cannot be enforced. The experimental-channel peers ``nodes`` and ``domainNames`` are
refused with a message saying so: this enforcer implements the standard channel.
"""
from __future__ import annotations

from enforcer.load import validation as V
from enforcer.cnp.model import (
    ACTIONS,
    TIERS,
    ClusterNetworkPolicy,
    CNPPeer,
    CNPProtocol,
    CNPRule,
    Selection,
)
from enforcer.load.decode import Anc, Errs, _integer, _items, _selector, _string, _strings, _struct
from enforcer.model import LabelSelector

API_VERSION = "policy.networking.k8s.io/v1alpha2"
KIND = "ClusterNetworkPolicy"
MAX_ITEMS = 25

_OBJECT = frozenset(("apiVersion", "kind", "metadata", "spec", "status"))
_SPEC = frozenset(("tier", "priority", "subject", "ingress", "egress"))
_SUBJECT = frozenset(("namespaces", "pods"))
_NAMESPACED_POD = frozenset(("namespaceSelector", "podSelector"))
_INGRESS = frozenset(("name", "action", "from", "protocols"))
_EGRESS = frozenset(("name", "action", "to", "protocols"))
_IN_PEER = frozenset(("namespaces", "pods"))
_EG_PEER = frozenset(("namespaces", "pods", "networks"))
_EXPERIMENTAL = frozenset(("nodes", "domainNames"))
_PROTOCOL = frozenset(("tcp", "udp", "sctp", "destinationNamedPort"))
_PROTO_BODY = frozenset(("destinationPort",))
_PORT = frozenset(("number", "range"))
_RANGE = frozenset(("start", "end"))
_STATUS = frozenset(("conditions",))


def _exactly_one(d: dict, path: str, errs: Errs, what: str = "exactly one field must be set") -> None:
    if len(d) == 0:
        errs.append((path, f"Invalid value: 0: {path} in body should have at least 1 properties ({what})"))
    elif len(d) > 1:
        errs.append((path, f"Invalid value: {len(d)}: {path} in body should have at most 1 properties "
                           f"({what}; got {', '.join(sorted(d))})"))


def _union(v: object, path: str, allowed: frozenset, errs: Errs, anc: Anc, *,
           null_sets_none: bool = False, what: str = "exactly one field must be set") -> tuple[dict, Anc] | None:
    """A struct of which exactly one field is set (the CRD's min/maxProperties 1): its
    fields and the ancestry to read them with; None when ``v`` is no struct. A list item's
    union (``null_sets_none``) reports a null as setting no field, as the API server does."""
    d = _struct(v, path, allowed, errs, anc)
    if d is None:
        if null_sets_none and v is None:
            _exactly_one({}, path, errs, what)
        return None
    _exactly_one(d, path, errs, what)
    return d, ((path, allowed),) + anc


def _count(items: list, path: str, errs: Errs, lo: int = 0, hi: int = MAX_ITEMS) -> None:
    if len(items) > hi:
        errs.append((path, f"Too many: {len(items)}: must have at most {hi} items"))
    if len(items) < lo:
        errs.append((path, f"Invalid value: {len(items)}: {path} in body should have at least {lo} items"))


def _bounded(v: object, path: str, errs: Errs, lo: int, hi: int) -> int | None:
    n = _integer(v, path, errs)
    if n is not None and not lo <= n <= hi:
        side = "greater than or equal to" if n < lo else "less than or equal to"
        errs.append((path, f"Invalid value: {n}: {path} in body should be {side} {lo if n < lo else hi}"))
        return None
    return n


def decode(d: dict, name: str, errs: Errs, warns: Errs, source: str) -> ClusterNetworkPolicy:
    """The model of ``d`` (kind and apiVersion already checked; ``name`` validated by the
    caller's metadata decoding)."""
    anc: Anc = (("", _OBJECT),)
    raw_spec = d.get("spec")
    if raw_spec is None:
        errs.append(("spec", V.required()))
    spec = _struct(raw_spec, "spec", _SPEC, errs, anc) or {}
    anc = (("spec", _SPEC),) + anc
    tier = _string(spec.get("tier"), "spec.tier", errs)
    if tier is None and spec.get("tier") is None:
        errs.append(("spec.tier", V.required()))
    elif tier is not None and tier not in TIERS:
        errs.append(("spec.tier", V.unsupported(tier, TIERS)))
    priority = _bounded(spec.get("priority"), "spec.priority", errs, 0, 1000)
    if spec.get("priority") is None:
        errs.append(("spec.priority", V.required()))
    if spec.get("subject") is None:
        errs.append(("spec.subject", V.required()))
    subject = _subject(spec.get("subject"), "spec.subject", errs, anc)
    ingress = _rules(spec.get("ingress"), "spec.ingress", "from", _INGRESS, _IN_PEER, errs, anc)
    egress = _rules(spec.get("egress"), "spec.egress", "to", _EGRESS, _EG_PEER, errs, anc)
    status = _struct(d.get("status"), "status", _STATUS, errs, anc[-1:])
    if status is not None:
        _items(status.get("conditions"), "status.conditions", errs)  # read by nobody: type only
    return ClusterNetworkPolicy(name, tier or "", priority or 0, subject, ingress, egress, source)


def _subject(v: object, path: str, errs: Errs, anc: Anc) -> Selection:
    union = _union(v, path, _SUBJECT, errs, anc)
    if union is None:
        return Selection(LabelSelector(), LabelSelector())
    d, inner = union
    return _selection(d, path, errs, inner)


def _selection(d: dict, path: str, errs: Errs, anc: Anc) -> Selection:
    """The namespaces or pods field of a subject or peer (the caller checked there is one)."""
    if "namespaces" in d:
        return Selection(_selector(d["namespaces"], f"{path}.namespaces", errs, anc))
    pp = f"{path}.pods"
    raw = d.get("pods")
    p = _struct(raw, pp, _NAMESPACED_POD, errs, anc)
    if p is None:
        if raw is None:
            errs.append((pp, V.required()))
        return Selection(LabelSelector(), LabelSelector())
    inner = ((pp, _NAMESPACED_POD),) + anc
    if "podSelector" not in p:
        errs.append((f"{pp}.podSelector", V.required()))
    # namespaceSelector is optional in the CRD; absent, Go's zero value: every namespace.
    return Selection(_selector(p.get("namespaceSelector"), f"{pp}.namespaceSelector", errs, inner),
                     _selector(p.get("podSelector"), f"{pp}.podSelector", errs, inner))


def _rules(v: object, path: str, peers_field: str, allowed: frozenset, peer_fields: frozenset,
           errs: Errs, anc: Anc) -> tuple[CNPRule, ...]:
    items = _items(v, path, errs)
    _count(items, path, errs)
    out = []
    for i, item in enumerate(items):
        rp = f"{path}[{i}]"
        r = _struct(item, rp, allowed, errs, anc) or {}
        inner = ((rp, allowed),) + anc
        name = _string(r.get("name"), f"{rp}.name", errs) or ""
        if len(name) > 100:
            errs.append((f"{rp}.name", f"Too long: may not be more than 100 bytes"))
        action = _string(r.get("action"), f"{rp}.action", errs)
        if r.get("action") is None:
            errs.append((f"{rp}.action", V.required()))
        elif action is not None and action not in ACTIONS:
            errs.append((f"{rp}.action", V.unsupported(action, ACTIONS)))
        if r.get(peers_field) is None:
            errs.append((f"{rp}.{peers_field}", V.required()))
        raw_peers = _items(r.get(peers_field), f"{rp}.{peers_field}", errs)
        if r.get(peers_field) is not None:
            _count(raw_peers, f"{rp}.{peers_field}", errs, 1)
        peers = tuple(_peer(p, f"{rp}.{peers_field}[{j}]", peer_fields, errs, inner)
                      for j, p in enumerate(raw_peers))
        protocols: tuple[CNPProtocol, ...] = ()
        if "protocols" in r and r["protocols"] is not None:
            raw_protos = _items(r["protocols"], f"{rp}.protocols", errs)
            _count(raw_protos, f"{rp}.protocols", errs, 1)
            protocols = tuple(_protocol(p, f"{rp}.protocols[{j}]", errs, inner) for j, p in enumerate(raw_protos))
        if any(p.named is not None for p in protocols) and any(p.networks for p in peers):
            # The egress rule's CEL rule: a network has no containers, so no named ports.
            errs.append((rp, "Invalid value: \"object\": networks/nodes/domainNames peer cannot be set "
                             "with namedPorts since there are no namedPorts for networks/nodes/domainNames"))
        out.append(CNPRule(name, action or "", peers, protocols))
    return tuple(out)


def _peer(v: object, path: str, allowed: frozenset, errs: Errs, anc: Anc) -> CNPPeer:
    if isinstance(v, dict) and v.keys() & _EXPERIMENTAL:
        for k in sorted(v.keys() & _EXPERIMENTAL):
            errs.append((f"{path}.{k}", f"unknown field (the experimental-channel peer {k!r} is not in the "
                                        "standard CRD and this enforcer does not implement it)"))
        v = {k: x for k, x in v.items() if k not in _EXPERIMENTAL}
        if not v:
            return CNPPeer(networks=())
    union = _union(v, path, allowed, errs, anc, null_sets_none=True)
    if union is None:
        return CNPPeer()
    d, inner = union
    if "networks" in d:
        return CNPPeer(networks=_networks(d["networks"], f"{path}.networks", errs))
    if "namespaces" in d or "pods" in d:
        return CNPPeer(_selection(d, path, errs, inner))
    return CNPPeer()


def _networks(v: object, path: str, errs: Errs) -> tuple[str, ...]:
    texts = _strings(v, path, errs)
    _count(texts, path, errs, 1)
    out = []
    for i, text in enumerate(texts):
        ip = f"{path}[{i}]"
        if len(text) > 43:
            errs.append((ip, f"Too long: may not be more than 43 bytes"))
            continue
        if text in texts[:i]:
            errs.append((ip, V.duplicate(text)))
            continue
        parsed = V.parse_cidr(text)
        # CEL's isCIDR parses as Go's netip.ParsePrefix: no leading zeros, which the legacy
        # parser only warns about; host bits set are fine and mean the network.
        sloppy = any("non-standard" in w for w in parsed.warnings)
        if parsed.value is None or sloppy:
            errs.append((ip, f"Invalid value: {V.quote(text)}: Invalid CIDR format provided"))
            continue
        out.append(str(parsed.value))
    return tuple(out)


def _protocol(v: object, path: str, errs: Errs, anc: Anc) -> CNPProtocol:
    union = _union(v, path, _PROTOCOL, errs, anc, null_sets_none=True)
    if union is None:
        return CNPProtocol()
    d, inner = union
    if "destinationNamedPort" in d:
        name = _string(d["destinationNamedPort"], f"{path}.destinationNamedPort", errs)
        return CNPProtocol(named=name or "")
    for key, proto in (("tcp", "TCP"), ("udp", "UDP"), ("sctp", "SCTP")):
        if key in d:
            bp = f"{path}.{key}"
            body = _struct(d[key], bp, _PROTO_BODY, errs, inner)
            if body is None:
                _exactly_one({}, bp, errs, "destinationPort is required")
                return CNPProtocol(proto)
            _exactly_one(body, bp, errs, "destinationPort is required")
            first, last = _port(body.get("destinationPort"), f"{bp}.destinationPort", errs,
                                ((bp, _PROTO_BODY),) + inner)
            return CNPProtocol(proto, first, last)
    return CNPProtocol()


def _port(v: object, path: str, errs: Errs, anc: Anc) -> tuple[int | None, int | None]:
    union = _union(v, path, _PORT, errs, anc, what="number or range")
    if union is None:
        return None, None
    d, inner = union
    if "number" in d:
        n = _bounded(d["number"], f"{path}.number", errs, 1, 65535)
        return n, n
    if "range" in d:
        rp = f"{path}.range"
        r = _struct(d["range"], rp, _RANGE, errs, inner) or {}
        for k in ("start", "end"):
            if r.get(k) is None:
                errs.append((f"{rp}.{k}", V.required()))
        start = _bounded(r.get("start"), f"{rp}.start", errs, 1, 65535)
        end = _bounded(r.get("end"), f"{rp}.end", errs, 1, 65535)
        if start is not None and end is not None:
            if start >= end:
                errs.append((rp, "Invalid value: \"object\": Start port must be less than End port"))
            return start, end
    return None, None


def check_top(d: dict, errs: Errs) -> None:
    """The object's own fields (the metadata is the caller's)."""
    _struct(d, "", _OBJECT, errs, (("spec", _SPEC),))




def decode_object(d: dict, errs: Errs, warns: Errs, source: str) -> ClusterNetworkPolicy:
    """A whole ClusterNetworkPolicy object: cluster-scoped, so metadata.namespace is
    ignored as the API server ignores it for cluster-scoped kinds."""
    from enforcer.load.decode import _metadata
    check_top(d, errs)
    meta = _metadata(d.get("metadata"), errs, False, V.dns1123_subdomain)
    return decode(d, meta.name, errs, warns, source)
