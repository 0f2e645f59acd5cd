"""Whole pod tables as one raw netlink batch (backends/nft_netlink.py) hold exactly what
the text path holds (root).

Every firewall is loaded twice: as the text through libnftables into one namespace, as
the encoder's batch into another, with the same history in both. Then ``nft list table``
and ``nft -j list table`` of the two must be identical, byte for byte: the listing decodes
what the kernel holds (expressions, set types and flags, elements and their comments,
rule comments, handles), so equality proves the encoding. Firewalls: every pod of the
bundled examples and of the golden e2e cluster, every step of the NetworkPolicy and
ClusterNetworkPolicy conformance cases, the apply benchmark's, random IR firewalls and
random clusters (hypothesis). Then the backend's "netlink" method: its fallbacks, its
errors. Namespaces ``npt-nl<pid>-*``, removed at the end.
"""
from __future__ import annotations

import ipaddress
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import nft_netlink, nft_runners, nftables as nft
from enforcer import netns
from enforcer.errors import ApplyError
from tests.integration import nft_pair
from tests.integration.nft_pair import Pair, firewalls_of, listing, netlink_backend  # noqa: F401 (a fixture)
from enforcer.ir import (TABLE, AddrPortSet, AddrSet, AllowRule, DirectionPolicy, PodFirewall,
                         PortMatch, Provenance, TierRule)

pytestmark = pytest.mark.root

PREFIX = f"npt-nl{os.getpid()}"
TEXT, NL = nft_pair.names(PREFIX)
pair = nft_pair.fixture(PREFIX)


def same_both_ways(pair: Pair, fw: PodFirewall) -> bool:
    """Load ``fw`` both ways and compare the listings (False: seen before, not loaded)."""
    rendered = nft.render(fw)
    if rendered in pair.seen:
        return False
    pair.seen.add(rendered)
    pair.text.apply(TEXT, fw)
    msgs = nft_netlink.encode_table(TABLE, nft.table_comment(fw), nft.table_blocks(fw))  # never Unsupported
    pair.sock.commit(msgs)
    pair.compare(f"{fw.pod}\n{rendered}")
    assert pair.text.verify(NL, fw)
    return True


# ---------------------------------------------------------------------------------------
# what the renderer emits for real clusters

@nft_pair.each_example
def test_examples_and_golden_cluster(pair, paths):
    fws = nft_pair.example_firewalls(paths)
    assert fws
    for fw in fws:
        same_both_ways(pair, fw)


def test_conformance_cases(pair, tmp_path):
    from tests.conformance.cases import load_cases

    loaded = 0
    for case in load_cases():
        for i, step in enumerate(case.steps):
            for fw in firewalls_of(step.write(tmp_path, f"{case.id}-{i}")):
                loaded += same_both_ways(pair, fw)
    assert loaded > 50


def test_cluster_network_policy_conformance_cases(pair, tmp_path):
    from tests.conformance.cnp.cases import load_cases

    loaded = tiered = 0
    for case in load_cases():
        for i, step in enumerate(case.steps):
            path = tmp_path / f"{case.path.stem}-{i}.yaml"
            path.write_text(step.manifests_text())
            for fw in firewalls_of(path):
                loaded += same_both_ways(pair, fw)
                tiered += any(d.admin or d.baseline for d in (fw.ingress, fw.egress))
    assert loaded > 20 and tiered > 20


def test_benchmark_firewalls_and_large_sets(pair):
    from benchmarks.bench_apply import firewall

    for i in range(0, 110, 7):
        assert same_both_ways(pair, firewall(i, 110, 20, 50))
    # 6,000 commented hosts: their elements do not fit one netlink attribute (64 KiB)
    hosts = tuple(f"10.{100 + i // 250}.{i % 250}.1/32" for i in range(6000))
    big = AddrSet("in0", v4=hosts, v6=("fd00::1/128",), notes=tuple((h, f"ns{i % 7}/pod-{i}") for i, h in enumerate(hosts)))
    rule = AllowRule(Provenance("x/big", "ingress", 0), peers="in0", ports=(PortMatch("TCP", 80),))
    fw = PodFirewall("x/big", ingress=DirectionPolicy(True, ("x/big",), (rule,)), sets=(big,))
    assert len([m for m in nft_netlink.encode_table(TABLE, "pod x/big", nft.table_blocks(fw))
                if m.kind == nft_netlink.NEWSETELEM]) > 2
    assert same_both_ways(pair, fw)


# ---------------------------------------------------------------------------------------
# random firewalls: the IR's whole range, and random clusters

PROTOS = ("TCP", "UDP", "SCTP")
port = st.sampled_from([0, 1, 53, 79, 80, 81, 443, 1000, 5000, 65534, 65535]) | st.integers(0, 65535)


