"""The lab's lifecycle: up, apply, probe, down, list. Commands and the pytest plugin call this.

Order of work, and why:

    up      claim the name (mkdir) -> node namespace, bridge, gateways
            -> per pod: namespace, firewall (backend.apply, before any link or server
               exists: fail-closed, SEMANTICS 15), veth, addresses, routes
            -> per external host: namespace, veth, addresses, routes
            -> one server daemon for every declared port -> state "ready"
            Any failure (or Ctrl-C) removes everything made so far.
    apply   the input is the lab's whole desired state. Removed endpoints: the server
            closes their sockets, then their links and namespaces go. New endpoints are
            made as in ``up``. Every pod's new firewall is handed to the backend with the
            firewall it has now, so an unchanged pod is not touched and a set-only change
            is a delta. Then the server opens the ports of new endpoints.
    down    stop the server, remove every namespace the lab made (its state and its
            journal; with force also any namespace carrying its prefix), forget the
            state. Works on half-built labs. Without state nothing is removed unless forced.

Every command on a lab holds the lab's lock (state.locked).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Iterable

from enforcer import interrupts, ipam, netns
from enforcer.errors import LabError, NetnsError
from enforcer.ir import PodFirewall
from enforcer.lab import multinode, naming, serverctl, state, topology
from enforcer.lab.probe import Target
from enforcer.lab.probe import run as run_probes
from enforcer.lab.state import Endpoint, LabState
from enforcer.model import Cluster

PROBE_PROTOCOLS = ("TCP", "UDP")
SCTP_NOTE = "SCTP sockets not available on this kernel: {n} SCTP case(s) not probed"


def get_backend(name: str):
    from backends import registry

    return registry.get(name)


@dataclass
class Outcome:
    """What a lifecycle command did, for the command line to print."""

    notes: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    applies: dict[str, str] = field(default_factory=dict)  # pod -> "full" | "delta"
    seconds: float = 0.0


@dataclass
class ProbeReport:
    backend: str
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------- endpoints


def _ports(items) -> tuple[tuple[int, str], ...]:
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


def _new_endpoint(st: LabState, cluster: Cluster, key: str, kind: str) -> Endpoint:
    index = st.next_index
    st.next_index += 1
    if kind == "pod":
        pod = cluster.pods[key]
        return Endpoint(key, "pod", _unique_netns(st, naming.pod_netns(st.name, key)),
                        naming.pod_link(st.name, index), tuple(pod.ips), _ports(pod.ports),
                        mac=topology.mac("pod", index))
    ext = cluster.externals[key]
    return Endpoint(key, "external", _unique_netns(st, naming.external_netns(st.name, key)),
                    naming.external_link(st.name, index), tuple(ext.ips), _ports(ext.ports),
                    topology.external_node_addrs(cluster, key),
                    mac=topology.mac("ext", index), node_mac=topology.mac("node", index))


def _journal(st: LabState):
    return lambda name: state.journal(st.name, name)


def _add_pod(st: LabState, node: topology.Node, backend, ep: Endpoint, fw: PodFirewall) -> None:
    topology.create_netns(st.name, ep.netns, _journal(st))
    st.endpoints[ep.key] = ep
    backend.apply(ep.netns, fw)  # isolation first: nothing in the pod can talk yet
    st.firewalls[ep.key] = fw
    node.add_pod(ep, st.cidrs)


def _add_external(st: LabState, node: topology.Node, ep: Endpoint) -> None:
    topology.create_netns(st.name, ep.netns, _journal(st))
    st.endpoints[ep.key] = ep
    node.add_external(ep)


def _prefixlen(cidr: str) -> int:
    return int(cidr.rsplit("/", 1)[1])


def _compile(cluster: Cluster, node_ips: tuple[str, ...]) -> dict[str, PodFirewall]:
    from enforcer.compile import compile_cluster

    return compile_cluster(cluster, node_ips=node_ips)


def _server_sync(st: LabState, endpoints: Iterable[Endpoint]) -> list[str]:
    if st.no_servers:
        endpoints = []  # lab up --no-servers: every port is the test's own (lab exec)
    st.server_generation += 1
    notes = serverctl.write_config(st.name, endpoints, st.server_generation)
    if st.server_pid and serverctl.is_ours(st.server_pid, st.name):
        serverctl.reload(st.name, st.server_pid, st.server_generation)
    else:
        st.server_pid = serverctl.start(st.name, st.node_netns, st.server_generation)
    return notes


def _services_sync(st: LabState, had_services: bool) -> None:
    """The Services' DNAT (enforcer/lab/services.py), from the cluster in force."""
    from enforcer.lab import services as lab_services

    pods = [e.netns for e in st.endpoints.values() if e.kind == "pod"]
    lab_services.sync(st.cluster, pods, st.node_netns, had_services)


