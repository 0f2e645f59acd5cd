"""``netpol run`` against real namespaces and real packets (root).

A lab (``netpol lab``, backend ``fake``: it builds namespaces, links and servers but installs
no rules) is the node; the daemon runs as a subprocess with ``--netns-prefix`` set to the
lab's prefix, so it can only ever see this lab's namespaces, and enforces with nftables.
Every lab is named ``npt-d<hex>`` (namespaces ``netpol-npt-d<hex>-...``) and removed at the
end; the host's own ruleset is checked to be untouched.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from enforcer import netns
from enforcer.daemon.testing import DaemonProcess, pod_doc, policy_doc, tcp_ok, wait_for, write_yaml

pytestmark = pytest.mark.root

IPS = {"a": "10.244.0.2", "b": "10.244.0.3", "c": "10.244.0.4"}
SLOW = 3.0  # seconds we allow for a change to be enforced (it takes milliseconds)


def pods_docs(labels: dict[str, str] | None = None, extra=()) -> list[dict]:
    labels = labels or {}
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}]
    for name, ip in IPS.items():
        docs.append(pod_doc("x", name, ip, {"app": labels.get(name, name)}))
    return docs + list(extra)


def _ts(text: str) -> float:
    import datetime

    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def host_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout


class Lab:
    def __init__(self, tmp):
        from enforcer.load import manifests
        from enforcer.lab import control

        self.control = control
        self.name = f"npt-d{uuid.uuid4().hex[:6]}"
        self.prefix = f"netpol-{self.name}-"
        self.tmp = tmp
        path = os.path.join(tmp, "lab.yaml")
        write_yaml(path, pods_docs())
        control.up(self.name, manifests.load([path]).cluster, "fake")

    def ns(self, pod: str) -> str:
        return f"{self.prefix}x-{pod}"

    @property
    def node(self) -> str:
        return f"netpol-{self.name}"  # the lab's node namespace: the pods' veths and bridge

    def ok(self, src: str, dst: str, port: int = 80) -> bool:
        return tcp_ok(self.ns(src), IPS[dst], port)

    def down(self) -> None:
        self.control.down(self.name)
        assert [n for n in netns.list_names(self.prefix)] == []


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    before = host_ruleset()
    lab = Lab(str(tmp_path_factory.mktemp("lab")))
    try:
        yield lab
    finally:
        lab.down()
        assert host_ruleset() == before  # nothing of ours in the host's namespace


@pytest.fixture
def run(lab, tmp_path):
    """Start daemons on a fresh watch directory; each is stopped (rules removed) after."""
    watch = tmp_path / "watch"
    watch.mkdir()
    write_yaml(str(watch / "pods.yaml"), pods_docs())
    made: list[DaemonProcess] = []

    def start(*args: str, backend: str = "nftables") -> DaemonProcess:
        d = DaemonProcess([str(watch)], state_file=str(tmp_path / "state.json"), netns_prefix=lab.prefix,
                          backend=backend,
                          args=["--repair-interval", "1", "--settle", "0.5", *args],
                          log_path=str(tmp_path / "daemon.log"))
        made.append(d)
        return d.start()

    start.watch = watch
    yield start
    for d in made:
        d.close()
    # Leave the lab without rules for the next test.
    from backends import registry
    from enforcer.daemon.hostside import NodeSide, host_backend
    from enforcer.errors import BackendUnavailable

    be = registry.get("nftables")
    for pod in IPS:
        be.remove(lab.ns(pod))
    for name in ("nftables", "iptables"):  # host mode's tables on the node
        try:
            host_backend(name, NodeSide(lab.node)).remove_node(lab.node)
        except BackendUnavailable:
            pass


def b_from(*peers: str, ports=()) -> dict:
    return policy_doc("x", "b-in", {"app": "b"}, [{"app": p} for p in peers], ports=ports)


def test_policy_added_edited_deleted_and_pod_relabelled(lab, run):
    d = run()
    assert lab.ok("a", "b") and lab.ok("c", "b")
    st = d.state()
    assert st["counts"]["managed"] == 3 and st["phase"] == "running"
    # Added: only a may reach b.
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    assert wait_for(lambda: not lab.ok("c", "b"), SLOW) is not None
    assert lab.ok("a", "b")
    # Edited: only c.
    write_yaml(str(run.watch / "b.yaml"), [b_from("c")])
    assert wait_for(lambda: lab.ok("c", "b"), SLOW) is not None
    assert not lab.ok("a", "b")
    # Pod a relabelled app=c: it is a peer again (a set-element delta).
    write_yaml(str(run.watch / "pods.yaml"), pods_docs({"a": "c"}))
    assert wait_for(lambda: lab.ok("a", "b"), SLOW) is not None
    assert any(r.get("kind") == "delta" for r in d.logs("applied"))
    # Deleted: open again.
    os.unlink(run.watch / "b.yaml")
    assert wait_for(lambda: lab.ok("c", "b") and lab.ok("a", "b"), SLOW) is not None
    assert wait_for(lambda: d.state()["pods"][1]["ingress"] == [], 2) is not None  # written after the sync
    assert d.state()["input_errors"] == []
    assert d.stop() == 0


def test_invalid_and_half_written_files_keep_the_last_good_version(lab, run):
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run()
    assert not lab.ok("c", "b") and lab.ok("a", "b")
    # An invalid edit beside a good new file: the good one is enforced, the bad one's last
    # good version stays, its error is logged once with file, object and field.
    bad = b_from("c")
    bad["spec"]["ingress"][0]["from"][0] = {"podSelectr": {"matchLabels": {"app": "c"}}}
    write_yaml(str(run.watch / "b.yaml"), [bad])
    write_yaml(str(run.watch / "c.yaml"), [policy_doc("x", "c-in", {"app": "c"}, [{"app": "b"}])])
    assert wait_for(lambda: not lab.ok("a", "c"), SLOW) is not None
    assert not lab.ok("c", "b") and lab.ok("a", "b") and lab.ok("b", "c")
    errors = d.logs("input error")
    assert errors and all(e["file"].endswith("b.yaml") and e["object"] == "NetworkPolicy x/b-in"
                          and e["consequence"] == "last good version stays in force" for e in errors)
    assert any(e["field"] == "spec.ingress[0].from[0].podSelectr" for e in errors)
    n = len(errors)
    time.sleep(1.2)  # a repair round and more syncs: not logged again
    os.utime(run.watch / "b.yaml")
    time.sleep(0.3)
    assert len(d.logs("input error")) == n
    # A half-written file: "- from:" with its peers not yet written reads as "from
    # anywhere". While the writer holds it open it is not read; once closed it is whole.
    path = run.watch / "b.yaml"
    with open(path, "w") as f:
        f.write("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b-in, namespace: x}\n"
                "spec:\n  podSelector: {matchLabels: {app: b}}\n  ingress:\n  - from:\n")
        f.flush()
        time.sleep(0.3)
        assert not lab.ok("c", "b")  # still the last good version
        f.write("    - podSelector: {matchLabels: {app: c}}\n")
    assert wait_for(lambda: lab.ok("c", "b"), SLOW) is not None
    assert not lab.ok("a", "b")
    assert d.logs("input error resolved")


def test_kill_9_and_restart_keep_enforcing_under_continuous_probing(lab, run):
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run()
    assert not lab.ok("c", "b")
    wrong: list[str] = []
    stop = threading.Event()
    probes = [0]

    def probe() -> None:
        while not stop.is_set():
            if not lab.ok("a", "b", 80):
                wrong.append("allowed a->b failed")
            if tcp_ok(lab.ns("c"), IPS["b"], 80, timeout=0.05):
                wrong.append("denied c->b succeeded")
            probes[0] += 1

    t = threading.Thread(target=probe)
    t.start()
    try:
        time.sleep(0.3)
        d.kill9()
        # The gap: nobody enforces, the kernel still does. Meanwhile the policy file gets
        # broken: the restarted daemon still knows its last good version.
        bad = b_from("c")
        bad["spec"]["ingress"][0]["from"][0] = {"podSelectr": {"matchLabels": {"app": "c"}}}
        write_yaml(str(run.watch / "b.yaml"), [bad])
        time.sleep(0.5)
        d.start()
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    assert wrong == [] and probes[0] > 5
    # The restarted daemon found its tables exactly right and adopted them (no swap).
    assert {r["netns"] for r in d.logs("applied") if r["kind"] == "adopted"} == {lab.ns(p) for p in IPS}
    assert d.logs("input error")[-1]["consequence"] == "last good version stays in force"
    # SIGTERM leaves the rules in place.
    assert d.stop() == 0
    assert not lab.ok("c", "b")
    assert d.logs("stopped")[-1]["rules_left_in_place"] is True
    # --cleanup-on-exit removes them.
    d2 = run("--cleanup-on-exit")
    assert not lab.ok("c", "b")
    assert d2.stop() == 0
    assert lab.ok("c", "b")


def test_outside_flush_is_repaired_within_the_repair_interval(lab, run):
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run()
    assert not lab.ok("c", "b")
    netns.run(lab.ns("b"), ["nft", "flush", "ruleset"])
    assert lab.ok("c", "b")  # open until repaired
    t = wait_for(lambda: not lab.ok("c", "b"), 2.5)  # --repair-interval 1
    assert t is not None
    assert d.logs("drift repaired")[0]["netns"] == lab.ns("b")
    assert wait_for(lambda: d.state()["totals"]["drift_repairs"] >= 1, 2) is not None


def test_health_metrics_status_and_sighup(lab, run):
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run("--metrics-addr", f"127.0.0.1:{port}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "netpol_managed_namespaces 3.0" in text and 'netpol_isolated_pods{direction="ingress"} 1.0' in text
    out = subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "netpol"), "status",
                          "--state-file", d.state_file], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "x/b" in out.stdout and "x/b-in" in out.stdout and "running" in out.stdout
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: bool(d.logs("reload")), 3) is not None
    assert not lab.ok("c", "b")


@pytest.mark.parametrize("strict", [False, True])
def test_conntrack_strict_cuts_a_flow_the_new_policy_denies(lab, run, strict):
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run(*(["--conntrack-strict"] if strict else []))
    with netns.entered(lab.ns("b")):
        srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((IPS["b"], 8080))
    srv.listen()
    with netns.entered(lab.ns("a")):
        cli = socket.socket()
    try:
        cli.connect((IPS["b"], 8080))
        conn, _ = srv.accept()
        conn.settimeout(1.0)
        cli.sendall(b"one")
        assert conn.recv(16) == b"one"
        cuts = len(d.logs("conntrack entries deleted"))  # start-up may cut leftovers of earlier tests
        write_yaml(str(run.watch / "b.yaml"), [b_from("c")])
        assert wait_for(lambda: not lab.ok("a", "b"), SLOW) is not None
        if strict:  # entries are deleted right after the new rules are in (same sync)
            assert wait_for(lambda: len(d.logs("conntrack entries deleted")) > cuts, SLOW) is not None
        else:
            time.sleep(0.2)
        cli.sendall(b"two")
        try:
            got = conn.recv(16)
        except socket.timeout:
            got = b""
        if strict:
            assert got == b""  # cut: the next packet met the new policy
        else:
            assert got == b"two"  # established flows survive a tightened policy
        conn.close()
    finally:
        cli.close()
        srv.close()


def test_new_pod_is_isolated_as_soon_as_its_namespace_appears(lab, run, tmp_path):
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    # A long coalescing interval: a new pod must not wait for it (no timing race to lose
    # on a loaded machine, yet a daemon that made new pods wait would fail by seconds).
    d = run("--min-interval", "3")
    # The scheduler's view first (the pod and its address), then the node makes its namespace.
    extra = [pod_doc("x", "b2", "10.244.0.5", {"app": "b"})]
    write_yaml(str(run.watch / "pods.yaml"), pods_docs(extra=extra))
    time.sleep(0.2)
    from enforcer.load import manifests

    path = str(tmp_path / "lab2.yaml")
    write_yaml(path, pods_docs(extra=extra))
    lab.control.apply(lab.name, manifests.load([path]).cluster)
    try:
        ns = lab.ns("b2")
        # Isolated (the lab's servers answer only allowed peers) ...
        assert wait_for(lambda: not tcp_ok(lab.ns("c"), "10.244.0.5", 80), SLOW) is not None
        assert tcp_ok(lab.ns("a"), "10.244.0.5", 80)
        # ... right after the pod's address appeared in its namespace (no min-interval
        # wait for a new pod), before the lab even finished starting it.
        seen = [r for r in d.logs("namespace changed") if r["netns"] == ns and r["addresses"]]
        applied = [r for r in d.logs("applied") if r["netns"] == ns]
        assert seen and applied and applied[0]["kind"] == "full"
        gap = _ts(applied[0]["ts"]) - _ts(seen[0]["ts"])
        assert 0 <= gap < 1.5, gap
    finally:
        path2 = str(tmp_path / "lab3.yaml")
        write_yaml(path2, pods_docs())
        lab.control.apply(lab.name, manifests.load([path2]).cluster)


@pytest.mark.parametrize("backend", ["iptables", "iptables-legacy"])
def test_iptables_backends(lab, run, backend):
    d = run("--cleanup-on-exit", backend=backend)
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    assert wait_for(lambda: not lab.ok("c", "b"), SLOW) is not None
    assert lab.ok("a", "b")
    tool = "iptables-save" if backend == "iptables" else "iptables-legacy-save"
    assert "x/b-in ingress[0]" in netns.run(lab.ns("b"), [tool]).stdout
    write_yaml(str(run.watch / "b.yaml"), [b_from("c")])  # a set-element delta (ipset)
    assert wait_for(lambda: lab.ok("c", "b"), SLOW) is not None
    assert not lab.ok("a", "b")
    netns.run(lab.ns("b"), ["iptables" if backend == "iptables" else "iptables-legacy", "-F"])
    assert wait_for(lambda: not lab.ok("a", "b"), 2.5) is not None  # repaired
    assert d.stop() == 0
    assert lab.ok("a", "b")  # --cleanup-on-exit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str) -> tuple[int, str]:
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (OSError, ConnectionError, http.client.HTTPException) as e:  # turned away (full)
        return 0, str(e)


def test_repair_that_cannot_succeed_stays_reported_until_it_can(lab, run):
    """Finding 1 of issue 20: someone replaces our table with one we cannot touch (an nft
    'owner' table held by their process). The pod is open; the daemon must say so
    (status, /healthz, a metric) for as long as it lasts, not 'recovered'."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run("--metrics-addr", f"127.0.0.1:{port}")
    assert not lab.ok("c", "b")
    squatter = subprocess.Popen(["ip", "netns", "exec", lab.ns("b"), "nft", "-i"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        squatter.stdin.write("delete table inet netpol\nadd table inet netpol { flags owner; }\n")
        squatter.stdin.flush()
        assert wait_for(lambda: lab.ok("c", "b"), 2) is not None  # open: our table is gone

        def reported() -> bool:
            st = d.state()
            pod = [p for p in st["pods"] if p["pod"] == "x/b"]
            return bool(pod) and pod[0]["state"] == "not enforced"

        assert wait_for(reported, 5) is not None  # --repair-interval 1
        # It stays reported: retries (0.1 s doubling) keep failing their read-back.
        for _ in range(3):
            time.sleep(0.7)
            assert reported(), d.state()["pods"]
            code, text = _http(base + "/healthz")
            assert code == 503 and "x/b" in text, (code, text)
            assert "netpol_pods_not_enforced 1.0" in _http(base + "/metrics")[1]
        assert _http(base + "/livez")[0] == 200  # the worker itself is fine
        assert d.logs("apply recovered") == []
        failed = d.logs("apply failed")
        assert failed and failed[0]["netns"] == lab.ns("b") and "Operation not permitted" in failed[0]["error"]
        out = subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "netpol"), "status",
                              "--state-file", d.state_file], capture_output=True, text=True)
        assert out.returncode == 1 and "NOT ENFORCED" in out.stdout and "not enforced" in out.stdout
        assert lab.ok("c", "b")
    finally:
        squatter.stdin.close()  # its owner table goes with it
        squatter.wait(5)
    # Now it can: the retry restores our rules and the read-back clears the error.
    assert wait_for(lambda: not lab.ok("c", "b"), 40) is not None
    assert wait_for(lambda: _http(base + "/healthz")[0] == 200, 5) is not None
    assert "netpol_pods_not_enforced 0.0" in _http(base + "/metrics")[1]
    # (When the owner table goes while a retry runs, the real rules are refused once more and
    # the deny-only stand-in goes in; the real ones follow at the next retry, on its backoff.)
    assert wait_for(lambda: [p["state"] for p in d.state()["pods"] if p["pod"] == "x/b"] == ["enforced"],
                    40) is not None
    assert d.logs("apply recovered")


