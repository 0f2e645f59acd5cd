"""The daemon wired together, without root: FakeBackend, a fake node (namespaces and their
addresses), a fake clock; the manifest directory and the state file are real files."""
from __future__ import annotations

import io
import json
import os
import socket
import urllib.error
import urllib.request

import pytest

from backends.base import FakeBackend
from enforcer.daemon import logs
from enforcer.daemon import status as statusfile
from enforcer.daemon.discovery import Discovery
from enforcer.daemon.notify import Notifier
from enforcer.daemon.reconcile import Reconciler
from enforcer.daemon.runner import FakeClock
from enforcer.daemon.service import Daemon, Options
from enforcer.errors import NetnsError
from tests.unit.clusters import three_pods

PODS = three_pods(with_ips=True) + """---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: x, labels: {app: r}}
status: {podIP: 10.244.7.7}
"""


def policy(peer="a", name="b-in"):
    return f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: b}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{app: {peer}}}}}
"""


class Node:
    """Namespaces on a pretend node: name -> (inode, addresses)."""

    def __init__(self):
        self.spaces = {"ns-a": (1, {"10.244.0.2"}), "ns-b": (2, {"10.244.0.3"}),
                       "ns-c": (3, {"10.244.0.4"}), "unrelated": (4, {"192.168.9.9"})}

    def inode(self, name):
        held = self.spaces.get(name)
        return held[0] if held else None

    def read(self, name):
        if name not in self.spaces:
            raise NetnsError(f"{name} does not exist")
        return frozenset(self.spaces[name][1])

    def list(self, prefix):
        return sorted(n for n in self.spaces if n.startswith(prefix))


class FakeNotifier(Notifier):
    def __init__(self):
        super().__init__("")
        self.sent = []

    def send(self, *lines):
        self.sent.append(lines)
        return True


class FakeConntrack:
    def __init__(self):
        self.cuts = []
        self.forgotten = []

    def cut(self, netns, fw):
        self.cuts.append((netns, fw.pod))
        return 1

    def forget_ips(self, netns, ips):
        self.forgotten.append((netns, frozenset(ips)))
        return 0


@pytest.fixture
def env(tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "pods.yaml").write_text(PODS)
    (watch / "policy.yaml").write_text(policy("a"))
    node = Node()
    clock = FakeClock()
    backend = FakeBackend()
    stream = io.StringIO()
    made = []

    def make(**kw):
        opts = Options(watch=[str(watch)], backend="fake", state_file=str(tmp_path / "state.json"),
                       settle=0.5, **kw)
        rec = Reconciler(backend, clock=clock, inode=node.inode, exists=lambda n: n in node.spaces)
        d = Daemon(opts, backend=backend, log=logs.setup("json", "debug", stream=stream), clock=clock,
                   notifier=FakeNotifier(), discovery=Discovery(reader=node.read, lister=node.list,
                                                                inode=node.inode),
                   watch_netns=False, watch_files=False, reconciler=rec, conntrack=kw.get("conntrack_strict") and FakeConntrack() or None)
        made.append(d)
        return d

    class Env:
        pass

    e = Env()
    e.watch, e.node, e.clock, e.backend, e.stream, e.make, e.tmp = watch, node, clock, backend, stream, make, tmp_path

    def logs_of(msg=None):
        out = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
        return [r for r in out if msg is None or r["msg"] == msg]

    e.logs = logs_of
    yield e
    for d in made:
        d.close()


def touch(d: Daemon, path):
    """What the inotify watcher reports after a write closes."""
    d.source.note(str(path), ready=True)


def settle(d: Daemon, clock: FakeClock):
    clock.advance(1.0)
    d.step()


def test_start_enforces_every_local_pod_and_only_those(env):
    d = env.make()
    d.start()
    assert set(env.backend.installed) == {"ns-a", "ns-b", "ns-c"}  # not "unrelated", not the remote pod
    fw = env.backend.installed["ns-b"]
    assert fw.ingress.isolated and fw.ingress.isolated_by == ("x/b-in",)
    assert not env.backend.installed["ns-a"].ingress.isolated
    assert d.notifier.sent[-1][0] == "READY=1"
    st = json.loads((env.tmp / "state.json").read_text())
    assert st["phase"] == "running" and st["counts"]["local_pods"] == 3
    assert [p["pod"] for p in st["pods"]] == ["x/a", "x/b", "x/c"]
    assert st["pods"][1]["ingress"] == ["x/b-in"]
    assert env.logs("started")


def test_policy_edit_is_a_delta_and_the_delay_is_measured(env):
    d = env.make()
    d.start()
    env.backend.calls.clear()
    env.clock.advance(5)
    (env.watch / "policy.yaml").write_text(policy("c"))
    touch(d, env.watch / "policy.yaml")
    env.clock.advance(0.002)
    d.step()
    assert env.backend.calls == [("delta", "ns-b")]
    assert env.backend.installed["ns-b"].set(env.backend.installed["ns-b"].ingress.rules[0].peers).v4 == ("10.244.0.4/32",)
    assert d.metrics.impl_delay._sum.get() == pytest.approx(0.002)


def test_invalid_file_keeps_last_good_and_is_logged_once(env):
    d = env.make()
    d.start()
    good = env.backend.installed["ns-b"]
    (env.watch / "policy.yaml").write_text(policy("c").replace("podSelector: {matchLabels: {app: c}}", "podSelectr: {}"))
    (env.watch / "other.yaml").write_text(policy("a", name="second").replace("app: b", "app: c"))
    for path in ("policy.yaml", "other.yaml"):
        touch(d, env.watch / path)
    settle(d, env.clock)
    assert env.backend.installed["ns-b"] == good  # the last good version stays in force
    assert env.backend.installed["ns-c"].ingress.isolated_by == ("x/second",)  # the rest proceeds
    errors = env.logs("input error")
    assert len(errors) == 2
    assert {e["field"] for e in errors} == {"spec.ingress[0].from[0].podSelectr", "spec.ingress[0].from[0]"}
    assert all(e["file"].endswith("policy.yaml") and e["object"] == "NetworkPolicy x/b-in" for e in errors)
    # Many more syncs, full rescans and a reload later: still logged once.
    for _ in range(3):
        touch(d, env.watch / "policy.yaml")
        settle(d, env.clock)
    env.clock.advance(120)
    d.step()
    d.reload()
    d.step()
    assert len(env.logs("input error")) == 2
    st = json.loads((env.tmp / "state.json").read_text())
    assert len(st["input_errors"]) == 2 and "last good version" in st["input_errors"][0]
    # Fixed: applied, and the resolution is logged.
    (env.watch / "policy.yaml").write_text(policy("c"))
    touch(d, env.watch / "policy.yaml")
    settle(d, env.clock)
    assert env.backend.installed["ns-b"] != good
    assert len(env.logs("input error resolved")) == 2


def test_deleted_policy_file_opens_the_pod(env):
    d = env.make()
    d.start()
    os.unlink(env.watch / "policy.yaml")
    touch(d, env.watch / "policy.yaml")
    settle(d, env.clock)
    assert not env.backend.installed["ns-b"].ingress.isolated


def test_half_written_file_is_not_read_until_closed(env):
    d = env.make()
    d.start()
    good = env.backend.installed["ns-b"]
    # IN_MODIFY without a close: the content may be a prefix ("from:" with no peers yet
    # reads as "from everywhere"); it is not read before it settles or closes.
    (env.watch / "policy.yaml").write_text(policy("c").split("    - podSelector")[0])
    d.source.note(str(env.watch / "policy.yaml"), ready=False)
    env.clock.advance(0.1)
    d.step()
    assert env.backend.installed["ns-b"] == good
    (env.watch / "policy.yaml").write_text(policy("c"))
    touch(d, env.watch / "policy.yaml")
    env.clock.advance(0.1)
    d.step()
    assert env.backend.installed["ns-b"].ingress.rules


def test_new_namespace_is_found_and_isolated(env):
    (env.watch / "pods.yaml").write_text(PODS + """---
