"""`netpol lab draw`: the topology picture of a running lab names every namespace, link
and address, and marks isolated pods."""
from __future__ import annotations

import pathlib

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
