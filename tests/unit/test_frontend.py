"""enforcer.compiler.frontend: load, assign addresses, compile, once for every command."""
from __future__ import annotations

from enforcer.compiler import frontend, ipam

from enforcer.model import Cluster, Namespace

from tests.unit.clusters import pod


def test_no_paths_is_an_empty_cluster():
    p = frontend.prepare([])
    assert p.cluster.pods == {} and p.firewalls == {} and p.warnings == [] and p.notes == []


def test_pods_without_addresses_get_one_per_family_and_kept_ones_stay():
    pods = [pod("a", "x"), pod("a", "y"), pod("a", "z", ips=("10.9.0.7",))]
    c = Cluster(namespaces={"a": Namespace("a", {"kubernetes.io/metadata.name": "a"})},
                pods={p.key: p for p in pods})  # as loaded: no addresses assigned yet
    assert frontend.pod_cidrs(c) == (ipam.DEFAULT_POD_CIDR,)
    # An IPv6 address among those kept turns on the IPv6 range for everyone.
    kept = {"a/x": ("10.244.0.50", "fd00:10:244::50"), "a/z": ("10.244.0.60",), "gone/p": ("10.244.0.70",)}
    assert frontend.pod_cidrs(c, kept) == (ipam.DEFAULT_POD_CIDR, ipam.DEFAULT_POD_CIDR6)
    out, compiler = frontend.compile_cluster(c, existing=kept)
    assert out.pods["a/x"].ips == ("10.244.0.50", "fd00:10:244::50")
    assert out.pods["a/z"].ips == ("10.9.0.7",)  # the manifest's own address wins over a kept one
    assert len(out.pods["a/y"].ips) == 2 and ":" in out.pods["a/y"].ips[1]
    assert set(compiler.firewalls()) == {"a/x", "a/y", "a/z"}
