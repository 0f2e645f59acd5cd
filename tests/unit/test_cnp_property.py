"""Property tests of the tiers: for random ClusterNetworkPolicies over the conformance model,
the compiled firewalls' verdict (what the backends render) equals a direct reading of the
objects (the API's evaluation order, written here a second time, independently of
enforcer/cnp/tiers.py); and a cluster with no CNP compiles to firewalls without tiers."""
from __future__ import annotations

import ipaddress

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.views import verdict
from enforcer.compiler.compile import compile_cluster
from enforcer.load.manifests import decode_text, build_cluster
from enforcer.compiler.selectors import matches
from tests.conformance.cnp.cases import BASE

HOUSES = ["gryffindor", "slytherin", "hufflepuff", "ravenclaw"]
BASE_TEXT = BASE.read_text()

ns_sel = st.one_of(st.just({}), st.sampled_from(HOUSES).map(lambda h: {"matchLabels": {"conformance-house": h}}))
pod_sel = st.one_of(st.just({}), st.sampled_from(HOUSES).map(lambda h: {"matchLabels": {"conformance-house": h}}))
selection = st.one_of(ns_sel.map(lambda s: {"namespaces": s}),
                      st.tuples(ns_sel, pod_sel).map(lambda t: {"pods": {"namespaceSelector": t[0], "podSelector": t[1]}}))
networks = st.lists(st.sampled_from(["10.244.1.0/24", "10.244.2.1/32", "10.244.0.0/16", "0.0.0.0/0", "10.244.3.2/31"]),
                    min_size=1, max_size=2, unique=True).map(lambda n: {"networks": n})
protocol = st.one_of(
    st.tuples(st.sampled_from(["tcp", "udp"]), st.sampled_from([80, 53, 8080])).map(
        lambda t: {t[0]: {"destinationPort": {"number": t[1]}}}),
    st.tuples(st.sampled_from(["tcp", "udp"]), st.sampled_from([(50, 90), (5000, 9000)])).map(
        lambda t: {t[0]: {"destinationPort": {"range": {"start": t[1][0], "end": t[1][1]}}}}),
    st.sampled_from(["web", "dns"]).map(lambda n: {"destinationNamedPort": n}))


@st.composite
def rule(draw, direction):
    peers = draw(st.lists(selection if direction == "ingress" else st.one_of(selection, networks), min_size=1, max_size=2))
    r = {"action": draw(st.sampled_from(["Accept", "Deny", "Pass"])), ("from" if direction == "ingress" else "to"): peers}
    if draw(st.booleans()):
        protos = draw(st.lists(protocol, min_size=1, max_size=2))
        if any("networks" in p for p in peers):
            protos = [p for p in protos if "destinationNamedPort" not in p] or [{"tcp": {"destinationPort": {"number": 80}}}]
        r["protocols"] = protos
    return r


@st.composite
def cnp(draw, i):
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": f"p{i}"},
            "spec": {"tier": draw(st.sampled_from(["Admin", "Baseline"])), "priority": draw(st.integers(0, 3)),
                     "subject": draw(selection),
                     "ingress": draw(st.lists(rule("ingress"), max_size=3)),
                     "egress": draw(st.lists(rule("egress"), max_size=3))}}


np_policy = st.sampled_from([None, {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"namespace": "network-policy-conformance-gryffindor", "name": "np"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"conformance-house": "ravenclaw"}}}]}],
             "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}]}]}}])


def _cluster(docs):
    objs, problems, _ = decode_text(BASE_TEXT + "\n---\n" + yaml.safe_dump_all(docs), "gen.yaml")
    errors = [str(p) for p in problems] + [str(p) for o in objs for p in o.problems if not p.warning]
    assert not errors, errors
    return build_cluster(objs)


def _sel_matches(sel: dict, pod, ns) -> bool:
    from enforcer.load.decode import _selector
    if "namespaces" in sel:
        return matches(_selector(sel["namespaces"], "", [], ()), ns.labels)
    p = sel["pods"]
    return (matches(_selector(p.get("namespaceSelector"), "", [], ()), ns.labels)
            and matches(_selector(p.get("podSelector"), "", [], ()), pod.labels))


def _reference_side(cluster, docs, pod_key, direction, peer_key, port, proto, np_side) -> bool:
    """The API's order, read straight from the objects."""
    pod = cluster.pods[pod_key]
    peer = cluster.pods[peer_key]
    dest = pod if direction == "ingress" else peer

    def rule_matches(r):
        peers = r["from"] if direction == "ingress" else r["to"]
        hit = False
        for p in peers:
            if "networks" in p:
                hit |= any(ipaddress.ip_address(peer.ips[0]) in ipaddress.ip_network(n) for n in p["networks"])
            else:
                hit |= _sel_matches(p, peer, cluster.namespace(peer.namespace))
        if not hit:
            return False
        if "protocols" not in r:
            return True
        for pr in r["protocols"]:
            if "destinationNamedPort" in pr:
                if any(cp.name == pr["destinationNamedPort"] and cp.port == port and cp.protocol == proto for cp in dest.ports):
                    return True
                continue
            [(k, v)] = pr.items()
            dp = v["destinationPort"]
            lo, hi = (dp["number"], dp["number"]) if "number" in dp else (dp["range"]["start"], dp["range"]["end"])
            if k.upper() == proto and lo <= port <= hi:
                return True
        return False

    def first(tier):
        pols = sorted((d for d in docs if d["spec"]["tier"] == tier
                       and _sel_matches(d["spec"]["subject"], pod, cluster.namespace(pod.namespace))),
                      key=lambda d: (d["spec"]["priority"], d["metadata"]["name"]))
        for d in pols:
            for r in d["spec"][direction]:
                if rule_matches(r):
                    return r["action"]
        return None

    a = first("Admin")
    if a in ("Accept", "Deny"):
        return a == "Accept"
    if np_side.isolated:
        return bool(np_side.allowed_by)
    return first("Baseline") != "Deny"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(*[cnp(i) for i in range(n)])), np_policy)
def test_compiled_tiers_agree_with_the_objects(docs, np):
    docs = list(docs)
    cluster = _cluster(docs + ([np] if np else []))
    fws = compile_cluster(cluster, node_ips=("10.244.0.1",))
    eps = {e.id: e for e in verdict.endpoints(cluster)}
    keys = sorted(cluster.pods)
    for src in keys[::3] + ["network-policy-conformance-gryffindor/harry-potter-0"]:
        for dst in keys:
            if src == dst:
                continue
            for port, proto in ((80, "TCP"), (53, "UDP"), (8080, "TCP")):
                v = verdict.verdict(fws, eps[src], eps[dst], port, proto)
                want = (_reference_side(cluster, docs, src, "egress", dst, port, proto, v.egress)
                        and _reference_side(cluster, docs, dst, "ingress", src, port, proto, v.ingress))
                assert v.allowed == want, (src, dst, port, proto, docs)


def test_no_cnp_no_tiers():
    cluster = _cluster([])
    assert not cluster.cnps
    for fw in compile_cluster(cluster).values():
        assert not (fw.ingress.admin or fw.ingress.baseline or fw.egress.admin or fw.egress.baseline)
        assert not any(s.name.startswith("c") for s in fw.sets)
