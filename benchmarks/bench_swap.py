"""A rule change in a table with a large set: the whole table replaced against the rules
replaced with the sets kept (backends/nft_swap.py, issue 15), the latter as text through
libnftables and as one raw netlink batch. Root; one namespace of our own
(``npt-sw<pid>``), removed at the end. Prints JSON.

    sudo .venv/bin/python -m benchmarks.bench_swap [--elements 2000] [--repeat 9]

The table is what a daemon at 150,000 pods holds for a pod whose policy admits a few
namespaces' clients: one set of ``--elements`` addresses (with their comments) and one rule
on it. Each change flips the rule's port; the three ways take turns (whole table as text,
swap as text, swap as a netlink batch), so load moves them alike; the median of each is
reported, and two ratios (bench-quick guards both): whole table / swap (as text, what the
swap saves by keeping the sets) and swap as text / as a netlink batch (what skipping
libnftables' parser and its cache saves).
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
    text, batch = NftablesBackend("libnft"), NftablesBackend("netlink")
    ways = {"full": (text, False), "swap": (text, True), "swap_netlink": (batch, True)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    try:
        peers = peer_set(elements)
        installed = firewall(peers, 80)
        text.apply(ns, installed)
        for backend in (text, batch):  # each opens its handles in the namespace before timing
            backend.apply(ns, firewall(peers, 81), installed)
            backend.apply(ns, installed, firewall(peers, 81))
        for k in range(repeat * len(ways)):
            way = list(ways)[k % len(ways)]
            backend, keep_sets = ways[way]
            new = firewall(peers, 81 if k % 2 == 0 else 80)
            t = time.perf_counter()
            # previous=None: what a rule change cost before (the whole table, every element)
            result = backend.apply(ns, new, installed if keep_sets else None)
            times[way].append((time.perf_counter() - t) * 1000)
            if result.note:
                raise SystemExit(f"{way}: {result.note}")
            installed = new
        # A dump of a hash set the kernel is still resizing (its deferred rehash after a
        # whole table's elements went in, late on a loaded machine) may list an element
        # twice and miss another: read again before calling it wrong.
        if not any(text.verify(ns, installed) or time.sleep(0.05) for _ in range(5)):
            raise SystemExit("the table read back is not the one applied last")
    finally:
        text.close()
        batch.close()
        netns.remove(ns)
    f, s, n = (statistics.median(times[w]) for w in ways)
    return {"elements": elements, "repeat": repeat, "full_ms_median": round(f, 3), "swap_ms_median": round(s, 3),
            "swap_netlink_ms_median": round(n, 3),
            **{f"{w}_ms": [round(x, 3) for x in times[w]] for w in ways},
            "full_over_swap": round(f / s, 2) if s > 0 else None,
            "swap_text_over_netlink": round(s / n, 2) if n > 0 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    print(json.dumps(measure(args.elements, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
