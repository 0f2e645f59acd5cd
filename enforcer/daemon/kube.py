"""The API source: Namespaces, Pods, NetworkPolicies and ClusterNetworkPolicies from a
Kubernetes API server.

One thread per kind runs the usual reflector loop (list, then watch from the list's
resourceVersion; resume each new watch from the last version seen, bookmarks included;
relist on 410 Gone; back off with jitter on any other failure). The threads only queue
what they receive and wake the daemon; the daemon's worker thread applies the queue to
the ``ApiStore`` in ``poll`` and compiles the changes exactly as it does for files.

Never fail open (DESIGN "Daemon behaviour"):

* nothing is enforced before a complete list of every kind (``wait_complete``
  blocks the daemon's start; existing rules stay as they are);
* a lost or erroring API server changes nothing: the store keeps what it has, the watch
  resumes from its resourceVersion (or relists) when the server is back;
* what is in force is saved (``snapshot``) so that a daemon restarted while the API
  server is down enforces its last good state instead of waiting.

ClusterNetworkPolicy is a CRD the cluster may lack: a 404 (not installed) or a 403 (no
RBAC for it) on its list counts as an empty list, said once, and the list is tried again
every ``absent_retry`` seconds, so a CRD installed later is picked up.

A ping thread asks the server for /version every few seconds: a server that is frozen
(SIGSTOP) keeps its watch connections open and silent, and this is how we notice.
"""
from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable

from enforcer.daemon.apistore import KINDS, OPTIONAL_KINDS, ApiStore, load_snapshot, save_snapshot, trim
from enforcer.daemon.kubeclient import GONE, Api, ApiError
from enforcer.daemon.sources import Issue, ObjKey

AUTH = (401, 403)
NOT_FOUND = 404
PLURALS = {"ClusterNetworkPolicy": "clusternetworkpolicies"}


class Backoff:
    """Exponential with full jitter, capped (client-go's reflector backs off the same way)."""

    def __init__(self, initial: float = 0.2, cap: float = 5.0, rand: Callable[[], float] = random.random) -> None:
        self.initial, self.cap, self.rand = initial, cap, rand
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        top = min(self.cap, self.initial * 2 ** (self.failures - 1))
        return top / 2 + self.rand() * top / 2

    def reset(self) -> None:
        self.failures = 0


