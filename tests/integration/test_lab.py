"""The lab: namespaces, veths, servers and real probes (root), plus its pure parts.

Every lab here is named ``npt-<hex>`` (namespaces ``netpol-npt-<hex>...``) and removed in a
``finally`` or by the ``netpol_lab`` fixture; the tests check that nothing is left.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from backends.base import FakeBackend
from enforcer import netns
from enforcer.errors import LabError
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance
from enforcer.lab import codec, control, naming, serverctl, state
from enforcer.lab.probe import Target, run as run_probes
from enforcer.model import (Cluster, ContainerPort, ExternalHost, IPBlock, LabelSelector, Namespace,
                            NetworkPolicy, Peer, Pod, Rule)

from tests.conftest import ROOT
FAST = 0.3  # probe timeout in tests: veths answer in well under a millisecond


def _backends() -> list[str]:
    out = []
    for name in ("nftables", "iptables"):
        try:
            from backends import registry

            registry.get(name)
            out.append(name)
        except Exception:
            pass
    return out or ["fake"]


REAL_BACKENDS = _backends() if ROOT else ["fake"]


def pod(ns: str, name: str, labels: dict, ports=((80, "TCP"), (81, "UDP")), ips=()) -> Pod:
    return Pod(ns, name, dict(labels), tuple(ips), tuple(ContainerPort(p, pr) for p, pr in ports))


def small_cluster(policies=()) -> Cluster:
    """4 pods in 2 namespaces and one external host."""
    pods = [pod("x", "a", {"app": "a"}), pod("x", "b", {"app": "b"}),
            pod("y", "a", {"app": "a"}), pod("y", "c", {"app": "c"})]
    ext = ExternalHost("backup", ("192.168.50.10",), (ContainerPort(22, "TCP"),))
    namespaces = {n: Namespace(n, {"kubernetes.io/metadata.name": n}) for n in ("x", "y")}
    return Cluster(namespaces, {p.key: p for p in pods},
                   {p.key: p for p in policies}, {"backup": ext})


DENY_X = NetworkPolicy("x", "deny-ingress", LabelSelector(), frozenset({"Ingress"}))


def lab_name() -> str:
    return f"npt-{uuid.uuid4().hex[:8]}"


def leftovers(name: str) -> list[str]:
    left = [n for n in netns.list_names(naming.node_netns(name)) if naming.carries(name, n)]
    left += [f"pid {p}" for p in serverctl.find(name)]
    if os.path.exists(state.lab_dir(name)):
        left.append(state.lab_dir(name))
    return left


@pytest.fixture
def lab():
    """A lab name that is always torn down."""
    name = lab_name()
    try:
        yield name
    finally:
        control.down(name)
        assert leftovers(name) == []


# ------------------------------------------------------------------- pure parts (no root)


def test_lab_names_and_ownership():
    assert naming.pod_netns("demo", "x/a") == "netpol-demo-x-a"
    assert naming.external_netns("demo", "backup") == "netpol-demo-ext.backup"
    assert naming.pod_link("demo-lab", 12) == "demo--12"
    assert len(naming.pod_link("abcdefgh", 999999999)) <= 15
    with pytest.raises(LabError):
        naming.check_lab_name("Bad/Name")
    # Lab "a" must not claim lab "a-b"'s namespaces while "a-b" exists.
    assert naming.owned_by("a", "netpol-a-x-p", {"a", "a-b"})
    assert not naming.owned_by("a", "netpol-a-b-x-p", {"a", "a-b"})
    assert naming.owned_by("a", "netpol-a-b-x-p", {"a"})
    assert not naming.owned_by("a", "netpol-ab-x-p", {"a"})


def test_state_codec_round_trip():
    c = small_cluster([DENY_X])
    fw = PodFirewall("x/a", ("10.244.0.2",), ("10.244.0.1",),
                     ingress=DirectionPolicy(True, ("x/deny",), (
                         AllowRule(Provenance("x/p", "ingress", 0), "s0", (PortMatch("TCP", 80, 80),)),)),
                     sets=(AddrSet("s0", ("10.244.0.3/32",)),))
    assert codec.decode(json.loads(json.dumps(codec.encode(c)))) == c
    assert codec.decode(json.loads(json.dumps(codec.encode(fw)))) == fw


# ------------------------------------------------------------------- the lab (root)


def host_network() -> tuple:
    """Link names, addresses and routes of the host's own namespace (which the lab never touches)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    return ({line.split(":")[1].strip() for line in links.splitlines()},
            {" ".join(line.split()[1:4]) for line in addrs.splitlines()}, set(routes.splitlines()))


