"""The NFLOG parser (enforcer.nflog) and the drop attribution (enforcer.lab.observe) on
hand-built bytes: no kernel, no root.

The messages are assembled here field by field with struct, independently of the module's
own builders, so a mistake in the module cannot cancel out in the test."""
from __future__ import annotations

import socket
import struct

import pytest

from enforcer import nflog
from enforcer.ir import AddrSet, AllowRule, DirectionPolicy, PodFirewall, PortMatch, Provenance
from enforcer.lab import observe

# ----------------------------------------------------------------- hand-built packets


def ipv4(proto: int, src: str, dst: str, l4: bytes, *, options: bytes = b"", frag: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(l4)
    head = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head + options + l4


def ipv6(next_header: int, src: str, dst: str, rest: bytes) -> bytes:
    return (struct.pack(">IHBB", 6 << 28, len(rest), next_header, 64)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + rest)


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8, 0)


def attr(kind: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return struct.pack("=HH", n, kind) + value + b"\0" * ((4 - n % 4) % 4)


def netlink(kind: int, body: bytes, seq: int = 0) -> bytes:
    n = 16 + len(body)
    return struct.pack("=IHHII", n, kind, 0, seq, 0) + body + b"\0" * ((4 - n % 4) % 4)


def packet_message(prefix: bytes, payload: bytes, group: int = 100, hook: int = 1) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(group))
    body += attr(1, struct.pack(">HBB", 0x0800, hook, 0))  # NFULA_PACKET_HDR
    body += attr(4, struct.pack(">I", 7))  # NFULA_IFINDEX_INDEV
    body += attr(10, prefix + b"\0")  # NFULA_PREFIX, NUL-terminated
    body += attr(9, payload)  # NFULA_PAYLOAD
    return netlink((4 << 8) | 0, body)


# ----------------------------------------------------------------- IP and L4


def test_ipv4_tcp():
    f = nflog.parse_ip(ipv4(6, "10.244.0.7", "10.244.0.6", tcp(40312, 3306)))
    assert f == nflog.Flow("10.244.0.7", "10.244.0.6", "TCP", 40312, 3306)


def test_ipv4_udp_with_options_skips_the_options():
    f = nflog.parse_ip(ipv4(17, "10.0.0.1", "10.0.0.2", udp(5353, 81), options=b"\x01\x01\x01\x00"))
    assert (f.protocol, f.sport, f.dport) == ("UDP", 5353, 81)


def test_ipv4_sctp_has_ports():
    f = nflog.parse_ip(ipv4(132, "10.0.0.1", "10.0.0.2", struct.pack(">HHI", 1000, 82, 0)))
    assert (f.protocol, f.sport, f.dport) == ("SCTP", 1000, 82)


def test_ipv4_icmp_has_a_type_and_no_ports():
    f = nflog.parse_ip(ipv4(1, "10.0.0.1", "10.0.0.2", b"\x08\x00\x00\x00"))
    assert (f.protocol, f.sport, f.dport, f.icmp_type) == ("ICMP", 0, 0, 8)


def test_ipv4_later_fragment_has_no_ports():
    # fragment offset 185 (x8 bytes): the bytes after the header are data, not a TCP header
    f = nflog.parse_ip(ipv4(6, "10.0.0.1", "10.0.0.2", tcp(1, 2), frag=185))
    assert (f.protocol, f.sport, f.dport) == ("TCP", 0, 0)


def test_ipv4_header_cut_short_of_the_ports():
    f = nflog.parse_ip(ipv4(6, "10.0.0.1", "10.0.0.2", b"\x00\x01"))
    assert (f.src, f.protocol, f.dport) == ("10.0.0.1", "TCP", 0)


def test_ipv6_tcp():
    f = nflog.parse_ip(ipv6(6, "fd00:10:244::7", "fd00:10:244::6", tcp(40000, 80)))
    assert f == nflog.Flow("fd00:10:244::7", "fd00:10:244::6", "TCP", 40000, 80)


def test_ipv6_walks_extension_headers():
    hop_by_hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # next: destination options, 8 bytes
    dest_opts = bytes([17, 1]) + b"\x01\x0c" + b"\0" * 12  # next: UDP, 16 bytes
    f = nflog.parse_ip(ipv6(0, "fd00::1", "fd00::2", hop_by_hop + dest_opts + udp(1234, 53)))
    assert (f.protocol, f.sport, f.dport) == ("UDP", 1234, 53)


