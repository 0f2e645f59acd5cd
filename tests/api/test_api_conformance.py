"""The upstream e2e NetworkPolicy cases, with the desired state in a real API server and
``netpol run --kubeconfig`` (one node, started directly) enforcing it in a lab's namespaces
(root).

Where the e2e cases run through the API: every case in tests/api/test_api_lab.py (kubectl
on a 3-node API lab, each node's agent enforcing), once, the backends taking turns case by
case; the lab-side run (tests/integration/test_conformance_lab.py) has every case on both
backends. This module adds the cases about changes (a policy updated or deleted, a
namespace or pod relabelled: ``UPDATES``) on the backend test_api_lab does *not* give
them, so each of those runs through the API on both backends, here through the
standalone daemon and a kubelet's view of pods (bound, then reported running through the
status subresource; tests/api/apinode.py). ``NETPOL_API_CONFORMANCE=all`` runs every case
here, on both backends.

The model's namespaces and pods are created through the API once; each case step is then
made true in the API (policies applied, changed and deleted with kubectl; pod and
namespace labels set by merge patch) and the lab is probed until it shows the step's
expectation (the daemon converges in milliseconds; the wait allows a busy machine), then
once more with a patient timeout if any cell is wrong.
"""
from __future__ import annotations

import os
import time

import pytest

from enforcer.views.reachability import compare
from tests.api.apinode import ApiCluster, start_daemon
from tests.conformance.cases import load_cases

pytestmark = pytest.mark.root

BACKENDS = ["nftables", "iptables"]
ALL = load_cases()
# The cases about changes, each on the backend tests/api/test_api_lab.py does not run it on
# (it gives the i-th case BACKENDS[i % 2]).
UPDATES = ("20-updated-policy", "21-updated-namespace", "22-updated-pod", "24-deny-updated-pod",
           "33-deleted-policies", "extra-6-relabel-pod-out-of-policy", "extra-7-relabel-namespace-out-of-policy")
if os.environ.get("NETPOL_API_CONFORMANCE") == "all":
    RUNS = [(b, c) for b in BACKENDS for c in ALL]
else:
    RUNS = [(BACKENDS[(i + 1) % 2], c) for i, c in enumerate(ALL) if c.id in UPDATES]
RUNS.sort(key=lambda r: BACKENDS.index(r[0]))
FAST = 0.3
PATIENT = 1.0
WAIT = 15.0


@pytest.fixture(scope="module")
def cp(private_control_plane):
    """A control plane of its own: the daemon enforces what the whole API server holds, and
    other modules' pods and ClusterNetworkPolicies in the shared one must not reach it."""
    return private_control_plane


@pytest.fixture(scope="module")
def base():
    return [o for o in ALL[0].steps[0].objects if o["kind"] != "NetworkPolicy"]


@pytest.fixture(scope="module")
def lab(netpol_lab_module, base):
    return netpol_lab_module(base, "fake")  # namespaces, addresses and servers; no rules


@pytest.fixture(scope="module")
def api(cp, lab, base):
    c = ApiCluster(cp)
    c.apply([o for o in base if o["kind"] == "Namespace"])
    for o in base:
        if o["kind"] == "Pod":
            c.create_pod(o)
    return c


@pytest.fixture(scope="module", params=BACKENDS)
def daemon(request, cp, api, lab, tmp_path_factory):
    prefix = f"netpol-{lab.name}-"
    d = start_daemon(cp, str(tmp_path_factory.mktemp(f"d-{request.param}")), prefix,
                     backend=request.param, args=["--log-level", "info"])
    d.backend = request.param
    yield d
    d.close()
    from backends import registry
    from enforcer import netns

    be = registry.get(request.param)
    for name in netns.list_names(prefix):
        be.remove(name)


def _failures(lab, case, index, timeout):
    step = case.steps[index]
    checks = [c for c in step.checks if c.probeable]
    ports = list(dict.fromkeys(p for c in checks for p in c.ports))
    observed = lab.probe(ports=ports, timeout=timeout)
    out = []
    for check in checks:
        r = compare(check.rows(case.endpoints), observed,
                    title=f"{case.id} step {index + 1} ({step.name}) {check.label}")
        if r.wrong:
            out.append(r)
    return out


@pytest.mark.parametrize("daemon, case", [pytest.param(b, c, id=f"{b}-{c.id}") for b, c in RUNS],
                         indirect=["daemon"], scope="module")
def test_api_daemon_matches_upstream_expectation(daemon, api, lab, case):
    if not case.probeable:
        pytest.skip(f"{case.id}: every check probes SCTP (no SCTP sockets on this kernel)")
    for index, step in enumerate(case.steps):
        api.converge(step.objects)
        if not any(c.probeable for c in step.checks):
            continue
        deadline = time.monotonic() + WAIT
        failures = _failures(lab, case, index, FAST)
        while failures and time.monotonic() < deadline:
            time.sleep(0.2)
            failures = _failures(lab, case, index, FAST)
        if failures:
            failures = _failures(lab, case, index, PATIENT)
        assert not failures, f"{case.title} ({daemon.backend})\n\n" + "\n".join(f.text for f in failures)
    assert "Traceback" not in daemon.log_text()
