"""backends/ipset_netlink.py without a kernel: the messages of ``ipset restore`` lines, byte
for byte as the ipset tool (7.17) sends them (its element line numbers aside), and the
lines it refuses to speak (the caller then runs the tool)."""
from __future__ import annotations

import struct

import pytest

from backends import ipset_netlink as inl
from backends.ipt_render import build, sets_text
from enforcer import nfnetlink as nfnl
from enforcer.ir import AddrPortSet, AddrSet, AllowRule, DirectionPolicy, PodFirewall, Provenance


def revision(typ: str, family: int) -> int:
    return {"hash:ip": 6, "hash:net": 7, "hash:ip,port": 7}[typ]


def attrs(payload: bytes) -> list[tuple[int, bytes]]:
    return list(nfnl.iter_attrs(payload))


def test_a_create_is_what_the_tool_sends():
    [line] = inl.encode("create np.a.ip4 hash:ip family inet comment\n", revision)
    # strace of ``ipset -exist restore``: protocol 7, name, type, revision, family, DATA{CADT_FLAGS=comment}
    assert line.payload == (b"\x05\x00\x01\x00\x07\x00\x00\x00" + b"\x0d\x00\x02\x00np.a.ip4\x00\x00\x00\x00"
                            + b"\x0c\x00\x03\x00hash:ip\x00" + b"\x05\x00\x04\x00\x06\x00\x00\x00"
                            + b"\x05\x00\x05\x00\x02\x00\x00\x00" + b"\x0c\x00\x07\x80\x08\x00\x08\x40\x00\x00\x00\x10")
    msg = inl._message(line, 7)
    length, kind, flags, seq, _ = nfnl.HEADER.unpack_from(msg)
    assert (length, kind, seq) == (len(msg), 6 << 8 | 2, 7)
    assert flags == nfnl.NLM_F_REQUEST | nfnl.NLM_F_ACK | nfnl.NLM_F_CREATE  # no NLM_F_EXCL: -exist


def test_elements_of_each_type_are_what_the_tool_sends():
    text = ('add np.a.ip4 10.0.0.1 comment "hello"\nadd np.a.ip4 10.0.0.2\n'
            "add np.b.net6 fd00::/48\nadd np.c.ipp4 10.0.0.5,tcp:8080\nadd np.c.ipp4 10.0.0.7,sctp:53\n")
    a, b, c = inl.encode(text, revision)
    assert [(x.command, x.name, x.number) for x in (a, b, c)] == [("add", "np.a.ip4", 1), ("add", "np.b.net6", 3),
                                                                   ("add", "np.c.ipp4", 4)]
    ip1 = b"\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x01"  # IP{IPV4 (network order)}
    ip2 = b"\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x02"
    comment = b"\x0a\x00\x1a\x00hello\x00\x00\x00"
    adt = dict(attrs(a.payload))[inl.A_ADT]
    assert list(nfnl.iter_attrs(adt)) == [(inl.A_DATA, ip1 + comment), (inl.A_DATA, ip2)]
    assert dict(attrs(a.payload))[inl.A_LINENO] == struct.pack(">I", 1)
    [(_, net)] = nfnl.iter_attrs(dict(attrs(b.payload))[inl.A_ADT])
    assert net == b"\x18\x00\x01\x80\x14\x00\x02\x40\xfd" + b"\x00" * 15 + b"\x05\x00\x03\x00\x30\x00\x00\x00"
    (_, tcp), (_, sctp) = nfnl.iter_attrs(dict(attrs(c.payload))[inl.A_ADT])
    assert tcp.endswith(b"\x06\x00\x04\x40\x1f\x90\x00\x00\x05\x00\x07\x00\x06\x00\x00\x00")  # port 8080, proto 6
    assert sctp.endswith(b"\x06\x00\x04\x40\x00\x35\x00\x00\x05\x00\x07\x00\x84\x00\x00\x00")  # port 53, proto 132


