"""The netfilter netlink codec: message headers, attributes and batches, and nothing else.

Three parts of the tool speak to netfilter over a NETLINK_NETFILTER socket without a
library: the NFLOG reader (``enforcer.nflog``, logged drops), the nf_tables generation
probe of drift repair (``enforcer.daemon.nftgen``) and the raw set element batches of the
nftables backend (``backends.libnft``). They share this module for the framing, so the
byte layout is written (and tested) once; each keeps its own message types and meanings.

Wire format (include/uapi/linux/netlink.h, include/uapi/linux/netfilter/nfnetlink.h)::

    nlmsghdr   u32 len, u16 type, u16 flags, u32 seq, u32 pid        (host byte order)
    nfgenmsg   u8 family, u8 version (0), be16 res_id                 (netfilter messages)
    attributes u16 len, u16 type, value, each padded to 4 bytes; type's top bits are the
               NLA_F_NESTED / NLA_F_NET_BYTEORDER flags; a nested value is attributes
    batch      NFNL_MSG_BATCH_BEGIN (res_id = subsystem), the messages, NFNL_MSG_BATCH_END:
               nf_tables commits everything between the two in one transaction or nothing

A message type is ``(subsystem << 8) | message`` for netfilter messages; ``type_of`` builds it.
The header and attribute functions (``message``, ``attr``, ``split_messages``,
``iter_attrs``, ``error_code``) are plain netlink framing: rtnetlink messages use them as
well, with their own header (ifinfomsg, rtgenmsg) in place of nfgenmsg; the host mode
resolver (``enforcer.daemon.hostside``: link dumps, namespace ids) frames them here.

Everything here is pure (bytes in, bytes out) except ``open_socket``, which only creates a
socket (NETLINK_NETFILTER, or NETLINK_ROUTE for rtnetlink) in the calling thread's current
namespace (enter one with ``enforcer.netns``). It
imports nothing from the rest of the tool, so backends may use it as they use the IR.
"""
from __future__ import annotations

import errno
import socket
import struct
from typing import Iterator, NamedTuple

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12

# nlmsghdr
HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8  # a request: send the object back as made (nf_tables: a new rule with its handle)
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100  # on an NLMSG_ERROR: the request was not echoed, only its header
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1  # extended ack: the kernel's message (a string)
# socket options (SOL_NETLINK) that Python's socket module does not name
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # an error does not echo the whole request back, only its header
NETLINK_EXT_ACK = 11  # an error may carry the kernel's message (NLMSGERR_ATTR_MSG)

# attributes
ATTR_HEADER = struct.Struct("=HH")  # len, type
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF

# nfnetlink
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (already big-endian: packed as is)
NFNETLINK_V0 = 0
NFNL_SUBSYS_ULOG = 4
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFNL_BATCH_GENID = 1  # a batch begin's attribute: the generation the batch was computed against
NLM_F_DUMP = 0x300  # a request: every object that matches (answers end with NLMSG_DONE)
NLM_F_DUMP_INTR = 0x10  # on a dump's answer: the ruleset changed while it was dumped


def align(n: int) -> int:
    """``n`` rounded up to the 4-byte boundary netlink aligns messages and attributes to."""
    return (n + 3) & ~3


def type_of(subsystem: int, message: int) -> int:
    return (subsystem << 8) | message


# ---------------------------------------------------------------------------------------
# Building


def attr(kind: int, value: bytes) -> bytes:
    """One attribute: the length counts the header and the value, not the padding."""
    length = ATTR_HEADER.size + len(value)
    if length > 0xFFFF:
        # The length field is 16 bits: a caller with more data must split it over messages.
        raise ValueError(f"netlink attribute {kind & NLA_TYPE_MASK} of {length} bytes (at most 65535)")
    return ATTR_HEADER.pack(length, kind) + value + b"\0" * (-length % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    """An attribute whose value is the given attributes (NLA_F_NESTED set)."""
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u8(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=B", value))


def be32(kind: int, value: int) -> bytes:
    """A 32-bit value in network byte order, as netfilter sends numbers."""
    return attr(kind, struct.pack(">I", value))


def be16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">H", value))


def be64(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">Q", value))


def string(kind: int, value: str) -> bytes:
    """A NUL-terminated string attribute (table and set names)."""
    return attr(kind, value.encode() + b"\0")


def nfgenmsg(family: int, res_id: int = 0) -> bytes:
    """The netfilter header that starts every netfilter message body; ``res_id`` (an nflog
    group, a batch's subsystem) goes on the wire big-endian."""
    return NFGENMSG.pack(family, NFNETLINK_V0, socket.htons(res_id))


def message(kind: int, flags: int, seq: int, body: bytes, pid: int = 0) -> bytes:
    """One netlink message: the header and ``body``, padded so that messages can follow."""
    length = HEADER.size + len(body)
    return HEADER.pack(length, kind, flags, seq, pid) + body + b"\0" * (-length % 4)


def nf_message(kind: int, flags: int, seq: int, family: int, payload: bytes = b"", res_id: int = 0) -> bytes:
    """One netfilter message: nlmsghdr, nfgenmsg, then ``payload`` (attributes)."""
    return message(kind, flags, seq, nfgenmsg(family, res_id) + payload)


