"""Host mode with real packets (issue 13): the pods' chains in the node's table (nftables;
the iptables flavours at the end of the module).

- the upstream e2e conformance cases, probed through a lab switched to host mode, every
  case once: the three backends take turns (``HOST_TURNS``; pod mode runs every case on
  nftables and iptables, tests/integration/test_conformance_lab.py);
- the bypass test: a pod with CAP_NET_ADMIN flushes its own namespace (``nft flush
  ruleset``, ``iptables -F``): in host mode every denied connection stays denied; in pod
  mode the flush opens the pod (what the daemon's repair is for);
- switching a lab between pod and host mode leaves no rules of ours in the old place;
- a pod talking to itself and two pods of one node behave as Kubernetes says.

The nftables share of the cases uses one lab, made in pod mode and moved to host mode with
``lab apply --enforce-at host`` (so the switch is exercised on a whole lab too).
"""
from __future__ import annotations

import pytest

from enforcer import netns
from enforcer.lab import control, hostmode
from tests.conformance.cases import load_cases
from tests.integration.test_conformance_lab import CONFIRM_TIMEOUT, FAST_TIMEOUT, _check_step

pytestmark = pytest.mark.root

CASES = load_cases()
# Host mode renders one node table per backend from the same IR chain; what differs is the
# backend's rendering and loader, which every case exercises alike. So each probeable case
# runs once in host mode, the backends taking turns in file order (nftables the 1st, 4th,
# ... case; iptables the 2nd, 5th, ...; iptables-legacy the 3rd, 6th, ...): every kind of
# case reaches every backend, in a third of the time of all cases on each.
HOST_TURNS = ["nftables", "iptables", "iptables-legacy"]
PROBEABLE = [c for c in CASES if c.probeable]  # SCTP-only cases: the model runner checks them


def host_turn(backend: str) -> list:
    return PROBEABLE[HOST_TURNS.index(backend)::len(HOST_TURNS)]


def _tables(ns: str) -> str:
    return netns.run(ns, ["nft", "list", "tables"], check=False).stdout


