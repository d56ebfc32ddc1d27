"""The ip node: IPv4 and IPv6 in, out, ICMP, fragments, routes and messages.

scapy is the oracle: it builds the packets the node must parse (options, extension headers,
fragments, ICMP, bad checksums) and dissects the packets the node builds (header fields and
checksums as scapy computes them, fragments as scapy reassembles them). The node is linked to
the test's socket node: socket hook ``l`` is ip's ``link0``, and each protocol hook of ip is a
socket hook of the same name. Every send returns once its chain has run, so what the socket
holds afterwards is everything the node sent.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_interface
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPerror,
    IPOption_NOP,
    IPOption_RR,
    UDPerror,
)
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.packet import Packet, Raw

import netgraph
from netgraph import Item, NetgraphError, Tagged, tag
from nodes.ip.header import U16, checksum, ones_sum
from nodes.ip.messages import (
    INADDR,
    INPREFIX,
    IP_COOKIE,
    NGM_IP_GETCONFIG,
    NGM_IP_GETSTATS,
    IpConfig,
    IpStats,
)
from nodes.ip.stack import DROPS, OUTCOMES
from tests.scapy_typed import defragment, defragment6, fragment, fragment6

ME4, PEER4 = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
ME6, PEER6 = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
FAR4 = IPv4Address("198.51.100.7")

# ----------------------------------------------------------------------------------- helpers


async def make_ip(sock: netgraph.Socket, *protocols: str, name: str = "ip0") -> str:
    """An ip node named ``name`` with link0 on socket hook ``l``, 192.0.2.1/24 and
    2001:db8::1/64 on link0, and each protocol hook on the socket hook of the same name."""
    await sock.mkpeer(".", "ip", "l", "link0")
    await sock.name_node("l", name)
    path = f"{name}:"
    for proto in protocols:
        await sock.connect(".", path, proto, proto)
    await sock.send_ascii(path, 'addaddr { addr=192.0.2.1/24 hook="link0" }')
    await sock.send_ascii(path, 'addaddr { addr=2001:db8::1/64 hook="link0" }')
    return path


async def received(sock: netgraph.Socket) -> list[tuple[str, Any]]:
    """Everything the socket node has received and not yet read, in arrival order."""
    out = []
    while sock.pending_data():
        out.append(await sock.recv_data())
    return out


async def stats(sock: netgraph.Socket, path: str = "ip0:") -> IpStats:
    reply = await sock.request(path, IP_COOKIE, NGM_IP_GETSTATS)
    assert isinstance(reply.args, IpStats)
    return reply.args


def accounted(counts: IpStats) -> bool:
    """Every packet in (and every reassembled datagram) ended in exactly one counter."""
    ends: int = sum(getattr(counts, name) for name in OUTCOMES)
    return counts.in_packets + counts.reassembled == ends


def drops(counts: IpStats) -> dict[str, int]:
    return {name: getattr(counts, name) for name in DROPS if getattr(counts, name)}


def v4(payload: Packet | bytes = b"", **fields: Any) -> bytes:
    fields.setdefault("src", str(PEER4))
    fields.setdefault("dst", str(ME4))
    return bytes(IP(**fields) / payload)


def v6(payload: Packet | bytes = b"", **fields: Any) -> bytes:
    fields.setdefault("src", str(PEER6))
    fields.setdefault("dst", str(ME6))
    return bytes(IPv6(**fields) / payload)


def scapy_sums_agree(raw: bytes, *fields: tuple[type[Packet], str]) -> bool:
    """Whether each (layer, checksum field) of ``raw`` is what scapy computes for it."""
    packet = (IP if raw[0] >> 4 == 4 else IPv6)(raw)
    for layer, name in fields:
        fresh = packet.copy()
        delattr(fresh[layer], name)
        if bytes(fresh) != raw:
            return False
    return True


async def one_out(sock: netgraph.Socket, hook: str = "l") -> bytes:
    """The one packet the node sent (on the link unless said otherwise)."""
    got = await received(sock)
    assert [h for h, _ in got] == [hook], got
    return bytes(got[0][1])


# ---------------------------------------------------------------------------- receiving


async def test_udp_over_ipv4_goes_up_with_its_tags(sock: netgraph.Socket) -> None:
    """A datagram to our address reaches the udp hook as its payload, tagged."""
    await make_ip(sock, "udp")
    packet = v4(UDP(sport=7, dport=9) / b"hello", ttl=33, tos=0x2E)
    await sock.send_data("l", packet)
    [(hook, item)] = await received(sock)
    assert hook == "udp"
    assert isinstance(item, Tagged)
    assert bytes(item) == packet[20:]
    assert dict(item.tags) == {
        "src": PEER4,
        "dst": ME4,
        "proto": 17,
        "ttl": 33,
        "tos": 0x2E,
        "link": "link0",
    }


async def test_udp_over_ipv6_goes_up_with_its_tags(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    datagram = UDP(sport=7, dport=9) / b"hello6"
    packet = v6(datagram, hlim=17, tc=0xB8)
    await sock.send_data("l", packet)
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item)) == ("udp", packet[40:])
    assert dict(item.tags) == {
        "src": PEER6,
        "dst": ME6,
        "proto": 17,
        "ttl": 17,
        "tos": 0xB8,
        "link": "link0",
    }


async def test_the_fast_path_delivers_what_the_general_path_does(sock: netgraph.Socket) -> None:
    """The first packet of a flow takes the general path, later ones the inline one: their
    items are alike, for IPv4 and IPv6, and both are counted delivered."""
    await make_ip(sock, "udp", "tcp")
    packets = [
        v4(UDP(sport=1, dport=2) / b"a"),
        v4(TCP(sport=1, dport=2) / b"b"),
        v6(UDP(sport=1, dport=2) / b"c"),
        v6(TCP(sport=1, dport=2) / b"d"),
    ]
    for packet in packets:
        await sock.send_batch("l", [packet, packet])
        (h1, first), (h2, second) = await received(sock)
        assert h1 == h2
        assert (bytes(first), dict(first.tags)) == (bytes(second), dict(second.tags))
    counts = await stats(sock)
    assert (counts.in_packets, counts.delivered) == (8, 8)


async def test_ipv4_options_are_skipped_by_the_header_length(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    datagram = bytes(UDP(sport=5, dport=6) / b"with options")
    packet = v4(datagram, proto=17, options=[IPOption_NOP(), IPOption_RR(routers=["192.0.2.9"])])
    assert IP(packet).ihl > 5
    await sock.send_data("l", packet)
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item)) == ("udp", datagram)


async def test_ipv6_extension_headers_are_walked(sock: netgraph.Socket) -> None:
    """Hop-by-hop, destination options and a spent routing header come off; the payload and
    the protocol are the upper layer's."""
    await make_ip(sock, "udp")
    datagram = bytes(UDP(sport=5, dport=6) / b"behind headers")
    headers = (
        IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0\0\0\0")])
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(addresses=[], segleft=0)
        / IPv6ExtHdrDestOpt(nh=17)
    )
    await sock.send_data("l", v6(headers / Raw(datagram)))
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item), item.tags["proto"]) == ("udp", datagram, 17)


async def test_trailing_padding_is_trimmed(sock: netgraph.Socket) -> None:
    """Bytes after the stated length (link padding) are not payload."""
    await make_ip(sock, "udp")
    datagram = bytes(UDP(sport=5, dport=6) / b"xy")
    await sock.send_data("l", v4(datagram, proto=17) + b"\0" * 18)
    await sock.send_data("l", v6(datagram, nh=17) + b"\xaa" * 7)
    got = await received(sock)
    assert [bytes(item) for _, item in got] == [datagram, datagram]


