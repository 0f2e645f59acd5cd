"""Host mode's pieces of the daemon without root: the netlink messages it builds and
parses, the resolver's choice of a pod's veth, and what a switch or a gone pod leaves."""
from __future__ import annotations

import socket
import struct

import pytest

from enforcer import nfnetlink
from enforcer.daemon import hostside
from enforcer.daemon.enforcepoint import EnforcePoint
from enforcer.daemon.hostside import NodeSide
from enforcer.daemon.reconcile import Managed, Outcome
from enforcer.errors import BackendError, BackendUnavailable


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((-n) % 4)


def _msg(kind: int, body: bytes, flags: int = 2) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 1, 0) + body


def test_nsid_request_carries_the_fd_and_the_reply_is_read():
    req = hostside.nsid_request(7, 3)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", req)
    assert (length, kind, flags, seq) == (len(req), hostside.RTM_GETNSID, hostside.NLM_F_REQUEST, 3)
    assert struct.unpack_from("=HHI", req, 20) == (8, hostside.NETNSA_FD, 7)
    reply = _msg(hostside.RTM_NEWNSID, b"\0\0\0\0" + _attr(hostside.NETNSA_NSID, struct.pack("=i", 4)))
    assert hostside.parse_nsid(reply) == 4
    unassigned = _msg(hostside.RTM_NEWNSID, b"\0\0\0\0" + _attr(hostside.NETNSA_NSID, struct.pack("=i", -1)))
    assert hostside.parse_nsid(unassigned) is None
    assert hostside.parse_nsid(_msg(hostside.NLMSG_ERROR, struct.pack("=i", -22) + b"\0" * 16)) is None


def test_link_dump_is_parsed_and_an_error_raised():
    ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 5, 0, 0)
    veth = _msg(hostside.RTM_NEWLINK, ifinfo + _attr(hostside.IFLA_IFNAME, b"lab-3\0")
                + _attr(hostside.IFLA_LINK_NETNSID, struct.pack("=i", 2)))
    bridge = _msg(hostside.RTM_NEWLINK, ifinfo + _attr(hostside.IFLA_IFNAME, b"lab-br\0"))
    links, done = hostside.parse_links(veth + bridge)
    assert links == [("lab-3", 2), ("lab-br", None)] and not done
    assert hostside.parse_links(_msg(hostside.NLMSG_DONE, b"\0" * 4)) == ([], True)
    with pytest.raises(OSError):
        hostside.parse_links(_msg(hostside.NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16))


def test_the_kernel_answers_a_link_dump_framed_by_nfnetlink():
    # The current namespace's own links (reading them needs no privilege): the request is
    # understood, the dump's framing read to its end, and the loopback is in it.
    s = nfnetlink.open_socket(timeout=2.0, bind=False, protocol=nfnetlink.NETLINK_ROUTE)
    names, done = [], False
    try:
        s.send(hostside.links_request(1))
        while not done:
            links, done = hostside.parse_links(s.recv(1 << 20))
            names += [name for name, _ in links]
    finally:
        s.close()
    assert "lo" in names


class FakeNode:
    def __init__(self):
        self.links = [("v-a", 1), ("v-b", 2), ("v-b2", 3), ("v-b3", 3)]
        self.ids = {"pod-a": 1, "pod-b": 2, "pod-two": 3, "pod-none": 9}
        self.inodes = {"pod-a": 10, "pod-b": 11, "pod-two": 12, "pod-none": 13}
        self.dumps = 0

    def veths(self, node):
        self.dumps += 1
        return list(self.links)

    def resolver(self, monkeypatch):
        monkeypatch.setattr(hostside.nsmod, "exists", lambda name: name == "node")
        return NodeSide("node", inode=self.inodes.get, veths=self.veths,
                        nsid=lambda node, ns: self.ids.get(ns))


def test_the_veth_whose_peer_is_the_pod_is_its_interface(monkeypatch):
    f = FakeNode()
    r = f.resolver(monkeypatch)
    assert r("pod-a") == ("node", "v-a") and r("pod-b") == ("node", "v-b")
    assert f.dumps == 1  # one dump per sync, not per pod
    with pytest.raises(BackendError, match="2 interfaces"):
        r("pod-two")
    with pytest.raises(BackendError, match="no interface"):
        r("pod-none")
    # A re-created namespace is looked up again; a gone one answers what it was.
    f.inodes["pod-a"] = 20
    f.links[0] = ("v-a-new", 1)
    r.invalidate()
    assert r("pod-a") == ("node", "v-a-new")
    del f.inodes["pod-a"]
    assert r("pod-a") == ("node", "v-a-new")
    with pytest.raises(BackendError, match="gone"):
        r("never-seen")


def test_a_backend_without_host_mode_is_refused():
    with pytest.raises(BackendUnavailable, match="fake backend has no host mode"):
        hostside.host_backend("fake", None)


class Log:
    def __init__(self):
        self.lines = []

    def info(self, msg, **kw):
        self.lines.append(("info", msg, kw))

    warning = error = debug = info


