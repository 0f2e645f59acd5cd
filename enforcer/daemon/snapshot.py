"""What the daemon shows of itself when asked: /healthz (/readyz, /livez) and the state
file that ``netpol status`` reads (its format and the reader are status.py). Both are
views of the running daemon (service.Daemon), computed on demand; nothing here changes it.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from enforcer.daemon import status as statusfile
from enforcer.daemon.report import message, not_enforced

if TYPE_CHECKING:
    from enforcer.daemon.service import Daemon


def health(d: Daemon, *, live_only: bool = False) -> tuple[bool, str]:
    """/healthz, /readyz: the worker loops and every local pod is enforced. /livez
    (``live_only``): the worker loops (a pod that cannot be enforced is no reason to
    restart the daemon)."""
    if d.phase == "starting":
        ok, why = d.source.health()  # e.g. waiting for the API server's first lists
        return False, "starting: the first sync has not finished" + ("" if ok else f" ({why})")
    if d.phase == "stopped":
        return False, "stopped"
    stalled = d.clock() - d.last_loop
    limit = max(120.0, 3 * d.opts.repair_interval)
    if stalled > limit:
        return False, f"stalled: the worker has not looped for {stalled:.0f}s"
    if not live_only:
        bad = not_enforced(d.reconciler)
        if bad:
            shown = ", ".join(f"{pod} ({ns})" for ns, pod in sorted(bad.items())[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            return False, f"not enforced: {len(bad)} pod(s): {shown}{more}"
        ok, why = d.source.health()
        if not ok:  # the API server is away: fail-static, and said so
            return False, f"degraded: {why}; " + d.reporter.status_line()
    return True, "ok: " + d.reporter.status_line()


def document(d: Daemon) -> dict[str, Any]:
    """The state file's content."""
    c = d.syncer.compiler
    r = d.reconciler
    rep = d.reporter
    pods = []
    bad = not_enforced(r)
    for ns, m in sorted(r.managed.items(), key=lambda kv: kv[1].pod):
        fw = m.wanted or m.fw
        st = "not enforced" if ns in bad else ("deny-only" if m.wanted is not None else "enforced")
        pods.append({"pod": m.pod, "netns": ns, "state": st,
                     "ingress": list(fw.ingress.isolated_by) if fw.ingress.isolated else [],
                     "egress": list(fw.egress.isolated_by) if fw.egress.isolated else [],
                     "rules": len(fw.ingress.rules) + len(fw.egress.rules)})
    for ns, pod in sorted(bad.items()):  # never applied: no record, still reported
        if ns not in r.managed:
            pods.append({"pod": pod, "netns": ns, "state": "not enforced", "ingress": [], "egress": [],
                         "rules": 0})
    info = rep.last.info
    counts = rep.object_counts()
    t = rep.totals
    return {
        "version": statusfile.VERSION,
        "pid": os.getpid(),
        "phase": d.phase,
        "started": statusfile.iso(d.started_wall),
        "updated": statusfile.iso(time.time()),
        "backend": d.backend.name,
        "enforce_at": d.opts.enforce_at,
        "node_netns": d.opts.node_netns,
        "watch": list(d.opts.watch),
        "source": d.source.describe(),
        "netns_prefix": d.opts.netns_prefix,
        "conntrack_strict": d.opts.conntrack_strict,
        "last_sync": None if info is None else {
            "at": statusfile.iso(rep.last.wall) if info.ok else statusfile.iso(time.time()),
            "ok": info.ok, "kind": "full" if info.full else "incremental",
            "ms": rep.last.ms, "error": None if info.ok else message(info.error)},
        "counts": {"pods": counts["Pod"], "policies": counts["NetworkPolicy"],
                   "cluster_policies": counts.get("ClusterNetworkPolicy", 0),
                   "namespaces": counts["Namespace"], "local_pods": len(d.syncer.local),
                   "managed": len(r.managed),
                   "compiled_pods": len(c.pods) if c is not None else 0},
        "totals": {"syncs": t.syncs, "sync_errors": t.sync_errors,
                   "apply_errors": t.apply_errors, "drift_repairs": t.drift_repairs,
                   "conntrack_deleted": t.conntrack_deleted, "applies": t.applies},
        "pods": pods,
        "input_errors": [str(i) for i in rep.issues or ()],
        "apply_errors": [{"netns": f.netns, "pod": f.pod, "message": f.message, "count": f.count}
                         for f in sorted(r.failures.values(), key=lambda f: f.netns)],
        "conflicts": list(rep.conflicts),
        "not_enforced": [{"netns": ns, "pod": pod} for ns, pod in sorted(bad.items())],
    }


def write(d: Daemon) -> None:
    if not d.opts.state_file:
        return
    try:
        statusfile.write(d.opts.state_file, document(d))
    except OSError as e:
        d.log.warning("state file not written", path=d.opts.state_file, error=str(e))