def _stage(tmp_path, name: str, docs: list[dict]) -> str:
    """A complete file outside the watched directory (same file system), to move in."""
    stage = tmp_path / "stage"
    stage.mkdir(exist_ok=True)
    path = str(stage / name)
    with open(path, "w") as f:
        import yaml

        yaml.safe_dump_all(docs, f, sort_keys=False)
    return path


def test_files_moved_in_are_enforced_at_once_not_at_the_next_resync(lab, run, tmp_path):
    """Finding 2 of issue 20: a file moved in is complete (no settle wait), and a second
    file arriving while the first settles does not lose its wake-up."""
    d = run("--resync", "300", "--settle", "1.0")
    q1 = _stage(tmp_path, "q1.yaml", [b_from("a")])
    q2 = _stage(tmp_path, "q2.yaml", [policy_doc("x", "c-in", {"app": "c"}, [{"app": "a"}])])
    os.rename(q1, run.watch / "q1.yaml")
    time.sleep(0.3)
    t0 = time.monotonic()
    os.rename(q2, run.watch / "q2.yaml")
    assert wait_for(lambda: not lab.ok("b", "c", 80), 3) is not None, "q2 not enforced"
    assert time.monotonic() - t0 < 3
    assert not lab.ok("c", "b") and lab.ok("a", "b") and lab.ok("a", "c")
    # A file written in place (not moved) and closed is read too; one modified without a
    # close we saw still settles, and its wake-up is not lost behind another sync.
    with open(run.watch / "q3.yaml", "w") as f:
        import yaml

        yaml.safe_dump(policy_doc("x", "a-in", {"app": "a"}, [{"app": "b"}]), f)
    assert wait_for(lambda: not lab.ok("c", "a"), 3) is not None
    # 1,000 files moved in: every one is read within a few seconds (no resync).
    paths = [_stage(tmp_path, f"m{i:04d}.yaml", [policy_doc("x", f"m{i:04d}", {"app": "nobody"}, [{"app": "a"}])])
             for i in range(1000)]
    t0 = time.monotonic()
    for i, p in enumerate(paths):
        os.rename(p, run.watch / f"m{i:04d}.yaml")
    assert wait_for(lambda: d.state()["counts"]["policies"] == 1003, 6, interval=0.1) is not None, \
        d.state()["counts"]
    assert time.monotonic() - t0 < 6  # measured: ~2 s, renames included (benchmarks/bench_daemon.py)