# ------------------------------------------------------------------- up


def up(name: str, cluster: Cluster, backend_name: str = "nftables", *, ipv6: bool = False,
       owned: bool = False, servers: bool = True, nodes: int = 1, api: bool = False,
       node_of: dict[str, str] | None = None, policies: list[dict] | None = None,
       enforce_at: str = "pod") -> Outcome:
    """Build lab ``name`` from ``cluster`` and enforce its policies with ``backend_name``.

    ``enforce_at``: ``pod`` (a table in each pod) or ``host`` (the pods' chains in the
    node's table, out of their reach; enforcer/lab/hostmode.py).

    ``owned``: the lab belongs to the calling process for as long as it lives (a test's
    lab, a one-shot probe); once that process is gone the lab is stale (``lab down
    --stale``). Otherwise the lab has an owner only while it is being built.

    ``nodes`` > 1: several node namespaces on a routed underlay (nodes.py), pods placed by
    ``node_of`` (spec.nodeName) or spread evenly. ``api``: the lab's own control plane and
    one agent per node enforce (apilab.py); ``policies`` are the input's NetworkPolicy
    objects as written, sent to the API server.
    """
    t0 = time.monotonic()
    naming.check_lab_name(name)
    from enforcer.lab import hostmode

    hostmode.check(enforce_at, backend_name)  # --api: the agents enforce there too (apilab.agent_argv)
    with interrupts.deferred():  # an interrupt must never land inside an import
        _preload()
        backend = get_backend(backend_name)
    leftovers = _scan(name)
    if leftovers and not state.exists(name):
        raise LabError(f"namespaces of an earlier lab {name} are still there ({leftovers[0]}, ...); "
                       f"see what would go with: netpol lab down --name {name}")
    claimed = False
    try:
        # An interrupt between the claim and ``claimed = True`` would leave a claimed
        # directory that the cleanup below does not know it may remove.
        with interrupts.deferred():
            state.claim(name)
            claimed = True
            hostmode.save(name, enforce_at)
        with state.locked(name):
            if nodes > 1 or api:
                if ipv6:
                    raise LabError("--ipv6 works with one node only: a lab of several nodes "
                                   "(or with --api) is IPv4 only")

                out = multinode.build(name, cluster, backend, backend_name, servers, nodes=nodes,
                                      api=api, node_of=node_of or {}, policies=policies or [],
                                      enforce_at=enforce_at)
            else:
                out = _build(name, cluster, backend, backend_name, ipv6, servers, enforce_at)
        if not owned:
            state.set_owner(name, None)
    except BaseException as e:
        if claimed:
            # A second Ctrl-C must not cut the cleanup short; the first one is on its way.
            with interrupts.deferred(drop=isinstance(e, (KeyboardInterrupt, SystemExit))):
                try:
                    _teardown(name)
                except Exception:
                    pass  # the original error matters more; lab down can be run again
        raise
    out.seconds = round(time.monotonic() - t0, 3)
    return out


