"""nftables host placement: one table per node namespace, a chain per pod, out of its reach.

Pod mode (backends/nftables.py) puts each pod's table inside the pod, where a process
with CAP_NET_ADMIN can ``nft flush ruleset``. Host mode puts the same chains in the node's
namespace, on the forward path, where real CNIs enforce (Calico's per-endpoint chains,
Cilium and kube-router on the host side of the veth)::

    table bridge netpol_host                 the bridge knows the port a frame came in on
        map ports   ifname : mark            "<pod's host-side veth>" : the pod's mark
        chain prerouting (bridge prerouting) meta mark set iifname map @ports
    table inet netpol_host
        map egress     mark : verdict        <pod mark> : jump eg.<ns>.<pod>
        map ingress_4  ipv4_addr : verdict   <pod address> : jump in.<ns>.<pod>
        map ingress_6  ipv6_addr : verdict
        set g.<group>_4 / _6                 one per peer group, shared by the node's pods
        chain forward (hook forward)         meta mark vmap @egress;
                                             ip daddr vmap @ingress_4; ip6 daddr vmap ...
        chain eg.<ns>.<pod>, in.<ns>.<pod>   the pod's egress / ingress chain

Why a mark and a bridge table: the lab's node is a router whose pods hang off one bridge
(enforcer/lab/topology.py). A packet a pod sends reaches the IP layer of the node with the
*bridge* as its input interface, so ``iifname`` in the inet forward hook cannot tell two
pods apart. The bridge family's prerouting hook still sees the port (the pod's veth), and
marks the packet with the pod's id; the forward hook dispatches on that mark. This needs no
br_netfilter. A pod cannot forge it: a packet's mark is cleared when it leaves the pod's
namespace, and a forged source address still goes through the chain of the port it came in
on. Ingress is dispatched by destination address: the node routes by it, and the node's
permanent neighbour entries send each address to exactly one pod's veth. Two pods of a
node whose keys hash to one mark are refused with a clear error (placement.check_marks).

The pod's chains are what ``nftables.render_chain`` writes for pod mode (the same
``ir.chain``, provenance comments, counters and nflog drop), with one difference: an allow
rule (and the open accept) ``return``s instead of ``accept``ing (``allowed="return"``), because a packet between two pods of one node must
pass the sender's egress chain *and* the receiver's ingress chain in the same hook (each
direction is its own decision, as in Kubernetes). The fixed rules (established/related,
invalid, node) keep their verdicts. And no anonymous set: a port list is a rule per port,
neighbour discovery a range of types (``_no_anonymous_sets`` says why).

ClusterNetworkPolicy tiers (backends/nft_tiers.py in pod mode) become three more chains
per direction, so that every verdict still ends only this pod's direction::

    chain in.<tag>      fixed rules; goto adm.in.<tag>
    chain adm.in.<tag>  Admin rules: Accept -> return, Deny -> drop, Pass -> goto np.in.<tag>;
                        then goto np.in.<tag>
    chain np.in.<tag>   the NetworkPolicy part: isolated: allows (return), log, drop;
                        not isolated: jump bl.in.<tag>; return
    chain bl.in.<tag>   Baseline rules: Accept -> return, Pass -> return, Deny -> drop

The forward chain *jumps* into ``in.<tag>``, which *goes to* the next ones, so a
``return`` anywhere goes back to the forward chain: an Admin Accept allows this direction
and lets the other pod's chain decide its own. A Deny drops the packet.

Sets: a peer group read by several pods of a node is ONE set of the node (``g.<group>``),
reference-counted (backends/nft_host_node.py): a peer change is one element delta per node,
not per pod. Applying is incremental: a new pod adds its chains, the sets it reads that
are not there yet and its map entries; a changed pod rewrites its own chains; removing a
pod deletes its entries, its chains and the sets no other pod reads. ``apply_many``
sends one transaction per node.
"""
from __future__ import annotations

import itertools
import re
import threading
from typing import Callable, Sequence

from backends import base, nft_tiers, nftables as nft
from backends import nft_host_node as hn
from backends.base import ApplyResult
from backends.nft_host_node import TABLE, all_chain_names, chain_names  # noqa: F401 (re-export)
from backends.placement import by_node, check_marks, pod_mark, pod_tag, shared
from enforcer import ir, netns as nsmod
from enforcer.errors import ApplyError, BackendError, NetnsError, NetpolError
from enforcer.ir import PodFirewall