@pytest.fixture(scope="module")
def lab(netpol_lab_module):
    base = [o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
    lab = netpol_lab_module(base, "nftables")
    out = control.apply(lab.name, lab.cluster, enforce_at="host")
    assert "rules moved from pod to host" in out.notes
    assert hostmode.load(lab.name) == "host"
    return lab


@pytest.mark.parametrize("case", host_turn("nftables"), ids=[c.id for c in host_turn("nftables")])
def test_host_mode_matches_upstream_expectation(lab, case, tmp_path):
    for index, step in enumerate(case.steps):
        lab.apply([str(step.write(tmp_path, f"step{index + 1}"))])
        if not any(c.probeable for c in step.checks):
            continue
        failures = _check_step(lab, case, index, FAST_TIMEOUT)
        if failures:
            failures = _check_step(lab, case, index, CONFIRM_TIMEOUT)
        assert not failures, f"host mode: {case.title}\n\n" + "\n".join(f.text for f in failures)
    st = control.cluster_state(lab.name)
    for ep in st.endpoints.values():  # host mode: nothing of ours inside any pod
        if ep.kind == "pod":
            assert "netpol" not in _tables(ep.netns), ep.key


POLICY = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {pod: c}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-locked, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
"""


def _cells(lab) -> dict[tuple[str, str], bool]:
    rows = lab.probe(ports=[(80, "TCP")], timeout=0.5)
    return {(r["from"], r["to"]): r["allowed"] for r in rows}


def _flush(st, key: str) -> None:
    ns = st.endpoints[key].netns
    netns.run(ns, ["nft", "flush", "ruleset"])
    netns.run(ns, ["iptables", "-F"], check=False)
    netns.run(ns, ["ip6tables", "-F"], check=False)


@pytest.mark.parametrize("mode", ["host", "pod"])
def test_bypass_a_pod_flushing_its_own_rules(netpol_lab, tmp_path, mode):
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], "nftables")
    if mode == "host":
        control.apply(lab.name, lab.cluster, enforce_at="host")
    want = {("x/b", "x/a"): True, ("x/c", "x/a"): False, ("x/a", "x/b"): False, ("x/a", "x/c"): False,
            ("x/b", "x/c"): True, ("x/c", "x/b"): True}
    before = _cells(lab)
    assert {k: before[k] for k in want} == want
    st = control.cluster_state(lab.name)
    for key in ("x/a", "x/b", "x/c"):  # every pod flushes, the isolated one above all
        _flush(st, key)
    after = _cells(lab)
    if mode == "host":
        assert {k: after[k] for k in want} == want  # every denied connection stays denied
    else:
        # Pod mode's known limit: the flush opened x/a; the daemon's repair restores it
        # (tests/integration/test_daemon.py drift repair), the lab alone does not.
        assert after[("x/c", "x/a")] and after[("x/a", "x/b")]


def test_switching_leaves_no_stale_rules_and_enforces_each_time(netpol_lab, tmp_path):
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], "nftables")
    st = control.cluster_state(lab.name)
    pods = [e.netns for e in st.endpoints.values() if e.kind == "pod"]
    assert "netpol_host" not in _tables(st.node_netns)
    assert all("netpol" in _tables(ns) for ns in pods)
    for mode in ("host", "pod", "host"):
        control.apply(lab.name, lab.cluster, enforce_at=mode)
        assert hostmode.load(lab.name) == mode
        node = _tables(st.node_netns)
        assert ("netpol_host" in node) == (mode == "host")
        assert all(("netpol" in _tables(ns)) == (mode == "pod") for ns in pods)
        cells = _cells(lab)
        assert cells[("x/b", "x/a")] and not cells[("x/c", "x/a")] and not cells[("x/a", "x/b")]


def test_incremental_pod_add_change_and_removal_in_host_mode(netpol_lab, tmp_path):
    """A new pod adds its chains and entries; a removed one takes them with it; the
    other pods' chains are never rebuilt (their counters keep counting)."""
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], "nftables")
    control.apply(lab.name, lab.cluster, enforce_at="host")
    _cells(lab)
    stats = {(r["pod"], r["rule"]): r["packets"] for r in lab.stats()}
    assert stats[("x/a", "ingress isolated by x/a-locked")] > 0  # lab stats reads the node's chains
    extra = POLICY + """
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
"""
    (tmp_path / "q.yaml").write_text(extra)
    out = lab.apply([str(tmp_path / "q.yaml")])
    assert out.added == ["x/d"]
    assert out.applies.get("x/a") == "delta"  # a peer joined x/a's set: elements only
    st = control.cluster_state(lab.name)
    listing = netns.run(st.node_netns, ["nft", "list", "table", "inet", "netpol_host"]).stdout
    assert "chain in.x.d {" in listing and "chain eg.x.d {" in listing
    cells = _cells(lab)
    assert cells[("x/d", "x/a")] and not cells[("x/c", "x/a")]
    if stats:  # x/a's chain was not replaced: its counters only grew
        after = {(r["pod"], r["rule"]): r["packets"] for r in lab.stats()}
        assert all(after.get(k, 0) >= v for k, v in stats.items() if k[0] == "x/a")
    lab.apply([str(tmp_path / "p.yaml")])
    listing = netns.run(st.node_netns, ["nft", "list", "table", "inet", "netpol_host"]).stdout
    assert "x.d" not in listing
    bridge = netns.run(st.node_netns, ["nft", "list", "table", "bridge", "netpol_host"]).stdout
    assert bridge.count(" : 0x4e") == 3


def test_pod_to_itself_and_same_node_pods_in_host_mode(netpol_lab, tmp_path):
    """A pod always reaches itself (its own address: loopback inside the pod, never the
    node); two pods of one node pass the sender's egress and the receiver's ingress."""
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], "nftables")
    control.apply(lab.name, lab.cluster, enforce_at="host")
    st = control.cluster_state(lab.name)
    a = st.endpoints["x/a"]
    proc = netns.run(a.netns, ["python3", "-c",
                               "import socket,sys; s=socket.create_connection((sys.argv[1],80),timeout=1); print('ok')",
                               a.ips[0]], check=False)
    assert "ok" in proc.stdout, proc.stderr
    cells = _cells(lab)
    # a's egress is closed even towards b, whose ingress is open: both chains are walked
    assert not cells[("x/a", "x/b")] and cells[("x/b", "x/a")]


def test_drops_are_logged_and_attributed_in_host_mode(netpol_lab, tmp_path):
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], "nftables")
    control.apply(lab.name, lab.cluster, enforce_at="host")
    with lab.drops() as seen:
        _cells(lab)
    pairs = {(d["pod"], d["direction"]) for d in seen}
    assert ("x/a", "ingress") in pairs and ("x/a", "egress") in pairs, seen