def batch(messages: list[bytes], begin_seq: int, end_seq: int, subsystem: int = NFNL_SUBSYS_NFTABLES,
          genid: int | None = None) -> bytes:
    """``messages`` between a batch begin and a batch end for ``subsystem``: one transaction.
    ``genid``: commit only if the ruleset generation is still that one (NFNL_BATCH_GENID:
    the kernel refuses the whole batch with ERESTART otherwise, nothing of it applied)."""
    guard = be32(NFNL_BATCH_GENID, genid) if genid is not None else b""
    return (nf_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin_seq, socket.AF_UNSPEC, guard, res_id=subsystem)
            + b"".join(messages)
            + nf_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, socket.AF_UNSPEC, res_id=subsystem))


# ---------------------------------------------------------------------------------------
# Reading


class Message(NamedTuple):
    """One received netlink message (``kind, seq, body = m`` unpacks it)."""

    kind: int
    seq: int
    body: bytes


def split_messages(buf: bytes) -> list[Message]:
    """Every netlink message in ``buf`` (the kernel may put several in one datagram); a
    truncated or malformed message ends the list, since nothing sane can follow it."""
    out = []
    offset = 0
    while offset + HEADER.size <= len(buf):
        length, kind, _flags, seq, _pid = HEADER.unpack_from(buf, offset)
        if length < HEADER.size or offset + length > len(buf):
            break
        out.append(Message(kind, seq, buf[offset + HEADER.size: offset + length]))
        offset += align(length)
    return out


def iter_attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(type, value)`` of every attribute in ``data``, in order, type without its flags
    (a nested value is attributes again: ``iter_attrs(value)``). Stops at a malformed one."""
    offset = 0
    while offset + ATTR_HEADER.size <= len(data):
        length, kind = ATTR_HEADER.unpack_from(data, offset)
        if length < ATTR_HEADER.size or offset + length > len(data):
            return
        yield kind & NLA_TYPE_MASK, data[offset + ATTR_HEADER.size: offset + length]
        offset += align(length)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Attribute type (flags masked off) -> value; a repeated type keeps the last."""
    return dict(iter_attrs(data))


def parse_nfgenmsg(body: bytes) -> tuple[int, int, bytes]:
    """``(family, res_id, attributes)`` of a netfilter message body."""
    if len(body) < NFGENMSG.size:
        raise ValueError("netfilter message shorter than its nfgenmsg header")
    family, _version, res_id = NFGENMSG.unpack_from(body)
    return family, socket.ntohs(res_id), body[NFGENMSG.size:]


NFT_MSG_NEWGEN, NFT_MSG_GETGEN, NFTA_GEN_ID = 15, 16, 1  # nf_tables' ruleset generation


def generation_request(seq: int) -> bytes:
    """NFT_MSG_GETGEN: the namespace's nf_tables generation, which every committed
    transaction (anyone's) moves on; answered by one NFT_MSG_NEWGEN."""
    return nf_message(type_of(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN), NLM_F_REQUEST, seq, socket.AF_UNSPEC)


def generation_of(body: bytes) -> int | None:
    """The generation id in a NEWGEN message body (None when it carries none)."""
    gen = parse_attrs(parse_nfgenmsg(body)[2]).get(NFTA_GEN_ID, b"")
    return int.from_bytes(gen[:4], "big") if len(gen) >= 4 else None


def error_code(body: bytes) -> int:
    """The (positive) errno of an NLMSG_ERROR body; 0 is an acknowledgement. A body too
    short to hold one is EIO."""
    return -struct.unpack_from("=i", body)[0] if len(body) >= 4 else errno.EIO


def error_text(body: bytes, flags: int) -> str:
    """The kernel's own words in an NLMSG_ERROR (extended ack, NETLINK_EXT_ACK), or "".
    ``flags`` are the error message's header flags; with NETLINK_CAP_ACK the request is
    not echoed, so the attributes start right after the error code and the request's header."""
    if not flags & NLM_F_ACK_TLVS or len(body) < 4 + HEADER.size:
        return ""
    offset = 4 + HEADER.size
    if not flags & NLM_F_CAPPED:  # the whole request was echoed: skip it
        offset = 4 + align(HEADER.unpack_from(body, 4)[0])
    for kind, value in iter_attrs(body[offset:]):
        if kind == NLMSGERR_ATTR_MSG:
            return value.rstrip(b"\0").decode(errors="replace")
    return ""


# ---------------------------------------------------------------------------------------
# The socket (kernel)


def open_socket(timeout: float | None = None, bind: bool = True, protocol: int = NETLINK_NETFILTER) -> socket.socket:
    """A netlink socket (NETLINK_NETFILTER unless ``protocol`` says otherwise) in the calling
    thread's current network namespace (a socket stays in the namespace it was created
    in, whatever the thread does later)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    try:
        if bind:
            s.bind((0, 0))
        if timeout is not None:
            s.settimeout(timeout)
    except BaseException:
        s.close()
        raise
    return s
