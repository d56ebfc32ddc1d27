"""IP graphs as a user builds them: examples/two_hosts.yaml (two ip nodes through a pipe) from a
graph file, under trio's MockClock; its saved form recreates it, configuration and all."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest
import trio
import trio.testing

import netgraph
from netgraph import graphfile, tag, tags_of
from tests.netns import udp_datagram

EXAMPLES = Path(__file__).parent.parent / "examples"
A4, B4 = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
A6, B6 = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2")


def echo_request(ident: int, seq: int, v6: bool = False) -> bytes:
    """An ICMP (or ICMPv6, checksum left to the ip node via ``csum``) echo request."""
    kind = 128 if v6 else 8
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"ping"
    if v6:
        return body
    total = sum(struct.unpack(f"!{len(body) // 2}H", body))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return body[:2] + struct.pack("!H", ~total & 0xFFFF) + body[4:]


async def load_two_hosts(sock: netgraph.Socket) -> None:
    await graphfile.load(sock, str(EXAMPLES / "two_hosts.yaml"))
    await sock.connect(".", "a:", "udp", "udp")
    await sock.connect(".", "b:", "budp", "udp")
    await sock.connect(".", "a:", "icmp", "icmp")
    await sock.connect(".", "a:", "icmp6", "icmp6")


async def test_two_hosts_from_the_graph_file_exchange_udp_through_the_pipe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await load_two_hosts(sock)
        start = trio.current_time()
        sent = 0
        got: list[bytes] = []
        # 1% loss each way, seeded: send until ten have crossed.
        while len(got) < 10:
            payload = f"datagram {sent}".encode()
            await sock.send_data("udp", tag(udp_datagram(A4, B4, 1000, 2000, payload), dst=B4))
            sent += 1
            with trio.move_on_after(1):
                hook, item = await sock.recv_data()
                assert hook == "budp"
                tags = tags_of(item)
                assert (tags["src"], tags["dst"], tags["proto"]) == (A4, B4, 17)
                got.append(bytes(item[8:]))
        assert trio.current_time() - start >= 0.010  # the pipe's delay, on the mock clock
        _, stats = await sock.request_ascii("wire:", "getstats")
        assert "FwdFrames=" in stats
        graph.close()


@pytest.mark.parametrize("v6", [False, True])
async def test_the_far_host_answers_echo_through_the_pipe(
    autojump_clock: trio.testing.MockClock, v6: bool
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await load_two_hosts(sock)
        dst = B6 if v6 else B4
        hook = "icmp6" if v6 else "icmp"
        for seq in range(20):  # the pipe loses 1% each way: one answer is enough
            extra = {"csum": 2} if v6 else {}
            await sock.send_data(hook, tag(echo_request(7, seq, v6), dst=dst, **extra))
            with trio.move_on_after(1):
                came, item = await sock.recv_data()
                assert came == hook
                assert tags_of(item)["src"] == dst
                assert item[0] == (129 if v6 else 0)  # an echo reply
                break
        else:
            pytest.fail("no echo reply")
        graph.close()


async def test_saving_two_hosts_keeps_addresses_and_link_settings() -> None:
    async with netgraph.open_graph() as first:
        sock = first.socket("app")
        await graphfile.load(sock, str(EXAMPLES / "two_hosts.yaml"))
        saved = await graphfile.save(sock)
        _, a_config = await sock.request_ascii("a:", "getconfig")
        _, wire_config = await sock.request_ascii("wire:", "getcfg")
        first.close()
    assert "setconfig { addrs=[ { addr=192.0.2.1/24" in saved
    assert "setcfg { bandwidth=1000000" in saved
    async with netgraph.open_graph() as second:
        sock = second.socket("app")
        await graphfile.apply(sock, graphfile.parse(saved, "saved.yaml"))
        assert (await sock.request_ascii("a:", "getconfig"))[1] == a_config
        assert (await sock.request_ascii("wire:", "getcfg"))[1] == wire_config
        assert await graphfile.save(sock) == saved
        second.close()
