"""The API source's store: the objects in force from the Kubernetes API (pure, no threads).

It is what ``ManifestStore`` is for files: the daemon reads ``cluster()``, ``issues()`` and
``counts`` from it and is fed the changes of every update, {(kind, key): object in force
now, or None if gone}. Objects go through the same strict decoding as files
(``enforcer.load.decode.decode_kind``), so an object the decoder refuses is reported with its
namespace/name and field, and its last good version stays in force (a new object that
was never good is not loaded).

Which pods count (docs/daemon.md, "API source"): a pod without addresses, a finished
pod (phase Succeeded or Failed) and a hostNetwork pod get no firewall and are no peer.
They are dropped here, as if absent, so the compiler and the placement never see them.

The store also remembers a trimmed copy of each object in force (the fields we read),
which is the snapshot the daemon saves to disk and starts from when the API server is
unreachable at start (fail-static across restarts).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from enforcer.load import validation as V
from enforcer.cnp import decode as CNP
from enforcer.daemon.sources import KEPT, NOT_LOADED, Issue, ObjKey, same_object
from enforcer.daemon.status import write_atomic
from enforcer.load.decode import decode_kind
from enforcer.errors import Problem
from enforcer.load.manifests import KIND_API_VERSIONS
from enforcer.model import Cluster

KINDS = ("Namespace", "Pod", "NetworkPolicy", CNP.KIND)
# Kinds of a CRD the cluster may not have installed (or let us read): absent means none.
OPTIONAL_KINDS = (CNP.KIND,)
CLUSTER_SCOPED = ("Namespace", CNP.KIND)
SOURCE = "api"  # the "file" of problems found in API objects
SNAPSHOT_VERSION = 1
FINISHED_PHASES = ("Succeeded", "Failed")


@dataclass
class Decoded:
    kind: str
    key: str  # "ns/name" or "name"; "" when unusable
    obj: object | None  # None: an error, or a pod that does not count (``skip``)
    problems: list[Problem] = field(default_factory=list)
    skip: str = ""  # why a valid pod is not enforced nor a peer
    node: str | None = None  # a pod's spec.nodeName
    trimmed: dict | None = None  # what we keep for the snapshot


def _label(kind: str, raw: dict) -> tuple[str, str]:
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    name, ns = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        return f"{kind} <unnamed>", ""
    if kind in CLUSTER_SCOPED:
        return f"{kind} {name}", name
    ns = ns if isinstance(ns, str) and ns else "default"
    return f"{kind} {ns}/{name}", f"{ns}/{name}"


def decode_object(kind: str, raw: Any, *, legacy: bool = False) -> Decoded:
    """One object as the API returns it (a list item or a watch event's object)."""
    if not isinstance(raw, dict):
        return Decoded(kind, "", None, [Problem(SOURCE, kind, "", f"expected an object, got {type(raw).__name__}")])
    label, key = _label(kind, raw)
    # List items come without kind/apiVersion; the endpoint says what they are.
    doc = dict(raw)
    doc.setdefault("kind", kind)
    doc.setdefault("apiVersion", KIND_API_VERSIONS[kind])
    errs: list[tuple[str, str]] = []
    warns: list[tuple[str, str]] = []
    notes: list[str] = []
    try:
        if kind == CNP.KIND:
            obj = CNP.decode_object(doc, errs, warns, SOURCE)
        else:
            obj = decode_kind(doc, kind, errs, warns, SOURCE, legacy, notes, label)
    except RecursionError:
        obj, errs = None, [("", "nested too deeply")]
    problems = [Problem(SOURCE, label, p, m) for p, m in errs]
    problems += [Problem(SOURCE, label, p, m, warning=True) for p, m in warns]
    if not key and not errs:
        problems.append(Problem(SOURCE, label, "metadata.name", V.required()))
    out = Decoded(kind, key, None if errs or not key else obj, problems)
    if out.obj is None:
        return out
    out.trimmed = trim(kind, raw)
    if kind == "Pod":
        spec = raw.get("spec") if isinstance(raw.get("spec"), dict) else {}
        status = raw.get("status") if isinstance(raw.get("status"), dict) else {}
        node = spec.get("nodeName")
        out.node = node if isinstance(node, str) and node else None
        if spec.get("hostNetwork") is True:
            out.skip = "hostNetwork pod: it shares the node's network namespace"
        elif status.get("phase") in FINISHED_PHASES:
            out.skip = f"finished pod (phase {status.get('phase')})"
        elif not getattr(out.obj, "ips", ()):
            out.skip = "no address yet (status.podIPs is empty)"
    return out


def trim(kind: str, raw: dict) -> dict:
    """The fields we read, so that the snapshot decodes to the same object and stays small
    (an API pod is ~4 KiB, mostly fields we ignore). A malformed object is returned as it
    is, for the decoder to report."""
    try:
        return _trim(kind, raw)
    except (AttributeError, TypeError):
        return raw


def _trim(kind: str, raw: dict) -> dict:
    meta = raw.get("metadata") or {}
    m = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k) is not None}
    out: dict[str, Any] = {"metadata": m}
    if kind in ("NetworkPolicy", CNP.KIND):
        out["spec"] = raw.get("spec")
    elif kind == "Pod":
        spec = raw.get("spec") or {}
        containers = [{"name": c.get("name"), **({"ports": c["ports"]} if c.get("ports") else {})}
                      for c in spec.get("containers") or () if isinstance(c, dict)]
        out["spec"] = {k: v for k, v in (("nodeName", spec.get("nodeName")),
                                         ("hostNetwork", spec.get("hostNetwork")),
                                         ("containers", containers)) if v is not None}
        status = raw.get("status") or {}
        out["status"] = {k: status[k] for k in ("phase", "podIP", "podIPs") if status.get(k) is not None}
    return out


