"""Host mode rendering (backends/nft_host.py): the node's table holds each pod's chains,
the same IR as pod mode; golden files for `render --enforce-at host|both`."""
from __future__ import annotations

import os
import pathlib

import pytest
from click.testing import CliRunner

from backends import nft_host, nftables, placement
from backends.nft_host_node import Node, adopt, plan as node_plan, removal
from enforcer.cli import cli, load
from enforcer.errors import BackendError
from enforcer.ir import AddrSet

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
E2E = [str(ROOT / "tests" / "conformance" / "base.yaml"), str(GOLDEN / "e2e-policy.yaml")]
CASES = {
    "e2e.render.host.nftables.txt": ["render", "-f", E2E[0], "-f", E2E[1], "--pod", "x/a", "--pod", "x/b",
                                     "--enforce-at", "host"],
    "e2e.render.both.nftables.txt": ["render", "-f", E2E[0], "-f", E2E[1], "--pod", "x/a", "--enforce-at", "both"],
    "e2e.render.host.iptables.txt": ["render", "-f", E2E[0], "-f", E2E[1], "--pod", "x/a", "--pod", "x/b",
                                     "--enforce-at", "host", "--backend", "iptables"],
    "e2e.render.both.iptables.txt": ["render", "-f", E2E[0], "-f", E2E[1], "--pod", "x/a",
                                     "--enforce-at", "both", "--backend", "iptables"],
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
        # (host mode writes port lists as a rule per port and no neighbour discovery rule:
        # _no_anonymous_sets says why)
        pod = nft_host._no_anonymous_sets(nftables.render_chain(fw, d)[2:-1])
        host = nft_host.pod_chain(pfw, d)[1:-1]
        assert not any("{" in line for line in host)
        assert len(pod) == len(host)
        for p, h in zip(pod, host):
            if any(w in p for w in nft_host.FIXED) and ("isolated by" not in p):
                assert h.replace(".x.a_", "_") == p  # fixed rules: same verdict
            else:
                assert h.replace(".x.a_", "_") == p.replace("counter accept", "counter return")
    assert any("drop comment \"ingress isolated by x/mixed\"" in line for line in nft_host.pod_chain(pfw, "ingress"))


SHARED = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-web, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{port: 80}]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: http}]
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {n}, namespace: x, labels: {{app: {app}}}}}
spec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}
""" for n, app in (("a", "web"), ("b", "web"), ("c", "db")))


@pytest.fixture(scope="module")
def shared_fws(tmp_path_factory):
    """Three pods whose policy reads the same peer groups (one set each per node)."""
    path = tmp_path_factory.mktemp("host") / "shared.yaml"
    path.write_text(SHARED)
    comp = load((str(path),)).compiler
    return {k: comp.firewall(k) for k in sorted(comp.pods)}


def test_node_table_holds_every_pods_chain_sets_and_entries(shared_fws):
    fws = shared_fws
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
    # one set per peer group, however many pods read it: fewer sets than the pods have
    import re

    names = re.findall(r"^\tset (\S+) \{", text, re.M)
    groups = {s.group for fw, _ in pods for s in fw.sets}
    assert len(names) == len(set(names)) == 2 * len(groups) < 2 * sum(len(fw.sets) for fw, _ in pods)
    assert all(n.startswith("g.") for n in names)


def _plan(node, fws, prevs=None, **kw):
    prevs = prevs or [None] * len(fws)
    return node_plan(node, [(fw, iface, prev) for (fw, iface), prev in zip(fws, prevs)], nft_host.pod_chains, **kw)


def test_a_pod_touches_only_its_own_chains_and_entries(shared_fws):
    fws = shared_fws
    p = _plan(Node(), [(fws["x/a"], "veth0")])
    assert "in.x.b" not in p.text and "eg.x.b" not in p.text
    assert "flush chain inet netpol_host in.x.a" in p.text
    assert 'add element bridge netpol_host ports { "veth0" :' in p.text
    # the second pod reading the same groups adds its chains, not the sets again
    q = _plan(p.node, [(fws["x/b"], "veth1")])
    shared = {s.name for s in placement.shared(fws["x/a"]).sets} & {s.name for s in placement.shared(fws["x/b"]).sets}
    assert shared and not any(f"add set inet netpol_host {n}_4" in q.text for n in shared)
    assert q.kinds == {"x/b": "full"} and "in.x.a" not in q.text


def test_changed_address_deletes_old_ingress_entry(shared_fws):
    fws = shared_fws
    import dataclasses

    old = fws["x/a"]
    p = _plan(Node(), [(old, "veth0")])
    q = _plan(p.node, [(dataclasses.replace(old, ips=("10.244.9.9",)), "veth0")], [old])
    assert f"delete element inet netpol_host ingress_4 {{ {old.ips[0]} }}" in q.text
    assert "10.244.9.9 : jump in.x.a" in q.text


def test_last_reader_of_a_set_deletes_it(shared_fws):
    fws = shared_fws
    p = _plan(Node(), [(fws["x/a"], "veth0"), (fws["x/b"], "veth1")])
    a_sets = {s.name for s in placement.shared(fws["x/a"]).sets}
    b_sets = {s.name for s in placement.shared(fws["x/b"]).sets}
    text, node = removal(p.node, ["x.a"])
    assert "delete chain inet netpol_host in.x.a" in text and "delete chain inet netpol_host eg.x.a" in text
    assert "x.b" not in text
    assert 'delete element bridge netpol_host ports { "veth0" }' in text
    for n in a_sets:
        assert (f"delete set inet netpol_host {n}_4" in text) == (n not in b_sets)
    # map entries go before the chains they jump to, chains before the sets they read
    assert text.index("delete element") < text.index("delete chain")
    text, node = removal(node, ["x.b"])
    assert not node.sets and not node.pods and "delete set" in text
    assert text.index("delete chain") < text.index("delete set")


def test_peer_change_is_one_element_delta_per_node(shared_fws):
    fws = shared_fws
    import dataclasses

    def grown(fw):
        s = next(s for s in fw.sets if isinstance(s, AddrSet) and s.group == group)
        g = dataclasses.replace(s, v4=s.v4 + ("10.244.5.5/32",))
        return dataclasses.replace(fw, sets=tuple(g if x is s else x for x in fw.sets))

    a, b = fws["x/a"], fws["x/b"]
    common = {s.group for s in a.sets if isinstance(s, AddrSet) and not s.interval} & {s.group for s in b.sets}
    group = sorted(common)[0]
    p = _plan(Node(), [(a, "veth0"), (b, "veth1")])
    q = _plan(p.node, [(grown(a), "veth0"), (grown(b), "veth1")], [a, b])
    assert q.text == "" and q.kinds == {"x/a": "delta", "x/b": "delta"}
    assert q.raw == [("add", f"g.{group}_4", ["10.244.5.5"])]
    # without the raw path: the same delta as one nft command
    q = _plan(p.node, [(grown(a), "veth0"), (grown(b), "veth1")], [a, b], raw_ok=False)
    assert q.text == f"add element inet netpol_host g.{group}_4 {{ 10.244.5.5 }}\n"


def test_two_compiles_in_one_batch_are_refused(shared_fws):
    fws = shared_fws
    import dataclasses

    a, b = fws["x/a"], fws["x/b"]
    s = next(s for s in a.sets if s.v4 and not s.interval)
    other = dataclasses.replace(b, sets=tuple(dataclasses.replace(x, v4=()) if x.group == s.group else x
                                              for x in b.sets))
    with pytest.raises(BackendError, match="different elements"):
        _plan(Node(), [(a, "veth0"), (other, "veth1")])


def test_adopted_table_is_rewritten_and_its_sets_refilled(shared_fws):
    fws = shared_fws
    text = nft_host.render_node([(fws["x/a"], "veth0"), (fws["x/b"], "veth1")])
    inet = text[text.index("table inet"):]
    node = adopt(inet, text[: text.index("table inet")])
    assert set(node.pods) == {"x.a", "x.b"} and all(v is None for v in node.sets.values())
    assert node.pods["x.a"].listed
    assert node.pods["x.a"].iface == "veth0" and node.pods["x.a"].ips == fws["x/a"].ips
    assert node.pods["x.a"].sets == {s.name for s in placement.shared(fws["x/a"]).sets}
    # with the previous firewall: the chains are as listed, not rewritten; the sets are
    # taken to hold what it says
    p = _plan(node, [(fws["x/a"], "veth0")], [fws["x/a"]])
    assert p.kinds == {"x/a": "delta"} and p.text == "" and not p.raw
    # without: the caller does not know what is there (drift repair): all written again
    p = _plan(node, [(fws["x/a"], "veth0")])
    assert p.kinds == {"x/a": "full"} and "flush set inet netpol_host g." in p.text
    assert "flush chain inet netpol_host in.x.a" in p.text
    text, _ = removal(node, ["x.b"])
    assert "in.x.b" in text and "x.a" not in text


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


def test_tiers_in_host_mode_end_only_this_direction(fws):
    """Admin Accept returns to the forward chain (the other pod's chain still decides its
    direction), Deny drops, Pass goes to the NetworkPolicy chain; Baseline after it."""
    import dataclasses

    from enforcer.ir import TierRule

    fw = fws["x/a"]
    tiers = (TierRule("Admin", "cnp", 1, "ingress", 0, "Accept"), TierRule("Admin", "cnp", 1, "ingress", 1, "Deny"),
             TierRule("Admin", "cnp", 1, "ingress", 2, "Pass"))
    tiered = dataclasses.replace(fw, ingress=dataclasses.replace(fw.ingress, admin=tiers, isolated=False),
                                 egress=dataclasses.replace(fw.egress, baseline=(
                                     TierRule("Baseline", "b", 5, "egress", 0, "Deny"),)))
    chains = dict(nft_host.pod_chains(placement.shared(tiered)))
    assert set(chains) == {f"{p}{d}.x.a" for p in ("", "adm.", "np.", "bl.") for d in ("in", "eg")}
    assert chains["in.x.a"][-1].startswith("\t\tcounter goto adm.in.x.a ")
    adm = chains["adm.in.x.a"]
    assert [ln.split(" comment")[0].strip() for ln in adm] == [
        "counter return", 'limit rate 10/second log prefix "netpol drop ingress x/a: Admin cnp[1]" group 100',
        "counter drop", "counter goto np.in.x.a", "counter goto np.in.x.a"]  # a Deny logs, as in pod mode
    assert any(ln.strip().startswith("counter jump bl.in.x.a ") for ln in chains["np.in.x.a"])
    assert chains["np.in.x.a"][-1].strip().startswith("counter return ")
    assert "counter drop" in chains["bl.eg.x.a"][1] and " log prefix " in chains["bl.eg.x.a"][0]
    text = nft_host.render_node([(tiered, "veth0")])
    assert "chain adm.in.x.a {" in text and "accept" not in "".join(adm)


def test_mark_collision_on_one_node_is_a_clear_error():
    seen = {}
    for i in range(100000):
        m = placement.pod_mark(f"ns/p{i}")
        if m in seen:
            a, b = seen[m], f"ns/p{i}"
            break
        seen[m] = f"ns/p{i}"
    from enforcer.ir import PodFirewall

    with pytest.raises(BackendError, match="same mark"):
        nft_host.render_node([(PodFirewall(a), "v0"), (PodFirewall(b), "v1")])


def test_a_private_set_that_changes_kind_is_made_again(fws):
    """A set of unknown group (here: tier sets) is the pod's own; when its rule gains an
    ipBlock its type changes, and a table adopted from a listing knows the old type."""
    import dataclasses

    fw = fws["x/a"]
    s = next(s for s in fw.sets if isinstance(s, AddrSet) and not s.interval)
    private = dataclasses.replace(fw, sets=tuple(dataclasses.replace(x, group="") for x in fw.sets))
    text = nft_host.render_node([(private, "veth0")])
    node = adopt(text[text.index("table inet"):], text[: text.index("table inet")])
    name = f"{s.name}.x.a"
    assert node.types[name] == "ipv4_addr"
    grown = dataclasses.replace(private, sets=tuple(
        dataclasses.replace(x, interval=True, v4=("10.0.0.0/8",), v6=()) if x.name == s.name else x
        for x in private.sets))
    p = _plan(node, [(grown, "veth0")], [private])
    assert f"delete set inet netpol_host {name}_4" in p.text
    assert p.text.index(f"flush chain inet netpol_host in.x.a") < p.text.index(f"delete set inet netpol_host {name}_4")
    assert p.text.index(f"delete set inet netpol_host {name}_4") < p.text.index(f"add set inet netpol_host {name}_4")


def test_a_node_listing_parsed_once_serves_every_pods_read_back(shared_fws):
    from backends.nft_host_node import View

    fws = shared_fws
    text = nft_host.render_node([(fws["x/a"], "veth0"), (fws["x/b"], "veth1")])
    v = View(7, text[text.index("table inet"):], text[: text.index("table inet")])
    mark = f"0x{placement.pod_mark('x/b'):08x}"
    assert f'"veth1" : {mark}' in v.ports and f"{mark} : jump eg.x.b" in v.egress
    assert f"{fws['x/b'].ips[0]} : jump in.x.b" in v.ingress
    assert ("chain", "in.x.a") in v.blocks and v.gen == 7
    assert all(("set", f"{s.name}_4") in v.blocks for s in placement.shared(fws["x/a"]).sets)
