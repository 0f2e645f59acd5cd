"""A failed comparison, written for the person who reads a test log.

The full upstream-style report (expected, observed and comparison tables for every port,
``reachability.compare``) is right for ``netpol lab probe --expect``; in a pytest failure
one wrong cell drowned in 200 lines of tables of ports that were fine. Here:

    line 1      the first wrong cell and the count (all that ``pytest -rf`` shows)
    then        at most MAX_CELLS wrong cells, each with the model's reason (the policy
                and the rule that allow it, or the policies that isolate without one)
    then        one compact table per port that has a wrong cell, 100 columns at most
    verbose     the full report too (``pytest -vv``)

Pure except ``model_reasons``, which reads the lab's state.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from enforcer.views.reachability import (ALLOWED, BLOCKED, LEGEND, SELF, CellKey, Comparison, PortKey,
                                   WrongCell, _index, port_label)

WIDTH = 100
MAX_CELLS = 5
LABEL = 32  # longest endpoint name shown whole in a row label


def _clip(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _wrap(text: str, indent: str, width: int = WIDTH) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False) or [indent]


def headline(comparison: Comparison) -> str:
    """The first line: what ``pytest -rf`` prints after ``AssertionError:``."""
    n, total = comparison.wrong, comparison.wrong + comparison.correct
    first = comparison.wrong_cells[0]  # first: a summary line cut at the terminal's width keeps it
    count = "1 wrong cell" if n == 1 else f"and {n - 1} more wrong cells"
    return _clip(f"{first} ({count} of {total})")


def _mark(v: bool | None) -> str:
    return {True: ALLOWED, False: BLOCKED}.get(v, "?")  # type: ignore[arg-type]


def port_table(key: PortKey, endpoints: list[str], observed: Mapping[CellKey, bool],
               wrong: set[CellKey], expected: Mapping[CellKey, bool], width: int = WIDTH) -> list[str]:
    """One port: what was observed, wrong cells in brackets; columns numbered as the rows.
    Too wide for ``width``: only the rows and columns that have a wrong cell."""
    number = {e: i + 1 for i, e in enumerate(endpoints)}
    here = [c for c in wrong if (c[2], c[3]) == key]
    rows, cols = list(endpoints), list(endpoints)
    digits = len(str(len(endpoints)))
    names = min(LABEL, max(len(e) for e in endpoints))
    label_w = digits + 2 + names + 1

    def fits(ncols: int) -> bool:
        return label_w + 3 * ncols <= width

    note = ""
    if not fits(len(cols)):
        rows = [e for e in endpoints if e in {c[0] for c in here}]
        cols = [e for e in endpoints if e in {c[1] for c in here}]
        note = "only the rows and columns with a wrong cell (all of them with -vv)"
        while not fits(len(cols)):
            cols.pop()
            note = "only the rows and some columns with a wrong cell (all of them with -vv)"
    n_wrong = len(here)
    n_all = sum(1 for c in expected if (c[2], c[3]) == key)
    head = [_clip(f"{port_label(key)}: {n_wrong} wrong, {n_all - n_wrong} correct "
                  "(what was observed; [ ] wrong; rows from, columns to)", width)]
    if note:
        head.append(note)
    head.append(" " * label_w + "".join(f"{number[c]:^3}" for c in cols).rstrip())
    for f in rows:
        name = f if len(f) <= names else f[:names - 1] + "~"
        line = f"{number[f]:>{digits}}  {name:<{names}} "
        for t in cols:
            k = (f, t, key[0], key[1])
            if f == t:
                line += f" {SELF} "
            elif k not in expected:
                line += "   "
            elif k in wrong:
                line += f"[{_mark(observed.get(k))}]"
            else:
                line += f" {_mark(observed.get(k))} "
        head.append(line.rstrip())
    return head


def failure_text(comparison: Comparison, expected_rows: Iterable[Mapping],
                 observed_rows: Iterable[Mapping], *, context: str,
                 reasons: Callable[[list[WrongCell]], dict[CellKey, str]] | None = None,
                 verbose: bool = False, width: int = WIDTH, max_cells: int = MAX_CELLS) -> str:
    """The message of a failed ``assert_matches`` (see the module's docstring)."""
    exp, endpoints, ports = _index(expected_rows)
    obs, _, _ = _index(observed_rows)
    cells = comparison.wrong_cells
    shown = cells[:max_cells]
    why: dict[CellKey, str] = {}
    if reasons is not None:
        try:
            why = reasons(shown)
        except Exception as e:  # a reason is a help; never hide the failure behind it
            why = {(c.frm, c.to, c.port, c.protocol): f"(no reason: {e})" for c in shown}
    out = [headline(comparison),
           _clip(f"{context}: {comparison.wrong} wrong, {comparison.correct} correct", width)]
    out.append(f"wrong cells ({len(shown)} of {len(cells)} shown), with the model's reason:"
               if why else f"wrong cells ({len(shown)} of {len(cells)} shown):")
    for c in shown:
        out += _wrap(str(c), "  ", width)
        reason = why.get((c.frm, c.to, c.port, c.protocol))
        if reason:
            out += _wrap(reason, "    ", width)
    wrong = {(c.frm, c.to, c.port, c.protocol) for c in cells}
    for key in ports:
        if any((c[2], c[3]) == key for c in wrong):
            out.append("")
            out += port_table(key, endpoints, obs, wrong, exp, width)
    out += ["", _clip(LEGEND, width)]
    if verbose:
        out += ["", "full tables:", comparison.text.rstrip()]
    else:
        out.append("full expected/observed tables of every port: run pytest with -vv")
    return "\n".join(out)


# ---------------------------------------------------------------- the model's reasons


def verdict_reason(cluster, v) -> str:
    """One line: the model's verdict and the policy rules behind it."""
    from enforcer.views import explain

    word = "allowed" if v.allowed else "blocked"
    if v.always:
        return f"model: {word}: {v.always}"
    port = f"{v.port}/{v.protocol}"
    parts = []
    for s in (v.egress, v.ingress):
        if s is None:
            continue
        d = s.direction
        other = v.dst.id if d == "egress" else v.src.id
        if s.always:
            parts.append(f"{s.pod} {d}: {s.always}")
        elif not s.isolated:
            parts.append(f"{s.pod} {d} is not isolated")
        elif s.allowed_by:
            p = s.allowed_by[0]
            pol = cluster.policies.get(p.policy)
            rule = explain.describe_rule(pol, d, p.rule_index) if pol is not None else p.comment()
            parts.append(f"{s.pod} {d} allowed by {rule}")
        else:
            parts.append(f"{s.pod} {d} is isolated by {', '.join(s.isolated_by)} and no rule of "
                         f"{'it' if len(s.isolated_by) == 1 else 'them'} allows {other} on {port}")
    return f"model: {word}: " + "; ".join(parts) if parts else f"model: {word}"


def model_reasons(name: str, family: int = 4) -> Callable[[list[WrongCell]], dict[CellKey, str]]:
    """A ``reasons`` callback for ``failure_text`` that asks the lab's model."""

    def reasons(cells: list[WrongCell]) -> dict[CellKey, str]:
        from enforcer.views import verdict
        from enforcer.lab import control, state

        st = state.load(name)
        firewalls = control.firewalls_of(st)
        out = {}
        for c in cells:
            try:
                src = verdict.resolve(st.cluster, c.frm)
                dst = verdict.resolve(st.cluster, c.to)
                v = verdict.verdict(firewalls, src, dst, c.port, c.protocol, family)
                out[(c.frm, c.to, c.port, c.protocol)] = verdict_reason(st.cluster, v)
            except Exception as e:
                out[(c.frm, c.to, c.port, c.protocol)] = f"model: no verdict ({e})"
        return out

    return reasons
