"""The model's verdict for a flow, with its reasons. ``matrix``, ``trace`` and the lab's
``--expect model`` all read this, and this reads only the IR the backends render: what we
say is what the kernel does.

A connection from S to D on port/protocol is allowed iff S's egress side allows it and D's
ingress side allows it (SEMANTICS 4); an endpoint outside the cluster has no side. A side
with ClusterNetworkPolicy tiers is judged in the tiers' order (enforcer.cnp.tiers.decide). A pod
talking to itself, and any traffic with the pod's node, is always allowed (11, 12).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from enforcer import ir
from enforcer.cnp import tiers
from enforcer.errors import InputError
from enforcer.model import PROTOCOLS, Cluster, ContainerPort


@dataclass(frozen=True)
class Endpoint:
    id: str  # "ns/pod", an ExternalHost name, or a bare IP
    kind: str  # "pod" | "external" | "ip"
    ips: tuple[str, ...]
    ports: tuple[ContainerPort, ...] = ()

    def ip(self, family: int) -> str | None:
        for a in self.ips:
            if ipaddress.ip_address(a).version == family:
                return a
        return None


@dataclass(frozen=True)
class Case:
    """One probe: from ``src`` to ``dst`` at ``dst_ip`` on ``port``/``protocol``."""

    src: str
    dst: str
    dst_ip: str
    port: int
    protocol: str


@dataclass
class Side:
    """One side's view of a flow: the source's egress or the destination's ingress."""

    pod: str
    direction: str  # "egress" | "ingress"
    peer_ip: str
    isolated: bool
    isolated_by: tuple[str, ...]
    allowed_by: list[ir.Provenance] = field(default_factory=list)
    always: str = ""  # why it is allowed whatever the policies say
    # ClusterNetworkPolicy tiers (enforcer.cnp.tiers): the first matching rule of each, and
    # whether the pod has any tier rule for this direction at all.
    tiered: bool = False
    admin: ir.TierRule | None = None
    baseline: ir.TierRule | None = None

    @property
    def decision(self) -> tiers.Decision | None:
        """Which tier decided and how; None when no ClusterNetworkPolicy selects the pod."""
        if not self.tiered or self.always:
            return None
        return tiers.decide(self.admin, self.isolated, bool(self.allowed_by), self.baseline)

    @property
    def allowed(self) -> bool:
        if self.always:
            return True
        decision = self.decision
        if decision is not None:
            return decision.allowed
        return not self.isolated or bool(self.allowed_by)


@dataclass
class Verdict:
    src: Endpoint
    dst: Endpoint
    port: int
    protocol: str
    src_ip: str
    dst_ip: str
    egress: Side | None
    ingress: Side | None
    always: str = ""

    @property
    def allowed(self) -> bool:
        if self.always:
            return True
        return all(s.allowed for s in (self.egress, self.ingress) if s is not None)


def endpoints(cluster: Cluster) -> list[Endpoint]:
    """Every pod (sorted by ns/name), then every ExternalHost (sorted by name)."""
    out = [Endpoint(k, "pod", p.ips, p.ports) for k, p in sorted(cluster.pods.items())]
    out += [Endpoint(k, "external", e.ips, e.ports) for k, e in sorted(cluster.externals.items())]
    return out


def resolve(cluster: Cluster, ident: str) -> Endpoint:
    if ident in cluster.pods:
        p = cluster.pods[ident]
        return Endpoint(ident, "pod", p.ips, p.ports)
    if ident in cluster.externals:
        e = cluster.externals[ident]
        return Endpoint(ident, "external", e.ips, e.ports)
    try:
        ip = str(ipaddress.ip_address(ident))
    except ValueError:
        raise InputError(f"{ident}: no such pod (namespace/name), external host or IP address") from None
    for k, p in cluster.pods.items():
        if ip in p.ips:
            return Endpoint(k, "pod", p.ips, p.ports)
    for k, e in cluster.externals.items():
        if ip in e.ips:
            return Endpoint(k, "external", e.ips, e.ports)
    return Endpoint(ip, "ip", (ip,))


