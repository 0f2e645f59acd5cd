"""What one node's host table holds, and the commands that move it to what its pods need.

Pure bookkeeping for backends/nft_host.py. A node's ``table inet netpol_host`` holds:
- per pod (keyed by its tag, placement.pod_tag): its chains, its map entries (its
  addresses in ``ingress_4``/``ingress_6``, its mark in ``egress``, its veth in the bridge
  table's ``ports``);
- per peer group: ONE set (``g.<group>_4``/``_6``) shared by every pod of the node whose
  rules read that group, however many they are. A set lives while a pod's chains use
  it: the last pod to stop using it deletes it (a reference count, counted from the
  pods' entries). Sets of unknown origin (``group`` "") stay private to their pod, under
  the per-pod name ``<set>.<tag>``.

``Node`` is what we believe is in the kernel; ``plan`` turns a batch of firewalls into one
transaction and the ``Node`` that holds once it committed; ``removal`` does the same for
pods that leave. A peer change is then one element delta per set and node, however many
of the node's pods read the set. ``adopt`` rebuilds a ``Node`` from a listing (a table
made by an earlier run, or by another process: a lab command): the next apply of a pod
rewrites its chains only if they differ from the listing's; set elements are not read
back (see ``plan``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from backends import base, nftables as nft
from backends.placement import _renamed, node_set_name, pod_mark, pod_tag, shared
from enforcer.errors import BackendError
from enforcer.ir import AnySet, PodFirewall

TABLE = "netpol_host"
T = f"inet {TABLE}"
# A pod's chains: "in.<tag>" and "eg.<tag>", the ones the maps jump to; with
# ClusterNetworkPolicy tiers also "adm.", "np." and "bl." before those (nft_host.pod_chains).
TIER_PREFIXES = ("adm.", "np.", "bl.")


def chain_names(pod: str) -> dict[str, str]:
    tag = pod_tag(pod)
    return {"ingress": f"in.{tag}", "egress": f"eg.{tag}"}


def all_chain_names(pod: str) -> list[str]:
    return [p + c for c in chain_names(pod).values() for p in ("",) + TIER_PREFIXES]


def _tag_of(chain: str) -> str:
    for p in TIER_PREFIXES:
        if chain.startswith(p):
            chain = chain[len(p):]
            break
    for p in ("in.", "eg."):
        if chain.startswith(p):
            return chain[len(p):]
    return ""


@dataclass(frozen=True)
class PodEntry:
    """One pod of the node as installed: ``chains`` as rendered, or (``listed``) as read
    back from the kernel, normalised (nftables.normalise)."""

    chains: tuple[tuple[str, tuple[str, ...]], ...]
    chain_names: frozenset[str]
    sets: frozenset[str]  # node set names (without _4/_6) its chains read
    ips: tuple[str, ...]  # its entries in ingress_4 / ingress_6
    mark: int | None  # its entry in egress
    iface: str | None  # its entry in the bridge's ports
    listed: bool = False
    structure: tuple | None = None  # _structure of the firewall its chains were rendered from


@dataclass
class Node:
    # node set name -> the set installed (its elements known), or None (there, unknown)
    sets: dict[str, AnySet | None] = field(default_factory=dict)
    pods: dict[str, PodEntry] = field(default_factory=dict)  # tag -> entry
    types: dict[str, str] = field(default_factory=dict)  # adopted set -> its listed type (_type)

    def copy(self) -> "Node":
        return Node(dict(self.sets), dict(self.pods), dict(self.types))

    def users(self) -> dict[str, int]:
        count: dict[str, int] = {}
        for e in self.pods.values():
            for s in e.sets:
                count[s] = count.get(s, 0) + 1
        return count


@dataclass
class Plan:
    text: str  # nft commands, one transaction
    raw: list  # [(verb, set name, [elements])]: hash set deltas for a raw netlink batch
    node: Node  # what holds once both went through
    kinds: dict[str, str]  # pod key -> "full" (chains written) | "delta" (elements only)


def _set_type_line(s: AnySet, fam: int) -> str:
    flags = "; flags interval" if s.interval else ""
    return f"type {nft._set_type(s, fam)}{flags};"


def _delta(old: AnySet, new: AnySet) -> list[tuple[str, str, tuple[str, ...]]]:
    """Element changes from ``old`` to ``new`` (one set, both families), deletes first."""
    dels, adds = [], []
    for fam in (4, 6):
        was, now = (old.v4, new.v4) if fam == 4 else (old.v6, new.v6)
        if was == now:
            continue
        was_s, now_s = set(was), set(now)
        if was_s - now_s:
            dels.append(("delete", nft.set_name(new.name, fam), tuple(nft._elements(new, fam, was_s - now_s))))
        if now_s - was_s:
            adds.append(("add", nft.set_name(new.name, fam), tuple(nft._elements(new, fam, now_s - was_s))))
    return dels + adds


def _kind(s: AnySet) -> tuple:
    return (type(s), s.interval)


def _type(s: AnySet) -> str:
    """The IPv4 half's type as a listing shows it: what an adopted set is compared by."""
    return nft._set_type(s, 4) + (" interval" if s.interval else "")


