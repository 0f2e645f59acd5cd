"""The regression check of `make bench-quick`: ratios against committed bounds, failing only
on a clear regression; and the pure parts of the datapath benchmark it relies on."""
from __future__ import annotations

import ipaddress
import json
import math

import pytest

from benchmarks import bench_datapath as bd
from benchmarks import run
from benchmarks.run import Bound, check, limit_of, load_bounds, quick_ratios


def test_limit_is_tolerance_times_worse_in_the_bad_direction():
    assert limit_of(Bound("a", 0.98, "higher"), 2.0) == pytest.approx(0.49)
    assert limit_of(Bound("b", 19.0, "lower"), 2.0) == pytest.approx(38.0)


@pytest.mark.parametrize("value, ok", [(0.98, True), (0.7, True), (0.49, True), (0.4899, False), (0.03, False),
                                       (1.4, True)])
def test_higher_is_better(value, ok):
    [v] = check({"r": value}, [Bound("r", 0.98, "higher")], 2.0)
    assert v.ok is ok
    assert v.limit == pytest.approx(0.49)


@pytest.mark.parametrize("value, ok", [(19.0, True), (30.0, True), (38.0, True), (38.1, False), (190.0, False),
                                       (5.0, True)])
def test_lower_is_better(value, ok):
    [v] = check({"r": value}, [Bound("r", 19.0, "lower")], 2.0)
    assert v.ok is ok


def test_noise_never_fails_a_ratio_near_its_reference():
    """Swings of +-30 % (what this machine shows between single runs) all pass."""
    bounds = [Bound("up", 0.95, "higher"), Bound("down", 10.0, "lower")]
    for f in (0.7, 0.85, 1.0, 1.15, 1.3):
        assert all(v.ok for v in check({"up": 0.95 * f, "down": 10.0 * f}, bounds, 2.0))


@pytest.mark.parametrize("value", [None, math.nan, math.inf])
def test_a_missing_or_broken_measurement_fails(value):
    [v] = check({"r": value}, [Bound("r", 1.0, "higher")], 2.0)
    assert not v.ok and v.why == "not measured"
    [v] = check({}, [Bound("r", 1.0, "lower")], 2.0)
    assert not v.ok


def test_zero_on_a_higher_is_better_ratio_fails():
    [v] = check({"r": 0.0}, [Bound("r", 1.0, "higher")], 2.0)
    assert not v.ok


def test_tolerance_below_one_is_refused():
    with pytest.raises(ValueError):
        check({"r": 1.0}, [Bound("r", 1.0, "higher")], 0.5)


def test_verdicts_say_how_far_from_the_reference():
    [v] = check({"r": 0.3}, [Bound("r", 0.9, "higher")], 2.0)
    assert "3.00x worse" in v.why
    text = run.format_verdicts([v], 2.0)
    assert "REGRESSION" in text and "0 ok, 1 failed" in text


def test_committed_bounds_load_and_cover_every_quick_ratio():
    tolerance, bounds = load_bounds()
    assert tolerance == 2.0
    names = {b.name for b in bounds}
    produced = set(quick_ratios([], None, None))
    assert names == produced, "bounds.json and quick_ratios() must name the same ratios"


def test_bad_bounds_files_are_refused(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"tolerance": 2, "bounds": {"x": {"reference": 1, "better": "sideways"}}}))
    with pytest.raises(ValueError):
        load_bounds(p)
    p.write_text(json.dumps({"tolerance": 2, "bounds": {"x": {"reference": 0, "better": "higher"}}}))
    with pytest.raises(ValueError):
        load_bounds(p)


def test_quick_ratios_from_raw_outputs():
    compile_runs = [[{"pods": 1500, "compile_s": 0.04}, {"pods": 15000, "compile_s": 0.8}],
                    [{"pods": 1500, "compile_s": 0.03}, {"pods": 15000, "compile_s": 0.6}]]
    apply = {"results": [{"backend": "nftables-libnft", "cold_many_total_ms": 150.0, "warm_full_many_total_ms": 120.0,
                          "delta_many_total_ms_median": 4.0, "delta_many_runs_ms": [8.0, 3.0, 4.0]},
                         {"backend": "iptables", "cold_many_total_ms": 1300.0, "delta_many_total_ms_median": 130.0}]}
    datapath = {"ratios": {"nft-set: 10000 vs 1 peer": {"median": 0.97},
                           "nft-set vs nft-naive at 1000 peers": {"median": 7.5}}}
    got = quick_ratios(compile_runs, apply, datapath)
    assert got["compile: time at 15000 pods / at 1500 pods"] == pytest.approx(20.0)  # best of runs
    assert got["apply: nftables full apply / delta, 30 pods"] == pytest.approx(40.0)  # best full / best delta
    assert got["apply: iptables full apply / delta, 30 pods"] == pytest.approx(10.0)
    assert got["datapath: nft-set rate, 10000 peers / 1 peer"] == 0.97
    assert got["datapath: nft-set rate / nft-naive rate, 1000 peers"] == 7.5
    assert got["datapath: ipt-net rate, 10000 peers / 1 peer"] is None


