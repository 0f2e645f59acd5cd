"""nftables rendering: hand-built PodFirewalls, exact text (no root, no kernel)."""
from __future__ import annotations

import pytest

from backends import base
from backends import nftables as nft
from enforcer.errors import BackendError
from enforcer.ir import (AddrPortSet, AddrSet, AllowRule, DirectionPolicy, PodFirewall,
                         PortMatch, Provenance)

OPEN = PodFirewall(pod="x/a", ips=("10.0.0.2",), node_ips=("10.0.0.1",))


def rule(policy: str, direction: str, index: int, **kw) -> AllowRule:
    return AllowRule(Provenance(policy, direction, index), **kw)


def isolated(*rules: AllowRule, by=("x/p",)) -> DirectionPolicy:
    return DirectionPolicy(True, tuple(by), tuple(rules))


def chain_lines(text: str, chain: str) -> list[str]:
    """The rules of one chain, without the header."""
    lines = text.splitlines()
    start = lines.index(f"\tchain {chain} {{")
    end = lines.index("\t}", start)
    return [ln.strip() for ln in lines[start + 2:end]]


FIXED_IN = [
    'ct state established,related counter accept comment "ingress established"',
    'ct state invalid counter drop comment "ingress invalid"',
    'iif "lo" counter accept comment "ingress loopback"',
    "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }"
    ' counter accept comment "ingress ipv6 neighbour discovery"',
    'ip saddr 10.0.0.1 counter accept comment "ingress node"',
]


def test_not_isolated_golden():
    assert nft.render(OPEN) == '''table inet netpol {
\tcomment "pod x/a"
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tct state established,related counter accept comment "ingress established"
\t\tct state invalid counter drop comment "ingress invalid"
\t\tiif "lo" counter accept comment "ingress loopback"
\t\ticmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "ingress ipv6 neighbour discovery"
\t\tip saddr 10.0.0.1 counter accept comment "ingress node"
\t\tcounter accept comment "ingress not isolated"
\t}

\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\tct state established,related counter accept comment "egress established"
\t\tct state invalid counter drop comment "egress invalid"
\t\toif "lo" counter accept comment "egress loopback"
\t\ticmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "egress ipv6 neighbour discovery"
\t\tip daddr 10.0.0.1 counter accept comment "egress node"
\t\tcounter accept comment "egress not isolated"
\t}
}
'''


def test_isolated_without_rules_drops_after_the_fixed_rules():
    fw = PodFirewall(pod="x/a", node_ips=("10.0.0.1",),
                     ingress=DirectionPolicy(True, ("x/deny", "y/other"), ()))
    assert chain_lines(nft.render(fw), "input") == FIXED_IN + [
        'limit rate 10/second log prefix "netpol drop ingress x/a: " group 100 comment "ingress log drop"',
        'counter drop comment "ingress isolated by x/deny,y/other"',
    ]
    # egress untouched
    assert chain_lines(nft.render(fw), "output")[-1] == 'counter accept comment "egress not isolated"'


def test_peers_none_and_ports_empty_is_one_plain_accept():
    fw = PodFirewall(pod="x/a", ingress=isolated(rule("x/all", "ingress", 0)))
    lines = chain_lines(nft.render(fw), "input")
    assert 'counter accept comment "x/all ingress[0]"' in lines


def test_peers_none_with_ports_matches_ports_only_no_family():
    fw = PodFirewall(pod="x/a", ingress=isolated(
        rule("x/p", "ingress", 2, ports=(PortMatch("TCP", 80), PortMatch("UDP", 53)))))
    lines = chain_lines(nft.render(fw), "input")
    assert lines[len(FIXED_IN) - 1:len(FIXED_IN) + 1] == [
        'tcp dport 80 counter accept comment "x/p ingress[2]"',
        'udp dport 53 counter accept comment "x/p ingress[2]"',
    ]


