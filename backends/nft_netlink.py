"""A whole pod table as ONE raw nf_tables netlink batch, without libnftables.

Why: a cold apply of 110 pod tables spent ~72% of its time in libnftables' text parser and
evaluator (benchmarks/bench_apply_floor.py), not in the kernel. The kernel needs only the
messages: NEWTABLE, NEWCHAIN, NEWSET + NEWSETELEM, NEWRULE, between a batch begin and end.

What it encodes: the text ``backends.nftables`` renders, and only that vocabulary (one
source of truth: the rendered table says what to send, as it says it to libnftables):

    table inet NAME { comment "..." ; set ... ; chain ... }
    sets      type ipv4_addr | ipv6_addr                       (hash, host elements)
              type ipvX_addr . inet_proto, flags interval      (CIDR . lo-hi elements)
              type ipvX_addr . inet_proto . inet_service       (addr . proto . port)
              elements with comments
    chains    type filter hook H priority filter|N; policy accept|drop;  or regular
    matches   ct state S[,S]; iif/oif "lo"; meta l4proto P; icmpv6 type { ... };
              ip/ip6 saddr/daddr ADDR | PREFIX | @set | . meta l4proto [. th dport] @set;
              tcp/udp/sctp dport N | N-M | { N, N-M, ... }
    statements counter; limit rate N/unit; log prefix "..." group N
    verdicts  accept drop return jump C goto C; comment "..." (rule userdata)

Anything else raises ``Unsupported``, and the caller sends the text through libnftables
instead (the fallback, so a renderer change never needs this module to follow at once).

The bytes are those nft 1.0.6 sends for the same text (read from its batches with
``strace -e write=``; the layout is the kernel's uapi nf_tables.h): the same expressions
in the same order, the same set userdata (key byte order, ``typeof``, which nft reads back
to print elements), chains before sets before rules, an anonymous set just before the
rule that looks it up. So the kernel ends up holding the same objects with the same
handles, and ``nft list table`` prints the same text and JSON: tests/integration/
test_nft_netlink.py loads each table both ways into two namespaces and compares.

Encoding is pure (text in, bytes out; the rule vocabulary is backends/nft_nlexpr.py);
``TableSocket`` sends a batch from inside a namespace and checks the kernel's answer to
every message (an error names the message that failed). backends/nft_runners.py
(NetlinkRunner) puts them together for the backend.
"""
from __future__ import annotations

import functools
import os
import re
import socket
import struct
import threading
from collections import OrderedDict
from typing import NamedTuple, Sequence

from backends.nft_nlexpr import (NAME_RE, SET_CONCAT, SET_INTERVAL, T_IPV4, T_IPV6, T_PROTO, T_SERVICE,
                                 UD_BIG_ENDIAN, UD_CONCAT, Unsupported, _addr, _Anon, _fill, _id_attr,
                                 _last, _port, _proto, _quoted, _rule, str_attr, _tokens, _udata)
from enforcer import nfnetlink as nfnl

# nf_tables messages (uapi/linux/netfilter/nf_tables.h)
NEWTABLE, DELTABLE, NEWCHAIN, NEWRULE, DELRULE, NEWSET, NEWSETELEM, DELSETELEM = 0, 2, 3, 6, 8, 9, 12, 14
FAMILIES = {"inet": 1, "ip": 2, "ip6": 10}
REQ = nfnl.NLM_F_REQUEST | nfnl.NLM_F_ACK  # (TableSocket keeps the ACK on the last message only)
CREATE = REQ | nfnl.NLM_F_CREATE
APPEND = CREATE | nfnl.NLM_F_APPEND
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
ELEMENTS_MAX = 60000  # bytes of elements per NEWSETELEM (a netlink attribute is <= 64 KiB)


class Message(NamedTuple):
    """One nf_tables message: type (without the subsystem), header flags, body (nfgenmsg and
    attributes) and what it does, in nft's words, for an error message."""

    kind: int
    flags: int
    body: bytes
    what: str


# ---------------------------------------------------------------------------------------
# Named sets

