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
        set <set>.<ns>.<pod>_4 / _6          the pod's sets, as in pod mode, renamed
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
permanent neighbour entries send each address to exactly one pod's veth.

The pod's chains are what ``nftables.render_chain`` writes for pod mode (same IR, same
provenance comments, counters and nflog drop), with one difference: an allow rule
``return``s instead of ``accept``ing, because a packet between two pods of one node must
pass the sender's egress chain *and* the receiver's ingress chain in the same hook. The
fixed rules (established/related, invalid, node) keep their verdicts.

Applying is incremental: a new pod adds its sets, chains and map entries; a changed pod
flushes and refills its own chains; a peer change is a set element delta; removing a pod
deletes its entries, chains and sets. ``apply_many`` sends one transaction per node.
"""
from __future__ import annotations

import re
import threading
from typing import Callable, Sequence

from backends import base, nft_tiers, nftables as nft
from backends.base import ApplyResult, plan
from backends.placement import pod_mark, pod_tag, prefixed
from enforcer import netns as nsmod
from enforcer.errors import ApplyError, BackendError, NetnsError, NetpolError
from enforcer.ir import PodFirewall

TABLE = "netpol_host"
CHUNK = 1000  # elements per raw netlink message (an address . proto . port element: ~40 bytes)
BRIDGE_PRIORITY = -300  # before anything else on the bridge
FIXED = ("established", "invalid", "loopback", "ipv6 neighbour discovery", "node")

Resolver = Callable[[str], tuple[str, str]]  # pod netns -> (node netns, host-side veth)


# ---------------------------------------------------------------------------------------
# Rendering (pure)


def chain_names(pod: str) -> dict[str, str]:
    tag = pod_tag(pod)
    return {"ingress": f"in.{tag}", "egress": f"eg.{tag}"}


def _fixed_comments() -> set[str]:
    return {f'comment "{base.fixed_comment(d, w)}"' for d in base.DIRECTIONS for w in FIXED}


_FIXED_COMMENTS = _fixed_comments()
_ACCEPT = re.compile(r"(^|\s)counter accept comment ")


def pod_chain(pfw: PodFirewall, direction: str) -> list[str]:
    """The pod's chain for ``direction`` (``pfw`` already ``prefixed``): pod mode's chain
    as a regular chain, allow verdicts turned into ``return``."""
    if nft_tiers.has_tiers(pfw.direction(direction)):
        # A tier's Accept is a final verdict in pod mode; on the node it would also skip
        # the receiving pod's chain. Not done yet: refuse rather than enforce wrongly.
        raise BackendError(f"host mode: {pfw.pod} is selected by a ClusterNetworkPolicy; "
                           "tiers are enforced in pod mode only so far (--enforce-at pod)")
    lines = nft.render_chain(pfw, direction)
    body = []
    for line in lines[2:-1]:
        if not any(line.endswith(c) for c in _FIXED_COMMENTS):
            line = _ACCEPT.sub(r"\1counter return comment ", line)
        body.append(line)
    return [f"\tchain {chain_names(pfw.pod)[direction]} {{"] + body + ["\t}"]


def pod_sets(pfw: PodFirewall) -> list[list[str]]:
    return [nft.render_set(s, fam) for s in sorted(pfw.sets, key=lambda s: s.name) for fam in (4, 6)]


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
    prefixed_fws = [prefixed(fw) for fw, _ in pods]
    for pfw in prefixed_fws:
        blocks += pod_sets(pfw)
    blocks.append(["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;",
                   '\t\tmeta mark vmap @egress comment "egress: the chain of the pod it came from"',
                   '\t\tip daddr vmap @ingress_4 comment "ingress: the chain of the pod it goes to"',
                   '\t\tip6 daddr vmap @ingress_6 comment "ingress: the chain of the pod it goes to"',
                   "\t}"])
    for pfw in prefixed_fws:
        blocks += [pod_chain(pfw, "egress"), pod_chain(pfw, "ingress")]
    out += [f"table inet {TABLE} {{", f'\tcomment "netpol host mode{on}: a chain per pod"']
    for i, b in enumerate(blocks):
        if i:
            out.append("")
        out.extend(b)
    out.append("}")
    return "\n".join(out) + "\n"


def skeleton(node: str = "") -> str:
    """Both tables, empty: made once per node namespace."""
    return f"add table bridge {TABLE}\nadd table inet {TABLE}\n" + render_node([], node)


def _set_type_line(s, fam: int) -> str:
    flags = "; flags interval" if s.interval else ""
    return f"type {nft._set_type(s, fam)}{flags};"


def pod_commands(fw: PodFirewall, iface: str, previous: PodFirewall | None = None) -> str:
    """One transaction that installs (or refills) ``fw``'s chains, sets and map entries,
    leaving every other pod of the node untouched. Idempotent when nothing of the pod is
    there yet or ``previous`` says what is."""
    pfw = prefixed(fw)
    names = chain_names(fw.pod)
    t = f"inet {TABLE}"
    cmds = [f"add chain {t} {c}\nflush chain {t} {c}\n" for c in names.values()]
    new_kinds = {s.name: (type(s), s.interval) for s in pfw.sets}
    if previous is not None:
        ppfw = prefixed(previous)
        for s in ppfw.sets:
            if new_kinds.get(s.name) != (type(s), s.interval):
                cmds += [f"delete set {t} {nft.set_name(s.name, f)}\n" for f in (4, 6)]
        for fam in (4, 6):
            gone = {a for a, _ in _ip_elems(previous, fam)} - {a for a, _ in _ip_elems(fw, fam)}
            if gone:
                cmds.append(f"delete element {t} ingress_{fam} {{ {', '.join(sorted(gone))} }}\n")
    for s in sorted(pfw.sets, key=lambda s: s.name):
        for fam in (4, 6):
            n = nft.set_name(s.name, fam)
            cmds.append(f"add set {t} {n} {{ {_set_type_line(s, fam)} }}\nflush set {t} {n}\n")
    body = [f"table {t} {{"]
    for b in pod_sets(pfw) + [pod_chain(pfw, "egress"), pod_chain(pfw, "ingress")]:
        body.extend(b)
    body.append("}")
    cmds.append("\n".join(body) + "\n")
    mark = f"0x{pod_mark(fw.pod):08x}"
    for fam in (4, 6):
        elems = [f"{a} : jump {c}" for a, c in _ip_elems(fw, fam)]
        if elems:
            cmds.append(f"add element {t} ingress_{fam} {{ {', '.join(elems)} }}\n")
    cmds.append(f"add element {t} egress {{ {mark} : jump {names['egress']} }}\n")
    cmds.append(f'add element bridge {TABLE} ports {{ "{iface}" : {mark} }}\n')
    return "".join(cmds)


def delta_commands(previous: PodFirewall, fw: PodFirewall) -> tuple[str, int, int]:
    d = nft.delta(prefixed(previous), prefixed(fw))
    text = "".join(f"{verb} element inet {TABLE} {name} {{ {', '.join(elems)} }}\n"
                   for verb, name, elems in d.changes)
    return text, d.added, d.removed


def removal_commands(listing: str, bridge_listing: str, pod: str) -> str:
    """Delete everything of ``pod`` found in the node's listings: its map entries first
    (they jump to its chains), then its chains, then its sets."""
    tag = pod_tag(pod)
    names = chain_names(pod)
    t = f"inet {TABLE}"
    cmds = []
    for fam in (4, 6):
        addrs = re.findall(rf"([0-9a-fA-F:.]+) : jump {re.escape(names['ingress'])}\b", listing)
        addrs = [a for a in addrs if base.family_of(a) == fam]
        if addrs:
            cmds.append(f"delete element {t} ingress_{fam} {{ {', '.join(addrs)} }}\n")
    mark = f"0x{pod_mark(pod):08x}"
    if re.search(rf"{mark} : jump {re.escape(names['egress'])}\b", listing):
        cmds.append(f"delete element {t} egress {{ {mark} }}\n")
    for iface in re.findall(rf'"([^"]+)" : {mark}\b', bridge_listing):
        cmds.append(f'delete element bridge {TABLE} ports {{ "{iface}" }}\n')
    for c in names.values():
        if re.search(rf"^\s*chain {re.escape(c)} \{{", listing, re.M):
            cmds.append(f"flush chain {t} {c}\ndelete chain {t} {c}\n")
    for s in re.findall(rf"^\s*set (\S+\.{re.escape(tag)}_[46]) \{{", listing, re.M):
        cmds.append(f"delete set {t} {s}\n")
    return "".join(cmds)


_BLOCK = re.compile(r"^\t(set|map|chain) (\S+) \{\n(.*?)^\t\}", re.M | re.S)


def blocks(listing: str) -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> normalised lines of each set, map and chain of a table listing."""
    return {(m.group(1), m.group(2)): nft.normalise(m.group(3)) for m in _BLOCK.finditer(listing)}


