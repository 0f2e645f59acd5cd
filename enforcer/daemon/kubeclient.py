"""The Kubernetes API, as the API source needs it: list and watch three kinds, raw.

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
        self.client = client.ApiClient(cfg)
        core = client.CoreV1Api(self.client)
        net = client.NetworkingV1Api(self.client)
        self._fns = {"Namespace": core.list_namespace, "Pod": core.list_pod_for_all_namespaces,
                     "NetworkPolicy": net.list_network_policy_for_all_namespaces}
        self._version = client.VersionApi(self.client)
        self.list_timeout = list_timeout
        self.watch_timeout = watch_timeout
        self.ping_timeout = ping_timeout
        self._watches: set[Any] = set()

    def list(self, kind: str, slim: Callable[[dict], dict] | None = None) -> tuple[list[dict], str]:
        fn = self._fns[kind]
        items: list[dict] = []
        cont: str | None = None
        while True:
            # Pages of 500: the API server's memory and ours stay bounded on big clusters;
            # every page is served from the first page's snapshot (consistent list).
            body = self._call(lambda: fn(limit=500, _continue=cont, _preload_content=False,
                                         _request_timeout=(5, self.list_timeout)))
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

        fn = self._fns[kind]

        def call(**kw):  # no return type: the Watch hands us the raw objects
            return fn(**kw)

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
            resp = self._version.get_code(_request_timeout=self.ping_timeout, _preload_content=False)
            resp.release_conn()
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
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return ApiError(0, f"{type(e).__name__}: {text}"[:300])
