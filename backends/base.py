"""The seam between the rule model and the kernel.

A backend turns a ``PodFirewall`` (enforcer.ir) into a ruleset and installs it inside one
network namespace. It imports only the IR and the errors: never the loader or compiler.

``FakeBackend`` keeps "installed" rulesets in a dict: unit tests and ``--dry-run`` use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from enforcer.errors import ApplyError
from enforcer.ir import PodFirewall, set_deltas, structure


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did: ``"none"`` (already in place), ``"delta"`` (set elements only) or
    ``"full"`` (table replaced in one transaction)."""

    kind: str
    elements_added: int = 0
    elements_removed: int = 0


def plan(previous: PodFirewall | None, desired: PodFirewall) -> str:
    """Which kind of apply turns ``previous`` into ``desired`` (shared by every backend)."""
    if previous is None:
        return "full"
    if previous == desired:
        return "none"
    if structure(previous) == structure(desired):
        return "delta"
    return "full"


@runtime_checkable
class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Probe tools and kernel features; raise BackendUnavailable with what is missing."""

    def render(self, fw: PodFirewall) -> str:
        """The exact ruleset text that ``apply`` would install for this pod."""

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        """Install ``fw`` in ``netns`` atomically. With ``previous`` (what is installed now),
        only set elements change when the structure is the same. On failure raise
        ApplyError and leave the previous rules in force."""

    def remove(self, netns: str) -> None:
        """Remove everything this backend installed in ``netns`` (idempotent)."""

    def read(self, netns: str) -> str | None:
        """What of ours is installed in ``netns`` (ruleset text), or None if nothing."""


@dataclass
class FakeBackend:
    """In-memory backend: records what would be installed, for unit tests and --dry-run."""

    name: str = "fake"
    installed: dict[str, PodFirewall] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)  # netns names whose apply fails

    def check(self) -> None:
        return None

    def render(self, fw: PodFirewall) -> str:
        return repr(fw)

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        if netns in self.fail_on:
            raise ApplyError(f"{netns}: injected failure")
        kind = plan(previous if previous is not None else self.installed.get(netns), fw)
        self.calls.append((kind, netns))
        added = removed = 0
        if kind == "delta":
            for d in set_deltas(self.installed.get(netns) or previous, fw):  # type: ignore[arg-type]
                added += len(d.add)
                removed += len(d.remove)
        self.installed[netns] = fw
        return ApplyResult(kind, added, removed)

    def remove(self, netns: str) -> None:
        self.installed.pop(netns, None)

    def read(self, netns: str) -> str | None:
        fw = self.installed.get(netns)
        return None if fw is None else self.render(fw)
