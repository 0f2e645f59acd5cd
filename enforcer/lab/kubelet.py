"""The API lab's requests to its API server: what a kubelet (and the scheduler's binding)
would send, and the input's objects by server-side apply.

A plain HTTPS client on the lab's own admin certificates (urllib, no client library: the
lab needs a dozen verbs, in parallel threads for 250 pods). Every object the lab writes
carries the field manager ``netpol-lab``; a user's ``kubectl label`` or ``kubectl apply``
owns its own fields beside it.
"""
from __future__ import annotations

import copy
import json
import os
import ssl
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import quote

from enforcer.errors import LabError
from enforcer.lab.state import LabState
from enforcer.model import Cluster

MANAGER = "netpol-lab"
IMAGE = "registry.k8s.io/pause:3.10"
PARALLEL = 8
NP = "/apis/networking.k8s.io/v1"
CNP = "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
CRD_NAME = "clusternetworkpolicies.policy.networking.k8s.io"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "deploy", "crds", "clusternetworkpolicies.yaml")


class Client:
    def __init__(self, server: str, pki: str):
        self.server = server
        ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
        ctx.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))
        self.ctx = ctx

    @classmethod
    def of(cls, st: LabState) -> "Client":
        from enforcer.lab import apilab

        if not st.api or not st.api.get("server"):
            raise LabError(f"lab {st.name} has no API server")
        return cls(st.api["server"], os.path.join(apilab.workdir(st.name), "pki"))

    def call(self, method: str, path: str, body: dict | None = None,
             content_type: str = "application/json", ok404: bool = False) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            if ok404 and e.code == 404:
                return {}
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise LabError(f"API server: {method} {path.split('?')[0]}: {e.code} {detail}") from None
        except OSError as e:
            raise LabError(f"API server {self.server} unreachable: {e}") from None
        return json.loads(raw) if raw else {}

    def apply(self, path: str, obj: dict) -> dict:
        """Server-side apply of ``obj`` at ``path`` (its own URL)."""
        return self.call("PATCH", f"{path}?fieldManager={MANAGER}&force=true", obj,
                         "application/apply-patch+yaml")

    def merge(self, path: str, patch: dict) -> dict:
        return self.call("PATCH", path, patch, "application/merge-patch+json")

    def each(self, fn, items) -> list:
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(pool.map(fn, items))


def _pod_path(key: str) -> str:
    ns, name = key.split("/", 1)
    return f"/api/v1/namespaces/{quote(ns)}/pods/{quote(name)}"


def _policy_path(ns: str, name: str) -> str:
    return f"{NP}/namespaces/{quote(ns)}/networkpolicies/{quote(name)}"


def install_crd(api: Client, timeout: float = 30.0) -> None:
    """Our ClusterNetworkPolicy CRD (deploy/crds/), server-side applied, and waited for
    until it is Established and its resource is served (an apply before that is a 404)."""
    import time

    import yaml

    try:
        with open(CRD_FILE) as f:
            crd = yaml.safe_load(f)
    except OSError as e:
        raise LabError(f"--api: cannot read the ClusterNetworkPolicy CRD {CRD_FILE}: {e}") from None
    api.apply(f"{CRD_PATH}/{CRD_NAME}", crd)
    deadline = time.monotonic() + timeout
    while True:
        got = api.call("GET", f"{CRD_PATH}/{CRD_NAME}", ok404=True)
        conds = {c.get("type"): c.get("status") for c in (got.get("status") or {}).get("conditions") or ()}
        if conds.get("Established") == "True" and api.call("GET", CNP + "?limit=1", ok404=True):
            return
        if time.monotonic() > deadline:
            raise LabError(f"the lab's API server did not establish the CRD {CRD_NAME} within {timeout:g} s")
        time.sleep(0.1)


def create_nodes(api: Client, nodes: list[dict]) -> None:
    def one(n: dict) -> None:
        api.apply(f"/api/v1/nodes/{n['name']}", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n["name"], "labels": {"kubernetes.io/hostname": n["name"],
                                                       "kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": n["cidr"], "podCIDRs": [n["cidr"]]}})
        api.merge(f"/api/v1/nodes/{n['name']}/status", {"status": {
            "addresses": [{"type": "InternalIP", "address": n["gateway"]},
                          {"type": "Hostname", "address": n["name"]}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "NetpolLab",
                            "message": "a netpol lab node namespace"}]}})
    api.each(one, nodes)


def pod_object(st: LabState, cluster: Cluster, key: str) -> dict:
    pod = cluster.pods[key]
    ports = [{"containerPort": p.port, "protocol": p.protocol, **({"name": p.name} if p.name else {})}
             for p in pod.ports]
    container = {"name": "serve", "image": IMAGE, **({"ports": ports} if ports else {})}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": pod.namespace, "name": pod.name, "labels": dict(pod.labels)},
            "spec": {"nodeName": st.endpoints[key].node, "containers": [container]}}


def status_patch(st: LabState, key: str) -> dict:
    ep = st.endpoints[key]
    node = next(n for n in st.nodes if n["name"] == ep.node)
    return {"status": {"phase": "Running", "podIP": ep.ips[0], "podIPs": [{"ip": a} for a in ep.ips],
                       "hostIP": node["gateway"], "hostIPs": [{"ip": node["gateway"]}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "serve", "image": IMAGE, "imageID": "",
                                              "ready": True, "started": True, "restartCount": 0,
                                              "state": {"running": {}}}]}}