def _structure(fw: PodFirewall) -> tuple:
    """What a pod's chains are made of, set elements aside: equal structures render equal
    chains, so a pod whose structure did not change is not rendered again."""
    return (fw.pod, fw.ingress, fw.egress, fw.node_ips,
            tuple(sorted((s.name, s.group, type(s).__name__, s.interval) for s in fw.sets)))


def plan(node: Node, items, chains_of, force: bool = False, raw_ok: bool = True) -> Plan:
    """One transaction installing ``items`` ((fw, iface, the previous fw or None) each) on
    ``node``. ``chains_of(sfw)`` renders the pod's chains as ``[(name, body lines)]`` from
    the firewall with its sets under their node names (placement.shared). ``force``:
    rewrite chains and refill sets whatever ``node`` says (after a refusal); a pod the
    node holds whose previous fw is None is forced so (the caller does not know what the
    kernel holds: drift repair restores that way, as pod mode swaps the table). ``raw_ok``:
    hash set deltas may go as a raw batch. A set the node holds with unknown elements
    (adopted) is taken to hold what the pod's previous firewall says, as pod mode does
    with its deltas: a refused delta, or drift repair, corrects it."""
    new = node.copy()
    chain_pre: list[str] = []  # add + flush of the chains written
    set_pre: list[str] = []  # sets made again (kind changed), made, or refilled
    blocks: list[str] = []  # set elements and chain bodies, in one table block
    elems: list[str] = []  # element and map entry commands
    raw: list = []
    gone_chains: list[str] = []
    kinds: dict[str, str] = {}
    decided: dict[str, tuple[str, str]] = {}  # node set name -> (digest, pod) this batch
    for fw, iface, prev in items:
        tag = pod_tag(fw.pod)
        names = {s.name: node_set_name(s, tag) for s in fw.sets}
        old = node.pods.get(tag)
        done = set()  # sets an earlier pod of this batch already dealt with
        for s in fw.sets:
            n = names[s.name]
            if n in decided:
                if decided[n][0] != s.digest:
                    raise BackendError(
                        f"host mode: pods {decided[n][1]} and {fw.pod} read set {n} with "
                        "different elements in one apply (firewalls from two different compiles)")
                done.add(n)
        for s in fw.sets:
            decided.setdefault(names[s.name], (s.digest, fw.pod))
        force_pod = force or (prev is None and old is not None)
        structure = _structure(fw)
        kind = "delta"
        chains = old.chains if old is not None else ()
        if force_pod or old is None or old.structure != structure:
            chains = tuple((n, tuple(b)) for n, b in chains_of(shared(fw)))
            had = dict(old.chains) if old is not None else {}
            for n, body in chains:
                if not force_pod and n in had and had[n] == (
                        tuple(nft.normalise("\n".join(body))) if old.listed else body):  # type: ignore[union-attr]
                    continue  # (a chain rewritten would lose its counters)
                kind = "full"
                chain_pre.append(f"add chain {T} {n}\nflush chain {T} {n}\n")
                blocks += [f"\tchain {n} {{", *body, "\t}"]
            gone_chains += sorted((old.chain_names if old else frozenset()) - {n for n, _ in chains})
        before: dict | None = None  # the previous fw's sets by node name, made when needed
        for s in sorted(fw.sets, key=lambda s: names[s.name]):
            name = names[s.name]
            if name in done:
                continue
            cur = new.sets.get(name, False)
            if cur is None and prev is not None:
                if before is None:
                    before = {node_set_name(x, tag): x for x in prev.sets}
                if name in before and _kind(before[name]) == _kind(s):
                    cur = before[name]
            if not force_pod and cur is not False and cur is not None and cur.digest == s.digest \
                    and _kind(cur) == _kind(s):
                if cur is not new.sets[name]:
                    new.sets[name] = _renamed(cur, name)  # (the previous firewall's, now known)
                continue
            s = _renamed(s, name)
            if force_pod or cur is None or cur is False or _kind(cur) != _kind(s):
                if (cur is not False and cur is not None and _kind(cur) != _kind(s)) or (
                        cur is None and new.types.get(name, _type(s)) != _type(s)):
                    # A private set whose kind changed: its old rules are flushed above.
                    set_pre += [f"delete set {T} {nft.set_name(name, f)}\n" for f in (4, 6)]
                for fam in (4, 6):
                    n = nft.set_name(name, fam)
                    set_pre.append(f"add set {T} {n} {{ {_set_type_line(s, fam)} }}\nflush set {T} {n}\n")
                    lines = nft.render_set(s, fam)
                    blocks += lines if len(lines) > 3 else []  # (no elements: add + flush did it)
            else:
                changes = _delta(cur, s)
                if s.interval or not raw_ok:
                    elems += [f"{v} element {T} {n} {{ {', '.join(e)} }}\n" for v, n, e in changes]
                else:
                    raw += [(v, n, list(e)) for v, n, e in changes]
            new.sets[name] = s
            new.types.pop(name, None)
        elems += _entries(fw, iface, None if force_pod else old)
        new.pods[tag] = PodEntry(chains, frozenset(n for n, _ in chains), frozenset(names.values()),
                                 tuple(fw.ips), pod_mark(fw.pod), iface, structure=structure)
        kinds[fw.pod] = kind
    post = [f"flush chain {T} {c}\n" for c in gone_chains] + [f"delete chain {T} {c}\n" for c in gone_chains]
    post += _unused_sets(new)
    table = ["table " + T + " {", *blocks, "}\n"] if blocks else []
    return Plan("".join(chain_pre + set_pre) + "\n".join(table) + "".join(elems + post), raw, new, kinds)


