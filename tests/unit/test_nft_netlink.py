"""The netlink encoding of pod tables (backends/nft_netlink.py, nft_nlexpr.py), no kernel.

The expected expressions are what ``nft --debug=netlink`` 1.0.6 prints for the same rule
in an inet table (facts read from nft, written here in its words), compared with a small
printer of our bytes in the same words. The root test tests/integration/test_nft_netlink.py
proves the whole encoding against the kernel; these pin the details and the refusals."""
from __future__ import annotations

import pathlib
import re
import struct

import pytest

from backends import nft_netlink as nl, nftables as nft
from backends.nft_nlexpr import Unsupported
from enforcer import nfnetlink as nfnl
from enforcer.ir import TABLE, AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance

ROOT = pathlib.Path(__file__).resolve().parents[2]
META = {4: "iif", 5: "oif", 15: "nfproto", 16: "l4proto"}
OPS = {0: "eq", 1: "neq", 3: "lte", 5: "gte"}
BASES = {1: "network", 2: "transport"}
VERDICT = {0: "drop", 1: "accept", 0xFFFFFFFB: "return", 0xFFFFFFFC: "goto", 0xFFFFFFFD: "jump"}


def attrs(data: bytes) -> dict[int, bytes]:
    return nfnl.parse_attrs(data)


def u32(v: bytes) -> int:
    return struct.unpack(">I", v)[0]


def value(nested: bytes) -> str:
    return attrs(nested)[1].hex()


def show(expr: bytes) -> str:
    """One expression as nft --debug=netlink writes it (values as plain hex bytes)."""
    a = attrs(expr)
    name, d = a[1][:-1].decode(), attrs(a[2])
    if name == "meta":
        return f"meta load {META[u32(d[2])]} => reg {u32(d[1])}"
    if name == "cmp":
        return f"cmp {OPS[u32(d[2])]} reg {u32(d[1])} 0x{value(d[3])}"
    if name == "payload":
        return f"payload load {u32(d[4])}b @ {BASES[u32(d[2])]} header + {u32(d[3])} => reg {u32(d[1])}"
    if name == "lookup":
        return f"lookup reg {u32(d[2])} set {d[1][:-1].decode()} id {u32(d[4])}"
    if name == "ct":
        return f"ct load {['state'][u32(d[2])]} => reg {u32(d[1])}"
    if name == "bitwise":
        return f"bitwise reg {u32(d[2])} = ( reg {u32(d[1])} & 0x{value(d[4])} ) ^ 0x{value(d[5])}"
    if name == "byteorder":
        return f"byteorder reg {u32(d[2])} = {['ntoh', 'hton'][u32(d[3])]}(reg {u32(d[1])}, {u32(d[5])}, {u32(d[4])})"
    if name == "counter":
        return "counter pkts 0 bytes 0"
    if name == "limit":
        rate, unit = struct.unpack(">Q", d[1])[0], struct.unpack(">Q", d[2])[0]
        return f"limit rate {rate}/{ {1: 'second'}[unit]} burst {u32(d[3])} type packets flags 0x{u32(d[5]):x}"
    if name == "log":
        return f"log prefix {d[2][:-1].decode()} group {struct.unpack('>H', d[1])[0]}"
    if name == "immediate":
        v = attrs(attrs(d[2])[2])
        chain = f" -> {v[2][:-1].decode()}" if 2 in v else ""
        return f"immediate reg {u32(d[1])} {VERDICT[u32(v[1])]}{chain}"
    raise AssertionError(name)


def rules_of(msgs) -> list[tuple[list[str], str]]:
    """(expressions, comment) of every NEWRULE."""
    out = []
    for m in msgs:
        if m.kind != nl.NEWRULE:
            continue
        a = attrs(m.body[4:])
        exprs = [show(v) for _, v in nfnl.iter_attrs(a[4])]
        ud = a.get(7, b"")
        out.append((exprs, ud[2:2 + ud[1] - 1].decode() if ud else ""))
    return out


def table(*chain_rules: str, sets: list[list[str]] = ()) -> list:
    blocks = list(sets) + [["\tchain input {", "\t\ttype filter hook input priority filter; policy accept;",
                            *(f"\t\t{r}" for r in chain_rules), "\t}"]]
    return nl.encode_table(TABLE, "pod x/a", blocks)


