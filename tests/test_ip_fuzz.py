"""The ip node under random input: nothing a link sends can make it raise, and every packet is
counted exactly once (``in_packets + reassembled`` equals delivered + forwarded + fragments + the
drops); nothing a protocol sends raises anything but NetgraphError; reassembly's books balance.

Most of it drives the sans-IO stack directly (hypothesis, many examples); one test goes through
a link hook of a real node (seeded random).
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address, ip_interface
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Raw

import netgraph
from netgraph import NetgraphError, tag
from nodes.ip.header import U16, checksum
from nodes.ip.messages import IP_COOKIE, NGM_IP_GETSTATS, IpStats
from nodes.ip.stack import OUTCOMES, IpStack, Settings
from tests.scapy_typed import fragment, fragment6

ME4, PEER4 = "192.0.2.1", "192.0.2.2"
ME6, PEER6 = "2001:db8::1", "2001:db8::2"


def _seeds() -> list[bytes]:
    """Valid packets of every kind the node handles, to mutate."""
    udp = UDP(sport=1, dport=2) / b"payload!"
    out = [
        bytes(IP(src=PEER4, dst=ME4) / udp),
        bytes(IP(src=PEER4, dst=ME4) / TCP(sport=1, dport=2)),
        bytes(IP(src=PEER4, dst=ME4, options=[IPOption_RR()]) / udp),
        bytes(IP(src=PEER4, dst=ME4) / ICMP(id=1, seq=2) / b"ping"),
        bytes(IP(src=PEER4, dst=ME4) / ICMP(type=3, code=4) / IP(src=ME4, dst=PEER4) / udp),
        bytes(IP(src=PEER4, dst="192.0.2.255") / udp),
        bytes(IP(src=PEER4, dst="198.51.100.1", ttl=1) / udp),
        bytes(IP(src=PEER4, dst=ME4, proto=200) / b"x"),
        bytes(IPv6(src=PEER6, dst=ME6) / udp),
        bytes(IPv6(src=PEER6, dst=ME6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / udp),
        bytes(IPv6(src=PEER6, dst=ME6) / IPv6ExtHdrRouting(segleft=0) / udp),
        bytes(IPv6(src=PEER6, dst=ME6) / ICMPv6EchoRequest(data=b"ping6")),
        bytes(
            IPv6(src=PEER6, dst=ME6) / ICMPv6PacketTooBig(mtu=1280) / IPv6(src=ME6, dst=PEER6) / udp
        ),
    ]
    big = UDP(sport=1, dport=2) / bytes(200)
    out += [bytes(p) for p in fragment(IP(src=PEER4, dst=ME4, id=5) / big, 64)]
    frag6 = IPv6(src=PEER6, dst=ME6) / IPv6ExtHdrFragment(id=9) / big
    out += [bytes(p) for p in fragment6(frag6, 100)]
    return out


SEEDS = _seeds()


def make_stack() -> IpStack:
    stack = IpStack(seed=1)
    stack.table.add_address("link0", ip_interface("192.0.2.1/24"))
    stack.table.add_address("link0", ip_interface("2001:db8::1/64"))
    stack.table.add_address("link1", ip_interface("198.51.100.9/24"))
    stack.links.update(("link0", "link1"))
    stack.set_upper([1, 6, 17, 58])
    return stack


def balanced(stack: IpStack) -> bool:
    counts = stack.counts
    ends = sum(counts[name] for name in OUTCOMES)
    return counts["in_packets"] + counts["reassembled"] == ends


def books_balance(stack: IpStack) -> bool:
    """Reassembly charges what it holds, no more, no less."""
    reasm = stack.reasm
    return reasm.charged == sum(d.charge for d in reasm.datagrams.values()) >= 0


def fix_header(packet: bytearray) -> None:
    """Make an IPv4 header's checksum right again after a mutation, to get past it."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        hlen = min(max((packet[0] & 15) * 4, 20), len(packet))
        packet[10:12] = b"\0\0"
        packet[10:12] = U16.pack(checksum(packet[:hlen]))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "grow", "byte"]))
        if kind == "cut" and packet:
            del packet[draw(st.integers(0, len(packet) - 1)) :]
        elif kind == "grow":
            packet += draw(st.binary(max_size=16))
        elif packet:
            at = draw(st.integers(0, min(len(packet) - 1, 80)))
            if kind == "flip":
                packet[at] ^= 1 << draw(st.integers(0, 7))
            else:
                packet[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        fix_header(packet)
    return bytes(packet)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=20))
def test_random_bytes_never_raise_and_are_all_counted(packets: list[bytes]) -> None:
    stack = make_stack()
    stack.receive("link0", packets, 0.0)
    stack.take()
    assert stack.counts["in_packets"] == len(packets)
    assert balanced(stack)


