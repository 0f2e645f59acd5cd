"""iptables rendering: hand-built PodFirewalls, exact text (no root, no kernel)."""
from __future__ import annotations

import pytest

from backends import iptables as ipt
from enforcer.errors import BackendError
from enforcer.ir import (AddrPortSet, AddrSet, AllowRule, DirectionPolicy, PodFirewall,
                         PortMatch, Provenance)

OPEN = PodFirewall(pod="x/a", ips=("10.0.0.2",), node_ips=("10.0.0.1", "fd00::1"))


def rule(policy: str, direction: str, index: int, **kw) -> AllowRule:
    return AllowRule(Provenance(policy, direction, index), **kw)


def isolated(*rules: AllowRule, by=("x/p",)) -> DirectionPolicy:
    return DirectionPolicy(True, tuple(by), tuple(rules))


def lines(fw: PodFirewall, family: int, direction: str) -> list[str]:
    rs = ipt.build(fw)
    chain = ipt.CHAINS[direction]
    return [ipt.rule_line(chain, a) for a in rs.rules[family][chain]]


def test_not_isolated_golden():
    assert ipt.render(OPEN) == '''# pod x/a
# ipsets (ipset restore; applied by swapping in sets built under temporary names)
# IPv4 (iptables-restore --noflush)
*filter
:NETPOL-INGRESS - [0:0]
:NETPOL-EGRESS - [0:0]
-I INPUT 1 -m comment --comment "netpol ingress" -j NETPOL-INGRESS
-I OUTPUT 1 -m comment --comment "netpol egress" -j NETPOL-EGRESS
-A NETPOL-INGRESS -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "ingress established" -j ACCEPT
-A NETPOL-INGRESS -m conntrack --ctstate INVALID -m comment --comment "ingress invalid" -j DROP
-A NETPOL-INGRESS -i lo -m comment --comment "ingress loopback" -j ACCEPT
-A NETPOL-INGRESS -s 10.0.0.1/32 -m comment --comment "ingress node" -j ACCEPT
-A NETPOL-INGRESS -m comment --comment "ingress not isolated" -j ACCEPT
-A NETPOL-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "egress established" -j ACCEPT
-A NETPOL-EGRESS -m conntrack --ctstate INVALID -m comment --comment "egress invalid" -j DROP
-A NETPOL-EGRESS -o lo -m comment --comment "egress loopback" -j ACCEPT
-A NETPOL-EGRESS -d 10.0.0.1/32 -m comment --comment "egress node" -j ACCEPT
-A NETPOL-EGRESS -m comment --comment "egress not isolated" -j ACCEPT
COMMIT
# IPv6 (ip6tables-restore --noflush)
*filter
:NETPOL-INGRESS - [0:0]
:NETPOL-EGRESS - [0:0]
-I INPUT 1 -m comment --comment "netpol ingress" -j NETPOL-INGRESS
-I OUTPUT 1 -m comment --comment "netpol egress" -j NETPOL-EGRESS
-A NETPOL-INGRESS -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "ingress established" -j ACCEPT
-A NETPOL-INGRESS -m conntrack --ctstate INVALID -m comment --comment "ingress invalid" -j DROP
-A NETPOL-INGRESS -i lo -m comment --comment "ingress loopback" -j ACCEPT
-A NETPOL-INGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 133 -m comment --comment "ingress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-INGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 134 -m comment --comment "ingress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-INGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m comment --comment "ingress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-INGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m comment --comment "ingress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-INGRESS -s fd00::1/128 -m comment --comment "ingress node" -j ACCEPT
-A NETPOL-INGRESS -m comment --comment "ingress not isolated" -j ACCEPT
-A NETPOL-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "egress established" -j ACCEPT
-A NETPOL-EGRESS -m conntrack --ctstate INVALID -m comment --comment "egress invalid" -j DROP
-A NETPOL-EGRESS -o lo -m comment --comment "egress loopback" -j ACCEPT
-A NETPOL-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 133 -m comment --comment "egress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 134 -m comment --comment "egress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m comment --comment "egress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m comment --comment "egress ipv6 neighbour discovery" -j ACCEPT
-A NETPOL-EGRESS -d fd00::1/128 -m comment --comment "egress node" -j ACCEPT
-A NETPOL-EGRESS -m comment --comment "egress not isolated" -j ACCEPT
COMMIT
'''


def test_isolated_without_rules_ends_in_log_and_drop():
    fw = PodFirewall(pod="x/a", ingress=DirectionPolicy(True, ("x/deny",), ()))
    assert lines(fw, 4, "ingress")[-3:] == [
        '-A NETPOL-INGRESS -i lo -m comment --comment "ingress loopback" -j ACCEPT',
        '-A NETPOL-INGRESS -m limit --limit 10/sec -m comment --comment "ingress log drop" -j NFLOG '
        '--nflog-prefix "netpol drop ingress x/a: " --nflog-group 100',
        '-A NETPOL-INGRESS -m comment --comment "ingress isolated by x/deny" -j DROP',
    ]


