"""The ClusterNetworkPolicy conformance scenarios (tests/conformance/cnp/) with real
packets, on each backend (nftables, iptables through iptables-restore, iptables-legacy through
python-iptables): every scenario on nftables, and on one iptables flavour, the two taking
turns (``SCENARIO_RUNS``; they render the same rules and differ in the loader, which every
scenario exercises alike; pod mode's tier rules, read back and compared with the rendering,
on all three: test_installed_rules_are_what_render_says_and_tiers_leave_cleanly). One lab per backend with upstream's model (base.yaml); each
scenario's steps are applied in order (``lab.apply``, incremental as ``netpol lab apply``)
and every probe of the step is a real connection from the client pod's namespace to the
server pod's IP. Denied must be dropped (a timeout, or EPERM when the source's own egress
chain drops a UDP datagram), as upstream requires: a refusal is a failure.

SCTP probes are skipped (this kernel has no SCTP sockets); the model runner checks them.
"""
from __future__ import annotations

import os

import pytest
import yaml

from tests.conformance.cnp.cases import BASE, load_cases

pytestmark = pytest.mark.root

BACKENDS = ["nftables", "iptables", "iptables-legacy"]
CASES = load_cases()
FAST_TIMEOUT = float(os.environ.get("NETPOL_CONFORMANCE_TIMEOUT", "0.3"))
CONFIRM_TIMEOUT = 1.0


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request, netpol_lab_module):
    base = yaml.safe_load(BASE.read_text())["items"]
    return netpol_lab_module(base, request.param)


def _probe(lab, probes, timeout: float) -> list[str]:
    from enforcer.lab import state
    from enforcer.lab.probe import Target
    from enforcer.lab.probe import run as run_probes

    st = state.load(lab.name)
    targets = [Target(st.endpoints[p.src].netns, st.endpoints[p.dst].ips[0], p.port, p.protocol) for p in probes]
    wrong = []
    for p, o in zip(probes, run_probes(targets, timeout=timeout, retries=1)):
        # Denied = dropped: a timeout; or EPERM when the source's own egress chain drops a
        # datagram (the kernel tells the local sender; upstream's enforcement sits outside
        # the pod, where the sender sees a timeout instead). Never a refusal.
        ok = o.allowed if p.allowed else (o.detail == "timeout" and o.error in ("", "EPERM"))
        if not ok:
            wrong.append(f"{p}: got {o.detail}{' ' + o.error if o.error else ''}")
    return wrong


IPT = ["iptables", "iptables-legacy"]


def checkerboard(cases, pair: list[str]) -> dict[str, str]:
    """Scenario name -> which of ``pair`` runs it: they alternate within each tier's
    scenarios (Egress/Gress/Ingress x TCP/UDP/SCTP ...), the Baseline tier starting with
    the other one. So each gets both directions, every protocol and both tiers, and a
    protocol in one tier on both between them (plain alternation over the file would give
    one of them every TCP scenario: the scenarios come as SCTP, TCP, UDP triples)."""
    turn, seen = {}, {}
    for c in cases:
        tier = "Baseline" if c.name.startswith("CNPBaseline") else "Admin"
        n = seen[tier] = seen.get(tier, -1) + 1
        turn[c.name] = pair[(n + (tier == "Baseline")) % 2]
    return turn


# Every scenario on nftables and on one iptables flavour (checkerboard). pytest groups the
# runs by backend, so each backend's lab still comes up once.
IPT_TURN = checkerboard(CASES, IPT)
SCENARIO_RUNS = [(b, c) for b in BACKENDS for c in CASES if b in ("nftables", IPT_TURN[c.name])]


@pytest.mark.parametrize("lab, case", [pytest.param(b, c, id=f"{b}-{c.name}") for b, c in SCENARIO_RUNS],
                         indirect=["lab"], scope="module")
def test_scenario_with_real_packets(lab, case, tmp_path):
    for k, step in enumerate(case.steps):
        f = tmp_path / f"step{k}.yaml"
        f.write_text(step.manifests_text())
        lab.apply([str(f)])
        probes = [p for p in step.probes if p.protocol != "SCTP"]
        if not probes:
            continue
        wrong = _probe(lab, probes, FAST_TIMEOUT)
        if wrong:  # confirm with a patient timeout before calling it a bug
            wrong = _probe(lab, probes, CONFIRM_TIMEOUT)
        assert not wrong, f"{case.name} step {k} ({step.name}) on {lab.backend}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("flavour", ["tiers then none"])