def _entries(fw: PodFirewall, iface: str, old: PodEntry | None) -> list[str]:
    """Map entries of the pod: those it lacks, and the removal of those it no longer has."""
    if old is not None and old.iface == iface and old.ips == tuple(fw.ips):
        return []  # (the mark is the pod key's: the same pod, the same mark)
    names = chain_names(fw.pod)
    out = []
    had = set(old.ips) if old else set()
    for fam in (4, 6):
        gone = sorted(base.host_or_cidr(a) for a in had - set(fw.ips) if base.family_of(a) == fam)
        if gone:
            out.append(f"delete element {T} ingress_{fam} {{ {', '.join(gone)} }}\n")
        add = [f"{base.host_or_cidr(a)} : jump {names['ingress']}" for a in fw.ips
               if base.family_of(a) == fam and a not in had]
        if add:
            out.append(f"add element {T} ingress_{fam} {{ {', '.join(add)} }}\n")
    mark = pod_mark(fw.pod)
    if old is None or old.mark != mark:
        out.append(f"add element {T} egress {{ 0x{mark:08x} : jump {names['egress']} }}\n")
    if old is None or old.iface != iface:
        if old is not None and old.iface:
            out.append(f'delete element bridge {TABLE} ports {{ "{old.iface}" }}\n')
        out.append(f'add element bridge {TABLE} ports {{ "{iface}" : 0x{mark:08x} }}\n')
    return out


def _unused_sets(node: Node) -> list[str]:
    """Delete the sets no pod's chains read any more (and forget them in ``node``)."""
    used = node.users()
    out = []
    for name in sorted(n for n in node.sets if n not in used):
        out += [f"delete set {T} {nft.set_name(name, f)}\n" for f in (4, 6)]
        del node.sets[name]
        node.types.pop(name, None)
    return out


def removal(node: Node, tags: list[str]) -> tuple[str, Node]:
    """Commands deleting every trace of the pods ``tags`` (map entries first: they jump to
    the chains; then the chains, flushed all before any is deleted: they jump to each
    other; then the sets nobody reads any more), and the node without them."""
    new = node.copy()
    first, flush, delete = [], [], []
    for tag in tags:
        e = new.pods.pop(tag, None)
        if e is None:
            continue
        for fam in (4, 6):
            addrs = [base.host_or_cidr(a) for a in e.ips if base.family_of(a) == fam]
            if addrs:
                first.append(f"delete element {T} ingress_{fam} {{ {', '.join(addrs)} }}\n")
        if e.mark is not None:
            first.append(f"delete element {T} egress {{ 0x{e.mark:08x} }}\n")
        if e.iface:
            first.append(f'delete element bridge {TABLE} ports {{ "{e.iface}" }}\n')
        for c in sorted(e.chain_names):
            flush.append(f"flush chain {T} {c}\n")
            delete.append(f"delete chain {T} {c}\n")
    return "".join(first + flush + delete + _unused_sets(new)), new