def test_ipv6_first_fragment_has_ports_and_later_ones_not():
    first = bytes([6, 0]) + struct.pack(">HI", 0x0001, 42)  # offset 0, more fragments
    later = bytes([6, 0]) + struct.pack(">HI", 0x0100, 42)  # offset 32
    assert nflog.parse_ip(ipv6(44, "fd00::1", "fd00::2", first + tcp(5, 6))).dport == 6
    f = nflog.parse_ip(ipv6(44, "fd00::1", "fd00::2", later + tcp(5, 6)))
    assert (f.protocol, f.dport) == ("TCP", 0)


def test_icmpv6():
    f = nflog.parse_ip(ipv6(58, "fe80::1", "ff02::16", b"\x8f\x00\x00\x00"))
    assert (f.protocol, f.icmp_type) == ("ICMPv6", 143)


@pytest.mark.parametrize("junk", [b"", b"\x45\x00", b"\x60" + b"\0" * 20, b"\x20" + b"\0" * 40])
def test_not_ip_or_too_short(junk):
    assert nflog.parse_ip(junk) is None


# ----------------------------------------------------------------- prefixes


@pytest.mark.parametrize("prefix,want", [
    ("netpol drop ingress prod/db: ", ("ingress", "prod/db")),
    ("netpol drop egress x/a: ", ("egress", "x/a")),
    ("netpol drop egress some-long-ns/some-long-pod-name-that-was-c~1a2b3c", ("egress", "some-long-ns/some-long-pod-name-that-was-c~1a2b3c")),
    ("netpol drop sideways x/a: ", None),
    ("IN=eth0 OUT= ", None),
    ("", None),
])
def test_prefix(prefix, want):
    assert nflog.parse_prefix(prefix) == want


def test_prefix_matches_what_the_backends_write():
    from backends.base import nflog_prefix

    assert nflog.parse_prefix(nflog_prefix("ingress", "prod/db")) == ("ingress", "prod/db")


# ----------------------------------------------------------------- netlink messages


def test_packet_message():
    payload = ipv4(6, "10.244.0.7", "10.244.0.6", tcp(40312, 3306))
    [p] = nflog.parse_packets(packet_message(b"netpol drop ingress prod/db: ", payload))
    assert p == nflog.LogPacket(100, "netpol drop ingress prod/db: ", payload, 0x0800, 1, indev=7)


def test_batched_messages_and_done():
    a = packet_message(b"netpol drop ingress x/a: ", ipv4(17, "10.0.0.1", "10.0.0.2", udp(1, 81)))
    b = packet_message(b"netpol drop egress x/a: ", ipv4(6, "10.0.0.2", "10.0.0.3", tcp(2, 80)), hook=3)
    done = netlink(3, struct.pack("=i", 0))  # NLMSG_DONE ends a multipart batch
    packets = nflog.parse_packets(a + b + done)
    assert [(p.prefix.split()[2], p.hook) for p in packets] == [("ingress", 1), ("egress", 3)]


def test_attribute_flags_are_masked_and_padding_is_skipped():
    value = b"abcde"  # 9 bytes: padded to 12
    data = attr(0x8000 | 10, value) + attr(9, b"xy")
    assert nflog.parse_attrs(data) == {10: value, 9: b"xy"}


def test_truncated_message_is_ignored():
    msg = packet_message(b"netpol drop ingress x/a: ", ipv4(6, "10.0.0.1", "10.0.0.2", tcp(1, 2)))
    assert nflog.split_messages(msg[:-8]) == []


def test_bind_request_bytes():
    """NFULNL_MSG_CONFIG, REQUEST|ACK, nfgenmsg(AF_UNSPEC, v0, group 100 big-endian),
    NFULA_CFG_CMD = BIND."""
    msg = nflog.config_message(7, 100, socket.AF_UNSPEC, nflog.command_attr(nflog.CMD_BIND))
    want = (struct.pack("=IHHII", 28, 0x0401, 0x0005, 7, 0) + bytes([0, 0, 0, 100])
            + struct.pack("=HH", 5, 1) + b"\x01\0\0\0")
    assert msg == want


def test_copy_mode_attribute():
    assert nflog.mode_attr(128) == struct.pack("=HH", 10, 2) + b"\0\0\0\x80\x02\0" + b"\0\0"


def test_error_code():
    assert nflog.error_code(struct.pack("=i", 0)) == 0
    assert nflog.error_code(struct.pack("=i", -16)) == 16  # EBUSY


# ----------------------------------------------------------------- attribution


