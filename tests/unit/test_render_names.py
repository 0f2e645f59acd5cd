"""Set names follow rule indices: a reader of `netpol render` finds the set of
`egress[0]` under eg0, of `ingress[1]` under in1; a second policy selecting the same pod
gets in0B, in1B... (enforcer.compile.set_name)."""
from __future__ import annotations

from backends import iptables, nftables
from enforcer import ipam
from enforcer.compile import compile_cluster, set_name
from enforcer.model import ContainerPort, ExternalHost, PortSpec
from tests.unit.clusters import cluster, peer_block, peer_pods, pod, policy, rule, sel


def test_set_name_tags_are_unique_and_never_the_named_port_suffix():
    names = [set_name("eg", 0, k) for k in range(800)]
    assert names[:3] == ["eg0", "eg0B", "eg0C"] and set_name("in", 2, 0) == "in2"
    assert len(set(names)) == len(names)
    assert "eg0p" not in names  # the named-port set of eg0


def _fw():
    cl = cluster(
        pod("prod", "db", {"role": "db"}, ports=[ContainerPort(3306, "TCP", "mysql")]),
        pod("prod", "api", {"role": "api"}, ports=[ContainerPort(8080, "TCP", "http")]),
        ExternalHost("backup", ("192.168.5.10",)),
        policy("prod", "a-db", sel({"role": "db"}),
               ingress=[rule(peer_pods({"role": "api"}), ports=[("TCP", 3306)]), rule(peer_block("10.0.0.0/8"))],
               egress=[rule(peer_block("192.168.5.10/32"), ports=[("TCP", 22)]),
                       rule(peer_pods({"role": "api"}), ports=[PortSpec("TCP", "http")])]),
        policy("prod", "b-db", sel({"role": "db"}), ingress=[rule(peer_pods({"role": "web"}))]),
    )
    return compile_cluster(cl, node_ips=ipam.node_ips())["prod/db"]


def test_sets_follow_rule_indices_in_both_backends():
    fw = _fw()
    by_rule = {}
    for d in (fw.ingress, fw.egress):
        for r in d.rules:
            by_rule[r.provenance.comment()] = r.peers or r.addr_ports
    assert by_rule == {"prod/a-db ingress[0]": "in0", "prod/a-db ingress[1]": "in1", "prod/b-db ingress[0]": "in0B",
                       "prod/a-db egress[0]": "eg0", "prod/a-db egress[1]": "eg1p"}
    nft = nftables.render(fw)
    assert 'ip saddr @in1_4 counter accept comment "prod/a-db ingress[1]"' in nft
    assert 'ip daddr @eg0_4 tcp dport 22 counter accept comment "prod/a-db egress[0]"' in nft
    ipt = "\n".join(str(s) for s in iptables.render_sets(fw))
    assert "np.in0B.ip4" in ipt and "np.eg1p.ipp4" in ipt
