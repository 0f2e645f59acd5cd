"""The backend-neutral per-pod firewall: what every backend renders and every view reads.

One ``PodFirewall`` per pod. For each direction it says whether the pod is isolated, by
which policies, and which traffic is allowed: a list of ``AllowRule``, one per policy rule
(and port group), each matching a named set of peer addresses and a list of ports.

Sets, not rule lists: the peers of one policy rule are one ``AddrSet`` (pod IPs as host
prefixes, ipBlocks as CIDRs with their ``except`` ranges already subtracted), so the
number of rules grows with policy rules, never with pods or peers. Egress rules with named
ports resolve the name per destination pod, so they match an ``AddrPortSet`` of
(address, protocol, port) elements instead.

The whole of each direction's chain, fixed part included (established/related accept,
invalid drop, loopback, IPv6 neighbour discovery and node accept, the tier jumps, the
log and the final drop), is listed by ``chain``: one ``ChainRule`` per rule with its kind,
abstract verdict, what it matches and its comment; ``tier_chain`` lists the rules of a
ClusterNetworkPolicy tier's own chain the same way, and ``direction_rules`` both, in the
order packets meet them (``comments``: their comments, each once). Backends render those matches; the host placements
map the verdicts (an allow returns to the node's chain, a tier's Accept too) and cut
the chain at its tier rules; ``lab stats`` orders and names counters by the same lists,
``lab drops`` finds the log rule that logged a packet in them, the fake backend lists
its counters from them. The comment vocabulary (``fixed_comment`` and friends) lives
here for that reason.
Everything here is pure data; nothing touches the kernel.
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Union

from enforcer.model import PROTOCOLS  # noqa: F401  (re-exported: backends import the IR only)

TABLE = "netpol"
# The two directions, as the IR, backends, logs and metrics name them (the API's
# policyTypes spell them enforcer.model.INGRESS / EGRESS). Protocols: enforcer.model.PROTOCOLS,
# in the order backends render per-protocol rules.
DIRECTIONS = ("ingress", "egress")


@functools.lru_cache(maxsize=4096)
def _as_set(items: tuple) -> frozenset:
    return frozenset(items)  # nftables table / iptables chain prefix inside each pod namespace


_DIGESTS: dict[tuple[int, int], tuple[tuple, tuple, str]] = {}


def elements_digest(v4: tuple, v6: tuple) -> str:
    """A stable digest of a set's elements (stable across processes, unlike hash()).

    Memoised by the identity of the element tuples: the compiler hands the same tuples to
    every pod whose rule shares a peer group, so 2,500 pods cost one digest, not 2,500.
    """
    key = (id(v4), id(v6))
    hit = _DIGESTS.get(key)
    if hit is not None and hit[0] is v4 and hit[1] is v6:
        return hit[2]
    h = hashlib.blake2b(digest_size=16)
    for e in v4 + v6:
        h.update(repr(e).encode() if isinstance(e, tuple) else e.encode())
        h.update(b"\n")
    digest = h.hexdigest()
    if len(_DIGESTS) > 65536:
        _DIGESTS.clear()
    _DIGESTS[key] = (v4, v6, digest)  # keeps the tuples alive, so ids are not reused
    return digest


@dataclass(frozen=True)
class Provenance:
    """Where an allow rule comes from: the policy, the direction and the rule's index."""

    policy: str  # "namespace/name"
    direction: str  # "ingress" | "egress"
    rule_index: int

    def comment(self) -> str:
        return f"{self.policy} {self.direction}[{self.rule_index}]"


@dataclass(frozen=True)
class PortMatch:
    """A protocol and an inclusive port range; first None means every port."""

    protocol: str  # "TCP" | "UDP" | "SCTP"
    first: int | None = None
    last: int | None = None

    def matches(self, protocol: str, port: int) -> bool:
        if protocol != self.protocol:
            return False
        if self.first is None:
            return True
        return self.first <= port <= (self.last if self.last is not None else self.first)

    def __str__(self) -> str:
        if self.first is None:
            return self.protocol
        if self.last is not None and self.last != self.first:
            return f"{self.first}-{self.last}/{self.protocol}"
        return f"{self.first}/{self.protocol}"


