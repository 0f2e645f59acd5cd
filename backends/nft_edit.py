"""A rule swap as edits: only the rules that differ go to the kernel, found by handle.

backends/nft_swap.py's transaction flushes every chain whose rules changed and writes all
of its rules again. The kernel's work grows with the rules written (each expression's type
looked up by name, a counter allocated per CPU: issue 15's perf profile), so a policy whose
one port changed rewrote a pod's whole chain for one rule's sake, in each of 110 namespaces.
Here the same change goes as edits:

    1. the changed chains' rules and their handles, with the ruleset generation they are
       true at: remembered from our last edit of the namespace or from a reading made
       when the table went in (``Installed``), or else read now (NFT_MSG_GETGEN, then one
       GETRULE dump a chain, checked against the rules ``previous`` renders: same count,
       same comments)
    2. the rules both old and new chain start and end with stay where they are (their
       counters too); the old ones between are deleted by handle, the new ones between
       are inserted after the last rule kept before them (NFTA_RULE_POSITION), sent with
       NLM_F_ECHO: the kernel answers with their handles, remembered for the next edit
    3. the element delta and the edits go as one batch that carries the generation of
       step 1 (NFNL_BATCH_GENID)

Safe against anyone else's transaction: if anything was committed in the namespace since
the generation of step 1 (theirs or one of ours we did not count), the kernel refuses the
whole batch (ERESTART, nothing applied) and the caller sends the flush swap instead, which
needs no handle. A chain that keeps no rule is not edited (flushing it is the same work).
tests/integration/test_nft_edit.py applies edits and compares the listings with the flush
swap's.
"""
from __future__ import annotations

import functools
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Sequence

from backends import nft_swap
from backends.nft_netlink import APPEND, CREATE, DELRULE, FAMILIES, REQ, Message, TableSocket, rule_messages, set_names, str_attr
from enforcer import nfnetlink as nfnl

GETRULE = 7
NFTA_RULE_HANDLE, NFTA_RULE_POSITION, NFTA_RULE_USERDATA = 3, 6, 7
_COMMENT = re.compile(r' comment "((?:[^"\\]|\\.)*)"\Z')
_ATTR = struct.Struct("=HH")
_U64 = struct.Struct(">Q")


@dataclass
class Installed:
    """What our last edit left in a namespace: each chain it edited as (rule lines, their
    handles), true at generation ``gen`` of the socket ``sock`` (a namespace made again
    under the same name has a new socket: this is then not about it)."""

    sock: TableSocket
    gen: int
    chains: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = field(default_factory=dict)


def generation(sock: TableSocket) -> int | None:
    """The namespace's nf_tables generation, read through ``sock``."""
    for kind, _, body in sock.ask(nfnl.NFT_MSG_GETGEN, nfnl.NLM_F_REQUEST, nfnl.nfgenmsg(socket.AF_UNSPEC)):
        if kind == nfnl.NFT_MSG_NEWGEN:
            return nfnl.generation_of(body)
    return None


def chain_rules(sock: TableSocket, table: str, chain: str) -> list[tuple[int, bytes]] | None:
    """(handle, userdata) of every rule of ``chain``, in order; None when the dump was
    interrupted by a commit (the generation guard would refuse the batch anyway)."""
    body = nfnl.nfgenmsg(FAMILIES["inet"]) + str_attr(1, table) + str_attr(2, chain)
    out = []
    for _, flags, answer in sock.ask(GETRULE, nfnl.NLM_F_REQUEST | nfnl.NLM_F_DUMP, body):
        if flags & nfnl.NLM_F_DUMP_INTR:
            return None
        handle, udata = handle_and_udata(answer)
        if handle is None:
            return None
        out.append((handle, udata))
    return out


def handle_and_udata(body: bytes) -> tuple[int | None, bytes]:
    """A rule message's NFTA_RULE_HANDLE and NFTA_RULE_USERDATA, its expressions skipped
    (a generic attribute parse of every rule cost more than the kernel's dump)."""
    handle, udata = None, b""
    off, n = nfnl.NFGENMSG.size, len(body)
    while off + 4 <= n:
        length, kind = _ATTR.unpack_from(body, off)
        if length < 4:
            break
        kind &= nfnl.NLA_TYPE_MASK
        if kind == NFTA_RULE_HANDLE and length == 12:
            handle = _U64.unpack_from(body, off + 4)[0]
        elif kind == NFTA_RULE_USERDATA:
            udata = body[off + 4:off + length]
        off += (length + 3) & ~3
    return handle, udata


@functools.lru_cache(maxsize=1 << 14)
def udata_of(line: str) -> bytes:
    """The userdata nft stores for a rule line: its comment as a TLV (type 0, length with
    the NUL, the text), or nothing."""
    m = _COMMENT.search(line)
    if m is None:
        return b""
    raw = m.group(1).replace('\\"', '"').encode() + b"\0"
    return bytes([0, len(raw)]) + raw


