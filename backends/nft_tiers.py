"""nftables rendering of the ClusterNetworkPolicy tiers (ir.TierRule), for backends.nftables.

A pod whose direction has tier rules gets regular chains next to its hook chain::

    chain admin_input      one rule per tier rule and family/protocol, in evaluation order:
                           Accept -> accept, Deny -> drop (after a rate-limited
                           nflog rule, as the NetworkPolicy drop), Pass -> return
    chain baseline_input   the same for the Baseline tier
    chain input (hook)     ... node accept; jump admin_input; then, isolated: the
                           NetworkPolicy accepts, log, drop (Baseline is never consulted);
                           not isolated: jump baseline_input; accept

``accept`` and ``drop`` in a jumped-to chain are final verdicts for the packet; ``return``
(Pass) goes back to the hook chain, after the jump: the next tier. A pod without tier
rules renders exactly as before. The chains are declared before the hook chains: a jump
must name a chain that exists, and ``nft list`` prints chains in that order.
"""
from __future__ import annotations

from backends import base
from enforcer import ir
from enforcer.ir import ChainRule, DirectionPolicy, PodFirewall, TierRule

VERDICT = {ir.ACCEPT: "accept", ir.DROP: "drop", ir.PASS: "return"}  # a tier rule's, in pod mode


def chain_name(tier: str, hook_chain: str) -> str:
    return f"{tier.lower()}_{hook_chain}"


def has_tiers(pol: DirectionPolicy) -> bool:
    return bool(pol.admin or pol.baseline)


def tier_lines(fw: PodFirewall, direction: str, tier: str, verdicts: dict[str, str] = VERDICT) -> list[str]:
    """The rules of a tier's chain (ir.tier_chain), one per family and protocol group of
    each tier rule, ending in ``verdicts[its verdict]``; a Deny logs first, as the
    NetworkPolicy drop does (a rate-limited nflog rule with the same match, its prefix
    naming the tier rule: base.tier_nflog_prefix)."""
    from backends import nftables as N

    def log(r: ChainRule) -> list[str]:
        nflog = (f"limit rate {base.LOG_RATE_PER_SECOND}/second log prefix "
                 f"\"{base.tier_nflog_prefix(r.rule, fw.pod)}\" group {base.LOG_GROUP} {N._quote(r.comment)}")
        return [m + nflog for m in matches(fw, r.rule, direction)]  # type: ignore[arg-type]

    def rule(r: ChainRule) -> list[str]:
        tail = f"counter {verdicts[r.verdict]} {N._quote(r.comment)}"
        return [m + tail for m in matches(fw, r.rule, direction)]  # type: ignore[arg-type]

    return base.tier_chain_rules(fw, direction, tier, log, rule)


def matches(fw: PodFirewall, rule: TierRule, direction: str) -> list[str]:
    """The match part of each rule of a tier rule (ends in a space, or is empty)."""
    from backends import nftables as N
    addr = N.CHAINS[direction][1]
    if rule.addr_ports is not None:
        return [f"{ip} {addr} . meta l4proto . th dport @{N.set_name(rule.addr_ports, fam)} "
                for fam, ip in ((4, "ip"), (6, "ip6"))]
    ports = N.port_matches(rule.ports)  # a rule per port (range): no anonymous sets
    if rule.peers is None:
        return ports
    # An interval (networks) set is keyed like the NetworkPolicy ipBlock sets: by address
    # alone, or by address . protocol where backends.nftables concatenates (ANY_PROTO).
    concat = fw.set(rule.peers).interval and hasattr(N, "ANY_PROTO")
    key = f"{addr} . meta l4proto" if concat else addr
    return [f"{ip} {key} @{N.set_name(rule.peers, fam)} {p}"
            for fam, ip in ((4, "ip"), (6, "ip6")) for p in ports]


def chains(fw: PodFirewall) -> list[list[str]]:
    """The tier chains of both directions (none for a pod without tier rules)."""
    from backends import nftables as N
    return [[f"\tchain {chain_name(tier, N.CHAINS[direction][0])} {{"]
             + [f"\t\t{ln}" for ln in tier_lines(fw, direction, tier)] + ["\t}"]
             for direction in base.DIRECTIONS if has_tiers(fw.direction(direction)) for tier in ir.TIERS]


def jump(r: ChainRule, direction: str) -> str:
    """Pod mode's jump of ir.chain's "tier" rule ``r`` to its tier's chain."""
    from backends import nftables as N
    return f"counter jump {chain_name(r.tier, N.CHAINS[direction][0])} {N._quote(r.comment)}"  # type: ignore[arg-type]