async def test_every_item_type_is_taken_on_a_link(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    packet = v4(UDP(sport=1, dport=2) / b"z")
    items: list[Item] = [packet, bytearray(packet), memoryview(packet), tag(packet, anything=1)]
    await sock.send_batch("l", items)
    got = await received(sock)
    assert [bytes(item) for _, item in got] == [packet[20:]] * 4


# --------------------------------------------------------------------------- drop reasons

BAD_CHECKSUM = v4(UDP() / b"x", chksum=0x1234)
HEADER_LEN_4 = bytearray(v4(UDP() / b"x"))
HEADER_LEN_4[0] = 0x44
TOO_SHORT_TOTAL = v4(UDP() / b"x", len=12)
TOO_LONG_TOTAL = v4(UDP() / b"x", len=200)
BAD_OPTION = v4(UDP() / b"x", options=[Raw(b"\x07\x09\x04\x00")])  # RR, length past the end


def _tcp_frag(offset: int) -> bytes:
    return v4(Raw(bytes(16)), proto=6, flags="MF", frag=offset, id=5)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        pytest.param(b"\x45" + bytes(9), "truncated", id="v4-shorter-than-header"),
        pytest.param(TOO_LONG_TOTAL, "truncated", id="v4-total-past-the-end"),
        pytest.param(v6(UDP() / b"x")[:45], "truncated", id="v6-payload-past-the-end"),
        pytest.param(bytes(IPv6(plen=2))[:30], "truncated", id="v6-shorter-than-header"),
        pytest.param(b"\x55" + bytes(30), "bad_version", id="version-5"),
        pytest.param(b"", "truncated", id="empty"),
        pytest.param(bytes(HEADER_LEN_4), "bad_hdrlen", id="ihl-4"),
        pytest.param(TOO_SHORT_TOTAL, "bad_length", id="total-under-header"),
        pytest.param(BAD_CHECKSUM, "bad_checksum", id="v4-checksum"),
        pytest.param(BAD_OPTION, "bad_options", id="v4-option-overruns"),
        pytest.param(v4(UDP(), src="224.0.0.5"), "bad_src", id="v4-multicast-source"),
        pytest.param(v4(UDP(), src="255.255.255.255"), "bad_src", id="v4-broadcast-source"),
        pytest.param(v4(UDP(), src="192.0.2.255"), "bad_src", id="v4-our-subnet-broadcast"),
        pytest.param(v4(UDP(), src="127.0.0.1"), "bad_src", id="v4-loopback-source"),
        pytest.param(v6(UDP(), src="ff02::1"), "bad_src", id="v6-multicast-source"),
        pytest.param(v6(UDP(), src="::ffff:192.0.2.2"), "bad_src", id="v6-mapped-source"),
        pytest.param(v4(UDP(), dst="127.0.0.1"), "bad_dst", id="v4-loopback-dst"),
        pytest.param(v6(UDP(), dst="::1"), "bad_dst", id="v6-loopback-dst"),
        pytest.param(v4(TCP(), dst="192.0.2.255"), "bad_dst", id="tcp-to-broadcast"),
        pytest.param(v6(TCP(), dst="ff02::1"), "bad_dst", id="tcp-to-v6-multicast"),
        pytest.param(v6(IPv6ExtHdrHopByHop() / UDP(), plen=0), "bad_length", id="jumbogram"),
        pytest.param(v4(UDP(), dst="198.51.100.7"), "not_for_us", id="v4-not-ours"),
        pytest.param(v6(UDP(), dst="2001:db8:1::9"), "not_for_us", id="v6-not-ours"),
        pytest.param(v4(Raw(b"abc"), proto=200), "no_proto", id="no-hook"),
        pytest.param(v6(Raw(b""), nh=59), "no_next", id="v6-no-next-header"),
        pytest.param(_tcp_frag(1), "frag_bad", id="tcp-fragment-at-8"),
        pytest.param(
            v4(Raw(bytes(12)), flags="MF", frag=3, id=5, proto=17), "frag_bad", id="odd-middle"
        ),
        pytest.param(v4(ICMP(chksum=1)), "icmp_bad", id="icmp-checksum"),
        pytest.param(v6(ICMPv6EchoRequest(cksum=1)), "icmp_bad", id="icmpv6-checksum"),
        pytest.param(
            v6(IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP()),
            "bad_exthdr",
            id="hop-by-hop-not-first",
        ),
        pytest.param(
            v6(IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1) / UDP()),
            "bad_exthdr",
            id="routing-segments-left",
        ),
    ],
)
async def test_malformed_packets_are_dropped_and_counted_by_reason(
    sock: netgraph.Socket, packet: bytes, reason: str
) -> None:
    """Nothing goes up, the sender sees no error, and the one reason is counted. Twice: the
    second time the flow would be known to the fast path, had the first been delivered."""
    await make_ip(sock, "tcp", "udp")
    await sock.send_batch("l", [packet, packet])
    assert [h for h, _ in await received(sock) if h != "l"] == []
    counts = await stats(sock)
    assert drops(counts) == {reason: 2}
    assert counts.delivered == 0
    assert accounted(counts)


async def test_a_host_takes_any_ttl(sock: netgraph.Socket) -> None:
    """RFC 1122 3.2.1.7: a host does not drop a packet for its TTL, 0 and 1 included."""
    await make_ip(sock, "udp")
    await sock.send_batch("l", [v4(UDP(), ttl=0), v4(UDP(), ttl=1), v6(UDP(), hlim=0)])
    assert [item.tags["ttl"] for _, item in await received(sock)] == [0, 1, 0]


async def test_unknown_ipv6_options_act_by_their_high_bits(sock: netgraph.Socket) -> None:
    """00 skip; 01 drop quietly; 10 drop and a parameter problem (code 2) pointing at it."""
    await make_ip(sock, "udp")
    datagram = bytes(UDP())

    def with_option(kind: int) -> bytes:
        # Destination options: next header UDP, 8 bytes: the option (2 data bytes), a PadN.
        return v6(Raw(bytes([17, 0, kind, 2, 0, 0, 1, 0]) + datagram), nh=60)

    await sock.send_data("l", with_option(0x1E))
    assert [h for h, _ in await received(sock)] == ["udp"]
    await sock.send_data("l", with_option(0x5E))
    assert await received(sock) == []
    await sock.send_data("l", with_option(0x9E))
    error = IPv6(await one_out(sock))
    assert (error[ICMPv6ParamProblem].code, error[ICMPv6ParamProblem].ptr) == (2, 42)
    assert drops(await stats(sock)) == {"bad_options": 2}


# ---------------------------------------------------------------------------------- ICMP


async def test_echo_request_is_answered(sock: netgraph.Socket) -> None:
    await make_ip(sock)
    await sock.send_data("l", v4(ICMP(id=77, seq=3) / b"ping data", tos=0x10))
    raw = await one_out(sock)
    reply = IP(raw)
    assert (reply.src, reply.dst, reply.proto) == (str(ME4), str(PEER4), 1)
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].id, reply[ICMP].seq) == (0, 0, 77, 3)
    assert bytes(reply[ICMP].payload) == b"ping data"
    assert scapy_sums_agree(raw, (IP, "chksum"), (ICMP, "chksum"))
    counts = await stats(sock)
    assert (counts.icmp_echo, counts.delivered) == (1, 1)


async def test_icmpv6_echo_request_is_answered_with_the_pseudo_header_sum(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock)
    await sock.send_data("l", v6(ICMPv6EchoRequest(id=9, seq=4, data=b"ping6")))
    raw = await one_out(sock)
    reply = IPv6(raw)
    assert (reply.src, reply.dst) == (str(ME6), str(PEER6))
    echo = reply[ICMPv6EchoReply]
    assert (echo.id, echo.seq, echo.data) == (9, 4, b"ping6")
    assert scapy_sums_agree(raw, (ICMPv6EchoReply, "cksum"))


async def test_echo_to_a_broadcast_or_multicast_address_is_not_answered(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock, "icmp")
    await sock.send_data("l", v4(ICMP(), dst="192.0.2.255"))
    await sock.send_data("l", v4(ICMP(), dst="255.255.255.255"))
    await sock.send_data("l", v6(ICMPv6EchoRequest(), dst="ff02::1"))
    got = await received(sock)
    assert [h for h, _ in got] == ["icmp", "icmp"]  # seen by the icmp hook, not answered
    assert (await stats(sock)).icmp_echo == 0


