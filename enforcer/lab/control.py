"""The lab's lifecycle: up, apply, probe, down, list. Commands and the pytest plugin call this.

    up      claim the name (mkdir), build the lab (converge.build; several nodes or an API
            server: multinode.build) -> state "ready". Any failure (or Ctrl-C) removes
            everything made so far.
    apply   converge on the input as the lab's whole desired state (converge.converge; an
            API lab through its API server, apilab.py), optionally moving the rules
            between the pods and the node (hostmode.py).
    probe   real connections between every ordered pair of endpoints; ``expected`` is the
            model's verdicts on the same cases.
    down, list, stale labs: teardown.py (``down`` and the others are re-exported here).

The parts: the front half (enforcer/compiler/frontend.py) plans addresses and compiles,
endpoints.py makes one endpoint, converge.py orders the steps, teardown.py finds and
removes labs. Every command on a lab holds the lab's lock
(state.locked).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from enforcer import interrupts
from enforcer.errors import LabError
from enforcer.ir import PodFirewall
from enforcer.lab import converge, endpoints, multinode, naming, state, teardown
from enforcer.lab.endpoints import Outcome
from enforcer.lab.probe import Target
from enforcer.lab.probe import run as run_probes
from enforcer.lab.state import LabState
from enforcer.lab.teardown import down, down_stale, list_labs, mine, orphans, stale_labs
from enforcer.model import Cluster

__all__ = ["Outcome", "ProbeReport", "up", "apply", "probe", "expected", "firewalls_of", "families",
           "cluster_state", "cluster_of", "down", "down_stale", "list_labs", "mine", "orphans",
           "stale_labs", "get_backend"]

PROBE_PROTOCOLS = ("TCP", "UDP")
SCTP_NOTE = "SCTP sockets not available on this kernel: {n} SCTP case(s) not probed"


def get_backend(name: str):
    from backends import registry

    return registry.get(name)


@dataclass
class ProbeReport:
    backend: str
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


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
    leftovers = teardown.prefixed(name)
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
                out = converge.build(name, cluster, backend, backend_name, ipv6, servers, enforce_at)
        if not owned:
            state.set_owner(name, None)
    except BaseException as e:
        if claimed:
            # A second Ctrl-C must not cut the cleanup short; the first one is on its way.
            with interrupts.deferred(drop=isinstance(e, (KeyboardInterrupt, SystemExit))):
                try:
                    teardown.remove_all(name)
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
    from enforcer.compiler import compile as _compile_module  # noqa: F401
    from enforcer.views import verdict


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
            out = converge.converge(st, cluster, backend, node_of)
        if now != was:
            # The new place is filled; only now empty the old one (never a moment unenforced).
            hostmode.switch(st, pod_backend, now, was)
            hostmode.save(name, now)
            out.notes.append(f"rules moved from {was} to {now}")
    out.seconds = round(time.monotonic() - t0, 3)
    return out


# ------------------------------------------------------------------- probe


def probe(name: str, ports: list[tuple[int, str]] | None = None, *, family: int = 4,
          timeout: float = 1.0, retries: int = 1) -> ProbeReport:
    """Real connections between every ordered pair of endpoints, in parallel."""
    from enforcer.views import verdict

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
    from enforcer.views import verdict

    with state.locked(name):
        st = multinode.synced(state.load(name), get_backend)
    rows = verdict.matrix(st.cluster, firewalls_of(st), ports, family)
    return [r for r in rows if r["protocol"] in PROBE_PROTOCOLS]


def firewalls_of(st: LabState) -> dict[str, PodFirewall]:
    """The firewall installed in each pod (compiled for pods a crash left without one);
    an API lab: what its agents compile from the API's objects."""
    if st.api is not None:
        return multinode.api_firewalls(st)
    return endpoints.firewalls_in_force(st)


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


