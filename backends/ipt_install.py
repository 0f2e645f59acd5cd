"""Installing a pod's iptables rules with ``iptables-restore --noflush`` (the "nft" flavour:
the host's iptables, iptables-nft on Debian 12), and reading them back with
``iptables-save``. backends/ipt_libiptc.py is the legacy flavour's installer.

An installer works on one family's filter table of one namespace: ``install`` writes our
chains and fixes the hooks' jumps in one transaction, ``restore_state`` puts back what a
listing showed (a rollback), ``remove`` takes all of ours out.
"""
from __future__ import annotations

import shlex

from backends import ipt_tiers
from backends.ipt_render import FAMILIES, OWN_CHAINS, Ruleset, rule_line, rules_text
from backends.ipt_save import FamilyState, parse_save
from enforcer import netns as nsmod
from enforcer.errors import BackendError


class _Refused(Exception):
    """The kernel or a tool refused a change (the caller rolls back or reports it)."""


def ipset_restore(netns: str, text: str, what: str) -> None:
    """One ``ipset -exist restore`` of ``text`` in ``netns`` (raises _Refused)."""
    if not text:
        return
    proc = nsmod.run(netns, ["ipset", "-exist", "restore"], input=text, check=False)
    if proc.returncode != 0:
        raise _Refused(f"ipset restore ({what}): {proc.stderr.strip()}")


def ipset_quietly(netns: str, text: str) -> None:
    """Best-effort cleanup: a line that fails must not stop the others."""
    if not text:
        return
    try:
        ipset_restore(netns, text, "cleanup")
    except _Refused:
        for line in text.splitlines():
            nsmod.run(netns, ["ipset", "-exist"] + line.split(), check=False)


class StepFailed(Exception):
    """A full apply's step was refused: ``stage`` "sets" (nothing of the rules changed) or
    "rules" (``done``: the families already written), the tool's message."""

    def __init__(self, stage: str, done: tuple[int, ...], message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.done = done


def run_steps(netns: str, steps: list[tuple[list[str], str]]) -> tuple[int, str] | None:
    """Run the tools of ``steps`` one after the other in ONE shell inside ``netns``, each
    fed its text as a here-document, stopping at the first that fails: None when all
    succeeded, else (index of the step that failed, the tools' stderr). Why one shell: a
    process started from Python through nsenter costs ~2 ms of CPU before the tool runs
    (two execs), a shell's child much less, and a cold apply of a pod was six of them.
    Steps with no text are skipped. The script goes in on stdin (an argument is limited
    to 128 KiB, a pod's sets are not)."""
    script = []
    for i, (argv, text) in enumerate(steps):
        if not text:
            continue
        end = f"NETPOL_STEP_{i}_END"  # no line of ipset or iptables-restore input is this
        body = text if text.endswith("\n") else text + "\n"
        script.append(f"{' '.join(shlex.quote(a) for a in argv)} <<'{end}' || exit {100 + i}\n{body}{end}\n")
    if not script:
        return None
    proc = nsmod.run(netns, ["sh", "-s"], input="".join(script) + "exit 0\n", check=False)
    if proc.returncode == 0:
        return None
    if 100 <= proc.returncode < 100 + len(steps):
        return proc.returncode - 100, proc.stderr.strip()
    raise _Refused(f"sh in {netns} exited {proc.returncode}: {proc.stderr.strip()}")


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
        proc = nsmod.run(netns, [self.restore[family], "--noflush"], input=self._rules_input(rs, family, state),
                         check=False)
        if proc.returncode != 0:
            raise _Refused(proc.stderr.strip())

    def install_all(self, netns: str, sets: str, rs: Ruleset, states: dict[int, FamilyState], cleanup: str) -> None:
        """A full apply's steps in one shell (run_steps): ``ipset restore`` of ``sets``
        (build and swap), each family's rules, then ``cleanup`` (best effort: a line that
        fails is retried alone, the others still run). Raises StepFailed; the caller rolls
        back."""
        steps = [(["ipset", "-exist", "restore"], sets)]
        steps += [([self.restore[f], "--noflush"], self._rules_input(rs, f, states[f])) for f in FAMILIES]
        steps.append((["ipset", "-exist", "restore"], cleanup))
        failed = run_steps(netns, steps)
        if failed is None:
            return
        i, err = failed
        if i == 0:
            raise StepFailed("sets", (), f"ipset restore: {err}")
        if i <= len(FAMILIES):
            raise StepFailed("rules", FAMILIES[:i - 1], err)
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
