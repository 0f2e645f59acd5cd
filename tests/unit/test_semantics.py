"""One test (or more) per point of SEMANTICS.md, on the model (compile + verdict)."""
from __future__ import annotations

import pytest

from enforcer.model import EGRESS, INGRESS
from tests.unit.clusters import (World, ext, ns, peer_block, peer_ns, peer_pods, pod, policy,
                                 rule, sel)

PORTS = ((80, "TCP", "http"), (81, "UDP", "dns"), (82, "SCTP", None))


def base(*extra):
    return (ns("x", {"team": "a"}), ns("y", {"team": "b"}),
            pod("x", "a", {"app": "a"}, ports=PORTS), pod("x", "b", {"app": "b"}, ports=PORTS),
            pod("y", "a", {"app": "a"}, ports=PORTS), *extra)


def test_default_allow_without_policies():
    w = World(*base())
    assert w.allowed("x/a", "y/a") and w.allowed("y/a", "x/b", 81, "UDP")


def test_ingress_isolation_by_selecting_policy_only():
    w = World(*base(policy("x", "deny", sel({"app": "a"}))))
    assert not w.allowed("x/b", "x/a")
    assert w.allowed("x/a", "x/b")  # x/b is not selected: not isolated
    assert w.allowed("x/a", "y/a")  # ingress-only policy: x/a's egress stays open


def test_policy_in_other_namespace_does_not_isolate():
    w = World(*base(policy("y", "deny")))
    assert w.allowed("x/b", "x/a")
    assert not w.allowed("x/b", "y/a")


def test_effective_policy_types_default():
    # egress rules present and no policyTypes: Ingress + Egress
    p = policy("x", "p", sel({"app": "a"}), egress=[rule(peer_pods({"app": "b"}))])
    w = World(*base(p))
    assert not w.allowed("x/a", "y/a") and w.allowed("x/a", "x/b")
    assert not w.allowed("y/a", "x/a")  # ingress isolated too, with no ingress rules


def test_egress_only_policy_types():
    p = policy("x", "p", sel({"app": "a"}), types={EGRESS})
    w = World(*base(p))
    assert not w.allowed("x/a", "x/b") and w.allowed("x/b", "x/a")


def test_policies_are_additive():
    p1 = policy("x", "p1", sel({"app": "a"}), ingress=[rule(peer_pods({"app": "b"}))])
    p2 = policy("x", "p2", sel({"app": "a"}), ingress=[rule(peer_ns({"team": "b"}))])
    w = World(*base(p1, p2))
    assert w.allowed("x/b", "x/a") and w.allowed("y/a", "x/a")
    v = w.verdict("y/a", "x/a")
    assert v.ingress.isolated_by == ("x/p1", "x/p2")
    assert [p.policy for p in v.ingress.allowed_by] == ["x/p2"]


def test_both_sides_must_allow():
    eg = policy("x", "eg", sel({"app": "b"}), egress=[rule(peer_pods({"app": "zzz"}))], types={EGRESS})
    w = World(*base(eg))
    assert not w.allowed("x/b", "y/a")
    assert w.allowed("y/a", "x/b")


def test_empty_rule_allows_all_sources_including_external():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule()])
    w = World(*base(p, ext("backup", ["192.168.50.10"])))
    assert w.allowed("backup", "x/a") and w.allowed("y/a", "x/a", 81, "UDP")


def test_empty_ingress_list_allows_nothing():
    w = World(*base(policy("x", "p", sel({"app": "a"}), ingress=[])))
    assert not w.allowed("x/b", "x/a")


def test_pod_selector_alone_is_policy_namespace():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_pods({"app": "a"}))])
    w = World(*base(p, pod("x", "c", {"app": "a"})))
    assert w.allowed("x/c", "x/a")
    assert not w.allowed("y/a", "x/a")  # same labels, other namespace


def test_namespace_and_pod_selector_in_one_peer_is_and():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_ns({"team": "b"}, {"app": "b"}))])
    w = World(*base(p, pod("y", "b", {"app": "b"})))
    assert w.allowed("y/b", "x/a")
    assert not w.allowed("y/a", "x/a")
    assert not w.allowed("x/b", "x/a")


def test_separate_peers_are_or():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_ns({"team": "b"}), peer_pods({"app": "b"}))])
    w = World(*base(p, pod("y", "b", {"app": "b"})))
    assert w.allowed("y/b", "x/a") and w.allowed("y/a", "x/a") and w.allowed("x/b", "x/a")


def test_empty_namespace_selector_is_all_namespaces():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_ns({}))])
    w = World(*base(p, ext("out", ["192.168.50.10"])))
    assert w.allowed("y/a", "x/a") and w.allowed("x/b", "x/a")
    assert not w.allowed("out", "x/a")  # selectors select pods only, never outside addresses


def test_ipblock_except_narrows_only_its_peer():
    p = policy("x", "p", sel({"app": "a"}), ingress=[
        rule(peer_block("192.168.50.0/24", "192.168.50.10/32")),
        rule(peer_block("192.168.50.10/32"), ports=[("TCP", 80)])])
    w = World(*base(p, ext("e1", ["192.168.50.10"]), ext("e2", ["192.168.50.11"])))
    assert w.allowed("e2", "x/a", 81, "UDP")
    assert not w.allowed("e1", "x/a", 81, "UDP")  # excepted, and rule 2 is TCP/80 only
    assert w.allowed("e1", "x/a", 80, "TCP")  # except is not a deny: another rule allows it


