"""Run the benchmark suite; write results, plots and docs/performance.md.

    sudo make bench          # .venv/bin/python -m benchmarks.run
    sudo make bench-quick    # .venv/bin/python -m benchmarks.run --quick

Full run (about 10 minutes on 2 cores): every benchmark under benchmarks/ as its own
process (so each peak-memory figure is that process's own), over a range of scales:

    compile   bench_compile: cluster size 1,500 .. 150,000 pods, and policies at 15,000 pods
    apply     bench_apply: cold full apply, policy edit (full swap) and set delta vs local
              pods (10 .. 250), every backend where it finishes in reasonable time
    lab       bench_lab: lab up / probe / down vs pods, nftables and iptables
    daemon    bench_daemon: policy change -> enforced, p50/p99, vs local pods
    datapath  bench_datapath: new-flow packet rate vs allowed peers, every layout

Each writes benchmarks/results/<name>.json; then benchmarks.plots draws
docs/performance/*.png|svg and benchmarks.report writes docs/performance.md.

``--quick`` (under 2 minutes) measures only ratios taken within the same run, compares
them with benchmarks/bounds.json and fails only when one is more than ``tolerance`` (2x)
worse than its reference: ratios of a run cancel most of the machine's speed and load,
and a factor of two is far outside their spread (medians of paired alternations), so a
failure means a real regression, not noise.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BOUNDS = ROOT / "benchmarks" / "bounds.json"
DOC = ROOT / "docs" / "performance.md"
FIGURES = ROOT / "docs" / "performance"

# Scales of the full run, picked so that the whole run stays near 10 minutes here.
COMPILE_SIZES = ((1500, 100, 100), (5000, 300, 300), (15000, 1000, 1000), (50000, 3000, 3000),
                 (150000, 10000, 10000))
COMPILE_SHAPES = ("common", "many-small", "shared-group")  # gen.SHAPES, at 150,000 pods
COMPILE_POLICIES = ((15000, 1000, 100), (15000, 1000, 3000), (15000, 1000, 10000))
APPLY_PODS = {  # backend -> local pod counts (the slow ones stop where they take minutes)
    "nftables-libnft": (10, 25, 50, 110, 250),
    "iptables": (10, 25, 50, 110),
    "nftables-cli": (10, 50, 110),
    "iptables-legacy": (10, 50, 110),
}
LAB_PODS = (9, 30, 100, 250)
LAB_BACKENDS = ("nftables", "iptables")
DAEMON_LOCAL = (10, 50, 110)

QUICK_APPLY_PODS = 30
QUICK_COMPILE = ((1500, 100, 100), (15000, 1000, 1000))
QUICK_DEMAND = (15000, 1000, 1000)  # the common shape (gen.common): one pod on demand vs all


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Bounds: the pure logic of the regression check (tests/unit/test_bench_bounds.py)


@dataclass(frozen=True)
class Bound:
    """A ratio measured within one run, its reference value on this kind of machine, and
    which direction is better."""

    name: str
    reference: float
    better: str  # "higher" | "lower"
    what: str = ""


@dataclass(frozen=True)
class Verdict:
    name: str
    measured: float | None
    reference: float
    limit: float
    better: str
    ok: bool
    why: str


def limit_of(bound: Bound, tolerance: float) -> float:
    """The worst value still accepted: ``tolerance`` times worse than the reference."""
    return bound.reference / tolerance if bound.better == "higher" else bound.reference * tolerance


def check(measured: dict[str, float | None], bounds: list[Bound], tolerance: float) -> list[Verdict]:
    """One verdict per bound. A ratio that is missing or not a finite number fails: the
    measurement that should produce it broke, and that is worth a red build too."""
    if not tolerance >= 1:
        raise ValueError(f"tolerance must be >= 1, not {tolerance}")
    out = []
    for b in bounds:
        lim = limit_of(b, tolerance)
        value = measured.get(b.name)
        if value is None or not math.isfinite(value):
            out.append(Verdict(b.name, value, b.reference, lim, b.better, False, "not measured"))
            continue
        ok = value >= lim if b.better == "higher" else value <= lim
        factor = (b.reference / value if b.better == "higher" else value / b.reference) if value else math.inf
        why = (f"{factor:.2f}x worse than the reference" if factor > 1 else
               f"{1 / factor:.2f}x better than the reference" if factor > 0 else "")
        out.append(Verdict(b.name, value, b.reference, lim, b.better, ok, why))
    return out


def load_bounds(path: Path = BOUNDS) -> tuple[float, list[Bound]]:
    data = json.loads(Path(path).read_text())
    tolerance = float(data["tolerance"])
    bounds = []
    for name, spec in data["bounds"].items():
        if spec["better"] not in ("higher", "lower"):
            raise ValueError(f"{path}: {name}: better must be 'higher' or 'lower'")
        if not float(spec["reference"]) > 0:
            raise ValueError(f"{path}: {name}: reference must be > 0")
        bounds.append(Bound(name, float(spec["reference"]), spec["better"], spec.get("what", "")))
    return tolerance, bounds


def format_verdicts(verdicts: list[Verdict], tolerance: float) -> str:
    lines = [f"{'ratio':58} {'measured':>9} {'reference':>9} {'limit':>9}  verdict"]
    for v in verdicts:
        m = "-" if v.measured is None else f"{v.measured:.3g}"
        sign = ">=" if v.better == "higher" else "<="
        lines.append(f"{v.name:58} {m:>9} {v.reference:>9.3g} {sign}{v.limit:>7.3g}  "
                     f"{'ok' if v.ok else 'REGRESSION'}{' (' + v.why + ')' if v.why else ''}")
    bad = sum(not v.ok for v in verdicts)
    lines.append(f"{len(verdicts) - bad} ok, {bad} failed (a failure is a ratio more than "
                 f"{tolerance:g}x worse than its reference)")
    return "\n".join(lines)


def quick_ratios(compile_runs: list[list[dict]], apply: dict | None, datapath: dict | None,
                 swap: dict | None = None) -> dict[str, float | None]:
    """The ratios the quick check compares, from the raw outputs of one run:

    - compile: time at 15,000 pods over time at 1,500 (best of the repeats; lower better),
    - compile: one pod's firewall on demand over every pod's, common shape (lower better),
    - apply: cold full apply of N pods over one set delta to all N (per backend),
    - apply: a whole nftables table as text through libnftables over as one netlink batch,
    - apply: iptables' cold apply over nftables' (netlink batches), in CPU time (lower better),
    - apply: a rule change replacing a table of 2,000 set elements over one keeping its sets,
    - apply: that rule swap as text through libnftables over as one netlink batch,
    - apply: one policy's rules changed among 40, the chain flushed and written again over
      only the changed rules edited (both netlink batches, CPU time),
    - datapath: 10,000 peers over 1 peer per layout, sets over rule-per-peer at 1,000.
    """
    out: dict[str, float | None] = {}
    small, big = QUICK_COMPILE[0][0], QUICK_COMPILE[1][0]
    best: dict[int, float] = {}
    demand = full_common = math.inf
    for run in compile_runs:
        for row in run:
            t = row.get("compile_s")
            if row.get("shape", "mixed") == "common":
                if t and row.get("demand_1_pod_s"):
                    demand = min(demand, row["demand_1_pod_s"])
                    full_common = min(full_common, t)
            elif t:
                best[row["pods"]] = min(best.get(row["pods"], math.inf), t)
    out[f"compile: time at {big} pods / at {small} pods"] = (
        best[big] / best[small] if small in best and big in best and best[small] > 0 else None)
    out[f"compile: 1 pod on demand / all pods, common shape, {QUICK_DEMAND[0]} pods"] = (
        demand / full_common if math.isfinite(demand) and math.isfinite(full_common) else None)
    names = {"nftables-libnft": "nftables", "iptables": "iptables"}
    got = {r["backend"]: r for r in (apply or {}).get("results", [])}
    for backend, short in names.items():
        out[f"apply: {short} full apply / delta, {QUICK_APPLY_PODS} pods"] = apply_ratio(got.get(backend))
    text, batch = full_best(got.get("nftables-libnft")), full_best(got.get("nftables-netlink"))
    out[f"apply: nftables full apply, text / netlink batches, {QUICK_APPLY_PODS} pods"] = (
        text / batch if text and batch else None)
    ipt_cold, nft_cold = (got.get(b, {}).get("cold_many_cpu_ms") for b in ("iptables", "nftables-netlink"))
    out[f"apply: iptables cold apply / nftables cold apply, CPU, {QUICK_APPLY_PODS} pods"] = (
        ipt_cold / nft_cold if ipt_cold and nft_cold else None)
    out["apply: nftables rule change, whole table / sets kept, 2000 elements"] = (swap or {}).get("full_over_swap")
    out["apply: nftables rule swap, text / netlink batch, 2000 elements"] = (swap or {}).get("swap_text_over_netlink")
    out["apply: nftables rule change, flush swap / edits, CPU, 40 policies"] = ((swap or {}).get("edits") or {}).get(
        "flush_over_edits")
    ratios = (datapath or {}).get("ratios", {})
    for lay in ("nft-set", "nft-interval", "ipt-set", "ipt-net"):
        r = ratios.get(f"{lay}: 10000 vs 1 peer")
        out[f"datapath: {lay} rate, 10000 peers / 1 peer"] = r["median"] if r else None
    r = ratios.get("nft-set vs nft-naive at 1000 peers")
    out["datapath: nft-set rate / nft-naive rate, 1000 peers"] = r["median"] if r else None
    return out


def full_best(r: dict | None) -> float | None:
    """The fastest whole-table apply of a backend's run (cold, one by one, or a full swap)."""
    fulls = [r[k] for k in ("cold_many_total_ms", "cold_sequential_total_ms", "warm_full_many_total_ms")
             if r and r.get(k)]
    return min(fulls) if fulls else None