@pytest.mark.root
@pytest.mark.parametrize("backend", REAL_BACKENDS)
def test_small_lab_up_probe_deny_down(backend):
    name = lab_name()
    host = host_network()
    try:
        out = control.up(name, small_cluster(), backend)
        assert host_network() == host
        assert len(out.added) == 5
        # Everything is built where it should be: the pod's eth0 and default route.
        ep = state.load(name).endpoints["x/a"]
        routes = netns.run(ep.netns, ["ip", "route"]).stdout
        assert "default via 10.244.0.1 dev eth0" in routes

        rows = control.probe(name, timeout=FAST).rows
        # 5 endpoints; 80/TCP and 81/UDP on 4 pods (4 sources each), 22/TCP on the host.
        assert len(rows) == 4 * 4 * 2 + 4
        assert all(r["allowed"] for r in rows), [r for r in rows if not r["allowed"]]
        assert {r["detail"] for r in rows} == {"connected"}

        out = control.apply(name, small_cluster([DENY_X]))
        assert set(out.applies) == {"x/a", "x/b"}
        rows = control.probe(name, timeout=FAST).rows
        blocked = {(r["from"], r["to"], r["port"]) for r in rows if not r["allowed"]}
        into_x = {(r["from"], r["to"], r["port"]) for r in rows if r["to"].startswith("x/")}
        if backend != "fake":
            assert blocked == into_x and len(blocked) == 16
            assert all(r["detail"] == "timeout" for r in rows if not r["allowed"])
            model = control.expected(name)
            assert [r["allowed"] for r in model] == [r["allowed"] for r in rows]
    finally:
        assert control.down(name)
    assert leftovers(name) == []


@pytest.mark.root
def test_lab_up_existing_name_fails_and_failed_up_cleans_up(lab, monkeypatch):
    control.up(lab, small_cluster(), "fake")
    with pytest.raises(LabError, match="exists already"):
        control.up(lab, small_cluster(), "fake")
    control.down(lab)

    broken = FakeBackend(fail_on={naming.pod_netns(lab, "y/a")})
    monkeypatch.setattr(control, "get_backend", lambda _name: broken)
    with pytest.raises(Exception, match="injected failure"):
        control.up(lab, small_cluster(), "fake")
    assert leftovers(lab) == []


@pytest.mark.root
def test_two_labs_side_by_side_do_not_see_each_other():
    a, b = lab_name(), lab_name()
    other = small_cluster()
    other.externals = {"far": ExternalHost("far", ("192.168.77.7",), (ContainerPort(22, "TCP"),))}
    try:
        control.up(a, small_cluster(), REAL_BACKENDS[0])
        control.up(b, other, REAL_BACKENDS[0])
        # Same pod names, same pod addresses, separate worlds.
        sa, sb = state.load(a), state.load(b)
        assert sa.endpoints["x/a"].ips == sb.endpoints["x/a"].ips
        assert not {e.netns for e in sa.endpoints.values()} & {e.netns for e in sb.endpoints.values()}
        # Lab a's pod cannot reach lab b's external host, and vice versa.
        probes = [Target(sa.endpoints["x/a"].netns, "192.168.77.7", 22, "TCP"),
                  Target(sb.endpoints["x/a"].netns, "192.168.50.10", 22, "TCP")]
        assert [o.allowed for o in run_probes(probes, timeout=FAST, retries=0)] == [False, False]
        if REAL_BACKENDS[0] != "fake":
            control.apply(a, small_cluster([DENY_X]))
            assert not all(r["allowed"] for r in control.probe(a, timeout=FAST).rows)
            assert all(r["allowed"] for r in control.probe(b, timeout=FAST).rows)
        control.down(a)
        assert leftovers(a) == []
        assert len(control.probe(b, timeout=FAST).rows) == 4 * 4 * 2 + 4  # b untouched
    finally:
        control.down(a)
        control.down(b)
    assert leftovers(a) == [] and leftovers(b) == []


@pytest.mark.root
def test_down_of_a_lab_spares_the_lab_with_a_longer_name():
    a = lab_name()
    b = f"{a}-b"  # its namespaces carry lab a's prefix too
    one = Cluster({}, {"b/p": pod("b", "p", {})}, {}, {})
    try:
        control.up(a, one, "fake")
        control.up(b, one, "fake")
        # Lab a's pod b/p is netpol-<a>-b-p: it carries lab b's prefix, yet it is a's.
        assert naming.carries(b, naming.pod_netns(a, "b/p"))
        assert control.down(b)
        assert netns.exists(naming.pod_netns(a, "b/p")) and netns.exists(naming.node_netns(a))
        control.up(b, one, "fake")
        control.down(a)
        assert not netns.exists(naming.pod_netns(a, "b/p"))
        assert netns.exists(naming.pod_netns(b, "b/p")) and netns.exists(naming.node_netns(b))
        assert serverctl.is_ours(state.load(b).server_pid, b)
    finally:
        control.down(a)
        control.down(b)
    assert leftovers(b) == []


