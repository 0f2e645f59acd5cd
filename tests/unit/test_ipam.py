"""Address planning (enforcer.compiler.ipam): pod addresses, and the lab's plan of pod CIDRs,
gateways, conflicts and the node's addresses facing external hosts. Pure: no kernel."""
from __future__ import annotations

import pytest

from enforcer.compiler import ipam
from enforcer.errors import LabError
from enforcer.model import Cluster, ExternalHost, Namespace, Pod


def cluster(*pods: Pod, externals: tuple[ExternalHost, ...] = ()) -> Cluster:
    namespaces = {p.namespace: Namespace(p.namespace, {}) for p in pods}
    return Cluster(namespaces, {p.key: p for p in pods}, {}, {e.key: e for e in externals})


BACKUP = ExternalHost("backup", ("192.168.50.10",))


def test_pods_numbered_in_sorted_order_after_the_gateway_and_kept_when_running():
    c = cluster(Pod("x", "b"), Pod("x", "a"), Pod("x", "fixed", ips=("10.244.0.2",)))
    got = ipam.assign_ips(c)
    assert {k: p.ips for k, p in got.pods.items()} == {
        "x/a": ("10.244.0.3",), "x/b": ("10.244.0.4",), "x/fixed": ("10.244.0.2",)}
    # a running lab: x/b keeps its address even though x/a is gone and a new pod comes first
    again = ipam.assign_ips(cluster(Pod("x", "b"), Pod("x", "0")), existing={"x/b": ("10.244.0.4",)})
    assert {k: p.ips for k, p in again.pods.items()} == {"x/0": ("10.244.0.2",), "x/b": ("10.244.0.4",)}


def test_ipv6_wanted_when_asked_or_when_any_address_is_ipv6():
    assert not ipam.wants_ipv6(cluster(Pod("x", "a")))
    assert ipam.pod_cidrs(cluster(Pod("x", "a"))) == (ipam.DEFAULT_POD_CIDR,)
    assert ipam.wants_ipv6(cluster(Pod("x", "a")), ipv6=True)
    six = cluster(Pod("x", "a"), externals=(ExternalHost("v6", ("fd00:50::10",)),))
    assert ipam.wants_ipv6(six)  # the lab wires external hosts: an IPv6 one makes pods dual-stack
    assert ipam.pod_cidrs(six) == (ipam.DEFAULT_POD_CIDR,)  # the model looks at pods only
    assert ipam.pod_cidrs(cluster(Pod("x", "a")), ipv6=True) == (ipam.DEFAULT_POD_CIDR, ipam.DEFAULT_POD_CIDR6)
    assert ipam.pod_cidrs(cluster(Pod("x", "a", ips=("fd00::5",)))) == (ipam.DEFAULT_POD_CIDR, ipam.DEFAULT_POD_CIDR6)
    assert ipam.pod_cidrs(cluster(Pod("x", "a")), addresses=["fd00::7"])[-1] == ipam.DEFAULT_POD_CIDR6


def test_fixed_addresses_outside_the_pod_cidrs_get_a_subnet_with_a_gateway():
    c = cluster(Pod("x", "a"), Pod("x", "fixed", ips=("172.16.5.9",)), Pod("x", "six", ips=("fd00:99::5",)))
    cidrs = ipam.gateway_cidrs(c, ("10.244.0.0/16", "10.244.0.0/16"))
    assert cidrs == ("10.244.0.0/16", "172.16.5.0/24", "fd00:99::/64")
    assert ipam.node_ips(cidrs) == ("10.244.0.1", "172.16.5.1", "fd00:99::1")
    assert ipam.cidr_of("172.16.5.9", cidrs) == "172.16.5.0/24"
    with pytest.raises(LabError, match="in none of the lab's pod CIDRs"):
        ipam.cidr_of("192.0.2.1", cidrs)


def test_node_address_facing_an_external_host():
    c = cluster(Pod("x", "a"), externals=(BACKUP,))
    assert ipam.external_node_addrs(c, "backup") == ("192.168.50.1",)
    c.externals["gw"] = ExternalHost("gw", ("192.168.50.1",))  # the first is taken: the last
    assert ipam.external_node_addrs(c, "backup") == ("192.168.50.254",)


@pytest.mark.parametrize("c,busy,message", [
    (cluster(Pod("x", "a")), (), "pod x/a has no address"),
    (cluster(Pod("x", "a", ips=("10.244.0.1",))), (), "is the lab node's gateway"),
    (cluster(Pod("x", "a", ips=("10.244.0.5",)), Pod("x", "b", ips=("10.244.0.5",))), (),
     "used by both pod x/a and pod x/b"),
    (cluster(externals=(ExternalHost("bad", ("10.244.9.9",)),)), (), "inside the lab's pod CIDR"),
    (cluster(externals=(ExternalHost("none"),)), (), "external host none has no address"),
    (cluster(externals=(BACKUP,)), ("192.168.50.10",), "the lab node's address on another external link"),
])
def test_plans_the_lab_cannot_wire_are_refused(c, busy, message):
    with pytest.raises(LabError, match=message):
        ipam.check_addresses(c, ("10.244.0.0/16",), busy)


def test_a_plan_the_lab_can_wire_passes():
    c = ipam.assign_ips(cluster(Pod("x", "a"), Pod("y", "b"), externals=(BACKUP,)))
    ipam.check_addresses(c, ("10.244.0.0/16",))
