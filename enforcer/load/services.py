"""v1 Services, as NetworkPolicy meets them. Pure.

A ClusterIP Service is a virtual address: kube-proxy (or the lab, enforcer/lab/services.py)
rewrites a connection to ``clusterIP:port`` into one to ``podIP:targetPort`` of one backend
pod (DNAT) before any policy looks at it. So NetworkPolicy never sees a Service: it sees
the backend pod and the targetPort, a number or the name of a container port that each
backend pod resolves on its own (two backends may map ``http`` to different numbers).

Endpoints follow pods and labels: the backends of a Service are the pods of its namespace
whose labels match its selector (a map, matchLabels only), that declare the target port
when it is named, and that have an address of their own (hostNetwork pods are the node).
A Service without a selector has no endpoints we manage.

ClusterIPs not given in the manifest come from SERVICE_CIDR, at a place derived from the
Service's name (so adding a Service never moves another one's address).
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, replace
from typing import Mapping

from enforcer.load import decode as D
from enforcer.load import validation as V
from enforcer.errors import InputError
from enforcer.model import Cluster, Pod, Service, ServicePort

SERVICE_CIDR = "10.96.0.0/16"
PREFIX = "svc:"
TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")

_SPEC = frozenset((
    "ports", "selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity",
    "loadBalancerIP", "loadBalancerSourceRanges", "externalName", "externalTrafficPolicy",
    "healthCheckNodePort", "publishNotReadyAddresses", "sessionAffinityConfig", "ipFamilies",
    "ipFamilyPolicy", "allocateLoadBalancerNodePorts", "loadBalancerClass",
    "internalTrafficPolicy", "trafficDistribution",
))
_PORT = frozenset(("name", "protocol", "appProtocol", "port", "targetPort", "nodePort"))


# ==== decoding ================================================================================


def decode(d: dict, errs: D.Errs, warns: D.Errs, source: str, notes: list[str], label: str) -> Service:
    D._struct(d, "", D._OBJECT, errs)
    # Service names are DNS-1035 labels: they become DNS names and environment variables.
    meta = D._metadata(d.get("metadata"), errs, True, _dns1035_label)
    anc: D.Anc = (("", D._OBJECT),)
    spec = D._struct(d.get("spec"), "spec", _SPEC, errs, anc) or {}
    anc = (("spec", _SPEC),) + anc
    svc_type = D._string(spec.get("type"), "spec.type", errs) or "ClusterIP"
    if svc_type not in TYPES:
        errs.append(("spec.type", V.unsupported(svc_type, TYPES)))
    cluster_ip = D._string(spec.get("clusterIP"), "spec.clusterIP", errs) or ""
    if cluster_ip and cluster_ip != "None":
        p = V.parse_ip(cluster_ip)
        errs.extend(("spec.clusterIP", m) for m in p.errors)
        if p.value is not None:
            cluster_ip = str(p.value)
    raw_sel = spec.get("selector")
    selector = None
    if raw_sel is not None:
        sel = D._string_map(raw_sel, "spec.selector", errs)
        errs.extend(("spec.selector", m) for m in V.labels(sel))
        selector = tuple(sorted(sel.items())) if sel else None
    ports = _ports(spec.get("ports"), svc_type, cluster_ip, errs, anc)
    if svc_type == "ExternalName":
        notes.append(f"{source}: {label}: an ExternalName Service is a DNS alias; it has no "
                     "endpoints in the model")
    elif svc_type != "ClusterIP":
        notes.append(f"{source}: {label}: type {svc_type} is modelled as its ClusterIP "
                     "(node ports and load balancers are outside the lab)")
    return Service(meta.namespace, meta.name, selector, ports, cluster_ip, svc_type, source)


def _dns1035_label(value: str) -> list[str]:
    errs = V.dns1123_label(value)
    if not errs and not value[:1].isalpha():
        errs = ["a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character "
                "(e.g. 'my-name',  or 'abc-123', regex used for validation is "
                "'[a-z]([-a-z0-9]*[a-z0-9])?')"]
    return errs


def _ports(v: object, svc_type: str, cluster_ip: str, errs: D.Errs, anc: D.Anc) -> tuple[ServicePort, ...]:
    items = D._items(v, "spec.ports", errs)
    if not items and svc_type != "ExternalName" and cluster_ip != "None":
        errs.append(("spec.ports", V.required()))
    out = []
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(items):
        pp = f"spec.ports[{i}]"
        p = D._struct(item, pp, _PORT, errs, anc) or {}
        name = D._string(p.get("name"), f"{pp}.name", errs) or ""
        if not name and len(items) > 1:
            errs.append((f"{pp}.name", V.required()))
        elif name:
            errs.extend((f"{pp}.name", V.invalid(name, m)) for m in V.dns1123_label(name))
            if name in names:
                errs.append((f"{pp}.name", V.duplicate(name)))
            names.add(name)
        number = D._integer(p.get("port"), f"{pp}.port", errs)
        if number is None:
            if p.get("port") is None:
                errs.append((f"{pp}.port", V.required()))
            number = 0
        else:
            errs.extend((f"{pp}.port", V.invalid(number, m)) for m in V.port_number(number))
        proto = D._string(p.get("protocol"), f"{pp}.protocol", errs) or "TCP"
        errs.extend((f"{pp}.protocol", m) for m in V.protocol(proto))
        target = p.get("targetPort")
        if target is None or target == 0 or target == "":
            target = number  # the API server's default: the same as port
        elif target.__class__ is int:
            errs.extend((f"{pp}.targetPort", V.invalid(target, m)) for m in V.port_number(target))
        elif target.__class__ is str:
            errs.extend((f"{pp}.targetPort", V.invalid(target, m)) for m in V.port_name(target))
        else:
            D._type_error(errs, f"{pp}.targetPort", target, "an integer or a port name")
            target = number
        if (number, proto) in seen and number:
            errs.append((pp, V.duplicate(f"{number}/{proto}")))
        seen.add((number, proto))
        out.append(ServicePort(number, proto, target, name))
    return tuple(out)


def clashes(decoded) -> list:
    """Two Services of the input with one clusterIP (``Decoded`` objects of kind Service):
    the API server refuses the second one."""
    from enforcer.errors import Problem

    owner: dict[str, str] = {}
    out = []
    for d in decoded:
        if d.kind != "Service" or d.obj is None:
            continue
        ip = d.obj.cluster_ip
        if not ip or ip == "None":
            continue
        if ip in owner and owner[ip] != d.key:
            out.append(Problem(d.file, f"Service {d.key}", "spec.clusterIP",
                               V.invalid(ip, f"provided IP is already allocated (to Service {owner[ip]})")))
        owner.setdefault(ip, d.key)
    return out


# ==== the model ===============================================================================


@dataclass(frozen=True)
class Backend:
    pod: str  # ns/name
    ip: str
    port: int  # the targetPort resolved on this pod: what the policy sees


def assign_cluster_ips(services: Mapping[str, Service], cidr: str = SERVICE_CIDR) -> dict[str, Service]:
    """Every Service without a clusterIP gets one, at a place derived from its name."""
    net = ipaddress.ip_network(cidr)
    owner: dict[str, str] = {}
    for key in sorted(services):
        ip = services[key].cluster_ip
        if ip and ip != "None":
            if ip in owner:
                raise InputError(f"Service {key}: spec.clusterIP: Invalid value: \"{ip}\": "
                                 f"provided IP is already allocated (to Service {owner[ip]})")
            owner[ip] = key
    taken = set(owner)
    size = net.num_addresses - 3  # not the network address, not .1 (the API's own), not broadcast
    out = dict(services)
    for key in sorted(services):
        s = services[key]
        if s.cluster_ip or s.type == "ExternalName":
            continue
        n = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % size
        for step in range(size):
            ip = str(net.network_address + 2 + (n + step) % size)
            if ip not in taken:
                break
        else:
            raise InputError(f"service CIDR {cidr} has no free address left for Service {key}")
        taken.add(ip)
        out[key] = replace(s, cluster_ip=ip)
    return out


def selects(svc: Service, pod: Pod) -> bool:
    if svc.selector is None or pod.namespace != svc.namespace:
        return False
    return all(pod.labels.get(k) == v for k, v in svc.selector)


def target_on(pod: Pod, sp: ServicePort) -> int | None:
    """The number ``sp.target_port`` means on ``pod``, None if the pod has no such port name."""
    if isinstance(sp.target_port, int):
        return sp.target_port
    for cp in pod.ports:
        if cp.name == sp.target_port and cp.protocol == sp.protocol:
            return cp.port
    return None


def backends(cluster: Cluster, svc: Service, sp: ServicePort, family: int = 4) -> list[Backend]:
    """The pods a connection to ``svc``'s ``sp`` can land on, with the port each one gets."""
    out = []
    for key in sorted(cluster.pods):
        pod = cluster.pods[key]
        if pod.host_network or not selects(svc, pod):
            continue
        port = target_on(pod, sp)
        ip = next((a for a in pod.ips if ipaddress.ip_address(a).version == family), None)
        if port is not None and ip is not None:
            out.append(Backend(key, ip, port))
    return out


