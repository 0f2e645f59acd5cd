"""iptables rendering (pure): a pod's firewall as ipsets and the rules of our chains.

What ``iptables-save`` / ``ipset save`` would show for one pod (the layout is described in
backends/iptables.py): ``build`` makes a ``Ruleset`` (the sets, and per family the
argument lists of each chain's rules), ``rules_text`` / ``sets_text`` turn it into
``iptables-restore --noflush`` and ``ipset restore`` input, ``delta_text`` a set-element
change. ``match_args`` is shared with the ClusterNetworkPolicy tiers (ipt_tiers.py) and
the node's chains of host mode (ipt_host.py).
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from backends import base, ipt_tiers
from backends.base import fit
from enforcer import ir
from enforcer.errors import BackendError
from enforcer.ir import AddrPortSet, AddrSet, AllowRule, PodFirewall

CHAINS = {"ingress": "NETPOL-INGRESS", "egress": "NETPOL-EGRESS"}
# Every chain of ours: the tier chains (ipt_tiers) first, as they must exist before a jump.
OWN_CHAINS = ipt_tiers.ALL + tuple(CHAINS.values())
HOOKS = {"ingress": "INPUT", "egress": "OUTPUT"}
PEER_DIR = {"ingress": "src", "egress": "dst"}
LOOPBACK = {"ingress": "-i", "egress": "-o"}
NODE = {"ingress": "-s", "egress": "-d"}
SET_PREFIX, TMP_PREFIX = "np.", "nt."
SET_NAME_MAX = 31  # IPSET_MAXNAMELEN - 1
COMMENT_MAX = 256  # xt_comment
MULTIPORT_MAX = 15  # slots; a range takes two
ND_TYPES = ("133", "134", "135", "136")  # router solicit/advert, neighbour solicit/advert
FAMILIES = (4, 6)





@dataclass(frozen=True)
class IpSet:
    name: str  # live name, np.*
    type: str  # hash:ip | hash:net | hash:ip,port
    family: int
    elements: tuple[str, ...]
    # element -> what it is (the pod, the ipBlock): ipset's comment extension. Words only.
    notes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def tmp(self) -> str:
        return TMP_PREFIX + self.name[len(SET_PREFIX):]

    def create(self, name: str | None = None) -> str:
        # Every set has the comment extension, so that its elements can say what they are.
        return f"create {name or self.name} {self.type} family {'inet' if self.family == 4 else 'inet6'} comment"

    def add(self, element: str, name: str | None = None) -> str:
        note = self.notes.get(element)
        return f"add {name or self.name} {element}" + (f' comment "{fit(note, COMMENT_MAX - 1)}"' if note else "")


@dataclass(frozen=True)
class Ruleset:
    """What one pod gets: its ipsets and, per family, the rules of each of our chains."""

    sets: tuple[IpSet, ...]
    rules: dict[int, dict[str, tuple[tuple[str, ...], ...]]] = field(hash=False)

    def set_names(self) -> set[str]:
        return {s.name for s in self.sets}


def ipset_name(ir_name: str, kind: str, family: int, prefix: str = SET_PREFIX) -> str:
    """np.<name>.<kind><family>, shortened with a hash when over 31 characters."""
    suffix = f".{kind}{family}"
    if len(prefix) + len(ir_name) + len(suffix) <= SET_NAME_MAX:
        return f"{prefix}{ir_name}{suffix}"
    digest = hashlib.sha256(ir_name.encode()).hexdigest()[:6]
    keep = SET_NAME_MAX - len(prefix) - len(suffix) - 7
    return f"{prefix}{ir_name[:keep]}-{digest}{suffix}"


def _kind(s: AddrSet | AddrPortSet) -> tuple[str, str]:
    if isinstance(s, AddrPortSet):
        return "ipp", "hash:ip,port"
    return ("net", "hash:net") if s.interval else ("ip", "hash:ip")


def _addr_key(text: str):
    return _element(text.split(",", 1)[0], "key") + (text,)


@functools.lru_cache(maxsize=1 << 17)
def _element(cidr: str, how: str):
    """One address or prefix, parsed once (the same pod addresses fill the sets of many
    pods, and ``ipaddress`` costs ~20 us a parse): "key" -> numeric sort key; "host" ->
    the bare address of a host prefix (else ValueError); "net" -> hash:net elements."""
    net = ipaddress.ip_network(cidr, strict=False)
    if how == "key":
        return (int(net.network_address), net.prefixlen)
    if how == "host":
        if net.prefixlen != net.max_prefixlen:
            raise ValueError(f"{cidr} is a network, but the set holds single addresses "
                             "(the compiler must mark sets with ipBlocks as interval)")
        return str(net.network_address)
    # hash:net cannot hold a /0: store it as its two halves.
    parts = list(net.subnets(1)) if net.prefixlen == 0 else [net]
    return tuple(base.host_or_cidr(str(p)) for p in parts)


def set_elements(s: AddrSet | AddrPortSet, family: int, items=None) -> list[str]:
    """Elements as ipset writes them, sorted. Raises BackendError on a malformed one."""
    if items is None:
        items = s.v4 if family == 4 else s.v6
    return list(_set_elements(type(s), s.name, s.interval, tuple(items)))


@functools.lru_cache(maxsize=8192)
def _set_elements(kind: type, name: str, interval: bool, items: tuple) -> tuple[str, ...]:
    try:
        if kind is AddrPortSet:
            out = [f"{_element(a, 'host')},{p.lower()}:{int(port)}" for a, p, port in items]
        elif interval:
            out = [e for c in items for e in _element(c, "net")]
        else:
            out = [_element(c, "host") for c in items]
        return tuple(sorted(set(out), key=_addr_key))
    except ValueError as e:
        raise BackendError(f"set {name}: bad element: {e}") from e


def render_sets(fw: PodFirewall) -> tuple[IpSet, ...]:
    out = []
    for s in sorted(fw.sets, key=lambda s: s.name):
        kind, typ = _kind(s)
        for fam in FAMILIES:
            out.append(IpSet(ipset_name(s.name, kind, fam), typ, fam, tuple(set_elements(s, fam)),
                             _notes(s, fam) if s.notes else {}))
    return tuple(out)


def _notes(s: AddrSet | AddrPortSet, family: int) -> dict[str, str]:
    """ipset element text -> the pod or ipBlock it comes from (a /0 is two elements)."""
    items = set(s.v4 if family == 4 else s.v6)
    return {e: note for k, note in s.notes if k in items for e in set_elements(s, family, [k])}


@functools.lru_cache(maxsize=1 << 15)
def _comment(text: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", fit(text, COMMENT_MAX))


def _port_matches(proto: str, ranges: list[tuple[int, int]]) -> list[tuple[str, ...]]:
    """``-m tcp --dport`` for one port or range, else multiport in chunks of 15 slots."""
    items = [str(a) if a == b else f"{a}:{b}" for a, b in ranges]
    if len(items) == 1:
        return [("-m", proto, "--dport", items[0])]
    chunks: list[list[str]] = [[]]
    used = 0
    for item in items:
        slots = 2 if ":" in item else 1
        if used + slots > MULTIPORT_MAX:
            chunks.append([])
            used = 0
        chunks[-1].append(item)
        used += slots
    return [("-m", "multiport", "--dports", ",".join(c)) for c in chunks]


def _set_name_of(fw: PodFirewall, ir_name: str, family: int) -> str:
    s = fw.set(ir_name)
    return ipset_name(ir_name, _kind(s)[0], family)


def render_allow(fw: PodFirewall, rule: AllowRule, direction: str, family: int,
                 target: str = "ACCEPT") -> list[tuple[str, ...]]:
    return match_args(fw, rule, direction, family, _comment(base.rule_comment(rule)) + ("-j", target))


def match_args(fw: PodFirewall, rule, direction: str, family: int, tail: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The argument lists of one rule (an AllowRule, or a tier's TierRule: the same peers,
    addr_ports and ports), each ending in ``tail`` (its comment and target)."""
    if rule.addr_ports is not None:
        name = _set_name_of(fw, rule.addr_ports, family)
        return [("-m", "set", "--match-set", name, f"{PEER_DIR[direction]},dst") + tail]
    peer: tuple[str, ...] = ()
    if rule.peers is not None:
        peer = ("-m", "set", "--match-set", _set_name_of(fw, rule.peers, family), PEER_DIR[direction])
    return [proto + peer + ports + tail for proto, ports in _port_parts(rule.ports)]