CHUNK = 1000  # elements per raw netlink message (an address . proto . port element: ~40 bytes)
BRIDGE_PRIORITY = -300  # before anything else on the bridge
FIXED = ir.FIXED  # the rules that stay accepts (the allows return to the node's chain)

Resolver = Callable[[str], tuple[str, str]]  # pod netns -> (node netns, host-side veth)
HOST_VERDICT = {ir.ACCEPT: "return", ir.DROP: "drop"}  # a tier rule's; Pass: goto the NetworkPolicy chain
BASELINE_VERDICT = {ir.ACCEPT: "return", ir.DROP: "drop", ir.PASS: "return"}


# ---------------------------------------------------------------------------------------
# Rendering (pure)


_PORT_LIST = re.compile(r"^(?P<pre>.*\bdport )\{ (?P<items>[^}]*) \} (?P<post>.*)$")
ND_TYPES = f"icmpv6 type {{ {nft.ND_TYPES} }}"
ND_RANGE = "icmpv6 type 133-136"  # the same four types (router solicit .. neighbour advert)


def _no_anonymous_sets(lines: list[str]) -> list[str]:
    """Host mode writes no anonymous sets: a port list becomes a rule per port (range), and
    the IPv6 neighbour discovery types a range (bridged ND between two pods of a node
    reaches the forward hook when br_netfilter is on). Why: the kernel names each anonymous
    set by scanning every set of its table for a free ``__set%d``, so a node table of 110
    pods with ~2,400 of them took ~6 s to load; without, ~0.9 s (measured with
    benchmarks/bench_host.py's firewalls)."""
    out = []
    for line in lines:
        line = line.replace(ND_TYPES, ND_RANGE)
        m = _PORT_LIST.match(line)
        if m is None:
            out.append(line)
        else:
            out += [f"{m['pre']}{item.strip()} {m['post']}" for item in m["items"].split(",")]
    return out


def _tier_lines(sfw: PodFirewall, direction: str, tier: str, verdicts: dict[str, str]) -> list[str]:
    # (a Deny is logged first, as in pod mode, so ``lab drops`` names the tier rule)
    return _no_anonymous_sets(["\t\t" + ln for ln in nft_tiers.tier_lines(sfw, direction, tier, verdicts)])


def pod_chains(sfw: PodFirewall) -> list[tuple[str, list[str]]]:
    """The pod's chains ((name, body lines) each, in the order they are declared) for
    ``sfw`` (its sets already under node names: placement.shared)."""
    out = []
    for direction in base.DIRECTIONS:
        main = chain_names(sfw.pod)[direction]
        adm, np_, bl = (f"{p}{main}" for p in hn.TIER_PREFIXES)
        # pod mode's chain (ir.chain), its allows and open accept returning to the node's
        # chain, its tier jumps to this pod's own tier chains
        parts = nft.chain_rules(sfw, direction, "return", {"Admin": f"goto {adm}", "Baseline": f"jump {bl}"})
        pol = sfw.direction(direction)
        if not nft_tiers.has_tiers(pol):
            out.append((main, _lines(parts)))
            continue
        cut = next(i for i, (r, _) in enumerate(parts) if r.kind == "tier") + 1  # after the Admin goto
        out += [(bl, _tier_lines(sfw, direction, "Baseline", BASELINE_VERDICT)),
                (np_, _lines(parts[cut:])),
                (adm, _tier_lines(sfw, direction, "Admin", {**HOST_VERDICT, ir.PASS: f"goto {np_}"})
                 + [f"\t\tcounter goto {np_} {nft._quote(ir.tier_end_comment(direction))}"]),
                (main, _lines(parts[:cut]))]
    return out


def _lines(parts: list) -> list[str]:
    return _no_anonymous_sets([f"\t\t{ln}" for _, lines in parts for ln in lines])


def pod_chain(pfw: PodFirewall, direction: str) -> list[str]:
    """The pod's main chain for ``direction`` as a block (without tiers: its only one)."""
    name = chain_names(pfw.pod)[direction]
    body = dict(pod_chains(pfw))[name]
    return [f"\tchain {name} {{"] + body + ["\t}"]


def pod_sets(sfw: PodFirewall) -> list[list[str]]:
    return [nft.render_set(s, fam) for s in sorted(sfw.sets, key=lambda s: s.name) for fam in (4, 6)]