def opcodes(old: Sequence[str], new: Sequence[str]) -> tuple[int, int, int]:
    """(a, b_old, b_new): the old and new rules share their first ``a`` rules and their
    rules from ``b_old`` / ``b_new`` on; the rest differs. Linear: a change is usually one
    policy's rules, next to each other (two changes apart rewrite the rules between them,
    which is still right, only more work)."""
    n, m = len(old), len(new)
    a = 0
    while a < n and a < m and old[a] == new[a]:
        a += 1
    b = 0
    while b < n - a and b < m - a and old[n - 1 - b] == new[m - 1 - b]:
        b += 1
    return a, n - b, m - b


def read(sock: TableSocket, table: str, blocks: Sequence[Sequence[str]]) -> Installed | None:
    """Step 1 without a memory of the namespace: the generation, then each chain of
    ``blocks`` (rendered chains: what the table should hold) listed and checked against
    them; None when a listing does not match or a commit interrupted it."""
    gen = generation(sock)
    if gen is None:
        return None
    known = Installed(sock, gen)
    for block in blocks:
        chain, old = nft_swap.chain_block_rules(block)
        rules = chain_rules(sock, table, chain)
        if rules is None or len(rules) != len(old) or any(ud != udata_of(ln) for (_, ud), ln in zip(rules, old)):
            return None
        known.chains[chain] = (tuple(old), tuple(h for h, _ in rules))
    return known


def encode_edits(swap: "nft_swap.RulesSwap", known: Installed) -> tuple[list[Message], dict] | None:
    """The batch of ``swap`` as edits of the chains ``known`` holds, and each chain's
    handles after it (an int, or the index of the echoed rule that fills it); None when a
    chain keeps no rule."""
    types = swap.set_types
    fam = nfnl.nfgenmsg(FAMILIES["inet"])
    table = str_attr(1, swap.table)
    dels: list[Message] = []
    adds: list[Message] = []
    after_edit: dict[str, tuple[tuple[str, ...], list]] = {}
    next_id = 1  # anonymous sets' ids in this batch
    echoed = 0  # NEWRULE messages so far (the kernel echoes them in this order)
    for block in swap.blocks:
        chain, new = nft_swap.chain_block_rules(block)
        old, handles = known.chains[chain]
        a, b_old, b_new = opcodes(old, new)
        if a == 0 and b_old == len(old):
            return None  # nothing kept
        where = str_attr(2, chain)
        for handle in handles[a:b_old]:
            dels.append(Message(DELRULE, REQ, fam + table + where + nfnl.be64(NFTA_RULE_HANDLE, handle),
                                f"delete rule inet {swap.table} {chain} handle {handle}"))
        lines = new[a:b_new]
        # After a kept rule, each new rule goes right after it: sent last first. With no
        # rule kept before them, each goes right before the first rule kept after them.
        pos, flags = (handles[a - 1], APPEND) if a else (handles[b_old], CREATE)
        order = list(reversed(range(len(lines)))) if a else list(range(len(lines)))
        slots: list = [None] * len(lines)
        for k in order:
            line = lines[k]
            refs = tuple(nft_swap.set_kind(n, types[n]) for n in set_names(line) if n in types)
            msgs = rule_messages(swap.table, chain, line, refs, next_id, (0,) * len(refs))
            next_id += len(msgs) // 2
            rule = msgs[-1]
            adds += msgs[:-1]
            adds.append(rule._replace(flags=flags | nfnl.NLM_F_ECHO, body=rule.body + nfnl.be64(NFTA_RULE_POSITION, pos)))
            slots[k] = ("echo", echoed)
            echoed += 1
        after_edit[chain] = (tuple(new), list(handles[:a]) + slots + list(handles[b_old:]))
    return nft_swap.encode_elements(swap.table, swap.delta.changes, swap.set_types) + dels + adds, after_edit


def apply(sock: TableSocket, swap: "nft_swap.RulesSwap", known: Installed | None) -> Installed | None:
    """Send ``swap`` as edits through ``sock`` (held: ``sock.lock``), ``known``: what our
    last edit here left (None: read it). Returns what the namespace holds now, or None
    when the swap cannot go as edits (nothing sent). Raises nft_netlink.Refused when the
    kernel refused the batch (nothing applied: a commit in between, a handle gone)."""
    if known is None or known.sock is not sock or any(c not in known.chains for c in swap.chains):
        known = read(sock, swap.table, nft_swap.old_blocks(swap))
        if known is None:
            return None
    edits = encode_edits(swap, known)
    if edits is None:
        return None
    msgs, after = edits
    if not msgs:  # the chains render as they were: no transaction (the generation stays)
        return known
    echoed: list = []
    sock.commit(msgs, genid=known.gen, echoed=echoed)
    handles = [handle_and_udata(body)[0] for _, body in sorted(echoed)]  # (by seq: the order sent)
    now = Installed(sock, (known.gen + 1) & 0xFFFFFFFF, dict(known.chains))
    for chain, (lines, slots) in after.items():
        filled = [s if isinstance(s, int) else (handles[s[1]] if s[1] < len(handles) else None) for s in slots]
        if None in filled:
            now.chains.pop(chain, None)  # an echo missing: read again next time
        else:
            now.chains[chain] = (lines, tuple(filled))  # type: ignore[arg-type]
    return now