def test_ports_empty_with_peers_matches_addresses_of_both_families():
    fw = PodFirewall(pod="x/a", ingress=isolated(rule("x/p", "ingress", 0, peers="in0")),
                     sets=(AddrSet("in0", v4=("10.0.0.3/32",)),))
    lines = chain_lines(nft.render(fw), "input")
    assert 'ip saddr @in0_4 counter accept comment "x/p ingress[0]"' in lines
    assert 'ip6 saddr @in0_6 counter accept comment "x/p ingress[0]"' in lines


def test_ports_ranges_and_protocols_are_grouped_merged_and_ordered_a_rule_each():
    ports = (PortMatch("UDP", 53), PortMatch("TCP", 8000, 8080), PortMatch("TCP", 80),
             PortMatch("TCP", 81, 90), PortMatch("TCP", 91), PortMatch("SCTP", 9),
             PortMatch("TCP", 8080, 8090), PortMatch("UDP"), PortMatch("TCP", 443, 443))
    fw = PodFirewall(pod="x/a", egress=isolated(rule("x/p", "egress", 1, peers="eg1", ports=ports)),
                     sets=(AddrSet("eg1", v4=("10.0.0.3/32",)),))
    lines = [ln for ln in chain_lines(nft.render(fw), "output") if "x/p egress[1]" in ln]
    # (a rule per port range, never an anonymous set: nftables.port_matches says why)
    assert lines == [
        f'{ip} daddr @eg1_{fam} {match} counter accept comment "x/p egress[1]"'
        for ip, fam in (("ip", 4), ("ip6", 6))
        for match in ("tcp dport 80-91", "tcp dport 443", "tcp dport 8000-8090", "meta l4proto udp",
                      "sctp dport 9")]
    assert "{" not in "".join(ln for ln in chain_lines(nft.render(fw), "output") if "dport" in ln)


def test_single_range_has_no_braces():
    fw = PodFirewall(pod="x/a", ingress=isolated(
        rule("x/p", "ingress", 0, ports=(PortMatch("TCP", 1000, 2000),))))
    assert 'tcp dport 1000-2000 counter accept comment "x/p ingress[0]"' in chain_lines(nft.render(fw), "input")


def test_interval_and_host_sets():
    fw = PodFirewall(pod="x/a", sets=(
        AddrSet("h", v4=("10.0.0.10/32", "10.0.0.9/32"), v6=("fd00::3/128",)),
        AddrSet("n", v4=("192.168.0.0/16", "10.1.0.5/32"), v6=("::/0",), interval=True),
        AddrSet("empty", interval=True)))
    text = nft.render(fw)
    assert '''\tset h_4 {
\t\ttype ipv4_addr
\t\telements = { 10.0.0.9, 10.0.0.10 }
\t}

\tset h_6 {
\t\ttype ipv6_addr
\t\telements = { fd00::3 }
\t}''' in text
    # ipBlock sets: address . protocol, every protocol (a concatenation: the kernel's
    # pipapo set, faster than an interval tree at 10,000 ipBlocks)
    assert '''\tset n_4 {
\t\ttype ipv4_addr . inet_proto
\t\tflags interval
\t\telements = { 10.1.0.5 . 0-255, 192.168.0.0/16 . 0-255 }
\t}

\tset n_6 {
\t\ttype ipv6_addr . inet_proto
\t\tflags interval
\t\telements = { ::/0 . 0-255 }
\t}''' in text
    # empty sets of both families exist, so pod churn never changes the structure
    assert "\tset empty_4 {\n\t\ttype ipv4_addr . inet_proto\n\t\tflags interval\n\t}" in text
    assert "\tset empty_6 {\n\t\ttype ipv6_addr . inet_proto\n\t\tflags interval\n\t}" in text


def test_ipblock_rules_match_address_and_protocol():
    fw = PodFirewall(pod="x/a", sets=(AddrSet("in0", v4=("10.0.0.0/8",), interval=True),
                                      AddrSet("in1", v4=("10.0.0.1/32",))),
                     ingress=isolated(rule("x/p", "ingress", 0, peers="in0", ports=(PortMatch("TCP", 80, 80),)),
                                      rule("x/p", "ingress", 1, peers="in1")))
    lines = chain_lines(nft.render(fw), "input")
    assert 'ip saddr . meta l4proto @in0_4 tcp dport 80 counter accept comment "x/p ingress[0]"' in lines
    assert 'ip6 saddr . meta l4proto @in0_6 tcp dport 80 counter accept comment "x/p ingress[0]"' in lines
    assert 'ip saddr @in1_4 counter accept comment "x/p ingress[1]"' in lines


