"""``netpol run --kubeconfig``: the daemon reads a real kube-apiserver and enforces in real
network namespaces, with real packets (root; skipped without the API server's binaries).

This module has its own control plane (it freezes, stops and compacts it) and one lab of
three pods (x/a, x/b, x/c) playing the node. Each test starts from pods created through the
API, bound to the node and reported running with their addresses, and no policy.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from enforcer.daemon.kube import snapshot_path
from enforcer.daemon.testing import policy_doc, pod_doc, wait_for
from tests.api.apinode import NODE, ApiCluster, Prober, start_daemon, tcp_ok
from tests.api.conftest import install_cnp_crd

pytestmark = pytest.mark.root

IPS = {"a": "10.244.0.2", "b": "10.244.0.3", "c": "10.244.0.4"}
SLOW = 5.0  # seconds we allow for a change to be enforced (it takes a fraction of one)


def pods() -> list[dict]:
    return [pod_doc("x", n, ip, {"app": n}) for n, ip in IPS.items()]


def b_from(peer: str, name: str = "b-in") -> dict:
    return policy_doc("x", name, {"app": "b"}, [{"app": peer}])


@pytest.fixture(scope="module")
def cp(private_control_plane):
    """Its own control plane: this module freezes and stops the API server (root: the marker)."""
    return private_control_plane


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from enforcer.load import manifests
    from enforcer.daemon.testing import write_yaml
    from enforcer.lab import control

    name = f"npt-a{uuid.uuid4().hex[:6]}"
    path = str(tmp_path_factory.mktemp("lab") / "lab.yaml")
    write_yaml(path, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}] + pods())
    control.up(name, manifests.load([path]).cluster, "fake")

    class Lab:
        prefix = f"netpol-{name}-"

        def ns(self, pod: str) -> str:
            return f"{self.prefix}x-{pod}"

        def ok(self, src: str, dst: str, port: int = 80, timeout: float = 0.5) -> bool:
            return tcp_ok(self.ns(src), IPS[dst], port, timeout=timeout)

    try:
        yield Lab()
    finally:
        control.down(name)


@pytest.fixture
def api(cp, lab):
    """The cluster's objects for one test: namespace x and its three pods, no policy."""
    c = ApiCluster(cp)
    c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}])
    for p in pods():
        c.create_pod(p)
    yield c
    if not cp.ready():
        if cp.apiserver_pid is not None:
            cp.resume_apiserver()
        else:
            cp.start_apiserver()
    cp.kubectl("delete", "networkpolicies", "--all", "-n", "x", "--wait=false")
    cp.kubectl("delete", "pods", "--all", "-n", "x", "--grace-period=0", "--force", "--wait=false")
    wait_for(lambda: not cp.kubectl("get", "pods", "-n", "x", "-o", "name").stdout.strip(), 20, 0.2)


@pytest.fixture
def run(cp, lab, tmp_path):
    made = []

    def start(**kw):
        d = start_daemon(cp, str(tmp_path), lab.prefix, **kw)
        made.append(d)
        return d

    yield start
    for d in made:
        d.close()
    from backends import registry

    for backend in ("nftables", "iptables"):
        be = registry.get(backend)
        for p in IPS:
            try:
                be.remove(lab.ns(p))
            except Exception:
                pass


def enforced(lab, expect: dict[tuple[str, str], bool], timeout: float = SLOW) -> bool:
    return wait_for(lambda: all(lab.ok(s, d, timeout=0.3) == v for (s, d), v in expect.items()),
                    timeout, 0.05) is not None


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_policies_applied_changed_deleted_with_kubectl(api, run, lab, backend):
    d = run(backend=backend)
    st = d.state()
    assert st["source"]["type"] == "api" and st["counts"]["managed"] == 3
    assert lab.ok("a", "b") and lab.ok("c", "b")
    api.apply([b_from("a")])
    assert enforced(lab, {("a", "b"): True, ("c", "b"): False})
    api.apply([b_from("c")])
    assert enforced(lab, {("a", "b"): False, ("c", "b"): True})
    api.relabel("Pod", "x", "a", {"app": "c"})  # a becomes a peer by its labels
    assert enforced(lab, {("a", "b"): True, ("c", "b"): True})
    api.delete_policies("x", ["b-in"])
    api.relabel("Pod", "x", "a", {"app": "a"})
    assert enforced(lab, {("a", "b"): True, ("c", "b"): True})
    assert not d.logs("api access denied") and "Traceback" not in d.log_text()


