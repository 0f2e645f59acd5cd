"""A ClusterNetworkPolicy Deny is logged like the NetworkPolicy drop (nflog group, prefix
naming the tier rule), and `lab drops` / `lab stats` attribute it (pure parts; the real
packets are in tests/integration/test_cnp_lab.py)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from backends import base, ipt_tiers, nft_tiers
from enforcer import nflog
from enforcer.ir import AddrSet, DirectionPolicy, PodFirewall, TierRule
from enforcer.lab import observe
from tests.unit.test_nflog import ipv4, tcp

DENY = TierRule("Admin", "prod-refuses-dev", 10, "ingress", 0, "Deny", "no-dev", peers="cai_0")
PASS = TierRule("Admin", "prod-refuses-dev", 10, "ingress", 1, "Pass", "", peers="cai_0")


def firewall(pod: str = "prod/db", deny: TierRule = DENY) -> PodFirewall:
    return PodFirewall(pod, ("10.244.0.6",), ("10.244.0.1",),
                       ingress=DirectionPolicy(admin=(deny, PASS)),
                       sets=(AddrSet("cai_0", ("10.244.0.2/32",)),))


def test_prefix_names_tier_policy_and_rule_and_parses_as_a_drop():
    prefix = base.tier_nflog_prefix(DENY, "prod/db")
    assert prefix == "netpol drop ingress prod/db: Admin prod-refuses-dev[0]"
    assert nflog.parse_prefix(prefix) == ("ingress", "prod/db")  # host mode reads the pod from it
    assert nflog.parse_prefix("netpol drop ingress prod/db: ") == ("ingress", "prod/db")


def test_only_a_deny_logs_and_the_log_comes_first_with_the_same_match():
    fw = firewall()
    lines = nft_tiers.tier_lines(fw, "ingress", "Admin")  # the Deny, then the Pass
    assert [ln.split(" limit")[0].split(" counter")[0] for ln in lines] == \
        ["ip saddr @cai_0_4", "ip saddr @cai_0_4", "ip6 saddr @cai_0_6", "ip6 saddr @cai_0_6",
         "ip saddr @cai_0_4", "ip6 saddr @cai_0_6"]
    assert 'log prefix "netpol drop ingress prod/db: Admin prod-refuses-dev[0]" group 100' in lines[0]
    assert lines[1].endswith('counter drop comment "Admin prod-refuses-dev ingress[0] no-dev Deny"')
    assert " log " in lines[2] and lines[3].endswith("no-dev Deny\"")
    assert all(ln.endswith('counter return comment "Admin prod-refuses-dev ingress[1] Pass"') for ln in lines[4:])
    args = ipt_tiers.chains(fw, 4)["NETPOL-ADMIN-IN"]
    assert [a[a.index("-j") + 1] for a in args] == ["NFLOG", "DROP", "RETURN"]
    assert args[0][:5] == args[1][:5]  # the same set match
    assert "netpol drop ingress prod/db: Admin prod-refuses-dev[0]" in args[0]


def test_the_reader_finds_the_rule_even_when_the_prefix_was_cut():
    long_pod = "a-namespace-with-a-long-name/" + "p" * 40
    deny = replace(DENY, policy="a-cluster-policy-with-a-long-name")
    fw = firewall(long_pod, deny)
    prefix = base.tier_nflog_prefix(deny, long_pod)
    assert len(prefix) <= base.LOG_PREFIX_MAX and "~" in prefix  # cut, with a digest
    view = observe.LabView({long_pod: "ns"}, {"10.244.0.2": "dev/api"}, {long_pod: fw})
    d = view.drop(long_pod, nflog.LogPacket(100, prefix, ipv4(6, "10.244.0.2", "10.244.0.6", tcp(4000, 80))), 0.0)
    assert d.tier_rule == deny and d.isolated_by == ()
    assert "denied by Admin ClusterNetworkPolicy a-cluster-policy-with-a-long-name (priority 10) ingress[0] ('no-dev')" \
        in observe.format_drop(d)


def test_the_networkpolicy_drop_stays_isolated_by():
    fw = replace(firewall(), ingress=replace(firewall().ingress, isolated=True, isolated_by=("prod/p",)))
    view = observe.LabView({"prod/db": "ns"}, {}, {"prod/db": fw})
    d = view.drop("prod/db", nflog.LogPacket(100, "netpol drop ingress prod/db: ",
                                             ipv4(6, "10.244.0.2", "10.244.0.6", tcp(4000, 80))), 0.0)
    assert d.tier_rule is None and d.isolated_by == ("prod/p",) and "denied_by" not in d.to_json()


@pytest.mark.parametrize("comment,want", [
    ("Admin prod-refuses-dev ingress[0] no-dev Deny", ("ingress", "drop", "prod-refuses-dev", 0)),
    ("Admin prod-refuses-dev ingress[0] no-dev Deny log", ("ingress", "log", "prod-refuses-dev", 0)),
    ("Baseline default-deny egress[3] Accept", ("egress", "accept", "default-deny", 3)),
    ("Admin p ingress[1] Pass", ("ingress", "pass", "p", 1)),
    ("ingress Admin tier", ("ingress", "jump", None, None)),
])
def test_stats_classify_tier_rules(comment, want):
    assert observe.classify(comment) == want


def test_stats_order_puts_the_tiers_around_the_networkpolicy_rules():
    order = observe.rule_order(firewall())
    i = order.index("ingress Admin tier")
    assert order[i + 1:i + 4] == ["Admin prod-refuses-dev ingress[0] no-dev Deny log",
                                  "Admin prod-refuses-dev ingress[0] no-dev Deny", PASS.comment()]
    assert order.index("ingress Baseline tier") < order.index("ingress not isolated")