async def test_echo_requests_also_go_up_the_icmp_hook(sock: netgraph.Socket) -> None:
    await make_ip(sock, "icmp", "icmp6")
    request = bytes(ICMP(id=1, seq=1) / b"x")
    await sock.send_data("l", v4(request, proto=1))
    got = await received(sock)
    assert sorted(h for h, _ in got) == ["icmp", "l"]
    up = next(item for h, item in got if h == "icmp")
    assert (bytes(up), up.tags["proto"]) == (request, 1)


async def test_protocol_unreachable_quotes_the_packet(sock: netgraph.Socket) -> None:
    await make_ip(sock)
    offending = v4(Raw(b"0123456789"), proto=200, id=99)
    await sock.send_data("l", offending)
    raw = await one_out(sock)
    error = IP(raw)
    assert (error.src, error.dst) == (str(ME4), str(PEER4))
    assert (error[ICMP].type, error[ICMP].code) == (3, 2)
    assert bytes(error[ICMP].payload) == offending
    assert scapy_sums_agree(raw, (IP, "chksum"), (ICMP, "chksum"))


async def test_udp_without_a_hook_gets_port_unreachable(sock: netgraph.Socket) -> None:
    await make_ip(sock, "tcp")
    await sock.send_data("l", v4(UDP(sport=1000, dport=53) / b"q"))
    error = IP(await one_out(sock))
    assert (error[ICMP].type, error[ICMP].code, error[UDPerror].dport) == (3, 3, 53)
    await sock.send_data("l", v6(UDP(sport=1000, dport=53) / b"q"))
    error6 = IPv6(await one_out(sock))
    assert (error6[ICMPv6DestUnreach].code, error6[UDPerror].dport) == (4, 53)


async def test_ipv6_unknown_next_header_gets_a_parameter_problem(sock: netgraph.Socket) -> None:
    """Code 1, pointing at the next-header field that names it (RFC 8200 4)."""
    await make_ip(sock)
    await sock.send_data("l", v6(Raw(b"data"), nh=200))
    problem = IPv6(await one_out(sock))[ICMPv6ParamProblem]
    assert (problem.code, problem.ptr) == (1, 6)
    await sock.send_data("l", v6(IPv6ExtHdrDestOpt(nh=200) / Raw(b"data")))
    problem = IPv6(await one_out(sock))[ICMPv6ParamProblem]
    assert (problem.code, problem.ptr) == (1, 40)
    assert (await stats(sock)).icmp_out == 2


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(v4(Raw(b"x"), proto=200, dst="192.0.2.255"), id="to-broadcast"),
        pytest.param(v4(Raw(b"x"), proto=200, dst="224.0.0.9"), id="to-multicast"),
        pytest.param(v6(Raw(b"x"), nh=200, dst="ff02::9"), id="to-v6-multicast"),
        pytest.param(v4(Raw(bytes(8)), proto=200, frag=2, id=4), id="later-fragment"),
    ],
)
async def test_no_icmp_error_about_these(sock: netgraph.Socket, packet: bytes) -> None:
    await make_ip(sock)
    await sock.send_data("l", packet)
    assert await received(sock) == []
    assert (await stats(sock)).icmp_out == 0


async def test_icmp_errors_are_rate_limited(
    sock: netgraph.Socket, autojump_clock: trio.testing.MockClock
) -> None:
    """A token bucket: a burst, then the rate."""
    await make_ip(sock)
    await sock.send_ascii("ip0:", "setconfig { icmp_rate=2 icmp_burst=3 }")
    await sock.send_ascii("ip0:", 'addaddr { addr=192.0.2.1/24 hook="link0" }')
    await sock.send_batch("l", [v4(Raw(b"x"), proto=200)] * 5)
    assert len(await received(sock)) == 3
    autojump_clock.jump(1.0)  # two more tokens
    await sock.send_batch("l", [v4(Raw(b"x"), proto=200)] * 5)
    assert len(await received(sock)) == 2
    counts = await stats(sock)
    assert (counts.icmp_out, counts.icmp_ratelimited) == (5, 5)


def _quote4(proto: int = 17, src: IPv4Address = ME4) -> bytes:
    """What we sent that the error is about (UDP 1234 -> 53 to 198.51.100.7)."""
    return bytes(IP(src=str(src), dst=str(FAR4), id=4, proto=proto) / UDP(sport=1234, dport=53))


