"""Plots of the benchmark results: docs/performance/<name>.png and .svg.

Each ``draw_*`` takes the results of one benchmark (the JSON that benchmarks.run wrote) and
returns a matplotlib Figure; ``draw_all`` decides whether there is anything to draw (the
list each one plots, in ``DRAWERS``), lays the figures out and saves them. matplotlib runs
on the Agg backend (no display needed).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# One colour per engine, kept across figures: nftables blues, iptables oranges.
COLORS = {
    "nftables-libnft": "#1f77b4", "nftables": "#1f77b4", "nftables-cli": "#6baed6",
    "iptables": "#e6550d", "iptables-legacy": "#a63603",
    "nft-set": "#1f77b4", "nft-interval": "#6baed6", "ipt-set": "#e6550d", "ipt-net": "#fd8d3c",
    "iptl-set": "#a63603", "iptl-net": "#d94801", "nft-concat": "#9467bd", "nft-naive": "#636363", "ipt-naive": "#252525",
}
LABELS = {
    "nftables-libnft": "nftables (libnftables, in-process)", "nftables-cli": "nftables (nft -f per pod)",
    "iptables": "iptables-nft + ipset (iptables-restore)", "iptables-legacy": "iptables-legacy + ipset (python-iptables)",
    "nft-set": "nftables, exact set (selector peers)", "nft-interval": "nftables, interval set (ipBlocks)",
    "ipt-set": "iptables + ipset hash:ip", "ipt-net": "iptables + ipset hash:net (ipBlocks)",
    "iptl-set": "iptables-legacy + hash:ip", "iptl-net": "iptables-legacy + hash:net",
    "nft-concat": "nftables, address . port interval set (hand-written)",
    "nft-naive": "nftables, one rule per peer", "ipt-naive": "iptables, one rule per peer",
}
MARKERS = {"nft-naive": "x", "ipt-naive": "x", "nft-concat": "d"}


def _plain(v: float, _pos=None) -> str:
    """Tick labels as plain numbers (1, 10, 1,000, 0.1), not powers of ten."""
    if v >= 1:
        return f"{v:,.0f}"
    return f"{v:g}"


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(FuncFormatter(_plain))
            axis.set_minor_formatter(NullFormatter())


def draw_compile(res: dict) -> Figure:
    sizes = sorted(res["by_cluster_size"], key=lambda r: r["pods"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    ax = axes[0]
    pods = [r["pods"] for r in sizes]
    ax.loglog(pods, [r["compile_s"] for r in sizes], "o-", color="#1f77b4", label="full compile (s)")
    _style(ax, "Full compile vs cluster size\n(pods; namespaces and policies grow with them)",
           "pods in the cluster", "seconds")
    ax2 = ax.twinx()
    ax2.loglog(pods, [r["maxrss_mib"] for r in sizes], "s--", color="#2ca02c", label="peak memory (MiB)")
    ax2.set_ylabel("peak memory, MiB (process maxrss)")
    _style(ax2, ax.get_title(), "pods in the cluster", "peak memory, MiB (process maxrss)")
    ax2.grid(False)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper left")

    ax = axes[1]
    pols = sorted(res.get("by_policies", []), key=lambda r: r["policies"])
    if pols:
        ax.loglog([r["policies"] for r in pols], [r["compile_s"] for r in pols], "o-", color="#1f77b4")
        for r in pols:
            ax.annotate(f"{r['maxrss_mib']:.0f} MiB", (r["policies"], r["compile_s"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    _style(ax, f"Full compile vs policies\n({pols[0]['pods'] if pols else '?'} pods)", "policies", "seconds")

    ax = axes[2]
    ax.loglog(pods, [max(r["label_change_ms_p50"], 1e-3) for r in sizes], "o-", color="#9467bd", label="p50")
    ax.loglog(pods, [max(r["label_change_ms_p99"], 1e-3) for r in sizes], "^--", color="#9467bd", label="p99")
    _style(ax, "Incremental recompile after one pod label change", "pods in the cluster", "milliseconds")
    ax.legend(fontsize=8)
    return fig


def _series(runs: list[dict], backend: str, key: str) -> tuple[list[int], list[float]]:
    pts = sorted((r["pods"], r[key]) for r in runs if r.get("backend") == backend and r.get(key) is not None)
    return [p for p, _ in pts], [v for _, v in pts]


def draw_apply(res: dict) -> Figure:
    runs = res["runs"]
    backends = [b for b in ("nftables-libnft", "nftables-cli", "iptables", "iptables-legacy")
                if any(r["backend"] == b for r in runs)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), sharey=False)
    panels = (("cold_many_total_ms", "Cold full apply of every local pod\n(new tables, handles opened)"),
              ("warm_full_many_total_ms", "Policy edit: every table swapped\n(one transaction per pod)"),
              ("delta_many_total_ms_median", "One peer joins a selector all pods use\n(set-element delta in every pod)"))
    for ax, (key, title) in zip(axes, panels):
        for b in backends:
            x, y = _series(runs, b, key)
            if x:
                ax.loglog(x, y, "o-", color=COLORS[b], label=LABELS[b])
        _style(ax, title, "local pods (namespaces)", "total milliseconds")
    for ax, target, text in ((axes[0], 300, "target: 110 pods\nin <= 300 ms"), (axes[2], 30, "target: 110 pods\nin <= 30 ms")):
        ax.plot([110], [target], marker="*", ms=12, color="#2ca02c", ls="none")
        ax.annotate(text, (110, target), fontsize=7, color="#2ca02c", textcoords="offset points",
                    xytext=(6, -14))
    axes[0].legend(fontsize=7, loc="upper left")
    return fig


def draw_lab(res: dict) -> Figure:
    runs = res["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "up_s", "lab up (namespaces, links, servers, rules)"),
                           (axes[1], "probe_s", "lab probe: every ordered pair, one port")):
        for b in ("nftables", "iptables"):
            x, y = _series(runs, b, key)
            if x:
                ax.plot(x, y, "o-", color=COLORS[b], label=b)
        _style(ax, title, "pods", "seconds")
        ax.legend(fontsize=8)
    for r in runs:
        if r.get("backend") == "nftables":
            axes[1].annotate(f"{r['pairs']:,} pairs", (r["pods"], r["probe_s"]), fontsize=7,
                             textcoords="offset points", xytext=(-10, 6))
    return fig


def _kinds(run: dict) -> dict[str, dict]:
    """{"full swap": summary, "delta": summary} from one bench_daemon result."""
    out = {}
    for k, v in run.get("change_to_enforced_probe", {}).items():
        if k.startswith("ports"):
            out["rules change (full swap)"] = v
        elif k.startswith("peers"):
            out["peers change (set delta)"] = v
    return out


def draw_daemon(res: dict) -> Figure:
    runs = sorted(res["runs"], key=lambda r: r["local_pods"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"rules change (full swap)": "#1f77b4", "peers change (set delta)": "#2ca02c"}
    for kind, color in colors.items():
        pts = [(r["local_pods"], _kinds(r).get(kind)) for r in runs]
        pts = [(x, s) for x, s in pts if s]
        if not pts:
            continue
        xs = [x for x, _ in pts]
        ax.plot(xs, [s["p50_ms"] for _, s in pts], "o-", color=color, label=f"{kind}: p50")
        ax.plot(xs, [s["p99_ms"] for _, s in pts], "^--", color=color, label=f"{kind}: p99")
    ax.axhline(50, color="#999999", ls=":", lw=1)
    ax.axhline(200, color="#999999", ls=":", lw=1)
    ax.annotate("target p50 50 ms", (xs[0], 50), fontsize=7, textcoords="offset points", xytext=(0, 3))
    ax.annotate("target p99 200 ms", (xs[0], 200), fontsize=7, textcoords="offset points", xytext=(0, 3))
    _style(ax, f"Daemon: policy file change -> enforced in every local pod\n"
               f"(real connections; {runs[0].get('cluster_pods', '?')} pods in the cluster, nftables)",
           "local pods", "milliseconds")
    ax.legend(fontsize=7)
    return fig


def draw_datapath(res: dict) -> Figure:
    results = res["results"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    ax = axes[0]
    layouts = []
    for r in results:
        if r["layout"] not in layouts and r["layout"] != "none":
            layouts.append(r["layout"])
    for lay in layouts:
        pts = sorted((r["peers"], r["pps"]) for r in results if r["layout"] == lay)
        x = [p for p, _ in pts]
        # The upper quartile: the machine is shared and noise only ever lowers a rate, so
        # the quieter rounds show the layouts' own costs; bars reach down to the median
        # and up to the best round.
        y = [s["p75"] / 1000 for _, s in pts]
        err = [[(s["p75"] - s["median"]) / 1000 for _, s in pts], [(s["max"] - s["p75"]) / 1000 for _, s in pts]]
        ax.errorbar(x, y, yerr=err, fmt=MARKERS.get(lay, "o") + "-", color=COLORS.get(lay), label=LABELS.get(lay, lay),
                    capsize=2, ms=4, lw=1.2)
    for base, style, label in (("none", "-", "no rules (no conntrack)"),):
        for r in results:
            if r["layout"] == base:
                ax.axhline(r["pps"]["p75"] / 1000, color="#2ca02c", ls=style, lw=1, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _style(ax, "New flows per second a pod receives vs allowed peers\n(one-way UDP, every packet ct NEW; "
               "upper quartile of the rounds, bars median to best)",
           "allowed peers (set elements, or rules for one-rule-per-peer)", "thousand packets per second")
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[1]
    ratios = res.get("ratios", {})
    for lay in layouts:
        if lay in ("nft-naive", "ipt-naive"):
            continue
        pts = []
        for r in results:
            if r["layout"] == lay and r["peers"] > 1:
                q = ratios.get(f"{lay}: {r['peers']} vs 1 peer")
                if q:
                    pts.append((r["peers"], q))
        pts.sort()
        if not pts:
            continue
        ax.errorbar([p for p, _ in pts], [q["median"] for _, q in pts],
                    yerr=[[q["median"] - q["p25"] for _, q in pts], [q["p75"] - q["median"] for _, q in pts]],
                    fmt="o-", color=COLORS.get(lay), label=LABELS.get(lay, lay), capsize=2, ms=4, lw=1.2)
    ax.axhline(0.95, color="#2ca02c", ls=":", lw=1)
    ax.axhline(0.9, color="#2ca02c", ls="--", lw=1)
    ax.annotate("target 0.95 (selector peers)", (100, 0.95), fontsize=7, textcoords="offset points", xytext=(0, 3))
    ax.annotate("target 0.9 (ipBlocks)", (100, 0.9), fontsize=7, textcoords="offset points", xytext=(0, -10))
    ax.set_xscale("log")
    ax.set_ylim(0.6, 1.15)
    _style(ax, "Rate with N peers / rate with 1 peer, same layout\n(median of per-round ratios, bars p25-p75)",
           "allowed peers", "ratio")
    ax.legend(fontsize=7, loc="lower left")
    return fig


# results name -> its figure, and the list it plots (none there: no figure)
DRAWERS = {"compile": (draw_compile, "by_cluster_size"), "apply": (draw_apply, "runs"), "lab": (draw_lab, "runs"),
           "daemon": (draw_daemon, "runs"), "datapath": (draw_datapath, "results")}


def draw_all(results: dict[str, dict], outdir: Path) -> list[Path]:
    """Draw every figure there are results for; returns the files written."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    plt.rcParams["svg.hashsalt"] = "netpol-bench"  # stable ids in the SVG across runs
    plt.rcParams["svg.fonttype"] = "none"
    for name, (draw, rows) in DRAWERS.items():
        data = results.get(name)
        if not data or not data.get(rows):
            continue
        fig = draw(data)
        fig.tight_layout()
        for ext in ("png", "svg"):
            path = outdir / f"{name}.{ext}"
            fig.savefig(path, dpi=110, metadata={"Date": None} if ext == "svg" else {"Software": None})
            written.append(path)
        plt.close(fig)
    return written
