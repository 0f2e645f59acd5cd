"""The API lab (``lab up --api --nodes 3``): the upstream e2e cases driven with kubectl alone,
on three nodes with the nine pods spread over them, each node's own agent enforcing, real
packets (root; skipped without kube-apiserver: make k8s). Every case runs here, once: the
backends take turns (nftables the 1st, 3rd, ... case, iptables the 2nd, 4th, ...); the
lab-side run (tests/integration/test_conformance_lab.py) has every case on each backend.

One API lab per backend for the whole module (a control plane per case would cost ~8 s
each). Each case step is made true in the lab's API server with kubectl only: policies
applied (``kubectl apply``) and deleted (``kubectl delete``), pod and namespace labels set
(``kubectl label --overwrite``). Then the lab is probed until it shows the step's
expectation: the agents converge in milliseconds, but nothing tells a kubectl user when,
so the driver polls (as upstream's e2e does), then confirms a wrong cell with a patient
timeout (tests/integration/test_conformance_lab.py's driver, reused).

One short case set again with the agents in host mode (``--enforce-at host``: their
pods' chains in their node's namespace). Also here: a node's agent killed -9 in the middle
of a case (its pods keep their rules; the other nodes follow the API alone; restarted, it
catches up), two API labs at once with the same pod addresses, and a killed ``lab up
--api`` that ``lab down`` still cleans up.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from enforcer.lab import state as lab_state
from enforcer.netns import list_names
from tests.conformance.cases import load_cases
from tests.integration.test_conformance_lab import CONFIRM_TIMEOUT, FAST_TIMEOUT, NO_SCTP, _check_step

pytestmark = pytest.mark.root

BACKENDS = ["nftables", "iptables"]
CASES = load_cases()
CONVERGE = 20.0  # seconds a step may take to show (agents take milliseconds; CI is busy)


class KubectlDriver:
    """Makes a conformance step's whole state true with kubectl, touching only what
    differs from the step before (tracked here: kubectl is the only writer)."""

    def __init__(self, lab, base: list[dict]):
        self.lab = lab
        self.labels = {self._key(o): dict(o["metadata"].get("labels") or {})
                       for o in base if o["kind"] in ("Namespace", "Pod")}
        self.policies: dict[tuple[str, str], dict] = {}

    @staticmethod
    def _key(o: dict) -> tuple[str, str, str]:
        return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]

    def converge(self, objects) -> None:
        want = {(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o
                for o in objects if o["kind"] == "NetworkPolicy"}
        gone: dict[str, list[str]] = {}
        for ns, name in sorted(self.policies.keys() - want.keys()):
            gone.setdefault(ns, []).append(name)
        for ns, names in gone.items():
            self.lab.kubectl("delete", "networkpolicy", "-n", ns, *names, "--wait=false")
        for o in objects:
            if o["kind"] not in ("Namespace", "Pod"):
                continue
            key, labels = self._key(o), dict(o["metadata"].get("labels") or {})
            have = self.labels.get(key, {})
            if labels == have:
                continue
            args = [f"{k}={v}" for k, v in sorted(labels.items()) if have.get(k) != v]
            args += [f"{k}-" for k in sorted(have) if k not in labels and k != "kubernetes.io/metadata.name"]
            where = ["namespace", key[2]] if key[0] == "Namespace" else ["pod", "-n", key[1], key[2]]
            self.lab.kubectl("label", "--overwrite", *where, *args)
            self.labels[key] = labels
        changed = [o for k, o in want.items() if self.policies.get(k) != o]
        if changed:  # JSON: YAML 1.1 would read a namespace named y as a boolean
            self.lab.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                    "items": changed}))
        self.policies = dict(want)


@pytest.fixture(scope="module", params=BACKENDS)
def api_lab(request, netpol_api_lab_module):
    base = [o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
    lab = netpol_api_lab_module(base, request.param, nodes=3)
    lab.driver = KubectlDriver(lab, base)
    return lab


def _until_matches(lab, case, index: int):
    # The agents enforce ~20 ms after kubectl returns (benchmarks/bench_api_lab.py): a
    # short wait spares most steps a second probe round.
    time.sleep(0.1)
    deadline = time.monotonic() + CONVERGE
    while True:
        failures = _check_step(lab, case, index, FAST_TIMEOUT)
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if failures:
        failures = _check_step(lab, case, index, CONFIRM_TIMEOUT)
    return failures


def test_pods_are_spread_over_three_nodes_each_with_its_agent(api_lab):
    out = json.loads(api_lab.kubectl("get", "pods", "-A", "-o", "json").stdout)
    by_node: dict[str, list[str]] = {}
    for o in out["items"]:
        assert o["status"]["phase"] == "Running"
        by_node.setdefault(o["spec"]["nodeName"], []).append(o["metadata"]["name"])
    assert sorted(by_node) == ["node1", "node2", "node3"]
    assert all(len(v) == 3 for v in by_node.values())
    nodes = json.loads(api_lab.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["node1", "node2", "node3"]
    for node in ("node1", "node2", "node3"):
        assert api_lab.agent_pid(node)
    item = next(i for i in _list() if i["name"] == api_lab.name)
    comps = {(c["component"], c.get("node")): c for c in item["components"]}
    assert set(comps) == {("kube-apiserver", None), ("etcd", None), ("agent", "node1"),
                          ("agent", "node2"), ("agent", "node3")}
    assert all(c["running"] and c["pid"] for c in comps.values())


# Each case once, the backends taking turns in file order (every kind of case reaches both;
# the lab-side run, tests/integration/test_conformance_lab.py, has every case on each).
# pytest groups the tests by backend, so each backend's lab still comes up once.
BY_BACKEND = [pytest.param(BACKENDS[i % 2], c, id=f"{BACKENDS[i % 2]}-{c.id}") for i, c in enumerate(CASES)]


@pytest.mark.parametrize("api_lab, case", BY_BACKEND, indirect=["api_lab"], scope="module")
def test_e2e_case_through_kubectl(api_lab, case):
    if not case.probeable:
        pytest.skip(f"{case.id}: every check probes SCTP. {NO_SCTP}")
    for index, step in enumerate(case.steps):
        api_lab.driver.converge(step.objects)
        if not any(c.probeable for c in step.checks):
            continue
        failures = _until_matches(api_lab, case, index)
        assert not failures, f"{case.title} (3-node API lab)\n\n" + "\n".join(f.text for f in failures)


# Host mode (the agents run with --enforce-at host): a short set covering both directions,
# namespaces, ports, named ports, CIDRs and updates; the whole list runs in pod mode above
# and, lab-side, in tests/integration (host mode e2e on both backends).
HOST_CASES = ("02-default-deny-all", "06-namespace-selector", "14-ports", "19-named-port-egress",
              "22-updated-pod", "27-ingress-and-egress-together", "35-egress-cidr-except")


@pytest.fixture(scope="module")
def api_lab_host(netpol_api_lab_module):
    base = [o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
    lab = netpol_api_lab_module(base, "nftables", nodes=3, enforce_at="host")
    lab.driver = KubectlDriver(lab, base)
    return lab


def test_e2e_cases_through_kubectl_with_the_agents_in_host_mode(api_lab_host):
    from enforcer.lab import apilab
    from enforcer.netns import run

    lab = api_lab_host
    st = lab_state.load(lab.name)
    for node in st.nodes:
        doc = apilab.agent_status(st, node["name"])
        assert doc["enforce_at"] == "host" and doc["node_netns"] == node["netns"]
    by_id = {c.id: c for c in CASES}
    for cid in HOST_CASES:
        case = by_id[cid]
        for index, step in enumerate(case.steps):
            lab.driver.converge(step.objects)
            if any(c.probeable for c in step.checks):
                failures = _until_matches(lab, case, index)
                assert not failures, f"{case.title} (3-node API lab, host mode)\n\n" + \
                    "\n".join(f.text for f in failures)
    # Nothing inside the pods: every rule is on the nodes.
    for e in st.endpoints.values():
        if e.kind == "pod":
            assert "netpol" not in run(e.netns, ["nft", "list", "tables"]).stdout, e.key


def _pairs(lab, pairs) -> dict[tuple[str, str], bool]:
    rows = lab.probe(ports=["80/TCP"], timeout=0.5)
    return {(r["from"], r["to"]): r["allowed"] for r in rows if (r["from"], r["to"]) in pairs}


def _wait_pairs(lab, want: dict[tuple[str, str], bool], timeout: float = CONVERGE) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = _pairs(lab, set(want))
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _node_of(lab, pod: str) -> str:
    ns, name = pod.split("/")
    return lab.kubectl("get", "pod", "-n", ns, name, "-o", "jsonpath={.spec.nodeName}").stdout


def test_agent_killed_mid_case_keeps_its_pods_rules_and_others_go_on(api_lab):
    lab = api_lab
    base = [o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": "x", "name": "deny-ingress"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    lab.driver.converge(base + [deny])
    into_x = {("y/a", "x/a"): False, ("y/a", "x/b"): False, ("y/a", "x/c"): False}
    assert _wait_pairs(lab, into_x) == into_x
    victim = _node_of(lab, "x/b")
    others = {_node_of(lab, "x/a"), _node_of(lab, "x/c")}
    assert victim not in others, "the pods of x must be on three nodes"
    pid = lab.agent_pid(victim)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while lab.agent_pid(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.agent_pid(victim) is None
    try:
        # Its pod keeps its rules; the other nodes' agents follow the API alone.
        lab.driver.converge(base)
        want = {("y/a", "x/a"): True, ("y/a", "x/b"): False, ("y/a", "x/c"): True}
        assert _wait_pairs(lab, want) == want
        time.sleep(1.0)  # and it stays so: nothing else touches the dead agent's pods
        assert _pairs(lab, set(want)) == want
    finally:
        # Returns once the new agent's own state file says it enforces its node's pods from
        # the API (a broken agent is a LabError naming its log's last line).
        lab.restart_agent(victim)
    opened = {("y/a", "x/a"): True, ("y/a", "x/b"): True, ("y/a", "x/c"): True}
    got = _wait_pairs(lab, opened)
    assert got == opened, f"{got}; the restarted agent of {victim} says: {_agent_pods(lab, victim)}"


def _agent_pods(lab, node: str) -> list[str]:
    from enforcer.lab import apilab

    doc = apilab.agent_status(lab_state.load(lab.name), node) or {}
    return [f"pid {doc.get('pid')}"] + [f"{p['pod']}: {p['state']}, ingress {p['ingress']}"
                                        for p in doc.get("pods") or ()]


def _list() -> list[dict]:
    from enforcer.lab import control

    return control.list_labs()


def _leftovers(name: str) -> list[str]:
    needle = lab_state.lab_dir(name).rstrip("/") + "/"
    procs = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if needle.encode() in f.read():
                        procs.append(f"pid {d}")
            except OSError:
                pass
    return list_names(f"netpol-{name}") + procs + ([needle] if os.path.exists(needle) else [])


SMALL = """
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: x, labels: {ns: x}}}
- apiVersion: v1
  kind: Pod
  metadata: {namespace: x, name: a, labels: {pod: a}}
  spec: {nodeName: node2, containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
  status: {podIP: 10.244.1.1}
- apiVersion: v1
  kind: Pod
  metadata: {namespace: x, name: b, labels: {pod: b}}
  spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
  status: {podIP: 10.244.1.2}
"""


EGRESS_B = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: b-no-egress}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Egress]}
"""
POD_C = """
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: c, labels: {pod: c}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
"""


# Once, not per backend: what is tested is two labs kept apart (agents, API servers,
# namespaces) and lab down of an API lab, which the backend does not change.
@pytest.mark.parametrize("api_lab", ["iptables"], indirect=True)
def test_two_api_labs_at_once_then_nothing_left(api_lab, netpol_api_lab):
    """A second API lab whose pods have the same addresses as the module lab's: each
    agent sees only its lab's namespaces, each API server only its lab."""
    api_lab.driver.converge([o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"])
    other = netpol_api_lab(SMALL, api_lab.backend, nodes=2)
    pods = json.loads(other.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    assert {(p["metadata"]["name"], p["spec"]["nodeName"]) for p in pods} == {("a", "node2"), ("b", "node1")}
    other.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": "deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}))
    assert _wait_pairs(other, {("x/b", "x/a"): False}) == {("x/b", "x/a"): False}
    assert _pairs(api_lab, {("x/b", "x/a")}) == {("x/b", "x/a"): True}
    assert api_lab.kubectl("get", "networkpolicy", "-n", "x", "-o", "name").stdout.strip() == ""
    # lab apply on an API lab goes through the API: the input is the whole desired state
    other.apply([SMALL, EGRESS_B, POD_C])
    assert other.kubectl("get", "networkpolicy", "-n", "x", "-o", "name").stdout.split() == \
        ["networkpolicy.networking.k8s.io/b-no-egress"]
    c = json.loads(other.kubectl("get", "pod", "-n", "x", "c", "-o", "json").stdout)
    assert c["status"]["phase"] == "Running" and c["spec"]["nodeName"] in ("node1", "node2")
    want = {("x/a", "x/b"): True, ("x/b", "x/a"): False, ("x/c", "x/a"): True}
    assert _wait_pairs(other, want) == want
    name = other.name
    t0 = time.monotonic()
    other.down()
    took = time.monotonic() - t0
    assert _leftovers(name) == []
    print(f"lab down of a 2-node API lab: {took:.2f}s")


def test_killed_lab_up_api_is_removed_by_lab_down(tmp_path):
    """SIGKILL to ``lab up --api`` once its API server runs: ``lab down`` kills the
    control plane (by pid, or found by its directory) and removes every namespace."""
    from enforcer.lab import control

    name = f"npt-kill-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "m.yaml"
    path.write_text(SMALL)
    proc = subprocess.Popen([sys.executable, "-m", "enforcer", "lab", "up", "-f", str(path), "--name", name,
                             "--api", "--nodes", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = os.path.join(lab_state.lab_dir(name), "api", "kube-apiserver.log")
    deadline = time.monotonic() + 60
    while not os.path.exists(log) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    try:
        assert os.path.exists(log), "lab up never started its API server"
        assert any(i["name"] == name and i["stale"] for i in _list())
    finally:
        control.down(name, force=True)
    assert _leftovers(name) == []