def test_apply_ratios_use_cpu_time_when_measured():
    # wall clocks say a delta took long (load); CPU times say what the work cost
    apply = {"results": [
        {"backend": "nftables-libnft", "cold_many_total_ms": 150.0, "warm_full_many_total_ms": 120.0,
         "delta_many_runs_ms": [9.0, 8.0], "cold_many_cpu_ms": 90.0, "warm_full_many_cpu_ms": 60.0,
         "delta_many_cpu_runs_ms": [3.0, 2.0, 2.5]},
        {"backend": "nftables-netlink", "cold_many_cpu_ms": 50.0},
        {"backend": "iptables", "cold_many_total_ms": 1300.0, "delta_many_total_ms_median": 130.0,
         "cold_many_cpu_ms": 200.0}]}
    got = quick_ratios([], apply, None)
    assert got["apply: nftables full apply / delta, 30 pods"] == pytest.approx(30.0)  # 60 / 2, not 120 / 8
    assert got["apply: iptables full apply / delta, 30 pods"] == pytest.approx(10.0)  # no CPU deltas: wall
    assert got["apply: iptables cold apply / nftables cold apply, CPU, 30 pods"] == pytest.approx(4.0)
    assert quick_ratios([], {"results": apply["results"][:1]}, None)[
        "apply: iptables cold apply / nftables cold apply, CPU, 30 pods"] is None


def test_demand_ratio_comes_from_the_common_shape_rows_only():
    compile_runs = [[{"pods": 1500, "compile_s": 0.04}, {"pods": 15000, "compile_s": 0.8}],
                    [{"shape": "common", "pods": 15000, "compile_s": 2.0, "demand_1_pod_s": 0.6}],
                    [{"shape": "common", "pods": 15000, "compile_s": 2.5, "demand_1_pod_s": 0.5}]]
    got = quick_ratios(compile_runs, None, None)
    assert got["compile: 1 pod on demand / all pods, common shape, 15000 pods"] == pytest.approx(0.25)
    assert got["compile: time at 15000 pods / at 1500 pods"] == pytest.approx(20.0)
    assert quick_ratios(compile_runs[:1], None, None)["compile: 1 pod on demand / all pods, common shape, 15000 pods"] is None


# --- the datapath benchmark's pure parts -------------------------------------------------


def test_exact_peers_hold_the_sender_and_n_distinct_hosts():
    peers = bd.exact_peers("10.77.3.1", 1000)
    assert len(peers) == len(set(peers)) == 1000
    assert peers[-1] == "10.77.3.1/32"
    assert bd.exact_peers("10.77.3.1", 1) == ["10.77.3.1/32"]


def test_interval_peers_are_disjoint_unmergeable_and_cover_the_sender_only_once():
    blocks = [ipaddress.ip_network(b) for b in bd.interval_peers("10.77.3.1", 2000)]
    assert len(blocks) == 2000
    assert {b.prefixlen for b in blocks} == set(bd.INTERVAL_PREFIXES)
    assert list(ipaddress.collapse_addresses(blocks)) == sorted(blocks)  # no overlap, no adjacency
    sender = ipaddress.ip_address("10.77.3.1")
    assert sum(sender in b for b in blocks) == 1
    stranger = ipaddress.ip_address(bd.link_addrs(3)["stranger"])
    assert not any(stranger in b for b in blocks)


def test_peer_firewall_isolates_ingress_with_one_rule_on_one_set():
    fw = bd.peer_firewall(2, 100, "interval")
    assert fw.ingress.isolated and not fw.egress.isolated
    assert len(fw.ingress.rules) == 1 and fw.sets[0].interval
    assert fw.sets[0].contains("10.77.2.1") and not fw.sets[0].contains("10.77.2.200")
    exact = bd.peer_firewall(2, 100, "exact")
    assert exact.sets[0].contains("10.77.2.1") and not exact.sets[0].interval


def test_naive_layouts_put_the_sender_last_and_grow_with_peers():
    peers = bd.naive_peer_list("10.77.1.1", 50)
    assert peers[-1] == "10.77.1.1"
    nft = bd.naive_nft(peers, "10.77.1.254")
    assert nft.count("udp dport 9 accept") == 50
    assert nft.index("10.77.1.1 udp") > nft.index(peers[0])
    ipt = bd.naive_iptables(peers, "10.77.1.254")
    assert ipt.count("--dport 9 -j ACCEPT") == 50 and ipt.rstrip().endswith("COMMIT")


def test_udp_packets_vary_the_source_port():
    raw = bd.udp_packets(4, 2)
    assert len(raw) == 4 * 10
    ports = [int.from_bytes(raw[i * 10:i * 10 + 2], "big") for i in range(4)]
    assert ports == [1024, 1025, 1026, 1027]


def test_paired_ratios_use_each_round_and_skip_missing_ones():
    rounds = [{"a/10": 90.0, "a/1": 100.0}, {"a/10": 180.0, "a/1": 200.0}, {"a/1": 100.0}]
    r = bd.paired_ratio(rounds, "a/10", "a/1")
    assert r["median"] == 0.9 and r["n"] == 2
    assert bd.paired_ratio(rounds, "b/1", "a/1") is None


def test_ratio_names_match_what_the_quick_check_reads():
    cases = bd.quick_cases()
    rounds = [{c.key: 100.0 for c in cases}]
    names = set(bd.ratios(rounds, cases))
    for lay in ("nft-set", "nft-interval", "ipt-set", "ipt-net"):
        assert f"{lay}: 10000 vs 1 peer" in names
    assert "nft-set vs nft-naive at 1000 peers" in names


def test_rule_swap_ratio_comes_from_bench_swap():
    name = "apply: nftables rule change, whole table / sets kept, 2000 elements"
    assert quick_ratios([], None, None, {"full_ms_median": 12.0, "swap_ms_median": 1.3, "full_over_swap": 9.23})[name] == 9.23
    assert quick_ratios([], None, None)[name] is None
    name = "apply: nftables rule swap, text / netlink batch, 2000 elements"
    assert quick_ratios([], None, None, {"swap_text_over_netlink": 2.7})[name] == 2.7
