"""``netpol run``: the daemon that keeps every local pod's namespace enforcing the watched
policies. This module wires the parts and runs their lifecycle; each part is its own module:

    sources.DirSource ----(file closed / moved / deleted)----+   (or kube.ApiSource: watch events;
    discovery.NetnsWatcher --(namespace or address change)---+--> runner.BoundedRunner.request
                                                                  the Source protocol, desired.py)
    SIGHUP (full re-read), resync timer (--resync) ----------+            |
                                                                       one worker thread
                                                                          |
    syncer.Syncer.sync: input -> namespaces -> compile -> place -> Reconciler.converge
          (reconcile.py) -> EnforcePoint (enforcepoint.py: pod or host) -> conntrack
    repair timer (--repair-interval): Syncer.repair (Reconciler.repair: read back, restore)
    what it says: report.Reporter (logs, metrics, totals); snapshot.py (/healthz, the state file)

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
from dataclasses import dataclass
from typing import Callable

from enforcer.compiler import ipam
from enforcer.daemon import snapshot, status as statusfile
from enforcer.daemon.conntrack import Conntrack
from enforcer.daemon.desired import Source
from enforcer.daemon.discovery import Discovery, NetnsWatcher
from enforcer.daemon.enforcepoint import EnforcePoint
from enforcer.daemon.logs import Log
from enforcer.daemon.metrics import Metrics, MetricsServer
from enforcer.daemon.notify import Notifier, watchdog_interval
from enforcer.daemon.reconcile import Reconciler
from enforcer.daemon.report import Reporter
from enforcer.daemon.runner import BoundedRunner, Periodic, RunInfo
from enforcer.daemon.sources import DirSource, LastGood, ManifestStore
from enforcer.daemon.syncer import Syncer
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


class Daemon:
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
        self.reporter = Reporter(log=log, metrics=self.metrics, reconciler=self.reconciler, store=self.store,
                                 clock=clock)
        self.totals = self.reporter.totals
        self.syncer = Syncer(opts, source=self.source, discovery=self.discovery, reconciler=self.reconciler,
                             enforce_point=self.enforce_point, conntrack=self.conntrack,
                             reporter=self.reporter, log=log, stopping=self._stopping)
        self.runner = BoundedRunner(self.syncer.sync, clock=clock, min_interval=opts.min_interval,
                                    resync=opts.resync)
        self.repair_timer = Periodic(opts.repair_interval, clock=clock)
        wd = watchdog_interval()
        self.watchdog_timer = Periodic(wd, clock=clock, start_now=True) if wd else None
        self.server: MetricsServer | None = None
        self.started_wall = time.time()
        self.phase = "starting"
        self.last_loop = clock()
        self._cond = threading.Condition()
        self._kick = False
        self._stop = False
        self._stop_at: float | None = None  # when SIGTERM/SIGINT came (monotonic)
        self._reload = False

    # The facts the views (snapshot.py) and callers read.

    @property
    def local(self) -> dict[str, str]:
        return self.syncer.local

    @property
    def compiler(self):
        return self.syncer.compiler

    def health(self, *, live_only: bool = False) -> tuple[bool, str]:
        return snapshot.health(self, live_only=live_only)

    def state(self) -> dict:
        return snapshot.document(self)

    def _write_state(self) -> None:
        snapshot.write(self)

    def _after_run(self, info: RunInfo) -> None:
        s = self.syncer
        self.reporter.run_done(info, pods=len(s.local), files=s.files, namespaces=s.namespaces,
                               applied=s.applied, retry_in=self.runner.backoff(self.runner.failures))
        self._write_state()

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
            self.syncer.netns_watcher = self.netns_watcher
        # Nothing is written from a partial view (the API source's first lists).
        self.source.wait_complete(lambda: self._stop)
        if self._stop:
            return  # stopped while waiting: nothing was written, the loop shuts down
        self.syncer.force_read = True
        info = self.runner.run_now(full=True)
        self._after_run(info)
        self.phase = "running"
        self._write_state()
        text = self.reporter.status_line()
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
        self.syncer.namespace_changed(name)
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
        self.last_loop = self.clock()
        if reload:
            self.log.info("reload", reason="SIGHUP")
            self.notifier.reloading()
            self.syncer.force_read = True
            self._after_run(self.runner.run_now(full=True))
            self._repair()
            self.notifier.ready(self.reporter.status_line())
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
            errors = self.enforce_point.remove_all(self.reconciler)
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
            self.syncer.netns_watcher = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.reconciler.close()
        self.notifier.close()

    def _stopping(self) -> bool:
        with self._cond:
            return self._stop

    def _repair(self) -> None:
        self.repair_timer.done()
        if self.syncer.repair():
            self._write_state()
        if self.reconciler.failures:
            self.runner.wake_at(self.reconciler.next_retry() or self.clock())
