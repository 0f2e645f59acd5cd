"""iptables host mode, rendering (pure): the node's chains, dispatch rules and sets of each
pod, and the ``iptables-restore --noflush`` text that puts some pods in and takes others
out of a node without touching the rest. backends/ipt_host.py says what the layout is and
why, and installs it.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Sequence

from backends import base, ipt_host_tiers, ipt_tiers
from backends.ipt_render import FAMILIES, IpSet, _comment, _kind, ipset_name, render_sets, rule_line, sets_text
from backends.ipt_render import chain_rules as ipt_rules
from backends.ipt_save import FamilyState
from backends.placement import pod_mark
from enforcer import ir
from enforcer.ir import PodFirewall

HOST_CHAIN = "NETPOL-HOST"
HOOK = "FORWARD"
CHAIN_PREFIX = {"ingress": "NPH-IN-", "egress": "NPH-EG-"}
SET_PREFIX = "nph"  # + <id>. ; the temporaries are IpSet.tmp: nt.<id>.
FIXED = ir.FIXED  # the rules that stay ACCEPTs (the allows RETURN to the node's chain)
_OUR_SET = re.compile(r"^(nph|nt\.)[0-9a-f]{6}\.")

# ---------------------------------------------------------------------------------------
# Rendering (pure)


def pod_id(pod: str) -> str:
    return f"{pod_mark(pod) & 0xFFFFFF:06x}"


def chain_names(pod: str) -> dict[str, str]:
    return {d: CHAIN_PREFIX[d] + pod_id(pod) for d in base.DIRECTIONS}


def all_chains(pod: str) -> list[str]:
    """Every chain the pod may have: per direction its chain and, while a
    ClusterNetworkPolicy selects it, the tier parts (ipt_host_tiers.py)."""
    return [c for d in ("egress", "ingress") for c in
            [chain_names(pod)[d], *ipt_host_tiers.part_names(chain_names(pod)[d]).values()]]


def is_ours(chain: str) -> bool:
    return chain == HOST_CHAIN or chain.startswith("NPH-")


def is_our_set(name: str) -> bool:
    return bool(_OUR_SET.match(name))


def set_names(fw: PodFirewall) -> dict[str, str]:
    """Pod mode's ipset name -> the node's (unique per pod by its id)."""
    prefix = f"{SET_PREFIX}{pod_id(fw.pod)}."
    out = {}
    for s in fw.sets:
        kind = _kind(s)[0]
        for fam in FAMILIES:
            out[ipset_name(s.name, kind, fam)] = ipset_name(s.name, kind, fam, prefix=prefix)
    return out


def jump_rule() -> tuple[str, ...]:
    return _comment("netpol host mode: a chain per pod") + ("-j", HOST_CHAIN)


def dispatch(fw: PodFirewall, iface: str, family: int) -> tuple[tuple[str, ...], ...]:
    """The pod's rules in NETPOL-HOST: its egress by bridge port, its ingress by address."""
    names = chain_names(fw.pod)
    out = [("-m", "physdev", "--physdev-in", iface) + _comment(f"{fw.pod} egress") + ("-j", names["egress"])]
    for a in fw.ips:
        if base.family_of(a) == family:
            plen = 32 if family == 4 else 128
            out.append(("-d", f"{a.split('/')[0]}/{plen}") + _comment(f"{fw.pod} ingress")
                       + ("-j", names["ingress"]))
    return tuple(out)


def chain_rules(fw: PodFirewall, direction: str, family: int,
                names: dict[str, str] | None = None) -> list[tuple[ir.ChainRule, list[tuple[str, ...]]]]:
    """Each rule of pod mode's chain (ir.chain) with its arguments on the node: the node's
    set names, allow verdicts turned into RETURN, a tier jump into this pod's own tier
    part (ipt_host_tiers.jumps; ``build`` splits a tiered direction at it)."""
    names = set_names(fw) if names is None else names
    to = ipt_host_tiers.jumps(chain_names(fw.pod)[direction]) if ipt_tiers.has_tiers(fw, direction) else {}
    return [(r, [_comment(r.comment) + to[r.tier]] if r.kind == "tier" else  # type: ignore[index]
             [_renamed(args, names) for args in rules])
            for r, rules in ipt_rules(fw, direction, family, allowed="RETURN")]


def _renamed(args: tuple[str, ...], names: dict[str, str]) -> tuple[str, ...]:
    # a set is named only after --match-set: most rules (fixed ones, ports alone) have none
    return tuple(names.get(a, a) for a in args) if "--match-set" in args else args


def pod_chain(fw: PodFirewall, direction: str, family: int,
              names: dict[str, str] | None = None) -> tuple[tuple[str, ...], ...]:
    """The direction's chain as one list (what an untiered direction installs)."""
    return ipt_host_tiers.flat(chain_rules(fw, direction, family, names))


@dataclass(frozen=True)
class PodRules:
    """What one pod puts in its node: its sets, per family its two chains' rules and its
    rules in NETPOL-HOST."""

    pod: str
    sets: tuple[IpSet, ...]
    chains: dict[int, dict[str, tuple[tuple[str, ...], ...]]]
    dispatch: dict[int, tuple[tuple[str, ...], ...]]

    def set_names(self) -> set[str]:
        return {s.name for s in self.sets}


