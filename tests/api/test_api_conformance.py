"""The upstream e2e NetworkPolicy cases, with the desired state in a real API server and
``netpol run --kubeconfig`` enforcing it in a lab's namespaces, on each backend (root).

The model's namespaces and pods are created through the API once (pods bound to the node
and reported running with their lab addresses, as a kubelet would); each case step is then
made true in the API with kubectl (policies applied, changed and deleted; pod and
namespace labels set) and the lab is probed until it shows the step's expectation (the
daemon converges in milliseconds; the wait allows a busy machine), then once more with a
patient timeout if any cell is wrong.

A representative subset of the cases runs here (``SUBSET``: every kind of peer, named
ports, egress, ipBlock with except, updates of policies, pods and namespaces, deletion,
precedence); tests/integration/test_conformance_lab.py runs all of them on the lab
directly. ``NETPOL_API_CONFORMANCE=all`` runs all of them here too.
"""
from __future__ import annotations

import os
import time

import pytest

from enforcer.reachability import compare
from tests.api.apinode import ApiCluster, start_daemon
from tests.conformance.cases import load_cases

pytestmark = pytest.mark.root

BACKENDS = ["nftables", "iptables"]
SUBSET = [
    "01-default-deny-ingress", "02-default-deny-all", "06-namespace-selector",
    "09-pod-selector-or-namespace-selector", "10-pod-selector-and-namespace-selector",
    "14-ports", "15-stacked-policies", "18-named-port-from-namespace", "19-named-port-egress",
    "20-updated-policy", "21-updated-namespace", "22-updated-pod", "25-deny-egress-pod-selector",
    "31-ingress-allow-all-takes-precedence", "33-deleted-policies", "35-egress-cidr-except",
    "40-udp-rule-is-not-tcp", "extra-1-port-range-ingress",
]
ALL = load_cases()
CASES = ALL if os.environ.get("NETPOL_API_CONFORMANCE") == "all" else [c for c in ALL if c.id in SUBSET]
FAST = 0.3
PATIENT = 1.0
WAIT = 15.0


@pytest.fixture(scope="module")
def cp(private_control_plane):
    """Its own control plane: this module freezes and stops the API server (root: the marker)."""
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


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
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
