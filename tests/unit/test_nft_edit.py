"""backends/nft_edit.py's pure parts: which rules an edit keeps, the userdata a rule's
comment becomes, the positions and handles an edit batch carries (no kernel)."""
from __future__ import annotations

import random
import struct

import pytest

from backends import nft_edit, nft_netlink, nft_swap
from backends.nft_edit import Installed, encode_edits, opcodes, udata_of
from enforcer import nfnetlink as nfnl
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance


def _apply(old, new, ops):
    a, b_old, b_new = ops
    return list(old[:a]) + list(new[a:b_new]) + list(old[b_old:])


@pytest.mark.parametrize("seed", range(200))
def test_opcodes_keep_a_common_start_and_end_and_rebuild_the_new_list(seed):
    rnd = random.Random(seed)
    old = [rnd.choice("abcde") for _ in range(rnd.randint(0, 8))]
    new = list(old)
    for _ in range(rnd.randint(0, 3)):
        k = rnd.randint(0, len(new))
        if rnd.random() < 0.5 and new:
            del new[min(k, len(new) - 1)]
        else:
            new.insert(k, rnd.choice("abcdef"))
    a, b_old, b_new = ops = opcodes(old, new)
    assert _apply(old, new, ops) == new
    assert old[:a] == new[:a] and old[b_old:] == new[b_new:]
    assert a <= b_old and a <= b_new and len(old) - b_old == len(new) - b_new
    if old == new:
        assert a == len(old)


def test_udata_of_a_rule_is_its_comment_as_nft_stores_it():
    assert udata_of('ip saddr @in0_4 counter accept comment "x/p ingress[0]"') == b"\x00\x0fx/p ingress[0]\x00"
    assert udata_of('counter drop comment "say \\"hi\\""') == b'\x00\x09say "hi"\x00'
    assert udata_of("counter accept") == b""


def _fw(port: int) -> PodFirewall:
    s = AddrSet("in0", v4=("10.0.0.2/32",))
    r = AllowRule(Provenance("x/p", "ingress", 0), peers="in0", ports=(PortMatch("TCP", port),))
    return PodFirewall("x/a", ingress=DirectionPolicy(True, ("x/p",), (r,)), sets=(s,))


def _known(swap, start: int = 100) -> Installed:
    chains = {}
    for block in nft_swap.old_blocks(swap):
        chain, lines = nft_swap.chain_block_rules(block)
        chains[chain] = (tuple(lines), tuple(range(start, start + len(lines))))
    return Installed(None, 7, chains)  # type: ignore[arg-type]


def _attrs(m) -> dict:
    return nfnl.parse_attrs(m.body[nfnl.NFGENMSG.size:])


def test_a_changed_port_deletes_its_rules_and_inserts_the_new_ones_after_the_rule_kept_before_them():
    swap = nft_swap.rules_transaction(_fw(80), _fw(81))
    known = _known(swap)
    lines, handles = known.chains["input"]
    ks = [i for i, ln in enumerate(lines) if "dport 80" in ln]  # IPv4's and IPv6's, one after the other
    assert len(ks) == 2 and ks[1] == ks[0] + 1
    msgs, after = encode_edits(swap, known)
    dels = [m for m in msgs if m.kind == nft_netlink.DELRULE]
    adds = [m for m in msgs if m.kind == nft_netlink.NEWRULE]
    assert [struct.unpack(">Q", _attrs(m)[nft_edit.NFTA_RULE_HANDLE])[0] for m in dels] == [handles[k] for k in ks]
    assert [m.what.split(" saddr")[0][-3:] for m in adds] == ["ip6", " ip"]  # last first
    for m in adds:
        assert "dport 81" in m.what
        assert struct.unpack(">Q", _attrs(m)[nft_edit.NFTA_RULE_POSITION])[0] == handles[ks[0] - 1]
        assert m.flags & nfnl.NLM_F_APPEND and m.flags & nfnl.NLM_F_ECHO
    new_lines, slots = after["input"]
    assert slots == list(handles[:ks[0]]) + [("echo", 1), ("echo", 0)] + list(handles[ks[1] + 1:])
    assert all("dport 81" in new_lines[k] for k in ks)


def test_rules_inserted_after_a_kept_rule_are_sent_last_first():
    a = _fw(80)
    many = PodFirewall("x/a", ingress=DirectionPolicy(True, ("x/p",), (AllowRule(
        Provenance("x/p", "ingress", 0), peers="in0", ports=tuple(PortMatch("TCP", p) for p in (81, 90, 100))),)),
        sets=a.sets)
    swap = nft_swap.rules_transaction(a, many)
    known = _known(swap)
    msgs, after = encode_edits(swap, known)
    adds = [m.what.split("input ", 1)[1] for m in msgs if m.kind == nft_netlink.NEWRULE]
    new_lines, slots = after["input"]
    inserted = [ln for ln, s in zip(new_lines, slots) if not isinstance(s, int)]
    assert len(inserted) == 6 and adds == inserted[::-1]  # each right after the kept rule
    assert [s[1] for s in slots if not isinstance(s, int)] == [5, 4, 3, 2, 1, 0]


def test_a_chain_that_keeps_no_rule_is_not_edited():
    swap = nft_swap.rules_transaction(_fw(80), _fw(81))
    known = _known(swap)
    chain, (lines, handles) = next(iter(known.chains.items()))
    known.chains[chain] = (tuple("x" + ln for ln in lines), handles)  # nothing in common
    assert encode_edits(swap, known) is None
