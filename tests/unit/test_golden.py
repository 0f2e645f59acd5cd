"""Golden files: what `render`, `trace`, `explain` and `matrix` print for the bundled
example and the upstream e2e model (with one conformance policy). A change in output must be
a deliberate change to these files: regenerate with NETPOL_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import os
import pathlib

import pytest
from click.testing import CliRunner

from enforcer.cli import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EX = str(ROOT / "examples" / "three-tier")
E2E = [str(ROOT / "tests" / "conformance" / "base.yaml"), str(GOLDEN / "e2e-policy.yaml")]

CASES = {
    "three-tier.render.nftables.txt": ["render", "-f", EX, "--backend", "nftables"],
    "three-tier.render.iptables.txt": ["render", "-f", EX, "--backend", "iptables"],
    "e2e.render.nftables.txt": ["render", "-f", *E2E[:1], "-f", E2E[1], "--backend", "nftables", "--pod", "x/a"],
    "e2e.render.iptables.txt": ["render", "-f", *E2E[:1], "-f", E2E[1], "--backend", "iptables", "--pod", "x/a"],
    "three-tier.trace.denied.txt": ["trace", "-f", EX, "--from", "prod/web", "--to", "prod/db", "--port", "3306/TCP"],
    "three-tier.trace.allowed.txt": ["trace", "-f", EX, "--from", "prod/api", "--to", "prod/db", "--port", "3306/TCP"],
    "three-tier.trace.egress.txt": ["trace", "-f", EX, "--from", "prod/db", "--to", "backup", "--port", "80/TCP"],
    "three-tier.explain.txt": ["explain", "-f", EX],
    "three-tier.matrix.txt": ["matrix", "-f", EX, "--ports", "3306/TCP"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    result = CliRunner().invoke(cli, CASES[name], catch_exceptions=False)
    text = result.output.replace(str(ROOT) + "/", "")
    path = GOLDEN / name
    if os.environ.get("NETPOL_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with NETPOL_UPDATE_GOLDEN=1"
    assert text == path.read_text()
