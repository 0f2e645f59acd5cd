"""The seam between the rule model and the kernel.

A backend turns a ``PodFirewall`` (enforcer.ir) into a ruleset and installs it inside one
network namespace. It imports only the IR and the errors (and the kernel plumbing:
``enforcer.netns`` to enter namespaces, ``enforcer.nfnetlink`` to frame netfilter netlink
messages): never the loader or compiler.

This module also holds the small pure helpers both kernel backends share, so that the
nftables and iptables renderings say the same thing in the same order: port grouping,
the nflog prefix, a tier chain's log and rule pairs (the comment texts are the IR's,
enforcer.ir.chain; re-exported here).

``FakeBackend`` keeps "installed" rulesets in a dict: unit tests and ``--dry-run`` use it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Protocol, Sequence, runtime_checkable

from enforcer import intervals
from enforcer.errors import ApplyError, BackendError, NetpolError
from enforcer.ir import (DIRECTIONS, PROTOCOLS, ChainRule, PodFirewall, PortMatch, comments, same_structure,
                         set_deltas, tier_chain)
# The comment vocabulary is the IR's (ir.chain lists every rule with its comment); these
# names stay importable from here for the renderers that say base.fixed_comment(...).
from enforcer.ir import (fixed_comment, isolation_comment, log_comment, open_comment,  # noqa: F401
                         rule_comment, tier_log_comment)

# What the final drop of an isolated direction logs to: nflog group, at most this many
# packets per second (a flood of dropped packets must not become a flood of log lines).
LOG_GROUP = 100
LOG_RATE_PER_SECOND = 10
LOG_PREFIX_MAX = 63  # iptables' NFLOG allows 64 bytes with the NUL; nft allows more


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did: ``"none"`` (already in place), ``"delta"`` (set elements only) or
    ``"full"`` (table replaced in one transaction). ``note`` says why a delta became a
    full replace (the kernel refused the delta, e.g. after drift)."""

    kind: str
    elements_added: int = 0
    elements_removed: int = 0
    note: str = ""


def plan(previous: PodFirewall | None, desired: PodFirewall) -> str:
    """Which kind of apply turns ``previous`` into ``desired`` (shared by every backend)."""
    if previous is None or not same_structure(previous, desired):
        return "full"
    # Same structure: equal exactly when the sets are (their rules were compared once,
    # not twice: this runs for every changed pod on every change).
    return "none" if previous.sets == desired.sets else "delta"


@runtime_checkable
class Backend(Protocol):
    name: str
    # What a backend can do, asked instead of its name (the daemon):
    apply_in_threads: bool  # applies to different namespaces may run on several threads at once
    nf_generation: bool  # rules live in nf_tables, whose generation id moves on every change in
    #                      the namespace (by anyone): reading it tells the daemon whether to verify
    # Optional, looked up with getattr: ``learn(netns, fw)``, told that ``netns`` now holds
    # ``fw`` (applied or adopted), reads what the next rule change needs (nftables: the
    # rules' handles, backends/nft_edit.py); never raises.

    def check(self) -> None:
        """Probe tools and kernel features; raise BackendUnavailable with what is missing."""

    def render(self, fw: PodFirewall) -> str:
        """The exact ruleset text that ``apply`` would install for this pod."""

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        """Install ``fw`` in ``netns`` atomically. With ``previous`` (what is installed now),
        only set elements change when the structure is the same. On failure raise
        ApplyError and leave the previous rules in force."""

    def remove(self, netns: str) -> None:
        """Remove everything this backend installed in ``netns`` (idempotent)."""

    def read(self, netns: str) -> str | None:
        """What of ours is installed in ``netns`` (ruleset text), or None if nothing."""

    def verify(self, netns: str, fw: PodFirewall) -> bool:
        """True iff exactly what ``fw`` renders is installed in ``netns`` (counters, handles
        and element order ignored). The daemon's drift repair asks this."""

    def counters(self, netns: str) -> list[tuple[str, int, int]]:
        """(comment, packets, bytes) per rule comment, in rule order; rules that share a
        comment (the IPv4 and IPv6 halves of one policy rule) are summed."""

    def apply_many(self, jobs: Sequence[Job]) -> list[ApplyResult | NetpolError]:
        """``apply`` for many namespaces (each at most once), in parallel where the backend
        can; one result per job, in order: an ApplyResult, or the error of that job (one
        pod's failure never stops the others)."""


