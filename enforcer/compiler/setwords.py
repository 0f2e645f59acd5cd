"""Names and element comments of the compiler's sets, for a reader of the rendered rules.

``set_name``: a set is named after the rule it serves (in0 = ingress[0]), so that the
rules and the sets of ``netpol render`` read together. ``notes``: what each element is,
the pod whose address it is or the ipBlock it comes from, for nft element comments and
ipset's comment extension. Pure; the compiler caches the notes per peer group as it
caches the elements.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import ipaddress
from typing import Iterable, Mapping

from enforcer.model import IPBlock

MAX_PODS_NAMED = 3  # an element covering more pods says "+N more"


def set_name(prefix: str, rule_index: int, policy_ordinal: int) -> str:
    """The set of rule ``rule_index`` of the pod's ``policy_ordinal``-th isolating policy
    (sorted by key): in0 is ingress[0] of the first, eg1 egress[1]; in0B is ingress[0] of
    the second policy, in0C of the third... A reader finds a rule's set by its index.
    Upper case, so that no tag meets the lower-case "p" of a named-port set (eg0p)."""
    tag = ""
    k = policy_ordinal
    while k:
        k, r = divmod(k, 26)
        tag = chr(ord("A") + r) + tag
    return f"{prefix}{rule_index}{tag}"


@functools.lru_cache(maxsize=65536)
def group_id(key: tuple) -> str:
    """A set's ``group`` (enforcer.ir.GROUP_DOC): a short digest of the compiler's key for
    where its elements come from (a peer group, or a rule for named ports). The key holds
    only strings, ints and tuples, so its repr, and the digest, are the same in every
    process."""
    return hashlib.blake2b(repr(key).encode(), digest_size=6).hexdigest()


def block_text(b: IPBlock) -> str:
    """'ipBlock 172.17.0.0/16 except 172.17.1.0/24' (no commas: they separate elements)."""
    return f"ipBlock {b.cidr}" + (f" except {' '.join(b.except_)}" if b.except_ else "")


def host_notes(elements: Iterable[str], pod_ips: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Host elements ("10.244.0.3/32") -> the pod that has the address."""
    return tuple((e, pod_ips[e.split("/", 1)[0]]) for e in elements if e.split("/", 1)[0] in pod_ips)


def interval_notes(elements: Iterable[str], pod_ips: Mapping[str, str],
                   blocks: Iterable[IPBlock]) -> tuple[tuple[str, str], ...]:
    """Interval elements -> the ipBlocks they come from and the pods whose addresses they
    hold. Pods are found by bisection in their sorted addresses: a set of 150,000 pod
    addresses collapsed into ranges costs O(n log n), not O(n^2)."""
    # By (family, integer): addresses of two families do not compare (dual-stack pods).
    addrs = sorted(((ipaddress.ip_address(a), k) for a, k in pod_ips.items()),
                   key=lambda t: (t[0].version, int(t[0]), t[1]))
    keys = [(a.version, int(a)) for a, _ in addrs]
    nets = [(b, [ipaddress.ip_network(c) for c in (b.cidr,)]) for b in blocks]
    out = []
    for e in elements:
        net = ipaddress.ip_network(e)
        words = [block_text(b) for b, (cidr,) in nets if cidr.version == net.version and net.subnet_of(cidr)]
        lo = bisect.bisect_left(keys, (net.version, int(net.network_address)))
        hi = bisect.bisect_right(keys, (net.version, int(net.broadcast_address)))
        pods = [addrs[i][1] for i in range(lo, min(hi, lo + MAX_PODS_NAMED))]
        if hi - lo > MAX_PODS_NAMED:
            pods.append(f"{hi - lo - MAX_PODS_NAMED} more pods")
        if pods or words:
            out.append((e, " + ".join(pods + words)))
    return tuple(out)


def addr_notes(elements: tuple[str, ...], members: Iterable[str], pods: Mapping, peers) -> tuple[tuple[str, str], ...]:
    """Notes of a peer set: its member pods' addresses, and its ipBlocks' ranges."""
    ips = {ip: k for k in members for ip in pods[k].ips}
    blocks = [p.ip_block for p in peers if p.ip_block is not None]
    return interval_notes(elements, ips, blocks) if blocks else host_notes(elements, ips)


def addrport_notes(elements: tuple, pods: Mapping) -> tuple:
    """Notes of a named-port set: (address, protocol, port) -> the pod with the address."""
    wanted = {e[0] for e in elements}
    owner = {ip: k for k, p in pods.items() for ip in p.ips if ip in wanted}
    return tuple((e, owner[e[0]]) for e in elements if e[0] in owner)


class NoteCache:
    """Notes per peer group (or rule), made again only when the elements they describe
    are a new tuple: the compiler hands the same element tuples to every pod that shares
    the group, so 2,500 pods cost one set of notes. Keeps the tuples alive, so identity
    is never reused."""

    def __init__(self) -> None:
        self._cache: dict[object, tuple[tuple, tuple, tuple]] = {}

    def get(self, key: object, v4: tuple, v6: tuple, make) -> tuple:
        hit = self._cache.get(key)
        if hit is not None and hit[0] is v4 and hit[1] is v6:
            return hit[2]
        notes = make()
        self._cache[key] = (v4, v6, notes)
        return notes
