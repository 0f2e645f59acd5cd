"""enforcer.views.reachability: the expectation vocabulary, truth tables and comparisons."""
from __future__ import annotations

import json

import pytest

from enforcer.errors import InputError
from enforcer.views.reachability import (Reachability, compare, load_rows, parse_port, rows_of,
                                   selector, truth_table)

PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


def cells(r: Reachability, port=80, proto="TCP") -> dict[tuple[str, str], bool]:
    return {(row["from"], row["to"]): row["allowed"] for row in r.rows()
            if (row["port"], row["protocol"]) == (port, proto)}


# ----------------------------------------------------------------- ports and selectors

@pytest.mark.parametrize("spec, want", [
    ("80/TCP", (80, "TCP")), ("81/udp", (81, "UDP")), ("80", (80, "TCP")), (80, (80, "TCP")),
    ((53, "udp"), (53, "UDP")), (("8080", "SCTP"), (8080, "SCTP")),
    ({"port": 81, "protocol": "UDP"}, (81, "UDP")),
])
def test_parse_port_forms(spec, want):
    assert parse_port(spec) == want


@pytest.mark.parametrize("spec", ["http/TCP", "80/ICMP", 0, 70000, True, "", (1, 2, 3)])
def test_parse_port_rejects(spec):
    with pytest.raises(ValueError):
        parse_port(spec)


@pytest.mark.parametrize("sel, hits", [
    (None, PODS + ["backup"]),
    ("*", PODS + ["backup"]),
    ({}, PODS + ["backup"]),
    ("x/*", ["x/a", "x/b", "x/c"]),
    ({"namespace": "x"}, ["x/a", "x/b", "x/c"]),
    ("*/a", ["x/a", "y/a", "z/a"]),
    ({"pod": "a"}, ["x/a", "y/a", "z/a"]),
    ("y/b", ["y/b"]),
    ({"namespace": "y", "pod": "b"}, ["y/b"]),
    ("backup", ["backup"]),
    (lambda e: e.endswith("/c"), ["x/c", "y/c", "z/c"]),
])
def test_selector_forms(sel, hits):
    match = selector(sel)
    assert [e for e in PODS + ["backup"] if match(e)] == hits


def test_selector_rejects_unknown_keys():
    with pytest.raises(ValueError, match="namespace"):
        selector({"ns": "x"})


# ----------------------------------------------------------------- Reachability

def test_default_and_self_pairs_excluded():
    r = Reachability(PODS, ["80/TCP"])
    rows = r.rows()
    assert len(rows) == 72
    assert all(row["allowed"] for row in rows)
    assert not any(row["from"] == row["to"] for row in rows)
    assert set(rows[0]) == {"from", "to", "port", "protocol", "allowed"}
    assert not any(row["allowed"] for row in Reachability(PODS, [80], default=False).rows())


def test_default_deny_ingress_in_x():
    """Upstream: ExpectPeer(&Peer{}, &Peer{Namespace: x}, false)."""
    r = Reachability(PODS, [(80, "TCP")]).expect_peer({}, {"namespace": "x"}, False)
    c = cells(r)
    assert sum(1 for v in c.values() if not v) == 24  # 8 clients x 3 servers, minus self
    assert not c[("y/a", "x/b")] and not c[("x/a", "x/b")]
    assert c[("x/a", "y/b")] and c[("y/a", "y/b")]


def test_later_expectations_win_in_order():
    r = Reachability(PODS, [80])
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    c = cells(r)
    assert c[("x/b", "x/a")] and not c[("x/c", "x/a")] and not c[("z/c", "x/a")]
    assert c[("x/a", "x/b")]  # egress of x/a untouched
    r.expect_all_ingress("x/a", False)
    assert not cells(r)[("x/b", "x/a")]


