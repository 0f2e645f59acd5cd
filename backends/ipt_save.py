"""Reading iptables back (pure): our part of an ``iptables-save`` listing and of
``ipset save``, whether exactly a rendered Ruleset is installed, and rule counters."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from backends import base, ipt_tiers
from backends.ipt_render import FAMILIES, HOOKS, OWN_CHAINS, SET_PREFIX, TMP_PREFIX, Ruleset



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


_OWN = frozenset(OWN_CHAINS)


# A save line whose words are plain or "quoted" whole, apart from each other (no
# backslash, no quote inside a word): what iptables-save writes for all our rules but
# comments holding " or \.
_WORD = r'"[^"\\\']*"|[^\s"\\\']+'
_PLAIN_LINE = re.compile(rf"\s*(?:(?:{_WORD})(?:\s+(?:{_WORD}))*)?\s*")
_PLAIN_WORD = re.compile(r'"([^"\\\']*)"|([^\s"\\\']+)')


def split_words(line: str) -> list[str]:
    """``shlex.split`` of a save line, ~20x faster for the plain lines that are nearly all
    of them (a read-back of a pod's two families spent ~8 ms of CPU in shlex); the rest
    still go through shlex."""
    if _PLAIN_LINE.fullmatch(line):
        return [q if w == "" else w for q, w in _PLAIN_WORD.findall(line)]
    return shlex.split(line)


def parse_save(text: str, own=_OWN.__contains__, hooks: tuple[str, ...] = tuple(HOOKS.values())) -> FamilyState:
    """Our chains (``own(chain)``: pod mode's by default; host mode passes its own) with
    their rules and counters, and the jumps to them from ``hooks``, with their positions."""
    st = FamilyState()
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
        head = line.split(None, 2)
        if len(head) < 2 or head[0] != "-A" or not (own(head[1]) or head[1] in hooks):
            continue  # not ours: not worth shlex (a node lists thousands of rules)
        try:
            tokens = split_words(line)
        except ValueError:
            continue
        if len(tokens) < 2 or tokens[0] != "-A":
            continue
        chain, args = tokens[1], tuple(tokens[2:])
        position[chain] = position.get(chain, 0) + 1
        if own(chain):
            st.rules.setdefault(chain, []).append(args)
            st.counts.setdefault(chain, []).append(counts)
        elif chain in hooks:
            target = args[args.index("-j") + 1] if "-j" in args else None
            if target is not None and own(target):
                st.jumps.setdefault(chain, []).append(position[chain])
                st.jump_args.setdefault(chain, []).append(args)
    return st


def parse_ipset_save(text: str, own=None) -> dict[str, tuple[str, int, set[str]]]:
    """Our sets (np.* and nt.*, or those ``own(name)`` says) from ``ipset save``:
    name -> (type, family, elements)."""
    own = own or (lambda name: name[:3] in (SET_PREFIX, TMP_PREFIX))
    sets: dict[str, tuple[str, int, set[str]]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "create" and own(parts[1]):
            fam = 6 if "inet6" in parts[3:5] else 4
            sets[parts[1]] = (parts[2], fam, set())
        elif len(parts) >= 3 and parts[0] == "add" and parts[1] in sets:
            sets[parts[1]][2].add(base.hex_ipv6(parts[2]) if sets[parts[1]][1] == 6 else parts[2])
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