H4 = ["\tset h_4 {", "\t\ttype ipv4_addr", '\t\telements = { 10.0.0.1 comment "x/b",', "\t\t\t     10.0.0.2 }", "\t}"]
IV4 = ["\tset iv_4 {", "\t\ttype ipv4_addr . inet_proto", "\t\tflags interval",
       '\t\telements = { 10.0.0.0/8 . 0-255 comment "ipBlock", 192.168.1.5 . 0-255 }', "\t}"]
IV6 = ["\tset iv_6 {", "\t\ttype ipv6_addr . inet_proto", "\t\tflags interval", "\t}"]
AP6 = ["\tset ap_6 {", "\t\ttype ipv6_addr . inet_proto . inet_service",
       "\t\telements = { fd00::1 . tcp . 80, fd00::2 . sctp . 5000 }", "\t}"]
NF4 = ["meta load nfproto => reg 1", "cmp eq reg 1 0x02"]
NF6 = ["meta load nfproto => reg 1", "cmp eq reg 1 0x0a"]
SADDR4 = NF4 + ["payload load 4b @ network header + 12 => reg 1"]
TCP = ["meta load l4proto => reg 1", "cmp eq reg 1 0x06", "payload load 2b @ transport header + 2 => reg 1"]
ACCEPT = ["counter pkts 0 bytes 0", "immediate reg 0 accept"]

RULES = [
    ("ct state established,related counter accept", [
        "ct load state => reg 1", "bitwise reg 1 = ( reg 1 & 0x06000000 ) ^ 0x00000000",
        "cmp neq reg 1 0x00000000", *ACCEPT]),
    ("ct state invalid counter drop", [
        "ct load state => reg 1", "bitwise reg 1 = ( reg 1 & 0x01000000 ) ^ 0x00000000",
        "cmp neq reg 1 0x00000000", "counter pkts 0 bytes 0", "immediate reg 0 drop"]),
    ('iif "lo" counter accept', ["meta load iif => reg 1", "cmp eq reg 1 0x01000000", *ACCEPT]),
    ('oif "lo" counter accept', ["meta load oif => reg 1", "cmp eq reg 1 0x01000000", *ACCEPT]),
    ("icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept",
     NF6 + ["meta load l4proto => reg 1", "cmp eq reg 1 0x3a", "payload load 1b @ transport header + 0 => reg 1",
            "lookup reg 1 set __set%d id 4", *ACCEPT]),
    ("ip saddr 10.244.0.1 counter accept", SADDR4 + ["cmp eq reg 1 0x0af40001", *ACCEPT]),
    ("ip daddr 10.244.0.0/16 counter accept",
     NF4 + ["payload load 2b @ network header + 16 => reg 1", "cmp eq reg 1 0x0af4", *ACCEPT]),
    ("ip daddr 10.244.16.0/20 counter accept",
     NF4 + ["payload load 4b @ network header + 16 => reg 1", "bitwise reg 1 = ( reg 1 & 0xfffff000 ) ^ 0x00000000",
            "cmp eq reg 1 0x0af41000", *ACCEPT]),
    ("ip6 saddr fd00::1 counter accept",
     NF6 + ["payload load 16b @ network header + 8 => reg 1", "cmp eq reg 1 0xfd000000000000000000000000000001", *ACCEPT]),
    ("ip saddr @h_4 tcp dport 80 counter accept",
     SADDR4 + ["lookup reg 1 set h_4 id 1"] + TCP + ["cmp eq reg 1 0x0050", *ACCEPT]),
    ("ip saddr @h_4 tcp dport 80-81 counter accept",
     SADDR4 + ["lookup reg 1 set h_4 id 1"] + TCP + ["cmp gte reg 1 0x0050", "cmp lte reg 1 0x0051", *ACCEPT]),
    ("ip saddr @h_4 udp dport { 53, 80-90 } counter accept",
     SADDR4 + ["lookup reg 1 set h_4 id 1", "meta load l4proto => reg 1", "cmp eq reg 1 0x11",
               "payload load 2b @ transport header + 2 => reg 1", "lookup reg 1 set __set%d id 4", *ACCEPT]),
    ("ip saddr @h_4 meta l4proto sctp counter accept",
     SADDR4 + ["lookup reg 1 set h_4 id 1", "meta load l4proto => reg 1", "cmp eq reg 1 0x84", *ACCEPT]),
    ("ip saddr . meta l4proto @iv_4 tcp dport 80-81 counter accept",
     SADDR4 + ["meta load l4proto => reg 9", "byteorder reg 9 = hton(reg 9, 2, 1)", "lookup reg 1 set iv_4 id 2"]
     + TCP + ["cmp gte reg 1 0x0050", "cmp lte reg 1 0x0051", *ACCEPT]),
    ("ip6 saddr . meta l4proto @iv_6 counter accept",
     NF6 + ["payload load 16b @ network header + 8 => reg 1", "meta load l4proto => reg 2",
            "byteorder reg 2 = hton(reg 2, 2, 1)", "lookup reg 1 set iv_6 id 3", *ACCEPT]),
    ("ip6 daddr . meta l4proto . th dport @ap_6 counter accept",
     NF6 + ["payload load 16b @ network header + 24 => reg 1", "meta load l4proto => reg 2",
            "payload load 2b @ transport header + 2 => reg 13", "lookup reg 1 set ap_6 id 3", *ACCEPT]),
    ("tcp dport 80 counter accept", TCP + ["cmp eq reg 1 0x0050", *ACCEPT]),
    ('limit rate 10/second log prefix "netpol drop ingress x/a: " group 100',
     ["limit rate 10/second burst 5 type packets flags 0x0", "log prefix netpol drop ingress x/a:  group 100"]),
    ("counter jump admin_input", ["counter pkts 0 bytes 0", "immediate reg 0 jump -> admin_input"]),
    ("counter goto admin_input", ["counter pkts 0 bytes 0", "immediate reg 0 goto -> admin_input"]),
    ("counter return", ["counter pkts 0 bytes 0", "immediate reg 0 return"]),
]


