"""The nf_tables ruleset generation of a network namespace: a cheap "did anything change?".

Every nf_tables transaction committed in a namespace (nft, iptables-nft, us) increments
that namespace's generation id; NFT_MSG_GETGEN returns it. Drift repair asks this first
and reads back (``backend.verify``) only the namespaces whose generation moved since their
last clean read-back: idle, a 110-pod node costs a few milliseconds per repair round
instead of a full listing of every table.

Only for the nftables backend: the iptables backends also keep state outside nf_tables
(ipsets, legacy x_tables) that no generation counts, so they are always read back.
"""
from __future__ import annotations

import itertools
import socket
import struct

from enforcer import netns as nsmod
from enforcer.errors import NetnsError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
_seq = itertools.count(1)


def request() -> tuple[bytes, int]:
    seq = next(_seq) & 0xFFFFFFFF
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)  # struct nfgenmsg
    head = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
                       NLM_F_REQUEST, seq, 0)
    return head + body, seq


def parse(data: bytes) -> int | None:
    """The generation id in a NFT_MSG_NEWGEN reply, None for anything else."""
    if len(data) < 20:
        return None
    length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data)
    if mtype != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
        return None
    pos, end = 20, min(length, len(data))
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, pos)
        if alen < 4:
            return None
        if atype & 0x3FFF == NFTA_GEN_ID and alen >= 8:
            return struct.unpack_from(">I", data, pos + 4)[0]
        pos += (alen + 3) & ~3
    return None


def generation(netns: str) -> int | None:
    """The nf_tables generation of ``netns``, or None if it cannot be read."""
    try:
        with nsmod.entered(netns):
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    except (OSError, NetnsError):
        return None
    try:
        s.settimeout(1.0)
        msg, _ = request()
        s.send(msg)
        return parse(s.recv(65536))
    except OSError:
        return None
    finally:
        s.close()


class GenerationReader:
    """``generation`` with one netlink socket kept per namespace (enforcer.netns.Handles:
    opened inside it once, re-opened when the name comes back as a new namespace)."""

    def __init__(self) -> None:
        self._socks: nsmod.Handles[socket.socket] = nsmod.Handles(_open_socket)

    def __call__(self, netns: str) -> int | None:
        try:
            s = self._socks.get(netns)
        except (OSError, NetnsError):
            return None
        try:
            msg, seq = request()
            s.send(msg)
            while True:
                data = s.recv(65536)
                if len(data) >= 16 and struct.unpack_from("=I", data, 8)[0] == seq:
                    return parse(data)
        except OSError:
            self.forget(netns)
            return None

    def forget(self, netns: str) -> None:
        self._socks.forget(netns)

    def close(self) -> None:
        self._socks.close()


def _open_socket() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    s.settimeout(1.0)
    return s
