"""Interrupt ``lab up`` at random points and check that nothing is left and nothing bogus
is reported (issue: a Ctrl-C within the first 0.1 s of ``lab up`` once reported a
FileNotFoundError, once printed two pytest summaries, once was ignored).

Used by tests/integration/test_lab_interrupts.py (a few runs); run it by hand for many:

    sudo .venv/bin/python -m tests.integration.lab_interrupts --runs 200 [--signal TERM]

Each run starts a Python process that brings up a small lab (three pods, one policy) and
sends it the signal at a random moment between "about to call up" and "up returned" (the
window is measured first). A run passes when afterwards no namespace, server process or
state directory of its lab exists, its stderr has no traceback, and it did not finish
``up`` as if the signal had never come.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import os, signal, sys, time
from enforcer.lab import control
from enforcer.model import Cluster, ContainerPort, LabelSelector, Namespace, NetworkPolicy, Pod
name, backend = sys.argv[1], sys.argv[2]
pods = [Pod(ns, n, {"app": n}, (), (ContainerPort(80, "TCP"), ContainerPort(81, "UDP")))
        for ns, n in (("x", "a"), ("x", "b"), ("y", "c"))]
deny = NetworkPolicy("x", "deny", LabelSelector(), frozenset({"Ingress"}))
cluster = Cluster({n: Namespace(n, {"kubernetes.io/metadata.name": n}) for n in ("x", "y")},
                  {p.key: p for p in pods}, {deny.key: deny}, {})
try:
    print(f"go {time.monotonic():.6f}", flush=True)
    control.up(name, cluster, backend, owned=True)
    print(f"up {time.monotonic():.6f}", flush=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control.down(name)
except KeyboardInterrupt:
    if control.mine(name):  # interrupted after up returned: the caller's own cleanup
        control.down(name)
    print("interrupted", flush=True)
    sys.exit(130)
"""
# SIGTERM: the way the CLI and the pytest plugin treat it (an exception that unwinds)
CHILD_TERM = "import signal\nsignal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))\n"


@dataclass
class Run:
    name: str
    delay: float
    returncode: int
    stdout: str
    stderr: str
    left: list[str]
    sent_at: float

    def problems(self) -> list[str]:
        out = []
        if self.left:
            out.append(f"left behind: {self.left}")
        if "Traceback" in self.stderr or "Error" in self.stderr:
            out.append(f"reported: {self.stderr.strip()[-400:]}")
        if self.returncode not in (0, 130):
            out.append(f"exit code {self.returncode}")
        up_line = [ln for ln in self.stdout.splitlines() if ln.startswith("up ")]
        # sent_at is 0 when the child finished before the delay ran out: no signal, nothing ignored
        if up_line and self.sent_at and self.sent_at < float(up_line[0].split()[1]) - 0.02:
            out.append(f"ignored: signal sent {float(up_line[0].split()[1]) - self.sent_at:.3f}s "
                       "before up returned")
        return out


def leftovers(name: str) -> list[str]:
    from enforcer import netns
    from enforcer.lab import naming, serverctl, state

    left = [n for n in netns.list_names(naming.node_netns(name)) if naming.carries(name, n)]
    left += [f"pid {p}" for p in serverctl.find(name)]
    if os.path.exists(state.lab_dir(name)):
        left.append(state.lab_dir(name))
    return left


def one(backend: str, delay: float, sig: int = signal.SIGINT, prefix: str = "npt-int") -> Run:
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    code = (CHILD_TERM if sig == signal.SIGTERM else "") + CHILD
    proc = subprocess.Popen([sys.executable, "-c", code, name, backend], cwd=ROOT_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # "go ...": the child is about to call up
    sent_at = 0.0
    out = err = ""
    try:
        out, err = proc.communicate(timeout=delay if first.startswith("go ") else 60)
    except subprocess.TimeoutExpired:
        sent_at = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    return Run(name, delay, proc.returncode, first + out, err, leftovers(name), sent_at)


def up_seconds(backend: str) -> float:
    """How long the child's ``up`` takes here: the window the signals are spread over."""
    r = one(backend, 30.0, signal.SIGINT)  # never sent in time: a full up and down
    lines = dict(ln.split() for ln in r.stdout.splitlines() if ln.startswith(("go ", "up ")))
    return float(lines["up"]) - float(lines["go"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--backend", default="nftables")
    ap.add_argument("--signal", default="INT", choices=["INT", "TERM"])
    args = ap.parse_args()
    sig = getattr(signal, f"SIG{args.signal}")
    window = up_seconds(args.backend)
    print(f"lab up takes {window:.3f}s here; {args.runs} runs, SIG{args.signal} at random points")
    bad = 0
    t0 = time.monotonic()
    for i in range(args.runs):
        r = one(args.backend, random.uniform(0, window * 1.1), sig)
        if r.problems():
            bad += 1
            print(f"run {i}: delay {r.delay:.3f}s: " + "; ".join(r.problems()))
    print(f"{args.runs} runs, {bad} bad, {time.monotonic() - t0:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
