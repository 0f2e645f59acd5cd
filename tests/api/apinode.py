"""A node for the API source's tests: a real API server, a lab of network namespaces that
plays the node's pods, and ``netpol run --kubeconfig`` enforcing in them.

The API server has no scheduler and no kubelet, so this module does their part the way
they do it: a pod is created already bound (``spec.nodeName``), then its status is patched
through the ``status`` subresource with its phase and addresses, as a kubelet reports a
started pod. The pods' network namespaces are the lab's (``enforcer.lab.control``, backend
``fake``: servers and addresses, no rules), named ``netpol-<lab>-...``; the daemon only
sees those (``--netns-prefix``). Everything is removed at the end.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
import uuid
from typing import Iterable

from enforcer.daemon.testing import DaemonProcess, tcp_ok, wait_for

NODE = "node-under-test"


def _strip(obj: dict) -> dict:
    """What a user would send: no status, no server-set metadata."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        meta.pop(k, None)
    return out


def pod_ips(obj: dict) -> list[str]:
    st = obj.get("status") or {}
    ips = [p["ip"] for p in st.get("podIPs") or () if p.get("ip")]
    return ips or ([st["podIP"]] if st.get("podIP") else [])


class ApiCluster:
    """What the tests do to the API server: create bound pods and report them running,
    apply, relabel and delete objects. ``cp`` is an enforcer.k8s.controlplane.ControlPlane."""

    def __init__(self, cp, node: str = NODE) -> None:
        self.cp = cp
        self.node = node

    def apply(self, objects: Iterable[dict]) -> None:
        docs = [_strip(o) for o in objects]
        if docs:  # JSON: kubectl reads YAML 1.1, where a label value y would be a boolean
            self.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))

    def create_pod(self, obj: dict, *, node: str | None = None, phase: str = "Running",
                   ips: list[str] | None = None) -> None:
        doc = _strip(obj)
        doc.setdefault("spec", {})["nodeName"] = node or self.node
        for c in doc["spec"].get("containers") or ():
            c.setdefault("image", "registry.k8s.io/pause:3.10")
        self.apply([doc])
        self.set_status(doc["metadata"].get("namespace", "default"), doc["metadata"]["name"],
                        phase=phase, ips=pod_ips(obj) if ips is None else ips)

    def set_status(self, namespace: str, name: str, *, phase: str, ips: list[str]) -> None:
        """What the kubelet reports once the pod's sandbox has its addresses."""
        status: dict = {"phase": phase}
        if ips:
            status.update(podIP=ips[0], podIPs=[{"ip": ip} for ip in ips])
        reply = self.cp.api("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                            json.dumps({"status": status}), content_type="application/merge-patch+json")
        assert reply.ok, reply.body

    def relabel(self, kind: str, namespace: str | None, name: str, labels: dict[str, str]) -> None:
        """Make the object's labels exactly ``labels`` (the API server keeps
        kubernetes.io/metadata.name on namespaces whatever we send)."""
        path = (f"/api/v1/namespaces/{name}" if kind == "Namespace"
                else f"/api/v1/namespaces/{namespace}/pods/{name}")
        current = self.cp.api("GET", path).body["metadata"].get("labels") or {}
        patch = {k: None for k in current if k not in labels and k != "kubernetes.io/metadata.name"}
        patch.update(labels)
        reply = self.cp.api("PATCH", path, json.dumps({"metadata": {"labels": patch}}),
                            content_type="application/merge-patch+json")
        assert reply.ok, reply.body

    def delete_policies(self, namespace: str, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            self.cp.kubectl("delete", "networkpolicy", "-n", namespace, *names, "--wait=false")

    def delete_pod(self, namespace: str, name: str) -> None:
        self.cp.kubectl("delete", "pod", "-n", namespace, name, "--grace-period=0", "--force", "--wait=false")

    def policies(self) -> dict[str, dict]:
        out = json.loads(self.cp.kubectl("get", "networkpolicies", "-A", "-o", "json").stdout)
        return {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in out["items"]}

    def converge(self, objects: Iterable[dict]) -> None:
        """Make the API hold ``objects`` (a conformance step's whole state): policies
        applied or deleted with kubectl, namespace and pod labels set as written."""
        objects = list(objects)
        want = {f"{o['metadata'].get('namespace', 'default')}/{o['metadata']['name']}": o
                for o in objects if o["kind"] == "NetworkPolicy"}
        have = self.policies()
        by_ns: dict[str, list[str]] = {}
        for key in sorted(have.keys() - want.keys()):
            ns, name = key.split("/")
            by_ns.setdefault(ns, []).append(name)
        for ns, names in by_ns.items():
            self.delete_policies(ns, names)
        for o in objects:
            meta = o["metadata"]
            if o["kind"] == "Namespace":
                self.relabel("Namespace", None, meta["name"], meta.get("labels") or {})
            elif o["kind"] == "Pod":
                self.relabel("Pod", meta.get("namespace", "default"), meta["name"], meta.get("labels") or {})
        changed = [o for k, o in want.items()
                   if k not in have or _strip(o).get("spec") != have[k].get("spec")]
        self.apply(changed)


def start_daemon(cp, tmp, prefix: str, *, backend: str = "nftables", kubeconfig=None, args=(),
                 wait: float = 30.0, state_file: str | None = None) -> DaemonProcess:
    d = DaemonProcess([], state_file=state_file or os.path.join(tmp, "state.json"), netns_prefix=prefix,
                      backend=backend, log_path=os.path.join(tmp, f"daemon-{uuid.uuid4().hex[:6]}.log"),
                      args=["--kubeconfig", str(kubeconfig or cp.kubeconfig), "--node", NODE,
                            "--repair-interval", "2", *args])
    return d.start(wait=wait)


class Prober:
    """Probes pairs continuously from a thread and records every verdict that differs
    from what is expected: a denied pair that connects, or an allowed one that does not."""

    def __init__(self, pairs: list[tuple[str, str, int, bool]], *, timeout: float = 0.5) -> None:
        self.pairs = pairs  # (source netns, destination ip, port, expected allowed)
        self.timeout = timeout
        self.wrong: list[tuple[float, str, str, int, bool]] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for src, ip, port, allowed in list(self.pairs):
                got = tcp_ok(src, ip, port, timeout=self.timeout)
                if got != allowed and allowed:
                    got = tcp_ok(src, ip, port, timeout=2.0)  # a slow moment is not a drop
                if got != allowed:
                    self.wrong.append((time.time(), src, ip, port, got))
            self.rounds += 1
            self._stop.wait(0.05)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


__all__ = ["ApiCluster", "NODE", "Prober", "start_daemon", "tcp_ok", "wait_for"]
