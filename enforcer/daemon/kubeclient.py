"""The Kubernetes API, as the API source needs it: list and watch four kinds, raw.

``Api`` is the seam (a Protocol): the source's logic is unit-tested against an in-memory
fake (tests/unit/test_api_source.py) and runs against ``KubeApi``, a thin layer over the
official client library (``kubernetes``). We use the library for everything the protocol
involves: configuration (kubeconfig with certificates, tokens or exec plugins; in-cluster
service account), TLS, and the watch stream (``kubernetes.watch.Watch``: line framing,
ERROR events turned into ``ApiException``, bookmarks requested with
``allowWatchBookmarks``). Objects stay raw dicts (no model classes): they go through our
own strict decoder, like objects read from files.

Each ``watch`` call is one HTTP watch request (``timeoutSeconds`` bounds it on the server,
a read timeout on the client, so a frozen server is noticed); the caller resumes from the
last resourceVersion it saw, and relists when the server answers 410 Gone.
"""
from __future__ import annotations

import json
import os
import random
from typing import Any, Callable, Iterator, Protocol

from enforcer.errors import NetpolError

GONE = 410
PATHS = {"Namespace": "/api/v1/namespaces", "Pod": "/api/v1/pods",
         "NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies",
         # A CRD (deploy/crds/): 404 while it is not installed (the API source copes).
         "ClusterNetworkPolicy": "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"}


class ApiError(Exception):
    """A failed API call. ``status``: the HTTP status (410 Gone, 403 Forbidden...), 0 when
    the server could not be reached or did not answer in time."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api(Protocol):
    server: str

    def list(self, kind: str, slim: Callable[[dict], dict] | None = None) -> tuple[list[dict], str]:
        """Every object of ``kind`` (all namespaces; each passed through ``slim`` as its
        page arrives) and the list's resourceVersion."""

    def watch(self, kind: str, resource_version: str) -> Iterator[tuple[str, dict]]:
        """Events (type, object) after ``resource_version`` until the server ends the
        request. Types: ADDED, MODIFIED, DELETED, BOOKMARK. Raises ApiError (410 when
        the version is too old)."""

    def ping(self) -> None:
        """Raise ApiError unless the server answers now (a short timeout)."""

    def close(self) -> None: ...


def config_error(where: str, e: BaseException) -> NetpolError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return NetpolError(f"{where}: cannot use it to reach the API server: {text}")


