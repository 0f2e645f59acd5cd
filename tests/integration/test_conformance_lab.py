"""The upstream e2e conformance cases with real packets, on each backend.

One lab per backend for the whole module (bringing up nine pods costs more than a case):
each case drives the lab through its steps with ``lab.apply`` (the lab converges
incrementally, as ``netpol lab apply`` does), probes the step's ports once and compares
with the case's expectation. A failure prints the upstream-style tables.

Speed: a blocked pair costs the probe timeout (twice: one retry), so the module probes with
a short timeout (``NETPOL_CONFORMANCE_TIMEOUT``, default 0.3 s; an allowed pair answers in
well under a millisecond on a veth). Before reporting a wrong cell it probes the step
again with the lab's default timeout, so a slow moment on a busy machine is not reported
as a policy bug.

SCTP checks are skipped: this kernel has no SCTP sockets (netfilter still matches SCTP,
and the model runner covers those checks).
"""
from __future__ import annotations

import os
import pytest

from enforcer.views.reachability import compare

from tests.conformance.cases import load_cases

pytestmark = pytest.mark.root

BACKENDS = ["nftables", "iptables"]
CASES = load_cases()
FAST_TIMEOUT = float(os.environ.get("NETPOL_CONFORMANCE_TIMEOUT", "0.3"))
CONFIRM_TIMEOUT = 1.0
NO_SCTP = "SCTP sockets are not available on this kernel (CONFIG_IP_SCTP unset); the model runner checks it"


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request, netpol_lab_module):
    """A lab with the base model and no policy, shared by every case of one backend."""
    base = [o for o in CASES[0].steps[0].objects if o["kind"] != "NetworkPolicy"]
    return netpol_lab_module(base, request.param)


def _check_step(lab, case, index: int, timeout: float):
    """Probe one step once over all its probeable ports; return the failing comparisons."""
    step = case.steps[index]
    checks = [c for c in step.checks if c.probeable]
    ports = list(dict.fromkeys(p for c in checks for p in c.ports))
    observed = lab.probe(ports=ports, timeout=timeout)
    failures = []
    for check in checks:
        result = compare(check.rows(case.endpoints), observed,
                         title=f"{case.id} step {index + 1} ({step.name}) {check.label} on {lab.backend}")
        if result.wrong:
            failures.append(result)
    return failures


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lab_matches_upstream_expectation(lab, case, tmp_path):
    if not case.probeable:
        pytest.skip(f"{case.id}: every check probes SCTP. {NO_SCTP}")
    skipped: list[str] = []
    for index, step in enumerate(case.steps):
        lab.apply([str(step.write(tmp_path, f"step{index + 1}"))])
        skipped += [f"step {index + 1} {c.label}" for c in step.checks if not c.probeable]
        if not any(c.probeable for c in step.checks):
            continue
        failures = _check_step(lab, case, index, FAST_TIMEOUT)
        if failures:  # confirm with the patient timeout before calling it a bug
            failures = _check_step(lab, case, index, CONFIRM_TIMEOUT)
        assert not failures, f"{case.title}\n\n" + "\n".join(f.text for f in failures)
    if skipped:
        print(f"{case.id}: not probed: {', '.join(skipped)}. {NO_SCTP}")
