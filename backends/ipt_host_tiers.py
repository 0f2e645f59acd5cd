"""ClusterNetworkPolicy tiers in iptables host mode (for backends/ipt_host.py).

In pod mode (backends/ipt_tiers.py) a tier's Accept is ``ACCEPT``: final, and right, as
the pod's chain is the only one the packet meets there. On the node a packet between two
pods meets the sender's egress chain *and* the receiver's ingress chain, so "this
direction allows" must hand the packet back to NETPOL-HOST (``RETURN``) from however deep
it is, while Pass must go on to the NetworkPolicy rules of the same chain. iptables'
``RETURN`` leaves one chain only; ``-g`` (goto) makes the called chain return straight to
the caller's caller. So a tiered direction of a pod is four chains::

    NPH-IN-<id>    fixed rules (replies, invalid, node), then  -g NPH-INA-<id>
    NPH-INA-<id>   Admin rules: Accept -> RETURN (to NETPOL-HOST: allowed), Deny -> DROP,
                   Pass -> -g NPH-INN-<id>; no match: -g NPH-INN-<id>
    NPH-INN-<id>   the NetworkPolicy part as untiered (allows RETURN, NFLOG, DROP); not
                   isolated: -j NPH-INB-<id>, then RETURN
    NPH-INB-<id>   Baseline rules: Accept and Pass -> RETURN, Deny -> DROP

(egress: NPH-EG-, -EGA-, -EGN-, -EGB-). Every outcome is RETURN to NETPOL-HOST (this
direction allows) or a drop, as for an untiered pod.
"""
from __future__ import annotations

from backends import base, ipt_tiers
from backends.ipt_render import _comment
from enforcer.ir import PodFirewall

PARTS = ("A", "N", "B")  # Admin, NetworkPolicy, Baseline


def part_names(chain: str) -> dict[str, str]:
    """``NPH-IN-<id>`` -> its Admin, NetworkPolicy and Baseline chains."""
    head, _, ident = chain.rpartition("-")
    return {p: f"{head}{p}-{ident}" for p in PARTS}


def _retarget(args: tuple[str, ...], targets: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return args[:-2] + targets[args[-1]] if args[-2] == "-j" and args[-1] in targets else args


def split(fw: PodFirewall, direction: str, family: int, chain: str,
          rules: tuple[tuple[str, ...], ...], names: dict[str, str]) -> dict[str, tuple[tuple[str, ...], ...]]:
    """The four chains of a tiered direction, from ``rules`` (the untiered host rendering of
    it: pod mode's chain with the Admin and Baseline jumps, allows turned into RETURN)."""
    parts = part_names(chain)
    admin, baseline = ipt_tiers.CHAINS["Admin", direction], ipt_tiers.CHAINS["Baseline", direction]
    i = next(k for k, r in enumerate(rules) if r[-2:] == ("-j", admin))
    head = rules[:i] + (rules[i][:-2] + ("-g", parts["A"]),)
    np_part = tuple(_retarget(r, {baseline: ("-j", parts["B"])}) for r in rules[i + 1:])
    pol = fw.direction(direction)

    def tier(tier_rules, targets) -> tuple[tuple[str, ...], ...]:
        out = (a for r in tier_rules for a in ipt_tiers.rule_args(fw, r, direction, family))
        return tuple(_retarget(tuple(names.get(t, t) for t in a), targets) for a in out)

    a = tier(pol.admin, {"ACCEPT": ("-j", "RETURN"), "RETURN": ("-g", parts["N"])})
    a += (_comment(base.fixed_comment(direction, "NetworkPolicy tier")) + ("-g", parts["N"]),)
    b = tier(pol.baseline, {"ACCEPT": ("-j", "RETURN")})
    return {chain: head, parts["A"]: a, parts["N"]: np_part, parts["B"]: b}