@settings(max_examples=1000, deadline=None)
@given(st.lists(mutated(), max_size=12), st.booleans())
def test_mutated_packets_never_raise_and_are_all_counted(
    packets: list[bytes], forwarding: bool
) -> None:
    stack = make_stack()
    if forwarding:
        stack.configure(Settings(forwarding=True))
    for i, packet in enumerate(packets):
        stack.receive("link0" if i % 3 else "link1", [packet], float(i))
    stack.expire(1e9)
    up, out = stack.take()
    assert stack.counts["in_packets"] == len(packets)
    assert balanced(stack)
    assert books_balance(stack)
    assert not stack.reasm.datagrams
    assert stack.reasm.charged == 0
    for items in up.values():
        for item in items:
            assert {"src", "dst", "proto", "link"} <= set(item.tags)
    for link, packet in out:
        assert link in stack.links
        assert len(packet) <= 1500


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20),  # which datagram
            st.integers(0, 40),  # offset in 8-byte units
            st.integers(0, 64),  # length
            st.booleans(),  # more fragments
            st.floats(0, 100),  # time step
        ),
        max_size=40,
    )
)
def test_reassembly_books_balance_under_random_fragments(
    fragments: list[tuple[int, int, int, bool, float]],
) -> None:
    stack = make_stack()
    stack.configure(Settings(reasm_maxbytes=2000))
    now = 0.0
    for ident, offset, size, more, step in fragments:
        now += step
        packet = IP(src=PEER4, dst=ME4, id=ident, proto=17, frag=offset, flags=1 if more else 0)
        stack.receive("link0", [bytes(packet / Raw(bytes(size)))], now)
        stack.expire(now)
        assert books_balance(stack)
        assert stack.reasm.charged <= 2000
        deadline = stack.next_deadline()
        assert deadline is None or deadline > now
    stack.expire(now + 1000)
    assert stack.reasm.charged == 0
    assert balanced(stack)


TAG_VALUES: list[Any] = [
    None,
    0,
    1,
    64,
    255,
    256,
    -1,
    True,
    "x",
    "192.0.2.2",
    "2001:db8::2",
    IPv4Address(PEER4),
    IPv6Address(PEER6),
    IPv4Address(ME4),
    IPv4Address("203.0.113.1"),
    b"\0",
    3.5,
]


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["dst", "src", "ttl", "tos", "tclass", "df", "csum", "unreach", "link"]),
        st.sampled_from(TAG_VALUES),
    ),
    st.integers(0, 3000),
    st.sampled_from([1, 6, 17, 58, 200]),
)
def test_sending_anything_raises_only_netgraph_errors(
    tags: dict[str, Any], size: int, proto: int
) -> None:
    stack = make_stack()
    stack.table.set_mtu("link0", 1280)
    try:
        stack.send(proto, tag(bytes(size), **tags), 0.0)
    except NetgraphError:
        assert any(stack.counts[name] for name in stack.counts if name.startswith("out_"))
    _, out = stack.take()
    assert all(len(packet) <= 1280 for _, packet in out)


async def test_mutated_packets_through_a_link_hook(sock: netgraph.Socket) -> None:
    """The node itself, with its hooks: batches of mutated packets in, never an error out."""
    await sock.mkpeer(".", "ip", "l", "link0")
    await sock.name_node("l", "ip0")
    for proto in ("udp", "tcp", "icmp", "icmp6"):
        await sock.connect(".", "ip0:", proto, proto)
    await sock.send_ascii("ip0:", 'addaddr { addr=192.0.2.1/24 hook="link0" }')
    await sock.send_ascii("ip0:", 'addaddr { addr=2001:db8::1/64 hook="link0" }')
    rng = random.Random(7)
    sent = 0
    for _ in range(20):
        batch = []
        for _ in range(50):
            packet = bytearray(rng.choice(SEEDS))
            for _ in range(rng.randrange(4)):
                if packet:
                    packet[rng.randrange(min(len(packet), 64))] = rng.randrange(256)
            if rng.random() < 0.3:
                del packet[rng.randrange(len(packet) + 1) :]
            if rng.random() < 0.5:
                fix_header(packet)
            batch.append(bytes(packet))
        await sock.send_batch("l", batch)
        sent += len(batch)
        while sock.pending_data():
            await sock.recv_data()
    reply = await sock.request("ip0:", IP_COOKIE, NGM_IP_GETSTATS)
    counts: IpStats = reply.args
    assert counts.in_packets == sent
    ends = sum(getattr(counts, name) for name in OUTCOMES)
    assert counts.in_packets + counts.reassembled == ends
