"""trace, explain and diff with ClusterNetworkPolicy tiers (the docs' example, examples/concepts/12-deny)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from enforcer.cli import cli

BASE = ["-f", "examples/concepts/cluster.yaml", "-f", "examples/concepts/12-deny"]


def netpol(*args: str):
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code in (0, 1), r.output
    return r


def test_trace_names_the_admin_deny():
    out = netpol("trace", *BASE, "--from", "dev/api", "--to", "prod/db", "--port", "3306").output
    assert "denied." in out.splitlines()[0]
    assert "prod/db ingress: denied by Admin ClusterNetworkPolicy prod-refuses-dev (priority 10) ingress[0] ('no-dev'): Deny" in out


def test_trace_says_what_was_passed_over_and_who_decided():
    out = netpol("trace", *BASE, "--from", "prod/web", "--to", "prod/db", "--port", "3306").output
    assert "ingress[1] ('prod-is-prods-business') matches and says Pass" in out
    assert "denied by Baseline ClusterNetworkPolicy default-deny (priority 100) ingress[0]" in out


def test_a_networkpolicy_overrides_the_baseline_after_an_admin_pass():
    out = netpol("trace", *BASE, "-f", "examples/concepts/10-default-deny", "--from", "prod/api", "--to", "prod/db",
                 "--port", "3306").output
    assert out.splitlines()[0].endswith("allowed.")
    assert "says Pass" in out and "allowed by prod/allow-api-to-db ingress[0]" in out
    assert "Baseline ClusterNetworkPolicy" not in out


def test_trace_json_has_the_tiers():
    out = netpol("trace", *BASE, "--from", "prod/web", "--to", "prod/db", "--port", "3306", "-o", "json").output
    tiers = json.loads(out)["ingress"]["tiers"]
    assert tiers["decided_by"] == "Baseline"
    assert tiers["rule"]["policy"] == "default-deny" and tiers["rule"]["action"] == "Deny"
    assert [p["name"] for p in tiers["passed"]] == ["prod-is-prods-business"]


def test_trace_without_cnps_has_no_tier_words():
    out = netpol("trace", "-f", "examples/concepts/cluster.yaml", "--from", "dev/api", "--to", "prod/db",
                 "--port", "3306", "-o", "json").output
    assert "tiers" not in json.loads(out)["ingress"]


def test_explain_lists_the_tiers_in_evaluation_order():
    out = netpol("explain", *BASE, "-f", "examples/concepts/10-default-deny").output
    heads = [ln for ln in out.splitlines() if ln and not ln.startswith(" ")]
    assert heads[0].startswith("ClusterNetworkPolicy prod-refuses-dev (Admin tier, priority 10)")
    assert heads[-1].startswith("ClusterNetworkPolicy default-deny (Baseline tier, priority 100)")
    assert "ingress[0] 'no-dev': Deny from pods of namespaces env=dev, every port" in out


def test_matrix_denies_what_the_tiers_deny():
    rows = json.loads(netpol("matrix", *BASE, "--ports", "3306", "-o", "json").output)
    rows = rows["results"] if isinstance(rows, dict) else rows
    cell = {(r["from"], r["to"]): r["allowed"] for r in rows}
    assert cell[("dev/api", "prod/db")] is False  # Admin Deny
    assert cell[("prod/web", "prod/db")] is False  # Admin Pass, then Baseline Deny
    assert cell[("prod/db", "dev/api")] is False  # Baseline Deny
    assert cell[("prod/web", "backup")] is True  # no egress rule anywhere


def test_diff_shows_what_a_cnp_closes(tmp_path):
    r = netpol("diff", "-f", "examples/concepts/cluster.yaml", "--old", "examples/concepts/02-isolation",
               "--new", "examples/concepts/12-deny/admin-deny-dev.yaml")
    assert "dev/api -> prod/web 80/TCP" in r.output
    assert "prod/web ingress denied by Admin prod-refuses-dev ingress[0] no-dev Deny" in r.output
