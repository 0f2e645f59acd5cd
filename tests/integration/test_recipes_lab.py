"""The network-policy recipes through the lab: real packets between network namespaces.

For each recipe a throw-away lab (``npt-<hex>``, removed by the ``netpol_lab`` fixture)
is brought up with the recipe's cluster and policies enforced before any server starts,
every ordered pair is probed on every declared port, and the result must equal the
recipe's expected.json (written by reasoning, see tests/unit/test_recipes_model.py).
One lab per recipe: the recipes have different pods, and a failure names its recipe.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
NAMES = sorted(p.name for p in RECIPES.iterdir() if p.is_dir())


@pytest.mark.root
@pytest.mark.parametrize("backend", ["nftables"])
@pytest.mark.parametrize("name", NAMES)
def test_recipe_in_the_lab(netpol_lab, name, backend):
    d = RECIPES / name
    expected = json.loads((d / "expected.json").read_text())
    lab = netpol_lab([str(d / "cluster.yaml"), str(d / "policy.yaml")], backend=backend)
    # A blocked probe costs about twice the timeout (one retry); allowed ones answer in
    # well under a millisecond, so a short timeout keeps 14 labs fast.
    lab.assert_matches(expected, timeout=0.5)


@pytest.mark.root
def test_one_recipe_with_iptables(netpol_lab):
    """The same expectations hold whatever renders the rules: one recipe with both
    ingress and egress isolation through the iptables backend."""
    d = RECIPES / "14-deny-external-egress-traffic"
    expected = json.loads((d / "expected.json").read_text())
    lab = netpol_lab([str(d / "cluster.yaml"), str(d / "policy.yaml")], backend="iptables")
    lab.assert_matches(expected, timeout=0.5)


@pytest.mark.root
def test_recipe_applied_to_a_running_lab(netpol_lab):
    """Policies arriving after the pods (the usual order in a cluster): up without the
    policy, everything flows; apply the policy, the matrix becomes the recipe's."""
    d = RECIPES / "08-allow-traffic-from-some-pods-in-another-namespace"
    expected = json.loads((d / "expected.json").read_text())
    lab = netpol_lab(str(d / "cluster.yaml"))
    rows = lab.probe(timeout=0.5)
    assert rows and all(r["allowed"] for r in rows), [r for r in rows if not r["allowed"]]
    lab.apply([str(d / "cluster.yaml"), str(d / "policy.yaml")])
    lab.assert_matches(expected, timeout=0.5)
