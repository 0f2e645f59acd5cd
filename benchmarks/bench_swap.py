"""A rule change in a table with a large set: the whole table replaced against the rules
replaced with the sets kept (backends/nft_swap.py, issue 15). Root; one namespace of our
own (``npt-sw<pid>``), removed at the end. Prints JSON.

    sudo .venv/bin/python -m benchmarks.bench_swap [--elements 2000] [--repeat 9]

The table is what a daemon at 150,000 pods holds for a pod whose policy admits a few
namespaces' clients: one set of ``--elements`` addresses (with their comments) and one rule
on it. Each change flips the rule's port; full and swap alternate, so load moves both
alike; the median of each is reported, and their ratio (bench-quick guards it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backends.nftables import NftablesBackend  # noqa: E402
from enforcer import netns  # noqa: E402
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance  # noqa: E402


def firewall(peers: AddrSet, port: int) -> PodFirewall:
    return PodFirewall(pod="bench/server", ingress=DirectionPolicy(True, ("bench/servers",), (
        AllowRule(Provenance("bench/servers", "ingress", 0), peers=peers.name, ports=(PortMatch("TCP", port),)),)),
        sets=(peers,))


def peer_set(n: int) -> AddrSet:
    addrs = [f"10.{250 + i // 64_000}.{i // 250 % 256}.{i % 250 + 2}/32" for i in range(n)]
    return AddrSet("in0", v4=tuple(addrs), notes=tuple((a, f"ns{i % 50}/client-{i}") for i, a in enumerate(addrs)))


def measure(elements: int, repeat: int) -> dict:
    ns = f"npt-sw{os.getpid()}"
    netns.create(ns)
    backend = NftablesBackend("libnft")
    try:
        peers = peer_set(elements)
        installed = firewall(peers, 80)
        backend.apply(ns, installed)
        full, swap = [], []
        for k in range(repeat * 2):
            new = firewall(peers, 81 if k % 2 == 0 else 80)
            t = time.perf_counter()
            # previous=None: what a rule change cost before (the whole table, every element)
            backend.apply(ns, new, installed if k % 4 in (1, 2) else None)
            (swap if k % 4 in (1, 2) else full).append((time.perf_counter() - t) * 1000)
            installed = new
        if not backend.verify(ns, installed):
            raise SystemExit("the table read back is not the one applied last")
    finally:
        backend.close()
        netns.remove(ns)
    f, s = statistics.median(full), statistics.median(swap)
    return {"elements": elements, "repeat": repeat, "full_ms_median": round(f, 3), "swap_ms_median": round(s, 3),
            "full_ms": [round(x, 3) for x in full], "swap_ms": [round(x, 3) for x in swap],
            "full_over_swap": round(f / s, 2) if s > 0 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    print(json.dumps(measure(args.elements, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
