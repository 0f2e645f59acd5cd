"""``netpol run --enforce-at host``: where each local pod's chains go on the node.

In host mode the backend (backends/nft_host.py) needs, for a pod's namespace, the node's
namespace (``--node-netns``: where the pods' host-side veths live) and the name of the
pod's veth there. The daemon finds pods by address (discovery.py) and knows nothing of
how they were wired, so it asks the kernel:

* in the node's namespace, one dump of its links: a veth's IFLA_LINK_NETNSID says in which
  namespace its peer lives (as an id local to the node's namespace);
* the id the node's namespace gives the pod's namespace (RTM_GETNSID with the pod
  namespace's file descriptor);

the veth whose peer lives in the pod's namespace is the pod's host-side interface. Two or
none: the pod is not wired to this node as a pod is, and is refused with a clear error
(``BackendError``). Answers are kept per pod namespace inode (a re-created namespace is
looked up again) and remembered after the namespace goes, so its chains can still be
removed from the node's table.

The backend for a name: ``host_backend``. A backend without host mode refuses here, with
its one-line reason, before the daemon starts.
"""
from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from typing import Callable, Iterator

from enforcer import netns as nsmod
from enforcer import nfnetlink as nl
from enforcer.errors import BackendError, BackendUnavailable, NetnsError

# rtnetlink (include/uapi/linux/rtnetlink.h, if_link.h, net_namespace.h); the framing is
# nfnetlink's (plain netlink), the bodies start with these headers instead of nfgenmsg.
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWNSID = 88
RTM_GETNSID = 90
NETNSA_NSID = 1
NETNSA_FD = 3
NLMSG_ERROR = nl.NLMSG_ERROR
NLMSG_DONE = nl.NLMSG_DONE
NLM_F_REQUEST = nl.NLM_F_REQUEST
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
IFLA_IFNAME = 3
IFLA_LINK_NETNSID = 37
RTGENMSG = struct.Struct("=Bxxx")  # family, padded to 4: the header of RTM_*NSID
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change: RTM_*LINK's


def _i32(value: bytes) -> int | None:
    """A signed 32-bit attribute value in host order (ids: -1 is "none"); None if short."""
    return struct.unpack_from("=i", value)[0] if len(value) >= 4 else None


def nsid_request(fd: int, seq: int) -> bytes:
    """RTM_GETNSID for the namespace open on ``fd`` (rtgenmsg, then NETNSA_FD)."""
    body = RTGENMSG.pack(socket.AF_UNSPEC) + nl.attr(NETNSA_FD, struct.pack("=I", fd))
    return nl.message(RTM_GETNSID, NLM_F_REQUEST, seq, body)


def parse_nsid(data: bytes) -> int | None:
    """The NETNSA_NSID of an RTM_NEWNSID reply; None for "not assigned" (-1) or an error."""
    for m in nl.split_messages(data)[:1]:  # the one answer to our one request
        if m.kind == RTM_NEWNSID:
            nsid = _i32(nl.parse_attrs(m.body[RTGENMSG.size:]).get(NETNSA_NSID, b""))
            return None if nsid is None or nsid < 0 else nsid
    return None


@contextlib.contextmanager
def _route_socket(node: str, doing: str) -> Iterator[socket.socket]:
    """A NETLINK_ROUTE socket made inside namespace ``node`` (it stays there), closed when
    the block ends; an OSError entering or inside the block is a NetnsError that says
    what was being done (``doing``)."""
    try:
        with nsmod.entered(node):
            s = nl.open_socket(timeout=1.0, bind=False, protocol=nl.NETLINK_ROUTE)
    except OSError as e:
        raise NetnsError(f"cannot enter {node}: {e}") from e
    try:
        yield s
    except OSError as e:
        raise NetnsError(f"cannot {doing}: {e}") from e
    finally:
        s.close()


def nsid_in(node: str, pod_netns: str) -> int | None:
    """The id namespace ``node`` gives namespace ``pod_netns`` (None: none yet)."""
    with _route_socket(node, f"ask {node} about namespace {pod_netns}") as s:
        fd = os.open(nsmod.path(pod_netns), os.O_RDONLY)
        try:
            s.send(nsid_request(fd, 1))
            return parse_nsid(s.recv(65536))
        finally:
            os.close(fd)


def links_request(seq: int) -> bytes:
    return nl.message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))


