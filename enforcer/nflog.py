"""A small reader of NFLOG, the netlink family that carries logged packets to userspace.

Both backends log the packets an isolated direction is about to drop to one nflog group
(nftables: ``log prefix "..." group 100``; iptables: ``-j NFLOG --nflog-group 100``); the
kernel hands them to whoever bound that group in the same network namespace, over a
NETLINK_NETFILTER socket (subsystem NFNL_SUBSYS_ULOG). This module speaks just enough of
that protocol: bind a group, ask for the first bytes of each packet, and read back the
prefix and the packet's IP and L4 headers.

Wire format (include/uapi/linux/netfilter/nfnetlink_log.h, all numbers in comments): the
netfilter framing of ``enforcer.nfnetlink`` with message type ``(NFNL_SUBSYS_ULOG << 8) | msg``
and the group as nfgenmsg's res_id; the attributes below.

Everything but ``NflogSocket`` is pure (bytes in, data out) and unit-tested with
hand-built messages; the socket is the only part that talks to the kernel.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from enforcer import nfnetlink as nfnl
from enforcer.errors import NetnsError
from enforcer.ir import DIRECTIONS
from enforcer.nfnetlink import (NFNL_SUBSYS_ULOG, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, error_code,
                                parse_attrs, split_messages)

NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
MSG_PACKET = nfnl.type_of(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET)
MSG_CONFIG = nfnl.type_of(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG)

# config attributes and commands
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_QTHRESH = 5
NFULA_CFG_TIMEOUT = 4
CMD_BIND = 1
CMD_PF_BIND = 3
COPY_PACKET = 2

# packet attributes
NFULA_PACKET_HDR = 1
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
PORTED = {6, 17, 132}  # protocols whose header starts with source and destination port
IPV6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options: (next, len/8 - 1) first
IPV6_FRAGMENT = 44

# Enough for an IPv4 header with options or an IPv6 header with a few extension headers,
# plus the ports: we never need the data.
COPY_RANGE = 128


# ---------------------------------------------------------------------------------------
# Building and splitting netlink messages (pure; the framing is enforcer.nfnetlink's)


def config_message(seq: int, group: int, family: int, attrs: bytes) -> bytes:
    """One NFULNL_MSG_CONFIG request (acked) for ``group``."""
    return nfnl.nf_message(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, family, attrs, res_id=group)


def command_attr(command: int) -> bytes:
    return nfnl.u8(NFULA_CFG_CMD, command)


def mode_attr(copy_range: int, mode: int = COPY_PACKET) -> bytes:
    # struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; } packed
    return nfnl.attr(NFULA_CFG_MODE, struct.pack(">IBB", copy_range, mode, 0))


def u32_attr(kind: int, value: int) -> bytes:
    return nfnl.be32(kind, value)


# ---------------------------------------------------------------------------------------
# What a logged packet says (pure)


@dataclass(frozen=True)
class LogPacket:
    """One packet the kernel logged: the rule's prefix and the first bytes of the packet."""

    group: int
    prefix: str
    payload: bytes
    hw_protocol: int = 0  # ethertype: 0x0800 IPv4, 0x86dd IPv6
    hook: int = -1  # NF_INET_LOCAL_IN = 1, NF_INET_LOCAL_OUT = 3
    indev: int = 0
    outdev: int = 0


def parse_packet(body: bytes) -> LogPacket:
    """The body of an NFULNL_MSG_PACKET message (nfgenmsg + attributes)."""
    _family, group, rest = nfnl.parse_nfgenmsg(body)
    attrs = parse_attrs(rest)
    hw_protocol = hook = -1
    if len(attrs.get(NFULA_PACKET_HDR, b"")) >= 3:
        hw_protocol, hook = struct.unpack_from(">HB", attrs[NFULA_PACKET_HDR])
    prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode(errors="replace")
    return LogPacket(group, prefix, attrs.get(NFULA_PAYLOAD, b""), max(hw_protocol, 0), hook,
                     _be32(attrs.get(NFULA_IFINDEX_INDEV)), _be32(attrs.get(NFULA_IFINDEX_OUTDEV)))


def _be32(value: bytes | None) -> int:
    return struct.unpack(">I", value[:4])[0] if value and len(value) >= 4 else 0


def parse_packets(buf: bytes) -> list[LogPacket]:
    """Every logged packet in one recv() buffer (other message types are skipped)."""
    return [parse_packet(body) for kind, _seq, body in split_messages(buf) if kind == MSG_PACKET]


@dataclass(frozen=True)
class Flow:
    """The addresses, protocol and ports of a packet (ports 0 when it has none)."""

    src: str
    dst: str
    protocol: str  # "TCP", "UDP", "SCTP", "ICMP", "ICMPv6" or the number
    sport: int = 0
    dport: int = 0
    icmp_type: int | None = None