def pod_blocks(text: str, pod: str) -> dict[tuple[str, str], list[str]]:
    tag = pod_tag(pod)
    return {k: v for k, v in blocks(text).items()
            if (k[0] == "chain" and k[1] in chain_names(pod).values())
            or (k[0] == "set" and re.fullmatch(rf"\S+\.{re.escape(tag)}_[46]", k[1]))}


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
        self._ready: dict[str, int] = {}  # node netns -> inode whose skeleton we made
        self._socks = None  # nsmod.Handles of libnft.ElementSocket, one per node netns
        self._lock = threading.Lock()

    def check(self) -> None:
        self._nft.check()

    def render(self, fw: PodFirewall) -> str:
        return render_node([(fw, "<veth>")])

    def _run(self, node: str, commands: str) -> str:
        return self._nft._get_runner().run(node, commands)

    def _ensure(self, node: str) -> None:
        ino = nsmod.inode(node)
        if ino is None:
            raise NetnsError(f"network namespace {node} does not exist")
        with self._lock:
            if self._ready.get(node) == ino:
                return
        try:
            self._run(node, f"list table inet {TABLE}\n")
        except nft._Refused:
            try:
                self._run(node, skeleton(node))
            except nft._Refused as e:
                raise ApplyError(f"nftables host mode: cannot create table {TABLE} in {node}: {e}") from e
        with self._lock:
            self._ready[node] = ino

    def _commands(self, netns: str, fw: PodFirewall, previous: PodFirewall | None,
                  kind: str) -> tuple[str, str, str, list]:
        """(node, nft text, kind, raw element changes). Hash set deltas go as a raw netlink
        batch (``libnft.ElementSocket``): through libnftables, one element costs a fetch of
        the whole node table's sets into its cache (~50-90 ms at 20 pods, measured)."""
        node, iface = self._resolve(netns)
        if kind == "delta":
            d = nft.delta(prefixed(previous), prefixed(fw))  # type: ignore[arg-type]
            if not d.interval and self._nft.method == "libnft":
                return node, "", "delta", [(v, n, list(e)) for v, n, e in d.changes]
            text = "".join(f"{verb} element inet {TABLE} {name} {{ {', '.join(elems)} }}\n"
                           for verb, name, elems in d.changes)
            return node, text, "delta", []
        return node, pod_commands(fw, iface, previous), "full", []

    def _elements(self, node: str, changes: list) -> None:
        """One raw batch of element changes in ``node``'s inet table (raises _Refused)."""
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

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        result = self.apply_many([(netns, fw, previous)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def _one(self, netns: str, fw: PodFirewall, previous: PodFirewall | None, kind: str) -> ApplyResult:
        """One pod on its own; a refused change is retried from a clean slate."""
        node, text, kind, changes = self._commands(netns, fw, previous, kind)
        self._ensure(node)
        try:
            if changes:
                self._elements(node, changes)
            if text:
                self._run(node, text)
            return self._result(fw, previous, kind)
        except nft._Refused as e:
            note = f"refused, pod's chains rebuilt: {nft.first_line(str(e))}"
        try:
            self._run(node, self._removal(node, fw.pod) + pod_commands(fw, self._resolve(netns)[1]))
        except (nft._Refused, BackendError, ValueError) as e:
            raise ApplyError(f"nftables host mode: applying the firewall of {fw.pod} in {node} "
                             f"failed; the previous rules stay in force:\n{e}") from e
        n = sum(len(s.v4) + len(s.v6) for s in fw.sets)
        return ApplyResult("full", n, 0, note)

    @staticmethod
    def _result(fw, previous, kind) -> ApplyResult:
        if kind == "delta":
            d = nft.delta(previous, fw)
            return ApplyResult("delta", d.added, d.removed)
        return ApplyResult("full", sum(len(s.v4) + len(s.v6) for s in fw.sets), 0)

    def apply_many(self, jobs) -> list[ApplyResult | NetpolError]:
        """One transaction per node for all its pods; if the kernel refuses it, each pod on
        its own (so one bad pod never holds up the others)."""
        results: list[ApplyResult | NetpolError | None] = [None] * len(jobs)
        per_node: dict[str, list[tuple[int, str, str, list]]] = {}
        for i, (netns, fw, previous) in enumerate(jobs):
            kind = plan(previous, fw)
            if kind == "none":
                results[i] = ApplyResult("none")
                continue
            try:
                node, text, kind, changes = self._commands(netns, fw, previous, kind)
                self._ensure(node)
            except NetpolError as e:
                results[i] = e
                continue
            except (OSError, ValueError) as e:
                results[i] = ApplyError(f"nftables host mode: {fw.pod}: {e}")
                continue
            per_node.setdefault(node, []).append((i, text, kind, changes))
        for node, items in per_node.items():
            try:
                changes = [c for _, _, _, ch in items for c in ch]
                if changes:
                    self._elements(node, changes)
                text = "".join(text for _, text, _, _ in items)
                if text:
                    self._run(node, text)
                for i, _, kind, _ in items:
                    _, fw, previous = jobs[i]
                    results[i] = self._result(fw, previous, kind)
                continue
            except nft._Refused:
                pass  # (an element batch is all or nothing; text after it was not run)
            for i, _, kind, _ in items:
                netns, fw, previous = jobs[i]
                try:
                    results[i] = self._one(netns, fw, previous, kind)
                except NetpolError as e:
                    results[i] = e
        return results  # type: ignore[return-value]

    def _listings(self, node: str) -> tuple[str, str]:
        try:
            return (self._run(node, f"list table inet {TABLE}\n"),
                    self._run(node, f"list table bridge {TABLE}\n"))
        except nft._Refused:
            return "", ""

    def _removal(self, node: str, pod: str) -> str:
        return removal_commands(*self._listings(node), pod)

    def remove(self, netns: str) -> None:
        """Remove the pod's entries, chains and sets from its node's table (idempotent).
        Works without knowing the pod key: the tag is read back from the listing."""
        try:
            node, _ = self._resolve(netns)
        except (KeyError, BackendError):
            return
        if not nsmod.exists(node):
            return
        pod = self._pod_of(netns)
        if pod is None:
            return
        text = self._removal(node, pod)
        if text:
            try:
                self._run(node, text)
            except nft._Refused as e:
                raise BackendError(f"nftables host mode: cannot remove {pod} from {node}: {e}") from e

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
        with self._lock:
            self._ready.pop(node, None)

    def read(self, netns: str) -> str | None:
        node, _ = self._resolve(netns)
        pod = self._pod_of(netns)
        listing, _ = self._listings(node)
        if not listing or pod is None:
            return None
        found = pod_blocks(listing, pod)
        if not found:
            return None
        return "\n".join(f"{k[0]} {k[1]}:\n  " + "\n  ".join(v) for k, v in sorted(found.items())) + "\n"

    def verify(self, netns: str, fw: PodFirewall) -> bool:
        node, iface = self._resolve(netns)
        listing, bridge = self._listings(node)
        want = pod_blocks(render_node([(fw, iface)]), fw.pod)
        if pod_blocks(listing, fw.pod) != want:
            return False
        mark = f"0x{pod_mark(fw.pod):08x}"
        return (f"{mark} : jump {chain_names(fw.pod)['egress']}" in listing
                and f'"{iface}" : {mark}' in bridge
                and all(f"{a} : jump {c}" in listing for fam in (4, 6) for a, c in _ip_elems(fw, fam)))

    def counters(self, netns: str) -> list[tuple[str, int, int]]:
        node, _ = self._resolve(netns)
        pod = self._pod_of(netns)
        if pod is None:
            return []
        names = chain_names(pod)
        try:
            # One list per run: libnftables 1.0.6 filters its cache for the last chain
            # of a buffer, and a second ``list chain`` then finds nothing.
            text = "".join(self._run(node, f"list chain inet {TABLE} {c}\n")
                           for c in (names["ingress"], names["egress"]))
        except nft._Refused:
            return []
        return nft.parse_counters(text)

    def close(self) -> None:
        if self._socks is not None:
            self._socks.close()
        self._nft.close()