def test_all_egress_and_the_client_side_case():
    """Upstream's 'denying of egress traffic on the client side' expectation: 21 blocked."""
    r = Reachability(PODS, [80])
    r.expect_peer("x/a", "*", False)
    r.expect_peer("*", "y/a", False)
    r.expect_peer("x/a", "y/a", True)
    r.expect_peer("*", "y/b", False)
    c = cells(r)
    assert c[("x/a", "y/a")] and not c[("x/a", "y/b")] and not c[("x/a", "x/b")]
    assert not c[("z/c", "y/a")] and c[("z/c", "y/c")]
    assert sum(1 for v in c.values() if not v) == 21
    r2 = Reachability(PODS, [80]).expect_all_egress("x/a", False)
    assert {t for (f, t), v in cells(r2).items() if not v and f == "x/a"} == set(PODS) - {"x/a"}


def test_self_pair_expectation_is_ignored():
    r = Reachability(PODS, [80]).expect("x/a", "x/a", False)
    assert r.get("x/a", "x/a") is True
    assert all(row["allowed"] for row in r.rows())


def test_unknown_endpoint_is_an_error():
    r = Reachability(PODS, [80])
    with pytest.raises(ValueError, match="unknown endpoint 'w/a'"):
        r.expect("w/a", "x/a", False)
    with pytest.raises(ValueError):
        r.expect_all_ingress("x/d", False)


def test_several_ports_share_the_expectation():
    r = Reachability(PODS, ["80/TCP", "81/UDP"]).expect_all_ingress("x/a", False)
    rows = r.rows()
    assert len(rows) == 144
    assert {(row["port"], row["protocol"]) for row in rows} == {(80, "TCP"), (81, "UDP")}
    assert cells(r, 81, "UDP") == cells(r, 80, "TCP")


def test_external_hosts_are_endpoints_without_namespace():
    r = Reachability(["x/a", "x/b", "backup"], [22])
    r.expect_peer({"namespace": "x"}, "*", False)
    c = cells(r, 22)
    assert not c[("x/a", "backup")] and c[("backup", "x/a")]


# ----------------------------------------------------------------- truth tables

def test_truth_table_shape_and_summary():
    r = Reachability(PODS, ["80/TCP"]).expect_peer("*", "x/*", False)
    text = truth_table(r.rows(), title="default-deny")
    lines = text.splitlines()
    assert lines[0] == "default-deny 80/TCP"
    assert lines[1].split() == ["-"] + PODS
    assert lines[2].split() == ["x/a", "-", "X", "X", ".", ".", ".", ".", ".", "."]
    assert lines[5].split() == ["y/a", "X", "X", "X", "-", ".", ".", ".", ".", "."]
    assert "80/TCP: 72 pairs, 48 allowed, 24 blocked" in lines


def test_truth_table_one_block_per_port_and_unknown_cells():
    rows = Reachability(["x/a", "x/b"], ["80/TCP", "81/UDP"]).rows()
    rows = [r for r in rows if not (r["port"] == 81 and r["from"] == "x/b")]
    text = truth_table(rows)
    assert "80/TCP: 2 pairs, 2 allowed, 0 blocked" in text
    assert "81/UDP: 1 pairs, 1 allowed, 0 blocked" in text
    block81 = text.split("81/UDP\n")[1].splitlines()
    assert block81[2].split() == ["x/b", "?", "-"]


def test_truth_table_accepts_a_reachability_and_long_names():
    text = truth_table(Reachability(["x/a", "backup-host"], [22]).expect("x/a", "backup-host", False))
    assert "x/a         -           X" in text
    assert "22/TCP: 2 pairs, 1 allowed, 1 blocked" in text


# ----------------------------------------------------------------- compare

def test_compare_identical_is_all_correct():
    r = Reachability(PODS, ["80/TCP", "81/TCP"]).expect_all_egress("x/a", False)
    c = compare(r.rows(), [dict(row, detail="timeout") for row in r.rows()])
    assert (c.wrong, c.correct, c.wrong_cells) == (0, 144, [])
    assert c.ok
    assert c.text.rstrip().endswith("0 wrong, 144 correct")


