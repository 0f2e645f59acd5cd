"""A lab's enforcement point: inside each pod (``pod``, the default) or on its node (``host``).

The choice is kept in the lab's directory (``enforce-at``, next to state.json) and read by
every lab command, so ``lab apply``, ``lab stats`` and the rest act where ``lab up`` put
the rules. Host mode wraps the lab's backend (backends/nft_host.py, backends/ipt_host.py
for both iptables flavours): the lab still hands
it a pod's namespace and firewall, and the wrapper puts the pod's chains in the node's
table, dispatched by the pod's node-side veth (``Endpoint.link``).

Switching a lab (``lab apply --enforce-at``) removes the rules of the old place before
installing the new ones, so no stale rules stay in either place.
"""
from __future__ import annotations

import os

from enforcer.errors import LabError
from enforcer.lab import state
from enforcer.lab.state import LabState

FILE = "enforce-at"
HOST_BACKENDS = ("nftables", "iptables", "iptables-legacy")


def load(name: str) -> str:
    try:
        with open(os.path.join(state.lab_dir(name), FILE)) as f:
            return f.read().strip() or "pod"
    except FileNotFoundError:
        return "pod"


def save(name: str, enforce_at: str) -> None:
    with open(os.path.join(state.lab_dir(name), FILE), "w") as f:
        f.write(enforce_at + "\n")


def check(enforce_at: str, backend_name: str) -> None:
    if enforce_at not in ("pod", "host"):
        raise LabError(f"--enforce-at {enforce_at!r}: choose pod or host")
    if enforce_at == "host" and backend_name not in HOST_BACKENDS:
        raise LabError(f"--enforce-at host works with the {', '.join(HOST_BACKENDS)} backends, "
                       f"not {backend_name}")


def node_netns(st: LabState, ep) -> str:
    if ep.node and st.nodes:
        for n in st.nodes:
            if n["name"] == ep.node:
                return n["netns"]
    return st.node_netns


def wrap(st: LabState, backend, enforce_at: str):
    """``backend`` itself in pod mode; in host mode the node-side placement of it."""
    if enforce_at != "host":
        return backend
    check(enforce_at, backend.name)
    from backends.placement import HostMap

    def where() -> dict[str, tuple[str, str, str]]:
        return {e.netns: (node_netns(st, e), e.link, e.key) for e in st.endpoints.values() if e.kind == "pod"}

    if backend.name != "nftables":  # iptables, iptables-legacy: backends/ipt_host.py
        from backends.ipt_host import IptHostBackend

        return IptHostBackend(HostMap(where), backend)
    from backends.nft_host import NftHostBackend

    return NftHostBackend(HostMap(where), backend)


def switch(st: LabState, pod_backend, new: str, old: str) -> None:
    """Remove every rule of the ``old`` place (the new place is filled by the apply that
    follows: all pods get a full apply, see ``control.apply``)."""
    if new == old:
        return
    if old == "pod":
        for e in st.endpoints.values():
            if e.kind == "pod":
                pod_backend.remove(e.netns)
        return
    host = wrap(st, pod_backend, "host")
    nodes = {node_netns(st, e) for e in st.endpoints.values() if e.kind == "pod"} | {st.node_netns}
    for n in sorted(nodes):
        host.remove_node(n)
