"""Building a lab and converging it on a new desired state: the order of the steps.

    build     node namespace, bridge, gateways -> per pod: namespace, firewall (before any
              link or server exists: fail-closed, SEMANTICS 15), veth, addresses, routes
              -> per external host: namespace, veth, addresses, routes -> the Services'
              DNAT -> one server daemon for every declared port -> state "ready"
    converge  the input is the lab's whole desired state. Removed endpoints: the server
              closes their sockets, then their links and namespaces go. New endpoints are
              made as in ``build``. Every pod's new firewall is handed to the backend with
              the firewall it has now, so an unchanged pod is not touched and a set-only
              change is a delta. Then the server opens the ports of new endpoints.

Addresses come from the front half's one address step (enforcer/compiler/frontend.py
``assign`` with the lab's ``Wiring``: fixed addresses, a running lab's CIDRs, several nodes),
firewalls from its compile step (``firewalls``); endpoints are made by endpoints.py; the
callers (control.py) hold the lab's lock.
"""
from __future__ import annotations

import time

from enforcer.compiler import frontend, ipam
from enforcer.lab import endpoints, multinode, naming, serverctl, state, topology
from enforcer.lab.state import LabState
from enforcer.model import Cluster


def build(name: str, cluster: Cluster, backend, backend_name: str, ipv6: bool,
           servers_wanted: bool = True, enforce_at: str = "pod") -> endpoints.Outcome:
    """Build a one-node lab (multinode.py builds the others); ``control.up`` claimed the
    name and removes everything made so far when this fails."""
    from enforcer.lab import hostmode

    out = endpoints.Outcome()
    st = LabState(name=name, backend=backend_name, node_netns=naming.node_netns(name),
                  bridge=naming.bridge_link(name), created=time.time(), no_servers=not servers_wanted)
    backend = hostmode.wrap(st, backend, enforce_at)
    plan = frontend.assign(cluster, ipv6=ipam.wants_ipv6(cluster, ipv6), lab=frontend.Wiring())
    cluster, st.cidrs, st.gateways = plan.cluster, plan.cidrs, plan.node_ips
    firewalls = frontend.firewalls(plan)
    state.save(st)

    topology.create_netns(name, st.node_netns, endpoints.journal(st))
    with topology.Node.build(st.node_netns, st.bridge,
                             [(gw, endpoints.prefixlen(c)) for gw, c in zip(st.gateways, st.cidrs)]) as node:
        endpoints.add_all(st, node, backend, cluster, firewalls, out)
    endpoints.services_sync(st, had_services=False)
    out.notes += endpoints.server_sync(st, st.endpoints.values())
    st.phase = "ready"
    state.save(st)
    return out


def converge(st: LabState, cluster: Cluster, backend, node_of: dict[str, str] | None = None) -> endpoints.Outcome:
    """Make ``cluster`` lab ``st``'s whole desired state (``control.apply``; an API lab's
    namespaces and servers too, apilab.py), touching only what changed."""
    out = endpoints.Outcome()
    had_services = bool(st.cluster.services)
    old = dict(st.endpoints)
    running = {k: e.ips for k, e in old.items() if e.kind == "pod"}
    placement = None
    if st.nodes:  # several nodes: addresses come from each pod's node (nodes.py places them)
        from enforcer.lab import nodes as lab_nodes

        placement = lab_nodes.place([k for k, p in cluster.pods.items() if not p.host_network],
                                    [n["name"] for n in st.nodes], node_of or {},
                                    {k: e.node for k, e in old.items() if e.kind == "pod"})

    def same(key: str, kind: str, cluster: Cluster) -> bool:
        e = old.get(key)
        if e is None or e.kind != kind:
            return False
        want = cluster.pods[key].ips if kind == "pod" else cluster.externals[key].ips
        return tuple(want) == tuple(e.ips)

    # External hosts that stay keep their node addresses: nobody else may take them.
    busy = [a for k, e in old.items() if e.kind == "external" and k in cluster.externals
            and same(k, "external", cluster) for a in e.node_addrs]
    # Running pods keep their addresses, and nobody new gets one that was in use.
    plan = frontend.assign(cluster, ipv6=ipam.wants_ipv6(cluster) or any(":" in c for c in st.cidrs),
                           existing=running, reserved=[a for ips in running.values() for a in ips],
                           lab=frontend.Wiring(tuple(st.cidrs), tuple(busy), tuple(st.nodes), placement or {}))
    cluster, cidrs = plan.cluster, plan.cidrs
    kept = {k for k in cluster.pods if same(k, "pod", cluster)} | \
        {k for k in cluster.externals if same(k, "external", cluster)}
    before_ports = {k: old[k].ports for k in kept}
    gone = sorted(k for k in old if k not in kept)
    new_cidrs = [] if placement is not None else [c for c in cidrs if c not in st.cidrs]
    gateways = plan.node_ips
    firewalls = frontend.firewalls(plan)

    # 1. Endpoints that go: close their sockets first (a socket keeps a namespace alive).
    if gone:
        out.notes += endpoints.server_sync(st, [old[k] for k in sorted(kept)])
    with multinode.fabric(st) as node:
        for key in gone:
            ep = st.endpoints.pop(key)
            st.firewalls.pop(key, None)
            node.remove(ep)
            endpoints.remove_netns(st.name, ep.netns, backend)
            out.removed.append(key)
        state.save(st)
        # 2. New pod CIDRs (pods with fixed addresses elsewhere): the node's gateways.
        for c in new_cidrs:
            node.add_gateway(ipam.gateway(c), endpoints.prefixlen(c))
        st.cidrs, st.gateways = tuple(cidrs), tuple(gateways)
        # 3. Every pod that stays gets its new firewall; the backend does deltas.
        try:
            for key in sorted(kept):
                if old[key].kind != "pod" or st.api is not None:
                    continue  # an API lab: the nodes' agents enforce what the API says
                fw = firewalls[key]
                previous = st.firewalls.get(key)
                if fw != previous:
                    res = backend.apply(st.endpoints[key].netns, fw, previous)
                    st.firewalls[key] = fw
                    out.applies[key] = res.kind
            # 4. New endpoints, isolated before they have a link or a server.
            for key in sorted(k for k in cluster.pods if k not in kept):
                ep = endpoints.new_endpoint(st, cluster, key, "pod")
                ep.node = placement[key] if placement is not None else ""
                endpoints.add_pod(st, node, backend, ep, firewalls[key])
                out.added.append(key)
                out.applies[key] = "full"
            for key in sorted(k for k in cluster.externals if k not in kept):
                endpoints.add_external(st, node, endpoints.new_endpoint(st, cluster, key, "external"))
                out.added.append(key)
            # Ports may change on endpoints that stay.
            for key in kept:
                items = cluster.pods[key].ports if key in cluster.pods else cluster.externals[key].ports
                st.endpoints[key].ports = endpoints.ports_of(items)
        finally:
            st.cluster = cluster
            state.save(st)
    endpoints.services_sync(st, had_services)  # endpoints follow pods and labels
    # 5. Servers for the new endpoints and ports, now that their firewalls are in place.
    if gone or out.added or any(old[k].ports != before_ports[k] for k in kept) or \
            not serverctl.is_ours(st.server_pid, st.name):
        out.notes += endpoints.server_sync(st, st.endpoints.values())
    state.save(st)
    return out
