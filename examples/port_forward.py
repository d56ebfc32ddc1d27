"""A TCP port forwarder made of ksocket nodes: every connection to a listening ksocket is passed
on to a target address, both ways, until both ends have closed.

    ksocket "fwd_listen" (listening)
        accept -> clone (the client's connection) ------ ksocket (connected to the target)

For each connection:

1. ``accept`` on the listener: EWOULDBLOCK until a client comes; then the reply, sent by the clone
   (the new ksocket that owns the client's connection), names it;
2. a tee made on our own socket node, an outgoing ksocket on the tee's ``left``, and ``connect``
   sent to that (EINPROGRESS: a reply says later how the connect ended);
3. the clone linked to the tee's ``right``, and the tee shut down, which splices the clone and the
   outgoing ksocket together as it goes.

Why so: a ksocket reads as soon as it can (a clone once it has a hook, an outgoing one once it is
connected) and passes on at once what it read. The client's first bytes must find the outgoing
ksocket connecting already (one not yet told to connect refuses them, EPIPE, and they are lost),
so the connect comes before the link, and the outgoing ksocket cannot just be made on the clone
and connected after; the target's first bytes must find the clone linked. And a ksocket cannot be
made somewhere first and moved: it has one hook, and without it the node goes. Hence the tee.

In a graph of our own, the connect and the link are applied with nothing in between (neither send
waits), so no first bytes are lost either way. Through a graph daemon they are two requests:
bytes that the target sends the moment it accepts (a greeting) can reach the tee before the clone
does, and are lost.

A finished connection (both sockets closed, so ``getpeername`` says ENOTCONN) stays in the graph
until this program removes it, which it checks for every second (``--sweep``).

Two ways to run it:

    # a graph of its own: listen on 127.0.0.1:8080, forward to 127.0.0.1:8081
    .venv/bin/python examples/port_forward.py inet/127.0.0.1:8080 inet/127.0.0.1:8081

    # in a graph daemon, on the listener that examples/port_forward.ngctl made there
    .venv/bin/python -m netgraph serve --socket /tmp/ng.sock &
    .venv/bin/ngctl -s /tmp/ng.sock -f examples/port_forward.ngctl
    .venv/bin/python examples/port_forward.py -s /tmp/ng.sock fwd_listen: inet/127.0.0.1:8081

Addresses are ksocket's (``inet/1.2.3.4:80``, ``inet6/[::1]:80``, ``local/"/path"``).
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from netgraph import Message, NetgraphError, open_graph
from netgraph.remote import connect as connect_daemon
from nodes.ksocket import KSOCKET_COOKIE, NGM_KSOCKET_ACCEPT, NGM_KSOCKET_CONNECT

# The hook name, so the socket, for an address's family.
SOCKET_HOOKS = {"inet": "inet/stream/tcp", "inet6": "inet6/stream/tcp", "local": "local/stream/0"}
CONNECT_TIMEOUT = 10.0


def socket_hook(address: str) -> str:
    family = address.split("/", 1)[0]
    if family not in SOCKET_HOOKS:
        raise NetgraphError(errno.EAFNOSUPPORT, f"{address!r}: not inet/, inet6/ or local/")
    return SOCKET_HOOKS[family]


async def begin(sock: Any, path: str, msg: Message) -> bool:
    """Send ``msg``; True if it goes on after the send and a reply will say how it ended
    (accept: EWOULDBLOCK, connect: EINPROGRESS)."""
    try:
        await sock.send_msg(path, msg)
    except NetgraphError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EINPROGRESS):
            return True
        raise
    return False


async def reply_to(sock: Any, cmd: int, sender: str | None = None) -> tuple[str, Message]:
    """The next ksocket reply ``cmd`` (from ``sender`` if given: a connect that timed out may
    still answer later), and who sent it."""
    while True:
        came_from, msg = await sock.recv_msg()
        if not (msg.is_response and msg.typecookie == KSOCKET_COOKIE and msg.cmd == cmd):
            continue
        if sender is None or came_from == sender:
            return came_from, msg


async def quietly_shutdown(sock: Any, path: str) -> None:
    try:
        await sock.shutdown(path)
    except NetgraphError as err:
        if err.errno != errno.ENOENT:  # gone already
            raise


class Forwarder:
    """Accepts on ``listener`` and splices each connection to ``target``."""

    def __init__(self, sock: Any, listener: str, target: str) -> None:
        self.sock = sock  # a netgraph.Socket, or a netgraph.remote.RemoteSocket
        self.listener = listener
        self.target = target
        self.hook = socket_hook(target)
        self.count = 0
        self.live: list[tuple[str, str]] = []  # (clone, outgoing) paths, for the sweep

    async def serve(self) -> None:
        sock = self.sock
        # Converted once, by the listener (a ksocket too), so that sending them takes no turn.
        accept = await sock.to_binary(self.listener, "accept")
        connect = await sock.to_binary(self.listener, f"connect {self.target}")
        while True:
            try:
                await begin(sock, self.listener, accept)
            except NetgraphError as err:
                if err.errno != errno.EALREADY:
                    raise
                raise NetgraphError(
                    err.errno, f"{self.listener} has an accept armed by someone gone (an earlier "
                    "forwarder?); its next connection goes to them: try again after it",
                ) from None  # fmt: skip
            clone, _ = await reply_to(sock, NGM_KSOCKET_ACCEPT)
            self.count += 1
            await self.splice(clone, connect)

    async def splice(self, clone: str, connect: Message) -> None:
        sock, n = self.sock, self.count
        _, peer = await sock.request_ascii(clone, "getpeername")
        hook = f"c{n}"
        await sock.mkpeer(".", "tee", hook, "right2left")
        tee = f"[{(await sock.nodeinfo(hook)).id:x}]:"
        try:
            await sock.mkpeer(hook, "ksocket", "left", self.hook)
            outgoing = f"[{(await sock.nodeinfo(f'{hook}.left')).id:x}]:"
            await sock.rmhook(".", hook)  # the tee stays: its left hook holds it
            # The connect first: the clone's data may then go to the outgoing ksocket at once
            # (it waits there until the connect is done). Then the clone, before the outgoing
            # ksocket has read anything: in our own graph nothing between these two sends waits,
            # so no other task runs in between. Through a daemon they are two round trips.
            pending = await begin(sock, outgoing, connect)
            await sock.connect(tee, clone, "right", "client")
            await sock.shutdown(tee)  # the tee splices its two peers together as it goes
            code = 0
            if pending:
                code = errno.ETIMEDOUT
                with trio.move_on_after(CONNECT_TIMEOUT):
                    _, reply = await reply_to(sock, NGM_KSOCKET_CONNECT, outgoing)
                    code = int(await sock.to_ascii(outgoing, reply))
            if code:
                raise NetgraphError(code, f"connect {self.target}")
        except NetgraphError as err:
            print(f"connection {n} from {peer}: {err.strerror} ({err.detail})", flush=True)
            await quietly_shutdown(sock, clone)  # the client sees its connection close
            await quietly_shutdown(sock, tee)  # the outgoing ksocket goes with its hook
            return
        print(f"connection {n}: {peer} -> {self.target}", flush=True)
        self.live.append((clone, outgoing))

    async def closed(self, path: str) -> bool:
        try:
            await self.sock.request_ascii(path, "getpeername")
        except NetgraphError as err:
            if err.errno in (errno.ENOTCONN, errno.ENOENT):
                return True
            raise
        return False

    async def sweep(self, interval: float) -> None:
        """Every ``interval`` seconds, remove the connections whose two sockets have closed."""
        while True:
            await trio.sleep(interval)
            for pair in list(self.live):
                if await self.closed(pair[0]) and await self.closed(pair[1]):
                    self.live.remove(pair)
                    for path in pair:
                        await quietly_shutdown(self.sock, path)


@asynccontextmanager
async def socket_node(daemon: str | None) -> AsyncIterator[Any]:
    """Our socket node: in a graph daemon, or in a graph of our own."""
    if daemon is not None:
        async with connect_daemon(daemon, "") as remote:
            yield remote
        return
    async with open_graph() as graph:
        yield graph.socket("port_forward")


async def main(args: argparse.Namespace) -> None:
    async with socket_node(args.socket) as sock:
        listener = args.listen
        if args.socket is None:  # our own graph: make the listener, as port_forward.ngctl does
            await sock.mkpeer(".", "ksocket", "listen", socket_hook(args.listen))
            await sock.send_ascii(
                "listen", "setopt { level=SOL_SOCKET name=SO_REUSEADDR value=[ 1 ] }"
            )
            await sock.send_ascii("listen", f"bind {args.listen}")
            await sock.send_ascii("listen", "listen 64")
            listener = "listen"
        _, name = await sock.request_ascii(listener, "getname")
        print(f"forwarding {name} to {args.target}", flush=True)
        forwarder = Forwarder(sock, listener, args.target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarder.sweep, args.sweep)
            await forwarder.serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--socket", metavar="SOCKET", help="attach to this graph daemon")
    parser.add_argument(
        "listen", metavar="LISTEN",
        help="the address to listen on; with -s, the path of a listening ksocket (fwd_listen:)",
    )  # fmt: skip
    parser.add_argument("target", metavar="TARGET", help="where connections go on to")
    parser.add_argument("--sweep", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    failed: list[NetgraphError] = []
    try:
        trio.run(main, args)
    except* NetgraphError as group:  # out of the nursery: in a group
        failed = [err for err in group.exceptions if isinstance(err, NetgraphError)]
    except* KeyboardInterrupt:
        pass
    if failed:
        sys.exit(f"port_forward: {failed[0].strerror}: {failed[0].detail}")
