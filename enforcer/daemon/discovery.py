"""Which network namespace on this node holds which pod: found by the pod's IP address.

Container runtimes and ``netpol lab`` name their namespaces under /run/netns; the daemon
does not know the names, only the pods' addresses (``status.podIP(s)``). So it reads the
addresses inside every namespace (optionally only those whose name has ``--netns-prefix``)
and a pod whose addresses are found in exactly one namespace is *local*: the daemon
enforces its policy there. Pods found nowhere are peers only.

Reading is all we ever do in a namespace here. A namespace that holds no address of a
watched pod is never changed (the reconciler only touches namespaces this module maps to a
pod), and a pod address found in two namespaces, or two pods in one namespace, is reported
and left alone rather than guessed.

Keeping the map fresh costs almost nothing when idle:

* ``NetnsWatcher`` (one thread) watches /run/netns with inotify for namespaces that come
  and go, and keeps, per namespace, a netlink socket opened *inside* it and subscribed to
  address changes (RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR). Any message marks the
  namespace dirty; the daemon's worker re-reads only dirty namespaces. A socket is opened
  before the first read, so an address added in between is never missed.
* a periodic full scan is the safety net.
"""
from __future__ import annotations

import errno
import functools
import ipaddress
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from enforcer import netns as nsmod
from enforcer.errors import NetnsError

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
NETLINK_ROUTE = 0


@dataclass(frozen=True)
class NsInfo:
    name: str
    inode: int
    addrs: frozenset[str]