async def test_icmp_errors_go_up_to_the_quoted_packets_protocol(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp", "icmp")
    message = bytes(ICMP(type=3, code=3) / _quote4())
    await sock.send_data("l", v4(message, proto=1, src="192.0.2.254"))
    got = dict(await received(sock))
    error = got["udp"]
    assert bytes(error) == _quote4()[20:]
    assert dict(error.tags) == {
        "src": ME4,
        "dst": FAR4,
        "proto": 17,
        "link": "link0",
        "icmp_type": 3,
        "icmp_code": 3,
        "icmp_src": IPv4Address("192.0.2.254"),
    }
    assert bytes(got["icmp"]) == message  # the icmp hook sees it whole
    assert (await stats(sock)).icmp_reported == 1


async def test_fragmentation_needed_goes_up_with_the_mtu_and_lowers_the_path_mtu(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock, "udp")
    await sock.send_ascii("ip0:", "addroute { dest=0.0.0.0/0 gateway=192.0.2.254 }")
    message = bytes(ICMP(type=3, code=4, nexthopmtu=1200) / _quote4())
    await sock.send_data("l", v4(message, proto=1, src="192.0.2.254"))
    [(_, error)] = await received(sock)
    assert (error.tags["icmp_code"], error.tags["mtu"]) == (4, 1200)
    _, text = await sock.request_ascii("ip0:", f"getroute {FAR4}")
    assert "mtu=1200" in text
    await sock.send_data("udp", tag(bytes(1400), dst=FAR4))
    sizes = [len(item) for _, item in await received(sock)]
    assert max(sizes) <= 1200
    assert len(sizes) == 2


async def test_packet_too_big_goes_up_and_ipv6_then_fragments_at_the_source(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock, "udp")
    far = "2001:db8:5::7"
    await sock.send_ascii("ip0:", 'addroute { dest=::/0 gateway=2001:db8::fe hook="link0" }')
    quoted = bytes(IPv6(src=str(ME6), dst=far) / UDP(sport=1, dport=2) / bytes(1300))
    await sock.send_data("l", v6(ICMPv6PacketTooBig(mtu=1280) / quoted, src="2001:db8::fe"))
    [(_, error)] = await received(sock)
    assert (error.tags["icmp_type"], error.tags["mtu"], error.tags["dst"]) == (
        2,
        1280,
        IPv6Address(far),
    )
    payload = bytes(UDP(sport=1, dport=2) / bytes(1400))
    await sock.send_data("udp", tag(payload, dst=IPv6Address(far)))
    pieces = [IPv6(bytes(item)) for _, item in await received(sock)]
    assert len(pieces) == 2
    assert all(len(p) <= 1280 for p in pieces)
    whole = defragment6(pieces)
    assert bytes(whole[UDP]) == payload


async def test_icmpv6_errors_go_up(sock: netgraph.Socket) -> None:
    await make_ip(sock, "tcp")
    quoted = bytes(
        IPv6(src=str(ME6), dst="2001:db8::9") / IPv6ExtHdrDestOpt() / TCP(sport=80, dport=9)
    )
    await sock.send_data("l", v6(ICMPv6TimeExceeded(code=0) / quoted, src="2001:db8::fe"))
    [(hook, error)] = await received(sock)
    assert hook == "tcp"
    assert bytes(error)[:4] == b"\x00\x50\x00\x09"
    assert (error.tags["icmp_type"], error.tags["proto"]) == (3, 6)


async def test_an_icmp_error_about_someone_elses_packet_is_dropped(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    message = bytes(ICMP(type=3, code=3) / _quote4(src=IPv4Address("192.0.2.77")))
    await sock.send_data("l", v4(message, proto=1))
    assert await received(sock) == []
    assert drops(await stats(sock)) == {"icmp_bad": 1}


async def test_a_protocol_can_ask_for_port_unreachable(sock: netgraph.Socket) -> None:
    """The unreach tag: the item as it came up goes back down; its sender gets the error."""
    await make_ip(sock, "udp")
    datagram = UDP(sport=4000, dport=5000) / b"nobody"
    await sock.send_data("l", v4(datagram))
    [(_, item)] = await received(sock)
    await sock.send_data("udp", tag(item, unreach=3))
    error = IP(await one_out(sock))
    assert (error.dst, error[ICMP].type, error[ICMP].code) == (str(PEER4), 3, 3)
    assert (error[IPerror].src, error[UDPerror].dport) == (str(PEER4), 5000)
    await sock.send_data("l", v6(datagram))
    [(_, item6)] = await received(sock)
    await sock.send_data("udp", tag(item6, unreach=4))
    error6 = IPv6(await one_out(sock))
    assert (error6.dst, error6[ICMPv6DestUnreach].code) == (str(PEER6), 4)


# -------------------------------------------------------------------------------- sending


async def test_sending_builds_an_ipv4_header_scapy_agrees_with(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    payload = bytes(UDP(sport=1, dport=2) / b"out")
    await sock.send_data("udp", tag(payload, dst=PEER4, ttl=9, tos=0x20, df=True))
    raw = await one_out(sock)
    packet = IP(raw)
    assert (packet.version, packet.ihl, packet.len) == (4, 5, 20 + len(payload))
    assert (packet.src, packet.dst, packet.ttl, packet.tos, packet.proto) == (
        str(ME4),
        str(PEER4),
        9,
        0x20,
        17,
    )
    assert packet.flags == "DF"
    assert bytes(packet.payload) == payload
    assert scapy_sums_agree(raw, (IP, "chksum"))


async def test_sending_builds_an_ipv6_header_scapy_agrees_with(sock: netgraph.Socket) -> None:
    await make_ip(sock, "tcp")
    payload = bytes(TCP(sport=1, dport=2))
    await sock.send_data("tcp", tag(payload, dst=PEER6, tclass=0x02))
    packet = IPv6(await one_out(sock))
    assert (packet.src, packet.dst, packet.nh, packet.hlim, packet.tc, packet.plen) == (
        str(ME6),
        str(PEER6),
        6,
        64,
        2,
        len(payload),
    )
    assert bytes(packet.payload) == payload


@pytest.mark.parametrize("dst", [PEER4, PEER6])
async def test_the_csum_tag_fills_the_transport_checksum(
    sock: netgraph.Socket, dst: IPv4Address | IPv6Address
) -> None:
    await make_ip(sock, "udp")
    datagram = bytearray(bytes(UDP(sport=1, dport=2, chksum=0) / b"summed"))
    await sock.send_data("udp", tag(bytes(datagram), dst=dst, csum=6))
    raw = await one_out(sock)
    assert raw[-8:-6] != b"\0\0"
    assert scapy_sums_agree(raw, (UDP, "chksum"))


async def test_a_udp_checksum_of_zero_is_sent_as_ffff(sock: netgraph.Socket) -> None:
    """RFC 768: zero means no checksum, so a computed zero goes as 0xFFFF."""
    await make_ip(sock, "udp")
    datagram = bytearray(bytes(UDP(sport=1, dport=2, len=12, chksum=0)) + bytes(4))
    # Two payload bytes chosen so that the whole sums to 0xFFFF: the checksum computes to 0.
    pseudo = int(ME4) + int(PEER4) + 17 + 12
    datagram[8:10] = U16.pack(checksum(datagram, pseudo))
    await sock.send_data("udp", tag(bytes(datagram), dst=PEER4, csum=6))
    raw = await one_out(sock)
    assert raw[26:28] == b"\xff\xff"
    assert scapy_sums_agree(raw, (UDP, "chksum"))


async def test_sending_fragments_ipv4_to_the_link_mtu(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_ascii("ip0:", 'setmtu { hook="link0" mtu=576 }')
    payload = bytes(UDP(sport=1, dport=2) / random.Random(1).randbytes(2000))
    await sock.send_data("udp", tag(payload, dst=PEER4))
    pieces = [IP(bytes(item)) for _, item in await received(sock)]
    assert len(pieces) == 4
    assert all(len(p) <= 576 and scapy_sums_agree(bytes(p), (IP, "chksum")) for p in pieces)
    assert [p.flags == "MF" for p in pieces] == [True, True, True, False]
    assert len({p.id for p in pieces}) == 1
    [whole] = defragment(pieces)
    assert bytes(whole.payload) == payload
    assert (await stats(sock)).out_fragments == 4


async def test_sending_fragments_ipv6_at_the_source(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_ascii("ip0:", 'setmtu { hook="link0" mtu=1280 }')
    payload = bytes(UDP(sport=1, dport=2) / random.Random(2).randbytes(3000))
    await sock.send_data("udp", tag(payload, dst=PEER6))
    pieces = [IPv6(bytes(item)) for _, item in await received(sock)]
    assert len(pieces) == 3
    assert all(len(p) <= 1280 for p in pieces)
    assert all(IPv6ExtHdrFragment in p for p in pieces)
    assert bytes(defragment6(pieces)[UDP]) == payload


@pytest.mark.parametrize("dst", [PEER4, PEER6])
async def test_too_big_with_df_is_emsgsize(
    sock: netgraph.Socket, dst: IPv4Address | IPv6Address
) -> None:
    await make_ip(sock, "udp")
    with pytest.raises(NetgraphError) as info:
        await sock.send_data("udp", tag(bytes(1500), dst=dst, df=True))
    assert info.value.errno == errno.EMSGSIZE
    assert await received(sock) == []
    assert (await stats(sock)).out_too_big == 1


@pytest.mark.parametrize(
    ("tags", "code", "counter"),
    [
        ({}, errno.EINVAL, "out_bad_tags"),
        ({"dst": "not an address"}, errno.EINVAL, "out_bad_tags"),
        ({"dst": PEER4, "ttl": 0}, errno.EINVAL, "out_bad_tags"),
        ({"dst": PEER4, "csum": 99}, errno.EINVAL, "out_bad_tags"),
        ({"dst": FAR4}, errno.EHOSTUNREACH, "out_no_route"),
        ({"dst": ME4}, errno.EHOSTUNREACH, "out_no_route"),
        ({"dst": PEER4, "src": IPv4Address("192.0.2.50")}, errno.EADDRNOTAVAIL, "out_no_src"),
        ({"dst": PEER4, "src": ME6}, errno.EADDRNOTAVAIL, "out_no_src"),
    ],
)
async def test_unsendable_items_raise_and_are_counted(
    sock: netgraph.Socket, tags: dict[str, Any], code: int, counter: str
) -> None:
    await make_ip(sock, "udp")
    with pytest.raises(NetgraphError) as info:
        await sock.send_data("udp", tag(b"12345678", **tags))
    assert info.value.errno == code
    assert getattr(await stats(sock), counter) == 1
    assert await received(sock) == []


async def test_plain_bytes_from_a_protocol_are_refused(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    with pytest.raises(NetgraphError) as info:
        await sock.send_data("udp", b"no tags")
    assert info.value.errno == errno.EINVAL


async def test_a_route_by_an_unconnected_hook_is_enetdown(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_ascii("ip0:", 'addroute { dest=198.51.100.0/24 hook="link1" }')
    with pytest.raises(NetgraphError) as info:
        await sock.send_data("udp", tag(b"x", dst=FAR4, src=ME4))
    assert info.value.errno == errno.ENETDOWN


async def test_a_batch_sends_what_it_can_and_raises_the_first_error(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock, "udp")
    items = [tag(b"a", dst=PEER4), tag(b"b", dst=FAR4), tag(b"c", dst=PEER6)]
    with pytest.raises(NetgraphError) as info:
        await sock.send_batch("udp", items)
    assert info.value.errno == errno.EHOSTUNREACH
    assert [bytes(item)[-1:] for _, item in await received(sock)] == [b"a", b"c"]


# --------------------------------------------------------------------------------- routes


async def test_routes_pick_the_link_by_longest_prefix(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.connect(".", "ip0:", "l1", "link1")
    await sock.send_ascii("ip0:", 'addaddr { addr=203.0.113.1/24 hook="link1" }')
    await sock.send_ascii("ip0:", "addroute { dest=0.0.0.0/0 gateway=192.0.2.254 }")
    await sock.send_ascii("ip0:", "addroute { dest=198.51.100.0/24 gateway=203.0.113.9 }")
    await sock.send_data("udp", tag(b"far", dst=FAR4))
    await sock.send_data("udp", tag(b"elsewhere", dst=IPv4Address("8.8.8.8")))
    got = [(h, IP(bytes(item)).src) for h, item in await received(sock)]
    assert got == [("l1", "203.0.113.1"), ("l", str(ME4))]
    _, text = await sock.request_ascii("ip0:", "getroute 198.51.100.200")
    assert text == (
        '{ dest=198.51.100.0/24 gateway=203.0.113.9 hook="link1" src=203.0.113.1 mtu=1500 }'
    )


async def test_the_source_address_is_chosen_by_the_destination(sock: netgraph.Socket) -> None:
    """Of the addresses on the route's hook: the one whose network holds the destination,
    then one of the destination's scope (link-local or not)."""
    await make_ip(sock, "udp")
    for line in (
        'addaddr { addr=fe80::1/64 hook="link0" }',
        'addaddr { addr=10.0.0.1/8 hook="link0" }',
        "addroute { dest=0.0.0.0/0 gateway=10.0.0.254 }",
        'addroute { dest=2001:db8:7::/48 hook="link0" }',
    ):
        await sock.send_ascii("ip0:", line)
    sources = []
    for dst in ("10.1.2.3", "192.0.2.7", "8.8.8.8", "fe80::2", "2001:db8::7", "2001:db8:7::1"):
        await sock.send_data("udp", tag(b"x", dst=dst))
        raw = await one_out(sock)
        sources.append((IP if raw[0] >> 4 == 4 else IPv6)(raw).src)
    assert sources == ["10.0.0.1", "192.0.2.1", "10.0.0.1", "fe80::1", str(ME6), str(ME6)]


async def test_route_messages_in_ascii(sock: netgraph.Socket) -> None:
    await make_ip(sock)
    await sock.send_ascii("ip0:", "addroute { dest=198.51.100.0/24 gateway=192.0.2.9 }")
    await sock.send_ascii("ip0:", 'addroute { dest=2001:db8:9::/48 hook="link3" }')
    _, text = await sock.request_ascii("ip0:", "listroutes")
    assert text == (
        '{ routes=[ { dest=198.51.100.0/24 gateway=192.0.2.9 hook="link0" src=192.0.2.1'
        ' mtu=1500 } { dest=2001:db8:9::/48 hook="link3" src=2001:db8::1 mtu=1500 }'
        ' { dest=192.0.2.0/24 hook="link0" src=192.0.2.1 mtu=1500 connected=1 }'
        ' { dest=2001:db8::/64 hook="link0" src=2001:db8::1 mtu=1500 connected=1 } ] }'
    )
    await sock.send_ascii("ip0:", "delroute { dest=198.51.100.0/24 }")
    _, text = await sock.request_ascii("ip0:", "listroutes")
    assert "198.51.100" not in text


async def command(sock: netgraph.Socket, line: str) -> None:
    """Send an ASCII command to ip0, waiting for its reply if it has one."""
    if line.startswith(("get", "list")):
        await sock.request_ascii("ip0:", line)
    else:
        await sock.send_ascii("ip0:", line)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ('addroute { dest=198.51.100.0/24 hook="link0" }', errno.EEXIST),  # made in the test
        ("addroute { dest=198.51.100.1/24 gateway=192.0.2.9 }", errno.EINVAL),  # host bits
        ("addroute { dest=203.0.113.0/24 gateway=10.0.0.1 }", errno.ENETUNREACH),
        ("addroute { dest=203.0.113.0/24 }", errno.EINVAL),  # neither hook nor gateway
        ('addroute { dest=203.0.113.0/24 gateway=2001:db8::1 hook="link0" }', errno.EINVAL),
        ('addroute { dest=203.0.113.0/24 hook="eth0" }', errno.EINVAL),
        ("addroute { dest=203.0.113.0/33 }", errno.EINVAL),
        ("delroute { dest=203.0.113.0/24 }", errno.ENOENT),
        ('addaddr { addr=192.0.2.1/24 hook="link0" }', errno.EEXIST),  # made by make_ip
        ('addaddr { addr=192.0.2.300/24 hook="link0" }', errno.EINVAL),
        ('addaddr { addr=224.0.0.1/24 hook="link0" }', errno.EINVAL),
        ('addaddr { addr=127.0.0.1/8 hook="link0" }', errno.EINVAL),
        ('addaddr { addr=ff02::1/64 hook="link0" }', errno.EINVAL),
        ('addaddr { addr=192.0.2.5/24 hook="eth0" }', errno.EINVAL),
        ('addaddr { addr=192.0.2.5/24%x hook="link0" }', errno.EINVAL),
        ('addaddr { hook="link0" }', errno.EINVAL),
        ('deladdr { addr=192.0.2.77/24 hook="link0" }', errno.ENOENT),
        ('addaddr { addr=192.0.2.5/24 hook="link0" nosuch=1 }', errno.ENOENT),
        ('setmtu { hook="link0" mtu=20 }', errno.EINVAL),
        ('getmtu "nolink"', errno.EINVAL),
        ("getroute 203.0.113.1", errno.EHOSTUNREACH),
        ("getroute 203.0.113.1/24", errno.EINVAL),
        ("setconfig { forwarding=2 }", errno.EINVAL),
    ],
)
async def test_bad_messages_fail_with_their_errno(
    sock: netgraph.Socket, line: str, code: int
) -> None:
    await make_ip(sock)
    await sock.send_ascii("ip0:", 'addroute { dest=198.51.100.0/24 hook="link0" }')
    with pytest.raises(NetgraphError) as info:
        await command(sock, line)
    assert info.value.errno == code, info.value


async def test_address_messages_in_ascii(sock: netgraph.Socket) -> None:
    await make_ip(sock)
    await sock.send_ascii("ip0:", 'addaddr { addr=fe80::1/64 hook="link1" }')
    _, text = await sock.request_ascii("ip0:", "listaddrs")
    assert text == (
        '{ addrs=[ { addr=192.0.2.1/24 hook="link0" } { addr=2001:db8::1/64 hook="link0" }'
        ' { addr=fe80::1/64 hook="link1" } ] }'
    )
    await sock.send_ascii("ip0:", 'deladdr { addr=2001:db8::1 hook="link0" }')
    _, text = await sock.request_ascii("ip0:", "listaddrs")
    assert "2001:db8::1/" not in text


async def test_an_address_removed_is_no_longer_ours(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_data("l", v4(UDP()))
    assert len(await received(sock)) == 1
    await sock.send_ascii("ip0:", 'deladdr { addr=192.0.2.1/24 hook="link0" }')
    await sock.send_data("l", v4(UDP()))
    assert await received(sock) == []
    assert (await stats(sock)).not_for_us == 1


async def test_mtu_messages(sock: netgraph.Socket) -> None:
    await make_ip(sock)
    _, text = await sock.request_ascii("ip0:", 'getmtu "link0"')
    assert text == '{ hook="link0" mtu=1500 }'
    await sock.send_ascii("ip0:", 'setmtu { hook="link0" mtu=1400 }')
    _, text = await sock.request_ascii("ip0:", 'getmtu "link0"')
    assert text == '{ hook="link0" mtu=1400 }'
    await sock.send_ascii("ip0:", 'setmtu { hook="link0" }')
    _, text = await sock.request_ascii("ip0:", 'getmtu "link0"')
    assert text == '{ hook="link0" mtu=1500 }'


async def test_getconfig_text_given_to_setconfig_recreates_the_node(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock)
    for line in (
        'addaddr { addr=203.0.113.5/28 hook="link1" }',
        'addaddr { addr=fe80::5/64 hook="link1" }',
        "addroute { dest=0.0.0.0/0 gateway=192.0.2.254 }",
        'addroute { dest=2001:db8:7::/48 gateway=fe80::9 hook="link1" }',
        'setmtu { hook="link1" mtu=1280 }',
    ):
        await sock.send_ascii("ip0:", line)
    await sock.send_ascii("ip0:", "setconfig " + (await sock.request_ascii("ip0:", "getconfig"))[1])
    _, text = await sock.request_ascii("ip0:", "getconfig")
    assert text == (
        '{ addrs=[ { addr=192.0.2.1/24 hook="link0" } { addr=2001:db8::1/64 hook="link0" }'
        ' { addr=203.0.113.5/28 hook="link1" } { addr=fe80::5/64 hook="link1" } ]'
        ' routes=[ { dest=0.0.0.0/0 gateway=192.0.2.254 hook="link0" }'
        ' { dest=2001:db8:7::/48 gateway=fe80::9 hook="link1" } ]'
        ' links=[ { hook="link1" mtu=1280 } ] }'
    )
    # A second node, configured by that text alone, routes alike.
    await sock.mkpeer(".", "ip", "m", "link0")
    await sock.name_node("m", "ip1")
    await sock.connect(".", "ip1:", "u1", "udp")
    await sock.send_ascii("ip1:", "setconfig " + text)
    assert (await sock.request_ascii("ip1:", "getconfig"))[1] == text
    await sock.send_data("u1", tag(b"x", dst=FAR4))
    [(hook, item)] = await received(sock)
    assert (hook, IP(bytes(item)).src) == ("m", str(ME4))


async def test_settings_round_trip_and_zero_means_default(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    line = (
        "setconfig { forwarding=1 ttl=9 reasm_timeout4=5 reasm_timeout6=7"
        " reasm_maxbytes=100000 reasm_maxdatagram=9000 icmp_rate=10 icmp_burst=2 }"
    )
    await sock.send_ascii("ip0:", line)
    _, text = await sock.request_ascii("ip0:", "getconfig")
    assert "setconfig " + text == line
    await sock.send_ascii("ip0:", 'setconfig { addrs=[ { addr=192.0.2.1/24 hook="link0" } ] }')
    await sock.send_data("udp", tag(b"x", dst=PEER4))
    assert IP(await one_out(sock)).ttl == 64


async def test_setconfig_is_all_or_nothing(sock: netgraph.Socket) -> None:
    await make_ip(sock)
    before = (await sock.request_ascii("ip0:", "getconfig"))[1]
    bad = (
        'setconfig { addrs=[ { addr=192.0.2.9/24 hook="link0" } ]'
        " routes=[ { dest=10.0.0.0/8 gateway=172.16.0.1 } ] }"
    )
    with pytest.raises(NetgraphError) as info:
        await sock.send_ascii("ip0:", bad)
    assert info.value.errno == errno.ENETUNREACH
    assert (await sock.request_ascii("ip0:", "getconfig"))[1] == before


async def test_stats_messages(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_data("l", v4(UDP()))
    _, text = await sock.request_ascii("ip0:", "getclrstats")
    assert text == "{ in_packets=1 in_octets=28 delivered=1 }"
    await sock.send_data("l", BAD_CHECKSUM)
    await sock.send_ascii("ip0:", "clrstats")
    _, text = await sock.request_ascii("ip0:", "getstats")
    assert text == "{}"


async def test_status_shows_links_addresses_and_counters(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_data("l", BAD_CHECKSUM)
    _, text = await sock.request_ascii("ip0:", "textstatus")
    assert "link0 (up, mtu 1500): 192.0.2.1/24 2001:db8::1/64" in text
    assert "protocols: udp" in text
    assert "bad_checksum=1" in text


def test_the_address_parse_type_binary_layout() -> None:
    """version, prefix length, 16 address bytes; none is all zero."""
    value = INPREFIX.to_bytes(ip_interface("192.0.2.1/24"))
    assert value == bytes([4, 24, 192, 0, 2, 1]) + bytes(12)
    assert INADDR.to_bytes(IPv6Address("2001:db8::1")) == bytes([6, 128]) + ME6.packed
    assert INADDR.to_bytes(None) == bytes(18)
    assert INADDR.from_bytes(bytes(18)) is None
    with pytest.raises(Exception, match="no IP version 5"):
        INADDR.from_bytes(bytes([5, 0]) + bytes(16))


@given(
    st.one_of(
        st.builds(IPv4Interface, st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32))),
        st.builds(IPv6Interface, st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128))),
    )
)
def test_addresses_survive_text_and_binary(value: IPv4Interface | IPv6Interface) -> None:
    from netgraph.ascii import parse_value

    assert parse_value(INPREFIX, INPREFIX.unparse(value)) == value
    assert INPREFIX.from_bytes(INPREFIX.to_bytes(value)) == value
    assert parse_value(INADDR, INADDR.unparse(value.ip)) == value.ip


async def test_config_survives_the_binary_form(sock: netgraph.Socket) -> None:
    """getconfig's reply, through binary and back to text, is the same text."""
    await make_ip(sock)
    await sock.send_ascii("ip0:", "addroute { dest=0.0.0.0/0 gateway=192.0.2.254 }")
    reply = await sock.request("ip0:", IP_COOKIE, NGM_IP_GETCONFIG)
    from netgraph.parse import Struct

    ptype = Struct(IpConfig)
    assert ptype.from_bytes(ptype.to_bytes(reply.args)) == reply.args


# ------------------------------------------------------------------------------------ hooks


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        ("udp", "17", errno.EEXIST),
        ("6", "tcp", errno.EEXIST),
        ("icmp6", "58", errno.EEXIST),
        ("udp", "44", errno.EINVAL),  # the fragment header is not a protocol
        ("udp", "017", errno.EINVAL),
        ("udp", "256", errno.EINVAL),
        ("udp", "eth0", errno.EINVAL),
    ],
)
async def test_protocol_hook_names(
    sock: netgraph.Socket, first: str, second: str, code: int
) -> None:
    await make_ip(sock, first)
    with pytest.raises(NetgraphError) as info:
        await sock.connect(".", "ip0:", "other", second)
    assert info.value.errno == code


async def test_a_number_hook_is_the_protocol(sock: netgraph.Socket) -> None:
    await make_ip(sock, "132")
    await sock.send_data("l", v4(Raw(b"sctp?"), proto=132))
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item), item.tags["proto"]) == ("132", b"sctp?", 132)


async def test_a_protocol_hook_going_makes_its_protocol_unreachable(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock, "tcp")
    packet = v4(TCP(sport=1, dport=2))
    await sock.send_data("l", packet)
    assert [h for h, _ in await received(sock)] == ["tcp"]
    await sock.rmhook(".", "tcp")
    await sock.send_data("l", packet)
    error = IP(await one_out(sock))
    assert (error[ICMP].type, error[ICMP].code) == (3, 2)


# ------------------------------------------------------------------------------ reassembly


async def test_ipv4_fragments_are_reassembled_in_any_order(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    datagram = bytes(UDP(sport=3, dport=4) / random.Random(3).randbytes(3000))
    whole = IP(src=str(PEER4), dst=str(ME4), id=77, proto=17) / Raw(datagram)
    pieces = [bytes(p) for p in fragment(whole, 800)]
    random.Random(4).shuffle(pieces)
    for piece in pieces:
        await sock.send_data("l", piece)
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item), item.tags["src"]) == ("udp", datagram, PEER4)
    counts = await stats(sock)
    assert (counts.fragments, counts.reassembled, counts.delivered) == (len(pieces), 1, 1)
    assert accounted(counts)


async def test_ipv6_fragments_are_reassembled(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    datagram = bytes(UDP(sport=3, dport=4) / random.Random(5).randbytes(4000))
    packet = (
        IPv6(src=str(PEER6), dst=str(ME6)) / IPv6ExtHdrFragment(id=0x1234, nh=17) / Raw(datagram)
    )
    pieces = [bytes(p) for p in fragment6(packet, 1280)]
    await sock.send_batch("l", pieces[::-1])
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item), item.tags["proto"]) == ("udp", datagram, 17)
    assert accounted(await stats(sock))