def test_several_nodes_each_table_holds_only_its_own_pods(netpol_lab, tmp_path):
    """Two nodes: every node's table has the chains of its own pods only; pods on one node
    and across nodes behave as in pod mode."""
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], "nftables", nodes=2)
    control.apply(lab.name, lab.cluster, enforce_at="host")
    st = control.cluster_state(lab.name)
    pods = {k: e for k, e in st.endpoints.items() if e.kind == "pod"}
    assert len({e.node for e in pods.values()}) == 2
    for n in st.nodes:
        listing = netns.run(n["netns"], ["nft", "list", "table", "inet", "netpol_host"]).stdout
        for key, ep in pods.items():
            tag = key.replace("/", ".")
            assert (f"chain in.{tag} {{" in listing) == (ep.node == n["name"]), (n["name"], key)
        assert all("netpol" not in _tables(ep.netns) for ep in pods.values())
    cells = _cells(lab)
    want = {("x/b", "x/a"): True, ("x/c", "x/a"): False, ("x/a", "x/b"): False, ("x/a", "x/c"): False,
            ("x/b", "x/c"): True, ("x/c", "x/b"): True}
    assert {k: cells[k] for k in want} == want
    for key in pods:
        _flush(st, key)
    cells = _cells(lab)
    assert {k: cells[k] for k in want} == want


def _cnp_scenarios_in_host_mode(netpol_lab, tmp_path, backend: str):
    """``backend``'s share of the ClusterNetworkPolicy scenarios, in turn, through one
    host-mode lab: nftables and iptables take turns (test_cnp_lab.checkerboard: each gets
    both tiers, both directions and every protocol; every scenario runs in host mode once
    and in pod mode on nftables and one iptables flavour, tests/integration/test_cnp_lab.py).
    Real packets for each step's probes, and each pod's rules on its node verified against
    the rendering after each scenario. Returns the lab."""
    import yaml

    from tests.conformance.cnp.cases import BASE
    from tests.conformance.cnp.cases import load_cases as load_cnp_cases
    from tests.integration.test_cnp_lab import _probe, checkerboard

    lab = netpol_lab(yaml.safe_load(BASE.read_text())["items"], backend)
    control.apply(lab.name, lab.cluster, enforce_at="host")
    problems = []
    cases = load_cnp_cases()
    turn = checkerboard(cases, ["nftables", "iptables"])
    mine = [c for c in cases if turn[c.name] == backend]
    assert len(mine) >= 8
    for case in mine:
        for k, step in enumerate(case.steps):
            f = tmp_path / f"{case.name}-{k}.yaml"
            f.write_text(step.manifests_text())
            lab.apply([str(f)])
            probes = [p for p in step.probes if p.protocol != "SCTP"]
            wrong = _probe(lab, probes, FAST_TIMEOUT) if probes else []
            if wrong:
                wrong = _probe(lab, probes, CONFIRM_TIMEOUT)
            problems += [f"{case.name} step {k} ({step.name}): {w}" for w in wrong]
        st = control.cluster_state(lab.name)
        host = hostmode.wrap(st, control.get_backend(backend), "host")
        bad = [key for key, e in st.endpoints.items()
               if e.kind == "pod" and not host.verify(e.netns, st.firewalls[key])]
        problems += [f"{case.name}: {key}: the node's rules are not its rendering" for key in bad]
    assert not problems, f"{backend} host mode:\n" + "\n".join(problems)
    return lab


def test_cluster_network_policy_scenarios_in_host_mode(netpol_lab, tmp_path):
    """The ClusterNetworkPolicy conformance scenarios (tests/conformance/cnp/) with real
    packets in nftables host mode: one lab, its share of the scenarios in turn (iptables
    host mode has the others). The tiers are chains of
    the pod in the node's table (backends/nft_host.py): an Admin Accept ends only that pod's
    direction, a Deny drops. After every scenario each pod's rules on the node are exactly
    its rendering, and once the ClusterNetworkPolicies are gone no tier chain is left."""
    from tests.conformance.cnp.cases import BASE

    lab = _cnp_scenarios_in_host_mode(netpol_lab, tmp_path, "nftables")
    f = tmp_path / "none.yaml"
    f.write_text(BASE.read_text())
    lab.apply([str(f)])
    st = control.cluster_state(lab.name)
    listing = netns.run(st.node_netns, ["nft", "list", "table", "inet", "netpol_host"]).stdout
    assert not any(f"chain {p}" in listing for p in ("adm.", "np.", "bl.")), listing


