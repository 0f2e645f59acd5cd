"""iptables host placement: the pods' chains in the node's filter table, out of their reach.

Pod mode (backends/iptables.py) puts NETPOL-INGRESS / NETPOL-EGRESS inside each pod, where
a process with CAP_NET_ADMIN can ``iptables -F``. Host mode puts the same chains, one pair
per pod, in the node's namespace on the forward path, as kube-router does with iptables::

    FORWARD      : -j NETPOL-HOST                     exactly one jump, first position
    NETPOL-HOST  : -m physdev --physdev-in <veth> -j NPH-EG-<id>   "<pod> egress"
                   -d <pod address>/32   -j NPH-IN-<id>            "<pod> ingress"
                   (one pair per pod of this node; IPv6 the same with ip6tables)
    NPH-EG-<id>, NPH-IN-<id>   the pod's egress / ingress chain
    ipsets nph<id>.<set>.<kind><family>   the pod's sets (nt.<id>.* while being swapped)

``<id>`` is the low 24 bits of the pod's mark (placement.pod_mark, a hash of its key; two
pods of one node with the same id are refused, as ``placement.check_marks`` does for
nftables): iptables chain names stop at 28 characters and ipset names at 31, too short
for ``namespace/name``. The dispatch rule's comment names the pod, and ``render`` says
which chain is whose.

How a pod's packets are told apart: the lab's pods hang off one bridge of the node and are
routed by it (enforcer/lab/topology.py), so the IP forward hook sees the *bridge* as input
interface for every pod. Two ways to recover the port: br_netfilter, which hands a routed
packet's bridge port to ``-m physdev --physdev-in``, or a mark set in the bridge family
(what nft_host.py does). We use physdev: it is plain x_tables, the same match for the
iptables-nft and iptables-legacy flavours, and the rules stay in one tool. A bridge-family
mark would need ebtables (whose legacy and nft flavours are separate kernel tables and
tools again) or an nftables table beside the iptables ones. br_netfilter's switch is a
per-namespace sysctl since Linux 5.3: we set ``net.bridge.bridge-nf-call-iptables`` and
``-ip6tables`` to 1 inside the node's namespace only (new namespaces start at 1 on this
kernel anyway), never in the host's; without br_netfilter host mode refuses with a clear
error instead of loading a module. A pod cannot spoof its port, and a forged source
address still goes through the chain of the port it came in on. Ingress is dispatched by
destination address, as in nft_host.py: the node routes by it, and its permanent
neighbour entries send each address to exactly one pod's veth.

The pod's chains are ``ipt_render.render_chain``'s (same IR, provenance comments, counters,
NFLOG drop) with one difference: an allow rule (and a direction's "not isolated" rule)
``RETURN``s instead of ``ACCEPT``ing, because a packet between two pods of one node must
pass the sender's egress chain *and* the receiver's ingress chain. The fixed rules
(established/related, invalid, node) keep their verdicts. A direction that a
ClusterNetworkPolicy selects gets its tier chains beside it (ipt_host_tiers.py).

Applying is incremental and one transaction per node and family: a new pod declares its
chains and appends its dispatch rules; a changed pod's chains are declared again (which
flushes them in ``--noflush`` mode) and refilled; a peer change is one ``ipset restore``
of element deltas; removing a pod deletes its dispatch rules by number, then its chains
and sets. Sets change first (a new one is built in place; one in use is built under a
temporary name and swapped in, as in pod mode), then the rules
(``iptables-restore --noflush``, ``iptables-legacy-restore`` for the legacy flavour: one
process per family and node), then the old sets go.

The rendering (pure) is backends/ipt_host_render.py; this module installs it.
"""
from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from backends.base import ApplyResult, plan
from backends.placement import by_node
from backends.ipt_host_render import (  # noqa: F401  (the rendering's names, from here too)
    CHAIN_PREFIX, FIXED, HOOK, HOST_CHAIN, SET_PREFIX, PodRules, _owner, all_chains, build, chain_names,
    dispatch, family_text, host_sets, is_our_set, is_ours, jump_rule, pod_chain, pod_id, render_node,
    set_names, sets_only)
from backends.ipt_install import _Refused, ipset_quietly, ipset_restore
from backends.ipt_render import FAMILIES, delta_text, rule_line
from backends.ipt_save import FamilyState, parse_ipset_save, parse_save
from enforcer import netns as nsmod
from enforcer.errors import ApplyError, BackendError, BackendUnavailable, NetpolError
from enforcer.ir import PodFirewall

