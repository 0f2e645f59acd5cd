"""Cluster state -> per-pod firewall IR (enforcer.ir), pure and incremental.

How a pod's firewall is derived (SEMANTICS.md 1-10):

* A policy *selects* the pods of its own namespace that match ``spec.podSelector``. A pod is
  isolated for a direction iff some selecting policy has that direction in its effective
  policyTypes; the allow rules are the union of those policies' rules.
* Each policy rule becomes a ``RuleContent`` computed once for all the pods the policy
  selects: the pods its selector peers match, its ipBlocks with ``except`` subtracted, its
  ports. Peer addresses do not depend on which pod the rule protects, so one content is
  shared by every selected pod; only ingress named ports are resolved per pod (against the
  protected pod's own container ports).
* ``Compiler`` keeps indexes (labels -> pods, namespaces; label key -> rules that look at
  it) so that a pod or namespace change recomputes only the rules it can affect and
  reports the pods whose firewall changed. ``compile_cluster`` is the one-shot form.
"""
from __future__ import annotations

import functools
import gc
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterable

from enforcer import ir
from enforcer.cnp.compiling import TiersMixin
from enforcer import intervals
from enforcer.compiler.labelindex import LabelIndex, PodIndex
from enforcer.model import (EGRESS, INGRESS, Cluster, IPBlock, Namespace, NetworkPolicy,
                            Peer, Pod, Rule)
from enforcer.compiler.selectors import matches
from enforcer.compiler.setwords import NoteCache, addr_notes, addrport_notes, group_id, set_name  # noqa: F401 (set_name: re-export)

RuleId = tuple[str, str, int]  # (policy key, "ingress"|"egress", rule index)
LEGACY = "[legacy DefaultDeny annotation]"


