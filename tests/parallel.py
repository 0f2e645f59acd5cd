"""``make test``: the suite as two pytest runs at once, tests/integration beside
tests/unit + tests/api.

Why: tests/api spends most of its ~8 minutes waiting on purpose (an API server kept away
for the 20 s docs/daemon.md promises, restarts, backoffs, kubectl round trips): about a
third of one core. Run beside tests/integration (the longest part), that waiting overlaps
its work instead of adding to it; tests/unit (pure, a few minutes of CPU) goes with
tests/api so that both lanes take about as long. Two fixed lanes, not pytest-xdist: the
lanes share nothing a test could trip over. Every lab has a unique name (``npt-<hex>``),
so every network namespace too; only tests/api starts control planes (its session one
and the modules' private ones), each on ports of its own; tests that look for leftovers
look by their own names or prefixes; tests/unit needs no root and touches no namespace.

The main lane (tests/integration and whatever else is under tests/ but not in the other
lane) prints as it goes; the other lane's output follows when both are done. The
exit status is the first failing lane's (0 when both pass). SIGINT, SIGTERM and SIGHUP
are passed to both runs, whose labs' teardown then runs as usual; if this process dies,
both runs get SIGTERM (PR_SET_PDEATHSIG). ``NETPOL_TEST_SERIAL=1`` runs one pytest over
the whole suite instead.

    python -m tests.parallel [pytest options]     # what `make test` runs
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESIDE = ["tests/unit", "tests/api"]  # the second lane; the main lane is the rest


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def lanes(args: list[str]) -> list[tuple[str, list[str]]]:
    """The two pytest command lines: everything but BESIDE, then BESIDE (its own cache
    off: two runs writing one .pytest_cache would race)."""
    pytest = [sys.executable, "-m", "pytest", *args]
    return [("main", [*pytest, "tests", *(f"--ignore={d}" for d in BESIDE)]),
            ("unit+api", [*pytest, "-p", "no:cacheprovider", *BESIDE])]


def status(codes: list[int]) -> int:
    """The first failing lane's exit status; pytest's 5 (nothing collected) is no failure."""
    return next((c for c in codes if c not in (0, 5)), 0)


def main(argv: list[str]) -> int:
    if os.environ.get("NETPOL_TEST_SERIAL") == "1":
        return subprocess.call([sys.executable, "-m", "pytest", *argv, "tests"], cwd=ROOT)
    (main_cmd, beside_cmd) = (cmd for _, cmd in lanes(argv))
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as beside_log:
        # Own sessions: a terminal's Ctrl-C reaches this process only, and is passed on
        # once (a second interrupt would cut the labs' teardown short).
        beside = subprocess.Popen(beside_cmd, cwd=ROOT, stdout=beside_log, stderr=subprocess.STDOUT,
                                  start_new_session=True, preexec_fn=_die_with_parent)
        rest = subprocess.Popen(main_cmd, cwd=ROOT, start_new_session=True, preexec_fn=_die_with_parent)
        procs = [rest, beside]

        def forward(signum, _frame) -> None:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, forward)
        codes = [p.wait() for p in procs]
        beside_log.seek(0)
        print(f"\n{'=' * 30} {' '.join(BESIDE)} (ran beside the rest) {'=' * 30}", flush=True)
        sys.stdout.write(beside_log.read())
    took = time.monotonic() - t0
    print(f"\nmake test: {' '.join(f'{n} exit {c}' for (n, _), c in zip(lanes(argv), codes))}; "
          f"{took / 60:.1f} min wall", flush=True)
    return status(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
