"""A lab's endpoints (pods and external hosts): made, wired and removed one at a time, and
the lab's servers and Services kept in step with them. Building (converge.py) and tearing
down (teardown.py) are sequences of these steps.

A pod's firewall goes in before its namespace has a link (``add_pod``): fail-closed,
SEMANTICS 15. Every namespace is journaled before it is created (topology.create_netns), so
a crash cannot leak it, and nothing without the lab's prefix is ever removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from enforcer.compiler import ipam
from enforcer import netns
from enforcer.ir import PodFirewall
from enforcer.lab import naming, serverctl, state, topology
from enforcer.lab.state import Endpoint, LabState
from enforcer.model import Cluster


@dataclass
class Outcome:
    """What a lifecycle command did, for the command line to print."""

    notes: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    applies: dict[str, str] = field(default_factory=dict)  # pod -> "full" | "delta"
    seconds: float = 0.0


def ports_of(items) -> tuple[tuple[int, str], ...]:
    return tuple(sorted({(p.port, p.protocol) for p in items}))


def _unique_netns(st: LabState, name: str) -> str:
    """Pod ``a-b/c`` and pod ``a/b-c`` would share a name; the second gets a suffix."""
    used = {e.netns for e in st.endpoints.values()}
    if name not in used:
        return name
    n = 2
    while f"{name}~{n}" in used:
        n += 1
    return f"{name}~{n}"


def new_endpoint(st: LabState, cluster: Cluster, key: str, kind: str) -> Endpoint:
    """The next endpoint of the lab for pod (or external host) ``key``: its names, addresses
    and MACs. Nothing is made yet."""
    index = st.next_index
    st.next_index += 1
    if kind == "pod":
        pod = cluster.pods[key]
        return Endpoint(key, "pod", _unique_netns(st, naming.pod_netns(st.name, key)),
                        naming.pod_link(st.name, index), tuple(pod.ips), ports_of(pod.ports),
                        mac=topology.mac("pod", index))
    ext = cluster.externals[key]
    return Endpoint(key, "external", _unique_netns(st, naming.external_netns(st.name, key)),
                    naming.external_link(st.name, index), tuple(ext.ips), ports_of(ext.ports),
                    ipam.external_node_addrs(cluster, key),
                    mac=topology.mac("ext", index), node_mac=topology.mac("node", index))


def journal(st: LabState):
    return lambda name: state.journal(st.name, name)


def add_pod(st: LabState, node: topology.Node, backend, ep: Endpoint, fw: PodFirewall) -> None:
    topology.create_netns(st.name, ep.netns, journal(st))
    st.endpoints[ep.key] = ep
    backend.apply(ep.netns, fw)  # isolation first: nothing in the pod can talk yet
    st.firewalls[ep.key] = fw
    node.add_pod(ep, st.cidrs)


def add_external(st: LabState, node: topology.Node, ep: Endpoint) -> None:
    topology.create_netns(st.name, ep.netns, journal(st))
    st.endpoints[ep.key] = ep
    node.add_external(ep)


def add_all(st: LabState, node, backend, cluster: Cluster, firewalls: dict[str, PodFirewall],
            out: Outcome, placement: dict[str, str] | None = None) -> None:
    """Every pod (its firewall first) and external host of a new lab, on ``node`` (a
    topology.Node, or the multi-node Fabric with each pod's node in ``placement``). The
    state is saved whatever happens, so that a failed build is removed completely."""
    try:
        for key in sorted(cluster.pods):
            ep = new_endpoint(st, cluster, key, "pod")
            ep.node = placement[key] if placement is not None else ""
            add_pod(st, node, backend, ep, firewalls[key])
            out.added.append(key)
        for key in sorted(cluster.externals):
            add_external(st, node, new_endpoint(st, cluster, key, "external"))
            out.added.append(key)
    finally:
        st.cluster = cluster
        state.save(st)


def remove_netns(lab: str, name: str, backend=None) -> None:
    if not naming.carries(lab, name):  # never anything without this lab's prefix
        return
    netns.remove(name)
    if backend is not None:
        try:
            backend.remove(name)  # drops handles kept for the (now gone) namespace
        except Exception:
            pass


def prefixlen(cidr: str) -> int:
    return int(cidr.rsplit("/", 1)[1])


def firewalls_in_force(st: LabState) -> dict[str, PodFirewall]:
    """The firewall installed in each pod, compiled (the front half's compile step, with
    the lab's gateways) for pods that have none on record: a crash between an apply and
    the state's save, or a lab made before firewalls were kept in its state."""
    firewalls = dict(st.firewalls)
    missing = [k for k in st.cluster.pods if k not in firewalls]
    if missing:
        from enforcer.compiler import frontend

        compiled = frontend.firewalls(frontend.Addresses(st.cluster, tuple(st.cidrs), tuple(st.gateways)))
        firewalls.update({k: compiled[k] for k in missing if k in compiled})
    return firewalls


def server_sync(st: LabState, endpoints: Iterable[Endpoint]) -> list[str]:
    """The lab's server daemon serving the ports of ``endpoints`` (started, or reloaded)."""
    if st.no_servers:
        endpoints = []  # lab up --no-servers: every port is the test's own (lab exec)
    st.server_generation += 1
    notes = serverctl.write_config(st.name, endpoints, st.server_generation)
    if st.server_pid and serverctl.is_ours(st.server_pid, st.name):
        serverctl.reload(st.name, st.server_pid, st.server_generation)
    else:
        st.server_pid = serverctl.start(st.name, st.node_netns, st.server_generation)
    return notes


def services_sync(st: LabState, had_services: bool) -> None:
    """The Services' DNAT (enforcer/lab/services.py), from the cluster in force."""
    from enforcer.lab import services as lab_services

    pods = [e.netns for e in st.endpoints.values() if e.kind == "pod"]
    lab_services.sync(st.cluster, pods, st.node_netns, had_services)
