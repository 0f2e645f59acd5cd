"""Host mode rendering (backends/nft_host.py): the node's table holds each pod's chains,
the same IR as pod mode; golden files for `render --enforce-at host|both`."""
from __future__ import annotations

import os
import pathlib

import pytest
from click.testing import CliRunner

from backends import nft_host, nftables, placement
from enforcer.cli import cli, load
from enforcer.errors import BackendError

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
E2E = [str(ROOT / "tests" / "conformance" / "base.yaml"), str(GOLDEN / "e2e-policy.yaml")]
CASES = {
    "e2e.render.host.nftables.txt": ["render", "-f", E2E[0], "-f", E2E[1], "--pod", "x/a", "--pod", "x/b",
                                     "--enforce-at", "host"],
    "e2e.render.both.nftables.txt": ["render", "-f", E2E[0], "-f", E2E[1], "--pod", "x/a", "--enforce-at", "both"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_host(name):
    result = CliRunner().invoke(cli, CASES[name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    path = GOLDEN / name
    if os.environ.get("NETPOL_UPDATE_GOLDEN"):
        path.write_text(result.output)
    assert path.exists(), f"missing golden file {path}; run with NETPOL_UPDATE_GOLDEN=1"
    assert result.output == path.read_text()


def test_fake_host_render_is_a_clear_error():
    result = CliRunner().invoke(cli, ["render", "-f", E2E[0], "--backend", "fake", "--enforce-at", "host"])
    assert result.exit_code != 0
    from enforcer.errors import InputError

    assert isinstance(result.exception, InputError)  # main() prints it as one line
    assert "the fake backend has no host placement" in str(result.exception)


@pytest.fixture(scope="module")
def fws():
    comp = load(tuple(E2E)).compiler
    return {k: comp.firewall(k) for k in sorted(comp.pods)}


def test_same_rules_as_pod_mode_with_return_for_allows(fws):
    fw = fws["x/a"]
    pfw = placement.prefixed(fw)
    for d in ("ingress", "egress"):
        pod = nftables.render_chain(fw, d)[2:-1]
        host = nft_host.pod_chain(pfw, d)[1:-1]
        assert len(pod) == len(host)
        for p, h in zip(pod, host):
            if any(w in p for w in nft_host.FIXED) and ("isolated by" not in p):
                assert h.replace(".x.a_", "_") == p  # fixed rules: same verdict
            else:
                assert h.replace(".x.a_", "_") == p.replace("counter accept", "counter return")
    assert any("drop comment \"ingress isolated by x/mixed\"" in line for line in nft_host.pod_chain(pfw, "ingress"))


def test_node_table_holds_every_pods_chain_sets_and_entries(fws):
    pods = [(fws[k], f"veth{i}") for i, k in enumerate(fws)]
    text = nft_host.render_node(pods, "n1")
    for fw, veth in pods:
        names = nft_host.chain_names(fw.pod)
        mark = f"0x{placement.pod_mark(fw.pod):08x}"
        assert f"chain {names['ingress']} {{" in text and f"chain {names['egress']} {{" in text
        assert f'"{veth}" : {mark}' in text
        assert f"{mark} : jump {names['egress']}" in text
        for a in fw.ips:
            assert f"{a} : jump {names['ingress']}" in text
    # set names carry the pod's tag: pods' in0 sets never collide in one table
    import re

    names = re.findall(r"^\tset (\S+) \{", text, re.M)
    assert "in0.x.a_4" in names and len(names) == len(set(names))
    assert len(names) == 2 * sum(len(fw.sets) for fw, _ in pods)


def test_pod_commands_touch_only_that_pod(fws):
    text = nft_host.pod_commands(fws["x/a"], "veth0")
    assert "in.x.b" not in text and "eg.x.b" not in text
    assert "flush chain inet netpol_host in.x.a" in text
    assert 'add element bridge netpol_host ports { "veth0" :' in text


def test_changed_address_deletes_old_ingress_entry(fws):
    import dataclasses

    old = fws["x/a"]
    new = dataclasses.replace(old, ips=("10.244.9.9",))
    text = nft_host.pod_commands(new, "veth0", old)
    assert "delete element inet netpol_host ingress_4 { 10.244.1.1 }" in text
    assert "10.244.9.9 : jump in.x.a" in text


def test_removal_reads_what_is_there(fws):
    text = nft_host.render_node([(fws["x/a"], "veth0"), (fws["x/b"], "veth1")])
    table_inet = text[text.index("table inet"):]
    cmds = nft_host.removal_commands(table_inet, text[: text.index("table inet")], "x/a")
    assert "delete chain inet netpol_host in.x.a" in cmds and "delete chain inet netpol_host eg.x.a" in cmds
    assert "x.b" not in cmds
    assert 'delete element bridge netpol_host ports { "veth0" }' in cmds
    assert "delete set inet netpol_host in0.x.a_4" in cmds


def test_peer_change_is_an_element_delta(fws):
    import dataclasses

    old = fws["x/a"]
    s = next(s for s in old.sets if not s.interval and s.v4)
    grown = dataclasses.replace(s, v4=s.v4 + ("10.244.5.5/32",))
    new = dataclasses.replace(old, sets=tuple(grown if x is s else x for x in old.sets))
    text, added, removed = nft_host.delta_commands(old, new)
    assert (added, removed) == (1, 0)
    assert text == f"add element inet netpol_host {s.name}.x.a_4 {{ 10.244.5.5 }}\n"


def test_marks_stable_and_collisions_reported():
    assert placement.pod_mark("x/a") == placement.pod_mark("x/a")
    assert placement.pod_mark("x/a") & placement.MARK_MASK == placement.MARK_TAG
    placement.check_marks([f"ns/p{i}" for i in range(500)])
    assert placement.pod_tag("ns/" + "a" * 300).startswith("ns.aaa") and len(placement.pod_tag("ns/" + "a" * 300)) <= 96
    with pytest.raises(BackendError):
        placement.check_placement("node")


def test_lab_host_mode_refuses_the_fake_backend_clearly():
    from enforcer.errors import LabError
    from enforcer.lab import hostmode

    for name in ("nftables", "iptables", "iptables-legacy"):
        hostmode.check("host", name)
    hostmode.check("pod", "fake")
    with pytest.raises(LabError, match="backends, not fake"):
        hostmode.check("host", "fake")
    with pytest.raises(LabError, match="choose pod or host"):
        hostmode.check("node", "nftables")


def test_tiered_pods_are_refused_in_host_mode(fws):
    import dataclasses

    from enforcer.ir import TierRule

    fw = fws["x/a"]
    tier = TierRule("Admin", "cnp", 1, "ingress", 0, "Accept")
    tiered = dataclasses.replace(fw, ingress=dataclasses.replace(fw.ingress, admin=(tier,)))
    with pytest.raises(BackendError, match="ClusterNetworkPolicy"):
        nft_host.render_node([(tiered, "veth0")])
