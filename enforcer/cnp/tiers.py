"""The Admin and Baseline tiers of one pod's firewall, and their evaluation. Pure.

``attach`` adds to a compiled ``ir.PodFirewall`` the ClusterNetworkPolicy rules that apply
to its pod, as ``ir.TierRule`` lists per direction, in evaluation order: policies whose
subject selects the pod by (priority, name), then each policy's rules in written order.
Peers become sets like NetworkPolicy peers do (pod addresses as host prefixes; networks as
CIDRs, with pod addresses inside them matched too, as the API says); named ports resolve
on the destination pod (the subject pod for ingress, the peer pod for egress).

``decide`` is the evaluation order of the API (docs/concepts.md, "How do I deny?"):

    Admin (first matching rule: Accept or Deny decide; Pass skips the rest of the tier)
    -> NetworkPolicy (if it isolates the pod, it decides)
    -> Baseline (first matching rule: Accept or Deny decide; Pass = no decision)
    -> allowed.

Equal priorities within a tier are left to the implementation by the API; we order them by
name, so the outcome is at least stable and predictable.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from enforcer import ir
from enforcer.cnp.model import ACCEPT, ADMIN, DENY, PASS, ClusterNetworkPolicy, CNPRule, Selection
from enforcer.model import Namespace, Pod
from enforcer.compiler.selectors import matches


def selects(sel: Selection, pod: Pod, namespace: Namespace) -> bool:
    """A subject or a namespaces/pods peer: never a hostNetwork pod (those are their node)."""
    if pod.host_network or not matches(sel.namespaces, namespace.labels):
        return False
    return sel.pods is None or matches(sel.pods, pod.labels)


def set_name(tier: str, direction: str, policy: str, index: int, suffix: str = "") -> str:
    """Short, stable and distinct from the NetworkPolicy sets ("c" + tier + direction + a
    digest of the policy name + the rule index): a renamed rule order is a new set."""
    h = hashlib.blake2b(policy.encode(), digest_size=3).hexdigest()
    return f"c{tier[0].lower()}{direction[0]}{h}_{index}{suffix}"


def _host(ip: str) -> str:
    a = ipaddress.ip_address(ip)
    return f"{a}/{a.max_prefixlen}"


def _split(items: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    v4 = sorted({i for i in items if ":" not in i}, key=lambda c: ipaddress.ip_network(c))
    v6 = sorted({i for i in items if ":" in i}, key=lambda c: ipaddress.ip_network(c))
    return tuple(v4), tuple(v6)


def _collapse(cidrs: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    v4 = tuple(str(n) for n in ipaddress.collapse_addresses([n for n in nets if n.version == 4]))
    v6 = tuple(str(n) for n in ipaddress.collapse_addresses([n for n in nets if n.version == 6]))
    return v4, v6


def _tier_rules(pod: Pod, pol: ClusterNetworkPolicy, direction: str, index: int, rule: CNPRule,
                peers_of: Callable[[Selection], list[Pod]], sets: list) -> list[ir.TierRule]:
    members: dict[str, Pod] = {}
    networks: list[str] = []
    for peer in rule.peers:
        if peer.selection is not None:
            for p in peers_of(peer.selection):
                members.setdefault(p.key, p)
        networks.extend(peer.networks)
    base = dict(tier=pol.tier, policy=pol.name, priority=pol.priority, direction=direction,
                rule_index=index, action=rule.action, name=rule.name)
    name = set_name(pol.tier, direction, pol.name, index)
    numeric = [ir.PortMatch(p.protocol, p.first, p.last) for p in rule.protocols  # type: ignore[arg-type]
               if p.named is None]
    named = [p.named for p in rule.protocols if p.named is not None]
    out: list[ir.TierRule] = []
    notes = tuple(sorted((_host(ip), k) for k, p in members.items() for ip in p.ips))
    if not rule.protocols or numeric or (named and direction == "ingress"):
        ports = list(numeric)
        if named and direction == "ingress":  # the destination is this pod
            ports += [ir.PortMatch(cp.protocol, cp.port, cp.port) for cp in pod.ports if cp.name in named]
        if not rule.protocols or ports:  # named ports this pod lacks: the rule matches nothing
            hosts = [_host(ip) for p in members.values() for ip in p.ips]
            if networks:
                v4, v6 = _collapse(hosts + networks)
                notes += tuple((n, "network") for n in networks)
            else:
                v4, v6 = _split(hosts)
            # group (ir.GROUP_DOC): the rule's peers, the same for every pod it applies to;
            # with the kind, so a rule gaining networks is a new set on a node, not a retyped one
            sets.append(ir.AddrSet(name, v4, v6, interval=bool(networks), notes=notes,
                                   group=name + ("i" if networks else "")))
            out.append(ir.TierRule(**base, peers=name, ports=tuple(ports)))  # type: ignore[arg-type]
    if named and direction == "egress":
        # The destination is the peer: (address, protocol, port) for each peer's named port.
        elems = sorted({(str(ipaddress.ip_address(ip)), cp.protocol, cp.port) for p in members.values()
                        for cp in p.ports if cp.name in named for ip in p.ips})
        v4 = tuple(e for e in elems if ":" not in e[0])
        v6 = tuple(e for e in elems if ":" in e[0])
        sets.append(ir.AddrPortSet(name + "p", v4, v6, group=name + "p"))
        out.append(ir.TierRule(**base, addr_ports=name + "p"))  # type: ignore[arg-type]
    return out


def attach(fw: ir.PodFirewall, pod: Pod, pods: Iterable[Pod], namespace: Callable[[str], Namespace],
           cnps: Iterable[ClusterNetworkPolicy], memo: dict | None = None) -> ir.PodFirewall:
    """``fw`` with the tier rules of every CNP whose subject selects ``pod``; ``fw`` itself
    when none does (a cluster without CNPs compiles exactly as before).

    ``memo``: shared by the pods of one cluster state (the caller forgets what a change
    makes stale: enforcer.cnp.compiling). It keeps each selection's pods and each rule's
    sets and tier rules, which are the same for every pod the policy selects (the same
    objects, so their digests are computed once): without it, a cluster costs pods x pods."""
    mine = sorted((c for c in cnps if selects(c.subject, pod, namespace(pod.namespace))),
                  key=ClusterNetworkPolicy.order)
    if not mine:
        return fw
    memo = {} if memo is None else memo

    def peers_of(sel: Selection) -> list[Pod]:
        key = ("sel", sel)
        if key not in memo:  # (the incremental compiler fills these in advance)
            memo[key] = [p for p in pods if selects(sel, p, namespace(p.namespace))]
        return memo[key]

    sets: list = list(fw.sets)
    dirs = {}
    for direction in ir.DIRECTIONS:
        tiers: dict[str, list[ir.TierRule]] = {"Admin": [], "Baseline": []}
        for pol in mine:
            for i, rule in enumerate(pol.ingress if direction == "ingress" else pol.egress):
                # Ingress named ports resolve on this pod: its ports are part of the key.
                own = pod.ports if direction == "ingress" and any(p.named for p in rule.protocols) else ()
                key = ("rule", pol.name, direction, i, own)
                if key not in memo:
                    made: list = []
                    memo[key] = (tuple(_tier_rules(pod, pol, direction, i, rule, peers_of, made)), tuple(made))
                rules, made_sets = memo[key]
                tiers[pol.tier].extend(rules)
                sets.extend(made_sets)
        dirs[direction] = replace(fw.direction(direction), admin=tuple(tiers["Admin"]),
                                  baseline=tuple(tiers["Baseline"]))
    return replace(fw, ingress=dirs["ingress"], egress=dirs["egress"], sets=tuple(sets))


# ---------------------------------------------------------------- evaluation


def rule_matches(fw: ir.PodFirewall, rule: ir.TierRule | ir.AllowRule, peer_ip: str, protocol: str,
                 port: int) -> bool:
    if rule.addr_ports is not None:
        return fw.set(rule.addr_ports).contains(peer_ip, protocol, port)  # type: ignore[call-arg]
    if rule.peers is not None and not fw.set(rule.peers).contains(peer_ip):  # type: ignore[call-arg]
        return False
    return not rule.ports or any(pm.matches(protocol, port) for pm in rule.ports)


def first_match(fw: ir.PodFirewall, rules: tuple[ir.TierRule, ...], peer_ip: str, protocol: str,
                port: int) -> ir.TierRule | None:
    for r in rules:
        if rule_matches(fw, r, peer_ip, protocol, port):
            return r
    return None


@dataclass(frozen=True)
class Decision:
    """How one side's tiers judged a flow. ``tier`` is who decided: "Admin", "NetworkPolicy",
    "Baseline" or "default"; ``rule`` the deciding tier rule (Admin, Baseline); ``passed``
    the Pass rules that handed the flow on."""

    allowed: bool
    tier: str
    rule: ir.TierRule | None = None
    passed: tuple[ir.TierRule, ...] = ()


def decide(admin: ir.TierRule | None, isolated: bool, np_allows: bool,
           baseline: ir.TierRule | None) -> Decision:
    """The evaluation order, from the first matching rule of each tier (None: none)."""
    passed: list[ir.TierRule] = []
    if admin is not None:
        if admin.action in (ACCEPT, DENY):
            return Decision(admin.action == ACCEPT, ADMIN, admin)
        passed.append(admin)
    if isolated:
        return Decision(np_allows, "NetworkPolicy", None, tuple(passed))
    if baseline is not None:
        if baseline.action in (ACCEPT, DENY):
            return Decision(baseline.action == ACCEPT, "Baseline", baseline, tuple(passed))
        assert baseline.action == PASS
        passed.append(baseline)
    return Decision(True, "default", None, tuple(passed))
