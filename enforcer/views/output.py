"""Text layouts shared by the commands: the explain table and render blocks.

(Truth tables and their comparison live in enforcer.views.reachability, next to the vocabulary
that builds expectations.)
"""
from __future__ import annotations

import shutil
import textwrap


def explain_table(rows: list[dict]) -> str:
    """Per policy: a header line, its targets, then one line per rule."""
    out = []
    for r in rows:
        targets = ", ".join(r["targets"]) or "(no pod matches)"
        out.append(f"{r['policy']}  podSelector: {r['pod_selector']}  policyTypes: {', '.join(r['policy_types'])}")
        out.append(f"  targets: {targets}")
        for rule in r["rules"]:
            out.append(textwrap.fill(rule["text"], width=100, initial_indent="  - ", subsequent_indent="    "))
        out.append("")
    if not rows:
        out.append("no network policies: every pod accepts and sends everything (Kubernetes default)")
    return "\n".join(out).rstrip() + "\n"


def side_by_side(blocks: list[tuple[str, str]], width: int | None = None) -> str:
    """Columns of text next to each other, each under its title."""
    width = width or shutil.get_terminal_size((200, 40)).columns
    col = max(30, (width - 3 * (len(blocks) - 1)) // len(blocks))
    columns = []
    for title, text in blocks:
        lines = [title, "-" * min(col, max(len(title), 8))]
        for line in text.expandtabs(2).splitlines():
            lines.extend(textwrap.wrap(line, col, subsequent_indent="    ", drop_whitespace=False) or [""])
        columns.append(lines)
    height = max(len(c) for c in columns)
    rows = []
    for i in range(height):
        cells = [(c[i] if i < len(c) else "").ljust(col) for c in columns]
        rows.append(" | ".join(cells).rstrip())
    return "\n".join(rows)


def render_block(pod: str, texts: list[tuple[str, str]]) -> str:
    header = f"# pod {pod}"
    # A backend may open with the same header line; say it once.
    texts = [(name, text[len(header) + 1:] if text.startswith(header + "\n") else text) for name, text in texts]
    if len(texts) == 1:
        return f"{header} ({texts[0][0]})\n{texts[0][1].rstrip()}\n"
    return f"{header}\n{side_by_side(texts)}\n"
