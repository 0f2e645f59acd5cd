"""The planning half of a multi-node lab (enforcer/lab/nodes.py: names, placement; its
addresses in enforcer/compiler/ipam.py) and the raw inputs an API lab sends
(enforcer/lab/multinode.py): pure, no root."""
from __future__ import annotations

import pytest

from enforcer.compiler import ipam
from enforcer.errors import LabError
from enforcer.lab import nodes
from enforcer.lab.multinode import raw_inputs
from enforcer.model import Cluster, ExternalHost, Pod


def _cluster(*pods: Pod) -> Cluster:
    return Cluster({}, {p.key: p for p in pods}, {}, {})


def test_plan_gives_each_node_a_free_slash24_and_gateway():
    c = _cluster(Pod("x", "a", ips=("10.244.101.7",)))  # a manifest took node1's usual /24
    plan = nodes.plan_nodes("lab", 3, c)
    assert [n["cidr"] for n in plan] == ["10.244.102.0/24", "10.244.103.0/24", "10.244.104.0/24"]
    assert [n["gateway"] for n in plan] == ["10.244.102.1", "10.244.103.1", "10.244.104.1"]
    assert [n["netns"] for n in plan] == ["netpol-lab-node.1", "netpol-lab-node.2", "netpol-lab-node.3"]
    assert len({n["mac"] for n in plan}) == 3


def test_plan_refuses_ipv6_and_silly_counts():
    with pytest.raises(LabError, match="IPv4 only"):
        nodes.plan_nodes("lab", 2, _cluster(Pod("x", "a", ips=("fd00::5",))))
    with pytest.raises(LabError, match="between 1 and"):
        nodes.plan_nodes("lab", 0, _cluster())


def test_place_spreads_evenly_honours_node_name_and_keeps_running_pods():
    pods = [f"x/p{i}" for i in range(7)]
    placed = nodes.place(pods, ["node1", "node2", "node3"], {"x/p0": "node3"})
    assert placed["x/p0"] == "node3"
    counts = {n: list(placed.values()).count(n) for n in ("node1", "node2", "node3")}
    assert sorted(counts.values()) == [2, 2, 3]
    again = nodes.place(pods + ["x/new"], ["node1", "node2", "node3"], {}, current=placed)
    assert all(again[k] == placed[k] for k in pods)  # nobody moves
    assert nodes.place(pods, ["node1", "node2", "node3"], {"x/p0": "node3"}) == placed  # deterministic


def test_place_refuses_an_unknown_node():
    with pytest.raises(LabError, match="spec.nodeName node9 is not a node of this lab"):
        nodes.place(["x/a"], ["node1"], {"x/a": "node9"})


def test_addresses_come_from_each_pods_node_and_fixed_ones_stay():
    plan = nodes.plan_nodes("lab", 2, _cluster())
    c = _cluster(Pod("x", "a"), Pod("x", "b"), Pod("x", "c", ips=("10.244.1.9",)))
    placed = nodes.place(c.pods, ["node1", "node2"], {})
    out = ipam.assign_ips(c, nodes=plan, placement=placed)
    assert out.pods["x/a"].ips == ("10.244.101.2",)
    assert out.pods["x/b"].ips == ("10.244.102.2",)
    assert out.pods["x/c"].ips == ("10.244.1.9",)
    assert nodes.outside("10.244.1.9", plan[0]) and not nodes.outside("10.244.101.2", plan[0])


def test_a_pod_on_a_node_gateway_is_refused():
    plan = nodes.plan_nodes("lab", 1, _cluster())
    with pytest.raises(LabError, match="node1's gateway"):
        ipam.check_nodes(_cluster(Pod("x", "a", ips=("10.244.101.1",))), plan)
    with pytest.raises(LabError, match="in the lab's underlay"):
        ipam.check_nodes(Cluster({}, {}, {}, {"u": ExternalHost("u", ("169.254.244.9",))}), plan)


def test_raw_inputs_reads_node_names_and_policies_through_lists(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("""
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x}
  spec: {nodeName: node2, containers: [{name: c, image: i}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: b}
  spec: {containers: [{name: c, image: i}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
""")
    node_of, policies = raw_inputs([str(f)])
    assert node_of == {"x/a": "node2"}
    assert [p["metadata"]["name"] for p in policies] == ["deny"]


def test_an_api_lab_name_may_not_share_a_prefix_with_another_lab(tmp_path, monkeypatch):
    from enforcer.lab import multinode, state

    monkeypatch.setattr(state, "LABS_DIR", str(tmp_path))
    (tmp_path / "shop-b").mkdir()
    (tmp_path / "web").mkdir()
    for name in ("shop", "web-1"):
        with pytest.raises(LabError, match="would share one"):
            multinode._check_prefixes(name)
    multinode._check_prefixes("shopping")  # no dash: netpol-shopping- is not netpol-shop-
    multinode._check_prefixes("shop-b")  # itself
