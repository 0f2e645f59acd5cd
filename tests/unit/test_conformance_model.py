"""The upstream e2e conformance cases, run against the model (no root, no kernel).

For every case and step: write the step's desired state to a file, load it as the CLI does
(enforcer.load.manifests), assign addresses, compile, ask enforcer.views.verdict for the matrix on
the step's ports and compare with the case's expectation: zero wrong cells. A failure
prints the upstream-style expected / observed / comparison tables.

Also checks the case files themselves (tests/conformance/README.md describes the format).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from enforcer.views.reachability import compare, truth_table
from tests.conformance.cases import (CASES_DIR, CaseError, Step, load_case, load_cases)

CASES = load_cases()
STEPS = [pytest.param(case, i, id=f"{case.id}/step{i + 1}")
         for case in CASES for i in range(len(case.steps))]


def model_rows(step: Step, tmp_path: Path) -> list[dict]:
    """The model's matrix for one desired state, through the same front half as the CLI."""
    # Imported here so that a missing module fails every model test loudly while the
    # data-file tests below still run.
    from enforcer.compiler import ipam
    from enforcer.load import manifests
    from enforcer.compiler.compile import compile_cluster
    from enforcer.views.verdict import matrix

    path = step.write(tmp_path)
    result = manifests.load([str(path)])
    cluster = ipam.assign_ips(result.cluster)
    firewalls = compile_cluster(cluster, node_ips=ipam.node_ips())
    return matrix(cluster, firewalls, step.ports)


@pytest.mark.parametrize("case, index", STEPS)
def test_model_matches_upstream_expectation(case, index, tmp_path):
    step = case.steps[index]
    observed = model_rows(step, tmp_path)
    for check in step.checks:
        expected = check.rows(case.endpoints)
        result = compare(expected, observed,
                         title=f"{case.id} step {index + 1} ({step.name}) {check.label}")
        assert result.wrong == 0, f"{case.title}\n\n{result.text}"
        assert result.correct == len(expected)


def test_fixed_pod_ips_survive_loading(tmp_path):
    """The ipBlock cases name pod addresses: the loader must keep status.podIP."""
    from enforcer.compiler import ipam
    from enforcer.load import manifests

    case = next(c for c in CASES if c.name == "egress-cidr")
    cluster = ipam.assign_ips(manifests.load([str(case.steps[0].write(tmp_path))]).cluster)
    assert cluster.pods["y/b"].ips == ("10.244.2.2",)
    assert cluster.pods["x/a"].ips == ("10.244.1.1",)
    assert cluster.namespaces["y"].labels["ns"] == "y"


# ----------------------------------------------------------------- the data files

UPSTREAM_TITLES = {
    "NetworkPolicy between server and client": 42,
    "NetworkPolicy between server and client using UDP": 3,
    "NetworkPolicy between server and client using SCTP": 3,
}


def test_every_upstream_case_is_ported_once():
    upstream = [c for c in CASES if c.upstream]
    by_context: dict[str, set[str]] = {}
    for c in upstream:
        titles = by_context.setdefault(c.context, set())
        assert c.title not in titles, f"{c.title!r} ported twice in {c.context!r}"
        titles.add(c.title)
    assert {k: len(v) for k, v in by_context.items()} == UPSTREAM_TITLES
    assert len(upstream) == 48


def test_model_is_the_upstream_one():
    case = CASES[0]
    assert case.endpoints == tuple(f"{ns}/{p}" for ns in "xyz" for p in "abc")
    objects = case.steps[0].objects
    ports = {(p["containerPort"], p["protocol"], p["name"])
             for o in objects if o["kind"] == "Pod" for c in o["spec"]["containers"]
             for p in c["ports"]}
    assert ports == {(n, proto, f"serve-{n}-{proto.lower()}")
                     for n in (80, 81) for proto in ("TCP", "UDP", "SCTP")}
    ips = [o["status"]["podIP"] for o in objects if o["kind"] == "Pod"]
    assert len(set(ips)) == 9 and all(ip.startswith("10.244.") for ip in ips)
    assert "10.244.0.1" not in ips  # the node's gateway


