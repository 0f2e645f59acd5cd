"""iptables host mode rendering (backends/ipt_host.py): the node's filter table holds each
pod's chain pair, dispatched from NETPOL-HOST by bridge port (egress) and address
(ingress); the same IR and comments as pod mode; goldens for `render --enforce-at
host|both --backend iptables`; incremental restore texts touch one pod only."""
from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from backends import ipt_host, ipt_host_tiers, ipt_render
from backends.ipt_save import FamilyState, parse_save
from enforcer.cli import cli, load
from tests.unit.test_render_host import CASES, E2E  # the goldens are checked there, with nftables'



def test_legacy_flavour_renders_the_same_node_rules():
    a = CliRunner().invoke(cli, CASES["e2e.render.host.iptables.txt"])
    b = CliRunner().invoke(cli, CASES["e2e.render.host.iptables.txt"][:-1] + ["iptables-legacy"])
    assert a.exit_code == b.exit_code == 0
    assert a.output.replace("host mode, iptables,", "") == b.output.replace("host mode, iptables-legacy,", "")


@pytest.fixture(scope="module")
def fws():
    comp = load(tuple(E2E)).compiler
    return {k: comp.firewall(k) for k in sorted(comp.pods)}


def test_same_rules_as_pod_mode_with_return_for_allows(fws):
    fw = fws["x/a"]
    names = ipt_host.set_names(fw)
    for fam in (4, 6):
        for d in ("ingress", "egress"):
            pod = ipt_render.render_chain(fw, d, fam)
            host = ipt_host.pod_chain(fw, d, fam)
            assert len(pod) == len(host)
            for p, h in zip(pod, host):
                p = tuple(names.get(a, a) for a in p)
                comment = p[p.index("--comment") + 1]
                if comment.startswith(d + " ") and comment.split(" ", 1)[1] in ipt_host.FIXED:
                    assert h == p  # fixed rules keep their verdicts
                elif p[-1] == "ACCEPT":
                    assert h == p[:-1] + ("RETURN",)  # allow rules and "not isolated"
                else:
                    assert h == p  # the NFLOG and the final DROP
    chain = ipt_host.pod_chain(fw, "ingress", 4)
    assert chain[-1][-2:] == ("-j", "DROP") and "ingress isolated by x/mixed" in chain[-1]
    assert any(a == f"nph{ipt_host.pod_id('x/a')}.in0.ip4" for r in chain for a in r)


def test_dispatch_by_bridge_port_and_address(fws):
    fw = fws["x/a"]
    names = ipt_host.chain_names("x/a")
    d4 = ipt_host.dispatch(fw, "lab-3", 4)
    assert d4[0][:4] == ("-m", "physdev", "--physdev-in", "lab-3") and d4[0][-1] == names["egress"]
    assert ("-d", "10.244.1.1/32") == d4[1][:2] and d4[1][-1] == names["ingress"]
    assert "x/a egress" in d4[0] and "x/a ingress" in d4[1]  # the hashed chains' pod, named
    assert len(ipt_host.dispatch(fw, "lab-3", 6)) == 1  # no IPv6 address: the port only


def test_names_fit_iptables_and_ipset_limits():
    long = "a-namespace-with-a-long-name/" + "p" * 200
    fw = dataclasses.replace(load(tuple(E2E)).compiler.firewall("x/a"), pod=long)
    assert all(len(c) <= 28 for c in ipt_host.chain_names(long).values())
    pr = ipt_host.build(fw, "veth0")
    assert all(len(s.name) <= 31 and len(s.tmp) <= 31 for s in pr.sets)
    assert ipt_host.chain_names("x/a") != ipt_host.chain_names("x/b")


def _state(text: str, family: int) -> FamilyState:
    """What iptables-save would list after ``text`` (a restore text from an empty node)."""
    block = text.split(f"# IPv{family}")[1].split("COMMIT")[0]
    return parse_save(block.replace("-I FORWARD 1 ", "-A FORWARD "), ipt_host.is_ours, ("FORWARD",))


def test_new_pod_adds_its_chains_and_dispatch_only(fws):
    st = _state(ipt_host.render_node([(fws["x/b"], "veth1")]), 4)
    text = ipt_host.family_text(4, [ipt_host.build(fws["x/a"], "veth0")], (), st)
    a, b = ipt_host.chain_names("x/a"), ipt_host.chain_names("x/b")
    assert ":NETPOL-HOST" not in text  # declaring it would flush the other pods' dispatch
    assert "-I FORWARD" not in text and "-D " not in text
    assert f":{a['egress']} - [0:0]" in text and b["egress"] not in text and "x/b" not in text
    assert text.count("-A NETPOL-HOST ") == 2


