"""iptables backend: own chains plus ipsets inside each pod network namespace.

Layout, the same for iptables (IPv4) and ip6tables (IPv6), filter table::

    INPUT  : -j NETPOL-INGRESS   exactly one jump, first position
    OUTPUT : -j NETPOL-EGRESS
    NETPOL-INGRESS / NETPOL-EGRESS, the order of the nftables chains:
        conntrack RELATED,ESTABLISHED accept; INVALID drop; -i lo / -o lo accept;
        (IPv6) neighbour discovery accept; node address accept;
        isolated: one accept per policy rule (and protocol, and at most 15 ports),
                  ``-m set --match-set`` for the peers; rate-limited NFLOG; DROP
        not isolated: ACCEPT
    ipsets (ipset is namespace-aware): np.<rule set>.<kind><family>
        kind ip  = hash:ip        pod addresses
             net = hash:net       ipBlocks (interval sets); /0 is stored as two /1
             ipp = hash:ip,port   named ports resolved per peer: 10.0.0.5,tcp:80

The set's type is part of its name, so a name always has one type and ``ipset swap``
(which needs matching types) always works.

Two flavours share the rendering and the ipset handling and differ in how rules are
installed:
- "nft": the host's ``iptables`` (Debian 12: iptables-nft) through
  ``iptables-restore --noflush``, one transaction per family;
- "legacy": legacy x_tables through python-iptables (libiptc) run with the thread inside
  the namespace, autocommit off, one commit per family. ``iptables-legacy-save`` shows it.

A full apply (see ``IptablesBackend.apply``):
1. ``ipset restore``: build every set under a temporary name (nt.*), create the live set if
   it is new, swap the temporary into place (the temporary now holds the old elements);
2. per family: flush our chains and write them anew, fix the jumps, in one transaction;
3. ``ipset restore``: destroy the temporaries and the sets no rule uses any more.
If step 2 fails, the families already written are rolled back to what they were and the
sets are swapped back: the previous rules and elements stay in force. Honest limit: the
sets and the rules change in separate transactions, so for about a millisecond the old
rules see the new elements (nftables has no such window).

A delta is one ``ipset restore`` of ``del`` and ``add`` lines (``-exist``: idempotent).
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
import shlex
import shutil
import threading
from dataclasses import dataclass, field

from backends import base, ipt_tiers
from backends.base import ApplyResult, fit, plan
from enforcer import netns as nsmod
from enforcer.errors import ApplyError, BackendError, BackendUnavailable
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


# ---------------------------------------------------------------------------------------
# Rendering (pure)


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


def render_allow(fw: PodFirewall, rule: AllowRule, direction: str, family: int) -> list[tuple[str, ...]]:
    return match_args(fw, rule, direction, family, _comment(base.rule_comment(rule)) + ("-j", "ACCEPT"))


def match_args(fw: PodFirewall, rule, direction: str, family: int, tail: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The argument lists of one rule (an AllowRule, or a tier's TierRule: the same peers,
    addr_ports and ports), each ending in ``tail`` (its comment and target)."""
    if rule.addr_ports is not None:
        name = _set_name_of(fw, rule.addr_ports, family)
        return [("-m", "set", "--match-set", name, f"{PEER_DIR[direction]},dst") + tail]
    peer: tuple[str, ...] = ()
    if rule.peers is not None:
        peer = ("-m", "set", "--match-set", _set_name_of(fw, rule.peers, family), PEER_DIR[direction])
    out = []
    for proto, ranges in base.port_groups(rule.ports):
        if proto is None:
            out.append(peer + tail)
        elif ranges is None:
            out.append(("-p", proto.lower()) + peer + tail)
        else:
            for ports in _port_matches(proto.lower(), ranges):
                out.append(("-p", proto.lower()) + peer + ports + tail)
    return out


def _node_addr(ip: str) -> str:
    net = ipaddress.ip_network(ip, strict=False)
    return f"{net.network_address}/{net.prefixlen}"


