"""The lab's address plans, pinned: what ``lab up`` (one node, several nodes) and
``lab apply`` give every pod, Service and external host, which pod CIDRs and gateways the
node gets, and which node addresses each pod's firewall allows.

Each firewall is pinned by the addresses it holds (its pod's, its node's, every set's
elements), not by its rendering, which the goldens pin. The lab's own build and converge
code runs here (enforcer/lab/converge.py, multinode.py, endpoints.py) with its two kernel
seams replaced: the node (topology.Node, nodes.Fabric: links, addresses, routes), and
namespaces, servers and the Services' DNAT. Everything the lab plans and compiles is real. The expected plans in data/lab_plans.json were written by
the code before the address step moved into enforcer/compiler/frontend.py; regenerate them
(``python -m tests.unit.test_lab_plans``) only for a change that means to move addresses,
and say so in its commit.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from backends.base import FakeBackend
from enforcer.errors import InputError
from enforcer.load import manifests
from enforcer.model import Cluster, ExternalHost, Namespace, Pod

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "data" / "lab_plans.json"


# ---------------------------------------------------------------- the kernel seams


class FakeNode:
    """Records what the lab wires instead of wiring it (topology.Node and nodes.Fabric)."""

    log: list = []

    def __init__(self, *args, **kwargs):
        pass

    @classmethod
    def build(cls, *args, **kwargs):
        if len(args) >= 3:  # topology.Node.build(netns, bridge, gateways)
            FakeNode.log.append(["gateways", [list(g) for g in args[2]]])
        return cls()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def close(self):
        pass

    def add_pod(self, ep, cidrs):
        FakeNode.log.append(["pod", ep.key, list(ep.ips), ep.node, list(cidrs)])

    def add_external(self, ep):
        FakeNode.log.append(["external", ep.key, list(ep.ips), list(ep.node_addrs)])

    def add_gateway(self, addr, prefixlen):
        FakeNode.log.append(["gateway", addr, prefixlen])

    def remove(self, ep):
        FakeNode.log.append(["remove", ep.key])


def _seams(setattr, labs_dir: str) -> None:
    from enforcer.lab import endpoints, nodes, serverctl, state, topology

    setattr(state, "LABS_DIR", labs_dir)
    setattr(topology, "create_netns", lambda *a, **k: None)
    setattr(topology, "Node", FakeNode)
    setattr(nodes, "Fabric", FakeNode)
    setattr(endpoints, "services_sync", lambda *a, **k: None)
    setattr(endpoints, "server_sync", lambda *a, **k: [])
    setattr(endpoints, "remove_netns", lambda *a, **k: None)
    setattr(serverctl, "is_ours", lambda *a, **k: True)
    FakeNode.log = []


@pytest.fixture
def lab(tmp_path, monkeypatch):
    _seams(monkeypatch.setattr, str(tmp_path))
    return Lab()


class Lab:
    """Drives converge.build, multinode.build and converge.converge as control.py does."""

    def up(self, name: str, cluster: Cluster, *, ipv6: bool = False, nodes: int = 1,
           node_of: dict | None = None) -> dict:
        from enforcer.lab import converge, multinode, state

        state.claim(name)
        FakeNode.log = []
        if nodes > 1:
            multinode.build(name, cluster, FakeBackend(), "fake", True, nodes=nodes, api=False,
                            node_of=node_of or {}, policies=[])
        else:
            converge.build(name, cluster, FakeBackend(), "fake", ipv6)
        return self.plan(name)

    def apply(self, name: str, cluster: Cluster, node_of: dict | None = None) -> dict:
        from enforcer.lab import converge, state

        FakeNode.log = []
        converge.converge(state.load(name), cluster, FakeBackend(), node_of)
        return self.plan(name)

    def plan(self, name: str) -> dict:
        from enforcer.lab import state

        st = state.load(name)
        c = st.cluster
        return {
            "cidrs": list(st.cidrs),
            "gateways": list(st.gateways),
            "nodes": [{k: n[k] for k in ("name", "cidr", "gateway", "underlay")} for n in st.nodes],
            "pods": {k: list(p.ips) for k, p in sorted(c.pods.items())},
            "services": {k: s.cluster_ip for k, s in sorted(c.services.items())},
            "endpoints": {k: [e.kind, list(e.ips), e.node, list(e.node_addrs)]
                          for k, e in sorted(st.endpoints.items())},
            "firewalls": {k: [list(fw.node_ips), _digest(fw)] for k, fw in sorted(st.firewalls.items())},
            "wired": FakeNode.log,
        }


def _digest(fw) -> str:
    """The addresses a firewall holds: its pod's, and every set's elements by name (what
    the address plan decides; how a backend renders them is pinned by the goldens)."""
    sets = sorted([s.name, list(s.v4), list(s.v6)] for s in fw.sets)
    doc = json.dumps([list(fw.ips), list(fw.node_ips), sets], default=list)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the inputs


def example_inputs() -> dict[str, list[str]]:
    """Every example directory, as ``netpol lab up -f DIR`` loads it (each file of a
    concept directory with the concepts' cluster, unless it has its own)."""
    out: dict[str, list[str]] = {}
    ex = ROOT / "examples"
    for d in sorted(p for p in ex.rglob("*") if p.is_dir()):
        files = sorted(str(f) for f in d.iterdir() if f.suffix in (".yaml", ".yml"))
        if not files:
            continue
        label = str(d.relative_to(ROOT))
        if d.parent.name == "concepts" and not (d / "cluster.yaml").exists():
            for f in files:  # a concept's files are alternatives, each with the concepts' cluster
                out[f"{label}/{Path(f).name}"] = [str(ex / "concepts" / "cluster.yaml"), f]
            continue
        out[label] = files
    return out


def load(files: list[str]) -> Cluster:
    return manifests.load(files).cluster


def _ns(*names: str) -> dict[str, Namespace]:
    return {n: Namespace(n, {"kubernetes.io/metadata.name": n}) for n in names}


def fixed() -> Cluster:
    """Pods with fixed addresses outside the pod CIDR (IPv4 and IPv6) and an IPv6 external host."""
    pods = [Pod("a", "x"), Pod("a", "y"), Pod("a", "v4", ips=("172.16.5.9",)),
            Pod("b", "v6", ips=("fd00:99::5",)), Pod("b", "z")]
    return Cluster(_ns("a", "b"), {p.key: p for p in pods}, {},
                   {"six": ExternalHost("six", ("fd00:50::10",))})


def spread() -> Cluster:
    """Several nodes: a pod with a fixed address in the first node slot (the node CIDRs
    skip it) and one whose manifest names a node."""
    pods = [Pod("a", f"p{i}") for i in range(7)] + [Pod("a", "fixed", ips=("10.244.101.7",))]
    return Cluster(_ns("a"), {p.key: p for p in pods}, {}, {"ext": ExternalHost("ext", ("192.168.50.10",))})


def _changed(c: Cluster, drop: str, add: list[Pod]) -> Cluster:
    pods = {k: p for k, p in c.pods.items() if k != drop}
    pods.update({p.key: p for p in add})
    namespaces = dict(c.namespaces)
    namespaces.update(_ns(*{p.namespace for p in add}))
    return replace(c, pods=pods, namespaces=namespaces)


def plans(lab: Lab) -> dict:
    out: dict[str, dict] = {}
    n = 0

    def name() -> str:
        nonlocal n
        n += 1
        return f"plan{n}"

    for label, files in example_inputs().items():
        try:
            cluster = load(files)
        except InputError:
            continue  # an example of what validation refuses (08-indentation/as-printed.yaml)
        out[f"up {label}"] = lab.up(name(), cluster)
    tier = load(example_inputs()["examples/three-tier"])
    shop = load(example_inputs()["examples/shop"])
    out["up three-tier --ipv6"] = lab.up(name(), tier, ipv6=True)
    out["up fixed"] = lab.up(name(), fixed())
    # lab apply: a pod goes, new ones come (one with an address outside every CIDR), then back.
    first = sorted(tier.pods)[0]
    moved = _changed(tier, first, [Pod("new", "a"), Pod("new", "b", ips=("172.20.1.5",)), Pod("zz", "c")])
    one = name()
    lab.up(one, tier)
    out["apply three-tier changed"] = lab.apply(one, moved)
    out["apply three-tier back"] = lab.apply(one, tier)
    out["apply three-tier fixed v6"] = lab.apply(one, _changed(tier, first, [Pod("new", "six", ips=("fd00:7::9",))]))
    six = name()
    lab.up(six, fixed())
    out["apply fixed changed"] = lab.apply(six, _changed(fixed(), "a/x", [Pod("a", "w"), Pod("c", "q")]))
    # Several nodes.
    out["up three-tier --nodes 3"] = lab.up(name(), tier, nodes=3)
    out["up shop --nodes 2"] = lab.up(name(), shop, nodes=2, node_of={sorted(shop.pods)[-1]: "node1"})
    many = name()
    out["up spread --nodes 3"] = lab.up(many, spread(), nodes=3, node_of={"a/p6": "node3"})
    out["apply spread changed"] = lab.apply(
        many, _changed(spread(), "a/p1", [Pod("a", "n1"), Pod("a", "n2"), Pod("b", "n3")]), {"a/n2": "node1"})
    out["apply spread back"] = lab.apply(many, spread(), {"a/p6": "node3"})
    return out


def test_lab_address_plans_are_the_pinned_ones(lab):
    got = json.loads(json.dumps(plans(lab)))
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == want[key], key


def test_the_pinned_plans_cover_what_the_lab_plans_around():
    want = json.loads(GOLDEN.read_text())
    fixed_plan = want["up fixed"]
    assert "172.16.5.0/24" in fixed_plan["cidrs"] and "fd00:99::/64" in fixed_plan["cidrs"]
    assert any(":" in a for a in fixed_plan["pods"]["a/x"])  # an IPv6 external host: dual-stack pods
    assert ["gateway", "172.20.1.1", 24] in want["apply three-tier changed"]["wired"]
    nodes = want["up spread --nodes 3"]["nodes"]
    assert [n["cidr"] for n in nodes] == ["10.244.102.0/24", "10.244.103.0/24", "10.244.104.0/24"]
    assert want["up spread --nodes 3"]["endpoints"]["a/p6"][2] == "node3"
    assert {fw[0][0] for fw in want["up three-tier --nodes 3"]["firewalls"].values()} == \
        {n["gateway"] for n in want["up three-tier --nodes 3"]["nodes"]}


def test_a_pod_without_a_firewall_on_record_gets_the_one_the_lab_compiled(lab):
    # control.firewalls_of (probe --expect model), observe (stats, drops) and the Services'
    # expected rows read the lab's firewalls through endpoints.firewalls_in_force.
    from enforcer.lab import control, endpoints, observe, state

    lab.up("rec", load(example_inputs()["examples/three-tier"]))
    st = state.load("rec")
    key = sorted(st.firewalls)[0]
    want = st.firewalls.pop(key)  # as a crash between an apply and the state's save leaves it
    assert endpoints.firewalls_in_force(st)[key] == want
    assert control.firewalls_of(st)[key] == want
    assert observe.LabView.of(st).firewalls[key] == want
    assert set(endpoints.firewalls_in_force(st)) == set(st.cluster.pods)


if __name__ == "__main__":  # regenerate the pinned plans
    import tempfile

    from _pytest.monkeypatch import MonkeyPatch

    mp = MonkeyPatch()
    with tempfile.TemporaryDirectory() as d:
        _seams(mp.setattr, d)
        GOLDEN.write_text(json.dumps(plans(Lab()), indent=1, sort_keys=True) + "\n")
    mp.undo()
    print(f"wrote {GOLDEN} ({os.path.getsize(GOLDEN)} bytes)")