def lookup(cluster: Cluster, ident: str) -> Service | None:
    """``svc:NS/NAME`` (or ``svc/NS/NAME``) -> the Service; None when ``ident`` names no Service."""
    for prefix in (PREFIX, "svc/", "service/"):
        if ident.startswith(prefix):
            key = ident[len(prefix):]
            if "/" not in key:
                key = f"default/{key}"
            svc = cluster.services.get(key)
            if svc is None:
                raise InputError(f"{ident}: no such Service in the input")
            return svc
    return None


def port_of(svc: Service, port: int, protocol: str) -> ServicePort:
    for sp in svc.ports:
        if sp.port == port and sp.protocol == protocol:
            return sp
    offered = ", ".join(f"{sp.port}/{sp.protocol}" for sp in svc.ports) or "none"
    raise InputError(f"Service {svc.key} has no port {port}/{protocol} (it offers: {offered})")


def describe_target(sp: ServicePort) -> str:
    if isinstance(sp.target_port, str):
        return f"targetPort {sp.target_port} (a container port name, resolved on each backend)"
    return f"targetPort {sp.target_port}"


def trace(cluster: Cluster, firewalls: dict, src, ident: str, port: int, protocol: str,
          family: int = 4) -> tuple[list[str], dict, bool] | None:
    """``trace --to svc:NS/NAME``: the verdict for every backend, on the port the policy
    sees (the targetPort on that backend, after DNAT). None when ``ident`` is no Service.
    Allowed when every backend allows it (kube-proxy may pick any of them)."""
    from enforcer.views import explain, verdict

    svc = lookup(cluster, ident)
    if svc is None:
        return None
    sp = port_of(svc, port, protocol)
    bks = backends(cluster, svc, sp, family)
    where = "headless (no virtual address: clients connect to the pods)" if svc.cluster_ip == "None" \
        else f"ClusterIP {svc.cluster_ip}"
    head = (f"Service {svc.key} {port}/{protocol} is {where}; {describe_target(sp)}: "
            f"{len(bks)} backend{'s' if len(bks) != 1 else ''}.")
    lines = [head]
    doc: dict = {"service": svc.key, "cluster_ip": svc.cluster_ip, "port": port, "protocol": protocol,
                 "target_port": sp.target_port, "backends": []}
    if not bks:
        lines.append("  No pod backs it (no pod of the namespace matches its selector"
                     + (f" and declares the port {sp.target_port}" if isinstance(sp.target_port, str) else "")
                     + "): the connection is refused whatever the policies say.")
        doc["allowed"] = False
        return lines, doc, False
    lines.append("  NetworkPolicy never sees the Service: the address and port are rewritten (DNAT) "
                 "to a backend pod's, and policies see that pod and its port.")
    allowed = True
    for b in bks:
        dst = verdict.resolve(cluster, b.pod)
        v = verdict.verdict(firewalls, src, dst, b.port, protocol, family)
        allowed = allowed and v.allowed
        lines.append(f"  backend {b.pod} ({b.ip}:{b.port}):")
        lines.extend("    " + line for line in explain.trace_lines(cluster, v))
        doc["backends"].append(explain.trace_json(v))
    doc["allowed"] = allowed
    return lines, doc, allowed


