"""Untrusted YAML/JSON text -> plain Python documents, safely.

Manifests come from users, CI pipelines and ``kubectl get -o yaml``, and we parse them in a
root process. A naive ``yaml.safe_load`` is not safe enough for that:

- an *alias bomb* (a few lines whose aliases expand to billions of nodes) passes PyYAML,
  which shares aliased nodes silently, and explodes later in whoever walks the data;
- *deep nesting* crashes the interpreter: PyYAML's composer is recursive in C;
- *duplicate keys* are silently resolved (the last one wins), so a mis-pasted block changes
  a policy without a word. We report each with its path and line instead.

So YAML is built here from libyaml's *event* stream, iteratively: nesting is limited
(MAX_DEPTH), what aliases would expand to is counted against the nodes actually written
(ALIAS_BUDGET, ALIAS_FACTOR), repeated keys are recorded with their path, and scalars are
resolved as YAML 1.1 does except timestamps, which stay strings as in kubectl. JSON (one
value or a stream of them) goes through the json module, which is fast, with the same
duplicate-key report.

Before parsing, reading turns bytes into text and names the file in every failure (missing,
unreadable, too large, binary, not UTF-8). Nothing here knows about Kubernetes: the
documents are decoded into model objects by enforcer.load.manifests.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, TextIO

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

from enforcer.errors import Problem
from enforcer.load.validation import quote

try:  # libyaml's parser is ~5x faster; the pure-Python one behaves the same
    from yaml._yaml import CParser as _Parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Parser  # type: ignore[assignment]

MAX_FILE_BYTES = 128 * 1024 * 1024  # 150,000 pods in one YAML file are ~45 MB
# Nodes (scalars, mappings, lists) in one file: the parsed tree costs ~160 bytes a node
# whatever the input spends on it ("{}, " is 4 bytes), so the byte cap alone let 128 MB of
# "items: [{}, {}, ...]" take ~5 GB. 150,000 pods in one file are ~6 M nodes.
MAX_NODES = 8_000_000
MAX_DEPTH = 100  # a Kubernetes object nests ~15 deep; libyaml's composer crashes near 100k
# Aliases may add at most ALIAS_BUDGET + ALIAS_FACTOR x (nodes written) nodes to a document:
# yaml.dump writes shared objects as aliases (legitimate, ~1x); a bomb is ~10^9 x.
ALIAS_BUDGET = 100_000
ALIAS_FACTOR = 10
STDIN_NAME = "<stdin>"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# One input file: (name, text, None) once read, or (name, None, why it could not be).
Source = tuple[str, str | None, Problem | None]
# A repeated key: (path from the document root to its mapping, the key, line of the repeat).
DupKey = tuple[list[str | int], str, int | None]


# ==== reading =================================================================================


def read_path(path: str, stdin: TextIO | None) -> list[Source]:
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


def _read_file(path: str) -> Source:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        return path, None, Problem(path, "", "", f"cannot read: {reason}")
    return _decode_bytes(path, data)


def _read_stdin(stdin: TextIO) -> Source:
    buffer = getattr(stdin, "buffer", None)
    try:
        if buffer is not None:
            return _decode_bytes(STDIN_NAME, buffer.read(MAX_FILE_BYTES + 1))
        text = stdin.read(MAX_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        return STDIN_NAME, None, Problem(STDIN_NAME, "", "", f"cannot read: {e}")
    if isinstance(text, bytes):
        return _decode_bytes(STDIN_NAME, text)
    problem = check_text(STDIN_NAME, text)
    return STDIN_NAME, (None if problem else text), problem


def _decode_bytes(name: str, data: bytes) -> Source:
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


def _too_many() -> str:
    return f"more than {MAX_NODES:,} values in one file: refusing it (split it into several files)"


def check_text(name: str, text: str) -> Problem | None:
    if len(text) > MAX_FILE_BYTES:
        return Problem(name, "", "", _too_large())
    if "\x00" in text:
        return Problem(name, "", "", "binary data (NUL bytes), not YAML or JSON text")
    return None


# ==== parsing =================================================================================


@dataclass
class Doc:
    """One document of a file: its plain value and where it is."""

    value: object
    index: int  # 1-based position in the file
    line: int
    # duplicate keys: (path from the document root, key, line of the repeated key)
    dups: list[DupKey]

    @property
    def where(self) -> str:
        return f"document {self.index} (line {self.line})"


class _ParseFail(Exception):
    """A document the builder refuses (limits, tags, bad keys); ends the file's stream."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


