"""Read Kubernetes manifests (files, directories, stdin) into an enforcer.model.Cluster.

Three layers, each pure:

1. reading: bytes -> text, with the file named in every failure (missing, unreadable,
   too large, binary, not UTF-8);
2. parsing: text -> plain Python documents. JSON goes through the json module (fast);
   YAML through our own builder on libyaml's *event* stream, because PyYAML's composer is
   recursive in C (deep nesting crashes the interpreter) and its constructor shares aliased
   nodes silently (an alias bomb only explodes later, in whoever walks the data). The
   builder limits nesting, counts what aliases would expand to, reports duplicate keys with
   their path, and leaves timestamps as strings as kubectl does;
3. decoding: documents -> model objects, strictly, as ``kubectl apply --validate=strict``
   and the API server would: unknown fields, wrong types and every rule of the API
   server's validation (enforcer.validation) become Problems that name the file, the
   object and the field path. Defaults are applied, not demanded.

Every problem of the whole input is collected before ``load`` raises, so a user fixes
everything in one pass. Pods are decoded strictly only where we read them (metadata,
containers[].ports, status.podIP(s)); the many other Pod fields are tolerated.
"""
from __future__ import annotations

import gc
import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence, TextIO

import yaml
import yaml.reader
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from enforcer import validation as V
from enforcer.errors import InputError, Problem
from enforcer.model import (
    EGRESS,
    INGRESS,
    PROTOCOLS,
    Cluster,
    ContainerPort,
    ExternalHost,
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PortSpec,
    Requirement,
    Rule,
)

try:  # libyaml's parser is ~5x faster; the pure-Python one behaves the same
    from yaml._yaml import CParser as _Parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Parser  # type: ignore[assignment]

MAX_FILE_BYTES = 128 * 1024 * 1024  # 150,000 pods in one YAML file are ~45 MB
MAX_DEPTH = 100  # a Kubernetes object nests ~15 deep; libyaml's composer crashes near 100k
# Aliases may add at most ALIAS_BUDGET + ALIAS_FACTOR x (nodes written) nodes to a document:
# yaml.dump writes shared objects as aliases (legitimate, ~1x); a bomb is ~10^9 x.
ALIAS_BUDGET = 100_000
ALIAS_FACTOR = 10
STDIN_NAME = "<stdin>"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
LEGACY_ANNOTATION = "net.beta.kubernetes.io/network-policy"

