"""A pod's iptables full apply (backends/ipt_install: the sets over netlink, the tools started
inside the namespace by netns.run_entered), and its rollbacks (root).

Namespaces ``npt-is<pid>-*``, removed at the end; nothing in the host's namespace.
"""
from __future__ import annotations

import itertools
import os
import threading

import pytest

from backends import ipt_install, ipt_libiptc
from backends.iptables import IptablesBackend
from enforcer import netns
from enforcer.errors import ApplyError
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance

pytestmark = pytest.mark.root

PREFIX = f"npt-is{os.getpid()}"
_made = itertools.count()


@pytest.fixture
def ns():
    """A new namespace for each test: iptables-nft leaves its filter table behind once it
    has been used, and a namespace without one is applied another way (unread)."""
    name = f"{PREFIX}-{next(_made)}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)
    assert not netns.list_names(name)


def fw(port: int, *members: str) -> PodFirewall:
    rule = AllowRule(Provenance("x/p", "ingress", 0), peers="in0", ports=(PortMatch("TCP", port),))
    return PodFirewall(pod="x/a", ingress=DirectionPolicy(True, ("x/p",), (rule,)),
                       sets=(AddrSet("in0", v4=tuple(f"{m}/32" for m in members),
                                     v6=("fd00::5/128",)),))


def ipsets(ns: str) -> list[str]:
    return sorted(netns.run(ns, ["ipset", "list", "-n"]).stdout.split())


def test_run_entered_starts_the_tool_inside_the_namespace_and_comes_home(ns):
    home = os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")
    out = netns.run_entered(ns, ["readlink", "/proc/self/ns/net"]).stdout.strip()
    assert out == f"net:[{netns.inode(ns)}]" and out != home
    assert os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net") == home
    assert netns.run_entered(ns, ["sh", "-c", "echo nope >&2; exit 3"]).returncode == 3


def test_step_texts_reach_the_tool_literally(ns):
    # no expansion, no quoting: the text is the tool's stdin
    text = "literal $HOME `id` $(id) 'q' \"d\" \\n NETPOL_STEP_0_ENDX\n NETPOL_STEP_0_END\nlast\n"
    assert netns.run_entered(ns, ["cat"], input=text).stdout == text


@pytest.mark.parametrize("flavour", ["nft", "legacy"])
def test_rules_refused_for_ipv6_roll_back_ipv4_and_the_sets(ns, flavour, monkeypatch):
    b = IptablesBackend(flavour)
    b.check()
    before = fw(80, "10.0.0.1")
    b.apply(ns, before)
    assert b.verify(ns, before)
    if flavour == "nft":
        real = ipt_install._RestoreInstaller._rules_input

        def rules_input(self, rs, family, state):
            text = real(self, rs, family, state)
            return text.replace("COMMIT", "-A NOSUCHCHAIN -j ACCEPT\nCOMMIT") if family == 6 else text

        monkeypatch.setattr(ipt_install._RestoreInstaller, "_rules_input", rules_input)
    else:
        real_install = ipt_libiptc._IptcInstaller.install

        def install(self, netns_, family, rs, state):
            if family == 6:
                raise ipt_install._Refused("refused for the test")
            return real_install(self, netns_, family, rs, state)

        monkeypatch.setattr(ipt_libiptc._IptcInstaller, "install", install)
    after = fw(443, "10.0.0.2", "10.0.0.3")
    try:
        with pytest.raises(ApplyError, match="previous rules stay in force"):
            b.apply(ns, after, before)
        monkeypatch.undo()
        assert b.verify(ns, before)  # IPv4 rules and the set's elements as they were
        assert ipsets(ns) == ["np.in0.ip4", "np.in0.ip6"]  # no temporaries left
    finally:
        monkeypatch.undo()
        b.remove(ns)
    assert ipsets(ns) == []