@pytest.mark.parametrize("line,want", RULES, ids=[r[0][:50] for r in RULES])
def test_rule_expressions_are_those_nft_sends(line, want):
    sets = [H4, IV4, IV6] if "ap_6" not in line else [H4, IV4, AP6]
    admin = [["\tchain admin_input {", "\t}"]] if "admin_input" in line else []
    msgs = table(line + ' comment "why"', sets=sets + admin)
    [(exprs, comment)] = rules_of(msgs)
    assert (exprs, comment) == (want, "why")


def anon_elements(msgs) -> tuple[int, list[tuple[str, int, str]]]:
    """(desc size, [(key hex, flags, userdata hex)]) of the one anonymous set."""
    [new] = [m for m in msgs if m.kind == nl.NEWSET and b"__set%d" in m.body]
    [elems] = [m for m in msgs if m.kind == nl.NEWSETELEM and b"__set%d" in m.body]
    size = u32(attrs(attrs(new.body[4:])[9])[1])
    out = []
    for _, e in nfnl.iter_attrs(attrs(elems.body[4:])[3]):
        a = attrs(e)
        out.append((value(a[1]), u32(a[3]) if 3 in a else 0, a.get(6, b"").hex()))
    return size, out


def test_anonymous_interval_sets_as_nfts_segment_tree_sends_them():
    size, elems = anon_elements(table("udp dport { 53, 80-90 } accept"))
    assert (size, elems) == (5, [("0000", 1, ""), ("0035", 0, ""), ("0036", 1, ""), ("0050", 0, ""), ("005b", 1, "")])
    size, elems = anon_elements(table("tcp dport { 0-100, 443, 1000-65535 } accept"))
    assert (size, elems) == (6, [("0000", 0, ""), ("0065", 1, ""), ("01bb", 0, ""), ("01bc", 1, ""),
                                 ("03e8", 0, "010401000000")])  # open to the top: a flag in userdata
    size, elems = anon_elements(table("tcp dport { 80, 443 } accept"))
    assert (size, elems) == (2, [("0050", 0, ""), ("01bb", 0, "")])