def apply_ratio(r: dict | None) -> float | None:
    """Full apply over one delta, each at its best: noise only ever adds time, so the
    fastest of the full applies (cold and warm) and of the delta repeats are the closest
    to the real costs, and their ratio the steadiest from run to run. In CPU time when
    bench_apply measured it: a delta of 30 pods is ~3 ms, and under load its wall clock
    holds whatever else had the cores (the nftables ratio once read 19 against ~45)."""
    if not r:
        return None
    cpu_fulls = [r[k] for k in ("cold_many_cpu_ms", "warm_full_many_cpu_ms") if r.get(k)]
    cpu_deltas = r.get("delta_many_cpu_runs_ms") or []
    if cpu_fulls and cpu_deltas and min(cpu_deltas) > 0:
        return min(cpu_fulls) / min(cpu_deltas)
    fulls = [r[k] for k in ("cold_many_total_ms", "warm_full_many_total_ms") if r.get(k)]
    deltas = r.get("delta_many_runs_ms") or ([r["delta_many_total_ms_median"]] if r.get("delta_many_total_ms_median") else [])
    if not fulls or not deltas or min(deltas) <= 0:
        return None
    return min(fulls) / min(deltas)


# ---------------------------------------------------------------------------------------
# Running the benchmarks (each in its own process)


