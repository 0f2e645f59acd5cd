"""Compile time and peak memory vs cluster size, and incremental recompile after one pod
label change; the demand-driven compile (the firewalls of a few pods only); and the whole
``netpol render --pod`` pipeline on a cluster written as one JSON List. Prints JSON lines.

    python -m benchmarks.bench_compile --sizes 15000:1000:1000 [--shape common]
    python -m benchmarks.bench_compile --render-pod 150000:10000:10000 --shape common
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from benchmarks import gen
from enforcer.compiler.compile import Compiler


def demand(c, asked: int) -> float:
    """Seconds to index the cluster and build the firewalls of ``asked`` pods only (the
    daemon's local pods, ``render --pod``)."""
    keys = sorted(c.pods)[:: max(1, len(c.pods) // asked)][:asked]
    t0 = time.perf_counter()
    comp = Compiler(c)
    for k in keys:
        comp.firewall(k)
    return time.perf_counter() - t0


def measure(namespaces: int, pods: int, policies: int, label_changes: int = 50, shape: str = "mixed") -> dict:
    c = gen.SHAPES[shape](namespaces, pods, policies)
    # On demand first, full after: the full compile's objects would make the first one's
    # allocations (and collector) dearer, and it is the one the daemon and --pod pay.
    one = demand(c, 1)
    local = demand(c, 110)
    t0 = time.perf_counter()
    comp = Compiler(c)
    comp.firewalls()
    full = time.perf_counter() - t0
    keys = sorted(c.pods)[:: max(1, len(c.pods) // label_changes)][:label_changes]
    times, touched = [], []
    for k in keys:
        p = comp.pods[k]
        new = dict(p.labels, role="api" if p.labels.get("role") != "api" else "web")
        t = time.perf_counter()
        changed = comp.set_pod(replace(p, labels=new))
        times.append(time.perf_counter() - t)
        touched.append(len(changed))
    times.sort()
    return {"shape": shape, "namespaces": namespaces, "pods": pods, "policies": policies,
            "compile_s": round(full, 3),
            "demand_1_pod_s": round(one, 3), "demand_110_pods_s": round(local, 3),
            "label_change_ms_p50": round(statistics.median(times) * 1e3, 3),
            "label_change_ms_p99": round(times[int(len(times) * 0.99) - 1] * 1e3 if len(times) > 1 else times[0] * 1e3, 3),
            "label_change_pods_changed_p50": statistics.median(touched),
            "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def render_pod(namespaces: int, pods: int, policies: int, shape: str, pod: str = "ns0/p0") -> dict:
    """``netpol render --pod`` as a user runs it: load and validate the JSON List, compile
    what the pod needs, render. Wall time and the child's peak RSS."""
    c = gen.SHAPES[shape](namespaces, pods, policies)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cluster.json")
        with open(path, "w") as f:
            json.dump(gen.to_documents(c), f)
        del c
        netpol = [sys.executable, "-m", "enforcer"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = before.ru_utime + before.ru_stime
        t0 = time.perf_counter()
        proc = subprocess.run(netpol + ["render", "-f", path, "--pod", pod], capture_output=True, text=True)
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"render failed: {proc.stderr.strip()[-400:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The wall time moves with the machine's load (2 cores shared with other work); the
    # child's CPU time and the load average say how much of it was ours.
    return {"shape": shape, "namespaces": namespaces, "pods": pods, "policies": policies,
            "render_pod_s": round(took, 2), "render_pod_cpu_s": round(usage.ru_utime + usage.ru_stime - cpu0, 2),
            "render_pod_maxrss_mib": round(usage.ru_maxrss / 1024, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2), "render_lines": proc.stdout.count("\n")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1500:100:100,15000:1000:1000,150000:10000:10000",
                    help="pods:namespaces:policies,...")
    ap.add_argument("--shape", default="mixed", choices=sorted(gen.SHAPES),
                    help="cluster shape (benchmarks/gen.py)")
    ap.add_argument("--render-pod", metavar="PODS:NAMESPACES:POLICIES",
                    help="time `netpol render --pod ns0/p0` on a cluster of this size instead")
    args = ap.parse_args()
    if args.render_pod:
        pods, nss, pols = (int(x) for x in args.render_pod.split(":"))
        print(json.dumps(render_pod(nss, pods, pols, args.shape)), flush=True)
        return
    for size in args.sizes.split(","):
        pods, nss, pols = (int(x) for x in size.split(":"))
        print(json.dumps(measure(nss, pods, pols, shape=args.shape)), flush=True)


if __name__ == "__main__":
    main()
