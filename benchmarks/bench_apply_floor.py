"""Cold apply against its floor: where the time of loading 110 pod tables goes.

The same tables as benchmarks/bench_apply.py (110 pods, 20 policies each), loaded cold
three ways, alternating in rounds on this shared machine (medians reported):

    ours         NftablesBackend("libnft").apply_many: render, a libnftables context made
                 inside each namespace, the table text run through it (what the daemon does)
    libnft-only  only the last step: contexts already made, texts already rendered, one
                 ``nft_run_cmd_from_buffer`` per namespace (the floor of the text path)
    one-ns       all 110 tables (renamed netpol0..109) as ONE text in ONE namespace: no
                 namespace switching, one transaction (the floor of libnftables itself)

Run as root (namespaces ``npt-floor-<pid>-NNN``, removed at the end):

    .venv/bin/python benchmarks/bench_apply_floor.py [--pods 110] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backends import nftables as nft  # noqa: E402
from backends.nftables import NftablesBackend  # noqa: E402
from benchmarks.bench_apply import firewall  # noqa: E402
from enforcer import netns  # noqa: E402

PREFIX = f"npt-floor-{os.getpid()}"


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_apply_floor: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    fws = [firewall(i, args.pods, args.policies, 50) for i in range(args.pods)]
    names = [f"{PREFIX}-{i:03d}" for i in range(args.pods)]
    texts = [nft.full_transaction(fw) for fw in fws]
    one = "".join(t.replace(f"inet {nft.TABLE}", f"inet {nft.TABLE}{i}") for i, t in enumerate(texts))
    times: dict[str, list[float]] = {"ours": [], "libnft-only": [], "one-ns": []}
    try:
        for n in names:
            netns.create(n)
        for r in range(args.rounds):
            order = list(times) if r % 2 == 0 else list(reversed(times))
            for case in order:
                b = NftablesBackend("libnft")
                b.check()
                runner = b._get_runner()
                try:
                    if case == "ours":
                        t0 = time.perf_counter()
                        res = b.apply_many([(ns, fw, None) for ns, fw in zip(names, fws)])
                        times[case].append(ms(t0))
                        assert not [x for x in res if isinstance(x, Exception)], res
                        for ns in names:
                            runner.run(ns, f"delete table inet {nft.TABLE}")
                    elif case == "libnft-only":
                        for ns in names:
                            runner.run(ns, "list tables")  # contexts made, not timed
                        t0 = time.perf_counter()
                        for ns, text in zip(names, texts):
                            runner.run(ns, text)
                        times[case].append(ms(t0))
                        for ns in names:
                            runner.run(ns, f"delete table inet {nft.TABLE}")
                    else:
                        runner.run(names[0], "list tables")
                        t0 = time.perf_counter()
                        runner.run(names[0], one)
                        times[case].append(ms(t0))
                        runner.run(names[0], "".join(f"delete table inet {nft.TABLE}{i}\n" for i in range(len(texts))))
                finally:
                    b.close()
    finally:
        for n in names:
            netns.remove(n)
    out = {"pods": args.pods, "policies_per_pod": args.policies, "rounds": args.rounds,
           "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
           "runs_ms": {k: [round(x, 1) for x in v] for k, v in times.items()}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
