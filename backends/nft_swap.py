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

The swap has two encodings of the same transaction: ``text`` (nft commands, for
libnftables: the fallback, and what a reader of the code can run by hand) and
``nft_netlink.encode_swap`` (the messages nft would send for that text, without its parser:
the default, backends/nft_runners.py NetlinkRunner). A 110-pod rule change spent ~75% of
its time in libnftables parsing and evaluating this text (issue 15, session 3 profile);
tests/integration/test_nft_swap.py applies every swap both ways and compares the listings.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

from backends import nft_tiers
from backends.base import DIRECTIONS
from backends.nft_netlink import (HOOK_RE, NAME_RE, SET_TYPES, CREATE, DELRULE, DELSETELEM, FAMILIES, NEWSETELEM, REQ,
                                  Message, Unsupported, element_list, element_messages, rule_messages, set_names,
                                  str_attr)
from enforcer import nfnetlink as nfnl
from enforcer.ir import PodFirewall


@dataclass(frozen=True)
class RulesSwap:
    """One rule swap: the new chains as rendered (blocks of lines with their tabs, in
    table order: tier chains before the hook chains that jump to them), the element delta,
    and the type of every set of the table (name -> nft type text: what a rule's ``@set``
    is, for the netlink encoder)."""

    table: str
    comment: str
    blocks: tuple[tuple[str, ...], ...]
    delta: object  # backends.nftables.Delta
    set_types: dict = field(default_factory=dict)
    previous: PodFirewall | None = None  # what is installed (old_blocks renders its chains)

    @property
    def chains(self) -> list[str]:
        return [b[0].split()[1] for b in self.blocks]  # "\tchain input {" -> "input"

    @property
    def added(self) -> int:
        return self.delta.added  # type: ignore[attr-defined]

    @property
    def removed(self) -> int:
        return self.delta.removed  # type: ignore[attr-defined]

    @property
    def text(self) -> str:
        """The transaction as nft commands (flush, element delta, the chains again)."""
        from backends.nftables import FAMILY

        lines = [f"flush chain {FAMILY} {self.table} {n}" for n in self.chains]
        body = [f"table {FAMILY} {self.table} {{", f'\tcomment "{self.comment}"']
        for b in self.blocks:
            body.extend(b)
        body.append("}")
        return "\n".join(lines) + "\n" + self.delta.commands() + "\n".join(body) + "\n"  # type: ignore[attr-defined]


def _layout(fw: PodFirewall, tiers: list[list[str]]) -> tuple:
    """What must be equal for the swap: the pod, its sets' names and kinds, its chains."""
    from backends.nftables import CHAINS

    sets = sorted((type(s).__name__, s.name, s.interval) for s in fw.sets)
    return fw.pod, tuple(sets), tuple(c[0] for c in tiers), tuple(CHAINS[d][0] for d in DIRECTIONS)


def rules_transaction(previous: PodFirewall, fw: PodFirewall) -> RulesSwap | None:
    """The transaction from ``previous`` (installed) to ``fw``, or None when the sets or
    chains differ by more than their contents (then the table is replaced whole). Only the
    chains whose rules change are flushed and written again: the kernel's work grows with
    the rules sent (each rule's expressions looked up by name, a counter allocated per CPU),
    and an unchanged chain keeps its counters."""
    from backends.nftables import TABLE, _set_type, delta, render_chain, set_name, table_comment

    tiers, before = list(nft_tiers.chains(fw)), list(nft_tiers.chains(previous))
    if _layout(previous, before) != _layout(fw, tiers):
        return None
    blocks = [b for b, was in zip(tiers, before) if b != was]
    # A hook chain is rendered from the pod (the same: the layout), its node addresses, the
    # direction's policy and the kinds of the sets it names (the same): when the first two
    # are equal, so is the chain (tests/unit/test_nft_swap.py holds render_chain to that),
    # and the previous one need not be rendered to compare.
    blocks += [render_chain(fw, d) for d in DIRECTIONS
               if fw.node_ips != previous.node_ips or fw.direction(d) != previous.direction(d)]
    types = {set_name(s.name, fam): _set_type(s, fam) for s in fw.sets for fam in (4, 6)}
    return RulesSwap(TABLE, table_comment(fw), tuple(tuple(b) for b in blocks), delta(previous, fw), types, previous)


def old_blocks(swap: RulesSwap) -> list[tuple[str, ...]]:
    """The chains of ``swap.blocks`` as ``swap.previous`` has them (rendered only when
    asked: backends/nft_edit.py's first edit of a namespace)."""
    from backends.nftables import CHAINS, render_chain

    assert swap.previous is not None
    hooks = {CHAINS[d][0]: d for d in DIRECTIONS}
    tiers = {b[0]: b for b in nft_tiers.chains(swap.previous)}
    return [tuple(render_chain(swap.previous, hooks[c]) if c in hooks else tiers[f"\tchain {c} {{"])
            for c in swap.chains]


# ---------------------------------------------------------------------------------------
# As one raw netlink batch (the messages nft sends for the text; backends/nft_netlink.py
# encodes the rules and elements, as for a whole table)

