"""API lab timings (``lab up --api --nodes N``). Prints JSON.

    sudo .venv/bin/python benchmarks/bench_api_lab.py [--backend nftables] [--changes 20] [--big 250] [--big-nodes 5]

Small: the 9 e2e pods on 3 nodes. ``up_s`` includes the control plane; ``apiserver_s`` is
its own start (etcd + kube-apiserver until /readyz, in a thread while the namespaces are
built), ``apiserver_wait_s`` the part of it ``up`` waited for after the namespaces were
ready. Then ``kubectl apply`` until enforced: a deny-ingress policy for namespace x
applied and deleted in turn with kubectl, each time timed from just before kubectl starts
(what a user sees, kubectl's own ~0.1-0.3 s included) and from when kubectl returned,
until a real connection from y/a to x/b (on another node) flips; p50 and p99. Then down.

Big: 250 pods over 5 nodes: up, a full probe of port 80 (every ordered pair), and each
agent's CPU seconds (user + system, /proc) and resident memory after up and after one
policy change, then down.

Targets (issue 12): small up <= 15 s including the control plane, down <= 3 s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.bench_lab import down_timed  # noqa: E402
from enforcer.daemon.testing import tcp_ok  # noqa: E402
from enforcer.lab import control, state  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "tests", "conformance", "base.yaml")
DENY_X = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"namespace": "x", "name": "deny-ingress"},
          "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


def _kubectl(kubeconfig: str, *args: str, input: str | None = None) -> None:
    kubectl = os.path.join(os.path.dirname(sys.executable), "kubectl")
    subprocess.run([kubectl, "--kubeconfig", kubeconfig, *args], input=input, text=True,
                   capture_output=True, check=True)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))], 3)


def _agent_usage(st) -> dict:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for node, rec in sorted((st.api.get("agents") or {}).items()):
        pid = rec["pid"]
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
        out[node] = {"cpu_s": round(cpu, 2), "rss_mb": rss}
    return out


def small(backend: str, changes: int) -> dict:
    from enforcer.load import manifests
    from enforcer.lab import multinode

    name = f"bapi-{uuid.uuid4().hex[:6]}"
    cluster = manifests.load([BASE]).cluster
    node_of, policies = multinode.raw_inputs([BASE])
    out: dict = {"pods": len(cluster.pods), "nodes": 3, "backend": backend}
    with down_timed(name, out):
        t = time.monotonic()
        res = control.up(name, cluster, backend, nodes=3, api=True, node_of=node_of, policies=policies)
        out["up_s"] = round(time.monotonic() - t, 3)
        st = state.load(name)
        out["apiserver_s"] = st.api.get("apiserver_seconds")
        out["apiserver_wait_s"] = next((float(n.split(", ")[1].split("s")[0]) for n in res.notes
                                        if n.startswith("control plane:")), None)
        kc = st.api["kubeconfig"]
        src = st.endpoints["y/a"].netns
        dst = st.endpoints["x/b"].ips[0]
        from_start, from_return = [], []
        for i in range(changes):
            deny = i % 2 == 0
            t0 = time.monotonic()
            if deny:
                _kubectl(kc, "apply", "-f", "-", input=json.dumps(DENY_X))
            else:
                _kubectl(kc, "delete", "networkpolicy", "-n", "x", "deny-ingress")
            t1 = time.monotonic()
            deadline = t1 + 30
            while tcp_ok(src, dst, 80, timeout=0.02) == deny and time.monotonic() < deadline:
                pass
            t2 = time.monotonic()
            from_start.append(t2 - t0)
            from_return.append(t2 - t1)
        out["enforced_after_kubectl_start_p50_s"] = _pct(from_start, 50)
        out["enforced_after_kubectl_start_p99_s"] = _pct(from_start, 99)
        out["enforced_after_kubectl_return_p50_s"] = _pct(from_return, 50)
        out["enforced_after_kubectl_return_p99_s"] = _pct(from_return, 99)
        out["changes"] = changes
        report = control.probe(name, [(80, "TCP")], timeout=0.5)
        expected = control.expected(name, [(80, "TCP")])
        out["wrong"] = sum(e["allowed"] != o["allowed"] for e, o in zip(expected, report.rows))
    return out


def big(backend: str, n: int, nodes: int) -> dict:
    from benchmarks.bench_lab import cluster as big_cluster

    name = f"bapib-{uuid.uuid4().hex[:6]}"
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": "z", "name": "deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    out: dict = {"pods": n, "nodes": nodes, "backend": backend}
    with down_timed(name, out):
        t = time.monotonic()
        control.up(name, big_cluster(n), backend, nodes=nodes, api=True, policies=[deny])
        out["up_s"] = round(time.monotonic() - t, 3)
        st = state.load(name)
        out["apiserver_s"] = st.api.get("apiserver_seconds")
        out["agents_after_up"] = _agent_usage(st)
        report = control.probe(name, [(80, "TCP")], timeout=1.0)
        out["probe_s"] = report.seconds
        out["pairs"] = len(report.rows)
        out["allowed"] = sum(r["allowed"] for r in report.rows)
        expected = control.expected(name, [(80, "TCP")])
        out["wrong"] = sum(e["allowed"] != o["allowed"] for e, o in zip(expected, report.rows))
        src = next(e for k, e in st.endpoints.items() if k.startswith("x/"))
        dst = next(e for k, e in st.endpoints.items() if k.startswith("z/") and e.node != src.node)
        assert not tcp_ok(src.netns, dst.ips[0], 80, timeout=0.5), "z must be isolated before the change"
        t = time.monotonic()  # from just before kubectl starts, as in small()
        _kubectl(st.api["kubeconfig"], "delete", "networkpolicy", "-n", "z", "deny")
        while not tcp_ok(src.netns, dst.ips[0], 80, timeout=0.05) and time.monotonic() - t < 60:
            pass
        out["policy_delete_enforced_s"] = round(time.monotonic() - t, 3)
        time.sleep(1.0)
        out["agents_after_change"] = _agent_usage(st)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="nftables")
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--big", type=int, default=250, help="pods of the big lab (0: skip it)")
    ap.add_argument("--big-nodes", type=int, default=5)
    args = ap.parse_args()
    result = {"small": small(args.backend, args.changes)}
    if args.big:
        result["big"] = big(args.backend, args.big, args.big_nodes)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
