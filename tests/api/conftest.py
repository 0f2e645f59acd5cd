"""Fixtures for tests that need a real kube-apiserver (see enforcer/k8s/controlplane.py).

One control plane serves the whole session (starting one costs seconds); tests keep apart by
creating their Kubernetes namespaces under ``api_namespace_prefix``. Without the binaries
(no Go, ``make k8s`` not run) every test here is skipped with the reason.
"""
from __future__ import annotations

import itertools
import re

import pytest

from enforcer.k8s.controlplane import ControlPlane, missing_binaries

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()  # and atexit in the module, and PDEATHSIG in the children, if this never runs


@pytest.fixture(scope="module")
def private_control_plane(tmp_path_factory, request):
    """A control plane of the module's own, for modules that freeze, stop or restart it
    (the session's shared one must stay up for every other module)."""
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    cp = ControlPlane(tmp_path_factory.mktemp(f"cp-{request.module.__name__.rsplit('.', 1)[-1]}"))
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kubectl(control_plane):
    return control_plane.kubectl


@pytest.fixture
def api_namespace_prefix(request) -> str:
    """``t<n>-<test name>-``: unique per test in the session, short enough for a DNS label
    (a test appends up to ~25 characters of its own)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_")).strip("-")
    return f"t{next(_counter)}-{name[:30].strip('-')}-"


CNP_CRD_NAME = "clusternetworkpolicies.policy.networking.k8s.io"


def install_cnp_crd(cp, crd_file: str, timeout: float = 60.0) -> None:
    """``kubectl apply`` the ClusterNetworkPolicy CRD, then wait until it is Established and
    its resource is served. Not ``kubectl wait --for=condition=Established``: kubectl 1.34
    exits 1 ("status.conditions accessor error: <nil>") instead of waiting when it reads the
    CRD before the API server has written any condition, which a loaded machine shows."""
    import time

    cp.kubectl("apply", "-f", crd_file)
    path = "/apis/" + "/".join(("apiextensions.k8s.io", "v1", "customresourcedefinitions", CNP_CRD_NAME))
    deadline = time.monotonic() + timeout
    while True:
        got = cp.api("GET", path)
        conds = {c.get("type"): c.get("status") for c in (got.body.get("status") or {}).get("conditions") or ()}
        # Established can come a moment before the group is served to a fresh discovery.
        if conds.get("Established") == "True" and cp.api("GET", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies").ok:
            return
        assert time.monotonic() < deadline, f"the CRD {CNP_CRD_NAME} not established within {timeout:g} s: {conds}"
        time.sleep(0.1)