def _ip_elems(fw: PodFirewall, family: int) -> list[tuple[str, str]]:
    ips = [a for a in fw.ips if base.family_of(a) == family]
    return [(base.host_or_cidr(a), chain_names(fw.pod)["ingress"]) for a in ips]


def _map(name: str, type_: str, elems: list[str]) -> list[str]:
    lines = [f"\tmap {name} {{", f"\t\ttype {type_}"]
    if elems:
        lines.append("\t\telements = { " + ",\n\t\t\t     ".join(elems) + " }")
    lines.append("\t}")
    return lines


def render_node(pods: Sequence[tuple[PodFirewall, str]], node: str = "") -> str:
    """Both tables of a node holding ``pods`` ((firewall, host-side veth) each)."""
    pods = sorted(pods, key=lambda p: p[0].pod)
    check_marks([fw.pod for fw, _ in pods])
    marks = [f'"{iface}" : 0x{pod_mark(fw.pod):08x}' for fw, iface in sorted(pods, key=lambda p: p[1])]
    on = f" on {node}" if node else ""
    out = [f"table bridge {TABLE} {{", f'\tcomment "netpol host mode{on}: a pod\'s packets marked by its veth"']
    out += _map("ports", "ifname : mark", marks) + [""]
    out += ["\tchain prerouting {",
            f"\t\ttype filter hook prerouting priority {BRIDGE_PRIORITY}; policy accept;",
            '\t\tmeta mark set iifname map @ports comment "the pod behind the port"', "\t}", "}"]
    by_mark = sorted(pods, key=lambda p: pod_mark(p[0].pod))
    egress = [f"0x{pod_mark(fw.pod):08x} : jump {chain_names(fw.pod)['egress']}" for fw, _ in by_mark]
    ing = {fam: sorted(((nft._addr(a)[0], a, c) for fw, _ in pods for a, c in _ip_elems(fw, fam)))
           for fam in (4, 6)}
    blocks = [_map("egress", "mark : verdict", egress)]
    for fam in (4, 6):
        blocks.append(_map(f"ingress_{fam}", f"ipv{fam}_addr : verdict",
                           [f"{a} : jump {c}" for _, a, c in ing[fam]]))
    sfws = [shared(fw) for fw, _ in pods]
    node_sets = {}
    for sfw in sfws:
        for s in sfw.sets:
            node_sets.setdefault(s.name, s)  # a group's set once, whoever reads it
    for name in sorted(node_sets):
        blocks += [nft.render_set(node_sets[name], fam) for fam in (4, 6)]
    blocks.append(["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;",
                   '\t\tmeta mark vmap @egress comment "egress: the chain of the pod it came from"',
                   '\t\tip daddr vmap @ingress_4 comment "ingress: the chain of the pod it goes to"',
                   '\t\tip6 daddr vmap @ingress_6 comment "ingress: the chain of the pod it goes to"',
                   "\t}"])
    for sfw in sfws:
        blocks += [[f"\tchain {n} {{"] + body + ["\t}"] for n, body in pod_chains(sfw)]
    return "\n".join(out) + ("\n" if out else "") + nft.table_text(
        f"inet {TABLE}", f"netpol host mode{on}: a chain per pod", blocks)


def skeleton(node: str = "") -> str:
    """Both tables, empty: made once per node namespace."""
    return f"add table bridge {TABLE}\nadd table inet {TABLE}\n" + render_node([], node)


# ---------------------------------------------------------------------------------------


