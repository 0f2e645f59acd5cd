"""Host mode against pod mode (issue 13): cold apply, delta fan-out, datapath.

    sudo .venv/bin/python -m benchmarks.bench_host [--pods 110] [--repeat 5] [--rounds 7]
        [--backend nftables|iptables|iptables-legacy]

1. Apply, the firewalls of benchmarks/bench_apply.py (110 pods, 20 policies, ~62 rules and
   ~600 elements a pod), nftables through libnftables, in the same run:
   - pod mode: a table in each of 110 pod namespaces (``apply_many``: one transaction per pod);
   - host mode, ``apply_many``: every pod's chains, sets and map entries in ONE transaction
     for the node;
   - host mode, one pod after the other: one transaction per pod (what a lab does while it
     wires pods one by one);
   then the delta fan-out: one peer joins the set every pod references, and back, ``repeat``
   times each way; medians. ``--backend iptables`` (or iptables-legacy): pod mode against
   host mode's one batch per node (backends/ipt_host.py), the same firewalls.
2. Datapath in host mode: a two-pod lab (enforcer/lab) in host mode; the receiver's
   ingress allows a set of 1 or of 10,000 peer addresses (the sender's among them); the
   sender (benchmarks/bench_datapath.py's sendmmsg sender) sends one-way UDP with a new
   source port every packet, so every packet is a new flow and walks the forward chain;
   the receiver's /proc/net/snmp counts what arrived. The two cases alternate, ``rounds``
   times; the median ratio is reported (single runs swing on this shared machine).

Prints one JSON document. Not a test. Root only; namespaces ``npt-bench-<pid>-*`` and a lab
``hbench<pid>``, all removed at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backends.nft_host import NftHostBackend  # noqa: E402
from backends import nftables  # noqa: E402
from backends.nftables import NftablesBackend  # noqa: E402
from backends.placement import HostMap  # noqa: E402
from benchmarks.bench_apply import firewall, timed  # noqa: E402
from enforcer import netns  # noqa: E402
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, Provenance  # noqa: E402

PREFIX = f"npt-bench-{os.getpid()}"


def _ok(results) -> list:
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        raise bad[0]
    return results


def _cases(backend: str, where: dict) -> dict:
    """case -> a maker of the backend that runs it (pod mode, host mode in one transaction
    per node, host mode one pod after the other; iptables: the first two)."""
    if backend != "nftables":
        from backends.ipt_host import IptHostBackend
        from backends.iptables import IptablesBackend

        flavour = "nft" if backend == "iptables" else "legacy"
        return {"pod": lambda: IptablesBackend(flavour),
                "host_one_transaction": lambda: IptHostBackend(HostMap(lambda: where), IptablesBackend(flavour))}
    return {
        "pod": lambda: NftablesBackend("libnft"),
        "host_one_transaction": lambda: NftHostBackend(HostMap(lambda: where), NftablesBackend("libnft")),
        "host_per_pod": lambda: NftHostBackend(HostMap(lambda: where), NftablesBackend("libnft")),
    }


def _fanout(case: str, b, node: str, names: list, before: list, after: list) -> dict:
    """How many sets the delta (before -> after: one peer joins the set every pod reads)
    touches: in pod mode one per pod; in nftables host mode one per node (the pods share
    the peer group's set); and how many sets hold it all."""
    from backends import nft_host, nft_host_node

    if case == "pod":
        return {"pod_sets": sum(2 * len(fw.sets) for fw in before),
                "pod_delta_sets_touched": sum(len(nftables.delta(o, n).changes) for o, n in zip(before, after))}
    if not isinstance(b, NftHostBackend) or case != "host_one_transaction":
        return {}
    held = b._nodes[node][1]
    plan = nft_host_node.plan(held, [(fw, f"veth{i}", prev) for i, (fw, prev) in enumerate(zip(after, before))],
                              nft_host.pod_chains)
    touched = {n for _, n, _ in plan.raw} | {line.split()[4] for line in plan.text.splitlines() if " element " in line}
    return {"host_node_sets": 2 * len(held.sets), "host_delta_sets_touched": len(touched),
            "host_delta_sets_touched_by_nodes": spread(before, after)}


def spread(before: list, after: list, nodes=(1, 3, 10, 110)) -> dict:
    """The same pods spread over ``n`` nodes (pod i on node i % n), planned without a
    kernel: how many nodes and sets the peer change touches, and how many sets the nodes
    hold together. A set is per node, so a group read by pods on k nodes is k deltas."""
    from backends import nft_host, nft_host_node

    out = {}
    for n in nodes:
        touched = held = 0
        for k in range(n):
            mine = [i for i in range(len(before)) if i % n == k]
            cold = nft_host_node.plan(nft_host_node.Node(), [(before[i], f"veth{i}", None) for i in mine],
                                      nft_host.pod_chains)
            d = nft_host_node.plan(cold.node, [(after[i], f"veth{i}", before[i]) for i in mine], nft_host.pod_chains)
            touched += len({name for _, name, _ in d.raw})
            held += 2 * len(cold.node.sets)
        out[str(n)] = {"nodes": n, "sets_touched": touched, "sets_held": held}
    return out


def bench_apply(pods: int, repeat: int, backend: str = "nftables") -> dict:
    before = [firewall(i, pods, 20, 50) for i in range(pods)]
    after = [firewall(i, pods, 20, 51) for i in range(pods)]
    names = [f"{PREFIX}-{i:03d}" for i in range(pods)]
    node = f"{PREFIX}-node"
    out: dict = {"pods": pods, "backend": backend}
    for n in names + [node]:
        netns.create(n)
    import sys as _sys
    try:
        where = {n: (node, f"veth{i}", fw.pod) for i, (n, fw) in enumerate(zip(names, before))}
        for case, make in _cases(backend, where).items():
            b = make()
            b.check()
            jobs = [(ns, fw, None) for ns, fw in zip(names, before)]
            if case == "host_per_pod":
                cold = timed(lambda: [_ok([b.apply(*j)]) for j in jobs])
            else:
                cold = timed(lambda: _ok(b.apply_many(jobs)))
            out[f"{case}_cold_ms"] = round(cold, 1)
            print(f"bench_host: {case} cold {cold:.0f} ms", file=_sys.stderr, flush=True)
            state = before
            runs = []
            for i in range(repeat * 2):
                target = after if i % 2 == 0 else before
                djobs = [(ns, fw, prev) for ns, fw, prev in zip(names, target, state)]
                res: list = []
                if case == "host_per_pod":
                    runs.append(timed(lambda: res.extend(b.apply(*j) for j in djobs)))
                else:
                    runs.append(timed(lambda: res.extend(_ok(b.apply_many(djobs)))))
                assert {r.kind for r in res} == {"delta"}, {r.kind for r in res}
                state = target
            out[f"{case}_delta_fanout_ms_median"] = round(statistics.median(runs), 2)
            # Every pod read back (nftables host mode: one listing of the node serves them
            # all while the node's generation holds); other host modes: a sample of 5.
            every = case == "pod" or isinstance(b, NftHostBackend)
            sample = list(zip(names, state)) if every else list(zip(names, state))[:: max(1, pods // 5)]
            ok: list = []
            out[f"{case}_verify_ms"] = round(timed(lambda: ok.append(all(b.verify(ns, fw) for ns, fw in sample))), 1)
            out[f"{case}_verified"] = ok[0]
            out.update(_fanout(case, b, node, names, before, after))
            if case == "pod":
                for ns in names:
                    b.remove(ns)
            else:
                b.remove_node(node)
            b.close()
    finally:
        for n in names + [node]:
            netns.remove(n)
    return out


LAB_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: s, namespace: b, labels: {app: s}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: r, namespace: b, labels: {app: r}}
spec: {containers: [{name: c}]}
"""


def _peers(sender: str, n: int) -> tuple[str, ...]:
    """``n`` host addresses in 10.200.0.0/16 .. plus the sender's, as /32 elements."""
    out = {f"{sender}/32"}
    i = 0
    while len(out) < n:
        out.add(f"10.{200 + i // 65536}.{(i // 256) % 256}.{i % 256}/32")
        i += 1
    return tuple(sorted(out))


def _received(ns: str) -> int:
    text = netns.run(ns, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    head, vals = [line.split() for line in text if line.startswith("Udp:")][:2]
    row = dict(zip(head[1:], vals[1:]))
    return int(row["InDatagrams"]) + int(row["InErrors"])


def bench_datapath(rounds: int, seconds: float) -> dict:
    import tempfile

    from benchmarks.bench_datapath import _start_sender
    from enforcer.lab import control, hostmode, state

    name = f"hbench{os.getpid()}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(LAB_PODS)
    from enforcer.lab.commands import load_cluster

    cluster = load_cluster((f.name,))
    control.up(name, cluster, "nftables", owned=True, servers=False, enforce_at="host")
    sink = sender = None
    try:
        st = state.load(name)
        s, r = st.endpoints["b/s"], st.endpoints["b/r"]
        backend = hostmode.wrap(st, control.get_backend("nftables"), "host")
        base = st.firewalls["b/r"]

        def fw_with(n: int):
            peers = AddrSet("in0", v4=_peers(s.ips[0], n))
            rule = AllowRule(Provenance("b/bench", "ingress", 0), peers="in0")
            return dataclasses.replace(base, ingress=DirectionPolicy(True, ("b/bench",), (rule,)), sets=(peers,))

        fws = {1: fw_with(1), 10000: fw_with(10000)}
        sink = netns.popen(r.netns, [sys.executable, "-c",
                                     "import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
                                     "s.bind(('0.0.0.0',9)); time.sleep(3600)"])
        sender = _start_sender(s.netns)
        current = base

        def measure(n: int) -> float:
            nonlocal current
            backend.apply(r.netns, fws[n], current)
            current = fws[n]
            before = _received(r.netns)
            sender.stdin.write(f"{s.ips[0]} {r.ips[0]} {seconds}\n")
            sender.stdin.flush()
            sent, elapsed = sender.stdout.readline().split()
            return (_received(r.netns) - before) / float(elapsed)

        measure(1)  # warm-up
        pps: dict[int, list[float]] = {1: [], 10000: []}
        ratios = []
        for i in range(rounds):
            order = (1, 10000) if i % 2 == 0 else (10000, 1)
            got = {n: measure(n) for n in order}
            for n, v in got.items():
                pps[n].append(v)
            ratios.append(got[10000] / got[1] if got[1] else 0.0)
        return {"what": "host mode: new-flow rate through the node's forward chain to a pod",
                "rounds": rounds, "seconds": seconds,
                "pps_1_peer_median": round(statistics.median(pps[1])),
                "pps_10000_peers_median": round(statistics.median(pps[10000])),
                "ratio_10000_to_1_median": round(statistics.median(ratios), 3),
                "ratio_runs": [round(x, 3) for x in ratios]}
    finally:
        for p in (sender, sink):
            if p is not None:
                p.kill()
                p.wait()
        control.down(name)
        os.unlink(f.name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--skip-datapath", action="store_true")
    ap.add_argument("--backend", choices=["nftables", "iptables", "iptables-legacy"], default="nftables",
                    help="the apply part's backend (the datapath part is nftables)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_host: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    out = {"apply": bench_apply(args.pods, args.repeat, args.backend)}
    print(json.dumps(out["apply"]), file=sys.stderr)
    if not args.skip_datapath:
        out["datapath"] = bench_datapath(args.rounds, args.seconds)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
