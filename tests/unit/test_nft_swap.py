"""The rule swap (backends/nft_swap.py) without a kernel: which chains it rewrites, its
text, and its netlink batch (no root; tests/integration/test_nft_swap.py loads both).
"""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import nft_netlink, nft_swap, nftables as nft
from backends.base import DIRECTIONS
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance
from tests.integration.test_nft_netlink import firewalls
from tests.integration.test_nft_swap import _elements, variant


def _fw(port: int = 80, nets: tuple[str, ...] = ("10.9.0.0/16",), egress_port: int = 53) -> PodFirewall:
    s = AddrSet("in0", v4=("10.0.0.2/32",), v6=("fd00::2/128",))
    n = AddrSet("nb", v4=nets, interval=True)
    r = AllowRule(Provenance("x/p", "ingress", 0), peers="in0", ports=(PortMatch("TCP", port),))
    q = AllowRule(Provenance("x/q", "egress", 0), peers="nb", ports=(PortMatch("UDP", egress_port),))
    return PodFirewall("x/a", ingress=DirectionPolicy(True, ("x/p",), (r,)),
                       egress=DirectionPolicy(True, ("x/q",), (q,)), sets=(s, n))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(fw=firewalls(), seed=st.integers(0, 2**16), ips=st.sampled_from([(), ("10.0.0.9",), ("10.7.7.7", "fd00::7")]))
def test_a_hook_chain_depends_only_on_what_the_swap_compares(fw, seed, ips):
    """rules_transaction skips rendering the installed chain when the node addresses and
    the direction's policy are equal (the pod and the sets' kinds being equal by the
    layout): render_chain must read nothing else (not the pod's addresses, not the sets'
    elements or notes)."""
    import random

    rnd = random.Random(seed)
    other = dataclasses.replace(fw, ips=ips, sets=tuple(_elements(s, rnd) for s in fw.sets))
    for d in DIRECTIONS:
        assert nft.render_chain(other, d) == nft.render_chain(fw, d)


def test_only_the_chains_that_change_are_rewritten():
    swap = nft_swap.rules_transaction(_fw(80), _fw(81))
    assert swap.chains == ["input"] and not swap.delta.changes
    assert swap.text.splitlines()[0] == "flush chain inet netpol input"
    assert "chain output" not in swap.text
    both = nft_swap.rules_transaction(_fw(80), _fw(81, egress_port=54))
    assert both.chains == ["input", "output"]
    elements = nft_swap.rules_transaction(_fw(80), _fw(80, ("10.20.0.0/16",)))
    assert elements.chains == [] and elements.delta.changes == (
        ("delete", "nb_4", ("10.9.0.0/16 . 0-255",)), ("add", "nb_4", ("10.20.0.0/16 . 0-255",)))
    assert nft_swap.encode_swap(elements.table, elements.comment, elements.blocks, elements.delta.changes,
                                elements.set_types)[0].kind == nft_netlink.DELSETELEM


def test_another_layout_is_no_swap():
    fw = _fw()
    assert nft_swap.rules_transaction(fw, dataclasses.replace(fw, sets=fw.sets[:1])) is None
    assert nft_swap.rules_transaction(fw, dataclasses.replace(fw, pod="x/b")) is None
    assert nft_swap.rules_transaction(fw, dataclasses.replace(
        fw, sets=(fw.sets[0], dataclasses.replace(fw.sets[1], interval=False, v4=("10.9.0.1/32",))))) is None


def test_the_batch_flushes_moves_elements_then_writes_the_rules():
    swap = nft_swap.rules_transaction(_fw(80), _fw(81, ("10.20.0.0/16",), egress_port=54))
    msgs = nft_swap.encode_swap(swap.table, swap.comment, swap.blocks, swap.delta.changes, swap.set_types)
    kinds = [m.kind for m in msgs]
    assert kinds[:4] == [nft_netlink.DELRULE, nft_netlink.DELRULE, nft_netlink.DELSETELEM, nft_netlink.NEWSETELEM]
    assert set(kinds[4:]) <= {nft_netlink.NEWRULE, nft_netlink.NEWSET, nft_netlink.NEWSETELEM}
    rules = [ln for b in swap.blocks for ln in b[1:-1] if not ln.strip().startswith("type ")]
    assert kinds.count(nft_netlink.NEWRULE) == len(rules)
    assert [m.what for m in msgs[:2]] == ["flush chain inet netpol input", "flush chain inet netpol output"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(fw=firewalls(), seed=st.integers(0, 2**16))
def test_every_swap_of_the_renderer_encodes(fw, seed):
    """What the renderer emits is all in the encoder's vocabulary (never the text fallback)."""
    after = variant(fw, seed)
    swap = nft_swap.rules_transaction(fw, after)
    if swap is not None:
        nft_swap.encode_swap(swap.table, swap.comment, swap.blocks, swap.delta.changes, swap.set_types)


def test_unknown_words_are_unsupported():
    swap = nft_swap.rules_transaction(_fw(80), _fw(81))
    with pytest.raises(nft_netlink.Unsupported):
        nft_swap.encode_swap(swap.table, swap.comment, swap.blocks, (), {"in0_4": "ether_addr"})
    with pytest.raises(nft_netlink.Unsupported):
        nft_swap.encode_swap(swap.table, swap.comment, [["\tchain input {", "\t\tmeta mark 1 accept", "\t}"]],
                             (), swap.set_types)
    with pytest.raises(nft_netlink.Unsupported):
        nft_swap.encode_elements("netpol", [("replace", "in0_4", ("10.0.0.1",))])
    assert nft_swap._fields_of("10.0.0.0/8 . 0-255", "s") == ("ip", "proto")
    assert nft_swap._fields_of("fd00::1 . tcp . 80", "s") == ("ip6", "proto", "port")
    assert nft_swap._fields_of("10.0.0.1", "s") == ("ip",)