class NftHostBackend:
    """The Backend protocol for host mode: ``netns`` names a pod's namespace, as in pod
    mode; ``resolve`` says on which node namespace and behind which veth it sits."""

    name = "nftables"
    placement = "host"
    apply_in_threads = False  # libnftables underneath (backends.nftables)
    nf_generation = True

    def __init__(self, resolve: Resolver, runner_backend: nft.NftablesBackend | None = None) -> None:
        self._resolve = resolve
        self._nft = runner_backend or nft.NftablesBackend()
        self._nodes: dict[str, tuple[int, hn.Node]] = {}  # node netns -> (inode, what it holds)
        self._views: dict[str, hn.View] = {}
        self._socks = None  # nsmod.Handles of libnft.ElementSocket, one per node netns
        self._gens = None  # nsmod.Handles of netlink sockets asking a node's generation
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def check(self) -> None:
        self._nft.check()

    def render(self, fw: PodFirewall) -> str:
        return render_node([(fw, "<veth>")])

    def _run(self, node: str, commands: str) -> str:
        return self._nft._get_runner().run(node, commands)

    # -- the node's state

    def _ensure(self, node: str) -> hn.Node:
        """What ``node`` holds: made empty the first time, read back once from a table an
        earlier run left (whose unused sets are deleted then)."""
        ino = nsmod.inode(node)
        if ino is None:
            raise NetnsError(f"network namespace {node} does not exist")
        with self._lock:
            known = self._nodes.get(node)
            if known is not None and known[0] == ino:
                return known[1]
        try:
            listing = self._run(node, f"list table inet {TABLE}\n")
        except nft._Refused:
            try:
                self._run(node, skeleton(node))
            except nft._Refused as e:
                raise ApplyError(f"nftables host mode: cannot create table {TABLE} in {node}: {e}") from e
            state = hn.Node()
        else:
            try:
                bridge = self._run(node, f"list table bridge {TABLE}\n")
            except nft._Refused:
                bridge = ""
                text = render_node([], node)
                self._run(node, f"add table bridge {TABLE}\n" + text[:text.index(f"table inet {TABLE}")])
            state = hn.adopt(listing, bridge)
            stale = "".join(hn._unused_sets(state))
            if stale:
                self._run(node, stale)
        with self._lock:
            self._nodes[node] = (ino, state)
        return state

    def _commit(self, node: str, state: hn.Node) -> None:
        with self._lock:
            ino = self._nodes[node][0] if node in self._nodes else nsmod.inode(node)
            self._nodes[node] = (ino, state)  # type: ignore[assignment]

    def _forget(self, node: str) -> None:
        with self._lock:
            self._nodes.pop(node, None)
            self._views.pop(node, None)

    def _raw_ok(self) -> bool:
        return self._nft.method == "libnft"

    def _elements(self, node: str, changes: list) -> None:
        """One raw batch of element changes in ``node``'s inet table (raises _Refused).
        Through libnftables, one element costs a fetch of the node table's sets into its
        cache: the raw batch does not."""
        from backends import libnft

        if self._socks is None:
            self._socks = nsmod.Handles(libnft.ElementSocket)
        sock = self._socks.get(node)
        # A netlink attribute holds at most 64 KiB: at most CHUNK elements per message
        # (still one batch, one transaction).
        changes = [(verb, name, elems[i:i + CHUNK]) for verb, name, elems in changes
                   for i in range(0, len(elems), CHUNK)]
        with sock.lock:
            try:
                sock.change(TABLE, changes)
            except (libnft.NftError, OSError) as e:
                raise nft._Refused(str(e)) from e

    # -- applying

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        result = self.apply_many([(netns, fw, previous)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    @staticmethod
    def _result(fw: PodFirewall, previous: PodFirewall | None, kind: str) -> ApplyResult:
        """What changed for this pod, counted on its own sets (the node may have changed a
        shared set once for several pods)."""
        if kind == "delta" and previous is not None:
            old = {s.name: s for s in previous.sets}
            added = removed = 0
            for s in fw.sets:
                o = old.get(s.name)
                if o is not None and o.digest != s.digest:
                    was, now = set(o.v4 + o.v6), set(s.v4 + s.v6)
                    added, removed = added + len(now - was), removed + len(was - now)
            return ApplyResult("delta", added, removed)
        return ApplyResult(kind, sum(len(s.v4) + len(s.v6) for s in fw.sets), 0)

    def apply_many(self, jobs) -> list[ApplyResult | NetpolError]:
        """One transaction per node for all its pods; if the kernel refuses it, each pod on
        its own (so one bad pod never holds up the others)."""
        # (the node plans its own kind of change: only "nothing changed" is decided here)
        results, per_node = by_node(jobs, self._resolve, self._ensure,
                                    lambda prev, fw: "none" if prev is not None and prev == fw else "",
                                    "nftables host mode")
        for node, kinded in per_node.items():
            items = [(i, iface) for i, iface, _ in kinded]
            self._apply_node(node, items, jobs, results)
        return results  # type: ignore[return-value]

    def _marks_free(self, state: hn.Node, items, jobs, results) -> list[tuple[int, str]]:
        """``items`` without the pods whose mark another pod of the node has (an error each)."""
        owner = {e.mark: tag for tag, e in state.pods.items() if e.mark is not None}
        keep = []
        for i, iface in items:
            pod = jobs[i][1].pod
            tag, mark = pod_tag(pod), pod_mark(pod)
            other = owner.get(mark)
            if other is not None and other != tag:
                results[i] = BackendError(
                    f"host mode: pods {pod} and {other.replace('.', '/', 1)} of one node hash to the same "
                    f"mark 0x{mark:08x}; run them on different nodes or use --enforce-at pod")
                continue
            owner[mark] = tag
            keep.append((i, iface))
        return keep

    def _apply_node(self, node: str, items, jobs, results) -> None:
        state = self._ensure(node)
        items = self._marks_free(state, items, jobs, results)
        if not items:
            return
        try:
            p = hn.plan(state, [(jobs[i][1], iface, jobs[i][2]) for i, iface in items], pod_chains,
                        raw_ok=self._raw_ok())
            if p.raw:
                self._elements(node, p.raw)
            if p.text:
                self._run(node, p.text)
        except (nft._Refused, BackendError, ValueError):
            # (a raw batch is all or nothing, but text after it may have been refused:
            # what the node holds is read back before each pod is tried on its own)
            self._forget(node)
            for i, iface in items:
                _, fw, previous = jobs[i]
                try:
                    results[i] = self._one(node, fw, iface, previous)
                except NetpolError as e:
                    results[i] = e
            return
        self._commit(node, p.node)
        for i, _ in items:
            _, fw, previous = jobs[i]
            results[i] = self._result(fw, previous, p.kinds[fw.pod])

    def _one(self, node: str, fw: PodFirewall, iface: str, previous) -> ApplyResult:
        """One pod on its own, its chains written and its sets refilled whatever we
        believed the node held."""
        try:
            state = self._ensure(node)
            p = hn.plan(state, [(fw, iface, None)], pod_chains, force=True, raw_ok=False)
            self._run(node, p.text)
        except (nft._Refused, BackendError, ValueError) as e:
            self._forget(node)
            raise ApplyError(f"nftables host mode: applying the firewall of {fw.pod} in {node} "
                             f"failed; the previous rules stay in force:\n{e}") from e
        self._commit(node, p.node)
        return ApplyResult("full", sum(len(s.v4) + len(s.v6) for s in fw.sets), 0,
                           "refused in the node's batch, applied on its own")

    # -- removing

    def remove(self, netns: str) -> None:
        """Remove the pod's entries, chains and the sets only it read from its node's
        table (idempotent). Works without the pod's firewall: the node knows what it has."""
        try:
            node, _ = self._resolve(netns)
        except (KeyError, BackendError):
            return
        if not nsmod.exists(node):
            return
        pod = self._pod_of(netns)
        if pod is None:
            return
        state = self._ensure(node)
        text, new = hn.removal(state, [pod_tag(pod)])
        if text:
            try:
                self._run(node, text)
            except nft._Refused as e:
                self._forget(node)
                raise BackendError(f"nftables host mode: cannot remove {pod} from {node}: {e}") from e
        self._commit(node, new)

    def _pod_of(self, netns: str) -> str | None:
        get = getattr(self._resolve, "pod_of", None)
        return get(netns) if get else None

    def remove_node(self, node: str) -> None:
        """Both tables out of ``node`` (switching a node back to pod mode)."""
        if not nsmod.exists(node):
            return
        try:
            self._run(node, f"add table inet {TABLE}\ndelete table inet {TABLE}\n"
                            f"add table bridge {TABLE}\ndelete table bridge {TABLE}\n")
        except nft._Refused as e:
            raise BackendError(f"nftables host mode: cannot remove {TABLE} from {node}: {e}") from e
        self._forget(node)

    # -- reading back

    def _generation(self, node: str) -> int | None:
        """The node's nf_tables generation (moves with every committed transaction)."""
        from enforcer import nfnetlink as nfnl

        if self._gens is None:
            self._gens = nsmod.Handles(lambda: nfnl.open_socket(timeout=1.0, bind=False))
        try:
            s = self._gens.get(node)
            seq = next(self._seq) & 0xFFFFFFFF
            s.send(nfnl.generation_request(seq))
            newgen = nfnl.type_of(nfnl.NFNL_SUBSYS_NFTABLES, nfnl.NFT_MSG_NEWGEN)
            while True:
                for kind, mseq, body in nfnl.split_messages(s.recv(65536)):
                    if mseq == seq and kind == newgen:
                        return nfnl.generation_of(body)
        except (OSError, NetnsError):
            self._gens.forget(node)
            return None

    def _view(self, node: str) -> hn.View | None:
        # (the namespace's inode with it: a node made again under the same name starts
        # counting generations again)
        gen = self._generation(node)
        gen = None if gen is None else (nsmod.inode(node), gen)
        with self._lock:
            v = self._views.get(node)
        if v is not None and gen is not None and v.gen == gen:
            return v
        try:
            listing = self._run(node, f"list table inet {TABLE}\n")
            bridge = self._run(node, f"list table bridge {TABLE}\n")
        except nft._Refused:
            return None
        v = hn.View(gen, listing, bridge)
        if gen is not None:
            with self._lock:
                self._views[node] = v
        return v

    def _found_chains(self, v: hn.View, pod: str) -> list[str]:
        return [c for c in all_chain_names(pod) if ("chain", c) in v.blocks]

    def read(self, netns: str) -> str | None:
        node, _ = self._resolve(netns)
        pod = self._pod_of(netns)
        v = self._view(node)
        if v is None or pod is None:
            return None
        chains = self._found_chains(v, pod)
        if not chains:
            return None
        refs = {r for c in chains for line in v.blocks[("chain", c)] for r in re.findall(r"@(\S+)", line)}
        found = {("chain", c): v.blocks[("chain", c)] for c in chains}
        found.update({("set", r): v.blocks[("set", r)] for r in refs if ("set", r) in v.blocks})
        return "\n".join(f"{k[0]} {k[1]}:\n  " + "\n  ".join(x) for k, x in sorted(found.items())) + "\n"

    def verify(self, netns: str, fw: PodFirewall) -> bool:
        """The pod's chains, the sets they read and its map entries, against one listing
        of the node shared by every verify until the node changes."""
        node, iface = self._resolve(netns)
        v = self._view(node)
        if v is None:
            return False
        if v.pods_ok.get(fw.pod) == (fw, iface):
            return True  # (found right in this very listing already: the next repair round)
        sfw = shared(fw)
        chains = pod_chains(sfw)
        if sorted(self._found_chains(v, fw.pod)) != sorted(n for n, _ in chains):
            return False
        if any(v.blocks.get(("chain", n)) != nft.normalise("\n".join(body)) for n, body in chains):
            return False
        for s in sfw.sets:
            if v.sets_ok.get(s.name) == s.digest:
                continue
            for fam in (4, 6):
                if v.blocks.get(("set", nft.set_name(s.name, fam))) != nft.normalise(
                        "\n".join(nft.render_set(s, fam)[1:-1])):
                    return False
            v.sets_ok[s.name] = s.digest
        names, mark = chain_names(fw.pod), pod_mark(fw.pod)
        want_in = {f"{a} : jump {c}" for fam in (4, 6) for a, c in _ip_elems(fw, fam)}
        have_in = {e for e in v.ingress if e.endswith(f" : jump {names['ingress']}")}
        ok = (have_in == want_in and f"0x{mark:08x} : jump {names['egress']}" in v.egress
              and f'"{iface}" : 0x{mark:08x}' in v.ports)
        if ok:
            v.pods_ok[fw.pod] = (fw, iface)
        return ok

    def counters(self, netns: str) -> list[tuple[str, int, int]]:
        node, _ = self._resolve(netns)
        pod = self._pod_of(netns)
        if pod is None:
            return []
        with self._lock:
            known = self._nodes.get(node)
        entry = known[1].pods.get(pod_tag(pod)) if known else None
        text = ""
        for c in sorted(entry.chain_names) if entry else all_chain_names(pod):
            try:
                # One list per run: libnftables 1.0.6 filters its cache for the last chain
                # of a buffer, and a second ``list chain`` then finds nothing.
                text += self._run(node, f"list chain inet {TABLE} {c}\n")
            except nft._Refused:
                continue  # (a tier chain the pod does not have)
        return nft.parse_counters(text)

    def close(self) -> None:
        for h in (self._socks, self._gens):
            if h is not None:
                h.close()
        self._nft.close()
