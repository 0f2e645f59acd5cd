"""Incremental ClusterNetworkPolicy compile (enforcer/cnp/compiling.py): over random edits
of CNPs, pods and namespaces, the incremental Compiler gives exactly the firewalls a full
compile of the same state gives, reports every pod whose firewall moved, and builds again
only the pods a change can reach (a CNP change: its old and new subjects)."""
from __future__ import annotations

import copy
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.cnp import decode as CNP
from enforcer.compiler.compile import Compiler, compile_cluster
from enforcer.model import ContainerPort, Namespace
from tests.unit.test_cnp_property import HOUSES, _cluster, cnp, np_policy

NODE = ("10.244.0.1",)
NAMES = [f"p{i}" for i in range(3)]


def _decode(doc: dict):
    errs: list = []
    obj = CNP.decode_object(copy.deepcopy(doc), errs, [], "gen.yaml")
    assert obj is not None and not errs, errs
    return obj


def _pod_edit(pod, draw):
    what = draw(st.sampled_from(["house", "extra", "ip", "ports", "remove"]))
    if what == "house":
        return replace(pod, labels={**pod.labels, "conformance-house": draw(st.sampled_from(HOUSES))})
    if what == "extra":
        return replace(pod, labels={k: v for k, v in pod.labels.items() if k != "conformance-house"})
    if what == "ip":
        return replace(pod, ips=(f"10.244.9.{draw(st.integers(1, 20))}",))
    if what == "ports":  # the named ports move or go
        return replace(pod, ports=(ContainerPort(8081, "TCP", "web"),) if draw(st.booleans()) else ())
    return None


@st.composite
def edits(draw):
    """A list of edits: ("cnp", doc) | ("uncnp", name) | ("pod", key, Pod|None) | ("ns", name, labels)."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["cnp", "cnp", "uncnp", "pod", "pod", "ns"]))
        if kind == "cnp":
            doc = draw(cnp(0))
            doc["metadata"]["name"] = draw(st.sampled_from(NAMES))
            out.append(("cnp", doc))
        elif kind == "uncnp":
            out.append(("uncnp", draw(st.sampled_from(NAMES))))
        elif kind == "pod":
            house = draw(st.sampled_from(HOUSES))
            name = draw(st.sampled_from(["harry-potter-0", "draco-malfoy-1", "cedric-diggory-0", "luna-lovegood-1"]))
            out.append(("pod", f"network-policy-conformance-{house}/{name}", draw))
        else:
            house = draw(st.sampled_from(HOUSES))
            out.append(("ns", f"network-policy-conformance-{house}", draw(st.sampled_from(HOUSES + ["none"]))))
    return out


class Recorder(Compiler):
    """A Compiler that remembers which pods it built."""

    def __init__(self, *args, **kwargs) -> None:
        self.built: set[str] = set()
        super().__init__(*args, **kwargs)

    def _build(self, key):
        self.built.add(key)
        return super()._build(key)


def _apply(state, change):
    """Make ``change`` in ``state``; returns (the daemon's feed for it, the CNP it replaced)
    or None when it does not apply."""
    old = None
    if change[0] == "cnp":
        obj = _decode(change[1])
        old = state.cnps.get(obj.name)
        state.cnps[obj.name] = obj
        return {("ClusterNetworkPolicy", obj.name): obj}, old
    if change[0] == "uncnp":
        old = state.cnps.pop(change[1], None)
        return {("ClusterNetworkPolicy", change[1]): None}, old
    if change[0] == "pod":
        key, draw = change[1], change[2]
        pod = state.pods.get(key)
        if pod is None:
            return None
        new = _pod_edit(pod, draw)
        if new is None:
            del state.pods[key]
        else:
            state.pods[key] = new
        return {("Pod", key): new}, None
    name, house = change[1], change[2]
    labels = {"kubernetes.io/metadata.name": name}
    if house != "none":
        labels["conformance-house"] = house
    state.namespaces[name] = Namespace(name, labels)
    return {("Namespace", name): state.namespaces[name]}, None


CNPS = st.integers(0, 2).flatmap(lambda n: st.tuples(*[cnp(i) for i in range(n)]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CNPS, np_policy, edits(), st.booleans())
def test_incremental_equals_a_full_compile_over_random_edits(docs, np, changes, batch):
    state = _cluster(list(docs) + ([np] if np else []))
    from enforcer.daemon.batch import BatchCompiler  # the daemon's: one rebuild per batch
    C = type("C", (Recorder, BatchCompiler), {}) if batch else Recorder
    comp = C(state, node_ips=NODE)
    comp.firewalls()
    for change in changes:
        before = comp.firewalls()
        comp.built = set()
        made = _apply(state, change)
        if made is None:
            continue
        feed, old = made
        if batch:
            changed, _ = comp.feed(feed)
        else:
            changed = comp.sync(state)
        fresh = compile_cluster(state, node_ips=NODE)
        now = comp.firewalls()
        assert now == fresh, change
        moved = {k for k in fresh if before.get(k) != fresh[k]} | (before.keys() - fresh.keys())
        assert moved <= changed, (change, moved - changed)
        if change[0] in ("cnp", "uncnp"):
            # Only the old and the new subject are built again.
            from enforcer.cnp.tiers import selects
            reach = {k for k, p in state.pods.items() for c in (old, state.cnps.get(_name(change)))
                     if c is not None and selects(c.subject, p, state.namespace(p.namespace))}
            assert comp.built <= reach, (change, comp.built - reach)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CNPS, np_policy, edits())
def test_all_edits_in_one_batch_equal_a_full_compile(docs, np, changes):
    """The daemon feeds a sync's changes as one batch (pods first, CNPs last)."""
    from enforcer.daemon.batch import BatchCompiler
    state = _cluster(list(docs) + ([np] if np else []))
    comp = BatchCompiler(state, node_ips=NODE)
    before = comp.firewalls()
    feed: dict = {}
    for change in changes:
        made = _apply(state, change)
        if made is not None:
            feed.update(made[0])
    changed, _ = comp.feed(feed)
    fresh = compile_cluster(state, node_ips=NODE)
    assert comp.firewalls() == fresh
    assert {k for k in fresh if before.get(k) != fresh[k]} | (before.keys() - fresh.keys()) <= changed


def _name(change) -> str:
    return change[1]["metadata"]["name"] if change[0] == "cnp" else change[1]


ADMIN_GRYFFINDOR = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "g"},
    "spec": {"tier": "Admin", "priority": 1,
             "subject": {"namespaces": {"matchLabels": {"conformance-house": "gryffindor"}}},
             "ingress": [{"action": "Deny", "from": [{"pods": {"namespaceSelector": {},
                                                               "podSelector": {"matchLabels": {"role": "bad"}}}}]}]}}


