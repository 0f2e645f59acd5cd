"""Installing a pod's iptables rules with ``iptables-restore --noflush`` (the "nft" flavour:
the host's iptables, iptables-nft on Debian 12), and reading them back with
``iptables-save``. backends/ipt_libiptc.py is the legacy flavour's installer.

An installer works on one family's filter table of one namespace: ``install`` writes our
chains and fixes the hooks' jumps in one transaction, ``restore_state`` puts back what a
listing showed (a rollback), ``remove`` takes all of ours out.
"""
from __future__ import annotations

import socket

from backends import ipset_netlink, ipt_tiers
from backends.ipt_render import FAMILIES, OWN_CHAINS, SET_PREFIX, TMP_PREFIX, Ruleset, rule_line, rules_text
from backends.ipt_save import FamilyState, parse_save
from enforcer import netns as nsmod, nfnetlink as nfnl
from enforcer.errors import BackendError


class _Refused(Exception):
    """The kernel or a tool refused a change (the caller rolls back or reports it)."""


def ipset_restore(netns: str, text: str, what: str) -> None:
    """``ipset -exist restore`` of ``text`` in ``netns`` (raises _Refused): over netlink
    from this process (backends/ipset_netlink.py), through the ipset tool when the encoder
    does not speak a line, or when the kernel refused a line before any swap (the text is
    then run again by the tool, whose refusal names both; after a swap it would undo it)."""
    if not text:
        return
    try:
        ipset_netlink.restore(netns, text)
        return
    except ipset_netlink.Unsupported:
        pass
    except ipset_netlink.Refused as e:
        if e.swapped:
            raise _Refused(f"ipset restore ({what}, over netlink): {e}") from e
        try:
            ipset_tool(netns, text, what)
        except _Refused as t:
            raise _Refused(f"{t}\n(over netlink: {e})") from e
        return
    ipset_tool(netns, text, what)


def ipset_tool(netns: str, text: str, what: str) -> None:
    """One ``ipset -exist restore`` process in ``netns`` (raises _Refused)."""
    proc = nsmod.run_entered(netns, ["ipset", "-exist", "restore"], input=text)
    if proc.returncode != 0:
        raise _Refused(f"ipset restore ({what}): {proc.stderr.strip()}")


def ipset_quietly(netns: str, text: str) -> None:
    """Best-effort cleanup: a line that fails must not stop the others (over netlink every
    line is sent whatever the kernel says to the others)."""
    if not text:
        return
    try:
        ipset_netlink.restore(netns, text, quiet=True)
        return
    except (ipset_netlink.Unsupported, ipset_netlink.Refused):
        pass
    try:
        ipset_tool(netns, text, "cleanup")
    except _Refused:
        for line in text.splitlines():
            nsmod.run_entered(netns, ["ipset", "-exist"] + line.split())


