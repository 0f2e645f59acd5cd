"""Load the conformance cases (tests/conformance/cases/*.yaml); the format is in README.md.

A case is a list of steps; each step is a *whole desired state* (the base model with the
step's objects merged over it) and one or more checks, each a set of probe ports and the
expectation in the upstream e2e vocabulary. Loading validates everything, so a typo in a
case fails loudly with the file and the place, never silently changes what is tested.

    from tests.conformance.cases import load_cases
    for case in load_cases():
        for step in case.steps:
            path = step.write(tmp_dir)             # one multi-document YAML file
            for check in step.checks:
                expected = check.rows(case.endpoints)   # rows for enforcer.views.reachability
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from enforcer.views.reachability import PortKey, Reachability, parse_port, port_label, selector

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"
DEFAULT_BASE = "base.yaml"
# libyaml when built in (12x faster than pure-Python PyYAML, the same YAML 1.1): ten test
# modules load every case at collection time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

VERBS = ("expect", "expect_peer", "expect_all_ingress", "expect_all_egress")
# Protocols the lab cannot probe on this kernel (no SCTP sockets; netfilter still matches it).
UNPROBEABLE = frozenset({"SCTP"})


class CaseError(ValueError):
    """A case file that does not follow the format; the message names file and place."""


def _fail(where: str, msg: str) -> CaseError:
    return CaseError(f"{where}: {msg}")


ObjKey = tuple[str, str, str]  # (kind, namespace, name)


def object_key(obj: dict, where: str = "") -> ObjKey:
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        raise _fail(where, "a manifest must be an object with metadata")
    kind = obj.get("kind")
    name = obj["metadata"].get("name")
    if not kind or not name:
        raise _fail(where, "a manifest needs kind and metadata.name")
    ns = "" if kind == "Namespace" else obj["metadata"].get("namespace", "")
    return str(kind), str(ns), str(name)


def _expand(doc: Any) -> list[dict]:
    """A document, a kind: List or a typed ...List, as a flat list of objects."""
    if doc is None:
        return []
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
        return [o for item in doc["items"] for o in _expand(item)]
    return [doc]


def load_base(path: Path) -> list[dict]:
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise _fail(str(path), f"cannot load: {exc}") from None
    return copy.deepcopy(_parsed_base(path, mtime))  # each case its own objects


_BASES: dict[tuple[Path, int], list[dict]] = {}


def _parsed_base(path: Path, mtime: int) -> list[dict]:
    """A base file parsed once (every case of a directory shares one)."""
    key = (path, mtime)
    if key not in _BASES:
        try:
            docs = list(yaml.load_all(path.read_text(), Loader=_LOADER))
        except (OSError, yaml.YAMLError) as exc:
            raise _fail(str(path), f"cannot load: {exc}") from None
        _BASES[key] = [o for d in docs for o in _expand(d)]
    return _BASES[key]


def endpoints_of(objects: Iterable[dict]) -> list[str]:
    """Endpoint ids in manifest order: pods as ns/name, external hosts by bare name."""
    out = []
    for obj in objects:
        kind, ns, name = object_key(obj)
        if kind == "Pod":
            out.append(f"{ns}/{name}")
        elif kind == "ExternalHost":
            out.append(name)
    return out


# --------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class Op:
    """One expectation verb, applied in order on top of the check's default."""

    verb: str
    args: tuple  # expect: (from, to); expect_peer: (from_sel, to_sel); all_*: (id,)
    allowed: bool

    def apply(self, r: Reachability) -> None:
        if self.verb == "expect":
            r.expect(self.args[0], self.args[1], self.allowed)
        elif self.verb == "expect_peer":
            r.expect_peer(self.args[0], self.args[1], self.allowed)
        elif self.verb == "expect_all_ingress":
            r.expect_all_ingress(self.args[0], self.allowed)
        else:
            r.expect_all_egress(self.args[0], self.allowed)

    def __str__(self) -> str:
        word = "allowed" if self.allowed else "blocked"
        if self.verb in ("expect", "expect_peer"):
            return f"{self.verb} {self.args[0]} -> {self.args[1]}: {word}"
        return f"{self.verb} {self.args[0]}: {word}"


