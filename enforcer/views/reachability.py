"""The reachability vocabulary: what a test expects, what the network did, and the diff.

The upstream Kubernetes e2e suite (test/e2e/network/netpol) states every expectation the
same way: start from a default (everything allowed), then carve out exceptions with four
verbs, and print the result as a *truth table* -- one row per client, one column per
server, ``.`` for allowed and ``X`` for blocked. A failing run prints the expected table,
the observed one and a comparison, then ``N wrong, N correct``. We keep that vocabulary so
a reader can put our output next to an upstream log.

Everything here works on *rows*, the JSON schema of ``netpol matrix`` and ``netpol probe``
(ACCEPTANCE.md)::

    {"from": "x/a", "to": "y/b", "port": 81, "protocol": "TCP", "allowed": true, ...}

Extra keys are carried along and ignored. A pod talking to itself is not part of a matrix
(SEMANTICS 11: always allowed, and upstream ignores loopback), so self pairs are skipped
wherever they appear.

Pure: no kernel, no root, no files except in :func:`load_rows`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

from enforcer.errors import InputError
from enforcer.model import PROTOCOLS

PortKey = tuple[int, str]  # (port, protocol)
CellKey = tuple[str, str, int, str]  # (from, to, port, protocol)
Selector = Union[str, Mapping[str, str], Callable[[str], bool], None]

ALLOWED, BLOCKED, SELF = ".", "X", "-"
MAX_LISTED = 25  # wrong cells spelled out one per line under the tables
LEGEND = "legend: . allowed, X blocked, - self (not probed), ? no result for this pair"


# --------------------------------------------------------------------------- ports, ids

def parse_port(spec: Any) -> PortKey:
    """``"80/TCP"``, ``"80"`` (TCP), ``80``, ``(80, "udp")`` or a row -> ``(80, "TCP")``."""
    if isinstance(spec, Mapping):
        spec = (spec.get("port"), spec.get("protocol", "TCP"))
    if isinstance(spec, bool):
        raise ValueError(f"not a port: {spec!r}")
    if isinstance(spec, int):
        port, proto = spec, "TCP"
    elif isinstance(spec, str):
        text = spec.strip()
        num, _, proto = text.partition("/")
        if not num.isdigit():
            raise ValueError(f"not a port: {spec!r} (expected PORT/PROTOCOL, e.g. 80/TCP)")
        port, proto = int(num), (proto or "TCP")
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        port, proto = spec
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool):
            raise ValueError(f"not a port: {spec!r}")
    else:
        raise ValueError(f"not a port: {spec!r}")
    proto = str(proto).upper()
    if proto not in PROTOCOLS:
        raise ValueError(f"unknown protocol {proto!r} in {spec!r} (one of {', '.join(PROTOCOLS)})")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1..65535")
    return port, proto


def port_label(key: PortKey) -> str:
    return f"{key[0]}/{key[1]}"


def split_id(endpoint: str) -> tuple[str | None, str]:
    """``"x/a"`` -> ``("x", "a")``; an external host's bare name -> ``(None, name)``."""
    ns, sep, name = endpoint.partition("/")
    return (ns, name) if sep else (None, endpoint)


def selector(sel: Selector) -> Callable[[str], bool]:
    """Turn a peer description into a predicate over endpoint ids.

    Accepted forms (the upstream ``Peer{Namespace, Pod}`` with either part optional):

    * ``None``, ``"*"`` or ``{}``: every endpoint;
    * ``{"namespace": "x"}``, ``{"pod": "a"}``, ``{"namespace": "x", "pod": "a"}``;
    * a pattern ``"x/*"``, ``"*/a"``, ``"x/a"`` (``*`` is a wildcard for that part);
    * a bare name ``"backup"``: that external host only;
    * any callable taking an endpoint id and returning a bool.

    An external host has no namespace, so it matches only selectors that do not name one.
    """
    if sel is None:
        return lambda _e: True
    if callable(sel) and not isinstance(sel, (str, Mapping)):
        return sel
    if isinstance(sel, Mapping):
        unknown = set(sel) - {"namespace", "pod"}
        if unknown:
            raise ValueError(f"selector keys must be 'namespace' and/or 'pod', got {sorted(unknown)}")
        want_ns, want_pod = sel.get("namespace") or None, sel.get("pod") or None
    elif isinstance(sel, str):
        text = sel.strip()
        if text in ("", "*", "*/*"):
            return lambda _e: True
        if "/" not in text:
            return lambda e, _t=text: e == _t
        ns_part, _, pod_part = text.partition("/")
        want_ns = None if ns_part == "*" else ns_part
        want_pod = None if pod_part == "*" else pod_part
    else:
        raise ValueError(f"cannot use {sel!r} as a selector")

    def match(endpoint: str) -> bool:
        ns, name = split_id(endpoint)
        if want_ns is not None and ns != want_ns:
            return False
        if want_pod is not None and (ns is None or name != want_pod):
            return False
        return True

    return match