# ==== matrix rows for Services (``--services``) ==============================================


@dataclass(frozen=True)
class Case:
    """Connections from ``src`` to a Service port: one per backend, to cover them all."""

    src: str
    svc: str  # "svc:NS/NAME"
    ip: str  # the clusterIP
    port: int
    protocol: str
    backends: tuple[Backend, ...]


def probe_cases(cluster: Cluster, ports: list[tuple[int, str]] | None = None, family: int = 4) -> list[Case]:
    """Every endpoint with an address of ``family`` to every port of every Service that has a
    virtual address of that family and at least one backend (IPv4 ClusterIPs only, as the
    lab's), but a Service's own backends."""
    from enforcer.views import verdict

    out = []
    eps = [e for e in verdict.endpoints(cluster) if e.ip(family)]
    for key in sorted(cluster.services):
        svc = cluster.services[key]
        ip = svc.cluster_ip
        if not ip or ip == "None" or ipaddress.ip_address(ip).version != family:
            continue
        for sp in svc.ports:
            if ports is not None and (sp.port, sp.protocol) not in ports:
                continue
            bks = tuple(backends(cluster, svc, sp, family))
            mine = {b.pod for b in bks}
            # A pod and a Service it backs are left out, as a pod and itself are: the
            # connection may land on the pod itself (always allowed, SEMANTICS 11).
            out.extend(Case(e.id, f"{PREFIX}{key}", ip, sp.port, sp.protocol, bks)
                       for e in eps if bks and e.id not in mine)
    return out


def matrix_rows(cluster: Cluster, firewalls: dict, ports: list[tuple[int, str]] | None = None,
                family: int = 4) -> list[dict]:
    """The model's verdict for connections to Services, in the matrix schema: ``to`` is
    ``svc:NS/NAME``, ``port`` the Service's port; allowed when every backend allows it (a
    connection may land on any), with ``backends`` and ``mixed`` (some allow, some not)."""
    from enforcer.views import verdict

    eps = {e.id: e for e in verdict.endpoints(cluster)}
    rows = []
    for c in probe_cases(cluster, ports, family):
        verdicts = [verdict.verdict(firewalls, eps[c.src], eps[b.pod], b.port, c.protocol, family).allowed
                    for b in c.backends]
        rows.append({"from": c.src, "to": c.svc, "port": c.port, "protocol": c.protocol,
                     "allowed": all(verdicts), "backends": len(verdicts),
                     "mixed": any(verdicts) and not all(verdicts)})
    return rows