def _many_policies(tmp_path, name: str, n: int, peer: str) -> str:
    import json

    items = [policy_doc("x", f"p{i:05d}", {"app": "b"}, [{"app": peer}], ports=[1000 + i % 5000])
             for i in range(n)]
    stage = tmp_path / "stage"
    stage.mkdir(exist_ok=True)
    path = str(stage / name)
    with open(path, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)
    return path


def test_ten_thousand_policies_in_one_file_converge_in_seconds(lab, run, tmp_path):
    """Finding 3 of issue 20: one sync's changes are compiled as one batch (10,000 policies
    selecting one pod took 860 s one at a time). The fake backend: this measures the
    daemon, not nftables' own cost of a 20,000-set table (see docs/daemon.md)."""
    d = run("--resync", "300", backend="fake")
    staged = _many_policies(tmp_path, "many.json", 10_000, "a")
    t0 = time.monotonic()
    os.rename(staged, run.watch / "many.json")

    def enforced() -> bool:
        pods = {p["pod"]: p for p in d.state()["pods"]}
        return len(pods["x/b"]["ingress"]) == 10_000 and pods["x/b"]["state"] == "enforced"

    assert wait_for(enforced, 60, interval=0.2) is not None
    took = time.monotonic() - t0
    assert took < 20, took  # measured ~6 s on 2 shared cores (benchmarks/bench_daemon.py)
    # Signals are served right after: a reload and a stop.
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: bool(d.logs("reload")), 10) is not None
    assert d.stop() == 0