# --------------------------------------------------------------------------- Reachability

PortSpec = Union[Any, Iterable[Any], None]  # one port ("80/TCP", 80, (80, "UDP")), several, or all


class Reachability:
    """An expected matrix: a default plus exceptions, applied in order (later wins).

    Every verb takes an optional ``port=``: one port (``"5432/TCP"``, ``80``,
    ``(53, "UDP")``) or a list of them, each one of the ports the Reachability was built
    with. Without it the exception holds on every port. So one object states per-port
    expectations::

        r = Reachability(pods, ports=["80/TCP", "5432/TCP"])
        r.expect_all_ingress("shop/db", False)                   # db: nothing, any port
        r.expect("shop/web", "shop/db", True, port="5432/TCP")   # ... but web on 5432
    """

    def __init__(self, endpoints: Iterable[str], ports: Iterable[Any] = ((80, "TCP"),),
                 default: bool = True):
        self.endpoints: list[str] = list(dict.fromkeys(endpoints))
        if not self.endpoints:
            raise ValueError("a Reachability needs at least one endpoint")
        self.ports: list[PortKey] = list(dict.fromkeys(parse_port(p) for p in ports))
        if not self.ports:
            raise ValueError("a Reachability needs at least one port")
        self.default = bool(default)
        self._known = set(self.endpoints)
        self._cells: dict[tuple[str, str, PortKey], bool] = {
            (f, t, k): self.default for k in self.ports
            for f in self.endpoints for t in self.endpoints if f != t}

    def _check(self, endpoint: str) -> None:
        if endpoint not in self._known:
            raise ValueError(f"unknown endpoint {endpoint!r} (known: {', '.join(self.endpoints)})")

    def _ports(self, port: PortSpec) -> list[PortKey]:
        if port is None:
            return self.ports
        one = isinstance(port, (str, int, Mapping)) or (
            isinstance(port, tuple) and len(port) == 2 and isinstance(port[1], str)
            and (isinstance(port[0], int) or str(port[0]).isdigit()))
        specs = [port] if one else list(port)
        keys = [parse_port(p) for p in specs]
        unknown = [k for k in keys if k not in self.ports]
        if unknown:
            raise ValueError(f"port {port_label(unknown[0])} is not one of this expectation's ports "
                             f"({', '.join(port_label(k) for k in self.ports)}); add it to ports=")
        return keys

    def _set(self, pairs: Iterable[tuple[str, str]], allowed: bool, port: PortSpec) -> "Reachability":
        keys = self._ports(port)
        for f, t in pairs:
            if f != t:
                for k in keys:
                    self._cells[(f, t, k)] = bool(allowed)
        return self

    def expect(self, frm: str, to: str, allowed: bool, port: PortSpec = None) -> "Reachability":
        """One ordered pair. A self pair is accepted and ignored (always allowed)."""
        self._check(frm)
        self._check(to)
        return self._set([(frm, to)], allowed, port)

    def expect_peer(self, from_sel: Selector, to_sel: Selector, allowed: bool,
                    port: PortSpec = None) -> "Reachability":
        """Every pair whose client matches ``from_sel`` and server matches ``to_sel``."""
        f_match, t_match = selector(from_sel), selector(to_sel)
        froms = [e for e in self.endpoints if f_match(e)]
        tos = [e for e in self.endpoints if t_match(e)]
        return self._set([(f, t) for f in froms for t in tos], allowed, port)

    def expect_all_ingress(self, to: str, allowed: bool, port: PortSpec = None) -> "Reachability":
        """Everything *into* ``to``."""
        self._check(to)
        return self.expect_peer(None, lambda e: e == to, allowed, port)

    def expect_all_egress(self, frm: str, allowed: bool, port: PortSpec = None) -> "Reachability":
        """Everything *out of* ``frm``."""
        self._check(frm)
        return self.expect_peer(lambda e: e == frm, None, allowed, port)

    def get(self, frm: str, to: str, port: PortSpec = None) -> bool:
        """The expectation for one pair; ``port`` may be left out while all ports agree."""
        self._check(frm)
        self._check(to)
        if frm == to:
            return True
        values = {self._cells[(frm, to, k)] for k in self._ports(port)}
        if len(values) > 1:
            raise ValueError(f"{frm} -> {to} differs by port: name one with port=")
        return values.pop()

    def rows(self) -> list[dict]:
        """Rows in endpoint order, port by port, self pairs left out."""
        out = []
        for port, proto in self.ports:
            for f in self.endpoints:
                for t in self.endpoints:
                    if f != t:
                        out.append({"from": f, "to": t, "port": port, "protocol": proto,
                                    "allowed": self._cells[(f, t, (port, proto))]})
        return out

    def __repr__(self) -> str:
        blocked = sum(1 for v in self._cells.values() if not v)
        return (f"Reachability({len(self.endpoints)} endpoints, "
                f"{', '.join(port_label(p) for p in self.ports)}, {blocked} blocked cells)")


