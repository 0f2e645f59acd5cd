"""A lab of several nodes without the API (``lab up --nodes N``): node namespaces on a
routed underlay, the lab applying every node's pods directly (root, real packets).

What is checked: the placement (spec.nodeName, else spread evenly), the topology (each
node routes its own pod CIDR, the others' via the underlay; traffic between nodes really
crosses the underlay: cut a node's underlay link and only its cross-node pairs break),
policies applied with ``lab apply`` on every node, pods added and removed, the
whole e2e model with its fixed addresses, and that ``lab down`` leaves nothing.
"""
from __future__ import annotations

import subprocess

import pytest

from enforcer.lab import control
from enforcer.lab import state as lab_state
from enforcer.netns import list_names
from tests.conformance.cases import load_cases

pytestmark = pytest.mark.root

CASES = load_cases()
BASE = [o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
DENY_X = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"namespace": "x", "name": "deny-ingress"},
          "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def lab(request, netpol_lab_module):
    return netpol_lab_module(BASE, request.param, nodes=3)


def test_pods_spread_evenly_and_nodes_listed(lab):
    st = lab_state.load(lab.name)
    placed = {k: e.node for k, e in st.endpoints.items() if e.kind == "pod"}
    assert sorted(placed.values()) == ["node1"] * 3 + ["node2"] * 3 + ["node3"] * 3
    assert placed["x/a"] == "node1" and placed["x/b"] == "node2" and placed["x/c"] == "node3"
    item = next(i for i in control.list_labs() if i["name"] == lab.name)
    assert [(n["name"], n["pods"]) for n in item["nodes"]] == [("node1", 3), ("node2", 3), ("node3", 3)]
    assert item["api"] is False
    # node namespaces carry the lab's prefix; no link of the lab in the host's namespace
    assert {n["netns"] for n in item["nodes"]} <= set(list_names(f"netpol-{lab.name}"))
    assert lab.name[:5] not in _ip("-o", "link", "show")


def test_routes_between_nodes_go_over_the_underlay(lab):
    st = lab_state.load(lab.name)
    n1, n2 = st.nodes[0], st.nodes[1]
    pod_on_2 = next(e for e in st.endpoints.values() if e.node == "node2")
    route = _ip("-n", n1["netns"], "route", "get", pod_on_2.ips[0])
    assert f"via {n2['underlay']} dev ul0" in route
    local = next(e for e in st.endpoints.values() if e.node == "node1")
    assert "dev ul0" not in _ip("-n", n1["netns"], "route", "get", local.ips[0])


def test_cutting_a_nodes_underlay_breaks_only_its_cross_node_pairs(lab):
    st = lab_state.load(lab.name)
    port = f"{lab.name[:5]}-u2"  # node2's underlay link, on the router's side (the "cable")
    _ip("-n", st.node_netns, "link", "set", port, "down")
    try:
        rows = {(r["from"], r["to"]): r["allowed"] for r in lab.probe(ports=["80/TCP"], timeout=0.3)}
    finally:
        _ip("-n", st.node_netns, "link", "set", port, "up")
    on = {k: e.node for k, e in st.endpoints.items() if e.kind == "pod"}
    for (src, dst), allowed in rows.items():
        crosses_node2 = on[src] != on[dst] and "node2" in (on[src], on[dst])
        assert allowed is (not crosses_node2), (src, dst, on[src], on[dst])
    lab.assert_matches("model", ports=["80/TCP"])  # and back once the link is up


def test_policies_pods_added_and_removed_on_every_node(lab):
    extra = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"namespace": "z", "name": "d", "labels": {"pod": "d"}},
             "spec": {"nodeName": "node3",
                      "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}
    lab.apply(BASE + [DENY_X, extra])
    st = lab_state.load(lab.name)
    d = st.endpoints["z/d"]
    assert d.node == "node3" and d.ips[0].startswith("10.244.103.")  # its node's pod CIDR
    lab.assert_matches("model", ports=["80/TCP"])
    rows = {(r["from"], r["to"]): r["allowed"] for r in lab.probe(ports=["80/TCP"])}
    assert rows[("z/d", "x/b")] is False and rows[("z/d", "y/b")] is True and rows[("x/a", "z/d")] is True
    lab.apply(BASE)
    assert "z/d" not in lab_state.load(lab.name).endpoints
    assert not [n for n in list_names(f"netpol-{lab.name}-z-d")]
    lab.assert_matches("model", ports=["80/TCP", "81/UDP"])


def test_node_name_that_is_not_a_node_is_refused(netpol_lab):
    bad = [o for o in BASE if o["kind"] == "Namespace"] + [{
        "apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "x", "name": "a"},
        "spec": {"nodeName": "node9", "containers": [{"name": "c", "image": "i"}]}}]
    from enforcer.errors import LabError

    with pytest.raises(LabError, match="spec.nodeName node9 is not a node of this lab"):
        netpol_lab(bad, "nftables", nodes=2)


def test_down_leaves_nothing(netpol_lab):
    lab = netpol_lab(BASE[:4], "nftables", nodes=2)  # namespaces x, y, z and pod x/a
    name = lab.name
    assert len(list_names(f"netpol-{name}")) == 1 + 2 + 1  # router, two nodes, one pod
    lab.down()
    assert list_names(f"netpol-{name}") == []
    assert not lab_state.exists(name)
