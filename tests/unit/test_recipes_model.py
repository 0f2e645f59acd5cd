"""The network-policy recipes (examples/recipes/) against the model.

Each recipe's expected.json was written by reasoning about SEMANTICS.md, not copied from
the model: a mismatch here is a bug in the model (or in the recipe), never something to
regenerate away. The lab test (tests/integration/test_recipes_lab.py) checks the same
files against real packets.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from enforcer.views import reachability, verdict
from enforcer.cli import load

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
NAMES = sorted(p.name for p in RECIPES.iterdir() if p.is_dir())


def test_there_are_fourteen_recipes():
    assert len(NAMES) == 14
    for name in NAMES:
        for f in ("cluster.yaml", "policy.yaml", "expected.json"):
            assert (RECIPES / name / f).is_file(), f"{name}/{f} missing"


def _key(row: dict) -> tuple:
    return (row["from"], row["to"], row["port"], row["protocol"])


@pytest.mark.parametrize("name", NAMES)
def test_model_matches_expected(name):
    d = RECIPES / name
    expected = json.loads((d / "expected.json").read_text())
    assert expected["recipe"] == name
    loaded = load([str(d / "cluster.yaml"), str(d / "policy.yaml")])
    rows = verdict.matrix(loaded.cluster, loaded.firewalls)
    want = reachability.rows_of(expected)
    # Same pairs and ports (every destination's declared ports) ...
    assert sorted(map(_key, rows)) == sorted(map(_key, want))
    # ... and the same verdict on each.
    result = reachability.compare(want, rows, title=name)
    assert result.ok, result.text


@pytest.mark.parametrize("name", NAMES)
def test_without_the_policy_everything_is_allowed(name):
    """Kubernetes' default: no policy, no isolation. Every recipe starts from all-allow."""
    d = RECIPES / name
    loaded = load([str(d / "cluster.yaml")])
    rows = verdict.matrix(loaded.cluster, loaded.firewalls)
    assert rows and all(r["allowed"] for r in rows)
