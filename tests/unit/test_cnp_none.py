"""A cluster with no ClusterNetworkPolicy behaves exactly as before CNPs existed (issue 18):
for random NetworkPolicy clusters (tests/unit/test_compile.py's generator), the firewalls
carry no tier and no tier set, the rendered rules of both backends have no tier chain or
jump, a CNP that selects nobody changes no firewall and no rendered byte (whole compile and
incremental), and CNPs that only Pass (both tiers, every pod) change no verdict."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from backends import ipt_render, nftables
from enforcer.compiler import ipam
from enforcer.views import verdict
from enforcer.cnp.model import ClusterNetworkPolicy, CNPPeer, CNPProtocol, CNPRule, Selection
from enforcer.compiler.compile import Compiler, compile_cluster
from tests.unit.clusters import sel
from tests.unit.test_compile import worlds

NODE = ipam.node_ips()
EVERYONE = Selection(sel())
NOBODY = Selection(sel({"no-such": "label"}))
ALL_PEERS = (CNPPeer(EVERYONE), CNPPeer(networks=("0.0.0.0/0",)))


def cnp(name: str, tier: str, subject: Selection, action: str) -> ClusterNetworkPolicy:
    return ClusterNetworkPolicy(
        name, tier, 5, subject,
        ingress=(CNPRule("in", action, (CNPPeer(EVERYONE),)),
                 CNPRule("named", action, (CNPPeer(EVERYONE),), (CNPProtocol(named="web"),))),
        egress=(CNPRule("out", action, ALL_PEERS, (CNPProtocol("TCP", 80, 81),)),
                CNPRule("named", action, (CNPPeer(EVERYONE),), (CNPProtocol(named="web"),))))


def renders(fws) -> dict[str, tuple[str, str]]:
    return {k: (nftables.render(fw), ipt_render.render(fw)) for k, fw in fws.items()}


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(worlds())
def test_no_cnp_no_tier_anywhere(c):
    assert not c.cnps
    fws = compile_cluster(c, node_ips=NODE)
    for key, fw in fws.items():
        for d in ("ingress", "egress"):
            assert not (fw.direction(d).admin or fw.direction(d).baseline)
        assert not any(s.name.startswith(("ca", "cb")) for s in fw.sets)
        nft, ipt = renders({key: fw})[key]
        assert "admin_" not in nft and "baseline_" not in nft and " tier" not in nft
        assert "NETPOL-ADMIN" not in ipt and "NETPOL-BASE" not in ipt and " tier" not in ipt


@SETTINGS
@given(worlds())
def test_a_cnp_that_selects_nobody_changes_no_byte(c):
    plain = compile_cluster(c, node_ips=NODE)
    c.cnps = {"deny": cnp("deny", "Admin", NOBODY, "Deny"), "base": cnp("base", "Baseline", NOBODY, "Deny")}
    tiered = compile_cluster(c, node_ips=NODE)
    assert tiered == plain
    assert renders(tiered) == renders(plain)
    # and incrementally: added and removed, no pod changes
    c.cnps = {}
    comp = Compiler(c, node_ips=NODE)
    comp.firewalls()
    assert comp.set_cnp(cnp("deny", "Admin", NOBODY, "Deny")) == set()
    assert comp.firewalls() == plain
    assert comp.remove_cnp("deny") == set()
    assert comp.firewalls() == plain


@SETTINGS
@given(worlds())
def test_cnps_that_only_pass_change_no_verdict(c):
    plain = compile_cluster(c, node_ips=NODE)
    want = verdict.matrix(c, plain, [(80, "TCP"), (81, "TCP"), (53, "UDP")])
    c.cnps = {"a": cnp("a", "Admin", EVERYONE, "Pass"), "b": cnp("b", "Baseline", EVERYONE, "Pass")}
    tiered = compile_cluster(c, node_ips=NODE)
    assert any(fw.ingress.admin for fw in tiered.values())  # the tiers are there
    assert verdict.matrix(c, tiered, [(80, "TCP"), (81, "TCP"), (53, "UDP")]) == want
