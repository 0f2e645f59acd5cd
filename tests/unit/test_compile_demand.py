"""Demand-driven compile (issue 15): the firewalls of the pods asked for equal those of a
full compile, before and after incremental changes; integer interval arithmetic equals
``ipaddress``; the per-namespace pod index equals brute force."""
from __future__ import annotations

import ipaddress

from hypothesis import given, settings, strategies as st

from backends import base
from enforcer import intervals
from enforcer.compiler import ipam
from enforcer.compiler.compile import Compiler, block_networks, compile_cluster
from enforcer.compiler.labelindex import PodIndex
from enforcer.model import IPBlock
from enforcer.compiler.selectors import matches
from tests.unit.test_compile import worlds
from tests.unit.test_selectors import LABELS, selectors


# ------------------------------------------------------------ demand-driven == full


@settings(max_examples=60, deadline=None)
@given(worlds(), worlds(), st.data())
def test_asked_for_firewalls_equal_a_full_compile(a, b, data):
    full_a = compile_cluster(a, node_ips=ipam.node_ips())
    asked = data.draw(st.lists(st.sampled_from(sorted(a.pods)), unique=True))
    comp = Compiler(a, node_ips=ipam.node_ips())
    for key in asked:
        assert comp.firewall(key) == full_a[key]
    # Incremental from there: the pods built so far stay right, the changed ones are said,
    # and pods never asked for are right when asked for later.
    before = {k: comp.firewall(k) for k in asked}
    changed = comp.sync(b)
    full_b = compile_cluster(b, node_ips=ipam.node_ips())
    for key in asked:
        if key in full_b and before[key] != full_b[key]:
            assert key in changed
    for key in sorted(b.pods):
        assert comp.firewall(key) == full_b[key]


def test_only_the_groups_a_built_firewall_reads_are_computed():
    from tests.unit.clusters import cluster, peer_pods, pod, policy, rule, sel

    c = cluster(pod("x", "a", {"app": "a"}), pod("y", "b", {"app": "b"}),
                policy("x", "pa", sel({"app": "a"}), ingress=[rule(peer_pods({"role": "x"}))]),
                policy("y", "pb", sel({"app": "b"}), ingress=[rule(peer_pods({"role": "y"}))]))
    comp = Compiler(c)
    assert comp._members == {}
    comp.firewall("x/a")
    assert [g[0] for g in comp._members] == ["x"]


def test_a_replaced_policy_keeps_the_groups_it_still_reads():
    """A port change keeps the rule's peer group (its members are not computed again: at
    150,000 pods that is thousands of addresses per change), and the kept group still
    follows relabels; a group no version reads any more is dropped."""
    from dataclasses import replace

    from tests.unit.clusters import cluster, peer_pods, pod, policy, rule, sel

    c = cluster(pod("x", "a", {"app": "a"}, ["10.0.0.1"]), pod("x", "c", {"role": "c"}, ["10.0.0.2"]),
                pod("x", "d", {"role": "d"}, ["10.0.0.3"]),
                policy("x", "pa", sel({"app": "a"}), ingress=[rule(peer_pods({"role": "c"}), ports=[("TCP", 80)])]))
    comp = Compiler(c)
    comp.firewall("x/a")
    (g, members), = comp._members.items()
    assert members == {"x/c"}
    pol = c.policies["x/pa"]
    on_81 = replace(pol, ingress=(rule(peer_pods({"role": "c"}), ports=[("TCP", 81)]),))
    assert comp.set_policy(on_81) == {"x/a"}
    assert comp._members[g] is members
    changed = comp.set_pod(replace(c.pods["x/d"], labels={"role": "c"}))
    assert "x/a" in changed and comp._members[g] == {"x/c", "x/d"}
    c2 = replace(c, pods={**c.pods, "x/d": replace(c.pods["x/d"], labels={"role": "c"})},
                 policies={"x/pa": on_81})
    assert comp.firewall("x/a") == Compiler(c2).firewall("x/a")
    to_d = replace(pol, ingress=(rule(peer_pods({"role": "d"}), ports=[("TCP", 81)]),))
    comp.set_policy(to_d)
    assert g not in comp._members and g not in comp._group_rules
    assert comp.firewall("x/a") == Compiler(replace(c2, policies={"x/pa": to_d})).firewall("x/a")


