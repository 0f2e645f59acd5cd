"""The API source's logic against an in-memory API (the ``Api`` seam): decoding and which
pods count, last good versions, list/watch/resume/relist, fail-static, the snapshot, and
the daemon fed through the same compile path as for files. No API server, no threads
(the tests call the reflector's ``step`` themselves), no sleeps."""
from __future__ import annotations

import copy
import io
import json

import pytest

from backends.base import FakeBackend
from enforcer.daemon import logs
from enforcer.daemon.apistore import ApiStore, decode_object, load_snapshot
from enforcer.daemon.discovery import Discovery
from enforcer.daemon.kube import ApiSource, Backoff
from enforcer.daemon.kubeclient import ApiError
from enforcer.daemon.reconcile import Reconciler
from enforcer.daemon.runner import FakeClock
from enforcer.daemon.service import Daemon, Options
from enforcer.errors import NetnsError

NODE = "node-1"


def ns(name, labels=None):
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "1", "uid": "u"},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def pod(namespace, name, ip, labels, node=NODE, phase="Running", host_network=False):
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                                "resources": {}}]}
    if host_network:
        spec["hostNetwork"] = True
    status = {"phase": phase, "hostIP": "192.168.1.1", "conditions": [{"type": "Ready", "status": "True"}]}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": "u",
                         "creationTimestamp": "2026-12-06T00:00:00Z",
                         "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "spec": spec, "status": status}


def policy(namespace, name, target, peer):
    return {"metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {"podSelector": {"matchLabels": {"app": target}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": peer}}}]}]}}


def key_of(kind, obj):
    m = obj["metadata"]
    return m["name"] if kind in ("Namespace", "ClusterNetworkPolicy") else f"{m.get('namespace', 'default')}/{m['name']}"


class FakeApi:
    """An API server in memory: objects, a global resourceVersion, an event history that
    ``compact`` cuts (older watches then get 410 Gone), and switchable failures."""

    server = "https://fake"

    def __init__(self):
        self.rv = 10
        self.objects = {"Namespace": {}, "Pod": {}, "NetworkPolicy": {}, "ClusterNetworkPolicy": {}}
        self.absent: dict[str, ApiError] = {}  # kind -> the error its list and watch get (no CRD...)
        self.history = []  # (rv, kind, type, obj)
        self.compacted = 0
        self.fail: ApiError | None = None
        self.lists = 0
        self.watches = []  # resourceVersions watches started from
        self.closed = False

    def _bump(self, kind, etype, obj):
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, kind, etype, obj))
        return obj

    def apply(self, kind, obj):
        k = key_of(kind, obj)
        etype = "MODIFIED" if k in self.objects[kind] else "ADDED"
        self.objects[kind][k] = self._bump(kind, etype, obj)

    def delete(self, kind, k):
        obj = self.objects[kind].pop(k)
        self._bump(kind, "DELETED", obj)

    def compact(self):
        self.compacted = self.rv

    def list(self, kind, slim=None):
        if self.fail:
            raise self.fail
        if kind in self.absent:
            raise self.absent[kind]
        self.lists += 1
        items = [copy.deepcopy(o) for o in self.objects[kind].values()]
        return [slim(o) for o in items] if slim else items, str(self.rv)

    def watch(self, kind, rv):
        if self.fail:
            raise self.fail
        if kind in self.absent:
            raise self.absent[kind]
        self.watches.append(rv)
        if int(rv) < self.compacted:
            raise ApiError(410, "410 too old resource version")
        for at, k, etype, obj in list(self.history):
            if k == kind and at > int(rv):
                yield etype, copy.deepcopy(obj)
        yield "BOOKMARK", {"metadata": {"resourceVersion": str(self.rv)}}

    def ping(self):
        if self.fail:
            raise self.fail

    def close(self):
        self.closed = True


