"""The lab's server daemon: one process serving every port of every pod of one lab.

    python -m enforcer.lab.server /run/netpol-enforcer/labs/<LAB>/servers.json

It knows nothing about Kubernetes. Its configuration lists namespaces and the ports to
open in each. A socket belongs to the namespace its creator was in when it was created,
so the daemon opens each listening socket while its thread is inside that namespace
(``enforcer.netns.entered``) and then serves all of them from one selector loop:
TCP accept-and-close, UDP echo. One process instead of one per pod keeps a 250-pod lab
cheap.

SIGHUP: read the configuration again; open the sockets that are new, close the ones that
are gone (before their namespace is deleted: an open socket keeps a namespace alive).
After each (re)configuration it writes ``servers.ready`` (JSON: generation, counts,
errors) so the caller knows the ports are open. SIGTERM or SIGINT: exit.
"""
from __future__ import annotations

import errno
import json
import os
import resource
import selectors
import signal
import socket
import sys

from enforcer import netns

SOCK_TYPES = {"TCP": socket.SOCK_STREAM, "UDP": socket.SOCK_DGRAM}
Key = tuple[str, int, int, str]  # (netns, family 4|6, port, protocol)


def wanted(config: dict) -> set[Key]:
    out: set[Key] = set()
    for ep in config.get("endpoints", []):
        for family in ep.get("families", [4]):
            for port, proto in ep.get("ports", []):
                out.add((ep["netns"], int(family), int(port), str(proto)))
    return out


def open_socket(key: Key) -> socket.socket:
    """Create, bind and (TCP) listen on one port inside namespace key[0]."""
    name, family, port, proto = key
    if proto not in SOCK_TYPES:
        raise OSError(errno.EPROTONOSUPPORT, f"{proto} sockets not available on this kernel")
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    with netns.entered(name):
        s = socket.socket(fam, SOCK_TYPES[proto])
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("0.0.0.0" if family == 4 else "::", port))
        if proto == "TCP":
            s.listen(512)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


class Server:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.ready_path = os.path.join(os.path.dirname(config_path), "servers.ready")
        self.sel = selectors.DefaultSelector()
        self.socks: dict[Key, socket.socket] = {}
        self.reload = True
        self.stop = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)

    def configure(self) -> None:
        try:
            with open(self.config_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            self._ready({"generation": -1, "errors": [f"cannot read {self.config_path}: {e}"]})
            return
        want = wanted(config)
        for key in sorted(set(self.socks) - want):
            s = self.socks.pop(key)
            self.sel.unregister(s)
            s.close()
        errors = []
        for key in sorted(want - set(self.socks)):
            try:
                s = open_socket(key)
            except (OSError, Exception) as e:  # one bad port must not stop the others
                errors.append({"netns": key[0], "family": key[1], "port": key[2],
                               "protocol": key[3], "error": str(e)})
                continue
            self.socks[key] = s
            self.sel.register(s, selectors.EVENT_READ, key)
        self._ready({"generation": config.get("generation", 0), "pid": os.getpid(),
                     "listening": len(self.socks), "errors": errors})

    def _ready(self, report: dict) -> None:
        tmp = self.ready_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f)
        os.replace(tmp, self.ready_path)

    def on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def serve(self) -> None:
        while not self.stop:
            if self.reload:
                self.reload = False
                self.configure()
            for sk, _ in self.sel.select(timeout=5.0):
                key = sk.data
                if key is None:
                    try:
                        self.wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                self.handle(sk.fileobj, key)
        for s in self.socks.values():
            s.close()

    @staticmethod
    def handle(s: socket.socket, key: Key) -> None:
        try:
            if key[3] == "TCP":
                for _ in range(64):  # drain the backlog without starving other sockets
                    conn, _addr = s.accept()
                    conn.close()
            else:
                for _ in range(64):
                    data, addr = s.recvfrom(2048)
                    s.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # a client that vanished, an ICMP error queued on the socket: keep serving


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m enforcer.lab.server CONFIG.json", file=sys.stderr)
        return 2
    # Every port of every pod is one socket: a 250-pod lab easily needs more than 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = Server(argv[0])
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.on_signal)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