def _v6_fragment(offset: int, data: bytes, more: bool, ident: int = 7, nh: int = 17) -> bytes:
    header = IPv6ExtHdrFragment(nh=nh, offset=offset // 8, m=int(more), id=ident)
    return v6(header / Raw(data))


async def test_ipv6_overlapping_fragments_discard_the_datagram(sock: netgraph.Socket) -> None:
    """RFC 5722: the datagram goes, and so do its fragments still to come."""
    await make_ip(sock, "udp")
    udp = bytes(UDP(sport=1, dport=2, len=8 + 40)) + bytes(40)
    await sock.send_data("l", _v6_fragment(0, udp[:24], True))
    await sock.send_data("l", _v6_fragment(16, udp[16:32], True))  # overlaps 16..24
    await sock.send_data("l", _v6_fragment(24, udp[24:], False))
    assert await received(sock) == []
    counts = await stats(sock)
    assert (counts.fragments, counts.frag_overlap, counts.delivered) == (1, 2, 0)
    assert accounted(counts)


async def test_ipv4_overlapping_fragments_discard_the_datagram(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    udp = bytes(UDP(sport=1, dport=2, len=8 + 40)) + bytes(40)
    await sock.send_data("l", v4(Raw(udp[:24]), proto=17, id=9, flags="MF"))
    await sock.send_data("l", v4(Raw(udp[8:24]), proto=17, id=9, flags="MF", frag=1))
    await sock.send_data("l", v4(Raw(udp[24:]), proto=17, id=9, frag=3))
    assert await received(sock) == []
    assert (await stats(sock)).frag_overlap == 2


async def test_an_exact_duplicate_fragment_is_dropped_and_the_datagram_completes(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock, "udp")
    udp = bytes(UDP(sport=1, dport=2, len=8 + 40)) + bytes(range(40))
    first = _v6_fragment(0, udp[:24], True)
    await sock.send_batch("l", [first, first, _v6_fragment(24, udp[24:], False)])
    [(_, item)] = await received(sock)
    assert bytes(item) == udp
    assert (await stats(sock)).frag_dup == 1


async def test_an_ipv6_atomic_fragment_is_taken_as_it_is(sock: netgraph.Socket) -> None:
    """RFC 6946: offset 0 and no more fragments: no reassembly, straight up."""
    await make_ip(sock, "udp")
    datagram = bytes(UDP(sport=1, dport=2) / b"atomic")
    await sock.send_data("l", _v6_fragment(0, datagram, False))
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item)) == ("udp", datagram)
    assert (await stats(sock)).fragments == 0