def set_messages(msgs, name: str):
    new = [attrs(m.body[4:]) for m in msgs if m.kind == nl.NEWSET and f"{name}\0".encode() in m.body]
    elems = [attrs(m.body[4:]) for m in msgs if m.kind == nl.NEWSETELEM and f"{name}\0".encode() in m.body]
    return new[0], elems


def test_named_sets_types_flags_and_elements():
    msgs = table(sets=[H4, IV4, AP6])
    s, [e] = set_messages(msgs, "h_4")
    assert (u32(s[3]), u32(s[4]), u32(s[5]), s[13].hex()) == (0, 7, 4, "000402000000")
    got = [(value(attrs(x)[1]), attrs(x).get(6, b"").hex()) for _, x in nfnl.iter_attrs(e[3])]
    assert got == [("0a000001", "0004782f6200"), ("0a000002", "")]  # the comment as userdata
    s, [e] = set_messages(msgs, "iv_4")
    assert (u32(s[3]), u32(s[4]), u32(s[5])) == (0x84, 7 << 6 | 12, 8)  # interval | concat
    assert [u32(attrs(f)[1]) for _, f in nfnl.iter_attrs(attrs(s[9])[2])] == [4, 1]  # field lengths
    got = [(value(attrs(x)[1]), value(attrs(x)[10])) for _, x in nfnl.iter_attrs(e[3])]
    assert got == [("0a00000000000000", "0affffffff000000"), ("c0a8010500000000", "c0a80105ff000000")]
    s, [e] = set_messages(msgs, "ap_6")
    assert (u32(s[3]), u32(s[4]), u32(s[5]), s[13].hex()) == (0, (8 << 6 | 12) << 6 | 13, 24,
                                                               "000400000000030800040d0000000100")
    assert [value(attrs(x)[1]) for _, x in nfnl.iter_attrs(e[3])] == [
        "fd000000000000000000000000000001" "06000000" "00500000",
        "fd000000000000000000000000000002" "84000000" "13880000"]


def test_every_set_has_its_own_id_and_lookups_name_it():
    msgs = table("ip saddr @h_4 tcp dport { 80, 443 } accept", "udp dport { 53, 54, 99 } accept", sets=[H4, IV4])
    ids = [u32(attrs(m.body[4:])[10]) for m in msgs if m.kind == nl.NEWSET]
    assert ids == [1, 2, 3, 4]
    assert [u32(attrs(m.body[4:])[4]) for m in msgs if m.kind == nl.NEWSETELEM] == [1, 2, 3, 4]
    assert [m.kind for m in msgs] == [nl.NEWTABLE, nl.DELTABLE, nl.NEWTABLE, nl.NEWCHAIN] + [
        nl.NEWSET, nl.NEWSETELEM] * 3 + [nl.NEWRULE, nl.NEWSET, nl.NEWSETELEM, nl.NEWRULE]
    assert [e for e, _ in rules_of(msgs)][0][3:5] == ["lookup reg 1 set h_4 id 1", "meta load l4proto => reg 1"]


def test_large_sets_go_in_several_messages_of_one_batch():
    hosts = [f"10.{i // 250}.{i % 250}.1" for i in range(6000)]
    block = ["\tset big_4 {", "\t\ttype ipv4_addr",
             "\t\telements = { " + ",\n\t\t\t     ".join(f'{h} comment "ns/pod-{i}"' for i, h in enumerate(hosts)) + " }",
             "\t}"]
    msgs = [m for m in table(sets=[block]) if m.kind == nl.NEWSETELEM]
    assert len(msgs) > 2 and all(len(m.body) < 65536 for m in msgs)
    keys = [value(attrs(x)[1]) for m in msgs for _, x in nfnl.iter_attrs(attrs(m.body[4:])[3])]
    assert keys == [bytes(map(int, h.split("."))).hex() for h in hosts]
    assert "10.0.0.1, 10.0.1.1, 10.0.2.1, ..." in msgs[0].what


