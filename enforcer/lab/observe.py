"""What the kernel does in a running lab: rule counters and dropped packets, attributed.

    stats(lab)          every rule's packet and byte counters in every pod, each with its
                        comment (the policy and rule it comes from), read through the
                        lab's backend (``backend.counters`` inside each pod's namespace)
    DropReader(lab)     one NFLOG socket per pod namespace (enforcer.nflog); ``stream``
                        yields each dropped packet as a ``Drop``: the pod, the direction,
                        the addresses and ports mapped back to endpoint ids, and the
                        policies that isolate that direction, or the ClusterNetworkPolicy
                        rule (Admin or Baseline Deny) that dropped it

Both backends put a rate-limited log rule (nflog group ``LOG_GROUP``, prefix
``netpol drop <direction> <pod>: ``) just before the final drop of every isolated
direction, and before every ClusterNetworkPolicy Deny (prefix ``netpol drop <direction>
<pod>: <tier> <policy>[<rule>]``), so what the reader sees is exactly what a drop rule is
about to drop, at most ``LOG_RATE_PER_SECOND`` packets per second per rule (the counters
count them all).

The reader does not hold the lab's lock: a learner probes or applies while it streams. It
re-reads the lab's state when state.json changes, so a ``lab apply`` that adds pods or
changes which policies isolate a pod shows up in the next drop line.
"""
from __future__ import annotations

import ipaddress
import os
import selectors
import time
from dataclasses import dataclass
from typing import Iterator

from backends import base
from backends.base import LOG_GROUP, LOG_RATE_PER_SECOND
from enforcer import ir, netns, nflog
from enforcer.errors import LabError, NetnsError
from enforcer.ir import DIRECTIONS, PodFirewall, TierRule
from enforcer.lab import state
from enforcer.lab.state import LabState

NODE = "node"  # the id shown for the lab node's addresses


# ------------------------------------------------------------------- counters


@dataclass(frozen=True)
class Counter:
    """One rule (or the IPv4 and IPv6 halves of one rule, summed) of one pod."""

    pod: str
    direction: str  # "ingress" | "egress" | "" (a comment we do not know)
    action: str  # "accept" | "drop" | "log"; tiers: "pass", and "jump" (into a tier)
    rule: str  # the rule's comment: "prod/db-policy ingress[0]", "ingress isolated by ..."
    packets: int
    bytes: int
    policy: str | None = None  # the policy of an allow rule
    rule_index: int | None = None

    def to_json(self) -> dict:
        return {"pod": self.pod, "direction": self.direction, "action": self.action,
                "rule": self.rule, "policy": self.policy, "rule_index": self.rule_index,
                "packets": self.packets, "bytes": self.bytes}


# ``(direction, action, policy, rule_index)`` of a comment that is not one of the pod's
# rules in the IR (``chain_words`` reads those): a placement's own rule, an older one's.
classify = ir.read_comment


def stats(name: str, pod: str | None = None) -> tuple[str, list[Counter]]:
    """The backend's name and the counters of every rule of every pod (or of ``pod``)."""
    from enforcer.lab import control

    with state.locked(name):
        st = state.load(name)
    pods = sorted(k for k, e in st.endpoints.items() if e.kind == "pod")
    if pod is not None:
        if pod not in pods:
            raise LabError(f"lab {name} has no pod {pod} (pods: {', '.join(pods) or 'none'})")
        pods = [pod]
    from enforcer.lab import hostmode

    backend = hostmode.wrap(st, control.get_backend(st.backend), hostmode.load(name))
    rows: list[Counter] = []
    for key in pods:
        counted = backend.counters(st.endpoints[key].netns)
        fw = st.firewalls.get(key)
        known = {}
        if fw is not None:  # iptables lists IPv6-only rules after the IPv4 chain
            rank = {c: i for i, c in enumerate(rule_order(fw))}
            counted = sorted(counted, key=lambda c: rank.get(c[0], len(rank)))
            known = chain_words(fw)
        for comment, packets, nbytes in counted:
            direction, action, policy, index = known.get(comment) or classify(comment)
            rows.append(Counter(key, direction, action, comment, packets, nbytes, policy, index))
    return st.backend, rows


def rule_order(fw: PodFirewall) -> list[str]:
    """The comments of a pod's rules in the order both backends install them: each
    direction's chain as the IR lists it, a tier jump followed by the rules of the tier's
    chain (ir.comments)."""
    return list(ir.comments(fw))


def chain_words(fw: PodFirewall) -> dict[str, tuple[str, str, str | None, int | None]]:
    """``classify``'s answer for the comments of ``fw``'s rules, read from the IR
    (ir.direction_rules: the verdict and provenance themselves, not the words)."""
    out: dict[str, tuple[str, str, str | None, int | None]] = {}
    for d in DIRECTIONS:
        for r in ir.direction_rules(fw, d):
            if r.rule is not None:  # a tier's rule, or the log before its Deny
                who: tuple[str | None, int | None] = (r.rule.policy, r.rule.rule_index)
            else:
                p = r.allow.provenance if r.allow is not None else None
                who = (p and p.policy, p and p.rule_index)
            out.setdefault(r.comment, (d, r.verdict) + who)
    return out