class Job(NamedTuple):
    """One apply of ``apply_many``: a plain (netns, fw, previous) tuple is one as well."""

    netns: str
    fw: PodFirewall
    previous: PodFirewall | None  # what the namespace holds now, as far as we know (None: nothing known)


def run_jobs(apply: Callable[..., ApplyResult], jobs: Sequence[tuple],
             workers: int = 1) -> list[ApplyResult | NetpolError]:
    """Run ``apply(*job)`` for every job (a Job, or a longer tuple of ``apply``'s
    arguments: a backend may add its plan), on up to ``workers`` threads.

    Threads pay off when apply spends its time outside the interpreter (libnftables calls
    release the GIL; the kernel work of different namespaces runs in parallel)."""

    def one(job: tuple) -> ApplyResult | NetpolError:
        try:
            return apply(*job)
        except NetpolError as e:
            return e

    if workers <= 1 or len(jobs) <= 1:
        return [one(j) for j in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


# ---------------------------------------------------------------------------------------
# Pure helpers shared by the renderers


def fit(text: str, limit: int) -> str:
    """``text`` made safe for a quoted comment and cut to ``limit`` characters.

    A cut text ends in a short hash of the whole, so two long texts that share a prefix
    still read differently (and deterministically)."""
    text = text.replace('"', "'").replace("\\", "/").replace("\n", " ")
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return text[: limit - 8] + "~" + digest


def nflog_prefix(direction: str, pod: str) -> str:
    """The nflog prefix of a direction's drop: names the direction and the pod."""
    return fit(f"netpol drop {direction} {pod}: ", LOG_PREFIX_MAX)


def tier_nflog_prefix(rule, pod: str) -> str:
    """The nflog prefix of a ClusterNetworkPolicy Deny (an ir.TierRule): the NetworkPolicy
    drop's prefix, then the tier, the policy and the rule's index in its direction
    (``netpol drop ingress prod/db: Admin prod-refuses-dev[0]``). Cut like any prefix;
    a reader matches it by building it again (enforcer.lab.observe)."""
    return fit(f"netpol drop {rule.direction} {pod}: {rule.tier} {rule.policy}[{rule.rule_index}]",
               LOG_PREFIX_MAX)


def port_groups(ports: tuple[PortMatch, ...]) -> list[tuple[str | None, list[tuple[int, int]] | None]]:
    """Group a rule's ports per protocol, in a fixed protocol order.

    Returns ``[(protocol, ranges)]``; ``ranges`` None means every port of the protocol,
    otherwise a sorted list of inclusive ``(first, last)`` ranges with overlapping and
    adjacent ranges merged (nft merges them itself in interval sets and refuses overlaps,
    and a merged list renders the same text the kernel lists back). Empty ``ports`` gives
    ``[(None, None)]``: any protocol, any port.
    """
    if not ports:
        return [(None, None)]
    by_proto: dict[str, list[tuple[int, int]] | None] = {}
    for p in ports:
        proto = p.protocol.upper()
        if p.first is None:
            by_proto[proto] = None
            continue
        if proto in by_proto and by_proto[proto] is None:
            continue
        last = p.last if p.last is not None else p.first
        by_proto.setdefault(proto, []).append((p.first, last))  # type: ignore[union-attr]
    order = {name: i for i, name in enumerate(PROTOCOLS)}
    out: list[tuple[str | None, list[tuple[int, int]] | None]] = []
    for proto in sorted(by_proto, key=lambda n: (order.get(n, len(order)), n)):
        ranges = by_proto[proto]
        out.append((proto, None if ranges is None else merge_ranges(ranges)))
    return out


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def host_or_cidr(cidr: str) -> str:
    """``10.0.0.5/32`` -> ``10.0.0.5``; other prefixes in their canonical form. Integer
    arithmetic (enforcer.intervals), not ``ipaddress``: a set of 150,000 pod addresses
    is rendered element by element."""
    fam, (lo, hi) = intervals.parse_cidr(cidr)
    text = intervals.fmt_ip(fam, lo)
    plen = intervals.BITS[fam] - (hi - lo).bit_length()
    return text if plen == intervals.BITS[fam] else f"{text}/{plen}"


def host_only(cidr: str, set_name: str) -> str:
    """An element of a host (non-interval) set: must be one address."""
    fam, (lo, hi) = intervals.parse_cidr(cidr)
    if lo != hi:
        raise BackendError(f"set {set_name}: {cidr} is a network, but the set holds single "
                           "addresses (the compiler must mark sets with ipBlocks as interval)")
    return intervals.fmt_ip(fam, lo)


def family_of(addr: str) -> int:
    return 6 if ":" in addr else 4


def tier_chain_rules(fw: PodFirewall, direction: str, tier: str, log: Callable[[ChainRule], list],
                     rule: Callable[[ChainRule], list]) -> list:
    """A tier's chain (ir.tier_chain) in a backend's words: ``rule(r)`` renders a tier rule
    as one rule per family / protocol / port slice, ``log(r)`` the log rule before a Deny
    with the same matches. A log goes pair by pair before the rule of the same match, so
    that what is logged is exactly what that rule drops next."""
    out: list = []
    logs: list = []
    for r in tier_chain(fw, direction, tier):
        if r.kind == "tier log":
            logs = log(r)
            continue
        lines = rule(r)
        out += [x for pair in zip(logs, lines) for x in pair] if logs else lines
        logs = []
    return out


# ---------------------------------------------------------------------------------------


@dataclass
class FakeBackend:
    """In-memory backend: records what would be installed, for unit tests and --dry-run."""

    name: str = "fake"
    apply_in_threads = True
    nf_generation = False
    installed: dict[str, PodFirewall] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)  # netns names whose apply fails
    # Failure hook by content: apply raises ApplyError when it returns True (tests set it
    # and clear it to make the same backend refuse, then accept).
    refuse: Callable[[str, PodFirewall], bool] | None = None

    def check(self) -> None:
        return None

    def render(self, fw: PodFirewall) -> str:
        return repr(fw)

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        if netns in self.fail_on:
            raise ApplyError(f"{netns}: injected failure")
        if self.refuse is not None and self.refuse(netns, fw):
            raise ApplyError(f"{netns}: refused")
        kind = plan(previous if previous is not None else self.installed.get(netns), fw)
        self.calls.append((kind, netns))
        added = removed = 0
        if kind == "delta":
            for d in set_deltas(self.installed.get(netns) or previous, fw):  # type: ignore[arg-type]
                added += len(d.add)
                removed += len(d.remove)
        self.installed[netns] = fw
        return ApplyResult(kind, added, removed)

    def remove(self, netns: str) -> None:
        self.installed.pop(netns, None)

    def read(self, netns: str) -> str | None:
        fw = self.installed.get(netns)
        return None if fw is None else self.render(fw)

    def verify(self, netns: str, fw: PodFirewall) -> bool:
        return self.installed.get(netns) == fw

    def apply_many(self, jobs: Sequence[Job]) -> list[ApplyResult | NetpolError]:
        return run_jobs(self.apply, jobs)

    def counters(self, netns: str) -> list[tuple[str, int, int]]:
        """Every rule's comment, as a kernel backend lists them (the whole chain of each
        direction and its tiers' chains, ir.comments), with zero counts: nothing flows
        through a fake."""
        fw = self.installed.get(netns)
        return [] if fw is None else [(c, 0, 0) for c in comments(fw)]


# The kernel's tools list an IPv6 address whose first 96 bits are zero (or ::ffff:0:0/96)
# with a dotted tail (``::173.80.0.0``, inet_ntop's choice); we render the hex form Python
# writes (``::ad50:0``). Listings are brought to the hex form before they are compared, or
# such an ipBlock would read as drift forever.
_DOTTED6 = re.compile(r"(?<![\w.:])((?:[0-9a-fA-F]{0,4}:){2,6})(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")


def hex_ipv6(text: str) -> str:
    """``text`` with every dotted-tail IPv6 address written in Python's hex form."""
    if "." not in text or ":" not in text:
        return text
    return _DOTTED6.sub(_hex6, text)


def _hex6(m: "re.Match[str]") -> str:
    try:
        return str(ipaddress.IPv6Address(m.group(0)))
    except ValueError:
        return m.group(0)
