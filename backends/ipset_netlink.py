"""``ipset -exist restore`` without the ipset tool: the same lines, sent as ipset netlink
messages (NFNL_SUBSYS_IPSET) from this process through a socket opened inside the
namespace.

Why: a pod's sets through ``ipset restore`` cost a process in its namespace (~5 ms of
CPU for a cold pod of 48 sets and ~600 elements, most of it the tool's own start), the
largest single part of an iptables cold apply. The kernel does the same work either way.

What it speaks is exactly what the backends write (ipt_render.IpSet, delta_text,
the cleanups), and exactly as ``ipset`` 7.17 sends it (strace of the tool):

    create NAME hash:ip|hash:net|hash:ip,port family inet|inet6 comment
    add NAME ELEMENT [comment "TEXT"]      del NAME ELEMENT
    swap NAME NAME2        flush NAME       destroy NAME

Anything else (another type or option, a name that is not one of ours: np.*, nt.*,
nph*, an element the tool itself would refuse before sending anything: an address of
the other family, a prefix out of range) raises Unsupported before anything is sent,
and the caller runs the tool. A ``destroy`` without a name (every set of the
namespace) is never sent.

The tool stops at the first line the kernel refuses. Here messages go in runs, one
``send`` and the acknowledgements after it, and a run is sent only when every line
before it succeeded; a ``swap`` is always sent alone, after everything before it
succeeded, so a temporary set whose build failed is never swapped into place, and the
error says whether a swap had happened (``Refused.swapped``: then the caller must not
simply run the text again). Within a run, lines after a refused one may still have
been applied (builds of temporaries, adds to a set that a rollback destroys, deltas
that a full replace follows): the state the callers repair is the same.

Set revisions: the kernel's newest for the type (IPSET_CMD_TYPE, asked once per
process), capped at the one the ipset tool of Debian 12 (7.17) uses, so that ``ipset
save`` prints the sets exactly as when the tool made them.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import struct
import threading
from functools import lru_cache

from enforcer import netns as nsmod, nfnetlink as nfnl

NFNL_SUBSYS_IPSET = 6
IPSET_PROTOCOL = 7
CMD = {"create": 2, "destroy": 3, "flush": 4, "swap": 6, "add": 9, "del": 10}
IPSET_CMD_TYPE = 13
# command-level attributes
A_PROTOCOL, A_SETNAME, A_TYPENAME, A_REVISION, A_FAMILY, A_DATA, A_ADT = 1, 2, 3, 4, 5, 7, 8
A_SETNAME2 = A_TYPENAME
A_LINENO = 9  # required beside A_ADT (the kernel's error echo carries the failing line)
A_REVISION_MIN = 10
# data attributes
D_IP, D_CIDR, D_PORT, D_PROTO, D_CADT_FLAGS, D_COMMENT = 1, 3, 4, 7, 8, 26
IPADDR_IPV4, IPADDR_IPV6 = 1, 2
FLAG_WITH_COMMENT = 1 << 4
NFPROTO = {"inet": 2, "inet6": 10}
KINDS = {"ip": "hash:ip", "net": "hash:net", "ipp": "hash:ip,port"}
# ipset 7.17's revision of each type on a kernel that has it (what the tool sends)
TOOL_REVISION = {"hash:ip": 6, "hash:net": 7, "hash:ip,port": 7}
IP_PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136}
NAME_RE = re.compile(r"(?:np\.|nt\.|nph)[A-Za-z0-9_.:\-]*\.(ip|net|ipp)([46])")
IPSET_MAXNAMELEN = 32
COMMENT_MAX = 255  # IPSET_MAX_COMMENT_SIZE
RUN_BYTES = 1 << 16  # one send: the kernel's acks for it must fit the receive buffer
RUN_MESSAGES = 64
ADT_BYTES = 60000  # an attribute's length is 16 bits: elements of one message under it
ERRORS = {4097: "protocol error", 4098: "cannot find set type", 4099: "maximum number of sets reached",
          4100: "set is in use", 4101: "second set does not exist", 4102: "the sets' types differ",
          4103: "element or set exists already", 4104: "invalid CIDR", 4105: "invalid netmask",
          4106: "invalid family", 4107: "timeout error", 4108: "set is referenced",
          4109: "invalid IPv4 address", 4110: "invalid IPv6 address", 4111: "counter error",
          4112: "comment error", 4352: "type-specific error (e.g. the set is full)"}


class Unsupported(Exception):
    """A line this encoder does not speak: nothing was sent, run the tool instead."""


class Refused(Exception):
    """The kernel refused a line (the message names it: its number, command and set), or
    its answers were lost; ``swapped``: a swap was (or may have been) applied before it,
    so the text must not simply run again."""

    def __init__(self, message: str, swapped: bool) -> None:
        super().__init__(message)
        self.swapped = swapped


# ---------------------------------------------------------------------------------------
# Encoding (pure)


@lru_cache(maxsize=1 << 14)
def _head(name: str) -> bytes:
    return nfnl.u8(A_PROTOCOL, IPSET_PROTOCOL) + nfnl.string(A_SETNAME, name)


@lru_cache(maxsize=1 << 14)
def _check_name(name: str) -> str:
    if len(name) >= IPSET_MAXNAMELEN or not NAME_RE.fullmatch(name):
        raise Unsupported(f"set name {name!r}")
    return name


@lru_cache(maxsize=1 << 14)
def _type_of(name: str) -> tuple[str, int]:
    """The set's type and address family (4, 6), which its name says (ipt_render.ipset_name)."""
    m = NAME_RE.fullmatch(name)
    return KINDS[m.group(1)], int(m.group(2))  # type: ignore[union-attr]