def parse_ip(payload: bytes) -> Flow | None:
    """The flow of a packet that starts at its IP header (what NFULA_PAYLOAD holds at the
    input and output hooks); None when the bytes are not an IP packet we can read."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src, dst = str(ipaddress.IPv4Address(payload[12:16])), str(ipaddress.IPv4Address(payload[16:20]))
        frag_offset = struct.unpack_from(">H", payload, 6)[0] & 0x1FFF
        l4 = payload[ihl:] if ihl >= 20 and frag_offset == 0 else b""
        return _l4(src, dst, proto, l4)
    if version == 6 and len(payload) >= 40:
        src, dst = str(ipaddress.IPv6Address(payload[8:24])), str(ipaddress.IPv6Address(payload[24:40]))
        proto, offset = payload[6], 40
        while proto in IPV6_EXT or proto == IPV6_FRAGMENT:
            if offset + 8 > len(payload):
                return _l4(src, dst, proto, b"")
            nxt = payload[offset]
            if proto == IPV6_FRAGMENT:
                if struct.unpack_from(">H", payload, offset + 2)[0] & 0xFFF8:
                    return _l4(src, dst, nxt, b"")  # not the first fragment: no L4 header
                offset += 8
            else:
                offset += (payload[offset + 1] + 1) * 8
            proto = nxt
        return _l4(src, dst, proto, payload[offset:])
    return None


def _l4(src: str, dst: str, proto: int, l4: bytes) -> Flow:
    name = PROTO_NAMES.get(proto, str(proto))
    if proto in PORTED and len(l4) >= 4:
        sport, dport = struct.unpack_from(">HH", l4)
        return Flow(src, dst, name, sport, dport)
    if proto in (1, 58) and l4:
        return Flow(src, dst, name, icmp_type=l4[0])
    return Flow(src, dst, name)


def parse_prefix(prefix: str) -> tuple[str, str] | None:
    """``"netpol drop ingress prod/db: "`` -> ``("ingress", "prod/db")``; None for a
    prefix that is not ours. A ClusterNetworkPolicy Deny's prefix goes on after the colon
    (``prod/db: Admin deny-dev[0]``, backends.base.tier_nflog_prefix). (A long pod name may
    be cut with a hash: backends.base.fit.)"""
    words = prefix.strip().split(" ", 3)
    if len(words) < 4 or words[:2] != ["netpol", "drop"] or words[2] not in DIRECTIONS:
        return None
    return words[2], words[3].split(":", 1)[0].rstrip()


# ---------------------------------------------------------------------------------------
# The socket (kernel)


class NflogSocket:
    """A NETLINK_NETFILTER socket bound to one nflog group in the CURRENT network namespace
    of the calling thread (create it inside ``enforcer.netns.entered``: a socket stays in
    the namespace it was created in). Non-blocking after setup; use ``fileno`` with a
    selector and ``read`` when it is ready."""

    def __init__(self, group: int, copy_range: int = COPY_RANGE, rcvbuf: int = 1 << 20):
        self.group = group
        self._seq = 0
        self.sock = nfnl.open_socket(timeout=2.0)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            # Kernels before 3.17 need the logger bound per family first; newer ones
            # accept and ignore it, and some refuse it (EEXIST, EBUSY, ...): not an error.
            for family in (socket.AF_INET, socket.AF_INET6):
                self._request(0, family, command_attr(CMD_PF_BIND), tolerate=True)
            self._request(group, socket.AF_UNSPEC, command_attr(CMD_BIND))
            self._request(group, socket.AF_UNSPEC, mode_attr(copy_range)
                          + u32_attr(NFULA_CFG_QTHRESH, 1) + u32_attr(NFULA_CFG_TIMEOUT, 1))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def _request(self, group: int, family: int, attrs: bytes, tolerate: bool = False) -> None:
        self._seq += 1
        self.sock.send(config_message(self._seq, group, family, attrs))
        while True:
            try:
                buf = self.sock.recv(65536)
            except socket.timeout:
                raise NetnsError("nflog: the kernel did not answer a configuration request") from None
            for kind, seq, body in split_messages(buf):
                if kind != NLMSG_ERROR or seq != self._seq:
                    continue  # a logged packet arriving early: dropped, setup is not done
                code = error_code(body)
                if code and not tolerate:
                    if code in (errno.EPERM, errno.EBUSY):  # another socket holds the group
                        raise NetnsError(f"nflog group {group} is already read by another program "
                                         "in this namespace (another `netpol lab drops`?)")
                    raise NetnsError(f"nflog group {group}: the kernel refused the binding: "
                                     f"{os.strerror(code)}")
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[LogPacket]:
        """The packets waiting on the socket (empty when there are none)."""
        out: list[LogPacket] = []
        while True:
            try:
                buf = self.sock.recv(65536)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # we fell behind and the kernel dropped some
                    continue
                raise
            out.extend(p for p in parse_packets(buf) if p.group == self.group)

    def close(self) -> None:
        self.sock.close()  # the kernel unbinds the group when its socket goes

    def __enter__(self) -> "NflogSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
