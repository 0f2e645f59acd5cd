"""Apply cost of the kernel backends: cold apply of N pod namespaces, then a set delta.

The scenario of the issue: 110 pods, ~20 policies selecting each; then one pod joins a
selector that every pod's policies reference, so every pod's firewall gains one peer.
Targets (nftables): cold apply of all 110 <= 300 ms, the delta of all 110 <= 30 ms.

Run as root (creates namespaces ``npt-bench-<pid>-NNN`` and removes them at the end):

    .venv/bin/python benchmarks/bench_apply.py [--pods 110] [--policies 20]
        [--backends nftables-libnft,nftables-netlink,nftables-cli,iptables,iptables-legacy] [--repeat 5]
        [--ipt-floor] [--out FILE]

Prints one JSON document (and writes it to FILE). Not a test: numbers swing on a shared
2-core machine, so every delta is repeated and the median reported, and every step's CPU
time (the process and the tools it ran) is recorded beside its wall clock. The cold apply
goes into namespaces that no backend has touched yet (iptables then skips reading them);
the ``cold_sequential`` one comes after a removal.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backends import nftables as nft  # noqa: E402
from backends.iptables import IptablesBackend  # noqa: E402
from backends.nftables import NftablesBackend  # noqa: E402
from enforcer import netns  # noqa: E402
from enforcer.ir import (AddrPortSet, AddrSet, AllowRule, DirectionPolicy, PodFirewall,  # noqa: E402
                         PortMatch, Provenance)

PREFIX = f"npt-bench-{os.getpid()}"


def pod_ips(i: int) -> tuple[str, str]:
    return str(ipaddress.ip_address("10.240.0.10") + i), f"fd00:240::{i + 10:x}"


def firewall(pod: int, pods: int, policies: int, shared_members: int) -> PodFirewall:
    """A pod selected by ``policies`` policies: one ingress rule each (peer set + ports),
    a quarter of them ipBlocks (interval sets), egress isolated with a few rules and one
    named-port set. Set 'in0' is the selector every pod references. ``group`` says which
    sets have the same elements in every pod, as the compiler's peer groups do (host mode
    keeps one such set per node)."""
    rules = []
    sets = []
    for k in range(policies):
        name = f"in{k}"
        prov = Provenance(f"ns{k % 5}/pol{k}", "ingress", 0)
        if k % 4 == 3:
            sets.append(AddrSet(name, v4=(f"10.{100 + k}.0.0/16", f"192.168.{k}.0/24"),
                                v6=(f"fd00:{k:x}::/48",), interval=True, group=f"b{k}"))
        else:
            count = shared_members if k == 0 else (7 * k + pod) % 30 + 1
            members = [((k * 13 + j * 7) % pods) for j in range(count)] if k else list(range(count))
            v4 = tuple(f"{pod_ips(m)[0]}/32" for m in sorted(set(members)))
            v6 = tuple(f"{pod_ips(m)[1]}/128" for m in sorted(set(members)))
            sets.append(AddrSet(name, v4=v4, v6=v6, group=f"s{k}n{count}" if k else "s0"))
        ports = (PortMatch("TCP", 80), PortMatch("TCP", 8000, 8080)) if k % 2 else (PortMatch("UDP", 53),)
        rules.append(AllowRule(prov, peers=name, ports=ports))
    egress = []
    for k in range(3):
        name = f"eg{k}"
        members = [(pod + 3 * j + k) % pods for j in range(10)]
        sets.append(AddrSet(name, v4=tuple(f"{pod_ips(m)[0]}/32" for m in sorted(set(members))),
                            v6=tuple(f"{pod_ips(m)[1]}/128" for m in sorted(set(members))),
                            group=f"e{k}p{pod}"))
        egress.append(AllowRule(Provenance(f"ns0/egress{k}", "egress", 0), peers=name,
                                ports=(PortMatch("TCP", 5432),)))
    sets.append(AddrPortSet("eg_ap", v4=tuple((pod_ips(m)[0], "TCP", 8080 + m % 3) for m in range(5)),
                            v6=tuple((pod_ips(m)[1], "TCP", 8080 + m % 3) for m in range(5)), group="named"))
    egress.append(AllowRule(Provenance("ns0/named", "egress", 0), addr_ports="eg_ap"))
    v4, v6 = pod_ips(pod)
    return PodFirewall(
        pod=f"ns{pod % 5}/pod{pod}", ips=(v4, v6), node_ips=("10.240.0.1", "fd00:240::1"),
        ingress=DirectionPolicy(True, tuple(sorted({r.provenance.policy for r in rules})), tuple(rules)),
        egress=DirectionPolicy(True, tuple(sorted({r.provenance.policy for r in egress})), tuple(egress)),
        sets=tuple(sets))


def make_backend(name: str):
    return {"nftables-libnft": lambda: NftablesBackend("libnft"),  # whole tables as text
            "nftables-netlink": lambda: NftablesBackend("netlink"),  # as netlink batches (the default)
            "nftables-cli": lambda: NftablesBackend("cli"),
            "iptables": lambda: IptablesBackend("nft"),
            "iptables-legacy": lambda: IptablesBackend("legacy")}[name]()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the tools iptables
    runs), user + system: the kernel's work on our netlink messages counts too."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timed_cpu(fn) -> tuple[float, float]:
    """(wall ms, CPU ms) of ``fn()``. CPU time is what bench-quick's apply ratios use: on
    a shared 2-core machine the wall clock of a 3 ms delta also holds whatever else had
    the cores (a full/delta ratio read 19 instead of ~45 under load), its CPU time much less."""
    c = _cpu()
    wall = timed(fn)
    return wall, (_cpu() - c) * 1000


def _many(b, jobs) -> list:
    results = b.apply_many(jobs)
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        raise bad[0]
    return results


def bench(name: str, names: list[str], before: list[PodFirewall], after: list[PodFirewall],
          repeat: int) -> dict:
    """Cold apply (a fresh backend, no tables yet: contexts are made too), once with
    ``apply_many`` (parallel where the backend can) and once one pod after the other;
    then a full re-apply; then ``repeat`` deltas each way (add the new peer, remove it)."""
    n = len(names)
    out: dict = {"backend": name, "pods": n}
    for mode in ("many", "sequential"):
        b = make_backend(name)
        b.check()
        try:
            jobs = [(ns, fw, None) for ns, fw in zip(names, before)]
            if mode == "many":
                cold, cold_cpu = timed_cpu(lambda: _many(b, jobs))
            else:
                cold, cold_cpu = timed_cpu(lambda: [b.apply(*j) for j in jobs])
            out[f"cold_{mode}_total_ms"] = round(cold, 1)
            out[f"cold_{mode}_per_pod_ms"] = round(cold / n, 3)
            out[f"cold_{mode}_cpu_ms"] = round(cold_cpu, 1)
            if mode == "sequential":
                continue
            out["method"] = getattr(b, "method", getattr(b, "flavour", ""))
            warm, warm_cpu = timed_cpu(lambda: _many(b, jobs))
            out["warm_full_many_total_ms"] = round(warm, 1)
            out["warm_full_many_cpu_ms"] = round(warm_cpu, 1)
            state = before
            runs: dict[str, list[float]] = {"many": [], "sequential": []}
            cpu_runs: list[float] = []  # of the "many" deltas
            for i in range(repeat * 2):
                target = after if i % 2 == 0 else before
                how = "many" if (i // 2) % 2 == 0 else "sequential"
                djobs = [(ns, fw, prev) for ns, fw, prev in zip(names, target, state)]
                results: list = []
                if how == "many":
                    wall, used = timed_cpu(lambda: results.extend(_many(b, djobs)))
                    runs[how].append(wall)
                    cpu_runs.append(used)
                else:
                    runs[how].append(timed(lambda: results.extend(b.apply(*j) for j in djobs)))
                assert {r.kind for r in results} == {"delta"}, {r.kind for r in results}
                state = target
            for how, values in runs.items():
                med = statistics.median(values)
                out[f"delta_{how}_total_ms_median"] = round(med, 2)
                out[f"delta_{how}_per_pod_ms"] = round(med / n, 3)
                out[f"delta_{how}_runs_ms"] = [round(v, 2) for v in values]
            out["delta_many_cpu_runs_ms"] = [round(v, 2) for v in cpu_runs]
            out["verified"] = all(b.verify(ns, fw) for ns, fw in zip(names, state))
        finally:
            for ns in names:
                b.remove(ns)
            close = getattr(b, "close", None)
            if close:
                close()
    return out


def ipt_floor(names: list[str], fws: list[PodFirewall]) -> dict:
    """What stands in the way of iptables' cold apply: the same pods' iptables-restore and
    ip6tables-restore runs (the texts a cold apply sends), started the cheapest way we
    have (netns.run_entered: no nsenter, no shell), two pods at a time as apply_many does,
    into namespaces whose sets were made beforehand (untimed). Nothing else: no
    rendering, no reading, no sets. The iptables backend's cold apply is this plus
    its Python (rendering, the sets over netlink)."""
    from backends import base, ipt_install
    from backends.ipt_render import build, sets_text
    from backends.ipt_save import FamilyState

    inst = ipt_install._RestoreInstaller()
    texts = []
    for ns, fw in zip(names, fws):
        rs = build(fw)
        ipt_install.ipset_restore(ns, sets_text(rs.sets), "floor")
        texts.append((ns, [inst._rules_input(rs, fam, FamilyState()) for fam in (4, 6)]))

    def tools(ns: str, inputs: list[str]):
        for fam, text in zip((4, 6), inputs):
            proc = netns.run_entered(ns, [inst.restore[fam], "--noflush"], input=text)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr)
        return base.ApplyResult("full")

    wall, cpu = timed_cpu(lambda: _many_plain(base.run_jobs(tools, texts, workers=2)))
    return {"backend": "iptables-floor", "pods": len(names), "cold_many_total_ms": round(wall, 1),
            "cold_many_cpu_ms": round(cpu, 1), "what": "2 x iptables-restore a pod, nothing else"}


def _many_plain(results: list) -> None:
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        raise bad[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backends", default="nftables-libnft,nftables-cli,iptables,iptables-legacy")
    ap.add_argument("--ipt-floor", action="store_true",
                    help="also time the iptables tools alone, the floor of its cold apply (ipt_floor)")
    ap.add_argument("--out", help="also write the JSON here (benchmarks/results/apply-cold.json: "
                    "--pods 110 --backends nftables-netlink,nftables-libnft,iptables,iptables-legacy)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_apply: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    shared = 50
    before = [firewall(i, args.pods, args.policies, shared) for i in range(args.pods)]
    after = [firewall(i, args.pods, args.policies, shared + 1) for i in range(args.pods)]
    render_ms = timed(lambda: [nft.full_transaction(fw) for fw in before])
    fw0 = before[0]
    out = {"pods": args.pods, "policies_per_pod": args.policies,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "loadavg_1m": os.getloadavg()[0],
           "sets_per_pod": len(fw0.sets) * 2,
           "nft_rules_per_pod": nft.render(fw0).count("counter "),
           "nft_render_total_ms": round(render_ms, 1), "results": []}
    names = [f"{PREFIX}-{i:03d}" for i in range(args.pods)]
    try:
        for n in names:
            netns.create(n)
        for name in args.backends.split(","):
            out["results"].append(bench(name.strip(), names, before, after, args.repeat))
            print(json.dumps(out["results"][-1]), file=sys.stderr)
        if args.ipt_floor:
            floor_names = [f"{PREFIX}-f{i:03d}" for i in range(args.pods)]
            try:
                for n in floor_names:
                    netns.create(n)
                out["results"].append(ipt_floor(floor_names, before))
                print(json.dumps(out["results"][-1]), file=sys.stderr)
            finally:
                for n in floor_names:
                    netns.remove(n)
    finally:
        for n in names:
            netns.remove(n)
    out["loadavg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
