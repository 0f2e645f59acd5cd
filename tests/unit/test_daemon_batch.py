"""The daemon's batch compiling (issue 20, finding 3): one sync's changes rebuild each
touched pod once, with the same result as feeding the plain compiler one by one."""
from __future__ import annotations

import pytest

from enforcer.compiler.compile import Compiler
from enforcer.daemon.batch import BatchCompiler, Interrupted
from enforcer.model import Cluster, ContainerPort, LabelSelector, Namespace, NetworkPolicy, Peer, Pod, Rule


def _cluster() -> Cluster:
    pods = [Pod("x", n, {"app": n}, (f"10.244.0.{i + 2}",), (ContainerPort(80),)) for i, n in enumerate("abc")]
    return Cluster({"x": Namespace("x", {"kubernetes.io/metadata.name": "x"})}, {p.key: p for p in pods}, {})


def _policy(i: int, peer: str = "a") -> NetworkPolicy:
    return NetworkPolicy("x", f"p{i:04d}", LabelSelector((("app", "b"),)), frozenset({"Ingress"}),
                         ingress=(Rule((Peer(pod_selector=LabelSelector((("app", peer),))),)),))


def test_a_burst_rebuilds_each_pod_once_and_matches_the_one_by_one_result(monkeypatch):
    builds: list[str] = []
    real = Compiler._build
    monkeypatch.setattr(Compiler, "_build", lambda self, key: builds.append(key) or real(self, key))
    batch = BatchCompiler(_cluster())
    plain = Compiler(_cluster())
    batch.firewalls()  # built, as the daemon's first sync builds its local pods' firewalls
    builds.clear()
    changes = {("NetworkPolicy", f"x/p{i:04d}"): _policy(i) for i in range(300)}
    changes[("Pod", "x/c")] = None
    changed, gone = batch.feed(changes)
    assert builds.count("x/b") == 1  # not 300
    assert changed == {"x/b", "x/c"} and gone == {"10.244.0.4"}
    for obj in changes.values():
        if obj is not None:
            plain.set_policy(obj)
    plain.remove_pod("x/c")
    assert batch.firewalls() == plain.firewalls()
    # Outside a batch it is the plain compiler.
    assert batch.set_policy(_policy(0, "c")) == {"x/b"}


def test_a_burst_stops_between_objects_when_the_daemon_stops():
    batch = BatchCompiler(_cluster())
    changes = {("NetworkPolicy", f"x/p{i:04d}"): _policy(i) for i in range(1000)}
    with pytest.raises(Interrupted):
        batch.feed(changes, stopping=lambda: True)
    assert batch._deferred is None
