"""``lab up --nodes N`` and ``lab up --api``: the build of a multi-node lab.

The same order as a one-node lab (converge.build): every pod's firewall before its link
(fail-closed), its node's firewall compiled with that node's gateway. Addresses and
firewalls come from the front half (enforcer/compiler/frontend.py ``assign`` with the
nodes and the placement, ``firewalls``), as for one node. An API lab starts
its control plane in a thread first (its start is most of the time), builds the
namespaces meanwhile, then publishes the objects and starts one agent per node
(apilab.py). The agents then own enforcement: what the lab installed at first is what they
compile from the same objects, so they adopt it.
"""
from __future__ import annotations

import time

from enforcer.compiler import frontend
from enforcer.lab import naming, nodes as lab_nodes, state, topology
from enforcer.lab.state import LabState
from enforcer.model import Cluster


def build(name: str, cluster: Cluster, backend, backend_name: str, servers_wanted: bool, *,
          nodes: int, api: bool, node_of: dict[str, str], policies: list[dict],
          enforce_at: str = "pod"):
    from enforcer.lab import endpoints, hostmode

    out = endpoints.Outcome()
    st = LabState(name=name, backend=backend_name, node_netns=naming.node_netns(name),
                  bridge=lab_nodes.underlay_bridge(name), created=time.time(),
                  no_servers=not servers_wanted)
    st.nodes = lab_nodes.plan_nodes(name, nodes, cluster)
    backend = hostmode.wrap(st, backend, enforce_at)  # host: each node's table, its own pods
    names = [n["name"] for n in st.nodes]
    placement = lab_nodes.place([k for k, p in cluster.pods.items() if not p.host_network], names, node_of)
    # IPv4 only (nodes.plan_nodes refuses IPv6 pods); each pod's address from its node's CIDR.
    plan = frontend.assign(cluster, lab=frontend.Wiring(nodes=tuple(st.nodes), placement=placement))
    cluster, st.cidrs, st.gateways = plan.cluster, plan.cidrs, plan.node_ips
    firewalls = frontend.firewalls(plan)
    starter = None
    if api:
        from enforcer.lab import apilab

        _check_prefixes(name)

        st.api = {"workdir": apilab.workdir(name), "agents": {}}
        starter = apilab.Starter(st)
    state.save(st)
    if starter is not None:
        starter.start()
    try:
        journal = endpoints.journal(st)
        topology.create_netns(name, st.node_netns, journal)
        with lab_nodes.Fabric.build(st, journal) as fabric:
            endpoints.add_all(st, fabric, backend, cluster, firewalls, out, placement)
        endpoints.services_sync(st, had_services=False)
        out.notes += endpoints.server_sync(st, st.endpoints.values())
    except BaseException:
        if starter is not None:
            starter.thread.join()  # never leave a control plane starting behind a failure
        raise
    if starter is not None:
        from enforcer.lab import apilab

        waited = apilab.start(st, starter, cluster, policies)
        out.notes.append(f"control plane: {starter.seconds:.1f}s to start, {waited:.1f}s of it "
                         "after the namespaces were built")
    st.phase = "ready"
    state.save(st)
    return out


def _check_prefixes(name: str) -> None:
    """An agent reads the namespaces named ``netpol-<lab>-*``; lab ``a-b``'s carry lab
    ``a``'s prefix, and a pod address found twice is left unenforced by the agent (the
    safe choice there). So an API lab's name and another lab's may not be prefixes of each
    other up to a dash."""
    for other in state.names():
        if other != name and (other.startswith(name + "-") or name.startswith(other + "-")):
            from enforcer.errors import LabError

            raise LabError(f"lab {other} exists: an API lab's agents find pods by the namespace "
                           f"prefix netpol-<lab>-, and {name} and {other} would share one; "
                           "choose a name that neither starts nor extends the other's")


def raw_inputs(files) -> tuple[dict[str, str], list[dict]]:
    """What the model does not keep, from the input files as written: each Pod's
    spec.nodeName and the NetworkPolicy and ClusterNetworkPolicy objects (sent as they are
    to an API lab's server).
    The files were loaded and validated already (manifests.load), so problems are moot."""
    from enforcer.load.documents import parse_all, read_path

    node_of: dict[str, str] = {}
    policies: list[dict] = []

    def visit(obj) -> None:
        if not isinstance(obj, dict):
            return
        if obj.get("kind") == "List" or (str(obj.get("kind", "")).endswith("List") and "items" in obj):
            for item in obj.get("items") or ():
                visit(item)
            return
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "Pod" and (obj.get("spec") or {}).get("nodeName"):
            node_of[f"{meta.get('namespace') or 'default'}/{meta.get('name')}"] = obj["spec"]["nodeName"]
        elif obj.get("kind") in ("NetworkPolicy", "ClusterNetworkPolicy"):
            policies.append(obj)

    for path in files:
        for _name, text, problem in read_path(path, None):
            if problem is None and text is not None:
                docs, _ = parse_all(text, _name)
                for d in docs:
                    visit(d.value)
    return node_of, policies


def fabric(st: LabState):
    """What a command wires on: the node of a one-node lab, or the router and nodes."""
    if st.nodes:
        return lab_nodes.Fabric(st)
    return topology.Node(st.node_netns, st.bridge)


def synced(st: LabState, get_backend) -> LabState:
    """An API lab: its pods and policies as the API server has them now (pods made or
    deleted with kubectl get or lose their namespace first, as a kubelet would do)."""
    if st.api is None or st.phase != "ready":
        return st
    from enforcer.lab import apilab

    return apilab.sync(st, get_backend(st.backend))


def api_firewalls(st: LabState) -> dict:
    """An API lab's firewalls as its agents compile them from the API's objects (what the
    lab installed at first is not what is in force after kubectl changes)."""
    placement = {k: e.node for k, e in st.endpoints.items() if e.kind == "pod"}
    return frontend.firewalls(frontend.Addresses(st.cluster, tuple(st.cidrs), tuple(st.gateways),
                                                 tuple(st.nodes), placement))
