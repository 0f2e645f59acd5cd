"""The seam between the daemon and where its desired state comes from.

Two sources implement ``Source``: ``sources.DirSource`` (manifest files in watched
directories) and ``kube.ApiSource`` (a Kubernetes API server). The daemon does not know
which one it has: it polls the source on its worker thread for the objects whose
version in force changed, compiles them incrementally and converges, the same path for
both. Unit tests use in-memory fakes of the pieces below each source (the API's is
tests/unit/test_api_source.py's ``FakeApi``).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from enforcer.daemon.sources import Issue, ObjKey
from enforcer.model import Cluster


class Store(Protocol):
    counts: dict[str, int]  # kind -> objects in force

    def cluster(self) -> Cluster: ...

    def issues(self) -> list[Issue]: ...


class Source(Protocol):
    store: Store
    # Called from the source's own threads when something is ready to be polled:
    # (event time, not before) in the daemon's monotonic clock.
    on_ready: Callable[[float, float | None], None]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wait_complete(self, stopping: Callable[[], bool]) -> None:
        """Return once the source has a complete view (nothing is enforced before)."""

    def poll(self, *, full: bool, force: bool) -> tuple[dict[ObjKey, object | None], int]:
        """(objects whose version in force changed -> the object or None, inputs read)."""

    def next_ready(self) -> float | None:
        """When the source wants to be polled again (monotonic), or None."""

    def is_local(self, pod_key: str) -> bool:
        """Whether a pod runs on this node (files: every pod, placed by address)."""

    def health(self) -> tuple[bool, str]: ...

    def describe(self) -> dict[str, Any]: ...

    def register_metrics(self, registry) -> None: ...