@functools.lru_cache(maxsize=1 << 14)
def _port_parts(ports: tuple) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """The protocol match and the port match of each argument list a rule's ports make
    (what goes before and after its peer match). Cached: the pods a policy selects share
    its rules' ports, and grouping them was a third of rendering a pod."""
    out: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for proto, ranges in base.port_groups(ports):
        if proto is None:
            out.append(((), ()))
        elif ranges is None:
            out.append((("-p", proto.lower()), ()))
        else:
            out.extend((("-p", proto.lower()), m) for m in _port_matches(proto.lower(), ranges))
    return tuple(out)


def _node_addr(ip: str) -> str:
    net = ipaddress.ip_network(ip, strict=False)
    return f"{net.network_address}/{net.prefixlen}"


def render_chain(fw: PodFirewall, direction: str, family: int,
                 allowed: str = "ACCEPT") -> tuple[tuple[str, ...], ...]:
    """The rules of NETPOL-INGRESS / -EGRESS for one family: the IR's chain (ir.chain),
    each rule's match in iptables arguments (none, or several, per IR rule: IPv4 has no
    neighbour discovery, a node address is in one family, ports split into slices).
    ``allowed``: the target of the ACCEPT rules that are not fixed (allows, the open
    accept): host mode returns to the node's chain (backends/ipt_host_render.py)."""
    rules: list[tuple[str, ...]] = []
    for r in ir.chain(fw, direction):  # (not through chain_rules: a pod's hot path)
        rules.extend(_chain_rule(fw, direction, family, r, allowed))
    return tuple(rules)


