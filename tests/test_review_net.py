"""Regression tests from a review of the ip, pipe and iface nodes: one test per bug found.

Most drive the sans-IO IP stack directly; scapy builds the packets and checks what comes out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from ipaddress import ip_interface

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, PadN
from scapy.packet import Raw

import netgraph
from netgraph import NetgraphError, tag
from nodes.ip.node import IpNode
from nodes.ip.stack import IpStack, Settings
from tests.scapy_typed import defragment6, fragment

ME4, PEER4 = "192.0.2.1", "192.0.2.2"
ME6, PEER6 = "2001:db8::1", "2001:db8::2"


def make_stack(settings: Settings | None = None) -> IpStack:
    stack = IpStack(settings, seed=1)
    stack.table.add_address("link0", ip_interface(f"{ME4}/24"))
    stack.table.add_address("link0", ip_interface(f"{ME6}/64"))
    stack.links.add("link0")
    stack.set_upper([1, 6, 17, 58])
    return stack


# ------------------------------------------------------------------------------- checksums


def test_the_echo_reply_to_an_all_zero_echo_request_has_checksum_ffff() -> None:
    """scapy's default echo request (id 0, seq 0, no data) gets a reply whose bytes are all zero
    but the checksum: the complement of +0 is 0xFFFF, and 0 there is a bad checksum (Linux
    drops it)."""
    stack = make_stack()
    stack.receive("link0", [bytes(IP(src=PEER4, dst=ME4) / ICMP())], 0.0)
    _, out = stack.take()
    reply = IP(out[0][1])
    assert reply[ICMP].type == 0
    assert reply[ICMP].chksum == 0xFFFF
    fresh = reply.copy()
    del fresh[ICMP].chksum
    assert bytes(fresh) == bytes(reply)  # scapy computes the same


def test_an_all_zero_icmp_message_does_not_verify() -> None:
    """Eight zero bytes (echo reply, checksum 0) sum to +0, not -0: a bad checksum."""
    stack = make_stack()
    stack.receive("link0", [bytes(IP(src=PEER4, dst=ME4, proto=1) / Raw(bytes(8)))], 0.0)
    assert (stack.counts["icmp_bad"], stack.counts["icmp_in"]) == (1, 0)
    assert stack.take()[0] == {}


# ------------------------------------------------------------------------ IPv6 fragment sizes


def test_an_ipv6_fragment_is_judged_by_the_reassembled_payload_length() -> None:
    """RFC 8200 4.5: a fragment is refused when the packet reassembled from it would have a
    payload length over 65535; the fragment header is not part of that packet."""
    stack = make_stack()
    last = IPv6ExtHdrFragment(id=1, offset=65520 // 8, m=0, nh=17) / Raw(bytes(11))
    stack.receive("link0", [bytes(IPv6(src=PEER6, dst=ME6) / last)], 0.0)
    assert stack.counts["frag_bad"] == 0
    assert stack.counts["fragments"] == 1


def test_ipv6_sends_a_65535_byte_payload_in_fragments() -> None:
    """Fragmenting at the source, any payload up to 65535 bytes can be sent (the fragment
    header is in each fragment, not in the reassembled packet)."""
    stack = make_stack()
    payload = bytes(range(256)) * 255 + bytes(255)
    assert len(payload) == 65535
    stack.send(17, tag(payload, dst=PEER6), 0.0)
    _, out = stack.take()
    whole = defragment6([IPv6(packet) for _, packet in out])
    assert whole.plen == 65535
    assert bytes(whole.payload) == payload


# ------------------------------------------------------------------------- reassembly memory


def test_completed_datagrams_are_not_held_until_their_deadline() -> None:
    """A datagram reassembled at once lets go of its fragments; the deadline heap does not
    grow with every datagram ever completed within the timeout."""
    stack = make_stack()
    for ident in range(2000):
        datagram = IP(src=PEER4, dst=ME4, id=ident, proto=17) / Raw(bytes(64))
        stack.receive("link0", [bytes(p) for p in fragment(datagram, 32)], ident * 0.001)
        stack.take()
    assert stack.counts["reassembled"] == 2000
    heap = stack.reasm._heap
    assert len(heap) < 200
    assert sum(len(entry[3].frags) for entry in heap) == 0


def test_the_headers_a_first_fragment_keeps_count_against_the_limit() -> None:
    """The stack keeps a first fragment's whole packet: its unfragmentable headers count too,
    so what reassembly holds stays within reasm_maxbytes."""
    stack = make_stack(Settings(reasm_maxbytes=3000))
    options = IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(250))] * 4)
    for ident in range(5):
        first = IPv6ExtHdrFragment(id=ident, offset=0, m=1, nh=17) / Raw(bytes(8))
        stack.receive("link0", [bytes(IPv6(src=PEER6, dst=ME6) / options / first)], 0.0)
    held = 0
    for dgram in stack.reasm.datagrams.values():
        held += sum(len(frag[2]) for frag in dgram.frags)
        if isinstance(dgram.first, tuple):
            held += len(dgram.first[0])
    assert held <= 3000
    assert stack.counts["reasm_overflow"] >= 1


# ---------------------------------------------------------------------------- sending errors


@pytest.mark.parametrize(("src", "dst", "code"), [(PEER4, ME4, 3), (PEER6, ME6, 4)])
def test_unreach_on_an_item_too_big_to_have_come_up_is_einval(
    src: str, dst: str, code: int
) -> None:
    stack = make_stack()
    with pytest.raises(NetgraphError) as info:
        stack.send(17, tag(bytes(70000), unreach=code, src=src, dst=dst), 0.0)
    assert info.value.errno == 22
    assert stack.counts["out_bad_tags"] == 1


# ------------------------------------------------------------------------- the ip node's cache


async def test_a_link_hook_going_takes_its_cached_flows(
    graph: netgraph.Graph, sock: netgraph.Socket
) -> None:
    """The fast path's per-flow tags are cached per link hook; a link hook that goes must not
    leave its cache behind (link hook names come and go in a long-lived graph)."""
    await sock.mkpeer(".", "ip", "l", "link7")
    await sock.name_node("l", "ip0")
    await sock.connect(".", "ip0:", "udp", "udp")
    await sock.send_ascii("ip0:", 'addaddr { addr=192.0.2.1/24 hook="link7" }')
    packet = bytes(IP(src=PEER4, dst=ME4) / UDP(sport=1, dport=2) / b"x")
    await sock.send_data("l", packet)
    assert (await sock.recv_data())[0] == "udp"
    node = graph.find("ip0")
    assert isinstance(node, IpNode)
    assert "link7" in node.core._flows4
    await sock.rmhook(".", "l")
    assert "link7" not in node.core._flows4


# ------------------------------------------------------------------------------------ iface


@pytest.fixture
async def fake_tun(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[socket.socket, socket.socket]]:
    """The iface node's device replaced by one end of a datagram socketpair (no root)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    theirs.setblocking(False)
    monkeypatch.setattr("nodes.iface.open_tun", lambda: (os.dup(ours.fileno()), "fake0"))
    with ours, theirs:
        yield ours, theirs