apiVersion: v1
kind: Pod
metadata: {name: b2, namespace: x, labels: {app: b}}
status: {podIP: 10.244.0.5}
""")
    d = env.make()
    d.start()
    assert "ns-b2" not in env.backend.installed
    env.node.spaces["ns-b2"] = (9, {"10.244.0.5"})
    d._netns_changed("ns-b2", env.clock.now)
    settle(d, env.clock)
    fw = env.backend.installed["ns-b2"]
    assert fw.pod == "x/b2" and fw.ingress.isolated and fw.ingress.rules


def test_pod_relabel_changes_peer_sets(env):
    d = env.make()
    d.start()
    (env.watch / "pods.yaml").write_text(PODS.replace("labels: {app: c}", "labels: {app: a}"))
    touch(d, env.watch / "pods.yaml")
    settle(d, env.clock)
    fw = env.backend.installed["ns-b"]
    assert set(fw.set(fw.ingress.rules[0].peers).v4) == {"10.244.0.2/32", "10.244.0.4/32"}


def test_compile_failure_fails_closed_and_recovers(env, monkeypatch):
    d = env.make()
    d.start()
    env.node.spaces["ns-b2"] = (9, {"10.244.0.5"})
    from enforcer.compiler.compile import Compiler

    real = Compiler.set_pod

    def broken(self, pod):
        raise RuntimeError("compiler bug")

    monkeypatch.setattr(Compiler, "set_pod", broken)
    (env.watch / "pods.yaml").write_text(PODS + """---