def _preload() -> None:
    """Import now what building and tearing down import lazily (callers hold interrupts
    meanwhile). An interrupt that lands inside an import leaves a half-initialised module
    behind (seen: asyncio, under pyroute2, failing the cleanup with a NameError) or is
    swallowed by importlib's lock callback (seen: a Ctrl-C ignored)."""
    import asyncio  # noqa: F401 - pyroute2's sockets run on it
    import concurrent.futures  # noqa: F401 - backends apply in threads
    import ctypes  # noqa: F401 - netns.create/_setns

    from pyroute2 import IPRoute, netns as _pyroute2_netns  # noqa: F401

    from backends import registry  # noqa: F401
    from enforcer import compile as _compile_module, verdict  # noqa: F401


def _build(name: str, cluster: Cluster, backend, backend_name: str, ipv6: bool,
           servers_wanted: bool = True, enforce_at: str = "pod") -> Outcome:
    from enforcer.lab import hostmode

    out = Outcome()
    st = LabState(name=name, backend=backend_name, node_netns=naming.node_netns(name),
                  bridge=naming.bridge_link(name), created=time.time(), no_servers=not servers_wanted)
    backend = hostmode.wrap(st, backend, enforce_at)
    v6 = topology.wants_ipv6(cluster, ipv6)
    base = topology.base_cidrs(v6)
    cluster = ipam.assign_ips(cluster, base)
    st.cidrs = topology.pod_cidrs(cluster, base)
    st.gateways = ipam.node_ips(st.cidrs)
    topology.check_addresses(cluster, st.cidrs)
    firewalls = _compile(cluster, st.gateways)
    state.save(st)

    topology.create_netns(name, st.node_netns, _journal(st))
    with topology.Node.build(st.node_netns, st.bridge,
                             [(gw, _prefixlen(c)) for gw, c in zip(st.gateways, st.cidrs)]) as node:
        try:
            for key in sorted(cluster.pods):
                _add_pod(st, node, backend, _new_endpoint(st, cluster, key, "pod"), firewalls[key])
                out.added.append(key)
            for key in sorted(cluster.externals):
                _add_external(st, node, _new_endpoint(st, cluster, key, "external"))
                out.added.append(key)
        finally:
            st.cluster = cluster
            state.save(st)
    _services_sync(st, had_services=False)
    out.notes += _server_sync(st, st.endpoints.values())
    st.phase = "ready"
    state.save(st)
    return out


# ------------------------------------------------------------------- apply


def apply(name: str, cluster: Cluster, *, node_of: dict[str, str] | None = None,
          policies: list[dict] | None = None, enforce_at: str | None = None) -> Outcome:
    """Make ``cluster`` the lab's whole desired state, touching only what changed (an API
    lab: through its API server, apilab.py). ``enforce_at`` moves the rules to the pods or
    to the node (the old place is emptied, every pod gets a full apply in the new one)."""
    from enforcer.lab import hostmode

    t0 = time.monotonic()
    with state.locked(name):
        st = state.load(name)
        if st.phase != "ready":
            raise LabError(f"lab {name} was never completed; remove it with: netpol lab down --name {name}")
        backend = get_backend(st.backend)
        was = hostmode.load(name)
        now = enforce_at or was
        if now != was:
            hostmode.check(now, st.backend)
            if st.api is not None:
                raise LabError(f"--enforce-at {now}: an API lab's agents keep the place the lab was made "
                               f"with ({was}); make it again with lab up --api --enforce-at {now}")
            st.firewalls = {}  # nothing of ours in the new place yet: full applies
        pod_backend, backend = backend, hostmode.wrap(st, backend, now)
        if st.api is not None:
            from enforcer.lab import apilab

            out = apilab.apply(st, cluster, backend, node_of or {}, policies or [])
        else:
            out = _converge(st, cluster, backend, node_of)
        if now != was:
            # The new place is filled; only now empty the old one (never a moment unenforced).
            hostmode.switch(st, pod_backend, now, was)
            hostmode.save(name, now)
            out.notes.append(f"rules moved from {was} to {now}")
    out.seconds = round(time.monotonic() - t0, 3)
    return out


