"""Compile time and peak memory vs cluster size, and incremental recompile after one pod
label change. Prints JSON. Usage: python -m benchmarks.bench_compile [--scale N ...]"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
import tracemalloc
from dataclasses import replace

from benchmarks import gen
from enforcer.compile import Compiler


def measure(namespaces: int, pods: int, policies: int, label_changes: int = 50) -> dict:
    c = gen.cluster(namespaces, pods, policies)
    t0 = time.perf_counter()
    comp = Compiler(c)
    full = time.perf_counter() - t0
    keys = sorted(c.pods)[:: max(1, len(c.pods) // label_changes)][:label_changes]
    times, touched = [], []
    for k in keys:
        p = comp.pods[k]
        new = dict(p.labels, role="api" if p.labels["role"] != "api" else "web")
        t = time.perf_counter()
        changed = comp.set_pod(replace(p, labels=new))
        times.append(time.perf_counter() - t)
        touched.append(len(changed))
    times.sort()
    return {"namespaces": namespaces, "pods": pods, "policies": policies,
            "compile_s": round(full, 3),
            "label_change_ms_p50": round(statistics.median(times) * 1e3, 3),
            "label_change_ms_p99": round(times[int(len(times) * 0.99) - 1] * 1e3 if len(times) > 1 else times[0] * 1e3, 3),
            "label_change_pods_changed_p50": statistics.median(touched),
            "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1500:100:100,15000:1000:1000,150000:10000:10000",
                    help="pods:namespaces:policies,...")
    args = ap.parse_args()
    for size in args.sizes.split(","):
        pods, nss, pols = (int(x) for x in size.split(":"))
        print(json.dumps(measure(nss, pods, pols)), flush=True)


if __name__ == "__main__":
    main()