class Log:
    def __init__(self):
        self.lines = []

    def _add(self, level, msg, **f):
        self.lines.append((level, msg, f))

    def debug(self, msg, **f):
        self._add("debug", msg, **f)

    def info(self, msg, **f):
        self._add("info", msg, **f)

    def warning(self, msg, **f):
        self._add("warning", msg, **f)

    def error(self, msg, **f):
        self._add("error", msg, **f)

    def of(self, msg):
        return [f for _, m, f in self.lines if m == msg]


def cluster(api):
    api.apply("Namespace", ns("x", {"team": "x"}))
    api.apply("Pod", pod("x", "a", "10.244.0.2", {"app": "a"}))
    api.apply("Pod", pod("x", "b", "10.244.0.3", {"app": "b"}))
    api.apply("Pod", pod("x", "remote", "10.244.7.7", {"app": "a"}, node="node-2"))
    api.apply("NetworkPolicy", policy("x", "b-in", "b", "a"))


def make_source(api, tmp_path=None, **kw):
    log = Log()
    store = ApiStore(node=NODE)
    snap = str(tmp_path / "snap.json") if tmp_path else None
    src = ApiSource(api, store, log=log, snapshot_path=snap, clock=FakeClock(), save_interval=0, save_delay=0, **kw)
    return src, log


def sync_all(src):
    for kind in ("Namespace", "Pod", "NetworkPolicy", "ClusterNetworkPolicy"):
        src.step(kind)


# ---------------------------------------------------------------------- decoding


def test_api_objects_decode_with_the_file_decoder_and_fields_we_do_not_read_pass():
    d = decode_object("Pod", pod("x", "a", "10.244.0.2", {"app": "a"}))
    assert d.obj is not None and d.obj.ips == ("10.244.0.2",) and d.node == NODE and not d.skip
    assert d.trimmed["status"] == {"phase": "Running", "podIP": "10.244.0.2", "podIPs": [{"ip": "10.244.0.2"}]}
    assert decode_object("Pod", d.trimmed).obj == d.obj  # the snapshot decodes to the same pod
    n = decode_object("Namespace", ns("x", {"team": "x"}))
    assert n.obj.labels == {"team": "x", "kubernetes.io/metadata.name": "x"}


@pytest.mark.parametrize("kw,why", [
    (dict(ip=None), "no address"),
    (dict(phase="Succeeded"), "finished pod"),
    (dict(phase="Failed"), "finished pod"),
    (dict(host_network=True), "hostNetwork"),
])
def test_pods_that_get_no_firewall_and_are_no_peer(kw, why):
    args = dict(ip="10.244.0.9", labels={"app": "z"})
    args.update(kw)
    store = ApiStore(node=NODE)
    assert store.put("Pod", pod("x", "z", args.pop("ip"), args.pop("labels"), **args)) == {}
    assert "x/z" not in store.cluster().pods and why in store.skipped["x/z"]


def test_a_pod_that_finishes_leaves_the_cluster_and_its_address_goes():
    store = ApiStore(node=NODE)
    p = pod("x", "job", "10.244.0.9", {"app": "j"})
    assert list(store.put("Pod", p)) == [("Pod", "x/job")]
    p["status"]["phase"] = "Succeeded"
    assert store.put("Pod", p) == {("Pod", "x/job"): None}
    assert store.cluster().pods == {} and store.counts["Pod"] == 0


def test_locality_is_spec_node_name():
    store = ApiStore(node=NODE)
    store.put("Pod", pod("x", "a", "10.244.0.2", {}))
    store.put("Pod", pod("x", "r", "10.244.7.7", {}, node="node-2"))
    assert store.is_local("x/a") and not store.is_local("x/r")
    assert set(store.cluster().pods) == {"x/a", "x/r"}  # every pod of the cluster is a peer