async def test_an_ipv6_fragment_past_65535_gets_a_parameter_problem(
    sock: netgraph.Socket,
) -> None:
    """RFC 8200 4.5: code 0, pointing at the fragment offset field."""
    await make_ip(sock, "udp")
    await sock.send_data("l", _v6_fragment(65528, bytes(16), False))
    problem = IPv6(await one_out(sock))[ICMPv6ParamProblem]
    assert (problem.code, problem.ptr) == (0, 42)
    assert drops(await stats(sock)) == {"frag_bad": 1}


async def test_ipv6_first_fragment_needs_the_whole_header_chain(sock: netgraph.Socket) -> None:
    """RFC 7112: dropped, with a parameter problem, code 3."""
    await make_ip(sock, "udp")
    # The first fragment holds destination options; the UDP header is in the next one.
    await sock.send_data("l", _v6_fragment(0, bytes(IPv6ExtHdrDestOpt(nh=17)), True, nh=60))
    problem = IPv6(await one_out(sock))[ICMPv6ParamProblem]
    assert problem.code == 3
    assert drops(await stats(sock)) == {"frag_bad": 1}


async def test_ipv6_fragment_not_a_multiple_of_8_gets_a_parameter_problem(
    sock: netgraph.Socket,
) -> None:
    await make_ip(sock, "udp")
    await sock.send_data("l", _v6_fragment(0, bytes(UDP()) + bytes(5), True))
    problem = IPv6(await one_out(sock))[ICMPv6ParamProblem]
    assert (problem.code, problem.ptr) == (0, 4)


