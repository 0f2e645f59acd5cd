"""The systemd unit for the daemon: what it promises, and ``systemd-analyze verify``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

UNIT = os.path.join(os.path.dirname(__file__), "..", "..", "vagrant", "netpol-enforcer.service")


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = open(UNIT).read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")) or "=" not in line:
            continue
        k, _, v = line.partition("=")
        out.setdefault(k, []).append(" ".join(v.split()))
    return out


def test_unit_promises():
    d = directives()
    assert d["Type"] == ["notify"] and d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert set(d["CapabilityBoundingSet"][0].split()) == {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}
    assert set(d["AmbientCapabilities"][0].split()) == {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelModules"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"] and "/run/netpol-enforcer" in d["ReadWritePaths"][0]
    assert d["RestrictNamespaces"] == ["net"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["RuntimeDirectoryPreserve"] == ["yes"]  # the last good versions outlive a restart
    assert "PrivateNetwork" not in d
    run = d["ExecStart"][0]
    assert " run " in run and "--watch" in run and "--state-file /run/netpol-enforcer/daemon.json" in run


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    netpol = os.path.join(os.path.dirname(sys.executable), "netpol")
    if not os.path.exists(netpol):
        pytest.skip("the netpol entry point is not installed next to this python")
    unit = tmp_path / "netpol-enforcer.service"
    unit.write_text(open(UNIT).read().replace("/usr/local/bin/netpol", netpol))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "netpol-enforcer.service" not in proc.stderr, proc.stderr
