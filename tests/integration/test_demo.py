"""`make demo`'s script runs end to end (real lab, real packets) and says what it should."""
from __future__ import annotations

import os
import pathlib
import subprocess
import time

import pytest

pytestmark = pytest.mark.root
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_demo_runs_in_under_a_minute():
    env = dict(os.environ, COLUMNS="160", PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
    t = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "prod/web -> prod/db 3306/TCP" in out and ": denied." in out
    assert "prod/api -> prod/db 3306/TCP" in out and ": allowed." in out
    assert "0 wrong, 90 correct" in out  # the kernel agrees with the model on every pair
    assert "DROP" in out  # the drop stream saw a denied packet
    # the shop: Deployments grouped, a Service traced to its backends' targetPort
    assert "shop/frontend ." in out and "-> shop/cart-" in out and "9090/TCP" in out
    assert elapsed < 60