def encode_swap(table: str, comment: str | None, blocks: Sequence[Sequence[str]],
                changes: Sequence[tuple[str, str, Sequence[str]]], set_types: dict[str, str]) -> list[Message]:
    """The batch of backends/nft_swap.py's text (``RulesSwap.text``), as nft sends it: flush
    each chain of ``blocks`` (a DELRULE naming only the chain), the element ``changes``
    (``[(verb, set name, [element text])]``), then every rule of the blocks appended, an
    anonymous set just before its rule. The text's ``table { chain ... }`` block declares
    the table and its chains again; nft sends that as NEWTABLE and NEWCHAIN, which change
    nothing in a table that has them (same comment, same hooks: the layout is the same), so
    they are left out. ``set_types``: every set of the table, name -> its type text
    (``ipv4_addr . inet_proto``); the sets a rule looks up by name are there already (nft
    names them, with set id 0). ``comment`` is the table's (unused: nothing re-declares
    it). Raises Unsupported as encode_table does."""
    if not NAME_RE.match(table):
        raise Unsupported(f"table name {table!r}")
    kinds = set_kinds(set_types)
    fam = nfnl.nfgenmsg(FAMILIES["inet"])
    name = str_attr(1, table)
    chains = [chain_block_rules(b) for b in blocks]
    msgs = [Message(DELRULE, REQ, fam + name + str_attr(2, c), f"flush chain inet {table} {c}") for c, _ in chains]
    msgs += encode_elements(table, changes, set_types)
    next_id = 1  # anonymous sets' ids in this batch
    for c, rules in chains:
        for line in rules:
            refs = tuple(kinds[n] for n in set_names(line) if n in kinds)
            rule_msgs = rule_messages(table, c, line, refs, next_id, (0,) * len(refs))
            next_id += len(rule_msgs) // 2
            msgs += rule_msgs
    return msgs


def chain_block_rules(block: Sequence[str]) -> tuple[str, Sequence[str]]:
    """(chain name, its rule lines) of a rendered chain block; a hook chain's type line is
    not a rule (the chain keeps it)."""
    name = block[0][len("\tchain "):-2] if block[0].startswith("\tchain ") and block[0].endswith(" {") else ""
    if not NAME_RE.match(name) or block[-1] != "\t}":
        raise Unsupported(f"chain block {block[0]!r}")
    rules = [ln[2:] for ln in block[1:-1]]
    if rules and HOOK_RE.match(rules[0]):
        rules = rules[1:]
    if any(not ln.startswith("\t\t") for ln in block[1:-1]):
        raise Unsupported(f"chain {name}: a line not indented as a rule")
    return name, rules


def encode_elements(table: str, changes: Sequence[tuple[str, str, Sequence[str]]],
                    set_types: dict[str, str] | None = None) -> list[Message]:
    """DELSETELEM / NEWSETELEM messages for ``[(verb, set name, [element text])]`` in sets
    that exist (``delete element`` / ``add element``, as backends.nftables.Delta writes
    them). Each set's key comes from ``set_types`` (name -> type text) or, without it, from
    its elements' text: ``ADDR``, ``CIDR . lo-hi`` (an interval set), ``ADDR . proto .
    port``. Interval elements go as start and end keys (the concatenated interval sets'
    layout), so a delta of an ipBlock set needs no libnftables either."""
    if not changes:
        return []
    kinds = set_kinds(set_types) if set_types is not None else None
    fam = nfnl.nfgenmsg(FAMILIES["inet"])
    msgs: list[Message] = []
    for verb, set_name, elements in changes:
        if verb not in ("add", "delete") or not NAME_RE.match(set_name) or not elements:
            raise Unsupported(f"{verb} element {set_name} {{ {', '.join(elements)} }}")
        if kinds is not None:
            if set_name not in kinds:
                raise Unsupported(f"set {set_name} is not in the table")
            fields = kinds[set_name][1]
        else:
            fields = _fields_of(elements[0], set_name)
        items = element_list(", ".join(elements), fields, set_name)
        kind, flags = (NEWSETELEM, CREATE) if verb == "add" else (DELSETELEM, REQ)
        msgs += element_messages(str_attr(1, table) + str_attr(2, set_name), items, f"{verb} element inet {table} {set_name}",
                                  kind, flags, id_slot=False)
    return msgs


def set_kinds(set_types: dict[str, str]) -> dict[str, tuple[str, tuple, bool]]:
    """Set name -> (name, key fields, interval), as a rule's set references want them."""
    return {n: set_kind(n, t) for n, t in set_types.items()}


@functools.lru_cache(maxsize=1 << 12)
def set_kind(name: str, type_text: str) -> tuple[str, tuple, bool]:
    """(name, key fields, interval) of one set of type ``type_text``."""
    if type_text not in SET_TYPES or not NAME_RE.match(name):
        raise Unsupported(f"set {name}: type {type_text!r}")
    fields, _, _, interval = SET_TYPES[type_text]
    return name, fields, interval


def _fields_of(element: str, set_name: str) -> tuple:
    """The key fields of a set, read from one of its elements' text."""
    words = element.split(" . ")
    fam = "ip6" if ":" in words[0] else "ip"
    if len(words) == 1:
        return (fam,)
    if len(words) == 2:
        return (fam, "proto")
    if len(words) == 3:
        return (fam, "proto", "port")
    raise Unsupported(f"element {element!r} of set {set_name}")
