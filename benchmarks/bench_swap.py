"""A rule change in a table with a large set: the whole table replaced against the rules
replaced with the sets kept (backends/nft_swap.py, issue 15), the latter as text through
libnftables and as one raw netlink batch. Root; namespaces of our own (``npt-sw<pid>-*``,
``npt-se<pid>-*``), removed at the end. Prints JSON.

    sudo .venv/bin/python -m benchmarks.bench_swap [--elements 2000] [--repeat 9]

The table is what a daemon at 150,000 pods holds for a pod whose policy admits a few
namespaces' clients: one set of ``--elements`` addresses (with their comments) and one rule
on it. Each change flips the rule's port; the three ways take turns (whole table as text,
swap as text, swap as a netlink batch), so load moves them alike; the median of each is
reported, and two ratios (bench-quick guards both): whole table / swap (as text, what the
swap saves by keeping the sets) and swap as text / as a netlink batch (what skipping
libnftables' parser and its cache saves; the netlink batch edits only the changed rules,
backends/nft_edit.py). Each way has a namespace of its own.

``edits``: a pod admitted by ``--rules`` policies (a rule each), one policy's port changes:
the flush swap as a netlink batch (every rule of the chain written again) against the edits
(the changed rule deleted by handle, the new one inserted in its place), CPU time, medians;
bench-quick guards ``flush_over_edits``.
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
    # A namespace per way: the netlink backend remembers its last edit of a namespace
    # (backends/nft_edit.py), which another way's transaction there would make stale.
    text, batch = NftablesBackend("libnft"), NftablesBackend("netlink")
    ways = {"full": (text, False), "swap": (text, True), "swap_netlink": (batch, True)}
    spaces = {w: f"npt-sw{os.getpid()}-{i}" for i, w in enumerate(ways)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    peers = peer_set(elements)
    installed = {w: firewall(peers, 80) for w in ways}
    try:
        for way, (backend, _) in ways.items():  # each opens its handles in the namespace before timing
            ns = spaces[way]
            netns.create(ns)
            backend.apply(ns, installed[way])
            backend.apply(ns, firewall(peers, 81), installed[way])
            backend.apply(ns, installed[way], firewall(peers, 81))
        for k in range(repeat * len(ways)):
            way = list(ways)[k % len(ways)]
            backend, keep_sets = ways[way]
            new = firewall(peers, 81 if installed[way].ingress.rules[0].ports[0].first == 80 else 80)
            t = time.perf_counter()
            # previous=None: what a rule change cost before (the whole table, every element)
            result = backend.apply(spaces[way], new, installed[way] if keep_sets else None)
            times[way].append((time.perf_counter() - t) * 1000)
            if result.note:
                raise SystemExit(f"{way}: {result.note}")
            installed[way] = new
        # A dump of a hash set the kernel is still resizing (its deferred rehash after a
        # whole table's elements went in, late on a loaded machine) may list an element
        # twice and miss another: read again before calling it wrong.
        for way in ways:
            if not any(text.verify(spaces[way], installed[way]) or time.sleep(0.05) for _ in range(5)):
                raise SystemExit(f"{way}: the table read back is not the one applied last")
    finally:
        text.close()
        batch.close()
        for ns in spaces.values():
            if netns.exists(ns):
                netns.remove(ns)
    f, s, n = (statistics.median(times[w]) for w in ways)
    return {"elements": elements, "repeat": repeat, "full_ms_median": round(f, 3), "swap_ms_median": round(s, 3),
            "swap_netlink_ms_median": round(n, 3),
            **{f"{w}_ms": [round(x, 3) for x in times[w]] for w in ways},
            "full_over_swap": round(f / s, 2) if s > 0 else None,
            "swap_text_over_netlink": round(s / n, 2) if n > 0 else None}


def many_rules(rules: int, port: int) -> PodFirewall:
    """A pod admitted by ``rules`` policies, each its own port; the first one's is ``port``."""
    peers = AddrSet("in0", v4=("10.250.0.2/32", "10.250.0.3/32"))
    allow = tuple(AllowRule(Provenance(f"bench/p{i}", "ingress", 0), peers="in0",
                            ports=(PortMatch("TCP", port if i == 0 else 1000 + 10 * i),)) for i in range(rules))
    return PodFirewall(pod="bench/server", ingress=DirectionPolicy(True, tuple(f"bench/p{i}" for i in range(rules)),
                                                                   allow), sets=(peers,))


def measure_edits(rules: int, repeat: int) -> dict:
    """One policy's port changes in a pod admitted by ``rules`` policies: the flush swap
    (every rule of the chain written again) against the edits (only the changed rule's;
    backends/nft_edit.py), both as one netlink batch, in CPU time (the kernel's work for our
    messages is ours), each in its own namespace."""
    from backends import nft_netlink, nft_swap

    spaces = {w: f"npt-se{os.getpid()}-{w}" for w in ("flush", "edits")}
    backend = NftablesBackend("netlink")
    sock = None
    cpu: dict[str, list[float]] = {w: [] for w in spaces}
    installed = {w: many_rules(rules, 80) for w in spaces}
    try:
        for w, ns in spaces.items():
            netns.create(ns)
            backend.apply(ns, installed[w])
        backend.learn(spaces["edits"], installed["edits"])
        with netns.entered(spaces["flush"]):
            sock = nft_netlink.TableSocket()
        for k in range(repeat * 2):
            way = "flush" if k % 2 == 0 else "edits"
            before = installed[way]
            new = many_rules(rules, 81 if before.ingress.rules[0].ports[0].first == 80 else 80)
            t = time.process_time()
            if way == "edits":
                if backend.apply(spaces[way], new, before).note:
                    raise SystemExit("edits: not applied as edits")
            else:
                sw = nft_swap.rules_transaction(before, new)
                sock.commit(nft_swap.encode_swap(sw.table, sw.comment, sw.blocks, sw.delta.changes, sw.set_types))
            cpu[way].append((time.process_time() - t) * 1000)
            installed[way] = new
        for w, ns in spaces.items():
            if not backend.verify(ns, installed[w]):
                raise SystemExit(f"{w}: the table read back is not the one applied last")
    finally:
        if sock is not None:
            sock.close()
        backend.close()
        for ns in spaces.values():
            if netns.exists(ns):
                netns.remove(ns)
    f, e = (statistics.median(cpu[w]) for w in ("flush", "edits"))
    return {"rules": rules, "flush_cpu_ms_median": round(f, 3), "edits_cpu_ms_median": round(e, 3),
            "flush_over_edits": round(f / e, 2) if e > 0 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--rules", type=int, default=40, help="policies admitting the pod of the edits measurement")
    args = ap.parse_args()
    out = measure(args.elements, args.repeat)
    out["edits"] = measure_edits(args.rules, args.repeat * 3)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