def test_a_bad_object_is_reported_by_name_and_field_and_its_last_good_version_stays():
    store = ApiStore(node=NODE)
    good = policy("x", "p", "b", "a")
    store.put("NetworkPolicy", good)
    bad = copy.deepcopy(good)
    bad["spec"]["ingress"][0]["from"][0]["ipBlock"] = {"cidr": "10.0.0.0/33"}
    assert store.put("NetworkPolicy", bad) == {}
    assert store.cluster().policies["x/p"].ingress[0].peers[0].pod_selector is not None
    issues = store.errors()
    assert {i.problem.field for i in issues} == {"spec.ingress[0].from[0]", "spec.ingress[0].from[0].ipBlock.cidr"}
    assert all(i.problem.obj == "NetworkPolicy x/p" and "last good version stays" in str(i) for i in issues)
    assert str(issues[0]).startswith("api: NetworkPolicy x/p: spec.ingress[0].from[0]")
    # A new object that was never good is not loaded.
    new_bad = copy.deepcopy(bad)
    new_bad["metadata"]["name"] = "q"
    store.put("NetworkPolicy", new_bad)
    assert "x/q" not in store.cluster().policies
    assert any(i.problem.obj == "NetworkPolicy x/q" and i.consequence == "not loaded" for i in store.errors())
    # Fixed: the problem goes.
    store.put("NetworkPolicy", good)
    store.delete("NetworkPolicy", new_bad)
    assert store.errors() == []


def test_replace_removes_what_the_list_lacks():
    store = ApiStore(node=NODE)
    store.put("Pod", pod("x", "a", "10.244.0.2", {}))
    store.put("Pod", pod("x", "b", "10.244.0.3", {}))
    store.put("Pod", pod("x", "done", "10.244.0.4", {}, phase="Succeeded"))
    changes = store.replace("Pod", [pod("x", "a", "10.244.0.2", {"v": "2"})])
    assert set(changes) == {("Pod", "x/a"), ("Pod", "x/b")} and changes[("Pod", "x/b")] is None
    assert store.skipped == {} and set(store.cluster().pods) == {"x/a"}


# ---------------------------------------------------------------------- list, watch, relist


def test_nothing_is_complete_before_every_kind_is_listed():
    api = FakeApi()
    cluster(api)
    src, _ = make_source(api)
    src.step("Namespace")
    src.step("Pod")
    assert not src.complete()
    src.step("NetworkPolicy")
    assert not src.complete()
    src.step("ClusterNetworkPolicy")
    assert src.complete()
    changes, n = src.poll()
    assert n == 4 and ("NetworkPolicy", "x/b-in") in changes and ("Pod", "x/remote") in changes


def test_watch_resumes_from_the_last_version_seen_bookmarks_included():
    api = FakeApi()
    cluster(api)
    src, _ = make_source(api)
    sync_all(src)
    src.poll()
    listed_at = src.kinds["Pod"].resource_version
    api.apply("Pod", pod("x", "c", "10.244.0.4", {"app": "c"}))
    api.apply("NetworkPolicy", policy("x", "b-in", "b", "c"))  # a bump the Pod watch only bookmarks
    src.step("Pod")
    assert api.watches[-1] == listed_at
    changes, n = src.poll()
    assert n == 1 and list(changes) == [("Pod", "x/c")]
    assert src.kinds["Pod"].resource_version == str(api.rv)  # from the bookmark
    src.step("Pod")  # the next watch request starts where the last ended: no replay
    assert api.watches[-1] == str(api.rv) and src.poll() == ({}, 0)
    assert api.lists == 4  # one per kind


def test_410_gone_relists_and_misses_nothing():
    api = FakeApi()
    cluster(api)
    src, log = make_source(api)
    sync_all(src)
    src.poll()
    api.delete("Pod", "x/a")
    api.apply("Pod", pod("x", "d", "10.244.0.5", {"app": "d"}))
    api.compact()  # etcd compaction: the watch's version is gone
    with pytest.raises(ApiError) as e:
        src.step("Pod")
    assert e.value.status == 410
    assert src._failed(src.kinds["Pod"], e.value) == 0.0  # no backoff for a relist
    src.step("Pod")
    changes, _ = src.poll()
    assert changes == {("Pod", "x/a"): None, ("Pod", "x/d"): changes[("Pod", "x/d")]}
    assert src.kinds["Pod"].relists == 1 and log.of("api relist")