@dataclass(frozen=True)
class AddrSet:
    """Peer addresses of one policy rule, as collapsed CIDRs per family."""

    name: str
    v4: tuple[str, ...] = field(default=(), compare=False)
    v6: tuple[str, ...] = field(default=(), compare=False)
    # Decided by the rule (it has an ipBlock peer), not by the elements, so that pod churn
    # never changes a set's type: an interval set is a tree, a host set a hash.
    interval: bool = False
    # (element, what it is: "prod/api", "ipBlock 10.0.0.0/8 except 10.1.0.0/16"), for the
    # element comments a reader of the rendered rules sees. Words only: never compared,
    # never part of the digest, so a renamed pod alone is no change to apply.
    notes: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    # Equality compares this digest, not 30,000 elements: comparing every changed pod's
    # firewall element by element cost ~0.7 s for one label change at 150,000 pods.
    # Not an init field, so dataclasses.replace(s, v4=...) always gets a fresh one.
    digest: str = field(init=False, default="")
    # The peer group the elements come from (GROUP_DOC), "" when unknown.
    group: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", elements_digest(self.v4, self.v6))

    def contains(self, addr: str) -> bool:
        ip = ipaddress.ip_address(addr)
        cidrs = self.v4 if ip.version == 4 else self.v6
        if not self.interval:
            return f"{ip}/{ip.max_prefixlen}" in _as_set(cidrs)
        return any(ip in ipaddress.ip_network(c) for c in cidrs)

    def elements(self) -> frozenset[str]:
        return frozenset(self.v4 + self.v6)


@dataclass(frozen=True)
class AddrPortSet:
    """(address, protocol, port) elements: egress named ports resolved per peer pod."""

    name: str
    v4: tuple[tuple[str, str, int], ...] = field(default=(), compare=False)
    v6: tuple[tuple[str, str, int], ...] = field(default=(), compare=False)
    notes: tuple[tuple[tuple[str, str, int], str], ...] = field(default=(), compare=False)  # as AddrSet.notes
    digest: str = field(init=False, default="")
    group: str = field(default="", compare=False)  # as AddrSet.group

    interval = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", elements_digest(self.v4, self.v6))

    def contains(self, addr: str, protocol: str, port: int) -> bool:
        ip = ipaddress.ip_address(addr)
        return (str(ip), protocol, port) in (self.v4 if ip.version == 4 else self.v6)

    def elements(self) -> frozenset[tuple[str, str, int]]:
        return frozenset(self.v4 + self.v6)


AnySet = Union[AddrSet, AddrPortSet]

# GROUP_DOC: ``group`` names where a set's elements come from (the compiler's peer group of
# a rule, or the rule itself for named ports), stable across processes. Sets of several
# pods with the same group have the same elements in one compile, so host mode keeps ONE
# such set per node, shared by its pods (backends/nft_host.py). Not compared: words for a
# placement, like ``notes``; pod mode ignores it.


@dataclass(frozen=True)
class AllowRule:
    """Accept traffic whose peer is in ``peers`` (None: any address) on one of ``ports``
    (empty: any protocol and port); or, when ``addr_ports`` is set, whose
    (peer address, protocol, port) is in that set."""

    provenance: Provenance
    peers: str | None = None
    ports: tuple[PortMatch, ...] = ()
    addr_ports: str | None = None


