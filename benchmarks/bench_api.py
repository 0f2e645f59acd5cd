"""The API source's numbers: ``kubectl apply`` of a policy until enforced (seen by probes)
in 110 local pods, the API watch's own delay apart; idle CPU and resident memory with
5,000 pods in the API server (112 of them local). Prints JSON.

    sudo .venv/bin/python benchmarks/bench_api.py [--local 110] [--cluster 5000] [--changes 30]

Targets (issue 11): kubectl apply -> enforced, 110 local pods: p50 <= 100 ms, p99 <= 300 ms;
idle CPU < 1% of a core and RSS <= 150 MB with 5,000 pods in the API.

Set-up: a real etcd + kube-apiserver on 127.0.0.1 (enforcer.k8s.controlplane), a lab
(backend fake: namespaces, addresses, servers, no rules) with the local pods, the same
cluster as benchmarks/bench_daemon.py created through the API (pods bound with
spec.nodeName, status patched with phase and addresses as a kubelet would; ~4,900 on other
nodes), and ``netpol run --kubeconfig --node`` with the nftables backend.

Each change is one ``kubectl apply -f -`` of the policy; it is enforced when real
connections from the allowed client reach all 110 servers. Timestamps per change:

    t0        kubectl starts
    watched   a watch of our own (official client, same as the daemon's) receives the event:
              t0 -> watched is kubectl plus the API server's write and watch fan-out
    enforced  the probe round in which the last server answered

The daemon's own delay (its first event to the end of the sync) comes from its log.
Two kinds of change, as in bench_daemon.py: ``peers`` (set elements only: a delta per
namespace) and ``ports`` (the rules change: a full table swap per namespace).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.bench_daemon import (NS, cluster_docs, cpu_seconds, ip_of, policy, rss_mb,  # noqa: E402
                                     summary, wait_enforced)
from enforcer.load import manifests  # noqa: E402
from enforcer.daemon.testing import DaemonProcess, write_yaml  # noqa: E402
from enforcer.k8s.controlplane import ControlPlane, missing_binaries  # noqa: E402
from enforcer.lab import control  # noqa: E402
from enforcer.lab.probe import Target  # noqa: E402

NODE = "bench-node"


def as_list(docs: list[dict]) -> str:
    """JSON for kubectl (YAML 1.1 would read some label values as booleans)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def populate(cp: ControlPlane, docs: list[dict], local_names: set[str], workers: int = 8) -> float:
    """Create the namespaces and pods through the API, bound and reported running."""
    t = time.monotonic()
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    cp.kubectl("apply", "-f", "-", input=as_list(namespaces))
    pods = [d for d in docs if d["kind"] == "Pod"]
    local = threading.local()
    host, port = cp.server.removeprefix("https://").rsplit(":", 1)

    def call(method: str, path: str, body: dict, ctype: str = "application/json"):
        """One request on this thread's kept-alive connection (a TLS handshake per
        request would cost most of the set-up)."""
        import http.client

        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPSConnection(host, int(port), context=cp._ssl_context())
        conn.request(method, path, json.dumps(body), {"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")

    def one(doc: dict) -> None:
        meta = doc["metadata"]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": dict(doc["spec"], nodeName=NODE if meta["name"] in local_names
                             else f"node-{hash(meta['name']) % 40}")}
        for c in body["spec"]["containers"]:
            c["image"] = "registry.k8s.io/pause:3.10"
        status, text = call("POST", f"/api/v1/namespaces/{meta['namespace']}/pods", body)
        if status >= 300 and status != 409:
            raise RuntimeError(f"create {meta['name']}: {status} {text[:200]}")
        ip = doc["status"]["podIP"]
        patch = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
        status, text = call("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                            patch, "application/merge-patch+json")
        if status >= 300:
            raise RuntimeError(f"status {meta['name']}: {status} {text[:200]}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, pods))
    return time.monotonic() - t


class PolicyWatch:
    """Our own watch of the policy (the official client, as the daemon's): when each
    generation of it arrives."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config, watch

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.api = client.NetworkingV1Api(client.ApiClient(cfg))
        self.watch = watch.Watch()
        self.seen: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for ev in self.watch.stream(self.api.list_namespaced_network_policy, NS, timeout_seconds=3600):
            obj = ev["raw_object"]
            self.seen.setdefault(int(obj["metadata"].get("generation", 0)), time.monotonic())

    def wait(self, generation: int, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if generation in self.seen:
                return self.seen[generation]
            time.sleep(0.001)
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", type=int, default=110, help="server pods with a namespace here")
    ap.add_argument("--cluster", type=int, default=5000, help="pods in the API, local ones included")
    ap.add_argument("--changes", type=int, default=30, help="policy changes per kind")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle to measure CPU over")
    args = ap.parse_args()
    reason = missing_binaries()
    if reason:
        print(json.dumps({"skipped": reason}))
        return

    lab = f"npt-ba{uuid.uuid4().hex[:6]}"
    prefix = f"netpol-{lab}-"
    work = tempfile.mkdtemp(prefix="netpol-bench-api-")
    local_docs, docs = cluster_docs(args.local, args.cluster)
    local_names = {d["metadata"]["name"] for d in local_docs if d["kind"] == "Pod"}
    out: dict = {"local_pods": args.local + 2, "cluster_pods": args.cluster, "backend": "nftables",
                 "cpus": os.cpu_count()}
    cp = ControlPlane(__import__("pathlib").Path(work) / "cp")
    d = None
    lab_up = False
    try:
        cp.start()
        write_yaml(os.path.join(work, "lab.yaml"), local_docs)
        control.up(lab, manifests.load([os.path.join(work, "lab.yaml")]).cluster, "fake")
        lab_up = True
        out["populate_s"] = round(populate(cp, docs, local_names), 1)
        cp.kubectl("apply", "-f", "-", input=as_list(policy(80, "client-a")))
        d = DaemonProcess([], state_file=os.path.join(work, "state.json"), netns_prefix=prefix,
                          args=["--kubeconfig", str(cp.kubeconfig), "--node", NODE],
                          log_path=os.path.join(work, "daemon.log"), log_level="info")
        t = time.monotonic()
        d.start(wait=180)
        out["start_to_ready_s"] = round(time.monotonic() - t, 2)
        out["managed_namespaces"] = d.state()["counts"]["managed"]
        out["rss_mb_after_start"] = rss_mb(d.proc.pid)
        pw = PolicyWatch(str(cp.kubeconfig))
        servers = [ip_of(i) for i in range(args.local)]
        client_ns = {c: f"{prefix}{NS}-{c}" for c in ("client-a", "client-b")}
        generation = [1]

        def measure(kind: str) -> dict[str, list[float]]:
            total, watched, kubectl_ms, after_event = [], [], [], []
            port, client = 80, "client-a"
            for _ in range(args.changes):
                if kind == "ports":
                    port = 81 if port == 80 else 80
                else:
                    client = "client-b" if client == "client-a" else "client-a"
                targets = [Target(client_ns[client], ip, port, "TCP") for ip in servers]
                time.sleep(0.2)
                text = as_list(policy(port, client))
                t0 = time.monotonic()
                cp.kubectl("apply", "-f", "-", input=text)
                t_ret = time.monotonic()
                done = wait_enforced(client_ns[client], targets)
                generation[0] += 1
                seen = pw.wait(generation[0])
                total.append((done - t0) * 1000)
                kubectl_ms.append((t_ret - t0) * 1000)
                if seen is not None:
                    watched.append((seen - t0) * 1000)
                    after_event.append((done - seen) * 1000)
            return {"total": total, "watched": watched, "kubectl": kubectl_ms, "after_event": after_event}

        mark = len(d.logs("sync done"))
        peers = measure("peers")
        s1 = d.logs("sync done")[mark:]
        mark = len(d.logs("sync done"))
        ports = measure("ports")
        s2 = d.logs("sync done")[mark:]

        def own(syncs):
            v = [s["delay_ms"] for s in syncs if s.get("delay_ms") is not None and s.get("applied")]
            return summary(v) if v else None

        out["kubectl_apply_to_enforced_probe"] = {
            "peers (set-element delta in every server namespace)": summary(peers["total"]),
            "ports (rules edited in every server namespace)": summary(ports["total"])}
        out["api_event_to_enforced_probe"] = {"peers": summary(peers["after_event"]),
                                              "ports": summary(ports["after_event"])}
        out["kubectl_start_to_our_watch_event"] = {"peers": summary(peers["watched"]),
                                                   "ports": summary(ports["watched"])}
        out["kubectl_run_time"] = summary(peers["kubectl"] + ports["kubectl"])
        out["daemon_delay_event_to_enforced"] = {"peers": own(s1), "ports": own(s2)}
        time.sleep(3)
        pid = d.proc.pid
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        out["idle_cpu_percent_of_one_core"] = round((c1 - c0) / (t1 - t0) * 100, 3)
        out["idle_window_s"] = round(t1 - t0, 1)
        out["rss_mb"] = rss_mb(pid)
        st = d.state()
        out["api"] = {k: {f: v[f] for f in ("events", "relists", "watch_restarts")}
                      for k, v in st["source"]["kinds"].items()}
        out["apply_errors"] = st["totals"]["apply_errors"]
    finally:
        if d is not None:
            d.close()
        if lab_up:
            control.down(lab)
        cp.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
