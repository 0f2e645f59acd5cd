"""Words for policies and verdicts: what ``explain`` and ``trace`` print.

Pure functions over the model and the verdicts of enforcer.views.verdict; nothing here decides
anything, it only says why the IR decided what it did.
"""
from __future__ import annotations

from enforcer.ir import DIRECTIONS
from enforcer.model import Cluster, NetworkPolicy, Peer, Rule
from enforcer.views.reasons import Check, PolicyReasons, RuleReasons, side_reasons
from enforcer.compiler.selectors import describe
from enforcer.cnp.words import explain_rows as cnp_rows
from enforcer.cnp.words import tier_json, tier_lines
from enforcer.views.verdict import Side, Verdict


def describe_peer(pol: NetworkPolicy, peer: Peer) -> str:
    if peer.ip_block is not None:
        text = f"addresses in {peer.ip_block.cidr}"
        if peer.ip_block.except_:
            text += f" except {', '.join(peer.ip_block.except_)}"
        return text
    pods = describe(peer.pod_selector, "pods") if peer.pod_selector is not None else "all pods"
    if peer.namespace_selector is None:
        return f"{pods} in namespace {pol.namespace}"
    if peer.namespace_selector.is_empty:
        return f"{pods} in every namespace"
    return f"{pods} in namespaces labelled {peer.namespace_selector}"


def describe_ports(rule: Rule) -> str:
    if not rule.ports:
        return "on every port"
    parts = []
    for p in rule.ports:
        if p.port is None:
            parts.append(f"every {p.protocol} port")
        elif p.end_port:
            parts.append(f"{p.port}-{p.end_port}/{p.protocol}")
        elif isinstance(p.port, str):
            parts.append(f"named port {p.port}/{p.protocol}")
        else:
            parts.append(f"{p.port}/{p.protocol}")
    return "on " + ", ".join(parts)


def describe_rule(pol: NetworkPolicy, direction: str, index: int) -> str:
    rule = (pol.ingress if direction == "ingress" else pol.egress)[index]
    who = "sources" if direction == "ingress" else "destinations"
    if not rule.peers:
        peers = f"all {who} (pods and outside addresses)"
    else:
        peers = " or ".join(describe_peer(pol, p) for p in rule.peers)
    return f"{pol.key} {direction}[{index}] admits {peers} {describe_ports(rule)}"


def describe_endpoint(cluster: Cluster, ident: str) -> str:
    pod = cluster.pods.get(ident)
    if pod is None:
        if ident in cluster.externals:
            return f"{ident} is outside the cluster ({', '.join(cluster.externals[ident].ips)})"
        return f"{ident} is an address outside the cluster"
    labels = ",".join(f"{k}={v}" for k, v in sorted(pod.labels.items())) or "no labels"
    ns_labels = ",".join(f"{k}={v}" for k, v in sorted(cluster.namespace(pod.namespace).labels.items()))
    return f"{ident} has {labels} (namespace {pod.namespace}: {ns_labels})"


def _rule_summary(r: RuleReasons, other: str, port: str) -> str:
    peer = ("every peer (no " + ("from" if r.direction == "ingress" else "to") + ")" if not r.peers
            else " and ".join(c.field for c in r.peers if c.matched) + " covers " + other if r.peer_ok
            else "no peer covers " + other)
    ports = ("every port (no ports)" if not r.ports
             else " and ".join(c.field for c in r.ports if c.matched) + " covers " + port if r.port_ok
             else "no ports entry covers " + port)
    if r.matched:
        return f"allows it: {peer}; {ports}"
    if r.peer_ok:
        return f"does not allow it: {peer}, but {ports}"
    if r.port_ok:
        return f"does not allow it: {peer} ({ports})"
    return f"does not allow it: {peer}, and {ports}"


def _reason_lines(s: Side, pols: list[PolicyReasons], other: str, port: str) -> list[str]:
    out = []
    allowed = {(p.policy, p.direction, p.rule_index) for p in s.allowed_by}
    for pr in pols:
        if pr.note:
            out.append(f"  {pr.policy}: {pr.note}.")
            continue
        if not pr.rules:
            out.append(f"  {pr.policy}: no {pr.direction} rules, so it allows no {pr.direction} traffic.")
        for r in pr.rules:
            line = f"  {r.policy} {r.field} {_rule_summary(r, other, port)}."
            if r.matched != ((r.policy, r.direction, r.index) in allowed):  # must never happen
                line += " (internal: the compiled rules disagree; please report this)"
            out.append(line)
            for c in r.peers + r.ports:
                out.append(f"    {c.field} {c.text}: {'yes' if c.matched else 'no'}, {c.reason}")
    return out


def _side_text(cluster: Cluster, v: Verdict, s: Side) -> list[str]:
    d = s.direction
    other = v.src.id if d == "ingress" else v.dst.id
    port = f"{v.port}/{v.protocol}"
    if s.always:
        return [f"{s.pod} {d}: allowed, {s.always}."]
    tiered, decided = tier_lines(s)  # ClusterNetworkPolicy tiers around NetworkPolicy
    if decided:
        return tiered
    if tiered:
        return tiered + _side_text_np(cluster, v, s)
    return _side_text_np(cluster, v, s)