@st.composite
def port_matches(draw):
    out = []
    for _ in range(draw(st.integers(0, 4))):
        proto = draw(st.sampled_from(PROTOS))
        kind = draw(st.sampled_from(["all", "one", "range"]))
        if kind == "all":
            out.append(PortMatch(proto))
        else:
            a = draw(port)
            b = draw(st.integers(a, 65535)) if kind == "range" else None
            out.append(PortMatch(proto, a, b))
    return tuple(out)


@st.composite
def hosts(draw, fam: int):
    n = draw(st.integers(0, 6))
    if fam == 4:
        return tuple(sorted({f"10.{draw(st.integers(0, 3))}.{draw(st.integers(0, 255))}.{draw(st.integers(1, 254))}/32"
                             for _ in range(n)}))
    return tuple(sorted({f"fd00:{draw(st.integers(0, 3)):x}::{draw(st.integers(1, 0xFFFF)):x}/128" for _ in range(n)}))


@st.composite
def networks(draw, fam: int):
    nets = []
    for _ in range(draw(st.integers(0, 5))):
        if fam == 4:
            nets.append(ipaddress.IPv4Network((draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 32))), strict=False))
        else:  # in fd00::/8: nft prints ::/96 addresses as ::a.b.c.d, which render does not
            nets.append(ipaddress.IPv6Network((0xFD << 120 | draw(st.integers(0, 2**120 - 1)), draw(st.integers(8, 128))),
                                              strict=False))
    return tuple(str(n) for n in ipaddress.collapse_addresses(nets))


@st.composite
def firewalls(draw):
    sets, rules = [], {"ingress": [], "egress": []}
    for k in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["hosts", "nets", "ports"]))
        name = f"s{k}"
        if kind == "hosts":
            v4, v6 = draw(hosts(4)), draw(hosts(6))
            notes = tuple((h, draw(st.sampled_from(["a/b", "ns-1/pod.x", "ipBlock 10.0.0.0/8 except 10.1.0.0/16, 10.2.0.0/16"])))
                          for h in v4 + v6 if draw(st.booleans()))
            sets.append(AddrSet(name, v4=v4, v6=v6, notes=notes))
        elif kind == "nets":
            v4, v6 = draw(networks(4)), draw(networks(6))
            sets.append(AddrSet(name, v4=v4, v6=v6, interval=True,
                                notes=tuple((n, f"ipBlock {n}") for n in v4 + v6 if draw(st.booleans()))))
        else:
            def elems(fam):
                return tuple(sorted({(h.split("/")[0], draw(st.sampled_from(PROTOS)), draw(port))
                                     for h in draw(hosts(fam))}))
            v4, v6 = elems(4), elems(6)
            sets.append(AddrPortSet(name, v4=v4, v6=v6, notes=tuple((e, "z/c") for e in v4[:2])))
        direction = draw(st.sampled_from(["ingress", "egress"]))
        prov = Provenance(f"ns/p{k}", direction, draw(st.integers(0, 3)))
        if kind == "ports":
            rules[direction].append(AllowRule(prov, addr_ports=name))
        else:
            rules[direction].append(AllowRule(prov, peers=name, ports=draw(port_matches())))
    for direction in rules:
        for k in range(draw(st.integers(0, 2))):  # peers None: any address
            rules[direction].append(AllowRule(Provenance("ns/any", direction, k), ports=draw(port_matches())))
    tiers = {d: ([], []) for d in rules}
    if draw(st.booleans()):
        for d in rules:
            for tier, out in (("Admin", tiers[d][0]), ("Baseline", tiers[d][1])):
                for i in range(draw(st.integers(0, 3))):
                    peer = draw(st.sampled_from([None] + [s.name for s in sets if not isinstance(s, AddrPortSet)]))
                    out.append(TierRule(tier, f"cnp{i}", i, d, i, draw(st.sampled_from(["Accept", "Deny", "Pass"])),
                                        draw(st.sampled_from(["", "rule-x"])), peers=peer, ports=draw(port_matches())))
    node = draw(st.lists(st.sampled_from(["10.244.0.1", "fd00:244::1", "192.168.7.1"]), unique=True, max_size=2))
    pols = {d: DirectionPolicy(draw(st.booleans()), ("ns/p0",), tuple(rules[d]),
                               tuple(tiers[d][0]), tuple(tiers[d][1])) for d in rules}
    return PodFirewall(f"ns{draw(st.integers(0, 9))}/pod-{draw(st.integers(0, 99))}", ("10.0.0.9",), tuple(node),
                       pols["ingress"], pols["egress"], tuple(sets))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(fw=firewalls())
def test_random_ir_firewalls(pair, fw):
    same_both_ways(pair, fw)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(state=st.data())