async def test_reassembly_times_out_with_time_exceeded(
    sock: netgraph.Socket, autojump_clock: trio.testing.MockClock
) -> None:
    """30 s for IPv4 (ICMP 11/1), 60 s for IPv6 (ICMPv6 3/1), quoting the first fragment;
    what comes after the timeout starts a new datagram that does not complete."""
    await make_ip(sock, "udp")
    start = trio.current_time()
    first4 = v4(Raw(bytes(UDP(len=48)) + bytes(16)), proto=17, id=3, flags="MF")
    await sock.send_data("l", first4)
    hook, item = await sock.recv_data()
    assert trio.current_time() - start == pytest.approx(30.0)
    error = IP(bytes(item))
    assert (hook, error[ICMP].type, error[ICMP].code) == ("l", 11, 1)
    assert bytes(error[ICMP].payload) == first4
    await sock.send_data("l", v4(Raw(bytes(24)), proto=17, id=3, frag=3))
    assert await received(sock) == []

    start = trio.current_time()
    await sock.send_data("l", _v6_fragment(0, bytes(UDP(len=48)) + bytes(16), True))
    hook, item = await sock.recv_data()
    assert trio.current_time() - start == pytest.approx(60.0)
    assert IPv6(bytes(item))[ICMPv6TimeExceeded].code == 1
    counts = await stats(sock)
    assert counts.reasm_timeout == 3  # the IPv4 fragment that came late timed out as well
    assert accounted(counts)


async def test_the_timer_wakes_early_for_an_earlier_deadline(
    sock: netgraph.Socket, autojump_clock: trio.testing.MockClock
) -> None:
    """The timer task sleeps until the IPv6 deadline (60 s); an IPv4 fragment then makes an
    earlier one (30 s), which must fire on time."""
    await make_ip(sock, "udp")
    start = trio.current_time()
    await sock.send_data("l", _v6_fragment(0, bytes(UDP(len=48)) + bytes(16), True))
    await trio.testing.wait_all_tasks_blocked()
    await sock.send_data("l", v4(Raw(bytes(UDP(len=48)) + bytes(16)), proto=17, id=3, flags="MF"))
    _, item = await sock.recv_data()
    assert trio.current_time() - start == pytest.approx(30.0)
    assert IP(bytes(item))[ICMP].type == 11
    _, item = await sock.recv_data()
    assert trio.current_time() - start == pytest.approx(60.0)
    assert ICMPv6TimeExceeded in IPv6(bytes(item))