# ------------------------------------------------------------ intervals == ipaddress

V4 = st.integers(0, 2**32 - 1)
V6 = st.integers(0, 2**128 - 1)


@st.composite
def cidrs(draw, family=None):
    fam = family or draw(st.sampled_from([4, 6]))
    bits = 32 if fam == 4 else 128
    value = draw(V4 if fam == 4 else V6)
    # Mostly long prefixes near each other, so that excepts and collapses meet.
    plen = draw(st.integers(max(0, bits - 12), bits) | st.integers(0, bits))
    addr = ipaddress.IPv6Address(value) if fam == 6 else ipaddress.IPv4Address(value & 0xFFFFF0FF)
    return f"{addr}/{plen}"


@settings(max_examples=300, deadline=None)
@given(st.lists(cidrs(), max_size=12))
def test_collapse_equals_ipaddress(nets):
    objs = [ipaddress.ip_network(n, strict=False) for n in nets]
    r = {4: [], 6: []}
    for n in nets:
        fam, rng = intervals.parse_cidr(n)
        r[fam].append(rng)
    got = intervals.collapse((), r[4], r[6])
    want = tuple(tuple(str(n) for n in ipaddress.collapse_addresses(o for o in objs if o.version == v)) for v in (4, 6))
    assert got == want


@settings(max_examples=300, deadline=None)
@given(cidrs(), st.lists(cidrs(), max_size=4))
def test_block_subtraction_equals_ipaddress(cidr, excepts):
    nets = [ipaddress.ip_network(cidr, strict=False)]
    for e in excepts:
        hole = ipaddress.ip_network(e, strict=False)
        out = []
        for n in nets:
            if hole.version == n.version and hole.subnet_of(n):
                out.extend(n.address_exclude(hole))
            elif hole.version == n.version and n.subnet_of(hole):
                continue
            else:
                out.append(n)
        nets = out
    want = tuple(tuple(str(n) for n in ipaddress.collapse_addresses(x for x in nets if x.version == v)) for v in (4, 6))
    assert block_networks(IPBlock(cidr, tuple(excepts))) == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(V4.map(lambda v: str(ipaddress.IPv4Address(v))),
                          V6.map(lambda v: str(ipaddress.IPv6Address(v)))), max_size=20))
def test_host_sets_equal_ipaddress(addrs):
    objs = [ipaddress.ip_address(a) for a in addrs]
    want = tuple(tuple(f"{a}/{a.max_prefixlen}" for a in sorted({o for o in objs if o.version == v})) for v in (4, 6))
    assert intervals.host_cidrs(addrs) == want


@settings(max_examples=300, deadline=None)
@given(cidrs())
def test_element_text_equals_ipaddress(cidr):
    net = ipaddress.ip_network(cidr, strict=False)
    assert base.host_or_cidr(cidr) == (str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net))


@settings(max_examples=200, deadline=None)
@given(st.lists(cidrs(4), max_size=6), V4)
def test_contains_equals_ipaddress(nets, value):
    ranges = intervals.merge(intervals.parse_cidr(n)[1] for n in nets)
    ip = ipaddress.IPv4Address(value)
    assert intervals.contains(ranges, value) == any(ip in ipaddress.ip_network(n, strict=False) for n in nets)


# ------------------------------------------------------------ per-namespace index


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), selectors()), st.lists(st.tuples(st.sampled_from("xyz"), LABELS), max_size=12),
       st.sets(st.sampled_from("xyzw")))
def test_pod_index_select_equals_brute_force(sel, objects, namespaces):
    idx = PodIndex()
    for i, (ns, labels) in enumerate(objects):
        idx.add(f"o{i}", ns, labels)
    if objects:
        idx.remove("o0")
    expected = {f"o{i}" for i, (ns, labels) in enumerate(objects)
                if i and ns in namespaces and (sel is None or matches(sel, labels))}
    assert idx.select(sel, namespaces) == expected