def test_ipblock_matches_pod_ips():
    w0 = World(*base())
    ip = w0.cluster.pods["y/a"].ips[0]
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_block(f"{ip}/32"))])
    w = World(*base(p))
    assert w.allowed("y/a", "x/a") and not w.allowed("x/b", "x/a")


@pytest.mark.parametrize("expr,labels,expected", [
    (("app", "In", ["a", "b"]), {"app": "b"}, True),
    (("app", "In", ["a"]), {"app": "b"}, False),
    (("app", "NotIn", ["a"]), {}, True),  # missing key matches NotIn
    (("app", "NotIn", ["a"]), {"app": "a"}, False),
    (("tier", "Exists", []), {"tier": "x"}, True),
    (("tier", "Exists", []), {}, False),
    (("tier", "DoesNotExist", []), {}, True),
    (("tier", "DoesNotExist", []), {"tier": ""}, False),
])
def test_match_expressions(expr, labels, expected):
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(peer_pods(None, expr))])
    w = World(*base(p, pod("x", "src", labels)))
    assert w.allowed("x/src", "x/a") is expected


def test_port_defaults_and_ranges():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(ports=[("TCP", 80, 90), ("UDP", None)])])
    w = World(*base(p))
    assert w.allowed("x/b", "x/a", 80) and w.allowed("x/b", "x/a", 90)
    assert not w.allowed("x/b", "x/a", 91) and not w.allowed("x/b", "x/a", 79)
    assert w.allowed("x/b", "x/a", 5353, "UDP")
    assert not w.allowed("x/b", "x/a", 80, "SCTP")


def test_named_port_resolves_per_destination_pod_ingress():
    p = policy("x", "p", {}, ingress=[rule(ports=[("TCP", "web")])])
    w = World(*base(p, pod("x", "d1", ports=[(8080, "TCP", "web")]), pod("x", "d2", ports=[(9090, "TCP", "web")])))
    assert w.allowed("x/a", "x/d1", 8080) and not w.allowed("x/a", "x/d1", 9090)
    assert w.allowed("x/a", "x/d2", 9090) and not w.allowed("x/a", "x/d2", 8080)


def test_named_port_resolves_per_peer_pod_egress():
    p = policy("x", "p", sel({"app": "a"}), egress=[rule(peer_ns({}), ports=[("TCP", "web")])], types={EGRESS})
    w = World(*base(p, pod("y", "d1", ports=[(8080, "TCP", "web")]), pod("y", "d2", ports=[(9090, "TCP", "web")]),
                    ext("out", ["192.168.50.10"], ports=[(8080, "TCP")])))
    assert w.allowed("x/a", "y/d1", 8080) and not w.allowed("x/a", "y/d1", 9090)
    assert w.allowed("x/a", "y/d2", 9090) and not w.allowed("x/a", "y/d2", 8080)
    assert not w.allowed("x/a", "out", 8080)  # a named port never matches a non-pod destination


def test_named_port_with_wrong_protocol_does_not_match():
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(ports=[("UDP", "http")])])
    w = World(*base(p))
    assert not w.allowed("x/b", "x/a", 80, "TCP") and not w.allowed("x/b", "x/a", 80, "UDP")


@pytest.mark.parametrize("proto", ["UDP", "SCTP"])
def test_udp_or_sctp_only_rule_still_isolates_tcp(proto):
    p = policy("x", "p", sel({"app": "a"}), ingress=[rule(ports=[(proto, 81)])])
    w = World(*base(p))
    assert w.allowed("x/b", "x/a", 81, proto)
    assert not w.allowed("x/b", "x/a", 81, "TCP") and not w.allowed("x/b", "x/a", 80, "TCP")


def test_self_and_node_always_allowed():
    w = World(*base(policy("x", "deny", types={INGRESS, EGRESS})))
    assert w.allowed("x/a", "x/a")
    assert w.allowed("10.244.0.1", "x/a") and w.allowed("x/a", "10.244.0.1")
    assert not w.allowed("x/b", "x/a")


def test_external_endpoint_only_pod_side_applies():
    w = World(*base(policy("x", "eg", sel({"app": "a"}), types={EGRESS}), ext("out", ["192.168.50.10"])))
    assert not w.allowed("x/a", "out") and w.allowed("x/b", "out") and w.allowed("out", "x/a")


def test_ipv6_and_dual_stack():
    dual = pod("x", "d", {"app": "d"}, ips=("10.244.9.9", "fd00:10:244::99"))
    src = pod("y", "s", {"app": "s"}, ips=("10.244.9.10", "fd00:10:244::100"))
    p = policy("x", "p", sel({"app": "d"}), ingress=[rule(peer_block("fd00:10:244::100/128"))])
    w = World(*base(dual, src, p))
    assert w.allowed("y/s", "x/d", family=6)
    assert not w.allowed("y/s", "x/d", family=4)


def test_legacy_annotation_only_when_asked():
    objs = base(ns("x", {"team": "a"}, legacy=True))
    assert World(*objs).allowed("x/b", "x/a")
    assert not World(*objs, legacy=True).allowed("x/b", "x/a")
