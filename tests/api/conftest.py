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