def test_sigterm_is_served_during_a_long_apply(lab, run, tmp_path):
    """Finding 3 of issue 20: SIGTERM in the middle of long work (10,000 policies, whose
    nftables transaction alone takes tens of seconds) stops the daemon within seconds,
    every rule left in place."""
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run("--resync", "300")
    assert not lab.ok("c", "b")
    staged = _many_policies(tmp_path, "many.json", 10_000, "a")
    os.rename(staged, run.watch / "many.json")
    time.sleep(8)  # reading and compiling (a few s), then the long apply (~25 s)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    d.proc.wait(30)
    assert time.monotonic() - t0 < 8  # STOP_GRACE (5 s) at most, plus exit
    assert d.proc.returncode == 0
    assert not lab.ok("c", "b", 80)  # whatever was in force stays in force


def test_a_fifo_in_the_watch_directory_blocks_nothing(lab, run):
    """Finding 4 of issue 20: a FIFO is not opened (it would block the worker for good)."""
    os.mkfifo(run.watch / "fifo.yaml")
    d = run()  # READY despite the FIFO (the start-up reads every file)
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    assert wait_for(lambda: not lab.ok("c", "b"), SLOW) is not None
    errors = [e for e in d.logs("input error") if e["file"].endswith("fifo.yaml")]
    assert errors and "not a regular file" in errors[0]["reason"]
    t0 = time.monotonic()
    assert d.stop() == 0 and time.monotonic() - t0 < 5
    d2 = run()  # a restart does not block either
    assert d2.stop() == 0