apiVersion: v1
kind: Pod
metadata: {name: b2, namespace: x, labels: {app: b}}
status: {podIP: 10.244.0.5}
""")
    touch(d, env.watch / "pods.yaml")
    d._netns_changed("ns-b2", env.clock.now)
    settle(d, env.clock)
    fw = env.backend.installed["ns-b2"]
    assert fw.ingress.isolated and not fw.ingress.rules  # deny-only, not open
    assert env.logs("compile failed") and env.logs("sync failed")
    monkeypatch.setattr(Compiler, "set_pod", real)
    settle(d, env.clock)
    assert env.backend.installed["ns-b2"].ingress.rules  # rebuilt from scratch, real rules


def test_drift_is_repaired_counted_and_logged(env):
    d = env.make(repair_interval=10)
    d.start()
    want = env.backend.installed["ns-b"]
    del env.backend.installed["ns-b"]
    env.clock.advance(10)
    d.step()
    assert env.backend.installed["ns-b"] == want
    assert d.totals.drift_repairs == 1 and d.metrics.drift_repairs._value.get() == 1
    assert env.logs("drift repaired")[0]["netns"] == "ns-b"


def test_conntrack_strict_cuts_in_changed_namespaces_and_forgets_gone_pods(env):
    d = env.make(conntrack_strict=True)
    d.start()
    ct = d.conntrack
    ct.cuts.clear()
    (env.watch / "policy.yaml").write_text(policy("c"))
    touch(d, env.watch / "policy.yaml")
    settle(d, env.clock)
    assert ct.cuts == [("ns-b", "x/b")]
    (env.watch / "pods.yaml").write_text(PODS.replace("status: {podIP: 10.244.0.4}", "status: {podIP: 10.244.0.40}"))
    touch(d, env.watch / "pods.yaml")
    settle(d, env.clock)
    assert ("ns-a", frozenset({"10.244.0.4"})) in ct.forgotten


def test_stop_leaves_rules_unless_cleanup_on_exit(env):
    d = env.make()
    d.start()
    d.shutdown()
    assert set(env.backend.installed) == {"ns-a", "ns-b", "ns-c"}
    assert json.loads((env.tmp / "state.json").read_text())["phase"] == "stopped"
    d2 = env.make(cleanup_on_exit=True)
    d2.start()
    d2.shutdown()
    assert env.backend.installed == {}


def test_reload_rereads_everything(env):
    d = env.make()
    d.start()
    reads = []
    orig = d.source.load
    d.source.load = lambda paths: (reads.extend(paths), orig(paths))[1]
    d.reload()
    d.step()
    assert sorted(os.path.basename(p) for p in reads) == ["pods.yaml", "policy.yaml"]
    assert env.logs("reload")
    assert any(lines[0] == "RELOADING=1" for lines in d.notifier.sent)


def test_health_and_metrics_endpoints(env):
    d = env.make(metrics_addr="127.0.0.1:0")
    assert d.health()[0] is False  # starting
    d.start()
    base = f"http://127.0.0.1:{d.server.port}"
    with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
        assert r.status == 200 and r.read().startswith(b"ok:")
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "netpol_managed_namespaces 3.0" in text
    assert 'netpol_isolated_pods{direction="ingress"} 1.0' in text
    assert "netpol_sync_duration_seconds_bucket" in text
    for name in ("x/b", "b-in", "ns-b"):
        assert name not in text  # no pod, policy or namespace names as labels
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(base + "/nope", timeout=5)
    env.clock.advance(10_000)  # the worker looks stuck
    assert d.health()[0] is False


def test_status_text_and_cli(env):
    d = env.make()
    d.start()
    data = statusfile.read(str(env.tmp / "state.json"))
    text = statusfile.render(data)
    assert "running" in text and "x/b-in" in text and "errors in force: none" in text
    from click.testing import CliRunner

    from enforcer.daemon.commands import status

    res = CliRunner().invoke(status, ["--state-file", str(env.tmp / "state.json"), "-o", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["running"] is True
    res = CliRunner().invoke(status, ["--state-file", str(env.tmp / "none.json")])
    assert res.exit_code != 0


def test_notifier_speaks_the_sd_notify_protocol(tmp_path):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    try:
        n = Notifier(path)
        assert n.ready("3 pods") and n.watchdog()
        assert srv.recv(4096).decode().split("\n")[:2] == ["READY=1", "STATUS=3 pods"]
        assert srv.recv(4096) == b"WATCHDOG=1"
        n.close()
    finally:
        srv.close()
    assert not Notifier("").ready("x")  # outside systemd: a no-op


def test_watchdog_interval_from_systemd(monkeypatch):
    from enforcer.daemon.notify import watchdog_interval

    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


def test_text_and_json_log_lines():
    s = io.StringIO()
    log = logs.setup("text", stream=s)
    log.info("sync done", pods=3, watch=["/a", "/b"], reason="two words")
    line = s.getvalue().strip()
    assert line.endswith('info sync done pods=3 watch=/a,/b reason="two words"')
    s = io.StringIO()
    log = logs.setup("json", stream=s)
    log.error("apply failed", netns="n", error="x")
    rec = json.loads(s.getvalue())
    assert rec["msg"] == "apply failed" and rec["level"] == "error" and rec["netns"] == "n"


def test_watchdog_is_fed_during_a_long_sync(env, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")  # systemd: WatchdogSec=20s, ping every 10 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    real = env.backend.apply

    def slow(netns, fw, previous=None):
        env.clock.advance(6.0)  # each namespace takes 6 s: 18 s for the first sync
        return real(netns, fw, previous)

    env.backend.apply = slow
    d = env.make()
    d.start()
    pings = [lines for lines in d.notifier.sent if lines == ("WATCHDOG=1",)]
    assert len(pings) >= 2  # fed while it worked, before READY
    assert d.notifier.sent[-1][0] == "READY=1"


def test_a_settling_file_keeps_its_wake_up_after_another_file_is_synced(env):
    """Issue 20, finding 2: the sync that reads the first file consumed every pending
    request; the second file, still settling, must still wake the worker (not wait
    for the resync)."""
    d = env.make()
    d.start()
    (env.watch / "q1.yaml").write_text(policy("c", name="q1"))
    d.source.note(str(env.watch / "q1.yaml"), ready=False)  # modified, no close seen: settles 0.5 s
    env.clock.advance(0.3)
    (env.watch / "q2.yaml").write_text(policy("a", name="q2").replace("app: b", "app: c"))
    d.source.note(str(env.watch / "q2.yaml"), ready=False)
    env.clock.advance(0.2)
    d.step()
    assert env.backend.installed["ns-b"].ingress.isolated_by == ("x/b-in", "x/q1")
    assert not env.backend.installed["ns-c"].ingress.isolated
    assert d.runner.due() <= env.clock.now + 0.3  # q2's own settle time, not the resync
    env.clock.advance(0.3)
    d.step()
    assert env.backend.installed["ns-c"].ingress.isolated_by == ("x/q2",)


class SerialBackend(FakeBackend):
    apply_in_threads = False  # as nftables says of itself


@pytest.mark.parametrize("backend_cls,workers", [(FakeBackend, 4), (SerialBackend, 1)])
def test_apply_workers_follow_what_the_backend_says_it_can(tmp_path, backend_cls, workers):
    node, stream = Node(), io.StringIO()
    opts = Options(watch=[str(tmp_path)], backend="fake", state_file=str(tmp_path / "state.json"),
                   apply_workers=4)
    d = Daemon(opts, backend=backend_cls(), log=logs.setup("json", "debug", stream=stream),
               clock=FakeClock(), notifier=FakeNotifier(),
               discovery=Discovery(reader=node.read, lister=node.list, inode=node.inode),
               watch_netns=False, watch_files=False)
    try:
        assert d.reconciler.workers == workers
        warned = [json.loads(line) for line in stream.getvalue().splitlines() if "apply workers ignored" in line]
        assert len(warned) == (workers == 1)
    finally:
        d.close()