CRASH = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_lab import small_cluster
    from enforcer.lab import control, serverctl
    real_start = serverctl.start
    def start_then_die(*a, **kw):
        pid = real_start(*a, **kw)
        os.kill(os.getpid(), signal.SIGKILL)   # killed after the server, before "ready"
    serverctl.start = start_then_die
    control.up({name!r}, small_cluster(), "fake")
""")


@pytest.mark.root
def test_killed_lab_up_is_cleaned_by_lab_down(lab):
    code = CRASH.format(tests=os.path.dirname(__file__), name=lab)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    left = leftovers(lab)
    assert any(n.startswith("pid ") for n in left), left  # the server outlived it
    assert len([n for n in left if n.startswith("netpol-")]) == 6  # node + 4 pods + 1 host
    with pytest.raises(LabError, match="never completed"):
        control.probe(lab)
    assert control.down(lab)
    assert leftovers(lab) == []
    assert control.down(lab) is False  # nothing left: a second down is a no-op


@pytest.mark.root
def test_apply_adds_and_removes_pods_keeping_addresses(lab):
    backend = REAL_BACKENDS[0]
    control.up(lab, small_cluster([DENY_X]), backend)
    before = state.load(lab)
    grown = small_cluster([DENY_X])
    del grown.pods["y/c"]
    grown.pods["x/new"] = pod("x", "new", {"app": "new"}, ports=((8080, "TCP"),))
    out = control.apply(lab, grown)
    assert out.added == ["x/new"] and out.removed == ["y/c"]
    after = state.load(lab)
    for key in ("x/a", "x/b", "y/a"):
        assert after.endpoints[key].ips == before.endpoints[key].ips
        assert after.endpoints[key].netns == before.endpoints[key].netns
    assert after.endpoints["x/new"].ips[0] not in {e.ips[0] for e in before.endpoints.values()}
    assert not netns.exists(before.endpoints["y/c"].netns)
    rows = control.probe(lab, timeout=FAST).rows
    assert not any("y/c" in (r["from"], r["to"]) for r in rows)
    # A port added to a pod that stays: the server opens it (connected, not refused).
    assert {r["detail"] for r in control.probe(lab, [(8081, "TCP")], timeout=FAST).rows
            if r["to"] == "y/a"} == {"refused"}
    grown.pods["y/a"] = pod("y", "a", {"app": "a"}, ports=((80, "TCP"), (8081, "TCP")))
    assert control.apply(lab, grown).applies == {}
    assert {r["detail"] for r in control.probe(lab, [(8081, "TCP")], timeout=FAST).rows
            if r["to"] == "y/a"} == {"connected"}
    if backend != "fake":
        # The new pod was isolated from its first packet on: port 8080 in x is denied.
        into_new = [r for r in rows if r["to"] == "x/new"]
        assert into_new and not any(r["allowed"] for r in into_new)
        # Relabel y/a so a policy lets it in to x/new: only the changed pod is touched.
        allow = NetworkPolicy("x", "allow-new", LabelSelector((("app", "new"),)), frozenset({"Ingress"}),
                              ingress=(Rule((Peer(pod_selector=LabelSelector((("app", "client"),)),
                                                  namespace_selector=LabelSelector()),)),))
        grown.pods["y/a"] = pod("y", "a", {"app": "client"})
        grown.policies[allow.key] = allow
        out = control.apply(lab, grown)
        assert set(out.applies) == {"x/new"}  # y/a's own firewall did not change
        rows = control.probe(lab, ports=[(8080, "TCP")], timeout=FAST).rows
        assert {r["from"] for r in rows if r["to"] == "x/new" and r["allowed"]} == {"y/a"}


@pytest.mark.root
def test_external_host_and_ipblock(lab):
    backend = REAL_BACKENDS[0]
    if backend == "fake":
        pytest.skip("needs a real backend")
    # x/a may talk out only to 192.168.50.0/24 except .10 on TCP 22: nothing else.
    egress = NetworkPolicy("x", "egress", LabelSelector((("app", "a"),)), frozenset({"Egress"}),
                           egress=(Rule((Peer(ip_block=IPBlock("192.168.50.0/24", ("192.168.50.10/32",))),)),))
    c = small_cluster([egress])
    c.externals["archive"] = ExternalHost("archive", ("192.168.50.20",), (ContainerPort(22, "TCP"),))
    control.up(lab, c, backend)
    rows = control.probe(lab, ports=[(22, "TCP")], timeout=FAST).rows
    got = {r["to"]: r["allowed"] for r in rows if r["from"] == "x/a"}
    assert got == {"x/b": False, "y/a": False, "y/c": False, "backup": False, "archive": True}
    # The node is always reachable (SEMANTICS 12) and the external host sees real addresses.
    node = Target(state.load(lab).endpoints["x/a"].netns, "10.244.0.1", 9, "TCP")
    assert run_probes([node], timeout=FAST)[0].detail == "refused"
    assert control.expected(lab, [(22, "TCP")]) == [
        {k: r[k] for k in ("from", "to", "port", "protocol", "allowed")} for r in rows]


@pytest.mark.root
def test_ipv6_lab(lab):
    control.up(lab, small_cluster(), REAL_BACKENDS[0], ipv6=True)
    st = state.load(lab)
    assert any(":" in a for a in st.endpoints["x/a"].ips)
    rows = control.probe(lab, family=6, timeout=FAST).rows
    assert rows and all(r["allowed"] for r in rows)


def test_plugin_skips_or_runs(netpol_lab):
    """The fixture: a lab from a Cluster, a Reachability expectation, automatic teardown."""
    from enforcer.views.reachability import Reachability

    lab = netpol_lab(small_cluster([DENY_X]), backend=REAL_BACKENDS[0])
    pods = ["x/a", "x/b", "y/a", "y/c", "backup"]
    r = Reachability(pods, ports=["81/UDP"])
    if REAL_BACKENDS[0] != "fake":
        r.expect_peer(None, "x/*", False)  # everything into namespace x is denied
    lab.assert_matches(r, timeout=FAST)
    lab.assert_matches("model", ports="80/TCP", timeout=FAST)
    wrong = Reachability(pods, ports=["81/UDP"], default=False)
    with pytest.raises(AssertionError, match=r"\d+ wrong, \d+ correct"):
        lab.assert_matches(wrong, timeout=FAST)


# ------------------------------------------------------------------- the command line

YAML = textwrap.dedent("""
    apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: x, labels: {app: a}}
    spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: y, labels: {app: b}}
    spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
    ---
    apiVersion: netpol-enforcer/v1alpha1
    kind: ExternalHost
    metadata: {name: backup}
    spec: {ips: [192.168.50.10], ports: [{port: 22, protocol: TCP}]}
