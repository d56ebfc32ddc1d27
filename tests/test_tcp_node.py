"""The tcp node in graphs: V10's calls in netgraph's ASCII form, the TCPC codes, channels as
byte streams (half-close, resets, hang-ups, data kept for a hook to come), demultiplexing of many
connections, batching, backpressure both ways and the one timer task, over two ip nodes joined
directly or through a lossy pipe on trio's MockClock."""

from __future__ import annotations

import errno
import hashlib
import itertools
import random
import re
from collections.abc import Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import netgraph
from netgraph import (
    Hook,
    Item,
    Message,
    NetgraphError,
    Node,
    TypeRegistry,
    delivery,
    graphfile,
    tags_of,
)
from netgraph.message import GENERIC_COOKIE, NGM_TEXT_STATUS
from ngctl.commands import Session, Status
from nodes.tcp.messages import (
    NGM_TCP_HUP,
    NGM_TCP_NEWCALL,
    TCP_COOKIE,
    TCPC_BADDEV,
    TCPC_BADLOCAL,
    TCPC_BOUND,
    TCPC_NOROUTE,
    TCPC_OK,
    TCPC_SORRY,
    TcpUser,
)
from nodes.tcp.node import ERROR_TAG, TcpNode
from nodes.tcp.stream import TcpListener, TcpStream, open_tcp_listener, open_tcp_stream
from nodes.tcp.tcb import State
from tests.conftest import Capture

EXAMPLES = Path(__file__).parent.parent / "examples"
A4, B4 = ip_address("192.0.2.1"), ip_address("192.0.2.2")
A6, B6 = ip_address("2001:db8::1"), ip_address("2001:db8::2")


def lossy(loss: int = 50_000, seed: int = 1) -> str:
    """5% loss, 5% reordered by 3 ms and 5% duplicated each way, 2 ms delay, seeded."""
    side = f"delay=2000 loss_ppm={loss} reorder_ppm=50000 reorder_delay=3000 duplicate=5"
    return f"setcfg {{ downstream={{ {side} seed={seed} }} upstream={{ {side} seed={seed + 1} }} }}"


async def pair(
    graph: netgraph.Graph, listener: TcpListener, server: object
) -> tuple[TcpStream, TcpStream]:
    """A connected (client, server) pair through the listener."""
    accepted: list[TcpStream] = []
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await open_tcp_stream(graph, "ta:", str(server), listener.port)
    return client, accepted[0]


async def two_hosts(sock: netgraph.Socket, pipe: str | None = None) -> None:
    """ip "a" and "b" (192.0.2.1/2, 2001:db8::1/2) joined directly or through pipe "wire";
    tcp "ta" and "tb" on their tcp hooks."""
    await sock.mknode("ip", "a")
    await sock.mknode("ip", "b")
    if pipe is None:
        await sock.connect("a:", "b:", "link0", "link0")
    else:
        await sock.mknode("pipe", "wire")
        await sock.connect("a:", "wire:", "link0", "upper")
        await sock.connect("wire:", "b:", "lower", "link0")
        await sock.send_ascii("wire:", pipe)
    for host, addr4, addr6 in (("a", A4, A6), ("b", B4, B6)):
        await sock.send_ascii(f"{host}:", f'addaddr {{ addr={addr4}/24 hook="link0" }}')
        await sock.send_ascii(f"{host}:", f'addaddr {{ addr={addr6}/64 hook="link0" }}')
        await sock.mknode("tcp", f"t{host}")
        await sock.connect(f"t{host}:", f"{host}:", "ip", "tcp")


def tcp(graph: netgraph.Graph, name: str) -> TcpNode:
    node = graph.find(name)
    assert isinstance(node, TcpNode)
    return node


async def ascii_reply(sock: netgraph.Socket, path: str, line: str) -> tuple[TcpUser, str]:
    reply, text = await sock.request_ascii(path, line)
    assert isinstance(reply.args, TcpUser)
    return reply.args, text


async def next_msg(sock: netgraph.Socket, cmd: int) -> tuple[str, Message]:
    while True:
        path, msg = await sock.recv_msg()
        if msg.typecookie == TCP_COOKIE and msg.cmd == cmd:
            return path, msg


async def read_all(sock: netgraph.Socket, *hooks: str) -> dict[str, tuple[bytes, Any]]:
    """Everything that comes up each of ``hooks`` until its zero-length item, with that item's
    tags."""
    got = {hook: bytearray() for hook in hooks}
    ends: dict[str, tuple[bytes, Any]] = {}
    while len(ends) < len(hooks):
        came, item = await sock.recv_data()
        assert came in got, came
        assert came not in ends, came
        if not item:
            ends[came] = (bytes(got[came]), dict(tags_of(item)))
        got[came] += item
    return ends


async def call(sock: netgraph.Socket, port: int = 80) -> tuple[str, str]:
    """A listener on tb:l1 and a call from ta:c1, both hooked to ``sock``; returns the hook
    names of the two ends on ``sock`` (client "c1", server: the newcall channel)."""
    await sock.connect(".", "tb:", "l1", "l1")
    await sock.request_ascii("tb:", f'listen {{ channel="l1" lport={port} }}')
    await sock.connect(".", "ta:", "c1", "c1")
    user, _ = await ascii_reply(sock, "ta:", f'connect {{ channel="c1" faddr={B4} fport={port} }}')
    assert user.code == TCPC_OK
    _, msg = await next_msg(sock, NGM_TCP_NEWCALL)
    name = msg.args.channel
    await sock.connect(".", "tb:", name, name)
    return "c1", name


