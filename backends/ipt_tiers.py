"""iptables rendering of the ClusterNetworkPolicy tiers (ir.TierRule), for backends.iptables.

The same order as nftables (backends/nft_tiers.py), with chains of our own next to
NETPOL-INGRESS / NETPOL-EGRESS, present only while the pod has tier rules::

    NETPOL-ADMIN-IN / -OUT   one rule per tier rule (and protocol, and multiport slice):
    NETPOL-BASE-IN  / -OUT   Accept -> ACCEPT, Deny -> NFLOG (rate-limited) + DROP,
                             Pass -> RETURN
    NETPOL-INGRESS           ... node accept; -j NETPOL-ADMIN-IN; isolated: the
                             NetworkPolicy accepts, NFLOG, DROP; not isolated:
                             -j NETPOL-BASE-IN; ACCEPT

ACCEPT and DROP in a called chain end the packet's traversal; RETURN (Pass) continues in
NETPOL-INGRESS after the jump: the next tier. A tier chain that is no longer wanted is
flushed and deleted after the chain that jumped to it was rewritten.
"""
from __future__ import annotations

from backends import base
from enforcer.ir import PodFirewall, TierRule

CHAINS = {("Admin", "ingress"): "NETPOL-ADMIN-IN", ("Admin", "egress"): "NETPOL-ADMIN-OUT",
          ("Baseline", "ingress"): "NETPOL-BASE-IN", ("Baseline", "egress"): "NETPOL-BASE-OUT"}
ALL = tuple(CHAINS.values())
TARGET = {"Accept": "ACCEPT", "Deny": "DROP", "Pass": "RETURN"}


def has_tiers(fw: PodFirewall, direction: str) -> bool:
    pol = fw.direction(direction)
    return bool(pol.admin or pol.baseline)


def jump(tier: str, direction: str) -> tuple[str, ...]:
    from backends import ipt_render as I
    return I._comment(base.fixed_comment(direction, tier + " tier")) + ("-j", CHAINS[tier, direction])


def rule_args(fw: PodFirewall, rule: TierRule, direction: str, family: int,
              log: bool = False) -> list[tuple[str, ...]]:
    """One tier rule's argument lists. With ``log`` (pod mode's chains), a Deny logs first,
    as the NetworkPolicy drop does (rate-limited NFLOG, its prefix naming the tier rule:
    base.tier_nflog_prefix)."""
    from backends import ipt_render as I
    out = I.match_args(fw, rule, direction, family, I._comment(rule.comment()) + ("-j", TARGET[rule.action]))
    if rule.action != "Deny" or not log:
        return out
    nflog = (("-m", "limit", "--limit", f"{base.LOG_RATE_PER_SECOND}/sec") + I._comment(base.tier_log_comment(rule))
             + ("-j", "NFLOG", "--nflog-prefix", base.tier_nflog_prefix(rule, fw.pod),
                "--nflog-group", str(base.LOG_GROUP)))
    logs = I.match_args(fw, rule, direction, family, nflog)
    return [a for pair in zip(logs, out) for a in pair]


def chains(fw: PodFirewall, family: int) -> dict[str, tuple[tuple[str, ...], ...]]:
    """The tier chains of one family (empty for a pod without tier rules)."""
    out = {}
    for direction in base.DIRECTIONS:
        if not has_tiers(fw, direction):
            continue
        pol = fw.direction(direction)
        for tier, rules in (("Admin", pol.admin), ("Baseline", pol.baseline)):
            out[CHAINS[tier, direction]] = tuple(a for r in rules for a in rule_args(fw, r, direction, family, log=True))
    return out