def test_an_unreachable_server_changes_nothing_and_says_so():
    api = FakeApi()
    cluster(api)
    src, log = make_source(api)
    sync_all(src)
    src.poll()
    before = src.store.cluster()
    api.fail = ApiError(0, "ConnectionRefusedError: connection refused")
    for _ in range(3):
        with pytest.raises(ApiError) as e:
            src.step("Pod")
        src._failed(src.kinds["Pod"], e.value)
    src._reachable(False, str(e.value))
    assert src.poll() == ({}, 0) and src.store.cluster() == before
    ok, text = src.health()
    assert not ok and "unreachable" in text and "fail-static" in text
    assert len(log.of("api request failed")) == 1  # once, not per retry
    assert src.describe()["reachable"] is False
    api.fail = None
    src._contact()
    src.step("Pod")
    assert src.health() == (True, "API in sync")


def test_forbidden_is_one_clear_error():
    api = FakeApi()
    src, log = make_source(api)
    api.fail = ApiError(403, '403 pods is forbidden: User "system:serviceaccount:x:y" cannot list '
                             'resource "pods" in API group "" at the cluster scope')
    for _ in range(4):
        with pytest.raises(ApiError) as e:
            src.step("Pod")
        src._failed(src.kinds["Pod"], e.value)
    [err] = log.of("api access denied")
    assert "refuses to let us list Pods" in err["error"] and "forbidden" in err["error"]
    assert not src.complete() and "refuses" in src.health()[1]