def chain_rules(fw: PodFirewall, direction: str, family: int,
                allowed: str = "ACCEPT") -> list[tuple[ir.ChainRule, list[tuple[str, ...]]]]:
    """Each rule of ir.chain with its argument lists (render_chain's), so that a placement
    can cut the chain at an IR rule (host mode's tier parts: backends/ipt_host_tiers.py)."""
    return [(r, _chain_rule(fw, direction, family, r, allowed)) for r in ir.chain(fw, direction)]


TARGET = {ir.ACCEPT: "ACCEPT", ir.DROP: "DROP"}
FIXED_MATCH = {"established": ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"),
               "invalid": ("-m", "conntrack", "--ctstate", "INVALID")}


def _chain_rule(fw: PodFirewall, direction: str, family: int, r: ir.ChainRule,
                allowed: str) -> list[tuple[str, ...]]:
    target = allowed if r.verdict == ir.ACCEPT and not r.fixed else TARGET.get(r.verdict, "")
    if r.kind == "allow":
        return render_allow(fw, r.allow, direction, family, target)  # type: ignore[arg-type]
    if r.kind == "tier":
        return [ipt_tiers.jump(r, direction)]
    if r.kind == "log":
        return [("-m", "limit", "--limit", f"{base.LOG_RATE_PER_SECOND}/sec") + _comment(r.comment)
                + ("-j", "NFLOG", "--nflog-prefix", base.nflog_prefix(direction, fw.pod),
                   "--nflog-group", str(base.LOG_GROUP))]
    tail = _comment(r.comment) + ("-j", target)
    if r.kind == "ipv6 neighbour discovery":
        return [("-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", t) + tail
                for t in ND_TYPES] if family == 6 else []
    if r.kind == "node":
        return [(NODE[direction], _node_addr(r.node)) + tail] if base.family_of(r.node) == family else []  # type: ignore[arg-type]
    if r.kind == "loopback":
        return [(LOOPBACK[direction], "lo") + tail]
    return [FIXED_MATCH.get(r.kind, ()) + tail]  # "drop", "open": everything


