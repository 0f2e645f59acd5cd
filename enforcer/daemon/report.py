"""What the daemon says about itself: log lines for each outcome, the metrics gauges,
/healthz, the state file for ``netpol status``. A mixin of ``service.Daemon`` (it reads
the daemon's reconciler, store, totals and options); kept apart so that the wiring in
service.py stays readable.
"""
from __future__ import annotations

import os
import time
from typing import Any

from enforcer.daemon import status as statusfile
from enforcer.daemon.batch import Interrupted
from enforcer.daemon.reconcile import Outcome
from enforcer.daemon.runner import RunInfo
from enforcer.errors import NetpolError


class Reporting:
    def _after_run(self, info: RunInfo) -> None:
        self.last_info = info
        self.last_sync_ms = round((info.finished - info.started) * 1000, 3)
        kind = "full" if info.full else "incremental"
        self.metrics.sync_duration.labels(kind).observe(info.finished - info.started)
        self.totals.syncs += 1
        if info.ok:
            self.metrics.syncs.labels("ok").inc()
            self.last_sync_wall = time.time()
            self.metrics.last_sync.set(self.last_sync_wall)
            delay = None
            if info.first_request is not None:
                delay = max(0.0, info.finished - info.first_request)
                self.metrics.impl_delay.observe(delay)
            emit = self.log.info if self._sync_applied else self.log.debug
            emit("sync done", kind=kind, ms=self.last_sync_ms, pods=len(self.local),
                 delay_ms=None if delay is None else round(delay * 1000, 3),
                 files=self._sync_files, namespaces=self._sync_netns, applied=self._sync_applied)
        elif isinstance(info.error, Interrupted):
            self.log.info("sync interrupted", kind=kind, reason="stopping")
        else:
            self.totals.sync_errors += 1
            self.metrics.syncs.labels("error").inc()
            self.log.error("sync failed", kind=kind, error=_msg(info.error),
                           retry_in_s=round(self.runner.backoff(self.runner.failures), 3))
        self._write_state()

    def _report_issues(self) -> None:
        now = {str(i): i for i in self.store.issues()}
        for text, issue in now.items():
            if text not in self._said_issues:
                p = issue.problem
                fields = dict(file=p.file, object=p.obj, field=p.field, reason=p.message,
                              consequence=issue.consequence)
                if issue.consequence == "warning":
                    self.log.warning("input warning", **fields)
                else:
                    self.log.error("input error", **fields)
        for text, issue in self._said_issues.items():
            if text not in now:
                p = issue.problem
                self.log.info("input error resolved", file=p.file, object=p.obj, field=p.field)
        self._said_issues = now
        self._issues = [i for i in now.values() if i.consequence != "warning"]
        self.metrics.input_errors.set(len(self._issues))

    def _report_conflicts(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        for c in conflicts:
            if c not in self._said_conflicts:
                self.log.error("namespace conflict", reason=c)
        self._said_conflicts = set(conflicts)

    def _report_outcome(self, out: Outcome) -> None:
        for ns, kind in sorted(out.applied.items()):
            label = "adopted" if kind == "verified" else kind
            self.metrics.applies.labels(label if label in ("delta", "full", "adopted", "deny-only") else "full").inc()
            self.totals.applies[kind] = self.totals.applies.get(kind, 0) + 1
            m = self.reconciler.managed.get(ns)
            pod = m.pod if m else ""
            if kind == "deny-only":
                self.log.warning("deny-only installed", netns=ns, pod=pod,
                                 reason="the pod's rules could not be installed; isolation without allow rules until they can")
            elif kind != "none":
                self.log.debug("applied", netns=ns, pod=pod, kind=kind)
        for ns, msg in sorted(out.errors.items()):
            self.metrics.apply_errors.inc()
            if self._said_failures.get(ns) != msg:
                f = self.reconciler.failures.get(ns)
                m = self.reconciler.managed.get(ns)
                self.log.error("apply failed", netns=ns, pod=f.pod if f else "", error=msg,
                               state="deny-only" if m is not None and m.wanted is not None else "not enforced",
                               retry_in_s=round(max(0.0, f.retry_at - self.clock()), 3) if f else None)
                self._said_failures[ns] = msg
        for ns in list(self._said_failures):
            if ns not in self.reconciler.failures:
                del self._said_failures[ns]
                if ns in self.reconciler.managed:
                    self.log.info("apply recovered", netns=ns, pod=self.reconciler.managed[ns].pod)
        for ns in out.released:
            self.log.info("namespace released", netns=ns,
                          reason="it no longer holds a watched pod; our rules stay in place")
        for ns in out.vanished:
            self.log.info("namespace gone", netns=ns)

    def _update_gauges(self) -> None:
        managed = self.reconciler.managed.values()
        self.metrics.managed.set(len(self.reconciler.managed))
        self.metrics.isolated.labels("ingress").set(sum(1 for m in managed if m.fw.ingress.isolated))
        self.metrics.isolated.labels("egress").set(sum(1 for m in managed if m.fw.egress.isolated))
        self.metrics.rules.set(sum(len(m.fw.ingress.rules) + len(m.fw.egress.rules) for m in managed))
        self.metrics.sets.set(sum(len(m.fw.sets) for m in managed))
        self.metrics.set_elements.set(sum(len(s.v4) + len(s.v6) for m in managed for s in m.fw.sets))
        self.metrics.errors_in_force.set(len(self.reconciler.failures))
        self.metrics.not_enforced.set(len(self.not_enforced()))
        for kind, n in self._object_counts().items():
            self.metrics.objects.labels(kind).set(n)

    def _object_counts(self) -> dict[str, int]:
        counts = {"Namespace": 0, "Pod": 0, "NetworkPolicy": 0, "ExternalHost": 0}
        counts.update(self.store.counts)
        return counts

    def health(self, *, live_only: bool = False) -> tuple[bool, str]:
        """/healthz, /readyz: the worker loops and every local pod is enforced. /livez
        (``live_only``): the worker loops (a pod that cannot be enforced is no reason to
        restart the daemon)."""
        if self.phase == "starting":
            ok, why = self.source.health()  # e.g. waiting for the API server's first lists
            return False, "starting: the first sync has not finished" + ("" if ok else f" ({why})")
        if self.phase == "stopped":
            return False, "stopped"
        stalled = self.clock() - self._last_loop
        limit = max(120.0, 3 * self.opts.repair_interval)
        if stalled > limit:
            return False, f"stalled: the worker has not looped for {stalled:.0f}s"
        if not live_only:
            bad = self.not_enforced()
            if bad:
                shown = ", ".join(f"{pod} ({ns})" for ns, pod in sorted(bad.items())[:10])
                more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
                return False, f"not enforced: {len(bad)} pod(s): {shown}{more}"
            ok, why = self.source.health()
            if not ok:  # the API server is away: fail-static, and said so
                return False, f"degraded: {why}; " + self._status_line()
        return True, "ok: " + self._status_line()

    def not_enforced(self) -> dict[str, str]:
        """netns -> pod for local pods whose rules are not known to be in force: their
        apply or repair failed and no deny-only stand-in holds them (a read-back after a
        successful retry clears them)."""
        r = self.reconciler
        out = {}
        for ns, f in r.failures.items():
            m = r.managed.get(ns)
            if m is None or m.wanted is None:
                out[ns] = f.pod
        return out

    def _status_line(self) -> str:
        errs = len(self._issues or ()) + len(self.reconciler.failures) + len(self.conflicts)
        return (f"{len(self.reconciler.managed)} pod namespaces enforced, "
                f"{errs} error(s) in force, last sync {self.last_sync_ms} ms")

    def state(self) -> dict[str, Any]:
        c = self.compiler
        pods = []
        bad = self.not_enforced()
        for ns, m in sorted(self.reconciler.managed.items(), key=lambda kv: kv[1].pod):
            fw = m.wanted or m.fw
            st = "not enforced" if ns in bad else ("deny-only" if m.wanted is not None else "enforced")
            pods.append({"pod": m.pod, "netns": ns, "state": st,
                         "ingress": list(fw.ingress.isolated_by) if fw.ingress.isolated else [],
                         "egress": list(fw.egress.isolated_by) if fw.egress.isolated else [],
                         "rules": len(fw.ingress.rules) + len(fw.egress.rules)})
        for ns, pod in sorted(bad.items()):  # never applied: no record, still reported
            if ns not in self.reconciler.managed:
                pods.append({"pod": pod, "netns": ns, "state": "not enforced", "ingress": [], "egress": [],
                             "rules": 0})
        info = self.last_info
        counts = self._object_counts()
        return {
            "version": statusfile.VERSION,
            "pid": os.getpid(),
            "phase": self.phase,
            "started": statusfile.iso(self.started_wall),
            "updated": statusfile.iso(time.time()),
            "backend": self.backend.name,
            "enforce_at": self.opts.enforce_at,
            "node_netns": self.opts.node_netns,
            "watch": list(self.opts.watch),
            "source": self.source.describe(),
            "netns_prefix": self.opts.netns_prefix,
            "conntrack_strict": self.opts.conntrack_strict,
            "last_sync": None if info is None else {
                "at": statusfile.iso(self.last_sync_wall) if info.ok else statusfile.iso(time.time()),
                "ok": info.ok, "kind": "full" if info.full else "incremental",
                "ms": self.last_sync_ms, "error": None if info.ok else _msg(info.error)},
            "counts": {"pods": counts["Pod"], "policies": counts["NetworkPolicy"],
                       "namespaces": counts["Namespace"], "local_pods": len(self.local),
                       "managed": len(self.reconciler.managed),
                       "compiled_pods": len(c.pods) if c is not None else 0},
            "totals": {"syncs": self.totals.syncs, "sync_errors": self.totals.sync_errors,
                       "apply_errors": self.totals.apply_errors, "drift_repairs": self.totals.drift_repairs,
                       "conntrack_deleted": self.totals.conntrack_deleted, "applies": self.totals.applies},
            "pods": pods,
            "input_errors": [str(i) for i in self._issues or ()],
            "apply_errors": [{"netns": f.netns, "pod": f.pod, "message": f.message, "count": f.count}
                             for f in sorted(self.reconciler.failures.values(), key=lambda f: f.netns)],
            "conflicts": list(self.conflicts),
            "not_enforced": [{"netns": ns, "pod": pod} for ns, pod in sorted(self.not_enforced().items())],
        }

    def _write_state(self) -> None:
        if not self.opts.state_file:
            return
        try:
            statusfile.write(self.opts.state_file, self.state())
        except OSError as e:
            self.log.warning("state file not written", path=self.opts.state_file, error=str(e))


def _msg(e: BaseException | None) -> str:
    if e is None:
        return ""
    if isinstance(e, NetpolError):
        return str(e)
    return f"{type(e).__name__}: {e}"