def test_backoff_grows_to_its_cap_and_resets():
    b = Backoff(initial=0.2, cap=5.0, rand=lambda: 1.0)
    assert [b.next() for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    b.reset()
    assert b.next() == 0.2


# ---------------------------------------------------------------------- snapshot


def _listed(tmp_path):
    """A source that listed the test cluster and applied it once (its snapshot not saved yet:
    that waits for the next poll)."""
    api = FakeApi()
    cluster(api)
    src, _ = make_source(api, tmp_path)
    sync_all(src)
    src.poll()
    return api, src


def _restarted(api, tmp_path):
    """A new process's source, given the snapshot the last one saved."""
    src2, log2 = make_source(api, tmp_path)
    src2._snapshot, _ = load_snapshot(str(tmp_path / "snap.json"))
    return src2, log2


def test_a_restart_while_the_api_is_down_enforces_the_saved_state(tmp_path):
    api, src = _listed(tmp_path)
    assert not (tmp_path / "snap.json").exists()  # not on the way to enforcing a change
    assert src.next_ready() is not None
    src.poll()  # the daemon's next sync, with nothing to apply
    assert src.next_ready() is None
    saved = json.loads((tmp_path / "snap.json").read_text())
    assert {m["metadata"]["name"] for m in saved["items"]["Pod"]} == {"a", "b", "remote"}
    # A new process; the API server is down.
    down = FakeApi()
    down.fail = ApiError(0, "connection refused")
    src2, log2 = _restarted(down, tmp_path)
    changes, _ = src2.poll()
    assert ("NetworkPolicy", "x/b-in") in changes and src2.store.is_local("x/a")
    assert src2.store.cluster() == src.store.cluster()
    assert not src2.health()[0] and log2.of("enforcing the last good state")
    # The API answers: its lists replace the snapshot, kind by kind.
    api.delete("NetworkPolicy", "x/b-in")
    src2.api = api
    sync_all(src2)
    changes, _ = src2.poll()
    assert changes == {("NetworkPolicy", "x/b-in"): None}
    assert src2.from_snapshot is None and src2.health()[0]


class _ListLandsAfterSwap:
    """The source's condition, with a reflector thread's list landing the moment ``poll``
    lets go of the lock it took the queue under (once): the interleaving of a restart on a
    loaded node whose snapshot wait ran out just before the last kind's list arrived."""

    def __init__(self, cond, land):
        self.cond, self.land = cond, land

    def __enter__(self):
        return self.cond.__enter__()

    def __exit__(self, *exc):
        out = self.cond.__exit__(*exc)
        land, self.land = self.land, None
        if land is not None:
            land()
        return out

    def notify_all(self):
        self.cond.notify_all()


def test_a_list_landing_while_the_queue_is_applied_keeps_the_snapshot_for_its_kind(tmp_path):
    api, src = _listed(tmp_path)
    src.poll()  # saved
    src2, _ = _restarted(api, tmp_path)
    for kind in ("Namespace", "Pod", "ClusterNetworkPolicy"):
        src2.step(kind)
    src2._cond = _ListLandsAfterSwap(src2._cond, lambda: src2.step("NetworkPolicy"))
    src2.poll()
    assert src2.complete()  # the NetworkPolicy list is queued, not applied yet
    # Never a view without policies (every pod of the node open): the snapshot's stand.
    assert set(src2.store.cluster().policies) == {"x/b-in"}
    assert src2.from_snapshot is not None and not src2.health()[0]
    src2.poll()  # the list: the API's state from here on
    assert src2.from_snapshot is None and src2.health()[0]
    assert set(src2.store.cluster().policies) == {"x/b-in"}


def test_a_tampered_snapshot_is_decoded_like_api_objects(tmp_path):
    store = ApiStore(node=NODE)
    store.restore({"items": {"Pod": [{"metadata": {"name": "a", "namespace": "x"},
                                       "status": {"podIP": "not-an-ip"}}]}})
    assert store.cluster().pods == {} and store.errors()


# ---------------------------------------------------------------------- the daemon


class Node:
    def __init__(self):
        self.spaces = {"ns-a": (1, {"10.244.0.2"}), "ns-b": (2, {"10.244.0.3"}),
                       "ns-r": (3, {"10.244.7.7"})}  # the remote pod's address, here by accident

    def inode(self, name):
        held = self.spaces.get(name)
        return held[0] if held else None

    def read(self, name):
        if name not in self.spaces:
            raise NetnsError(name)
        return frozenset(self.spaces[name][1])

    def list(self, prefix):
        return sorted(self.spaces)


@pytest.fixture
def daemon(tmp_path):
    api = FakeApi()
    cluster(api)
    src, log = make_source(api, tmp_path)
    node, clock, backend = Node(), FakeClock(), FakeBackend()
    src.clock = clock
    opts = Options(watch=[], backend="fake", state_file=str(tmp_path / "state.json"))
    rec = Reconciler(backend, clock=clock, inode=node.inode, exists=lambda n: n in node.spaces)
    d = Daemon(opts, backend=backend, log=logs.setup("json", "debug", stream=io.StringIO()), clock=clock,
               discovery=Discovery(reader=node.read, lister=node.list, inode=node.inode),
               watch_netns=False, watch_files=False, reconciler=rec, source=src)
    yield d, api, src, backend, clock
    d.close()


def test_the_daemon_enforces_the_api_state_through_the_same_compile_path(daemon):
    d, api, src, backend, clock = daemon
    sync_all(src)
    d.start()
    # Only pods bound to this node: the remote pod's address in ns-r is not ours to enforce.
    assert set(backend.installed) == {"ns-a", "ns-b"}
    assert backend.installed["ns-b"].ingress.isolated_by == ("x/b-in",)
    api.apply("NetworkPolicy", policy("x", "b-in", "b", "nobody"))
    src.step("NetworkPolicy")
    clock.advance(1)
    d.step()
    fw = backend.installed["ns-b"]
    assert fw.set(fw.ingress.rules[0].peers).v4 == ()
    st = d.state()
    assert st["source"]["type"] == "api" and st["source"]["kinds"]["Pod"]["listed"]
    assert b"netpol_api_synced" in d.metrics.render()
    api.delete("NetworkPolicy", "x/b-in")
    src.step("NetworkPolicy")
    clock.advance(1)
    d.step()
    assert not backend.installed["ns-b"].ingress.isolated


def test_the_daemon_stays_static_while_the_api_is_away(daemon):
    d, api, src, backend, clock = daemon
    sync_all(src)
    d.start()
    before = dict(backend.installed)
    src._reachable(False, "ApiError: timed out")
    clock.advance(70)  # a full resync too
    d.step()
    assert backend.installed == before
    ok, text = d.health()
    assert not ok and "fail-static" in text
    assert d.health(live_only=True)[0]  # no reason to restart the daemon


def test_malformed_objects_are_reported_not_fatal():
    store = ApiStore(node=NODE)
    from enforcer.daemon.kube import slim_pod

    bad = {"metadata": ["not", "a", "mapping"], "spec": 3}
    assert slim_pod(bad) is bad
    assert store.put("Pod", bad) == {} and store.errors()
    assert store.put("Pod", slim_pod(pod("x", "a", "10.244.0.2", {"app": "a"}))) != {}


def test_status_shows_the_api_source():
    from enforcer.daemon import status

    line = status.api_line({"type": "api", "server": "https://h", "node": "n", "reachable": False,
                            "unreachable_since": "T", "kinds": {"Pod": {"listed": True, "relists": 1,
                                                                        "error": None}}})
    assert "UNREACHABLE since T" in line and "fail-static" in line and "relists: 1" in line
    ok = status.api_line({"type": "api", "server": "https://h", "node": "n", "reachable": True,
                          "kinds": {"Pod": {"listed": True}}})
    assert ok.endswith("in sync; relists: 0")


def test_library_errors_become_one_line_api_errors():
    from kubernetes.client.exceptions import ApiException
    from urllib3 import exceptions as u

    from enforcer.daemon.kubeclient import translate

    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps({"kind": "Status", "message": 'pods is forbidden: User "x" cannot list resource "pods"'})
    t = translate(e)
    assert t.status == 403 and str(t) == '403 pods is forbidden: User "x" cannot list resource "pods"'
    refused = u.MaxRetryError(None, "/api/v1/pods", u.NewConnectionError(None, "[Errno 111] Connection refused"))
    assert (translate(refused).status, str(translate(refused))) == (0, "cannot connect: connection refused")
    assert str(translate(u.ReadTimeoutError(None, "/", "read timed out"))) == "no answer in time (read timeout)"
    assert str(translate(u.ProtocolError("boom"))) == "the connection was closed"


def test_run_chooses_its_source_and_says_what_is_missing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from enforcer.cli import cli as main
    from enforcer.errors import NetpolError

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("NODE_NAME", raising=False)
    state = ["--state-file", str(tmp_path / "s.json"), "--backend", "fake"]
    r = CliRunner().invoke(main, ["run", *state])
    assert r.exit_code == 2 and "give --watch DIR" in r.output
    r = CliRunner().invoke(main, ["run", "--kubeconfig", str(tmp_path / "kc"), *state])
    assert r.exit_code == 2 and "--node NAME" in r.output
    r = CliRunner().invoke(main, ["run", "--watch", str(tmp_path), "--kubeconfig", "x", *state])
    assert r.exit_code == 2 and "two sources" in r.output
    # In a pod without its service account files: one line, no traceback.
    import os
    import subprocess
    import sys

    env = dict(os.environ, KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT="6443", NODE_NAME="n1")
    p = subprocess.run([sys.executable, "-m", "enforcer", "run", *state], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[-1].startswith("in-cluster configuration: cannot use it to reach the API server")


# ---------------------------------------------------------------------- ClusterNetworkPolicy (a CRD)


def admin_deny(name, target, peer):
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name, "generation": 1},
            "spec": {"tier": "Admin", "priority": 10,
                     "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": target}}}},
                     "ingress": [{"action": "Deny", "from": [{"pods": {"namespaceSelector": {},
                                                                        "podSelector": {"matchLabels": {"app": peer}}}}]}]}}