def _interesting(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return not (ip.is_loopback or ip.is_link_local)


def read_addrs(name: str) -> frozenset[str]:
    """The addresses configured inside namespace ``name`` (loopback and link-local left
    out). Raises NetnsError if it is gone or not (yet) a namespace."""
    from pyroute2 import IPRoute

    try:
        with nsmod.entered(name):
            ipr = IPRoute()  # the netlink socket is made here, inside the namespace
    except OSError as e:
        raise NetnsError(f"cannot enter network namespace {name}: {e}") from e
    try:
        out = set()
        for msg in ipr.get_addr():
            a = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if a and _interesting(a):
                out.add(str(ipaddress.ip_address(a)))
        return frozenset(out)
    except OSError as e:
        raise NetnsError(f"cannot read the addresses in network namespace {name}: {e}") from e
    finally:
        ipr.close()


@dataclass
class Placement:
    """The result of matching pods to namespaces."""

    local: dict[str, str] = field(default_factory=dict)  # pod key -> netns
    conflicts: list[str] = field(default_factory=list)  # human-readable, one per conflict


def pods_by_ip(pod_ips: Mapping[str, tuple[str, ...]]) -> dict[str, set[str]]:
    """address (canonical) -> pods that claim it."""
    out: dict[str, set[str]] = {}
    for key, ips in pod_ips.items():
        for ip in ips:
            out.setdefault(_canon(ip), set()).add(key)
    return out


def place(pod_ips: Mapping[str, tuple[str, ...]], index: Mapping[str, frozenset[str] | set[str]],
          by_ip: Mapping[str, set[str]] | None = None) -> Placement:
    """Match pods to namespaces (pure). ``pod_ips``: pod key -> its addresses; ``index``:
    address -> namespaces holding it. A pod is local iff all its found addresses are in
    exactly one namespace and no other pod is found there. ``by_ip`` (``pods_by_ip`` of
    ``pod_ips``, kept by the caller between syncs) limits the work to the pods whose
    addresses are on this node: a node has a hundred pods, the cluster thousands."""
    out = Placement()
    by_ns: dict[str, list[str]] = {}
    if by_ip is not None:
        keys = sorted({k for ip in index for k in by_ip.get(ip, ())})
        candidates: Iterable[tuple[str, tuple[str, ...]]] = ((k, pod_ips[k]) for k in keys)
    else:
        candidates = pod_ips.items()
    for key, ips in candidates:
        found: set[str] = set()
        for ip in ips:
            found |= set(index.get(_canon(ip), ()))
        if not found:
            continue
        if len(found) > 1:
            out.conflicts.append(f"pod {key}: its address is in several network namespaces "
                                 f"({', '.join(sorted(found))}); none of them is touched")
            continue
        by_ns.setdefault(next(iter(found)), []).append(key)
    for ns, keys in by_ns.items():
        if len(keys) > 1:
            out.conflicts.append(f"network namespace {ns} holds the addresses of several pods "
                                 f"({', '.join(sorted(keys))}); it is not touched")
            continue
        out.local[keys[0]] = ns
    return out


def _canon(ip: str) -> str:
    if ":" not in ip:
        # A dotted quad inet_pton takes is already canonical (no leading zeros): 150,000
        # pod addresses would only thrash the cache below (5% of a first sync, issue 15).
        try:
            socket.inet_pton(socket.AF_INET, ip)
            return ip
        except OSError:
            pass
    return _canon_parsed(ip)


@functools.lru_cache(maxsize=1 << 16)
def _canon_parsed(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


class Discovery:
    """The namespace -> addresses cache, read on the daemon's worker thread."""

    def __init__(self, prefix: str = "", *, reader: Callable[[str], frozenset[str]] = read_addrs,
                 lister: Callable[[str], list[str]] = nsmod.list_names,
                 inode: Callable[[str], int | None] = nsmod.inode) -> None:
        self.prefix = prefix
        self.reader = reader
        self.lister = lister
        self.inode = inode
        self.spaces: dict[str, NsInfo] = {}
        self.unreadable: dict[str, str] = {}  # name -> why (not a namespace yet, ...)
        self._index: dict[str, set[str]] | None = None

    def wants(self, name: str) -> bool:
        return name.startswith(self.prefix)

    def scan(self) -> bool:
        """Re-list /run/netns; read namespaces that are new or were re-created. Returns
        whether anything changed."""
        names = {n for n in self.lister(self.prefix)}
        changed = False
        for gone in set(self.spaces) - names:
            del self.spaces[gone]
            changed = True
        for gone in set(self.unreadable) - names:
            del self.unreadable[gone]
        for name in sorted(names):
            info = self.spaces.get(name)
            if info is None or info.inode != self.inode(name):
                changed |= self.refresh(name)
        return changed

    def refresh(self, name: str) -> bool:
        """Re-read one namespace (it changed, appeared or went). Returns whether its
        addresses changed."""
        before = self.spaces.get(name)
        if not self.wants(name):
            return False
        ino = self.inode(name)
        if ino is None:
            self.unreadable.pop(name, None)
            if before is not None:
                del self.spaces[name]
                self._index = None
                return True
            return False
        try:
            addrs = self.reader(name)
        except NetnsError as e:
            self.unreadable[name] = str(e)
            if before is not None:
                del self.spaces[name]
                self._index = None
                return True
            return False
        self.unreadable.pop(name, None)
        info = NsInfo(name, ino, addrs)
        if before == info:
            return False
        self.spaces[name] = info
        self._index = None
        return True

    def index(self) -> dict[str, set[str]]:
        """address -> namespaces holding it."""
        if self._index is None:
            idx: dict[str, set[str]] = {}
            for info in self.spaces.values():
                for a in info.addrs:
                    idx.setdefault(a, set()).add(info.name)
            self._index = idx
        return self._index


class NetnsWatcher:
    """One thread: inotify on /run/netns plus a netlink address subscription per namespace.
    ``on_change(name, when)`` is called (from this thread) whenever a namespace may have
    new addresses, appeared or went."""

    def __init__(self, prefix: str, on_change: Callable[[str, float], None], *,
                 run_dir: str = nsmod.RUN_DIR) -> None:
        self.prefix = prefix
        self.on_change = on_change
        self.run_dir = run_dir
        self._sel = selectors.DefaultSelector()
        self._socks: dict[str, tuple[int, socket.socket]] = {}  # name -> (inode, socket)
        self._retry: dict[str, tuple[float, float]] = {}  # name -> (next try, delay)
        self._queue: list[str] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._observer = None

    # -- public

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="netns-watcher", daemon=True)
        self._thread.start()
        self._watch_dir()
        self.poke_all()

    def poke(self, name: str) -> None:
        """(Any thread) look at namespace ``name`` again: subscribe if new, close if gone."""
        if not name.startswith(self.prefix) or "/" in name:
            return
        with self._lock:
            self._queue.append(name)
        self._wake()

    def poke_all(self) -> None:
        for name in nsmod.list_names(self.prefix):
            self.poke(name)
        with self._lock:
            known = list(self._socks)
        for name in known:
            self.poke(name)
        self._watch_dir()

    def stop(self) -> None:
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
        for _, s in self._socks.values():
            s.close()
        self._socks.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def subscribed(self) -> set[str]:
        with self._lock:
            return set(self._socks)

    # -- internals

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _watch_dir(self) -> None:
        """inotify on /run/netns; it may not exist until the first namespace is made (the
        periodic poke_all from the daemon's rescan tries again)."""
        if self._observer is not None or not os.path.isdir(self.run_dir):
            return
        from watchdog.observers import Observer

        obs = Observer()
        obs.daemon = True
        try:
            obs.schedule(_NsHandler(self), self.run_dir, recursive=False)
            obs.start()
        except OSError:
            return
        self._observer = obs

    def _loop(self) -> None:
        while not self._stop:
            timeout = None
            if self._retry:
                timeout = max(0.0, min(t for t, _ in self._retry.values()) - time.monotonic())
            for key, _ in self._sel.select(timeout):
                if key.data is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._drain(key.data)
            with self._lock:
                queue, self._queue = self._queue, []
            now = time.monotonic()
            for name, (when, _) in list(self._retry.items()):
                if when <= now:
                    queue.append(name)
            for name in dict.fromkeys(queue):
                self._examine(name)

    def _drain(self, name: str) -> None:
        held = self._socks.get(name)
        if held is None:
            return
        s = held[1]
        try:
            while s.recv(65536):
                pass
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                pass  # we lost messages: the re-read below sees the whole state anyway
        self.on_change(name, time.monotonic())

    def _examine(self, name: str) -> None:
        ino = nsmod.inode(name)
        held = self._socks.get(name)
        if held is not None and held[0] != ino:
            self._close(name)
            held = None
        if ino is None:
            self._retry.pop(name, None)
            self.on_change(name, time.monotonic())  # went away
            return
        if held is not None:
            return  # subscribed: its changes arrive as messages
        try:
            with nsmod.entered(name):
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                  NETLINK_ROUTE)
            s.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        except (OSError, NetnsError):
            # Freshly created: the file exists before ``ip netns add`` bind-mounts the
            # namespace on it. Try again soon, then less often.
            _, delay = self._retry.get(name, (0.0, 0.005))
            if delay < 5.0:
                self._retry[name] = (time.monotonic() + delay, delay * 2)
            else:
                self._retry.pop(name, None)  # the periodic scan will look again
            return
        self._retry.pop(name, None)
        with self._lock:
            self._socks[name] = (ino, s)
        self._sel.register(s, selectors.EVENT_READ, name)
        self.on_change(name, time.monotonic())  # read it now that changes are seen

    def _close(self, name: str) -> None:
        with self._lock:
            held = self._socks.pop(name, None)
        if held is not None:
            try:
                self._sel.unregister(held[1])
            except (KeyError, ValueError):
                pass
            held[1].close()


class _NsHandler:
    def __init__(self, watcher: NetnsWatcher) -> None:
        self.watcher = watcher

    def dispatch(self, event) -> None:
        for p in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
            if p:
                self.watcher.poke(os.path.basename(os.fsdecode(p)))