class Removals:
    name = "fake"

    def __init__(self):
        self.calls = []

    def remove(self, netns):
        self.calls.append(("remove", netns))


def test_host_mode_clears_pod_tables_once_and_the_chains_of_a_gone_pod(monkeypatch):
    pod_be, host_be = Removals(), Removals()
    f = FakeNode()
    node = f.resolver(monkeypatch)
    p = EnforcePoint("host", pod_backend=pod_be, log=Log(), node=node, inode=f.inodes.get)
    p.host = host_be
    managed = {"pod-a": Managed("x/a", None, 10), "pod-b": Managed("x/b", None, 11)}
    p.placed({"x/a": "pod-a", "x/b": "pod-b"})
    p.after_converge(Outcome(), managed)
    p.after_converge(Outcome(), managed)
    assert sorted(c for c in pod_be.calls if c[0] == "remove") == [("remove", "pod-a"), ("remove", "pod-b")]
    # pod-b's namespace vanished: its chains leave the node; pod-a released but still there: kept.
    del f.inodes["pod-b"]
    p.after_converge(Outcome(vanished=["pod-b"], released=["pod-a"]), {})
    assert [c for c in host_be.calls if c[0] == "remove"] == [("remove", "pod-b")]
    del f.inodes["pod-a"]  # now it goes too
    p.after_converge(Outcome(), {})
    assert [c for c in host_be.calls if c[0] == "remove"] == [("remove", "pod-b"), ("remove", "pod-a")]


def test_host_mode_reconciler_applies_a_round_in_one_call_and_repairs_in_one():
    from backends.base import FakeBackend
    from enforcer.daemon.reconcile import Reconciler
    from enforcer.ir import DirectionPolicy, PodFirewall

    class HostFake(FakeBackend):
        placement = "host"

        def __init__(self):
            super().__init__()
            self.batches = []

        def apply_many(self, jobs):
            self.batches.append([j[0] for j in jobs])
            return super().apply_many(jobs)

    def fw(key, isolated=True):
        return PodFirewall(key, ("10.244.0.9",), (), DirectionPolicy(isolated, ("x/p",) if isolated else ()),
                           DirectionPolicy(False, ()))

    be = HostFake()
    inodes = {"ns-a": 1, "ns-b": 2, "ns-c": 3}
    r = Reconciler(be, inode=inodes.get, exists=lambda n: n in inodes)
    be.installed["ns-c"] = fw("x/c")  # already right: adopted, not applied
    out = r.converge({"x/a": "ns-a", "x/b": "ns-b", "x/c": "ns-c"}, fw)
    assert be.batches == [["ns-a", "ns-b"]]
    assert out.applied == {"ns-a": "full", "ns-b": "full", "ns-c": "adopted"}
    # A change of two pods: one call, with what is installed as ``previous``.
    out = r.converge({"x/a": "ns-a", "x/b": "ns-b", "x/c": "ns-c"}, lambda k: fw(k, k == "x/c"))
    assert be.batches[-1] == ["ns-a", "ns-b"] and set(out.applied) == {"ns-a", "ns-b"}
    # Drift in two namespaces: restored in one call.
    be.installed.pop("ns-a")
    be.installed.pop("ns-c")
    out = r.repair()
    assert be.batches[-1] == ["ns-a", "ns-c"] and sorted(out.repaired) == ["ns-a", "ns-c"]


def test_status_says_where_the_rules_are():
    from enforcer.daemon import status as statusfile

    doc = {"version": statusfile.VERSION, "pid": 0, "phase": "running", "backend": "nftables",
           "enforce_at": "host", "node_netns": "node-1", "counts": {}, "totals": {}}
    assert "enforced at: host (each pod's chains in node namespace node-1)" in statusfile.render(doc)
    assert "enforced at" not in statusfile.render(dict(doc, enforce_at="pod"))


def test_cleanup_on_exit_in_host_mode_removes_the_node_tables_whole(monkeypatch):
    from enforcer.daemon.reconcile import Reconciler

    class Host(Removals):
        def remove_node(self, node):
            self.calls.append(("remove_node", node))

    f = FakeNode()
    node = f.resolver(monkeypatch)
    host, pod_be = Host(), Removals()
    p = EnforcePoint("host", pod_backend=pod_be, log=Log(), node=node)
    p.host = host
    r = Reconciler(host, inode=lambda ns: 1, exists=lambda ns: True)
    r.managed = {"pod-a": Managed("x/a", None, 1), "pod-b": Managed("x/b", None, 1)}
    assert p.remove_all(r) == {} and r.managed == {}
    assert host.calls == [("remove_node", "node")]
    pod_mode = EnforcePoint("pod", pod_backend=pod_be, log=Log())
    r.managed = {"pod-a": Managed("x/a", None, 1)}
    r.backend = pod_be
    assert pod_mode.remove_all(r) == {} and pod_be.calls == [("remove", "pod-a")]
