"""One sync of the daemon, input to kernel, and one drift repair round.

    sync: read due files or events (Source.poll) -> re-read dirty namespaces (Discovery)
          -> feed the changes to the incremental compiler (BatchCompiler)
          -> place the local pods in their namespaces (discovery.place)
          -> Reconciler.converge (adopt / swap / delta, fail closed) -> EnforcePoint
             (what a switch of --enforce-at or a gone pod leaves behind) -> conntrack
    repair: Reconciler.repair (read back, restore, count)

The front half is enforcer/compiler/frontend.py's, step by step: objects are decoded one
at a time by the decoders its ``load`` runs per file (``manifests.decode_text`` for files,
``decode.decode_kind`` and ``cnp.decode.decode_object`` for API objects, apistore.py), and
the compiler comes from its ``compiler`` (here the incremental BatchCompiler). Two of its
steps the daemon does not take:
``load`` reads the input whole, where the daemon keeps each object's last good version
(sources.py, apistore.py); ``assign`` invents addresses for pods that have none, which is
wrong for a running cluster (a pod without status.podIP is nobody's peer until it has one).

The runner (runner.BoundedRunner) calls ``sync`` on the daemon's worker thread, one at a
time; ``namespace_changed`` is called from the namespace watcher's thread. Everything
said about the outcome goes through the Reporter.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from enforcer.compiler import frontend
from enforcer.daemon.batch import BatchCompiler, Interrupted
from enforcer.daemon.conntrack import Conntrack
from enforcer.daemon.desired import Source
from enforcer.daemon.discovery import Discovery, NetnsWatcher, place, pods_by_ip
from enforcer.daemon.enforcepoint import EnforcePoint
from enforcer.daemon.reconcile import Outcome, Reconciler, isolation_only
from enforcer.daemon.report import Reporter
from enforcer.daemon.sources import ObjKey


class Syncer:
    def __init__(self, opts, *, source: Source, discovery: Discovery, reconciler: Reconciler,
                 enforce_point: EnforcePoint, conntrack: Conntrack | None, reporter: Reporter, log,
                 stopping: Callable[[], bool]) -> None:
        self.opts = opts
        self.source = source
        self.store = source.store
        self.discovery = discovery
        self.reconciler = reconciler
        self.enforce_point = enforce_point
        self.conntrack = conntrack
        self.reporter = reporter
        self.log = log
        self.stopping = stopping
        self.netns_watcher: NetnsWatcher | None = None  # poked on a full sync (set by the daemon)
        self.compiler: BatchCompiler | None = None
        self.local: dict[str, str] = {}  # pod key -> netns, as of the last sync
        self.force_read = False  # the next sync re-reads every file and namespace (start, SIGHUP)
        self.files = self.namespaces = self.applied = 0  # of the last sync, for "sync done"
        self._dirty_ns: set[str] = set()
        self._ns_lock = threading.Lock()
        self._changes: dict[ObjKey, Any] = {}  # read but not yet compiled (a failed sync keeps them)
        self._pod_ips: dict[str, tuple[str, ...]] = {}
        self._by_ip: dict[str, set[str]] | None = None  # address -> pods (rebuilt when pods change)
        self._pods_changed = True

    def namespace_changed(self, name: str) -> None:
        """(Any thread.)"""
        with self._ns_lock:
            self._dirty_ns.add(name)

    def sync(self, full: bool) -> float | None:
        """Returns when to run again (a failed namespace's retry, a file still settling)."""
        force, self.force_read = self.force_read, False
        self.files = self.namespaces = self.applied = 0
        self.enforce_point.before_sync()
        # 1. Input: files due, and every file on a full run (their stat signature decides).
        changes, read = self.source.poll(full=full, force=force)
        self._changes.update(changes)
        self.files = read
        if read or full or self.reporter.issues is None:
            self.reporter.input_read()  # problems change only when files are read
        # 2. Namespaces: the dirty ones, all of them on a full run.
        with self._ns_lock:
            dirty, self._dirty_ns = self._dirty_ns, set()
        if full:
            if force:
                self.discovery.spaces.clear()
            self.discovery.scan()
            if self.netns_watcher is not None:
                self.netns_watcher.poke_all()
        self.namespaces = len(dirty)
        for name in sorted(dirty):
            if self.discovery.refresh(name):
                info = self.discovery.spaces.get(name)
                self.log.debug("namespace changed", netns=name,
                               addresses=sorted(info.addrs) if info else [], present=info is not None)
        # 3. Compile (incrementally, unless there is no compiler yet).
        candidates, gone_ips = self._compile()
        if full:
            candidates = None
        # 4. Which pods live here.
        assert self.compiler is not None
        if self._by_ip is None or self._pods_changed:
            self._pod_ips = {k: p.ips for k, p in self.compiler.pods.items() if self.source.is_local(k)}
            self._by_ip = pods_by_ip(self._pod_ips)
            self._pods_changed = False
        placement = place(self._pod_ips, self.discovery.index(), self._by_ip)
        self.local = placement.local
        self.enforce_point.placed(placement.local)
        self.reporter.placed(placement.conflicts)
        # 5. Converge (then what a switch of --enforce-at or a gone pod leaves behind).
        out = self.reconciler.converge(placement.local, self.compiler.firewall, candidates)
        self.enforce_point.after_converge(out, self.reconciler.managed)
        self.applied = sum(1 for k in out.applied.values() if k not in ("none", "adopted", "verified"))
        self.reporter.outcome(out)
        if self.conntrack is not None:
            self._conntrack(out, gone_ips | out.gone_ips)
        self.reporter.gauges()
        if out.errors:
            self.reporter.totals.apply_errors += len(out.errors)
        # Run again when a failed namespace retries or a file still settling becomes due:
        # this run consumed every pending request, so nothing else would wake us for them.
        settling = getattr(self.source, "next_ready", None)  # files still settling
        wake = [t for t in (self.reconciler.next_retry(), settling() if settling else None) if t is not None]
        return min(wake) if wake else None

    def _compile(self) -> tuple[set[str] | None, set[str]]:
        """(pods whose firewall may have changed, None: all; addresses of pods gone)."""
        try:
            self._pods_changed = self._pods_changed or any(k[0] == "Pod" for k in self._changes)
            if self.compiler is None:
                self._pods_changed = True
                self.compiler = frontend.compiler(self.store.cluster(), self.opts.node_ips, kind=BatchCompiler,
                                                  legacy=self.opts.legacy_namespace_isolation)
                self._changes.clear()
                return None, set()
            candidates, gone_ips = self.compiler.feed(self._changes, self.stopping)
            self._changes.clear()
            return candidates, gone_ips
        except Interrupted:
            self.compiler = None  # half fed: rebuilt from the store if the loop goes on
            raise
        except Exception as e:
            # The firewalls cannot be computed: fail closed for pods that have no rules of
            # ours yet, rebuild the compiler from scratch on the retry.
            self.compiler = None
            cluster = self.store.cluster()
            placement = place({k: p.ips for k, p in cluster.pods.items()}, self.discovery.index())
            out = self.reconciler.isolate_only(
                placement.local, lambda key: isolation_only(cluster, key, self.opts.node_ips,
                                                            self.opts.legacy_namespace_isolation))
            self.log.error("compile failed", error=f"{type(e).__name__}: {e}",
                           deny_only=sorted(out.applied))
            raise

    def _conntrack(self, out: Outcome, gone_ips: set[str]) -> None:
        assert self.conntrack is not None
        for ns, (_, after) in sorted(out.changed.items()):
            self._cut(ns, lambda ns=ns, after=after: self.conntrack.cut(ns, after),
                      reason="no longer allowed", pod=after.pod)
        if gone_ips:
            for ns in sorted(self.reconciler.managed):
                self._cut(ns, lambda ns=ns: self.conntrack.forget_ips(ns, gone_ips), reason="pod went away")

    def _cut(self, ns: str, delete, *, reason: str, **fields) -> None:
        """Run one conntrack deletion in ``ns``; count and log what it removed. A failure is
        logged and skipped: conntrack cleanup never stops a sync."""
        try:
            n = delete()
        except Exception as e:
            self.log.warning("conntrack cleanup failed", netns=ns, error=str(e))
            return
        if n:
            self.reporter.conntrack_deleted(ns, n, reason, **fields)

    def repair(self) -> bool:
        """One drift repair round; whether anything worth writing down happened."""
        out = self.reconciler.repair()
        self.enforce_point.after_converge(out, self.reconciler.managed)
        for ns in out.repaired:
            self.reporter.repaired(ns)
        self.reporter.outcome(out)
        if out.errors or out.repaired or out.vanished:
            self.reporter.gauges()
            return True
        return False