def test_random_clusters(pair, tmp_path_factory, state):
    from tests.integration.test_differential import states
    from tests.unit.test_cnp_property import BASE_TEXT, cnp

    path = tmp_path_factory.mktemp("random") / "state.yaml"
    path.write_text(yaml.safe_dump_all(state.draw(states())))
    for fw in firewalls_of(path):
        same_both_ways(pair, fw)
    cnps = [state.draw(cnp(i)) for i in range(state.draw(st.integers(1, 3)))]
    path.write_text(BASE_TEXT + "\n---\n" + yaml.safe_dump_all(cnps))
    for fw in firewalls_of(path):
        same_both_ways(pair, fw)


# ---------------------------------------------------------------------------------------
# the backend's "netlink" method


def _fw(pod: str = "x/a") -> PodFirewall:
    s = AddrSet("in0", v4=("10.0.0.2/32",), v6=("fd00::2/128",))
    r = AllowRule(Provenance("x/p", "ingress", 0), peers="in0", ports=(PortMatch("TCP", 80), PortMatch("TCP", 443)))
    return PodFirewall(pod, ingress=DirectionPolicy(True, ("x/p",), (r,)), sets=(s,))


def test_netlink_method_loads_tables_without_libnftables(pair, netlink_backend):
    b = netlink_backend
    assert (b.method, b.tables) == ("libnft", "netlink")
    fws = [_fw(f"x/p{i}") for i in range(3)]
    results = b.apply_many([(NL, fw, None) for fw in fws])
    assert [(r.kind, r.note) for r in results] == [("full", "")] * 3
    assert not b._get_runner()._ctxs._held  # no libnftables context was needed
    assert b.verify(NL, fws[-1]) and b.apply(NL, fws[-1], fws[-1]).kind == "none"


def test_a_table_the_encoder_does_not_know_goes_as_text(pair, netlink_backend, monkeypatch):
    def unknown(*a):
        raise nft_netlink.Unsupported("something new")

    monkeypatch.setattr(nft_netlink, "encode_table", unknown)
    fw = _fw("x/text")
    assert netlink_backend.apply(NL, fw).note == ""
    assert netlink_backend.verify(NL, fw)


def test_a_batch_the_kernel_refuses_is_retried_as_text(pair, netlink_backend, monkeypatch):
    real = nft_netlink.encode_table

    def with_a_bad_jump(table, comment, blocks):
        msgs = real(table, comment, blocks)
        bad = real(table, comment, [["\tchain input {", "\t\tcounter jump nowhere comment \"bad\"", "\t}"]])[-1]
        return msgs + [bad]

    monkeypatch.setattr(nft_netlink, "encode_table", with_a_bad_jump)
    fw = _fw("x/retried")
    result = netlink_backend.apply(NL, fw)
    assert result.note.startswith("netlink batch refused, applied as text: Error: add rule inet netpol input "
                                  "counter jump nowhere")
    assert netlink_backend.verify(NL, fw)


@pytest.mark.parametrize("ack_each", [False, True])
def test_refusals_name_the_message_and_change_nothing(pair, ack_each):
    with netns.entered(NL):
        sock = nft_netlink.TableSocket(ack_each=ack_each)
    before = listing(NL)
    text = nft.render(_fw("x/refused")).replace("counter drop comment", "counter jump nowhere comment")
    with pytest.raises(nft_netlink.Refused) as err:
        sock.commit(nft_netlink.encode_text(text))
    assert str(err.value).splitlines() == [  # each refused message, with the kernel's errno
        'Error: add rule inet netpol input ct state invalid counter jump nowhere comment "ingress invalid": '
        'No such file or directory',
        'add rule inet netpol input counter jump nowhere comment "ingress isolated by x/p": No such file or directory',
        'add rule inet netpol output ct state invalid counter jump nowhere comment "egress invalid": '
        'No such file or directory']
    assert listing(NL) == before
    sock.commit(nft_netlink.encode_text(nft.render(_fw("x/after"))))  # the socket still works
    assert pair.text.verify(NL, _fw("x/after"))
    sock.close()


def test_refused_both_ways_is_an_apply_error_and_keeps_the_rules(pair, netlink_backend):
    fw = _fw("x/kept")
    netlink_backend.apply(NL, fw)
    bad = AddrSet("in0", v4=("10.231.1.0/24", "10.231.1.128/25"), interval=True)  # pipapo refuses the overlap
    r = AllowRule(Provenance("x/p", "ingress", 0), peers="in0")
    worse = PodFirewall("x/kept", egress=DirectionPolicy(True, ("x/p",), (r,)), sets=(bad,))
    with pytest.raises(ApplyError) as err:
        netlink_backend.apply(NL, worse, fw)
    assert "as one netlink batch" in str(err.value) and "previous rules stay in force" in str(err.value)
    assert netlink_backend.verify(NL, fw)


def test_runner_classes_are_still_reachable_from_nftables():
    assert nft.LibnftRunner is nft_runners.LibnftRunner and nft._Refused is nft_runners._Refused
