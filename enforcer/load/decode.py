"""Strict decoding of one Kubernetes object's fields into an enforcer.model object.

The input is a plain document (from enforcer.load.documents) whose kind and apiVersion
enforcer.load.manifests has already checked. Each decoder reads the fields as
``kubectl apply --validate=strict`` and the API server would: unknown fields (with a hint
when the field belongs to an enclosing object: mis-indented YAML), wrong types, and every
rule of the API server's validation (enforcer.load.validation) are appended to ``errs`` as
(field path, message); doubtful but accepted values go to ``warns``. Defaults are applied,
not demanded. Pods are decoded strictly only where we read them (metadata,
containers[].ports, status.podIP(s)); their many other fields are tolerated.

Decoders never stop at the first problem, so a user fixes a whole file in one pass. Pod
decoding runs for every pod of a large cluster: its common, valid shape goes through
enforcer.load.podfast first.
"""
from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from typing import Sequence

from enforcer.load import validation as V
from enforcer.load.hints import unknown_field
from enforcer.load.podfast import container_port, fast_pod
from enforcer.model import (
    EGRESS,
    INGRESS,
    PROTOCOLS,
    ContainerPort,
    ExternalHost,
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PortSpec,
    Requirement,
    Rule,
)

METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
LEGACY_ANNOTATION = "net.beta.kubernetes.io/network-policy"


# ==== helpers =================================================================================

