"""An API lab (``lab up --api``): the lab's own control plane, the lab as every node's
kubelet, and one ``netpol run --kubeconfig --node nodeK`` agent per node.

    <lab dir>/api/            the control plane's work directory (certificates, etcd data,
                              admin.kubeconfig, logs): enforcer/k8s/controlplane.py
    <lab dir>/agents/nodeK.*  each agent's state file and log

Processes. etcd, kube-apiserver and the agents are started detached (their own sessions,
no parent-death signal): the lab outlives ``lab up``. Their pids are saved in state.json at
once; ``lab down`` kills them by pid (checked against the start time saved with it) and
also every process whose command line names the lab's directory, so a crash between a
start and its save leaks nothing either.

Where the agents run: in the host's network namespace (``lab up --api --enforce-at host``:
each agent with ``--enforce-at host --node-netns`` its node's namespace, where its table goes). They must reach the API server on
127.0.0.1, and they find their pods' namespaces by address (daemon/discovery.py) in
/run/netns, which every network namespace shares; ``--netns-prefix netpol-<lab>-`` keeps
each agent to this lab's namespaces (two labs may give pods the same addresses) and
``--node nodeK`` to the pods bound to its node. An agent changes nothing in the host's
namespace: it only enters the pods' namespaces it found.

The API server gets our ClusterNetworkPolicy CRD (deploy/crds/) before any object, so the
input's ClusterNetworkPolicies are applied like its NetworkPolicies.

The kubelet's part (kubelet.py does the requests): pods are created bound (spec.nodeName),
then their status is patched (addresses, phase Running), as a kubelet reports a started
sandbox. ``sync`` brings the lab in line with the API before a probe: pods deleted with
kubectl lose their namespace, pods created with kubectl get one (and are bound first if
they name no node).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

from enforcer.errors import LabError
from enforcer.lab import state
from enforcer.lab.state import LabState
from enforcer.model import Cluster

AGENT_WAIT = 60.0


def workdir(lab: str) -> str:
    return os.path.join(state.lab_dir(lab), "api")


def agent_dir(lab: str) -> str:
    return os.path.join(state.lab_dir(lab), "agents")


def kubeconfig(lab: str) -> str:
    """The admin kubeconfig of API lab ``lab``."""
    st = state.load(lab)
    if st.api is None:
        raise LabError(f"lab {lab} has no API server (it was made without --api)")
    return st.api["kubeconfig"]


# ------------------------------------------------------------------ control plane


class Starter:
    """Starts the control plane in a thread while the lab builds its namespaces (the API
    server's start is most of an API lab's ``up``)."""

    def __init__(self, st: LabState):
        from enforcer.k8s.controlplane import ControlPlane, missing_binaries

        reason = missing_binaries()
        if reason:
            raise LabError(f"--api needs kube-apiserver, etcd and kubectl: {reason}")
        self.st = st
        self.cp = ControlPlane(workdir(st.name), detached=True)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="control-plane", daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self.cp.start(timeout=90)
        except BaseException as e:  # reported by join()
            self.error = e
        self.seconds = time.monotonic() - t0

    def start(self) -> "Starter":
        self.thread.start()
        return self

    def join(self):
        self.thread.join()
        self.st.api.update(apiserver_pid=self.cp.apiserver_pid, etcd_pid=self.cp.etcd_pid,
                           server=self.cp.server, kubeconfig=str(self.cp.kubeconfig),
                           pids=_pids_with_start([self.cp.apiserver_pid, self.cp.etcd_pid]),
                           apiserver_seconds=round(self.seconds, 2))
        state.save(self.st)
        if self.error is not None:
            raise LabError(f"the lab's control plane did not start: {self.error}") from self.error
        return self.cp


def _pids_with_start(pids) -> dict[str, str | None]:
    return {str(p): state.proc_start(p) for p in pids if p}


# ------------------------------------------------------------------ up


def start(st: LabState, starter: Starter, cluster: Cluster, policies: list[dict]) -> float:
    """After the namespaces are built: Node objects, namespaces, bound pods with their
    status, policies; then one agent per node, waited for. Returns the seconds spent
    waiting for the control plane (after the namespaces were built)."""
    from enforcer.lab import kubelet

    t0 = time.monotonic()
    starter.join()
    waited = time.monotonic() - t0
    api = kubelet.Client.of(st)
    kubelet.install_crd(api)  # ClusterNetworkPolicy, before the agents list it
    kubelet.create_nodes(api, st.nodes)
    # The agents start (a second of Python imports each) while the objects are created:
    # what they list first may be partial; their watches bring the rest, and each pod's
    # namespace holds the lab's firewall from the same objects meanwhile.
    start_agents(st)
    kubelet.publish(api, st, cluster, policies)
    wait_agents(st)
    return waited


def start_agents(st: LabState) -> None:
    os.makedirs(agent_dir(st.name), mode=0o700, exist_ok=True)
    agents = st.api.setdefault("agents", {})
    for n in st.nodes:
        if agents.get(n["name"]) and _alive(agents[n["name"]]):
            continue
        agents[n["name"]] = start_agent(st, n)
        state.save(st)


def agent_argv(st: LabState, node: dict) -> list[str]:
    """An agent enforces where the lab does (``lab up --enforce-at``): in host mode, in its
    node's namespace, where the node's veths of its pods are."""
    from enforcer.lab import hostmode

    d = agent_dir(st.name)
    where = ["--enforce-at", "host", "--node-netns", node["netns"]] if hostmode.load(st.name) == "host" else []
    return [sys.executable, "-m", "enforcer", "run", "--kubeconfig", st.api["kubeconfig"],
            "--node", node["name"], "--backend", st.backend,
            "--netns-prefix", f"netpol-{st.name}-", "--node-ip", node["gateway"],
            "--state-file", os.path.join(d, f"{node['name']}.json"), "--log-format", "json",
            "--repair-interval", "5", *where]


def start_agent(st: LabState, node: dict) -> dict:
    """One agent, detached; its pid with its start time (a reused pid is never killed)."""
    log = open(os.path.join(agent_dir(st.name), f"{node['name']}.log"), "ab")
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "KUBECONFIG")}
        proc = subprocess.Popen(agent_argv(st, node), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, env=env)
    finally:
        log.close()
    return {"pid": proc.pid, "start": state.proc_start(proc.pid)}


def _alive(rec: dict) -> bool:
    return bool(rec.get("pid")) and state.proc_start(int(rec["pid"])) == rec.get("start")


def agent_status(st: LabState, node: str) -> dict | None:
    try:
        with open(os.path.join(agent_dir(st.name), f"{node}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def wait_agents(st: LabState, timeout: float = AGENT_WAIT) -> None:
    """Until every agent enforces all the pods bound to its node from the API's objects (its
    state file says so). The file must be the running agent's own: a restarted agent's
    file holds its killed predecessor's last word (ok, every pod managed) until its first
    sync, and that sync may still enforce the predecessor's API snapshot."""
    want = {n["name"]: sum(1 for e in st.endpoints.values() if e.kind == "pod" and e.node == n["name"])
            for n in st.nodes}
    deadline = time.monotonic() + timeout
    while True:
        late = []
        for n in st.nodes:
            rec = st.api["agents"].get(n["name"]) or {}
            if not _alive(rec):
                log = os.path.join(agent_dir(st.name), n["name"] + ".log")
                raise LabError(f"lab {st.name}: the agent of {n['name']} exited ({last_line(log)}); "
                               f"its log: {log}")
            why = _late(st, n["name"], int(rec["pid"]), want[n["name"]])
            if why:
                late.append(f"{n['name']} ({why})")
        if not late:
            return
        if time.monotonic() > deadline:
            raise LabError(f"lab {st.name}: the agents of {', '.join(late)} did not enforce their "
                           f"pods within {timeout:.0f}s (logs in {agent_dir(st.name)})")
        time.sleep(0.05)