@pytest.mark.parametrize("bad", ["junk", 5, (1, 2, 3, 4, 5, 6, 7), (-1, 0, 0, 0, 0, 0)])
async def test_a_bad_vnet_tag_is_dropped_and_counted(
    fake_tun: tuple[socket.socket, socket.socket], bad: object
) -> None:
    """An item whose ``vnet`` tag is no virtio_net_hdr is not a bug in the node: it is dropped
    and counted (inInvalid), and the rest of the batch goes on."""
    from nodes.iface import IFACE_COOKIE, NGM_IFACE_GET_STATS, VNET_TAG

    _, theirs = fake_tun
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await sock.mkpeer(".", "iface", "inet", "inet")
        good = bytes(IP(src=PEER4, dst=ME4) / UDP() / b"ok")
        await sock.send_batch("inet", [tag(good, **{VNET_TAG: bad}), good])
        reply = await sock.request("fake0:", IFACE_COOKIE, NGM_IFACE_GET_STATS)
        assert (reply.args.inInvalid, reply.args.inPackets) == (1, 1)
        assert theirs.recv(2048) == bytes(10) + good
        graph.close()


def test_a_tso_packet_with_a_short_tcp_data_offset_is_an_offload_error() -> None:
    """A TCP data offset below 5 words cannot be cut into segments: OffloadError (counted by the
    iface), not an IndexError that would end its read task."""
    from nodes.vnet import GSO_TCPV4, OffloadError, VnetHdr, unoffload

    ip = bytes([0x45, 0, 0, 60]) + bytes(16)
    tcp = bytes(12) + bytes([0x10]) + bytes(7)  # data offset 1 word
    hdr = VnetHdr(gso_type=GSO_TCPV4, hdr_len=40, gso_size=1000, csum_start=20, csum_offset=16)
    with pytest.raises(OffloadError):
        unoffload(ip + tcp + bytes(20), hdr)