@dataclass(frozen=True)
class TierRule:
    """One ClusterNetworkPolicy rule in a pod's Admin or Baseline tier (enforcer.cnp.tiers):
    when the peer and port match as in ``AllowRule``, ``action`` decides: Accept, Deny, or
    Pass (leave this tier). Rules are kept in evaluation order (priority, then rule order)."""

    tier: str  # "Admin" | "Baseline"
    policy: str  # the ClusterNetworkPolicy's name
    priority: int
    direction: str  # "ingress" | "egress"
    rule_index: int
    action: str  # "Accept" | "Deny" | "Pass"
    name: str = ""  # the rule's own name, may be ""
    peers: str | None = None
    ports: tuple[PortMatch, ...] = ()
    addr_ports: str | None = None

    def comment(self) -> str:
        named = f" {self.name}" if self.name else ""
        return f"{self.tier} {self.policy} {self.direction}[{self.rule_index}]{named} {self.action}"


@dataclass(frozen=True)
class DirectionPolicy:
    isolated: bool = False
    isolated_by: tuple[str, ...] = ()  # policy keys, sorted
    rules: tuple[AllowRule, ...] = ()
    # ClusterNetworkPolicy tiers, before and after the NetworkPolicy rules (empty: no CNP
    # selects the pod, and the firewall is exactly what it was before CNPs existed).
    admin: tuple[TierRule, ...] = ()
    baseline: tuple[TierRule, ...] = ()


@dataclass(frozen=True)
class PodFirewall:
    """Everything one pod's namespace needs. ``node_ips`` are always allowed (SEMANTICS 12)."""

    pod: str  # "namespace/name"
    ips: tuple[str, ...] = ()
    node_ips: tuple[str, ...] = ()
    ingress: DirectionPolicy = field(default_factory=DirectionPolicy)
    egress: DirectionPolicy = field(default_factory=DirectionPolicy)
    sets: tuple[AnySet, ...] = ()

    def set(self, name: str) -> AnySet:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(name)

    def direction(self, name: str) -> DirectionPolicy:
        return self.ingress if name == "ingress" else self.egress


def same_structure(a: PodFirewall, b: PodFirewall) -> bool:
    """True when ``a`` and ``b`` differ at most in set elements (same rules, same sets of the
    same kind), so a backend may move from one to the other by adding and deleting
    elements instead of replacing the table. Runs for every changed pod on every change,
    so it compares fields in place rather than building element-free copies."""
    if (a.pod, a.ips, a.node_ips, a.ingress, a.egress) != (b.pod, b.ips, b.node_ips, b.ingress, b.egress):
        return False
    if len(a.sets) != len(b.sets):
        return False
    return sorted(_hollow(s) for s in a.sets) == sorted(_hollow(s) for s in b.sets)


def _hollow(s: AnySet) -> tuple:
    return (type(s).__name__, s.name, s.interval)


@dataclass(frozen=True)
class SetDelta:
    name: str
    add: frozenset = frozenset()
    remove: frozenset = frozenset()


def set_deltas(old: PodFirewall, new: PodFirewall) -> list[SetDelta]:
    """Element changes that turn old's sets into new's (same structure assumed)."""
    out = []
    old_sets = {s.name: s for s in old.sets}
    for s in new.sets:
        before = old_sets[s.name].elements()
        after = s.elements()
        if before != after:
            out.append(SetDelta(s.name, after - before, before - after))
    return out


# ---------------------------------------------------------------------------------------
# The whole chain of a direction, fixed rules included, and the comments its rules carry
# (the same words in every backend: counters and ``lab stats`` find rules by them).


ISOLATED_BY = "isolated by"


def fixed_comment(direction: str, what: str) -> str:
    """Comments of the rules every pod has: "ingress established", "egress node", ..."""
    return f"{direction} {what}"


def isolation_comment(direction: str, isolated_by: tuple[str, ...]) -> str:
    """The final drop names the policies that isolate the direction, so a reader of a
    counter or a log line can find them."""
    return fixed_comment(direction, f"{ISOLATED_BY} {','.join(isolated_by) or '?'}")


def open_comment(direction: str) -> str:
    return f"{direction} not isolated"


def log_comment(direction: str) -> str:
    return f"{direction} log drop"


def rule_comment(rule: AllowRule) -> str:
    return rule.provenance.comment()


