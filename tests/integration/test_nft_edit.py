"""A rule swap sent as edits (backends/nft_edit.py: only the rules that differ, by handle,
guarded by the ruleset generation) leaves exactly the table the swap's text leaves (root).

Each pair (installed, new) of firewalls with the same layout: the installed table goes
into two namespaces the same way, then the swap as text (libnftables, the reference) into
one and as edits into the other; ``nft list table`` must then be identical byte for byte,
and ``nft -j list table`` too once rule handles are left out (edits keep the handles of
the rules they keep: the flush swap gave every rule a new one). Each edit then goes on
from what the previous edit remembered (no listing read), and the handles it remembers
must be the kernel's. Pairs: the examples' pods against variants of themselves, the
conformance cases' steps, random IR firewalls (hypothesis). Then the guard: anyone
else's transaction in between makes the kernel refuse the edits, and nothing changes.
Namespaces ``npt-edt<pid>-*``, removed at the end.
"""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import nft_edit, nft_netlink, nft_swap, nftables as nft
from backends.nftables import NftablesBackend
from enforcer import netns
from enforcer.ir import TABLE, PodFirewall
from tests.integration import nft_pair
from tests.integration.nft_pair import Pair, firewalls_of, listing
from tests.integration.test_nft_netlink import firewalls
from tests.integration.test_nft_swap import _fw, variant

pytestmark = pytest.mark.root

PREFIX = f"npt-edt{os.getpid()}"
TEXT, NL = nft_pair.names(PREFIX)
pair = nft_pair.fixture(PREFIX)


def _without_handles(text: str) -> list:
    items = json.loads(text)["nftables"]
    for item in items:
        if "rule" in item:
            item["rule"].pop("handle", None)
    return items


def compare(what: str) -> None:
    assert listing(NL) == listing(TEXT), f"{what}: nft list table differs"
    assert _without_handles(listing(NL, "-j")) == _without_handles(listing(TEXT, "-j")), f"{what}: nft -j differs"


def edit_chain(pair: Pair, fws: list[PodFirewall]) -> int:
    """Install ``fws[0]`` in both namespaces, then each next firewall as the text swap and
    as edits (the first edit reads the chains, the later ones go on from memory). Returns
    how many went as edits."""
    for ns in (TEXT, NL):
        pair.text._run(ns, nft.full_transaction(fws[0]))
    known = None
    edited = 0
    for before, after in zip(fws, fws[1:]):
        swap = nft_swap.rules_transaction(before, after)
        if swap is None:
            return edited  # another layout: the table is replaced whole, no edit
        pair.text._run(TEXT, swap.text)
        now = nft_edit.apply(pair.sock, swap, known) if swap.blocks else None
        if now is None:  # nothing to edit, or a chain keeps no rule: the flush swap
            pair.sock.commit(nft_swap.encode_swap(swap.table, swap.comment, swap.blocks, swap.delta.changes,
                                                  swap.set_types))
        else:
            edited += 1
            for chain, (lines, handles) in now.chains.items():
                assert [h for h, _ in nft_edit.chain_rules(pair.sock, TABLE, chain)] == list(handles), chain
                assert len(lines) == len(handles)
        known = now
        compare(f"{before.pod}: edit\n{swap.text}")
        assert pair.text.verify(NL, after)
    return edited


@nft_pair.each_example
def test_examples_and_their_variants(pair, paths):
    for i, fw in enumerate(nft_pair.example_firewalls(paths)):
        edit_chain(pair, [fw, variant(fw, i), variant(fw, i + 1000), fw])


def test_conformance_steps(pair, tmp_path):
    from tests.conformance.cases import load_cases

    edited = 0
    for case in load_cases():
        by_pod: dict[str, list[PodFirewall]] = {}
        for i, step in enumerate(case.steps):
            for fw in firewalls_of(step.write(tmp_path, f"{case.id}-{i}")):
                by_pod.setdefault(fw.pod, []).append(fw)
        for fws in by_pod.values():
            if len(fws) > 1:
                edited += edit_chain(pair, fws)
    assert edited > 10