def _side_text_np(cluster: Cluster, v: Verdict, s: Side) -> list[str]:
    d = s.direction
    other = v.src.id if d == "ingress" else v.dst.id
    port = f"{v.port}/{v.protocol}"
    if not s.isolated:
        return [f"{s.pod} is not isolated for {d}: every {'source' if d == 'ingress' else 'destination'} is allowed."]
    by = " and ".join(s.isolated_by)
    pols = side_reasons(cluster, s.isolated_by, d, v.src.id, v.src_ip, v.dst.id, v.dst_ip, v.port, v.protocol)
    if s.allowed_by:
        rules = " and ".join(p.comment() for p in s.allowed_by)
        head = f"{s.pod} is isolated for {d} by {by}; allowed by {rules}."
    else:
        head = (f"{s.pod} is isolated for {d} by {by}; no rule allows {other} on {port}. "
                f"{describe_endpoint(cluster, other)}.")
    return [head] + _reason_lines(s, pols, other, port)


def _rule_text(cluster: Cluster, policy: str, direction: str, index: int) -> str:
    pol = cluster.policies.get(policy)
    if pol is None:
        return f"{policy} {direction}[{index}]"
    return describe_rule(pol, direction, index)


def trace_lines(cluster: Cluster, v: Verdict) -> list[str]:
    head = (f"{v.src.id} -> {v.dst.id} {v.port}/{v.protocol} "
            f"({v.src_ip} -> {v.dst_ip}): {'allowed' if v.allowed else 'denied'}.")
    lines = [head]
    if v.always:
        lines.append(f"  {v.always}.")
        return lines
    if v.egress is None:
        where = "is a hostNetwork pod, i.e. the node" if v.src.kind == "node" else "is outside the cluster"
        lines.append(f"  {v.src.id} {where}: no egress policy applies to it.")
    else:
        lines += ["  " + ln for ln in _side_text(cluster, v, v.egress)]
    if v.ingress is None:
        where = "is a hostNetwork pod, i.e. the node" if v.dst.kind == "node" else "is outside the cluster"
        lines.append(f"  {v.dst.id} {where}: no ingress policy applies to it.")
    else:
        lines += ["  " + ln for ln in _side_text(cluster, v, v.ingress)]
    if v.allowed:
        lines.append("  Replies on this connection are allowed too (conntrack), whatever the policies say about the reverse direction.")
    return lines


def _check_json(c: Check) -> dict:
    out = {"field": c.field, "text": c.text, "matched": c.matched, "reason": c.reason}
    if c.resolved is not None:
        out["resolved_port"] = c.resolved
    return out


def trace_json(v: Verdict, cluster: Cluster | None = None) -> dict:
    """The verdict, and with ``cluster`` the reasons per policy, rule, peer and port."""
    def side(s: Side | None):
        if s is None:
            return None
        out = {"pod": s.pod, "direction": s.direction, "isolated": s.isolated,
               "isolated_by": list(s.isolated_by), "allowed": s.allowed, "always": s.always or None,
               "allowed_by": [{"policy": p.policy, "direction": p.direction, "rule": p.rule_index}
                              for p in s.allowed_by]}
        if cluster is not None and s.isolated and not s.always:
            pols = side_reasons(cluster, s.isolated_by, s.direction, v.src.id, v.src_ip,
                                v.dst.id, v.dst_ip, v.port, v.protocol)
            out["policies"] = [
                {"policy": pr.policy, "note": pr.note or None,
                 "rules": [{"rule": r.index, "field": r.field, "matched": r.matched,
                            "peers": [_check_json(c) for c in r.peers], "all_peers": not r.peers,
                            "peer_matched": r.peer_ok,
                            "ports": [_check_json(c) for c in r.ports], "all_ports": not r.ports,
                            "port_matched": r.port_ok}
                           for r in pr.rules]}
                for pr in pols]
        tiers = tier_json(s)
        if tiers is not None:
            out["tiers"] = tiers
        return out
    return {"from": v.src.id, "to": v.dst.id, "port": v.port, "protocol": v.protocol,
            "from_ip": v.src_ip, "to_ip": v.dst_ip, "allowed": v.allowed,
            "always": v.always or None, "egress": side(v.egress), "ingress": side(v.ingress)}


def explain_rows(cluster: Cluster, selected: dict[str, frozenset[str]],
                 legacy: bool = False) -> list[dict]:
    """One row per policy: target pods, directions, and each rule in words. With
    ``legacy``, one more row per namespace whose pre-v1 annotation isolates its pods."""
    rows = []
    for name, ns in sorted(cluster.namespaces.items()):
        if legacy and ns.legacy_default_deny:
            rows.append({"policy": f"{name}/[legacy DefaultDeny annotation]", "pod_selector": "<all>",
                         "targets": sorted(k for k, p in cluster.pods.items() if p.namespace == name),
                         "policy_types": ["Ingress"],
                         "rules": [{"direction": "ingress", "rule": None,
                                    "text": "ingress: deny all (namespace annotation net.beta.kubernetes.io/network-policy)"}]})
    for key, pol in sorted(cluster.policies.items()):
        rules = []
        for direction in DIRECTIONS:
            if direction.capitalize() not in pol.policy_types:
                continue
            rs = pol.ingress if direction == "ingress" else pol.egress
            if not rs:
                rules.append({"direction": direction, "rule": None, "text": f"{direction}: deny all (no rules)"})
            for i in range(len(rs)):
                rules.append({"direction": direction, "rule": i, "text": describe_rule(pol, direction, i)})
        rows.append({"policy": key, "pod_selector": str(pol.pod_selector),
                     "targets": sorted(selected.get(key, ())),
                     "policy_types": sorted(pol.policy_types), "rules": rules})
    if cluster.cnps:  # the tiers in evaluation order: Admin, NetworkPolicy, Baseline
        rows = cnp_rows(cluster, "Admin") + rows + cnp_rows(cluster, "Baseline")
    return rows