def parse_links(data: bytes) -> tuple[list[tuple[str, int | None]], bool]:
    """(name, IFLA_LINK_NETNSID) of each RTM_NEWLINK in ``data``; whether the dump ended.
    An error message ends the dump with an OSError."""
    out, done = [], False
    for m in nl.split_messages(data):
        if m.kind == NLMSG_DONE:
            done = True
        elif m.kind == NLMSG_ERROR:
            code = nl.error_code(m.body)
            raise OSError(code, os.strerror(code))
        elif m.kind == RTM_NEWLINK:
            attrs = nl.parse_attrs(m.body[IFINFOMSG.size:])
            name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode()
            out.append((name, _i32(attrs.get(IFLA_LINK_NETNSID, b""))))
    return out, done


def node_veths(node: str) -> list[tuple[str, int | None]]:
    """(name, IFLA_LINK_NETNSID) of every link in ``node`` whose peer lives elsewhere.
    Raw netlink: a pyroute2 IPRoute costs ~50 ms to make, this ~1 ms."""
    with _route_socket(node, f"list the links of {node}") as s:
        s.send(links_request(1))
        out: list[tuple[str, int | None]] = []
        while True:
            links, done = parse_links(s.recv(1 << 20))
            out += links
            if done:
                break
    return [(n, i) for n, i in out if i is not None and i >= 0]


class NodeSide:
    """The resolver a host-mode backend calls: pod netns -> (node netns, host-side veth);
    ``pod_of``: the pod key the daemon placed there (set with ``place``)."""

    def __init__(self, node: str, *, inode: Callable[[str], int | None] = nsmod.inode,
                 veths: Callable[[str], list[tuple[str, int | None]]] = node_veths,
                 nsid: Callable[[str, str], int | None] = nsid_in) -> None:
        self.node = node
        self._inode = inode
        self._veths = veths
        self._nsid = nsid
        self._found: dict[str, tuple[int, str]] = {}  # pod netns -> (its inode, veth)
        self._pods: dict[str, str] = {}  # pod netns -> pod key (kept after it goes)
        self._links: list[tuple[str, int | None]] | None = None  # the node's veths, as last listed
        self._lock = threading.Lock()

    def place(self, local: dict[str, str]) -> None:
        """The daemon's current placement (pod key -> netns)."""
        with self._lock:
            for key, ns in local.items():
                self._pods[ns] = key

    def invalidate(self) -> None:
        """Forget the node's link list (the daemon calls it at each sync: an id of a gone
        namespace may be given to a new one)."""
        self._links = None

    def pod_of(self, netns: str) -> str | None:
        with self._lock:
            return self._pods.get(netns)

    def forget(self, netns: str) -> None:
        with self._lock:
            self._pods.pop(netns, None)
            self._found.pop(netns, None)

    def __call__(self, netns: str) -> tuple[str, str]:
        ino = self._inode(netns)
        with self._lock:
            known = self._found.get(netns)
        if known is not None and (ino is None or known[0] == ino):
            return self.node, known[1]  # gone: what it was (to remove its chains)
        if ino is None:
            raise BackendError(f"host mode: namespace {netns} is gone and was never placed on {self.node}")
        iface = self._lookup(netns)
        with self._lock:
            self._found[netns] = (ino, iface)
        return self.node, iface

    def _lookup(self, netns: str) -> str:
        if not nsmod.exists(self.node):
            raise BackendError(f"host mode: --node-netns {self.node}: no such network namespace")
        # The node's links are listed at most once per sync (``invalidate``) and again when
        # the kept list does not answer: not once per pod.
        for fresh in (False, True):
            if fresh or self._links is None:
                self._links = self._veths(self.node)  # before the id: listing assigns ids
            nsid = self._nsid(self.node, netns)
            found = [name for name, peer in self._links if nsid is not None and peer == nsid]
            if len(found) == 1:
                return found[0]
        what = "no interface" if not found else f"{len(found)} interfaces ({', '.join(sorted(found))})"
        raise BackendError(f"host mode: {what} in {self.node} lead(s) to namespace {netns}; "
                           "a pod must hang off the node by exactly one veth")


def host_backend(name: str, resolve: NodeSide):
    """The host placement of backend ``name`` (BackendUnavailable: it has none)."""
    from backends import registry

    pod_backend = registry.get(name)
    if name == "nftables":
        from backends.nft_host import NftHostBackend

        return NftHostBackend(resolve, pod_backend)
    if name in ("iptables", "iptables-legacy"):
        try:
            from backends import ipt_host  # type: ignore[attr-defined]
        except ImportError:
            ipt_host = None
        make = getattr(ipt_host, "IptHostBackend", None)
        if make is not None:
            return make(resolve, pod_backend)
    raise BackendUnavailable(f"--enforce-at host: the {name} backend has no host mode yet; "
                             "use --backend nftables or --enforce-at pod (docs/cnis.md)")