def test_links_out_and_foreign_files_are_refused_and_secrets_never_quoted(lab, run, tmp_path):
    """Finding 5 of issue 20: a symlink to a root-only file outside the watched directory
    is not read (its content never reaches the log or the state file), nor is a file
    owned by another user; the state and the last good copies are private."""
    import pwd
    import stat as st

    secret = tmp_path / "secret.txt"
    secret.write_text("root:$y$j9T$TOPSECRETHASHVALUE0123456789:19000:0:99999:7:::\n")
    os.chmod(secret, 0o600)
    os.symlink(secret, run.watch / "shadow.yaml")
    # A link that stays inside the directory (a ConfigMap volume's layout) is fine.
    (run.watch / "..data").mkdir()
    write_yaml(str(run.watch / "..data" / "b.yaml"), [b_from("a")])
    os.symlink("..data/b.yaml", run.watch / "b.yaml")
    foreign = run.watch / "foreign.yaml"
    write_yaml(str(foreign), [policy_doc("x", "c-in", {"app": "c"}, [{"app": "a"}])])
    nobody = pwd.getpwnam("nobody")
    os.chown(foreign, nobody.pw_uid, nobody.pw_gid)
    d = run()
    assert not lab.ok("c", "b") and lab.ok("a", "b")  # the inside link is read
    assert lab.ok("b", "c")  # the foreign file is not
    text = d.log_text() + open(d.state_file).read()
    assert "TOPSECRET" not in text and "j9T" not in text
    reasons = {os.path.basename(e["file"]): e["reason"] for e in d.logs("input error")}
    assert "leading out of the watched directories" in reasons["shadow.yaml"]
    assert "not by root" in reasons["foreign.yaml"]
    assert st.S_IMODE(os.stat(d.state_file).st_mode) == 0o600
    lastgood = d.state_file + ".lastgood"
    assert st.S_IMODE(os.stat(lastgood).st_mode) == 0o700
    for root, dirs, files in os.walk(lastgood):
        for name in dirs:
            assert st.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o700
        for name in files:
            assert st.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o600