def _ip(text: str, family: int) -> bytes:
    # The tool refuses an address of the other family before it sends anything (a line
    # that the kernel refused instead would come after the lines before it were applied).
    try:
        addr = ipaddress.ip_address(text)
    except ValueError as e:
        raise Unsupported(f"address {text!r}") from e
    if addr.version != family:
        raise Unsupported(f"address {text!r} in an IPv{family} set")
    kind = IPADDR_IPV4 if addr.version == 4 else IPADDR_IPV6
    return nfnl.nested(D_IP, nfnl.attr(kind | nfnl.NLA_F_NET_BYTEORDER, addr.packed))


@lru_cache(maxsize=1 << 16)
def element_data(typ: str, family: int, rest: str) -> bytes:
    """One element's DATA attribute: ``rest`` is the line after the set's name
    (``10.0.0.5,tcp:80 comment "x"``). Pod addresses recur in the sets of many pods:
    each is encoded once."""
    element, _, note = rest.partition(" comment ")
    element = element.strip()
    body = b""
    if typ == "hash:ip":
        body = _ip(element, family)
    elif typ == "hash:net":
        addr, slash, cidr = element.partition("/")
        body = _ip(addr, family)
        if slash:
            if not cidr.isdigit() or not 0 < int(cidr) <= (32 if family == 4 else 128):
                raise Unsupported(f"prefix {element!r}")
            body += nfnl.u8(D_CIDR, int(cidr))
    elif typ == "hash:ip,port":
        addr, _, pp = element.partition(",")
        proto, _, port = pp.partition(":")
        if proto not in IP_PROTOCOLS or not port.isdigit() or int(port) > 0xFFFF:
            raise Unsupported(f"element {element!r}")
        body = _ip(addr, family) + nfnl.attr(D_PORT | nfnl.NLA_F_NET_BYTEORDER, struct.pack(">H", int(port))) \
            + nfnl.u8(D_PROTO, IP_PROTOCOLS[proto])
    else:
        raise Unsupported(f"set type {typ}")
    if note:
        text = note.strip()
        if len(text) < 2 or text[0] != '"' or text[-1] != '"' or '"' in text[1:-1]:
            raise Unsupported(f"comment {note!r}")
        raw = text[1:-1].encode()
        if len(raw) > COMMENT_MAX:
            raise Unsupported("comment longer than 255 bytes")
        body += nfnl.attr(D_COMMENT, raw + b"\0")
    return nfnl.nested(A_DATA, body)


class Line:
    """One line as a message body (after nfgenmsg): ``command`` as written."""

    __slots__ = ("number", "command", "name", "payload")

    def __init__(self, number: int, command: str, name: str, payload: bytes) -> None:
        self.number, self.command, self.name, self.payload = number, command, name, payload