def _converge(st: LabState, cluster: Cluster, backend, node_of: dict[str, str] | None = None) -> Outcome:
    out = Outcome()
    had_services = bool(st.cluster.services)
    old = dict(st.endpoints)
    running = {k: e.ips for k, e in old.items() if e.kind == "pod"}
    v6 = topology.wants_ipv6(cluster) or any(":" in c for c in st.cidrs)
    base = topology.base_cidrs(v6)
    placement = None
    if st.nodes:  # several nodes: addresses come from each pod's node (nodes.py)
        from enforcer.lab import nodes as lab_nodes

        placement = lab_nodes.place([k for k, p in cluster.pods.items() if not p.host_network],
                                    [n["name"] for n in st.nodes], node_of or {},
                                    {k: e.node for k, e in old.items() if e.kind == "pod"})
        cluster = lab_nodes.assign_ips(cluster, st.nodes, placement, existing=running)
        lab_nodes.check(cluster, st.nodes)
    cluster = ipam.assign_ips(cluster, base, existing=running)
    cidrs = topology.pod_cidrs(cluster, tuple(st.cidrs) + base)

    def same(key: str, kind: str) -> bool:
        e = old.get(key)
        if e is None or e.kind != kind:
            return False
        want = cluster.pods[key].ips if kind == "pod" else cluster.externals[key].ips
        return tuple(want) == tuple(e.ips)

    kept = {k for k in cluster.pods if same(k, "pod")} | {k for k in cluster.externals if same(k, "external")}
    before_ports = {k: old[k].ports for k in kept}
    gone = sorted(k for k in old if k not in kept)
    busy = [a for k in kept if old[k].kind == "external" for a in old[k].node_addrs]
    topology.check_addresses(cluster, cidrs, busy)
    new_cidrs = [c for c in cidrs if c not in st.cidrs]
    gateways = ipam.node_ips(cidrs)
    if placement is not None:
        new_cidrs = []
        gateways = [n["gateway"] for n in st.nodes]
        firewalls = lab_nodes.compile_per_node(cluster, st.nodes, placement)
    else:
        firewalls = _compile(cluster, gateways)

    # 1. Endpoints that go: close their sockets first (a socket keeps a namespace alive).
    if gone:
        out.notes += _server_sync(st, [old[k] for k in sorted(kept)])
    with multinode.fabric(st) as node:
        for key in gone:
            ep = st.endpoints.pop(key)
            st.firewalls.pop(key, None)
            node.remove(ep)
            _remove_netns(st.name, ep.netns, backend)
            out.removed.append(key)
        state.save(st)
        # 2. New pod CIDRs (pods with fixed addresses elsewhere): the node's gateways.
        for c in new_cidrs:
            node.add_gateway(ipam.gateway(c), _prefixlen(c))
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
                ep = _new_endpoint(st, cluster, key, "pod")
                ep.node = placement[key] if placement is not None else ""
                _add_pod(st, node, backend, ep, firewalls[key])
                out.added.append(key)
                out.applies[key] = "full"
            for key in sorted(k for k in cluster.externals if k not in kept):
                _add_external(st, node, _new_endpoint(st, cluster, key, "external"))
                out.added.append(key)
            # Ports may change on endpoints that stay.
            for key in kept:
                items = cluster.pods[key].ports if key in cluster.pods else cluster.externals[key].ports
                st.endpoints[key].ports = _ports(items)
        finally:
            st.cluster = cluster
            state.save(st)
    _services_sync(st, had_services)  # endpoints follow pods and labels
    # 5. Servers for the new endpoints and ports, now that their firewalls are in place.
    if gone or out.added or any(old[k].ports != before_ports[k] for k in kept) or \
            not serverctl.is_ours(st.server_pid, st.name):
        out.notes += _server_sync(st, st.endpoints.values())
    state.save(st)
    return out