# --------------------------------------------------------------------------- ASCII messages


async def test_a_call_placed_and_taken_in_ascii(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        await sock.connect(".", "tb:", "l1", "l1")
        user, text = await ascii_reply(
            sock, "tb:", 'listen { channel="l1" laddr=0.0.0.0 lport=80 }'
        )
        assert user.code == TCPC_OK
        assert user.lport == 80
        assert text == '{ code=3 channel="l1" lport=80 laddr=0.0.0.0 param=128 }'
        await sock.connect(".", "ta:", "c1", "c1")
        user, text = await ascii_reply(
            sock,
            "ta:",
            'connect { channel="c1" faddr=192.0.2.2 fport=80 laddr=0.0.0.0 lport=0 param=0 }',
        )
        assert user.code == TCPC_OK
        assert user.laddr == A4
        assert user.faddr == B4
        assert re.fullmatch(
            r'\{ code=3 channel="c1" lport=\d+ fport=80 laddr=192.0.2.1 faddr=192.0.2.2 \}', text
        )
        # The listener's owner hears of the call, in ASCII too, with the channel to hook up.
        path, msg, text = await sock.recv_ascii()
        assert msg.cmd == NGM_TCP_NEWCALL
        assert path == f"[{tcp(graph, 'tb').id:x}]:"
        assert f"lport=80 fport={user.lport} laddr=192.0.2.2 faddr=192.0.2.1" in text
        name = msg.args.channel
        await sock.connect(".", "tb:", name, name)
        _, text = await sock.request_ascii("tb:", f'getaddr "{name}"')
        assert f"lport=80 fport={user.lport} laddr=192.0.2.2 faddr=192.0.2.1" in text
        _, text = await sock.request_ascii("ta:", 'maxseg "c1"')
        assert text == "1448"  # MTU 1500 less the headers and the timestamps option
        await sock.send_data("c1", b"hello")
        assert await sock.recv_data() == (name, b"hello")
        await sock.send_data(name, b"world")
        assert await sock.recv_data() == ("c1", b"world")
        graph.close()


@pytest.mark.parametrize(
    ("path", "line", "code"),
    [
        ("ta:", 'connect { channel="c1" faddr=192.0.2.2 fport=0 }', errno.EINVAL),
        ("ta:", 'connect { channel="c1" fport=80 }', errno.EINVAL),
        ("ta:", 'connect { channel="c1" faddr=192.0.2.2 fport=80 param=1 }', errno.EINVAL),
        (
            "ta:",
            'connect { channel="c1" faddr=192.0.2.2 fport=80 laddr=2001:db8::1 }',
            errno.EINVAL,
        ),
        ("ta:", 'connect { channel="c1" faddr=192.0.2.300 fport=80 }', errno.EINVAL),
        ("ta:", 'connect { channel="c1" fport=70000 }', errno.EINVAL),
        ("ta:", 'connect { chanel="c1" }', errno.ENOENT),
        ("ta:", 'getaddr "nope"', errno.ENOENT),
        ("ta:", 'getaddr "c1"', errno.ENOTCONN),
        ("ta:", 'maxseg "c1"', errno.ENOTCONN),
        ("ta:", 'reset "c1"', errno.ENOTCONN),
        ("ta:", 'setopt { channel="c1" name="bogus" value=1 }', errno.ENOPROTOOPT),
        ("ta:", 'setopt { channel="c1" name="rcvbuf" value=0 }', errno.EINVAL),
        ("ta:", 'setopt { channel="c1" name="keepidle" value=-5 }', errno.EINVAL),
        ("ta:", 'setstack { channel="c1" stack="nosuch" }', errno.ENOENT),
        ("ta:", "newcall {}", errno.EINVAL),
        ("ta:", 'listen { channel="c1" param=-1 }', errno.EINVAL),
    ],
)
async def test_bad_input_gets_its_errno(path: str, line: str, code: int) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        await sock.connect(".", "ta:", "c1", "c1")
        with pytest.raises(NetgraphError) as info:
            await sock.request_ascii(path, line)
        assert info.value.errno == code
        graph.close()


async def test_data_on_a_channel_without_a_call_is_enotconn() -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        await sock.connect(".", "ta:", "c1", "c1")
        with pytest.raises(NetgraphError) as info:
            await sock.send_data("c1", b"x")
        assert info.value.errno == errno.ENOTCONN
        graph.close()


# ------------------------------------------------------------------------------- TCPC codes


async def test_the_tcpc_codes(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        for name in ("c1", "c2", "c3", "c4", "c5", "l1", "l2", "l3"):
            await sock.connect(".", "ta:", name, name)

        async def code(line: str) -> tuple[int, int]:
            user, _ = await ascii_reply(sock, "ta:", line)
            return user.code, user.param

        # BADDEV: no such channel; the ip hook; a channel already in use.
        assert (await code('connect { channel="nope" faddr=192.0.2.2 fport=80 }'))[0] == TCPC_BADDEV
        assert (await code('connect { channel="ip" faddr=192.0.2.2 fport=80 }'))[0] == TCPC_BADDEV
        assert await code('listen { channel="l1" lport=8080 }') == (TCPC_OK, 128)
        assert (await code('connect { channel="l1" faddr=192.0.2.2 fport=80 }'))[0] == TCPC_BADDEV
        # BOUND: the same port listened on twice; a call from a listening port.
        assert await code('listen { channel="l2" lport=8080 }') == (TCPC_BOUND, errno.EADDRINUSE)
        assert await code('connect { channel="c1" faddr=192.0.2.2 fport=80 lport=8080 }') == (
            TCPC_BOUND,
            errno.EADDRINUSE,
        )
        # ...but a more specific listener on the same port may take calls to its address.
        assert (await code('listen { channel="l2" laddr=192.0.2.1 lport=8080 }'))[0] == TCPC_OK
        # NOROUTE: the ip node has no route there.
        assert await code('connect { channel="c1" faddr=203.0.113.9 fport=80 }') == (
            TCPC_NOROUTE, errno.EHOSTUNREACH,
        )  # fmt: skip
        # BADLOCAL: an address the ip node does not have, to call from or to listen on.
        assert await code(
            'connect { channel="c2" faddr=192.0.2.2 fport=80 laddr=198.51.100.7 }'
        ) == (TCPC_BADLOCAL, errno.EADDRNOTAVAIL)
        assert await code('listen { channel="l3" laddr=198.51.100.7 lport=80 }') == (
            TCPC_BADLOCAL, errno.EADDRNOTAVAIL,
        )  # fmt: skip
        # SORRY: refused (nobody listens there: the far node answers with a reset).
        assert await code('connect { channel="c3" faddr=192.0.2.2 fport=81 }') == (
            TCPC_SORRY, errno.ECONNREFUSED,
        )  # fmt: skip
        assert tcp(graph, "tb").tcp_stats().no_listener == 1
        # OK, with a chosen local address and port.
        user, _ = await ascii_reply(
            sock,
            "ta:",
            'connect { channel="c4" faddr=192.0.2.2 fport=8080 laddr=192.0.2.1 lport=4000 }',
        )
        assert user.code == TCPC_SORRY  # tb has no listener on 8080 either
        await sock.connect(".", "tb:", "l9", "l9")
        await sock.request_ascii("tb:", 'listen { channel="l9" lport=8080 }')
        user, _ = await ascii_reply(
            sock,
            "ta:",
            'connect { channel="c5" faddr=192.0.2.2 fport=8080 laddr=192.0.2.1 lport=4000 }',
        )
        assert (user.code, user.laddr, user.lport) == (TCPC_OK, A4, 4000)
        graph.close()


async def test_a_connect_fails_with_noroute_on_an_icmp_unreachable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        await sock.shutdown("tb:")  # ip "b" now has no tcp hook: it answers protocol unreachable
        await sock.connect(".", "ta:", "c1", "c1")
        user, _ = await ascii_reply(
            sock, "ta:", 'connect { channel="c1" faddr=192.0.2.2 fport=80 }'
        )
        assert (user.code, user.param) == (TCPC_NOROUTE, errno.ENOPROTOOPT)
        stats = tcp(graph, "ta").tcp_stats()
        assert (stats.icmp_in, stats.icmp_hard) == (1, 1)
        assert trio.current_time() < 1  # at once, not after the SYN's retransmissions
        graph.close()


async def test_a_connect_that_nobody_answers_times_out_as_sorry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock, pipe=lossy(loss=1_000_000))  # everything is lost
        await sock.connect(".", "ta:", "c1", "c1")
        user, _ = await ascii_reply(
            sock, "ta:", 'connect { channel="c1" faddr=192.0.2.2 fport=80 }'
        )
        assert (user.code, user.param) == (TCPC_SORRY, errno.ETIMEDOUT)
        assert trio.current_time() > 60  # six SYN retransmissions with backoff
        graph.close()


# ------------------------------------------------------------------------ hup, reset, options


async def test_hup_on_fin_then_eof_and_close(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        client, server = await call(sock)
        await sock.send_data(client, b"last words")
        await sock.rmhook(".", client)  # close: FIN after the data
        assert await read_all(sock, server) == {server: (b"last words", {})}
        _, msg = await next_msg(sock, NGM_TCP_HUP)
        assert (msg.args.channel, msg.args.code, msg.args.param) == (server, TCPC_OK, 0)
        await sock.rmhook(".", server)
        # Both ends close: ta lingers in TIME_WAIT for 2 MSL, then nothing is left.
        ta, tb = tcp(graph, "ta"), tcp(graph, "tb")
        await wait_for(lambda: not tb.conns)
        assert [c.core.state for c in ta.conns.values()] == [State.TIME_WAIT]
        await wait_for(lambda: not ta.conns)
        assert trio.current_time() >= 60
        graph.close()


async def wait_for(condition: Any, step: float = 0.5) -> None:
    """Let virtual time (the autojump clock's) pass until ``condition()`` holds: the state
    watched here (connections in a node's tables) has no event to wait on."""
    with trio.fail_after(600):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(step)


async def test_reset_aborts_and_the_far_end_hears_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        client, server = await call(sock)
        await sock.send_ascii("tb:", f'reset "{server}"')
        # The caller sees a zero-length item tagged with the error, and a hup saying why.
        assert await read_all(sock, client, server) == {
            client: (b"", {ERROR_TAG: errno.ECONNRESET}),
            server: (b"", {ERROR_TAG: errno.ECONNABORTED}),  # the one that reset hears it too
        }
        _, msg = await next_msg(sock, NGM_TCP_HUP)
        assert (msg.args.channel, msg.args.code, msg.args.param) == (
            client, TCPC_SORRY, errno.ECONNRESET,
        )  # fmt: skip
        with pytest.raises(NetgraphError) as info:
            await sock.send_data(client, b"x")
        assert info.value.errno == errno.ECONNRESET
        assert not tcp(graph, "ta").conns
        assert not tcp(graph, "tb").conns
        graph.close()


async def test_setopt_and_getopt(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        await sock.connect(".", "tb:", "l1", "l1")
        # Options of a listener are those of its calls: a 500-byte MSS clamp is announced.
        await sock.send_ascii("tb:", 'setopt { channel="l1" name="maxseg" value=500 }')
        await sock.send_ascii("tb:", 'setopt { channel="l1" name="TCP_NODELAY" value=1 }')
        await sock.request_ascii("tb:", 'listen { channel="l1" lport=80 }')
        await sock.connect(".", "ta:", "c1", "c1")
        await sock.send_ascii("ta:", 'setopt { channel="c1" name="keepalive" value=1 }')
        await sock.send_ascii("ta:", 'setopt { channel="c1" name="user_timeout" value=30000 }')
        await sock.request_ascii("ta:", 'connect { channel="c1" faddr=192.0.2.2 fport=80 }')
        _, msg = await next_msg(sock, NGM_TCP_NEWCALL)
        name = msg.args.channel
        _, text = await sock.request_ascii("ta:", 'maxseg "c1"')
        assert int(text) <= 500
        _, text = await sock.request_ascii("tb:", f'getopt {{ channel="{name}" name="nodelay" }}')
        assert text == f'{{ channel="{name}" name="nodelay" value=1 }}'
        _, text = await sock.request_ascii("ta:", 'getopt { channel="c1" name="keepalive" }')
        assert text.endswith("value=1 }")
        _, text = await sock.request_ascii("ta:", 'getopt { channel="c1" name="user_timeout" }')
        assert text.endswith("value=30000 }")
        conn = next(iter(tcp(graph, "ta").conns.values()))
        assert conn.core.tcb.config.keepalive
        assert conn.core.tcb.keep_at is not None
        await sock.send_ascii("ta:", 'setopt { channel="c1" name="rcvbuf" value=65536 }')
        assert conn.core.tcb.config.rcvbuf == 65536
        # The stack switch of tcp_functions(9), on a live connection.
        _, text = await sock.request_ascii("ta:", 'getstack "c1"')
        assert text == '{ channel="c1" stack="default" }'
        await sock.send_ascii("ta:", 'setstack { channel="c1" stack="newreno" }')
        assert conn.core.stack.name == "newreno"
        graph.close()


async def test_keepalive_param_turns_keepalive_on(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        await sock.connect(".", "tb:", "l1", "l1")
        await sock.request_ascii("tb:", 'listen { channel="l1" lport=80 }')
        for name, param in (("c1", 0), ("c2", 2)):
            await sock.connect(".", "ta:", name, name)
            user, _ = await ascii_reply(
                sock,
                "ta:",
                f'connect {{ channel="{name}" faddr=192.0.2.2 fport=80 param={param} }}',
            )
            assert (user.code, user.param) == (TCPC_OK, param)
        keep = {
            c.channel.name: c.core.tcb.config.keepalive
            for c in tcp(graph, "ta").conns.values()
            if c.channel
        }
        assert keep == {"c1": False, "c2": True}
        graph.close()


async def test_status_and_getstats(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        client, _server = await call(sock)
        await sock.send_data(client, b"x" * 10000)
        got = b""
        while len(got) < 10000:
            _, item = await sock.recv_data()
            got += item
        reply = await sock.request("ta:", GENERIC_COOKIE, NGM_TEXT_STATUS, cmdstr="textstatus")
        text = reply.args
        assert "connections 1, listeners 0, ip hook up" in text
        assert re.search(r"c1: ESTABLISHED 192\.0\.2\.1:\d+ 192\.0\.2\.2:80", text)
        reply = await sock.request("tb:", GENERIC_COOKIE, NGM_TEXT_STATUS, cmdstr="textstatus")
        assert "l1: LISTEN *:80 backlog 128" in reply.args
        _, text = await sock.request_ascii("ta:", "getstats")
        stats = tcp(graph, "ta").tcp_stats()
        assert stats.segs_out >= 8
        assert stats.bytes_out == 10000
        assert stats.active_opens == 1
        assert f"segs_out={stats.segs_out}" in text
        _, text = await sock.request_ascii("tb:", "getclrstats")
        assert "bytes_in=10000" in text
        assert "passive_opens=1" in text
        assert tcp(graph, "tb").tcp_stats().bytes_in == 0
        graph.close()


# ---------------------------------------------------------------------------- streams of data


# ------------------------------------------------------------------------- in-graph transfers


async def exchange(stream: TcpStream, out: bytes) -> bytes:
    """Send ``out`` and then the end of the stream while receiving until the peer's end."""
    got = bytearray()
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            await stream.send_all(out)
            await stream.send_eof()

        nursery.start_soon(send)
        while data := await stream.receive_some():
            got += data
    return bytes(got)


@pytest.mark.parametrize(("server", "size"), [(B4, 2_000_000), (B6, 1_000_000)])
async def test_a_lossy_pipe_transfers_both_ways_and_closes_cleanly(
    autojump_clock: trio.testing.MockClock, server: Any, size: int
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock, pipe=lossy())
        listener = await open_tcp_listener(graph, "tb:", 80)
        up, down = random.Random(1).randbytes(size), random.Random(2).randbytes(size)
        results: dict[str, bytes] = {}

        async def serve() -> None:
            stream = await listener.accept()
            results["server"] = await exchange(stream, down)
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            client = await open_tcp_stream(graph, "ta:", server, 80)
            assert client.remote == (server, 80)
            results["client"] = await exchange(client, up)
            await client.aclose()
        assert hashlib.sha256(results["server"]).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(results["client"]).digest() == hashlib.sha256(down).digest()
        ta, tb = tcp(graph, "ta"), tcp(graph, "tb")
        assert ta.tcp_stats().retransmits > 0
        assert tb.tcp_stats().retransmits > 0
        _, stats = await sock.request_ascii("wire:", "getstats")
        assert re.search(r"delayDropFrames=[1-9]", stats)
        # Both ends reach CLOSED (one through TIME_WAIT); the hooks and the tasks are gone.
        await listener.aclose()
        await wait_for(lambda: not ta.conns and not tb.conns)
        assert list(ta.hooks) == ["ip"]
        assert list(tb.hooks) == ["ip"]
        assert not ta.channels
        assert not tb.channels
        assert not tb.listeners
        assert ta.tasks == tb.tasks == 1  # each node's timer task, only
        graph.close()


@pytest.mark.parametrize("first", ["client", "server"])
async def test_half_close_either_way(autojump_clock: trio.testing.MockClock, first: str) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 80)
        client, server = await pair(graph, listener, B4)
        closer, other = (client, server) if first == "client" else (server, client)
        await closer.send_all(b"question")
        await closer.send_eof()
        got = b""
        while data := await other.receive_some():
            got += data
        assert got == b"question"
        assert await other.receive_some() == b""  # and stays at the end
        # The half that is still open carries data the other way, then its own end.
        await other.send_all(b"answer" * 10000)
        await other.aclose()
        got = b""
        while data := await closer.receive_some():
            got += data
        assert got == b"answer" * 10000
        await closer.aclose()
        await listener.aclose()
        graph.close()


@pytest.mark.parametrize("aborter", ["ta", "tb"])
async def test_a_reset_either_way_breaks_the_other_stream(
    autojump_clock: trio.testing.MockClock, aborter: str
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 80)
        client, server = await pair(graph, listener, B4)
        await client.send_all(b"x")
        assert await server.receive_some() == b"x"
        victim, channel = (server, client.channel) if aborter == "ta" else (client, server.channel)
        await sock.send_ascii(f"{aborter}:", f'reset "{channel}"')
        with pytest.raises(trio.BrokenResourceError):
            await victim.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await victim.send_all(b"y")
        assert tcp(graph, "tb" if aborter == "ta" else "ta").tcp_stats().resets_received == 1
        await client.aclose()
        await server.aclose()
        graph.close()


async def test_data_before_the_hook_is_kept_within_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        await sock.connect(".", "tb:", "l1", "l1")
        await sock.send_ascii("tb:", 'setopt { channel="l1" name="rcvbuf" value=65536 }')
        await sock.request_ascii("tb:", 'listen { channel="l1" lport=80 }')
        await sock.connect(".", "ta:", "c1", "c1")
        await sock.send_ascii("ta:", 'setopt { channel="c1" name="sndbuf" value=32768 }')
        await sock.request_ascii("ta:", 'connect { channel="c1" faddr=192.0.2.2 fport=80 }')
        _, msg = await next_msg(sock, NGM_TCP_NEWCALL)
        name = msg.args.channel
        data = random.Random(3).randbytes(200_000)
        sent = trio.Event()

        async def send() -> None:
            await sock.send_data("c1", data)
            await sock.send_data("c1", b"")
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()  # the window fills and closes
            conn = tcp(graph, "tb").channels[name].conn
            assert conn is not None
            tcb = conn.core.tcb
            assert 65536 - tcb.rcv_seg_max < conn.core.readable <= 65536
            assert (tcb.rcv_adv - tcb.rcv_nxt) & 0xFFFFFFFF < tcb.rcv_seg_max  # window closed
            assert not sent.is_set()  # so the sender is held
            await sock.connect(".", "tb:", name, name)
            assert await read_all(sock, name) == {name: (data, {})}
        graph.close()


async def test_items_queued_at_a_busy_node_never_stall_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The engine queues items at a busy node, and its queue runner delivers them. An item that
    does not fit in the send buffer must not hold the runner (the ACKs that make room would
    queue up behind the next item): it waits in the connection's backlog instead."""
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        client, server = await call(sock)
        ta = tcp(graph, "ta")
        delivery.call_later(ta, lambda: None)  # busy: what comes now is queued
        first, second = random.Random(9).randbytes(600_000), random.Random(10).randbytes(600_000)
        await sock.send_data(client, first)
        await sock.send_data(client, second)
        await sock.send_data(client, b"")
        assert len(ta._queue) == 4  # queued: the senders have moved on
        assert await read_all(sock, server) == {server: (first + second, {})}
        assert ta.tcp_stats().timeouts == 0
        graph.close()


class Gate(Node):
    """A slow reader: takes items only while ``open`` is set; records what it took."""

    def constructor(self) -> None:
        self.open = trio.Event()
        self.got = bytearray()
        self.items = 0
        self.ended = trio.Event()

    async def rcvdata(self, hook: Hook, item: Item) -> None:
        await self.open.wait()
        self.items += 1
        self.got += item
        if not item:
            self.ended.set()


class Tap(Node):
    """Passes items between ``up`` and ``down``, recording each call: (hook, items)."""

    def constructor(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.rcvbatch(hook, (item,))

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.calls.append((hook.name, len(items)))
        self.send_batch(self.hooks["down" if hook.name == "up" else "up"], items)


def make_types() -> TypeRegistry:
    types = TypeRegistry()
    types.register("test_gate", Gate)
    types.register("test_tap", Tap)
    return types


async def test_a_slow_channel_peer_closes_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph(types=make_types()) as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        listener = await open_tcp_listener(graph, "tb:", 80)
        await sock.mkpeer(".", "test_gate", "gate", "in")
        await sock.name_node("gate", "gate")
        gate = graph.find("gate")
        assert isinstance(gate, Gate)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.recv_msg)  # not needed: accept reads the newcall
            nursery.cancel_scope.cancel()
        data = random.Random(4).randbytes(1_500_000)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                client = await open_tcp_stream(graph, "ta:", B4, 80)
                await client.send_all(data)
                await client.aclose()

            nursery.start_soon(send)
            _, msg = await next_msg(listener.socket, NGM_TCP_NEWCALL)
            name = msg.args.channel
            await sock.connect("gate:", "tb:", "in2", name)
            await trio.sleep(10)
            tb = tcp(graph, "tb")
            conn = tb.channels[name].conn
            assert conn is not None
            # One read is held by the gate; the rest waits in the core, whose window is shut.
            assert conn.core.readable == conn.core.tcb.config.rcvbuf
            assert conn.core.tcb.rcv_adv == conn.core.tcb.rcv_nxt
            sender = next(iter(tcp(graph, "ta").conns.values()))
            assert sender.core.tcb.snd_wnd == 0
            assert sender.core.tcb.persist_at is not None
            gate.open.set()
            await gate.ended.wait()
        assert bytes(gate.got) == data
        assert gate.items < 30  # many segments per item
        await listener.aclose()
        graph.close()


async def test_segments_go_down_in_batches_and_data_up_in_few_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph(types=make_types()) as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        # Splice a tap between tb and the ip node under it (tb only listens: it needs no route
        # lookups, which go to the node at the other end of its ip hook).
        await sock.rmhook("tb:", "ip")
        await sock.mkpeer("tb:", "test_tap", "ip", "up")
        await sock.connect("tb:ip", "b:", "down", "tcp")
        peer = tcp(graph, "tb").hooks["ip"].peer
        assert peer is not None
        tap = peer.node
        assert isinstance(tap, Tap)
        listener = await open_tcp_listener(graph, "tb:", 80)
        data = random.Random(5).randbytes(1_000_000)
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                stream = await listener.accept()
                await stream.send_all(data)
                await stream.aclose()

            nursery.start_soon(serve)
            client = await open_tcp_stream(graph, "ta:", B4, 80)
            got: list[int] = []
            while chunk := await client.receive_some():
                got.append(len(chunk))
            await client.aclose()
        assert sum(got) == len(data)
        down = [n for hook, n in tap.calls if hook == "up"]
        segments = sum(down)
        assert segments >= len(data) // 1448
        assert max(down) >= 10  # the initial window went as one batch
        assert len(down) < segments / 2
        assert len(got) < segments / 4  # data goes up the channel many segments at a time
        await listener.aclose()
        graph.close()


async def test_many_connections_on_one_node_with_one_timer_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    n = 40
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock, pipe=lossy(loss=10_000))
        listener = await open_tcp_listener(graph, "tb:", 80)
        clients: list[TcpStream] = []
        servers: list[TcpStream] = []
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                for _ in range(n):
                    servers.append(await listener.accept())

            nursery.start_soon(accept)
            for _ in range(n):
                clients.append(await open_tcp_stream(graph, "ta:", B4, 80))
        ta, tb = tcp(graph, "ta"), tcp(graph, "tb")
        assert len(ta.conns) == n
        assert len(tb.conns) == n
        # Ephemeral ports (RFC 6056): in range, all different, not handed out in sequence.
        ports = sorted(key[1] for key in ta.conns)
        assert len(set(ports)) == n
        assert ports[0] >= 49152
        assert ports[-1] <= 65535
        assert any(b - a != 1 for a, b in itertools.pairwise(ports))

        async def echo(stream: TcpStream) -> None:
            got = bytearray()
            while data := await stream.receive_some():
                got += data
            await stream.send_all(hashlib.sha256(got).digest())
            await stream.aclose()

        async def talk(i: int, stream: TcpStream) -> None:
            data = random.Random(100 + i).randbytes(30_000 + i * 1000)
            await stream.send_all(data)
            await stream.send_eof()
            answer = b""
            while chunk := await stream.receive_some():
                answer += chunk
            assert answer == hashlib.sha256(data).digest()
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(echo, servers[i])
                nursery.start_soon(talk, i, clients[i])
        await listener.aclose()
        # Closed from both sides: no channel, no delivery task; the connections that wait in
        # TIME_WAIT (those a duplicated last ACK did not end: tb resets it, and a reset ends
        # TIME_WAIT as RFC 9293 and Linux have it) wait in the node's one timer heap, not in
        # tasks of their own.
        await wait_for(lambda: not tb.conns)
        assert ta.conns
        assert {c.core.state for c in ta.conns.values()} == {State.TIME_WAIT}
        assert ta.tasks == tb.tasks == 1
        await trio.sleep(10)  # virtual: stale heap entries (deadlines that moved) pop
        assert len(ta.heap) <= n  # one entry per connection (those reset early: until 2 MSL)
        await wait_for(lambda: not ta.conns)
        graph.close()


async def test_a_channel_on_an_echo_node_echoes_the_stream_and_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The channel's peer sends back, from inside the delivery, into the same channel: the
    node is re-entered while it delivers, and must neither deadlock nor lose a byte."""
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock, pipe=lossy(loss=10_000))
        await sock.connect(".", "tb:", "l1", "l1")
        await sock.request_ascii("tb:", 'listen { channel="l1" lport=7 }')
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                _, msg = await next_msg(sock, NGM_TCP_NEWCALL)
                await sock.mkpeer("tb:", "echo", msg.args.channel, "x")

            nursery.start_soon(take)
            client = await open_tcp_stream(graph, "ta:", B4, 7)
        data = random.Random(8).randbytes(2_000_000)
        assert await exchange(client, data) == data  # the echo sends our end back too
        await client.aclose()
        graph.close()


# -------------------------------------------------------------- graphs from files and ngctl


async def test_a_graph_file_of_two_tcp_hosts(autojump_clock: trio.testing.MockClock) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await graphfile.load(sock, str(EXAMPLES / "tcp_two_hosts.yaml"))
        listener = await open_tcp_listener(graph, "tb:", 443)
        up, down = random.Random(6).randbytes(300_000), random.Random(7).randbytes(300_000)
        async with trio.open_nursery() as nursery:
            results: dict[str, bytes] = {}

            async def serve() -> None:
                stream = await listener.accept()
                results["server"] = await exchange(stream, down)
                await stream.aclose()

            nursery.start_soon(serve)
            client = await open_tcp_stream(graph, "ta:", "2001:db8::2", 443)
            results["client"] = await exchange(client, up)
            await client.aclose()
        assert results == {"server": up, "client": down}
        assert tcp(graph, "ta").tcp_stats().retransmits > 0  # 1% loss each way
        await listener.aclose()
        graph.close()


NGCTL_LINES = """\
mkpeer . tcp c1 c1
name c1 ta
mkpeer ta: ip ip tcp
name ta:ip a
mkpeer a: ip link0 link0
name a:link0 b
mkpeer b: tcp tcp ip
name b:tcp tb
connect . tb: l1 l1
msg a: addaddr { addr=192.0.2.1/24 hook="link0" }
msg b: addaddr { addr=192.0.2.2/24 hook="link0" }
msg tb: listen { channel="l1" laddr=0.0.0.0 lport=80 }
msg ta: connect { channel="c1" faddr=192.0.2.2 fport=80 laddr=0.0.0.0 lport=0 param=0 }
status ta:
"""


async def test_a_call_from_ngctl_lines() -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("ngctl1")
        cap = Capture()
        session = Session(sock, printer=cap, msg_wait=5.0)
        assert await session.run_lines(NGCTL_LINES.splitlines()) == Status.OK, cap.err
        out, err = cap.take()
        assert not err
        text = "\n".join(out)
        assert 'Args:\t{ code=3 channel="l1" lport=80 laddr=0.0.0.0 param=128 }' in text
        assert re.search(
            r'Rec\'d response "connect" .*\nArgs:\t\{ code=3 channel="c1" lport=\d+ fport=80'
            r" laddr=192.0.2.1 faddr=192.0.2.2 \}",
            text,
        )
        assert re.search(r"c1: ESTABLISHED 192\.0\.2\.1:\d+ 192\.0\.2\.2:80", text)
        _, msg = await next_msg(sock, NGM_TCP_NEWCALL)
        name = msg.args.channel
        assert await session.run_line(f"connect . tb: {name} {name}") == Status.OK
        await sock.send_data("c1", b"over ngctl")
        assert await sock.recv_data() == (name, b"over ngctl")
        graph.close()


# ---------------------------------------------------------------- a tcp node on a fake ip


async def fake_ip(sock: netgraph.Socket) -> TcpNode:
    """A tcp node "t" whose ip hook is the socket's hook "wire" (the test plays the ip node:
    it sees the tagged segments and injects its own). "t" listens on port 80."""
    await sock.mknode("tcp", "t")
    await sock.connect(".", "t:", "wire", "ip")
    await sock.connect(".", "t:", "l1", "l1")
    await sock.request_ascii("t:", 'listen { channel="l1" lport=80 }')
    node = sock.node.graph.find("t")
    assert isinstance(node, TcpNode)
    return node


async def test_a_segment_for_nobody_is_answered_with_a_reset() -> None:
    from nodes.tcp.segment import ACK, RST, build, parse, pseudo_sum

    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        t = await fake_ip(sock)
        stray = build(1234, 81, 1000, 5000, ACK, 1000, pseudo_sum(A4, B4))
        await sock.send_data("wire", netgraph.tag(stray, src=A4, dst=B4, proto=6))
        hook, item = await sock.recv_data()
        assert hook == "wire"
        assert dict(tags_of(item)) == {"dst": A4, "src": B4}
        reset = parse(item, pseudo_sum(B4, A4))
        assert (reset.flags, reset.seq, reset.sport, reset.dport) == (RST, 5000, 81, 1234)
        # A segment with a bad checksum gets nothing, and is counted.
        bad = bytearray(build(1234, 80, 1000, 0, 0x02, 1000, pseudo_sum(A4, B4)))
        bad[16] ^= 0xFF
        await sock.send_data("wire", netgraph.tag(bytes(bad), src=A4, dst=B4, proto=6))
        assert sock.pending_data() == 0
        stats = t.tcp_stats()
        assert (stats.no_listener, stats.resets_sent, stats.listener_dropped) == (1, 1, 1)
        graph.close()


async def test_a_syn_backlog_bounds_half_open_calls() -> None:
    from nodes.tcp.segment import SYN, build, pseudo_sum

    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await sock.mknode("tcp", "t")
        await sock.connect(".", "t:", "wire", "ip")
        await sock.connect(".", "t:", "l1", "l1")
        await sock.request_ascii("t:", 'listen { channel="l1" lport=80 param=3 }')
        t = tcp(graph, "t")
        syns = [
            netgraph.tag(build(2000 + i, 80, 7, 0, SYN, 1000, pseudo_sum(A4, B4)), src=A4, dst=B4)
            for i in range(5)
        ]
        await sock.send_batch("wire", syns)  # one batch: three SYN-ACKs, two SYNs dropped
        assert sock.pending_data() == 3
        assert t.tcp_stats().backlog_full == 2
        assert len(t.listeners[80][0].embryos) == 3
        graph.close()


async def test_an_icmp_error_not_about_data_in_flight_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        client, _ = await call(sock)
        ta = tcp(graph, "ta")
        conn = next(iter(ta.conns.values()))
        laddr, lport, faddr, fport = conn.key
        quote = lport.to_bytes(2, "big") + fport.to_bytes(2, "big")
        error = {"icmp_type": 3, "icmp_code": 1, "src": laddr, "dst": faddr, "proto": 6}
        a = graph.find("a")
        await sock.send_data(client, b"z" * 100)  # something in flight? it is acked at once
        forged = quote + ((conn.core.tcb.snd_una + 100000) & 0xFFFFFFFF).to_bytes(4, "big")
        await a.emit(a.hooks["tcp"], netgraph.tag(forged, **error))
        assert ta.tcp_stats().icmp_ignored == 1
        assert conn.core.state == State.ESTABLISHED
        assert conn.soft_error == 0
        graph.close()


async def test_a_passive_open_announces_the_mss_of_the_link_the_syn_came_in_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 6691: the listener asks the ip node for the MTU of the SYN's link (``getmtu``) once,
    holding the first SYN until it knows; later calls take it from the node's cache."""
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await two_hosts(sock)
        for host in ("a", "b"):
            await sock.send_ascii(f"{host}:", 'setmtu { hook="link0" mtu=9000 }')
        tb = tcp(graph, "tb")
        listener = await open_tcp_listener(graph, "tb:", 80)
        for _ in range(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.accept)
                client = await open_tcp_stream(graph, "ta:", B4, 80)
            await client.aclose()
        assert tb.link_mtus["link0"][0] == 9000
        assert not tb.mtu_queries
        served = [c for c in tb.conns.values() if c.listener is not None]
        assert len(served) == 2
        for conn in served:
            assert (conn.core.tcb.our_mss, conn.core.tcb.peer_mss) == (8960, 8960)
        await listener.aclose()
        graph.close()


async def test_a_syn_whose_link_mtu_is_never_told_is_answered_after_a_while(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The ip node (here the test) does not answer ``getmtu``: the SYN waits a bounded time,
    then is answered with the listener's MTU (1500)."""
    from nodes.tcp.segment import SYN, build, parse, pseudo_sum

    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        t = await fake_ip(sock)
        syn = build(2000, 80, 7, 0, SYN, 1000, pseudo_sum(A4, B4))
        await sock.send_data("wire", netgraph.tag(syn, src=A4, dst=B4, link="link0"))
        assert sock.pending_data() == 0  # held
        _, ask = await sock.recv_msg()
        assert (ask.cmdstr, ask.args) == ("getmtu", "link0")
        with trio.fail_after(2):
            _, item = await sock.recv_data()
        answer = parse(item, pseudo_sum(B4, A4))
        assert answer.flags & SYN
        assert t.link_mtus["link0"][0] == 0
        (conn,) = t.conns.values()
        assert conn.core.tcb.our_mss == 1460
        graph.close()