def encode(text: str, revision) -> list[Line]:
    """The messages of ``text`` (``revision(type, family)`` gives a create's revision);
    consecutive adds (dels) to one set share a message, as the tool's do. Raises
    Unsupported for anything it does not speak (nothing sent yet)."""
    out: list[Line] = []
    elements: list[bytes] = []
    current: Line | None = None
    typ, family = "", 0
    size = 0

    def close() -> None:
        nonlocal current, elements
        if current is not None:
            current.payload += nfnl.attr(A_ADT | nfnl.NLA_F_NESTED, b"".join(elements))
            out.append(current)
        current, elements = None, []

    for number, line in enumerate(text.splitlines(), 1):
        command, _, rest = line.partition(" ")
        name, _, rest = rest.partition(" ")
        if command in ("add", "del"):
            # the hot path: a pod's elements, most of them in pod addresses seen before
            if current is None or current.name != name or current.command != command or size > ADT_BYTES:
                close()
                typ, family = _type_of(_check_name(name))
                current = Line(number, command, name,
                               _head(name) + nfnl.be32(A_LINENO | nfnl.NLA_F_NET_BYTEORDER, number))
                size = 0
            if not rest or (command == "del" and " comment " in rest):
                raise Unsupported(f"line {number}: {line!r}")
            data = element_data(typ, family, rest)
            elements.append(data)
            size += len(data)
            continue
        if not line.strip():
            continue
        close()
        if command not in CMD:
            raise Unsupported(f"line {number}: {line!r}")
        _check_name(name)
        words = rest.split()
        if command == "create":
            if len(words) != 4 or words[1] != "family" or words[2] not in NFPROTO or words[3] != "comment" \
                    or (words[0], 4 if words[2] == "inet" else 6) != _type_of(name):
                raise Unsupported(f"line {number}: {line!r}")
            nfproto = NFPROTO[words[2]]
            payload = _create(name, words[0], nfproto, revision(words[0], nfproto))
        elif command == "swap":
            if len(words) != 1:
                raise Unsupported(f"line {number}: {line!r}")
            payload = _head(name) + nfnl.string(A_SETNAME2, _check_name(words[0]))
        elif words or command not in ("flush", "destroy"):  # a name and nothing else
            raise Unsupported(f"line {number}: {line!r}")
        else:
            payload = _head(name)
        out.append(Line(number, command, name, payload))
    close()
    return out


@lru_cache(maxsize=1 << 14)
def _create(name: str, typ: str, family: int, revision: int) -> bytes:
    return (_head(name) + nfnl.string(A_TYPENAME, typ) + nfnl.u8(A_REVISION, revision) + nfnl.u8(A_FAMILY, family)
            + nfnl.nested(A_DATA, nfnl.be32(D_CADT_FLAGS | nfnl.NLA_F_NET_BYTEORDER, FLAG_WITH_COMMENT)))


def _message(line: Line, seq: int) -> bytes:
    flags = nfnl.NLM_F_REQUEST | nfnl.NLM_F_ACK | (nfnl.NLM_F_CREATE if line.command == "create" else 0)
    # No NLM_F_EXCL: the tool's -exist (an existing element or equal set is no error).
    return nfnl.nf_message(nfnl.type_of(NFNL_SUBSYS_IPSET, CMD[line.command]), flags, seq, socket.AF_INET,
                           line.payload)


def error_words(code: int) -> str:
    if code in ERRORS:
        return ERRORS[code]
    if code > 4352:
        return f"type-specific error {code}"
    return os.strerror(code) if code < 4096 else f"ipset error {code}"


# ---------------------------------------------------------------------------------------
# The kernel


_revisions: dict[tuple[str, int], int] = {}
_revisions_lock = threading.Lock()


def _open(netns: str) -> socket.socket:
    with nsmod.entered(netns):  # the socket belongs to the pod's namespace, never the host's
        s = nfnl.open_socket(timeout=5.0)
    try:
        s.setsockopt(nfnl.SOL_NETLINK, nfnl.NETLINK_CAP_ACK, 1)
        s.setsockopt(nfnl.SOL_NETLINK, nfnl.NETLINK_EXT_ACK, 1)
    except OSError:
        pass
    return s