# ------------------------------------------------------------------- probe


def probe(name: str, ports: list[tuple[int, str]] | None = None, *, family: int = 4,
          timeout: float = 1.0, retries: int = 1) -> ProbeReport:
    """Real connections between every ordered pair of endpoints, in parallel."""
    from enforcer import verdict

    t0 = time.monotonic()
    with state.locked(name):
        st = multinode.synced(state.load(name), get_backend)
        if st.phase != "ready":
            raise LabError(f"lab {name} was never completed; remove it with: netpol lab down --name {name}")
        cases = verdict.probe_cases(st.cluster, ports, family)
        skipped = [c for c in cases if c.protocol not in PROBE_PROTOCOLS]
        cases = [c for c in cases if c.protocol in PROBE_PROTOCOLS]
        targets = [Target(st.endpoints[c.src].netns, c.dst_ip, c.port, c.protocol) for c in cases]
        outcomes = run_probes(targets, timeout=timeout, retries=retries)
    rows = []
    for c, o in zip(cases, outcomes):
        row = {"from": c.src, "to": c.dst, "port": c.port, "protocol": c.protocol,
               "allowed": o.allowed, "detail": o.detail, "ms": o.ms}
        if o.error:
            row["error"] = o.error
        rows.append(row)
    notes = [SCTP_NOTE.format(n=len(skipped))] if skipped else []
    return ProbeReport(st.backend, rows, notes, round(time.monotonic() - t0, 3))


def expected(name: str, ports: list[tuple[int, str]] | None = None, *, family: int = 4) -> list[dict]:
    """The model's verdicts for the lab as it is (the firewalls it installed), on the cases
    ``probe`` would try."""
    from enforcer import verdict

    with state.locked(name):
        st = multinode.synced(state.load(name), get_backend)
    rows = verdict.matrix(st.cluster, firewalls_of(st), ports, family)
    return [r for r in rows if r["protocol"] in PROBE_PROTOCOLS]


def firewalls_of(st: LabState) -> dict[str, PodFirewall]:
    """The firewall installed in each pod (compiled for pods a crash left without one);
    an API lab: what its agents compile from the API's objects."""
    if st.api is not None:
        return multinode.api_firewalls(st)
    firewalls = dict(st.firewalls)
    missing = [k for k in st.cluster.pods if k not in firewalls]
    if missing:
        firewalls.update({k: fw for k, fw in _compile(st.cluster, st.gateways).items() if k in missing})
    return firewalls


def families(name: str) -> list[int]:
    """The address families of lab ``name``'s pods: [4], [6] or [4, 6] (dual-stack)."""
    st = cluster_state(name)
    return sorted({6 if ":" in c else 4 for c in st.cidrs}) or [4]


def cluster_state(name: str) -> LabState:
    with state.locked(name):
        return state.load(name)


def cluster_of(name: str) -> Cluster:
    with state.locked(name):
        return state.load(name).cluster


# ------------------------------------------------------------------- down, list


def _scan(name: str) -> list[str]:
    """Namespaces of lab ``name`` found by their prefix. Lab ``a``'s pod ``b/p`` and lab
    ``a-b``'s namespaces share a prefix: a name another lab journaled is that lab's, and
    otherwise the lab with the longest matching name owns it."""
    labs = set(state.names()) | {name}
    found = [n for n in netns.list_names(naming.node_netns(name)) if naming.owned_by(name, n, labs)]
    if not found:
        return []
    foreign: set[str] = set()
    for other in labs - {name}:
        if naming.carries(name, naming.node_netns(other)) or naming.carries(other, naming.node_netns(name)):
            foreign.update(state.journaled(other))
    return [n for n in found if n not in foreign]


