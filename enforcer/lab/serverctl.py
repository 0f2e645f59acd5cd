"""Control of a lab's server daemon (enforcer/lab/server.py): configure, start, reload, stop.

The daemon is started inside the lab's node namespace (so even a stray socket of its own
would land there, never in the host's) and in its own session (so it outlives the
``lab up`` command). It is identified by its pid AND its command line, which names this
lab's configuration file: a recycled pid is never signalled.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Iterable

from enforcer import interrupts, netns
from enforcer.errors import LabError
from enforcer.lab.state import Endpoint, lab_dir

READY_TIMEOUT = 20.0
_children: dict[int, subprocess.Popen] = {}  # daemons started by this process: reaped on stop


def config_path(lab: str) -> str:
    return os.path.join(lab_dir(lab), "servers.json")


def ready_path(lab: str) -> str:
    return os.path.join(lab_dir(lab), "servers.ready")


def _families(ips: Iterable[str]) -> list[int]:
    return sorted({6 if ":" in a else 4 for a in ips})


def write_config(lab: str, endpoints: Iterable[Endpoint], generation: int) -> list[str]:
    """Write the daemon's configuration; return notes about ports it cannot serve."""
    eps = []
    skipped = []
    for ep in sorted(endpoints, key=lambda e: e.key):
        ports = [[p, proto] for p, proto in ep.ports if proto in ("TCP", "UDP")]
        skipped += [f"{ep.key} {p}/{proto}" for p, proto in ep.ports if proto not in ("TCP", "UDP")]
        if ports:
            eps.append({"netns": ep.netns, "families": _families(ep.ips), "ports": ports})
    tmp = config_path(lab) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"generation": generation, "endpoints": eps}, f)
    os.replace(tmp, config_path(lab))
    if skipped:
        return [f"SCTP sockets not available on this kernel: no server on {', '.join(skipped)}"]
    return []


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def is_ours(pid: int | None, lab: str) -> bool:
    if not pid:
        return False
    argv = _cmdline(pid)
    return bool(argv) and argv[-1] == config_path(lab) and "enforcer.lab.server" in argv


def find(lab: str) -> list[int]:
    """Every live daemon of this lab, found by its command line (also after a crash that
    lost the state file)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_ours(int(entry), lab):
            out.append(int(entry))
    return out


def start(lab: str, node_netns: str, generation: int) -> int:
    log = open(os.path.join(lab_dir(lab), "server.log"), "ab")
    try:
        # Held interrupts: a started daemon is always known to stop() (which reaps it).
        with interrupts.deferred():
            proc = netns.popen(node_netns, [sys.executable, "-m", "enforcer.lab.server", config_path(lab)],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               start_new_session=True, close_fds=True)
            _children[proc.pid] = proc
    finally:
        log.close()
    wait_ready(lab, proc.pid, generation)
    return proc.pid


def reload(lab: str, pid: int, generation: int) -> None:
    if not is_ours(pid, lab):
        raise LabError(f"lab {lab}: its server (pid {pid}) is not running; recreate the lab")
    os.kill(pid, signal.SIGHUP)
    wait_ready(lab, pid, generation)


def wait_ready(lab: str, pid: int, generation: int, timeout: float = READY_TIMEOUT) -> dict:
    """Wait until the daemon has opened the sockets of configuration ``generation``."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            with open(ready_path(lab)) as f:
                report = json.load(f)
            if report.get("generation") == generation and report.get("pid") == pid:
                if report.get("errors"):
                    first = report["errors"][0]
                    raise LabError(f"lab {lab}: server could not open {len(report['errors'])} port(s), "
                                   f"e.g. {first['port']}/{first['protocol']} in {first['netns']}: {first['error']}")
                return report
        except (OSError, ValueError):
            pass
        if not _alive(pid):
            raise LabError(f"lab {lab}: the server exited; see {os.path.join(lab_dir(lab), 'server.log')}")
        if time.monotonic() > deadline:
            raise LabError(f"lab {lab}: the server did not open its ports within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop(lab: str, pids: Iterable[int | None] = (), timeout: float = 3.0) -> None:
    """Stop the lab's daemons (those named and those found), SIGKILL after ``timeout``."""
    targets = {p for p in pids if p and is_ours(p, lab)} | set(find(lab))
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in targets:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        if _alive(pid) and is_ours(pid, lab):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child = _children.pop(pid, None)
        if child is not None:
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