def test_network_in_a_host_set_is_refused():
    fw = PodFirewall(pod="x/a", sets=(AddrSet("h", v4=("10.0.0.0/24",)),))
    with pytest.raises(BackendError, match="interval"):
        nft.render(fw)


def test_addr_port_set_and_its_match():
    fw = PodFirewall(pod="x/a", egress=isolated(rule("x/p", "egress", 0, addr_ports="eg0_ap")),
                     sets=(AddrPortSet("eg0_ap", v4=(("10.0.0.3", "TCP", 8080), ("10.0.0.2", "UDP", 53)),
                                       v6=(("fd00::3", "SCTP", 9),)),))
    text = nft.render(fw)
    assert '''\tset eg0_ap_4 {
\t\ttype ipv4_addr . inet_proto . inet_service
\t\telements = { 10.0.0.2 . udp . 53, 10.0.0.3 . tcp . 8080 }
\t}''' in text
    assert "\t\telements = { fd00::3 . sctp . 9 }" in text
    out = chain_lines(text, "output")
    assert 'ip daddr . meta l4proto . th dport @eg0_ap_4 counter accept comment "x/p egress[0]"' in out
    assert 'ip6 daddr . meta l4proto . th dport @eg0_ap_6 counter accept comment "x/p egress[0]"' in out


def test_ingress_addr_ports_match_the_source():
    fw = PodFirewall(pod="x/a", ingress=isolated(rule("x/p", "ingress", 0, addr_ports="ap")),
                     sets=(AddrPortSet("ap"),))
    assert 'ip saddr . meta l4proto . th dport @ap_4 counter accept comment "x/p ingress[0]"' \
        in chain_lines(nft.render(fw), "input")


def test_ipv6_node_addresses_follow_ipv4_ones():
    fw = PodFirewall(pod="x/a", node_ips=("fd00::1", "10.0.0.1"))
    lines = chain_lines(nft.render(fw), "output")
    assert lines[4:6] == ['ip daddr 10.0.0.1 counter accept comment "egress node"',
                          'ip6 daddr fd00::1 counter accept comment "egress node"']


def test_comments_are_sanitised_and_bounded():
    long_policy = "ns/" + "p" * 200
    fw = PodFirewall(pod="ns/" + "q" * 80, ingress=isolated(
        rule(long_policy, "ingress", 0), by=(long_policy, 'x/"quoted"')))
    lines = chain_lines(nft.render(fw), "input")
    for ln in lines:
        if 'comment "' in ln:
            comment = ln.split('comment "', 1)[1][:-1]
            assert len(comment) <= nft.COMMENT_MAX and '"' not in comment
    log = next(ln for ln in lines if ln.startswith("limit"))
    prefix = log.split('prefix "', 1)[1].split('"', 1)[0]
    assert len(prefix) <= base.LOG_PREFIX_MAX and prefix.startswith("netpol drop ingress ns/qqq")
    # cut comments stay distinct and deterministic
    assert base.fit("a" * 300, 40) == base.fit("a" * 300, 40) != base.fit("a" * 299 + "b", 40)


def test_render_is_deterministic_whatever_the_input_order():
    s1 = AddrSet("b", v4=("10.0.0.9/32", "10.0.0.1/32"))
    s2 = AddrSet("a", v4=("10.0.0.1/32", "10.0.0.9/32"))
    fw1 = PodFirewall(pod="x/a", sets=(s1, s2))
    fw2 = PodFirewall(pod="x/a", sets=(AddrSet("a", v4=("10.0.0.9/32", "10.0.0.1/32")),
                                       AddrSet("b", v4=("10.0.0.1/32", "10.0.0.9/32"))))
    assert nft.render(fw1) == nft.render(fw2)
    text = nft.render(fw1)
    assert text.index("set a_4") < text.index("set b_4")