def test_changed_pod_refills_its_chains_and_fixes_its_dispatch(fws):
    old = fws["x/a"]
    st = _state(ipt_host.render_node([(fws["x/b"], "veth1"), (old, "veth0")]), 4)
    moved = dataclasses.replace(old, ips=("10.244.9.9",))
    text = ipt_host.family_text(4, [ipt_host.build(moved, "veth0")], (), st)
    have = st.rules["NETPOL-HOST"]
    n = 1 + next(i for i, a in enumerate(have) if "10.244.1.1/32" in a)
    assert f"-D NETPOL-HOST {n}\n" in text and text.count("-D NETPOL-HOST") == 1
    assert "-A NETPOL-HOST -d 10.244.9.9/32" in text and "physdev-in veth0" not in text  # kept
    assert "x/b" not in text


def test_removal_deletes_dispatch_by_number_then_chains(fws):
    st = _state(ipt_host.render_node([(fws["x/a"], "veth0"), (fws["x/b"], "veth1")]), 4)
    text = ipt_host.family_text(4, (), ("x/a",), st)
    a = ipt_host.chain_names("x/a")
    assert text.index("-D NETPOL-HOST 2") < text.index("-D NETPOL-HOST 1") < text.index(f"-F {a['egress']}")
    assert f"-X {a['ingress']}" in text and ipt_host.chain_names("x/b")["egress"] not in text


def test_peer_change_is_an_ipset_delta_on_the_nodes_names(fws):
    old = fws["x/a"]
    s = next(s for s in old.sets if not s.interval and s.v4)
    grown = dataclasses.replace(s, v4=s.v4 + ("10.244.5.5/32",))
    new = dataclasses.replace(old, sets=tuple(grown if x is s else x for x in old.sets))
    text, added, removed = ipt_render.delta_text(ipt_host.build(old, "v"), ipt_host.build(new, "v"))
    assert (added, removed) == (1, 0)
    assert text == f"add nph{ipt_host.pod_id('x/a')}.{s.name}.ip4 10.244.5.5\n"


def test_tiered_direction_is_four_chains_that_end_in_return_or_drop(fws):
    """Admin Accept RETURNs to NETPOL-HOST, Pass and no match go (-g) to the NetworkPolicy
    part, Baseline after it; the untiered direction stays one chain."""
    from enforcer.ir import TierRule

    fw = fws["x/a"]
    admin = (TierRule(tier="Admin", policy="let-in", priority=1, direction="ingress", rule_index=0, action="Accept"),
             TierRule(tier="Admin", policy="skip", priority=2, direction="ingress", rule_index=0, action="Pass"),
             TierRule(tier="Admin", policy="no", priority=3, direction="ingress", rule_index=0, action="Deny"))
    fw = dataclasses.replace(fw, ingress=dataclasses.replace(fw.ingress, admin=admin))
    pr = ipt_host.build(fw, "veth0")
    chain = ipt_host.chain_names("x/a")["ingress"]
    parts = ipt_host_tiers.part_names(chain)
    assert list(pr.chains[4]) == [ipt_host.chain_names("x/a")["egress"], chain, *parts.values()]
    head, a, n = pr.chains[4][chain], pr.chains[4][parts["A"]], pr.chains[4][parts["N"]]
    assert head[-1][-2:] == ("-g", parts["A"]) and head[0][-1] == "ACCEPT"  # replies stay final
    assert a[0][-2:] == ("-j", "RETURN") and "Admin let-in ingress[0] Accept" in a[0][-3]
    assert a[1][-2:] == ("-g", parts["N"]) and a[-1][-2:] == ("-g", parts["N"])
    # a Deny logs first (as in pod mode and nftables host mode), its prefix naming the pod
    assert a[2][a[2].index("-j"):] == ("-j", "NFLOG", "--nflog-prefix", "netpol drop ingress x/a: Admin no[0]",
                                       "--nflog-group", "100")
    assert a[3][-2:] == ("-j", "DROP") and "Admin no ingress[0] Deny" in a[3]
    assert n[-1][-2:] == ("-j", "DROP") and "ingress isolated by x/mixed" in n[-1]
    assert all(r[-1] in ("RETURN", "DROP", "NFLOG", "100") or r[-2] == "-g" for c in (a, n) for r in c)
    assert set(ipt_host.all_chains("x/a")) >= set(pr.chains[4])


def test_two_pods_with_one_id_on_a_node_are_refused(fws, monkeypatch):
    """A hash collision is refused with both pods named, never applied over the other."""
    from backends.ipt_host import IptHostBackend, NodeState
    from enforcer.errors import ApplyError

    st = _state(ipt_host.render_node([(fws["x/b"], "veth1")]), 4)
    backend = IptHostBackend(lambda ns: ("node", "veth0"), type("P", (), {"name": "iptables"})())
    b_id = ipt_host.pod_id("x/b")
    monkeypatch.setattr(ipt_host, "pod_id", lambda pod: b_id)  # x/a now hashes like x/b
    results: list = [None, None]
    out = backend._unique("n1", [(0, None, fws["x/a"]), (1, None, fws["x/b"])], NodeState({4: st, 6: st}, {}),
                          results)
    assert [fw.pod for _, _, fw in out] == ["x/b"]
    assert isinstance(results[0], ApplyError) and "x/b and x/a" in str(results[0]) and b_id in str(results[0])