def _py() -> str:
    return sys.executable


def run_bench(argv: list[str], timeout: float, name: str) -> tuple[dict | list | None, str]:
    """Run one benchmark process; returns (parsed stdout JSON or None, error text)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.monotonic()
    try:
        proc = subprocess.run([_py()] + argv, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return None, f"{name}: timed out after {timeout:.0f} s"
    took = time.monotonic() - t
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        return None, f"{name}: exit {proc.returncode} after {took:.1f} s\n{tail}"
    text = proc.stdout.strip()
    try:
        return json.loads(text), ""
    except json.JSONDecodeError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()], ""
        except json.JSONDecodeError as e:
            return None, f"{name}: output is not JSON ({e})"


def is_root() -> bool:
    return os.geteuid() == 0


class Suite:
    """Collects results and errors of one run."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}

    def step(self, name: str, fn: Callable[[], object]) -> object:
        log(f"{name} ...")
        t = time.monotonic()
        try:
            result = fn()
        finally:
            self.timings[name] = round(time.monotonic() - t, 1)
        log(f"{name} done in {self.timings[name]} s")
        return result

    def bench(self, argv: list[str], timeout: float, name: str):
        data, err = run_bench(argv, timeout, name)
        if err:
            log(f"FAILED {err}")
            self.errors.append(err)
        return data


def _compile_points(s: Suite, points: list[tuple[list[str], float, str]]) -> list:
    """Every result of one bench_compile process per point ``(its arguments, timeout,
    name)``, flattened (a process answers one result or a list); a failed point is left
    out (Suite.bench records it)."""
    out: list = []
    for args, timeout, name in points:
        d = s.bench(["-m", "benchmarks.bench_compile", *args], timeout, name)
        if d:
            out.extend(d if isinstance(d, list) else [d])
    return out