def _late(st: LabState, node: str, pid: int, want: int) -> str:
    """Why agent ``pid`` of ``node`` does not enforce its ``want`` pods yet ("" if it does)."""
    doc = agent_status(st, node) or {}
    if doc.get("pid") != pid:
        return "still starting: " + last_line(os.path.join(agent_dir(st.name), node + ".log"))
    if (doc.get("source") or {}).get("from_snapshot"):
        return "enforcing its snapshot: the API server has not answered it"
    sync = doc.get("last_sync") or {}
    if not sync.get("ok"):
        return f"its last sync failed: {sync.get('error')}"
    managed = (doc.get("counts") or {}).get("managed", 0)
    if managed < want:
        errors = doc.get("apply_errors") or []
        first = f"; {errors[0].get('pod')}: {errors[0].get('message')}" if errors else ""
        return f"{managed} of {want} pods{first}"
    return ""


def last_line(path: str, limit: int = 300) -> str:
    """The last line of an agent's log (a crash's exception, or its last JSON record): the
    error says why without the file, which ``lab down`` removes with the lab."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError as e:
        return f"log unreadable: {e.strerror}"
    text = lines[-1] if lines else "its log is empty"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def restart_agent(lab: str, node: str) -> int:
    """Start node ``node``'s agent again if it is not running (tests kill it); its pid."""
    with state.locked(lab):
        st = state.load(lab)
        if st.api is None:
            raise LabError(f"lab {lab} has no agents (made without --api)")
        rec = st.api["agents"].get(node) or {}
        if not _alive(rec):
            st.api["agents"][node] = start_agent(st, next(n for n in st.nodes if n["name"] == node))
            state.save(st)
        wait_agents(st)
        return int(st.api["agents"][node]["pid"])