def test_cluster_network_policy_conformance_steps(pair, tmp_path):
    """Tier chains (jumps, gotos, Deny logs) edited as the hook chains are."""
    from tests.conformance.cnp.cases import load_cases

    edited = 0
    for case in load_cases():
        by_pod: dict[str, list[PodFirewall]] = {}
        for i, step in enumerate(case.steps):
            path = tmp_path / f"{case.path.stem}-{i}.yaml"
            path.write_text(step.manifests_text())
            for fw in firewalls_of(path):
                by_pod.setdefault(fw.pod, []).append(fw)
        for fws in by_pod.values():
            if len(fws) > 1:
                edited += edit_chain(pair, fws)
    assert edited > 5


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(fw=firewalls(), seed=st.integers(0, 2**16))
def test_random_ir_firewalls(pair, fw, seed):
    edit_chain(pair, [fw, variant(fw, seed), variant(fw, seed + 1), variant(fw, seed + 2)])


def test_one_port_changed_edits_a_few_rules_and_keeps_the_others(pair):
    a, b = _fw(80, pod="x/one"), _fw(81, pod="x/one")
    for ns in (TEXT, NL):
        pair.text._run(ns, nft.full_transaction(a))
    before = dict(nft_edit.chain_rules(pair.sock, TABLE, "input"))
    swap = nft_swap.rules_transaction(a, b)
    msgs, _ = nft_edit.encode_edits(swap, nft_edit.read(pair.sock, TABLE, nft_swap.old_blocks(swap)))
    deleted = sum(m.kind == nft_netlink.DELRULE and " input " in m.what for m in msgs)
    added = sum(m.kind == nft_netlink.NEWRULE and " input " in m.what for m in msgs)
    assert deleted == added and 2 <= deleted < len(before) - 4
    nft_edit.apply(pair.sock, swap, None)
    after = dict(nft_edit.chain_rules(pair.sock, TABLE, "input"))
    assert len(set(before) & set(after)) == len(before) - deleted  # every other rule kept its handle


def test_anyone_elses_transaction_in_between_refuses_the_edit(pair):
    a, b, c = _fw(80, pod="x/g"), _fw(81, pod="x/g"), _fw(82, pod="x/g")
    for ns in (TEXT, NL):
        pair.text._run(ns, nft.full_transaction(a))
    known = nft_edit.apply(pair.sock, nft_swap.rules_transaction(a, b), None)
    assert known is not None
    netns.run(NL, ["nft", "add table inet someone_else"])  # a commit that is not ours
    try:
        held = listing(NL)
        with pytest.raises(nft_netlink.Refused, match="restart"):
            nft_edit.apply(pair.sock, nft_swap.rules_transaction(b, c), known)
        assert listing(NL) == held  # nothing of the batch applied
    finally:
        netns.run(NL, ["nft", "delete table inet someone_else"])


def test_the_backend_edits_from_memory_and_falls_back_to_the_flush_swap(pair, monkeypatch):
    b = NftablesBackend("netlink")
    try:
        fws = [_fw(p, pod="x/m") for p in (80, 81, 82, 83)]
        assert b.apply(NL, fws[0]).kind == "full"
        reads = []
        real = nft_edit.chain_rules
        monkeypatch.setattr(nft_edit, "chain_rules", lambda *a: reads.append(a) or real(*a))
        assert b.apply(NL, fws[1], fws[0]).kind == "full"
        assert reads  # nothing remembered after a whole table: read, then edited
        reads.clear()
        assert b.apply(NL, fws[2], fws[1]).note == ""
        assert not reads  # from memory
        assert b.verify(NL, fws[2])
        assert b.apply(NL, fws[0]).kind == "full"  # a whole table again: forgotten ...
        b.learn(NL, fws[0])  # ... and read when told what it holds (the daemon, at first contact)
        reads.clear()
        assert b.apply(NL, fws[2], fws[0]).note == ""
        assert not reads
        assert b.verify(NL, fws[2])
        netns.run(NL, ["nft", "add table inet someone_else"])
        try:
            assert b.apply(NL, fws[3], fws[2]).note == ""  # refused as edits, then the flush swap
            assert b.verify(NL, fws[3])
            assert NL not in b._get_runner()._installed  # what it remembered is gone
        finally:
            netns.run(NL, ["nft", "delete table inet someone_else"])
    finally:
        b.close()