def test_steps_are_whole_desired_states():
    case = next(c for c in CASES if c.name == "updated-namespace")
    first, second = case.steps
    ns_y = [o for o in second.objects if o["kind"] == "Namespace" and o["metadata"]["name"] == "y"]
    assert ns_y[0]["metadata"]["labels"]["ns2"] == "updated"
    assert [o["kind"] for o in first.objects].count("Namespace") == 3
    assert [o["kind"] for o in second.objects].count("Namespace") == 3
    deleted = next(c for c in CASES if c.name == "deleted-policies")
    assert not [o for o in deleted.steps[1].objects if o["kind"] == "NetworkPolicy"]


def test_written_state_is_plain_multi_document_yaml(tmp_path):
    step = next(c for c in CASES if c.name == "stacked-policies").steps[1]
    text = step.write(tmp_path).read_text()
    assert "&id" not in text and "*id" not in text
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs].count("NetworkPolicy") == 2
    assert len(docs) == 3 + 9 + 2


def test_sctp_checks_are_loaded_but_not_probeable():
    sctp = [c for c in CASES if c.context.endswith("using SCTP")]
    assert len(sctp) == 3
    assert all(not ch.probeable for c in sctp for s in c.steps for ch in s.checks)
    # The SCTP-policy cases of the TCP suite probe TCP, so the lab runs them.
    assert next(c for c in CASES if c.name == "sctp-is-not-tcp").probeable


def test_expectations_reproduce_upstream_tables():
    """Spot checks against the tables printed in upstream's comments and logs."""
    case = next(c for c in CASES if c.name == "egress-denied-on-client-side")
    r = case.steps[0].checks[0].reachability(case.endpoints)
    assert [r.get("x/a", t) for t in case.endpoints] == \
        [True, False, False, True, False, False, False, False, False]
    assert [r.get(f, "y/b") for f in case.endpoints if f != "y/b"] == [False] * 8
    table = truth_table(r.rows())
    assert "80/TCP: 72 pairs, 51 allowed, 21 blocked" in table


def _write_case(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    return path


GOOD = """\
name: t
source: upstream
title: t
steps:
  - name: s
    manifests: []
    checks:
      - ports: [80/TCP]
        default: allowed
        expect:
{expect}
"""


@pytest.mark.parametrize("expect, msg", [
    ("          - {expect: {from: x/a, to: w/a}, allowed: false}", "not an endpoint"),
    ("          - {expect_peer: {from: '*', to: 'x/d'}, allowed: false}", "matches no endpoint"),
    ("          - {expect_all_ingress: x/a}", "'allowed' must be true or false"),
    ("          - {expect_all_ingress: x/a, expect_all_egress: x/a, allowed: false}", "exactly one"),
    ("          - {deny: x/a, allowed: false}", "exactly one"),
    ("          - {expect: {from: x/a}, allowed: false}", "from: ..., to: ..."),
])
def test_loader_rejects_bad_expectations(tmp_path, expect, msg):
    with pytest.raises(CaseError, match=msg):
        load_case(_write_case(tmp_path, GOOD.format(expect=expect)))


def test_loader_rejects_bad_ports_and_keys(tmp_path):
    body = GOOD.format(expect="          []").replace("80/TCP", "80/ICMP")
    with pytest.raises(CaseError, match="ICMP"):
        load_case(_write_case(tmp_path, body))
    body = GOOD.format(expect="          []").replace("source: upstream", "source: upstream\nfoo: 1")
    with pytest.raises(CaseError, match="unknown keys"):
        load_case(_write_case(tmp_path, body))


def test_loader_rejects_added_endpoints(tmp_path):
    body = GOOD.format(expect="          []").replace(
        "manifests: []",
        "manifests: [{apiVersion: v1, kind: Pod, metadata: {namespace: x, name: d}, spec: {containers: []}}]")
    with pytest.raises(CaseError, match="add or remove endpoints"):
        load_case(_write_case(tmp_path, body))


def test_case_files_are_all_loaded():
    assert len(CASES) == len(list(CASES_DIR.glob("*.yaml")))
    assert len({c.name for c in CASES}) == len(CASES)