def test_peers_none_ports_empty_and_ports_only():
    fw = PodFirewall(pod="x/a", ingress=isolated(
        rule("x/all", "ingress", 0),
        rule("x/p", "ingress", 1, ports=(PortMatch("UDP"), PortMatch("TCP", 80)))))
    assert lines(fw, 6, "ingress")[7:10] == [
        '-A NETPOL-INGRESS -m comment --comment "x/all ingress[0]" -j ACCEPT',
        '-A NETPOL-INGRESS -p tcp -m tcp --dport 80 -m comment --comment "x/p ingress[1]" -j ACCEPT',
        '-A NETPOL-INGRESS -p udp -m comment --comment "x/p ingress[1]" -j ACCEPT',
    ]


def test_peer_sets_ports_ranges_and_protocols():
    ports = (PortMatch("TCP", 80), PortMatch("TCP", 8000, 8080), PortMatch("UDP", 53),
             PortMatch("SCTP", 9, 10), PortMatch("TCP", 81))
    fw = PodFirewall(pod="x/a", egress=isolated(rule("x/p", "egress", 0, peers="eg0", ports=ports)),
                     sets=(AddrSet("eg0", v4=("10.0.0.3/32",)),))
    assert [ln for ln in lines(fw, 4, "egress") if "x/p egress[0]" in ln] == [
        '-A NETPOL-EGRESS -p tcp -m set --match-set np.eg0.ip4 dst -m multiport --dports 80:81,8000:8080 '
        '-m comment --comment "x/p egress[0]" -j ACCEPT',
        '-A NETPOL-EGRESS -p udp -m set --match-set np.eg0.ip4 dst -m udp --dport 53 '
        '-m comment --comment "x/p egress[0]" -j ACCEPT',
        '-A NETPOL-EGRESS -p sctp -m set --match-set np.eg0.ip4 dst -m sctp --dport 9:10 '
        '-m comment --comment "x/p egress[0]" -j ACCEPT',
    ]
    assert all("np.eg0.ip6 dst" in ln for ln in lines(fw, 6, "egress") if "x/p egress[0]" in ln)


def test_multiport_is_split_at_fifteen_slots():
    ports = tuple(PortMatch("TCP", p) for p in range(1000, 1040, 2))  # 20 single ports
    fw = PodFirewall(pod="x/a", ingress=isolated(rule("x/p", "ingress", 0, ports=ports)))
    got = [ln for ln in lines(fw, 4, "ingress") if "x/p ingress[0]" in ln]
    assert len(got) == 2
    first = got[0].split("--dports ")[1].split()[0].split(",")
    second = got[1].split("--dports ")[1].split()[0].split(",")
    assert len(first) == 15 and len(second) == 5
    # ranges take two slots
    assert ipt._port_matches("tcp", [(i * 10, i * 10 + 1) for i in range(8)]) == [
        ("-m", "multiport", "--dports", ",".join(f"{i * 10}:{i * 10 + 1}" for i in range(7))),
        ("-m", "multiport", "--dports", "70:71")]


def test_ipsets_host_interval_and_addr_port():
    fw = PodFirewall(pod="x/a", sets=(
        AddrSet("h", v4=("10.0.0.10/32", "10.0.0.9/32"), v6=("fd00::3/128",)),
        AddrSet("n", v4=("0.0.0.0/0",), v6=("fd00::/64", "::/0"), interval=True),
        AddrPortSet("ap", v4=(("10.0.0.3", "TCP", 80),), v6=(("fd00::3", "SCTP", 9),))))
    assert ipt.sets_text(ipt.build(fw).sets) == '''create np.ap.ipp4 hash:ip,port family inet comment
add np.ap.ipp4 10.0.0.3,tcp:80
create np.ap.ipp6 hash:ip,port family inet6 comment
add np.ap.ipp6 fd00::3,sctp:9
create np.h.ip4 hash:ip family inet comment
add np.h.ip4 10.0.0.9
add np.h.ip4 10.0.0.10
create np.h.ip6 hash:ip family inet6 comment
add np.h.ip6 fd00::3
create np.n.net4 hash:net family inet comment
add np.n.net4 0.0.0.0/1
add np.n.net4 128.0.0.0/1
create np.n.net6 hash:net family inet6 comment
add np.n.net6 ::/1
add np.n.net6 8000::/1
add np.n.net6 fd00::/64
'''


def test_addr_port_match_direction():
    fw = PodFirewall(pod="x/a", ingress=isolated(rule("x/p", "ingress", 0, addr_ports="ap")),
                     egress=isolated(rule("x/p", "egress", 0, addr_ports="ap")),
                     sets=(AddrPortSet("ap"),))
    assert '-A NETPOL-INGRESS -m set --match-set np.ap.ipp4 src,dst -m comment --comment "x/p ingress[0]" -j ACCEPT' \
        in lines(fw, 4, "ingress")
    assert '-A NETPOL-EGRESS -m set --match-set np.ap.ipp6 dst,dst -m comment --comment "x/p egress[0]" -j ACCEPT' \
        in lines(fw, 6, "egress")