def compile_curves(s: Suite) -> dict:
    sizes = _compile_points(s, [(["--sizes", f"{pods}:{nss}:{pols}"], 600, f"compile {pods} pods")
                                for pods, nss, pols in COMPILE_SIZES])
    policies = _compile_points(s, [(["--sizes", f"{pods}:{nss}:{pols}"], 600, f"compile {pols} policies")
                                   for pods, nss, pols in COMPILE_POLICIES])
    shapes = _compile_points(s, [(["--shape", shape, "--sizes", "150000:10000:10000"], 900, f"compile {shape} shape")
                                 for shape in COMPILE_SHAPES])
    d = s.bench(["-m", "benchmarks.bench_compile", "--shape", "common", "--render-pod", "150000:10000:10000"],
                900, "render --pod, common shape")
    return {"by_cluster_size": sizes, "by_policies": policies, "by_shape": shapes,
            "render_pod": d if isinstance(d, dict) else None,
            "note": "one process per point: maxrss_mib is that point's peak memory"}


def apply_curves(s: Suite) -> dict:
    runs = []
    for backend, pod_counts in APPLY_PODS.items():
        for pods in pod_counts:
            repeat = 5 if pods <= 50 else 3
            d = s.bench(["benchmarks/bench_apply.py", "--pods", str(pods), "--backends", backend,
                         "--repeat", str(repeat)], 900, f"apply {backend} {pods} pods")
            if isinstance(d, dict):
                for r in d.get("results", []):
                    r.update({k: d[k] for k in ("policies_per_pod", "sets_per_pod", "nft_rules_per_pod") if k in d})
                    runs.append(r)
    return {"runs": runs}


def lab_curves(s: Suite) -> dict:
    runs = []
    for backend in LAB_BACKENDS:
        for pods in LAB_PODS:
            d = s.bench(["benchmarks/bench_lab.py", "--backend", backend, "--small", str(pods),
                         "--big", "0", "--repeat", "1"], 600, f"lab {backend} {pods} pods")
            if isinstance(d, dict) and d.get("small"):
                runs.append(d["small"][0])
    return {"runs": runs, "probe_timeout_s": 1.0}


def daemon_curves(s: Suite) -> dict:
    if not (ROOT / "benchmarks" / "bench_daemon.py").exists():
        return {"runs": [], "note": "benchmarks/bench_daemon.py is not there yet"}
    runs = []
    for local in DAEMON_LOCAL:
        d = s.bench(["benchmarks/bench_daemon.py", "--local", str(local), "--cluster", "5000",
                     "--changes", "20", "--idle", "3"], 900, f"daemon {local} local pods")
        if isinstance(d, dict):
            runs.append(d)
    return {"runs": runs}


def datapath_full(s: Suite) -> dict:
    d = s.bench(["-m", "benchmarks.bench_datapath"], 1200, "datapath")
    return d if isinstance(d, dict) else {}