def tier_log_comment(rule: TierRule) -> str:
    return f"{rule.comment()} log"


def tier_jump_comment(direction: str, tier: str) -> str:
    return fixed_comment(direction, f"{tier} tier")


def tier_end_comment(direction: str) -> str:
    """A placement whose Admin tier chain must say where to go when no Admin rule matched
    (host mode: on to the NetworkPolicy part) names that rule so."""
    return fixed_comment(direction, "NetworkPolicy tier")


# Abstract verdicts: what a rule does to a packet in the pod's own chain. A placement maps
# them (host mode: an ALLOW of a policy rule returns to the node's chain instead of
# accepting, the fixed accepts stay accepts). PASS: a tier rule's Pass, leave this tier.
ACCEPT, DROP, LOG, JUMP, PASS = "accept", "drop", "log", "jump", "pass"
TIER_VERDICT = {"Accept": ACCEPT, "Deny": DROP, "Pass": PASS}
# The kinds of rule, in the order a chain holds them. The first five are FIXED: every pod
# has them, isolated or not; only "invalid" drops.
FIXED_VERDICT = {"established": ACCEPT, "invalid": DROP, "loopback": ACCEPT, "ipv6 neighbour discovery": ACCEPT,
                 "node": ACCEPT}
FIXED = tuple(FIXED_VERDICT)
TIERS = ("Admin", "Baseline")


def read_comment(comment: str) -> tuple[str, str, str | None, int | None]:
    """``(direction, verdict, policy, rule_index)`` a rule comment read back from the
    kernel says, from its words: the inverse of the vocabulary above, for a comment not
    at hand as a ChainRule (a placement's own rule, an older version's). A comment of no
    known kind reads as an accept of no direction ("")."""
    words = comment.split(" ")
    tier = _indexed(words[2]) if len(words) >= 4 and words[0] in TIERS else None  # TierRule.comment (+ " log")
    verdict = LOG if words[-1] == "log" else TIER_VERDICT.get(words[-1])
    if tier and verdict:
        return tier[0], verdict, words[1], tier[1]
    allow = _indexed(words[1]) if len(words) == 2 else None  # Provenance.comment: "ns/policy ingress[0]"
    if allow:
        return allow[0], ACCEPT, words[0], allow[1]
    d = words[0] if words[0] in DIRECTIONS else ""
    known = {fixed_comment(d, kind): verdict for kind, verdict in FIXED_VERDICT.items()}
    known |= {log_comment(d): LOG, open_comment(d): ACCEPT, tier_end_comment(d): JUMP}
    known |= {tier_jump_comment(d, t): JUMP for t in TIERS}
    if comment in known:
        return d, known[comment], None, None
    return d, DROP if comment.startswith(fixed_comment(d, ISOLATED_BY + " ")) else ACCEPT, None, None


def _indexed(word: str) -> tuple[str, int] | None:
    """``ingress[3]`` -> ("ingress", 3); None for any other word."""
    direction, bracket, index = word.partition("[")
    if direction in DIRECTIONS and bracket and index.endswith("]") and index[:-1].isdigit():
        return direction, int(index[:-1])
    return None


@dataclass(frozen=True)
class ChainRule:
    """One rule of a pod's direction chain, as ``chain`` lists them.

    ``kind``: one of FIXED, "tier" (jump to the ClusterNetworkPolicy tier ``tier``),
    "allow" (``allow`` is the policy rule), "log" (rate-limited nflog of what the drop
    drops), "drop" (isolated: the final drop) or "open" (not isolated: the final accept);
    in a tier's own chain (``tier_chain``) "tier rule" (``rule`` is the TierRule) and
    "tier log" (the nflog before a Deny). ``node``: the node address a "node" rule
    accepts. ``isolated_by``: the policies a "log" and a "drop" rule name (what ``lab
    drops`` reports). ``comment``: its words."""

    kind: str
    verdict: str
    comment: str
    allow: AllowRule | None = None
    node: str | None = None
    tier: str | None = None
    rule: TierRule | None = None
    isolated_by: tuple[str, ...] = ()

    @property
    def fixed(self) -> bool:
        return self.kind in FIXED


