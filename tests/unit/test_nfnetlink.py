"""The netfilter netlink codec (enforcer.nfnetlink) and the two small users of it that have no
kernel-free test elsewhere: the generation probe (enforcer.daemon.nftgen) and the raw set
element messages (backends.libnft). No kernel, no root.

Expected bytes are written out here with struct, field by field, independently of the
codec, so a mistake in it cannot cancel out in the test."""
from __future__ import annotations

import socket
import struct

import pytest

from enforcer import nfnetlink as nfnl


def test_attribute_length_counts_the_value_but_not_the_padding():
    assert nfnl.attr(7, b"abcde") == struct.pack("=HH", 9, 7) + b"abcde" + b"\0\0\0"
    assert nfnl.attr(7, b"abcd") == struct.pack("=HH", 8, 7) + b"abcd"
    assert nfnl.attr(7, b"") == struct.pack("=HH", 4, 7)


@pytest.mark.parametrize("size", range(0, 9))
def test_every_attribute_ends_on_a_four_byte_boundary(size):
    assert len(nfnl.attr(1, b"x" * size)) % 4 == 0
    assert nfnl.align(size) % 4 == 0 and 0 <= nfnl.align(size) - size < 4


def test_typed_attributes():
    assert nfnl.u8(1, 3) == struct.pack("=HHB", 5, 1, 3) + b"\0\0\0"
    assert nfnl.be32(4, 0x01020304) == struct.pack("=HH", 8, 4) + b"\x01\x02\x03\x04"
    assert nfnl.string(2, "s0") == struct.pack("=HH", 7, 2) + b"s0\0" + b"\0"


def test_attribute_over_64k_is_refused_not_truncated():
    with pytest.raises(ValueError, match="65535"):
        nfnl.attr(3, b"\0" * 65532)
    assert len(nfnl.attr(3, b"\0" * 65531)) == 65536  # 65535 bytes long, one byte of padding


def test_nested_attributes_round_trip():
    inner = nfnl.attr(1, b"\x0a\0\0\x05") + nfnl.string(2, "abc")
    outer = nfnl.nested(3, inner) + nfnl.be32(4, 9)
    kind, length = struct.unpack_from("=HH", outer)[::-1]
    assert kind == 3 | nfnl.NLA_F_NESTED and length == 4 + len(inner)
    attrs = nfnl.parse_attrs(outer)
    assert set(attrs) == {3, 4}  # the nested flag is masked off the type
    assert nfnl.parse_attrs(attrs[3]) == {1: b"\x0a\0\0\x05", 2: b"abc\0"}


def test_repeated_attributes_keep_their_order_in_iter_attrs():
    data = nfnl.attr(1, b"a") + nfnl.attr(1, b"bb") + nfnl.attr(2, b"c")
    assert list(nfnl.iter_attrs(data)) == [(1, b"a"), (1, b"bb"), (2, b"c")]
    assert nfnl.parse_attrs(data) == {1: b"bb", 2: b"c"}  # the dict keeps the last


def test_malformed_attributes_end_the_walk():
    good = nfnl.attr(1, b"abcd")
    assert nfnl.parse_attrs(good + struct.pack("=HH", 2, 9)) == {1: b"abcd"}  # length < header
    assert nfnl.parse_attrs(good + struct.pack("=HH", 40, 9) + b"xx") == {1: b"abcd"}  # past the end


def test_byte_order_flag_is_masked_too():
    data = struct.pack("=HH", 8, 5 | nfnl.NLA_F_NET_BYTEORDER) + b"\0\0\0\x01"
    assert nfnl.parse_attrs(data) == {5: b"\0\0\0\x01"}


def test_netfilter_message_bytes():
    msg = nfnl.nf_message(nfnl.type_of(4, 1), nfnl.NLM_F_REQUEST | nfnl.NLM_F_ACK, 7, socket.AF_UNSPEC,
                          nfnl.u8(1, 1), res_id=100)
    want = (struct.pack("=IHHII", 28, 0x0401, 0x0005, 7, 0) + bytes([0, 0, 0, 100])
            + struct.pack("=HH", 5, 1) + b"\x01\0\0\0")
    assert msg == want


