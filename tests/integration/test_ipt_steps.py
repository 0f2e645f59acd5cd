"""A pod's iptables full apply as steps in one shell (backends/ipt_install.run_steps), and
its rollbacks (root).

Namespaces ``npt-is<pid>-*``, removed at the end; nothing in the host's namespace.
"""
from __future__ import annotations

import os

import pytest

from backends import ipt_install, ipt_libiptc
from backends.iptables import IptablesBackend
from enforcer import netns
from enforcer.errors import ApplyError
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance

pytestmark = pytest.mark.root

PREFIX = f"npt-is{os.getpid()}"
NS = f"{PREFIX}-a"


@pytest.fixture(scope="module")
def ns():
    netns.create(NS)
    try:
        yield NS
    finally:
        netns.remove(NS)
    assert not netns.list_names(PREFIX)


def fw(port: int, *members: str) -> PodFirewall:
    rule = AllowRule(Provenance("x/p", "ingress", 0), peers="in0", ports=(PortMatch("TCP", port),))
    return PodFirewall(pod="x/a", ingress=DirectionPolicy(True, ("x/p",), (rule,)),
                       sets=(AddrSet("in0", v4=tuple(f"{m}/32" for m in members),
                                     v6=("fd00::5/128",)),))


def ipsets(ns: str) -> list[str]:
    return sorted(netns.run(ns, ["ipset", "list", "-n"]).stdout.split())


def test_steps_stop_at_the_first_refusal_and_say_which(ns):
    ok = (["sh", "-c", "cat >/dev/null"], "x\n")
    bad = (["sh", "-c", "cat >/dev/null; echo nope >&2; exit 3"], "y\n")
    marker = f"/tmp/{PREFIX}-ran"
    after = (["sh", "-c", f"cat >/dev/null; touch {marker}"], "z\n")
    assert ipt_install.run_steps(ns, [ok, ok]) is None
    assert ipt_install.run_steps(ns, [ok, bad, after]) == (1, "nope")
    assert not os.path.exists(marker)  # nothing runs after the refused step
    assert ipt_install.run_steps(ns, [(["false"], "")]) is None  # a step without text is skipped


def test_step_texts_reach_the_tool_literally(ns):
    # no expansion, no quoting, and a line that only looks like the here-document's end
    text = "literal $HOME `id` $(id) 'q' \"d\" \\n NETPOL_STEP_0_ENDX\n NETPOL_STEP_0_END\nlast\n"
    out = f"/tmp/{PREFIX}-text"
    assert ipt_install.run_steps(ns, [(["sh", "-c", f"cat > {out}"], text)]) is None
    try:
        with open(out) as f:
            assert f.read() == text
    finally:
        os.unlink(out)


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