@dataclass(frozen=True)
class Check:
    ports: tuple[PortKey, ...]
    default: bool
    ops: tuple[Op, ...]

    @property
    def probeable(self) -> bool:
        """False when a port uses a protocol the lab cannot send (SCTP here)."""
        return not any(proto in UNPROBEABLE for _p, proto in self.ports)

    @property
    def label(self) -> str:
        return ",".join(port_label(p) for p in self.ports)

    def reachability(self, endpoints: Iterable[str]) -> Reachability:
        r = Reachability(endpoints, self.ports, default=self.default)
        for op in self.ops:
            op.apply(r)
        return r

    def rows(self, endpoints: Iterable[str]) -> list[dict]:
        return self.reachability(endpoints).rows()


@dataclass(frozen=True)
class Step:
    name: str
    manifests: tuple[dict, ...]  # as written in the case file
    objects: tuple[dict, ...]  # the whole desired state: base merged with manifests
    checks: tuple[Check, ...]

    @property
    def ports(self) -> list[PortKey]:
        return list(dict.fromkeys(p for c in self.checks for p in c.ports))

    def yaml(self) -> str:
        # Copies, so that PyYAML never writes &id001 anchors for shared sub-objects.
        return yaml.safe_dump_all([copy.deepcopy(o) for o in self.objects], sort_keys=False)

    def write(self, directory: Path, stem: str = "state") -> Path:
        """Write the desired state as one multi-document YAML file and return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}.yaml"
        path.write_text(self.yaml())
        return path


@dataclass(frozen=True)
class Case:
    id: str  # the file stem, e.g. "01-default-deny-ingress"
    name: str
    source: str  # "upstream" or "extra"
    context: str
    title: str
    path: Path
    base: Path
    endpoints: tuple[str, ...]
    steps: tuple[Step, ...]
    notes: str = ""

    @property
    def upstream(self) -> bool:
        return self.source == "upstream"

    @property
    def probeable(self) -> bool:
        return any(c.probeable for s in self.steps for c in s.checks)

    def __str__(self) -> str:
        return f"{self.id}: {self.title}"


# --------------------------------------------------------------------------- parsing

def _endpoint(value: Any, known: set[str], where: str) -> str:
    if not isinstance(value, str) or value not in known:
        raise _fail(where, f"{value!r} is not an endpoint of the model ({', '.join(sorted(known))})")
    return value


def _peer_selector(value: Any, known: set[str], where: str) -> Any:
    """A selector as written: a pattern string ("*", "x/*", "*/a", "x/a") or {namespace, pod}."""
    if isinstance(value, dict):
        if set(value) - {"namespace", "pod"}:
            raise _fail(where, f"selector keys are namespace and pod, got {sorted(value)}")
        sel: Any = dict(value)
    elif isinstance(value, str):
        sel = value
    else:
        raise _fail(where, f"a selector is a pattern like 'x/*' or {{namespace, pod}}, got {value!r}")
    try:
        match = selector(sel)
    except ValueError as exc:
        raise _fail(where, str(exc)) from None
    if not any(match(e) for e in known):
        # Almost always a typo ("x/d", "w/*"): refuse rather than expect nothing.
        raise _fail(where, f"selector {value!r} matches no endpoint")
    return sel


def _parse_op(raw: Any, known: set[str], where: str) -> Op:
    if not isinstance(raw, dict):
        raise _fail(where, f"an expectation is a mapping like {{expect: {{from, to}}, allowed: false}}, got {raw!r}")
    verbs = [v for v in VERBS if v in raw]
    extra = set(raw) - set(VERBS) - {"allowed"}
    if len(verbs) != 1 or extra:
        raise _fail(where, f"use exactly one of {', '.join(VERBS)} plus 'allowed' (got keys {sorted(raw)})")
    if not isinstance(raw.get("allowed"), bool):
        raise _fail(where, "'allowed' must be true or false")
    verb = verbs[0]
    arg = raw[verb]
    if verb in ("expect", "expect_peer"):
        if not isinstance(arg, dict) or set(arg) != {"from", "to"}:
            raise _fail(where, f"{verb} takes {{from: ..., to: ...}}, got {arg!r}")
        if verb == "expect":
            args: tuple = (_endpoint(arg["from"], known, f"{where}.{verb}.from"),
                           _endpoint(arg["to"], known, f"{where}.{verb}.to"))
        else:
            args = (_peer_selector(arg["from"], known, f"{where}.{verb}.from"),
                    _peer_selector(arg["to"], known, f"{where}.{verb}.to"))
    else:
        args = (_endpoint(arg, known, f"{where}.{verb}"),)
    return Op(verb, args, raw["allowed"])


def _parse_default(value: Any, where: str) -> bool:
    if value in ("allowed", True):
        return True
    if value in ("blocked", False):
        return False
    raise _fail(where, f"default must be 'allowed' or 'blocked', got {value!r}")


def _parse_check(raw: Any, known: set[str], where: str) -> Check:
    if not isinstance(raw, dict) or set(raw) - {"ports", "default", "expect"} or "ports" not in raw:
        raise _fail(where, "a check is {ports: [80/TCP], default: allowed, expect: [...]}")
    ports_raw = raw["ports"]
    if not isinstance(ports_raw, list) or not ports_raw:
        raise _fail(f"{where}.ports", "a non-empty list such as [80/TCP, 81/UDP]")
    try:
        ports = tuple(dict.fromkeys(parse_port(p) for p in ports_raw))
    except ValueError as exc:
        raise _fail(f"{where}.ports", str(exc)) from None
    ops_raw = raw.get("expect") or []
    if not isinstance(ops_raw, list):
        raise _fail(f"{where}.expect", "a list of expectations")
    ops = tuple(_parse_op(o, known, f"{where}.expect[{i}]") for i, o in enumerate(ops_raw))
    return Check(ports, _parse_default(raw.get("default", "allowed"), f"{where}.default"), ops)


def _merge(base: list[dict], manifests: list[dict], where: str) -> tuple[dict, ...]:
    """Base objects, each replaced by a step object of the same kind/namespace/name; then
    the step's other objects (policies, ...) in the order written."""
    by_key: dict[ObjKey, dict] = {}
    for i, obj in enumerate(manifests):
        key = object_key(obj, f"{where}.manifests[{i}]")
        if key in by_key:
            raise _fail(f"{where}.manifests[{i}]", f"{'/'.join(k for k in key if k)} appears twice")
        by_key[key] = obj
    merged = []
    base_keys = set()
    for obj in base:
        key = object_key(obj)
        base_keys.add(key)
        merged.append(by_key.get(key, obj))
    merged.extend(o for k, o in by_key.items() if k not in base_keys)
    return tuple(merged)


