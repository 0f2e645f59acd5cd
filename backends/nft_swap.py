"""A rule change that keeps the table's sets: flush the chains, move set elements, write
the rules again, in one transaction.

A full replace re-sends every set element. When a policy's rules change (a port, a
protocol) the sets usually stay as they were: at 150,000 pods the peers of one rule can be
thousands of addresses in each of 110 local pods' tables, and re-sending them all made a
port change take seconds (issue 15). When the old and new firewall have the same sets (by
name and kind; their elements may differ) and the same chains, this transaction leaves the
table, its sets and its chains in place (so ``nft list`` prints them in the order a fresh
table has, which ``verify`` compares) and replaces only the rules and changed elements.
Atomic like every transaction: packets see the old rules or the new ones.
"""
from __future__ import annotations

from dataclasses import dataclass

from backends import nft_tiers
from backends.base import DIRECTIONS
from enforcer.ir import PodFirewall


@dataclass(frozen=True)
class RulesSwap:
    text: str
    added: int
    removed: int


def _layout(fw: PodFirewall, tiers: list[list[str]]) -> tuple:
    """What must be equal for the swap: the pod, its sets' names and kinds, its chains."""
    from backends.nftables import CHAINS

    sets = sorted((type(s).__name__, s.name, s.interval) for s in fw.sets)
    return fw.pod, tuple(sets), tuple(c[0] for c in tiers), tuple(CHAINS[d][0] for d in DIRECTIONS)


def rules_transaction(previous: PodFirewall, fw: PodFirewall) -> RulesSwap | None:
    """The transaction from ``previous`` (installed) to ``fw``, or None when the sets or
    chains differ by more than their contents (then the table is replaced whole)."""
    from backends.nftables import FAMILY, TABLE, _quote, delta, render_chain

    tiers = list(nft_tiers.chains(fw))
    if _layout(previous, list(nft_tiers.chains(previous))) != _layout(fw, tiers):
        return None
    chains = tiers + [render_chain(fw, d) for d in DIRECTIONS]  # the hook chains: rendered once, new only
    d = delta(previous, fw)
    names = [c[0].split()[1] for c in chains]  # "\tchain input {" -> "input"
    lines = [f"flush chain {FAMILY} {TABLE} {n}" for n in names]
    body = [f"table {FAMILY} {TABLE} {{", f'\t{_quote("pod " + fw.pod)}']
    for c in chains:
        body.extend(c)
    body.append("}")
    return RulesSwap("\n".join(lines) + "\n" + d.commands() + "\n".join(body) + "\n", d.added, d.removed)