def _node_key(addr: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(addr, strict=False)
    return (net.version, int(net.network_address), net.prefixlen)


def chain(fw: PodFirewall, direction: str) -> tuple[ChainRule, ...]:
    """Every rule of ``fw``'s ``direction`` chain, in order (one per node address, one per
    policy rule: a backend may write one rule as several, per family and protocol)."""
    return _chain(direction, fw.node_ips, fw.direction(direction))


@functools.lru_cache(maxsize=8192)
def _chain(direction: str, node_ips: tuple[str, ...], pol: DirectionPolicy) -> tuple[ChainRule, ...]:
    """Cached by what a chain depends on (never the sets, so no elements are kept alive):
    the pods of one node under the same policies share it, and rendering 2,000 pods
    built it again for each at ~100 us a pod (ipaddress, dataclass inits)."""
    out = [ChainRule(kind, FIXED_VERDICT[kind], fixed_comment(direction, kind)) for kind in FIXED[:4]]
    out += [ChainRule("node", ACCEPT, fixed_comment(direction, "node"), node=ip)
            for ip in sorted(node_ips, key=_node_key)]
    tiered = bool(pol.admin or pol.baseline)  # ClusterNetworkPolicy: Admin before, Baseline after

    def jump(tier: str) -> list[ChainRule]:
        return [ChainRule("tier", JUMP, tier_jump_comment(direction, tier), tier=tier)] if tiered else []

    out += jump("Admin")
    if pol.isolated:
        out += [ChainRule("allow", ACCEPT, rule_comment(r), allow=r) for r in pol.rules]
        out.append(ChainRule("log", LOG, log_comment(direction), isolated_by=pol.isolated_by))
        out.append(ChainRule("drop", DROP, isolation_comment(direction, pol.isolated_by),
                             isolated_by=pol.isolated_by))
    else:
        out += jump("Baseline")
        out.append(ChainRule("open", ACCEPT, open_comment(direction)))
    return tuple(out)


def tier_chain(fw: PodFirewall, direction: str, tier: str) -> tuple[ChainRule, ...]:
    """The rules of the chain a "tier" rule of ``chain`` jumps to, in evaluation order: per
    tier rule its verdict (TIER_VERDICT), a Deny logged first (rate-limited nflog, as
    the final drop is), so ``lab drops`` can name the tier rule that dropped a packet."""
    pol = fw.direction(direction)
    return _tier_chain(pol.admin if tier == "Admin" else pol.baseline)


@functools.lru_cache(maxsize=4096)
def _tier_chain(rules: tuple[TierRule, ...]) -> tuple[ChainRule, ...]:
    out = []
    for t in rules:
        if t.action == "Deny":
            out.append(ChainRule("tier log", LOG, tier_log_comment(t), tier=t.tier, rule=t))
        out.append(ChainRule("tier rule", TIER_VERDICT[t.action], t.comment(), tier=t.tier, rule=t))
    return tuple(out)


def direction_rules(fw: PodFirewall, direction: str) -> tuple[ChainRule, ...]:
    """Every rule of ``fw``'s ``direction`` in the order a packet can meet them: its
    ``chain``, a "tier" jump followed by the rules of that tier's ``tier_chain``."""
    out: list[ChainRule] = []
    for r in chain(fw, direction):
        out.append(r)
        if r.kind == "tier":
            out += tier_chain(fw, direction, r.tier)  # type: ignore[arg-type]
    return tuple(out)


def comments(fw: PodFirewall) -> tuple[str, ...]:
    """The comments of every rule of the pod (both directions' ``direction_rules``), each
    once: what a backend's counters list, rules that share a comment (one per node
    address, the families' halves of one rule) summed into one."""
    return tuple(dict.fromkeys(r.comment for d in DIRECTIONS for r in direction_rules(fw, d)))