def render_chain(fw: PodFirewall, direction: str, family: int) -> tuple[tuple[str, ...], ...]:
    fixed = lambda what: _comment(base.fixed_comment(direction, what))  # noqa: E731
    rules: list[tuple[str, ...]] = [
        ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED") + fixed("established") + ("-j", "ACCEPT"),
        ("-m", "conntrack", "--ctstate", "INVALID") + fixed("invalid") + ("-j", "DROP"),
        (LOOPBACK[direction], "lo") + fixed("loopback") + ("-j", "ACCEPT"),
    ]
    if family == 6:
        for t in ND_TYPES:
            rules.append(("-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", t)
                         + fixed("ipv6 neighbour discovery") + ("-j", "ACCEPT"))
    nodes = sorted((ipaddress.ip_network(ip, strict=False) for ip in fw.node_ips
                    if base.family_of(ip) == family), key=lambda n: (int(n.network_address), n.prefixlen))
    for n in nodes:
        rules.append((NODE[direction], f"{n.network_address}/{n.prefixlen}") + fixed("node") + ("-j", "ACCEPT"))
    pol = fw.direction(direction)
    tiered = ipt_tiers.has_tiers(fw, direction)  # ClusterNetworkPolicy: Admin before, Baseline after
    rules += [ipt_tiers.jump("Admin", direction)] if tiered else []
    if pol.isolated:
        for r in pol.rules:
            rules.extend(render_allow(fw, r, direction, family))
        rules.append(("-m", "limit", "--limit", f"{base.LOG_RATE_PER_SECOND}/sec")
                     + _comment(base.log_comment(direction))
                     + ("-j", "NFLOG", "--nflog-prefix", base.nflog_prefix(direction, fw.pod),
                        "--nflog-group", str(base.LOG_GROUP)))
        rules.append(_comment(base.isolation_comment(direction, pol.isolated_by)) + ("-j", "DROP"))
    else:
        rules += [ipt_tiers.jump("Baseline", direction)] if tiered else []
        rules.append(_comment(base.open_comment(direction)) + ("-j", "ACCEPT"))
    return tuple(rules)


def jump_rule(direction: str) -> tuple[str, ...]:
    return _comment(f"netpol {direction}") + ("-j", CHAINS[direction])


def build(fw: PodFirewall) -> Ruleset:
    return Ruleset(render_sets(fw), {fam: {**ipt_tiers.chains(fw, fam),
                                           **{CHAINS[d]: render_chain(fw, d, fam) for d in base.DIRECTIONS}}
                                     for fam in FAMILIES})


def quote(token: str) -> str:
    if token and all(c.isalnum() or c in "-_./:,[]!@%+=" for c in token):
        return token
    return '"' + token.replace('"', "'") + '"'


def rule_line(chain: str, args: tuple[str, ...], verb: str = "-A") -> str:
    """``-A CHAIN args``; verb "-I" inserts at position 1."""
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


# ---------------------------------------------------------------------------------------
# Reading back (pure)


@dataclass
class FamilyState:
    """Our part of one family's filter table as a save listing shows it."""

    chains: set[str] = field(default_factory=set)
    rules: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)  # chain -> args
    counts: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    jumps: dict[str, list[int]] = field(default_factory=dict)  # hook -> 1-based positions
    jump_args: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)

    def has_ours(self) -> bool:
        return any(c in self.chains for c in OWN_CHAINS)

    def jumps_ok(self) -> bool:
        return all(self.jumps.get(HOOKS[d]) == [1] for d in base.DIRECTIONS)


def parse_save(text: str) -> FamilyState:
    st = FamilyState()
    ours = set(OWN_CHAINS)
    position: dict[str, int] = {}
    in_filter = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_filter = line == "*filter"
            continue
        if not in_filter or not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            st.chains.add(line[1:].split()[0])
            continue
        counts = (0, 0)
        if line.startswith("["):
            head, line = line.split("]", 1)
            p, b = head[1:].split(":")
            counts = (int(p), int(b))
            line = line.strip()
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        if len(tokens) < 2 or tokens[0] != "-A":
            continue
        chain, args = tokens[1], tuple(tokens[2:])
        position[chain] = position.get(chain, 0) + 1
        if chain in ours:
            st.rules.setdefault(chain, []).append(args)
            st.counts.setdefault(chain, []).append(counts)
        elif chain in HOOKS.values():
            target = args[args.index("-j") + 1] if "-j" in args else None
            if target in ours:
                st.jumps.setdefault(chain, []).append(position[chain])
                st.jump_args.setdefault(chain, []).append(args)
    return st


