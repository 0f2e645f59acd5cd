"""Prometheus metrics and /healthz on ``--metrics-addr``.

No label ever carries a pod, policy or namespace name: label values come from small fixed
sets (apply kinds, sync kinds, directions), so the series count does not grow with the
cluster. The registry is our own (not prometheus_client's global one): tests can make
several daemons in one process.

    netpol_sync_duration_seconds{kind}              histogram  one sync (kind: full|incremental)
    netpol_policy_implementation_delay_seconds      histogram  first change event -> enforced
    netpol_syncs_total{result}                      counter    ok|error
    netpol_applies_total{kind}                      counter    delta|full|adopted|deny-only
    netpol_apply_errors_total                       counter    failed applies (retried)
    netpol_drift_repairs_total                      counter    tables restored after outside changes
    netpol_conntrack_entries_deleted_total          counter    --conntrack-strict deletions
    netpol_managed_namespaces                       gauge      pod namespaces we enforce in
    netpol_isolated_pods{direction}                 gauge      local pods isolated per direction
    netpol_rules                                    gauge      allow rules installed (all pods)
    netpol_sets / netpol_set_elements               gauge      sets and their elements installed
    netpol_input_errors                             gauge      input problems in force
    netpol_errors_in_force                          gauge      namespaces whose last apply failed
    netpol_pods_not_enforced                        gauge      local pods whose rules are not in force
    netpol_cluster_objects{kind}                    gauge      objects loaded (Pod, NetworkPolicy, ...)
    netpol_last_sync_timestamp_seconds              gauge      wall time of the last good sync
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from enforcer.errors import NetpolError
from enforcer.ir import DIRECTIONS

SYNC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # *_created series only double the output
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.sync_duration = Histogram("netpol_sync_duration_seconds", "Duration of one sync.",
                                       ["kind"], buckets=SYNC_BUCKETS, registry=r)
        self.impl_delay = Histogram("netpol_policy_implementation_delay_seconds",
                                    "From the first change event (file or namespace) to its enforcement.",
                                    buckets=DELAY_BUCKETS, registry=r)
        self.syncs = Counter("netpol_syncs", "Syncs by result.", ["result"], registry=r)
        self.applies = Counter("netpol_applies", "Applies to pod namespaces by kind.", ["kind"], registry=r)
        self.apply_errors = Counter("netpol_apply_errors", "Failed applies (each is retried).", registry=r)
        self.drift_repairs = Counter("netpol_drift_repairs", "Tables restored after an outside change.", registry=r)
        self.conntrack_deleted = Counter("netpol_conntrack_entries_deleted",
                                         "Conntrack entries deleted by --conntrack-strict.", registry=r)
        self.managed = Gauge("netpol_managed_namespaces", "Pod namespaces enforced in.", registry=r)
        self.isolated = Gauge("netpol_isolated_pods", "Local pods isolated, per direction.", ["direction"], registry=r)
        self.rules = Gauge("netpol_rules", "Allow rules installed, all local pods.", registry=r)
        self.sets = Gauge("netpol_sets", "Sets installed, all local pods.", registry=r)
        self.set_elements = Gauge("netpol_set_elements", "Set elements installed, all local pods.", registry=r)
        self.input_errors = Gauge("netpol_input_errors", "Input problems in force.", registry=r)
        self.errors_in_force = Gauge("netpol_errors_in_force", "Namespaces whose last apply failed.", registry=r)
        self.not_enforced = Gauge("netpol_pods_not_enforced",
                                  "Local pods whose rules are not known to be in force (apply or "
                                  "repair failed, no deny-only stand-in).", registry=r)
        self.objects = Gauge("netpol_cluster_objects", "Objects loaded, by kind.", ["kind"], registry=r)
        self.last_sync = Gauge("netpol_last_sync_timestamp_seconds", "Wall time of the last good sync.", registry=r)
        for kind in ("full", "incremental"):
            self.sync_duration.labels(kind)
        for result in ("ok", "error"):
            self.syncs.labels(result)
        for kind in ("delta", "full", "adopted", "deny-only"):
            self.applies.labels(kind)
        for d in DIRECTIONS:
            self.isolated.labels(d)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def parse_addr(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NetpolError(f"--metrics-addr {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9617")
    host = host.strip("[]")
    return host, int(port)


REQUEST_TIMEOUT = 5.0  # seconds a client may take to send its request or read the answer
MAX_CLIENTS = 16  # connections served at once; more are closed at once (a scraper needs one)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CLIENTS of them (half-open connections must
    not pile up threads), and one log line per failed request instead of a traceback."""

    daemon_threads = True
    log: Callable[[str, BaseException], None] = staticmethod(lambda client, e: None)

    def __init__(self, *args, **kw) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(*args, **kw)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: the client retries, we stay bounded
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        import sys

        self.log(str(client_address[0]) if client_address else "", sys.exc_info()[1])


class MetricsServer:
    """/metrics and /healthz, served from a thread. ``health()`` returns (ok, text)."""

    def __init__(self, addr: str, metrics: Metrics, health: Callable[..., tuple[bool, str]],
                 log=None) -> None:
        host, port = parse_addr(addr)
        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT  # applied to the socket: a silent client is dropped

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics_ref.render(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/livez", "/readyz"):
                    ok, text = health_ref(live_only=path == "/livez")
                    self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes are not log lines
                pass

        family_server = _BoundedServer
        if ":" in host:
            import socket

            class V6Server(_BoundedServer):
                address_family = socket.AF_INET6

            family_server = V6Server
        try:
            self.server = family_server((host, port), Handler)
        except OSError as e:
            raise NetpolError(f"--metrics-addr {addr}: cannot listen: {e.strerror or e}") from e
        if log is not None:
            def said(client: str, e: BaseException | None) -> None:
                # A client that went away or stalled is not our error: one debug line.
                quiet = isinstance(e, (ConnectionError, TimeoutError))
                (log.debug if quiet else log.warning)("metrics request failed", client=client,
                                                      error=f"{type(e).__name__}: {e}")
            self.server.log = said
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
