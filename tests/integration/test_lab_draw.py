"""`netpol lab draw`: the topology picture of a running lab names every namespace, link
and address, and marks isolated pods."""
from __future__ import annotations

import pathlib
import shutil

import pytest
from click.testing import CliRunner

from enforcer.cli import cli

pytestmark = pytest.mark.root
EX = pathlib.Path(__file__).resolve().parents[2] / "examples" / "three-tier"


def test_draw_shows_namespaces_links_and_isolation(netpol_lab):
    lab = netpol_lab(str(EX), backend="nftables")
    out = CliRunner().invoke(cli, ["lab", "draw", "--name", lab.name], catch_exceptions=False).output
    assert out.startswith("graph lab {")
    for key, pod in lab.cluster.pods.items():
        assert f'"{key}"' in out and pod.ips[0] in out
    db_line = next(line for line in out.splitlines() if line.startswith('  "prod/db" ['))
    assert "isolated: ingress+egress" in db_line and "firebrick" in db_line
    web_line = next(line for line in out.splitlines() if line.startswith('  "prod/web" ['))
    assert "isolated" not in web_line


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_pictures_go_to_stdout_or_the_named_file_only(netpol_lab, tmp_path, monkeypatch):
    lab = netpol_lab(str(EX), backend="nftables")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["lab", "draw", "--name", lab.name, "-o", "svg"], catch_exceptions=False)
    assert r.exit_code == 0 and b"<svg" in r.stdout_bytes and "prod/db" in r.stdout
    r = CliRunner().invoke(cli, ["lab", "draw", "--name", lab.name, "-o", "png"], catch_exceptions=False)
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    assert list(tmp_path.iterdir()) == []  # no surprise LAB.svg / LAB.png
    out = tmp_path / "lab.svg"
    r = CliRunner().invoke(cli, ["lab", "draw", "--name", lab.name, "-o", "svg", "--out-file", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0 and r.stdout == "" and "<svg" in out.read_text()
    assert list(tmp_path.iterdir()) == [out]
