"""ClusterNetworkPolicy tiers in iptables host mode (for backends/ipt_host.py).

In pod mode (backends/ipt_tiers.py) a tier's Accept is ``ACCEPT``: final, and right, as
the pod's chain is the only one the packet meets there. On the node a packet between two
pods meets the sender's egress chain *and* the receiver's ingress chain, so "this
direction allows" must hand the packet back to NETPOL-HOST (``RETURN``) from however deep
it is, while Pass must go on to the NetworkPolicy rules of the same chain. iptables'
``RETURN`` leaves one chain only; ``-g`` (goto) makes the called chain return straight to
the caller's caller. So a tiered direction of a pod is four chains::

    NPH-IN-<id>    fixed rules (replies, invalid, node), then  -g NPH-INA-<id>
    NPH-INA-<id>   Admin rules: Accept -> RETURN (to NETPOL-HOST: allowed), Deny -> NFLOG
                   + DROP, Pass -> -g NPH-INN-<id>; no match: -g NPH-INN-<id>
    NPH-INN-<id>   the NetworkPolicy part as untiered (allows RETURN, NFLOG, DROP); not
                   isolated: -j NPH-INB-<id>, then RETURN
    NPH-INB-<id>   Baseline rules: Accept and Pass -> RETURN, Deny -> NFLOG + DROP

(egress: NPH-EG-, -EGA-, -EGN-, -EGB-). Every outcome is RETURN to NETPOL-HOST (this
direction allows) or a drop, as for an untiered pod. A Deny is logged first, as in pod
mode and in nftables host mode, so ``lab drops`` names the tier rule (the nflog prefix
names the pod: the node's one log socket tells pods apart by it).
"""
from __future__ import annotations

from backends import ipt_tiers
from backends.ipt_render import _comment
from enforcer import ir
from enforcer.ir import PodFirewall

PARTS = ("A", "N", "B")  # Admin, NetworkPolicy, Baseline
Args = tuple[tuple[str, ...], ...]


def part_names(chain: str) -> dict[str, str]:
    """``NPH-IN-<id>`` -> its Admin, NetworkPolicy and Baseline chains."""
    head, _, ident = chain.rpartition("-")
    return {p: f"{head}{p}-{ident}" for p in PARTS}


def jumps(chain: str) -> dict[str, tuple[str, ...]]:
    """How the main chain reaches its tier parts: ``-g`` into Admin (so that a RETURN
    there goes straight back to NETPOL-HOST), ``-j`` into Baseline from the
    NetworkPolicy part (whose RETURN after it is the direction's "not isolated")."""
    parts = part_names(chain)
    return {"Admin": ("-g", parts["A"]), "Baseline": ("-j", parts["B"])}


def flat(rules: list[tuple[ir.ChainRule, list[tuple[str, ...]]]]) -> Args:
    """Rules with their arguments (ipt_host_render.chain_rules) -> the chain's argument lists."""
    return tuple(a for _, args in rules for a in args)


def split(fw: PodFirewall, direction: str, family: int, chain: str,
          rules: list[tuple[ir.ChainRule, list[tuple[str, ...]]]], names: dict[str, str]) -> dict[str, Args]:
    """The four chains of a tiered direction, from ``rules`` (each rule of ir.chain with
    its host arguments: allows RETURN, tier jumps to this pod's parts, as ``jumps``
    says): cut after the IR's Admin tier rule, the tier parts rendered from
    ir.tier_chain with host verdicts (Accept RETURNs, Pass goes on to the next part)."""
    parts = part_names(chain)
    cut = next(i for i, (r, _) in enumerate(rules) if r.kind == "tier" and r.tier == "Admin") + 1  # after its goto

    def tier(name: str, pass_: tuple[str, ...]) -> Args:
        targets = {**ipt_tiers.TARGET, ir.ACCEPT: ("-j", "RETURN"), ir.PASS: pass_}
        out = ipt_tiers.tier_args(fw, direction, name, family, targets)
        return tuple(tuple(names.get(t, t) for t in a) for a in out)

    a = tier("Admin", ("-g", parts["N"])) + (_comment(ir.tier_end_comment(direction)) + ("-g", parts["N"]),)
    return {chain: flat(rules[:cut]), parts["A"]: a, parts["N"]: flat(rules[cut:]),
            parts["B"]: tier("Baseline", ("-j", "RETURN"))}
