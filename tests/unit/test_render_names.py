"""Set names follow rule indices: a reader of `netpol render` finds the set of
`egress[0]` under eg0, of `ingress[1]` under in1; a second policy selecting the same pod
gets in0B, in1B... (enforcer.compiler.compile.set_name)."""
from __future__ import annotations

from backends import iptables, nftables
from enforcer.compiler import ipam
from enforcer.compiler.compile import compile_cluster, set_name
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
    assert 'ip saddr . meta l4proto @in1_4 counter accept comment "prod/a-db ingress[1]"' in nft
    assert 'ip daddr . meta l4proto @eg0_4 tcp dport 22 counter accept comment "prod/a-db egress[0]"' in nft
    ipt = "\n".join(str(s) for s in iptables.render_sets(fw))
    assert "np.in0B.ip4" in ipt and "np.eg1p.ipp4" in ipt


def test_elements_say_which_pod_or_ipblock_they_come_from():
    fw = _fw()
    nft = nftables.render(fw)
    ip = {s.name: s for s in fw.sets}
    api = ip["in0"].v4[0].split("/")[0]
    assert f'elements = {{ {api} comment "prod/api" }}' in nft
    assert 'elements = { 10.0.0.0/8 . 0-255 comment "ipBlock 10.0.0.0/8" }' in nft
    assert f'{api} . tcp . 8080 comment "prod/api"' in nft
    sets = {s.name: s for s in iptables.render_sets(fw)}
    assert sets["np.in0.ip4"].add(api) == f'add np.in0.ip4 {api} comment "prod/api"'
    assert sets["np.eg0.net4"].add("192.168.5.10") == 'add np.eg0.net4 192.168.5.10 comment "ipBlock 192.168.5.10/32"'
    assert sets["np.in0.ip4"].create() == "create np.in0.ip4 hash:ip family inet comment"


def test_except_and_many_pods_in_one_interval_element():
    from enforcer.model import IPBlock
    from enforcer.compiler.setwords import interval_notes

    pods = {f"10.0.0.{i}": f"x/p{i}" for i in range(1, 6)}
    notes = dict(interval_notes(["10.0.0.0/24", "10.1.0.0/17"], pods,
                                [IPBlock("10.1.0.0/16", ("10.1.128.0/17",))]))
    assert notes == {"10.0.0.0/24": "x/p1 + x/p2 + x/p3 + 2 more pods",
                     "10.1.0.0/17": "ipBlock 10.1.0.0/16 except 10.1.128.0/17"}


def test_read_back_ignores_element_comments():
    """A delta adds elements without comments; the read-back must still match."""
    fw = _fw()
    listing = nftables.render(fw).replace(' comment "prod/api"', "")
    assert nftables.normalise(listing) == nftables.normalise(nftables.render(fw))