def test_pods_of_other_nodes_are_peers_and_finished_ones_are_not(api, run, lab, cp):
    d = run()
    # A pod on another node, with c's address as far as the API says (the lab has no
    # namespace for it on this node): a peer, never enforced here.
    api.create_pod(pod_doc("x", "far", "10.244.9.9", {"app": "far"}), node="node-2")
    api.apply([policy_doc("x", "b-in", {"app": "b"}, [{"app": "far"}])])
    assert enforced(lab, {("a", "b"): False, ("c", "b"): False})
    st = d.state()
    assert "x/far" not in {p["pod"] for p in st["pods"]} and st["counts"]["pods"] == 4
    # c finishes: it is no peer any more and gets no firewall (its rules stay in place
    # in its namespace: the daemon never flushes what it releases).
    api.apply([policy_doc("x", "b-in", {"app": "b"}, [{"app": "c"}])])
    assert enforced(lab, {("c", "b"): True})
    api.set_status("x", "c", phase="Succeeded", ips=[IPS["c"]])
    assert enforced(lab, {("c", "b"): False})
    assert wait_for(lambda: d.state()["counts"]["pods"] == 3, SLOW) is not None


@pytest.mark.parametrize("fault", ["freeze", "stop"])
def test_api_server_away_20s_fails_static_and_catches_up(api, run, lab, cp, fault):
    port = free_port()
    d = run(args=["--metrics-addr", f"127.0.0.1:{port}"])
    api.apply([b_from("a")])
    assert enforced(lab, {("a", "b"): True, ("c", "b"): False})
    pairs = [(lab.ns("a"), IPS["b"], 80, True), (lab.ns("c"), IPS["b"], 80, False),
             (lab.ns("b"), IPS["a"], 80, True)]
    late = None
    with Prober(pairs) as probe:
        if fault == "freeze":
            cp.pause_apiserver()
        else:
            cp.stop_apiserver()
        t0 = time.monotonic()
        assert wait_for(lambda: d.state()["source"]["reachable"] is False, 20, 0.2) is not None, \
            "the daemon never noticed that the API server was away"
        st = d.state()
        assert st["phase"] == "running" and st["counts"]["managed"] == 3
        # It shows: /healthz, the metrics, netpol status.
        code, text = http_get(port, "/healthz")
        assert code == 503 and "unreachable" in text and "fail-static" in text
        assert http_get(port, "/livez")[0] == 200
        assert "netpol_api_up 0.0" in http_get(port, "/metrics")[1]
        status = subprocess.run([sys.executable, "-m", "enforcer", "status", "--state-file", d.state_file],
                                capture_output=True, text=True)
        assert "UNREACHABLE since" in status.stdout and "fail-static" in status.stdout
        time.sleep(max(0.0, 19 - (time.monotonic() - t0)))
        if fault == "freeze":
            # A change sent just before the server thaws: it waits in the socket and is
            # served when the server runs again.
            late = threading.Thread(target=api.apply, args=([b_from("c")],))
            late.start()
        time.sleep(1)
    # ~20 s away: not one wrong verdict (the prober stops before the change is let through).
    assert probe.rounds > 20 and probe.wrong == [], probe.wrong[:5]
    if fault == "freeze":
        cp.resume_apiserver()
    else:
        cp.start_apiserver()
    if late is not None:
        late.join(30)
    else:
        api.apply([b_from("c")])  # the first change once it is back
    assert enforced(lab, {("a", "b"): False, ("c", "b"): True}, timeout=30)
    assert wait_for(lambda: d.state()["source"]["reachable"] is not False, 20, 0.2) is not None
    assert "Traceback" not in d.log_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_watch_expiry_relists_and_misses_nothing(api, run, lab, cp):
    d = run()
    api.apply([b_from("a"), policy_doc("x", "a-in", {"app": "a"}, [{"app": "b"}])])
    assert enforced(lab, {("c", "b"): False, ("c", "a"): False, ("b", "a"): True})
    d.signal(signal.SIGSTOP)  # the daemon misses everything from here
    try:
        api.delete_policies("x", ["a-in"])
        api.apply([b_from("c")])
        cp.stop_apiserver()  # the watch connections go, the watch cache too
        cp.compact_etcd()
        cp.start_apiserver()
    finally:
        d.signal(signal.SIGCONT)
    # Resuming from its old resourceVersion gets 410 Gone: the daemon lists again.
    assert enforced(lab, {("c", "b"): True, ("a", "b"): False, ("c", "a"): True}, timeout=30)
    relists = wait_for(lambda: sum(k["relists"] for k in d.state()["source"]["kinds"].values()) > 0, 10, 0.2)
    assert relists is not None
    assert d.logs("api relist")


