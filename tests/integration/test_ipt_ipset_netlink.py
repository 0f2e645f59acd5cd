"""The iptables backend's sets over netlink (backends/ipset_netlink.py) against the ipset
tool, in real namespaces (root): the same ``ipset restore`` text into two namespaces, one
through the tool, one over netlink, and ``ipset save`` of both compared (the random
``initval`` aside, lines sorted: a hash set lists in its hash order). Then the fallbacks
and the order guarantees (no swap after a refused line).

Namespaces ``npt-isn<pid>-*``, removed at the end; nothing in the host's namespace.
"""
from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings

from backends import ipset_netlink as inl, ipt_install
from backends.ipt_render import TMP_PREFIX, build, delta_text, sets_text
from enforcer import netns
from tests.integration.nft_pair import each_example, example_firewalls
from tests.integration.test_nft_netlink import firewalls

pytestmark = pytest.mark.root

PREFIX = f"npt-isn{os.getpid()}"
TOOL, NL = f"{PREFIX}-tool", f"{PREFIX}-nl"


@pytest.fixture(scope="module")
def pair():
    made = []
    try:
        for n in (TOOL, NL):
            netns.create(n)
            made.append(n)
        yield TOOL, NL
    finally:
        for n in made:
            netns.remove(n)
    assert not netns.list_names(PREFIX)


def saved(ns: str) -> list[str]:
    text = netns.run(ns, ["ipset", "save"]).stdout
    return sorted(re.sub(r" initval 0x[0-9a-f]+", "", text).splitlines())


def reset(*names: str) -> None:
    for n in names:
        netns.run(n, ["ipset", "destroy"])  # every set of this namespace (ours: made above)


def same(pair, *texts: str) -> None:
    """Each text into both namespaces in turn; the listings equal after each."""
    for i, text in enumerate(texts):
        tool = netns.run(pair[0], ["ipset", "-exist", "restore"], input=text, check=False)
        assert tool.returncode == 0, tool.stderr
        inl.restore(pair[1], text)
        assert saved(pair[1]) == saved(pair[0]), f"text {i} differs:\n{text[:2000]}"


def swap_text(old_names: set[str], rs) -> str:
    """What IptablesBackend._full_from sends over sets that exist already: temporaries
    built, swapped into place (new live sets created), then the cleanup."""
    build_lines, swap_lines = [], []
    for s in rs.sets:
        build_lines += [s.create(s.tmp), f"flush {s.tmp}"] + [s.add(e, s.tmp) for e in s.elements]
        swap_lines += [s.create()] * (s.name not in old_names) + [f"swap {s.tmp} {s.name}"]
    return "\n".join(build_lines + swap_lines) + "\n"


def cleanup_text(old_names: set[str], rs) -> str:
    stale = sorted(n for n in old_names if n not in rs.set_names())
    return "".join(f"destroy {s.tmp}\n" for s in rs.sets) + "".join(f"destroy {n}\n" for n in stale)


def cold_then_warm(pair, first, second) -> None:
    reset(*pair)
    a, b = build(first), build(second)
    same(pair, sets_text(a.sets))
    if {(s.name, s.type) for s in a.sets} == {(s.name, s.type) for s in b.sets}:
        same(pair, delta_text(a, b)[0] or "\n")
        reset(*pair)
        same(pair, sets_text(a.sets))
    names = a.set_names()
    same(pair, swap_text(names, b), cleanup_text(names, b))


@each_example
def test_examples(pair, paths):
    fws = example_firewalls(paths)
    seen = set()
    for fw in fws:
        text = sets_text(build(fw).sets)
        if text in seen:
            continue
        seen.add(text)
        reset(*pair)
        same(pair, text)
    if len(fws) > 1:
        cold_then_warm(pair, fws[0], fws[-1])


def test_benchmark_pods(pair):
    from benchmarks.bench_apply import firewall

    for i in (0, 7):
        cold_then_warm(pair, firewall(i, 110, 20, 50), firewall(i, 110, 20, 51))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=firewalls(), second=firewalls())
def test_random_firewalls(pair, first, second):
    cold_then_warm(pair, first, second)


# ---------------------------------------------------------------------------------------
# refusals, fallbacks, order


def names(ns: str) -> list[str]:
    return sorted(netns.run(ns, ["ipset", "list", "-n"]).stdout.split())


def members(ns: str, name: str) -> list[str]:
    return sorted(ln.split()[2] for ln in netns.run(ns, ["ipset", "save", name]).stdout.splitlines()
                  if ln.startswith("add "))


LIVE = "create np.a.ip4 hash:ip family inet comment\nadd np.a.ip4 10.9.9.9\n"


def test_no_swap_after_a_refused_line(pair):
    ns = pair[1]
    reset(ns)
    inl.restore(ns, LIVE)
    text = ("create nt.a.ip4 hash:ip family inet comment\nadd nt.a.ip4 10.0.0.1\n"
            "add np.missing.ip4 10.0.0.2\nswap nt.a.ip4 np.a.ip4\n")
    with pytest.raises(inl.Refused, match="line 3: add np.missing.ip4") as e:
        inl.restore(ns, text)
    assert not e.value.swapped
    assert members(ns, "np.a.ip4") == ["10.9.9.9"]  # the half-built temporary never went live


