"""A rule swap (backends/nft_swap.py) as one raw netlink batch holds exactly what its text
through libnftables holds (root).

Every pair (installed, new) of firewalls with the same layout is applied both ways: the
installed table goes into two namespaces the same way (text), then the swap to the new
one as text (libnftables) into one and as the encoder's batch into the other. ``nft list
table`` and ``nft -j list table`` of the two must then be identical byte for byte: rules,
anonymous sets, elements and their comments, handles. Pairs: every pod of the examples,
the golden e2e cluster and the apply benchmark against a variant of itself (ports moved,
rules dropped, isolation flipped, elements in and out), consecutive steps of the
NetworkPolicy and ClusterNetworkPolicy conformance cases (where a pod's layout stays),
and random IR firewalls with random variants (hypothesis). Element deltas of interval
sets (now netlink too) the same way. Then the backend: the netlink swap needs no
libnftables, and its fallbacks. Namespaces ``npt-swp<pid>-*``, removed at the end.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import base, nft_edit, nft_netlink, nft_swap, nftables as nft
from enforcer.ir import TABLE, AddrPortSet, AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance
from tests.integration import nft_pair
from tests.integration.nft_pair import Pair, netlink_backend  # noqa: F401 (a fixture)
from tests.integration.nft_pair import firewalls_of
from tests.integration.test_nft_netlink import firewalls

pytestmark = pytest.mark.root

PREFIX = f"npt-swp{os.getpid()}"
TEXT, NL = nft_pair.names(PREFIX)
pair = nft_pair.fixture(PREFIX)


def install(pair: Pair, fw: PodFirewall) -> None:
    """``fw``'s table in both namespaces, the same way (a fresh table: the same history)."""
    for ns in (TEXT, NL):
        pair.text._run(ns, nft.full_transaction(fw))


def swapped_both_ways(pair: Pair, before: PodFirewall, after: PodFirewall) -> bool:
    """Swap ``before`` -> ``after`` both ways and compare (False: no swap for this pair;
    a pair seen before is not loaded again)."""
    swap = nft_swap.rules_transaction(before, after)
    if swap is None or before == after:
        return False
    key = (nft.render(before), nft.render(after))
    if key in pair.seen:
        return True
    pair.seen.add(key)
    install(pair, before)
    pair.text._run(TEXT, swap.text)
    msgs = nft_swap.encode_swap(swap.table, swap.comment, swap.blocks, swap.delta.changes, swap.set_types)
    pair.sock.commit(msgs)  # never Unsupported: everything the renderer emits is known
    pair.compare(f"{before.pod} swap\n{swap.text}")
    assert pair.text.verify(NL, after)
    return True


def delta_both_ways(pair: Pair, before: PodFirewall, after: PodFirewall) -> bool:
    """The element delta ``before`` -> ``after`` (same structure) both ways."""
    if base.plan(before, after) != "delta":
        return False
    d = nft.delta(before, after)
    install(pair, before)
    pair.text._run(TEXT, d.commands())
    pair.sock.commit(nft_swap.encode_elements(TABLE, d.changes))
    pair.compare(f"{before.pod} delta\n{d.commands()}")
    assert pair.text.verify(NL, after)
    return True


# ---------------------------------------------------------------------------------------
# variants: the same layout (sets by name and kind, chains), other rules and elements

def _ports(ports: tuple[PortMatch, ...], rnd: random.Random) -> tuple[PortMatch, ...]:
    if not ports or rnd.random() < 0.2:
        return (PortMatch(rnd.choice(["TCP", "UDP", "SCTP"]), rnd.choice([53, 80, 8080])),)
    return tuple(p if p.first is None or p.first >= 65000 else dataclasses.replace(
        p, first=p.first + 1, last=None if p.last is None else max(p.last, p.first + 1)) for p in ports)


def _direction(d: DirectionPolicy, rnd: random.Random) -> DirectionPolicy:
    rules = [dataclasses.replace(r, ports=_ports(r.ports, rnd)) if r.addr_ports is None else r for r in d.rules]
    if len(rules) > 1 and rnd.random() < 0.5:
        del rules[rnd.randrange(len(rules))]
    if len(rules) > 1 and rnd.random() < 0.3:
        rules.reverse()
    tiers = {t: tuple(dataclasses.replace(r, ports=_ports(r.ports, rnd)) if r.addr_ports is None else r
                      for r in getattr(d, t)) for t in ("admin", "baseline")}
    isolated = d.isolated if rnd.random() < 0.8 else not d.isolated
    return dataclasses.replace(d, isolated=isolated, rules=tuple(rules), **tiers)


