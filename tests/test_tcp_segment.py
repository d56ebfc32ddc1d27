"""The TCP wire format (nodes.tcp.segment), with scapy as the independent oracle.

scapy dissects what we build (header fields, every option, the checksum recomputed over the IPv4
and IPv6 pseudo-headers) and builds what we must parse. The folded checksum is checked against
the plain word sum by hypothesis; malformed options are refused (the connection counts and
drops such segments).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from nodes.tcp.connection import stray_reset
from nodes.tcp.segment import (
    ACK,
    FIN,
    MASK,
    PSH,
    RST,
    SYN,
    Malformed,
    build,
    encode_options,
    fold,
    parse,
    parse_options,
    pseudo_sum,
    reset_for,
    seq_diff,
    seq_le,
    seq_lt,
    verify,
    words,
)

A4, B4 = "192.0.2.1", "198.51.100.7"
A6, B6 = "2001:db8::1", "2001:db8:ffff::2"


def plain_sum(data: bytes) -> int:
    """The RFC 1071 sum, word by word, the slow obvious way."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(max_size=4000))
def test_words_is_the_word_sum_modulo_0xffff(data: bytes) -> None:
    # The folding shortcut must agree with the plain sum for every length, odd ones included.
    assert words(data) % 0xFFFF == plain_sum(data) % 0xFFFF


def test_words_folds_64k_segments() -> None:
    data = bytes(range(256)) * 256 + b"\x7f"
    assert words(data) % 0xFFFF == plain_sum(data) % 0xFFFF
    assert words(data).bit_length() < 1100  # folded, not the 64 KiB number


@pytest.mark.parametrize(("src", "dst", "ip"), [(A4, B4, IP), (A6, B6, IPv6)])
def test_scapy_dissects_what_we_build(src: str, dst: str, ip: type) -> None:
    pseudo = pseudo_sum(src, dst)
    options = encode_options(mss=1460, wscale=7, sack_permitted=True, timestamp=(0xDEADBEEF, 17))
    payload = b"hello, world!"  # odd length: the pad byte counts
    segment = build(40000, 80, 0xFFFFFFF0, 12345, SYN | ACK | PSH, 29200, pseudo, options, payload)
    packet = ip(src=src, dst=dst) / TCP(segment)
    tcp = packet[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (40000, 80, 0xFFFFFFF0, 12345)
    assert tcp.flags == "SAP"
    assert tcp.window == 29200
    assert tcp.dataofs == 10
    assert bytes(tcp.payload) == payload
    opts = dict((k, v) for k, v in tcp.options if k != "NOP")
    assert opts["MSS"] == 1460
    assert opts["WScale"] == 7
    assert opts["Timestamp"] == (0xDEADBEEF, 17)
    assert "SAckOK" in opts
    ours = tcp.chksum
    del tcp.chksum  # scapy recomputes what is deleted, over its own pseudo-header
    assert ip(bytes(packet))[TCP].chksum == ours
    assert verify(segment, pseudo)


def test_scapy_dissects_sack_blocks() -> None:
    pseudo = pseudo_sum(A4, B4)
    blocks = [(1000, 2000), (3000, 4000), (0xFFFFFF00, 5)]
    options = encode_options(timestamp=(1, 2), sack_blocks=blocks)
    segment = build(1, 2, 3, 4, ACK, 5, pseudo, options)
    tcp = TCP(segment)
    opts = dict((k, v) for k, v in tcp.options if k != "NOP")
    assert opts["SAck"] == (1000, 2000, 3000, 4000, 0xFFFFFF00, 5)
    assert opts["Timestamp"] == (1, 2)
    assert len(options) == 40  # 3 blocks and timestamps fill the option space
    # Without timestamps, four blocks fit.
    four = encode_options(sack_blocks=[*blocks, (7, 9)])
    assert (
        len(dict((k, v) for k, v in TCP(build(1, 2, 3, 4, ACK, 5, 0, four)).options)["SAck"]) == 8
    )


def test_we_parse_what_scapy_builds() -> None:
    tcp = TCP(
        sport=1234,
        dport=443,
        seq=0xFFFFFFFF,
        ack=77,
        flags="SA",
        window=1000,
        options=[
            ("MSS", 1220),
            ("NOP", None),
            ("WScale", 14),
            ("SAckOK", b""),
            ("Timestamp", (5, 6)),
            ("SAck", (10, 20)),
            (99, b"\x01\x02"),  # an unknown option: skipped by its length
            ("EOL", None),
        ],
    )
    packet = IP(bytes(IP(src=A4, dst=B4) / tcp / b"payload"))  # built: lengths, checksum
    raw = bytes(packet[TCP])
    seg = parse(raw, pseudo_sum(A4, B4))  # scapy's checksum verifies
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.wnd) == (1234, 443, 0xFFFFFFFF, 77, 1000)
    assert seg.flags == SYN | ACK
    assert bytes(seg.payload) == b"payload"
    o = seg.options
    assert (o.mss, o.wscale, o.sack_permitted, o.tsval, o.tsecr) == (1220, 14, True, 5, 6)
    assert o.sack_blocks == ((10, 20),)
    assert seg.seg_len == 8  # the payload and the SYN