SET_TYPES = {  # "type" line -> (key fields, key type, key length, interval)
    "ipv4_addr": (("ip",), T_IPV4, 4, False),
    "ipv6_addr": (("ip6",), T_IPV6, 16, False),
    "ipv4_addr . inet_proto": (("ip", "proto"), T_IPV4 << 6 | T_PROTO, 8, True),
    "ipv6_addr . inet_proto": (("ip6", "proto"), T_IPV6 << 6 | T_PROTO, 20, True),
    "ipv4_addr . inet_proto . inet_service": (("ip", "proto", "port"), (T_IPV4 << 6 | T_PROTO) << 6 | T_SERVICE, 12, False),
    "ipv6_addr . inet_proto . inet_service": (("ip6", "proto", "port"), (T_IPV6 << 6 | T_PROTO) << 6 | T_SERVICE, 24, False),
}


class _Set(NamedTuple):
    name: str
    fields: tuple
    interval: bool
    messages: tuple[Message, ...]  # bodies are Parts: slot 0 is the set's id in the batch


def _set_block(lines: tuple[str, ...], table: str) -> _Set:
    """A ``set NAME { ... }`` block as NEWSET and its elements as NEWSETELEM messages."""
    m = re.fullmatch(r"\tset (\S+) \{", lines[0])
    if not m or lines[-1] != "\t}" or len(lines) < 3 or not NAME_RE.match(m.group(1)):
        raise Unsupported(f"set block {lines[0]!r}")
    name = m.group(1)
    body = [ln.strip() for ln in lines[1:-1]]
    if not body[0].startswith("type ") or body[0][5:] not in SET_TYPES:
        raise Unsupported(f"set {name}: {body[0]!r}")
    fields, key_type, key_len, interval = SET_TYPES[body[0][5:]]
    rest = body[1:]
    if interval != (rest[:1] == ["flags interval"]):
        raise Unsupported(f"set {name}: flags")
    rest = rest[1:] if interval else rest
    elements = " ".join(rest)
    if rest and not (elements.startswith("elements = {") and elements.endswith("}")):
        raise Unsupported(f"set {name}: {rest[0]!r}")
    head = str_attr(1, table) + str_attr(2, name)
    flags = SET_INTERVAL | SET_CONCAT if interval else 0
    desc = b""
    if interval:  # the field lengths of the concatenation, in bytes
        desc = nfnl.nested(9, nfnl.nested(2, *(nfnl.nested(1, nfnl.be32(1, n)) for n in (key_len - 4, 1))))
    udata = UD_CONCAT if len(fields) > 1 else UD_BIG_ENDIAN
    what = f"add set inet {table} {name} {{ type {body[0][5:]}{'; flags interval' if interval else ''} }}"
    msgs = [Message(NEWSET, CREATE, (nfnl.nfgenmsg(FAMILIES["inet"]) + head + nfnl.be32(3, flags)
                                     + nfnl.be32(4, key_type) + nfnl.be32(5, key_len), *_id_attr(10, 0),
                                     desc + nfnl.attr(13, udata)), what)]
    if rest:
        items = element_list(elements[len("elements = {"):-1], fields, name)
        msgs += element_messages(head, items, f"add element inet {table} {name}")
    return _Set(name, fields, interval, tuple(msgs))


def element_list(text: str, fields: tuple, set_name: str) -> list[tuple[str, bytes]]:
    """``a comment "x", b, ...`` -> [(element text, element attribute body)]. The hot path
    of a cold apply (hundreds of elements a pod): headers packed whole, comments cached."""
    out: list[tuple[str, bytes]] = []
    words: list[str] = []
    af = socket.AF_INET if fields[0] == "ip" else socket.AF_INET6
    for tok in _tokens(text) + [","]:
        if tok != ",":
            words.append(tok)
            continue
        udata = b""
        if len(words) > 2 and words[-2] == "comment":
            udata = _comment_attr(_quoted(words[-1], "element comment"))
            words = words[:-2]
        if len(fields) == 1 and len(words) == 1:  # a host: inet_pton refuses a prefix
            try:
                key = _key_attr(1, socket.inet_pton(af, words[0]))
            except OSError:
                raise Unsupported(f"element {words[0]!r} of the host set {set_name}") from None
        else:
            key = _element_key(words, fields, set_name)
        out.append((" ".join(words), key + udata))
        words = []
    return out


