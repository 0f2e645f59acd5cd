"""When the daemon works: a bounded-frequency runner and periodic timers, with an injected clock.

The daemon has one worker thread; every piece of kernel work happens there, one thing at a
time. Watchers (files, namespaces) only *request* a sync. The runner decides when it runs:

    request()  ----+  coalesced: any number of requests before the next run is one run
                   v
    due = max(last start + min_interval, time of the first pending request)
    run fails -> retry after backoff (min_interval x 2^n, at most max_backoff);
                 the requests that were pending stay pending (nothing is lost)
    every ``resync`` seconds a full run (re-scan everything), requested or not (safety net)

This is the shape of Kubernetes' BoundedFrequencyRunner (kube-proxy, kube-network-policies)
without its goroutines: ``due()`` and ``run_if_due()`` are plain functions of the clock, so
the unit tests drive it with a fake clock and no threads or sleeps.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

Clock = Callable[[], float]  # monotonic seconds


class SyncFn(Protocol):
    def __call__(self, full: bool) -> float | None:
        """Do one sync; ``full`` asks for a complete resync. Raise to ask for a retry of
        the whole run with backoff; return a monotonic time to be run again then (some
        items failed and have their own retry time), or None."""


@dataclass
class RunInfo:
    """What one run was: when, why, how it ended, and how old its oldest request was."""

    started: float
    finished: float
    full: bool
    ok: bool
    first_request: float | None  # monotonic time of the oldest request this run served
    error: BaseException | None = None


class BoundedRunner:
    def __init__(self, fn: SyncFn, *, clock: Clock, min_interval: float = 0.05,
                 resync: float = 60.0, max_backoff: float = 10.0) -> None:
        if min_interval < 0 or resync <= 0:
            raise ValueError("min_interval must be >= 0 and resync > 0")
        self.fn = fn
        self.clock = clock
        self.min_interval = min_interval
        self.resync = resync
        self.max_backoff = max(max_backoff, min_interval)
        self.last_start: float | None = None
        self.last_full: float | None = None  # start of the last full run (resync clock)
        self.last_ok: float | None = None
        self.pending_since: float | None = None  # event time of the oldest request not yet served
        self.pending_full = False
        self.ready_at: float | None = None  # earliest time pending requests want to run
        self.retry_at: float | None = None  # whole-run failure: not before this
        self.failures = 0  # consecutive failed runs
        self.runs = 0
        self.urgent = False
        self.last: RunInfo | None = None
        # Watchers request from their own threads; ``fn`` itself runs without the lock.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ requests

    def request(self, *, full: bool = False, at: float | None = None,
                not_before: float | None = None, urgent: bool = False) -> None:
        """Ask for a run. ``at``: when the triggering event happened (for the delay metric;
        default now). ``not_before``: this request may wait until then (a file still being
        written); other requests are not delayed by it. ``urgent``: run as soon as the
        current run ends, min_interval or not (a new pod's namespace: isolation first)."""
        with self._lock:
            now = self.clock()
            if urgent and not_before is None:
                self.urgent = True
            at = now if at is None else min(at, now)
            if self.pending_since is None or at < self.pending_since:
                self.pending_since = at
            self.pending_full = self.pending_full or full
            want = now if not_before is None else max(now, not_before)
            self.ready_at = want if self.ready_at is None else min(self.ready_at, want)

    def wake_at(self, when: float) -> None:
        """Run again at ``when`` without a new event (an item's own retry time)."""
        with self._lock:
            self.ready_at = when if self.ready_at is None else min(self.ready_at, when)

    # ------------------------------------------------------------------ schedule

    def due(self) -> float:
        """Monotonic time of the next run (may be in the past: run now)."""
        with self._lock:
            return self._due()

    def _due(self) -> float:
        if self.last_start is None:
            return float("-inf")
        earliest = self.last_start + (0.0 if self.urgent else self.min_interval)
        periodic = (self.last_full if self.last_full is not None else self.last_start) + self.resync
        want = periodic if self.ready_at is None else min(self.ready_at, periodic)
        if self.retry_at is not None:
            want = max(want, self.retry_at)
        return max(earliest, want)

    def run_if_due(self) -> RunInfo | None:
        now = self.clock()
        if now < self.due():
            return None
        return self.run_now()

    def run_now(self, now: float | None = None, *, full: bool = False) -> RunInfo:
        """Run at once (the caller decided: start-up, SIGHUP)."""
        with self._lock:
            now = self.clock() if now is None else now
            periodic = self.last_full is None or now >= self.last_full + self.resync
            full = full or self.pending_full or periodic
            if full:
                self.last_full = now
            first = self.pending_since
            # Requests that arrive while fn runs belong to the next run.
            self.pending_since, self.pending_full, self.ready_at, self.urgent = None, False, None, False
            self.last_start = now
            self.runs += 1
        error: BaseException | None = None
        again: float | None = None
        try:
            again = self.fn(full)
        except Exception as e:  # the daemon never dies of a failed sync: it retries
            error = e
        with self._lock:
            end = self.clock()
            if error is None:
                self.failures = 0
                self.retry_at = None
                self.last_ok = end
                if again is not None:
                    self.wake_at(again)
            else:
                self.failures += 1
                self.retry_at = end + self.backoff(self.failures)
                # What was pending stays pending: the retry serves those requests too.
                if first is not None and (self.pending_since is None or first < self.pending_since):
                    self.pending_since = first
                self.pending_full = self.pending_full or full
                self.wake_at(self.retry_at)
            self.last = RunInfo(now, end, full, error is None, first, error)
            return self.last

    def backoff(self, failures: int) -> float:
        base = max(self.min_interval, 0.05)
        return min(self.max_backoff, base * (2 ** (failures - 1)))


class Periodic:
    """A job that is due every ``interval`` seconds after its last run (drift repair,
    directory rescans, watchdog pings)."""

    def __init__(self, interval: float, *, clock: Clock, start_now: bool = False) -> None:
        self.interval = interval
        self.clock = clock
        self.last = float("-inf") if start_now else clock()

    def due(self) -> float:
        return self.last + self.interval

    def is_due(self) -> bool:
        return self.clock() >= self.due()

    def done(self) -> None:
        self.last = self.clock()


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