def parse_documents(text: str, filename: str, problems: list[Problem]) -> Iterable[Doc]:
    """The documents of one file, lazily for YAML (each can be decoded, then freed, before the
    next is built). A syntax error ends the stream and is appended to ``problems``."""
    if text.count("{") + text.count("[") > MAX_NODES:
        # That many flow collections ("items: [{}, {}, ...]"): refused in milliseconds,
        # before building any of them (a few braces inside strings never come near).
        problems.append(Problem(filename, "", "", _too_many()))
        return []
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


def parse_all(text: str, filename: str) -> tuple[list[Doc], list[Problem]]:
    """Every document of one file at once, and the syntax problem if any (for tests, tools)."""
    problems: list[Problem] = []
    docs = list(parse_documents(text, filename, problems))
    return docs, problems


class _DupDict(dict):
    """A JSON object that repeated keys (only built when that happens)."""

    dups: list[str]


_WS = re.compile(r"[ \t\r\n]*")


def _json_documents(text: str, filename: str) -> tuple[list[Doc], Problem | None]:
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
    docs: list[Doc] = []
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    line, counted = 1, 0  # lines counted incrementally: recounting from 0 was quadratic
    try:
        while pos < len(text):
            value, end = decoder.raw_decode(text, pos)
            line += text.count("\n", counted, pos)
            counted = pos
            docs.append(Doc(value, len(docs) + 1, line, _json_dups(value) if dup_seen else []))
            dup_seen.clear()
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
    except json.JSONDecodeError as e:
        return docs, Problem(filename, "", f"line {e.lineno}, column {e.colno}", f"JSON syntax error: {e.msg}")
    except RecursionError:
        return docs, Problem(filename, "", "", "JSON nested too deeply")
    return docs, None


def _json_dups(value: object) -> list[DupKey]:
    """Paths of repeated keys (called only when the hook saw one: the walk is not free)."""
    out: list[DupKey] = []
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
        return sign * _base60(v, int)
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
        return sign * _base60(v, float)
    return sign * float(v)


def _base60(v: str, number):
    """YAML 1.1's sexagesimal numbers (``1:20`` is 80): each part a base-60 digit."""
    n = number(0)
    for part in v.split(":"):
        n = n * 60 + number(part)
    return n


# Where the API server's YAML reader (go-yaml v2, then JSON) differs from YAML 1.1 numbers:
# 0080 and 1e3 are numbers to it (Go's float syntax), 0o17, 0X50 and 0B1 integers
# (strconv.ParseInt, base 0), 1:20 a string (no base 60), and a number with no fraction
# becomes an integer on the way to JSON (port: 80.0 is port 80).
_GO_INT_RE = re.compile(r"[-+]?0(?:[oO][0-7]+|[xX][0-9a-fA-F]+|[bB][01]+)")
_GO_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")


def _json_number(v: float) -> int | float:
    """As encoding/json writes a float64 (no exponent below 1e21) and the API reads it back."""
    return int(v) if v.is_integer() and abs(v) < 1e21 else v


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
    if ":" in text:  # YAML 1.1 base 60 (1:20 = 80): go-yaml never reads it
        return text
    if _INT_RE.fullmatch(text):
        return _yaml_int(text)
    if _FLOAT_RE.fullmatch(text):
        return _json_number(_yaml_float(text))
    plain = text.replace("_", "")
    if _GO_INT_RE.fullmatch(plain):
        sign, digits = (-1, plain[1:]) if plain[0] == "-" else (1, plain.lstrip("+"))
        return sign * int(digits[2:], {"o": 8, "x": 16, "b": 2}[digits[1].lower()])
    if _GO_FLOAT_RE.fullmatch(plain):
        return _json_number(float(plain))
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
    raise _ParseFail(_line_of(ev), f"unsupported YAML tag {tag} for value {quote(text)}")


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


def _yaml_documents(text: str, filename: str, problems: list[Problem]) -> Iterator[Doc]:
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
    dups: list[DupKey] = []
    index = 0
    line: int | None = 1
    parsed = expanded = 0
    budget = MAX_NODES  # nodes left for this document (earlier ones spent the rest)
    missing = _MISSING
    resolvable = _RESOLVABLE_FIRST
    try:
        while True:
            ev = get()
            cls = ev.__class__
            if cls is ScalarEvent:
                parsed += 1
                if parsed > budget:
                    raise _ParseFail(_line_of(ev), _too_many())
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
                if parsed > budget:
                    raise _ParseFail(_line_of(ev), _too_many())
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
                budget -= parsed
                parsed = expanded = 0
                continue
            elif cls is DocumentEndEvent:
                root = stack[0][0]
                yield Doc(root[0] if root else None, index, line or 1, dups)
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