# ---------------------------------------------------------------------------------------
# Adopting a table made by an earlier run


_CHAIN = re.compile(r"^\tchain (\S+) \{\n(.*?)^\t\}", re.M | re.S)
_SET = re.compile(r"^\tset (\S+)_[46] \{", re.M)
_SET_TYPE = re.compile(r"^\tset (\S+)_4 \{\n\t\ttype ([^\n]+)\n(?:\t\tflags ([^\n]+)\n)?", re.M)
_REF = re.compile(r"@(\S+)_[46]\b")
_GOTO = re.compile(r"(?:jump|goto) (\S+)")


def adopt(listing: str, bridge: str) -> Node:
    """The Node a listing of both tables describes (chain bodies and set elements unknown)."""
    node = Node({name: None for name in _SET.findall(listing)})
    for name, type_, flags in _SET_TYPE.findall(listing):
        node.types[name] = type_.strip() + (" interval" if "interval" in flags else "")
    bodies = {m.group(1): m.group(2) for m in _CHAIN.finditer(listing)}
    by_tag: dict[str, list[str]] = {}
    for name in bodies:
        tag = _tag_of(name)
        if tag:
            by_tag.setdefault(tag, []).append(name)
    ingress = {}
    for fam in (4, 6):
        ingress[fam] = re.findall(r"([0-9a-fA-F:.]+) : jump in\.(\S+?)(?=[,\s}])", _map_body(listing, f"ingress_{fam}"))
    marks = {tag: int(m, 16) for m, tag in
             re.findall(r"(0x[0-9a-f]+) : jump eg\.(\S+?)(?=[,\s}])", _map_body(listing, "egress"))}
    ports = {int(m, 16): i for i, m in re.findall(r'"([^"]+)" : (0x[0-9a-f]+)', bridge)}
    for tag, names in by_tag.items():
        sets = frozenset(r for n in names for r in _REF.findall(bodies[n]))
        ips = tuple(a for fam in (4, 6) for a, t in ingress[fam] if t == tag)
        mark = marks.get(tag)
        chains = tuple((n, tuple(nft.normalise(bodies[n]))) for n in names)
        node.pods[tag] = PodEntry(chains, frozenset(names), sets, ips, mark, ports.get(mark) if mark else None,
                                  listed=True)
    return node


def _map_body(listing: str, name: str) -> str:
    m = re.search(rf"^\tmap {re.escape(name)} \{{\n(.*?)^\t\}}", listing, re.M | re.S)
    return m.group(1) if m else ""


# ---------------------------------------------------------------------------------------
# Reading a node back (verify)


def blocks(listing: str) -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> normalised lines of each set, map and chain of a table listing."""
    return {(m.group(1), m.group(2)): nft.normalise(m.group(3)) for m in _BLOCK.finditer(listing)}


_BLOCK = re.compile(r"^\t(set|map|chain) (\S+) \{\n(.*?)^\t\}", re.M | re.S)


def _map_entries(text: str) -> set[str]:
    """The elements of listed maps: '10.0.0.5 : jump in.x.a', '"veth0" : 0x4e00002a'."""
    return {" ".join(e.split()) for m in re.findall(r"elements = \{(.*?)\}", text, re.S)
            for e in m.split(",") if e.strip()}


class View:
    """One listing of a node's tables, parsed, valid while the node's generation is ``gen``:
    the verify pass of a node's pods reads the node once, not once per pod."""

    def __init__(self, gen, listing: str, bridge: str) -> None:
        self.gen = gen
        self.blocks = blocks(listing)
        self.ingress = _map_entries("".join(_map_body(listing, f"ingress_{f}") for f in (4, 6)))
        self.egress = _map_entries(_map_body(listing, "egress"))
        m = re.search(r"^\tmap ports \{\n(.*?)^\t\}", bridge, re.M | re.S)
        self.ports = _map_entries(m.group(1) if m else "")
        self.sets_ok: dict[str, str] = {}  # node set name -> digest found equal
        self.pods_ok: dict[str, tuple] = {}  # pod -> (firewall, veth) found right