Errs = list[tuple[str, str]]  # (field path, message)
Anc = tuple[tuple[str, frozenset], ...]  # enclosing objects' (path, fields), innermost first
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def describe(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {V.quote(v)}"
    if isinstance(v, int):
        return f"integer {v}"
    if isinstance(v, float):
        return f"number {v}"
    if isinstance(v, str):
        return f"string {V.quote(v)}"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    return type(v).__name__


def _type_error(errs: Errs, path: str, v: object, expected: str) -> None:
    errs.append((path, f"Invalid type: expected {expected}, got {describe(v)}"))


def _join(path: str, key: str) -> str:
    if not _SIMPLE_KEY.fullmatch(key):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def render_path(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        out = f"{out}[{p}]" if isinstance(p, int) else _join(out, p)
    return out


def _struct(v: object, path: str, allowed: frozenset, errs: Errs, anc: Anc = ()) -> dict | None:
    """A mapping whose keys must all be known fields. None for null (the caller's zero value)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        _type_error(errs, path, v, "a mapping")
        return None
    if not v.keys() <= allowed:
        for k in v:
            if k not in allowed:
                errs.append((_join(path, k), unknown_field(k, path, allowed, anc)))
    return v


def _items(v: object, path: str, errs: Errs) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        _type_error(errs, path, v, "a list")
        return []
    return v


def _string(v: object, path: str, errs: Errs) -> str | None:
    """A string field; None when absent or of the wrong type (the type error is recorded)."""
    if v is None or v.__class__ is str:
        return v  # type: ignore[return-value]
    _type_error(errs, path, v, "a string")
    return None


def _integer(v: object, path: str, errs: Errs) -> int | None:
    if v is None or v.__class__ is int:
        return v  # type: ignore[return-value]
    _type_error(errs, path, v, "an integer")
    return None


def _strings(v: object, path: str, errs: Errs) -> list[str]:
    out = []
    for i, s in enumerate(_items(v, path, errs)):
        if s is None:
            s = ""  # Go decodes a null list element to the zero value
        elif s.__class__ is not str:
            _type_error(errs, f"{path}[{i}]", s, "a string")
            continue
        out.append(s)
    return out


def _string_map(v: object, path: str, errs: Errs) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        _type_error(errs, path, v, "a mapping of strings")
        return {}
    out = {}
    for k, s in v.items():
        if s.__class__ is str:
            out[k] = s
        elif s is None:  # Go decodes null into a map[string]string as ""
            out[k] = ""
        else:
            _type_error(errs, _join(path, k), s, "a string (quote it)")
    return out


# ==== metadata, selectors =====================================================================

_META = frozenset((
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
))
_META_STRINGS = ("generateName", "selfLink", "uid", "resourceVersion", "creationTimestamp",
                 "deletionTimestamp")
_META_INTS = ("generation", "deletionGracePeriodSeconds")
_META_LISTS = ("ownerReferences", "managedFields")
_META_READ = frozenset(("name", "namespace", "labels", "annotations"))


@dataclass
class _Meta:
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


_META_ANC: Anc = (("", frozenset(("apiVersion", "kind", "metadata", "spec", "status"))),)


def _metadata(v: object, errs: Errs, namespaced: bool, name_rule) -> _Meta:
    d = _struct(v, "metadata", _META, errs, _META_ANC) or {}
    raw_name = d.get("name")
    name = _string(raw_name, "metadata.name", errs) or ""
    if raw_name is None or raw_name == "":
        errs.append(("metadata.name", V.required("name or generateName is required")
                     if not d.get("generateName") else
                     V.required("a manifest needs a name: generateName works only with the API server")))
    elif name:
        for m in name_rule(name):
            errs.append(("metadata.name", V.invalid(name, m)))
    namespace = "default"
    if namespaced:
        ns = d.get("namespace")
        if ns is not None and ns != "":  # empty means "default", as kubectl reads it
            if ns.__class__ is str:
                namespace = ns
                for m in V.dns1123_label_cached(ns):
                    errs.append(("metadata.namespace", V.invalid(ns, m)))
            else:
                _type_error(errs, "metadata.namespace", ns, "a string")
    labels = _string_map(d.get("labels"), "metadata.labels", errs)
    if labels:
        for m in V.labels(labels):
            errs.append(("metadata.labels", m))
    raw = d.get("annotations")
    annotations = _string_map(raw, "metadata.annotations", errs) if raw else {}
    if annotations:
        for m in V.annotations(annotations):
            errs.append(("metadata.annotations", m))
    if not d.keys() <= _META_READ:  # the fields nobody reads: types only
        for k in _META_STRINGS:
            _string(d.get(k), f"metadata.{k}", errs)
        for k in _META_INTS:
            _integer(d.get(k), f"metadata.{k}", errs)
        for k in _META_LISTS:
            _items(d.get(k), f"metadata.{k}", errs)
        _strings(d.get("finalizers"), "metadata.finalizers", errs)
    return _Meta(name, namespace, labels, annotations)


_SELECTOR = frozenset(("matchLabels", "matchExpressions"))
_REQUIREMENT = frozenset(("key", "operator", "values"))
_EMPTY_SELECTOR = LabelSelector()


def _selector(v: object, path: str, errs: Errs, anc: Anc) -> LabelSelector:
    d = _struct(v, path, _SELECTOR, errs, anc)
    if not d:
        return _EMPTY_SELECTOR
    labels = _string_map(d.get("matchLabels"), f"{path}.matchLabels", errs)
    if labels:
        errs.extend((f"{path}.matchLabels", m) for m in V.labels(labels))
    exprs = []
    inner = ((path, _SELECTOR),) + anc
    for i, item in enumerate(_items(d.get("matchExpressions"), f"{path}.matchExpressions", errs)):
        rp = f"{path}.matchExpressions[{i}]"
        r = _struct(item, rp, _REQUIREMENT, errs, inner) or {}
        key = _string(r.get("key"), f"{rp}.key", errs) or ""
        op = _string(r.get("operator"), f"{rp}.operator", errs) or ""
        values = _strings(r.get("values"), f"{rp}.values", errs)
        errs.extend((f"{rp}.{rel}", m) for rel, m in V.selector_requirement(key, op, values))
        exprs.append(Requirement(key, op, tuple(values)))
    return LabelSelector(tuple(sorted(labels.items())), tuple(exprs))


# ==== NetworkPolicy ===========================================================================

_OBJECT = frozenset(("apiVersion", "kind", "metadata", "spec", "status"))
_NP_OBJECT = _OBJECT - {"status"}  # NetworkPolicy's status field is gone since Kubernetes 1.28
_NP_SPEC = frozenset(("podSelector", "ingress", "egress", "policyTypes"))
_NP_INGRESS = frozenset(("from", "ports"))
_NP_EGRESS = frozenset(("to", "ports"))
_NP_PEER = frozenset(("podSelector", "namespaceSelector", "ipBlock"))
_NP_IPBLOCK = frozenset(("cidr", "except"))
_NP_PORT = frozenset(("protocol", "port", "endPort"))
_POLICY_TYPES = (INGRESS, EGRESS)


def _network_policy(d: dict, meta: _Meta, errs: Errs, warns: Errs, source: str) -> NetworkPolicy:
    anc: Anc = (("", _OBJECT),)
    spec = _struct(d.get("spec"), "spec", _NP_SPEC, errs, anc) or {}
    anc = (("spec", _NP_SPEC),) + anc
    pod_selector = _selector(spec.get("podSelector"), "spec.podSelector", errs, anc)
    ingress = _rules(spec.get("ingress"), "spec.ingress", "from", _NP_INGRESS, errs, warns, anc)
    egress = _rules(spec.get("egress"), "spec.egress", "to", _NP_EGRESS, errs, warns, anc)
    types = _strings(spec.get("policyTypes"), "spec.policyTypes", errs)
    if len(types) > 2:
        errs.append(("spec.policyTypes", V.invalid(types, "may not specify more than two policyTypes")))
    else:
        # The API server accepts a type listed twice ([Ingress, Ingress]); so do we (lint
        # warns about it).
        for i, t in enumerate(types):
            if t not in _POLICY_TYPES:
                errs.append((f"spec.policyTypes[{i}]", V.unsupported(t, _POLICY_TYPES)))
            elif t in types[:i]:
                warns.append((f"spec.policyTypes[{i}]", f"{V.quote(t)} is listed twice; once means the same"))
    # SEMANTICS rule 2: the API server's defaulting; `egress: []` is not an egress section.
    effective = frozenset(types) if types else frozenset((INGRESS, EGRESS) if egress else (INGRESS,))
    return NetworkPolicy(meta.namespace, meta.name, pod_selector, effective, ingress, egress, source)


def _rules(v: object, path: str, peers_field: str, allowed: frozenset, errs: Errs, warns: Errs,
           anc: Anc) -> tuple[Rule, ...]:
    rules = []
    for i, item in enumerate(_items(v, path, errs)):
        rp = f"{path}[{i}]"
        r = _struct(item, rp, allowed, errs, anc) or {}  # null rule = {} (Go's zero value)
        inner = ((rp, allowed),) + anc
        ports = tuple(_np_port(p, f"{rp}.ports[{j}]", errs, inner)
                      for j, p in enumerate(_items(r.get("ports"), f"{rp}.ports", errs)))
        peers = tuple(_peer(p, f"{rp}.{peers_field}[{j}]", errs, warns, inner)
                      for j, p in enumerate(_items(r.get(peers_field), f"{rp}.{peers_field}", errs)))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def _np_port(v: object, path: str, errs: Errs, anc: Anc) -> PortSpec:
    d = _struct(v, path, _NP_PORT, errs, anc) or {}
    proto = _string(d.get("protocol"), f"{path}.protocol", errs)
    port = d.get("port")
    if port is not None and port.__class__ is not int and port.__class__ is not str:
        _type_error(errs, f"{path}.port", port, "an integer or a port name")
        port = None
    end_port = _integer(d.get("endPort"), f"{path}.endPort", errs)
    errs.extend((f"{path}.{rel}", m) for rel, m in V.network_policy_port(proto, port, end_port))
    return PortSpec("TCP" if proto is None else proto, port, end_port)


def _peer(v: object, path: str, errs: Errs, warns: Errs, anc: Anc) -> Peer:
    d = _struct(v, path, _NP_PEER, errs, anc) or {}
    inner = ((path, _NP_PEER),) + anc
    ps, ns, ib = d.get("podSelector"), d.get("namespaceSelector"), d.get("ipBlock")
    pod_selector = None if ps is None else _selector(ps, f"{path}.podSelector", errs, inner)
    ns_selector = None if ns is None else _selector(ns, f"{path}.namespaceSelector", errs, inner)
    ip_block = None if ib is None else _ip_block(ib, f"{path}.ipBlock", errs, warns, inner)
    count = (ps is not None) + (ns is not None) + (ib is not None)
    if count == 0:
        errs.append((path, V.required("must specify a peer")))
    elif count > 1 and ib is not None:
        errs.append((path, V.forbidden("may not specify both ipBlock and another peer")))
    return Peer(pod_selector, ns_selector, ip_block)


def _ip_block(v: object, path: str, errs: Errs, warns: Errs, anc: Anc) -> IPBlock | None:
    d = _struct(v, path, _NP_IPBLOCK, errs, anc) or {}
    cidr_text = _string(d.get("cidr"), f"{path}.cidr", errs)
    excepts = _strings(d.get("except"), f"{path}.except", errs)
    if not cidr_text:
        if d.get("cidr") is None or cidr_text == "":
            errs.append((f"{path}.cidr", V.required()))
        return None
    cidr = V.parse_cidr(cidr_text)
    errs.extend((f"{path}.cidr", m) for m in cidr.errors)
    warns.extend((f"{path}.cidr", m) for m in cidr.warnings)
    if cidr.value is None:
        return None  # as the API server: excepts of an unparsable cidr are not checked
    out = []
    for i, text in enumerate(excepts):
        ep = f"{path}.except[{i}]"
        exc = V.parse_cidr(text)
        errs.extend((ep, m) for m in exc.errors)
        warns.extend((ep, m) for m in exc.warnings)
        if exc.value is not None:
            errs.extend((ep, m) for m in V.except_in_cidr(cidr.value, exc.value, text))  # type: ignore[arg-type]
            out.append(str(exc.value))
    return IPBlock(str(cidr.value), tuple(out))


# ==== Pod, Namespace, ExternalHost ============================================================

_CONTAINER_PORT = frozenset(("name", "containerPort", "protocol", "hostPort", "hostIP"))
_POD_IP = frozenset(("ip",))


def _pod(d: dict, meta: _Meta, errs: Errs, warns: Errs, source: str) -> Pod:
    spec = d.get("spec")
    ports: list[ContainerPort] = []
    host_network = False
    if spec is not None:
        if spec.__class__ is not dict:
            _type_error(errs, "spec", spec, "a mapping")
        else:
            hn = spec.get("hostNetwork")
            if hn is not None:
                if hn.__class__ is bool:
                    host_network = hn
                else:
                    _type_error(errs, "spec.hostNetwork", hn, "a boolean")
            containers = spec.get("containers")
            if containers is not None:
                for i, c in enumerate(_items(containers, "spec.containers", errs)):
                    if c.__class__ is not dict:
                        if c is not None:
                            _type_error(errs, f"spec.containers[{i}]", c, "a mapping")
                        continue
                    raw_ports = c.get("ports")
                    if raw_ports is not None:
                        _container_ports(raw_ports, i, errs, ports)
    status = d.get("status")
    ips: tuple[str, ...] = ()
    if status is not None:
        if status.__class__ is not dict:
            _type_error(errs, "status", status, "a mapping")
        elif "podIP" in status or "podIPs" in status:
            ips = _pod_ips(status, errs, warns)
    return Pod(meta.namespace, meta.name, meta.labels, ips, tuple(ports), source, host_network=host_network)


_CONTAINER_FIELDS = frozenset(("name", "image", "ports"))  # for the mis-indentation hint
def _container_ports(v: object, container: int, errs: Errs, out: list[ContainerPort]) -> None:
    """validateContainerPorts: names unique within the container, numbers in range."""
    names: set[str] = set()
    path = f"spec.containers[{container}].ports"
    for i, p in enumerate(_items(v, path, errs)):
        if p.__class__ is not dict or not p.keys() <= _CONTAINER_PORT:
            anc: Anc = ((f"spec.containers[{container}]", _CONTAINER_FIELDS),)
            p = _struct(p, f"{path}[{i}]", _CONTAINER_PORT, errs, anc) or {}
        n_errs = len(errs)
        _container_port_errors(p, f"{path}[{i}]", names, errs)
        if len(errs) == n_errs:
            if name := p.get("name"):
                names.add(name)
            out.append(container_port(p["containerPort"], p.get("protocol") or "TCP", name))


def _container_port_errors(p: dict, pp: str, names: set[str], errs: Errs) -> None:
    name = _string(p.get("name"), f"{pp}.name", errs)
    if name:
        msgs = V.port_name(name)
        errs.extend((f"{pp}.name", V.invalid(name, m)) for m in msgs)
        if not msgs and name in names:
            errs.append((f"{pp}.name", V.duplicate(name)))
    raw = p.get("containerPort")
    number = _integer(raw, f"{pp}.containerPort", errs)
    if raw is None or number == 0:
        errs.append((f"{pp}.containerPort", V.required()))
    elif number is not None:
        errs.extend((f"{pp}.containerPort", V.invalid(number, m)) for m in V.port_number(number))
    host_port = _integer(p.get("hostPort"), f"{pp}.hostPort", errs)
    if host_port:
        errs.extend((f"{pp}.hostPort", V.invalid(host_port, m)) for m in V.port_number(host_port))
    host_ip = _string(p.get("hostIP"), f"{pp}.hostIP", errs)
    if host_ip:
        errs.extend((f"{pp}.hostIP", m) for m in V.parse_ip(host_ip).errors)
    proto = _string(p.get("protocol"), f"{pp}.protocol", errs) or "TCP"
    errs.extend((f"{pp}.protocol", m) for m in V.protocol(proto))


def _pod_ips(status: dict, errs: Errs, warns: Errs) -> tuple[str, ...]:
    # Fast path for what kubectl prints: podIP alone, or with podIPs [{ip: the same}].
    pod_ip = status.get("podIP")
    pod_ips = status.get("podIPs")
    if pod_ip.__class__ is str and (
            pod_ips is None or (pod_ips.__class__ is list and len(pod_ips) == 1
                                and pod_ips[0].__class__ is dict and len(pod_ips[0]) == 1
                                and pod_ips[0].get("ip") == pod_ip)):
        try:
            socket.inet_pton(socket.AF_INET, pod_ip)  # canonical IPv4 (no leading zeros)
            return (pod_ip,)
        except (OSError, ValueError):
            pass
    pod_ip_text = _string(status.get("podIP"), "status.podIP", errs) or ""
    entries: list[tuple[str, str | None]] = []
    for i, item in enumerate(_items(status.get("podIPs"), "status.podIPs", errs)):
        ip_path = f"status.podIPs[{i}].ip"
        entry = _struct(item, f"status.podIPs[{i}]", _POD_IP, errs) or {}
        text = _string(entry.get("ip"), ip_path, errs)
        entries.append((ip_path, "" if text is None and entry.get("ip") is None else text))
    entries, notes = V.effective_pod_ips(pod_ip_text, entries)  # the API server's v1 conversion
    warns.extend(notes)
    parsed = []
    texts = []
    for ip_path, text in entries:
        if not text:
            if text == "":
                errs.append((ip_path, V.required()))
            continue
        p = V.parse_ip(text)
        errs.extend((ip_path, m) for m in p.errors)
        warns.extend((ip_path, m) for m in p.warnings)
        if p.value is not None:
            parsed.append(p.value)
            texts.append(text)
    for index, m in V.pod_ips(parsed, texts):
        errs.append(("status.podIPs" if index is None else f"status.podIPs[{index}].ip", m))
    return tuple(str(ip) for ip in parsed)


_NS_SPEC = frozenset(("finalizers",))
_NS_STATUS = frozenset(("phase", "conditions"))


def _namespace(d: dict, meta: _Meta, errs: Errs, warns: Errs, legacy: bool, notes: list[str],
               label: str) -> Namespace:
    _struct(d.get("spec"), "spec", _NS_SPEC, errs, (("", _OBJECT),))
    _struct(d.get("status"), "status", _NS_STATUS, errs, (("", _OBJECT),))
    labels = dict(meta.labels)
    labels[METADATA_NAME_LABEL] = meta.name  # as the API server does, whatever was written
    deny = False
    annotation = meta.annotations.get(LEGACY_ANNOTATION)
    if annotation is not None:
        if legacy:
            deny = _legacy_isolation(annotation, errs)
        else:
            notes.append(f"{label}: annotation {LEGACY_ANNOTATION} ignored "
                         "(legacy namespace isolation is not enabled)")
    return Namespace(meta.name, labels, deny)


def _legacy_isolation(text: str, errs: Errs) -> bool:
    """Pre-v1 namespace isolation: {"ingress": {"isolation": "DefaultDeny"}}."""
    path = f"metadata.annotations[{LEGACY_ANNOTATION}]"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    ingress = value.get("ingress") if isinstance(value, dict) else None
    isolation = ingress.get("isolation") if isinstance(ingress, dict) else None
    if not isinstance(value, dict) or (ingress is not None and not isinstance(ingress, dict)) \
            or isolation not in (None, "DefaultDeny"):
        errs.append((path, V.invalid(text, 'must be JSON like {"ingress": {"isolation": "DefaultDeny"}}')))
        return False
    return isolation == "DefaultDeny"


_EXT_TOP = frozenset(("apiVersion", "kind", "metadata", "spec"))
_EXT_SPEC = frozenset(("ips", "ports"))
_EXT_PORT = frozenset(("port", "protocol"))


def _external_host(d: dict, meta: _Meta, errs: Errs, warns: Errs) -> ExternalHost:
    anc: Anc = (("", _EXT_TOP),)
    spec = _struct(d.get("spec"), "spec", _EXT_SPEC, errs, anc) or {}
    anc = (("spec", _EXT_SPEC),) + anc
    ips: list[str] = []
    raw = spec.get("ips")
    raw_ips = _strings(raw, "spec.ips", errs)
    if raw is None or raw == []:
        errs.append(("spec.ips", V.required("an external host needs at least one address")))
    for i, text in enumerate(raw_ips):
        p = V.parse_ip(text)
        errs.extend((f"spec.ips[{i}]", m) for m in p.errors)
        warns.extend((f"spec.ips[{i}]", m) for m in p.warnings)
        if p.value is not None:
            if str(p.value) in ips:
                errs.append((f"spec.ips[{i}]", V.duplicate(text)))
            else:
                ips.append(str(p.value))
    ports = []
    for i, item in enumerate(_items(spec.get("ports"), "spec.ports", errs)):
        pp = f"spec.ports[{i}]"
        p = _struct(item, pp, _EXT_PORT, errs, anc) or {}
        number = _integer(p.get("port"), f"{pp}.port", errs)
        if number is None:
            if p.get("port") is None:
                errs.append((f"{pp}.port", V.required()))
        else:
            errs.extend((f"{pp}.port", V.invalid(number, m)) for m in V.port_number(number))
        proto = _string(p.get("protocol"), f"{pp}.protocol", errs)
        proto = "TCP" if proto is None else proto
        errs.extend((f"{pp}.protocol", m) for m in V.protocol(proto))
        if number is not None:
            ports.append(ContainerPort(number, proto))
    return ExternalHost(meta.name, tuple(ips), tuple(ports))


# ==== one object ==============================================================================

_LIST_FIELDS = frozenset(("apiVersion", "kind", "metadata", "items"))


def list_items(value: dict, errs: Errs) -> list:
    """The items of a List (kind List, PodList, ...), whose own fields are checked too."""
    _struct(value, "", _LIST_FIELDS, errs)
    return _items(value.get("items"), "items", errs)


def decode_kind(d: dict, kind: str, errs: Errs, warns: Errs, source: str, legacy: bool,
                notes: list[str], label: str) -> object:
    """The model object of ``d``, a NetworkPolicy, Pod, Namespace or ExternalHost of the
    right apiVersion. ``source`` is the file name, ``label`` "Kind ns/name" for notes."""
    if kind == "NetworkPolicy":
        # spec's fields as the "enclosing" hint: `egress:` written at the top is spec's.
        _struct(d, "", _NP_OBJECT, errs, (("spec", _NP_SPEC),))
        meta = _metadata(d.get("metadata"), errs, True, V.dns1123_subdomain)
        return _network_policy(d, meta, errs, warns, source)
    if kind == "Pod":  # the common valid shape fast (None: strictly, for the messages)
        if (pod := fast_pod(d, source)) is not None:
            return pod
        _struct(d, "", _OBJECT, errs)
        meta = _metadata(d.get("metadata"), errs, True, V.dns1123_subdomain)
        return _pod(d, meta, errs, warns, source)
    if kind == "Namespace":
        _struct(d, "", _OBJECT, errs)
        meta = _metadata(d.get("metadata"), errs, False, V.dns1123_label)
        return _namespace(d, meta, errs, warns, legacy, notes, f"{source}: {label}")
    _struct(d, "", _EXT_TOP, errs)
    meta = _metadata(d.get("metadata"), errs, False, V.dns1123_subdomain)
    return _external_host(d, meta, errs, warns)
