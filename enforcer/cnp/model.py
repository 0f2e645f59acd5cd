"""ClusterNetworkPolicy as the enforcer reads it: frozen, validated, defaults applied."""
from __future__ import annotations

from dataclasses import dataclass, field

from enforcer.model import LabelSelector

ADMIN = "Admin"
BASELINE = "Baseline"
TIERS = (ADMIN, BASELINE)
ACCEPT, DENY, PASS = "Accept", "Deny", "Pass"
ACTIONS = (ACCEPT, DENY, PASS)


@dataclass(frozen=True)
class Selection:
    """A subject or a namespaces/pods peer: pods whose namespace matches ``namespaces``
    and (when ``pods`` is set) whose own labels match ``pods``. Never hostNetwork pods."""

    namespaces: LabelSelector
    pods: LabelSelector | None = None

    def __str__(self) -> str:
        if self.pods is None:
            return f"pods of namespaces {self.namespaces}"
        return f"pods {self.pods} in namespaces {self.namespaces}"


@dataclass(frozen=True)
class CNPPeer:
    """Exactly one of ``selection`` (namespaces or pods peer) or ``networks`` (CIDRs)."""

    selection: Selection | None = None
    networks: tuple[str, ...] = ()

    def __str__(self) -> str:
        return str(self.selection) if self.selection is not None else "networks " + ",".join(self.networks)


@dataclass(frozen=True)
class CNPProtocol:
    """One protocols entry: a protocol with a port or an inclusive range, or a named port
    (``named``: a containerPort name of the destination pod, any protocol)."""

    protocol: str | None = None  # "TCP" | "UDP" | "SCTP"; None for a named port
    first: int | None = None
    last: int | None = None
    named: str | None = None

    def __str__(self) -> str:
        if self.named is not None:
            return f"named port {self.named}"
        if self.first is None:
            return self.protocol or ""
        rng = str(self.first) if self.last in (None, self.first) else f"{self.first}-{self.last}"
        return f"{rng}/{self.protocol}"


@dataclass(frozen=True)
class CNPRule:
    name: str
    action: str
    peers: tuple[CNPPeer, ...]
    protocols: tuple[CNPProtocol, ...] = ()  # empty: every protocol and port


@dataclass(frozen=True)
class ClusterNetworkPolicy:
    name: str
    tier: str
    priority: int
    subject: Selection
    ingress: tuple[CNPRule, ...] = ()
    egress: tuple[CNPRule, ...] = ()
    source: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return self.name

    def order(self) -> tuple:
        """Evaluation order inside the tiers: Admin before Baseline, lower priority first.
        Equal priorities are left to the implementation by the API; we take the name, so
        the order is at least stable and written down (docs/concepts.md)."""
        return (TIERS.index(self.tier), self.priority, self.name)