class ApiStore:
    """The objects in force from the API, keyed (kind, key), with their problems."""

    def __init__(self, *, node: str | None = None, legacy_namespace_isolation: bool = False) -> None:
        self.node = node
        self.legacy = legacy_namespace_isolation
        self.view: dict[ObjKey, object] = {}
        self.trimmed: dict[ObjKey, dict] = {}  # namespaces and policies in force, for the snapshot
        self.counts: dict[str, int] = {}
        self.local: set[str] = set()  # keys of the pods bound to our node
        self.skipped: dict[str, str] = {}  # pod key -> why it does not count
        self._issues: dict[ObjKey, list[Issue]] = {}
        # Each object's snapshot JSON, made when first saved and dropped when it changes: a
        # save after one policy change joins 5,000 strings (~ms) instead of encoding 5,000
        # pods again (~200 ms on the worker, in the way of the next change).
        self._text: dict[ObjKey, str] = {}

    # ------------------------------------------------------------------ updates

    def put(self, kind: str, raw: Any) -> dict[ObjKey, object | None]:
        """An object added or modified."""
        d = decode_object(kind, raw, legacy=self.legacy)
        if not d.key:
            self._issues[(kind, f"<unnamed {id(raw)}>")] = [Issue(p, NOT_LOADED) for p in d.problems]
            return {}
        key = (kind, d.key)
        self._text.pop(key, None)  # its snapshot text, if it changed at all (nodeName too)
        errors = [p for p in d.problems if not p.warning]
        if errors:
            kept = key in self.view
            self._issues[key] = [Issue(p, KEPT if kept else NOT_LOADED) for p in errors]
            return {}
        warnings = [Issue(p, "warning") for p in d.problems]
        if warnings:
            self._issues[key] = warnings
        else:
            self._issues.pop(key, None)
        if kind == "Pod":
            self.skipped.pop(d.key, None)
            if d.node is not None and d.node == self.node:
                self.local.add(d.key)
            else:
                self.local.discard(d.key)
            if d.skip:
                self.skipped[d.key] = d.skip
                return self._remove(key)
        assert d.obj is not None and d.trimmed is not None
        if kind != "Pod":  # pods are written from their model (pod_doc): 5,000 dicts saved
            self.trimmed[key] = d.trimmed
        before = self.view.get(key)
        if before is not None and same_object(before, d.obj):
            return {}
        if before is None:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        self.view[key] = d.obj
        return {key: d.obj}

    def delete(self, kind: str, raw: Any) -> dict[ObjKey, object | None]:
        _, k = _label(kind, raw if isinstance(raw, dict) else {})
        if not k:
            return {}
        return self.remove((kind, k))

    def remove(self, key: ObjKey) -> dict[ObjKey, object | None]:
        self._issues.pop(key, None)
        if key[0] == "Pod":
            self.local.discard(key[1])
            self.skipped.pop(key[1], None)
        return self._remove(key)

    def _remove(self, key: ObjKey) -> dict[ObjKey, object | None]:
        self.trimmed.pop(key, None)  # (pods have none)
        self._text.pop(key, None)
        if key not in self.view:
            return {}
        del self.view[key]
        self.counts[key[0]] -= 1
        return {key: None}

    def replace(self, kind: str, items: Iterable[Any]) -> dict[ObjKey, object | None]:
        """A complete list of ``kind``: what it holds is in force, what it lacks is gone
        (a relist after 410 Gone misses no deletion)."""
        changes: dict[ObjKey, object | None] = {}
        seen: set[str] = set()
        for raw in items:
            changes.update(self.put(kind, raw))
            _, k = _label(kind, raw if isinstance(raw, dict) else {})
            if k:
                seen.add(k)
        known = {k for (kd, k) in list(self.view) + list(self._issues) if kd == kind}
        known |= {k for k in self.skipped} if kind == "Pod" else set()
        for k in known - seen:
            changes.update(self.remove((kind, k)))
        return changes

    # ------------------------------------------------------------------ queries

    def cluster(self) -> Cluster:
        c = Cluster()
        tables = {"Namespace": c.namespaces, "Pod": c.pods, "NetworkPolicy": c.policies, CNP.KIND: c.cnps}
        for (kind, key), obj in self.view.items():
            tables[kind][key] = obj
        return c

    def issues(self) -> list[Issue]:
        return [i for key in sorted(self._issues) for i in self._issues[key]]

    def errors(self) -> list[Issue]:
        return [i for i in self.issues() if i.consequence != "warning"]

    def is_local(self, pod_key: str) -> bool:
        return pod_key in self.local

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict:
        return json.loads(self.snapshot_text(None))

    def snapshot_text(self, saved: str | None) -> str:
        """What is in force, as the snapshot file's JSON text."""
        parts = []
        keys = sorted(self.view)
        for kind in KINDS:
            texts = []
            for key in keys:
                if key[0] != kind:
                    continue
                text = self._text.get(key)
                if text is None:
                    doc = pod_doc(self.view[key], self.node if key[1] in self.local else None) \
                        if kind == "Pod" else self.trimmed.get(key)
                    if doc is None:
                        continue
                    text = self._text[key] = json.dumps(doc, separators=(",", ":"))
                texts.append(text)
            parts.append(f'{json.dumps(kind)}:[{",".join(texts)}]')
        return (f'{{"version":{SNAPSHOT_VERSION},"node":{json.dumps(self.node)},"saved":{json.dumps(saved)},'
                f'"items":{{{",".join(parts)}}}}}')

    def restore(self, data: dict) -> dict[ObjKey, object | None]:
        """Load a snapshot (decoded like API objects: a tampered file is refused object by
        object, never trusted)."""
        changes: dict[ObjKey, object | None] = {}
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, dict):
            return changes
        for kind in KINDS:
            for raw in items.get(kind) or ():
                changes.update(self.put(kind, raw))
        return changes


def pod_doc(pod, node: str | None) -> dict:
    """A pod in force, as an API object that decodes back to it (one container per port:
    port names need only be unique within a container)."""
    spec: dict[str, Any] = {"containers": [
        {"name": f"c{i}", "ports": [{"containerPort": p.port, "protocol": p.protocol,
                                     **({"name": p.name} if p.name else {})}]}
        for i, p in enumerate(pod.ports)]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)},
            "spec": spec,
            "status": {"phase": "Running", "podIP": pod.ips[0], "podIPs": [{"ip": ip} for ip in pod.ips]}}


def save_snapshot(path: str, data: dict | str) -> None:
    """Atomically, readable by root only (it lists every pod and policy of the cluster)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    # dumps: the C encoder (dump is pure Python)
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    write_atomic(path, text, prefix=".api-snapshot-", suffix=".json")


def load_snapshot(path: str) -> tuple[dict | None, str]:
    """(snapshot, "") or (None, why not)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None, "no snapshot"
    except (OSError, ValueError) as e:
        return None, f"unreadable snapshot {path}: {e}"
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        return None, f"{path}: not a snapshot of version {SNAPSHOT_VERSION}"
    return data, ""
