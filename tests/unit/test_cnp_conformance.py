"""The network-policy-api conformance scenarios (tests/conformance/cnp/) on the model:
load, compile, verdict, for every probe of every step (mutations accumulate)."""
from __future__ import annotations

import pytest

from enforcer.views import verdict
from enforcer.compiler.compile import compile_cluster
from enforcer.load.manifests import load
from tests.conformance.cnp.cases import load_cases

CASES = load_cases()


def test_every_standard_scenario_is_ported():
    names = {c.name for c in CASES}
    assert len(names) == 18 and sum(len(s.probes) for c in CASES for s in c.steps) == 230 + 2 * 27


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_scenario_on_the_model(case, tmp_path):
    wrong = []
    for k, step in enumerate(case.steps):
        f = tmp_path / f"step{k}.yaml"
        f.write_text(step.manifests_text())
        cluster = load([str(f)]).cluster
        fws = compile_cluster(cluster, node_ips=("10.244.0.1",))
        for p in step.probes:
            v = verdict.verdict(fws, verdict.resolve(cluster, p.src), verdict.resolve(cluster, p.dst),
                                p.port, p.protocol)
            if v.allowed != p.allowed:
                wrong.append(f"step {k} ({step.name}): {p}: model says {'allow' if v.allowed else 'deny'}")
    assert not wrong, "\n".join(wrong)


PASS_ALL = """
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: pass-all-admin}
spec:
  tier: Admin
  priority: 0
  subject: {namespaces: {}}
  ingress: [{action: Pass, from: [{namespaces: {}}]}]
  egress: [{action: Pass, to: [{namespaces: {}}, {networks: [0.0.0.0/0, "::/0"]}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: pass-all-baseline}
spec:
  tier: Baseline
  priority: 1000
  subject: {namespaces: {}}
  ingress: [{action: Pass, from: [{namespaces: {}}]}]
  egress: [{action: Pass, to: [{networks: [0.0.0.0/0]}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: selects-nobody}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {no-such: label}}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
"""


def _e2e_steps():
    from tests.conformance.cases import load_cases as e2e_cases
    return [pytest.param(case, k, step, id=f"{case.name}-{k}")
            for case in e2e_cases() for k, step in enumerate(case.steps)]


@pytest.mark.parametrize("case,k,step", _e2e_steps())
def test_cnps_that_decide_nothing_change_nothing(case, k, step, tmp_path):
    """Every NetworkPolicy e2e state: with no CNP, the firewalls carry no tier (exactly as
    before CNPs existed); with CNPs that only Pass or select nobody, the matrix is the same."""
    path = step.write(tmp_path)
    plain = load([str(path)]).cluster
    fws = compile_cluster(plain, node_ips=("10.244.0.1",))
    assert not any(fw.direction(d).admin or fw.direction(d).baseline for fw in fws.values() for d in ("ingress", "egress"))
    extra = tmp_path / "cnp.yaml"
    extra.write_text(PASS_ALL)
    tiered = load([str(path), str(extra)]).cluster
    tfws = compile_cluster(tiered, node_ips=("10.244.0.1",))
    assert verdict.matrix(plain, fws) == verdict.matrix(tiered, tfws)
    assert any(fw.ingress.admin for fw in tfws.values())  # the tiers are there, and Pass


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES
                                  if c.name in ("CNPAdminTierEgressInlineCIDRPeers", "CNPAdminTierIntegration",
                                                "CNPAdminTierPriorityField")])
def test_incremental_compiler_follows_the_steps(case, tmp_path):
    """Compiler.sync through the steps (rule swaps, relabels, a deleted NetworkPolicy), then
    without any CNP, gives the firewalls a fresh compile gives."""
    from enforcer.compiler.compile import Compiler
    states = []
    for k, step in enumerate(case.steps):
        f = tmp_path / f"step{k}.yaml"
        f.write_text(step.manifests_text())
        states.append(load([str(f)]).cluster)
    states.append(load([str(tmp_path / "step0.yaml")]).cluster)
    states[-1].cnps.clear()
    comp = Compiler(states[0], node_ips=("10.244.0.1",))
    comp.firewalls()
    moves = 0
    for cluster in states[1:]:
        before = comp.firewalls()
        changed = comp.sync(cluster)
        fresh = compile_cluster(cluster, node_ips=("10.244.0.1",))
        assert comp.firewalls() == fresh
        moved = {k for k in fresh if before.get(k) != fresh[k]}
        assert moved <= changed  # every pod whose firewall moved is reported
        moves += len(moved)
    assert moves  # the mutations and the final "no CNP" did change firewalls


def test_set_cnp_and_remove_cnp_match_a_fresh_compile(tmp_path):
    """The calls a daemon feeding CNP changes would make (Compiler.set_cnp / remove_cnp)."""
    from enforcer.compiler.compile import Compiler
    [case] = [c for c in CASES if c.name == "CNPAdminTierIntegration"]
    f = tmp_path / "s.yaml"
    f.write_text(case.steps[0].manifests_text())
    full = load([str(f)]).cluster
    bare = load([str(f)]).cluster
    bare.cnps.clear()
    comp = Compiler(bare, node_ips=("10.244.0.1",))
    plain = comp.firewalls()
    changed = set()
    for c in full.cnps.values():
        changed |= comp.set_cnp(c)
    assert comp.firewalls() == compile_cluster(full, node_ips=("10.244.0.1",))
    assert changed == {k for k in plain if plain[k] != comp.firewalls()[k]} != set()
    for name in list(full.cnps):
        comp.remove_cnp(name)
    assert comp.firewalls() == plain