def _policy_object(raw: dict) -> dict:
    obj = copy.deepcopy(raw)
    obj.pop("status", None)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", "default")
    for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
        meta.pop(k, None)
    return obj


def _cnp_object(raw: dict) -> dict:
    obj = _policy_object(raw)
    obj["metadata"].pop("namespace", None)  # cluster-scoped
    return obj


def publish(api: Client, st: LabState, cluster: Cluster, policies: list[dict], *, prune: bool = False) -> None:
    """Namespaces, pods (bound, then their status), policies (NetworkPolicies and
    ClusterNetworkPolicies); with ``prune`` also delete the pods (of this lab's nodes) and
    policies of both kinds the input lacks."""
    cnps = [_cnp_object(p) for p in policies if p.get("kind") == "ClusterNetworkPolicy"]
    policies = [p for p in policies if p.get("kind") != "ClusterNetworkPolicy"]
    names = set(cluster.namespaces) | {p.namespace for p in cluster.pods.values()} | \
        {p.get("metadata", {}).get("namespace", "default") for p in policies}
    api.each(lambda ns: api.apply(f"/api/v1/namespaces/{quote(ns)}", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": dict(cluster.namespaces[ns].labels) if ns in cluster.namespaces else {}}}),
        sorted(names))
    pods = sorted(k for k in cluster.pods if k in st.endpoints)

    def pod(key: str) -> None:
        api.apply(_pod_path(key), pod_object(st, cluster, key))
        api.merge(_pod_path(key) + "/status", status_patch(st, key))
    api.each(pod, pods)
    objs = [_policy_object(p) for p in policies]
    api.each(lambda o: api.apply(_policy_path(o["metadata"]["namespace"], o["metadata"]["name"]), o), objs)
    api.each(lambda o: api.apply(f"{CNP}/{quote(o['metadata']['name'])}", o), cnps)
    if not prune:
        return
    ours = {n["name"] for n in st.nodes}
    have = api.call("GET", "/api/v1/pods").get("items") or []
    gone = [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in have
            if (o.get("spec") or {}).get("nodeName") in ours and
            f"{o['metadata']['namespace']}/{o['metadata']['name']}" not in cluster.pods]
    api.each(lambda k: api.call("DELETE", _pod_path(k) + "?gracePeriodSeconds=0", ok404=True), gone)
    want = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs}
    have_np = api.call("GET", f"{NP}/networkpolicies").get("items") or []
    extra = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in have_np
             if (o["metadata"]["namespace"], o["metadata"]["name"]) not in want]
    api.each(lambda k: api.call("DELETE", _policy_path(*k), ok404=True), extra)
    want_cnp = {o["metadata"]["name"] for o in cnps}
    have_cnp = api.call("GET", CNP, ok404=True).get("items") or []  # (a lab older than the CRD)
    api.each(lambda n: api.call("DELETE", f"{CNP}/{quote(n)}", ok404=True),
             [o["metadata"]["name"] for o in have_cnp if o["metadata"]["name"] not in want_cnp])


def read_cluster(api: Client, st: LabState) -> tuple[Cluster, dict[str, str], list[str]]:
    """The API's namespaces, policies and the pods of this lab's nodes (or of no node) as
    a Cluster, decoded as the agents decode them; pods without an address yet are in it
    without one. Also: pod -> node for bound pods, and the pods bound to no node."""
    from enforcer.daemon.apistore import ApiStore, decode_object

    store = ApiStore()
    store.replace("Namespace", api.call("GET", "/api/v1/namespaces").get("items") or [])
    store.replace("NetworkPolicy", api.call("GET", f"{NP}/networkpolicies").get("items") or [])
    store.replace("ClusterNetworkPolicy", api.call("GET", CNP, ok404=True).get("items") or [])
    ours = {n["name"] for n in st.nodes}
    raw_pods = api.call("GET", "/api/v1/pods").get("items") or []
    mine, bound, unbound, waiting = [], {}, [], []
    for o in raw_pods:
        meta, spec, status = o.get("metadata") or {}, o.get("spec") or {}, o.get("status") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        node = spec.get("nodeName")
        if (node and node not in ours) or spec.get("hostNetwork") or meta.get("deletionTimestamp") \
                or status.get("phase") in ("Succeeded", "Failed"):
            continue
        if node:
            bound[key] = node
        else:
            unbound.append(key)
        if status.get("podIP"):
            mine.append(o)
        else:  # a pod made with kubectl: decoded with a stand-in address, given one by the lab
            probe = copy.deepcopy(o)
            probe["status"] = {"podIP": "192.0.2.1", "podIPs": [{"ip": "192.0.2.1"}], "phase": "Running"}
            d = decode_object("Pod", probe)
            if d.obj is not None:
                waiting.append(replace(d.obj, ips=()))
    store.replace("Pod", mine)
    cluster = store.cluster()
    pods = dict(cluster.pods)
    for p in waiting:
        pods[p.key] = p
    return replace(cluster, pods=pods), bound, unbound


def report_status(api: Client, st: LabState, keys: list[str], unbound: list[str]) -> None:
    """Bind the pods the lab placed (they named no node), then report every new pod's
    sandbox: its addresses and phase Running."""
    def bind(key: str) -> None:
        ns, name = key.split("/", 1)
        api.call("POST", _pod_path(key) + "/binding", {
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": st.endpoints[key].node}})
    api.each(bind, [k for k in unbound if k in st.endpoints])
    api.each(lambda k: api.merge(_pod_path(k) + "/status", status_patch(st, k)),
             [k for k in keys if k in st.endpoints])
