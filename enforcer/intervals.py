"""Address sets as integer intervals: parse, merge, subtract, and back to CIDRs.

Why not ``ipaddress``: a set of 150,000 pod addresses built from ``ip_network`` objects
and ``collapse_addresses`` cost 26 s of a 79 s compile (issue 15). Here an address is an
int, a CIDR a closed range [lo, hi], and a set a sorted list of disjoint ranges; the only
objects made per element are the ints and the output strings. The results equal
``ipaddress.collapse_addresses`` (the minimal CIDR cover of a set of addresses is unique):
tests/unit/test_compile_intervals.py checks it against ``ipaddress``.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Iterable

Range = tuple[int, int]  # inclusive
BITS = {4: 32, 6: 128}


def parse_ip(addr: str) -> tuple[int, int]:
    """(family, int) of an address string; inet_pton is as strict as ipaddress (no
    leading zeros, four parts) and far cheaper."""
    try:
        if ":" in addr:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    except OSError:
        raise ValueError(f"{addr!r} is not an IP address") from None


@functools.lru_cache(maxsize=1 << 16)
def parse_cidr(cidr: str) -> tuple[int, Range]:
    """(family, [first, last]) of a CIDR; host bits are ignored (strict=False), as for
    ipBlocks the API server accepted."""
    addr, _, plen = cidr.partition("/")
    fam, value = parse_ip(addr)
    bits = BITS[fam]
    p = int(plen) if plen else bits
    if not 0 <= p <= bits:
        raise ValueError(f"bad prefix length in {cidr!r}")
    size = 1 << (bits - p)
    lo = value & ~(size - 1)
    return fam, (lo, lo + size - 1)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint, non-adjacent ranges covering the same addresses."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def subtract(ranges: list[Range], holes: Iterable[Range]) -> list[Range]:
    """``ranges`` (merged) minus ``holes``."""
    holes = merge(holes)
    out: list[Range] = []
    j = 0
    for lo, hi in ranges:
        while j < len(holes) and holes[j][1] < lo:
            j += 1
        k = j
        cur = lo
        while k < len(holes) and holes[k][0] <= hi:
            hlo, hhi = holes[k]
            if hlo > cur:
                out.append((cur, hlo - 1))
            cur = max(cur, hhi + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return out


def to_prefixes(lo: int, hi: int, bits: int) -> list[tuple[int, int]]:
    """The fewest aligned (network, prefix length) blocks covering [lo, hi], in order."""
    out = []
    while lo <= hi:
        # The largest block that starts at lo (alignment) and stays within hi.
        size = (lo & -lo) if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, bits - size.bit_length() + 1))
        lo += size
    return out


def fmt_ip(fam: int, value: int) -> str:
    if fam == 4:
        return socket.inet_ntoa(value.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(value))  # RFC 5952 text, as ipaddress writes it


def to_cidrs(fam: int, ranges: Iterable[Range]) -> tuple[str, ...]:
    bits = BITS[fam]
    return tuple(f"{fmt_ip(fam, net)}/{plen}" for lo, hi in ranges for net, plen in to_prefixes(lo, hi, bits))


def block_ranges(cidr: str, excepts: Iterable[str]) -> tuple[int, list[Range]]:
    """An ipBlock as (family, ranges): the CIDR with every except of the same family cut
    out (an except of the other family, or outside the CIDR, removes nothing)."""
    fam, r = parse_cidr(cidr)
    holes = []
    for e in excepts:
        efam, er = parse_cidr(e)
        if efam == fam:
            holes.append(er)
    return fam, subtract([r], holes)


def blocks_ranges(blocks: Iterable[tuple[str, Iterable[str]]]) -> dict[int, list[Range]]:
    """(cidr, excepts) pairs as merged ranges per family: {4: [...], 6: [...]}."""
    out: dict[int, list[Range]] = {4: [], 6: []}
    for cidr, excepts in blocks:
        fam, ranges = block_ranges(cidr, excepts)
        out[fam].extend(ranges)
    return {fam: merge(rs) for fam, rs in out.items()}


def host_cidrs(addrs: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Pod addresses as host prefixes (a hash set's elements), de-duplicated and sorted by
    value; each keeps the text it came with."""
    v4: dict[str, int] = {}
    v6: dict[str, int] = {}
    for a in addrs:
        if a not in v4 and a not in v6:
            fam, value = parse_ip(a)
            (v4 if fam == 4 else v6)[a] = value
    return (tuple(f"{a}/32" for a in sorted(v4, key=v4.__getitem__)),
            tuple(f"{a}/128" for a in sorted(v6, key=v6.__getitem__)))


def collapse(addrs: Iterable[str], ranges4: Iterable[Range] = (), ranges6: Iterable[Range] = ()
             ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Host addresses plus ranges, collapsed to the fewest CIDRs per family, sorted."""
    r4 = list(ranges4)
    r6 = list(ranges6)
    for a in addrs:
        fam, value = parse_ip(a)
        (r4 if fam == 4 else r6).append((value, value))
    return to_cidrs(4, merge(r4)), to_cidrs(6, merge(r6))


def contains(ranges: list[Range], value: int) -> bool:
    """Is ``value`` in the merged ``ranges`` (binary search)?"""
    lo, hi = 0, len(ranges)
    while lo < hi:
        mid = (lo + hi) // 2
        if ranges[mid][1] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(ranges) and ranges[lo][0] <= value