NO_CRD = ApiError(404, "404 the server could not find the requested resource")


def cnp_step(src, api):
    """One reflector turn of the CNP kind as its thread runs it (step, and _failed on error)."""
    try:
        src.step("ClusterNetworkPolicy")
        return None
    except ApiError as e:
        return src._failed(src.kinds["ClusterNetworkPolicy"], e)


def test_an_absent_crd_is_an_empty_kind_said_once_and_looked_for_again():
    api = FakeApi()
    cluster(api)
    api.absent["ClusterNetworkPolicy"] = NO_CRD
    src, log = make_source(api, absent_retry=30)
    for kind in ("Namespace", "Pod", "NetworkPolicy"):
        src.step(kind)
    delays = [cnp_step(src, api) for _ in range(3)]
    assert delays == [30, 30, 30]  # tried again (discovery), not backed off as a failure
    assert src.complete()  # the first sync is not held up by a CRD nobody installed
    changes, _ = src.poll()
    assert ("Pod", "x/b") in changes and not src.store.cluster().cnps
    [line] = log.of("api kind absent")  # once, not per retry
    assert line["kind"] == "ClusterNetworkPolicy" and "not installed" in line["reason"]
    assert src.health() == (True, "API in sync") and not log.of("api request failed")
    from enforcer.daemon import status
    assert "ClusterNetworkPolicy: none (the CRD is not installed" in status.api_line(src.describe())
    # The CRD is installed later and a CNP created: the next retry lists it.
    del api.absent["ClusterNetworkPolicy"]
    api.apply("ClusterNetworkPolicy", admin_deny("deny-a-to-b", "b", "a"))
    assert cnp_step(src, api) is None
    changes, _ = src.poll()
    assert list(changes) == [("ClusterNetworkPolicy", "deny-a-to-b")]
    assert src.store.cluster().cnps["deny-a-to-b"].tier == "Admin"
    assert log.of("api kind found") and src.describe()["kinds"]["ClusterNetworkPolicy"]["absent"] is None