""")
DENY_YAML = YAML + textwrap.dedent("""
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: y}
    spec: {podSelector: {}}
""")


def netpol(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.root
def test_cli_lab_commands(lab, tmp_path):
    pytest.importorskip("enforcer.load.manifests")
    backend = REAL_BACKENDS[0]
    (tmp_path / "lab.yaml").write_text(YAML)
    (tmp_path / "deny.yaml").write_text(DENY_YAML)
    r = netpol("lab", "up", "-f", str(tmp_path / "lab.yaml"), "--name", lab, "--backend", backend)
    assert r.returncode == 0, r.stderr
    r = netpol("lab", "up", "-f", str(tmp_path / "lab.yaml"), "--name", lab, "--backend", backend)
    assert r.returncode != 0 and "exists already" in r.stderr and "Traceback" not in r.stderr
    r = netpol("lab", "list", "-o", "json")
    assert lab in [x["name"] for x in json.loads(r.stdout)["labs"]]
    r = netpol("lab", "apply", "--name", lab, "-f", "-", stdin=DENY_YAML)
    assert r.returncode == 0, r.stderr
    r = netpol("lab", "probe", "--name", lab, "-o", "json", "--timeout", str(FAST))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["backend"] == backend
    cells = {(x["from"], x["to"], x["port"]): x["allowed"] for x in doc["results"]}
    assert cells[("x/a", "backup", 22)] is True
    if backend != "fake":
        assert cells[("x/a", "y/b", 80)] is False
    r = netpol("lab", "probe", "--name", lab, "--expect", "model", "--timeout", str(FAST))
    assert r.returncode == 0 and "0 wrong" in r.stdout, r.stdout + r.stderr
    wrong = {"results": [{"from": "x/a", "to": "y/b", "port": 80, "protocol": "TCP",
                          "allowed": backend != "fake"}]}
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    r = netpol("lab", "probe", "--name", lab, "--expect", str(tmp_path / "wrong.json"), "--timeout", str(FAST))
    assert r.returncode == 1 and "1 wrong, 0 correct" in r.stdout, r.stdout + r.stderr
    r = netpol("lab", "down", "--name", lab)
    assert r.returncode == 0 and leftovers(lab) == []


@pytest.mark.root
def test_cli_one_shot_probe(tmp_path):
    pytest.importorskip("enforcer.load.manifests")
    (tmp_path / "deny.yaml").write_text(DENY_YAML)
    before = set(netns.list_names("netpol-probe-"))
    r = netpol("probe", "-f", str(tmp_path / "deny.yaml"), "--backend", REAL_BACKENDS[0],
               "--ports", "80/TCP", "-o", "json", "--timeout", str(FAST), "--expect", "model")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["comparison"]["wrong"] == 0 and len(doc["results"]) == 6
    assert set(netns.list_names("netpol-probe-")) == before
