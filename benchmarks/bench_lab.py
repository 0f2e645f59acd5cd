"""Lab timings: up, probe and down of a 9-pod lab and of a 250-pod lab. Prints JSON.

    sudo .venv/bin/python benchmarks/bench_lab.py [--backend nftables] [--big 250] [--repeat 3]

Targets (docs/lab.md): 9 pods: up <= 2 s, probe of the 72 pairs on one port <= 3 s,
down <= 1 s; 250 pods: up <= 30 s (the full probe, 62,250 pairs, is measured and reported).

The policy: a default-deny ingress in one namespace out of three, so about a third of the
cells time out and the probe pays its timeout (and one retry) for them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from typing import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from enforcer.lab import control  # noqa: E402
from enforcer.model import Cluster, ContainerPort, LabelSelector, Namespace, NetworkPolicy, Pod  # noqa: E402


def cluster(n: int, deny: bool = True) -> Cluster:
    namespaces = {ns: Namespace(ns, {"kubernetes.io/metadata.name": ns}) for ns in ("x", "y", "z")}
    pods = {}
    for i in range(n):
        ns = "xyz"[i % 3]
        p = Pod(ns, f"p{i}", {"app": f"a{i % 5}"}, (), (ContainerPort(80, "TCP"),))
        pods[p.key] = p
    policies = {}
    if deny:
        pol = NetworkPolicy("z", "deny", LabelSelector(), frozenset({"Ingress"}))
        policies[pol.key] = pol
    return Cluster(namespaces, pods, policies, {})


@contextlib.contextmanager
def down_timed(name: str, out: dict) -> Iterator[None]:
    """Lab ``name`` goes down when the block ends, however it ends; ``out["down_s"]``
    is how long that took."""
    try:
        yield
    finally:
        t = time.monotonic()
        control.down(name)
        out["down_s"] = round(time.monotonic() - t, 3)


def run(n: int, backend: str, timeout: float) -> dict:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    out: dict = {"pods": n, "backend": backend}
    with down_timed(name, out):
        t = time.monotonic()
        control.up(name, cluster(n), backend)
        out["up_s"] = round(time.monotonic() - t, 3)
        report = control.probe(name, [(80, "TCP")], timeout=timeout)
        out["probe_s"] = report.seconds
        out["pairs"] = len(report.rows)
        out["allowed"] = sum(r["allowed"] for r in report.rows)
        expected = control.expected(name, [(80, "TCP")])
        out["wrong"] = sum(e["allowed"] != o["allowed"] for e, o in zip(expected, report.rows))
        t = time.monotonic()
        control.apply(name, cluster(n, deny=False))
        out["apply_s"] = round(time.monotonic() - t, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="nftables")
    ap.add_argument("--small", type=int, default=9)
    ap.add_argument("--big", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args()
    small = [run(args.small, args.backend, args.timeout) for _ in range(args.repeat)]
    result: dict = {"small": small}
    if args.big:
        result["big"] = run(args.big, args.backend, args.timeout)
    best = {k: min(r[k] for r in small) for k in ("up_s", "probe_s", "down_s")}
    result["small_best"] = best
    result["targets_met"] = {
        "small_up<=2s": best["up_s"] <= 2.0, "small_probe<=3s": best["probe_s"] <= 3.0,
        "small_down<=1s": best["down_s"] <= 1.0,
        **({"big_up<=30s": result["big"]["up_s"] <= 30.0} if args.big else {}),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
