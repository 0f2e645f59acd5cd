"""nftables backend: one ``table inet netpol`` per pod network namespace.

Layout (IPv4 and IPv6 in one ``inet`` table)::

    table inet netpol {
        comment "pod NS/NAME"
        set <rule set>_4 / _6        one per ir.AddrSet and family, both always present
                                     (iff the rule has ipBlocks: ``addr . inet_proto``,
                                     ``flags interval``, elements ``CIDR . 0-255``);
                                     ir.AddrPortSet -> addr . inet_proto . inet_service
        chain input  (hook input)    the IR's chain (ir.chain), each rule in nft words:
                                     established,related accept; invalid drop; lo accept;
        chain output (hook output)   IPv6 neighbour discovery accept; node accept;
                                     then isolated: one accept per policy rule, family,
                                     protocol and port (range: no anonymous sets, see
                                     port_matches), a rate-limited nflog, a counted drop;
                                     not isolated: a counted accept.
    }

The rendered text is written in the form ``nft list table`` prints back (merged port
ranges, host elements without /32, the same keywords), so ``verify`` compares the kernel's
listing with ``render`` after normalising only counters, handles and element order.

Applying (see ``apply``):
- full: ``add table`` + ``delete table`` + the whole definition in ONE transaction, so the
  old table is swapped for the new one atomically (the ``add`` makes the first apply's
  ``delete`` succeed). By default sent as one raw netlink batch encoded from the rendered
  blocks (backends/nft_netlink.py: the same messages nft would send, without its parser),
  the text through libnftables being the fallback (backends/nft_runners.py);
- delta: ``delete element`` / ``add element`` in one transaction, by default as one raw
  DELSETELEM/NEWSETELEM netlink batch (backends/nft_swap.py ``encode_elements``, through
  the namespace's table socket), ~20x cheaper than libnftables; with ``method="libnft"``
  hash sets through ``libnft.ElementSocket`` and interval sets as text. A refused delta
  (the kernel's sets are not what ``previous`` says) becomes a full replace;
- rules (backends/nft_swap.py): the rules changed but the sets are the same ones (elements
  may differ): the changed chains flushed and written again, element deltas, sets kept,
  one transaction (by default one netlink batch, the text its fallback); a table of large
  sets is not re-sent for a port change;
- by default in-process through libnftables, one context (and one element socket, and
  one table socket) kept per namespace, made inside it; else (``method="cli"``, or no
  libnftables) ``nft -f -`` run inside the namespace. ``apply_many`` applies one
  namespace after the other (libnftables is not safe to drive from two threads).

Measured here (benchmarks/bench_apply.py: 110 pods, 20 policies, 82 rules and ~600
elements per pod): cold apply ~3.5-6 ms per pod with libnftables, one after the other
(~2.6 ms on two threads, which we do not use), ~17-30 ms with ``nft -f``; a one-peer delta ~0.13-0.2 ms per pod.
As netlink batches (bench_apply_floor.py, load ~2): ~4.6 ms per pod against ~7.9 ms as
text through libnftables, the kernel's own work being ~3.5 ms of it. In CPU time (load
~10, issue 15, a rule per port): ~4 ms a pod as netlink batches, ~2.1 ms of it the
kernel's, against ~8 ms as text.

IPv6 neighbour discovery is accepted in both chains even when a direction is isolated:
NetworkPolicy is about IP traffic, and without neighbour solicitations and advertisements
an isolated pod could not reach even its allowed IPv6 peers (ARP, for IPv4, never passes
through an inet table, so this keeps both families alike).
"""
from __future__ import annotations

import functools
import re
import socket
import threading
from dataclasses import dataclass

from backends import base, nft_swap, nft_tiers
from backends.nft_runners import CliRunner, LibnftRunner, NetlinkRunner, _Refused, _Runner  # noqa: F401
from backends.base import ApplyResult, fit, plan
from enforcer import intervals, ir, netns as nsmod
from enforcer.errors import ApplyError, BackendError, BackendUnavailable
from enforcer.ir import AddrPortSet, AddrSet, AllowRule, PodFirewall, TABLE

