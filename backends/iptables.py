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
sets are swapped back: the previous rules and elements stay in force. The ``ipset
restore`` steps go over netlink from this process (backends/ipset_netlink.py: the same
lines as ipset netlink messages, no swap after a refused line; the ipset tool when the
encoder does not speak a line or the kernel refused one before any swap), and the
"nft" flavour's iptables-restore runs are started inside the namespace without nsenter
nor a shell (netns.run_entered), after one process that reads the namespace's state. A
namespace without any iptables-nft filter table nor ipset of ours (a cold apply: two
netlink dumps say so, ipt_install.untouched) is not read at all, and its sets are made
under their own names: two processes a pod (iptables-restore, ip6tables-restore; five
before issue 15's last round: nsenter, a shell and three tools). Honest limit: the sets
and the rules change in separate transactions, so for about a millisecond the old
rules see the new elements (nftables has no such window).

A delta is one ``ipset restore`` of ``del`` and ``add`` lines (``-exist``: idempotent),
over netlink: no process at all.

This module is the Backend (and re-exports the public names below); the work is in
ipt_render.py (the rules and sets, pure), ipt_save.py (reading save listings back, pure),
ipt_install.py (iptables-restore), ipset_netlink.py (ipset restore over netlink) and
ipt_libiptc.py (python-iptables), ipt_tiers.py (the
ClusterNetworkPolicy tier chains); ipt_host.py is the node's placement (host mode).
"""
from __future__ import annotations

import shutil
import threading

from backends import base
from backends.base import ApplyResult, plan
# The public names of the iptables backend, wherever they now live: callers (tests,
# benchmarks, ipt_tiers) keep importing them from here.
from backends.ipt_install import StepFailed, _Refused, _RestoreInstaller, ipset_quietly, ipset_restore
from backends.ipt_libiptc import _IptcInstaller
from backends.ipt_render import (  # noqa: F401
    CHAINS, COMMENT_MAX, FAMILIES, HOOKS, MULTIPORT_MAX, OWN_CHAINS, SET_PREFIX, TMP_PREFIX,
    IpSet, Ruleset, _comment, _port_matches, build, delta_text, ipset_name, jump_rule,
    match_args, quote, render, render_allow, render_chain, render_sets, rule_line, rules_text,
    set_elements, sets_text)
from backends.ipt_save import FamilyState, counters_of, matches, parse_ipset_save, parse_save  # noqa: F401
from enforcer import netns as nsmod
from enforcer.errors import ApplyError, BackendError, BackendUnavailable
from enforcer.ir import PodFirewall


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
        ipset_restore(netns, text, what)

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
        if inst.fresh(netns):
            # Nothing of iptables nor sets of ours in the namespace (a cold apply, asked
            # over netlink): its state is known without the three reading tools, and the
            # sets are made under their own names (nothing to swap with, nothing to clean).
            self._full_from(netns, fw, rs, {f: FamilyState() for f in FAMILIES}, set(), unread=True)
            return
        states, listing = inst.read_all(netns, "list -n")
        self._full_from(netns, fw, rs, states, {n for n in listing.split() if n[:3] in (SET_PREFIX, TMP_PREFIX)})

    def _full_from(self, netns: str, fw: PodFirewall, rs: Ruleset, states: dict[int, FamilyState],
                   existing: set[str], unread: bool = False) -> None:
        """The full apply, given the namespace's rules (``states``) and our ipsets in it
        (``existing``); ``unread``: the namespace holds neither (untouched)."""
        inst = self._inst()
        fresh = [s.name for s in rs.sets if s.name not in existing]
        build_lines: list[str] = []
        swap_lines: list[str] = []
        if unread:
            for s in rs.sets:
                build_lines += [s.create()] + [s.add(e) for e in s.elements]
        for s in rs.sets if not unread else ():
            # 1. build under temporary names, swap into place (tmp keeps the old
            # elements). A temporary left by a crash may lack the comment extension:
            # create fails on a same-named set with other options, even with -exist.
            build_lines += [f"destroy {s.tmp}"] * (s.tmp in existing)
            build_lines += [s.create(s.tmp), f"flush {s.tmp}"] + [s.add(e, s.tmp) for e in s.elements]
            # Only new live sets are created: one made by an older version (no comment
            # extension) swaps fine with the new temporary, but cannot be "created" again.
            swap_lines += [s.create()] * (s.name in fresh) + [f"swap {s.tmp} {s.name}"]
        tmps = "" if unread else "".join(f"destroy {s.tmp}\n" for s in rs.sets)
        # 3. (after the rules) drop the temporaries and the sets no rule refers to any more
        stale = sorted(n for n in existing if n.startswith(SET_PREFIX) and n not in rs.set_names())
        stale_tmp = sorted(n for n in existing if n.startswith(TMP_PREFIX))
        cleanup = tmps + "".join(f"destroy {n}\n" for n in stale + stale_tmp)
        # 1, 2 and 3 in one go (install_all): sets built and swapped in one ``ipset
        # restore`` (over netlink), then the rules, one transaction per family, then the
        # cleanup; on a refusal, roll back what was done
        try:
            inst.install_all(netns, "\n".join(build_lines + swap_lines) + "\n", rs, states, cleanup)
        except StepFailed as e:
            for fam in e.done:
                try:
                    inst.restore_state(netns, fam, states[fam])
                except _Refused:
                    pass
            swap_back = "" if e.stage == "sets" else "".join(
                f"swap {s.tmp} {s.name}\n" for s in rs.sets if s.name not in fresh)
            self._quietly(netns, swap_back + tmps + "".join(f"destroy {n}\n" for n in fresh))
            raise ApplyError(f"{self.name}: applying the firewall of {fw.pod} in {netns} failed; "
                             f"the previous rules stay in force:\n{e}") from e

    def _quietly(self, netns: str, text: str) -> None:
        ipset_quietly(netns, text)

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