def machine() -> dict:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return ""

    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else ""
    return {"kernel": os.uname().release, "cpus": os.cpu_count(), "cpu": first("/proc/cpuinfo", "model name"),
            "memory": _gib(first("/proc/meminfo", "MemTotal")), "debian": debian,
            "python": platform.python_version(),
            "nft": out(["nft", "--version"]) if shutil.which("nft") else "",
            "iptables": out(["iptables", "--version"]) if shutil.which("iptables") else "",
            "commit": out(["git", "rev-parse", "--short", "HEAD"]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "loadavg_start": os.getloadavg()[0]}


def _gib(meminfo: str) -> str:
    try:
        return f"{int(meminfo.split()[0]) / 1024 / 1024:.0f} GiB"
    except (ValueError, IndexError):
        return meminfo


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def full(args) -> int:
    s = Suite()
    out = Path(args.out or RESULTS)
    meta = machine()
    only = set(args.only.split(",")) if args.only else None
    steps = [("compile", compile_curves, False), ("apply", apply_curves, True), ("lab", lab_curves, True),
             ("daemon", daemon_curves, True), ("datapath", datapath_full, True)]
    for name, fn, needs_root in steps:
        if only and name not in only:
            continue
        if needs_root and not is_root():
            s.errors.append(f"{name}: skipped, needs root")
            log(f"{name}: skipped (needs root)")
            continue
        data = s.step(name, lambda fn=fn: fn(s))
        write_json(out / f"{name}.json", data)
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["step_seconds"] = s.timings
    meta["errors"] = s.errors
    if only and (out / "meta.json").exists():
        # A partial run: keep what the earlier full run recorded for the other steps.
        earlier = json.loads((out / "meta.json").read_text())
        earlier["step_seconds"] = {**earlier.get("step_seconds", {}), **s.timings}
        earlier["errors"] = earlier.get("errors", []) + s.errors
        earlier.setdefault("partial_runs", []).append({"steps": sorted(only), "date": meta["date"],
                                                       "commit": meta["commit"],
                                                       "loadavg_start": meta.get("loadavg_start"),
                                                       "loadavg_end": meta.get("loadavg_end")})
        meta = earlier
    write_json(out / "meta.json", meta)
    if not args.no_docs:
        from benchmarks import plots, report

        results = report.load_results(out)
        figures = plots.draw_all(results, Path(args.figures))
        log(f"plots: {', '.join(sorted(p.name for p in figures))}")
        Path(args.doc).write_text(report.render(results))
        log(f"wrote {args.doc}")
    if s.errors:
        log("some benchmarks failed:\n  " + "\n  ".join(s.errors))
        return 1
    return 0


def quick(args) -> int:
    """The fast subset: ratios within one run against committed bounds."""
    s = Suite()
    t0 = time.monotonic()
    tolerance, bounds = load_bounds(Path(args.bounds))
    compile_runs = []
    for _ in range(3):  # best of three: a noisy moment only ever makes a time longer
        d = s.bench(["-m", "benchmarks.bench_compile", "--sizes",
                     ",".join(f"{p}:{n}:{q}" for p, n, q in QUICK_COMPILE)], 300, "quick compile")
        if d:
            compile_runs.append(d if isinstance(d, list) else [d])
        d = s.bench(["-m", "benchmarks.bench_compile", "--shape", "common", "--sizes",
                     ":".join(str(x) for x in QUICK_DEMAND)], 300, "quick compile on demand")
        if d:
            compile_runs.append(d if isinstance(d, list) else [d])
    apply = datapath = swap = None
    if is_root():
        apply = s.bench(["benchmarks/bench_apply.py", "--pods", str(QUICK_APPLY_PODS), "--backends",
                         "nftables-libnft,nftables-netlink,iptables", "--repeat", "5"], 300, "quick apply")
        datapath = s.bench(["-m", "benchmarks.bench_datapath", "--quick"], 300, "quick datapath")
        swap = s.bench(["-m", "benchmarks.bench_swap", "--repeat", "9"], 120, "quick rule swap")
    else:
        s.errors.append("apply and datapath need root: run as root")
    measured = quick_ratios(compile_runs, apply if isinstance(apply, dict) else None,
                            datapath if isinstance(datapath, dict) else None,
                            swap if isinstance(swap, dict) else None)
    verdicts = check(measured, bounds, tolerance)
    print(format_verdicts(verdicts, tolerance))
    took = round(time.monotonic() - t0, 1)
    print(f"quick benchmark: {took} s")
    # Not into the tracked results: a quick check must leave the work tree as it was.
    write_json(Path(args.out or os.path.join(tempfile.gettempdir(), "netpol-bench")) / "quick.json", {
        "machine": machine(), "seconds": took, "tolerance": tolerance, "measured": measured,
        "verdicts": [v.__dict__ for v in verdicts], "errors": s.errors,
        "raw": {"compile": compile_runs, "apply": apply, "datapath_ratios": (datapath or {}).get("ratios")
                if isinstance(datapath, dict) else None}})
    for e in s.errors:
        print(f"error: {e}", file=sys.stderr)
    return 0 if all(v.ok for v in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ratios against bounds.json, < 2 minutes")
    ap.add_argument("--out", help="directory for the JSON results (default: benchmarks/results; "
                    "--quick: $TMPDIR/netpol-bench, outside the tracked files)")
    ap.add_argument("--figures", default=str(FIGURES), help="directory for the plots")
    ap.add_argument("--doc", default=str(DOC), help="the performance page to write")
    ap.add_argument("--bounds", default=str(BOUNDS))
    ap.add_argument("--only", default="", help="full run: comma-separated steps "
                    "(compile,apply,lab,daemon,datapath)")
    ap.add_argument("--no-docs", action="store_true", help="full run: results only")
    ap.add_argument("--docs-only", action="store_true",
                    help="redraw plots and rewrite the page from the results already there")
    args = ap.parse_args(argv)
    if args.docs_only:
        from benchmarks import plots, report

        results = report.load_results(Path(args.out or RESULTS))
        plots.draw_all(results, Path(args.figures))
        Path(args.doc).write_text(report.render(results))
        return 0
    return quick(args) if args.quick else full(args)


if __name__ == "__main__":
    sys.exit(main())