class KubeApi:
    """The real API, through the official client library."""

    def __init__(self, kubeconfig: str | None = None, *, context: str | None = None,
                 list_timeout: float = 30.0, watch_timeout: float = 60.0, ping_timeout: float = 3.0) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
                where = f"--kubeconfig {kubeconfig}"
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
                where = "in-cluster configuration"
            else:
                raise NetpolError("no API server: give --kubeconfig FILE, or run in a pod "
                                  "(KUBERNETES_SERVICE_HOST is not set)")
        except NetpolError:
            raise
        except Exception as e:  # ConfigException, OSError, YAML errors: one line, no traceback
            raise config_error(f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster configuration", e) from None
        self.where = where
        self.server = cfg.host
        # ApiClient (configuration, auth, TLS, connection pool) without the generated API
        # classes: CoreV1Api alone imports ~900 pydantic models (4 s and 25 MB here), to
        # call three list endpoints whose answers we keep raw anyway.
        self.client = client.ApiClient(cfg)
        self.list_timeout = list_timeout
        self.watch_timeout = watch_timeout
        self.ping_timeout = ping_timeout
        self._watches: set[Any] = set()

    def _get(self, path: str, params: list[tuple[str, Any]], timeout) -> Any:
        """One GET through the library's client; the raw urllib3 response (status checked)."""
        from kubernetes.client.exceptions import ApiException

        req = self.client.param_serialize("GET", path, query_params=params,
                                          header_params={"Accept": "application/json"},
                                          auth_settings=["BearerToken"])
        resp = self.client.call_api(*req, _request_timeout=timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp.response

    def list(self, kind: str, slim: Callable[[dict], dict] | None = None) -> tuple[list[dict], str]:
        path = PATHS[kind]
        items: list[dict] = []
        cont: str | None = None
        while True:
            # Pages of 500: the API server's memory and ours stay bounded on big clusters;
            # every page is served from the first page's snapshot (consistent list).
            params: list[tuple[str, Any]] = [("limit", 500)] + ([("continue", cont)] if cont else [])
            body = self._call(lambda: self._get(path, params, (5, self.list_timeout)))
            page = body.get("items") or ()
            items.extend(page if slim is None else (slim(o) for o in page))
            meta = body.get("metadata") or {}
            del body, page  # one page of full objects alive at a time
            cont = meta.get("continue") or None
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def _call(self, fn) -> dict:
        resp = None
        try:
            resp = fn()
            return json.loads(resp.data)
        except Exception as e:
            raise translate(e) from None
        finally:
            if resp is not None:
                resp.release_conn()

    def watch(self, kind: str, resource_version: str) -> Iterator[tuple[str, dict]]:
        from kubernetes import watch

        path = PATHS[kind]

        def call(**kw):  # no return type: the Watch hands us the raw objects
            params = [("watch", True), ("allowWatchBookmarks", True),
                      ("resourceVersion", kw["resource_version"]), ("timeoutSeconds", kw["timeout_seconds"])]
            return self._get(path, params, kw.get("_request_timeout"))

        w = watch.Watch()
        self._watches.add(w)
        # A little jitter: nodes restarted together do not all come back at once.
        seconds = int(self.watch_timeout * random.uniform(0.9, 1.1))
        try:
            for ev in w.stream(call, resource_version=resource_version, allow_watch_bookmarks=True,
                               timeout_seconds=seconds, _request_timeout=(5, seconds + 15)):
                yield ev["type"], ev["raw_object"]
        except Exception as e:
            raise translate(e) from None
        finally:
            self._watches.discard(w)
            w.stop()

    def ping(self) -> None:
        try:
            # Raw: the answer is not read into a model (nothing to validate, nothing to keep).
            self._get("/version", [], self.ping_timeout).release_conn()
        except Exception as e:
            raise translate(e) from None

    def close(self) -> None:
        for w in list(self._watches):
            w.stop()  # shuts the socket down: a blocked read returns at once
        try:
            self.client.close()
        except Exception:
            pass


def translate(e: BaseException) -> ApiError:
    """Any failure of the library -> ApiError with a one-line message."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiError):
        return e
    if isinstance(e, ApiException):
        status = int(e.status or 0)
        message = str(e.reason or "")
        body = getattr(e, "body", None)
        if body:
            try:
                message = json.loads(body).get("message") or message
            except (ValueError, AttributeError):
                pass
        return ApiError(status, f"{status} {message}".strip())
    return ApiError(0, _network_message(e))


def _network_message(e: BaseException) -> str:
    """urllib3's errors, said short: "connection refused", "no answer within 75 s"..."""
    from urllib3 import exceptions as u

    if isinstance(e, u.MaxRetryError) and e.reason is not None:
        e = e.reason
    if isinstance(e, u.ReadTimeoutError):
        return "no answer in time (read timeout)"
    if isinstance(e, u.NewConnectionError):  # (a subclass of ConnectTimeoutError)
        cause = str(e).rsplit("] ", 1)[-1] if "] " in str(e) else str(e)
        return f"cannot connect: {cause.strip().lower()}"
    if isinstance(e, u.ConnectTimeoutError):
        return "cannot connect: timed out"
    if isinstance(e, u.SSLError):
        return f"TLS error: {e}"[:300]
    if isinstance(e, (u.ProtocolError, ConnectionError)):
        return "the connection was closed"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300]