def test_installed_rules_are_what_render_says_and_tiers_leave_cleanly(lab, flavour, tmp_path):
    """After a tiered apply every pod's kernel state is exactly its rendering (verify); after
    the CNPs are gone too, i.e. no tier chain or set is left behind."""
    from backends import registry
    from enforcer.lab import state

    [case] = [c for c in CASES if c.name == "CNPAdminTierIntegration"]
    for text in (case.steps[0].manifests_text(), BASE.read_text()):
        f = tmp_path / "state.yaml"
        f.write_text(text)
        lab.apply([str(f)])
        st = state.load(lab.name)
        backend = registry.get(st.backend)
        tiered = [k for k, fw in st.firewalls.items() if fw.ingress.admin or fw.egress.admin]
        assert bool(tiered) == (text != BASE.read_text())
        for key, fw in st.firewalls.items():
            assert backend.verify(st.endpoints[key].netns, fw), f"{key} on {st.backend}: kernel != render"
        if not tiered:
            listing = backend.read(st.endpoints[next(iter(st.firewalls))].netns) or ""
            assert "admin" not in listing.lower() and "NETPOL-BASE" not in listing


# ------------------------------------------------------------------ lab drops and stats

DENIES = """
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b-refuses-c}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: b}}}}
  ingress:
  - {name: no-c, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: c}}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: a-stays-away-from-c}
spec:
  tier: Baseline
  priority: 50
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: a}}}}
  egress:
  - {name: pass-b, action: Pass, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: b}}}}]}
  - {action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: c}}}}]}
"""


@pytest.fixture(scope="module", params=BACKENDS + ["nftables host", "iptables host"])
def drops_lab(request, netpol_lab_module):
    """Pod mode on every backend; host mode (the node's chains, the node's log socket) too."""
    from tests.unit.clusters import three_pods
    backend, _, at = request.param.partition(" ")
    return netpol_lab_module(three_pods() + DENIES, backend, enforce_at=at or "pod")


def test_lab_drops_names_the_tier_rule_that_dropped_a_packet(drops_lab):
    """An Admin Deny (ingress) and a Baseline Deny (egress, an unnamed rule after a Pass)
    are logged like the NetworkPolicy drop: `lab drops` says which tier, policy and rule."""
    import json

    from enforcer.lab import observe
    from tests.integration.test_observe import connect, wait_for

    lab = drops_lab
    with observe.DropReader(lab.name) as reader:
        sport, connected = connect(lab, "x/c", "x/b")
        assert not connected
        d = wait_for(reader, "x/b", "ingress", sport)
        assert d is not None, f"the Admin Deny's drop was not logged on {lab.backend}"
        r = d.tier_rule
        assert (r.tier, r.policy, r.rule_index, r.name, r.action) == ("Admin", "b-refuses-c", 0, "no-c", "Deny")
        assert (d.src_id, d.dst_id, d.isolated_by) == ("x/c", "x/b", ())
        assert observe.format_drop(d).endswith(
            "(x/c) denied by Admin ClusterNetworkPolicy b-refuses-c (priority 10) ingress[0] ('no-c')")
        assert json.loads(json.dumps(d.to_json()))["denied_by"] == {
            "tier": "Admin", "policy": "b-refuses-c", "priority": 10, "direction": "ingress",
            "rule_index": 0, "rule_name": "no-c", "action": "Deny"}
        sport, connected = connect(lab, "x/a", "x/c")
        assert not connected
        d = wait_for(reader, "x/a", "egress", sport)
        assert d is not None, f"the Baseline Deny's drop was not logged on {lab.backend}"
        assert (d.tier_rule.tier, d.tier_rule.policy, d.tier_rule.rule_index) == ("Baseline", "a-stays-away-from-c", 1)
        assert observe.format_drop(d).endswith(
            "(x/c) denied by Baseline ClusterNetworkPolicy a-stays-away-from-c (priority 50) egress[1]")
        # Passed and allowed traffic is no drop.
        sport, connected = connect(lab, "x/a", "x/b")
        assert connected
        assert wait_for(reader, "x/a", "egress", sport, seconds=0.5) is None


def test_lab_stats_counts_tier_rules_with_their_action(drops_lab):
    from enforcer.lab import observe
    from tests.integration.test_observe import connect

    lab = drops_lab
    rule = "Admin b-refuses-c ingress[0] no-c Deny"

    def drops() -> int:
        _, rows = observe.stats(lab.name, "x/b")
        [row] = [r for r in rows if r.rule == rule]
        assert (row.direction, row.action, row.policy, row.rule_index) == ("ingress", "drop", "b-refuses-c", 0)
        return row.packets

    before = drops()
    assert not connect(lab, "x/c", "x/b", timeout=0.3)[1]
    assert drops() > before
    _, rows = observe.stats(lab.name, "x/b")
    assert [r.action for r in rows if r.rule == "ingress Admin tier"] == ["jump"]
