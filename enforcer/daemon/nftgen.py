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

from enforcer import netns as nsmod, nfnetlink as nfnl
from enforcer.errors import NetnsError

MSG_NEWGEN = nfnl.type_of(nfnl.NFNL_SUBSYS_NFTABLES, nfnl.NFT_MSG_NEWGEN)
_seq = itertools.count(1)


def request() -> tuple[bytes, int]:
    """A GETGEN request and its sequence number (the reply carries the same)."""
    seq = next(_seq) & 0xFFFFFFFF
    return nfnl.generation_request(seq), seq


def parse(data: bytes, seq: int | None = None) -> int | None:
    """The generation id in a NFT_MSG_NEWGEN reply (to request ``seq`` when given), None
    when ``data`` holds none."""
    for kind, mseq, body in nfnl.split_messages(data):
        if kind != MSG_NEWGEN or (seq is not None and mseq != seq) or len(body) < nfnl.NFGENMSG.size:
            continue
        return nfnl.generation_of(body)
    return None


def _answers(data: bytes, seq: int) -> bool:
    """Whether ``data`` is the reply to request ``seq`` (an earlier, timed-out request's
    reply may still be queued on a kept socket)."""
    return any(m.seq == seq for m in nfnl.split_messages(data))


def generation(netns: str) -> int | None:
    """The nf_tables generation of ``netns``, or None if it cannot be read."""
    try:
        with nsmod.entered(netns):
            s = _open_socket()
    except (OSError, NetnsError):
        return None
    try:
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
                if _answers(data, seq):
                    return parse(data, seq)
        except OSError:
            self.forget(netns)
            return None

    def forget(self, netns: str) -> None:
        self._socks.forget(netns)

    def close(self) -> None:
        self._socks.close()


def _open_socket() -> socket.socket:
    # Not bound: the kernel gives the socket an address at its first send.
    return nfnl.open_socket(timeout=1.0, bind=False)
