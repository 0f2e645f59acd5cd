"""``netpol run``: the daemon that keeps every local pod's namespace enforcing the watched
policies. This module wires the parts; each part is its own module:

    sources.DirSource ----(file closed / moved / deleted)----+   (or kube.ApiSource: watch events;
    discovery.NetnsWatcher --(namespace or address change)---+--> runner.BoundedRunner.request
                                                                  the Source protocol, desired.py)
    SIGHUP (full re-read), resync timer (--resync) ----------+            |
                                                                       one worker thread
                                                                          |
    sync: read due files (ManifestStore: last good per object) -> re-read dirty namespaces
          -> feed the changes to the incremental Compiler -> place pods in namespaces
          -> Reconciler.converge (adopt / swap / delta, fail closed) -> conntrack (strict)
          -> metrics, state file, logs
    repair timer (--repair-interval): Reconciler.repair (read back, restore, count)

Start-up never flushes: the files and namespaces are read completely first, then each
local pod's namespace is verified and either adopted as it is or swapped in one
transaction. SIGTERM and SIGINT stop the loop and leave every rule in place (unless
--cleanup-on-exit); a kill -9 leaves them in place too. The main thread only waits and
handles signals; all kernel work happens on the worker thread, one thing at a time.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from enforcer import ipam
from enforcer.daemon.batch import BatchCompiler, Interrupted
from enforcer.daemon import status as statusfile
from enforcer.daemon.conntrack import Conntrack
from enforcer.daemon.desired import Source
from enforcer.daemon.discovery import Discovery, NetnsWatcher, place, pods_by_ip
from enforcer.daemon.enforcepoint import EnforcePoint
from enforcer.daemon.logs import Log
from enforcer.daemon.metrics import Metrics, MetricsServer
from enforcer.daemon.notify import Notifier, watchdog_interval
from enforcer.daemon.reconcile import Outcome, Reconciler, isolation_only
from enforcer.daemon.report import Reporting
from enforcer.daemon.runner import BoundedRunner, Periodic, RunInfo
from enforcer.daemon.sources import DirSource, Issue, LastGood, ManifestStore, ObjKey
from enforcer.errors import NetpolError

STOP_GRACE = 5.0  # seconds a stop waits for the worker's current call before exiting anyway
DEFAULT_NODE_IPS = ipam.node_ips((ipam.DEFAULT_POD_CIDR, ipam.DEFAULT_POD_CIDR6))


@dataclass
class Options:
    watch: list[str]
    backend: str = "nftables"
    metrics_addr: str | None = None
    log_format: str = "text"
    min_interval: float = 0.05
    resync: float = 60.0
    repair_interval: float = 10.0
    cleanup_on_exit: bool = False
    conntrack_strict: bool = False
    state_file: str | None = statusfile.DEFAULT_STATE_FILE
    netns_prefix: str = ""
    node_ips: tuple[str, ...] = DEFAULT_NODE_IPS
    legacy_namespace_isolation: bool = False
    settle: float = 1.0
    apply_workers: int = 1
    enforce_at: str = "pod"  # or "host": every pod's chains in the node's table (enforcepoint.py)
    node_netns: str | None = None  # host mode: the node's namespace (the pods' host-side veths)


@dataclass
class Totals:
    syncs: int = 0
    sync_errors: int = 0
    apply_errors: int = 0
    drift_repairs: int = 0
    conntrack_deleted: int = 0
    applies: dict[str, int] = field(default_factory=dict)


class Daemon(Reporting):
    def __init__(self, opts: Options, *, backend, log: Log, clock: Callable[[], float] = time.monotonic,
                 notifier: Notifier | None = None, discovery: Discovery | None = None,
                 conntrack: Conntrack | None = None, watch_netns: bool = True, watch_files: bool = True,
                 reconciler: Reconciler | None = None, source: Source | None = None,
                 enforce_point: EnforcePoint | None = None) -> None:
        self.opts = opts
        self.log = log
        self.clock = clock
        self.backend = backend
        self.notifier = notifier or Notifier("")
        self.metrics = Metrics()
        if source is None:  # the file source; the API source is built by the caller (kube.py)
            memory = LastGood(opts.state_file + ".lastgood") if opts.state_file else None
            if memory is not None and not memory.usable:
                log.warning("state file not written", path=memory.dir, error=memory.problem)
            store = ManifestStore(legacy_namespace_isolation=opts.legacy_namespace_isolation, memory=memory)
            source = DirSource(opts.watch, store, settle=opts.settle, clock=clock)
        self.source: Source = source
        self.store = source.store
        self.source.register_metrics(self.metrics.registry)
        self.discovery = discovery or Discovery(opts.netns_prefix)
        self.watch_netns = watch_netns
        self.watch_files = watch_files  # tests drive DirSource.note themselves
        self.netns_watcher: NetnsWatcher | None = None
        workers = opts.apply_workers
        if workers > 1 and not backend.apply_in_threads:
            # libnftables keeps global state (its interface cache among others): two threads
            # applying in two namespaces at once fail with bogus errors or crash (measured).
            log.warning("apply workers ignored", backend=backend.name, workers=workers,
                        reason="the backend applies one namespace at a time (libnftables is not thread-safe)")
            workers = 1
        self.enforce_point = enforce_point or EnforcePoint("pod", pod_backend=backend, log=log)
        self.enforce_point.host = backend
        generation = None
        if backend.nf_generation:
            from enforcer.daemon.nftgen import GenerationReader

            generation = self.enforce_point.generation(GenerationReader())
        self.reconciler = reconciler or Reconciler(backend, clock=clock, workers=workers,
                                                   generation=generation)
        self.reconciler.progress = self._feed_watchdog
        self.conntrack = conntrack if conntrack is not None else (Conntrack() if opts.conntrack_strict else None)
        self.compiler: BatchCompiler | None = None
        self.runner = BoundedRunner(self._sync, clock=clock, min_interval=opts.min_interval,
                                    resync=opts.resync)
        self.repair_timer = Periodic(opts.repair_interval, clock=clock)
        wd = watchdog_interval()
        self.watchdog_timer = Periodic(wd, clock=clock, start_now=True) if wd else None
        self.totals = Totals()
        self.server: MetricsServer | None = None
        self.started_wall = time.time()
        self.phase = "starting"
        self.local: dict[str, str] = {}
        self.conflicts: list[str] = []
        self._cond = threading.Condition()
        self._kick = False
        self._stop = False
        self._stop_at: float | None = None  # when SIGTERM/SIGINT came (monotonic)
        self._reload = False
        self._force_read = False
        self._dirty_ns: set[str] = set()
        self._ns_lock = threading.Lock()
        self._said_issues: dict[str, Issue] = {}
        self._issues: list[Issue] | None = None  # input errors in force (as of the last read)
        self._said_conflicts: set[str] = set()
        self._said_failures: dict[str, str] = {}
        self._changes: dict[ObjKey, Any] = {}  # read but not yet compiled (a failed sync keeps them)
        self._last_loop = clock()
        self._sync_files = self._sync_netns = self._sync_applied = 0  # for the "sync done" line
        self._pod_ips: dict[str, tuple[str, ...]] = {}
        self._by_ip: dict[str, set[str]] | None = None  # address -> pods (rebuilt when pods change)
        self._pods_changed = True
        self.last_sync_wall: float | None = None
        self.last_info: RunInfo | None = None
        self.last_sync_ms = 0.0

    # ================================================================== lifecycle

    def start(self) -> None:
        """Everything up to READY: watchers first (no event is missed), then the complete
        load, then the first converge."""
        for d in self.opts.watch:
            if not os.path.isdir(d):
                raise NetpolError(f"--watch {d}: not a directory")
        self.backend.check()
        if self.opts.metrics_addr:
            self.server = MetricsServer(self.opts.metrics_addr, self.metrics, self.health, log=self.log)
            self.server.start()
        self.source.on_ready = lambda at, nb: self.request(at=at, not_before=nb)
        if self.watch_files:
            self.source.start()
        if self.watch_netns:
            self.netns_watcher = NetnsWatcher(self.opts.netns_prefix, self._netns_changed)
            self.netns_watcher.start()
        # Nothing is written from a partial view (the API source's first lists).
        self.source.wait_complete(lambda: self._stop)
        if self._stop:
            return  # stopped while waiting: nothing was written, the loop shuts down
        self._force_read = True
        info = self.runner.run_now(full=True)
        self._after_run(info)
        self.phase = "running"
        self._write_state()
        text = self._status_line()
        self.log.info("started", backend=self.backend.name, watch=self.opts.watch,
                      enforce_at=self.opts.enforce_at, node_netns=self.opts.node_netns or "",
                      netns_prefix=self.opts.netns_prefix, pods=len(self.local),
                      managed=len(self.reconciler.managed), metrics_addr=self.opts.metrics_addr or "",
                      conntrack_strict=self.opts.conntrack_strict)
        self.notifier.ready(text)

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (from the main thread: it handles the signals while a
        worker thread does the work). Returns the exit code."""
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self.start()
                self.loop()
            except BaseException as e:  # reported by the main thread
                errors.append(e)
                with self._cond:
                    self._stop = True

        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        worker = threading.Thread(target=work, name="netpol-daemon", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.5)  # interruptible: signal handlers run on this thread
                if self._stop_at is not None and worker.is_alive() and time.monotonic() - self._stop_at > STOP_GRACE:
                    self._abandon()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if errors:
            raise errors[0]
        return 0

    def _feed_watchdog(self) -> None:
        if self.watchdog_timer is not None and self.watchdog_timer.is_due():
            self.notifier.watchdog()
            self.watchdog_timer.done()

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGHUP:
            self.reload()
        else:
            self.stop()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            if self._stop_at is None:
                self._stop_at = time.monotonic()
            self._cond.notify_all()

    def _abandon(self) -> None:
        """SIGTERM while the worker is stuck in one long call (a kernel transaction of a
        huge table): exit anyway. Safe: every transaction is atomic and every rule stays
        in place (fail-static), as after a kill -9."""
        self.log.error("stopped while busy", waited_s=STOP_GRACE,
                       reason="the worker is still in a long call; every rule stays in place"
                       + ("; --cleanup-on-exit skipped" if self.opts.cleanup_on_exit else ""))
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)

    def reload(self) -> None:
        with self._cond:
            self._reload = True
            self._cond.notify_all()

    def request(self, *, at: float | None = None, not_before: float | None = None, full: bool = False,
                urgent: bool = False) -> None:
        self.runner.request(at=at, not_before=not_before, full=full, urgent=urgent)
        with self._cond:
            self._kick = True
            self._cond.notify_all()

    def _netns_changed(self, name: str, when: float) -> None:
        with self._ns_lock:
            self._dirty_ns.add(name)
        # A namespace that gains a pod's address must be isolated before the pod starts
        # talking: no min_interval wait for these.
        self.request(at=when, urgent=True)

    def loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    break
            wake = self.step()
            with self._cond:
                if not self._kick and not self._stop and not self._reload:
                    self._cond.wait(timeout=max(0.0, min(wake - self.clock(), 3600.0)))
                self._kick = False
        self.shutdown()

    def step(self) -> float:
        """One turn of the loop: a reload, a sync, a repair, a watchdog ping, whatever is
        due. Returns when the next thing is due."""
        with self._cond:
            reload, self._reload = self._reload, False
        self._last_loop = self.clock()
        if reload:
            self.log.info("reload", reason="SIGHUP")
            self.notifier.reloading()
            self._force_read = True
            self._after_run(self.runner.run_now(full=True))
            self._repair()
            self.notifier.ready(self._status_line())
        else:
            info = self.runner.run_if_due()
            if info is not None:
                self._after_run(info)
        if self.repair_timer.is_due():
            self._repair()
        self._feed_watchdog()
        return min(self.runner.due(), self.repair_timer.due(),
                   self.watchdog_timer.due() if self.watchdog_timer else float("inf"))

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.phase = "stopped"
        removed = 0
        if self.opts.cleanup_on_exit:
            n = len(self.reconciler.managed)
            errors = self.reconciler.remove_all()
            removed = n - len(errors)
            for ns, msg in errors.items():
                self.log.error("cleanup failed", netns=ns, error=msg)
        self.log.info("stopped", rules_left_in_place=not self.opts.cleanup_on_exit,
                      namespaces_cleaned=removed)
        self.close()
        self._write_state()

    def close(self) -> None:
        self.source.stop()
        if self.netns_watcher is not None:
            self.netns_watcher.stop()
            self.netns_watcher = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.reconciler.close()
        self.notifier.close()

    # ================================================================== the sync

    def _sync(self, full: bool) -> float | None:
        force, self._force_read = self._force_read, False
        self._sync_files = self._sync_netns = self._sync_applied = 0
        self.enforce_point.before_sync()
        # 1. Input: files due, and every file on a full run (their stat signature decides).
        changes, read = self.source.poll(full=full, force=force)
        self._changes.update(changes)
        self._sync_files = read
        if read or full or self._issues is None:
            self._report_issues()  # problems change only when files are read
        # 2. Namespaces: the dirty ones, all of them on a full run.
        with self._ns_lock:
            dirty, self._dirty_ns = self._dirty_ns, set()
        if full:
            if force:
                self.discovery.spaces.clear()
            self.discovery.scan()
            if self.netns_watcher is not None:
                self.netns_watcher.poke_all()
        self._sync_netns = len(dirty)
        for name in sorted(dirty):
            if self.discovery.refresh(name):
                info = self.discovery.spaces.get(name)
                self.log.debug("namespace changed", netns=name,
                               addresses=sorted(info.addrs) if info else [], present=info is not None)
        # 3. Compile (incrementally, unless there is no compiler yet).
        gone_ips: set[str] = set()
        try:
            self._pods_changed = self._pods_changed or any(k[0] == "Pod" for k in self._changes)
            if self.compiler is None:
                self._pods_changed = True
                self.compiler = BatchCompiler(self.store.cluster(), node_ips=self.opts.node_ips,
                                              legacy_namespace_isolation=self.opts.legacy_namespace_isolation)
                candidates: set[str] | None = None
                self._changes.clear()
            else:
                candidates, gone_ips = self.compiler.feed(self._changes, self._stopping)
                self._changes.clear()
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
        if full:
            candidates = None
        # 4. Which pods live here.
        if self._by_ip is None or self._pods_changed:
            self._pod_ips = {k: p.ips for k, p in self.compiler.pods.items() if self.source.is_local(k)}
            self._by_ip = pods_by_ip(self._pod_ips)
            self._pods_changed = False
        placement = place(self._pod_ips, self.discovery.index(), self._by_ip)
        self.local = placement.local
        self.enforce_point.placed(placement.local)
        self._report_conflicts(placement.conflicts)
        # 5. Converge (then what a switch of --enforce-at or a gone pod leaves behind).
        out = self.reconciler.converge(placement.local, self.compiler.firewall, candidates)
        self.enforce_point.after_converge(out, self.reconciler.managed)
        self._sync_applied = sum(1 for k in out.applied.values() if k not in ("none", "adopted", "verified"))
        self._report_outcome(out)
        if self.conntrack is not None:
            self._conntrack(out, gone_ips | out.gone_ips)
        self._update_gauges()
        if out.errors:
            self.totals.apply_errors += len(out.errors)
        # Run again when a failed namespace retries or a file still settling becomes due:
        # this run consumed every pending request, so nothing else would wake us for them.
        settling = getattr(self.source, "next_ready", None)  # files still settling
        wake = [t for t in (self.reconciler.next_retry(), settling() if settling else None) if t is not None]
        return min(wake) if wake else None

    def _stopping(self) -> bool:
        with self._cond:
            return self._stop

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
            self.totals.conntrack_deleted += n
            self.metrics.conntrack_deleted.inc(n)
            self.log.info("conntrack entries deleted", netns=ns, entries=n, reason=reason, **fields)

    def _repair(self) -> None:
        self.repair_timer.done()
        out = self.reconciler.repair()
        self.enforce_point.after_converge(out, self.reconciler.managed)
        for ns in out.repaired:
            m = self.reconciler.managed.get(ns)
            self.totals.drift_repairs += 1
            self.metrics.drift_repairs.inc()
            self.log.warning("drift repaired", netns=ns, pod=m.pod if m else "",
                             reason="rules changed or removed outside the daemon")
        self._report_outcome(out)
        if out.errors or out.repaired or out.vanished:
            self._update_gauges()
            self._write_state()
        if self.reconciler.failures:
            self.runner.wake_at(self.reconciler.next_retry() or self.clock())
