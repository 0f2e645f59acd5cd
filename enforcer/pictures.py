"""Pictures: who can talk to whom, as Graphviz dot (and SVG/PNG through the dot program)."""
from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict

from enforcer.errors import NetpolError


def _q(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


def matrix_dot(rows: list[dict], title: str = "") -> str:
    """One node per endpoint, clustered by namespace; one edge per allowed (from, to),
    labelled with the allowed ports. Pairs with nothing allowed get no edge."""
    allowed: dict[tuple[str, str], list[str]] = defaultdict(list)
    nodes: set[str] = set()
    for r in rows:
        nodes.update((r["from"], r["to"]))
        if r["allowed"]:
            allowed[(r["from"], r["to"])].append(f"{r['port']}/{r['protocol']}")
    by_ns: dict[str, list[str]] = defaultdict(list)
    for n in sorted(nodes):
        by_ns[n.split("/")[0] if "/" in n else ""].append(n)
    lines = ["digraph netpol {", "  rankdir=LR; node [shape=box, style=rounded];"]
    if title:
        lines.append(f"  label={_q(title + ': allowed connections')}; labelloc=t;")
    for i, (ns, members) in enumerate(sorted(by_ns.items())):
        if ns:
            lines.append(f"  subgraph cluster_{i} {{ label={_q('namespace ' + ns)};")
            lines += [f"    {_q(m)} [label={_q(m.split('/', 1)[1])}];" for m in members]
            lines.append("  }")
        else:
            lines += [f"  {_q(m)} [shape=ellipse];" for m in members]
    for (a, b), ports in sorted(allowed.items()):
        lines.append(f"  {_q(a)} -> {_q(b)} [label={_q(','.join(ports))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_dot(dot: str, fmt: str, path: str) -> None:
    exe = shutil.which("dot")
    if exe is None:
        raise NetpolError("-o svg/png needs Graphviz's dot program (apt-get install graphviz); -o dot prints the source")
    proc = subprocess.run([exe, f"-T{fmt}", "-o", path], input=dot, text=True, capture_output=True)
    if proc.returncode != 0:
        raise NetpolError(f"dot failed: {proc.stderr.strip()}")


def topology_dot(lab: str, node_netns: str, bridge: str, gateways: tuple[str, ...],
                 endpoints: list[tuple[str, str, str, str, tuple[str, ...]]],
                 isolated: dict[str, str]) -> str:
    """A lab as built: the node namespace with its bridge and gateway, and every pod or
    external host namespace on its veth. ``endpoints`` are (key, kind, netns, node-side
    link, addresses); ``isolated`` says, per pod, which directions are isolated."""
    node_label = _q(bridge + "\\n" + ", ".join(gateways))
    lines = ["graph lab {", "  rankdir=LR; node [shape=box, style=rounded, fontsize=10];",
             f"  label={_q('lab ' + lab + ': every box is a network namespace')}; labelloc=t;",
             f"  subgraph cluster_node {{ label={_q('node netns ' + node_netns)};",
             f"    bridge [label={node_label}, shape=ellipse];", "  }"]
    for key, kind, netns, link, ips in sorted(endpoints):
        iso = isolated.get(key, "")
        label = f"{key}\\n{netns}\\n{', '.join(ips)}" + (f"\\nisolated: {iso}" if iso else "")
        shape = "box" if kind == "pod" else "octagon"
        colour = ', color="firebrick"' if iso else ""
        lines.append(f"  {_q(key)} [label=\"{label}\", shape={shape}{colour}];")
        lines.append(f"  bridge -- {_q(key)} [label={_q(link + ' / eth0')}, fontsize=8];")
    lines.append("}")
    return "\n".join(lines) + "\n"
