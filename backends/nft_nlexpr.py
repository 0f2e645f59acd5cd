"""The rule vocabulary of backends/nft_netlink.py: one rule line of a rendered pod table
(``ip saddr @in0_4 tcp dport { 80, 443 } counter accept comment "..."``) as the nf_tables
expressions nft 1.0.6 sends for it, with the anonymous sets (``{ ... }``) it looks up.

Each match brings the dependencies nft adds in an inet table: ``meta nfproto`` before an
ip/ip6 address, ``meta l4proto`` before a port or an ICMPv6 type; registers are allocated
as nft does for concatenations. Anything outside the vocabulary raises ``Unsupported``.
Pure; the rules of a policy are cached by their text (the same in every pod).
"""
from __future__ import annotations

import functools
import re
import socket
import struct
from typing import NamedTuple, Sequence

from enforcer import nfnetlink as nfnl

NFPROTO = {"ip": 2, "ip6": 10}
PROTO = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
VERDICTS = {"drop": 0, "accept": 1, "return": -5, "goto": -4, "jump": -3}
CT_STATES = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
ICMPV6_TYPES = {"nd-router-solicit": 133, "nd-router-advert": 134,
                "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136}
LIMIT_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
LIMIT_BURST = 5  # nft's default burst for a packet rate
IFINDEX = {"lo": 1}  # the loopback device is ifindex 1 in every namespace (LOOPBACK_IFINDEX)
COMMENT_MAX = 128  # bytes: nft refuses longer comments (NFTNL_UDATA_COMMENT_MAXLEN)

# meta keys, payload bases, cmp operators, registers
META_IIF, META_OIF, META_NFPROTO, META_L4PROTO = 4, 5, 15, 16
NH, TH = 1, 2
EQ, NEQ, LTE, GTE = 0, 1, 3, 5
REG_VERDICT, REG_1 = 0, 1

# Set key types (nft's datatype ids; a concatenation packs them 6 bits each) and the set
# userdata nft writes: key byte order, "merge elements", and a typeof description of the
# key (for anonymous sets built from a match) that nft reads back when it prints.
T_IPV4, T_IPV6, T_PROTO, T_SERVICE, T_ICMPV6 = 7, 8, 12, 13, 29
UD_BIG_ENDIAN = bytes.fromhex("000402000000")
UD_CONCAT = bytes.fromhex("000400000000030800040d0000000100")
UD_MERGE = bytes.fromhex("020401000000")
UD_ICMPV6_TYPE = bytes.fromhex("0314000407000000010c00040e000000010401000000")
UD_DPORT = {p: bytes.fromhex(f"0314000407000000010c0004{d:02x}000000010402000000")
            for p, d in (("udp", 6), ("tcp", 8), ("sctp", 10))}
SET_ANONYMOUS, SET_CONSTANT, SET_INTERVAL, SET_CONCAT = 0x1, 0x2, 0x4, 0x80
ELEM_INTERVAL_END = 0x1
UD_ELEM_OPEN = bytes.fromhex("010401000000")  # element userdata: an interval open to the top


class Unsupported(Exception):
    """Text this encoder does not know; send it through libnftables instead."""


# ---------------------------------------------------------------------------------------
# Attributes with slots: a set's id in the batch (the kernel wants one on every new set, and
# nft names it in lookups) is known only when the batch is put together, but a rule's bytes
# are cached across pods. A part is bytes, or an int: k >= 0 the id of the rule's k-th
# anonymous set, -1-j the id of the j-th named set it looks up (four bytes, big-endian).

Parts = tuple  # of bytes | int


def _size(parts: Parts) -> int:
    return sum(4 if isinstance(p, int) else len(p) for p in parts)


def _nest(kind: int, *items: bytes | Parts) -> Parts:
    """A nested attribute over bytes and part tuples (ids inside keep their place; bytes
    next to each other are joined, so that filling a cached rule in is a short join)."""
    parts: list = []
    for it in items:
        for p in (it if isinstance(it, tuple) else (it,)):
            if parts and isinstance(p, bytes) and isinstance(parts[-1], bytes):
                parts[-1] += p
            else:
                parts.append(p)
    n = nfnl.ATTR_HEADER.size + _size(tuple(parts))
    if n > 0xFFFF:
        raise Unsupported(f"netlink attribute {kind} of {n} bytes")
    head = nfnl.ATTR_HEADER.pack(n, kind | nfnl.NLA_F_NESTED)
    if parts and isinstance(parts[0], bytes):
        return (head + parts[0], *parts[1:])
    return (head, *parts)


def _fill(parts: Parts, ids: Sequence[int], named: Sequence[int] = ()) -> bytes:
    """The bytes of ``parts``: slot k >= 0 is ``ids[k]``, slot -1-j is ``named[j]``."""
    return b"".join(p if isinstance(p, bytes) else struct.pack(">I", ids[p] if p >= 0 else named[-1 - p])
                    for p in parts)


def _id_attr(kind: int, k: int) -> Parts:
    return (nfnl.ATTR_HEADER.pack(8, kind), k)


def str_attr(kind: int, text: str) -> bytes:
    return nfnl.attr(kind, text.encode() + b"\0")


def _udata(kind: int, text: str) -> bytes:
    """A comment as nft's userdata TLV (type, length incl. the NUL, string)."""
    raw = text.encode() + b"\0"
    if len(raw) - 1 > COMMENT_MAX:
        raise Unsupported(f"comment of {len(raw) - 1} bytes (nft allows {COMMENT_MAX})")
    return bytes([kind, len(raw)]) + raw


def _data(kind: int, value: bytes) -> bytes:
    return nfnl.nested(kind, nfnl.attr(1, value))  # an nft_data: { NFTA_DATA_VALUE }


# ---------------------------------------------------------------------------------------
# Expressions

def _expr(name: str, *attrs: bytes | Parts) -> Parts:
    return _nest(1, str_attr(1, name), _nest(2, *attrs))  # NFTA_LIST_ELEM { NAME, DATA }


def _meta(key: int, reg: int = REG_1) -> Parts:
    return _expr("meta", nfnl.be32(2, key), nfnl.be32(1, reg))


def _cmp(value: bytes, op: int = EQ) -> Parts:
    return _expr("cmp", nfnl.be32(1, REG_1), nfnl.be32(2, op), _data(3, value))


def _payload(base: int, offset: int, length: int, reg: int = REG_1) -> Parts:
    return _expr("payload", nfnl.be32(1, reg), nfnl.be32(2, base), nfnl.be32(3, offset),
                 nfnl.be32(4, length))


def _bitwise(mask: bytes) -> Parts:
    return _expr("bitwise", nfnl.be32(1, REG_1), nfnl.be32(2, REG_1), nfnl.be32(3, len(mask)),
                 _data(4, mask), _data(5, bytes(len(mask))))


def _lookup_named(name: str, slot: int) -> Parts:
    return _expr("lookup", nfnl.be32(2, REG_1), str_attr(1, name), _id_attr(4, slot))


def _lookup_anon(k: int) -> Parts:
    return _expr("lookup", nfnl.be32(2, REG_1), str_attr(1, "__set%d"), _id_attr(4, k))


def _verdict(code: int, chain: str | None = None) -> Parts:
    inner = nfnl.be32(1, code & 0xFFFFFFFF) + (str_attr(2, chain) if chain else b"")
    return _expr("immediate", nfnl.be32(1, REG_VERDICT), nfnl.nested(2, nfnl.nested(2, inner)))


COUNTER = _expr("counter", b"")  # counters start at zero: nft sends no value


def _reg(word: int) -> int:
    """The register of the ``word``-th 32-bit word of a concatenation: a 128-bit register
    where the word starts one (NFT_REG_1..4), else a 32-bit one (NFT_REG32_00 = 8)."""
    return REG_1 + word // 4 if word % 4 == 0 else 8 + word


# ---------------------------------------------------------------------------------------
# Addresses and elements

def _addr(text: str, fam: str) -> tuple[bytes, int]:
    """(address bytes, prefix length) of ``ADDR`` or ``ADDR/LEN`` of family ip/ip6;
    Unsupported for another family or a prefix with host bits set."""
    af, bits = (socket.AF_INET, 32) if fam == "ip" else (socket.AF_INET6, 128)
    addr, _, plen = text.partition("/")
    try:
        raw = socket.inet_pton(af, addr)
        n = int(plen) if plen else bits
    except (OSError, ValueError) as e:
        raise Unsupported(f"{text!r} is not an {fam} address or prefix") from e
    if not 0 <= n <= bits or int.from_bytes(raw, "big") & ((1 << (bits - n)) - 1):
        raise Unsupported(f"{text!r} is not a network prefix")
    return raw, n


def _last(raw: bytes, plen: int) -> bytes:
    bits = len(raw) * 8
    return (int.from_bytes(raw, "big") | ((1 << (bits - plen)) - 1)).to_bytes(len(raw), "big")


def _proto(word: str) -> int:
    if word in PROTO:
        return PROTO[word]
    if word.isdigit() and int(word) < 256:
        return int(word)
    raise Unsupported(f"protocol {word!r}")


def _port(word: str) -> int:
    if not word.isdigit() or int(word) > 0xFFFF:
        raise Unsupported(f"port {word!r}")
    return int(word)


# ---------------------------------------------------------------------------------------
# Tokens of one line: quoted strings, braces and commas, words

_TOKEN = re.compile(r'"[^"]*"|[{},]|[^\s{},"]+|"')


def _tokens(line: str) -> list[str]:
    out = _TOKEN.findall(line)
    if '"' in out:
        raise Unsupported(f"unbalanced quote in {line!r}")
    return out


def _quoted(tok: str, what: str) -> str:
    if len(tok) < 2 or tok[0] != '"' or tok[-1] != '"':
        raise Unsupported(f"{what}: expected a quoted string, got {tok!r}")
    return tok[1:-1]


class _Cursor:
    def __init__(self, line: str) -> None:
        self.line = line
        self.toks = _tokens(line)
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise Unsupported(f"expected {expected or 'more'} in {self.line!r}, got {tok!r}")
        self.i += 1
        return tok

    def braced(self) -> list[str]:
        """``{ a, b-c }`` -> ["a", "b-c"] (or one word alone -> [word])."""
        if self.peek() != "{":
            return [self.take()]
        self.take("{")
        items = []
        while True:
            items.append(self.take())
            sep = self.take()
            if sep == "}":
                return items
            if sep != ",":
                raise Unsupported(f"expected , or }} in {self.line!r}")


# ---------------------------------------------------------------------------------------
# Anonymous sets (a rule's { ... })

class _Anon(NamedTuple):
    flags: int
    key_type: int
    key_len: int
    size: int
    udata: bytes
    elements: tuple[bytes, ...]  # each a whole NFTA_LIST_ELEM, numbered
    text: str


def _element(i: int, key: bytes, end: bytes | None = None, flags: int = 0, udata: bytes = b"") -> bytes:
    """One element of a NEWSETELEM list (nft numbers them 1, 2, ...)."""
    return nfnl.nested(i, (nfnl.be32(3, flags) if flags else b"")
                       + nfnl.nested(1, nfnl.attr(1, key))
                       + (nfnl.nested(10, nfnl.attr(1, end)) if end is not None else b"")
                       + (nfnl.attr(6, udata) if udata else b""))


def _port_set(proto: str, items: list[str]) -> _Anon:
    """``{ 80, 443 }`` (a hash set) or ``{ 53, 80-90 }`` (an interval set, as nft's segment
    tree sends it: each interval's start, then the first value after it flagged as an end;
    a leading end at 0 when the first interval starts above 0; an interval reaching 65535
    has no end, its start carries the "open" userdata flag)."""
    ranges = []
    for it in items:
        lo, sep, hi = it.partition("-")
        a, b = _port(lo), (_port(hi) if sep else _port(lo))
        if b < a or (sep and a == b):
            raise Unsupported(f"port range {it!r}")
        ranges.append((a, b))
    text = f"{proto} dport {{ {', '.join(items)} }}"
    if len(ranges) < 2:
        raise Unsupported(f"a set of one port in {text!r}")
    if all(a == b for a, b in ranges):
        if len(set(ranges)) != len(ranges):
            raise Unsupported(f"repeated port in {text!r}")
        elems = tuple(_element(i + 1, struct.pack(">H", a)) for i, (a, _) in enumerate(ranges))
        return _Anon(SET_ANONYMOUS | SET_CONSTANT, T_SERVICE, 2, len(elems),
                     UD_BIG_ENDIAN + UD_DPORT[proto], elems, text)
    if ranges != sorted(ranges) or any(b2[0] <= b1[1] + 1 for b1, b2 in zip(ranges, ranges[1:])):
        raise Unsupported(f"unsorted, overlapping or adjacent ports in {text!r}")  # nft would merge
    raw: list[tuple[int, int, bytes]] = []  # (value, flags, userdata)
    if ranges[0][0] != 0:
        raw.append((0, ELEM_INTERVAL_END, b""))
    for a, b in ranges:
        if b == 0xFFFF:
            raw.append((a, 0, UD_ELEM_OPEN))
        else:
            raw += [(a, 0, b""), (b + 1, ELEM_INTERVAL_END, b"")]
    elems = tuple(_element(i + 1, struct.pack(">H", v), flags=f, udata=u) for i, (v, f, u) in enumerate(raw))
    size = 2 * len(ranges) + (ranges[0][0] != 0)
    return _Anon(SET_ANONYMOUS | SET_CONSTANT | SET_INTERVAL, T_SERVICE, 2, size,
                 UD_BIG_ENDIAN + UD_MERGE + UD_DPORT[proto], elems, text)


def _icmpv6_set(items: list[str]) -> _Anon:
    if len(items) < 2 or len(set(items)) != len(items) or any(t not in ICMPV6_TYPES for t in items):
        raise Unsupported(f"icmpv6 type {{ {', '.join(items)} }}")
    elems = tuple(_element(i + 1, bytes([ICMPV6_TYPES[t]])) for i, t in enumerate(items))
    return _Anon(SET_ANONYMOUS | SET_CONSTANT, T_ICMPV6, 1, len(elems), UD_BIG_ENDIAN + UD_ICMPV6_TYPE,
                 elems, f"icmpv6 type {{ {', '.join(items)} }}")


# ---------------------------------------------------------------------------------------
# Rules

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
SetKinds = dict  # set name -> (key fields, interval): ("ip",), ("ip", "proto"), ("ip6", "proto", "port")


class _Rule(NamedTuple):
    anons: tuple[_Anon, ...]
    named: tuple[str, ...]  # the named sets it looks up
    parts: Parts  # NFTA_RULE_EXPRESSIONS and NFTA_RULE_USERDATA; set ids as slots (_fill)


@functools.lru_cache(maxsize=1 << 14)
def _rule(line: str, sets: tuple[tuple[str, tuple, bool], ...]) -> _Rule:
    """One rule line (its text, and the kinds of the sets it names) as expressions.
    Cached: the rules of one policy are the same lines in every pod it selects."""
    kinds = {n: (f, iv) for n, f, iv in sets}
    c = _Cursor(line)
    exprs: list[Parts] = []
    anons: list[_Anon] = []
    named: list[str] = []
    nfproto: str | None = None
    l4: int | None = None
    stage = 0  # 0 matches, 1 statements, 2 after the verdict
    udata = b""

    def need(at_most: int, what: str) -> None:
        if stage > at_most:
            raise Unsupported(f"{what} after a statement or verdict in {line!r}")

    while c.peek() is not None:
        tok = c.take()
        if tok == "comment":
            udata = nfnl.attr(7, _udata(0, _quoted(c.take(), "comment")))
            if c.peek() is not None:
                raise Unsupported(f"text after the comment in {line!r}")
        elif tok == "ct":
            need(0, tok)
            c.take("state")
            mask = CT_STATES.get(c.take(), 0)
            while c.peek() == ",":
                c.take()
                mask |= CT_STATES.get(c.take(), 0)
            if not mask or mask & 0xFF != mask:
                raise Unsupported(f"ct state in {line!r}")
            exprs += [_expr("ct", nfnl.be32(2, 0), nfnl.be32(1, REG_1)), _bitwise_host(mask),
                      _cmp(bytes(4), NEQ)]
        elif tok in ("iif", "oif"):
            need(0, tok)
            name = _quoted(c.take(), tok)
            if name not in IFINDEX:
                raise Unsupported(f"interface {name!r}")
            exprs += [_meta(META_IIF if tok == "iif" else META_OIF), _cmp(struct.pack("=I", IFINDEX[name]))]
        elif tok == "meta":
            need(0, tok)
            c.take("l4proto")
            if l4 is not None:
                raise Unsupported(f"two protocol matches in {line!r}")
            l4 = _proto(c.take())
            exprs += [_meta(META_L4PROTO), _cmp(bytes([l4]))]
        elif tok == "icmpv6":
            need(0, tok)
            c.take("type")
            if nfproto is not None or l4 is not None:
                raise Unsupported(f"icmpv6 after an address or protocol match in {line!r}")
            nfproto, l4 = "ip6", PROTO["icmpv6"]
            anons.append(_icmpv6_set(c.braced()))
            exprs += [_meta(META_NFPROTO), _cmp(bytes([NFPROTO["ip6"]])), _meta(META_L4PROTO),
                      _cmp(bytes([l4])), _payload(TH, 0, 1), _lookup_anon(len(anons) - 1)]
        elif tok in ("ip", "ip6"):
            need(0, tok)
            if nfproto is not None:
                raise Unsupported(f"a second address match in {line!r}")
            nfproto = tok
            field = c.take()
            offsets = {("ip", "saddr"): 12, ("ip", "daddr"): 16, ("ip6", "saddr"): 8, ("ip6", "daddr"): 24}
            if (tok, field) not in offsets:
                raise Unsupported(f"{tok} {field} in {line!r}")
            off, alen = offsets[tok, field], (4 if tok == "ip" else 16)
            exprs += [_meta(META_NFPROTO), _cmp(bytes([NFPROTO[tok]]))]
            exprs += _address_match(c, tok, off, alen, kinds, named, line)
        elif tok in ("tcp", "udp", "sctp"):
            need(0, tok)
            c.take("dport")
            if l4 is not None:
                raise Unsupported(f"two protocol matches in {line!r}")
            l4 = PROTO[tok]
            exprs += [_meta(META_L4PROTO), _cmp(bytes([l4])), _payload(TH, 2, 2)]
            items = c.braced()
            if c.toks[c.i - 1] == "}":
                anons.append(_port_set(tok, items))
                exprs.append(_lookup_anon(len(anons) - 1))
            else:
                lo, sep, hi = items[0].partition("-")
                if not sep:
                    exprs.append(_cmp(struct.pack(">H", _port(lo))))
                elif _port(lo) < _port(hi):
                    exprs += [_cmp(struct.pack(">H", _port(lo)), GTE), _cmp(struct.pack(">H", _port(hi)), LTE)]
                else:
                    raise Unsupported(f"port range {items[0]!r}")
        elif tok == "counter":
            need(1, tok)
            stage = 1
            exprs.append(COUNTER)
        elif tok == "limit":
            need(1, tok)
            stage = 1
            c.take("rate")
            rate, _, unit = c.take().partition("/")
            if not rate.isdigit() or unit not in LIMIT_UNITS or c.peek() in ("burst", "packets", "bytes", "over"):
                raise Unsupported(f"limit in {line!r}")
            exprs.append(_expr("limit", nfnl.be64(1, int(rate)), nfnl.be64(2, LIMIT_UNITS[unit]),
                               nfnl.be32(3, LIMIT_BURST), nfnl.be32(4, 0), nfnl.be32(5, 0)))
        elif tok == "log":
            need(1, tok)
            stage = 1
            c.take("prefix")
            prefix = _quoted(c.take(), "log prefix")
            c.take("group")
            group = c.take()
            if "$" in prefix or len(prefix.encode()) > 127 or not group.isdigit() or int(group) > 0xFFFF:
                raise Unsupported(f"log in {line!r}")
            exprs.append(_expr("log", str_attr(2, prefix), nfnl.be16(1, int(group))))
        elif tok in VERDICTS:
            need(1, tok)
            stage = 2
            chain = None
            if tok in ("jump", "goto"):
                chain = c.take()
                if not NAME_RE.match(chain):
                    raise Unsupported(f"chain name {chain!r}")
            exprs.append(_verdict(VERDICTS[tok], chain))
        else:
            raise Unsupported(f"{tok!r} in {line!r}")
    if not exprs:
        raise Unsupported(f"a rule without expressions: {line!r}")
    return _Rule(tuple(anons), tuple(named), _nest(4, *exprs) + ((udata,) if udata else ()))


def _bitwise_host(mask: int) -> Parts:
    return _expr("bitwise", nfnl.be32(1, REG_1), nfnl.be32(2, REG_1), nfnl.be32(3, 4),
                 _data(4, struct.pack("=I", mask)), _data(5, bytes(4)))


def _address_match(c: _Cursor, fam: str, off: int, alen: int, kinds: SetKinds, named: list[str],
                   line: str) -> list[Parts]:
    """After ``ip saddr``: an address, a prefix, ``@set``, or a concatenation ``. meta
    l4proto [. th dport] @set`` (registers as nft allocates them; an interval set's
    protocol field is converted to big-endian first, as nft does)."""
    tok = c.take()
    if tok == ".":
        c.take("meta")
        c.take("l4proto")
        fields = [fam, "proto"]
        if c.peek() == ".":
            c.take(".")
            c.take("th")
            c.take("dport")
            fields.append("port")
        name = _set_ref(c.take(), tuple(fields), kinds, line)
        words = alen // 4
        out = [_payload(NH, off, alen), _meta(META_L4PROTO, _reg(words))]
        if len(fields) == 2:
            if not kinds[name][1]:
                raise Unsupported(f"address . protocol lookup in a set without intervals: {line!r}")
            r = _reg(words)
            out.append(_expr("byteorder", nfnl.be32(1, r), nfnl.be32(2, r), nfnl.be32(3, 1),
                             nfnl.be32(4, 1), nfnl.be32(5, 2)))
        else:
            if kinds[name][1]:
                raise Unsupported(f"address . protocol . port lookup in an interval set: {line!r}")
            out.append(_payload(TH, 2, 2, _reg(words + 1)))
        named.append(name)
        return out + [_lookup_named(name, -len(named))]
    if tok.startswith("@"):
        name = _set_ref(tok, (fam,), kinds, line)
        if kinds[name][1]:
            raise Unsupported(f"address lookup in an interval set: {line!r}")
        named.append(name)
        return [_payload(NH, off, alen), _lookup_named(name, -len(named))]
    raw, plen = _addr(tok, fam)
    if plen == 0:
        raise Unsupported(f"a /0 prefix in {line!r}")
    if plen == alen * 8:
        return [_payload(NH, off, alen), _cmp(raw)]
    if plen % 8 == 0:
        return [_payload(NH, off, plen // 8), _cmp(raw[:plen // 8])]
    mask = (((1 << plen) - 1) << (alen * 8 - plen)).to_bytes(alen, "big")
    return [_payload(NH, off, alen), _bitwise(mask), _cmp(raw)]


def _set_ref(tok: str, fields: tuple, kinds: SetKinds, line: str) -> str:
    name = tok[1:] if tok.startswith("@") else ""
    if name not in kinds or kinds[name][0] != fields:
        raise Unsupported(f"{tok!r} is not a set of {' . '.join(fields)} in this table: {line!r}")
    return name