def _remove_netns(lab: str, name: str, backend=None) -> None:
    if not naming.carries(lab, name):  # never anything without this lab's prefix
        return
    netns.remove(name)
    if backend is not None:
        try:
            backend.remove(name)  # drops handles kept for the (now gone) namespace
        except Exception:
            pass


def _teardown(name: str, scan: bool = False) -> int:
    """Remove what the lab's state and journal name (and, with ``scan``, every namespace
    carrying its prefix: ``lab down --force``)."""
    st = None
    try:
        st = state.load(name)
    except LabError:
        pass
    serverctl.stop(name, [st.server_pid] if st else [])
    from enforcer.lab import apilab

    apilab.kill_processes(name, st.api if st else None)  # agents, API server, etcd
    names = set(state.journaled(name)) | (set(_scan(name)) if scan else set())
    backend = None
    if st is not None:
        names |= {e.netns for e in st.endpoints.values()} | {st.node_netns}
        try:
            from backends import registry

            backend = registry.get(st.backend, check=False)
        except Exception:
            backend = None
    node = naming.node_netns(name)
    errors = []
    for n in sorted(names, key=lambda x: (x == node, x)):  # the node last
        try:
            _remove_netns(name, n, backend)
        except NetnsError as e:
            errors.append(str(e))
    state.forget(name)
    if errors:
        raise LabError(f"lab {name}: {len(errors)} namespace(s) could not be removed: {errors[0]}")
    return len(names)


def orphans(name: str) -> list[str]:
    """What carries lab ``name``'s marks although the lab has no state: namespaces with
    its prefix and server processes naming its configuration."""
    return _scan(name) + [f"server pid {p}" for p in serverctl.find(name)]


def down(name: str, *, force: bool = False) -> bool:
    """Remove lab ``name`` entirely; False when there was nothing to remove.

    Without the lab's state nothing says that namespaces merely carrying its prefix were
    made by it (someone may have made ``netpol-NAME-mine`` by hand): they are listed in
    the error and removed only with ``force``.
    """
    naming.check_lab_name(name)
    if not state.exists(name):
        found = orphans(name)
        if not found:
            return False
        if not force:
            shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            raise LabError(f"no lab named {name}, but {len(found)} thing(s) carry its name: {shown}; "
                           f"nothing removed (they may not be a lab's). Remove them with: "
                           f"netpol lab down --name {name} --force")
        _teardown(name, scan=True)
        return True
    with state.locked(name):
        _teardown(name, scan=force)
    return True


def mine(name: str) -> bool:
    """Whether lab ``name`` exists and is owned by this process (``up(owned=True)``)."""
    doc = state.owner(name) if state.exists(name) else None
    return bool(doc) and doc.get("pid") == os.getpid() and state.owner_alive(doc)


def stale_labs() -> list[str]:
    """Labs whose owner process is gone (see state.staleness)."""
    return [n for n in state.names() if state.staleness(n)["stale"]]


def down_stale() -> list[str]:
    """Remove every stale lab; the names removed."""
    gone = []
    for n in stale_labs():
        try:
            if down(n):
                gone.append(n)
        except LabError:
            if state.exists(n):
                raise
    return gone


def list_labs() -> list[dict]:
    out = []
    for n in state.names():
        item = {"name": n, **state.staleness(n)}
        try:
            st = state.load(n)
        except LabError as e:
            item.update({"phase": "broken", "problem": str(e)})
            out.append(item)
            continue
        item.update({
            "backend": st.backend, "phase": st.phase,
            "pods": sum(1 for e in st.endpoints.values() if e.kind == "pod"),
            "externals": sum(1 for e in st.endpoints.values() if e.kind == "external"),
            "policies": len(st.cluster.policies),
            "server": "running" if serverctl.is_ours(st.server_pid, n) else "stopped",
            "node_netns": st.node_netns, "cidrs": list(st.cidrs),
        })
        if st.nodes or st.api is not None:
            from enforcer.lab import apilab

            item.update(apilab.describe(st))
        out.append(item)
    return out