def test_table_and_chain_messages():
    msgs = nl.encode_text(nft.render(PodFirewall("x/a")))
    t, d, t2, c_in, c_out = (attrs(m.body[4:]) for m in msgs[:5])
    assert (t[1], u32(t[2]), d[1]) == (b"netpol\0", 0, b"netpol\0")
    assert t2[6] == b"\x00\x08pod x/a\x00"  # the comment as table userdata
    hook = attrs(c_in[4])
    assert (c_in[3], c_in[7], u32(c_in[5]), u32(hook[1]), u32(hook[2])) == (b"input\0", b"filter\0", 1, 1, 0)
    assert u32(attrs(c_out[4])[1]) == 3
    assert all(m.flags & nfnl.NLM_F_ACK for m in msgs)  # (TableSocket keeps it on the last one)


@pytest.mark.parametrize("rule", [
    "ip saddr 10.0.0.1 ip daddr 10.0.0.2 accept", "tcp sport 80 accept", "meta mark 1 accept",
    'iif "eth0" accept', 'log prefix "x" accept', "limit rate 10/second burst 3 packets accept",
    "tcp dport { 80 } accept", "tcp dport { 80-90, 85 } accept", "tcp dport { 80, 80 } accept",
    "tcp dport { 80-90, 91 } accept", 'log prefix "$x" group 1', "ip saddr @nowhere accept",
    "ip saddr . meta l4proto @h_4 accept", "ip saddr 0.0.0.0/0 accept", "ip saddr 10.0.0.1/8 accept",
    "ip6 saddr 10.0.0.1 accept", "counter accept counter", "accept drop", "tcp dport 80 meta l4proto tcp accept",
    'counter accept comment "' + "x" * 129 + '"', 'counter accept comment "a" drop', "jump 'x'",
    'counter accept comment "unbalanced',
])
def test_what_it_does_not_know_is_refused_not_guessed(rule):
    with pytest.raises(Unsupported):
        table(rule, sets=[H4])


@pytest.mark.parametrize("block", [
    ["\tset s {", "\t\ttype ipv4_addr", "\t\tflags interval", "\t}"],
    ["\tset s {", "\t\ttype ether_addr", "\t}"],
    ["\tset s {", "\t\ttype ipv4_addr", "\t\telements = { 10.0.0.0/8 }", "\t}"],
    ["\tset s {", "\t\ttype ipv4_addr . inet_proto", "\t}"],
    ["\tset s {", "\t\ttype ipv4_addr", "\t\tsize 10", "\t}"],
    ["\tset s {", "\t\ttype ipv4_addr . inet_proto . inet_service", "\t\telements = { 10.0.0.0/8 . tcp . 80 }", "\t}"],
    ["\tchain c {", "\t\ttype nat hook input priority filter; policy accept;", "\t}"],
    ["\tflowtable f {", "\t}"],
])
def test_sets_and_chains_it_does_not_know_are_refused(block):
    with pytest.raises(Unsupported):
        nl.encode_table(TABLE, None, [block])


def test_every_rendered_golden_table_encodes():
    """The vocabulary covers what the renderer writes (the root test proves the bytes)."""
    n = 0
    for path in sorted((ROOT / "tests" / "golden").glob("*.render.nftables.txt")):
        for text in re.findall(r"^table inet netpol \{\n.*?^\}\n", path.read_text(), re.S | re.M):
            assert nl.encode_text(text)
            n += 1
    assert n >= 10
    s = AddrSet("in0", v4=("10.0.0.2/32",))
    r = AllowRule(Provenance("x/p", "ingress", 0), peers="in0", ports=(PortMatch("UDP", 1, 65535),))
    fw = PodFirewall("x/a", node_ips=("10.244.0.1", "fd00::1"), ingress=DirectionPolicy(True, ("x/p",), (r,)), sets=(s,))
    assert nl.encode_table(TABLE, nft.table_comment(fw), nft.table_blocks(fw))


def test_extended_ack_text():
    req = nfnl.HEADER.pack(40, 0xA06, 0x5, 7, 0)
    body = struct.pack("=i", -22) + req + nfnl.string(nfnl.NLMSGERR_ATTR_MSG, "bad thing")
    assert nfnl.error_text(body, nfnl.NLM_F_CAPPED | nfnl.NLM_F_ACK_TLVS) == "bad thing"
    assert nfnl.error_text(body, nfnl.NLM_F_CAPPED) == ""  # no attributes announced
