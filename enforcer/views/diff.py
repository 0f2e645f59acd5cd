"""``netpol diff``: which connections a change opens and which it closes.

    netpol diff -f cluster.yaml --old policy-v1.yaml --new policy-v2.yaml
    netpol diff --old before/ --new after/ --ports 80/TCP -o json

Two cluster states are loaded: *before* = the ``-f`` files plus the ``--old`` files,
*after* = the ``-f`` files plus the ``--new`` files (``--against`` is another name for
``--old``: "compare against this"). Either side may add nothing: ``-f cluster.yaml --new
policies.yaml`` shows what the policies close. Both states are compiled and the model's
verdict (the same IR ``matrix`` and the backends read) is taken for every ordered pair of
endpoints present on both sides, on ``--ports`` or else on every port the destination
declares on either side. The output lists the connections the change *opens* (denied
before, allowed after) and *closes* (allowed before, denied after), each with the reason
after the change, then the number of unchanged ones. Endpoints that exist on one side
only are named, not compared.

Addresses: a pod without ``status.podIP`` gets the lab's deterministic address on the
before side, and keeps that address after (ipam ``existing``), so an added pod never
renumbers the others and an ipBlock verdict never changes because of renumbering.

Pure except for reading the input files; exit code 0 whatever the difference is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

import click

from enforcer.cliutil import CONTEXT, echo_findings

from enforcer.views import verdict as vd
from enforcer.errors import InputError
from enforcer.model import Cluster


@dataclass
class State:
    """One side of the comparison: the loaded cluster and its compiled firewalls."""

    cluster: Cluster
    firewalls: dict


@dataclass(frozen=True)
class Change:
    """One connection whose verdict differs between the two states."""

    src: str
    dst: str
    port: int
    protocol: str
    before: bool
    after: bool
    reason: str  # why the *after* state decides as it does

    @property
    def kind(self) -> str:
        return "opened" if self.after else "closed"

    def row(self) -> dict:
        return {"from": self.src, "to": self.dst, "port": self.port, "protocol": self.protocol,
                "before": self.before, "after": self.after, "reason": self.reason}


@dataclass
class DiffResult:
    opened: list[Change] = field(default_factory=list)
    closed: list[Change] = field(default_factory=list)
    unchanged: int = 0
    unchanged_allowed: int = 0
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str, int, str], tuple[bool, bool]] = field(default_factory=dict)

    @property
    def compared(self) -> int:
        return self.unchanged + len(self.opened) + len(self.closed)

    @property
    def changed(self) -> bool:
        return bool(self.opened or self.closed)


# --------------------------------------------------------------------------- loading

def load_state(paths: Iterable[str], *, legacy: bool = False,
               existing: dict[str, tuple[str, ...]] | None = None,
               label: str = "") -> State:
    """Load, validate, assign addresses (keeping ``existing`` ones) and compile."""
    from enforcer.compiler.frontend import prepare

    prepared = prepare(paths, legacy=legacy, existing=existing)
    echo_findings(prepared, prefix=f"{label}: " if label else "")
    return State(prepared.cluster, prepared.firewalls)


def load_pair(base: Iterable[str], old: Iterable[str], new: Iterable[str], *,
              legacy: bool = False) -> tuple[State, State]:
    base, old, new = list(base), list(old), list(new)
    before = load_state(base + old, legacy=legacy, label="before")
    # Pods that got an address on the before side keep it after (no renumbering).
    assigned = {k: p.ips for k, p in before.cluster.pods.items()}
    after = load_state(base + new, legacy=legacy, existing=assigned, label="after")
    return before, after


# --------------------------------------------------------------------------- the diff

def _why(v: vd.Verdict) -> str:
    """One line: why the model decides as it does for ``v``."""
    if v.always:
        return v.always
    sides = [s for s in (v.egress, v.ingress) if s is not None]
    # A ClusterNetworkPolicy rule that decided a side (Admin or Baseline tier) is the reason.
    tiered = [f"{s.pod} {s.direction} {'allowed' if s.allowed else 'denied'} by {s.decision.rule.comment()}"
              for s in sides if s.decision is not None and s.decision.rule is not None
              and s.allowed == v.allowed]
    if tiered:
        return "; ".join(tiered)
    if v.allowed:
        # Name the rules of the isolated sides; a side that is not isolated is only worth
        # mentioning when nothing is isolated at all.
        parts = [f"{s.pod} {s.direction} allowed by {', '.join(p.comment() for p in s.allowed_by)}"
                 for s in sides if s.isolated and not s.always]
        if parts:
            return "; ".join(parts)
        open_sides = [f"{s.pod} {s.direction}" for s in sides if not s.always]
        return "not isolated: " + ", ".join(open_sides) if open_sides else "always allowed"
    parts = []
    for s in sides:
        if not s.allowed:
            parts.append(f"{s.pod} is isolated for {s.direction} by "
                         f"{', '.join(s.isolated_by)} and no rule admits it")
    return "; ".join(parts)


def _endpoint_map(cluster: Cluster, family: int) -> dict[str, vd.Endpoint]:
    return {e.id: e for e in vd.endpoints(cluster) if e.ip(family)}


def compare(before: State, after: State, ports: list[tuple[int, str]] | None = None,
            family: int = 4) -> DiffResult:
    """The verdict of every ordered pair present on both sides, before and after."""
    eps_b = _endpoint_map(before.cluster, family)
    eps_a = _endpoint_map(after.cluster, family)
    out = DiffResult(only_before=sorted(set(eps_b) - set(eps_a)),
                     only_after=sorted(set(eps_a) - set(eps_b)))
    common = sorted(set(eps_b) & set(eps_a))
    cases = []
    for dst in common:
        if ports is not None:
            dports = list(ports)
        else:
            dports = sorted({(p.port, p.protocol) for p in eps_b[dst].ports} |
                            {(p.port, p.protocol) for p in eps_a[dst].ports})
        for src in common:
            if src != dst:
                cases.extend((src, dst, port, proto) for port, proto in dports)
    cases.sort(key=lambda c: (c[2], c[3], c[0], c[1]))
    for src, dst, port, proto in cases:
        vb = vd.verdict(before.firewalls, eps_b[src], eps_b[dst], port, proto, family)
        va = vd.verdict(after.firewalls, eps_a[src], eps_a[dst], port, proto, family)
        out.cells[(src, dst, port, proto)] = (vb.allowed, va.allowed)
        if vb.allowed == va.allowed:
            out.unchanged += 1
            out.unchanged_allowed += va.allowed
            continue
        change = Change(src, dst, port, proto, vb.allowed, va.allowed, _why(va))
        (out.opened if va.allowed else out.closed).append(change)
    return out


# --------------------------------------------------------------------------- output

def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def text(result: DiffResult) -> str:
    """The human report: a summary line, then closed and opened connections with reasons."""
    lines: list[str] = []
    if not result.changed:
        lines.append(f"no change: all {_plural(result.compared, 'connection')} checked have the "
                     "same verdict before and after")
    else:
        lines.append(f"{len(result.opened)} opened, {len(result.closed)} closed, "
                     f"{result.unchanged} unchanged ({_plural(result.compared, 'connection')} checked)")
    for title, changes in (("closed (allowed before, denied after)", result.closed),
                           ("opened (denied before, allowed after)", result.opened)):
        if not changes:
            continue
        lines += ["", f"{title}:"]
        w_src = max(len(c.src) for c in changes)
        w_dst = max(len(c.dst) for c in changes)
        w_port = max(len(f"{c.port}/{c.protocol}") for c in changes)
        for c in changes:
            lines.append(f"  {c.src.ljust(w_src)} -> {c.dst.ljust(w_dst)} "
                         f"{f'{c.port}/{c.protocol}'.ljust(w_port)}  {c.reason}")
    if result.only_before:
        lines += ["", f"only before (not compared): {', '.join(result.only_before)}"]
    if result.only_after:
        lines += ["", f"only after (not compared): {', '.join(result.only_after)}"]
    return "\n".join(lines) + "\n"


GRID = {(True, True): ".", (False, False): "X", (False, True): "+", (True, False): "!"}


def grid(result: DiffResult) -> str:
    """One truth table per port: . allowed, X blocked (both unchanged), + opened, ! closed,
    - a pod and itself (not compared)."""
    ports = sorted({(p, pr) for (_s, _d, p, pr) in result.cells}, key=lambda k: (k[0], k[1]))
    eps = sorted({k[0] for k in result.cells} | {k[1] for k in result.cells})
    if not eps:
        return "(nothing to compare)\n"
    width = max(len(e) for e in eps)
    out = ["legend: . allowed  X blocked  + opened  ! closed  - self (rows: from, columns: to)", ""]
    for port, proto in ports:
        out.append(f"{port}/{proto}")
        out.append(("-".ljust(width) + " " + " ".join(e.ljust(width) for e in eps)).rstrip())
        for f in eps:
            marks = []
            for t in eps:
                cell = result.cells.get((f, t, port, proto))
                marks.append(("-" if f == t else "?") if cell is None else GRID[cell])
            out.append((f.ljust(width) + " " + " ".join(m.ljust(width) for m in marks)).rstrip())
        out.append("")
    return "\n".join(out).rstrip() + "\n" + text(result).split("\n", 1)[0] + "\n"


def to_json(result: DiffResult) -> dict:
    return {"opened": [c.row() for c in result.opened],
            "closed": [c.row() for c in result.closed],
            "unchanged": result.unchanged,
            "compared": result.compared,
            "only_before": result.only_before,
            "only_after": result.only_after}


# --------------------------------------------------------------------------- command

@click.command(context_settings=CONTEXT)
@click.option("-f", "--filename", "base", multiple=True, metavar="PATH",
              help="Input common to both states, e.g. the namespaces and pods (repeatable).")
@click.option("--old", "--against", "old", multiple=True, metavar="PATH",
              help="Input only in the state before the change (repeatable; --against is the same).")
@click.option("--new", "new", multiple=True, metavar="PATH",
              help="Input only in the state after the change (repeatable).")
@click.option("--ports", help="Ports to check, e.g. 80/TCP,81/UDP (default: every port the destination declares).")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "grid"]), default="table",
              help="table: the changed connections with reasons; grid: truth tables with + and !; json.")
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default="ipv4")
@click.option("--legacy-namespace-isolation", is_flag=True,
              help="Honour the pre-v1 namespace annotation net.beta.kubernetes.io/network-policy (DefaultDeny).")
def diff(base, old, new, ports, fmt, family, legacy_namespace_isolation) -> None:
    """Which connections a change opens and which it closes.

    Before = the -f input plus --old; after = the -f input plus --new. Every ordered pair
    of endpoints present on both sides is checked; each changed connection is printed with
    the reason after the change. Example:

    \b
      netpol diff -f cluster.yaml --old policy-v1.yaml --new policy-v2.yaml
    """
    if not (base or old or new):
        raise InputError("netpol diff: nothing to compare; give --old and/or --new (and -f for the common part)")
    if "-" in base or ("-" in old and "-" in new):
        # stdin can be read once: it can feed one side, not both.
        raise InputError("netpol diff: stdin (-) can be given to --old or --new, not to both or to -f")
    before, after = load_pair(base, old, new, legacy=legacy_namespace_isolation)
    result = compare(before, after, vd.parse_ports(ports), 6 if family == "ipv6" else 4)
    if fmt == "json":
        click.echo(json.dumps(to_json(result), indent=2))
    elif fmt == "grid":
        click.echo(grid(result), nl=False)
    else:
        click.echo(text(result), nl=False)