def stats_table(rows: list[Counter]) -> str:
    """A fixed-width table, one rule a line, in rule order within each pod."""
    if not rows:
        return "no counters\n"
    head = ("POD", "DIRECTION", "ACTION", "PACKETS", "BYTES", "RULE")
    cells = [head] + [(r.pod, r.direction or "-", r.action, str(r.packets), str(r.bytes), r.rule) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]
    lines = []
    for c in cells:
        left = [c[0].ljust(widths[0]), c[1].ljust(widths[1]), c[2].ljust(widths[2]),
                c[3].rjust(widths[3]), c[4].rjust(widths[4])]
        lines.append("  ".join(left + [c[5]]))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- drops


@dataclass(frozen=True)
class Drop:
    """One dropped packet, attributed."""

    time: float
    pod: str
    direction: str
    flow: nflog.Flow
    src_id: str | None  # endpoint ids of the addresses (None: not a lab address)
    dst_id: str | None
    isolated_by: tuple[str, ...]
    tier_rule: TierRule | None = None  # the ClusterNetworkPolicy Deny that dropped it, if one did

    @property
    def peer_id(self) -> str | None:
        return self.src_id if self.direction == "ingress" else self.dst_id

    def to_json(self) -> dict:
        f = self.flow
        out = {"time": round(self.time, 6), "pod": self.pod, "direction": self.direction,
               "from": self.src_id, "to": self.dst_id, "src": f.src, "dst": f.dst,
               "protocol": f.protocol, "sport": f.sport or None, "dport": f.dport or None,
               "isolated_by": list(self.isolated_by)}
        if self.tier_rule is not None:
            r = self.tier_rule
            out["denied_by"] = {"tier": r.tier, "policy": r.policy, "priority": r.priority,
                                "direction": r.direction, "rule_index": r.rule_index,
                                "rule_name": r.name, "action": r.action}
        if f.icmp_type is not None:
            out["icmp_type"] = f.icmp_type
        return out


def _addr(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}" if port else host


def format_drop(d: Drop) -> str:
    """``12:00:01 prod/db ingress DROP 10.244.0.7:40312 -> 10.244.0.6:3306/TCP (prod/web)
    isolated by prod/db-policy``"""
    f = d.flow
    clock = time.strftime("%H:%M:%S", time.localtime(d.time))
    service = f"{f.dport}/{f.protocol}" if f.dport else f.protocol
    if f.icmp_type is not None:
        service += f" type {f.icmp_type}"
    dst = f"{'[' + f.dst + ']' if ':' in f.dst else f.dst}:{service}"
    peer = d.peer_id or "outside the lab"
    if d.tier_rule is not None:
        r = d.tier_rule
        named = f" ({r.name!r})" if r.name else ""
        why = (f"denied by {r.tier} ClusterNetworkPolicy {r.policy} (priority {r.priority}) "
               f"{r.direction}[{r.rule_index}]{named}")
    else:
        why = "isolated by " + (",".join(d.isolated_by) or "?")
    return f"{clock} {d.pod} {d.direction} DROP {_addr(f.src, f.sport)} -> {dst} ({peer}) {why}"


@dataclass
class LabView:
    """What a drop needs from the lab's state: addresses -> ids, pods' isolating policies."""

    netns_of: dict[str, str]  # pod -> namespace name
    ids: dict[str, str]  # address -> endpoint id
    firewalls: dict[str, PodFirewall]

    @classmethod
    def of(cls, st: LabState) -> "LabView":
        ids = {_canonical(ip): NODE for ip in st.gateways}
        for key, ep in st.endpoints.items():
            ids.update({_canonical(ip): key for ip in ep.ips})
        from enforcer.lab import endpoints

        return cls({k: e.netns for k, e in st.endpoints.items() if e.kind == "pod"}, ids,
                   endpoints.firewalls_in_force(st))

    def drop(self, pod: str, packet: nflog.LogPacket, now: float) -> Drop | None:
        """The attributed drop of a packet logged in ``pod``'s namespace, or None when the
        packet is not one of ours (another log rule, or not IP)."""
        parsed = nflog.parse_prefix(packet.prefix)
        flow = nflog.parse_ip(packet.payload)
        if parsed is None or flow is None:
            return None
        direction = parsed[0]
        fw = self.firewalls.get(pod)
        rule = logged_by(fw, direction, packet.prefix) if fw is not None else None
        if rule is None and fw is not None:  # a prefix we did not build: the direction's drop
            rule = next((r for r in ir.chain(fw, direction) if r.kind == "drop"), None)
        tier = rule.rule if rule is not None else None
        # parse_ip prints addresses in ipaddress' canonical form, as the state keeps them
        return Drop(now, pod, direction, flow, self.ids.get(flow.src), self.ids.get(flow.dst),
                    rule.isolated_by if rule is not None else (), tier)


