"""Matrix pictures a person wants to look at: grouped by namespace, a legend, allowed,
partly allowed and denied pairs styled apart, ports collapsed, few edges at the
three-tier size; images go to stdout or to --out-file, never to a file nobody named."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enforcer.views import pictures

ROOT = Path(__file__).resolve().parents[2]
EX = str(ROOT / "examples" / "three-tier")


def netpol(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], cwd=cwd, capture_output=True, timeout=120)


def test_port_ranges():
    assert pictures.port_ranges([(81, "TCP"), (80, "TCP"), (53, "UDP"), (82, "TCP"), (90, "TCP")]) == \
        "80-82/TCP, 90/TCP, 53/UDP"


def _row(a, b, port, ok, proto="TCP"):
    return {"from": a, "to": b, "port": port, "protocol": proto, "allowed": ok}


def test_pairs_all_some_none():
    rows = [_row("x/a", "x/b", 80, True), _row("x/a", "x/b", 81, True),
            _row("x/b", "x/a", 80, True), _row("x/b", "x/a", 81, False),
            _row("x/a", "y/c", 80, False), _row("x/a", "y/c", 81, False)]
    assert pictures._pairs(rows) == {("x/a", "x/b"): ("all", "all"),
                                     ("x/b", "x/a"): ("some", "80/TCP (not 81/TCP)"),
                                     ("x/a", "y/c"): ("none", "")}


def test_three_tier_dot_is_readable():
    dot = netpol("matrix", "-f", EX, "--ports", "80/TCP,3306/TCP", "-o", "dot").stdout.decode()
    edges = [ln.strip() for ln in dot.splitlines() if "->" in ln]
    assert len(edges) <= 30  # was 74 edges, each labelled 80/TCP,3306/TCP
    assert 'subgraph cluster_legend' in dot and "red, dashed: denied" in dot
    assert '"prod/web" -> "prod/db" [color=firebrick, style=dashed, arrowhead=tee];' in edges
    assert '"prod/api" -> "prod/db" [color=darkorange, fontcolor=darkorange, label="3306/TCP (not 80/TCP)"];' in edges
    # every pod of dev is denied into prod/db: one edge from the namespace's box
    assert '"dev/api" -> "prod/db" [color=firebrick, style=dashed, arrowhead=tee, ltail=cluster_1];' in edges
    assert 'label="db\\nisolated: ingress, egress", penwidth=2.5' in dot
    assert not any("80/TCP,3306/TCP" in e for e in edges)


def test_nothing_isolated_says_so():
    dot = netpol("matrix", "-f", str(ROOT / "examples" / "concepts" / "cluster.yaml"), "--ports", "80/TCP",
                 "-o", "dot").stdout.decode()
    assert "->" not in dot.replace("<", "")
    assert "no pod is isolated: every pair is allowed" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_images_go_to_stdout_or_the_named_file_only(tmp_path):
    r = netpol("matrix", "-f", EX, "--ports", "3306/TCP", "-o", "png", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    r = netpol("matrix", "-f", EX, "--ports", "3306/TCP", "-o", "svg", cwd=tmp_path)
    assert r.returncode == 0 and b"<svg" in r.stdout
    assert list(tmp_path.iterdir()) == []  # no surprise matrix.png / matrix.svg
    out = tmp_path / "m.svg"
    r = netpol("matrix", "-f", EX, "--ports", "3306/TCP", "-o", "svg", "--out-file", str(out), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == b"" and out.read_text().lstrip().startswith("<?xml")
    assert r.stderr.decode() == f"wrote {out}\n"


def test_edges_to_and_from_a_namespace_box_merge_only_equal_verdicts():
    # o/x reaches neither pod of a: one edge into a's box. From a's pods to o/x the
    # verdicts differ: two edges, no box.
    rows = [_row("o/x", "a/1", 80, False), _row("o/x", "a/2", 80, False),
            _row("a/1", "o/x", 80, True), _row("a/2", "o/x", 80, False),
            _row("a/1", "a/2", 80, True), _row("a/2", "a/1", 80, True)]
    edges = [ln.strip() for ln in pictures.matrix_dot(rows).splitlines() if "->" in ln]
    assert '"o/x" -> "a/1" [color=firebrick, style=dashed, arrowhead=tee, lhead=cluster_0];' in edges
    assert not any(e.startswith('"o/x" -> "a/2"') for e in edges)
    assert any(e.startswith('"a/1" -> "o/x"') and "ltail" not in e for e in edges)
    assert any(e.startswith('"a/2" -> "o/x"') and "ltail" not in e for e in edges)
    assert len(edges) == 5  # the box edge, a's two to o/x, a's two inside a
