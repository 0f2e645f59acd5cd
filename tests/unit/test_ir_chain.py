"""ir.chain: the whole direction chain (fixed rules included) in the order, with the
verdicts and comments, that the renderings install (checked against each of them)."""
from __future__ import annotations

import re

import pytest

from backends import ipt_render, nftables as nft
from enforcer import ir
from enforcer.ir import (AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance,
                         TierRule)

PEERS = AddrSet("web_0", v4=("10.0.0.7/32",), v6=("fd00::7/128",))
NETS = AddrSet("net_0", v4=("192.168.0.0/16",), interval=True)
ALLOW = (AllowRule(Provenance("x/p", "ingress", 0), peers="web_0", ports=(PortMatch("TCP", 80), PortMatch("UDP"))),
         AllowRule(Provenance("x/p", "ingress", 1), peers="net_0"),
         AllowRule(Provenance("x/q", "ingress", 0)))
ADMIN = (TierRule("Admin", "deny-dev", 1, "egress", 0, "Deny", "no-dev", peers="web_0"),
         TierRule("Admin", "skip", 2, "egress", 0, "Pass"))
BASELINE = (TierRule("Baseline", "base", 1, "egress", 0, "Accept"),)
FW = PodFirewall("x/a", ips=("10.0.0.2",), node_ips=("fd00::1", "10.0.0.9", "10.0.0.1"),
                 ingress=DirectionPolicy(True, ("x/p", "x/q"), ALLOW),
                 egress=DirectionPolicy(admin=ADMIN, baseline=BASELINE),
                 sets=(PEERS, NETS))
ISOLATED_TIERED = PodFirewall("x/b", egress=DirectionPolicy(True, ("x/p",), (), admin=ADMIN), sets=(PEERS,))


def test_ingress_isolated_order_verdicts_and_comments():
    got = [(r.kind, r.verdict, r.comment) for r in ir.chain(FW, "ingress")]
    fixed = [("established", "accept"), ("invalid", "drop"), ("loopback", "accept"),
             ("ipv6 neighbour discovery", "accept")]
    assert got == ([(k, v, f"ingress {k}") for k, v in fixed]
                   + [("node", "accept", "ingress node")] * 3
                   + [("allow", "accept", "x/p ingress[0]"), ("allow", "accept", "x/p ingress[1]"),
                      ("allow", "accept", "x/q ingress[0]"),
                      ("log", "log", "ingress log drop"), ("drop", "drop", "ingress isolated by x/p,x/q")])
    rules = ir.chain(FW, "ingress")
    assert [r.node for r in rules if r.kind == "node"] == ["10.0.0.1", "10.0.0.9", "fd00::1"]
    assert [r.allow for r in rules if r.kind == "allow"] == list(ALLOW)
    assert [r.fixed for r in rules] == [True] * 7 + [False] * 5


def test_open_direction_with_tiers_jumps_admin_first_baseline_last():
    got = [(r.kind, r.verdict, r.tier, r.comment) for r in ir.chain(FW, "egress")][7:]
    assert got == [("tier", "jump", "Admin", "egress Admin tier"), ("tier", "jump", "Baseline", "egress Baseline tier"),
                   ("open", "accept", None, "egress not isolated")]
    # isolated: Baseline is never consulted
    assert [r.kind for r in ir.chain(ISOLATED_TIERED, "egress")][4:] == ["tier", "log", "drop"]


def _collapse(comments: list[str]) -> list[str]:
    """One comment per IR rule: a rule rendered as several (families, protocols) repeats it."""
    return [c for i, c in enumerate(comments) if i == 0 or comments[i - 1] != c]


@pytest.mark.parametrize("fw", [FW, ISOLATED_TIERED, PodFirewall("x/c")], ids=["mixed", "isolated-tiered", "bare"])
@pytest.mark.parametrize("direction", ir.DIRECTIONS)
def test_renderings_install_the_chain_in_order(fw, direction):
    want = [r.comment for r in ir.chain(fw, direction)]
    text = nft.render(fw).splitlines()
    start = text.index(f"\tchain {nft.CHAINS[direction][0]} {{")
    body = text[start + 2:text.index("\t}", start)]
    assert _collapse([re.search(r'comment "([^"]*)"', ln).group(1) for ln in body]) == _collapse(want)
    # iptables: per family; IPv4 has no neighbour discovery rule, IPv6 only the v6 node
    rs = ipt_render.build(fw)
    for family in (4, 6):
        rules = rs.rules[family][ipt_render.CHAINS[direction]]
        got = _collapse([args[args.index("--comment") + 1] for args in rules])
        fam = [r.comment for r in ir.chain(fw, direction)
               if not (family == 4 and r.kind == "ipv6 neighbour discovery")
               and not (r.kind == "node" and (":" in r.node) != (family == 6))]
        assert got == _collapse(fam)


@pytest.mark.parametrize("fw", [FW, ISOLATED_TIERED], ids=["mixed", "isolated-tiered"])
def test_lab_stats_reads_the_chain_as_classify_reads_the_words(fw):
    from enforcer.lab import observe

    words = observe.chain_words(fw)
    assert set(words) == set(ir.comments(fw)) > {r.comment for d in ir.DIRECTIONS for r in ir.chain(fw, d)}
    assert all(observe.classify(c) == w for c, w in words.items())
    assert observe.classify(ir.tier_end_comment("egress")) == ("egress", "jump", None, None)  # host mode's


@pytest.mark.parametrize("fw", [FW, ISOLATED_TIERED, PodFirewall("x/c")], ids=["mixed", "isolated-tiered", "bare"])
def test_fake_backend_counts_every_rule_the_kernel_backends_install(fw):
    """The fake's counters list what nft's and iptables' would (every rule's comment, once,
    tier chains included), in the order lab stats sorts by."""
    from backends import base
    from enforcer.lab import observe

    fake = base.FakeBackend()
    fake.apply("ns", fw)
    got = [c for c, _, _ in fake.counters("ns")]
    assert len(got) == len(set(got)) and {(p, b) for _, p, b in fake.counters("ns")} == {(0, 0)}
    rules = [ln for ln in nft.render(fw).splitlines() if ln.startswith("\t\t")]  # not the table's comment
    assert set(got) == set(re.findall(r'comment "([^"]*)"', "\n".join(rules)))
    rs = ipt_render.build(fw)
    assert set(got) == {a[a.index("--comment") + 1] for fam in (4, 6) for rules in rs.rules[fam].values() for a in rules}
    assert got == observe.rule_order(fw)
    if fw.egress.admin:
        assert got.index("egress Admin tier") + 1 == got.index("Admin deny-dev egress[0] no-dev Deny log")
    if fw is FW:  # an open direction: its Baseline tier's rules after the NetworkPolicy part
        assert got.index("egress Baseline tier") + 1 == got.index("Baseline base egress[0] Accept")
