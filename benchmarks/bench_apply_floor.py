"""Cold apply against its floor: where the time of loading 110 pod tables goes.

The same tables as benchmarks/bench_apply.py (110 pods, 20 policies each), loaded cold
three ways, alternating in rounds on this shared machine (medians reported):

    ours         NftablesBackend("libnft").apply_many: render, a libnftables context made
                 inside each namespace, the table text run through it (the text path)
    netlink      NftablesBackend("netlink").apply_many: render, encode each table as one
                 raw netlink batch (backends/nft_netlink.py), a socket opened inside each
                 namespace, send, read the acknowledgements (the default since issue 15)
    libnft-only  only the last step of "ours": contexts already made, texts already
                 rendered, one ``nft_run_cmd_from_buffer`` per namespace (the floor of the
                 text path)
    netlink-only only the last step of "netlink": sockets already open, batches already
                 encoded, one send and its acknowledgements per namespace (the kernel's
                 pace: the floor, nothing faster reaches 110 namespaces)
    one-ns       all 110 tables (renamed netpol0..109) as ONE text in ONE namespace: no
                 namespace switching, one transaction (the floor of libnftables itself)

Wall and CPU time (user + system of this process: the kernel's work on our messages
counts) are reported; on a shared machine the wall clock also holds the time other
processes had the cores. The first round runs with cold caches (rendering and encoding are cached per set and rule
across pods and rounds); ``first_round_ms`` reports it apart.

Run as root (namespaces ``npt-floor-<pid>-NNN``, removed at the end):

    .venv/bin/python benchmarks/bench_apply_floor.py [--pods 110] [--rounds 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backends import nft_netlink, nftables as nft  # noqa: E402
from backends.nftables import NftablesBackend  # noqa: E402
from benchmarks.bench_apply import firewall  # noqa: E402
from enforcer import netns  # noqa: E402

PREFIX = f"npt-floor-{os.getpid()}"


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds; CPU is user + system time of this process, the kernel's work
    for our netlink messages included: on a shared machine the wall clock also counts
    the time other processes had the cores."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime


def since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = clock()
    return (t1[0] - t0[0]) * 1e3, (t1[1] - t0[1]) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="also write the JSON here (benchmarks/results/apply-floor.json)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_apply_floor: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    fws = [firewall(i, args.pods, args.policies, 50) for i in range(args.pods)]
    names = [f"{PREFIX}-{i:03d}" for i in range(args.pods)]
    texts = [nft.full_transaction(fw) for fw in fws]
    one = "".join(t.replace(f"inet {nft.TABLE}", f"inet {nft.TABLE}{i}") for i, t in enumerate(texts))
    times: dict[str, list[float]] = {"ours": [], "netlink": [], "libnft-only": [], "netlink-only": [], "one-ns": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    try:
        for n in names:
            netns.create(n)
        def record(case: str, took: tuple[float, float]) -> None:
            times[case].append(took[0])
            cpu[case].append(took[1])

        for r in range(args.rounds):
            order = list(times) if r % 2 == 0 else list(reversed(times))
            for case in order:
                b = NftablesBackend("netlink" if case.startswith("netlink") else "libnft")
                b.check()
                runner = b._get_runner()
                try:
                    if case in ("ours", "netlink"):
                        t0 = clock()
                        res = b.apply_many([(ns, fw, None) for ns, fw in zip(names, fws)])
                        record(case, since(t0))
                        assert not [x for x in res if isinstance(x, Exception)], res
                        for ns in names:
                            runner.run(ns, f"delete table inet {nft.TABLE}")
                    elif case == "netlink-only":
                        socks = [runner._tables.get(ns) for ns in names]  # opened, not timed
                        batches = [nft_netlink.encode_table(nft.TABLE, nft.table_comment(fw), nft.table_blocks(fw))
                                   for fw in fws]
                        t0 = clock()
                        for sock, msgs in zip(socks, batches):
                            sock.commit(msgs)
                        record(case, since(t0))
                        for ns in names:
                            runner.run(ns, f"delete table inet {nft.TABLE}")
                    elif case == "libnft-only":
                        for ns in names:
                            runner.run(ns, "list tables")  # contexts made, not timed
                        t0 = clock()
                        for ns, text in zip(names, texts):
                            runner.run(ns, text)
                        record(case, since(t0))
                        for ns in names:
                            runner.run(ns, f"delete table inet {nft.TABLE}")
                    else:
                        runner.run(names[0], "list tables")
                        t0 = clock()
                        runner.run(names[0], one)
                        record(case, since(t0))
                        runner.run(names[0], "".join(f"delete table inet {nft.TABLE}{i}\n" for i in range(len(texts))))
                finally:
                    b.close()
    finally:
        for n in names:
            netns.remove(n)
    out = {"pods": args.pods, "policies_per_pod": args.policies, "rounds": args.rounds,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "loadavg_1m": os.getloadavg()[0],
           "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
           "median_cpu_ms": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
           "first_round_ms": {k: round(v[0], 1) for k, v in times.items()},
           "runs_ms": {k: [round(x, 1) for x in v] for k, v in times.items()}}
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