def parse_ipset_save(text: str) -> dict[str, tuple[str, int, set[str]]]:
    """Our sets (np.* and nt.*) from ``ipset save``: name -> (type, family, elements)."""
    sets: dict[str, tuple[str, int, set[str]]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "create" and parts[1][:3] in (SET_PREFIX, TMP_PREFIX):
            fam = 6 if "inet6" in parts[3:5] else 4
            sets[parts[1]] = (parts[2], fam, set())
        elif len(parts) >= 3 and parts[0] == "add" and parts[1] in sets:
            sets[parts[1]][2].add(parts[2])
    return sets


def _same_args(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return a == b


def matches(rs: Ruleset, states: dict[int, FamilyState], sets: dict[str, tuple[str, int, set[str]]]) -> bool:
    """Is exactly ``rs`` installed? Chains rule by rule, one first-position jump per hook,
    and our sets with exactly their elements (and no others of ours)."""
    for fam in FAMILIES:
        st = states[fam]
        if not st.jumps_ok():
            return False
        for chain, want in rs.rules[fam].items():
            if chain not in st.chains or tuple(st.rules.get(chain, [])) != want:
                return False
        if any(c in st.chains and c not in rs.rules[fam] for c in ipt_tiers.ALL):
            return False
    want_sets = {s.name: (s.type, s.family, set(s.elements)) for s in rs.sets}
    return sets == want_sets


def counters_of(states: dict[int, FamilyState]) -> list[tuple[str, int, int]]:
    totals: dict[str, list[int]] = {}
    for fam in FAMILIES:
        st = states[fam]
        for chain in OWN_CHAINS:
            for args, (p, b) in zip(st.rules.get(chain, []), st.counts.get(chain, [])):
                if "--comment" not in args:
                    continue
                c = args[args.index("--comment") + 1]
                t = totals.setdefault(c, [0, 0])
                t[0] += p
                t[1] += b
    return [(c, p, b) for c, (p, b) in totals.items()]


# ---------------------------------------------------------------------------------------
# Installing rules: two flavours


class _Refused(Exception):
    pass


class _RestoreInstaller:
    """The host's iptables (iptables-nft on Debian 12): iptables-restore --noflush."""

    flavour = "nft"
    save = {4: "iptables-save", 6: "ip6tables-save"}
    restore = {4: "iptables-restore", 6: "ip6tables-restore"}

    def tools(self) -> list[str]:
        return [*self.save.values(), *self.restore.values()]

    def install(self, netns: str, family: int, rs: Ruleset, state: FamilyState) -> None:
        text = rules_text(rs, family, jumps=not state.jumps_ok(),
                          delete_jumps=None if state.jumps_ok() else state.jumps,
                          drop_chains=tuple(c for c in ipt_tiers.ALL if c in state.chains and c not in rs.rules[family]))
        proc = nsmod.run(netns, [self.restore[family], "--noflush"], input=text, check=False)
        if proc.returncode != 0:
            raise _Refused(proc.stderr.strip())

    def restore_state(self, netns: str, family: int, state: FamilyState) -> None:
        """Put back exactly the chains and jumps ``state`` describes (a rollback)."""
        now = self.read_state(netns, family)
        lines = ["*filter"]
        for hook, positions in sorted(now.jumps.items()):
            lines.extend(f"-D {hook} {n}" for n in sorted(positions, reverse=True))
        for chain in OWN_CHAINS:  # tier chains first: they must exist before a jump to them
            if chain in state.chains:
                lines.append(f":{chain} - [0:0]")
                lines.extend(rule_line(chain, a) for a in state.rules.get(chain, []))
        for chain in OWN_CHAINS:  # then delete the others, nothing jumps to them any more
            if chain not in state.chains and chain in now.chains:
                lines.extend([f"-F {chain}", f"-X {chain}"])
        for hook, arglist in sorted(state.jump_args.items()):
            for args in reversed(arglist):
                lines.append(rule_line(hook, args, "-I"))
        lines.append("COMMIT")
        proc = nsmod.run(netns, [self.restore[family], "--noflush"], input="\n".join(lines) + "\n", check=False)
        if proc.returncode != 0:
            raise _Refused(proc.stderr.strip())

    def remove(self, netns: str, family: int) -> None:
        st = self.read_state(netns, family)
        if not st.has_ours() and not st.jumps:
            return
        self.restore_state(netns, family, FamilyState())

    def save_text(self, netns: str, family: int, counters: bool = False) -> str:
        argv = [self.save[family], "-t", "filter"] + (["-c"] if counters else [])
        proc = nsmod.run(netns, argv, check=False)
        if proc.returncode != 0:
            raise BackendError(f"{argv[0]} in {netns} failed: {proc.stderr.strip()}")
        return proc.stdout

    def read_state(self, netns: str, family: int, counters: bool = False) -> FamilyState:
        return parse_save(self.save_text(netns, family, counters))

    def read_all(self, netns: str, ipset: str) -> tuple[dict[int, FamilyState], str]:
        """Both families' filter tables and ``ipset <ipset>`` output from ONE process
        (a process started from Python costs ~7 ms; its shell's children much less)."""
        mark = "#netpol-enforcer-split"
        script = (f"{self.save[4]} -t filter && echo '{mark}' && {self.save[6]} -t filter "
                  f"&& echo '{mark}' && ipset {ipset}")
        proc = nsmod.run(netns, ["sh", "-c", script], check=False)
        parts = proc.stdout.split(mark + "\n")
        if proc.returncode != 0 or len(parts) != 3:
            raise BackendError(f"reading the firewall of {netns} failed: {proc.stderr.strip()}")
        return {4: parse_save(parts[0]), 6: parse_save(parts[1])}, parts[2]


_RULE_CLASSES: dict[int, type] = {}


def _rule_class(family: int) -> type:
    """python-iptables' Rule, except that it looks for jump targets (user chains) in the
    table we hand it: the stock ``Rule.tables`` opens, and caches for the whole process,
    every table of the namespace the thread happens to be in."""
    if family not in _RULE_CLASSES:
        import iptc

        parent = iptc.Rule if family == 4 else iptc.Rule6
        _RULE_CLASSES[family] = type(f"NetpolRule{family}", (parent,),
                                     {"tables": property(lambda self: self._netpol_tables)})
    return _RULE_CLASSES[family]


_PROTO_NUMBERS = {"tcp": "6", "udp": "17", "sctp": "132", "icmp": "1", "ipv6-icmp": "58"}


def _fix_iface_mask(rule, family: int, flag: str, name: str) -> None:
    """python-iptables 1.2.0 writes IPv6 interface masks with 0x01 bytes instead of 0xff, so
    the kernel compares one bit per character and ``-i lo`` matches ``v1`` too. Write the
    mask of an exact interface name ourselves (for both families, to be sure)."""
    ip = rule.entry.ip if family == 4 else rule.entry.ipv6
    mask = b"\xff" * (len(name) + 1) + b"\x00" * (16 - len(name) - 1)
    if flag == "-i":
        ip.iniface_mask = mask
    else:
        ip.outiface_mask = mask


def _keep_udata(ext):
    """Give an extension a scratch buffer that lives as long as the extension.

    python-iptables 1.2.0 allocates the ``udata`` scratch area of an extension (NFLOG
    has one: --nflog-prefix is written there) as a local that is freed when its reset()
    returns, so parsing writes into freed memory and the interpreter crashes later."""
    import ctypes

    size = getattr(ext._module, "udata_size", 0)
    if size:
        buf = (ctypes.c_ubyte * size)()
        ext._module.udata = ctypes.cast(ctypes.byref(buf), ctypes.c_void_p)
        ext._netpol_udata = buf
    return ext


def _put(table, chain: str, rule, first: bool = False) -> None:
    """Add a rule without python-iptables' ``final_check`` round trip (save, reset, parse
    again), which resets the extensions and so frees the scratch areas kept above."""
    for ext in list(rule.matches) + ([rule.target] if rule.target else []):
        ext._final_check()
    buf = rule.rule
    if not buf:
        raise ValueError("invalid rule")
    if first:
        table.insert_entry(chain, buf, 0)
    else:
        table.append_entry(chain, buf)


class _IptcInstaller(_RestoreInstaller):
    """Legacy x_tables through python-iptables (libiptc), inside the namespace.

    One commit per family replaces the kernel's whole filter table blob: atomic. Tables
    are made fresh each time instead of through ``iptc.Table(...)``, whose instances are
    cached per name in the process and would carry one namespace's handle into another."""

    flavour = "legacy"
    save = {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"}
    restore = {4: "iptables-legacy-restore", 6: "ip6tables-legacy-restore"}
    _lock = threading.Lock()  # libxtables keeps global state

    def tools(self) -> list[str]:
        return list(self.save.values())

    def __init__(self) -> None:
        try:
            import iptc  # noqa: F401
        except Exception as e:  # python-iptables raises various errors without libiptc
            raise BackendUnavailable(
                f"iptables-legacy backend: python-iptables cannot load ({e}); "
                "pip install python-iptables and apt-get install iptables") from e

    def _table(self, family: int):
        import iptc

        cls = iptc.Table if family == 4 else iptc.Table6
        table = object.__new__(cls)
        table._init("filter", False)
        return table

    def _rule(self, family: int, args: tuple[str, ...], table):
        """Turn save-style argument tokens into a python-iptables rule."""
        rule = _rule_class(family)()
        rule._netpol_tables = [table]
        i = 0
        current = None
        while i < len(args):
            tok = args[i]
            if tok in ("-s", "-d", "-i", "-o", "-p"):
                attr = {"-s": "src", "-d": "dst", "-i": "in_interface", "-o": "out_interface",
                        "-p": "protocol"}[tok]
                value = args[i + 1]
                if tok == "-p":
                    value = _PROTO_NUMBERS.get(value, value)  # python-iptables knows few names
                setattr(rule, attr, value)
                if tok in ("-i", "-o"):
                    _fix_iface_mask(rule, family, tok, value)
                i += 2
                continue
            if tok == "-m":
                current = _keep_udata(rule.create_match(args[i + 1]))
                i += 2
                continue
            if tok == "-j":
                current = _keep_udata(rule.create_target(args[i + 1]))
                i += 2
                continue
            if tok.startswith("--") and current is not None:
                values = []
                j = i + 1
                while j < len(args) and not args[j].startswith("-"):
                    values.append(args[j])
                    j += 1
                current.parse(tok[2:], values[0] if len(values) == 1 else values)
                i = j
                continue
            raise BackendError(f"cannot translate {' '.join(args)!r} for python-iptables at {tok!r}")
        return rule

    def _write(self, netns: str, family: int, chains: dict[str, tuple[tuple[str, ...], ...]],
               jumps: dict[str, list[tuple[str, ...]]] | None, current: FamilyState) -> None:
        """Make our chains exactly ``chains`` (absent chains are deleted) and the hooks'
        jumps exactly ``jumps`` (None: keep them when they are right, else one at the top),
        all in one commit.

        Jumps are found in ``current`` (a save listing just read) and deleted by number:
        reading rules back through python-iptables would decode their targets, and
        decoding a non-standard target opens and caches every table of the namespace the
        thread is in, for the whole process."""
        import iptc

        with self._lock, nsmod.entered(netns):
            table = self._table(family)
            try:
                for d, hook in HOOKS.items():
                    positions = current.jumps.get(hook, [])
                    if jumps is None and positions == [1]:
                        continue
                    for pos in sorted(positions, reverse=True):
                        if table._iptc.iptc_delete_num_entry(hook.encode(), pos - 1, table._handle) != 1:
                            raise iptc.IPTCError(f"can't delete rule {pos} of {hook}: {table.strerror()}")
                    wanted = [jump_rule(d)] if jumps is None else jumps.get(hook, [])
                    for args in reversed(wanted):
                        target = args[args.index("-j") + 1]
                        if not table.is_chain(target):  # a jump needs its chain first
                            table.create_chain(target)
                        _put(table, hook, self._rule(family, args, table), first=True)
                # tier chains before the chains that jump to them; unwanted ones deleted last
                order = [c for c in OWN_CHAINS if c in chains] + [c for c in OWN_CHAINS if c not in chains]
                for name in order:
                    if name in chains:
                        if table.is_chain(name):
                            table.flush_entries(name)
                        else:
                            table.create_chain(name)
                        for args in chains[name]:
                            _put(table, name, self._rule(family, args, table))
                    elif table.is_chain(name):
                        table.flush_entries(name)
                        table.delete_chain(name)
                table.commit()
            except (iptc.IPTCError, iptc.xtables.XTablesError, ValueError, AttributeError) as e:
                raise _Refused(f"python-iptables ({'ip6' if family == 6 else 'ip'}tables-legacy): {e}") from e
            finally:
                table.close()

    def install(self, netns: str, family: int, rs: Ruleset, state: FamilyState) -> None:
        self._write(netns, family, rs.rules[family], None, state)

    def restore_state(self, netns: str, family: int, state: FamilyState) -> None:
        chains = {c: tuple(state.rules.get(c, [])) for c in OWN_CHAINS if c in state.chains}
        self._write(netns, family, chains, state.jump_args, self.read_state(netns, family))


# ---------------------------------------------------------------------------------------


class IptablesBackend:
    apply_in_threads = True  # one restore process per namespace
    nf_generation = False  # iptables-nft does write nf_tables, but legacy does not: not asked

    def __init__(self, flavour: str = "nft") -> None:
        if flavour not in ("nft", "legacy"):
            raise BackendError(f"unknown iptables flavour {flavour!r} (nft, legacy)")
        self.flavour = flavour
        self.name = "iptables" if flavour == "nft" else "iptables-legacy"
        self._installer: _RestoreInstaller | None = None
        self._lock = threading.Lock()

    def _inst(self) -> _RestoreInstaller:
        with self._lock:
            if self._installer is None:
                self._installer = _RestoreInstaller() if self.flavour == "nft" else _IptcInstaller()
            return self._installer

    def check(self) -> None:
        inst = self._inst()
        missing = [t for t in inst.tools() + ["ipset"] if shutil.which(t) is None]
        if missing:
            raise BackendUnavailable(f"{self.name} backend: missing {', '.join(missing)}; "
                                     "install them with: apt-get install iptables ipset")

    def render(self, fw: PodFirewall) -> str:
        return render(fw)

    # -- helpers

    def _ipset(self, netns: str, text: str, what: str) -> None:
        if not text:
            return
        proc = nsmod.run(netns, ["ipset", "-exist", "restore"], input=text, check=False)
        if proc.returncode != 0:
            raise _Refused(f"ipset restore ({what}): {proc.stderr.strip()}")

    def _ipset_names(self, netns: str) -> set[str]:
        proc = nsmod.run(netns, ["ipset", "list", "-n"], check=False)
        if proc.returncode != 0:
            raise BackendError(f"ipset list in {netns} failed: {proc.stderr.strip()}")
        return {n for n in proc.stdout.split() if n[:3] in (SET_PREFIX, TMP_PREFIX)}

    def _build(self, fw: PodFirewall) -> Ruleset:
        try:
            return build(fw)
        except (BackendError, ValueError, KeyError) as e:
            raise ApplyError(f"{self.name}: cannot render the firewall of {fw.pod}: {e}") from e

    # -- apply

    def apply(self, netns: str, fw: PodFirewall, previous: PodFirewall | None = None) -> ApplyResult:
        kind = plan(previous, fw)
        if kind == "none":
            return ApplyResult("none")
        rs = self._build(fw)
        note = ""
        if kind == "delta":
            text, added, removed = delta_text(self._build(previous), rs)  # type: ignore[arg-type]
            try:
                self._ipset(netns, text, "delta")
                return ApplyResult("delta", added, removed)
            except _Refused as e:
                note = f"delta refused, replaced everything: {e}"
        self._full(netns, fw, rs)
        return ApplyResult("full", sum(len(s.elements) for s in rs.sets), 0, note)

    def _full(self, netns: str, fw: PodFirewall, rs: Ruleset) -> None:
        inst = self._inst()
        states, listing = inst.read_all(netns, "list -n")
        existing = {n for n in listing.split() if n[:3] in (SET_PREFIX, TMP_PREFIX)}
        fresh = [s.name for s in rs.sets if s.name not in existing]
        # 1. build under temporary names, swap into place (tmp keeps the old elements)
        build_lines = []
        for s in rs.sets:
            # A temporary left by a crash may lack the comment extension: create fails on
            # a same-named set with other options, even with -exist.
            build_lines += [f"destroy {s.tmp}"] * (s.tmp in existing)
            build_lines += [s.create(s.tmp), f"flush {s.tmp}"] + [s.add(e, s.tmp) for e in s.elements]
        swap_lines = []
        for s in rs.sets:
            # Only new live sets are created: one made by an older version (no comment
            # extension) swaps fine with the new temporary, but cannot be "created" again.
            swap_lines += [s.create()] * (s.name in fresh) + [f"swap {s.tmp} {s.name}"]
        tmps = "".join(f"destroy {s.tmp}\n" for s in rs.sets)
        try:
            self._ipset(netns, "\n".join(build_lines) + "\n", "build")
            self._ipset(netns, "\n".join(swap_lines) + "\n", "swap")
        except _Refused as e:
            self._quietly(netns, tmps + "".join(f"destroy {n}\n" for n in fresh))
            raise ApplyError(f"{self.name}: applying the firewall of {fw.pod} in {netns} failed; "
                             f"the previous rules stay in force:\n{e}") from e
        # 2. rules, one transaction per family; roll back on failure
        done: list[int] = []
        try:
            for fam in FAMILIES:
                inst.install(netns, fam, rs, states[fam])
                done.append(fam)
        except _Refused as e:
            for fam in done:
                try:
                    inst.restore_state(netns, fam, states[fam])
                except _Refused:
                    pass
            swap_back = "".join(f"swap {s.tmp} {s.name}\n" for s in rs.sets if s.name not in fresh)
            self._quietly(netns, swap_back + tmps + "".join(f"destroy {n}\n" for n in fresh))
            raise ApplyError(f"{self.name}: applying the firewall of {fw.pod} in {netns} failed; "
                             f"the previous rules stay in force:\n{e}") from e
        # 3. drop the temporaries and the sets no rule refers to any more
        stale = sorted(n for n in existing if n.startswith(SET_PREFIX) and n not in rs.set_names())
        stale_tmp = sorted(n for n in existing if n.startswith(TMP_PREFIX))
        self._quietly(netns, tmps + "".join(f"destroy {n}\n" for n in stale + stale_tmp))

    def _quietly(self, netns: str, text: str) -> None:
        """Best-effort cleanup: a line that fails must not stop the others."""
        if not text:
            return
        try:
            self._ipset(netns, text, "cleanup")
        except _Refused:
            for line in text.splitlines():
                nsmod.run(netns, ["ipset", "-exist"] + line.split(), check=False)

    def apply_many(self, jobs) -> list:
        """The work is in the tools' processes: two at a time for iptables-restore; one
        job after the other for legacy x_tables, which goes through libiptc under a lock."""
        return base.run_jobs(self.apply, jobs, workers=2 if self.flavour == "nft" else 1)

    # -- the rest

    def remove(self, netns: str) -> None:
        if not nsmod.exists(netns):
            return
        inst = self._inst()
        try:
            for fam in FAMILIES:
                inst.remove(netns, fam)
        except _Refused as e:
            raise BackendError(f"{self.name}: cannot remove our chains in {netns}: {e}") from e
        names = self._ipset_names(netns)
        self._quietly(netns, "".join(f"destroy {n}\n" for n in sorted(names)))

    def _ipset_save(self, netns: str) -> str:
        proc = nsmod.run(netns, ["ipset", "save"], check=False)
        if proc.returncode != 0:
            raise BackendError(f"ipset save in {netns} failed: {proc.stderr.strip()}")
        return proc.stdout

    def read(self, netns: str) -> str | None:
        inst = self._inst()
        parts = []
        ours = False
        sets = self._ipset_save(netns)
        kept = [ln for ln in sets.splitlines()
                if len(ln.split()) > 1 and ln.split()[1][:3] in (SET_PREFIX, TMP_PREFIX)]
        if kept:
            ours = True
            parts.append("# ipsets\n" + "\n".join(kept) + "\n")
        for fam in FAMILIES:
            text = inst.save_text(netns, fam)
            st = parse_save(text)
            if st.has_ours() or st.jumps:
                ours = True
            lines = ["*filter"]
            for hook in HOOKS.values():
                lines.extend(rule_line(hook, a) for a in st.jump_args.get(hook, []))
            for chain in OWN_CHAINS:
                if chain in st.chains:
                    lines.append(f":{chain} - [0:0]")
            for chain in OWN_CHAINS:
                lines.extend(rule_line(chain, a) for a in st.rules.get(chain, []))
            lines.append("COMMIT")
            parts.append(f"# IPv{fam}\n" + "\n".join(lines) + "\n")
        return "".join(parts) if ours else None

    def verify(self, netns: str, fw: PodFirewall) -> bool:
        try:
            rs = build(fw)
        except (BackendError, ValueError, KeyError):
            return False
        inst = self._inst()
        states, saved = inst.read_all(netns, "save")
        return matches(rs, states, parse_ipset_save(saved))

    def counters(self, netns: str) -> list[tuple[str, int, int]]:
        inst = self._inst()
        return counters_of({fam: inst.read_state(netns, fam, counters=True) for fam in FAMILIES})

    def close(self) -> None:
        pass