def jump_rule(direction: str) -> tuple[str, ...]:
    return _comment(f"netpol {direction}") + ("-j", CHAINS[direction])


def build(fw: PodFirewall) -> Ruleset:
    return Ruleset(render_sets(fw), {fam: {**ipt_tiers.chains(fw, fam),
                                           **{CHAINS[d]: render_chain(fw, d, fam) for d in base.DIRECTIONS}}
                                     for fam in FAMILIES})


# Letters and digits (str.isalnum: what a Unicode pattern's \w matches besides "_") and a
# few punctuation marks need no quotes.
_PLAIN_TOKEN = re.compile(r"[-_./:,\[\]!@%+=\w]+")


def quote(token: str) -> str:
    if _PLAIN_TOKEN.fullmatch(token):
        return token
    return '"' + token.replace('"', "'") + '"'


@functools.lru_cache(maxsize=1 << 15)
def rule_line(chain: str, args: tuple[str, ...], verb: str = "-A") -> str:
    """``-A CHAIN args``; verb "-I" inserts at position 1. Cached: the pods of one
    policy share most of their rules, and a cold apply of many pods wrote each of them
    again (quoting was ~1 ms of a pod's CPU)."""
    head = [verb, chain] + (["1"] if verb == "-I" else [])
    return " ".join(head + [quote(a) for a in args])


def rules_text(rs: Ruleset, family: int, jumps: bool = True,
               delete_jumps: dict[str, list[int]] | None = None, drop_chains: tuple[str, ...] = ()) -> str:
    """iptables-restore --noflush input: declaring our chains flushes them; then the jump
    fix-ups (delete stale jumps by number, highest first; insert one at position 1).
    ``drop_chains`` (tier chains no longer wanted) are emptied and deleted at the end."""
    tiers = [c for c in rs.rules[family] if c in ipt_tiers.ALL]
    lines = ["*filter"] + [f":{c} - [0:0]" for c in tiers] + [f":{CHAINS[d]} - [0:0]" for d in base.DIRECTIONS]
    for d in base.DIRECTIONS:
        for n in sorted((delete_jumps or {}).get(HOOKS[d], []), reverse=True):
            lines.append(f"-D {HOOKS[d]} {n}")
        if jumps:
            lines.append(rule_line(HOOKS[d], jump_rule(d), "-I"))
    for c in tiers:
        lines.extend(rule_line(c, a) for a in rs.rules[family][c])
    for d in base.DIRECTIONS:
        lines.extend(rule_line(CHAINS[d], a) for a in rs.rules[family][CHAINS[d]])
    for c in drop_chains:
        lines += [f"-F {c}", f"-X {c}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def sets_text(sets: tuple[IpSet, ...]) -> str:
    lines = []
    for s in sets:
        lines.append(s.create())
        lines.extend(s.add(e) for e in s.elements)
    return "\n".join(lines) + ("\n" if lines else "")


def render(fw: PodFirewall) -> str:
    """ipset restore text, then iptables-restore and ip6tables-restore text (first apply)."""
    rs = build(fw)
    return (f"# pod {fw.pod}\n"
            "# ipsets (ipset restore; applied by swapping in sets built under temporary names)\n"
            + sets_text(rs.sets)
            + "# IPv4 (iptables-restore --noflush)\n" + rules_text(rs, 4)
            + "# IPv6 (ip6tables-restore --noflush)\n" + rules_text(rs, 6))


def delta_text(old: Ruleset, new: Ruleset) -> tuple[str, int, int]:
    """``del`` then ``add`` lines turning old's set elements into new's (same sets)."""
    before = {s.name: set(s.elements) for s in old.sets}
    dels: list[str] = []
    adds: list[str] = []
    for s in new.sets:
        was = before.get(s.name, set())
        now = set(s.elements)
        dels.extend(f"del {s.name} {e}" for e in sorted(was - now, key=_addr_key))
        adds.extend(f"add {s.name} {e}" for e in sorted(now - was, key=_addr_key))
    text = "\n".join(dels + adds)
    return text + ("\n" if text else ""), len(adds), len(dels)

