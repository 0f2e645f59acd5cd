"""enforcer.compiler.frontend: load, assign addresses, compile, once for every command."""
from __future__ import annotations

import pytest

from enforcer.compiler import frontend, ipam
from enforcer.errors import LabError
from enforcer.model import Cluster, ExternalHost, Namespace

from tests.unit.clusters import pod


def test_no_paths_is_an_empty_cluster():
    p = frontend.prepare([])
    assert p.cluster.pods == {} and p.firewalls == {} and p.warnings == [] and p.notes == []


def test_pods_without_addresses_get_one_per_family_and_kept_ones_stay():
    pods = [pod("a", "x"), pod("a", "y"), pod("a", "z", ips=("10.9.0.7",))]
    c = Cluster(namespaces={"a": Namespace("a", {"kubernetes.io/metadata.name": "a"})},
                pods={p.key: p for p in pods})  # as loaded: no addresses assigned yet
    assert frontend.assign(c).cidrs == (ipam.DEFAULT_POD_CIDR,)
    # An IPv6 address among those kept turns on the IPv6 range for everyone.
    kept = {"a/x": ("10.244.0.50", "fd00:10:244::50"), "a/z": ("10.244.0.60",), "gone/p": ("10.244.0.70",)}
    assert frontend.assign(c, existing=kept).cidrs == (ipam.DEFAULT_POD_CIDR, ipam.DEFAULT_POD_CIDR6)
    out, compiler = frontend.compile_cluster(c, existing=kept)
    assert out.pods["a/x"].ips == ("10.244.0.50", "fd00:10:244::50")
    assert out.pods["a/z"].ips == ("10.9.0.7",)  # the manifest's own address wins over a kept one
    assert len(out.pods["a/y"].ips) == 2 and ":" in out.pods["a/y"].ips[1]
    assert set(compiler.firewalls()) == {"a/x", "a/y", "a/z"}


def _c(*pods, externals=()) -> Cluster:
    return Cluster({n: Namespace(n, {}) for n in {p.namespace for p in pods}}, {p.key: p for p in pods}, {},
                   {e.key: e for e in externals})


def test_reserved_addresses_go_to_nobody_new():
    c = _c(pod("a", "x"), pod("a", "y"))
    free = frontend.assign(c)
    assert [free.cluster.pods[k].ips for k in ("a/x", "a/y")] == [("10.244.0.2",), ("10.244.0.3",)]
    held = frontend.assign(c, reserved=["10.244.0.2"])
    assert [held.cluster.pods[k].ips for k in ("a/x", "a/y")] == [("10.244.0.3",), ("10.244.0.4",)]


def test_the_model_alone_is_not_the_lab():
    # Without the lab's wiring: no subnet around a fixed address, no check, the CIDR's gateway.
    c = _c(pod("a", "x"), pod("a", "fixed", ips=("172.16.5.9",)), externals=(ExternalHost("v6", ("fd00:50::1",)),))
    model = frontend.assign(c)
    assert model.cidrs == (ipam.DEFAULT_POD_CIDR,) and model.node_ips == ("10.244.0.1",)
    lab = frontend.assign(c, ipv6=ipam.wants_ipv6(c), lab=frontend.Wiring())
    assert lab.cidrs == (ipam.DEFAULT_POD_CIDR, ipam.DEFAULT_POD_CIDR6, "172.16.5.0/24")
    assert lab.node_ips == ("10.244.0.1", "fd00:10:244::1", "172.16.5.1")
    assert lab.cluster.pods["a/x"].ips == ("10.244.0.2", "fd00:10:244::2")
    with pytest.raises(LabError, match="is the lab node's gateway"):
        frontend.assign(_c(pod("a", "x", ips=("10.244.0.1",))), lab=frontend.Wiring())


NODES = ({"name": "node1", "cidr": "10.244.101.0/24", "gateway": "10.244.101.1"},
         {"name": "node2", "cidr": "10.244.102.0/30", "gateway": "10.244.102.1"})


def test_several_nodes_address_each_pod_from_its_node_and_compile_it_with_its_gateway():
    c = _c(pod("a", "x"), pod("a", "y"), pod("a", "z"))
    where = {"a/x": "node1", "a/y": "node2", "a/z": "node1"}
    plan = frontend.assign(c, lab=frontend.Wiring(nodes=NODES, placement=where))
    assert {k: p.ips for k, p in plan.cluster.pods.items()} == {
        "a/x": ("10.244.101.2",), "a/y": ("10.244.102.2",), "a/z": ("10.244.101.3",)}
    assert plan.node_ips == ("10.244.101.1", "10.244.102.1") and plan.cidrs == (ipam.DEFAULT_POD_CIDR,)
    fws = frontend.firewalls(plan)
    assert {k: fw.node_ips for k, fw in fws.items()} == {
        "a/x": ("10.244.101.1",), "a/y": ("10.244.102.1",), "a/z": ("10.244.101.1",)}
    # node2's /30 holds one pod: the second is refused, naming the node.
    with pytest.raises(LabError, match="node node2's pod CIDR 10.244.102.0/30 has no free address left for pod a/z"):
        frontend.assign(c, lab=frontend.Wiring(nodes=NODES, placement={**where, "a/z": "node2"}))
    with pytest.raises(LabError, match="is node node1's gateway"):
        frontend.assign(_c(pod("a", "x", ips=("10.244.101.1",))), lab=frontend.Wiring(nodes=NODES))