# --------------------------------------------------------------------------------------
# iptables host mode (backends/ipt_host.py): both flavours. Each flavour's turn of the
# conformance cases (HOST_TURNS) runs in one test (one lab each, its cases in turn).

IPT = ["iptables", "iptables-legacy"]
SAVE = {"iptables": "iptables-save", "iptables-legacy": "iptables-legacy-save"}


def _ipt(ns: str, backend: str) -> str:
    """Our chains and sets in a namespace, as the flavour's save tools list them."""
    out = netns.run(ns, [SAVE[backend], "-t", "filter"], check=False).stdout
    out += netns.run(ns, [SAVE[backend].replace("iptables", "ip6tables"), "-t", "filter"], check=False).stdout
    chains = [ln for ln in out.splitlines() if ln.startswith(":") and ("NETPOL" in ln or "NPH-" in ln)]
    sets = netns.run(ns, ["ipset", "list", "-n"], check=False).stdout.split()
    return "\n".join(chains + sets)


def _flush_all(st, key: str) -> None:
    """Everything a pod with CAP_NET_ADMIN can flush in its own namespace, every flavour."""
    ns = st.endpoints[key].netns
    _flush(st, key)
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        netns.run(ns, [tool, "-F"], check=False)
    netns.run(ns, ["ipset", "flush"], check=False)


@pytest.mark.parametrize("backend", IPT)
def test_iptables_host_mode_matches_upstream_cases_taking_turns(netpol_lab, tmp_path, backend):
    """Each flavour's turn of the probeable cases (HOST_TURNS: with nftables, every case
    once in host mode). The two flavours render the same node rules (ipt_host_render) and
    differ only in the tool that loads them. Pod mode runs every case on nftables and iptables
    (test_conformance_lab.py)."""
    base = [o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
    lab = netpol_lab(base, backend)
    control.apply(lab.name, lab.cluster, enforce_at="host")
    st = control.cluster_state(lab.name)
    problems = []
    mine = host_turn(backend)
    assert len(mine) >= 10
    for case in mine:
        for index, step in enumerate(case.steps):
            lab.apply([str(step.write(tmp_path / case.id, f"step{index + 1}"))])
            if not any(c.probeable for c in step.checks):
                continue
            failures = _check_step(lab, case, index, FAST_TIMEOUT)
            if failures:
                failures = _check_step(lab, case, index, CONFIRM_TIMEOUT)
            problems += [f.text for f in failures]
    assert not problems, f"{backend} host mode:\n\n" + "\n".join(problems)
    for ep in st.endpoints.values():  # host mode: nothing of ours inside any pod
        if ep.kind == "pod":
            assert _ipt(ep.netns, backend) == "", ep.key
    assert "NPH-IN-" in _ipt(st.node_netns, backend)


@pytest.mark.parametrize("backend", IPT)
def test_iptables_bypass_and_switching(netpol_lab, tmp_path, backend):
    """Every pod flushes its own namespace: in host mode every denied connection stays
    denied. Switching host -> pod -> host leaves nothing of ours in the old place, and
    the drops are logged in the node, attributed to the pod."""
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], backend)
    st = control.cluster_state(lab.name)
    pods = [e.netns for e in st.endpoints.values() if e.kind == "pod"]
    want = {("x/b", "x/a"): True, ("x/c", "x/a"): False, ("x/a", "x/b"): False, ("x/a", "x/c"): False,
            ("x/b", "x/c"): True, ("x/c", "x/b"): True}
    for mode in ("host", "pod", "host"):
        control.apply(lab.name, lab.cluster, enforce_at=mode)
        assert hostmode.load(lab.name) == mode
        assert ("NPH-IN-" in _ipt(st.node_netns, backend)) == (mode == "host")
        assert "NETPOL-INGRESS" not in _ipt(st.node_netns, backend)
        assert all(("NETPOL-INGRESS" in _ipt(ns, backend)) == (mode == "pod") for ns in pods)
        if mode == "host":
            assert all("np." not in _ipt(ns, backend) for ns in pods)
        else:
            assert "nph" not in _ipt(st.node_netns, backend)
        cells = _cells(lab)
        assert {k: cells[k] for k in want} == want, mode
    with lab.drops() as seen:
        for key in ("x/a", "x/b", "x/c"):  # every pod flushes, the isolated one above all
            _flush_all(st, key)
        after = _cells(lab)
    assert {k: after[k] for k in want} == want  # every denied connection stays denied
    pairs = {(d["pod"], d["direction"]) for d in seen}
    assert ("x/a", "ingress") in pairs and ("x/a", "egress") in pairs, seen
    stats = {(r["pod"], r["rule"]): r["packets"] for r in lab.stats()}
    assert stats[("x/a", "ingress isolated by x/a-locked")] > 0  # lab stats reads the node's chains


