"""Helpers for tests and benchmarks of the daemon: run ``netpol run`` as a subprocess, wait
for systemd-style readiness, read its JSON logs, and send real packets between pod
namespaces. Nothing here touches the host's namespace except a unix socket for
$NOTIFY_SOCKET and, if asked, a metrics port on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

import yaml

from enforcer import netns


def pod_doc(ns: str, name: str, ip: str, labels: dict, ports: Sequence[tuple[int, str]] = ((80, "TCP"),)) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
            "spec": {"containers": [{"name": "c", "image": "none",
                                     "ports": [{"containerPort": p, "protocol": pr} for p, pr in ports]}]},
            "status": {"podIP": ip}}


def write_yaml(path: str, docs: Sequence[dict]) -> None:
    """Write atomically (temporary file + rename), as a careful operator would."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump_all(list(docs), f, sort_keys=False)
    os.replace(tmp, path)


def policy_doc(ns: str, name: str, selector: dict, ingress_from: list[dict] | None = None,
               ports: Sequence[int] = (), types: Sequence[str] = ("Ingress",)) -> dict:
    rules = []
    if ingress_from is not None:
        rule: dict = {"from": [{"podSelector": {"matchLabels": m}} for m in ingress_from]}
        if ports:
            rule["ports"] = [{"port": p, "protocol": "TCP"} for p in ports]
        rules.append(rule)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": list(types), "ingress": rules}}


# ------------------------------------------------------------------------ packets


def tcp_ok(src_netns: str, ip: str, port: int, timeout: float = 0.25) -> bool:
    """Does a TCP connection from ``src_netns`` to ip:port get an answer (connected or
    refused)? A timeout means the SYN was dropped."""
    with netns.entered(src_netns):
        s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.01) -> float | None:
    """Seconds until ``pred()`` held, or None if it never did within ``timeout``."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(interval)


# ------------------------------------------------------------------------ the daemon


class DaemonProcess:
    """``python -m enforcer run ...`` with JSON logs in a file and $NOTIFY_SOCKET bound
    here, so a test knows when it is READY (the first complete sync is done)."""

    def __init__(self, watch: Sequence[str], *, state_file: str, netns_prefix: str,
                 backend: str = "nftables", args: Sequence[str] = (), log_path: str | None = None,
                 log_level: str = "debug") -> None:
        self.watch = list(watch)
        self.state_file = state_file
        self.prefix = netns_prefix
        self.backend = backend
        self.args = list(args)
        self.log_level = log_level
        self._dir = tempfile.mkdtemp(prefix="netpol-daemon-test-")
        self.log_path = log_path or os.path.join(self._dir, "daemon.log")
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self.notes: list[str] = []

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "enforcer", "run", "--backend", self.backend,
                "--netns-prefix", self.prefix, "--state-file", self.state_file, "--log-format", "json",
                "--log-level", self.log_level]
        for w in self.watch:
            argv += ["--watch", w]
        return argv + self.args

    def start(self, wait: float = 20.0) -> "DaemonProcess":
        path = os.path.join(self._dir, f"notify-{len(self.notes)}-{time.monotonic_ns()}.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        env = dict(os.environ, NOTIFY_SOCKET=path, PYTHONUNBUFFERED="1")
        env.pop("WATCHDOG_USEC", None)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=env)
        log.close()
        if wait:
            self.wait_ready(wait)
        return self

    def wait_ready(self, timeout: float) -> None:
        assert self._sock is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"daemon not ready (exit {self.proc.poll()}):\n{self.log_text()[-3000:]}")
            self._sock.settimeout(min(left, 0.2))
            try:
                msg = self._sock.recv(65536).decode()
            except socket.timeout:
                continue
            self.notes.append(msg)
            if "READY=1" in msg.split("\n"):
                return

    def log_text(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def logs(self, msg: str | None = None) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if msg is None or rec.get("msg") == msg:
                out.append(rec)
        return out

    def state(self) -> dict:
        with open(self.state_file) as f:
            return json.load(f)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return -9

    def close(self) -> None:
        self.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