FAMILY = "inet"
CHAINS = {"ingress": ("input", "saddr", 'iif "lo"'), "egress": ("output", "daddr", 'oif "lo"')}
COMMENT_MAX = 128  # nft refuses longer comments
ND_TYPES = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert"


# ---------------------------------------------------------------------------------------
# Rendering (pure)


def set_name(name: str, family: int) -> str:
    return f"{name}_{family}"


def _elements(s: AddrSet | AddrPortSet, family: int, items=None) -> list[str]:
    """The set's elements of one family (or ``items`` formatted as its elements), sorted."""
    if items is None:
        items = s.v4 if family == 4 else s.v6
    if isinstance(s, AddrPortSet):
        keyed = [(_addr(a)[0], p.lower(), port, f"{_addr(a)[1]} . {p.lower()} . {port}")
                 for a, p, port in items]
    elif s.interval:
        keyed = [(_addr(c)[0], "", 0, f"{_addr(c)[1]} . {ANY_PROTO}") for c in items]
    else:
        keyed = [(key, "", 0, text) for key, text in (_host(c, s.name) for c in items)]
    return [k[3] for k in sorted(keyed)]


@functools.lru_cache(maxsize=1 << 17)
def _addr(cidr: str) -> tuple[tuple[int, int], str]:
    """(sort key, text) of an address or prefix: numeric order (10.0.0.9 before
    10.0.0.10), host prefixes without /32 or /128. Cached: the same pod addresses appear in
    the sets of many pods, and ``ipaddress`` parsing costs ~20 us."""
    fam, (lo, hi) = intervals.parse_cidr(cidr)
    return (lo, intervals.BITS[fam] - (hi - lo).bit_length()), base.host_or_cidr(cidr)