async def test_the_reassembly_timeout_is_settable(
    sock: netgraph.Socket, autojump_clock: trio.testing.MockClock
) -> None:
    await make_ip(sock, "udp")
    await sock.send_ascii(
        "ip0:", 'setconfig { addrs=[ { addr=192.0.2.1/24 hook="link0" } ] reasm_timeout4=5 }'
    )
    start = trio.current_time()
    await sock.send_data("l", v4(Raw(bytes(UDP(len=48)) + bytes(16)), proto=17, id=3, flags="MF"))
    await sock.recv_data()
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_reassembly_memory_is_bounded(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_ascii(
        "ip0:",
        'setconfig { addrs=[ { addr=192.0.2.1/24 hook="link0" } ] reasm_maxbytes=5000 }',
    )
    first = Raw(bytes(UDP(len=8 + 8000)) + bytes(992))
    pieces = [v4(first, proto=17, id=i, flags="MF") for i in range(5)]
    await sock.send_batch("l", pieces)
    counts = await stats(sock)
    assert (counts.fragments, counts.reasm_overflow) == (2, 3)
    assert accounted(counts)


async def test_a_datagram_over_the_size_limit_is_discarded(sock: netgraph.Socket) -> None:
    """reasm_maxdatagram: a fragment reaching past it kills its datagram."""
    await make_ip(sock, "udp")
    await sock.send_ascii(
        "ip0:",
        'setconfig { addrs=[ { addr=192.0.2.1/24 hook="link0" } ] reasm_maxdatagram=1000 }',
    )
    first = v4(Raw(bytes(UDP(len=1208)) + bytes(592)), proto=17, id=1, flags="MF")
    last = v4(Raw(bytes(600)), proto=17, id=1, frag=75)
    await sock.send_batch("l", [first, last])
    assert await received(sock) == []
    counts = await stats(sock)
    assert (counts.fragments, counts.reasm_overflow) == (1, 1)


async def test_a_datagram_over_65535_is_a_bad_fragment(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp")
    await sock.send_data("l", v4(Raw(bytes(16)), proto=17, id=3, frag=8190))
    assert drops(await stats(sock)) == {"frag_bad": 1}


# ------------------------------------------------------------------------------ forwarding


async def forwarder(sock: netgraph.Socket) -> None:
    """ip0 with link0 (192.0.2.1/24, 2001:db8::1/64) and link1 (203.0.113.1/24,
    2001:db8:1::1/64), forwarding."""
    await make_ip(sock)
    await sock.connect(".", "ip0:", "l1", "link1")
    await sock.send_ascii("ip0:", 'addaddr { addr=203.0.113.1/24 hook="link1" }')
    await sock.send_ascii("ip0:", 'addaddr { addr=2001:db8:1::1/64 hook="link1" }')
    _, text = await sock.request_ascii("ip0:", "getconfig")
    await sock.send_ascii("ip0:", "setconfig " + text[:-1] + " forwarding=1 }")


async def test_forwarding_decrements_the_ttl(sock: netgraph.Socket) -> None:
    await forwarder(sock)
    packet = v4(UDP(sport=1, dport=2) / b"through", dst="203.0.113.7", ttl=10)
    await sock.send_data("l", packet)
    raw = await one_out(sock, "l1")
    assert IP(raw).ttl == 9
    assert raw[12:] == packet[12:]
    assert scapy_sums_agree(raw, (IP, "chksum"))
    await sock.send_data("l", v6(UDP() / b"6", dst="2001:db8:1::7", hlim=10))
    assert IPv6(await one_out(sock, "l1")).hlim == 9
    assert (await stats(sock)).forwarded == 2


async def test_forwarding_answers_ttl_expired_with_time_exceeded(sock: netgraph.Socket) -> None:
    await forwarder(sock)
    await sock.send_data("l", v4(UDP(), dst="203.0.113.7", ttl=1))
    error = IP(await one_out(sock))
    assert (error[ICMP].type, error[ICMP].code, error.src) == (11, 0, str(ME4))
    await sock.send_data("l", v6(UDP(), dst="2001:db8:1::7", hlim=1))
    assert IPv6(await one_out(sock))[ICMPv6TimeExceeded].code == 0
    counts = await stats(sock)
    assert drops(counts) == {"ttl_expired": 2}


@pytest.mark.parametrize(
    "packet",
    [
        v4(ICMP(type=3) / IP(src=str(PEER4)) / UDP(), dst="203.0.113.7", ttl=1),
        v6(ICMPv6DestUnreach() / IPv6(src=str(PEER6)) / UDP(), dst="2001:db8:1::7", hlim=1),
    ],
    ids=["icmp", "icmpv6"],
)
async def test_no_icmp_error_about_an_icmp_error(sock: netgraph.Socket, packet: bytes) -> None:
    """An error on its way through with its TTL spent: dropped, and no error about it."""
    await forwarder(sock)
    await sock.send_data("l", packet)
    assert await received(sock) == []
    counts = await stats(sock)
    assert (counts.ttl_expired, counts.icmp_out) == (1, 0)


async def test_forwarding_too_big_with_df(sock: netgraph.Socket) -> None:
    await forwarder(sock)
    await sock.send_ascii("ip0:", 'setmtu { hook="link1" mtu=1280 }')
    await sock.send_data("l", v4(UDP() / bytes(1400), dst="203.0.113.7", flags="DF"))
    error = IP(await one_out(sock))
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, 1280)
    await sock.send_data("l", v6(UDP() / bytes(1400), dst="2001:db8:1::7"))
    assert IPv6(await one_out(sock))[ICMPv6PacketTooBig].mtu == 1280
    await sock.send_data("l", v4(UDP() / bytes(1400), dst="203.0.113.7"))
    pieces = [IP(bytes(item)) for _, item in await received(sock)]
    assert len(pieces) == 2
    assert all(len(p) <= 1280 for p in pieces)
    assert drops(await stats(sock)) == {"cant_frag": 2}


async def test_forwarded_fragments_carry_only_the_copied_options(sock: netgraph.Socket) -> None:
    """RFC 791: the first fragment keeps every option, later ones those with the copy bit
    (here a security option, 130, is copied and record route, 7, is not)."""
    await forwarder(sock)
    await sock.send_ascii("ip0:", 'setmtu { hook="link1" mtu=600 }')
    security = Raw(bytes([130, 11]) + bytes(9) + b"\x01")  # 12 bytes, NOP-padded
    packet = v4(
        UDP(sport=1, dport=2) / bytes(1000),
        dst="203.0.113.7",
        options=[IPOption_RR(routers=["0.0.0.0"]), security],
    )
    await sock.send_data("l", packet)
    pieces = [IP(bytes(item)) for _, item in await received(sock)]
    assert len(pieces) == 2
    first, second = (bytes(p)[20 : p.ihl * 4] for p in pieces)
    assert first == packet[20 : IP(packet).ihl * 4]
    assert second == bytes([130, 11]) + bytes(9) + b"\0"  # padded with end-of-list
    assert all(scapy_sums_agree(bytes(p), (IP, "chksum")) for p in pieces)
    [whole] = defragment(pieces)
    assert bytes(whole[UDP]) == bytes(IP(packet)[UDP])


async def test_forwarding_without_a_route_is_net_unreachable(sock: netgraph.Socket) -> None:
    await forwarder(sock)
    await sock.send_data("l", v4(UDP(), dst="198.51.100.7"))
    error = IP(await one_out(sock))
    assert (error[ICMP].type, error[ICMP].code) == (3, 0)
    assert drops(await stats(sock)) == {"no_route": 1}


# ---------------------------------------------------------------------- two nodes, one link


async def test_two_ip_nodes_talk_over_a_link(graph: netgraph.Graph) -> None:
    """A's udp sends to B; B's udp gets it; a ping from A's icmp hook is answered by B."""
    sock = graph.socket("app")
    await sock.mkpeer(".", "ip", "ua", "udp")
    await sock.name_node("ua", "a")
    await sock.connect(".", "a:", "ia", "icmp")
    await sock.mkpeer("a:", "ip", "link0", "link0")
    await sock.name_node("a:link0", "b")
    await sock.connect(".", "b:", "ub", "udp")
    await sock.send_ascii("a:", 'addaddr { addr=192.0.2.1/24 hook="link0" }')
    await sock.send_ascii("b:", 'addaddr { addr=192.0.2.2/24 hook="link0" }')
    await sock.send_data("ua", tag(b"hello b", dst=PEER4))
    [(hook, item)] = await received(sock)
    assert (hook, bytes(item), item.tags["src"], item.tags["dst"]) == ("ub", b"hello b", ME4, PEER4)
    echo = bytes(ICMP(type=8, id=1, seq=1) / b"ping")
    await sock.send_data("ia", tag(echo, dst=PEER4))
    [(hook, reply)] = await received(sock)
    assert (hook, reply[0], reply.tags["src"]) == ("ia", 0, PEER4)
    assert ones_sum(bytes(reply)) == 0


async def test_rcvdata_from_a_link_never_raises_on_junk(sock: netgraph.Socket) -> None:
    await make_ip(sock, "udp", "tcp", "icmp", "icmp6")
    rng = random.Random(11)
    junk: Sequence[bytes] = [rng.randbytes(rng.randrange(0, 80)) for _ in range(300)]
    await sock.send_batch("l", junk)
    await received(sock)
    counts = await stats(sock)
    assert counts.in_packets == 300
    assert accounted(counts)


def test_stats_fields_are_the_counters() -> None:
    """Every drop reason is a field of IpStats, in one run of fields."""
    names = [f.name for f in attrs.fields(IpStats)]
    assert names[names.index("truncated") : names.index("no_next") + 1] == list(DROPS)