def test_iptables_host_mode_incremental_and_two_nodes(netpol_lab, tmp_path):
    """Two nodes: each node's chains are its own pods'; a new pod adds its chains (a peer
    joining x/a's set is an element delta), a removed one takes them with it; drops are
    read on every node."""
    (tmp_path / "p.yaml").write_text(POLICY)
    lab = netpol_lab([str(tmp_path / "p.yaml")], "iptables", nodes=2)
    control.apply(lab.name, lab.cluster, enforce_at="host")
    from backends import ipt_host

    def check_nodes():
        st = control.cluster_state(lab.name)
        pods = {k: e for k, e in st.endpoints.items() if e.kind == "pod"}
        for n in st.nodes:
            have = _ipt(n["netns"], "iptables")
            for key, ep in pods.items():
                assert (ipt_host.chain_names(key)["ingress"] in have) == (ep.node == n["name"]), (n, key)
        return st, pods

    st, pods = check_nodes()
    assert len({e.node for e in pods.values()}) == 2
    (tmp_path / "q.yaml").write_text(POLICY + """
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
""")
    out = lab.apply([str(tmp_path / "q.yaml")])
    assert out.added == ["x/d"] and out.applies.get("x/a") == "delta"
    st, pods = check_nodes()
    with lab.drops() as seen:  # read in every node's namespace
        cells = _cells(lab)
    assert ("x/a", "ingress") in {(d["pod"], d["direction"]) for d in seen}, seen
    assert cells[("x/d", "x/a")] and cells[("x/b", "x/a")] and not cells[("x/c", "x/a")]
    assert not cells[("x/a", "x/b")] and cells[("x/c", "x/b")]
    # Drift on x/a's node: its ingress chain flushed and a set of it destroyed. The next
    # peer change (x/d leaves) cannot be a delta: x/a is rebuilt, and enforces again.
    node = next(n["netns"] for n in st.nodes if n["name"] == pods["x/a"].node)
    netns.run(node, ["iptables", "-F", ipt_host.chain_names("x/a")["ingress"]])
    gone = [n for n in netns.run(node, ["ipset", "list", "-n"]).stdout.split()
            if n.startswith(f"nph{ipt_host.pod_id('x/a')}.") and n.endswith(".ip4")]
    netns.run(node, ["ipset", "destroy", gone[0]])
    out = lab.apply([str(tmp_path / "p.yaml")])
    assert out.applies.get("x/a") == "full", out.applies
    st, pods = check_nodes()
    assert all(ipt_host.chain_names("x/d")["egress"] not in _ipt(n["netns"], "iptables") for n in st.nodes)
    host = hostmode.wrap(st, control.get_backend("iptables"), "host")
    assert host.verify(pods["x/a"].netns, st.firewalls["x/a"])
    cells = _cells(lab)
    assert cells[("x/b", "x/a")] and not cells[("x/c", "x/a")]


def test_iptables_host_mode_cluster_network_policy_scenarios(netpol_lab, tmp_path):
    """The ClusterNetworkPolicy conformance scenarios (tests/conformance/cnp/) in iptables
    host mode (backends/ipt_host_tiers.py): one lab, its share of the scenarios in turn
    (nftables host mode has the others); the
    kernel's rules are exactly the rendering after the tiered steps and after they go."""
    from backends import ipt_host
    from tests.conformance.cnp.cases import BASE

    lab = _cnp_scenarios_in_host_mode(netpol_lab, tmp_path, "iptables")
    f = tmp_path / "none.yaml"
    f.write_text(BASE.read_text())
    lab.apply([str(f)])  # every tier chain gone with the ClusterNetworkPolicies
    st = control.cluster_state(lab.name)
    assert not any(part in _ipt(st.node_netns, "iptables") for part in ("NPH-INA-", "NPH-EGA-", "NPH-INB-"))
    assert ipt_host.HOST_CHAIN in netns.run(st.node_netns, ["iptables-save"]).stdout