def logged_by(fw: PodFirewall, direction: str, prefix: str) -> ir.ChainRule | None:
    """The log rule of ``fw``'s ``direction`` (ir.direction_rules: the NetworkPolicy drop's
    "log", a tier Deny's "tier log") whose nflog prefix is ``prefix``. Each prefix is
    built again and compared, so a prefix cut to the kernel's length still finds its rule."""
    want = prefix.strip()
    for r in ir.direction_rules(fw, direction):
        if r.kind == "log" and base.nflog_prefix(direction, fw.pod).strip() == want:
            return r
        if r.kind == "tier log" and base.tier_nflog_prefix(r.rule, fw.pod).strip() == want:
            return r
    return None


def _identity(ns: str) -> tuple[str, int] | None:
    """A namespace's name and inode (None when it is gone): a name can be reused."""
    ino = netns.inode(ns)
    return None if ino is None else (ns, ino)


def _canonical(ip: str) -> str:
    return str(ipaddress.ip_address(ip.split("/", 1)[0]))


NODE_SOCKET = "@node"  # host mode: a socket per node namespace, "@node <netns>"


class DropReader:
    """NFLOG sockets in every pod namespace of lab ``name``. Use as a context manager."""

    def __init__(self, name: str, group: int = LOG_GROUP):
        self.name = name
        self.group = group
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[str, nflog.NflogSocket] = {}  # pod -> socket
        self._where: dict[str, tuple[str, int]] = {}  # pod -> its socket's namespace
        self._mtime = 0.0
        self.view = LabView({}, {}, {})
        try:
            self.refresh(force=True)
        except BaseException:
            self.close()
            raise

    def _state_file(self) -> str:
        return os.path.join(state.lab_dir(self.name), "state.json")

    def refresh(self, force: bool = False) -> None:
        """Re-read the lab when its state changed: new pods get a socket, removed pods'
        sockets are closed (a socket keeps its namespace alive)."""
        try:
            mtime = os.stat(self._state_file()).st_mtime
        except FileNotFoundError:
            if force:
                state.load(self.name)  # raises the lab's own "no lab named ..." error
            raise LabError(f"lab {self.name} was removed while its drops were watched") from None
        if not force and mtime == self._mtime:
            return
        st = state.load(self.name)  # state.json is replaced atomically: no lock needed
        self._mtime = mtime
        self.view = LabView.of(st)
        # A pod that went, or came back in a new namespace (same name, new inode), loses
        # its socket; every pod whose namespace exists and has no socket gets one.
        where = {pod: _identity(ns) for pod, ns in self.view.netns_of.items()}
        from enforcer.lab import hostmode

        if hostmode.load(self.name) == "host":  # every pod's drop is logged in the node
            nodes = [n["netns"] for n in st.nodes] or [st.node_netns]  # several nodes: one each
            where = {f"{NODE_SOCKET} {n}": _identity(n) for n in nodes}
        for pod in [p for p in self.sockets if where.get(p) != self._where.get(p)]:
            self._close(pod)
        for pod, ident in sorted(where.items()):
            if pod in self.sockets or ident is None:
                continue
            try:
                with netns.entered(ident[0]):
                    sock = nflog.NflogSocket(self.group)
            except NetnsError as e:
                raise LabError(f"lab {self.name}, pod {pod}: {e}") from None
            self.sockets[pod] = sock
            self._where[pod] = ident
            self.selector.register(sock, selectors.EVENT_READ, pod)

    def _close(self, pod: str) -> None:
        self._where.pop(pod, None)
        sock = self.sockets.pop(pod)
        self.selector.unregister(sock)
        sock.close()

    def stream(self, count: int | None = None, timeout: float | None = None,
               poll: float = 0.25) -> Iterator[Drop]:
        """Drops as they happen, until ``count`` drops or ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while count is None or seen < count:
            wait = poll if deadline is None else min(poll, deadline - time.monotonic())
            if wait <= 0:
                return
            for key, _ in self.selector.select(wait):
                pod = key.data
                now = time.time()
                for packet in key.fileobj.read():  # type: ignore[union-attr]
                    if key.data.startswith(NODE_SOCKET):  # host mode: the prefix names the pod
                        parsed = nflog.parse_prefix(packet.prefix)
                        pod = parsed[1] if parsed else pod
                    d = self.view.drop(pod, packet, now)
                    if d is None:
                        continue
                    yield d
                    seen += 1
                    if count is not None and seen >= count:
                        return
            self.refresh()

    def close(self) -> None:
        for pod in list(self.sockets):
            self._close(pod)
        self.selector.close()

    def __enter__(self) -> "DropReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


RATE_NOTE = (f"at most {LOG_RATE_PER_SECOND} drops per second are logged per pod and direction; "
             "`netpol lab stats` counts them all")