def test_sets_refused_on_a_first_apply_leave_nothing(ns, monkeypatch):
    b = IptablesBackend("nft")
    b.check()
    bad = fw(80, "10.0.0.1")
    real = ipt_install._RestoreInstaller.install_all

    def install_all(self, netns_, sets, rs, states, cleanup):
        return real(self, netns_, sets + "add np.nosuchset 10.0.0.9\n", rs, states, cleanup)

    monkeypatch.setattr(ipt_install._RestoreInstaller, "install_all", install_all)
    with pytest.raises(ApplyError, match="ipset restore"):
        b.apply(ns, bad)
    monkeypatch.undo()
    assert b.read(ns) is None and ipsets(ns) == []


def test_a_namespace_without_iptables_is_applied_unread_and_one_with_is_read(ns, monkeypatch):
    b = IptablesBackend("nft")
    b.check()
    reads = []
    real = ipt_install._RestoreInstaller.read_all
    monkeypatch.setattr(ipt_install._RestoreInstaller, "read_all",
                        lambda self, n, what: reads.append(n) or real(self, n, what))
    first = fw(80, "10.0.0.1")
    try:
        assert ipt_install.untouched(ns)
        b.apply(ns, first)
        assert reads == []  # cold: nothing read
        assert b.verify(ns, first) and not ipt_install.untouched(ns)
        reads.clear()
        second = fw(443, "10.0.0.2")
        b.apply(ns, second, first)
        assert reads == [ns] and b.verify(ns, second)
    finally:
        b.remove(ns)
    # someone else's iptables rule (no jump of ours): the namespace is read, and kept
    netns.run(ns, ["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"])
    try:
        assert not ipt_install.untouched(ns)
        reads.clear()
        b.apply(ns, first)
        assert reads == [ns] and b.verify(ns, first)
        assert "--dport 9 -j ACCEPT" in netns.run(ns, ["iptables-save", "-t", "filter"]).stdout
    finally:
        b.remove(ns)
        netns.run(ns, ["iptables", "-D", "INPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"])


def test_sets_left_without_rules_make_the_namespace_read(ns):
    # a crash between the sets and the rules: sets of ours, no filter table; the
    # temporary was made with other options (no comment extension), so creating it again
    # would fail: the namespace is read and applied the usual way
    b = IptablesBackend("nft")
    b.check()
    assert ipt_install.untouched(ns)
    netns.run(ns, ["ipset", "create", "nt.in0.ip4", "hash:ip", "family", "inet"])
    assert not ipt_install.untouched(ns)
    netns.run(ns, ["ipset", "destroy", "nt.in0.ip4"])
    netns.run(ns, ["ipset", "create", "other", "hash:ip"])  # not ours: does not count
    assert ipt_install.untouched(ns)
    netns.run(ns, ["ipset", "create", "nt.in0.ip4", "hash:ip", "family", "inet"])
    netns.run(ns, ["ipset", "create", "np.gone.ip4", "hash:ip", "family", "inet"])
    try:
        first = fw(80, "10.0.0.1")
        b.apply(ns, first)
        assert b.verify(ns, first)
        assert ipsets(ns) == ["np.in0.ip4", "np.in0.ip6", "other"]  # our leftovers are gone
    finally:
        b.remove(ns)
    assert ipsets(ns) == ["other"]


def test_rules_refused_on_a_first_apply_leave_nothing(ns, monkeypatch):
    b = IptablesBackend("nft")
    b.check()
    real = ipt_install._RestoreInstaller._rules_input
    monkeypatch.setattr(ipt_install._RestoreInstaller, "_rules_input", lambda self, rs, family, state: (
        real(self, rs, family, state).replace("COMMIT", "-A NOSUCHCHAIN -j ACCEPT\nCOMMIT") if family == 6
        else real(self, rs, family, state)))
    assert ipt_install.untouched(ns)
    with pytest.raises(ApplyError, match="previous rules stay in force"):
        b.apply(ns, fw(80, "10.0.0.1"))
    monkeypatch.undo()
    assert b.read(ns) is None and ipsets(ns) == []
