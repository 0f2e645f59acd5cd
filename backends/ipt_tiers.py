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
from enforcer import ir
from enforcer.ir import PodFirewall

CHAINS = {("Admin", "ingress"): "NETPOL-ADMIN-IN", ("Admin", "egress"): "NETPOL-ADMIN-OUT",
          ("Baseline", "ingress"): "NETPOL-BASE-IN", ("Baseline", "egress"): "NETPOL-BASE-OUT"}
ALL = tuple(CHAINS.values())
# A tier rule's abstract verdict (ir.TIER_VERDICT) -> its target in pod mode's tier chains.
TARGET = {ir.ACCEPT: ("-j", "ACCEPT"), ir.DROP: ("-j", "DROP"), ir.PASS: ("-j", "RETURN")}


def has_tiers(fw: PodFirewall, direction: str) -> bool:
    pol = fw.direction(direction)
    return bool(pol.admin or pol.baseline)


def jump(r: ir.ChainRule, direction: str) -> tuple[str, ...]:
    """Pod mode's jump of ir.chain's "tier" rule ``r`` to its tier's chain."""
    from backends import ipt_render as I
    return I._comment(r.comment) + ("-j", CHAINS[r.tier, direction])  # type: ignore[index]


def tier_args(fw: PodFirewall, direction: str, tier: str, family: int,
              targets: dict[str, tuple[str, ...]] = TARGET) -> tuple[tuple[str, ...], ...]:
    """The argument lists of a tier's chain (ir.tier_chain): each tier rule's matches
    (one per protocol and multiport slice) ending in ``targets[verdict]``, a Deny's log
    rule first (rate-limited NFLOG, its prefix naming the tier rule: base.tier_nflog_prefix)."""
    from backends import ipt_render as I

    def log_args(r: ir.ChainRule) -> list[tuple[str, ...]]:
        nflog = ("-j", "NFLOG", "--nflog-prefix", base.tier_nflog_prefix(r.rule, fw.pod),
                 "--nflog-group", str(base.LOG_GROUP))
        limit = ("-m", "limit", "--limit", f"{base.LOG_RATE_PER_SECOND}/sec")
        return I.match_args(fw, r.rule, direction, family, limit + I._comment(r.comment) + nflog)

    def rule_args(r: ir.ChainRule) -> list[tuple[str, ...]]:
        return I.match_args(fw, r.rule, direction, family, I._comment(r.comment) + targets[r.verdict])

    return tuple(base.tier_chain_rules(fw, direction, tier, log_args, rule_args))


def chains(fw: PodFirewall, family: int) -> dict[str, tuple[tuple[str, ...], ...]]:
    """The tier chains of one family (empty for a pod without tier rules)."""
    return {CHAINS[tier, d]: tier_args(fw, d, tier, family)
            for d in base.DIRECTIONS if has_tiers(fw, d) for tier in ir.TIERS}