def test_a_change_nobody_reads_rebuilds_only_the_changed_pod():
    state = _cluster([ADMIN_GRYFFINDOR])
    comp = Recorder(state, node_ips=NODE)
    comp.built = set()
    comp.firewalls()
    assert len(comp.built) == 8
    luna = state.pods["network-policy-conformance-ravenclaw/luna-lovegood-0"]
    comp.built = set()
    comp.set_pod(replace(luna, labels={**luna.labels, "role": "good"}))
    assert comp.built == {luna.key}  # no selection of the CNP holds luna, before or after
    comp.built = set()
    changed = comp.set_pod(replace(luna, labels={**luna.labels, "role": "bad"}))
    # luna is a peer now: the two gryffindor pods (the subject) and luna herself
    assert comp.built == {luna.key, "network-policy-conformance-gryffindor/harry-potter-0",
                          "network-policy-conformance-gryffindor/harry-potter-1"}
    assert changed == {"network-policy-conformance-gryffindor/harry-potter-0",
                       "network-policy-conformance-gryffindor/harry-potter-1"}
    assert comp.firewalls() == compile_cluster(_with(state, luna.key, comp.pods[luna.key]), node_ips=NODE)
    # Still a peer, same address and ports: the sets do not move, nobody else is built.
    comp.built = set()
    bad = comp.pods[luna.key]
    assert comp.set_pod(replace(bad, labels={**bad.labels, "colour": "blue"})) == set()
    assert comp.built == {luna.key}
    # Same labels, a new address: the subject's sets move.
    comp.built = set()
    changed = comp.set_pod(replace(comp.pods[luna.key], ips=("10.244.4.9",)))
    assert changed == {luna.key, "network-policy-conformance-gryffindor/harry-potter-0",
                       "network-policy-conformance-gryffindor/harry-potter-1"}
    assert comp.firewalls() == compile_cluster(_with(state, luna.key, comp.pods[luna.key]), node_ips=NODE)


def test_a_cnp_edit_rebuilds_its_subject_only():
    state = _cluster([ADMIN_GRYFFINDOR])
    comp = Recorder(state, node_ips=NODE)
    comp.firewalls()
    comp.built = set()
    edited = copy.deepcopy(ADMIN_GRYFFINDOR)
    edited["spec"]["ingress"][0]["action"] = "Accept"
    changed = comp.set_cnp(_decode(edited))
    gryffindor = {"network-policy-conformance-gryffindor/harry-potter-0",
                  "network-policy-conformance-gryffindor/harry-potter-1"}
    assert comp.built == gryffindor and changed == gryffindor


def _with(state, key, pod):
    state.pods[key] = pod
    return state