_KEY = struct.Struct("=HHHH")


def _key_attr(kind: int, value: bytes) -> bytes:
    """NFTA_SET_ELEM_KEY (1) or _KEY_END (10) holding one NFTA_DATA_VALUE (keys are whole
    words: no padding)."""
    return _KEY.pack(8 + len(value), nfnl.NLA_F_NESTED | kind, 4 + len(value), 1) + value


@functools.lru_cache(maxsize=1 << 16)
def _comment_attr(text: str) -> bytes:
    return nfnl.attr(6, _udata(0, text))  # NFTA_SET_ELEM_USERDATA: the pod or ipBlock


def _element_key(words: list[str], fields: tuple, set_name: str) -> bytes:
    """KEY (and KEY_END for an interval) of one element of a concatenation."""
    fam = fields[0]
    if len(fields) == 1 or len(words) != 2 * len(fields) - 1 or any(w != "." for w in words[1::2]):
        raise Unsupported(f"element {' '.join(words)!r} of set {set_name}")
    raw, plen = _addr(words[0], fam)
    if len(fields) == 2:  # address . protocol range: start and end of each field
        lo, sep, hi = words[2].partition("-")
        a, b = _proto(lo), _proto(hi) if sep else _proto(lo)
        if b < a:
            raise Unsupported(f"protocol range {words[2]!r} in set {set_name}")
        return _key_attr(1, raw + bytes([a, 0, 0, 0])) + _key_attr(10, _last(raw, plen) + bytes([b, 0, 0, 0]))
    if plen != len(raw) * 8:
        raise Unsupported(f"network {words[0]} in set {set_name}")
    return _key_attr(1, raw + bytes([_proto(words[2]), 0, 0, 0]) + struct.pack(">H", _port(words[4])) + b"\0\0")


def element_messages(head: bytes, items: list[tuple[str, bytes]], what: str, kind: int = NEWSETELEM,
                      flags: int = CREATE, id_slot: bool = True) -> list[Message]:
    """NEWSETELEM (or DELSETELEM) messages of at most ELEMENTS_MAX bytes of elements each
    (one batch, so still one transaction); nft numbers the elements of a list 1, 2, ...
    ``id_slot``: the set is new in the batch, the body names its id (a slot, _fill)."""
    msgs = []
    start = size = 0
    for j in range(len(items) + 1):
        n = nfnl.ATTR_HEADER.size + len(items[j][1]) if j < len(items) else 0
        if j > start and (j == len(items) or size + n > ELEMENTS_MAX):
            chunk = items[start:j]
            elems = b"".join(nfnl.ATTR_HEADER.pack(4 + len(b), nfnl.NLA_F_NESTED | (i + 1)) + b
                             for i, (_, b) in enumerate(chunk))
            shown = ", ".join(t for t, _ in chunk[:3]) + (f", ... ({len(chunk)} elements)" if len(chunk) > 3 else "")
            first = nfnl.nfgenmsg(FAMILIES["inet"]) + head
            body = (first, *_id_attr(4, 0), nfnl.nested(3, elems)) if id_slot else first + nfnl.nested(3, elems)
            msgs.append(Message(kind, flags, body, f"{what} {{ {shown} }}"))
            start, size = j, 0
        size += n
    return msgs


# ---------------------------------------------------------------------------------------
# Chains and the table

HOOK_RE = re.compile(r"type filter hook (\w+) priority (filter|-?\d+); policy (accept|drop);\Z")


class _Chain(NamedTuple):
    name: str
    message: Message
    rules: tuple[str, ...]