def test_set_names_fit_in_31_characters_and_stay_distinct():
    a = ipt.ipset_name("ingress-" + "x" * 40, "net", 6)
    b = ipt.ipset_name("ingress-" + "x" * 39 + "y", "net", 6)
    assert len(a) <= 31 and len(b) <= 31 and a != b
    assert a.startswith("np.") and a.endswith(".net6")
    assert ipt.ipset_name("in0", "ip", 4) == "np.in0.ip4"


def test_bad_elements_are_refused_before_the_kernel():
    with pytest.raises(BackendError, match="bad element"):
        ipt.build(PodFirewall(pod="x/a", sets=(AddrSet("h", v4=("10.0.0.999/32",)),)))
    with pytest.raises(BackendError):
        ipt.build(PodFirewall(pod="x/a", sets=(AddrSet("h", v4=("10.0.0.0/24",)),)))


def test_delta_text():
    old = ipt.build(PodFirewall(pod="x/a", sets=(AddrSet("h", v4=("10.0.0.5/32", "10.0.0.7/32")),
                                                 AddrSet("n", v4=("0.0.0.0/0",), interval=True))))
    new = ipt.build(PodFirewall(pod="x/a", sets=(AddrSet("h", v4=("10.0.0.6/32", "10.0.0.7/32")),
                                                 AddrSet("n", v4=("0.0.0.0/1",), interval=True))))
    assert ipt.delta_text(old, new) == (
        "del np.h.ip4 10.0.0.5\ndel np.n.net4 128.0.0.0/1\nadd np.h.ip4 10.0.0.6\n", 1, 2)


def test_rules_text_fixes_jumps_only_when_needed():
    rs = ipt.build(OPEN)
    text = ipt.rules_text(rs, 4, jumps=False)
    assert "INPUT" not in text and text.startswith("*filter\n:NETPOL-INGRESS - [0:0]\n")
    text = ipt.rules_text(rs, 4, jumps=True, delete_jumps={"INPUT": [1, 3]})
    assert "-D INPUT 3\n-D INPUT 1\n-I INPUT 1 -m comment" in text


SAVE = '''# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:NETPOL-EGRESS - [0:0]
:NETPOL-INGRESS - [0:0]
[5:300] -A INPUT -m comment --comment "netpol ingress" -j NETPOL-INGRESS
[0:0] -A INPUT -j ACCEPT
[1:60] -A OUTPUT -s 10.0.0.9/32 -j ACCEPT
[7:420] -A OUTPUT -m comment --comment "netpol egress" -j NETPOL-EGRESS
[3:180] -A NETPOL-INGRESS -m comment --comment x -j ACCEPT
[2:120] -A NETPOL-INGRESS -m comment --comment "ingress isolated by x/p" -j DROP
COMMIT
'''


def test_parse_save_and_counters():
    st = ipt.parse_save(SAVE)
    assert st.jumps == {"INPUT": [1], "OUTPUT": [2]} and not st.jumps_ok()
    assert st.rules["NETPOL-INGRESS"][0] == ("-m", "comment", "--comment", "x", "-j", "ACCEPT")
    assert ipt.counters_of({4: st, 6: ipt.FamilyState()}) == [
        ("x", 3, 180), ("ingress isolated by x/p", 2, 120)]


def test_matches_compares_rules_jumps_and_sets():
    fw = PodFirewall(pod="x/a", sets=(AddrSet("h", v4=("10.0.0.5/32",)),))
    rs = ipt.build(fw)

    def state(fam):
        st = ipt.FamilyState(chains=set(ipt.CHAINS.values()),
                             rules={c: list(r) for c, r in rs.rules[fam].items()},
                             jumps={"INPUT": [1], "OUTPUT": [1]})
        return st

    sets = {s.name: (s.type, s.family, set(s.elements)) for s in rs.sets}
    assert ipt.matches(rs, {4: state(4), 6: state(6)}, sets)
    broken = state(4)
    broken.rules["NETPOL-INGRESS"].pop()
    assert not ipt.matches(rs, {4: broken, 6: state(6)}, sets)
    moved = state(6)
    moved.jumps["INPUT"] = [2]
    assert not ipt.matches(rs, {4: state(4), 6: moved}, sets)
    assert not ipt.matches(rs, {4: state(4), 6: state(6)}, {**sets, "nt.h.ip4": ("hash:ip", 4, set())})
    sets["np.h.ip4"][2].add("10.0.0.6")
    assert not ipt.matches(rs, {4: state(4), 6: state(6)}, sets)


def test_quote_keeps_save_style_tokens_bare():
    assert ipt.quote("RELATED,ESTABLISHED") == "RELATED,ESTABLISHED"
    assert ipt.quote("x/p ingress[0]") == '"x/p ingress[0]"'
