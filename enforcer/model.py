"""The cluster as the enforcer sees it: frozen, validated, defaults applied.

The loader (manifests.py) builds these from Kubernetes objects; everything downstream
(compile, verdict, render) reads only these types. Field names follow the Kubernetes API
in snake_case so a reader can map them back to the YAML.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from enforcer.cnp.model import ClusterNetworkPolicy

INGRESS = "Ingress"
EGRESS = "Egress"
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry: key, operator (In, NotIn, Exists, DoesNotExist), values."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """matchLabels AND matchExpressions. The empty selector selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def keys(self) -> frozenset[str]:
        """Label keys this selector looks at (a change elsewhere cannot change its result)."""
        return frozenset([k for k, _ in self.match_labels] + [r.key for r in self.match_expressions])

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for r in self.match_expressions:
            if r.operator == "Exists":
                parts.append(r.key)
            elif r.operator == "DoesNotExist":
                parts.append(f"!{r.key}")
            else:
                op = "in" if r.operator == "In" else "notin"
                parts.append(f"{r.key} {op} ({','.join(r.values)})")
        return ",".join(parts) if parts else "<all>"


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class Peer:
    """One entry of from/to. Exactly one of (selectors) or ip_block is set.

    pod_selector only: pods in the policy's namespace. namespace_selector only: all pods of
    matching namespaces. Both: AND. ip_block: addresses.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PortSpec:
    """One ports entry. port None = every port of the protocol; str = a named port."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """One ingress or egress rule. Empty peers = all peers; empty ports = all ports."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()


@dataclass(frozen=True)
class Namespaced:
    """What every namespaced object starts with; ``key`` ("ns/name") is how the cluster,
    the IR and every message name it. Subclasses add their fields after these two, so
    positional construction reads as the API object does: namespace, name, spec..."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NetworkPolicy(Namespaced):
    pod_selector: LabelSelector
    policy_types: frozenset[str]  # effective, defaults applied
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    source: str = field(default="", compare=False)  # file it came from, for messages


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    # pre-v1 annotation net.beta.kubernetes.io/network-policy: DefaultDeny for ingress
    legacy_default_deny: bool = False


@dataclass(frozen=True)
class Pod(Namespaced):
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    ips: tuple[str, ...] = ()  # from status.podIP(s); empty until assigned
    ports: tuple[ContainerPort, ...] = ()
    source: str = field(default="", compare=False)
    # "Deployment/web" when a workload made this pod (enforcer.load.workloads), "" for a Pod
    owner: str = field(default="", compare=False)
    # spec.hostNetwork: the pod shares its node's network namespace and address; as far as
    # policy goes it IS the node (always allowed, SEMANTICS 12), so it gets no firewall.
    host_network: bool = False


@dataclass(frozen=True)
class ServicePort:
    """One spec.ports entry of a Service; target_port is a number or a container port name."""

    port: int
    protocol: str = "TCP"
    target_port: int | str = 0
    name: str = ""


@dataclass(frozen=True)
class Service(Namespaced):
    """A v1 Service as the model reads it (enforcer.load.services): a virtual address in front of
    the pods its selector matches. ``selector`` None: no selector (no endpoints we manage).
    ``cluster_ip`` "" until assigned, "None" for a headless Service."""

    selector: tuple[tuple[str, str], ...] | None
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str = ""
    type: str = "ClusterIP"
    source: str = field(default="", compare=False)


@dataclass(frozen=True)
class ExternalHost:
    """A host outside the cluster (netpol-enforcer/v1alpha1 ExternalHost), for ipBlock cases."""

    name: str
    ips: tuple[str, ...] = ()
    ports: tuple[ContainerPort, ...] = ()

    @property
    def key(self) -> str:
        return self.name


@dataclass
class Cluster:
    """Everything loaded: keyed by name (namespaces, externals) or "ns/name" (pods, policies)."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    externals: dict[str, ExternalHost] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    # hostNetwork pods: they are their node as far as policy goes (SEMANTICS 12), so they
    # are no endpoint of their own; kept to say so (trace) and to count them.
    host_network: dict[str, Pod] = field(default_factory=dict)
    # ClusterNetworkPolicies (enforcer.cnp), by name: the Admin and Baseline tiers.
    cnps: dict[str, "ClusterNetworkPolicy"] = field(default_factory=dict)

    def namespace(self, name: str) -> Namespace:
        """A namespace that no manifest declared still exists, with the label the API sets."""
        ns = self.namespaces.get(name)
        if ns is None:
            ns = Namespace(name, {"kubernetes.io/metadata.name": name})
        return ns
