"""Pictures: who can talk to whom, as Graphviz dot (and SVG/PNG through the dot program)."""
from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict

from enforcer.errors import NetpolError
from enforcer.ir import DIRECTIONS


def _q(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


GREEN, RED, AMBER = "forestgreen", "firebrick", "darkorange"


def port_ranges(ports: list[tuple[int, str]]) -> str:
    """[(80, TCP), (81, TCP), (53, UDP)] -> '80-81/TCP, 53/UDP': consecutive ports as ranges."""
    by_proto: dict[str, list[int]] = defaultdict(list)
    for port, proto in ports:
        by_proto[proto].append(port)
    out = []
    for proto in sorted(by_proto):
        nums = sorted(set(by_proto[proto]))
        start = prev = nums[0]
        for n in nums[1:] + [None]:  # type: ignore[list-item]
            if n is not None and n == prev + 1:
                prev = n
                continue
            out.append(f"{start}/{proto}" if start == prev else f"{start}-{prev}/{proto}")
            if n is not None:
                start = prev = n
    return ", ".join(out)


def _pairs(rows: list[dict]) -> dict[tuple[str, str], tuple[str, str]]:
    """(from, to) -> (status, label): status all | none | some; the label says which ports
    ('all' when every port checked for the pair is allowed)."""
    checked: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    allowed: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for r in rows:
        key = (r["from"], r["to"])
        checked[key].append((r["port"], r["protocol"]))
        if r["allowed"]:
            allowed[key].append((r["port"], r["protocol"]))
    out = {}
    for key, ports in checked.items():
        ok = allowed.get(key, [])
        if len(ok) == len(ports):
            out[key] = ("all", "all")
        elif not ok:
            out[key] = ("none", "")
        else:
            denied = [p for p in ports if p not in ok]
            out[key] = ("some", f"{port_ranges(ok)} (not {port_ranges(denied)})")
    return out


_STYLE = {"all": f'color={GREEN}, fontcolor={GREEN}',
          "some": f'color={AMBER}, fontcolor={AMBER}',
          "none": f'color={RED}, style=dashed, arrowhead=tee'}


def _legend(isolation_known: bool, nothing_drawn: bool = False) -> list[str]:
    rows = [("black", "no pod is isolated: every pair is allowed (the Kubernetes default)")] if nothing_drawn else []
    rows += [(GREEN, "green: allowed (label: the ports; all = every port checked)"),
            (AMBER, "orange: some ports allowed (label: which, and which not)"),
            (RED, "red, dashed: denied on every port checked"),
            ("black", "an edge from or to a namespace box: every pod in it")]
    if isolation_known:
        rows += [("black", "bold box: isolated (ingress, egress) by a policy"),
                 ("black", "pairs not drawn: allowed, nothing isolates either end")]
    cells = "".join(f'<tr><td align="left"><font color="{c}">{t}</font></td></tr>' for c, t in rows)
    return ["  subgraph cluster_legend { label=\"legend\"; style=dashed; fontsize=10;",
            f'    legend [shape=plaintext, fontsize=9, label=<<table border="0" cellspacing="1">{cells}</table>>];',
            "  }"]


def matrix_dot(rows: list[dict], title: str = "", isolated: dict[str, set[str]] | None = None) -> str:
    """Who can talk to whom, for a person to read: endpoints grouped by namespace, allowed,
    partly allowed and denied pairs styled apart, ports collapsed ("all", ranges), a
    legend. With ``isolated`` (pod -> {"ingress", "egress"}), pairs allowed on every port
    between endpoints that nothing isolates are left out (Kubernetes' default: everything
    is allowed), and isolated pods are drawn bold. Edges from every pod of a namespace to
    one endpoint (or from one endpoint to every pod of a namespace) with the same verdict
    become one edge from (to) the namespace's box."""
    pairs = _pairs(rows)
    nodes = sorted({n for key in pairs for n in key})
    by_ns: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        by_ns[n.split("/")[0] if "/" in n else ""].append(n)
    cluster_of = {ns: f"cluster_{i}" for i, ns in enumerate(sorted(by_ns)) if ns}
    iso = isolated or {}

    def drawn(a: str, b: str) -> bool:
        status = pairs[(a, b)][0]
        return status != "all" or isolated is None or "ingress" in iso.get(b, ()) or "egress" in iso.get(a, ())

    edges = {k: v for k, v in pairs.items() if drawn(*k)}
    lines = ["digraph netpol {", "  rankdir=LR; compound=true; newrank=true; nodesep=0.3; ranksep=1.2;",
             "  node [shape=box, style=rounded, fontsize=11]; edge [fontsize=9];"]
    ports = port_ranges(sorted({(r["port"], r["protocol"]) for r in rows})) if rows else ""
    if title:
        lines.append(f"  label={_q(f'{title}: who can talk to whom' + (f' (ports {ports})' if ports else ''))}; labelloc=t;")
    for ns, members in sorted(by_ns.items()):
        decl = []
        for m in members:
            short = m.split("/", 1)[1] if "/" in m else m
            dirs = [d for d in DIRECTIONS if d in iso.get(m, ())]
            label = short + (f"\\nisolated: {', '.join(dirs)}" if dirs else "")
            attrs = [f"label={_q(label)}"] + (["penwidth=2.5"] if dirs else []) + ([] if ns else ["shape=ellipse"])
            decl.append(f"{_q(m)} [{', '.join(attrs)}];")
        if ns:
            lines.append(f"  subgraph {cluster_of[ns]} {{ label={_q('namespace ' + ns)};")
            lines += [f"    {d}" for d in decl]
            lines.append("  }")
        else:
            lines += [f"  {d}" for d in decl]
    # edges from namespace boxes first, then to them: a pair merged into one is not merged again
    out = _box_edges(by_ns, nodes, edges, cluster_of, from_box=True)
    out += _box_edges(by_ns, nodes, edges, cluster_of, from_box=False)
    for (a, b), (status, label) in sorted(edges.items()):
        out.append(_edge(a, b, status, label))
    lines += sorted(out)
    lines += _legend(isolated is not None, nothing_drawn=bool(pairs) and not out)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _box_edges(by_ns: dict[str, list[str]], nodes: list[str], edges: dict[tuple[str, str], tuple[str, str]],
               cluster_of: dict[str, str], from_box: bool) -> list[str]:
    """One edge from (``from_box``) or to a namespace's box for each endpoint that every
    member of the namespace (but itself) reaches, or is reached by, with the same verdict;
    the member edges it stands for are taken out of ``edges``."""
    out: list[str] = []
    for ns, members in sorted(by_ns.items()):
        if not ns or len(members) < 2:
            continue
        for other in nodes:
            if other in members:
                continue
            merged = [(m, other) if from_box else (other, m) for m in members]
            verdicts = {edges.get(pair) for pair in merged}
            if len(verdicts) == 1 and None not in verdicts:
                status, label = verdicts.pop()  # type: ignore[misc]
                end = "ltail" if from_box else "lhead"
                out.append(_edge(*merged[0], status, label, f"{end}={cluster_of[ns]}"))
                for pair in merged:
                    del edges[pair]
    return out


def _edge(a: str, b: str, status: str, label: str, extra: str = "") -> str:
    attrs = [_STYLE[status]] + ([f"label={_q(label)}"] if label else []) + ([extra] if extra else [])
    return f"  {_q(a)} -> {_q(b)} [{', '.join(attrs)}];"


def render_dot(dot: str, fmt: str, path: str | None = None) -> bytes | None:
    """Run Graphviz: write ``path``, or return the image's bytes when ``path`` is None
    (the caller writes them to stdout: never a file the user did not name)."""
    exe = shutil.which("dot")
    if exe is None:
        raise NetpolError("-o svg/png needs Graphviz's dot program (apt-get install graphviz); -o dot prints the source")
    args = [exe, f"-T{fmt}"] + (["-o", path] if path else [])
    proc = subprocess.run(args, input=dot.encode(), capture_output=True)
    if proc.returncode != 0:
        raise NetpolError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return None if path else proc.stdout


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
