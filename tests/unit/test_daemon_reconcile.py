"""The reconciler against backends.base.FakeBackend, and pod placement (no root)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from backends.base import FakeBackend
from enforcer.compiler.compile import Compiler
from enforcer.daemon.discovery import Discovery, place
from enforcer.daemon.reconcile import Reconciler, deny_only, isolation_only
from enforcer.daemon.runner import FakeClock
from enforcer.errors import ApplyError, NetnsError
from enforcer.model import (Cluster, ContainerPort, LabelSelector, Namespace, NetworkPolicy, Peer,
                            Pod, Rule)

NODE = ("10.244.0.1",)


def cluster(policies=(), pods=None) -> Cluster:
    pods = pods or [Pod("x", n, {"app": n}, (f"10.244.0.{i + 2}",), (ContainerPort(80),))
                    for i, n in enumerate("abc")]
    return Cluster({"x": Namespace("x", {"kubernetes.io/metadata.name": "x"})},
                   {p.key: p for p in pods}, {p.key: p for p in policies})


def allow_from(peer: str, name="p", target="b") -> NetworkPolicy:
    return NetworkPolicy("x", name, LabelSelector((("app", target),)), frozenset({"Ingress"}),
                         ingress=(Rule((Peer(pod_selector=LabelSelector((("app", peer),))),)),))


class World:
    """Namespaces that exist (name -> inode) and a fake backend."""

    def __init__(self, names=("ns-a", "ns-b", "ns-c")):
        self.inodes = {n: i + 100 for i, n in enumerate(names)}
        self.backend = FakeBackend()
        self.clock = FakeClock()

    def reconciler(self, **kw) -> Reconciler:
        return Reconciler(self.backend, clock=self.clock, inode=self.inodes.get,
                          exists=lambda n: n in self.inodes, **kw)


LOCAL = {"x/a": "ns-a", "x/b": "ns-b", "x/c": "ns-c"}


def test_first_contact_swaps_and_later_changes_are_deltas():
    w = World()
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    out = r.converge(LOCAL, comp.firewall)
    assert out.applied == {"ns-a": "full", "ns-b": "full", "ns-c": "full"}
    assert w.backend.installed["ns-b"] == comp.firewall("x/b")
    # Same policy, other peer: only set elements change.
    changed = comp.sync(cluster([allow_from("c")]))
    out = r.converge(LOCAL, comp.firewall, changed)
    assert out.applied == {"ns-b": "delta"}
    assert w.backend.installed["ns-b"] == comp.firewall("x/b")
    # Nothing changed: nothing applied, not even with every pod a candidate.
    assert r.converge(LOCAL, comp.firewall).applied == {}


def test_start_adopts_exactly_matching_tables_and_never_flushes():
    w = World()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    # A previous daemon left ns-a exactly right and ns-b with an older policy.
    w.backend.installed["ns-a"] = comp.firewall("x/a")
    old = Compiler(cluster([allow_from("c")]), node_ips=NODE).firewall("x/b")
    w.backend.installed["ns-b"] = old
    removed = []
    w.backend.remove = removed.append
    r = w.reconciler()
    out = r.converge(LOCAL, comp.firewall)
    # ns-b: the fake plans against what it holds (a delta); the kernel backends are given
    # previous=None and swap the whole table in one transaction. Never a remove first.
    assert out.applied == {"ns-a": "adopted", "ns-b": "delta", "ns-c": "full"}
    assert removed == []
    assert w.backend.installed["ns-b"] == comp.firewall("x/b")


def test_a_backend_that_learns_is_told_what_each_namespace_holds_at_first_contact_only():
    w = World()
    told = []
    w.backend.learn = lambda ns, fw: told.append((ns, fw))
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    w.backend.installed["ns-a"] = comp.firewall("x/a")  # adopted: learnt too
    r = w.reconciler()
    r.converge(LOCAL, comp.firewall)
    assert sorted(told) == sorted((ns, comp.firewall(k)) for k, ns in LOCAL.items())
    told.clear()
    r.converge(LOCAL, comp.firewall, comp.sync(cluster([allow_from("c")])))
    assert told == []  # later changes: the backend remembers on its own


def test_new_namespaces_are_applied_first_isolated_first():
    w = World(("ns-a", "ns-b", "ns-c", "ns-d"))
    pods = [Pod("x", n, {"app": n}, (f"10.244.0.{i + 2}",)) for i, n in enumerate("abcd")]
    comp = Compiler(cluster([allow_from("a", target="d")], pods), node_ips=NODE)
    r = w.reconciler()
    r.converge({"x/a": "ns-a", "x/b": "ns-b"}, comp.firewall)
    comp.sync(cluster([allow_from("c", target="d"), allow_from("c", "q", "a")], pods))
    w.backend.calls.clear()
    r.converge({"x/a": "ns-a", "x/b": "ns-b", "x/c": "ns-c", "x/d": "ns-d"}, comp.firewall, {"x/a"})
    order = [ns for _, ns in w.backend.calls]
    assert order[0] == "ns-d"  # new and isolated
    assert order[1] == "ns-c"  # new
    assert order[2] == "ns-a"  # known


def has_allows(netns, fw) -> bool:
    """FakeBackend.refuse: refuse firewalls that have allow rules (what a backend error looks like)."""
    return bool(fw.ingress.rules or fw.egress.rules)


def test_refused_isolated_firewall_falls_back_to_deny_only_and_retries():
    w = World()
    w.backend.refuse = has_allows
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    out = r.converge(LOCAL, comp.firewall)
    assert out.applied["ns-b"] == "deny-only"
    installed = w.backend.installed["ns-b"]
    assert installed.ingress.isolated and not installed.ingress.rules  # closed, not open
    assert "ns-b" in out.errors and r.failures["ns-b"].count == 1
    # Retried after its backoff, not before.
    assert r.converge(LOCAL, comp.firewall).applied == {}
    w.clock.advance(r.next_retry() - w.clock.now)
    w.backend.refuse = None  # the backend accepts it now
    out = r.converge(LOCAL, comp.firewall)
    assert out.applied == {"ns-b": "full"}
    assert w.backend.installed["ns-b"] == comp.firewall("x/b")
    assert r.failures == {}


def test_failure_of_an_open_pod_is_retried_with_growing_backoff():
    w = World()
    w.backend.fail_on = {"ns-a"}
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    delays = []
    for attempt in range(4):
        out = r.converge(LOCAL, comp.firewall)
        assert "ns-a" in out.errors  # tried again each time its backoff is over, and failed
        assert out.applied == ({"ns-b": "full", "ns-c": "full"} if attempt == 0 else {})
        delays.append(round(r.next_retry() - w.clock.now, 2))
        w.clock.advance(r.next_retry() - w.clock.now)
    assert delays == [0.1, 0.2, 0.4, 0.8]
    assert "ns-a" not in w.backend.installed
    assert w.backend.installed["ns-b"] == comp.firewall("x/b")  # others proceed


def test_tightened_policy_that_cannot_be_installed_does_not_keep_old_allows():
    w = World()
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    r.converge(LOCAL, comp.firewall)
    w.backend.refuse = has_allows
    changed = comp.sync(cluster([allow_from("c")]))
    out = r.converge(LOCAL, comp.firewall, changed)
    assert out.applied == {"ns-b": "deny-only"}
    assert not w.backend.installed["ns-b"].ingress.rules


class VanishingBackend(FakeBackend):
    def __init__(self, world):
        super().__init__()
        self.world = world

    def apply(self, netns, fw, previous=None):
        self.world.inodes.pop(netns, None)  # removed while we apply
        raise NetnsError(f"network namespace {netns} does not exist")


def test_namespace_vanishing_mid_apply_is_not_an_error():
    w = World()
    w.backend = VanishingBackend(w)
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    out = r.converge({"x/b": "ns-b"}, comp.firewall)
    assert out.errors == {} and r.failures == {} and "ns-b" not in r.managed


def test_namespace_that_loses_its_pod_is_released_with_rules_in_place():
    w = World()
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    r.converge(LOCAL, comp.firewall)
    out = r.converge({"x/a": "ns-a", "x/c": "ns-c"}, comp.firewall)
    assert out.released == ["ns-b"]
    assert "ns-b" in w.backend.installed  # fail-static: rules stay
    assert out.gone_ips == {"10.244.0.3"}
    # A re-created namespace (same name, new inode) is first contact again.
    w.inodes["ns-c"] = 999
    out = r.converge({"x/a": "ns-a", "x/c": "ns-c"}, comp.firewall)
    assert out.applied == {"ns-c": "adopted"}  # FakeBackend keeps it by name


def test_repair_restores_and_counts_drift():
    w = World()
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    r.converge(LOCAL, comp.firewall)
    assert r.repair().repaired == []
    del w.backend.installed["ns-b"]  # "nft flush ruleset" in the pod
    w.backend.installed["ns-c"] = deny_only(comp.firewall("x/b"))  # someone changed it
    out = r.repair()
    assert sorted(out.repaired) == ["ns-b", "ns-c"]
    assert w.backend.installed["ns-b"] == comp.firewall("x/b")
    assert w.backend.installed["ns-c"] == comp.firewall("x/c")
    del w.inodes["ns-a"]
    out = r.repair()
    assert out.vanished == ["ns-a"] and "ns-a" not in r.managed


def test_isolate_only_installs_deny_only_for_isolated_unmanaged_pods():
    w = World()
    r = w.reconciler()
    c = cluster([allow_from("a")])
    out = r.isolate_only(LOCAL, lambda key: isolation_only(c, key, NODE))
    assert out.applied == {"ns-b": "deny-only"}
    fw = w.backend.installed["ns-b"]
    assert fw.ingress.isolated and fw.ingress.isolated_by == ("x/p",) and not fw.ingress.rules
    assert not fw.egress.isolated
    # The real firewall replaces it at the next converge.
    comp = Compiler(c, node_ips=NODE)
    out = r.converge(LOCAL, comp.firewall)
    assert out.applied["ns-b"] == "full" and w.backend.installed["ns-b"] == comp.firewall("x/b")


def test_isolation_only_matches_the_compiler():
    pols = [allow_from("a"), NetworkPolicy("x", "eg", LabelSelector(), frozenset({"Egress"}))]
    c = cluster(pols)
    comp = Compiler(c, node_ips=NODE)
    for key in c.pods:
        want = comp.firewall(key)
        got = isolation_only(c, key, NODE)
        assert (got.ingress.isolated, got.ingress.isolated_by) == (want.ingress.isolated, want.ingress.isolated_by)
        assert (got.egress.isolated, got.egress.isolated_by) == (want.egress.isolated, want.egress.isolated_by)
    assert isolation_only(c, "x/nope") is None


def test_parallel_workers_give_the_same_result():
    w1, w2 = World(), World()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    r1, r2 = w1.reconciler(), w2.reconciler(workers=4)
    assert r1.converge(LOCAL, comp.firewall).applied == r2.converge(LOCAL, comp.firewall).applied
    assert w1.backend.installed == w2.backend.installed
    r2.close()


def test_remove_all_for_cleanup_on_exit():
    w = World()
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    r.converge(LOCAL, comp.firewall)
    assert r.remove_all() == {}
    assert w.backend.installed == {} and r.managed == {}


def test_pod_without_ip_or_unknown_pod_is_skipped():
    w = World()
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    out = r.converge({"x/nope": "ns-a"}, comp.firewall)
    assert out.applied == {} and out.errors == {}


# ----------------------------------------------------------------------- placement


def test_place_maps_pods_by_address_and_refuses_to_guess():
    index = {"10.0.0.2": {"ns-a"}, "10.0.0.3": {"ns-b", "ns-x"}, "10.0.0.4": {"ns-c"},
             "10.0.0.5": {"ns-c"}, "fd00::2": {"ns-a"}}
    pods = {"x/a": ("10.0.0.2", "fd00::0002"), "x/b": ("10.0.0.3",), "x/c": ("10.0.0.4",),
            "x/d": ("10.0.0.5",), "x/remote": ("10.9.9.9",), "x/noip": ()}
    p = place(pods, index)
    assert p.local == {"x/a": "ns-a"}
    assert len(p.conflicts) == 2
    assert any("x/b" in c and "several network namespaces" in c for c in p.conflicts)
    assert any("ns-c" in c and "x/c" in c and "x/d" in c for c in p.conflicts)


def test_discovery_reads_only_new_or_recreated_namespaces():
    addrs = {"n1": frozenset({"10.0.0.2"}), "n2": frozenset({"10.0.0.3"}), "other": frozenset({"10.0.0.9"})}
    inodes = {"n1": 1, "n2": 2, "other": 3}
    reads = []

    def reader(name):
        reads.append(name)
        if name not in addrs:
            raise NetnsError("gone")
        return addrs[name]

    d = Discovery("n", reader=reader, lister=lambda p: sorted(n for n in inodes if n.startswith(p)),
                  inode=inodes.get)
    assert d.scan()
    assert reads == ["n1", "n2"]  # the prefix keeps "other" out
    assert d.index() == {"10.0.0.2": {"n1"}, "10.0.0.3": {"n2"}}
    reads.clear()
    assert not d.scan() and reads == []
    inodes["n2"] = 22  # re-created
    addrs["n2"] = frozenset({"10.0.0.4"})
    assert d.scan() and reads == ["n2"]
    assert d.index() == {"10.0.0.2": {"n1"}, "10.0.0.4": {"n2"}}
    del inodes["n1"]
    assert d.scan() and set(d.spaces) == {"n2"}
    assert not d.refresh("other")  # outside the prefix: never read


def test_repair_reads_back_only_namespaces_whose_generation_moved():
    w = World()
    gens = {"ns-a": 5, "ns-b": 7, "ns-c": 9}
    r = w.reconciler(generation=gens.get)
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    r.converge(LOCAL, comp.firewall)
    verified = []
    real = w.backend.verify
    w.backend.verify = lambda ns, fw: (verified.append(ns), real(ns, fw))[1]
    r.repair()
    assert sorted(verified) == ["ns-a", "ns-b", "ns-c"]  # first round: all read back
    verified.clear()
    r.repair()
    assert verified == []  # nothing committed anywhere since
    del w.backend.installed["ns-b"]  # someone flushed ns-b: its generation moves
    gens["ns-b"] += 1
    out = r.repair()
    assert verified == ["ns-b"] and out.repaired == ["ns-b"]
    verified.clear()
    gens["ns-b"] += 1  # our own restore was a transaction too
    r.repair()
    assert verified == ["ns-b"]


def test_our_own_transaction_on_a_clean_namespace_needs_no_read_back():
    """Issue 15: after a change, repair does not list every table again when the only
    transaction since the last clean read-back was the change itself."""
    w = World()
    gens = {"ns-a": 5, "ns-b": 7, "ns-c": 9}
    real_apply, real_verify = w.backend.apply, w.backend.verify

    def apply(ns, fw, previous=None):  # every transaction moves the generation by one
        result = real_apply(ns, fw, previous)
        if result.kind != "none":
            gens[ns] += 1
        return result

    w.backend.apply = apply
    verified = []
    w.backend.verify = lambda ns, fw: (verified.append(ns), real_verify(ns, fw))[1]
    r = w.reconciler(generation=gens.get)
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    w.backend.installed["ns-a"] = comp.firewall("x/a")  # adopted at its generation
    gens["ns-c"] += 5  # ns-c: someone else's transactions, but before our first contact
    r.converge(LOCAL, comp.firewall)
    verified.clear()
    r.repair()  # first contact read the generations: no read-back needed
    assert verified == []
    changed = comp.sync(cluster([allow_from("c")]))
    assert r.converge(LOCAL, comp.firewall, changed).applied == {"ns-b": "delta"}
    r.repair()
    assert verified == []  # ns-b moved by our delta alone
    changed = comp.sync(cluster([allow_from("a")]))
    gens["ns-b"] += 1  # someone else's transaction before ours: read back
    r.converge(LOCAL, comp.firewall, changed)
    r.repair()
    assert verified == ["ns-b"]
    verified.clear()
    changed = comp.sync(cluster([allow_from("c")]))
    r.converge(LOCAL, comp.firewall, changed)
    gens["ns-b"] += 1  # someone else's after ours
    r.repair()
    assert verified == ["ns-b"]
    verified.clear()
    for peer in "acac":  # several of ours in a row
        r.converge(LOCAL, comp.firewall, comp.sync(cluster([allow_from(peer)])))
    r.repair()
    assert verified == []


def test_first_contact_with_someone_elses_transaction_beside_ours_is_read_back():
    w = World()
    gens = {"ns-a": 5, "ns-b": 7, "ns-c": 9}
    real_apply = w.backend.apply

    def apply(ns, fw, previous=None):  # ours, and someone else's right after it in ns-b
        result = real_apply(ns, fw, previous)
        gens[ns] += 2 if ns == "ns-b" else 1
        return result

    w.backend.apply = apply
    verified = []
    real_verify = w.backend.verify
    w.backend.verify = lambda ns, fw: (verified.append(ns), real_verify(ns, fw))[1]
    r = w.reconciler(generation=gens.get)
    r.converge(LOCAL, Compiler(cluster([allow_from("a")]), node_ips=NODE).firewall)
    verified.clear()
    r.repair()
    assert verified == ["ns-b"]


def test_failed_repair_stays_failed_until_a_read_back_shows_our_rules():
    """Issue 20, finding 1: a repair that cannot restore the rules is not 'recovered' at
    the next converge just because the desired firewall equals the recorded one."""
    w = World()
    r = w.reconciler()
    comp = Compiler(cluster([allow_from("a")]), node_ips=NODE)
    r.converge(LOCAL, comp.firewall)
    del w.backend.installed["ns-b"]  # replaced by a table we cannot touch
    w.backend.fail_on = {"ns-b"}
    out = r.repair()
    assert "ns-b" in out.errors and "restoring them failed" in out.errors["ns-b"]
    for _ in range(5):
        w.clock.advance(r.next_retry() - w.clock.now)
        out = r.converge(LOCAL, comp.firewall)
        assert "ns-b" in r.failures and "ns-b" in out.errors
    # Apply "succeeds" but the read-back still is not ours: still failed.
    w.backend.fail_on = set()
    real_apply = w.backend.apply
    w.backend.apply = lambda ns, fw, prev=None: real_apply(ns, deny_only(fw), prev)
    w.clock.advance(r.next_retry() - w.clock.now)
    out = r.converge(LOCAL, comp.firewall)
    assert "ns-b" in r.failures and "not ours" in out.errors["ns-b"]
    w.backend.apply = real_apply
    w.clock.advance(r.next_retry() - w.clock.now)
    out = r.converge(LOCAL, comp.firewall)
    assert r.failures == {} and out.applied == {"ns-b": "full"}
    assert w.backend.installed["ns-b"] == comp.firewall("x/b")


def test_backend_reason_is_kept_in_the_message():
    from enforcer.daemon.reconcile import _message

    try:
        try:
            raise RuntimeError("Error: Could not process rule: Operation not permitted")
        except RuntimeError as e:
            raise ApplyError("nftables: applying failed; the previous rules stay in force:\n"
                             "Error: Could not process rule: Operation not permitted") from e
    except ApplyError as e:
        assert "Operation not permitted" in _message(e)
        assert _message(e, cause=True) == "Error: Could not process rule: Operation not permitted"