def test_window_scale_above_14_is_taken_as_14() -> None:
    opts = parse_options(bytes((3, 3, 15, 0)), 0, 4)
    assert opts.wscale == 14


@pytest.mark.parametrize(
    "options",
    [
        bytes((2, 0, 0, 0)),  # length 0
        bytes((8, 1, 0, 0)),  # length 1
        bytes((1, 1, 1, 5)),  # kind with no length byte
        bytes((8, 10, 0, 0)),  # runs past the header
    ],
)
def test_malformed_options_are_refused(options: bytes) -> None:
    segment = build(1, 2, 3, 4, ACK, 5, 0, options)
    with pytest.raises(Malformed):
        parse(segment)


def test_known_options_of_the_wrong_length_are_ignored_as_linux_does() -> None:
    opts = parse_options(bytes((2, 3, 5, 1)), 0, 4)  # an MSS of length 3
    assert opts.mss is None


def test_bad_checksum_and_bad_offset_are_refused() -> None:
    pseudo = pseudo_sum(A4, B4)
    segment = bytearray(build(1, 2, 3, 4, ACK, 5, pseudo, b"", b"data"))
    parse(bytes(segment), pseudo)
    segment[-1] ^= 1
    with pytest.raises(Malformed, match="checksum"):
        parse(bytes(segment), pseudo)
    short = bytearray(build(1, 2, 3, 4, ACK, 5, pseudo))
    short[12] = 0x40  # a data offset of 16 bytes
    with pytest.raises(Malformed, match="offset"):
        parse(bytes(short))


def test_fold_gives_zero_for_negative_zero() -> None:
    assert fold(0xFFFF) == 0
    assert fold(0x1234) == 0xFFFF - 0x1234


def test_reset_for_follows_rfc9293_closed_state() -> None:
    pseudo = pseudo_sum(A4, B4)
    # An ACK: <SEQ=SEG.ACK><CTL=RST>.
    rst = parse(reset_for(parse(build(5, 6, 100, 200, ACK, 9, pseudo)), pseudo) or b"")
    assert (rst.sport, rst.dport, rst.seq, rst.flags) == (6, 5, 200, RST)
    # No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, the SYN and FIN counted.
    seg = parse(build(5, 6, MASK, 0, SYN | FIN, 9, pseudo, b"", b"abc"))
    rst = parse(reset_for(seg, pseudo) or b"")
    assert (rst.seq, rst.ack, rst.flags) == (0, 4, RST | ACK)
    # Never a RST for a RST.
    assert reset_for(parse(build(5, 6, 1, 2, RST | ACK, 0, pseudo)), pseudo) is None
    assert stray_reset(build(5, 6, 1, 2, RST, 0, pseudo), B4, A4) is None


def test_sequence_comparisons_wrap() -> None:
    assert seq_lt(0xFFFFFFF0, 5)
    assert not seq_lt(5, 0xFFFFFFF0)
    assert seq_le(7, 7)
    assert seq_diff(3, 0xFFFFFFFE) == 5
    assert seq_diff(0xFFFFFFFE, 3) == -5