def _chain_block(lines: Sequence[str], table: str) -> _Chain:
    m = re.fullmatch(r"\tchain (\S+) \{", lines[0])
    if not m or lines[-1] != "\t}" or not NAME_RE.match(m.group(1)):
        raise Unsupported(f"chain block {lines[0]!r}")
    name = m.group(1)
    rules = [ln[2:] for ln in lines[1:-1]]
    if any(not ln.startswith("\t\t") or not ln.strip() for ln in lines[1:-1]):
        raise Unsupported(f"chain {name}: a line not indented as a rule")
    attrs = str_attr(1, table) + str_attr(3, name)
    what = f"add chain inet {table} {name}"
    hook = HOOK_RE.match(rules[0]) if rules else None
    if hook:
        if hook.group(1) not in HOOKS:
            raise Unsupported(f"chain {name}: hook {hook.group(1)}")
        prio = 0 if hook.group(2) == "filter" else int(hook.group(2))
        attrs += (str_attr(7, "filter") + nfnl.be32(5, 1 if hook.group(3) == "accept" else 0)
                  + nfnl.nested(4, nfnl.be32(1, HOOKS[hook.group(1)]), nfnl.attr(2, struct.pack(">i", prio))))
        what += f" {{ {rules[0]} }}"
        rules = rules[1:]
    elif rules and rules[0].startswith("type "):
        raise Unsupported(f"chain {name}: {rules[0]!r}")
    return _Chain(name, Message(NEWCHAIN, CREATE, nfnl.nfgenmsg(FAMILIES["inet"]) + attrs, what), tuple(rules))


def encode_table(table: str, comment: str | None, blocks: Sequence[Sequence[str]]) -> list[Message]:
    """The batch that swaps ``table inet TABLE`` for one made of ``blocks`` (each a set or
    chain block as backends.nftables renders it, lines with their tabs): add the table
    (so that the delete succeeds on a first apply), delete it, then create it anew.
    Raises Unsupported for anything outside the vocabulary this module knows."""
    if not NAME_RE.match(table):
        raise Unsupported(f"table name {table!r}")
    fam = nfnl.nfgenmsg(FAMILIES["inet"])
    name = str_attr(1, table)
    what = f"inet {table}"
    msgs = [Message(NEWTABLE, REQ, fam + name + nfnl.be32(2, 0), f"add table {what}"),
            Message(DELTABLE, REQ, fam + name, f"delete table {what}"),
            Message(NEWTABLE, REQ, fam + name + nfnl.be32(2, 0)
                    + (nfnl.attr(6, _udata(0, comment)) if comment is not None else b""), f"table {what}")]
    sets: list[_Set] = []
    set_msgs: list[tuple[Message, ...]] = []
    chains: list[_Chain] = []
    for b in blocks:
        first = b[0] if b else ""
        if first.startswith("\tset "):
            s, m = _SETS.get(tuple(b), table, len(sets) + 1)  # ids: 1, 2, ... in set order
            sets.append(s)
            set_msgs.append(m)
        elif first.startswith("\tchain "):
            chains.append(_chain_block(b, table))
        else:
            raise Unsupported(f"block {first!r}")
    kinds = {s.name: (s.fields, s.interval) for s in sets}
    if len(kinds) != len(sets) or len({c.name for c in chains}) != len(chains):
        raise Unsupported("two sets or two chains of the same name")
    msgs += [c.message for c in chains]
    # the kernel wants an id on every new set; a rule names its sets' kinds and ids
    info = {s.name: ((s.name, s.fields, s.interval), i + 1) for i, s in enumerate(sets)}
    for m in set_msgs:
        msgs += m
    next_id = len(sets) + 1
    for c in chains:
        for line in c.rules:
            refs = named = ()
            names = set_names(line)
            if names:
                known = [info[n] for n in names if n in info]
                refs, named = tuple(k for k, _ in known), tuple(i for _, i in known)
            rule_msgs = rule_messages(table, c.name, line, refs, next_id, named)
            next_id += len(rule_msgs) // 2  # an anonymous set is two messages
            msgs += rule_msgs
    return msgs


