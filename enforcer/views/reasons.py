"""Why each rule, peer and port of a policy did or did not match one connection.

``trace`` tells a learner the verdict (read from the IR, in enforcer.views.verdict) and, below
it, the reasons: for every policy that isolates either side, every rule, every peer and
every port entry, with the label, namespace, ``except`` range, protocol or named port that
decided it. The reasons are computed here from the policy as written (the model), so they
can name the field a user would edit; tests/unit/test_trace_reasons.py checks on every
bundled example that a rule matches here exactly when the IR says it allows the flow.

Pure functions, no words about verdicts beyond one reason per check.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping

from enforcer.model import Cluster, LabelSelector, NetworkPolicy, Peer, PortSpec, Requirement, Rule
from enforcer.compiler.selectors import requirement_matches


@dataclass(frozen=True)
class Check:
    """One entry (peer or port) of a rule and whether it matched, with the reason."""

    field: str  # "from[1]", "ports[0]"
    text: str  # what the entry says, in words
    matched: bool
    reason: str
    resolved: int | None = None  # a named port's number on the destination


@dataclass(frozen=True)
class RuleReasons:
    policy: str
    direction: str
    index: int
    peers: tuple[Check, ...]  # empty: the rule has no from/to (every peer)
    ports: tuple[Check, ...]  # empty: the rule has no ports (every port)

    @property
    def peer_ok(self) -> bool:
        return not self.peers or any(c.matched for c in self.peers)

    @property
    def port_ok(self) -> bool:
        return not self.ports or any(c.matched for c in self.ports)

    @property
    def matched(self) -> bool:
        return self.peer_ok and self.port_ok

    @property
    def field(self) -> str:
        return f"{self.direction}[{self.index}]"


# --------------------------------------------------------------------------- selectors

def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def selector_misses(sel: LabelSelector, labels: Mapping[str, str]) -> list[str]:
    """Each term of ``sel`` that ``labels`` fail, as 'env=dev, wanted env=prod'."""
    out = []
    for key, want in sel.match_labels:
        have = labels.get(key)
        if have is None:
            out.append(f"no label {key}, wanted {key}={want}")
        elif have != want:
            out.append(f"{key}={have}, wanted {key}={want}")
    for req in sel.match_expressions:
        if not requirement_matches(req, labels):
            out.append(_requirement_miss(req, labels))
    return out


def _requirement_miss(req: Requirement, labels: Mapping[str, str]) -> str:
    have = f"{req.key}={labels[req.key]}" if req.key in labels else f"no label {req.key}"
    values = ",".join(req.values)
    wanted = {"In": f"{req.key} in ({values})", "NotIn": f"{req.key} not in ({values})",
              "Exists": f"a label {req.key}", "DoesNotExist": f"no label {req.key}"}[req.operator]
    return f"{have}, wanted {wanted}"


def _selector_hits(sel: LabelSelector, labels: Mapping[str, str]) -> str:
    """The labels that satisfied ``sel``, for a 'yes' reason."""
    if sel.is_empty:
        return "{} selects every one"
    keys = sel.keys()
    hit = {k: v for k, v in labels.items() if k in keys}
    return f"has {_labels(hit)}" if hit else f"has none of {', '.join(sorted(keys))}"


# --------------------------------------------------------------------------- peers

def _peer_text(pol: NetworkPolicy, peer: Peer) -> str:
    # Imported here: explain imports this module for its trace words.
    from enforcer.views.explain import describe_peer

    return describe_peer(pol, peer)


def peer_check(cluster: Cluster, pol: NetworkPolicy, peer: Peer, fld: str,
               other: str, other_ip: str) -> Check:
    """Does ``peer`` of ``pol`` cover the endpoint ``other`` (at ``other_ip``)?"""
    text = _peer_text(pol, peer)
    if peer.ip_block is not None:
        ok, why = _block_check(peer.ip_block.cidr, peer.ip_block.except_, other_ip)
        return Check(fld, text, ok, why)
    pod = cluster.pods.get(other)
    if pod is None:
        return Check(fld, text, False, f"{other} is not a pod: pod and namespace selectors match pods only")
    reasons_ok, reasons_no = [], []
    scope_ok = ""  # said only when it is the whole reason (not as a 'though')
    if peer.namespace_selector is None:
        if pod.namespace != pol.namespace:
            reasons_no.append(f"{other} is in namespace {pod.namespace}; a podSelector alone "
                              f"selects pods of the policy's namespace {pol.namespace} only")
        else:
            scope_ok = f"{other} is in namespace {pol.namespace}"
    else:
        ns_labels = cluster.namespace(pod.namespace).labels
        miss = selector_misses(peer.namespace_selector, ns_labels)
        if miss:
            reasons_no.append(f"namespace {pod.namespace} has {'; '.join(miss)}")
        else:
            reasons_ok.append(f"namespace {pod.namespace} {_selector_hits(peer.namespace_selector, ns_labels)}")
    if peer.pod_selector is not None:
        miss = selector_misses(peer.pod_selector, pod.labels)
        if miss:
            reasons_no.append(f"pod {other} has {'; '.join(miss)}")
        else:
            reasons_ok.append(f"pod {other} {_selector_hits(peer.pod_selector, pod.labels)}")
    if reasons_no:
        why = "; ".join(reasons_no)
        if reasons_ok:  # an AND peer: say which half held, so the fix is clear
            why += f" (though {'; '.join(reasons_ok)})"
        return Check(fld, text, False, why)
    return Check(fld, text, True, "; ".join([scope_ok] * bool(scope_ok) + reasons_ok))


def _block_check(cidr: str, excepts: tuple[str, ...], addr: str) -> tuple[bool, str]:
    ip = ipaddress.ip_address(addr)
    net = ipaddress.ip_network(cidr, strict=False)
    if ip.version != net.version or ip not in net:
        return False, f"{addr} is not in {cidr}"
    for e in excepts:
        en = ipaddress.ip_network(e, strict=False)
        if en.version == ip.version and ip in en:
            return False, f"{addr} is in {cidr} but also in except {e}"
    return True, f"{addr} is in {cidr}" + (f" and in no except ({', '.join(excepts)})" if excepts else "")


# --------------------------------------------------------------------------- ports

def port_text(p: PortSpec) -> str:
    if p.port is None:
        return f"every {p.protocol} port"
    if p.end_port:
        return f"{p.port}-{p.end_port}/{p.protocol}"
    if isinstance(p.port, str):
        return f"named port {p.port}/{p.protocol}"
    return f"{p.port}/{p.protocol}"


def port_check(cluster: Cluster, p: PortSpec, fld: str, dst: str, port: int, protocol: str) -> Check:
    """Does the ports entry ``p`` cover ``port``/``protocol`` on the destination ``dst``?"""
    text = port_text(p)
    if p.protocol != protocol:
        return Check(fld, text, False, f"the connection is {protocol}, this entry is {p.protocol}")
    if p.port is None:
        return Check(fld, text, True, f"every {protocol} port")
    if isinstance(p.port, str):
        # SEMANTICS 9: a name is resolved on the destination pod, with the same protocol.
        pod = cluster.pods.get(dst)
        if pod is None:
            return Check(fld, text, False, f"{dst} is not a pod: a named port resolves on pods only")
        numbers = [cp.port for cp in pod.ports if cp.name == p.port and cp.protocol == p.protocol]
        if not numbers:
            return Check(fld, text, False, f"{dst} declares no container port named {p.port} ({p.protocol})")
        number = numbers[0]
        if number == port:
            return Check(fld, text, True, f"{p.port} on {dst} is {number}/{p.protocol}", number)
        return Check(fld, text, False, f"{p.port} on {dst} is {number}/{p.protocol}, the connection is to {port}",
                     number)
    last = p.end_port or p.port
    if p.port <= port <= last:
        return Check(fld, text, True, f"{port} is in {text}" if p.end_port else f"the connection is to {port}/{protocol}")
    return Check(fld, text, False, f"the connection is to {port}/{protocol}")


# --------------------------------------------------------------------------- rules

def rule_reasons(cluster: Cluster, pol: NetworkPolicy, direction: str, index: int,
                 src: str, src_ip: str, dst: str, dst_ip: str, port: int, protocol: str) -> RuleReasons:
    """Every peer and port of ``pol``'s rule ``direction[index]`` against the flow src -> dst.
    The peer is the source for ingress, the destination for egress; named ports always
    resolve on the destination."""
    rule: Rule = (pol.ingress if direction == "ingress" else pol.egress)[index]
    key = "from" if direction == "ingress" else "to"
    other, other_ip = (src, src_ip) if direction == "ingress" else (dst, dst_ip)
    peers = tuple(peer_check(cluster, pol, peer, f"{key}[{i}]", other, other_ip)
                  for i, peer in enumerate(rule.peers))
    ports = tuple(port_check(cluster, p, f"ports[{i}]", dst, port, protocol)
                  for i, p in enumerate(rule.ports))
    return RuleReasons(pol.key, direction, index, peers, ports)


@dataclass
class PolicyReasons:
    policy: str
    direction: str
    rules: list[RuleReasons] = field(default_factory=list)
    note: str = ""  # for isolation that is not a NetworkPolicy (the legacy annotation)


def side_reasons(cluster: Cluster, isolated_by: tuple[str, ...], direction: str,
                 src: str, src_ip: str, dst: str, dst_ip: str, port: int, protocol: str) -> list[PolicyReasons]:
    out = []
    for key in isolated_by:
        pol = cluster.policies.get(key)
        if pol is None:
            note = ("the namespace's pre-v1 DefaultDeny annotation isolates the pod and allows nothing itself"
                    if key.endswith("/[legacy DefaultDeny annotation]") else "not a NetworkPolicy of the input")
            out.append(PolicyReasons(key, direction, note=note))
            continue
        rules = pol.ingress if direction == "ingress" else pol.egress
        out.append(PolicyReasons(key, direction, [
            rule_reasons(cluster, pol, direction, i, src, src_ip, dst, dst_ip, port, protocol)
            for i in range(len(rules))]))
    return out