def test_a_refusal_after_a_swap_says_so_and_is_not_run_again(pair):
    ns = pair[1]
    reset(ns)
    inl.restore(ns, LIVE)
    text = ("create nt.a.ip4 hash:ip family inet comment\nadd nt.a.ip4 10.0.0.1\nswap nt.a.ip4 np.a.ip4\n"
            "add np.missing.ip4 10.0.0.2\n")
    with pytest.raises(inl.Refused) as e:
        inl.restore(ns, text)
    assert e.value.swapped
    assert members(ns, "np.a.ip4") == ["10.0.0.1"] and members(ns, "nt.a.ip4") == ["10.9.9.9"]
    with pytest.raises(ipt_install._Refused, match="over netlink"):
        ipt_install.ipset_restore(ns, text, "sets")
    # swapped once more over netlink (the temporary held both), and not again by the tool
    assert members(ns, "np.a.ip4") == ["10.0.0.1", "10.9.9.9"] and members(ns, "nt.a.ip4") == ["10.0.0.1"]


def test_a_refusal_before_any_swap_is_run_again_by_the_tool(pair, monkeypatch):
    ns = pair[1]
    reset(ns)
    with pytest.raises(ipt_install._Refused) as e:
        ipt_install.ipset_restore(ns, LIVE + "add np.missing.ip4 10.0.0.2\n", "sets")
    assert "ipset restore (sets)" in str(e.value) and "over netlink: line 3" in str(e.value)
    # a refusal the tool does not share (forced here): the tool's run is the apply
    reset(ns)
    real = inl._send

    def refuse(s, lines, quiet):
        raise inl.Refused("refused for the test", False)

    monkeypatch.setattr(inl, "_send", refuse)
    ipt_install.ipset_restore(ns, LIVE, "sets")
    monkeypatch.setattr(inl, "_send", real)
    assert members(ns, "np.a.ip4") == ["10.9.9.9"]


def test_lines_it_does_not_speak_go_to_the_tool(pair):
    ns = pair[1]
    reset(ns)
    text = "create np.a.ip4 hash:ip family inet hashsize 64 comment\nadd np.a.ip4 10.0.0.1\n"
    with pytest.raises(inl.Unsupported):
        inl.restore(ns, text)
    assert names(ns) == []  # nothing sent
    ipt_install.ipset_restore(ns, text, "sets")
    assert "hashsize 64" in netns.run(ns, ["ipset", "save"]).stdout


def test_a_quiet_cleanup_sends_every_line(pair):
    ns = pair[1]
    reset(ns)
    inl.restore(ns, LIVE + "create np.b.ip4 hash:ip family inet comment\n")
    ipt_install.ipset_quietly(ns, "destroy np.gone.ip4\ndestroy np.a.ip4\ndestroy nt.gone.ip4\ndestroy np.b.ip4\n")
    assert names(ns) == []


def test_sets_are_made_in_the_namespace_only(pair):
    ns = pair[1]
    reset(ns)
    name = f"np.host{os.getpid()}.ip4"
    inl.restore(ns, f"create {name} hash:ip family inet comment\n")
    assert names(ns) == [name]
    host = os.popen("ipset list -n").read().split()  # (a read of the host's sets)
    assert name not in host and not any(n.startswith(TMP_PREFIX + f"host{os.getpid()}") for n in host)


def test_no_socket_is_the_tools_job_and_lost_answers_after_a_swap_count_as_swapped(pair, monkeypatch):
    ns = pair[1]
    reset(ns)

    def no_socket(netns_):
        raise PermissionError(1, "no netlink for the test")

    monkeypatch.setattr(inl, "_open", no_socket)
    ipt_install.ipset_restore(ns, LIVE, "sets")  # the tool did it
    monkeypatch.undo()
    assert members(ns, "np.a.ip4") == ["10.9.9.9"]

    def lost(s, first, last):
        raise TimeoutError("answers lost for the test")

    monkeypatch.setattr(inl, "_acks", lost)
    with pytest.raises(inl.Refused) as e:
        inl.restore(ns, "create nt.a.ip4 hash:ip family inet comment\n")
    assert not e.value.swapped
    monkeypatch.undo()
    reset(ns)
    inl.restore(ns, LIVE + "create nt.a.ip4 hash:ip family inet comment\n")
    monkeypatch.setattr(inl, "_acks", lost)
    with pytest.raises(inl.Refused) as e:
        inl.restore(ns, "swap nt.a.ip4 np.a.ip4\n")
    assert e.value.swapped  # (it did happen: the kernel got the message)
    monkeypatch.undo()
    assert members(ns, "np.a.ip4") == [] and members(ns, "nt.a.ip4") == ["10.9.9.9"]
