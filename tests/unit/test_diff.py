"""``netpol diff``: golden tests on small manifests written to a temporary directory."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from enforcer.cli import cli
from enforcer.errors import InputError
from tests.unit.clusters import three_pods

CLUSTER = three_pods()


def policy(name: str, target: str, from_app: str | None) -> str:
    """An ingress policy for app=<target> admitting app=<from_app> (None: nothing)."""
    ingress = "[]" if from_app is None else \
        f"[{{from: [{{podSelector: {{matchLabels: {{app: {from_app}}}}}}}]}}]"
    return textwrap.dedent(f"""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: {name}, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{app: {target}}}}}
          ingress: {ingress}
        """)


@pytest.fixture
def files(tmp_path: Path):
    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["diff", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_no_change(files):
    c = files("cluster.yaml", CLUSTER)
    p = files("p.yaml", policy("allow-a", "b", "a"))
    out = run("-f", c, "--old", p, "--new", p)
    assert out == "no change: all 6 connections checked have the same verdict before and after\n"


def test_deny_all_closes_every_connection_into_b(files):
    c = files("cluster.yaml", CLUSTER)
    deny = files("deny.yaml", policy("deny-b", "b", None))
    out = run("-f", c, "--new", deny)
    assert out == (
        "0 opened, 2 closed, 4 unchanged (6 connections checked)\n"
        "\n"
        "closed (allowed before, denied after):\n"
        "  x/a -> x/b 80/TCP  x/b is isolated for ingress by x/deny-b and no rule admits it\n"
        "  x/c -> x/b 80/TCP  x/b is isolated for ingress by x/deny-b and no rule admits it\n")


def test_changed_peer_opens_one_and_closes_one(files):
    c = files("cluster.yaml", CLUSTER)
    v1 = files("v1.yaml", policy("allow", "b", "a"))
    v2 = files("v2.yaml", policy("allow", "b", "c"))
    out = run("-f", c, "--old", v1, "--new", v2)
    assert out == (
        "1 opened, 1 closed, 4 unchanged (6 connections checked)\n"
        "\n"
        "closed (allowed before, denied after):\n"
        "  x/a -> x/b 80/TCP  x/b is isolated for ingress by x/allow and no rule admits it\n"
        "\n"
        "opened (denied before, allowed after):\n"
        "  x/c -> x/b 80/TCP  x/b ingress allowed by x/allow ingress[0]\n")


def test_against_is_old_and_removing_a_policy_opens(files):
    c = files("cluster.yaml", CLUSTER)
    deny = files("deny.yaml", policy("deny-b", "b", None))
    out = run("-f", c, "--against", deny)
    assert out.splitlines()[0] == "2 opened, 0 closed, 4 unchanged (6 connections checked)"
    assert "  x/a -> x/b 80/TCP  not isolated: x/a egress, x/b ingress\n" in out


def test_json(files):
    c = files("cluster.yaml", CLUSTER)
    v1 = files("v1.yaml", policy("allow", "b", "a"))
    v2 = files("v2.yaml", policy("allow", "b", "c"))
    data = json.loads(run("-f", c, "--old", v1, "--new", v2, "-o", "json"))
    assert data == {
        "opened": [{"from": "x/c", "to": "x/b", "port": 80, "protocol": "TCP", "before": False,
                    "after": True, "reason": "x/b ingress allowed by x/allow ingress[0]"}],
        "closed": [{"from": "x/a", "to": "x/b", "port": 80, "protocol": "TCP", "before": True,
                    "after": False,
                    "reason": "x/b is isolated for ingress by x/allow and no rule admits it"}],
        "unchanged": 4, "compared": 6, "only_before": [], "only_after": []}


def test_grid(files):
    c = files("cluster.yaml", CLUSTER)
    v1 = files("v1.yaml", policy("allow", "b", "a"))
    v2 = files("v2.yaml", policy("allow", "b", "c"))
    out = run("-f", c, "--old", v1, "--new", v2, "-o", "grid")
    assert out == (
        "legend: . allowed  X blocked  + opened  ! closed  - self (rows: from, columns: to)\n"
        "\n"
        "80/TCP\n"
        "-   x/a x/b x/c\n"
        "x/a -   !   .\n"
        "x/b .   -   .\n"
        "x/c .   +   -\n"
        "1 opened, 1 closed, 4 unchanged (6 connections checked)\n")


def test_ports_option_and_udp(files):
    c = files("cluster.yaml", CLUSTER)
    deny = files("deny.yaml", policy("deny-b", "b", None))
    out = run("-f", c, "--new", deny, "--ports", "53/UDP")
    assert "  x/a -> x/b 53/UDP  x/b is isolated for ingress" in out
    assert out.splitlines()[0] == "0 opened, 2 closed, 4 unchanged (6 connections checked)"


def test_added_pod_is_named_and_does_not_renumber(files):
    """Pod x/a0 sorts before x/b: with fresh numbering it would take x/b's address, and an
    ipBlock admitting x/b's address would seem to change. The diff keeps addresses."""
    c = files("cluster.yaml", CLUSTER)
    extra = files("extra.yaml", textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: a0, namespace: x, labels: {app: z}}
        spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
        """))
    # x/a, x/b, x/c get 10.244.0.2, .3, .4 (after the gateway .1); admit x/b's address.
    ipb = files("ipb.yaml", textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: only-a-ip, namespace: x}
        spec:
          podSelector: {matchLabels: {app: c}}
          ingress: [{from: [{ipBlock: {cidr: 10.244.0.3/32}}]}]
        """))
    out = run("-f", c, "-f", ipb, "--new", extra)
    assert out.splitlines()[0] == "no change: all 6 connections checked have the same verdict before and after"
    assert out.splitlines()[-1] == "only after (not compared): x/a0"


def test_nothing_to_compare_is_an_error():
    result = CliRunner().invoke(cli, ["diff"])
    assert isinstance(result.exception, InputError)
    assert "nothing to compare" in str(result.exception)


def test_stdin_for_both_sides_is_refused():
    result = CliRunner().invoke(cli, ["diff", "--old", "-", "--new", "-"])
    assert isinstance(result.exception, InputError)
    assert "stdin" in str(result.exception)


def test_invalid_input_names_the_side_file(files):
    c = files("cluster.yaml", CLUSTER)
    bad = files("bad.yaml", policy("p", "b", "a").replace("ingress:", "ingres:"))
    result = CliRunner().invoke(cli, ["diff", "-f", c, "--new", bad])
    assert isinstance(result.exception, InputError)
    assert "bad.yaml: NetworkPolicy x/p: spec.ingres: unknown field" in str(result.exception)