def test_full_transaction_swaps_the_table_atomically():
    text = nft.full_transaction(OPEN)
    assert text.startswith("add table inet netpol\ndelete table inet netpol\ntable inet netpol {\n")


def test_delta_deletes_before_adds_per_family():
    old = PodFirewall(pod="x/a", sets=(
        AddrSet("n", v4=("10.0.0.0/25",), interval=True),
        AddrSet("h", v4=("10.0.0.5/32",), v6=("fd00::5/128",)),
        AddrPortSet("ap", v4=(("10.0.0.5", "TCP", 80),))))
    new = PodFirewall(pod="x/a", sets=(
        AddrSet("n", v4=("10.0.0.0/24",), interval=True),
        AddrSet("h", v4=("10.0.0.5/32", "10.0.0.6/32"), v6=()),
        AddrPortSet("ap", v4=(("10.0.0.6", "TCP", 80),))))
    text, added, removed = nft.delta_commands(old, new)
    assert text == (
        "delete element inet netpol ap_4 { 10.0.0.5 . tcp . 80 }\n"
        "delete element inet netpol h_6 { fd00::5 }\n"
        "delete element inet netpol n_4 { 10.0.0.0/25 . 0-255 }\n"
        "add element inet netpol ap_4 { 10.0.0.6 . tcp . 80 }\n"
        "add element inet netpol h_4 { 10.0.0.6 }\n"
        "add element inet netpol n_4 { 10.0.0.0/24 . 0-255 }\n")
    assert (added, removed) == (3, 3)
    assert nft.delta_commands(old, old) == ("", 0, 0)


LISTING = '''table inet netpol { # handle 7
\tcomment "pod x/a"
\tset h_4 { # handle 1
\t\ttype ipv4_addr
\t\telements = { 10.0.0.10, 10.0.0.2,
\t\t\t     10.0.0.9 }
\t}

\tchain input { # handle 2
\t\ttype filter hook input priority filter; policy accept;
\t\tip saddr @h_4 udp dport { 53, 5353 } counter packets 12 bytes 900 accept comment "x/p ingress[0]" # handle 5
\t\tip6 saddr @h_6 counter packets 3 bytes 100 accept comment "x/p ingress[0]" # handle 6
\t\tcounter packets 4 bytes 240 drop comment "ingress isolated by x/p" # handle 8
\t}
}
'''


def test_normalise_ignores_counters_handles_and_element_order():
    rendered = '''table inet netpol {
\tcomment "pod x/a"
\tset h_4 {
\t\ttype ipv4_addr
\t\telements = { 10.0.0.2, 10.0.0.9, 10.0.0.10 }
\t}

\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tip saddr @h_4 udp dport { 5353, 53 } counter accept comment "x/p ingress[0]"
\t\tip6 saddr @h_6 counter accept comment "x/p ingress[0]"
\t\tcounter drop comment "ingress isolated by x/p"
\t}
}
'''
    assert nft.normalise(LISTING) == nft.normalise(rendered)
    assert nft.normalise(LISTING) != nft.normalise(rendered.replace("10.0.0.9", "10.0.0.8"))


def test_parse_counters_sums_rules_sharing_a_comment():
    assert nft.parse_counters(LISTING) == [("x/p ingress[0]", 15, 1000),
                                           ("ingress isolated by x/p", 4, 240)]


def test_port_groups_helper():
    assert base.port_groups(()) == [(None, None)]
    assert base.port_groups((PortMatch("TCP", 80), PortMatch("TCP"))) == [("TCP", None)]
    assert base.port_groups((PortMatch("TCP", 10, 20), PortMatch("TCP", 15, 30), PortMatch("TCP", 31))) \
        == [("TCP", [(10, 31)])]


# --- shared helpers of backends/base.py -------------------------------------------------