def test_a_host_in_a_net_set_has_no_prefix_and_slash_zero_halves_have_theirs():
    [line] = inl.encode("add np.e.net4 10.1.2.3\nadd np.e.net4 0.0.0.0/1\n", revision)
    (_, host), (_, half) = nfnl.iter_attrs(dict(attrs(line.payload))[inl.A_ADT])
    assert inl.D_CIDR not in dict(nfnl.iter_attrs(host))
    assert dict(nfnl.iter_attrs(half))[inl.D_CIDR] == b"\x01"


def test_swap_flush_destroy_and_del():
    lines = inl.encode("swap nt.a.ip4 np.a.ip4\nflush nt.a.ip4\ndestroy nt.a.ip4\ndel np.a.ip4 10.0.0.1\n", revision)
    assert [x.command for x in lines] == ["swap", "flush", "destroy", "del"]
    assert dict(attrs(lines[0].payload))[inl.A_SETNAME2] == b"np.a.ip4\0"
    assert attrs(lines[2].payload) == [(inl.A_PROTOCOL, b"\x07"), (inl.A_SETNAME, b"nt.a.ip4\0")]


def test_a_pods_sets_group_elements_per_set_and_split_big_ones():
    members = tuple(f"10.{i // 250}.{i % 250}.1/32" for i in range(9000))
    rule = AllowRule(Provenance("x/p", "ingress", 0), peers="big")
    fw = PodFirewall(pod="x/a", ingress=DirectionPolicy(True, ("x/p",), (rule,)),
                     sets=(AddrSet("big", v4=members, v6=("fd00::1/128",)),
                           AddrPortSet("ap", v4=(("10.0.0.1", "TCP", 80),), v6=())))
    text = sets_text(build(fw).sets)
    lines = inl.encode(text, revision)
    adds = [x for x in lines if x.command == "add"]
    assert [x.command for x in lines if x.command != "add"] == ["create"] * 4
    assert sum(len(list(nfnl.iter_attrs(dict(attrs(x.payload))[inl.A_ADT]))) for x in adds) == 9002
    assert len([x for x in adds if x.name == "np.big.ip4"]) > 1  # over one attribute's 64 KiB
    assert all(len(x.payload) < 0xFFFF for x in adds)


@pytest.mark.parametrize("text", [
    "destroy\n",  # every set of the namespace: never
    "destroy np.a.ip4 np.b.ip4\n",
    "create other hash:ip family inet comment\n",  # not one of ours
    "create np.a.ip4 hash:ip family inet\n",  # without the comment extension
    "create np.a.ip4 hash:net family inet comment\n",  # a type its name does not say
    "create np.a.ip4 hash:ip family inet hashsize 64 comment\n",
    "add np.a.ip4 10.0.0.1 timeout 5\n",
    "add np.a.ip4\n",
    "del np.a.ip4 10.0.0.1 comment \"x\"\n",
    "add np.c.ipp4 10.0.0.1,icmp:8\n",
    "add np.c.ipp4 10.0.0.1,tcp:80-90\n",
    "add np.b.net4 10.0.0.0/x\n",
    "add np.b.net4 10.0.0.0/0\n",  # (rendered as two /1)
    "add np.b.net6 fd00::/129\n",
    # the other family: the tool refuses it before sending the lines before it
    "del np.a.ip6 fd00::1\nadd np.a.ip4 fd00::2\n",
    "add np.c.ipp6 10.0.0.1,tcp:80\n",
    "create np.a.ip4 hash:ip family inet6 comment\n",
    "list\n",
    "rename np.a.ip4 np.b.ip4\n",
    "create np.a.ip4 hash:ip family inet comment\nadd np.a.ip4 10.0.0.1 comment \"a \\\"b\\\"\"\n",
])
def test_lines_it_does_not_speak_are_unsupported(text):
    with pytest.raises(inl.Unsupported):
        inl.encode(text, revision)


def test_error_words():
    assert inl.error_words(4103) == "element or set exists already"
    assert inl.error_words(2) == "No such file or directory"
    assert "4400" in inl.error_words(4400)
