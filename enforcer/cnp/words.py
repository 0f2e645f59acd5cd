"""ClusterNetworkPolicy tiers in words and JSON, for ``trace`` (enforcer.views.explain)."""
from __future__ import annotations

from enforcer import ir


def rule_words(r: ir.TierRule) -> str:
    named = f" ({r.name!r})" if r.name else ""
    return f"{r.tier} ClusterNetworkPolicy {r.policy} (priority {r.priority}) {r.direction}[{r.rule_index}]{named}"


def tier_lines(side) -> tuple[list[str], bool]:
    """(lines, decided): what the tiers say about one side (an enforcer.views.verdict.Side);
    ``decided`` when an Admin or Baseline rule, not NetworkPolicy, made the decision."""
    d = side.decision
    if d is None:
        return [], False
    what = "source" if side.direction == "ingress" else "destination"
    lines = []
    for p in d.passed:
        nxt = "NetworkPolicy, then the Baseline tier" if p.tier == "Admin" else "the default (allow)"
        lines.append(f"{side.pod} {side.direction}: {rule_words(p)} matches and says Pass: "
                     f"the rest of the {p.tier} tier is skipped, {nxt} decides.")
    if d.tier in ("Admin", "Baseline"):
        verb = "allowed" if d.allowed else "denied"
        lines.append(f"{side.pod} {side.direction}: {verb} by {rule_words(d.rule)}: {d.rule.action}"  # type: ignore[arg-type]
                     f"{' (the first matching rule of its tier)' if d.tier == 'Admin' else ''}.")
        return lines, True
    if d.tier == "default" and not side.isolated:
        where = "no Admin rule decides" if not d.passed or d.passed[0].tier != "Admin" else "passed over by Admin"
        lines.append(f"{side.pod} {side.direction}: {where}, no NetworkPolicy isolates it and no Baseline "
                     f"rule decides: every {what} is allowed (the default).")
        return lines, True
    if d.tier == "NetworkPolicy" and not d.passed:
        lines.append(f"{side.pod} {side.direction}: no Admin rule matches; NetworkPolicy decides "
                     "(the Baseline tier is not consulted for an isolated pod).")
    return lines, False


def tier_json(side) -> dict | None:
    d = side.decision
    if d is None:
        return None

    def rule(r: ir.TierRule | None):
        if r is None:
            return None
        return {"tier": r.tier, "policy": r.policy, "priority": r.priority, "rule": r.rule_index,
                "name": r.name or None, "action": r.action}
    return {"decided_by": d.tier, "rule": rule(d.rule), "passed": [rule(p) for p in d.passed],
            "admin_match": rule(side.admin), "baseline_match": rule(side.baseline)}


def _rule_text(direction: str, index: int, rule) -> str:
    peers = " or ".join(str(p) for p in rule.peers)
    ports = ("every port" if not rule.protocols else "on " + ", ".join(str(p) for p in rule.protocols))
    named = f" {rule.name!r}" if rule.name else ""
    way = "from" if direction == "ingress" else "to"
    return f"{direction}[{index}]{named}: {rule.action} {way} {peers}, {ports}"


def explain_rows(cluster, tier: str) -> list[dict]:
    """``explain`` rows for the ClusterNetworkPolicies of one tier, in evaluation order."""
    from enforcer.cnp.tiers import selects
    rows = []
    for c in sorted((c for c in cluster.cnps.values() if c.tier == tier), key=lambda c: c.order()):
        targets = sorted(k for k, p in cluster.pods.items() if selects(c.subject, p, cluster.namespace(p.namespace)))
        rules = [{"direction": d, "rule": i, "text": _rule_text(d, i, r)}
                 for d in ir.DIRECTIONS for i, r in enumerate(c.ingress if d == "ingress" else c.egress)]
        rows.append({"policy": f"ClusterNetworkPolicy {c.name} ({c.tier} tier, priority {c.priority})",
                     "pod_selector": str(c.subject), "targets": targets,
                     "policy_types": [d.capitalize() for d in ir.DIRECTIONS
                                      if (c.ingress if d == "ingress" else c.egress)],
                     "rules": rules})
    return rows