def _ask_revision(s: socket.socket, typ: str, family: int) -> int:
    """The kernel's newest revision of ``typ`` (IPSET_CMD_TYPE), capped at the tool's."""
    key = (typ, family)
    with _revisions_lock:
        if key in _revisions:
            return _revisions[key]
    s.send(nfnl.nf_message(nfnl.type_of(NFNL_SUBSYS_IPSET, IPSET_CMD_TYPE), nfnl.NLM_F_REQUEST, 1, socket.AF_INET,
                           nfnl.u8(A_PROTOCOL, IPSET_PROTOCOL) + nfnl.string(A_TYPENAME, typ)
                           + nfnl.u8(A_FAMILY, family)))
    for kind, _seq, body in nfnl.split_messages(s.recv(1 << 16)):
        if kind == nfnl.NLMSG_ERROR:
            raise Refused(f"set type {typ}: {error_words(nfnl.error_code(body))}", False)
        attrs = nfnl.parse_attrs(nfnl.parse_nfgenmsg(body)[2])
        newest, oldest = attrs.get(A_REVISION, b"\0")[0], attrs.get(A_REVISION_MIN, b"\0")[0]
        rev = min(newest, TOOL_REVISION[typ])
        if rev < oldest:
            raise Refused(f"set type {typ}: the kernel's revisions {oldest}-{newest} are all newer "
                          f"than ipset's {TOOL_REVISION[typ]}", False)
        with _revisions_lock:
            _revisions[key] = rev
        return rev
    raise Refused(f"set type {typ}: no answer", False)


def restore(netns: str, text: str, quiet: bool = False) -> None:
    """``ipset -exist restore`` of ``text`` inside ``netns`` over netlink. Raises
    Unsupported (nothing sent) or Refused (see the module's doc); ``quiet``: every line
    is sent whatever happens to the others, and nothing is raised for a refusal (a
    cleanup)."""
    if not text.strip():
        return
    try:
        s = _open(netns)
    except OSError as e:  # (no netlink socket for us here: the tool may still do it)
        raise Refused(f"ipset netlink in {netns}: {e}", False) from e
    try:
        lines = encode(text, lambda typ, family: _ask_revision(s, typ, family))
        _send(s, lines, quiet)
    except OSError as e:
        raise Refused(f"ipset netlink in {netns}: {e}", False) from e
    finally:
        s.close()


def _send(s: socket.socket, lines: list[Line], quiet: bool) -> None:
    swapped = False
    run: list[Line] = []
    size = 0
    seq = 100

    def flush() -> None:
        nonlocal run, size, seq
        if not run:
            return
        msgs = []
        for line in run:
            seq += 1
            msgs.append(_message(line, seq))
        try:
            s.send(b"".join(msgs))
            failed = _acks(s, seq - len(run) + 1, seq)
        except OSError as e:
            # answers lost: a swap in this run may have happened, so it counts as one
            raise Refused(f"ipset netlink: {e}", swapped or any(x.command == "swap" for x in run)) from e
        if failed and not quiet:
            i, code, words = failed
            line = run[i]
            raise Refused(f"line {line.number}: {line.command} {line.name}: {words or error_words(code)}", swapped)
        run, size = [], 0

    for line in lines:
        if line.command == "swap" and not quiet:
            flush()
            run = [line]
            flush()
            swapped = True
            continue
        n = len(line.payload) + 64
        if run and (size + n > RUN_BYTES or len(run) >= RUN_MESSAGES):
            flush()
        run.append(line)
        size += n
    flush()


def _acks(s: socket.socket, first: int, last: int) -> tuple[int, int, str] | None:
    """Read the acknowledgements of messages ``first``..``last``: the first refusal as
    (index in the run, error code, the kernel's words), or None."""
    pending = last - first + 1
    failed = None
    while pending:
        data = _recv(s)
        offset = 0
        while offset + nfnl.HEADER.size <= len(data):
            length, kind, flags, seq, _pid = nfnl.HEADER.unpack_from(data, offset)
            if length < nfnl.HEADER.size or offset + length > len(data):
                break
            body = data[offset + nfnl.HEADER.size: offset + length]
            offset += nfnl.align(length)
            if kind != nfnl.NLMSG_ERROR or not first <= seq <= last:
                continue
            pending -= 1
            code = nfnl.error_code(body)
            if code and (failed is None or seq - first < failed[0]):
                failed = (seq - first, code, nfnl.error_text(body, flags))
    return failed


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(1 << 17)
    except OSError as e:
        if e.errno == errno.ENOBUFS:
            raise OSError(errno.ENOBUFS, "acknowledgements lost (receive buffer full)") from e
        raise