def _elements(s, rnd: random.Random):
    def fresh(fam: int, k: int) -> str:
        return f"10.77.{k // 250}.{k % 250 + 1}/32" if fam == 4 else f"fd00:77::{k + 1:x}/128"

    out = {}
    for fam, items in ((4, s.v4), (6, s.v6)):
        keep = [e for e in items if rnd.random() < 0.7]
        if isinstance(s, AddrPortSet):
            keep += [(fresh(fam, k).split("/")[0], "TCP", 1000 + k) for k in range(rnd.randint(0, 3))]
        elif s.interval:
            net = ipaddress.ip_network("203.0.113.0/24" if fam == 4 else "fd77::/64")
            if not any(net.overlaps(ipaddress.ip_network(e)) for e in keep) and rnd.random() < 0.5:
                keep.append(str(net))
        else:
            keep += [fresh(fam, k) for k in range(rnd.randint(0, 3))]
        out[f"v{fam}"] = tuple(sorted(set(keep)))
    return dataclasses.replace(s, **out)


def variant(fw: PodFirewall, seed: int, rules: bool = True) -> PodFirewall:
    """Another firewall of the same layout (``rules``: its rules change too)."""
    rnd = random.Random(seed)
    sets = tuple(_elements(s, rnd) for s in fw.sets)
    if not rules:
        return dataclasses.replace(fw, sets=sets)
    return dataclasses.replace(fw, ingress=_direction(fw.ingress, rnd), egress=_direction(fw.egress, rnd), sets=sets)


# ---------------------------------------------------------------------------------------
# what the renderer emits for real clusters, and their variants

@nft_pair.each_example
def test_examples_and_golden_cluster(pair, paths):
    fws = nft_pair.example_firewalls(paths)
    swapped = 0
    for i, fw in enumerate(fws):
        for seed in (i, i + 1000):
            swapped += swapped_both_ways(pair, fw, variant(fw, seed))
            swapped_both_ways(pair, variant(fw, seed), fw)
        delta_both_ways(pair, fw, variant(fw, i, rules=False))
    assert swapped


def test_conformance_steps(pair, tmp_path):
    """A pod's firewall from one step of a case to the next: the changes a user makes."""
    from tests.conformance.cases import load_cases

    swapped = 0
    for case in load_cases():
        prev: dict = {}
        for i, step in enumerate(case.steps):
            now = {fw.pod: fw for fw in firewalls_of(step.write(tmp_path, f"{case.id}-{i}"))}
            for pod, fw in now.items():
                if pod in prev:
                    swapped += swapped_both_ways(pair, prev[pod], fw)
            prev = now
    assert swapped > 20


def test_cluster_network_policy_conformance_steps(pair, tmp_path):
    from tests.conformance.cnp.cases import load_cases

    swapped = tiered = 0
    for case in load_cases():
        prev: dict = {}
        for i, step in enumerate(case.steps):
            path = tmp_path / f"{case.path.stem}-{i}.yaml"
            path.write_text(step.manifests_text())
            now = {fw.pod: fw for fw in firewalls_of(path)}
            for pod, fw in now.items():
                if pod in prev and swapped_both_ways(pair, prev[pod], fw):
                    swapped += 1
                    tiered += any(d.admin or d.baseline for d in (fw.ingress, fw.egress))
            prev = now
    assert swapped > 5 and tiered > 5


def test_benchmark_firewalls_and_large_sets(pair):
    from benchmarks.bench_apply import firewall

    for i in range(0, 110, 11):
        fw = firewall(i, 110, 20, 50)
        assert swapped_both_ways(pair, fw, variant(fw, i))
        assert delta_both_ways(pair, fw, variant(fw, i, rules=False))
    # 12,000 hosts, 6,000 of them out and 6,000 in: element messages split (64 KiB each)
    hosts = [f"10.{100 + i // 250}.{i % 250}.1/32" for i in range(18000)]
    rule = AllowRule(Provenance("x/big", "ingress", 0), peers="in0", ports=(PortMatch("TCP", 80),))

    def big(lo: int, hi: int, port: int) -> PodFirewall:
        s = AddrSet("in0", v4=tuple(hosts[lo:hi]), notes=tuple((h, f"ns/pod-{h}") for h in hosts[lo:hi]))
        r = dataclasses.replace(rule, ports=(PortMatch("TCP", port),))
        return PodFirewall("x/big", ingress=DirectionPolicy(True, ("x/big",), (r,)), sets=(s,))

    swap = nft_swap.rules_transaction(big(0, 12000, 80), big(6000, 18000, 81))
    msgs = nft_swap.encode_swap(swap.table, swap.comment, swap.blocks, swap.delta.changes, swap.set_types)
    assert sum(m.kind == nft_netlink.DELSETELEM for m in msgs) > 1 and sum(m.kind == nft_netlink.NEWSETELEM
                                                                            for m in msgs) > 1
    assert swapped_both_ways(pair, big(0, 12000, 80), big(6000, 18000, 81))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(fw=firewalls(), seed=st.integers(0, 2**16))