def test_compare_marks_wrong_cells():
    expected = Reachability(PODS, ["80/TCP"]).expect_peer("*", "x/*", False)
    observed = Reachability(PODS, ["80/TCP"]).expect_all_ingress("x/a", False)
    c = compare(expected, observed)
    assert c.wrong == 16 and c.correct == 56 and not c.ok
    wrong = {(w.frm, w.to) for w in c.wrong_cells}
    assert ("y/a", "x/b") in wrong and ("y/a", "x/a") not in wrong
    assert all(w.expected is False and w.observed is True for w in c.wrong_cells)
    text = c.text
    assert "expected 80/TCP:" in text and "observed 80/TCP:" in text
    assert "comparison 80/TCP" in text
    comp = text.split("comparison 80/TCP (. as expected, X wrong):\n")[1].splitlines()
    assert comp[2].split() == ["x/b", ".", "-", "X", ".", ".", ".", ".", ".", "."]
    assert "wrong: y/a -> x/b 80/TCP: expected blocked, observed allowed" in text
    assert text.rstrip().endswith("16 wrong, 56 correct")


def test_compare_missing_observation_is_wrong_and_extra_ones_ignored():
    expected = Reachability(["x/a", "x/b"], ["80/TCP"]).rows()
    observed = [expected[0],
                {"from": "x/a", "to": "x/b", "port": 81, "protocol": "TCP", "allowed": False},
                {"from": "x/a", "to": "x/a", "port": 80, "protocol": "TCP", "allowed": False}]
    c = compare(expected, observed)
    assert (c.wrong, c.correct) == (1, 1)
    assert c.wrong_cells[0].observed is None
    assert "expected allowed, observed missing" in c.text


def test_compare_lists_at_most_some_wrong_cells():
    exp = Reachability(PODS, ["80/TCP"], default=True)
    obs = Reachability(PODS, ["80/TCP"], default=False)
    c = compare(exp, obs)
    assert c.wrong == 72
    assert c.text.count("\nwrong: ") == 25
    assert "... and 47 more wrong cells" in c.text


# ----------------------------------------------------------------- load_rows

def test_load_rows_from_file_text_and_objects(tmp_path):
    doc = {"backend": "nftables", "results": [
        {"from": "x/a", "to": "y/b", "port": 81, "protocol": "tcp", "allowed": True, "detail": "connected"},
        {"from": "y/b", "to": "x/a", "port": "80", "allowed": False}]}
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(doc))
    for source in (path, str(path), json.dumps(doc), doc, doc["results"]):
        rows = load_rows(source)
        assert rows[0]["protocol"] == "TCP" and rows[0]["detail"] == "connected"
        assert rows[1]["port"] == 80 and rows[1]["protocol"] == "TCP"


@pytest.mark.parametrize("bad, msg", [
    ('{"results": [{"from": "x/a", "to": "y/b", "port": 80}]}', "missing allowed"),
    ('{"results": [{"from": "x/a", "to": "y/b", "port": 80, "allowed": "yes"}]}', "true or false"),
    ('{"results": [{"from": "x/a", "to": "y/b", "port": 80, "protocol": "ICMP", "allowed": true}]}', "ICMP"),
    ('{"backend": "model"}', "results"),
    ('{"results": 3}', "list"),
    ('{"results": [', "not valid JSON"),
])
def test_load_rows_errors_are_input_errors(bad, msg):
    with pytest.raises(InputError, match=msg):
        load_rows(bad)


def test_load_rows_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_rows(tmp_path / "nope.json")


def test_rows_of_mixes_reachabilities_and_rows():
    r80 = Reachability(["x/a", "x/b"], ["80/TCP"])
    r81 = Reachability(["x/a", "x/b"], ["81/TCP"], default=False)
    rows = rows_of([r80, *r81.rows()])
    assert len(rows) == 4 and [r["allowed"] for r in rows] == [True, True, False, False]