def _db_firewall() -> PodFirewall:
    allow = AllowRule(Provenance("prod/db-policy", "ingress", 0), peers="s0", ports=(PortMatch("TCP", 3306),))
    return PodFirewall("prod/db", ("10.244.0.6",), ("10.244.0.1", "fd00:10:244::1"),
                       ingress=DirectionPolicy(True, ("prod/db-policy", "prod/deny-all"), (allow,)),
                       sets=(AddrSet("s0", ("10.244.0.5/32",)),))


VIEW = observe.LabView({"prod/db": "netpol-x-prod-db"},
                       {"10.244.0.7": "prod/web", "10.244.0.6": "prod/db", "10.244.0.1": "node"},
                       {"prod/db": _db_firewall()})


def test_drop_is_attributed():
    payload = ipv4(6, "10.244.0.7", "10.244.0.6", tcp(40312, 3306))
    [p] = nflog.parse_packets(packet_message(b"netpol drop ingress prod/db: ", payload))
    d = VIEW.drop("prod/db", p, 0.0)
    assert (d.pod, d.direction, d.src_id, d.dst_id, d.peer_id) == ("prod/db", "ingress", "prod/web", "prod/db", "prod/web")
    assert d.isolated_by == ("prod/db-policy", "prod/deny-all")
    line = observe.format_drop(d)
    assert line.endswith(" prod/db ingress DROP 10.244.0.7:40312 -> 10.244.0.6:3306/TCP (prod/web) "
                         "isolated by prod/db-policy,prod/deny-all")
    assert d.to_json()["from"] == "prod/web" and d.to_json()["dport"] == 3306


def test_drop_to_an_outside_address_and_of_a_direction_not_isolated():
    p = nflog.LogPacket(100, "netpol drop egress prod/db: ", ipv4(17, "10.244.0.6", "8.8.8.8", udp(999, 53)))
    d = VIEW.drop("prod/db", p, 0.0)
    assert (d.dst_id, d.isolated_by) == (None, ())
    assert "-> 8.8.8.8:53/UDP (outside the lab) isolated by ?" in observe.format_drop(d)


def test_foreign_log_lines_are_not_drops():
    p = nflog.LogPacket(100, "someone else: ", ipv4(6, "10.0.0.1", "10.0.0.2", tcp(1, 2)))
    assert VIEW.drop("prod/db", p, 0.0) is None


@pytest.mark.parametrize("comment,want", [
    ("prod/db-policy ingress[0]", ("ingress", "accept", "prod/db-policy", 0)),
    ("x/allow egress[12]", ("egress", "accept", "x/allow", 12)),
    ("ingress isolated by prod/db-policy,prod/deny", ("ingress", "drop", None, None)),
    ("egress invalid", ("egress", "drop", None, None)),
    ("egress log drop", ("egress", "log", None, None)),
    ("ingress established", ("ingress", "accept", None, None)),
    ("egress not isolated", ("egress", "accept", None, None)),
    ("something else", ("", "accept", None, None)),
])
def test_classify(comment, want):
    assert observe.classify(comment) == want


def test_rule_order_follows_the_rendered_chains():
    order = observe.rule_order(_db_firewall())
    assert order[:5] == ["ingress established", "ingress invalid", "ingress loopback",
                         "ingress ipv6 neighbour discovery", "ingress node"]
    assert order[5:8] == ["prod/db-policy ingress[0]", "ingress log drop",
                          "ingress isolated by prod/db-policy,prod/deny-all"]
    assert order[-1] == "egress not isolated"


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_backends_render_the_comments_in_this_order(backend):
    """stats sorts counters by rule_order: it must be the order the backends render."""
    from backends import registry

    text = registry.get(backend, check=False).render(_db_firewall())
    if "# IPv6" in text:  # iptables: only the IPv6 chains have every rule
        text = text[text.index("# IPv6"):]
    ingress = [c for c in observe.rule_order(_db_firewall()) if c.startswith(("ingress", "prod/"))]
    positions = [text.find(c) for c in ingress]
    assert -1 not in positions and positions == sorted(positions)


def test_stats_table():
    rows = [observe.Counter("prod/db", "ingress", "accept", "prod/db-policy ingress[0]", 2, 120, "prod/db-policy", 0),
            observe.Counter("prod/db", "ingress", "drop", "ingress isolated by prod/db-policy", 14, 840)]
    assert observe.stats_table(rows).splitlines() == [
        "POD      DIRECTION  ACTION  PACKETS  BYTES  RULE",
        "prod/db  ingress    accept        2    120  prod/db-policy ingress[0]",
        "prod/db  ingress    drop         14    840  ingress isolated by prod/db-policy",
    ]
    assert observe.stats_table([]) == "no counters\n"