KIND_API_VERSIONS = {
    "Namespace": "v1",
    "Pod": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "ExternalHost": "netpol-enforcer/v1alpha1",
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
    seen: dict[tuple[str, str], str] = {}  # (kind, key) -> where it was first defined
    for path in paths:
        for name, text, problem in _read_path(path, stdin):
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
    if any(not p.warning for p in problems):
        raise InputError(problems)
    return LoadResult(build_cluster(decoded), [p for p in problems if p.warning], notes)


def decode_text(text: str, filename: str, *, legacy_namespace_isolation: bool = False
                ) -> tuple[list[Decoded], list[Problem], list[str]]:
    """Decode one file's text: (objects, file-level problems such as YAML syntax errors,
    notes). Objects of documents before a syntax error are still returned; a duplicate
    object inside the file is returned invalid."""
    with _gc_paused():
        return _decode_text(text, filename, legacy_namespace_isolation, {})


def build_cluster(objects: Iterable[Decoded]) -> Cluster:
    """A Cluster of the valid objects (the first of duplicates wins)."""
    cluster = Cluster()
    tables: dict[str, dict] = {
        "Namespace": cluster.namespaces,
        "Pod": cluster.pods,
        "NetworkPolicy": cluster.policies,
        "ExternalHost": cluster.externals,
    }
    for d in objects:
        if d.obj is None:
            continue
        table = tables[d.kind]
        if d.key not in table:
            table[d.key] = d.obj
    return cluster


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


# ==== reading =================================================================================


def _read_path(path: str, stdin: TextIO | None) -> list[tuple[str, str | None, Problem | None]]:
    """(name, text, None) per file behind one -f argument, or (name, None, problem)."""
    if path == "-":
        return [_read_stdin(stdin if stdin is not None else sys.stdin)]
    if os.path.isdir(path):
        try:
            entries = sorted(os.listdir(path))
        except OSError as e:
            return [(path, None, Problem(path, "", "", f"cannot read directory: {e.strerror}"))]
        out = []
        for entry in entries:
            full = os.path.join(path, entry)
            if entry.startswith(".") or not entry.endswith(MANIFEST_SUFFIXES) or os.path.isdir(full):
                continue
            out.append(_read_file(full))
        return out
    return [_read_file(path)]


def _read_file(path: str) -> tuple[str, str | None, Problem | None]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        return path, None, Problem(path, "", "", f"cannot read: {reason}")
    return _decode_bytes(path, data)


def _read_stdin(stdin: TextIO) -> tuple[str, str | None, Problem | None]:
    buffer = getattr(stdin, "buffer", None)
    try:
        if buffer is not None:
            return _decode_bytes(STDIN_NAME, buffer.read(MAX_FILE_BYTES + 1))
        text = stdin.read(MAX_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        return STDIN_NAME, None, Problem(STDIN_NAME, "", "", f"cannot read: {e}")
    if isinstance(text, bytes):
        return _decode_bytes(STDIN_NAME, text)
    problem = _check_text(STDIN_NAME, text)
    return STDIN_NAME, (None if problem else text), problem


def _decode_bytes(name: str, data: bytes) -> tuple[str, str | None, Problem | None]:
    if len(data) > MAX_FILE_BYTES:
        return name, None, Problem(name, "", "", _too_large())
    if b"\x00" in data:
        return name, None, Problem(name, "", "", "binary data (NUL bytes), not YAML or JSON text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return name, None, Problem(name, "", f"line {line}",
                                   f"not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset {e.start})")
    return name, text, None


def _too_large() -> str:
    mib = 1024 * 1024
    limit = f"{MAX_FILE_BYTES // mib} MiB" if MAX_FILE_BYTES % mib == 0 else f"{MAX_FILE_BYTES} bytes"
    return f"input larger than {limit}: refusing to parse it"


def _check_text(name: str, text: str) -> Problem | None:
    if len(text) > MAX_FILE_BYTES:
        return Problem(name, "", "", _too_large())
    if "\x00" in text:
        return Problem(name, "", "", "binary data (NUL bytes), not YAML or JSON text")
    return None


# ==== parsing =================================================================================


@dataclass
class _Doc:
    value: object
    index: int  # 1-based position in the file
    line: int
    # duplicate keys: (path from the document root, key, line of the repeated key)
    dups: list[tuple[list[str | int], str, int | None]]

    @property
    def where(self) -> str:
        return f"document {self.index} (line {self.line})"


class _ParseFail(Exception):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


def _parse_documents(text: str, filename: str, problems: list[Problem]) -> Iterable[_Doc]:
    """The documents of one file, lazily for YAML (each can be decoded, then freed, before the
    next is built). A syntax error ends the stream and is appended to ``problems``."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        docs, problem = _json_documents(text, filename)
        if problem is None:
            return docs
        # Flow-style YAML also starts with a brace; report JSON's error only if YAML fails too.
        yaml_problems: list[Problem] = []
        yaml_docs = list(_yaml_documents(text, filename, yaml_problems))
        if not yaml_problems:
            return yaml_docs
        problems.append(problem)
        return docs
    return _yaml_documents(text, filename, problems)


def _parse_all(text: str, filename: str) -> tuple[list[_Doc], list[Problem]]:
    problems: list[Problem] = []
    docs = list(_parse_documents(text, filename, problems))
    return docs, problems


class _DupDict(dict):
    """A JSON object that repeated keys (only built when that happens)."""

    dups: list[str]


_WS = re.compile(r"[ \t\r\n]*")


def _json_documents(text: str, filename: str) -> tuple[list[_Doc], Problem | None]:
    """One JSON value or a stream of them (as ``kubectl`` accepts)."""
    dup_seen: list[bool] = []

    def pairs_hook(pairs: list[tuple[str, object]]) -> dict:
        d = dict(pairs)
        if len(d) == len(pairs):
            return d
        keys: set[str] = set()
        dd = _DupDict(d)
        dd.dups = []
        for k, _ in pairs:
            if k in keys:
                dd.dups.append(k)
            keys.add(k)
        dup_seen.append(True)
        return dd

    decoder = json.JSONDecoder(object_pairs_hook=pairs_hook)
    docs: list[_Doc] = []
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    try:
        while pos < len(text):
            value, end = decoder.raw_decode(text, pos)
            line = text.count("\n", 0, pos) + 1
            docs.append(_Doc(value, len(docs) + 1, line, _json_dups(value) if dup_seen else []))
            dup_seen.clear()
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
    except json.JSONDecodeError as e:
        return docs, Problem(filename, "", f"line {e.lineno}, column {e.colno}", f"JSON syntax error: {e.msg}")
    except RecursionError:
        return docs, Problem(filename, "", "", "JSON nested too deeply")
    return docs, None


def _json_dups(value: object) -> list[tuple[list[str | int], str, int | None]]:
    """Paths of repeated keys (called only when the hook saw one: the walk is not free)."""
    out: list[tuple[list[str | int], str, int | None]] = []
    stack: list[tuple[object, list[str | int]]] = [(value, [])]
    while stack:
        v, path = stack.pop()
        if isinstance(v, dict):
            if v.__class__ is _DupDict:
                out.extend((path, k, None) for k in v.dups)  # type: ignore[attr-defined]
            stack.extend((c, path + [k]) for k, c in v.items())
        elif isinstance(v, list):
            stack.extend((c, path + [i]) for i, c in enumerate(v))
    return out


# YAML 1.1 implicit types, as PyYAML resolves them, minus timestamps: kubectl (go-yaml into
# interface{}) keeps "2024-01-01" a string, and so must a label value here.
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_BOOLS = {w: True for w in ("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")}
_BOOLS.update({w: False for w in ("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")})
_RESOLVABLE_FIRST = frozenset("-+0123456789.~nNyYtTfFoO")
_INT_RE = re.compile(r"""[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+""", re.X)
_FLOAT_RE = re.compile(r"""[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)""", re.X)
_TAG = "tag:yaml.org,2002:"
_COLLECTION_TAGS = frozenset((None, "!", _TAG + "map", _TAG + "seq"))
_MISSING = object()
_MERGE = object()


def _yaml_int(text: str) -> int:
    v = text.replace("_", "")
    sign = -1 if v[0] == "-" else 1
    if v[0] in "+-":
        v = v[1:]
    if v == "0":
        return 0
    if v.startswith("0b"):
        return sign * int(v[2:], 2)
    if v.startswith("0x"):
        return sign * int(v[2:], 16)
    if v[0] == "0":
        return sign * int(v, 8)
    if ":" in v:
        n = 0
        for part in v.split(":"):
            n = n * 60 + int(part)
        return sign * n
    return sign * int(v)


def _yaml_float(text: str) -> float:
    v = text.replace("_", "").lower()
    sign = -1.0 if v[0] == "-" else 1.0
    if v[0] in "+-":
        v = v[1:]
    if v == ".inf":
        return sign * float("inf")
    if v == ".nan":
        return float("nan")
    if ":" in v:
        n = 0.0
        for part in v.split(":"):
            n = n * 60 + float(part)
        return sign * n
    return sign * float(v)


def _plain(text: str) -> object:
    if not text:
        return None
    if text[0] not in _RESOLVABLE_FIRST:
        return text
    if text in _NULLS:
        return None
    b = _BOOLS.get(text)
    if b is not None:
        return b
    if _INT_RE.fullmatch(text):
        return _yaml_int(text)
    if _FLOAT_RE.fullmatch(text):
        return _yaml_float(text)
    return text


def _scalar(ev: ScalarEvent) -> object:
    if ev.implicit[0]:
        return _plain(ev.value)
    tag = ev.tag
    if tag is None or tag == "!" or tag == _TAG + "str" or tag == _TAG + "timestamp":
        return ev.value
    text = ev.value
    try:
        if tag == _TAG + "int" and _INT_RE.fullmatch(text):
            return _yaml_int(text)
        if tag == _TAG + "float" and (_FLOAT_RE.fullmatch(text) or _INT_RE.fullmatch(text)):
            return _yaml_float(text)
    except ValueError:
        pass
    if tag == _TAG + "bool" and text in _BOOLS:
        return _BOOLS[text]
    if tag == _TAG + "null" and text in _NULLS:
        return None
    raise _ParseFail(_line_of(ev), f"unsupported YAML tag {tag} for value {V.quote(text)}")


def _line_of(ev: object) -> int | None:
    mark = getattr(ev, "start_mark", None)
    return mark.line + 1 if mark is not None else None


def _stack_path(stack: list[list]) -> list[str | int]:
    """Path from the document root to the collection on top of the builder's stack."""
    path: list[str | int] = []
    for frame in stack[1:-1]:
        if frame[1]:
            k = frame[2]
            path.append("<<" if k is _MERGE else k)
        else:
            path.append(len(frame[0]))
    return path


def _yaml_documents(text: str, filename: str, problems: list[Problem]) -> Iterator[_Doc]:
    """Build documents from libyaml events, iteratively (no recursion whatever the depth).

    A frame is [container, is_mapping, pending_key, size_at_start, anchor, merges, line of
    the last merge key]; merges are (value, line) pairs.
    Keys are kept as the text the user wrote (go-yaml turns scalar keys into strings too).
    """
    try:
        parser = _Parser(text)
    except UnicodeEncodeError as e:  # lone surrogates in a str that did not come from bytes
        problems.append(Problem(filename, "", "", f"not valid Unicode text: {e.reason}"))
        return
    get = parser.get_event
    stack: list[list] = []
    anchors: dict[str, tuple[object, int]] = {}
    open_anchors: set[str] = set()
    dups: list[tuple[list[str | int], str, int | None]] = []
    index = 0
    line: int | None = 1
    parsed = expanded = 0
    missing = _MISSING
    resolvable = _RESOLVABLE_FIRST
    try:
        while True:
            ev = get()
            cls = ev.__class__
            if cls is ScalarEvent:
                parsed += 1
                top = stack[-1]
                if top[1] and top[2] is missing:  # a mapping key
                    if ev.implicit[0] and ev.value == "<<":
                        top[2] = _MERGE
                        top[6] = _line_of(ev)
                    else:
                        key = ev.value
                        if key in top[0]:
                            dups.append((_stack_path(stack), key, _line_of(ev)))
                        top[2] = key
                    if ev.anchor is not None:
                        anchors[ev.anchor] = (ev.value, 1)
                    continue
                if ev.implicit[0]:  # plain: most are strings that need no resolving
                    value = ev.value
                    if not value or value[0] in resolvable:
                        value = _plain(value)
                else:
                    value = _scalar(ev)
                if ev.anchor is not None:
                    anchors[ev.anchor] = (value, 1)
            elif cls is MappingStartEvent or cls is SequenceStartEvent:
                parsed += 1
                top = stack[-1]
                if top[1] and top[2] is _MISSING:
                    raise _ParseFail(_line_of(ev), "a mapping key must be a string, not a "
                                     + ("mapping" if cls is MappingStartEvent else "list"))
                if len(stack) > MAX_DEPTH:
                    raise _ParseFail(_line_of(ev), f"nested deeper than {MAX_DEPTH} levels")
                if ev.tag not in _COLLECTION_TAGS:
                    raise _ParseFail(_line_of(ev), f"unsupported YAML tag {ev.tag}")
                is_map = cls is MappingStartEvent
                stack.append([{} if is_map else [], is_map, _MISSING, parsed + expanded, ev.anchor, None, None])
                if ev.anchor is not None:
                    open_anchors.add(ev.anchor)
                continue
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                frame = stack.pop()
                value = frame[0]
                if frame[5] is not None:
                    _apply_merges(value, frame[5])
                if frame[4] is not None:
                    anchors[frame[4]] = (value, parsed + expanded - frame[3] + 1)
                    open_anchors.discard(frame[4])
            elif cls is AliasEvent:
                name = ev.anchor
                if name in open_anchors:
                    raise _ParseFail(_line_of(ev), f"recursive alias *{name}")
                entry = anchors.get(name)
                if entry is None:
                    raise _ParseFail(_line_of(ev), f"alias *{name} names no anchor defined before it")
                value, size = entry
                expanded += size
                if expanded > ALIAS_BUDGET + ALIAS_FACTOR * parsed:
                    raise _ParseFail(_line_of(ev), f"aliases expand to {expanded} nodes from only "
                                     f"{parsed} written: refusing a possible alias bomb")
                top = stack[-1]
                if top[1] and top[2] is _MISSING:
                    if not isinstance(value, str):
                        raise _ParseFail(_line_of(ev), f"alias *{name} used as a key is not a string")
                    if value in top[0]:
                        dups.append((_stack_path(stack), value, _line_of(ev)))
                    top[2] = value
                    continue
            elif cls is DocumentStartEvent:
                index += 1
                line = _line_of(ev)
                stack = [[[], False, _MISSING, 0, None, None, None]]
                anchors = {}
                open_anchors = set()
                dups = []
                parsed = expanded = 0
                continue
            elif cls is DocumentEndEvent:
                root = stack[0][0]
                yield _Doc(root[0] if root else None, index, line or 1, dups)
                stack = []
                continue
            elif cls is StreamEndEvent:
                break
            else:  # StreamStartEvent
                continue
            # attach `value` to its parent
            top = stack[-1]
            if top[1]:
                key = top[2]
                if key is _MERGE:
                    if top[5] is None:
                        top[5] = []
                    top[5].append((value, top[6]))
                else:
                    top[0][key] = value
                top[2] = missing
            else:
                top[0].append(value)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = e.problem or str(e)
        if e.context:
            detail = f"{detail} ({e.context})"
        problems.append(Problem(filename, "", where, f"YAML syntax error: {detail}"))
    except yaml.reader.ReaderError as e:  # control characters
        line = text.count("\n", 0, e.position) + 1
        char = e.character if isinstance(e.character, int) else ord(e.character)
        problems.append(Problem(filename, "", f"line {line}",
                                f"unacceptable character #x{char:04x}: {e.reason}"))
    except yaml.YAMLError as e:
        problems.append(Problem(filename, "", "", f"YAML error: {e}"))
    except _ParseFail as e:
        problems.append(Problem(filename, "", f"line {e.line}" if e.line else "", e.message))


def _apply_merges(target: dict, merges: list[tuple[object, int | None]]) -> None:
    """YAML merge keys (<<): keys written in the mapping win; earlier merges win over later."""
    sources: list = []
    for m, line in merges:
        if isinstance(m, dict):
            sources.append(m)
        elif isinstance(m, list) and all(isinstance(x, dict) for x in m):
            sources.extend(m)
        else:
            raise _ParseFail(line, "a merge key (<<) needs a mapping or a list of mappings")
    for src in sources:
        for k, v in src.items():
            target.setdefault(k, v)


# ==== decoding: helpers =======================================================================

Errs = list[tuple[str, str]]
Anc = tuple[tuple[str, frozenset], ...]
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _describe(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {V.quote(v)}"
    if isinstance(v, int):
        return f"integer {v}"
    if isinstance(v, float):
        return f"number {v}"
    if isinstance(v, str):
        return f"string {V.quote(v)}"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    return type(v).__name__


def _type_error(errs: Errs, path: str, v: object, expected: str) -> None:
    errs.append((path, f"Invalid type: expected {expected}, got {_describe(v)}"))


def _join(path: str, key: str) -> str:
    if not _SIMPLE_KEY.fullmatch(key):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _render_path(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        out = f"{out}[{p}]" if isinstance(p, int) else _join(out, p)
    return out


def _struct(v: object, path: str, allowed: frozenset, errs: Errs, anc: Anc = ()) -> dict | None:
    """A mapping whose keys must all be known fields. None for null (the caller's zero value)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        _type_error(errs, path, v, "a mapping")
        return None
    if not v.keys() <= allowed:
        for k in v:
            if k not in allowed:
                errs.append((_join(path, k), _unknown(k, anc)))
    return v


def _unknown(key: str, anc: Anc) -> str:
    """'unknown field', with a hint when an enclosing object has that field (mis-indented)."""
    for parent_path, parent_allowed in anc:
        if key in parent_allowed:
            return f"unknown field ({V.quote(key)} is a field of {parent_path or 'the object'}: check the indentation)"
    return "unknown field"


def _items(v: object, path: str, errs: Errs) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        _type_error(errs, path, v, "a list")
        return []
    return v


def _string(v: object, path: str, errs: Errs) -> str | None:
    """A string field; None when absent or of the wrong type (the type error is recorded)."""
    if v is None or v.__class__ is str:
        return v  # type: ignore[return-value]
    _type_error(errs, path, v, "a string")
    return None


def _integer(v: object, path: str, errs: Errs) -> int | None:
    if v is None or v.__class__ is int:
        return v  # type: ignore[return-value]
    _type_error(errs, path, v, "an integer")
    return None


def _strings(v: object, path: str, errs: Errs) -> list[str]:
    out = []
    for i, s in enumerate(_items(v, path, errs)):
        if s is None:
            s = ""  # Go decodes a null list element to the zero value
        elif s.__class__ is not str:
            _type_error(errs, f"{path}[{i}]", s, "a string")
            continue
        out.append(s)
    return out


def _string_map(v: object, path: str, errs: Errs) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        _type_error(errs, path, v, "a mapping of strings")
        return {}
    out = {}
    for k, s in v.items():
        if s.__class__ is str:
            out[k] = s
        elif s is None:  # Go decodes null into a map[string]string as ""
            out[k] = ""
        else:
            _type_error(errs, _join(path, k), s, "a string (quote it)")
    return out


# ==== decoding: metadata, selectors ===========================================================

_META = frozenset((
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
))
_META_STRINGS = ("generateName", "selfLink", "uid", "resourceVersion", "creationTimestamp",
                 "deletionTimestamp")
_META_INTS = ("generation", "deletionGracePeriodSeconds")
_META_LISTS = ("ownerReferences", "managedFields")
_META_READ = frozenset(("name", "namespace", "labels", "annotations"))


@dataclass
class _Meta:
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


_META_ANC: Anc = (("", frozenset(("apiVersion", "kind", "metadata", "spec", "status"))),)


def _metadata(v: object, errs: Errs, namespaced: bool, name_rule) -> _Meta:
    d = _struct(v, "metadata", _META, errs, _META_ANC) or {}
    raw_name = d.get("name")
    name = _string(raw_name, "metadata.name", errs) or ""
    if raw_name is None or raw_name == "":
        errs.append(("metadata.name", V.required("name or generateName is required")
                     if not d.get("generateName") else
                     V.required("a manifest needs a name: generateName works only with the API server")))
    elif name:
        for m in name_rule(name):
            errs.append(("metadata.name", V.invalid(name, m)))
    namespace = "default"
    if namespaced:
        ns = d.get("namespace")
        if ns is not None and ns != "":  # empty means "default", as kubectl reads it
            if ns.__class__ is str:
                namespace = ns
                for m in V.dns1123_label_cached(ns):
                    errs.append(("metadata.namespace", V.invalid(ns, m)))
            else:
                _type_error(errs, "metadata.namespace", ns, "a string")
    labels = _string_map(d.get("labels"), "metadata.labels", errs)
    if labels:
        for m in V.labels(labels):
            errs.append(("metadata.labels", m))
    raw = d.get("annotations")
    annotations = _string_map(raw, "metadata.annotations", errs) if raw else {}
    if annotations:
        for m in V.annotations(annotations):
            errs.append(("metadata.annotations", m))
    if not d.keys() <= _META_READ:  # the fields nobody reads: types only
        for k in _META_STRINGS:
            _string(d.get(k), f"metadata.{k}", errs)
        for k in _META_INTS:
            _integer(d.get(k), f"metadata.{k}", errs)
        for k in _META_LISTS:
            _items(d.get(k), f"metadata.{k}", errs)
        _strings(d.get("finalizers"), "metadata.finalizers", errs)
    return _Meta(name, namespace, labels, annotations)


_SELECTOR = frozenset(("matchLabels", "matchExpressions"))
_REQUIREMENT = frozenset(("key", "operator", "values"))
_EMPTY_SELECTOR = LabelSelector()


def _selector(v: object, path: str, errs: Errs, anc: Anc) -> LabelSelector:
    d = _struct(v, path, _SELECTOR, errs, anc)
    if not d:
        return _EMPTY_SELECTOR
    labels = _string_map(d.get("matchLabels"), f"{path}.matchLabels", errs)
    if labels:
        errs.extend((f"{path}.matchLabels", m) for m in V.labels(labels))
    exprs = []
    inner = ((path, _SELECTOR),) + anc
    for i, item in enumerate(_items(d.get("matchExpressions"), f"{path}.matchExpressions", errs)):
        rp = f"{path}.matchExpressions[{i}]"
        r = _struct(item, rp, _REQUIREMENT, errs, inner) or {}
        key = _string(r.get("key"), f"{rp}.key", errs) or ""
        op = _string(r.get("operator"), f"{rp}.operator", errs) or ""
        values = _strings(r.get("values"), f"{rp}.values", errs)
        errs.extend((f"{rp}.{rel}", m) for rel, m in V.selector_requirement(key, op, values))
        exprs.append(Requirement(key, op, tuple(values)))
    return LabelSelector(tuple(sorted(labels.items())), tuple(exprs))


# ==== decoding: NetworkPolicy =================================================================

_OBJECT = frozenset(("apiVersion", "kind", "metadata", "spec", "status"))
_NP_SPEC = frozenset(("podSelector", "ingress", "egress", "policyTypes"))
_NP_INGRESS = frozenset(("from", "ports"))
_NP_EGRESS = frozenset(("to", "ports"))
_NP_PEER = frozenset(("podSelector", "namespaceSelector", "ipBlock"))
_NP_IPBLOCK = frozenset(("cidr", "except"))
_NP_PORT = frozenset(("protocol", "port", "endPort"))
_POLICY_TYPES = (INGRESS, EGRESS)


def _network_policy(d: dict, meta: _Meta, errs: Errs, warns: Errs, source: str) -> NetworkPolicy:
    anc: Anc = (("", _OBJECT),)
    spec = _struct(d.get("spec"), "spec", _NP_SPEC, errs, anc) or {}
    anc = (("spec", _NP_SPEC),) + anc
    pod_selector = _selector(spec.get("podSelector"), "spec.podSelector", errs, anc)
    ingress = _rules(spec.get("ingress"), "spec.ingress", "from", _NP_INGRESS, errs, warns, anc)
    egress = _rules(spec.get("egress"), "spec.egress", "to", _NP_EGRESS, errs, warns, anc)
    types = _strings(spec.get("policyTypes"), "spec.policyTypes", errs)
    if len(types) > 2:
        errs.append(("spec.policyTypes", V.invalid(types, "may not specify more than two policyTypes")))
    else:
        for i, t in enumerate(types):
            if t not in _POLICY_TYPES:
                errs.append((f"spec.policyTypes[{i}]", V.unsupported(t, _POLICY_TYPES)))
            elif t in types[:i]:
                errs.append((f"spec.policyTypes[{i}]", V.duplicate(t)))
    # SEMANTICS rule 2: the API server's defaulting; `egress: []` is not an egress section.
    effective = frozenset(types) if types else frozenset((INGRESS, EGRESS) if egress else (INGRESS,))
    return NetworkPolicy(meta.namespace, meta.name, pod_selector, effective, ingress, egress, source)


def _rules(v: object, path: str, peers_field: str, allowed: frozenset, errs: Errs, warns: Errs,
           anc: Anc) -> tuple[Rule, ...]:
    rules = []
    for i, item in enumerate(_items(v, path, errs)):
        rp = f"{path}[{i}]"
        r = _struct(item, rp, allowed, errs, anc) or {}  # null rule = {} (Go's zero value)
        inner = ((rp, allowed),) + anc
        ports = tuple(_np_port(p, f"{rp}.ports[{j}]", errs, inner)
                      for j, p in enumerate(_items(r.get("ports"), f"{rp}.ports", errs)))
        peers = tuple(_peer(p, f"{rp}.{peers_field}[{j}]", errs, warns, inner)
                      for j, p in enumerate(_items(r.get(peers_field), f"{rp}.{peers_field}", errs)))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def _np_port(v: object, path: str, errs: Errs, anc: Anc) -> PortSpec:
    d = _struct(v, path, _NP_PORT, errs, anc) or {}
    proto = _string(d.get("protocol"), f"{path}.protocol", errs)
    port = d.get("port")
    if port is not None and port.__class__ is not int and port.__class__ is not str:
        _type_error(errs, f"{path}.port", port, "an integer or a port name")
        port = None
    end_port = _integer(d.get("endPort"), f"{path}.endPort", errs)
    errs.extend((f"{path}.{rel}", m) for rel, m in V.network_policy_port(proto, port, end_port))
    return PortSpec("TCP" if proto is None else proto, port, end_port)


def _peer(v: object, path: str, errs: Errs, warns: Errs, anc: Anc) -> Peer:
    d = _struct(v, path, _NP_PEER, errs, anc) or {}
    inner = ((path, _NP_PEER),) + anc
    ps, ns, ib = d.get("podSelector"), d.get("namespaceSelector"), d.get("ipBlock")
    pod_selector = None if ps is None else _selector(ps, f"{path}.podSelector", errs, inner)
    ns_selector = None if ns is None else _selector(ns, f"{path}.namespaceSelector", errs, inner)
    ip_block = None if ib is None else _ip_block(ib, f"{path}.ipBlock", errs, warns, inner)
    count = (ps is not None) + (ns is not None) + (ib is not None)
    if count == 0:
        errs.append((path, V.required("must specify a peer")))
    elif count > 1 and ib is not None:
        errs.append((path, V.forbidden("may not specify both ipBlock and another peer")))
    return Peer(pod_selector, ns_selector, ip_block)


def _ip_block(v: object, path: str, errs: Errs, warns: Errs, anc: Anc) -> IPBlock | None:
    d = _struct(v, path, _NP_IPBLOCK, errs, anc) or {}
    cidr_text = _string(d.get("cidr"), f"{path}.cidr", errs)
    excepts = _strings(d.get("except"), f"{path}.except", errs)
    if not cidr_text:
        if d.get("cidr") is None or cidr_text == "":
            errs.append((f"{path}.cidr", V.required()))
        return None
    cidr = V.parse_cidr(cidr_text)
    errs.extend((f"{path}.cidr", m) for m in cidr.errors)
    warns.extend((f"{path}.cidr", m) for m in cidr.warnings)
    if cidr.value is None:
        return None  # as the API server: excepts of an unparsable cidr are not checked
    out = []
    for i, text in enumerate(excepts):
        ep = f"{path}.except[{i}]"
        exc = V.parse_cidr(text)
        errs.extend((ep, m) for m in exc.errors)
        warns.extend((ep, m) for m in exc.warnings)
        if exc.value is not None:
            errs.extend((ep, m) for m in V.except_in_cidr(cidr.value, exc.value, text))  # type: ignore[arg-type]
            out.append(str(exc.value))
    return IPBlock(str(cidr.value), tuple(out))


# ==== decoding: Pod, Namespace, ExternalHost ==================================================

_CONTAINER_PORT = frozenset(("name", "containerPort", "protocol", "hostPort", "hostIP"))
_POD_IP = frozenset(("ip",))


def _pod(d: dict, meta: _Meta, errs: Errs, warns: Errs, source: str) -> Pod:
    spec = d.get("spec")
    ports: list[ContainerPort] = []
    if spec is not None:
        if spec.__class__ is not dict:
            _type_error(errs, "spec", spec, "a mapping")
        else:
            containers = spec.get("containers")
            if containers is not None:
                for i, c in enumerate(_items(containers, "spec.containers", errs)):
                    if c.__class__ is not dict:
                        if c is not None:
                            _type_error(errs, f"spec.containers[{i}]", c, "a mapping")
                        continue
                    raw_ports = c.get("ports")
                    if raw_ports is not None:
                        _container_ports(raw_ports, i, errs, ports)
    status = d.get("status")
    ips: tuple[str, ...] = ()
    if status is not None:
        if status.__class__ is not dict:
            _type_error(errs, "status", status, "a mapping")
        elif "podIP" in status or "podIPs" in status:
            ips = _pod_ips(status, errs, warns)
    return Pod(meta.namespace, meta.name, meta.labels, ips, tuple(ports), source)


_CONTAINER_FIELDS = frozenset(("name", "image", "ports"))  # for the mis-indentation hint
_CONTAINER_PORT_CACHE: dict[tuple[int, str, str | None], ContainerPort] = {}


def _container_ports(v: object, container: int, errs: Errs, out: list[ContainerPort]) -> None:
    """validateContainerPorts: names unique within the container, numbers in range.

    Paths are built only for errors: this runs for every pod of a large cluster.
    """
    names: set[str] = set()
    path = f"spec.containers[{container}].ports"
    for i, p in enumerate(_items(v, path, errs)):
        if p.__class__ is not dict or not p.keys() <= _CONTAINER_PORT:
            anc: Anc = ((f"spec.containers[{container}]", _CONTAINER_FIELDS),)
            p = _struct(p, f"{path}[{i}]", _CONTAINER_PORT, errs, anc) or {}
        name = p.get("name")
        number = p.get("containerPort")
        proto = p.get("protocol") or "TCP"  # the API server defaults "" too
        if (name is None or (name.__class__ is str and name not in names and not V.port_name(name))) \
                and number.__class__ is int and 1 <= number <= 65535 and proto in PROTOCOLS \
                and len(p) <= 3 and "hostPort" not in p and "hostIP" not in p:
            pass  # the common, valid case
        else:
            n_errs = len(errs)
            _container_port_errors(p, f"{path}[{i}]", names, errs)
            if len(errs) > n_errs:
                continue
        if name:
            names.add(name)
        key = (number, proto, name)
        cp = _CONTAINER_PORT_CACHE.get(key)
        if cp is None:
            cp = _CONTAINER_PORT_CACHE[key] = ContainerPort(number, proto, name or None)
        out.append(cp)


def _container_port_errors(p: dict, pp: str, names: set[str], errs: Errs) -> None:
    name = _string(p.get("name"), f"{pp}.name", errs)
    if name:
        msgs = V.port_name(name)
        errs.extend((f"{pp}.name", V.invalid(name, m)) for m in msgs)
        if not msgs and name in names:
            errs.append((f"{pp}.name", V.duplicate(name)))
    raw = p.get("containerPort")
    number = _integer(raw, f"{pp}.containerPort", errs)
    if raw is None or number == 0:
        errs.append((f"{pp}.containerPort", V.required()))
    elif number is not None:
        errs.extend((f"{pp}.containerPort", V.invalid(number, m)) for m in V.port_number(number))
    host_port = _integer(p.get("hostPort"), f"{pp}.hostPort", errs)
    if host_port:
        errs.extend((f"{pp}.hostPort", V.invalid(host_port, m)) for m in V.port_number(host_port))
    host_ip = _string(p.get("hostIP"), f"{pp}.hostIP", errs)
    if host_ip:
        errs.extend((f"{pp}.hostIP", m) for m in V.parse_ip(host_ip).errors)
    proto = _string(p.get("protocol"), f"{pp}.protocol", errs) or "TCP"
    errs.extend((f"{pp}.protocol", m) for m in V.protocol(proto))


def _pod_ips(status: dict, errs: Errs, warns: Errs) -> tuple[str, ...]:
    # Fast path for what kubectl prints: podIP alone, or with podIPs [{ip: the same}].
    pod_ip = status.get("podIP")
    pod_ips = status.get("podIPs")
    if pod_ip.__class__ is str and (
            pod_ips is None or (pod_ips.__class__ is list and len(pod_ips) == 1
                                and pod_ips[0].__class__ is dict and len(pod_ips[0]) == 1
                                and pod_ips[0].get("ip") == pod_ip)):
        try:
            socket.inet_pton(socket.AF_INET, pod_ip)  # canonical IPv4 (no leading zeros)
            return (pod_ip,)
        except (OSError, ValueError):
            pass
    pod_ip_text = _string(status.get("podIP"), "status.podIP", errs) or ""
    parsed = []
    texts = []
    for i, item in enumerate(_items(status.get("podIPs"), "status.podIPs", errs)):
        ip_path = f"status.podIPs[{i}].ip"
        entry = _struct(item, f"status.podIPs[{i}]", _POD_IP, errs) or {}
        text = _string(entry.get("ip"), ip_path, errs)
        if not text:
            if text == "" or entry.get("ip") is None:
                errs.append((ip_path, V.required()))
            continue
        p = V.parse_ip(text)
        errs.extend((ip_path, m) for m in p.errors)
        warns.extend((ip_path, m) for m in p.warnings)
        if p.value is not None:
            parsed.append(p.value)
            texts.append(text)
    if pod_ip_text:
        p = V.parse_ip(pod_ip_text)
        errs.extend(("status.podIP", m) for m in p.errors)
        warns.extend(("status.podIP", m) for m in p.warnings)
        if p.value is not None:
            if not parsed and not status.get("podIPs"):
                parsed, texts = [p.value], [pod_ip_text]
            elif parsed and parsed[0] != p.value:
                errs.append(("status.podIP", V.invalid(pod_ip_text, "must be equal to status.podIPs[0].ip")))
    for index, m in V.pod_ips(parsed, texts):
        errs.append(("status.podIPs" if index is None else f"status.podIPs[{index}].ip", m))
    return tuple(str(ip) for ip in parsed)


_NS_SPEC = frozenset(("finalizers",))
_NS_STATUS = frozenset(("phase", "conditions"))


def _namespace(d: dict, meta: _Meta, errs: Errs, warns: Errs, legacy: bool, notes: list[str],
               label: str) -> Namespace:
    _struct(d.get("spec"), "spec", _NS_SPEC, errs, (("", _OBJECT),))
    _struct(d.get("status"), "status", _NS_STATUS, errs, (("", _OBJECT),))
    labels = dict(meta.labels)
    labels[METADATA_NAME_LABEL] = meta.name  # as the API server does, whatever was written
    deny = False
    annotation = meta.annotations.get(LEGACY_ANNOTATION)
    if annotation is not None:
        if legacy:
            deny = _legacy_isolation(annotation, errs)
        else:
            notes.append(f"{label}: annotation {LEGACY_ANNOTATION} ignored "
                         "(legacy namespace isolation is not enabled)")
    return Namespace(meta.name, labels, deny)


def _legacy_isolation(text: str, errs: Errs) -> bool:
    """Pre-v1 namespace isolation: {"ingress": {"isolation": "DefaultDeny"}}."""
    path = f"metadata.annotations[{LEGACY_ANNOTATION}]"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    ingress = value.get("ingress") if isinstance(value, dict) else None
    isolation = ingress.get("isolation") if isinstance(ingress, dict) else None
    if not isinstance(value, dict) or (ingress is not None and not isinstance(ingress, dict)) \
            or isolation not in (None, "DefaultDeny"):
        errs.append((path, V.invalid(text, 'must be JSON like {"ingress": {"isolation": "DefaultDeny"}}')))
        return False
    return isolation == "DefaultDeny"


_EXT_TOP = frozenset(("apiVersion", "kind", "metadata", "spec"))
_EXT_SPEC = frozenset(("ips", "ports"))
_EXT_PORT = frozenset(("port", "protocol"))


def _external_host(d: dict, meta: _Meta, errs: Errs, warns: Errs) -> ExternalHost:
    anc: Anc = (("", _EXT_TOP),)
    spec = _struct(d.get("spec"), "spec", _EXT_SPEC, errs, anc) or {}
    anc = (("spec", _EXT_SPEC),) + anc
    ips: list[str] = []
    raw = spec.get("ips")
    raw_ips = _strings(raw, "spec.ips", errs)
    if raw is None or raw == []:
        errs.append(("spec.ips", V.required("an external host needs at least one address")))
    for i, text in enumerate(raw_ips):
        p = V.parse_ip(text)
        errs.extend((f"spec.ips[{i}]", m) for m in p.errors)
        warns.extend((f"spec.ips[{i}]", m) for m in p.warnings)
        if p.value is not None:
            if str(p.value) in ips:
                errs.append((f"spec.ips[{i}]", V.duplicate(text)))
            else:
                ips.append(str(p.value))
    ports = []
    for i, item in enumerate(_items(spec.get("ports"), "spec.ports", errs)):
        pp = f"spec.ports[{i}]"
        p = _struct(item, pp, _EXT_PORT, errs, anc) or {}
        number = _integer(p.get("port"), f"{pp}.port", errs)
        if number is None:
            if p.get("port") is None:
                errs.append((f"{pp}.port", V.required()))
        else:
            errs.extend((f"{pp}.port", V.invalid(number, m)) for m in V.port_number(number))
        proto = _string(p.get("protocol"), f"{pp}.protocol", errs)
        proto = "TCP" if proto is None else proto
        errs.extend((f"{pp}.protocol", m) for m in V.protocol(proto))
        if number is not None:
            ports.append(ContainerPort(number, proto))
    return ExternalHost(meta.name, tuple(ips), tuple(ports))


# ==== decoding: documents and lists ===========================================================


class _FileCtx:
    def __init__(self, filename: str, legacy: bool):
        self.filename = filename
        self.legacy = legacy
        self.decoded: list[Decoded] = []
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.where: dict[int, str] = {}  # id(Decoded) -> position, for duplicate messages


_LIST_FIELDS = frozenset(("apiVersion", "kind", "metadata", "items"))


def _decode_text(text: str, filename: str, legacy: bool, seen: dict[tuple[str, str], str]
                 ) -> tuple[list[Decoded], list[Problem], list[str]]:
    ctx = _FileCtx(filename, legacy)
    problem = _check_text(filename, text)
    if problem is not None:
        return [], [problem], []
    problems: list[Problem] = []
    for doc in _parse_documents(text, filename, problems):
        _decode_value(doc.value, doc.where, doc.dups, None, None, ctx, 0)
    ctx.problems.extend(problems)
    _mark_duplicates(ctx, seen)
    return ctx.decoded, ctx.problems, ctx.notes


def _decode_value(value: object, where: str, dups: list, default_version: str | None,
                  default_kind: str | None, ctx: _FileCtx, depth: int) -> None:
    if value is None:
        return  # an empty document (only comments, or a lone ---)
    if not isinstance(value, dict):
        ctx.problems.append(Problem(ctx.filename, where, "",
                                    f"expected a Kubernetes object (a mapping), got {_describe(value)}"))
        return
    kind = value.get("kind", default_kind)
    version = value.get("apiVersion", default_version)
    if kind is None or version is None or kind.__class__ is not str or version.__class__ is not str:
        missing = "kind" if kind.__class__ is not str else "apiVersion"
        got = kind if missing == "kind" else version
        msg = V.required(f"every object needs {missing}") if got is None else \
            f"Invalid type: expected a string, got {_describe(got)}"
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
        if proper is not None:
            ctx.problems.append(Problem(ctx.filename, f"{kind} {ident}", "kind",
                                        V.unsupported(kind, [proper])))
        else:
            ctx.notes.append(f"{ctx.filename}: skipped {kind} {ident} (kind not used)")
        return
    ctx.decoded.append(_decode_object(value, kind, version, where, dups, ctx))


def _decode_list(value: dict, kind: str, version: str, where: str, dups: list, ctx: _FileCtx,
                 depth: int) -> None:
    errs: Errs = []
    _struct(value, "", _LIST_FIELDS, errs)
    items = _items(value.get("items"), "items", errs)
    for path, msg in errs:
        ctx.problems.append(Problem(ctx.filename, f"{kind} in {where}", path, msg))
    if depth > 5:
        ctx.problems.append(Problem(ctx.filename, f"{kind} in {where}", "items", "Lists nested too deeply"))
        return
    # Typed lists as the API returns them (PodList) may leave kind/apiVersion off their items.
    item_kind = kind[:-4] if kind != "List" else None
    item_version = version if kind != "List" else None
    by_item: dict[int, list] = {}
    for path, key, line in dups:
        if len(path) >= 2 and path[0] == "items" and isinstance(path[1], int):
            by_item.setdefault(path[1], []).append((path[2:], key, line))
        else:
            ctx.problems.append(Problem(ctx.filename, f"{kind} in {where}", _render_path(path + [key]),
                                        _dup_message(key, line)))
    for i, item in enumerate(items):
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
    if kind in ("Namespace", "ExternalHost"):
        return f"{kind} {name}", name
    ns = meta.get("namespace")  # type: ignore[union-attr]
    ns = ns if isinstance(ns, str) and ns else "default"
    return f"{kind} {ns}/{name}", f"{ns}/{name}"


def _decode_object(d: dict, kind: str, version: str, where: str, dups: list, ctx: _FileCtx) -> Decoded:
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
            if kind == "NetworkPolicy":
                _struct(d, "", _OBJECT, errs)
                meta = _metadata(d.get("metadata"), errs, True, V.dns1123_subdomain)
                obj = _network_policy(d, meta, errs, warns, ctx.filename)
            elif kind == "Pod":
                _struct(d, "", _OBJECT, errs)
                meta = _metadata(d.get("metadata"), errs, True, V.dns1123_subdomain)
                obj = _pod(d, meta, errs, warns, ctx.filename)
            elif kind == "Namespace":
                _struct(d, "", _OBJECT, errs)
                meta = _metadata(d.get("metadata"), errs, False, V.dns1123_label)
                obj = _namespace(d, meta, errs, warns, ctx.legacy, ctx.notes, f"{ctx.filename}: {label}")
            else:
                _struct(d, "", _EXT_TOP, errs)
                meta = _metadata(d.get("metadata"), errs, False, V.dns1123_subdomain)
                obj = _external_host(d, meta, errs, warns)
        except RecursionError:  # cannot happen with our builder's depth limit; never a traceback
            errs.append(("", "nested too deeply"))
    for path, k, line in dups:
        errs.append((_render_path(path + [k]), _dup_message(k, line)))
    problems = [Problem(ctx.filename, label, path, msg) for path, msg in errs]
    problems.extend(Problem(ctx.filename, label, path, msg, warning=True) for path, msg in warns)
    decoded = Decoded(ctx.filename, kind, key, None if errs else obj, problems)
    ctx.where[id(decoded)] = where
    return decoded


def _mark_duplicates(ctx: _FileCtx, seen: dict[tuple[str, str], str]) -> None:
    """The same Kind ns/name twice in the input: the second is an error (kubectl would
    silently apply both, the last one winning; a manifest set must say what it means)."""
    for d in ctx.decoded:
        if not d.key:
            continue
        ident = (d.kind, d.key)
        first = seen.get(ident)
        where = f"{ctx.filename}, {ctx.where[id(d)]}"
        if first is None:
            seen[ident] = where
            continue
        label = f"{d.kind} {d.key}"
        d.problems.append(Problem(ctx.filename, label, "",
                                  f"{V.duplicate(d.key)}: {d.kind} defined twice (first in {first})"))
        d.obj = None