class _Sets:
    """Sets' messages with their ids filled in, by block, table and id, the most recently
    used kept up to a total size: pods selected by the same policies have the same sets
    in the same places, but one set of 150,000 pods is megabytes (an entry count alone
    would not bound the memory)."""

    BUDGET = 64 << 20

    def __init__(self) -> None:
        self._held: OrderedDict[tuple, tuple[_Set, tuple[Message, ...], int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, lines: tuple[str, ...], table: str, set_id: int) -> tuple[_Set, tuple[Message, ...]]:
        key = (lines, table, set_id)
        with self._lock:
            hit = self._held.get(key)
            if hit is not None:
                self._held.move_to_end(key)
                return hit[0], hit[1]
        s = _set_block(lines, table)
        msgs = tuple(m._replace(body=_fill(m.body, (set_id,))) for m in s.messages)
        s = s._replace(messages=())
        size = sum(len(m.body) for m in msgs)
        with self._lock:
            if key not in self._held and size <= self.BUDGET // 4:
                self._held[key] = (s, msgs, size)
                self._size += size
                while self._size > self.BUDGET:
                    _, (_, _, n) = self._held.popitem(last=False)
                    self._size -= n
        return s, msgs

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._size = 0


_SETS = _Sets()


@functools.lru_cache(maxsize=1 << 14)
def set_names(line: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_SETREF.findall(line)))


@functools.lru_cache(maxsize=1 << 14)
def rule_messages(table: str, chain: str, line: str, refs: tuple, first_id: int,
                   named: tuple[int, ...]) -> tuple[Message, ...]:
    """A rule's anonymous sets (ids from ``first_id``) and the rule itself (looking up
    named sets of ids ``named``), cached as a whole for the same reason."""
    r = _rule(line, refs)
    ids = list(range(first_id, first_id + len(r.anons)))
    table_attr = str_attr(1, table)
    where = f"inet {table} {chain}"
    msgs: list[Message] = []
    for k, a in enumerate(r.anons):
        msgs += _anon_messages(a, table_attr, ids[k], where)
    body = nfnl.nfgenmsg(FAMILIES["inet"]) + table_attr + str_attr(2, chain) + _fill(r.parts, ids, named)
    msgs.append(Message(NEWRULE, APPEND, body, f"add rule {where} {line}"))
    return tuple(msgs)


_SETREF = re.compile(r"@([A-Za-z0-9_.\-]+)")


def _anon_messages(a: _Anon, table_attr: bytes, set_id: int, where: str) -> list[Message]:
    fam = nfnl.nfgenmsg(FAMILIES["inet"])
    anon = str_attr(2, "__set%d")
    sid = struct.pack(">I", set_id)
    new = Message(NEWSET, CREATE, fam + table_attr + anon + nfnl.be32(3, a.flags) + nfnl.be32(4, a.key_type)
                  + nfnl.be32(5, a.key_len) + nfnl.attr(10, sid) + nfnl.nested(9, nfnl.be32(1, a.size))
                  + nfnl.attr(13, a.udata), f"add set {where}: {a.text}")
    elems = Message(NEWSETELEM, CREATE, fam + table_attr + anon + nfnl.attr(4, sid)
                    + nfnl.nested(3, b"".join(a.elements)), f"add element {where}: {a.text}")
    return [new, elems]


def encode_text(text: str) -> list[Message]:
    """``encode_table`` of a whole ``table inet NAME { ... }`` text, as
    ``backends.nftables.render`` writes it."""
    lines = text.rstrip("\n").split("\n")
    m = re.fullmatch(r"table inet (\S+) \{", lines[0]) if lines else None
    if not m or lines[-1] != "}":
        raise Unsupported(f"not one inet table: {lines[0] if lines else ''!r}")
    body = lines[1:-1]
    comment = None
    if body and body[0].startswith("\tcomment "):
        comment = _quoted(body[0][len("\tcomment "):], "table comment")
        body = body[1:]
    blocks: list[list[str]] = []
    for ln in body:
        if not ln.strip():
            continue
        if ln.startswith("\tset ") or ln.startswith("\tchain "):
            blocks.append([ln])
        elif blocks and ln.startswith("\t"):
            blocks[-1].append(ln)
        else:
            raise Unsupported(f"line {ln!r}")
    return encode_table(m.group(1), comment, blocks)


