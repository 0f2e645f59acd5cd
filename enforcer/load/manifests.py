"""Read Kubernetes manifests (files, directories, stdin) into an enforcer.model.Cluster.

The loading pipeline, each stage pure:

1. reading (enforcer.load.documents): bytes -> text, with the file named in every failure;
2. parsing (enforcer.load.documents): text -> plain Python documents, refusing alias bombs and
   deep nesting, and noting duplicate keys with their path and line;
3. dispatch (here): each document is an object, a List of objects, or something else; the
   kind and apiVersion are checked, kinds we do not use are skipped with a note;
4. decoding (enforcer.load.decode): one object -> a model object, strictly, as
   ``kubectl apply --validate=strict`` and the API server would;
5. the same Kind ns/name twice in the input is an error (here), and the valid objects make
   the Cluster (``build_cluster``).

Every problem of the whole input is collected before ``load`` raises, so a user fixes
everything in one pass. The daemon decodes file by file with ``decode_text`` and builds
the cluster itself.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence, TextIO

from enforcer.load import services as S
from enforcer.load import validation as V
from enforcer.load import workloads as W
from enforcer.cnp import decode as CNP
# Names other modules and tests know as enforcer.load.manifests.X are re-exported from here.
from enforcer.load.decode import (  # noqa: F401
    LEGACY_ANNOTATION,
    METADATA_NAME_LABEL,
    Errs,
    decode_kind,
    describe,
    list_items,
    render_path,
)
from enforcer.load.documents import (  # noqa: F401
    ALIAS_BUDGET,
    ALIAS_FACTOR,
    MANIFEST_SUFFIXES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    STDIN_NAME,
    DupKey,
    check_text,
    parse_documents,
    read_path,
)
from enforcer.errors import InputError, Problem
from enforcer.load.hints import unknown_kind
from enforcer.model import Cluster
from enforcer.load.podfast import fast_pod

KIND_API_VERSIONS = {
    "Namespace": "v1",
    "Pod": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "ExternalHost": "netpol-enforcer/v1alpha1",
    "Service": "v1",
    CNP.KIND: CNP.API_VERSION,
    **W.API_VERSIONS,
}
_KINDS_LOWER = {k.lower(): k for k in KIND_API_VERSIONS}


# ==== public API ==============================================================================


@dataclass
class LoadResult:
    cluster: Cluster
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Decoded:
    """One object of one file. ``obj`` is None when any problem is an error (warnings alone
    keep it). ``key`` is "ns/name" (Pod, NetworkPolicy) or "name" (Namespace, ExternalHost),
    "" when the object has no usable name."""

    file: str
    kind: str
    key: str
    obj: object | None
    problems: list[Problem] = field(default_factory=list)
    owned_by: tuple[tuple[str, str], ...] = ()  # metadata.ownerReferences: (kind, name)


def load(paths: Sequence[str], *, stdin: TextIO | None = None,
         legacy_namespace_isolation: bool = False) -> LoadResult:
    """Load ``-f`` arguments: files, directories (their *.yaml, *.yml, *.json, sorted, not
    recursive, dot-files skipped) and '-' for stdin. Raises InputError with every problem
    (errors and warnings, in input order) if any error was found."""
    with _gc_paused():
        return _load(paths, stdin, legacy_namespace_isolation)


def _load(paths: Sequence[str], stdin: TextIO | None, legacy: bool) -> LoadResult:
    problems: list[Problem] = []
    notes: list[str] = []
    decoded: list[Decoded] = []
    seen: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, key) -> where it was first defined
    for path in paths:
        for name, text, problem in read_path(path, stdin):
            if problem is not None:
                problems.append(problem)
                continue
            assert text is not None
            objs, file_problems, file_notes = _decode_text(text, name, legacy, seen)
            problems.extend(file_problems)
            for d in objs:
                problems.extend(d.problems)
            decoded.extend(objs)
            notes.extend(file_notes)
    problems.extend(_pod_name_clashes(decoded))
    problems.extend(S.clashes(decoded))
    if any(not p.warning for p in problems):
        raise InputError(problems)
    cluster = build_cluster(decoded)
    skipped = W.superseded(decoded)
    notes.extend(f"{d.file}: {d.kind} {d.key}: not expanded into pods: the input has the objects it "
                 f"owns ({skipped[d.kind, d.key]}, ...), which stand for it"
                 for d in decoded if d.kind in W.KINDS and (d.kind, d.key) in skipped and d.obj is not None)
    notes.extend(f"{key}: hostNetwork pod: it uses its node's network namespace and address, so as "
                 "far as policy goes it is the node (always allowed, never isolated); it is no "
                 "endpoint of the matrix or the lab" for key in sorted(cluster.host_network))
    return LoadResult(cluster, [p for p in problems if p.warning], notes)


def decode_text(text: str, filename: str, *, legacy_namespace_isolation: bool = False
                ) -> tuple[list[Decoded], list[Problem], list[str]]:
    """Decode one file's text: (objects, file-level problems such as YAML syntax errors,
    notes). Objects of documents before a syntax error are still returned; a duplicate
    object inside the file is returned invalid."""
    with _gc_paused():
        return _decode_text(text, filename, legacy_namespace_isolation, {})


def build_cluster(objects: Iterable[Decoded]) -> Cluster:
    """A Cluster of the valid objects (the first of duplicates wins)."""
    objects = list(objects)
    skip = W.superseded(objects)
    cluster = Cluster()
    tables: dict[str, dict] = {
        "Namespace": cluster.namespaces,
        "Pod": cluster.pods,
        "NetworkPolicy": cluster.policies,
        "ExternalHost": cluster.externals,
        CNP.KIND: cluster.cnps,
    }
    for d in objects:
        if d.obj is None:
            continue
        if (d.kind, d.key) in skip:
            continue  # its ReplicaSets, Jobs or Pods are in the input themselves
        if d.kind in W.KINDS or d.kind == "Pod":  # a workload is the pods its controller would make
            for pod in W.pods(d.obj) if d.kind != "Pod" else [d.obj]:  # type: ignore[arg-type]
                table = cluster.host_network if pod.host_network else cluster.pods  # type: ignore[union-attr]
                table.setdefault(pod.key, pod)  # type: ignore[union-attr]
            continue
        table = tables.get(d.kind, cluster.services if d.kind == "Service" else None)
        if table is not None and d.key not in table:
            table[d.key] = d.obj
    return cluster


def _pod_name_clashes(decoded: list[Decoded]) -> list[Problem]:
    """A workload's pod named like another pod (a Pod, or another workload's): the input
    would not say which one it means."""
    owners: dict[str, str] = {}
    out = []
    skip = W.superseded(decoded)
    for d in decoded:
        if d.obj is None or (d.kind != "Pod" and d.kind not in W.KINDS) or (d.kind, d.key) in skip:
            continue
        keys = [d.key] if d.kind == "Pod" else [p.key for p in W.pods(d.obj)]  # type: ignore[arg-type]
        for key in keys:
            first = owners.setdefault(key, f"{d.kind} {d.key}")
            if first != f"{d.kind} {d.key}":
                out.append(Problem(d.file, f"{d.kind} {d.key}", "metadata.name",
                                   f"its pod {key} has the name of a pod of {first}"))
    return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading creates millions of containers and no cycles; the cyclic collector would
    rescan all of them again and again (~25% of a 150,000-pod load)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ==== documents -> objects ====================================================================


class _FileCtx:
    """What decoding one file accumulates."""

    def __init__(self, filename: str, legacy: bool):
        self.filename = filename
        self.legacy = legacy
        self.decoded: list[Decoded] = []
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.where: dict[int, str] = {}  # id(Decoded) -> position, for duplicate messages


def _decode_text(text: str, filename: str, legacy: bool, seen: dict[tuple[str, str], tuple[str, str]]
                 ) -> tuple[list[Decoded], list[Problem], list[str]]:
    ctx = _FileCtx(filename, legacy)
    problem = check_text(filename, text)
    if problem is not None:
        return [], [problem], []
    problems: list[Problem] = []
    for doc in parse_documents(text, filename, problems):
        _decode_value(doc.value, doc.where, doc.dups, None, None, ctx, 0)
    ctx.problems.extend(problems)
    _mark_duplicates(ctx, seen)
    return ctx.decoded, ctx.problems, ctx.notes


def _decode_value(value: object, where: str, dups: list[DupKey], default_version: str | None,
                  default_kind: str | None, ctx: _FileCtx, depth: int) -> None:
    if value is None:
        return  # an empty document (only comments, or a lone ---)
    if not isinstance(value, dict):
        ctx.problems.append(Problem(ctx.filename, where, "",
                                    f"expected a Kubernetes object (a mapping), got {describe(value)}"))
        return
    if "kind" not in value and "apiVersion" not in value and {"backend", "results"} <= value.keys():
        # Our own matrix/probe JSON (an expected.json beside the manifests): not an object.
        ctx.notes.append(f"{ctx.filename}: skipped a netpol matrix document (not a manifest)")
        return
    kind = value.get("kind", default_kind)
    version = value.get("apiVersion", default_version)
    if kind is None or version is None or kind.__class__ is not str or version.__class__ is not str:
        missing = "kind" if kind.__class__ is not str else "apiVersion"
        got = kind if missing == "kind" else version
        msg = V.required(f"every object needs {missing}") if got is None else \
            f"Invalid type: expected a string, got {describe(got)}"
        ctx.problems.append(Problem(ctx.filename, where, missing, msg))
        return
    if kind == "List" or (kind.endswith("List") and "items" in value):
        _decode_list(value, kind, version, where, dups, ctx, depth)
        return
    if kind not in KIND_API_VERSIONS:
        meta = value.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        ident = f"{ns}/{name}" if isinstance(ns, str) and ns else str(name) if name else f"<unnamed, {where}>"
        proper = _KINDS_LOWER.get(kind.lower())
        near = None if proper is not None else unknown_kind(kind, version, KIND_API_VERSIONS)
        if proper is not None:
            ctx.problems.append(Problem(ctx.filename, f"{kind} {ident}", "kind",
                                        V.unsupported(kind, [proper])))
        elif near is not None:  # NetworkPolicies: not a kind of any group, a typo of ours
            ctx.problems.append(Problem(ctx.filename, f"{kind} {ident}", "kind", near))
        else:
            ctx.notes.append(f"{ctx.filename}: skipped {kind} {ident} (kind not used)")
        return
    ctx.decoded.append(_decode_object(value, kind, version, where, dups, ctx))


def _decode_list(value: dict, kind: str, version: str, where: str, dups: list[DupKey], ctx: _FileCtx,
                 depth: int) -> None:
    errs: Errs = []
    items = list_items(value, errs)
    for path, msg in errs:
        ctx.problems.append(Problem(ctx.filename, f"{kind} in {where}", path, msg))
    if depth > 5:
        ctx.problems.append(Problem(ctx.filename, f"{kind} in {where}", "items", "Lists nested too deeply"))
        return
    # Typed lists as the API returns them (PodList) may leave kind/apiVersion off their items.
    item_kind = kind[:-4] if kind != "List" else None
    item_version = version if kind != "List" else None
    by_item: dict[int, list[DupKey]] = {}
    for path, key, line in dups:
        if len(path) >= 2 and path[0] == "items" and isinstance(path[1], int):
            by_item.setdefault(path[1], []).append((path[2:], key, line))
        else:
            ctx.problems.append(Problem(ctx.filename, f"{kind} in {where}", render_path(path + [key]),
                                        _dup_message(key, line)))
    filename, decoded, positions = ctx.filename, ctx.decoded, ctx.where
    for i, item in enumerate(items):
        # Most items of a large List are Pods of the common valid shape: decoded here without
        # the dispatch below (any doubt, and _decode_value decodes it strictly).
        if item.__class__ is dict and item.get("kind", item_kind) == "Pod" and i not in by_item \
                and item.get("apiVersion", item_version) == "v1":
            pod = fast_pod(item, filename)
            if pod is not None:
                d = Decoded(filename, "Pod", pod.key, pod, [], W.owner_refs(item))
                decoded.append(d)
                positions[id(d)] = f"{where} items[{i}]"
                continue
        _decode_value(item, f"{where} items[{i}]", by_item.get(i, []), item_version, item_kind, ctx,
                      depth + 1)


def _dup_message(key: str, line: int | None) -> str:
    at = f" (again at line {line})" if line else ""
    return f"duplicate key {V.quote(key)}{at}: the mapping gives it twice"


def _object_label(kind: str, d: dict, where: str) -> tuple[str, str]:
    """("Kind ns/name", key) from raw metadata, before validation, for messages."""
    meta = d.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        return f"{kind} <unnamed, {where}>", ""
    if kind in ("Namespace", "ExternalHost", CNP.KIND):  # cluster-scoped
        return f"{kind} {name}", name
    ns = meta.get("namespace")  # type: ignore[union-attr]
    ns = ns if isinstance(ns, str) and ns else "default"
    return f"{kind} {ns}/{name}", f"{ns}/{name}"


def _decode_object(d: dict, kind: str, version: str, where: str, dups: list[DupKey], ctx: _FileCtx
                   ) -> Decoded:
    label, key = _object_label(kind, d, where)
    errs: Errs = []
    warns: Errs = []
    expected = KIND_API_VERSIONS[kind]
    obj: object | None = None
    if version != expected:
        errs.append(("apiVersion", f"no matches for kind {V.quote(kind)} in version {V.quote(version)} "
                                   f"(use {V.quote(expected)})"))
    else:
        try:
            if kind in W.KINDS:
                obj = W.decode(d, kind, errs, warns, ctx.filename)
            elif kind == "Service":
                obj = S.decode(d, errs, warns, ctx.filename, ctx.notes, label)
            elif kind == CNP.KIND:
                obj = CNP.decode_object(d, errs, warns, ctx.filename)
            else:
                obj = decode_kind(d, kind, errs, warns, ctx.filename, ctx.legacy, ctx.notes, label)
        except RecursionError:  # cannot happen with our builder's depth limit; never a traceback
            errs.append(("", "nested too deeply"))
    for path, k, line in dups:
        errs.append((render_path(path + [k]), _dup_message(k, line)))
    problems = [Problem(ctx.filename, label, path, msg) for path, msg in errs]
    problems.extend(Problem(ctx.filename, label, path, msg, warning=True) for path, msg in warns)
    decoded = Decoded(ctx.filename, kind, key, None if errs else obj, problems, W.owner_refs(d))
    ctx.where[id(decoded)] = where
    return decoded


def _mark_duplicates(ctx: _FileCtx, seen: dict[tuple[str, str], tuple[str, str]]) -> None:
    """The same Kind ns/name twice in the input: the second is an error (kubectl would
    silently apply both, the last one winning; a manifest set must say what it means)."""
    for d in ctx.decoded:
        if not d.key:
            continue
        ident = (d.kind, d.key)
        first = seen.get(ident)
        if first is None:
            seen[ident] = (ctx.filename, ctx.where[id(d)])  # formatted only for a duplicate
            continue
        label = f"{d.kind} {d.key}"
        d.problems.append(Problem(ctx.filename, label, "metadata.name",
                                  f"{V.duplicate(d.key)}: {d.kind} defined twice (first in {first[0]}, {first[1]})"))
        d.obj = None