def test_plan_none_delta_full():
    fw = PodFirewall(pod="x/a", ingress=isolated(rule("x/p", "ingress", 0, peers="s")),
                     sets=(AddrSet("s", v4=("10.0.0.1/32",)),))
    more = PodFirewall(pod="x/a", ingress=fw.ingress, sets=(AddrSet("s", v4=("10.0.0.1/32", "10.0.0.2/32")),))
    typed = PodFirewall(pod="x/a", ingress=fw.ingress, sets=(AddrSet("s", v4=("10.0.0.0/24",), interval=True),))
    assert base.plan(None, fw) == "full"
    assert base.plan(fw, PodFirewall(pod="x/a", ingress=fw.ingress, sets=(AddrSet("s", v4=("10.0.0.1/32",)),))) == "none"
    assert base.plan(fw, more) == "delta"
    assert base.plan(fw, typed) == "full"  # host set -> interval set: another set type
    assert base.plan(fw, PodFirewall(pod="x/a", sets=fw.sets)) == "full"  # rules changed


def test_fake_backend_verify_counters_and_apply_many():
    fake = base.FakeBackend(fail_on={"bad"})
    fw = PodFirewall(pod="x/a", ingress=isolated(rule("x/p", "ingress", 0)))
    results = fake.apply_many([("ns1", fw, None), ("bad", fw, None)])
    assert results[0].kind == "full" and isinstance(results[1], Exception)
    assert fake.verify("ns1", fw) and not fake.verify("ns2", fw)
    assert fake.counters("ns1")[4:7] == [("x/p ingress[0]", 0, 0), ("ingress log drop", 0, 0),
                                         ("ingress isolated by x/p", 0, 0)]  # the whole chain
    assert fake.counters("ns1")[0] == ("ingress established", 0, 0) and fake.counters("nowhere") == []
    assert isinstance(fake, base.Backend)


def test_run_jobs_keeps_order_and_errors_on_threads():
    from enforcer.errors import ApplyError

    def apply(ns, fw, prev):
        if ns == "b":
            raise ApplyError("no")
        return base.ApplyResult("full")

    out = base.run_jobs(apply, [("a", None, None), ("b", None, None), ("c", None, None)], workers=2)
    assert [getattr(r, "kind", "err") for r in out] == ["full", "err", "full"]


def test_raw_element_keys_pad_concatenated_fields_to_four_bytes():
    from backends.libnft import element_key

    assert element_key("10.0.0.5") == bytes([10, 0, 0, 5])
    assert element_key("fd00::5") == bytes([0xfd] + [0] * 14 + [5])
    assert element_key("10.0.0.5 . tcp . 8080") == bytes([10, 0, 0, 5, 6, 0, 0, 0, 0x1f, 0x90, 0, 0])
    assert len(element_key("fd00::5 . sctp . 9")) == 24


def test_normalise_reads_dotted_ipv6_as_rendered():
    """nft lists ::173.80.0.0 where we render ::ad50:0 (an ipBlock in ::/96): the same."""
    listed = "ip6 saddr ::173.80.0.0/112 counter accept comment \"x/p\"\nelements = { ::1.2.3.4, ::ffff:10.0.0.1 }"
    rendered = "ip6 saddr ::ad50:0/112 counter accept comment \"x/p\"\nelements = { ::102:304, ::ffff:a00:1 }"
    assert nft.normalise(listed) == nft.normalise(rendered)
    assert nft.normalise("ip saddr 10.0.0.1") == ["ip saddr 10.0.0.1"]
    assert nft.normalise("ip6 saddr ::173.80.0.0/112") != nft.normalise("ip6 saddr ::ad50:1/112")


@pytest.mark.parametrize("addr", ["fd00:240::d", "::1", "::", "FD00::A", "fd00:0:0:1:0:0:0:1", "1:0:0:2:0:0:0:3",
                                  "0:0:1::", "2001:db8:0:0:1:0:0:1", "::ffff:1.2.3.4", "::1.2.3.4",
                                  "::ffff:102:304", "fd00:0000:0000::0001", "ffff:" * 7 + "ffff"])
def test_ipv6_host_elements_are_written_as_ipaddress_writes_them(addr):
    # (the fast path through inet_ntop must agree with the general one, IPv4 tails included)
    cidr = f"{addr}/128"
    assert nft._host(cidr, "s") == (nft._addr(cidr)[0], base.host_only(cidr, "s"))