class StepFailed(Exception):
    """A full apply's step was refused: ``stage`` "sets" (nothing of the rules changed) or
    "rules" (``done``: the families already written), the tool's message."""

    def __init__(self, stage: str, done: tuple[int, ...], message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.done = done


NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, NFTA_TABLE_NAME = 1, 0, 1
NFNL_SUBSYS_IPSET, IPSET_CMD_LIST, IPSET_PROTOCOL = 6, 7, 7
IPSET_ATTR_PROTOCOL, IPSET_ATTR_SETNAME, IPSET_ATTR_FLAGS, IPSET_FLAG_LIST_SETNAME = 1, 2, 6, 1 << 1
NLM_F_DUMP = 0x300
IPT_FAMILIES = {socket.AF_INET, socket.AF_INET6}  # NFPROTO_IPV4 / _IPV6 share the numbers


def untouched(netns: str) -> bool:
    """Whether ``netns`` holds nothing an iptables-nft apply must read first: no
    ``filter`` table of family ip or ip6 in nf_tables (where iptables-nft keeps every
    filter rule, ours and anyone's jumps) and no ipset of ours (np.*, nt.*: a crash may
    leave some without rules). Two netlink dumps from this process instead of
    iptables-save twice and ipset list (~8 ms of CPU in processes). False when an answer
    cannot be read: the caller then reads the usual way."""
    try:
        with nsmod.entered(netns):
            s = nfnl.open_socket(timeout=2.0)
    except OSError:
        return False
    tables = nfnl.nf_message(nfnl.type_of(nfnl.NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE),
                             nfnl.NLM_F_REQUEST | NLM_F_DUMP, 1, socket.AF_UNSPEC)
    ipsets = nfnl.message(nfnl.type_of(NFNL_SUBSYS_IPSET, IPSET_CMD_LIST), nfnl.NLM_F_REQUEST | NLM_F_DUMP, 2,
                          nfnl.nfgenmsg(socket.AF_INET) + nfnl.attr(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
                          + nfnl.attr(IPSET_ATTR_FLAGS | nfnl.NLA_F_NET_BYTEORDER,
                                      IPSET_FLAG_LIST_SETNAME.to_bytes(4, "big")))
    try:
        for request, ours in ((tables, _iptables_table), (ipsets, _our_ipset)):
            s.send(request)
            if _dump_finds(s, ours):
                return False
        return True
    except (OSError, ValueError):
        return False
    finally:
        s.close()


def _dump_finds(s: socket.socket, wanted) -> bool:
    """Read a dump's answers to its end: whether ``wanted(kind, body)`` held for one (an
    error answer counts as found: the caller must not trust the dump)."""
    found = False
    while True:
        for kind, _seq, body in nfnl.split_messages(s.recv(1 << 16)):
            if kind == nfnl.NLMSG_DONE:
                return found
            if kind == nfnl.NLMSG_ERROR:
                return True
            found = found or wanted(kind, body)


def _iptables_table(kind: int, body: bytes) -> bool:
    if kind != nfnl.type_of(nfnl.NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE):
        return False
    family, _, attrs = nfnl.parse_nfgenmsg(body)
    return family in IPT_FAMILIES and nfnl.parse_attrs(attrs).get(NFTA_TABLE_NAME, b"").rstrip(b"\0") == b"filter"


def _our_ipset(kind: int, body: bytes) -> bool:
    name = nfnl.parse_attrs(nfnl.parse_nfgenmsg(body)[2]).get(IPSET_ATTR_SETNAME, b"").decode(errors="replace")
    return kind == nfnl.type_of(NFNL_SUBSYS_IPSET, IPSET_CMD_LIST) and name.startswith((SET_PREFIX, TMP_PREFIX))


class _RestoreInstaller:
    """The host's iptables (iptables-nft on Debian 12): iptables-restore --noflush."""

    flavour = "nft"
    save = {4: "iptables-save", 6: "ip6tables-save"}
    restore = {4: "iptables-restore", 6: "ip6tables-restore"}

    def tools(self) -> list[str]:
        return [*self.save.values(), *self.restore.values()]

    def _rules_input(self, rs: Ruleset, family: int, state: FamilyState) -> str:
        return rules_text(rs, family, jumps=not state.jumps_ok(),
                          delete_jumps=None if state.jumps_ok() else state.jumps,
                          drop_chains=tuple(c for c in ipt_tiers.ALL if c in state.chains and c not in rs.rules[family]))

    def install(self, netns: str, family: int, rs: Ruleset, state: FamilyState) -> None:
        proc = nsmod.run_entered(netns, [self.restore[family], "--noflush"],
                                 input=self._rules_input(rs, family, state))
        if proc.returncode != 0:
            raise _Refused(proc.stderr.strip())

    def fresh(self, netns: str) -> bool:
        """Whether ``netns`` holds nothing of iptables-nft nor sets of ours (untouched):
        then its state is known without reading it."""
        return untouched(netns)

    def install_all(self, netns: str, sets: str, rs: Ruleset, states: dict[int, FamilyState], cleanup: str) -> None:
        """A full apply's steps: the sets (``sets``, build and swap: ipset_restore, over
        netlink), each family's rules (``install``: iptables-restore started inside the
        namespace, no nsenter nor shell: netns.run_entered; the legacy flavour writes them
        in-process, backends/ipt_libiptc.py), then ``cleanup`` (best effort: a line that
        fails does not stop the others). Raises StepFailed; the caller rolls back. Two
        processes a pod (a cold pod was five: nsenter, a shell and three tools)."""
        try:
            ipset_restore(netns, sets, "sets")
        except _Refused as e:
            raise StepFailed("sets", (), str(e)) from e
        done: list[int] = []
        for fam in FAMILIES:
            try:
                self.install(netns, fam, rs, states[fam])
            except _Refused as e:
                raise StepFailed("rules", tuple(done), str(e)) from e
            done.append(fam)
        ipset_quietly(netns, cleanup)

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
        proc = nsmod.run_entered(netns, [self.restore[family], "--noflush"], input="\n".join(lines) + "\n")
        if proc.returncode != 0:
            raise _Refused(proc.stderr.strip())

    def remove(self, netns: str, family: int) -> None:
        st = self.read_state(netns, family)
        if not st.has_ours() and not st.jumps:
            return
        self.restore_state(netns, family, FamilyState())

    def save_text(self, netns: str, family: int, counters: bool = False) -> str:
        argv = [self.save[family], "-t", "filter"] + (["-c"] if counters else [])
        proc = nsmod.run_entered(netns, argv)
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
        proc = nsmod.run_entered(netns, ["sh", "-c", script])
        parts = proc.stdout.split(mark + "\n")
        if proc.returncode != 0 or len(parts) != 3:
            raise BackendError(f"reading the firewall of {netns} failed: {proc.stderr.strip()}")
        return {4: parse_save(parts[0]), 6: parse_save(parts[1])}, parts[2]