def test_a_slow_writer_never_gets_its_partial_file_enforced(lab, run):
    """Finding 6 of issue 20: a file held open by its writer for longer than 30 s (and
    across resyncs) keeps its last good version until the writer closes it."""
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run("--resync", "2")
    assert not lab.ok("c", "b")
    with open(run.watch / "b.yaml", "w") as f:
        # "- from:" with its peers not written yet reads as "from anywhere".
        f.write("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b-in, namespace: x}\n"
                "spec:\n  podSelector: {matchLabels: {app: b}}\n  ingress:\n  - from:\n")
        f.flush()
        deadline = time.monotonic() + 32
        while time.monotonic() < deadline:
            assert not lab.ok("c", "b"), "the partial file was enforced"
            time.sleep(1)
        f.write("    - podSelector: {matchLabels: {app: c}}\n")
    assert wait_for(lambda: lab.ok("c", "b"), SLOW) is not None
    assert not lab.ok("a", "b")
    assert d.stop() == 0


def test_state_file_in_a_shared_directory_cannot_be_turned_against_root(lab, run, tmp_path):
    """Finding 7 of issue 20: in a world-writable sticky directory another user plants a
    link where the state file goes and one where its last good copies go; the daemon
    writes through neither (exclusive temporary files, private directories)."""
    import pwd
    import stat as st

    nobody = pwd.getpwnam("nobody")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    victim = theirs / "victim.txt"
    victim.write_text("theirs\n")
    for p in (theirs, victim):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    state = shared / "daemon.json"
    os.symlink(victim, state)
    os.symlink(theirs, shared / "daemon.json.lastgood")
    for p in (state, shared / "daemon.json.lastgood"):
        os.lchown(p, nobody.pw_uid, nobody.pw_gid)
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = DaemonProcess([str(run.watch)], state_file=str(state), netns_prefix=lab.prefix,
                      args=["--repair-interval", "1"], log_path=str(tmp_path / "d7.log"))
    d.start()
    try:
        assert not lab.ok("c", "b")
        assert victim.read_text() == "theirs\n" and sorted(os.listdir(theirs)) == ["victim.txt"]
        info = os.lstat(state)
        assert st.S_ISREG(info.st_mode) and info.st_uid == 0 and st.S_IMODE(info.st_mode) == 0o600
        assert d.state()["phase"] == "running"
        warned = d.logs("state file not written")
        assert warned and "last good versions not kept" in warned[0]["error"]
    finally:
        d.close()
    # A directory of the state file that another user owns is refused outright.
    os.unlink(shared / "daemon.json.lastgood")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    d2 = DaemonProcess([str(run.watch)], state_file=str(theirs / "daemon.json"), netns_prefix=lab.prefix,
                       log_path=str(tmp_path / "d7b.log"))
    d2.start()
    try:
        assert not os.path.exists(theirs / "daemon.json")
        assert any("owned by uid" in r["error"] for r in d2.logs("state file not written"))
    finally:
        d2.close()


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def test_metrics_endpoint_bounds_half_open_clients_and_logs_no_tracebacks(lab, run):
    """Finding 10 of issue 20: 95 half-open connections held 95 threads, and clients
    that disconnect printed tracebacks into the JSON log."""
    port = _free_port()
    d = run("--metrics-addr", f"127.0.0.1:{port}")
    base_threads = _threads(d.proc.pid)
    idle = []
    try:
        for _ in range(95):  # connect, say nothing
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            idle.append(s)
        time.sleep(0.5)
        assert _threads(d.proc.pid) <= base_threads + 17  # at most 16 clients served at once
        # Within the request timeout (5 s) the silent clients are dropped and scrapes work.
        assert wait_for(lambda: _http(f"http://127.0.0.1:{port}/healthz")[0] == 200, 15, interval=0.5) is not None
    finally:
        for s in idle:
            s.close()
    # Clients that go away in the middle of an answer: one line each at most, no traceback.
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()  # RST: the write of the answer fails
    time.sleep(1)
    assert _http(f"http://127.0.0.1:{port}/metrics")[0] == 200
    assert "Traceback" not in d.log_text()
    assert wait_for(lambda: _threads(d.proc.pid) <= base_threads + 1, 10, interval=0.5) is not None