# --------------------------------------------------------------------------- rows

def _norm_row(row: Mapping[str, Any], where: str = "") -> dict:
    """Validate one row and normalise port/protocol/allowed; extra keys are kept."""
    prefix = f"{where}: " if where else ""
    if not isinstance(row, Mapping):
        raise InputError(f"{prefix}a result must be an object, got {type(row).__name__}")
    missing = [k for k in ("from", "to", "port", "allowed") if k not in row]
    if missing:
        raise InputError(f"{prefix}result is missing {', '.join(missing)}: {dict(row)!r}")
    if not isinstance(row["allowed"], bool):
        raise InputError(f"{prefix}'allowed' must be true or false, got {row['allowed']!r}")
    try:
        port, proto = parse_port((row["port"], row.get("protocol", "TCP")))
    except ValueError as exc:
        raise InputError(f"{prefix}{exc}") from None
    out = dict(row)
    out.update({"from": str(row["from"]), "to": str(row["to"]), "port": port,
                "protocol": proto})
    return out


def rows_of(data: Any) -> list[dict]:
    """Rows from a Reachability, a list of rows, or an ``{"results": [...]}`` document."""
    if isinstance(data, Reachability):
        return data.rows()
    if isinstance(data, Mapping):
        if "results" not in data:
            raise InputError("expected an object with a 'results' list")
        data = data["results"]
    if not isinstance(data, (list, tuple)):
        raise InputError(f"expected a list of results, got {type(data).__name__}")
    out: list[dict] = []
    for i, row in enumerate(data):
        if isinstance(row, Reachability):
            out.extend(row.rows())
        else:
            out.append(_norm_row(row, f"results[{i}]"))
    return out


def load_rows(source: Union[str, os.PathLike, Mapping, list]) -> list[dict]:
    """Read matrix/probe output: a path to the JSON file, the JSON text, or parsed JSON."""
    if isinstance(source, (Mapping, list)):
        return rows_of(source)
    if isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        text, where = source, "JSON text"
    else:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        where = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON: {exc}") from None
    try:
        return rows_of(data)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def _index(rows: Iterable[Mapping]) -> tuple[dict[CellKey, bool], list[str], list[PortKey]]:
    """Cells by key (later rows win), endpoints and ports in first-seen order."""
    cells: dict[CellKey, bool] = {}
    endpoints: dict[str, None] = {}
    ports: dict[PortKey, None] = {}
    for row in rows:
        r = _norm_row(row)
        endpoints.setdefault(r["from"])
        endpoints.setdefault(r["to"])
        key = (r["port"], r["protocol"])
        ports.setdefault(key)
        if r["from"] != r["to"]:
            cells[(r["from"], r["to"], key[0], key[1])] = r["allowed"]
    return cells, list(endpoints), list(ports)


# --------------------------------------------------------------------------- tables

def _grid(endpoints: list[str], mark: Callable[[str, str], str]) -> list[str]:
    """Rows = clients (from), columns = servers (to), like the upstream tables."""
    width = max(len(e) for e in endpoints)
    head = "-".ljust(width) + " " + " ".join(e.ljust(width) for e in endpoints)
    lines = [head.rstrip()]
    for f in endpoints:
        cells = " ".join(mark(f, t).ljust(width) for t in endpoints)
        lines.append((f.ljust(width) + " " + cells).rstrip())
    return lines


def _summary(label: str, cells: dict[CellKey, bool], key: PortKey) -> str:
    vals = [v for (_f, _t, p, pr), v in cells.items() if (p, pr) == key]
    allowed = sum(1 for v in vals if v)
    return f"{label}: {len(vals)} pairs, {allowed} allowed, {len(vals) - allowed} blocked"


