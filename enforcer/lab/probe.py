"""Real-packet probes, all in one process, all in parallel.

For each probe a non-blocking client socket is created while the calling thread is inside
the source's namespace (a socket stays in the namespace where it was created); after that
the connect, send and receive need no namespace switching, so one selector drives
thousands of probes at once. At most ``window`` probes are in flight; each has its own
deadline.

What counts as allowed is what the network did (ACCEPTANCE "JSON"):

    TCP  connected (handshake done)        allowed   detail "connected"
         refused (a RST came back)         allowed   detail "refused"
         nothing before the deadline       blocked   detail "timeout"
    UDP  our datagram echoed back          allowed   detail "connected"
         ICMP port unreachable came back   allowed   detail "refused"
         nothing before the deadline       blocked   detail "timeout"

A packet dropped by the source's own egress rules never leaves: UDP ``send`` fails with
EPERM at once and TCP retransmits its SYN into the same drop; both are blocked and reported
as "timeout" (with ``error: EPERM`` for the first). Timeouts are tried again (``retries``)
with a new socket before they count, so a lost first packet (neighbour resolution under
load) does not show up as a blocked cell.
"""
from __future__ import annotations

import errno
import heapq
import resource
import selectors
import socket
import time
from dataclasses import dataclass

from enforcer import netns

PAYLOAD = b"netpol-probe"
ALLOWED_ERRNOS = {errno.ECONNREFUSED: "refused"}


@dataclass(frozen=True)
class Target:
    src_netns: str
    dst_ip: str
    port: int
    protocol: str  # "TCP" | "UDP"


@dataclass
class Outcome:
    allowed: bool
    detail: str  # "connected" | "refused" | "timeout"
    error: str = ""  # errno name of a local failure (EPERM: dropped by the source's egress)
    ms: float = 0.0
    attempts: int = 1


@dataclass
class _Flight:
    index: int
    sock: socket.socket
    started: float
    attempt: int
    seq: int


def _raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and soft < need + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def run(targets: list[Target], *, timeout: float = 1.0, retries: int = 1,
        window: int = 4000) -> list[Outcome]:
    """Probe every target; the outcome list is aligned with ``targets``."""
    limit = _raise_fd_limit(window)
    window = max(1, min(window, limit - 128))
    results: list[Outcome | None] = [None] * len(targets)
    # Probes of one source are consecutive so each source's namespace is entered once per batch.
    queue = sorted(range(len(targets)), key=lambda i: (targets[i].src_netns, i))
    attempts = {i: 0 for i in queue}
    sel = selectors.DefaultSelector()
    flights: dict[int, _Flight] = {}  # fd -> flight
    deadlines: list[tuple[float, int, int]] = []  # (deadline, seq, fd)
    seqs = iter(range(1 << 62))
    pos = 0
    retry_queue: list[int] = []

    def finish(fd: int, outcome: Outcome) -> None:
        fl = flights.pop(fd)
        sel.unregister(fl.sock)
        fl.sock.close()
        if outcome.detail == "timeout" and not outcome.error and fl.attempt < retries:
            retry_queue.append(fl.index)
            return
        outcome.ms = round((time.monotonic() - fl.started) * 1000, 2)
        outcome.attempts = fl.attempt + 1
        results[fl.index] = outcome

    def launch(batch: list[int]) -> None:
        src = targets[batch[0]].src_netns
        with netns.entered(src):
            socks = [socket.socket(socket.AF_INET6 if ":" in targets[i].dst_ip else socket.AF_INET,
                                   socket.SOCK_STREAM if targets[i].protocol == "TCP" else socket.SOCK_DGRAM)
                     for i in batch]
        now = time.monotonic()
        for i, s in zip(batch, socks):
            t = targets[i]
            s.setblocking(False)
            fl = _Flight(i, s, now, attempts[i], next(seqs))
            attempts[i] += 1
            fd = s.fileno()
            flights[fd] = fl
            if t.protocol == "TCP":
                sel.register(s, selectors.EVENT_WRITE, fd)
                rc = s.connect_ex((t.dst_ip, t.port))
                if rc not in (0, errno.EINPROGRESS):
                    finish(fd, _from_errno(rc))
                    continue
            else:
                sel.register(s, selectors.EVENT_READ, fd)
                try:
                    s.connect((t.dst_ip, t.port))
                    s.send(PAYLOAD)
                except OSError as e:
                    finish(fd, _from_errno(e.errno or 0))
                    continue
            heapq.heappush(deadlines, (now + timeout, fl.seq, fd))

    while pos < len(queue) or retry_queue or flights:
        # Fill the window, one source namespace at a time.
        while len(flights) < window and (pos < len(queue) or retry_queue):
            if pos >= len(queue):
                queue.extend(sorted(retry_queue, key=lambda i: (targets[i].src_netns, i)))
                retry_queue.clear()
            src = targets[queue[pos]].src_netns
            batch = []
            while pos < len(queue) and len(flights) + len(batch) < window and \
                    targets[queue[pos]].src_netns == src:
                batch.append(queue[pos])
                pos += 1
            launch(batch)
        if not flights:
            continue
        wait = max(0.0, deadlines[0][0] - time.monotonic()) if deadlines else timeout
        for key, _ in sel.select(timeout=wait):
            fd = key.data
            fl = flights.get(fd)
            if fl is None:
                continue
            t = targets[fl.index]
            if t.protocol == "TCP":
                err = fl.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                finish(fd, Outcome(True, "connected") if err == 0 else _from_errno(err))
            else:
                try:
                    fl.sock.recv(2048)
                    finish(fd, Outcome(True, "connected"))
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    finish(fd, _from_errno(e.errno or 0))
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, seq, fd = heapq.heappop(deadlines)
            fl = flights.get(fd)
            if fl is not None and fl.seq == seq:
                finish(fd, Outcome(False, "timeout"))
    sel.close()
    return [r if r is not None else Outcome(False, "timeout") for r in results]


def _from_errno(err: int) -> Outcome:
    if err in ALLOWED_ERRNOS:
        return Outcome(True, ALLOWED_ERRNOS[err])
    # EPERM: our own egress rules dropped it; EHOSTUNREACH/ENETUNREACH: nowhere to go.
    return Outcome(False, "timeout", errno.errorcode.get(err, str(err)))
