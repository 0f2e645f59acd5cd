"""The legacy x_tables flavour's installer: python-iptables (libiptc) with the thread
inside the pod's namespace, autocommit off, one commit per family (``--backend
iptables-legacy``; ``iptables-legacy-save`` shows the result). Reading back goes through
the save tools, as for the nft flavour (backends/ipt_install.py).

python-iptables 1.2.0 needs three repairs, each explained where it is made: rule classes
that look for user chains in our table only, exact interface masks, scratch buffers kept
alive while a rule is built.
"""
from __future__ import annotations

import threading

from backends.ipt_install import _Refused, _RestoreInstaller
from backends.ipt_render import HOOKS, OWN_CHAINS, Ruleset, jump_rule
from backends.ipt_save import FamilyState
from enforcer import netns as nsmod
from enforcer.errors import BackendError, BackendUnavailable


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

    def fresh(self, netns: str) -> bool:
        return False  # x_tables are not in nf_tables: always read (iptables-legacy-save)

    def restore_state(self, netns: str, family: int, state: FamilyState) -> None:
        chains = {c: tuple(state.rules.get(c, [])) for c in OWN_CHAINS if c in state.chains}
        self._write(netns, family, chains, state.jump_args, self.read_state(netns, family))