def test_forbidden_crd_is_one_line_and_not_a_failure_of_the_other_kinds():
    api = FakeApi()
    cluster(api)
    api.absent["ClusterNetworkPolicy"] = ApiError(
        403, '403 clusternetworkpolicies.policy.networking.k8s.io is forbidden: User "u" cannot list')
    src, log = make_source(api)
    for kind in ("Namespace", "Pod", "NetworkPolicy"):
        src.step(kind)
    for _ in range(3):
        cnp_step(src, api)
    assert src.complete() and src.health()[0]
    [line] = log.of("api kind absent")
    assert "forbidden" in line["reason"] and "clusternetworkpolicies" in line["reason"]
    assert not log.of("api access denied")


def test_cnps_from_the_api_are_enforced_and_removed_through_the_batch_compiler(daemon):
    d, api, src, backend, clock = daemon
    api.delete("NetworkPolicy", "x/b-in")
    sync_all(src)
    d.start()
    assert not backend.installed["ns-b"].ingress.isolated
    api.apply("ClusterNetworkPolicy", admin_deny("deny-a-to-b", "b", "a"))
    src.step("ClusterNetworkPolicy")
    clock.advance(1)
    d.step()
    with_cnp = backend.installed["ns-b"]
    assert with_cnp != backend.installed["ns-a"] and "deny-a-to-b" in repr(with_cnp)
    api.delete("ClusterNetworkPolicy", "deny-a-to-b")
    src.step("ClusterNetworkPolicy")
    clock.advance(1)
    d.step()
    assert "deny-a-to-b" not in repr(backend.installed["ns-b"])
