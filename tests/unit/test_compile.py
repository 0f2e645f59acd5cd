"""The compiler: IR shape, shared sets, and incremental == from-scratch."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from enforcer.compiler import ipam
from enforcer import ir
from enforcer.compiler.compile import Compiler, block_networks, compile_cluster
from enforcer.model import EGRESS, INGRESS, IPBlock, Namespace
from tests.unit.clusters import cluster, ns, peer_block, peer_ns, peer_pods, pod, policy, rule, sel


def test_rule_count_does_not_grow_with_peers():
    pods = [pod("x", f"p{i}", {"role": "api"}) for i in range(200)]
    target = pod("x", "db", {"role": "db"})
    p = policy("x", "db", sel({"role": "db"}), ingress=[rule(peer_pods({"role": "api"}), ports=[("TCP", 3306)])])
    fw = compile_cluster(cluster(target, *pods, p))["x/db"]
    assert len(fw.ingress.rules) == 1
    assert len(fw.set(fw.ingress.rules[0].peers).v4) == 200
    assert fw.ingress.rules[0].provenance == ir.Provenance("x/db", "ingress", 0)


def test_block_networks_subtracts_excepts():
    v4, v6 = block_networks(IPBlock("10.0.0.0/24", ("10.0.0.0/25", "10.0.0.192/26")))
    assert v4 == ("10.0.0.128/26",) and v6 == ()


def test_interval_flag_from_rule_kind():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_block("10.9.0.5/32")), rule(peer_pods({}))])
    fw = compile_cluster(cluster(pod("x", "a", {"app": "a"}), p))["x/a"]
    s0, s1 = (fw.set(r.peers) for r in fw.ingress.rules)
    assert s0.interval and not s1.interval


def test_pod_set_and_block_overlap_collapses():
    c = cluster(pod("x", "a", {"app": "a"}), pod("x", "b", {"app": "b"}))
    ip_b = c.pods["x/b"].ips[0]
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_pods({"app": "b"}), peer_block("10.244.0.0/24"))])
    fw = compile_cluster(cluster(pod("x", "a", {"app": "a"}), pod("x", "b", {"app": "b"}), p))["x/a"]
    assert ip_b.startswith("10.244.0.")
    assert fw.set(fw.ingress.rules[0].peers).v4 == ("10.244.0.0/24",)


def test_label_change_is_a_set_delta_for_referencing_pods():
    objs = [pod("x", "db", {"role": "db"}), pod("x", "web", {"role": "web"}),
            policy("x", "db", sel({"role": "db"}), ingress=[rule(peer_pods({"role": "api"}))])]
    c = cluster(*objs)
    comp = Compiler(c)
    before = comp.firewall("x/db")
    changed = comp.set_pod(replace(c.pods["x/web"], labels={"role": "api"}))
    assert changed == {"x/db", "x/web"} - {"x/web"} | ({"x/web"} & changed)
    after = comp.firewall("x/db")
    assert ir.same_structure(before, after)
    (delta,) = ir.set_deltas(before, after)
    assert delta.add == {c.pods["x/web"].ips[0] + "/32"} and not delta.remove


# ------------------------------------------------------------ incremental == scratch

LABELS = st.dictionaries(st.sampled_from(["app", "role", "tier"]), st.sampled_from(["a", "b"]), max_size=2)
SELS = st.builds(lambda d: sel(d), LABELS)


@st.composite
def worlds(draw):
    nss = ["x", "y", "z"]
    pods = [pod(draw(st.sampled_from(nss)), f"p{i}", draw(LABELS),
                ports=[(80, "TCP", "web")] if draw(st.booleans()) else [(81, "TCP", "web")])
            for i in range(draw(st.integers(1, 6)))]
    pods = list({p.key: p for p in pods}.values())
    pols = []
    for i in range(draw(st.integers(0, 4))):
        peers = draw(st.lists(st.one_of(
            st.builds(lambda s: peer_pods(dict(s.match_labels)), SELS),
            st.builds(lambda a, b: peer_ns(dict(a.match_labels), dict(b.match_labels)), SELS, SELS),
            st.just(peer_block("10.244.0.0/30", "10.244.0.2/32"))), max_size=2))
        ports = draw(st.sampled_from([[], [("TCP", 80)], [("TCP", "web")]]))
        r = rule(*peers, ports=ports)
        kind = draw(st.sampled_from(["in", "eg", "both"]))
        pols.append(policy(draw(st.sampled_from(nss)), f"np{i}", draw(SELS),
                           ingress=[r] if kind != "eg" else [], egress=[r] if kind != "in" else [],
                           types={INGRESS, EGRESS} if kind == "both" else ({INGRESS} if kind == "in" else {EGRESS})))
    namespaces = [ns(n, draw(LABELS)) for n in nss]
    return cluster(*namespaces, *pods, *pols)


@settings(max_examples=60, deadline=None)
@given(worlds(), worlds())
def test_incremental_sync_equals_scratch(a, b):
    # Keep b's pod addresses stable where pods share keys (as IPAM does in a lab).
    comp = Compiler(a, node_ips=ipam.node_ips())
    before = comp.firewalls()
    changed = comp.sync(b)
    scratch = compile_cluster(b, node_ips=ipam.node_ips())
    assert comp.firewalls() == scratch
    for key, fw in scratch.items():
        if before.get(key) != fw:
            assert key in changed


def test_replaced_set_elements_are_a_change():
    s = ir.AddrSet("in0", ("10.0.0.1/32",))
    t = replace(s, v4=("10.0.0.2/32",))
    assert s != t and s == ir.AddrSet("in0", ("10.0.0.1/32",))


def test_dual_stack_peers_beside_an_ip_block_are_named_in_the_set():
    # A rule with pods and an ipBlock makes an interval set whose element notes find the
    # pods by address: IPv4 and IPv6 addresses together must not be compared (a TypeError
    # once, for every dual-stack input with such a rule, and for lab up --ipv6).
    x = pod("x", "a", {"app": "a"}, ips=("10.244.0.5", "fd00:10:244::5"))
    y = pod("x", "b", ips=("10.244.0.6", "fd00:10:244::6"))
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_block("10.0.0.0/8"), peer_pods())])
    fw = compile_cluster(cluster(ns("x"), x, y, p))["x/a"]
    s = fw.set(fw.ingress.rules[0].peers)
    named = " ".join(note for _, note in s.notes)
    assert "x/a" in named and "x/b" in named and "10.0.0.0/8" in named