def _host(cidr: str, set_name: str) -> tuple[tuple[int, int], str]:
    addr, _, plen = cidr.partition("/")
    if plen == "32" and ":" not in addr:
        # The common case, without a cache (a set of 150,000 pods would only thrash it):
        # inet_pton accepts exactly the canonical dotted quads ipaddress accepts.
        try:
            return (int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big"), 32), addr
        except OSError:
            pass  # let host_only say what is wrong with it
    elif plen == "128":
        # IPv6 alike: inet_ntop writes the form ipaddress does (RFC 5952: lower case, the
        # longest run of two or more zero groups as ::), but for an IPv4 tail
        # (::ffff:1.2.3.4), which we write in hex as ipaddress does. ~15x cheaper than
        # ipaddress: a cold render of 110 pod tables spent ~100 ms there.
        try:
            packed = socket.inet_pton(socket.AF_INET6, addr)
        except OSError:
            packed = b""
        text = socket.inet_ntop(socket.AF_INET6, packed) if packed else "."
        if "." not in text:
            return (int.from_bytes(packed, "big"), 128), text
    return _addr(cidr)[0], base.host_only(cidr, set_name)


# ipBlock sets are concatenated with the protocol, every protocol matching (0-255): the
# kernel keeps a concatenation with intervals in its pipapo set (per-field bitmaps), a
# single-field interval set in an rbtree. At 10,000 ipBlocks the new-flow rate was 0.84 of
# the 1-peer rate with the tree, 0.99 with this layout (benchmarks/bench_datapath.py).
ANY_PROTO = "0-255"


def _set_type(s: AddrSet | AddrPortSet, family: int) -> str:
    addr = "ipv4_addr" if family == 4 else "ipv6_addr"
    if isinstance(s, AddrPortSet):
        return f"{addr} . inet_proto . inet_service"
    return f"{addr} . inet_proto" if s.interval else addr


def render_set(s: AddrSet | AddrPortSet, family: int) -> list[str]:
    """A set's definition. Cached by the set's kind, name, elements and their notes
    (compared in full, not by any digest): a selector's set is the same in the firewall of
    every pod whose policies reference it."""
    items = s.v4 if family == 4 else s.v6
    return list(_render_set_cached(type(s), s.name, s.interval, family, tuple(items), s.notes))


@functools.lru_cache(maxsize=8192)
def _render_set_cached(kind: type, name: str, interval: bool, family: int, items: tuple,
                       notes: tuple = ()) -> tuple[str, ...]:
    if kind is AddrPortSet:
        s: AddrSet | AddrPortSet = AddrPortSet(name, **{f"v{family}": items}, notes=notes)
    else:
        s = AddrSet(name, interval=interval, **{f"v{family}": items}, notes=notes)
    return tuple(_render_set(s, family))


def _element_notes(s: AddrSet | AddrPortSet, family: int) -> dict[str, str]:
    """Element text (as _elements writes it) -> its comment: the pod or the ipBlock."""
    items = set(s.v4 if family == 4 else s.v6)
    if isinstance(s, AddrPortSet):
        def text(e):
            return f"{_addr(e[0])[1]} . {e[1].lower()} . {e[2]}"
    elif s.interval:
        def text(e):
            return f"{_addr(e)[1]} . {ANY_PROTO}"
    else:
        def text(e):
            return _host(e, s.name)[1]
    return {text(k): fit(v, COMMENT_MAX) for k, v in s.notes if k in items}


def _render_set(s: AddrSet | AddrPortSet, family: int) -> list[str]:
    lines = [f"\tset {set_name(s.name, family)} {{", f"\t\ttype {_set_type(s, family)}"]
    if s.interval:
        lines.append("\t\tflags interval")
    elems = _elements(s, family)
    if elems:
        # Element comments name the pod or the ipBlock an element comes from. Elements
        # added later by a delta carry none (normalise ignores them on both sides).
        words = _element_notes(s, family) if s.notes else {}
        if words:  # one element a line, as nft lists long sets
            elems = [f'{e} comment "{words[e]}"' if e in words else e for e in elems]
            lines.append("\t\telements = { " + ",\n\t\t\t     ".join(elems) + " }")
        else:
            lines.append(f"\t\telements = {{ {', '.join(elems)} }}")
    lines.append("\t}")
    return lines


def _ports_expr(proto: str | None, ports: tuple[int, int] | None) -> str:
    if proto is None:
        return ""
    if ports is None:
        return f"meta l4proto {proto.lower()} "
    a, b = ports
    return f"{proto.lower()} dport {a if a == b else f'{a}-{b}'} "


def port_matches(ports) -> list[str]:
    """The port match of each rule a policy rule's ports become: one per protocol and per
    port (range), never an anonymous set (``tcp dport { 80, 443 }``). Why: the kernel names
    each anonymous set by scanning every set of its table for a free ``__set%d``, and
    builds it as a set object of its own; for the apply benchmark's pod tables (20 of them
    a table) that was ~17% of the kernel's time of a cold apply
    (benchmarks/bench_apply_floor.py). A packet walks one more rule per extra port, a few
    nanoseconds; host mode writes its port lists the same way (backends/nft_host.py)."""
    return [_ports_expr(proto, r) for proto, ranges in base.port_groups(ports) for r in (ranges or [None])]


def _quote(comment: str) -> str:
    return f'comment "{fit(comment, COMMENT_MAX)}"'


def render_allow(rule: AllowRule, direction: str, interval: bool = False, verdict: str = "accept") -> list[str]:
    """One accept per family (when the rule matches addresses), protocol and port (range);
    ``interval``: the rule's peer set is an ipBlock set (address . protocol); ``verdict``:
    what a match does ("return" in host mode)."""
    return list(_render_allow(rule, direction, interval, verdict))


@functools.lru_cache(maxsize=8192)
def _render_allow(rule: AllowRule, direction: str, interval: bool = False, verdict: str = "accept") -> tuple[str, ...]:
    """Cached: one policy rule renders the same for every pod the policy selects."""
    return tuple(_render_allow_lines(rule, direction, interval, verdict))


def _render_allow_lines(rule: AllowRule, direction: str, interval: bool, verdict: str) -> list[str]:
    addr = CHAINS[direction][1]
    tail = f"counter {verdict} {_quote(base.rule_comment(rule))}"
    if rule.addr_ports is not None:
        return [f"{ip} {addr} . meta l4proto . th dport @{set_name(rule.addr_ports, fam)} {tail}"
                for fam, ip in ((4, "ip"), (6, "ip6"))]
    ports = port_matches(rule.ports)
    if rule.peers is None:
        return [f"{p}{tail}" for p in ports]
    key = f"{addr} . meta l4proto" if interval else addr
    return [f"{ip} {key} @{set_name(rule.peers, fam)} {p}{tail}"
            for fam, ip in ((4, "ip"), (6, "ip6")) for p in ports]


def render_chain(fw: PodFirewall, direction: str, allowed: str = "accept") -> list[str]:
    """The hook chain of ``direction``: the IR's chain (ir.chain), each rule's match in
    nft words; one allow rule may become several (per family and protocol). ``allowed``:
    the verdict of the ACCEPT rules that are not fixed (allows, the open accept): host
    mode returns to the node's chain (backends/nft_host.py)."""
    chain_ = CHAINS[direction][0]
    rules = [line for _, lines in chain_rules(fw, direction, allowed) for line in lines]
    return ([f"\tchain {chain_} {{",
             f"\t\ttype filter hook {chain_} priority filter; policy accept;"]
            + [f"\t\t{r}" for r in rules] + ["\t}"])


def chain_rules(fw: PodFirewall, direction: str, allowed: str = "accept",
                tiers: dict[str, str] | None = None) -> list[tuple[ir.ChainRule, list[str]]]:
    """Each rule of ir.chain with its lines (render_chain's, without indent). ``tiers``:
    tier -> how to reach its chain ("goto <chain>"), for a placement with its own tier
    chains (host mode); by default pod mode's jump to nft_tiers' chains."""
    _, addr, lo = CHAINS[direction]
    return [(r, [f"counter {tiers[r.tier]} {_quote(r.comment)}"] if tiers and r.kind == "tier"  # type: ignore[index]
             else _chain_rule(fw, direction, r, addr, lo, allowed)) for r in ir.chain(fw, direction)]


def _chain_rule(fw: PodFirewall, direction: str, r: ir.ChainRule, addr: str, lo: str, allowed: str) -> list[str]:
    verdict = allowed if r.verdict == ir.ACCEPT and not r.fixed else r.verdict
    if r.kind == "allow":
        a = r.allow
        return render_allow(a, direction, a.peers is not None and fw.set(a.peers).interval, verdict)  # type: ignore[union-attr]
    if r.kind == "log":
        return [f"limit rate {base.LOG_RATE_PER_SECOND}/second log prefix \"{base.nflog_prefix(direction, fw.pod)}\" "
                f"group {base.LOG_GROUP} {_quote(r.comment)}"]
    return list(_same_in_every_pod(r, direction, addr, lo, verdict))


@functools.lru_cache(maxsize=4096)
def _same_in_every_pod(r: ir.ChainRule, direction: str, addr: str, lo: str, verdict: str) -> tuple[str, ...]:
    """The lines of a rule that names no pod (fixed rules, tier jumps, the final drop or
    accept): cached, they are the same in most pods' chains."""
    if r.kind == "tier":
        return (nft_tiers.jump(r, direction),)
    tail = f"counter {verdict} {_quote(r.comment)}"
    if r.kind == "node":
        kw = "ip" if base.family_of(r.node) == 4 else "ip6"  # type: ignore[arg-type]
        return (f"{kw} {addr} {base.host_or_cidr(r.node)} {tail}",)  # type: ignore[arg-type]
    return (FIXED_MATCH.get(r.kind, "").format(lo=lo) + tail,)


# The match of each fixed rule (ir.FIXED but "node"; "drop" and "open" match everything).
FIXED_MATCH = {"established": "ct state established,related ", "invalid": "ct state invalid ",
               "loopback": "{lo} ", "ipv6 neighbour discovery": f"icmpv6 type {{{{ {ND_TYPES} }}}} "}


def table_blocks(fw: PodFirewall) -> list[list[str]]:
    """The table's sets and chains, each a block of lines as ``render`` writes them (the
    netlink encoder, backends/nft_netlink.py, reads the same blocks)."""
    blocks: list[list[str]] = []
    for s in sorted(fw.sets, key=lambda s: s.name):
        for fam in (4, 6):
            blocks.append(render_set(s, fam))
    return blocks + chain_blocks(fw)


def chain_blocks(fw: PodFirewall) -> list[list[str]]:
    """The table's chains: the tier chains, then the hook chains that jump to them."""
    return nft_tiers.chains(fw) + [render_chain(fw, d) for d in base.DIRECTIONS]


def table_comment(fw: PodFirewall) -> str:
    return fit("pod " + fw.pod, COMMENT_MAX)


def render(fw: PodFirewall) -> str:
    """The table definition for one pod, as ``nft list table inet netpol`` prints it."""
    return table_text(f"{FAMILY} {TABLE}", table_comment(fw), table_blocks(fw))


def table_text(name: str, comment: str, blocks: list[list[str]]) -> str:
    """``table <name> { comment; blocks separated by blank lines }``, as nft lists a table."""
    lines = [f"table {name} {{", f'\tcomment "{comment}"']
    for i, b in enumerate(blocks):
        if i:
            lines.append("")
        lines.extend(b)
    lines.append("}")
    return "\n".join(lines) + "\n"


def full_transaction(fw: PodFirewall) -> str:
    """Swap the pod's table for a new one in one transaction (atomic, first apply too)."""
    return f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n" + render(fw)


@dataclass(frozen=True)
class Delta:
    """Element changes of one apply: ``[(verb, set name, [element text])]``, deletes first
    (so an interval re-collapsed into a wider one, 10.0.0.0/25 -> 10.0.0.0/24, never
    overlaps the element it replaces), sets in name order."""

    changes: tuple[tuple[str, str, tuple[str, ...]], ...]
    added: int
    removed: int
    interval: bool  # an interval set changes (its elements are interval ends: libnftables)

    def commands(self) -> str:
        return "".join(f"{verb} element {FAMILY} {TABLE} {name} {{ {', '.join(elems)} }}\n"
                       for verb, name, elems in self.changes)


def delta(previous: PodFirewall, fw: PodFirewall) -> Delta:
    """The element changes from previous's sets to fw's (same structure assumed). Sets
    equal to their previous version are skipped without looking at their elements."""
    deletes: list[tuple[str, str, tuple[str, ...]]] = []
    adds: list[tuple[str, str, tuple[str, ...]]] = []
    n_add = n_del = 0
    interval = False
    old_sets = {s.name: s for s in previous.sets}
    for s in sorted(fw.sets, key=lambda s: s.name):
        old = old_sets[s.name]
        if old is s or old == s:
            continue
        for fam in (4, 6):
            was, now = (old.v4, s.v4) if fam == 4 else (old.v6, s.v6)
            if was == now:
                continue
            was_set, now_set = set(was), set(now)
            gone, new = was_set - now_set, now_set - was_set
            if gone:
                deletes.append(("delete", set_name(s.name, fam), tuple(_elements(s, fam, gone))))
            if new:
                adds.append(("add", set_name(s.name, fam), tuple(_elements(s, fam, new))))
            n_add += len(new)
            n_del += len(gone)
            interval = interval or (s.interval and bool(gone or new))
    return Delta(tuple(deletes + adds), n_add, n_del, interval)


def delta_commands(previous: PodFirewall, fw: PodFirewall) -> tuple[str, int, int]:
    """``delete element`` then ``add element`` commands turning previous's sets into fw's."""
    d = delta(previous, fw)
    return d.commands(), d.added, d.removed


# ---------------------------------------------------------------------------------------
# Reading back (pure)

_HANDLE = re.compile(r"\s*# handle \d+")
_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
_ELEMENTS = re.compile(r"elements = \{(.*?)\}", re.S)
_ANON = re.compile(r"\{ ([^{}]*) \}")
_ELEMENT_COMMENT = re.compile(r'\s+comment\s+"[^"]*"')  # words, not state: never compared


def normalise(listing: str) -> list[str]:
    """A listing (or our rendering) reduced to what must match: no handles, no counter
    values, set elements and anonymous sets sorted, one statement per line."""
    text = base.hex_ipv6(_HANDLE.sub("", listing))
    text = _COUNTER.sub("counter", text)
    text = _ELEMENTS.sub(lambda m: "elements = { " + ", ".join(
        sorted(e.strip() for e in _ELEMENT_COMMENT.sub("", m.group(1)).split(",") if e.strip())) + " }", text)
    out = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        line = _ANON.sub(lambda m: "{ " + ", ".join(sorted(e.strip() for e in m.group(1).split(","))) + " }", line)
        out.append(line)
    return out


_COUNTED = re.compile(r'counter packets (\d+) bytes (\d+).*?comment "([^"]*)"')


def parse_counters(listing: str) -> list[tuple[str, int, int]]:
    totals: dict[str, list[int]] = {}
    for line in listing.splitlines():
        m = _COUNTED.search(line)
        if m:
            t = totals.setdefault(m.group(3), [0, 0])
            t[0] += int(m.group(1))
            t[1] += int(m.group(2))
    return [(c, p, b) for c, (p, b) in totals.items()]


# ---------------------------------------------------------------------------------------


class NftablesBackend:
    """``method``: "auto" (the default: "netlink" if libnftables loads, else the nft
    command), "netlink" (libnftables, whole tables as one raw netlink batch:
    NetlinkRunner), "libnft" (libnftables for everything, whole tables as text), "cli".
    ``.method`` says how commands run ("libnft" for "netlink" too: libnftables still does
    all but whole tables), ``.tables`` how a whole table goes in ("netlink" or "text")."""

    name = "nftables"
    apply_in_threads = False  # libnftables keeps process-wide state (apply_many below)
    nf_generation = True

    def __init__(self, method: str = "auto") -> None:
        if method not in ("auto", "libnft", "cli", "netlink"):
            raise BackendError(f"unknown nftables method {method!r} (auto, libnft, netlink, cli)")
        self._method = method
        self._runner: _Runner | None = None
        self._runner_lock = threading.Lock()  # the daemon applies from a thread pool

    # -- capability

    def check(self) -> None:
        self._get_runner()

    def _get_runner(self) -> _Runner:
        if self._runner is not None:
            return self._runner
        with self._runner_lock:
            if self._runner is None:
                self._runner = self._make_runner()
            return self._runner

    def _make_runner(self) -> _Runner:
        import shutil

        if self._method in ("auto", "libnft", "netlink"):
            try:  # the default: whole tables as netlink batches (test_nft_netlink proves them)
                return LibnftRunner() if self._method == "libnft" else NetlinkRunner()
            except BackendUnavailable:
                if self._method != "auto":
                    raise
        if shutil.which("nft") is None:
            raise BackendUnavailable(
                "nftables backend: neither libnftables.so.1 nor the nft command is available; "
                "install them with: apt-get install nftables")
        return CliRunner()

    @property
    def method(self) -> str:
        return self._get_runner().method

    @property
    def tables(self) -> str:
        return self._get_runner().tables

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()

    # -- pure

    def render(self, fw: PodFirewall) -> str:
        return render(fw)

    # -- kernel

    def _run(self, netns: str, commands: str) -> str:
        return self._get_runner().run(netns, commands)

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        return self._apply(netns, fw, previous, plan(previous, fw))

    def _apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None, kind: str) -> ApplyResult:
        if kind == "none":
            return ApplyResult("none")
        note = ""
        if kind == "delta":
            try:
                d = delta(previous, fw)  # type: ignore[arg-type]
            except (BackendError, ValueError) as e:
                raise self._refused(fw, netns, e) from e
            if not d.changes:
                return ApplyResult("none")  # (no transaction: the daemon counts ours by the generation)
            try:
                self._get_runner().change_elements(netns, d)
                return ApplyResult("delta", d.added, d.removed)
            except _Refused as e:
                # The kernel's sets are not what ``previous`` says (drift, or a lost
                # update): replace the whole table instead, still atomically.
                note = f"delta refused, replaced the table: {first_line(str(e))}"
        elif previous is not None and (swap := nft_swap.rules_transaction(previous, fw)) is not None:
            if not swap.blocks and not swap.delta.changes:  # nothing the kernel holds differs
                return ApplyResult("none")
            try:  # rules changed, sets kept: their elements are not sent again
                how = self._get_runner().swap(netns, swap)
                return ApplyResult("full", swap.added, swap.removed, how)
            except _Refused as e:
                note = f"rules swap refused, replaced the table: {first_line(str(e))}"
        try:
            how = self._get_runner().full(netns, fw)
        except (_Refused, BackendError, ValueError) as e:
            raise self._refused(fw, netns, e) from e
        n = sum(len(s.v4) + len(s.v6) for s in fw.sets)
        return ApplyResult("full", n, 0, "; ".join(x for x in (note, how) if x))

    @staticmethod
    def _refused(fw: PodFirewall, netns: str, e: Exception) -> ApplyError:
        # (a missing namespace is not caught here: its NetnsError goes up as it is)
        return ApplyError(f"nftables: applying the firewall of {fw.pod} in {netns} failed; "
                          f"the previous rules stay in force:\n{e}")

    def learn(self, netns: str, fw: PodFirewall) -> None:
        """``netns`` holds ``fw`` (just applied or adopted): read what its first rule change
        needs to go as edits (the netlink method; nothing otherwise). Never raises: a
        namespace that cannot be read is read at its first change instead."""
        runner = self._get_runner()
        learn = getattr(runner, "learn", None)
        if learn is not None:
            try:
                learn(netns, fw)
            except Exception:  # (NetnsError: gone; the next apply says so)
                pass

    def apply_many(self, jobs) -> list:
        """One namespace after the other. Threads were faster (~2.6 ms instead of ~3.5 ms
        per pod) but libnftables keeps process-wide state (its interface cache among it):
        two threads applying in different namespaces produced bogus "Interface does not
        exist" errors in the daemon's tests. Correct first."""
        planned = [(ns, fw, prev, plan(prev, fw)) for ns, fw, prev in jobs]
        return base.run_jobs(self._apply, planned, workers=1)

    def remove(self, netns: str) -> None:
        if not nsmod.exists(netns):
            self._get_runner().forget(netns)
            return
        try:
            self._run(netns, f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
        except _Refused as e:
            raise BackendError(f"nftables: cannot remove table {TABLE} in {netns}: {e}") from e
        finally:
            self._get_runner().forget(netns)

    def read(self, netns: str) -> str | None:
        try:
            return self._run(netns, f"list table {FAMILY} {TABLE}\n")
        except _Refused as e:
            if "No such file or directory" in str(e):
                return None
            raise BackendError(f"nftables: cannot list table {TABLE} in {netns}: {e}") from e

    def verify(self, netns: str, fw: PodFirewall) -> bool:
        listing = self.read(netns)
        return listing is not None and normalise(listing) == normalise(render(fw))

    def counters(self, netns: str) -> list[tuple[str, int, int]]:
        listing = self.read(netns)
        return [] if listing is None else parse_counters(listing)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
