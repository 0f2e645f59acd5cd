"""`make bench-quick` in CI: the quick benchmark runs as root in under two minutes and no
ratio is more than twice as bad as its committed reference (benchmarks/bounds.json).

It writes its results to a temporary directory (never into the repository) and leaves no
namespace behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root


def _bench_namespaces() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("npt-bench-")}
    except FileNotFoundError:
        return set()


@pytest.mark.timeout(300)
def test_quick_benchmark_passes_its_bounds_in_under_two_minutes(tmp_path):
    before = _bench_namespaces()
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    took = time.monotonic() - t
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    data = json.loads((tmp_path / "quick.json").read_text())
    assert data["errors"] == [], report
    assert all(v["ok"] for v in data["verdicts"]), report
    assert len(data["verdicts"]) >= 8
    # Every ratio was really measured in this run.
    assert all(v is not None for v in data["measured"].values()), data["measured"]
    assert took < 120, f"quick benchmark took {took:.0f} s (budget 120 s)\n{report}"
    left = {n for n in _bench_namespaces() - before if not _owner_alive(n)}
    assert not left, f"the benchmark left namespaces behind: {sorted(left)}"


def _owner_alive(netns: str) -> bool:
    """Benchmark namespaces carry their process id (npt-bench-<pid>-<n>, npt-bench-dp<pid>-...):
    one whose process still runs belongs to another benchmark running beside this test,
    not to a leak of ours."""
    import re

    m = re.match(r"npt-bench-\D*(\d+)", netns)
    return bool(m) and os.path.exists(f"/proc/{m.group(1)}")
