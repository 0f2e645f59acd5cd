"""Differential test: random policies and labels, the kernel's verdicts (real packets in a
lab) equal the model's, for each backend.

Hypothesis draws the desired state (namespace and pod relabelling, 1-3 policies mixing
podSelector, namespaceSelector, AND peers, ipBlock with except, named and numeric ports,
ingress and egress); the lab converges to it with ``lab.apply`` and every ordered pair is
probed on 80/TCP and 81/UDP. Few examples per run (each costs a probe of 72 pairs), a
different draw every run: over many CI runs the space gets covered.
"""
from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from enforcer.views.reachability import compare
from tests.conformance.cases import load_cases

pytestmark = pytest.mark.root

BASE = [o for o in load_cases()[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
NAMES = ["a", "b", "c"]
NSS = ["x", "y", "z"]
LABEL = st.sampled_from([{}, {"pod": "a"}, {"pod": "b"}, {"pod": "c"}, {"extra": "yes"}])
NS_LABEL = st.sampled_from([{}, {"ns": "x"}, {"ns": "y"}, {"extra": "yes"}])


def selector(labels):
    return {"matchLabels": labels} if labels else {}


@st.composite
def peers(draw):
    kind = draw(st.sampled_from(["pod", "ns", "and", "block"]))
    if kind == "pod":
        return {"podSelector": selector(draw(LABEL))}
    if kind == "ns":
        return {"namespaceSelector": selector(draw(NS_LABEL))}
    if kind == "and":
        return {"podSelector": selector(draw(LABEL)), "namespaceSelector": selector(draw(NS_LABEL))}
    third = draw(st.sampled_from(["1", "2", "3"]))
    block = {"cidr": f"10.244.{third}.0/24"}
    if draw(st.booleans()):
        block["except"] = [f"10.244.{third}.{draw(st.sampled_from(['1', '2', '3']))}/32"]
    return {"ipBlock": block}


PORTS = st.sampled_from([None, [{"port": 80}], [{"port": 81, "protocol": "UDP"}],
                         [{"port": "serve-80-tcp"}], [{"port": 80, "endPort": 81}],
                         [{"protocol": "UDP"}]])


@st.composite
def rules(draw):
    rule = {}
    ps = draw(st.lists(peers(), max_size=2))
    if ps:
        rule["peers"] = ps
    ports = draw(PORTS)
    if ports:
        rule["ports"] = ports
    return rule


@st.composite
def states(draw):
    objs = copy.deepcopy(BASE)
    for o in objs:
        if o["kind"] == "Namespace" and draw(st.booleans()):
            o["metadata"].setdefault("labels", {}).update(draw(NS_LABEL))
        if o["kind"] == "Pod" and draw(st.integers(0, 3)) == 0:
            o["metadata"].setdefault("labels", {}).update(draw(LABEL))
    for i in range(draw(st.integers(1, 3))):
        types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
        spec = {"podSelector": selector(draw(LABEL)), "policyTypes": types}
        for t in types:
            key, peer_key = ("ingress", "from") if t == "Ingress" else ("egress", "to")
            rs = []
            for r in draw(st.lists(rules(), max_size=2)):
                out = {}
                if "peers" in r:
                    out[peer_key] = r["peers"]
                if "ports" in r:
                    out["ports"] = r["ports"]
                rs.append(out)
            spec[key] = rs
        objs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": {"name": f"p{i}", "namespace": draw(st.sampled_from(NSS))}, "spec": spec})
    return objs


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def lab(request, netpol_lab_module):
    return netpol_lab_module(BASE, request.param)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
@given(state=states())
def test_kernel_agrees_with_model(lab, state):
    lab.apply(state)
    ports = [(80, "TCP"), (81, "UDP")]
    want = lab.expected(ports)
    got = lab.probe(ports, timeout=0.3)
    result = compare(want, got, title=f"differential ({lab.backend})")
    if result.wrong:  # confirm with a patient timeout before calling it a disagreement
        got = lab.probe(ports, timeout=1.0)
        result = compare(want, got, title=f"differential ({lab.backend})")
    assert not result.wrong, f"kernel and model disagree:\n{result.text}\n\nstate: {state}"
