"""pytest plugin (entry point ``pytest11: netpol``): the ``netpol_lab`` fixture.

    def test_db_only_from_api(netpol_lab):
        lab = netpol_lab("examples/shop/", backend="nftables")
        lab.assert_matches("model")                 # the kernel does what the model says
        lab.apply(["examples/shop/", "deny-all.yaml"])
        rows = lab.probe(ports=["5432/TCP"])        # [{"from", "to", "port", ..., "allowed"}]
        r = Reachability(["shop/api", "shop/db", "shop/web"], ports=["5432/TCP"])
        r.expect_all_ingress("shop/db", False)
        lab.assert_matches(r)                       # prints expected/observed tables if not

``netpol_lab(manifests, backend="nftables", ipv6=False)`` brings up a lab with a unique
name (``npt-<hex>``) and returns a :class:`LabHandle`; every lab the test made is torn down
when the test ends, passed or failed. ``manifests`` is a path (file or directory), a list
of paths, YAML/JSON text, a list of Kubernetes objects as dicts, or an
``enforcer.model.Cluster``. Tests using the fixture are skipped when not run as root.
"""
from __future__ import annotations

import atexit
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytest

_live: set[str] = set()  # labs made in this process and not yet removed (atexit safety net)


def _down_leftovers() -> None:
    from enforcer.lab import control

    for name in list(_live):
        try:
            control.down(name)
        except Exception:
            pass
        _live.discard(name)


atexit.register(_down_leftovers)


def _cluster(manifests: Any, workdir: Path):
    """Turn what a test passed into a loaded cluster."""
    from enforcer.model import Cluster

    if isinstance(manifests, Cluster):
        return manifests
    paths: list[str]
    if isinstance(manifests, (str, os.PathLike)) and not _looks_like_text(manifests):
        paths = [os.fspath(manifests)]
    elif isinstance(manifests, str):
        paths = [_write(workdir, manifests)]
    elif isinstance(manifests, dict) or (isinstance(manifests, (list, tuple)) and manifests
                                         and all(isinstance(m, dict) for m in manifests)):
        import yaml

        docs = [manifests] if isinstance(manifests, dict) else list(manifests)
        paths = [_write(workdir, yaml.safe_dump_all(docs, sort_keys=False))]
    elif isinstance(manifests, (list, tuple)):
        paths = []
        for m in manifests:
            if isinstance(m, str) and _looks_like_text(m):
                paths.append(_write(workdir, m))
            else:
                paths.append(os.fspath(m))
    else:
        raise TypeError(f"netpol_lab: cannot use {type(manifests).__name__} as manifests")
    from enforcer import manifests as loader

    return loader.load(paths).cluster


def _looks_like_text(value: Any) -> bool:
    return isinstance(value, str) and ("\n" in value or value.lstrip().startswith(("{", "[", "apiVersion", "kind")))


def _write(workdir: Path, text: str) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"manifests-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(text)
    return str(path)


def _ports(ports: Iterable[Any] | None) -> list[tuple[int, str]] | None:
    from enforcer.reachability import parse_port

    if ports is None:
        return None
    if isinstance(ports, (str, int)):
        ports = str(ports).split(",")
    return [parse_port(p) for p in ports]


class LabHandle:
    """A running lab, for one test. Methods raise enforcer.errors.NetpolError on failure."""

    def __init__(self, name: str, backend: str, workdir: Path):
        self.name = name
        self.backend = backend
        self._workdir = workdir

    @property
    def cluster(self):
        """The cluster in force (pods with their lab addresses)."""
        from enforcer.lab import control

        return control.cluster_of(self.name)

    def apply(self, manifests: Any):
        """Make ``manifests`` the lab's whole desired state (incremental, like ``lab apply``)."""
        from enforcer.lab import control

        return control.apply(self.name, _cluster(manifests, self._workdir))

    def probe(self, ports: Iterable[Any] | str | None = None, *, timeout: float = 1.0,
              family: int = 4) -> list[dict]:
        """Real probes between every ordered pair; rows as ``netpol probe -o json``."""
        from enforcer.lab import control

        return control.probe(self.name, _ports(ports), family=family, timeout=timeout).rows

    def expected(self, ports: Iterable[Any] | str | None = None, *, family: int = 4) -> list[dict]:
        """The model's verdicts for the lab as it is now (what ``--expect model`` compares)."""
        from enforcer.lab import control

        return control.expected(self.name, _ports(ports), family=family)

    def assert_matches(self, expected: Any = "model", *, ports: Iterable[Any] | str | None = None,
                       timeout: float = 1.0, family: int = 4) -> None:
        """Probe and compare with ``expected``: "model", rows (a list of dicts or a
        ``{"results": [...]}`` document), a path to such a JSON file, or a
        ``Reachability``. On any wrong cell, fail with the expected, observed and
        comparison tables and the ``N wrong, N correct`` line."""
        __tracebackhide__ = True
        from enforcer import reachability

        if isinstance(expected, str) and expected == "model":
            want = self.expected(ports, family=family)
        elif isinstance(expected, (str, os.PathLike)):
            want = reachability.load_rows(os.fspath(expected))
        else:
            want = reachability.rows_of(expected)
        probe_ports = _ports(ports) if ports is not None else \
            sorted({(r["port"], r["protocol"]) for r in want}) or None
        got = self.probe(probe_ports, timeout=timeout, family=family)
        result = reachability.compare(want, got, title=f"lab {self.name} ({self.backend})")
        if result.wrong:
            raise AssertionError(f"the lab does not match the expectation:\n{result.text}")

    def down(self) -> None:
        from enforcer.lab import control

        try:
            control.down(self.name)
        finally:
            _live.discard(self.name)

    def __repr__(self) -> str:
        return f"LabHandle({self.name!r}, backend={self.backend!r})"


def _factory(workdir: Path):
    """The lab factory both fixtures hand out, and the teardown they share."""
    made: list[LabHandle] = []

    def factory(manifests: Any, backend: str = "nftables", *, ipv6: bool = False,
                name: str | None = None) -> LabHandle:
        from enforcer.lab import control

        lab_name = name or f"npt-{uuid.uuid4().hex[:8]}"
        handle = LabHandle(lab_name, backend, workdir / lab_name)
        cluster = _cluster(manifests, handle._workdir)
        _live.add(lab_name)
        made.append(handle)
        control.up(lab_name, cluster, backend, ipv6=ipv6)
        return handle

    def teardown() -> None:
        errors = []
        for handle in made:
            try:
                handle.down()
            except Exception as e:  # remove the others anyway, then report
                errors.append(f"{handle.name}: {e}")
        if errors:
            raise RuntimeError("netpol_lab: teardown failed: " + "; ".join(errors))

    return factory, teardown


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("netpol_lab needs root: the lab creates network namespaces")


@pytest.fixture
def netpol_lab(tmp_path: Path):
    """Factory: ``lab = netpol_lab(manifests, backend="nftables")``. Labs are always removed
    at the end of the test."""
    _need_root()
    factory, teardown = _factory(tmp_path)
    try:
        yield factory
    finally:
        teardown()


@pytest.fixture(scope="module")
def netpol_lab_module(tmp_path_factory):
    """The same factory, with labs kept for the whole test module (bringing up pods costs
    more than a test: share one lab and drive it with ``lab.apply``)."""
    _need_root()
    factory, teardown = _factory(tmp_path_factory.mktemp("netpol-lab"))
    try:
        yield factory
    finally:
        teardown()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "netpol_lab: a test that brings up a netpol-enforcer lab (root)")


__all__: Sequence[str] = ["LabHandle", "netpol_lab", "netpol_lab_module"]