class KindState:
    """What one kind's reflector knows, for ``poll`` and for /healthz, status, metrics."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.resource_version: str | None = None  # None: list first
        self.listed = False  # a complete list has been received once
        self.watching = False
        self.error: str | None = None  # in force, as reported
        self.raw_error: str | None = None  # the last failure as received (said once)
        self.error_status = 0
        self.absent: str | None = None  # an optional kind the server does not serve us: why
        self.relists = 0
        self.watch_restarts = 0
        self.events = 0
        self.backoff = Backoff()


@dataclass(eq=False, repr=False)
class ApiSource:
    """The daemon's source of desired state when it reads the API (see service.Source).

    What it is given is declared below (the API and the store, then keyword-only the log,
    the snapshot's path, a clock for tests, and the waits, in seconds); what it keeps
    while it runs starts in ``__post_init__``."""

    api: Api
    store: ApiStore
    _: KW_ONLY
    log: Any
    snapshot_path: str | None = None
    clock: Callable[[], float] = time.monotonic
    ping_interval: float = 5.0  # how often a silent server is asked for /version
    snapshot_wait: float = 5.0  # how long a start waits for the API before using the snapshot
    save_interval: float = 2.0  # at most one snapshot write per interval
    save_delay: float = 0.5  # after the last change: a burst is saved once
    absent_retry: float = 30.0  # how often an absent optional kind is listed again

    def __post_init__(self) -> None:
        self.on_ready: Callable[[float, float | None], None] = lambda at, nb: None
        self.kinds = {k: KindState(k) for k in KINDS}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: list[tuple] = []  # ("list", kind, items) | ("event", kind, type, obj)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reachable: bool | None = None  # None: not known yet
        self.unreachable_since: float | None = None  # wall time
        self.last_contact: float | None = None  # wall time of the last answer or event
        self.api_error: str | None = None
        self.from_snapshot: str | None = None  # the snapshot's time, while it is what we enforce
        self._snapshot: dict | None = None
        self._snapshot_dirty = False
        self._dirty_at = float("-inf")
        self._last_save = float("-inf")
        self.metrics: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.snapshot_path:
            self._snapshot, why = load_snapshot(self.snapshot_path)
            if self._snapshot is None and why != "no snapshot":
                self.log.warning("api snapshot ignored", reason=why)
        for kind in KINDS:
            t = threading.Thread(target=self._reflect, args=(kind,), name=f"api-{kind}", daemon=True)
            self._threads.append(t)
        self._threads.append(threading.Thread(target=self._pinger, name="api-ping", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.api.close()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []
        if self._snapshot_dirty:
            self._save()

    def complete(self) -> bool:
        return all(k.listed for k in self.kinds.values())

    def wait_complete(self, stopping: Callable[[], bool]) -> None:
        """Block until the first complete list of every kind has arrived (a start never
        writes from a partial view). With a snapshot of an earlier run, wait at most
        ``snapshot_wait`` seconds, then enforce the snapshot until the API answers."""
        deadline = self.clock() + self.snapshot_wait if self._snapshot is not None else None
        said = False
        with self._cond:
            while not self.complete() and not stopping() and not self._stop.is_set():
                if deadline is not None and self.clock() >= deadline:
                    return
                if not said and self.api_error:
                    said = True
                    self.log.warning("waiting for the API server", server=self.api.server,
                                     error=self.api_error,
                                     consequence="nothing is changed until every kind is listed")
                self._cond.wait(timeout=0.5)

    # ------------------------------------------------------------------ reflectors (threads)

    def _reflect(self, kind: str) -> None:
        st = self.kinds[kind]
        while not self._stop.is_set():
            try:
                self.step(kind)
                st.backoff.reset()
            except ApiError as e:
                if self._stop.is_set():
                    return
                delay = self._failed(st, e)
                self._stop.wait(delay)
            except Exception as e:  # a bug or a surprise from the library: never a dead thread
                if self._stop.is_set():
                    return
                self.log.error("api reflector error", kind=kind, error=f"{type(e).__name__}: {e}",
                               consequence="listing again after a pause")
                st.resource_version = None
                self._stop.wait(st.backoff.next())

    def step(self, kind: str) -> None:
        """One list, or one watch request until the server ends it (raises ApiError)."""
        st = self.kinds[kind]
        if st.resource_version is None:
            items, rv = self.api.list(kind, slim=self._slim(kind))
            self._contact()
            with self._cond:
                self._queue.append(("list", kind, items))
                st.resource_version = rv or None
                st.listed = True
                st.error = st.raw_error = None
                found, st.absent = st.absent, None
                self._cond.notify_all()
            if found:
                self.log.info("api kind found", kind=kind, items=len(items), was=found)
            self.on_ready(self.clock(), None)
            return
        st.watching = True
        began, received = time.monotonic(), 0
        try:
            slim = self._slim(kind)
            for etype, obj in self.api.watch(kind, st.resource_version):
                now = self.clock()
                self._contact()
                rv = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
                received += 1
                if slim is not None and etype != "BOOKMARK":
                    obj = slim(obj)
                with self._cond:
                    if etype != "BOOKMARK":
                        self._queue.append(("event", kind, etype, obj))
                        st.events += 1
                    if rv:
                        st.resource_version = str(rv)
                    st.error = st.raw_error = None
                if etype != "BOOKMARK":
                    self.on_ready(now, None)
                if self._stop.is_set():
                    return
        finally:
            st.watching = False
        st.watch_restarts += 1  # the server ended the request (timeoutSeconds): resume
        if not received and time.monotonic() - began < 1.0:
            # Ended at once with nothing: a proxy or a server in trouble; do not spin.
            raise ApiError(0, "the watch request ended at once")

    @staticmethod
    def _slim(kind: str) -> Callable[[dict], dict] | None:
        """Pods are kept only in the fields we read, from the moment they arrive: an API
        pod is ~4 KiB of mostly managedFields and container details, and 5,000 of them
        held whole until the worker decodes them cost tens of MB (RSS that Python does
        not give back). Policies and namespaces are small and are decoded whole."""
        return slim_pod if kind == "Pod" else None

    def _failed(self, st: KindState, e: ApiError) -> float:
        if st.kind in OPTIONAL_KINDS and (e.status == NOT_FOUND or e.status in AUTH):
            return self._absent(st, e)
        if e.status == GONE:
            # Our resourceVersion is older than the server keeps (etcd compacted it):
            # list again; the list replaces the kind as a whole, so nothing is missed.
            st.resource_version = None
            st.relists += 1
            self.log.info("api relist", kind=st.kind, reason=str(e))
            return 0.0
        st.error_status = e.status
        first = st.raw_error != str(e)
        st.raw_error = st.error = str(e)
        if e.status in AUTH:
            msg = (f"the API server refuses to let us {'list' if not st.listed else 'watch'} "
                   f"{st.kind}s at the cluster scope ({e}); the daemon needs get, list and watch "
                   "on pods, namespaces, networkpolicies and clusternetworkpolicies "
                   "(see deploy/ or docs/daemon.md)")
            st.error = msg
            if first:
                self.log.error("api access denied", kind=st.kind, error=msg)
        elif first:
            self.log.warning("api request failed", kind=st.kind, error=str(e),
                             consequence="enforcement stays as it is; retrying")
        with self._cond:
            self.api_error = st.error
            self._cond.notify_all()
        if self.metrics is not None:
            self.metrics.errors.inc()
        return st.backoff.next()

    def _absent(self, st: KindState, e: ApiError) -> float:
        """An optional kind (a CRD) not installed (404) or not readable (403): none of it,
        not a failure of the other kinds nor of the first sync. Listed again later."""
        why = (f"the CRD is not installed ({e})" if e.status == NOT_FOUND else
               f"access denied ({e}); the daemon needs get, list and watch on "
               f"{PLURALS[st.kind]} (see deploy/rbac.yaml)")
        st.resource_version = None  # list again (discovery) after the pause
        # Not installed: there are none. Refused after a good list: keep what is in force
        # (fail-static) rather than drop the admin tier because of an RBAC edit.
        empty = e.status == NOT_FOUND or not st.listed
        first = st.absent != why
        with self._cond:
            if empty:
                self._queue.append(("list", st.kind, []))
                st.listed = True
            st.absent = why
            st.error = st.raw_error = None
            self._cond.notify_all()
        if first:
            self.log.warning("api kind absent", kind=st.kind, reason=why,
                             consequence=(f"no {st.kind}s enforced" if empty else "the last good state stays")
                             + f"; trying again every {self.absent_retry:g} s")
        if empty:
            self.on_ready(self.clock(), None)
        return self.absent_retry

    def _contact(self) -> None:
        self.last_contact = time.time()
        if self.reachable is not True:
            self._reachable(True, "")

    def _reachable(self, ok: bool, error: str) -> None:
        with self._cond:
            was = self.reachable
            self.reachable = ok
            if ok:
                self.unreachable_since = None
                self.api_error = None
            else:
                self.api_error = error
                if was is not False:
                    self.unreachable_since = time.time()
            self._cond.notify_all()
        if ok and was is False:
            self.log.info("api server reachable again", server=self.api.server)
        elif not ok and was is not False:
            self.log.warning("api server unreachable", server=self.api.server, error=error,
                             consequence="fail-static: enforcement stays as it is")
        self.on_ready(self.clock(), None)  # state file and gauges

    def _pinger(self) -> None:
        while not self._stop.wait(self.ping_interval):
            try:
                self.api.ping()
                self._contact()
            except ApiError as e:
                if e.status in AUTH or e.status >= 400 and e.status != 0:
                    self._contact()  # it answers; the reflectors report access problems
                else:
                    self._reachable(False, str(e))

    # ------------------------------------------------------------------ the worker's side

    def poll(self, *, full: bool = False, force: bool = False) -> tuple[dict[ObjKey, object | None], int]:
        """Apply what the reflectors received to the store: (changes, events applied)."""
        with self._cond:
            queue, self._queue = self._queue, []
            # Whether this queue holds every kind's list, judged with the queue: a list
            # that lands after the swap (a reflector thread) makes complete() true while
            # its items wait for the next poll; dropping the snapshot on that would compile
            # a view without that kind (no policies: every pod open until the next sync).
            complete = self.complete()
        changes: dict[ObjKey, object | None] = {}
        if self._snapshot is not None and not complete:
            changes.update(self.store.restore(self._snapshot))
            self.from_snapshot = str(self._snapshot.get("saved") or "")
            self.log.warning("enforcing the last good state", saved=self.from_snapshot,
                             reason="the API server has not answered yet",
                             pods=self.store.counts.get("Pod", 0),
                             policies=self.store.counts.get("NetworkPolicy", 0))
        self._snapshot = None
        for op in queue:
            if op[0] == "list":
                changes.update(self.store.replace(op[1], op[2]))
            else:
                _, kind, etype, obj = op
                if etype == "DELETED":
                    changes.update(self.store.delete(kind, obj))
                elif etype in ("ADDED", "MODIFIED"):
                    changes.update(self.store.put(kind, obj))
        if self.from_snapshot is not None and complete:
            self.from_snapshot = None
            self.log.info("api state complete", reason="every kind listed; the snapshot is replaced")
        now = self.clock()
        if (changes or queue) and complete:
            if not self._snapshot_dirty:
                self._dirty_at = now
            self._snapshot_dirty = True
        # Saved by a later sync that has nothing to apply (next_ready() asks the daemon for
        # one), never on the way to enforcing a change: 5,000 pods are ~1 MB of JSON.
        if self._snapshot_dirty and not queue and now >= self._save_due():
            self._save()
        if self.metrics is not None:
            self.metrics.update(self)
        return changes, len(queue)

    def _save(self) -> None:
        self._snapshot_dirty = False
        self._last_save = self.clock()
        if not self.snapshot_path:
            return
        text = self.store.snapshot_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        try:
            save_snapshot(self.snapshot_path, text)
        except OSError as e:
            self.log.warning("api snapshot not written", path=self.snapshot_path, error=str(e))

    def _save_due(self) -> float:
        return max(self._last_save + self.save_interval, self._dirty_at + self.save_delay)

    def next_ready(self) -> float | None:
        return self._save_due() if self._snapshot_dirty else None

    def is_local(self, pod_key: str) -> bool:
        return self.store.is_local(pod_key)

    def issues(self) -> list[Issue]:
        return self.store.issues()

    # ------------------------------------------------------------------ reporting

    def health(self) -> tuple[bool, str]:
        """(False, why) while the desired state may be stale."""
        if self.reachable is False:
            since = time.strftime("%H:%M:%SZ", time.gmtime(self.unreachable_since or time.time()))
            return False, (f"API server {self.api.server} unreachable since {since} ({self.api_error}); "
                           "fail-static: the last good state stays enforced")
        # Transient failures of a listed kind are the pinger's to report (reachability);
        # what stays is refused access and a kind never listed.
        bad = [k for k in self.kinds.values() if k.error and (k.error_status in AUTH or not k.listed)]
        if bad:
            return False, "API: " + "; ".join(f"{k.kind}: {k.error}" for k in bad)
        if self.from_snapshot is not None:
            return False, f"enforcing the snapshot of {self.from_snapshot} until the API server answers"
        return True, "API in sync"

    def describe(self) -> dict[str, Any]:
        return {
            "type": "api",
            "server": self.api.server,
            "node": self.store.node,
            "reachable": self.reachable,
            "unreachable_since": None if self.unreachable_since is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.unreachable_since)),
            "last_contact": None if self.last_contact is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_contact)),
            "from_snapshot": self.from_snapshot,
            "kinds": {k.kind: {"listed": k.listed, "watching": k.watching, "absent": k.absent,
                               "resource_version": k.resource_version, "error": k.error,
                               "relists": k.relists, "watch_restarts": k.watch_restarts,
                               "events": k.events} for k in self.kinds.values()},
            "skipped_pods": len(self.store.skipped),
        }

    def register_metrics(self, registry) -> None:
        self.metrics = ApiMetrics(registry)


class ApiMetrics:
    """netpol_api_* series (labels: the four kinds only)."""

    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge

        self.up = Gauge("netpol_api_up", "1 when the API server answers, 0 when not.", registry=registry)
        self.synced = Gauge("netpol_api_synced", "1 once a kind has been listed completely.", ["kind"],
                            registry=registry)
        self.events = Gauge("netpol_api_watch_events", "Watch events received (since start).", ["kind"],
                            registry=registry)
        self.relists = Gauge("netpol_api_relists", "Relists after 410 Gone (since start).", ["kind"],
                             registry=registry)
        self.restarts = Gauge("netpol_api_watch_restarts", "Watch requests ended by the server and "
                              "resumed (since start).", ["kind"], registry=registry)
        self.errors = Counter("netpol_api_errors", "Failed list or watch requests.", registry=registry)
        self.snapshot = Gauge("netpol_api_from_snapshot", "1 while enforcing the saved state of an "
                              "earlier run (API not answered yet).", registry=registry)
        self.last_contact = Gauge("netpol_api_last_contact_timestamp_seconds",
                                  "Wall time of the last answer or event from the API server.", registry=registry)

    def update(self, src: ApiSource) -> None:
        self.up.set(0 if src.reachable is False else 1)
        self.snapshot.set(1 if src.from_snapshot is not None else 0)
        if src.last_contact:
            self.last_contact.set(src.last_contact)
        for k in src.kinds.values():
            self.synced.labels(k.kind).set(1 if k.listed else 0)
            self.events.labels(k.kind).set(k.events)
            self.relists.labels(k.kind).set(k.relists)
            self.restarts.labels(k.kind).set(k.watch_restarts)


def snapshot_path(state_file: str | None) -> str | None:
    return None if not state_file else os.path.splitext(state_file)[0] + ".api-snapshot.json"


def api_source(kubeconfig: str | None, node: str, *, state_file: str | None, log,
               legacy_namespace_isolation: bool = False) -> ApiSource:
    """The API source of ``netpol run --kubeconfig FILE --node NAME`` (or in-cluster)."""
    from enforcer.daemon.kubeclient import KubeApi

    api = KubeApi(kubeconfig)
    store = ApiStore(node=node, legacy_namespace_isolation=legacy_namespace_isolation)
    return ApiSource(api, store, log=log, snapshot_path=snapshot_path(state_file))


def slim_pod(raw: dict) -> dict:
    return trim("Pod", raw) if isinstance(raw, dict) else raw
