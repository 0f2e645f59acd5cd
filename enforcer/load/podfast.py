"""The common, valid Pod decoded without the strict decoder's bookkeeping.

A large cluster is mostly Pods, and nearly all of them have the same shape: metadata with
a name, a namespace and labels (plus a few string fields nobody reads), containers whose
ports are plain, and status.podIP (with podIPs repeating it). ``fast_pod`` recognises
exactly that shape and returns the Pod the strict decoder (enforcer.load.decode) would return
for it, without errors or warnings; anything else (a wrong type, an unknown field, a value
it has not seen validated, a second address...) returns None and the strict decoder runs,
so every message about bad input still comes from one place.

It remembers label keys, label values and port names that passed validation (they repeat
across pods), so each distinct string is validated once per process, not once per pod.
"""
from __future__ import annotations

import socket
from dataclasses import fields

from enforcer.load import validation as V
from enforcer.model import PROTOCOLS, ContainerPort, Pod

_OBJECT = frozenset(("apiVersion", "kind", "metadata", "spec", "status"))
# metadata fields nobody reads, by the type the strict decoder checks (what kubectl get
# -o json prints for a running pod: uid, resourceVersion, ownerReferences, annotations...)
_META_TYPES = {**dict.fromkeys(("generateName", "selfLink", "uid", "resourceVersion", "creationTimestamp",
                                "deletionTimestamp"), str),
               **dict.fromkeys(("generation", "deletionGracePeriodSeconds"), int),
               **dict.fromkeys(("ownerReferences", "managedFields"), list)}
_META_READ = frozenset(("name", "namespace", "labels"))
_META = _META_READ | frozenset(_META_TYPES) | {"annotations", "finalizers"}
_PORT = frozenset(("name", "containerPort", "protocol"))
_SEEN_LIMIT = 1 << 18  # distinct strings remembered per kind; forgotten beyond (memory)

_label_keys: set[str] = set()
_label_values: set[str] = set()
_port_names: set[str] = set()
_namespaces: set[str] = set()
_ports: dict[tuple[int, str, str | None], ContainerPort] = {}
_AF_INET = socket.AF_INET
_inet_pton = socket.inet_pton


def _remember(seen: set[str], value: str) -> None:
    if len(seen) >= _SEEN_LIMIT:
        seen.clear()
    seen.add(value)


def _labels_ok(labels: dict) -> bool:
    keys, values = _label_keys, _label_values
    for k, v in labels.items():
        if k not in keys:
            if V.qualified_name(k):
                return False
            _remember(keys, k)
        if v not in values:
            if v.__class__ is not str or V.label_value(v):
                return False
            _remember(values, v)
    return True


def _container_ports(raw: list, out: list[ContainerPort]) -> bool:
    names: list[str] = []
    for p in raw:
        if p.__class__ is not dict or not p.keys() <= _PORT:
            return False
        number = p.get("containerPort")
        proto = p.get("protocol")
        if proto is None or proto == "":
            proto = "TCP"  # the API server's default, for "" too
        name = p.get("name")
        if number.__class__ is not int or not 1 <= number <= 65535 or proto.__class__ is not str \
                or proto not in PROTOCOLS:
            return False
        if name is not None:
            if name.__class__ is not str or name in names:
                return False
            if name not in _port_names:
                if V.port_name(name):
                    return False
                _remember(_port_names, name)
            if name:
                names.append(name)
        out.append(container_port(number, proto, name))
    return True


def container_port(number: int, protocol: str, name: str | None) -> ContainerPort:
    """One ContainerPort object per distinct port: 150,000 pods declare a handful."""
    key = (number, protocol, name)
    cp = _ports.get(key)
    if cp is None:
        cp = _ports[key] = ContainerPort(number, protocol, name or None)
    return cp


def _other_metadata_ok(meta: dict) -> bool:
    for k, v in meta.items():
        if v is None or k in _META_READ:
            continue
        if k == "annotations":
            if v.__class__ is not dict or any(a.__class__ is not str for a in v.values()) or V.annotations(v):
                return False
        elif k == "finalizers":
            if v.__class__ is not list or any(f.__class__ is not str for f in v):
                return False
        elif v.__class__ is not _META_TYPES[k]:
            return False
    return True


def fast_pod(d: dict, source: str) -> Pod | None:
    """The Pod of ``d`` when it is of the common valid shape, else None (decode it strictly)."""
    if not d.keys() <= _OBJECT:
        return None
    meta = d.get("metadata")
    if meta.__class__ is not dict or not meta.keys() <= _META:
        return None
    name = meta.get("name")
    if name.__class__ is not str or not name or V.dns1123_subdomain(name):
        return None
    namespace = meta.get("namespace")
    if namespace is None or namespace == "":
        namespace = "default"
    elif namespace not in _namespaces:
        if namespace.__class__ is not str or V.dns1123_label(namespace):
            return None
        _remember(_namespaces, namespace)
    labels = meta.get("labels")
    if labels is None:
        labels = {}
    elif labels.__class__ is not dict or not _labels_ok(labels):
        return None
    if not meta.keys() <= _META_READ and not _other_metadata_ok(meta):
        return None
    ports: list[ContainerPort] = []
    host_network = False
    spec = d.get("spec")
    if spec is not None:
        if spec.__class__ is not dict:
            return None
        hn = spec.get("hostNetwork")
        if hn is not None:
            if hn.__class__ is not bool:
                return None
            host_network = hn
        containers = spec.get("containers")
        if containers is not None:
            if containers.__class__ is not list:
                return None
            for c in containers:
                if c.__class__ is not dict:
                    if c is not None:
                        return None
                    continue
                raw = c.get("ports")
                if raw is not None and (raw.__class__ is not list or not _container_ports(raw, ports)):
                    return None
    ips: tuple[str, ...] = ()
    status = d.get("status")
    if status is not None:
        if status.__class__ is not dict:
            return None
        if "podIP" in status or "podIPs" in status:
            pod_ip = status.get("podIP")
            pod_ips = status.get("podIPs")
            if pod_ip.__class__ is not str or not (
                    pod_ips is None or (pod_ips.__class__ is list and len(pod_ips) == 1
                                        and pod_ips[0].__class__ is dict and len(pod_ips[0]) == 1
                                        and pod_ips[0].get("ip") == pod_ip)):
                return None
            try:
                _inet_pton(_AF_INET, pod_ip)  # canonical IPv4 (no leading zeros)
            except (OSError, ValueError):
                return None
            ips = (pod_ip,)
    return _pod(namespace, name, labels, ips, tuple(ports), source, host_network)


# A frozen dataclass's __init__ sets each field through object.__setattr__: 3 of the 10 us
# a pod takes here. Filling the instance dict directly makes the same object, as long as
# Pod is the plain dataclass we know (checked once, here; else the constructor is used).
_POD_FIELDS = ("namespace", "name", "labels", "ips", "ports", "source", "owner", "host_network")
_new = object.__new__
_direct = (tuple(f.name for f in fields(Pod)) == _POD_FIELDS and "__slots__" not in vars(Pod)
           and not hasattr(Pod, "__post_init__"))


def _pod(namespace: str, name: str, labels: dict, ips: tuple[str, ...], ports: tuple[ContainerPort, ...],
         source: str, host_network: bool) -> Pod:
    if not _direct:
        return Pod(namespace, name, labels, ips, ports, source, host_network=host_network)
    p = _new(Pod)
    p.__dict__.update(namespace=namespace, name=name, labels=labels, ips=ips, ports=ports, source=source,
                      owner="", host_network=host_network)
    return p