def load_case(path: Path | str) -> Case:
    path = Path(path)
    where = str(path.relative_to(HERE)) if path.is_relative_to(HERE) else str(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(where, f"cannot load: {exc}") from None
    allowed_keys = {"name", "source", "context", "title", "base", "notes", "steps"}
    if not isinstance(raw, dict):
        raise _fail(where, "a case file is a mapping")
    unknown = set(raw) - allowed_keys
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(allowed_keys)})")
    for key in ("name", "source", "title", "steps"):
        if not raw.get(key):
            raise _fail(where, f"'{key}' is required")
    if raw["source"] not in ("upstream", "extra"):
        raise _fail(where, "source must be 'upstream' or 'extra'")
    base_path = HERE / raw.get("base", DEFAULT_BASE)
    base = load_base(base_path)
    endpoints = tuple(endpoints_of(base))
    known = set(endpoints)
    if not isinstance(raw["steps"], list):
        raise _fail(where, "steps is a list")
    steps = []
    for i, s in enumerate(raw["steps"]):
        sw = f"{where}: steps[{i}]"
        if not isinstance(s, dict) or set(s) - {"name", "manifests", "checks"} or not s.get("checks"):
            raise _fail(sw, "a step is {name, manifests: [...], checks: [...]}")
        manifests = s.get("manifests") or []
        if not isinstance(manifests, list):
            raise _fail(f"{sw}.manifests", "a list of Kubernetes objects")
        objects = _merge(base, manifests, sw)
        if endpoints_of(objects) != list(endpoints):
            raise _fail(sw, "a step may relabel pods but not add or remove endpoints")
        checks = tuple(_parse_check(c, known, f"{sw}.checks[{j}]")
                       for j, c in enumerate(s["checks"]))
        steps.append(Step(str(s.get("name") or f"step {i + 1}"), tuple(manifests), objects, checks))
    return Case(id=path.stem, name=str(raw["name"]), source=raw["source"],
                context=str(raw.get("context", "")), title=str(raw["title"]), path=path,
                base=base_path, endpoints=endpoints, steps=tuple(steps),
                notes=str(raw.get("notes", "")))


def load_cases(directory: Path | str = CASES_DIR) -> list[Case]:
    """Every case file, in file-name order; names must be unique."""
    cases = [load_case(p) for p in sorted(Path(directory).glob("*.yaml"))]
    seen: dict[str, str] = {}
    for c in cases:
        if c.name in seen:
            raise CaseError(f"case name {c.name!r} used by both {seen[c.name]} and {c.id}")
        seen[c.name] = c.id
    return cases
