"""An HTTP/1.1 server (h11) on the user-space TCP/IP stack: trio code, run over the graph.

The server is ordinary trio + h11 code: ``trio.serve_listeners`` takes a
:class:`~nodes.tcp.stream.TcpListener` and hands each connection over as a
:class:`~nodes.tcp.stream.TcpStream` (a trio ``HalfCloseableStream``). Underneath, the TCP is the
tcp node's, IP the ip node's, and the packets go through a TUN interface (the iface node) into
a network namespace, where the kernel is the client (see ``examples/tun_host.py``)::

    curl (kernel, namespace NS) -- ng0 (TUN) -- [iface] -- [ip0] -- [tcp0] -- this server

Run it as root; it makes a namespace of its own and says how to reach the server from it::

    $ sudo .venv/bin/python examples/http_server.py
    serving on http://192.0.2.2:8080/ and http://[2001:db8::2]:8080/ in namespace ngdemo-4242
    try: ip netns exec ngdemo-4242 curl http://192.0.2.2:8080/
    try: ip netns exec ngdemo-4242 curl -g http://[2001:db8::2]:8080/

and serves until Ctrl-C (SIGINT) or SIGTERM, then deletes the namespace. ``--netns NAME`` uses
a namespace you made (``ip netns add NAME``) instead, and leaves it; ``--port`` changes the port
(8080). Nothing is configured outside the namespace: the TUN interface is made where the program
runs and moved into the namespace at once, and only documentation addresses are used.

Pages: ``/`` a small HTML page (who asked, over which TCP connection, how many requests so
far); ``/bytes/N`` N bytes of ``x`` (at most 100 MB, to move some data); anything else 404.
GET and HEAD; keep-alive as HTTP/1.1 wants it; a connection idle for 60 s is closed.
"""

from __future__ import annotations

import argparse
import html
import signal
import sys
from functools import partial
from typing import Final

import h11
import trio
from tun_host import OURS4, OURS6, TCP_PATH, SetupError, build, namespace

import netgraph
from nodes.tcp.stream import TcpStream, open_tcp_listener

MAX_READ: Final = 65536
IDLE: Final = 60.0  # seconds a connection may wait for its next request
MAX_BYTES: Final = 100 * 1024 * 1024
SERVER: Final = "netgraph-py http_server (user-space TCP)"


class Counter:
    def __init__(self) -> None:
        self.requests = 0


def page(request: h11.Request, stream: TcpStream, counter: Counter) -> tuple[int, bytes, str]:
    """Status, body and content type for ``request``."""
    path = request.target.decode("ascii", "replace")
    if path == "/":
        faddr, fport = stream.remote
        laddr, lport = stream.local
        body = (
            "<!doctype html>\n<title>netgraph-py</title>\n"
            "<h1>Hello from a user-space TCP/IP stack</h1>\n"
            f"<p>You are {html.escape(str(faddr))} port {fport}; this is {html.escape(str(laddr))}"
            f" port {lport}, channel {html.escape(stream.channel)} of the tcp node.</p>\n"
            f"<p>Request {counter.requests} since the server started.</p>\n"
        )
        return 200, body.encode(), "text/html; charset=utf-8"
    if path.startswith("/bytes/") and path[7:].isdigit() and int(path[7:]) <= MAX_BYTES:
        return 200, b"x" * int(path[7:]), "application/octet-stream"
    return 404, b"not found\n", "text/plain; charset=utf-8"


async def send(conn: h11.Connection, stream: TcpStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def next_event(conn: h11.Connection, stream: TcpStream) -> object:
    """The next h11 event, reading as needed; ConnectionClosed after IDLE seconds of nothing."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        with trio.move_on_after(IDLE) as idle:
            data = await stream.receive_some(MAX_READ)
        if idle.cancelled_caught:
            return h11.ConnectionClosed()
        conn.receive_data(data)


async def handle(counter: Counter, stream: TcpStream) -> None:
    """One connection: requests answered in turn until either side closes."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = await next_event(conn, stream)
            if not isinstance(event, h11.Request):
                break  # ConnectionClosed, or the client gave up
            while not isinstance(await next_event(conn, stream), h11.EndOfMessage):
                pass  # a request body: not used
            counter.requests += 1
            status, body, kind = page(event, stream, counter)
            headers = [
                ("content-type", kind),
                ("content-length", str(len(body))),
                ("server", SERVER),
            ]
            await send(conn, stream, h11.Response(status_code=status, headers=headers))
            if event.method != b"HEAD":
                await send(conn, stream, h11.Data(data=body))
            await send(conn, stream, h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    except (h11.ProtocolError, trio.BrokenResourceError) as err:
        print(f"connection from {stream.remote[0]} port {stream.remote[1]}: {err}", flush=True)
    finally:
        await stream.aclose()


async def serve(netns: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with netgraph.open_graph() as graph:
            await build(graph, netns)
            listener = await open_tcp_listener(graph, TCP_PATH, port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, partial(handle, Counter()), [listener])
                print(
                    f"serving on http://{OURS4}:{port}/ and http://[{OURS6}]:{port}/"
                    f" in namespace {netns}",
                    flush=True,
                )
                print(f"try: ip netns exec {netns} curl http://{OURS4}:{port}/", flush=True)
                print(f"try: ip netns exec {netns} curl -g http://[{OURS6}]:{port}/", flush=True)
                async for signum in signals:
                    print(f"stopped by {signal.Signals(signum).name}", flush=True)
                    break
                nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", help="a namespace made with `ip netns add` (default: a new one)")
    parser.add_argument("--port", type=int, default=8080, help="the port to serve on (8080)")
    args = parser.parse_args(argv)
    try:
        with namespace(args.netns) as netns:
            trio.run(serve, netns, args.port)
    except (SetupError, OSError) as err:
        print(f"http_server: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