TOOLS = {"nft": {"save": {4: "iptables-save", 6: "ip6tables-save"},
                 "restore": {4: "iptables-restore", 6: "ip6tables-restore"}},
         "legacy": {"save": {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"},
                    "restore": {4: "iptables-legacy-restore", 6: "ip6tables-legacy-restore"}}}
BRIDGE_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")

Resolver = Callable[[str], tuple[str, str]]  # pod netns -> (node netns, host-side veth)


# ---------------------------------------------------------------------------------------


@dataclass
class NodeState:
    """A node's filter tables (both families) and our sets, read in one process."""

    families: dict[int, FamilyState]
    sets: dict[str, tuple[str, int, set[str]]]  # name -> (type, family, elements)


class IptHostBackend:
    """The Backend protocol for iptables host mode: ``netns`` names a pod's namespace, as
    in pod mode; ``resolve`` says on which node namespace and behind which veth it sits."""

    placement = "host"
    apply_in_threads = False  # one batch per node (apply_many)
    nf_generation = False

    def __init__(self, resolve: Resolver, pod_backend) -> None:
        self._resolve = resolve
        self._pod_backend = pod_backend
        self.flavour = getattr(pod_backend, "flavour", "nft")
        self.name = pod_backend.name
        self._tools = TOOLS[self.flavour]
        self._ready: dict[str, int] = {}  # node netns -> inode whose bridge sysctls we set
        self._lock = threading.Lock()

    def check(self) -> None:
        self._pod_backend.check()
        missing = [t for t in self._tools["restore"].values() if shutil.which(t) is None]
        if missing:
            raise BackendUnavailable(f"{self.name} host mode: missing {', '.join(missing)}; "
                                     "install them with: apt-get install iptables")

    def render(self, fw: PodFirewall) -> str:
        return render_node([(fw, "<veth>")])

    # -- the node

    def _ensure(self, node: str) -> None:
        """br_netfilter on for the node's namespace (only there): physdev needs it."""
        ino = nsmod.inode(node)
        with self._lock:
            if ino is not None and self._ready.get(node) == ino:
                return
        script = "".join(f"echo 1 > /proc/sys/net/bridge/{k} && " for k in BRIDGE_SYSCTLS) + "true"
        proc = nsmod.run(node, ["sh", "-c", script], check=False)
        if proc.returncode != 0:
            raise BackendUnavailable(
                f"{self.name} host mode needs br_netfilter (the bridge port of a routed packet, "
                f"for -m physdev): {proc.stderr.strip()}; load it on the host with "
                "modprobe br_netfilter, or use --enforce-at pod or the nftables backend")
        with self._lock:
            self._ready[node] = ino or 0

    def _read(self, node: str, pods: Sequence[str] | None = None, sets: str | None = "names",
              counters: bool = False) -> NodeState:
        """One process: both families' filter tables (parsing only ``pods``' chains and
        NETPOL-HOST, or all of ours) and our sets: ``names`` only, or with their
        ``elements`` (only ``pods``' sets). A node of 110 pods lists ~13,000 rules and
        ~70,000 set elements: parsing all of it for one pod took seconds."""
        mark = "#netpol-enforcer-split"
        c = " -c" if counters else ""
        save = self._tools["save"]
        ipset = {None: "true", "names": "ipset list -n"}.get(sets)
        if ipset is None:
            ids = "|".join(pod_id(p) for p in pods or ())
            ipset = (f"ipset list -n | grep -E '^(nph|nt[.])({ids})[.]' | while read s; do ipset save $s; done"
                     if pods else "ipset save")
        script = (f"{save[4]} -t filter{c} && echo '{mark}' && {save[6]} -t filter{c} "
                  f"&& echo '{mark}' && {{ {ipset}; }}")
        proc = nsmod.run(node, ["sh", "-c", script], check=False)
        parts = proc.stdout.split(mark + "\n")
        if len(parts) != 3 or not parts[0].strip():
            raise BackendError(f"reading the firewall of {node} failed: {proc.stderr.strip()}")
        own = is_ours if pods is None else {HOST_CHAIN, *(c for p in pods for c in all_chains(p))}.__contains__
        fams = {4: parse_save(parts[0], own, (HOOK,)), 6: parse_save(parts[1], own, (HOOK,))}
        if sets == "names":
            return NodeState(fams, {n: ("", 0, set()) for n in parts[2].split() if is_our_set(n)})
        return NodeState(fams, parse_ipset_save(parts[2], is_our_set))

    def _ipset(self, node: str, text: str, what: str) -> None:
        ipset_restore(node, text, what)

    def _quietly(self, node: str, text: str) -> None:
        ipset_quietly(node, text)

    def _restore(self, node: str, family: int, text: str) -> None:
        proc = nsmod.run(node, [self._tools["restore"][family], "--noflush"], input=text, check=False)
        if proc.returncode != 0:
            raise _Refused(proc.stderr.strip())

    def _install(self, node: str, pods: list[PodRules], st: NodeState) -> None:
        """Sets, then rules (one restore per family), then old sets: all of ``pods`` at
        once. On a refusal everything is put back as ``st`` shows it, then _Refused."""
        sets = [s for pr in pods for s in pr.sets]
        fresh = {s.name for s in sets if s.name not in st.sets}
        build_lines = []
        for s in sets:
            if s.name in fresh:  # no rule refers to it yet: built in place, nothing to swap
                build_lines += [s.create()] + [s.add(e) for e in s.elements]
                continue
            build_lines += [f"destroy {s.tmp}"] * (s.tmp in st.sets)
            build_lines += [s.create(s.tmp), f"flush {s.tmp}"] + [s.add(e, s.tmp) for e in s.elements]
        swapped = [s for s in sets if s.name not in fresh]
        swap_lines = [f"swap {s.tmp} {s.name}" for s in swapped]
        tmps = "".join(f"destroy {s.tmp}\n" for s in swapped)
        try:
            self._ipset(node, "\n".join(build_lines) + "\n" if build_lines else "", "build")
            self._ipset(node, "\n".join(swap_lines) + "\n" if swap_lines else "", "swap")
        except _Refused:
            self._quietly(node, tmps + "".join(f"destroy {n}\n" for n in sorted(fresh)))
            raise
        done: list[int] = []
        try:
            for fam in FAMILIES:
                self._restore(node, fam, family_text(fam, pods, (), st.families[fam]))
                done.append(fam)
        except _Refused:
            for fam in done:  # the pods' chains and dispatch rules as they were
                self._rollback(node, fam, [pr.pod for pr in pods], st.families[fam])
            swap_back = "".join(f"swap {s.tmp} {s.name}\n" for s in swapped)
            self._quietly(node, swap_back + tmps + "".join(f"destroy {n}\n" for n in sorted(fresh)))
            raise
        ids = {f"{SET_PREFIX}{pod_id(pr.pod)}." for pr in pods}
        wanted = {s.name for s in sets}
        stale = [n for n in st.sets if n[:10] in ids and n not in wanted]
        stale += [n for n in st.sets if n.startswith("nt.") and f"{SET_PREFIX}{n[3:10]}" in ids]
        self._quietly(node, tmps + "".join(f"destroy {n}\n" for n in sorted(set(stale))))

    def _rollback(self, node: str, family: int, pods: list[str], old: FamilyState) -> None:
        now = self._read(node, pods, None).families[family]
        lines = ["*filter"]
        ids = {pod_id(p) for p in pods}
        lines += [f"-D {HOST_CHAIN} {n}" for n, a in reversed(list(enumerate(now.rules.get(HOST_CHAIN, []), 1)))
                  if _owner(a) in ids]
        back = [c for p in pods for c in all_chains(p) if c in old.chains]
        gone = [c for p in pods for c in all_chains(p) if c not in old.chains and c in now.chains]
        lines += [f":{c} - [0:0]" for c in back]
        lines += [rule_line(c, a) for c in back for a in old.rules.get(c, [])]
        lines += [f"-F {c}" for c in gone] + [f"-X {c}" for c in gone]
        lines += [rule_line(HOST_CHAIN, a) for a in old.rules.get(HOST_CHAIN, []) if _owner(a) in ids]
        lines.append("COMMIT")
        try:
            self._restore(node, family, "\n".join(lines) + "\n")
        except _Refused:
            pass

    # -- apply

    def _build(self, fw: PodFirewall, iface: str) -> PodRules:
        try:
            return build(fw, iface)
        except (BackendError, ValueError, KeyError) as e:
            raise ApplyError(f"{self.name} host mode: cannot render the firewall of {fw.pod}: {e}") from e

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        result = self.apply_many([(netns, fw, previous)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def apply_many(self, jobs) -> list[ApplyResult | NetpolError]:
        """Per node: one ``ipset restore`` of every delta, then one install of every pod
        that needs its chains (re)written; if the kernel refuses the install, each pod on
        its own (so one bad pod never holds up the others)."""
        results, per_node = by_node(jobs, self._resolve, self._ensure, plan, "iptables host mode")
        for node, items in per_node.items():
            self._apply_node(node, [(i, iface, jobs[i][1], jobs[i][2], kind) for i, iface, kind in items],
                             results)
        return results

    def _apply_node(self, node: str, items, results: list) -> None:
        full: list[tuple[int, PodRules, PodFirewall]] = []
        delta_lines, deltas = [], []
        for i, iface, fw, previous, kind in items:
            try:
                if kind == "delta":
                    text, added, removed = delta_text(sets_only(previous), sets_only(fw))
                    delta_lines.append(text)
                    deltas.append((i, iface, fw, added, removed))
                else:
                    full.append((i, self._build(fw, iface), fw))
            except NetpolError as e:
                results[i] = e
        if deltas:
            try:
                self._ipset(node, "".join(delta_lines), "delta")
                for i, _, _, added, removed in deltas:
                    results[i] = ApplyResult("delta", added, removed)
            except _Refused as e:  # drift: each of them gets its chains and sets again
                note = f"delta refused, replaced everything: {str(e).splitlines()[0]}"
                for i, iface, fw, _, _ in deltas:
                    try:
                        full.append((i, self._build(fw, iface), fw))
                        results[i] = note  # read by _full_result
                    except NetpolError as err:
                        results[i] = err
        if not full:
            return
        try:
            st = self._read(node, [pr.pod for _, pr, _ in full])
            full = self._unique(node, full, st, results)
            self._install(node, [pr for _, pr, _ in full], st)
            for i, pr, fw in full:
                results[i] = self._full_result(pr, results[i])
            return
        except (_Refused, BackendError):
            pass
        for i, pr, fw in full:  # one by one: a refused pod keeps its previous rules
            try:
                self._install(node, [pr], self._read(node, [pr.pod]))
                results[i] = self._full_result(pr, results[i])
            except (_Refused, BackendError) as e:
                results[i] = ApplyError(f"{self.name} host mode: applying the firewall of {fw.pod} "
                                        f"in {node} failed; the previous rules stay in force:\n{e}")

    def _unique(self, node: str, full: list, st: NodeState, results: list) -> list:
        """Refuse a pod whose id (chain and set names) another pod of the node has."""
        owners = {}
        for args in st.families[4].rules.get(HOST_CHAIN, []):
            if "--comment" in args:  # "<pod> egress" names the pod of the chain
                owners.setdefault(_owner(args), args[args.index("--comment") + 1].rsplit(" ", 1)[0])
        out = []
        for i, pr, fw in full:
            other = owners.setdefault(pod_id(fw.pod), fw.pod)
            if other != fw.pod:
                results[i] = ApplyError(f"{self.name} host mode: pods {other} and {fw.pod} hash to the same "
                                        f"id {pod_id(fw.pod)} on {node}; run them on different nodes "
                                        "or use --enforce-at pod")
            else:
                out.append((i, pr, fw))
        return out

    @staticmethod
    def _full_result(pr: PodRules, note) -> ApplyResult:
        return ApplyResult("full", sum(len(s.elements) for s in pr.sets), 0, note if isinstance(note, str) else "")

    # -- the rest

    def _pod_of(self, netns: str) -> str | None:
        get = getattr(self._resolve, "pod_of", None)
        return get(netns) if get else None

    def remove(self, netns: str) -> None:
        """The pod's dispatch rules, chains and sets out of its node (idempotent)."""
        try:
            node, _ = self._resolve(netns)
        except (KeyError, BackendError):
            return
        pod = self._pod_of(netns)
        if pod is None or not nsmod.exists(node):
            return
        st = self._read(node, [pod])
        try:
            for fam in FAMILIES:
                if any(c in st.families[fam].chains for c in all_chains(pod)) or \
                        any(_owner(a) == pod_id(pod) for a in st.families[fam].rules.get(HOST_CHAIN, [])):
                    self._restore(node, fam, family_text(fam, (), (pod,), st.families[fam]))
        except _Refused as e:
            raise BackendError(f"{self.name} host mode: cannot remove {pod} from {node}: {e}") from e
        ident = pod_id(pod)
        self._quietly(node, "".join(f"destroy {n}\n" for n in sorted(st.sets)
                                    if n.startswith((f"{SET_PREFIX}{ident}.", f"nt.{ident}."))))

    def remove_node(self, node: str) -> None:
        """Every rule, chain and set of ours out of ``node`` (switching back to pod mode)."""
        if not nsmod.exists(node):
            return
        st = self._read(node)
        try:
            for fam in FAMILIES:
                f = st.families[fam]
                lines = ["*filter"] + [f"-D {HOOK} {n}" for n in sorted(f.jumps.get(HOOK, []), reverse=True)]
                ours = sorted(c for c in f.chains if is_ours(c))
                lines += [f"-F {c}" for c in ours] + [f"-X {c}" for c in ours] + ["COMMIT"]
                if len(lines) > 2:
                    self._restore(node, fam, "\n".join(lines) + "\n")
        except _Refused as e:
            raise BackendError(f"{self.name} host mode: cannot remove our chains from {node}: {e}") from e
        self._quietly(node, "".join(f"destroy {n}\n" for n in sorted(st.sets)))
        with self._lock:
            self._ready.pop(node, None)

    def read(self, netns: str) -> str | None:
        node, _ = self._resolve(netns)
        pod = self._pod_of(netns)
        if pod is None or not nsmod.exists(node):
            return None
        st = self._read(node, [pod], "elements")
        ident = pod_id(pod)
        parts = [f"create {n} {t} family {'inet' if fam == 4 else 'inet6'}\n"
                 + "".join(f"add {n} {e}\n" for e in sorted(elems))
                 for n, (t, fam, elems) in sorted(st.sets.items()) if n.startswith(f"{SET_PREFIX}{ident}.")]
        for fam in FAMILIES:
            f = st.families[fam]
            lines = [rule_line(HOST_CHAIN, a) for a in f.rules.get(HOST_CHAIN, []) if _owner(a) == ident]
            for c in all_chains(pod):
                lines += [rule_line(c, a) for a in f.rules.get(c, [])]
            if lines:
                parts.append(f"# IPv{fam}\n" + "\n".join(lines) + "\n")
        return "".join(parts) or None

    def verify(self, netns: str, fw: PodFirewall) -> bool:
        node, iface = self._resolve(netns)
        try:
            pr = build(fw, iface)
        except (BackendError, ValueError, KeyError):
            return False
        st = self._read(node, [fw.pod], "elements")
        for fam in FAMILIES:
            f = st.families[fam]
            if f.jumps.get(HOOK) != [1]:
                return False
            for c, rules in pr.chains[fam].items():
                if c not in f.chains or tuple(f.rules.get(c, [])) != rules:
                    return False
            if any(c in f.chains and c not in pr.chains[fam] for c in all_chains(fw.pod)):
                return False
            mine = [a for a in f.rules.get(HOST_CHAIN, []) if _owner(a) == pod_id(fw.pod)]
            if sorted(mine) != sorted(pr.dispatch[fam]):
                return False
        ident = f"{SET_PREFIX}{pod_id(fw.pod)}."
        have = {n: v for n, v in st.sets.items() if n.startswith(ident)}
        return have == {s.name: (s.type, s.family, set(s.elements)) for s in pr.sets}

    def counters(self, netns: str) -> list[tuple[str, int, int]]:
        node, _ = self._resolve(netns)
        pod = self._pod_of(netns)
        if pod is None:
            return []
        st = self._read(node, [pod], None, counters=True)
        totals: dict[str, list[int]] = {}
        for fam in FAMILIES:
            f = st.families[fam]
            for chain in all_chains(pod):
                for args, (p, b) in zip(f.rules.get(chain, []), f.counts.get(chain, [])):
                    if "--comment" in args:
                        t = totals.setdefault(args[args.index("--comment") + 1], [0, 0])
                        t[0] += p
                        t[1] += b
        return [(c, p, b) for c, (p, b) in totals.items()]

    def close(self) -> None:
        pass