def parse_ports(text: str | None) -> list[tuple[int, str]] | None:
    """'80/TCP,81/udp' -> [(80, 'TCP'), (81, 'UDP')]; a bare number means TCP."""
    if not text:
        return None
    out = []
    for item in text.split(","):
        item = item.strip()
        num, _, proto = item.partition("/")
        proto = (proto or "TCP").upper()
        if not num.isdigit() or not 1 <= int(num) <= 65535 or proto not in PROTOCOLS:
            raise InputError(f"--ports: {item!r}: expected PORT/PROTOCOL with PORT in 1..65535 and PROTOCOL TCP, UDP or SCTP")
        out.append((int(num), proto))
    return out


def _rule_matches(fw: ir.PodFirewall, rule: ir.AllowRule, peer_ip: str, protocol: str, port: int) -> bool:
    if rule.addr_ports is not None:
        return fw.set(rule.addr_ports).contains(peer_ip, protocol, port)  # type: ignore[call-arg]
    if rule.peers is not None and not fw.set(rule.peers).contains(peer_ip):  # type: ignore[call-arg]
        return False
    return not rule.ports or any(pm.matches(protocol, port) for pm in rule.ports)


def side(fw: ir.PodFirewall, direction: str, peer_ip: str, protocol: str, port: int) -> Side:
    d = fw.direction(direction)
    s = Side(fw.pod, direction, peer_ip, d.isolated, d.isolated_by)
    if peer_ip in fw.node_ips:
        s.always = "traffic with the pod's own node is always allowed"
        return s
    if d.isolated:
        s.allowed_by = [r.provenance for r in d.rules if _rule_matches(fw, r, peer_ip, protocol, port)]
    if d.admin or d.baseline:
        s.tiered = True
        s.admin = tiers.first_match(fw, d.admin, peer_ip, protocol, port)
        s.baseline = tiers.first_match(fw, d.baseline, peer_ip, protocol, port)
    return s


def verdict(firewalls: dict[str, ir.PodFirewall], src: Endpoint, dst: Endpoint, port: int,
            protocol: str, family: int = 4) -> Verdict:
    src_ip, dst_ip = src.ip(family), dst.ip(family)
    if src_ip is None or dst_ip is None:
        missing = src if src_ip is None else dst
        raise InputError(f"{missing.id} has no IPv{family} address")
    v = Verdict(src, dst, port, protocol, src_ip, dst_ip, None, None)
    if src.kind == "pod" and src.id == dst.id:
        v.always = "a pod can always reach itself"
        return v
    if src.kind == "pod" and src.id in firewalls:
        v.egress = side(firewalls[src.id], "egress", dst_ip, protocol, port)
    if dst.kind == "pod" and dst.id in firewalls:
        v.ingress = side(firewalls[dst.id], "ingress", src_ip, protocol, port)
    return v


def probe_cases(cluster: Cluster, ports: list[tuple[int, str]] | None = None,
                family: int = 4) -> list[Case]:
    """Every ordered pair of distinct endpoints that both have an address of ``family``,
    on ``ports`` or else on every port the destination declares."""
    eps = [e for e in endpoints(cluster) if e.ip(family)]
    out = []
    for dst in eps:
        dports = ports if ports is not None else sorted({(p.port, p.protocol) for p in dst.ports})
        for src in eps:
            if src.id == dst.id:
                continue
            for port, proto in dports:
                out.append(Case(src.id, dst.id, dst.ip(family), port, proto))  # type: ignore[arg-type]
    out.sort(key=lambda c: (c.port, c.protocol, c.src, c.dst))
    return out


def matrix(cluster: Cluster, firewalls: dict[str, ir.PodFirewall],
           ports: list[tuple[int, str]] | None = None, family: int = 4) -> list[dict]:
    """Rows of the ACCEPTANCE.md JSON: the model's verdict for every probe case."""
    eps = {e.id: e for e in endpoints(cluster)}
    rows = []
    for c in probe_cases(cluster, ports, family):
        v = verdict(firewalls, eps[c.src], eps[c.dst], c.port, c.protocol, family)
        rows.append({"from": c.src, "to": c.dst, "port": c.port, "protocol": c.protocol,
                     "allowed": v.allowed})
    return rows
