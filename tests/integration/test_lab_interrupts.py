"""Interrupts at random points of ``lab up`` (root): nothing is left behind, nothing bogus
is reported, no interrupt is ignored. A handful of runs here (about 30-60 s in all); the
same runner does hundreds by hand: ``python -m tests.integration.lab_interrupts --runs 200``.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from tests.integration import lab_interrupts
from tests.integration.test_plugin import ROOT_DIR, by_prefix

pytestmark = pytest.mark.root

BUDGET = 15.0  # seconds of runs per test; at least MIN_RUNS whatever the machine's speed
MIN_RUNS = 5


def _backend() -> str:
    try:
        from backends import registry

        registry.get("nftables")
        return "nftables"
    except Exception:
        return "fake"


def test_interrupted_lab_up_leaves_nothing_and_reports_nothing_bogus():
    backend = _backend()
    window = lab_interrupts.up_seconds(backend)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    t0, runs = time.monotonic(), []
    while len(runs) < MIN_RUNS or time.monotonic() - t0 < BUDGET:
        sig = signal.SIGTERM if len(runs) % 3 == 2 else signal.SIGINT
        # Half the runs in the first 0.1 s (where the reports came from), half anywhere.
        delay = rng.uniform(0, 0.1) if len(runs) % 2 else rng.uniform(0, window * 1.1)
        runs.append(lab_interrupts.one(backend, delay, sig))
        if len(runs) >= 40:
            break
    bad = [f"{r.name} (delay {r.delay:.3f}s): {'; '.join(r.problems())}" for r in runs if r.problems()]
    assert not bad, f"seed {seed}, up takes {window:.2f}s:\n" + "\n".join(bad)
    # The runs did hit lab up at different points: some finished, some were cut short.
    assert any("interrupted" in r.stdout for r in runs)


INNER = """
from enforcer.model import Cluster, ContainerPort, Namespace, Pod

def test_up(netpol_lab):
    pods = [Pod(ns, n, {{"app": n}}, (), (ContainerPort(80, "TCP"),))
            for ns, n in (("x", "a"), ("x", "b"), ("y", "c"))]
    cluster = Cluster({{n: Namespace(n, {{}}) for n in ("x", "y")}}, {{p.key: p for p in pods}}, {{}}, {{}})
    print("GO", flush=True)
    lab = netpol_lab(cluster, backend={backend!r})
    print("UP", flush=True)
    import time
    time.sleep(2)
"""
SUMMARY = re.compile(r"\bin [\d.]+s( \(\d+:\d\d:\d\d\))?( =+)?$", re.M)  # "1 passed in 2.1s"


def test_interrupted_pytest_runs_print_one_summary_and_leave_nothing(tmp_path):
    backend = _backend()
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER.format(backend=backend)))
    rng = random.Random()
    t0, n, bad = time.monotonic(), 0, []
    while n < 3 or time.monotonic() - t0 < BUDGET / 3:
        n += 1
        prefix = f"npt-pi{uuid.uuid4().hex[:4]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q",
             "-o", f"netpol_lab_prefix={prefix}", "test_inner.py"],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT_DIR), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        seen = ""
        for line in proc.stdout:  # type: ignore[union-attr]
            seen += line
            if "GO" in line:
                break
        time.sleep(rng.uniform(0, 0.15) if n % 2 else rng.uniform(0, 1.0))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        out = seen + out
        problems = []
        if len(SUMMARY.findall(out)) != 1:
            problems.append(f"{len(SUMMARY.findall(out))} summaries")
        if "Error" in out.replace("KeyboardInterrupt", ""):
            problems.append("an error was reported")
        if proc.returncode not in (0, 2):  # passed (signal after the test), or interrupted
            problems.append(f"exit code {proc.returncode}")
        left = by_prefix(prefix)
        if left:
            problems.append(f"left behind: {left}")
        if problems:
            bad.append(f"run {n}: {'; '.join(problems)}\n{out[-1500:]}")
        if n >= 12:
            break
    assert not bad, "\n".join(bad)