@functools.lru_cache(maxsize=None)
def block_networks(block: IPBlock) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An ipBlock as collapsed CIDRs with its except ranges cut out, split by family.

    Interval arithmetic, not a deny: an except removes addresses from this peer only, so
    another peer or rule may still allow them (SEMANTICS 7).
    """
    r = block_ranges((block,))
    return intervals.to_cidrs(4, r[4]), intervals.to_cidrs(6, r[6])


@functools.lru_cache(maxsize=None)
def block_ranges(blocks: tuple[IPBlock, ...]) -> dict[int, list[intervals.Range]]:
    """ipBlocks (excepts cut out) as merged integer ranges per family; read-only."""
    return intervals.blocks_ranges((b.cidr, b.except_) for b in blocks)


@functools.lru_cache(maxsize=1 << 20)
def _ip_key(addr: str) -> tuple[int, int]:
    return intervals.parse_ip(addr)


@dataclass(frozen=True)
class RuleSpec:
    """What one policy rule says about ports, and whether it names peers (no cluster state)."""

    all_peers: bool
    blocks: tuple[IPBlock, ...]
    numeric: tuple[ir.PortMatch, ...]
    named: tuple[tuple[str, str], ...]  # (port name, protocol)
    all_ports: bool


def rule_spec(rule: Rule) -> RuleSpec:
    numeric, named = [], []
    for p in rule.ports:
        if isinstance(p.port, str):
            named.append((p.port, p.protocol))
        else:
            last = (p.end_port or p.port) if p.port is not None else None
            numeric.append(ir.PortMatch(p.protocol, p.port, last))
    blocks = tuple(p.ip_block for p in rule.peers if p.ip_block is not None)
    return RuleSpec(not rule.peers, blocks, tuple(numeric), tuple(named), not rule.ports)


# A peer group is the peers of a rule together with the namespace that scopes its
# podSelector-only peers. Rules with equal groups share one member set, as CNIs share one
# IP set per selector: 2,500 policies that all admit "role in (cache) in env=prod
# namespaces" cost one membership update when a pod is relabelled, not 2,500.
GroupKey = tuple[str, tuple[Peer, ...]]


def group_key(policy_ns: str, rule: Rule) -> GroupKey:
    scoped = any(p.ip_block is None and p.namespace_selector is None for p in rule.peers)
    return (policy_ns if scoped else "", rule.peers)


class Compiler(TiersMixin):
    """Incremental compiler. Build it from a cluster, then call the ``set_*``/``remove_*``
    methods (or ``sync``); each returns the keys of the pods whose ``firewall()`` changed."""

    def __init__(self, cluster: Cluster, *, node_ips: tuple[str, ...] = (),
                 legacy_namespace_isolation: bool = False) -> None:
        self.node_ips = tuple(node_ips)
        self.legacy = legacy_namespace_isolation
        self.namespaces: dict[str, Namespace] = {}
        self.pods: dict[str, Pod] = {}
        self.policies: dict[str, NetworkPolicy] = {}
        self._init_cnps(cluster)  # ClusterNetworkPolicy tiers (enforcer.cnp.compiling)
        self._ns_index = LabelIndex()
        self._pod_index = PodIndex()  # all pods, keyed "ns/name", cluster-wide and per namespace
        self._policies_by_ns: dict[str, set[str]] = defaultdict(set)
        self._selected: dict[str, set[str]] = {}  # policy -> pods it selects
        self._selecting: dict[str, set[str]] = defaultdict(set)  # pod -> policies selecting it
        self._spec: dict[RuleId, RuleSpec] = {}
        self._group_of: dict[RuleId, GroupKey] = {}
        self._group_rules: dict[GroupKey, set[RuleId]] = defaultdict(set)
        # Members of the *live* groups only: a group's members are computed when a firewall
        # that reads them is first built (demand-driven), and kept up to date from then on.
        self._members: dict[GroupKey, set[str]] = {}
        # Reverse indexes: which live groups a change can touch.
        self._groups_by_pod_key: dict[str, set[GroupKey]] = defaultdict(set)
        self._groups_by_ns_key: dict[str, set[GroupKey]] = defaultdict(set)
        self._groups_pod_scope: dict[str, set[GroupKey]] = defaultdict(set)  # ns -> groups with podSelector-only peers there
        self._groups_ns_scoped: set[GroupKey] = set()  # groups with namespaceSelector peers
        self._rules_all_pods: set[RuleId] = set()  # egress named ports to any/ipBlock: read every pod
        self._ns_groups_cache: dict[str, set[GroupKey]] = {}
        self._elements: dict[object, tuple] = {}  # cached set elements
        self._notes = NoteCache()  # their element comments
        # Built on request only (firewall(), firewalls()): `render --pod` or a daemon's 110
        # local pods in 150,000 cost their firewalls and the groups those read (issue 15).
        self._firewalls: dict[str, ir.PodFirewall] = {}
        # Millions of objects and no garbage: collector passes meanwhile cost seconds.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for n in cluster.namespaces.values():
                self._put_namespace(n)
            for pod in cluster.pods.values():
                self._put_pod(pod)
            for pol in cluster.policies.values():
                self._add_policy(pol)
        finally:
            if collecting:
                gc.enable()
        if len(self.pods) > 10_000:
            # A big cluster is millions of long-lived objects; without this every full
            # garbage collection walks them all (measured: ~0.7 s pauses on one label
            # change at 150,000 pods). Frozen objects are skipped by the collector.
            gc.freeze()

    # ----------------------------------------------------------------- queries

    def firewall(self, pod_key: str) -> ir.PodFirewall:
        """The pod's firewall, built on first request (KeyError for an unknown pod)."""
        fw = self._firewalls.get(pod_key)
        if fw is None:
            if pod_key not in self.pods:
                raise KeyError(pod_key)
            fw = self._firewalls[pod_key] = self._build(pod_key)
        return fw

    def firewalls(self) -> dict[str, ir.PodFirewall]:
        """Every pod's firewall (the whole-cluster views: matrix, explain, lint, diff)."""
        for key in self.pods:
            if key not in self._firewalls:
                self._firewalls[key] = self._build(key)
        return dict(self._firewalls)

    def namespace(self, name: str) -> Namespace:
        return self.namespaces.get(name) or Namespace(name, {"kubernetes.io/metadata.name": name})

    def selected_pods(self, policy_key: str) -> frozenset[str]:
        return frozenset(self._selected.get(policy_key, ()))

    def rule_members(self, rule: RuleId) -> frozenset[str]:
        return frozenset(self._live(self._group_of[rule]))

    # ----------------------------------------------------------------- changes

    def set_pod(self, pod: Pod) -> set[str]:
        old = self.pods.get(pod.key)
        if old is not None and old == pod and dict(old.labels) == dict(pod.labels):
            return set()
        groups: set[GroupKey] = set()
        if old is None:
            groups = self._groups_in_scope_of(pod)
        else:
            changed_keys = {k for k in set(old.labels) | set(pod.labels)
                            if old.labels.get(k) != pod.labels.get(k)}
            if changed_keys:
                # Only groups that look at a changed key AND can see this pod's namespace.
                scope = self._groups_in_scope_of(pod)
                for k in changed_keys:
                    groups |= self._groups_by_pod_key.get(k, set()) & scope
        self._put_pod(pod)
        affected = self._reselect_pod(pod.key) | self._cnp_touch(pod.key)
        affected |= self._update_membership(pod.key, groups)
        if old is None or old.ips != pod.ips or old.ports != pod.ports:
            # The pod's addresses are elements of every group it belongs to, and its ports
            # of the egress named-port sets of those groups' rules.
            affected |= self._invalidate_groups({g for g in self._groups_in_scope_of(pod) if pod.key in self._members[g]})
        if old is None or old.ips != pod.ips or old.ports != pod.ports:
            affected |= self._invalidate_all_pods_rules()
        return self._rebuild(affected)

    def remove_pod(self, key: str) -> set[str]:
        pod = self.pods.get(key)
        if pod is None:
            return set()
        groups = {g for g in self._groups_in_scope_of(pod) if key in self._members[g]}
        del self.pods[key]
        self._pod_index.remove(key)
        for pol in self._selecting.pop(key, set()):
            self._selected[pol].discard(key)
        self._firewalls.pop(key, None)
        for g in groups:
            self._members[g].discard(key)
        affected = self._invalidate_groups(groups) | self._invalidate_all_pods_rules() | self._cnp_touch(key)
        affected.discard(key)
        return self._rebuild(affected) | {key}

    def set_namespace(self, ns: Namespace) -> set[str]:
        old = self.namespaces.get(ns.name)
        old_labels = dict(old.labels) if old else dict(self._ns_index.labels.get(
            ns.name, {"kubernetes.io/metadata.name": ns.name}))
        changed_keys = {k for k in set(old_labels) | set(ns.labels)
                        if old_labels.get(k) != ns.labels.get(k)}
        legacy_changed = (old.legacy_default_deny if old else False) != ns.legacy_default_deny
        self._put_namespace(ns)
        groups: set[GroupKey] = set()
        for k in changed_keys:
            groups |= self._groups_by_ns_key.get(k, set())
        affected = self._cnp_touch_ns(ns.name) if changed_keys else set()
        for g in groups:
            members = self._select_members(g)
            if members != self._members[g]:
                self._members[g] = members
                affected |= self._invalidate_groups({g})
        if legacy_changed:
            affected |= set(self._pod_index.in_namespace(ns.name))
        return self._rebuild(affected)

    def remove_namespace(self, name: str) -> set[str]:
        if name not in self.namespaces:
            return set()
        # An undeclared namespace still exists with its name label (Cluster.namespace).
        affected = self.set_namespace(Namespace(name, {"kubernetes.io/metadata.name": name}))
        del self.namespaces[name]
        return affected

    def set_policy(self, pol: NetworkPolicy) -> set[str]:
        old = self.policies.get(pol.key)
        if old == pol:
            return set()
        # Replaced: the peer groups the new version still reads keep their members (issue 15).
        affected = self._drop_policy(old, unindex=False) if old is not None else set()
        affected |= self._add_policy(pol)
        for _, rule in self._rule_ids(old) if old is not None else ():
            g = group_key(old.namespace, rule)  # type: ignore[union-attr]
            if g in self._group_rules and not self._group_rules[g]:
                self._unindex_group(g)
        return self._rebuild(affected)

    def remove_policy(self, key: str) -> set[str]:
        old = self.policies.get(key)
        if old is None:
            return set()
        return self._rebuild(self._drop_policy(old))

    def sync(self, cluster: Cluster) -> set[str]:
        """Make ``cluster`` the whole desired state; returns the pods whose firewall changed."""
        changed: set[str] = set()
        changed |= self._set_cnps(tuple(cluster.cnps.values()))
        for name in list(self.namespaces):
            if name not in cluster.namespaces:
                changed |= self.remove_namespace(name)
        for n in cluster.namespaces.values():
            old = self.namespaces.get(n.name)
            if old is None or old != n or dict(old.labels) != dict(n.labels):
                changed |= self.set_namespace(n)
        for key in list(self.policies):
            if key not in cluster.policies:
                changed |= self.remove_policy(key)
        for key in list(self.pods):
            if key not in cluster.pods:
                changed |= self.remove_pod(key)
        for pod in cluster.pods.values():
            changed |= self.set_pod(pod)
        for pol in cluster.policies.values():
            changed |= self.set_policy(pol)
        return changed

    # ----------------------------------------------------------------- internals

    def _put_namespace(self, ns: Namespace) -> None:
        self._ns_groups_cache.pop(ns.name, None)
        self.namespaces[ns.name] = ns
        self._ns_index.add(ns.name, ns.labels)

    def _ns_labels(self, name: str):
        return self._ns_index.labels.get(name) or {"kubernetes.io/metadata.name": name}

    def _put_pod(self, pod: Pod) -> None:
        self.pods[pod.key] = pod
        if pod.namespace not in self._ns_index.labels:
            # A namespace nobody declared still exists, with the label the API server sets.
            self._ns_index.add(pod.namespace, {"kubernetes.io/metadata.name": pod.namespace})
        self._pod_index.add(pod.key, pod.namespace, pod.labels)

    def _reselect_pod(self, key: str) -> set[str]:
        """Recompute which policies select this pod; returns pods to rebuild (just it)."""
        pod = self.pods[key]
        now = {p for p in self._policies_by_ns.get(pod.namespace, ())
               if matches(self.policies[p].pod_selector, pod.labels)}
        before = self._selecting.get(key, set())
        for p in before - now:
            self._selected[p].discard(key)
        for p in now - before:
            self._selected.setdefault(p, set()).add(key)
        self._selecting[key] = now
        return {key}

    def _groups_in_scope_of(self, pod: Pod) -> set[GroupKey]:
        """Groups whose members could include this pod, whatever its labels."""
        return self._groups_pod_scope.get(pod.namespace, set()) | self._ns_groups(pod.namespace)

    def _ns_groups(self, ns: str) -> set[GroupKey]:
        """Groups with a namespaceSelector peer matching namespace ``ns`` (cached: the
        cache is dropped whenever a namespace's labels or the set of groups change)."""
        cached = self._ns_groups_cache.get(ns)
        if cached is None:
            labels = self._ns_labels(ns)
            cached = {g for g in self._groups_ns_scoped
                      if any(p.namespace_selector is not None and matches(p.namespace_selector, labels) for p in g[1])}
            self._ns_groups_cache[ns] = cached
        return cached

    def _pod_in_group(self, pod: Pod, g: GroupKey) -> bool:
        scope, peers = g
        for peer in peers:
            if peer.ip_block is not None:
                continue
            if peer.namespace_selector is None:
                if pod.namespace != scope:
                    continue
            elif not matches(peer.namespace_selector, self._ns_labels(pod.namespace)):
                continue
            if peer.pod_selector is None or matches(peer.pod_selector, pod.labels):
                return True
        return False

    def _update_membership(self, key: str, groups: set[GroupKey]) -> set[str]:
        pod = self.pods[key]
        changed = set()
        for g in groups:
            members = self._members[g]
            now = self._pod_in_group(pod, g)
            if now != (key in members):
                (members.add if now else members.discard)(key)
                changed.add(g)
        return self._invalidate_groups(changed)

    def _invalidate_groups(self, groups: set[GroupKey]) -> set[str]:
        """Drop cached elements of these groups; return the pods whose sets they feed."""
        affected: set[str] = set()
        for g in groups:
            self._elements.pop(g, None)
            for rid in self._group_rules.get(g, ()):
                self._elements.pop(rid, None)
                affected |= self._selected.get(rid[0], set())
        return affected

    def _invalidate_all_pods_rules(self) -> set[str]:
        affected: set[str] = set()
        for rid in self._rules_all_pods:
            self._elements.pop(rid, None)
            affected |= self._selected.get(rid[0], set())
        return affected

    def _rule(self, rid: RuleId) -> Rule:
        pol = self.policies[rid[0]]
        return (pol.ingress if rid[1] == "ingress" else pol.egress)[rid[2]]

    @staticmethod
    def _rule_ids(pol: NetworkPolicy) -> Iterable[tuple[RuleId, Rule]]:
        for direction, rules in (("ingress", pol.ingress), ("egress", pol.egress)):
            for i, rule in enumerate(rules):
                yield (pol.key, direction, i), rule

    def _add_policy(self, pol: NetworkPolicy) -> set[str]:
        self.policies[pol.key] = pol
        self._policies_by_ns[pol.namespace].add(pol.key)
        selected = self._pod_index.select(pol.pod_selector, (pol.namespace,))
        self._selected[pol.key] = selected
        for k in selected:
            self._selecting[k].add(pol.key)
        for rid, rule in self._rule_ids(pol):
            spec = rule_spec(rule)
            self._spec[rid] = spec
            g = group_key(pol.namespace, rule)
            self._group_of[rid] = g
            self._group_rules[g].add(rid)  # registered; computed when a firewall reads it
            if rid[1] == "egress" and spec.named and (spec.all_peers or spec.blocks):
                self._rules_all_pods.add(rid)
        return set(selected)

    def _drop_policy(self, pol: NetworkPolicy, unindex: bool = True) -> set[str]:
        del self.policies[pol.key]
        self._policies_by_ns[pol.namespace].discard(pol.key)
        selected = self._selected.pop(pol.key, set())
        for k in selected:
            self._selecting[k].discard(pol.key)
        for rid, _ in self._rule_ids(pol):
            self._spec.pop(rid, None)
            self._elements.pop(rid, None)
            self._rules_all_pods.discard(rid)
            g = self._group_of.pop(rid)
            self._group_rules[g].discard(rid)
            if unindex and not self._group_rules[g]:
                self._unindex_group(g)
        return set(selected)

    def _live(self, g: GroupKey) -> set[str]:
        """The group's members, computed (and indexed for updates) on first use."""
        members = self._members.get(g)
        if members is None:
            self._index_group(g)
            members = self._members[g]
        return members

    def _indexes_of(self, g: GroupKey) -> list[set[GroupKey]]:
        """The indexes that list group ``g`` while it is live (label keys its selectors read,
        its pod scope, namespace-scoped): indexing adds it to each, unindexing removes it."""
        scope, peers = g
        out = []
        for peer in peers:
            if peer.pod_selector is not None:
                out += [self._groups_by_pod_key[key] for key in peer.pod_selector.keys()]
            if peer.namespace_selector is not None:
                out += [self._groups_by_ns_key[key] for key in peer.namespace_selector.keys()]
                out.append(self._groups_ns_scoped)
            elif peer.ip_block is None:
                out.append(self._groups_pod_scope[scope])
        return out

    def _index_group(self, g: GroupKey) -> None:
        for index in self._indexes_of(g):
            index.add(g)
        if g in self._groups_ns_scoped:
            self._ns_groups_cache.clear()  # a namespace's groups may now include g
        self._members[g] = self._select_members(g)

    def _unindex_group(self, g: GroupKey) -> None:
        del self._group_rules[g]
        self._elements.pop(g, None)
        if self._members.pop(g, None) is None:
            return  # never live: nothing indexed
        if g in self._groups_ns_scoped:
            self._ns_groups_cache.clear()
        for index in self._indexes_of(g):
            index.discard(g)

    def _select_members(self, g: GroupKey) -> set[str]:
        scope, peers = g
        members: set[str] = set()
        for peer in peers:
            if peer.ip_block is None:
                members |= self._peer_pods(scope, peer)
        return members

    def _peer_pods(self, scope: str, peer: Peer) -> set[str]:
        if peer.namespace_selector is None:
            namespaces = {scope}
        else:
            namespaces = self._ns_index.select(peer.namespace_selector)
        return self._pod_index.select(peer.pod_selector, namespaces)

    def _rebuild(self, pods: Iterable[str]) -> set[str]:
        pods = self._cnp_scope(pods)
        changed = set()
        for key in pods:
            if key not in self.pods:
                continue
            old = self._firewalls.get(key)
            if old is None:
                changed.add(key)  # never built: built when asked for; say it may have changed
                continue
            fw = self._build(key)
            if old != fw:
                self._firewalls[key] = fw
                changed.add(key)
        return changed

    # ----------------------------------------------------------------- per-pod IR

    def _addr_elements(self, rid: RuleId) -> tuple[tuple[str, ...], tuple[str, ...]]:
        g = self._group_of[rid]
        cached = self._elements.get(g)
        if cached is not None:
            return cached
        members = self._live(g)
        pods = self.pods
        addrs = [ip for k in members for ip in pods[k].ips]
        blocks = tuple(p.ip_block for p in g[1] if p.ip_block is not None)
        if blocks:
            r = block_ranges(blocks)
            out = intervals.collapse(addrs, r[4], r[6])
        else:
            out = intervals.host_cidrs(addrs)
        self._elements[g] = out
        return out

    def _addrport_elements(self, rid: RuleId) -> tuple[tuple, tuple]:
        """Egress named ports: (address, protocol, port) of every destination pod that the
        rule's peers cover and that declares the name (SEMANTICS 9)."""
        cached = self._elements.get(rid)
        if cached is not None:
            return cached
        spec = self._spec[rid]
        if spec.all_peers:
            pods: Iterable[str] = self.pods
        else:
            pods = set(self._live(self._group_of[rid]))
            if spec.blocks:
                merged = block_ranges(spec.blocks)
                pods |= {k for k, p in self.pods.items()
                         if any(intervals.contains(merged[f], v) for f, v in map(_ip_key, p.ips))}
        v4, v6 = set(), set()
        for k in pods:
            pod = self.pods[k]
            for name, proto in spec.named:
                for cp in pod.ports:
                    if cp.name == name and cp.protocol == proto:
                        for ip in pod.ips:
                            (v6 if ":" in ip else v4).add((ip, proto, cp.port))
        out = (tuple(sorted(v4, key=lambda e: (_ip_key(e[0]), e[1], e[2]))),
               tuple(sorted(v6, key=lambda e: (_ip_key(e[0]), e[1], e[2]))))
        self._elements[rid] = out
        return out

    def _build(self, key: str) -> ir.PodFirewall:
        pod = self.pods[key]
        policies = sorted(self._selecting.get(key, ()))
        sets: list[ir.AnySet] = []
        directions = {}
        for direction, ptype, prefix in (("ingress", INGRESS, "in"), ("egress", EGRESS, "eg")):
            isolating = [p for p in policies if ptype in self.policies[p].policy_types]
            isolated_by = list(isolating)
            if direction == "ingress" and self.legacy and self.namespace(pod.namespace).legacy_default_deny:
                isolated_by.append(f"{pod.namespace}/{LEGACY}")
            rules: list[ir.AllowRule] = []
            for k, pkey in enumerate(isolating):
                pol = self.policies[pkey]
                for i in range(len(pol.ingress if direction == "ingress" else pol.egress)):
                    rules.extend(self._allow_rules(pod, (pkey, direction, i), set_name(prefix, i, k), sets))
            directions[direction] = ir.DirectionPolicy(bool(isolated_by), tuple(sorted(isolated_by)), tuple(rules))
        fw = ir.PodFirewall(key, pod.ips, self.node_ips, directions["ingress"], directions["egress"], tuple(sets))
        return self._with_tiers(fw, pod)

    def _allow_rules(self, pod: Pod, rid: RuleId, name: str, sets: list) -> list[ir.AllowRule]:
        spec = self._spec[rid]
        prov = ir.Provenance(rid[0], rid[1], rid[2])
        out = []
        peers = None if spec.all_peers else name

        def peer_set() -> None:
            v4, v6 = self._addr_elements(rid)
            g = self._group_of[rid]
            notes = self._notes.get(g, v4, v6, lambda: addr_notes(v4 + v6, self._members.get(g, ()), self.pods, g[1]))
            sets.append(ir.AddrSet(name, v4, v6, interval=bool(spec.blocks), notes=notes, group=group_id(g)))

        if spec.all_ports:
            if peers:
                peer_set()
            return [ir.AllowRule(prov, peers, ())]
        ports = list(spec.numeric)
        if spec.named and rid[1] == "ingress":
            # Ingress: the destination is this pod, so the name is resolved here.
            for pname, proto in spec.named:
                ports += [ir.PortMatch(proto, cp.port, cp.port) for cp in pod.ports
                          if cp.name == pname and cp.protocol == proto]
        if ports:
            # A set only when a rule reads it: a rule whose ports resolve to nothing on this
            # pod allows nothing and needs no set.
            if peers:
                peer_set()
            out.append(ir.AllowRule(prov, peers, tuple(dict.fromkeys(ports))))
        if spec.named and rid[1] == "egress":
            # Egress named ports: the peer restriction is folded into address.port elements.
            ap4, ap6 = self._addrport_elements(rid)
            notes = self._notes.get(rid, ap4, ap6, lambda: addrport_notes(ap4 + ap6, self.pods))
            sets.append(ir.AddrPortSet(name + "p", ap4, ap6, notes=notes, group=group_id(("named",) + rid)))
            out.append(ir.AllowRule(prov, None, (), addr_ports=name + "p"))
        return out


def compile_cluster(cluster: Cluster, *, node_ips: tuple[str, ...] = (),
                    legacy_namespace_isolation: bool = False) -> dict[str, ir.PodFirewall]:
    """One-shot compile: pod key -> its firewall."""
    return Compiler(cluster, node_ips=node_ips,
                    legacy_namespace_isolation=legacy_namespace_isolation).firewalls()
