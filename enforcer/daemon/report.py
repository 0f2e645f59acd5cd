"""What the daemon says as it works: a log line for each outcome worth one (said once, not
at every sync), the counters and gauges of /metrics, the running totals of the state file.

``Reporter`` is told what happened (a sync run ended, the input's problems, namespace
conflicts, a converge's or repair's outcome) and says it; it decides nothing. The state
file and /healthz, which read the same facts, are snapshot.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from enforcer.daemon.batch import Interrupted
from enforcer.daemon.logs import Log
from enforcer.daemon.metrics import Metrics
from enforcer.daemon.reconcile import Outcome, Reconciler
from enforcer.daemon.runner import RunInfo
from enforcer.daemon.sources import Issue
from enforcer.errors import NetpolError


@dataclass
class Totals:
    syncs: int = 0
    sync_errors: int = 0
    apply_errors: int = 0
    drift_repairs: int = 0
    conntrack_deleted: int = 0
    applies: dict[str, int] = field(default_factory=dict)


@dataclass
class LastRun:
    """The last sync run, as the state file and the status line show it."""

    info: RunInfo | None = None
    ms: float = 0.0
    wall: float | None = None  # when the last successful one ended (time.time)


class Reporter:
    def __init__(self, *, log: Log, metrics: Metrics, reconciler: Reconciler, store,
                 clock: Callable[[], float]) -> None:
        self.log = log
        self.metrics = metrics
        self.reconciler = reconciler
        self.store = store
        self.clock = clock
        self.totals = Totals()
        self.last = LastRun()
        self.issues: list[Issue] | None = None  # input errors in force (as of the last read)
        self.conflicts: list[str] = []
        self._said_issues: dict[str, Issue] = {}
        self._said_conflicts: set[str] = set()
        self._said_failures: dict[str, str] = {}

    def run_done(self, info: RunInfo, *, pods: int, files: int, namespaces: int, applied: int,
                 retry_in: float) -> None:
        """A sync run ended (``retry_in``: the runner's backoff, for a failed one)."""
        self.last.info = info
        self.last.ms = round((info.finished - info.started) * 1000, 3)
        kind = "full" if info.full else "incremental"
        self.metrics.sync_duration.labels(kind).observe(info.finished - info.started)
        self.totals.syncs += 1
        if info.ok:
            self.metrics.syncs.labels("ok").inc()
            self.last.wall = time.time()
            self.metrics.last_sync.set(self.last.wall)
            delay = None
            if info.first_request is not None:
                delay = max(0.0, info.finished - info.first_request)
                self.metrics.impl_delay.observe(delay)
            emit = self.log.info if applied else self.log.debug
            emit("sync done", kind=kind, ms=self.last.ms, pods=pods,
                 delay_ms=None if delay is None else round(delay * 1000, 3),
                 files=files, namespaces=namespaces, applied=applied)
        elif isinstance(info.error, Interrupted):
            self.log.info("sync interrupted", kind=kind, reason="stopping")
        else:
            self.totals.sync_errors += 1
            self.metrics.syncs.labels("error").inc()
            self.log.error("sync failed", kind=kind, error=message(info.error), retry_in_s=round(retry_in, 3))

    def input_read(self) -> None:
        """The input's problems as of the last read: each new one said once, each gone one
        said resolved."""
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
        self.issues = [i for i in now.values() if i.consequence != "warning"]
        self.metrics.input_errors.set(len(self.issues))

    def placed(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        for c in conflicts:
            if c not in self._said_conflicts:
                self.log.error("namespace conflict", reason=c)
        self._said_conflicts = set(conflicts)

    def outcome(self, out: Outcome) -> None:
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

    def repaired(self, ns: str) -> None:
        m = self.reconciler.managed.get(ns)
        self.totals.drift_repairs += 1
        self.metrics.drift_repairs.inc()
        self.log.warning("drift repaired", netns=ns, pod=m.pod if m else "",
                         reason="rules changed or removed outside the daemon")

    def conntrack_deleted(self, ns: str, n: int, reason: str, **fields) -> None:
        self.totals.conntrack_deleted += n
        self.metrics.conntrack_deleted.inc(n)
        self.log.info("conntrack entries deleted", netns=ns, entries=n, reason=reason, **fields)

    def gauges(self) -> None:
        managed = self.reconciler.managed.values()
        self.metrics.managed.set(len(self.reconciler.managed))
        self.metrics.isolated.labels("ingress").set(sum(1 for m in managed if m.fw.ingress.isolated))
        self.metrics.isolated.labels("egress").set(sum(1 for m in managed if m.fw.egress.isolated))
        self.metrics.rules.set(sum(len(m.fw.ingress.rules) + len(m.fw.egress.rules) for m in managed))
        self.metrics.sets.set(sum(len(m.fw.sets) for m in managed))
        self.metrics.set_elements.set(sum(len(s.v4) + len(s.v6) for m in managed for s in m.fw.sets))
        self.metrics.errors_in_force.set(len(self.reconciler.failures))
        self.metrics.not_enforced.set(len(not_enforced(self.reconciler)))
        for kind, n in self.object_counts().items():
            self.metrics.objects.labels(kind).set(n)

    def object_counts(self) -> dict[str, int]:
        counts = {"Namespace": 0, "Pod": 0, "NetworkPolicy": 0, "ExternalHost": 0}
        counts.update(self.store.counts)
        return counts

    def status_line(self) -> str:
        errs = len(self.issues or ()) + len(self.reconciler.failures) + len(self.conflicts)
        return (f"{len(self.reconciler.managed)} pod namespaces enforced, "
                f"{errs} error(s) in force, last sync {self.last.ms} ms")


def not_enforced(r: Reconciler) -> dict[str, str]:
    """netns -> pod for local pods whose rules are not known to be in force: their apply or
    repair failed and no deny-only stand-in holds them (a read-back after a successful
    retry clears them)."""
    out = {}
    for ns, f in r.failures.items():
        m = r.managed.get(ns)
        if m is None or m.wanted is None:
            out[ns] = f.pod
    return out


def message(e: BaseException | None) -> str:
    if e is None:
        return ""
    if isinstance(e, NetpolError):
        return str(e)
    return f"{type(e).__name__}: {e}"