def truth_table(rows: Iterable[Mapping] | Reachability, *, title: str | None = None) -> str:
    """One table per (port, protocol): ``.`` allowed, ``X`` blocked, ``-`` self, ``?`` unknown.

    Each table ends with a summary line such as ``80/TCP: 72 pairs, 60 allowed, 12 blocked``.
    """
    rows = rows_of(rows) if isinstance(rows, Reachability) else list(rows)
    cells, endpoints, ports = _index(rows)
    if not endpoints:
        return f"{title}\n(no results)" if title else "(no results)"
    out: list[str] = []
    for key in ports:
        label = port_label(key)
        out.append(f"{title} {label}" if title else label)
        out.extend(_grid(endpoints, lambda f, t: SELF if f == t else
                         {True: ALLOWED, False: BLOCKED}.get(
                             cells.get((f, t, key[0], key[1])), "?")))  # type: ignore[arg-type]
        out.append(_summary(label, cells, key))
        out.append("")
    out.append(LEGEND)
    return "\n".join(out).rstrip() + "\n"


@dataclass(frozen=True)
class WrongCell:
    frm: str
    to: str
    port: int
    protocol: str
    expected: bool
    observed: bool | None  # None: no observation for this pair

    def __str__(self) -> str:
        def word(v: bool | None) -> str:
            return "missing" if v is None else ("allowed" if v else "blocked")
        return (f"{self.frm} -> {self.to} {self.port}/{self.protocol}: expected "
                f"{word(self.expected)}, observed {word(self.observed)}")


@dataclass
class Comparison:
    """The upstream-style report of expected versus observed."""

    text: str
    wrong: int
    correct: int
    wrong_cells: list[WrongCell] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.wrong == 0

    @property
    def vacuous(self) -> bool:
        """Nothing was compared: a check of zero cells proves nothing and must not pass."""
        return self.wrong + self.correct == 0

    def __str__(self) -> str:
        return self.text


def compare(expected_rows: Iterable[Mapping] | Reachability,
            observed_rows: Iterable[Mapping] | Reachability, *,
            title: str | None = None) -> Comparison:
    """Compare cell by cell over the *expected* pairs and ports.

    An expected pair with no observation counts as wrong (``?`` in the observed table);
    observations of pairs or ports nobody expected are ignored. The comparison table marks
    a right cell ``.`` and a wrong one ``X``, as upstream does.
    """
    exp_rows = rows_of(expected_rows) if isinstance(expected_rows, Reachability) else list(expected_rows)
    obs_rows = rows_of(observed_rows) if isinstance(observed_rows, Reachability) else list(observed_rows)
    exp, endpoints, ports = _index(exp_rows)
    obs, _, _ = _index(obs_rows)

    wrong_cells: list[WrongCell] = []
    correct = 0
    for (f, t, p, pr), want in exp.items():
        got = obs.get((f, t, p, pr))
        if got is want:
            correct += 1
        else:
            wrong_cells.append(WrongCell(f, t, p, pr, want, got))
    bad = {(c.frm, c.to, c.port, c.protocol) for c in wrong_cells}

    def mark(table: dict[CellKey, bool], key: PortKey) -> Callable[[str, str], str]:
        return lambda f, t: SELF if f == t else {True: ALLOWED, False: BLOCKED}.get(
            table.get((f, t, key[0], key[1])), "?")  # type: ignore[arg-type]

    out: list[str] = []
    if title:
        out += [title]
    out += [LEGEND, ""]
    for key in ports:
        label = port_label(key)
        exp_k = {k: v for k, v in exp.items() if (k[2], k[3]) == key}
        obs_k = {k: v for k, v in obs.items() if (k[2], k[3]) == key and k in exp_k}
        n_wrong = sum(1 for k in bad if (k[2], k[3]) == key)
        out.append(f"expected {label}:")
        out.extend(_grid(endpoints, mark(exp, key)))
        out.append(_summary(label, exp_k, key))
        out.append("")
        out.append(f"observed {label}:")
        out.extend(_grid(endpoints, mark(obs, key)))
        out.append(_summary(label, obs_k, key))
        out.append("")
        out.append(f"comparison {label} (. as expected, X wrong):")
        out.extend(_grid(endpoints, lambda f, t, _k=key: SELF if f == t else
                         (BLOCKED if (f, t, _k[0], _k[1]) in bad else ALLOWED)))
        out.append(f"{label}: {n_wrong} wrong, {len(exp_k) - n_wrong} correct")
        out.append("")
    for cell in wrong_cells[:MAX_LISTED]:
        out.append(f"wrong: {cell}")
    if len(wrong_cells) > MAX_LISTED:
        out.append(f"... and {len(wrong_cells) - MAX_LISTED} more wrong cells (see the tables)")
    if not exp:
        out.append("nothing was compared: the expectation has no cell (no pair of distinct endpoints on any port)")
    out.append(f"{len(wrong_cells)} wrong, {correct} correct")
    return Comparison("\n".join(out) + "\n", len(wrong_cells), correct, wrong_cells)