# ------------------------------------------------------------------ apply and sync


def apply(st: LabState, cluster: Cluster, backend, node_of: dict[str, str], policies: list[dict]):
    """``lab apply`` on an API lab: namespaces for new pods and none for removed ones (the
    kubelet's part), then the input server-side applied, and objects it lacks deleted."""
    from enforcer.lab import converge, kubelet

    out = converge.converge(st, cluster, backend, node_of)
    api = kubelet.Client.of(st)
    if any(p.get("kind") == "ClusterNetworkPolicy" for p in policies):
        kubelet.install_crd(api)  # a lab made before the CRD was: now (quick once it is there)
    kubelet.publish(api, st, st.cluster, policies, prune=True)
    return out


def sync(st: LabState, backend) -> LabState:
    """Make the lab what the API says (see the module doc); returns the state."""
    from enforcer.lab import converge, kubelet

    from enforcer.lab import hostmode

    backend = hostmode.wrap(st, backend, hostmode.load(st.name))  # a new pod's first rules: where the agent puts them
    api = kubelet.Client.of(st)
    cluster, bound, unbound = kubelet.read_cluster(api, st)
    keep = replace(cluster, services=dict(st.cluster.services), externals=dict(st.cluster.externals))
    if set(keep.pods) != {k for k, e in st.endpoints.items() if e.kind == "pod"} or \
            any(keep.pods[k].ips and keep.pods[k].ips != st.endpoints[k].ips
                for k in keep.pods if k in st.endpoints):
        out = converge.converge(st, keep, backend, bound)
        kubelet.report_status(api, st, [k for k in out.added if k in st.cluster.pods], unbound)
    else:
        st.cluster = keep
        state.save(st)
    return st


# ------------------------------------------------------------------ down, list


def kill_processes(lab: str, api: dict | None) -> None:
    """SIGKILL to all of them: nothing of theirs outlives the lab. The agents' rules live in
    the pods' namespaces, which go next; the API server's store is thrown away (a graceful
    shutdown of the API server takes seconds, of an agent most of a second on a busy
    machine). Found by their saved pids, then by any process whose command line names the
    lab's directory (a crash between a start and its save)."""
    recs = []
    if api:
        recs += list((api.get("agents") or {}).values())
        recs += [{"pid": int(p), "start": s} for p, s in (api.get("pids") or {}).items()]
    pids = [int(r["pid"]) for r in recs if _alive(r)]
    pids += [p for p in _find(lab) if p not in pids]
    for p in pids:
        _signal(p, signal.SIGKILL)
    deadline, killed = time.monotonic() + 5, False
    while pids:
        pids = [p for p in pids if state.proc_start(p) is not None]
        if pids and time.monotonic() > deadline:
            if killed:
                raise LabError(f"lab {lab}: process(es) {', '.join(map(str, pids))} survive SIGKILL")
            for p in pids:
                _signal(p, signal.SIGKILL)
            deadline, killed = time.monotonic() + 5, True
        time.sleep(0.01)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
        os.kill(pid, signal.SIGCONT)  # a stopped process must see it
    except ProcessLookupError:
        pass


def _find(lab: str) -> list[int]:
    """Processes whose command line names lab ``lab``'s directory (``<dir>/`` exactly: lab
    ``a`` never matches lab ``a-b``'s processes)."""
    needle = (state.lab_dir(lab).rstrip("/") + "/").encode()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if needle in f.read():
                    out.append(int(d))
        except OSError:
            continue
    return out


def describe(st: LabState) -> dict:
    """What ``lab list -o json`` shows of a multi-node or API lab: nodes and components."""
    nodes = [{"name": n["name"], "netns": n["netns"], "cidr": n["cidr"], "gateway": n["gateway"],
              "pods": sum(1 for e in st.endpoints.values() if e.kind == "pod" and e.node == n["name"])}
             for n in st.nodes]
    out: dict = {"nodes": nodes, "api": st.api is not None}
    if st.api is None:
        return out
    comps = []
    for what, key in (("kube-apiserver", "apiserver_pid"), ("etcd", "etcd_pid")):
        pid = st.api.get(key)
        start_ = (st.api.get("pids") or {}).get(str(pid))
        comps.append({"component": what, "pid": pid,
                      "running": bool(pid) and state.proc_start(int(pid)) == start_})
    for n in st.nodes:
        rec = (st.api.get("agents") or {}).get(n["name"]) or {}
        comps.append({"component": "agent", "node": n["name"], "pid": rec.get("pid"),
                      "running": _alive(rec) if rec else False})
    out.update(components=comps, api_server=st.api.get("server"), kubeconfig=st.api.get("kubeconfig"),
               apiserver_seconds=st.api.get("apiserver_seconds"))
    return out
