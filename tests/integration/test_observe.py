"""`netpol lab stats` and `netpol lab drops` against real packets, on both backends (root).

One lab per backend for the module: three pods in namespace x and one policy that isolates
x/b both ways and admits only x/a on 80/TCP. So x/a -> x/b is allowed (it moves the allow
rule's counter), x/c -> x/b is dropped by x/b's ingress and x/b -> x/c by x/b's egress
(both move the drop counter and are logged to nflog). Connections are made from sockets
created inside the source pod's namespace, so each test knows its own source port and
picks exactly its own packet out of the stream.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from enforcer import netns
from enforcer.lab import observe, state
from tests.unit.clusters import three_pods

pytestmark = pytest.mark.root

POLICY = "x/b-policy"
MANIFESTS = three_pods() + """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-policy, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: 80}]
"""


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def lab(request, netpol_lab_module):
    return netpol_lab_module(MANIFESTS, request.param)


def _ep(lab, pod: str) -> state.Endpoint:
    return state.load(lab.name).endpoints[pod]


def connect(lab, src: str, dst: str, port: int = 80, timeout: float = 0.5) -> tuple[int, bool]:
    """A TCP connect from ``src``'s namespace to ``dst``: (source port, connected)."""
    with netns.entered(_ep(lab, src).netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((_ep(lab, src).ips[0], 0))
        sport = s.getsockname()[1]
        s.settimeout(timeout)
        try:
            s.connect((_ep(lab, dst).ips[0], port))
            return sport, True
        except (socket.timeout, OSError) as e:
            if getattr(e, "errno", None) == errno.ECONNREFUSED:
                return sport, True  # a reset came back: the packet passed
            return sport, False
    finally:
        s.close()


def wait_for(reader: observe.DropReader, pod: str, direction: str, sport: int, seconds: float = 3.0):
    """The first drop in ``pod``/``direction`` from source port ``sport`` (or None)."""
    for d in reader.stream(timeout=seconds):
        if d.pod == pod and d.direction == direction and d.flow.sport == sport:
            return d
    return None


def counter(lab, pod: str, rule: str) -> int:
    _, rows = observe.stats(lab.name, pod)
    found = [r.packets for r in rows if r.rule == rule]
    assert found, f"no rule {rule!r} in {pod}: {[r.rule for r in rows]}"
    return found[0]


def test_denied_ingress_is_streamed_with_its_attribution(lab):
    with observe.DropReader(lab.name) as reader:
        assert set(reader.sockets) == {"x/a", "x/b", "x/c"}
        sport, connected = connect(lab, "x/c", "x/b")
        assert not connected
        d = wait_for(reader, "x/b", "ingress", sport)
    assert d is not None, "the denied SYN was not logged"
    assert (d.src_id, d.dst_id, d.flow.protocol, d.flow.dport) == ("x/c", "x/b", "TCP", 80)
    assert d.isolated_by == (POLICY,)
    assert observe.format_drop(d).endswith(
        f"x/b ingress DROP {_ep(lab, 'x/c').ips[0]}:{sport} -> {_ep(lab, 'x/b').ips[0]}:80/TCP (x/c) "
        f"isolated by {POLICY}")


def test_denied_egress_is_streamed(lab):
    with observe.DropReader(lab.name) as reader:
        sport, connected = connect(lab, "x/b", "x/c")
        assert not connected
        d = wait_for(reader, "x/b", "egress", sport)
    assert d is not None
    assert (d.src_id, d.dst_id, d.peer_id, d.flow.dport, d.isolated_by) == ("x/b", "x/c", "x/c", 80, (POLICY,))


def test_allowed_connection_is_not_a_drop(lab):
    with observe.DropReader(lab.name) as reader:
        sport, connected = connect(lab, "x/a", "x/b")
        assert connected
        assert wait_for(reader, "x/b", "ingress", sport, seconds=0.5) is None


def test_counters_move_on_the_rule_that_matched(lab):
    allow, drop = f"{POLICY} ingress[0]", f"ingress isolated by {POLICY}"
    before = counter(lab, "x/b", allow), counter(lab, "x/b", drop)
    assert connect(lab, "x/a", "x/b")[1]
    middle = counter(lab, "x/b", allow), counter(lab, "x/b", drop)
    assert middle[0] >= before[0] + 1  # the SYN; the rest of the flow is "established"
    assert middle[1] == before[1]
    assert not connect(lab, "x/c", "x/b", timeout=0.3)[1]
    after = counter(lab, "x/b", allow), counter(lab, "x/b", drop)
    assert after[0] == middle[0] and after[1] >= middle[1] + 1


def test_stats_rows_carry_provenance(lab):
    backend, rows = observe.stats(lab.name)
    assert backend == lab.backend
    assert {r.pod for r in rows} == {"x/a", "x/b", "x/c"}
    b = [r for r in rows if r.pod == "x/b"]
    allow = next(r for r in b if r.policy == POLICY)
    assert (allow.direction, allow.action, allow.rule_index) == ("ingress", "accept", 0)
    assert [r.action for r in b if r.rule.endswith(f"isolated by {POLICY}")] == ["drop", "drop"]
    # rule order: established first, the drop last in each direction
    ingress = [r.rule for r in b if r.direction == "ingress"]
    assert ingress[0] == "ingress established" and ingress[-1] == f"ingress isolated by {POLICY}"
    assert [r.rule for r in rows if r.pod == "x/a" and r.direction == "egress"][-1] == "egress not isolated"


def _netpol(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "enforcer", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_cli_drops_and_stats(lab):
    proc = _netpol("lab", "drops", "--name", lab.name, "--count", "1", "--timeout", "8", "-o", "json")
    try:
        # the reader announces itself on stderr once its sockets are bound
        first = proc.stderr.readline()
        assert first.startswith("watching 3 pods"), first
        sport, _ = connect(lab, "x/c", "x/b", timeout=0.3)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    row = json.loads(out.splitlines()[0])
    assert (row["pod"], row["direction"], row["from"], row["dport"], row["isolated_by"]) == \
        ("x/b", "ingress", "x/c", 80, [POLICY])
    assert "1 drop(s) seen" in err

    stats = subprocess.run([sys.executable, "-m", "enforcer", "lab", "stats", "--name", lab.name,
                            "--pod", "x/b", "--nonzero", "-o", "json"], capture_output=True, text=True)
    assert stats.returncode == 0, stats.stderr
    doc = json.loads(stats.stdout)
    assert doc["backend"] == lab.backend
    assert all(r["pod"] == "x/b" and r["packets"] > 0 for r in doc["counters"])
    assert any(r["rule"] == f"ingress isolated by {POLICY}" for r in doc["counters"])


def test_cli_drops_stops_cleanly_on_ctrl_c(lab):
    import signal

    proc = _netpol("lab", "drops", "--name", lab.name)
    try:
        assert proc.stderr.readline().startswith("watching")
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err and "drop(s) seen" in err


def test_unknown_pod_and_lab_are_clear_errors(lab):
    from enforcer.errors import LabError

    with pytest.raises(LabError, match="has no pod x/zz"):
        observe.stats(lab.name, "x/zz")
    with pytest.raises(LabError, match="no lab named"):
        observe.DropReader("npt-does-not-exist")
    assert not os.path.exists(state.lab_dir("npt-does-not-exist"))


def test_a_second_reader_is_told_the_group_is_taken(lab):
    from enforcer.errors import LabError

    with observe.DropReader(lab.name):
        with pytest.raises(LabError, match="already read by another program"):
            observe.DropReader(lab.name)
    with observe.DropReader(lab.name) as again:  # the first one's sockets are gone
        assert len(again.sockets) == 3


POD_D_AND_DENY = """
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {app: d}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
"""


def test_the_reader_follows_lab_apply(lab):
    """Runs last in the module: it changes the lab, and puts it back."""
    try:
        with observe.DropReader(lab.name) as reader:
            lab.apply(MANIFESTS + POD_D_AND_DENY)
            list(reader.stream(timeout=0.3))  # the reader refreshes between polls
            assert "x/d" in reader.sockets
            sport, _ = connect(lab, "x/d", "x/b", timeout=0.3)
            d = wait_for(reader, "x/b", "ingress", sport)
            assert d is not None and d.src_id == "x/d"
            assert d.isolated_by == ("x/b-policy", "x/deny-b")
            lab.apply(MANIFESTS)
            list(reader.stream(timeout=0.3))
            assert set(reader.sockets) == {"x/a", "x/b", "x/c"}
    finally:
        lab.apply(MANIFESTS)