def test_kill9_and_restart_while_the_api_server_is_down_keeps_enforcing(api, run, lab, cp, tmp_path):
    d = run()
    api.apply([b_from("a")])
    assert enforced(lab, {("a", "b"): True, ("c", "b"): False})
    # The snapshot is written half a second after a change, at most every 2 s: wait for the
    # one that holds the policy (the restart below must start from it).
    snap = snapshot_path(d.state_file)
    assert wait_for(lambda: os.path.exists(snap) and '"b-in"' in open(snap).read(), 10, 0.1) is not None
    pairs = [(lab.ns("a"), IPS["b"], 80, True), (lab.ns("c"), IPS["b"], 80, False)]
    with Prober(pairs) as probe:
        cp.stop_apiserver()
        d.kill9()
        d2 = run()  # READY from the snapshot, since the API server does not answer
        st = d2.state()
        assert st["source"]["from_snapshot"] and st["counts"]["managed"] == 3
        assert d2.logs("enforcing the last good state")
        time.sleep(3)  # a few repair rounds and resyncs against the saved state
        cp.start_apiserver()
        assert wait_for(lambda: d2.state()["source"]["from_snapshot"] is None, 30, 0.2) is not None
        time.sleep(1)
    assert probe.rounds > 10 and probe.wrong == []


def test_the_daemonset_cluster_role_suffices_and_forbidden_is_one_clear_error(api, run, lab, cp):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cp.kubectl("apply", "-f", os.path.join(root, "deploy", "rbac.yaml"))
    kc = cp.kubeconfig_for_service_account("netpol-enforcer", "netpol-enforcer")
    d = run(kubeconfig=kc)
    api.apply([b_from("a")])
    assert enforced(lab, {("a", "b"): True, ("c", "b"): False})
    d.close()
    # A service account without the role: one error line, no traceback, not READY.
    bare = cp.kubeconfig_for_service_account("netpol-enforcer", "nobody")
    d2 = run(kubeconfig=bare, wait=0)
    assert wait_for(lambda: len(d2.logs("api access denied")) >= 3, 20, 0.2) is not None
    time.sleep(3)  # several retries later
    denied = d2.logs("api access denied")
    assert len({r["kind"] for r in denied}) == 3 and len(denied) == 3  # once per kind
    assert "forbidden" in denied[0]["error"] and "Traceback" not in d2.log_text()
    assert d2.proc.poll() is None  # still waiting for access, nothing changed


CNP_CRD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "deploy", "crds", "clusternetworkpolicies.yaml")


def test_cluster_network_policy_applied_and_deleted_with_kubectl(api, run, lab, cp):
    """Last in this module: the CRD stays installed (later daemons list it, empty)."""
    # Without the CRD (404): READY all the same, the kind empty, said once.
    d0 = run(backend="nftables")
    [line] = d0.logs("api kind absent")
    assert line["kind"] == "ClusterNetworkPolicy" and "not installed" in line["reason"]
    assert d0.state()["source"]["kinds"]["ClusterNetworkPolicy"]["listed"]
    d0.close()
    install_cnp_crd(cp, CNP_CRD)
    d = run(backend="nftables")
    assert d.state()["source"]["kinds"]["ClusterNetworkPolicy"]["listed"]
    assert lab.ok("a", "b") and lab.ok("c", "b")
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}},
            "podSelector": {"matchLabels": {"app": "a"}}}
    deny = {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "deny-a-to-b"},
            "spec": {"tier": "Admin", "priority": 10,
                     "subject": {"pods": {**peer, "podSelector": {"matchLabels": {"app": "b"}}}},
                     "ingress": [{"name": "no-a", "action": "Deny", "from": [{"pods": peer}]}]}}
    try:
        api.apply([deny])
        assert enforced(lab, {("a", "b"): False, ("c", "b"): True})
        cp.kubectl("delete", "clusternetworkpolicy", "deny-a-to-b", "--wait=false")
        assert enforced(lab, {("a", "b"): True, ("c", "b"): True})
    finally:
        cp.kubectl("delete", "clusternetworkpolicy", "deny-a-to-b", "--ignore-not-found", check=False)
    assert "Traceback" not in d.log_text()