# ------------------------------------------------------------------ --enforce-at host


def _tables(netns_name: str) -> list[str]:
    """Our nftables tables in ``netns_name`` (the iptables test leaves iptables' own)."""
    out = netns.run(netns_name, ["nft", "list", "tables"]).stdout
    return [line.strip() for line in out.splitlines() if "netpol" in line]


@pytest.mark.parametrize("backend,flush", [("nftables", ["nft", "flush", "ruleset"]),
                                           ("iptables", ["iptables", "-F"])])
def test_a_pod_flushing_its_own_rules_is_repaired_in_pod_mode(lab, run, backend, flush):
    """Pod mode: the pod can remove its own rules (CAP_NET_ADMIN in its namespace); the
    denied connection gets through until the next repair (--repair-interval 1), then is
    denied again. Real packets all along."""
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run(backend=backend)
    assert not lab.ok("c", "b") and lab.ok("a", "b")
    netns.run(lab.ns("b"), flush)
    assert lab.ok("c", "b")  # open: the pod walked out of its policy
    assert wait_for(lambda: not lab.ok("c", "b"), 2.5) is not None
    assert lab.ok("a", "b")
    assert wait_for(lambda: d.state()["totals"]["drift_repairs"] >= 1, 2) is not None


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_host_mode_a_pod_flushing_its_namespace_changes_nothing(lab, run, backend):
    """Host mode: the rules are in the node's namespace; the pod's namespace holds none, so
    its flush (nft and iptables) leaves every denied connection denied, probed
    continuously across three repair intervals. Then a policy change is enforced."""
    from enforcer.daemon.hostside import host_backend
    from enforcer.errors import BackendUnavailable

    try:
        host_backend(backend, None)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run("--enforce-at", "host", "--node-netns", lab.node, backend=backend)
    assert not lab.ok("c", "b") and lab.ok("a", "b")
    assert all(_tables(lab.ns(p)) == [] for p in IPS)  # nothing inside the pods
    if backend == "nftables":
        assert "table inet netpol_host" in _tables(lab.node)
    st = d.state()
    assert st["enforce_at"] == "host" and st["counts"]["managed"] == 3
    assert {p["pod"]: p["state"] for p in st["pods"]} == {"x/a": "enforced", "x/b": "enforced", "x/c": "enforced"}
    for p in IPS:
        netns.run(lab.ns(p), ["nft", "flush", "ruleset"])
        netns.run(lab.ns(p), ["iptables", "-F"])
    t0, leaks = time.monotonic(), []
    while time.monotonic() - t0 < 3.0:
        if tcp_ok(lab.ns("c"), IPS["b"], 80, timeout=0.05):
            leaks.append(round(time.monotonic() - t0, 2))
    assert leaks == [] and lab.ok("a", "b")
    assert d.logs("drift repaired") == []
    # A change: only c may reach b now (the node's table, incrementally).
    write_yaml(str(run.watch / "b.yaml"), [b_from("c")])
    assert wait_for(lambda: lab.ok("c", "b"), SLOW) is not None
    assert not lab.ok("a", "b")
    # The node's table changed behind the daemon's back: repaired.
    if backend == "nftables":
        netns.run(lab.node, ["nft", "flush", "chain", "inet", "netpol_host", "in.x.b"])
    else:
        netns.run(lab.node, ["iptables", "-F", "NETPOL-HOST"])
    assert wait_for(lambda: d.logs("drift repaired"), 3) is not None
    # iptables: NETPOL-HOST held every pod's dispatch rules, so every pod drifted and each
    # is repaired in turn; the first "drift repaired" may be another pod's.
    assert wait_for(lambda: not lab.ok("a", "b"), 3) is not None and lab.ok("c", "b")
    # Worse: the node's whole ruleset flushed (our tables gone, the backend's memory of
    # them stale). Every pod is open until the repair rebuilds the node from nothing.
    netns.run(lab.node, ["nft", "flush", "ruleset"])
    if backend != "nftables":
        netns.run(lab.node, ["iptables", "-F"])
    assert wait_for(lambda: not lab.ok("a", "b"), 5) is not None and lab.ok("c", "b")
    assert wait_for(lambda: {p["pod"]: p["state"] for p in d.state()["pods"]}
                    == {"x/a": "enforced", "x/b": "enforced", "x/c": "enforced"}, 5) is not None
    assert not lab.ok("a", "b")
    assert d.stop() == 0