def test_random_ir_firewalls(pair, fw, seed):
    swapped_both_ways(pair, fw, variant(fw, seed))
    delta_both_ways(pair, fw, variant(fw, seed, rules=False))


# ---------------------------------------------------------------------------------------
# the backend's "netlink" method: swaps and interval deltas without libnftables, fallbacks

def _fw(port: int = 80, nets: tuple[str, ...] = ("10.9.0.0/16",), pod: str = "x/a") -> PodFirewall:
    s = AddrSet("in0", v4=("10.0.0.2/32",), v6=("fd00::2/128",))
    n = AddrSet("nb", v4=nets, interval=True)
    r = AllowRule(Provenance("x/p", "ingress", 0), peers="in0", ports=(PortMatch("TCP", port), PortMatch("TCP", 443)))
    q = AllowRule(Provenance("x/q", "egress", 0), peers="nb", ports=(PortMatch("UDP", port),))
    return PodFirewall(pod, ingress=DirectionPolicy(True, ("x/p",), (r,)),
                       egress=DirectionPolicy(True, ("x/q",), (q,)), sets=(s, n))


def test_netlink_method_swaps_rules_and_interval_deltas_without_libnftables(pair, netlink_backend):
    b = netlink_backend
    a, c, d = _fw(80), _fw(81, ("10.9.0.0/17", "10.20.0.0/16")), _fw(81, ("10.9.0.0/17",))
    assert b.apply(NL, a).kind == "full"
    assert b.apply(NL, c, a) == base.ApplyResult("full", 2, 1, "")  # the swap: only the elements that moved
    assert b.apply(NL, d, c) == base.ApplyResult("delta", 0, 1, "")
    assert not b._get_runner()._ctxs._held  # no libnftables context was needed
    assert b.verify(NL, d)


@pytest.fixture
def no_edits(monkeypatch):
    """The flush swap only (backends/nft_edit.py would change the rules first)."""
    monkeypatch.setattr(nft_edit, "apply", lambda sock, swap, known: None)


def test_a_swap_the_encoder_does_not_know_goes_as_text(pair, netlink_backend, monkeypatch, no_edits):
    def unknown(*a):
        raise nft_netlink.Unsupported("something new")

    monkeypatch.setattr(nft_swap, "encode_swap", unknown)
    netlink_backend.apply(NL, _fw(80, pod="x/t"))
    assert netlink_backend.apply(NL, _fw(82, pod="x/t"), _fw(80, pod="x/t")).note == ""
    assert netlink_backend.verify(NL, _fw(82, pod="x/t"))


def test_a_swap_the_kernel_refuses_is_retried_as_text(pair, netlink_backend, monkeypatch, no_edits):
    real = nft_swap.encode_swap

    def with_a_bad_jump(table, comment, blocks, changes, set_types):
        bad = [["\tchain input {", "\t\tcounter jump nowhere comment \"bad\"", "\t}"]]
        return real(table, comment, blocks, changes, set_types) + real(table, comment, bad, (), set_types)[-1:]

    monkeypatch.setattr(nft_swap, "encode_swap", with_a_bad_jump)
    netlink_backend.apply(NL, _fw(80, pod="x/r"))
    result = netlink_backend.apply(NL, _fw(83, pod="x/r"), _fw(80, pod="x/r"))
    assert result.kind == "full" and result.note.startswith(
        "netlink batch refused, applied as text: Error: add rule inet netpol input counter jump nowhere")
    assert netlink_backend.verify(NL, _fw(83, pod="x/r"))


def test_a_swap_refused_both_ways_replaces_the_table(pair, netlink_backend):
    """The kernel's sets are not what ``previous`` says (drift): the element delta of the
    swap is refused as a batch and as text; the table is replaced whole."""
    netlink_backend.apply(NL, _fw(80, pod="x/d"))
    pair.text._run(NL, f"flush set inet {TABLE} nb_4\n")  # drift: an element gone
    result = netlink_backend.apply(NL, _fw(84, ("10.20.0.0/16",), pod="x/d"), _fw(80, pod="x/d"))
    assert result.kind == "full" and result.note.startswith("rules swap refused, replaced the table")
    assert netlink_backend.verify(NL, _fw(84, ("10.20.0.0/16",), pod="x/d"))


def test_an_interval_delta_the_kernel_refuses_replaces_the_table(pair, netlink_backend):
    netlink_backend.apply(NL, _fw(80, pod="x/i"))
    pair.text._run(NL, f"flush set inet {TABLE} nb_4\n")
    result = netlink_backend.apply(NL, _fw(80, ("10.20.0.0/16",), pod="x/i"), _fw(80, pod="x/i"))
    assert result.kind == "full" and result.note.startswith("delta refused, replaced the table")
    assert netlink_backend.verify(NL, _fw(80, ("10.20.0.0/16",), pod="x/i"))