# ---------------------------------------------------------------------------------------
# Sending a batch and reading every acknowledgement (kernel)

class Refused(Exception):
    """The kernel refused the batch (nothing of it took effect), or its answers were lost
    (then the batch may or may not have been committed; a full swap again is safe)."""


SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # not in Python's socket module
_HEAD = nfnl.HEADER
_ERR = struct.Struct(nfnl.HEADER.format + "i")  # a header and an NLMSG_ERROR's error code
_SUBSYS = nfnl.NFNL_SUBSYS_NFTABLES << 8
_NEWRULE = _SUBSYS | NEWRULE
BUFFER = 16 << 20


class TableSocket:
    """A NETLINK_NETFILTER socket opened inside a namespace (enforcer.netns.Handles) and
    kept: a batch is one send() and the reading of its answers, no namespace switch.

    Every message's answer is checked. nfnetlink answers a message that fails with its
    errno (and the seq naming it) whether asked or not, goes on checking the rest, and
    then commits all or nothing; a commit that fails is an error on the batch's first seq.
    So the batch took effect exactly when no message and not the batch was refused and
    the last message's acknowledgement arrived (it comes after every other answer).
    ``ack_each``: ask for an acknowledgement of every message too (NLM_F_ACK on each, and
    each must come back 0). Off by default: at ~200 messages a pod table, those answers
    cost ~27% of the kernel's time for the table (benchmarks/bench_apply_floor.py era
    measurement: 424 against 311 ms of CPU for 110 tables), and they say nothing the
    errors do not. Not thread-safe: hold ``lock``."""

    def __init__(self, ack_each: bool = False) -> None:
        self.ack_each = ack_each
        self._sock = nfnl.open_socket()
        for force, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
            try:  # a whole table is one send(); its acknowledgements must all fit too
                self._sock.setsockopt(socket.SOL_SOCKET, force, BUFFER)
            except OSError:  # without CAP_NET_ADMIN: capped by net.core.[wr]mem_max
                self._sock.setsockopt(socket.SOL_SOCKET, plain, BUFFER)
        for opt in (nfnl.NETLINK_CAP_ACK, nfnl.NETLINK_EXT_ACK):
            try:
                self._sock.setsockopt(nfnl.SOL_NETLINK, opt, 1)
            except OSError:
                pass  # older kernels: whole requests echoed, no extended messages
        self._seq = 0
        self._buf = bytearray(1 << 16)
        self._clean = True  # every answer of the last batch was read (none left to drain)
        self.lock = threading.Lock()

    def commit(self, msgs: Sequence[Message], genid: int | None = None, echoed: list | None = None) -> None:
        """Send ``msgs`` as one transaction; raise Refused saying which message failed.
        ``genid``: only if the namespace's ruleset generation is still that (else refused,
        "batch: ...should be restarted", nothing applied). ``echoed``: gets the (seq, body)
        of every rule the kernel echoes back (NEWRULE messages sent with NLM_F_ECHO: their
        handles; the kernel sends them while it commits, before the acknowledgements).
        Both for backends/nft_edit.py.
        Answers come in the order of the messages, a refused commit's before them all, so
        reading stops at the last message's acknowledgement: no empty read after it (a
        rule swap is a few hundred microseconds; each read is a system call)."""
        if not self._clean:
            self._drain()  # nothing left from an earlier batch may be taken for an answer
        self._clean = False
        seq0 = self._seq = (self._seq + 1) & 0x3FFFFFFF
        end = seq0 + len(msgs) + 1
        self._seq = end
        wire = []
        quiet = ~0 if self.ack_each else ~nfnl.NLM_F_ACK
        for i, m in enumerate(msgs):
            n = nfnl.HEADER.size + len(m.body)
            flags = m.flags if i == len(msgs) - 1 else m.flags & quiet
            wire += (_HEAD.pack(n, _SUBSYS | m.kind, flags, seq0 + 1 + i, 0), m.body)
            if n % 4:  # (never: bodies are whole words)
                wire.append(b"\0" * (-n % 4))
        try:
            self._sock.send(nfnl.batch([b"".join(wire)], seq0, end, genid=genid))
        except OSError as e:
            raise Refused(f"sending the batch ({len(msgs)} messages): {e.strerror or e}") from e
        errors: list[str] = []
        acked = 0
        last = False
        try:
            for seq, err, flags, body in self._answers(echoed):
                if seq == seq0 and err:  # the batch as a whole (permissions, the commit)
                    errors.append(f"batch: {os.strerror(err)}{_words(body(), flags)}")
                elif seq0 < seq < end:
                    acked += 1
                    last = last or seq == end - 1
                    if err:
                        errors.append(f"{msgs[seq - seq0 - 1].what}: {os.strerror(err)}{_words(body(), flags)}")
                    if last:
                        self._clean = True
                        break
        except OSError as e:  # ENOBUFS: answers lost, whatever happened
            raise Refused(f"reading the acknowledgements: {e.strerror or e}") from e
        if errors:
            raise Refused("Error: " + "\n".join(errors))
        if msgs and not last or self.ack_each and acked != len(msgs):
            raise Refused(f"{len(msgs) - acked} of {len(msgs)} messages not acknowledged")

    def ask(self, kind: int, flags: int, body: bytes) -> list[tuple[int, int, bytes]]:
        """One request outside any batch (a GETGEN, a dump): its answers as (type, flags,
        body), until a dump's NLMSG_DONE or, without NLM_F_DUMP, the first answer. An error
        answer raises Refused."""
        if not self._clean:
            self._drain()
        seq = self._seq = (self._seq + 1) & 0x3FFFFFFF
        self._sock.send(nfnl.HEADER.pack(nfnl.HEADER.size + len(body), _SUBSYS | kind, flags, seq, 0) + body)
        dump = flags & nfnl.NLM_F_DUMP == nfnl.NLM_F_DUMP
        out: list[tuple[int, int, bytes]] = []
        buf = self._buf  # (a dump's datagram is at most 32 KiB: netlink_dump's cap)
        while True:
            n = self._sock.recv_into(buf)
            data = memoryview(buf)[:n]
            off = 0
            while off + nfnl.HEADER.size <= n:
                length, mkind, mflags, mseq, _ = nfnl.HEADER.unpack_from(data, off)
                if length < nfnl.HEADER.size:
                    break
                body_ = bytes(data[off + nfnl.HEADER.size:off + length])
                off += nfnl.align(length)
                if mseq != seq:
                    continue  # (an earlier request's leftover)
                if mkind == nfnl.NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body_)[0] if len(body_) >= 4 else 0
                    if code:
                        raise Refused(f"request {kind}: {os.strerror(code)}")
                    return out
                if mkind == nfnl.NLMSG_DONE:
                    return out
                out.append((mkind & 0xFF, mflags, body_))
                if not dump:
                    return out

    def _answers(self, echoed: list | None = None):
        """(seq, errno, flags, body()) of every NLMSG_ERROR queued on the socket (errno 0: an
        acknowledgement); echoed rules go to ``echoed``. nf_tables handles a batch inside
        send() and queues its answers before send() returns, so reading until nothing is
        left is all. One answer per datagram, hundreds a table: the common case is kept to
        one unpack."""
        buf, recv = self._buf, self._sock.recv_into
        while True:
            try:
                n = recv(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            off = 0
            while off + _ERR.size <= n:
                length, kind, flags, seq, _pid, code = _ERR.unpack_from(buf, off)
                if length < nfnl.HEADER.size or off + length > n:
                    break
                if kind == nfnl.NLMSG_ERROR:
                    start, stop = off + nfnl.HEADER.size, off + length
                    yield seq, -code, flags, (lambda a=start, b=stop: bytes(buf[a:b]))
                elif kind == _NEWRULE and echoed is not None:
                    echoed.append((seq, bytes(buf[off + nfnl.HEADER.size:off + length])))
                off += nfnl.align(length)

    def _drain(self) -> None:
        try:
            for _ in self._answers():
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._sock.close()


def _words(body: bytes, flags: int) -> str:
    text = nfnl.error_text(body, flags)
    return f" ({text})" if text else ""
