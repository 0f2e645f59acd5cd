"""The command-line contract of ACCEPTANCE.md, run as a user would (a subprocess)."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
EX = str(ROOT / "examples" / "three-tier")
BASE = str(ROOT / "tests" / "conformance" / "base.yaml")


def netpol(*args, input=None):
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True, text=True,
                          input=input, cwd=ROOT)


def test_validate_exit_codes_and_message_format(tmp_path):
    assert netpol("validate", "-f", EX).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                   "metadata: {name: db, namespace: prod}\n"
                   "spec:\n  podSelector: {}\n  ingress:\n  - from:\n"
                   "    - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/16]}\n")
    r = netpol("validate", "-f", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip() == (f"{bad}: NetworkPolicy prod/db: spec.ingress[0].from[0].ipBlock.except[0]: "
                                'Invalid value: "10.1.0.0/16": must be a strict subset of cidr')
    assert "Traceback" not in r.stderr


def test_matrix_json_schema_and_stdin():
    text = pathlib.Path(BASE).read_text()
    r = netpol("matrix", "-f", "-", "--ports", "80/TCP,81/UDP", "-o", "json", input=text)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["backend"] == "model"
    assert len(doc["results"]) == 9 * 8 * 2  # ordered pairs without self, two ports
    row = doc["results"][0]
    assert set(row) >= {"from", "to", "port", "protocol", "allowed"}
    assert all(r["allowed"] for r in doc["results"])  # no policy: everything allowed


def test_trace_exit_codes():
    denied = netpol("trace", "-f", EX, "--from", "prod/web", "--to", "prod/db", "--port", "3306/TCP")
    allowed = netpol("trace", "-f", EX, "--from", "prod/api", "--to", "prod/db", "--port", "3306/TCP")
    assert (denied.returncode, allowed.returncode) == (1, 0)
    assert "denied" in denied.stdout and "prod/db-policy" in denied.stdout
    j = json.loads(netpol("trace", "-f", EX, "--from", "backup", "--to", "prod/db", "--port", "3306/TCP",
                          "-o", "json").stdout)
    assert j["allowed"] and j["egress"] is None and j["ingress"]["allowed_by"][0]["policy"] == "prod/db-policy"


def test_unknown_endpoint_and_missing_file_are_one_line_errors(tmp_path):
    r = netpol("trace", "-f", EX, "--from", "prod/nope", "--to", "prod/db", "--port", "80")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "prod/nope" in r.stderr
    r = netpol("matrix", "-f", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "missing.yaml" in r.stderr and "Traceback" not in r.stderr


def test_matrix_dot_output():
    r = netpol("matrix", "-f", EX, "--ports", "3306/TCP", "-o", "dot")
    assert r.returncode == 0 and r.stdout.startswith("digraph")
    assert '"prod/api" -> "prod/db" [color=forestgreen' in r.stdout
    assert '"prod/web" -> "prod/db" [color=firebrick, style=dashed' in r.stdout  # denied: drawn, styled apart


def test_explain_shows_legacy_isolation_only_when_asked():
    path = str(ROOT / "examples" / "concepts" / "11-legacy" / "cluster.yaml")
    with_flag = netpol("explain", "-f", path, "--legacy-namespace-isolation")
    without = netpol("explain", "-f", path)
    assert with_flag.returncode == 0 and "legacy DefaultDeny" in with_flag.stdout
    assert "legacy DefaultDeny" not in without.stdout


def test_matrix_filters():
    doc = json.loads(netpol("matrix", "-f", EX, "--ports", "3306/TCP", "--to", "prod/db", "-o", "json").stdout)
    assert doc["results"] and {r["to"] for r in doc["results"]} == {"prod/db"}
    assert {r["from"] for r in doc["results"] if r["allowed"]} == {"prod/api", "backup"}


def test_directory_with_an_expected_matrix_loads():
    d = str(ROOT / "examples" / "recipes" / "01-deny-all-traffic-to-an-application")
    r = netpol("validate", "-f", d)
    assert r.returncode == 0 and "skipped a netpol matrix document" in r.stderr