def test_switching_the_daemon_between_pod_and_host_mode_leaves_no_stale_rules(lab, run):
    write_yaml(str(run.watch / "b.yaml"), [b_from("a")])
    d = run()
    assert not lab.ok("c", "b")
    assert all(_tables(lab.ns(p)) == ["table inet netpol"] for p in IPS)
    assert d.stop() == 0
    # pod -> host: the pods' tables go once the node's chains are in force (the node named
    # by a path, as a DaemonSet would: /proc/self/ns/net).
    d = run("--enforce-at", "host", "--node-netns", netns.path(lab.node))
    assert not lab.ok("c", "b") and lab.ok("a", "b")
    assert all(_tables(lab.ns(p)) == [] for p in IPS)
    assert "table inet netpol_host" in _tables(lab.node)
    assert d.stop() == 0
    # host -> pod (same state file: it says where the host tables were): they go.
    d = run()
    assert not lab.ok("c", "b") and lab.ok("a", "b")
    assert all(_tables(lab.ns(p)) == ["table inet netpol"] for p in IPS)
    assert _tables(lab.node) == []
    assert d.logs("host-mode rules removed")[0]["node_netns"] == netns.path(lab.node)
    assert d.stop() == 0
    # --cleanup-on-exit in host mode: the node's tables go whole; nothing is left anywhere.
    d = run("--enforce-at", "host", "--node-netns", lab.node, "--cleanup-on-exit")
    assert not lab.ok("c", "b") and _tables(lab.node) != []
    assert d.stop() == 0
    assert _tables(lab.node) == [] and all(_tables(lab.ns(p)) == [] for p in IPS)
    assert lab.ok("c", "b")


def test_host_mode_refused_by_a_backend_is_one_line_and_exit_2(lab, run, tmp_path):
    """A backend without a host mode (the fake one) is refused at start: one line, exit 2,
    nothing changed."""
    d = DaemonProcess([str(run.watch)], state_file=str(tmp_path / "s.json"), netns_prefix=lab.prefix,
                      backend="fake", args=["--enforce-at", "host", "--node-netns", lab.node])
    proc = subprocess.run(d.argv(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "has no host mode" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    assert _tables(lab.ns("b")) == [] and _tables(lab.node) == []
    # A node namespace that does not exist: the same.
    d = DaemonProcess([str(run.watch)], state_file=str(tmp_path / "s.json"), netns_prefix=lab.prefix,
                      args=["--enforce-at", "host", "--node-netns", lab.node + "-missing"])
    proc = subprocess.run(d.argv(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no such network namespace" in proc.stderr and _tables(lab.ns("b")) == []


def test_host_mode_a_peer_change_is_a_set_delta_on_the_node(lab, run):
    """Host mode: a pod relabelled into b's peers changes the node's shared set only; the
    daemon reports a delta (as in pod mode), not a rebuild of b's chains."""
    write_yaml(str(run.watch / "b.yaml"), [b_from("c")])
    d = run("--enforce-at", "host", "--node-netns", lab.node)
    assert not lab.ok("a", "b") and lab.ok("c", "b")
    before = len(d.logs("applied"))
    write_yaml(str(run.watch / "pods.yaml"), pods_docs({"a": "c"}))
    assert wait_for(lambda: lab.ok("a", "b"), SLOW) is not None
    kinds = {r.get("kind") for r in d.logs("applied")[before:]}
    assert kinds == {"delta"}, d.logs("applied")[before:]
    assert d.stop() == 0
