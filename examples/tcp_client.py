"""An HTTP/1.1 client (h11) on the user-space TCP/IP stack, fetching from a kernel server.

A trio program that places its call through the tcp node (``open_tcp_stream`` gives a
:class:`~nodes.tcp.stream.TcpStream`, a trio ``HalfCloseableStream``) and speaks HTTP over it
with h11; the server is any kernel server in a network namespace, reached through the graph's
TUN interface (see ``examples/tun_host.py``: the kernel there is 192.0.2.1 and 2001:db8::1, this
program 192.0.2.2 and 2001:db8::2)::

    this client -- [tcp0] -- [ip0] -- [iface] -- ng0 (TUN) -- server (kernel, namespace NS)

Run as root, with a server in a namespace of your own (it listens on every address, so it may
start before the interface arrives)::

    ip netns add demo
    ip netns exec demo python3 -m http.server --bind :: 8000 &
    sudo .venv/bin/python examples/tcp_client.py --netns demo http://192.0.2.1:8000/
    sudo .venv/bin/python examples/tcp_client.py --netns demo http://[2001:db8::1]:8000/
    ip netns del demo      # when done (kill the server first)

The body goes to standard output, the status line and headers to standard error with ``-i``.
Exit status 0 when a response came (any status; 22 for 4xx/5xx with ``--fail``, as curl's),
1 when the call or the exchange failed (the reason is printed, no traceback). Without
``--netns`` the program makes a namespace of its own (no server in it: a call is refused, which
shows the reset path). Only the namespace is configured; only documentation addresses are used.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, Final
from urllib.parse import urlsplit

import h11
import trio
from tun_host import TCP_PATH, SetupError, build, namespace

import netgraph
from nodes.tcp.stream import TcpStream, open_tcp_stream

MAX_READ: Final = 65536
TIMEOUT: Final = 30.0  # seconds for the whole exchange


class FetchError(Exception):
    """The exchange failed in a way worth one line to the user."""


async def send(conn: h11.Connection, stream: TcpStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def next_event(conn: h11.Connection, stream: TcpStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(MAX_READ))


async def fetch(netns: str, url: str, out: BinaryIO, show_headers: bool) -> int:
    """GET ``url`` through the graph; the body goes to ``out`` as it comes (a blocking write:
    standard output, or a file). Returns the status code."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise FetchError(f"{url}: only http://HOST[:PORT]/PATH URLs")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    async with netgraph.open_graph() as graph:
        await build(graph, netns)
        with trio.fail_after(TIMEOUT):
            try:
                stream = await open_tcp_stream(graph, TCP_PATH, parts.hostname, port)
            except OSError as err:
                reason = os.strerror(err.errno) if err.errno else str(err)
                raise FetchError(f"connect to {parts.hostname} port {port}: {reason}") from err
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                host = parts.netloc
                request = h11.Request(
                    method="GET",
                    target=target.encode(),
                    headers=[("host", host), ("user-agent", "netgraph-py tcp_client")],
                )
                try:
                    await send(conn, stream, request)
                    await send(conn, stream, h11.EndOfMessage())
                    response = await next_event(conn, stream)
                    if not isinstance(response, h11.Response):
                        raise FetchError(f"no response, but {response!r}")
                    if show_headers:
                        reason = response.reason.decode("latin-1")
                        print(f"HTTP/{response.http_version.decode()} {response.status_code}"
                              f" {reason}", file=sys.stderr)  # fmt: skip
                        for name, value in response.headers:
                            print(f"{name.decode()}: {value.decode('latin-1')}", file=sys.stderr)
                    while True:
                        event = await next_event(conn, stream)
                        if isinstance(event, h11.Data):
                            out.write(event.data)
                        elif isinstance(event, h11.EndOfMessage):
                            break
                        else:
                            raise FetchError(f"unexpected {event!r} in the body")
                except (h11.ProtocolError, trio.BrokenResourceError) as err:
                    raise FetchError(f"{url}: {err}") from err
                return response.status_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="http://192.0.2.1:8000/ or http://[2001:db8::1]:8000/")
    parser.add_argument("--netns", help="the server's namespace (`ip netns add`; default: new)")
    parser.add_argument("-i", "--include", action="store_true", help="headers to stderr")
    parser.add_argument("-f", "--fail", action="store_true", help="exit 22 on a 4xx or 5xx")
    args = parser.parse_args(argv)
    try:
        with namespace(args.netns) as netns:
            status = trio.run(fetch, netns, args.url, sys.stdout.buffer, args.include)
        sys.stdout.flush()
    except (SetupError, FetchError, OSError, trio.TooSlowError) as err:
        print(f"tcp_client: {err or 'timed out'}", file=sys.stderr)
        return 1
    return 22 if args.fail and status >= 400 else 0


if __name__ == "__main__":
    sys.exit(main())