def host_sets(fw: PodFirewall, names: dict[str, str] | None = None) -> tuple[IpSet, ...]:
    names = set_names(fw) if names is None else names
    return tuple(dataclasses.replace(s, name=names[s.name]) for s in render_sets(fw))


def build(fw: PodFirewall, iface: str) -> PodRules:
    names = set_names(fw)
    chains: dict[int, dict[str, tuple[tuple[str, ...], ...]]] = {fam: {} for fam in FAMILIES}
    for fam in FAMILIES:
        for d in ("egress", "ingress"):
            chain, rules = chain_names(fw.pod)[d], chain_rules(fw, d, fam, names)
            if ipt_tiers.has_tiers(fw, d):
                chains[fam].update(ipt_host_tiers.split(fw, d, fam, chain, rules, names))
            else:
                chains[fam][chain] = ipt_host_tiers.flat(rules)
    return PodRules(fw.pod, host_sets(fw, names), chains, {fam: dispatch(fw, iface, fam) for fam in FAMILIES})


def sets_only(fw: PodFirewall) -> PodRules:
    """The pod's sets alone: what a set-element delta needs (rendering chains is ~10 ms)."""
    return PodRules(fw.pod, host_sets(fw), {}, {})


def _owner(args: tuple[str, ...]) -> str | None:
    """The pod id a NETPOL-HOST rule jumps to."""
    target = args[args.index("-j") + 1] if "-j" in args else ""
    for prefix in CHAIN_PREFIX.values():
        if target.startswith(prefix):
            return target[len(prefix):]
    return None


def family_text(family: int, install: Sequence[PodRules], remove: Sequence[str],
                state: FamilyState) -> str:
    """iptables-restore --noflush input for one family of a node: ``install`` pods'
    chains refilled and their dispatch rules made right, ``remove`` pods (keys) taken out,
    every other pod untouched. ``state`` is the family's listing just read."""
    lines = ["*filter"]
    fresh = HOST_CHAIN not in state.chains
    if fresh:  # declaring an existing chain would flush every pod's dispatch rules
        lines.append(f":{HOST_CHAIN} - [0:0]")
    for pr in install:
        lines += [f":{c} - [0:0]" for c in pr.chains[family]]
    if state.jumps.get(HOOK) != [1]:
        lines += [f"-D {HOOK} {n}" for n in sorted(state.jumps.get(HOOK, []), reverse=True)]
        lines.append(rule_line(HOOK, jump_rule(), "-I"))
    # dispatch rules: delete by number (highest first) what is not wanted, append what is missing
    wanted = {pod_id(pr.pod): pr.dispatch[family] for pr in install}
    gone = {pod_id(p) for p in remove}
    have = state.rules.get(HOST_CHAIN, [])
    kept: dict[str, list[tuple[str, ...]]] = {}
    drop = []
    for n, args in enumerate(have, 1):
        owner = _owner(args)
        if owner in gone or (owner in wanted and (args not in wanted[owner] or args in kept.get(owner, []))):
            drop.append(n)
        elif owner in wanted:
            kept.setdefault(owner, []).append(args)
    lines += [f"-D {HOST_CHAIN} {n}" for n in sorted(drop, reverse=True)]
    for pr in install:
        for c, rules in pr.chains[family].items():
            lines += [rule_line(c, a) for a in rules]
        lines += [rule_line(HOST_CHAIN, a) for a in pr.dispatch[family] if a not in kept.get(pod_id(pr.pod), [])]
    # chains no longer wanted (a removed pod's; a pod's tier parts when no tier selects it
    # any more): flushed first, so that nothing jumps to one that is being deleted
    stale = [c for pod in remove for c in all_chains(pod) if c in state.chains]
    stale += [c for pr in install for c in all_chains(pr.pod) if c in state.chains and c not in pr.chains[family]]
    lines += [f"-F {c}" for c in stale] + [f"-X {c}" for c in stale]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_node(pods: Sequence[tuple[PodFirewall, str]], node: str = "") -> str:
    """Everything the node gets for ``pods`` ((firewall, host-side veth) each), as the
    restore tools read it, starting from an empty node."""
    rules = [build(fw, iface) for fw, iface in sorted(pods, key=lambda p: p[0].pod)]
    on = f" on {node}" if node else ""
    out = [f"# iptables host mode{on}: a chain pair per pod, dispatched from {HOST_CHAIN}"]
    for pr in rules:
        names = chain_names(pr.pod)
        out.append(f"# {pr.pod}: {names['egress']} (egress), {names['ingress']} (ingress), "
                   f"sets {SET_PREFIX}{pod_id(pr.pod)}.*")
    out.append("# ipsets (ipset restore; applied by swapping in sets built under temporary names)")
    text = "\n".join(out) + "\n" + sets_text(tuple(s for pr in rules for s in pr.sets))
    for fam in FAMILIES:
        text += (f"# IPv{fam} ({'ip6' if fam == 6 else 'ip'}tables-restore --noflush)\n"
                 + family_text(fam, rules, (), FamilyState()))
    return text
