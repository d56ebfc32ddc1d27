"""The tcp node's channels as trio streams (nodes.tcp.stream): trio's own conformance check for
half-closeable streams, listeners for trio.serve_listeners, and failed calls as OSErrors."""

from __future__ import annotations

import errno
from functools import partial

import pytest
import trio
import trio.testing

import netgraph
from netgraph import delivery
from nodes.tcp.messages import TCPC_BOUND, TCPC_NOROUTE, TCPC_SORRY
from nodes.tcp.node import TcpNode
from nodes.tcp.stream import (
    TcpCallError,
    TcpStream,
    open_tcp_listener,
    open_tcp_stream,
)
from tests.test_tcp_node import A6, B4, B6, lossy, pair, two_hosts


@pytest.mark.parametrize("pipe", [None, lossy(loss=20_000)], ids=["direct", "lossy"])
async def test_streams_pass_trios_half_closeable_stream_check(
    autojump_clock: trio.testing.MockClock, pipe: str | None
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock, pipe=pipe)
        listener = await open_tcp_listener(graph, "tb:", 0)
        await trio.testing.check_half_closeable_stream(partial(pair, graph, listener, B4), None)
        await listener.aclose()
        graph.close()


async def test_a_stream_over_ipv6_with_its_addresses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 8080, laddr="2001:db8::2")
        assert listener.port == 8080
        client, server = await pair(graph, listener, B6)
        assert client.local[0] == A6
        assert client.remote == (B6, 8080)
        assert server.local == (B6, 8080)
        assert server.remote == client.local
        await client.send_all(b"ping")
        assert await server.receive_some() == b"ping"
        await client.aclose()
        assert await server.receive_some() == b""
        await server.aclose()
        await listener.aclose()
        graph.close()


async def test_failed_calls_raise_oserrors(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        with pytest.raises(TcpCallError) as info:
            await open_tcp_stream(graph, "ta:", "203.0.113.1", 80)
        assert (info.value.code, info.value.errno) == (TCPC_NOROUTE, errno.EHOSTUNREACH)
        with pytest.raises(TcpCallError) as info:
            await open_tcp_stream(sock, "ta:", B4, 80)  # nobody listens
        assert (info.value.code, info.value.errno) == (TCPC_SORRY, errno.ECONNREFUSED)
        listener = await open_tcp_listener(graph, "tb:", 80)
        with pytest.raises(TcpCallError) as info:
            await open_tcp_listener(graph, "tb:", 80)
        assert (info.value.code, info.value.errno) == (TCPC_BOUND, errno.EADDRINUSE)
        with pytest.raises(netgraph.NetgraphError) as ng:
            await open_tcp_stream(graph, "a:", B4, 80)
        assert ng.value.errno == errno.EINVAL  # an ip node, not a tcp node
        await listener.aclose()
        # Every failed call took its socket node and its channel with it.
        ta = graph.find("ta")
        assert isinstance(ta, TcpNode)
        assert list(ta.hooks) == ["ip"]
        assert {n.type_name for n in graph.nodes.values()} == {"ip", "tcp", "socket"}
        assert len([n for n in graph.nodes.values() if n.type_name == "socket"]) == 1
        graph.close()


async def test_a_cancelled_connect_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock, pipe=lossy(loss=1_000_000))  # the SYN never arrives
        with trio.move_on_after(5):
            await open_tcp_stream(graph, "ta:", B4, 80)
        ta = graph.find("ta")
        assert isinstance(ta, TcpNode)
        assert list(ta.hooks) == ["ip"]
        assert not ta.conns  # the call in SYN_SENT was dropped with its channel
        graph.close()


async def test_serve_listeners_runs_an_echo_service(autojump_clock: trio.testing.MockClock) -> None:
    async def echo(stream: TcpStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.aclose()

    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock, pipe=lossy(loss=10_000))
        listener = await open_tcp_listener(graph, "tb:", 7)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, echo, [listener])
            for i in range(3):
                client = await open_tcp_stream(graph, "ta:", B4, 7)
                message = f"hello {i} ".encode() * 5000
                await client.send_all(message)
                await client.send_eof()
                got = b""
                while data := await client.receive_some():
                    got += data
                assert got == message
                await client.aclose()
            nursery.cancel_scope.cancel()
        graph.close()


async def test_aclose_does_not_lose_data_queued_at_a_busy_tcp_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 80)
        client, server = await pair(graph, listener, B4)
        ta = graph.find("ta")
        # The node is busy (something in its queue): what the client sends now is queued there,
        # and send_all returns before the node has taken it.
        delivery.call_later(ta, lambda: None)
        data = b"q" * 600_000  # more than the send buffer: the node takes it in steps
        await client.send_all(data)
        assert ta._queue  # queued, not taken yet
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            got = b""
            while chunk := await server.receive_some():
                got += chunk
        assert got == data
        await server.aclose()
        await listener.aclose()
        graph.close()


async def test_a_stream_not_read_holds_back_its_sender_within_the_buffers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The socket node's inbox is bounded in items, not bytes: the tcp node keeps a stream's
    share of it within one receive buffer, so a stream that is not read closes the window."""
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 80)
        client, server = await pair(graph, listener, B4)
        tb = graph.find("tb")
        assert isinstance(tb, TcpNode)
        conn = tb.channels[server.channel].conn
        assert conn is not None
        tcb = conn.core.tcb
        rcvbuf = tcb.config.rcvbuf
        data = bytes(range(256)) * (40 * 1024)  # 10 MB
        sent = trio.Event()
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await client.send_all(data)
                await client.send_eof()
                sent.set()

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            inbox = sum(len(item) for _, item in server.socket.node.data_in)
            assert 0 < inbox <= rcvbuf
            assert conn.core.readable <= rcvbuf
            assert (tcb.rcv_adv - tcb.rcv_nxt) & 0xFFFFFFFF < tcb.rcv_seg_max  # window closed
            assert not sent.is_set()
            got = bytearray()
            while chunk := await server.receive_some(100_000):
                got += chunk
        assert got == data
        await client.aclose()
        await server.aclose()
        await listener.aclose()
        graph.close()


@pytest.mark.parametrize("where", ["inbox", "taken"])
async def test_closing_with_unread_data_resets_the_connection(
    autojump_clock: trio.testing.MockClock, where: str
) -> None:
    """Unread data in the socket node's inbox, or taken from it by ``receive_some`` and not
    returned yet: ``aclose`` resets the connection (RFC 1122 4.2.2.13), the other end sees it."""
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 80)
        client, server = await pair(graph, listener, B4)
        await client.send_all(b"never read, or only its first byte")
        await trio.testing.wait_all_tasks_blocked()
        if where == "taken":
            assert await server.receive_some(1) == b"n"
        await server.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
        tb = graph.find("tb")
        assert isinstance(tb, TcpNode)
        assert tb.tcp_stats().rst_sent == 1
        await client.aclose()
        await listener.aclose()
        graph.close()


async def test_closing_with_everything_read_is_orderly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 80)
        client, server = await pair(graph, listener, B4)
        await client.send_all(b"read")
        assert await server.receive_some() == b"read"
        await server.aclose()
        assert await client.receive_some() == b""
        tb = graph.find("tb")
        assert isinstance(tb, TcpNode)
        assert tb.tcp_stats().rst_sent == 0
        await client.aclose()
        await listener.aclose()
        graph.close()