def test_messages_round_trip_through_split():
    a = nfnl.nf_message(0x0a0f, 0, 1, socket.AF_INET, nfnl.be32(1, 42), res_id=300)
    b = nfnl.message(nfnl.NLMSG_ERROR, 0, 2, struct.pack("=i", -16) + b"\0" * 16)
    c = nfnl.message(nfnl.NLMSG_DONE, 0, 3, b"\x01\x02\x03")  # unaligned body: padded
    assert len(c) == 20
    got = nfnl.split_messages(a + b + c)
    assert [(m.kind, m.seq) for m in got] == [(0x0a0f, 1), (nfnl.NLMSG_ERROR, 2), (nfnl.NLMSG_DONE, 3)]
    assert got[2].body == b"\x01\x02\x03"  # the length excludes the padding
    family, res_id, attrs = nfnl.parse_nfgenmsg(got[0].body)
    assert (family, res_id, nfnl.parse_attrs(attrs)) == (socket.AF_INET, 300, {1: struct.pack(">I", 42)})
    assert nfnl.error_code(got[1].body) == 16
    assert nfnl.error_code(b"") == 5  # too short to say: EIO


def test_truncated_message_is_not_returned():
    msg = nfnl.nf_message(0x0a0f, 0, 1, 0, nfnl.be32(1, 42))
    assert nfnl.split_messages(msg[:-1]) == []
    assert nfnl.split_messages(msg + msg[:10]) == [nfnl.Message(0x0a0f, 1, msg[16:])]


def test_short_nfgenmsg_is_an_error():
    with pytest.raises(ValueError):
        nfnl.parse_nfgenmsg(b"\0\0")


def test_batch_wraps_messages_with_begin_and_end():
    inner = nfnl.nf_message(0x0a0c, nfnl.NLM_F_REQUEST, 2, 1)
    data = nfnl.batch([inner], 1, 3)
    begin = struct.pack("=IHHII", 20, 0x10, 1, 1, 0) + struct.pack("=BBH", 0, 0, socket.htons(10))
    end = struct.pack("=IHHII", 20, 0x11, 1, 3, 0) + struct.pack("=BBH", 0, 0, socket.htons(10))
    assert data == begin + inner + end
    assert [m.seq for m in nfnl.split_messages(data)] == [1, 2, 3]


# ----------------------------------------------------------------- the users


def test_generation_request_and_reply():
    from enforcer.daemon import nftgen

    msg, seq = nftgen.request()
    assert msg == struct.pack("=IHHII", 20, (10 << 8) | 16, 1, seq, 0) + bytes(4)
    reply = (struct.pack("=IHHII", 36, (10 << 8) | 15, 0, seq, 0) + bytes(4)
             + struct.pack("=HH", 8, 1) + struct.pack(">I", 4242)  # NFTA_GEN_ID
             + struct.pack("=HH", 8, 2) + struct.pack(">I", 99))  # NFTA_GEN_PROC_PID
    assert nftgen.parse(reply) == 4242
    assert nftgen.parse(reply, seq) == 4242
    assert nftgen.parse(reply, seq + 1) is None  # a late answer to an older request
    assert nftgen.parse(struct.pack("=IHHII", 36, nfnl.NLMSG_ERROR, 0, seq, 0) + reply[16:]) is None
    assert nftgen.parse(reply[:20]) is None  # truncated


def test_set_element_message_bytes():
    from backends.libnft import element_message

    msg = element_message("add", 5, "netpol", "s0", ["10.0.0.5"])
    key = struct.pack("=HH", 8, 1) + bytes([10, 0, 0, 5])  # NFTA_DATA_VALUE
    elem = struct.pack("=HH", 16, 0x8001) + struct.pack("=HH", 12, 0x8001) + key  # LIST_ELEM{KEY{...}}
    body = (struct.pack("=BBH", 1, 0, 0)  # NFPROTO_INET
            + struct.pack("=HH", 11, 1) + b"netpol\0" + b"\0"  # NFTA_SET_ELEM_LIST_TABLE
            + struct.pack("=HH", 7, 2) + b"s0\0" + b"\0"  # NFTA_SET_ELEM_LIST_SET
            + struct.pack("=HH", 20, 0x8003) + elem)  # NFTA_SET_ELEM_LIST_ELEMENTS
    assert msg == struct.pack("=IHHII", 16 + len(body), (10 << 8) | 12, 0x405, 5, 0) + body
    delete = element_message("delete", 6, "netpol", "s0", ["10.0.0.5"])
    assert struct.unpack_from("=HH", delete, 4) == ((10 << 8) | 14, 0x5)  # no NLM_F_CREATE
