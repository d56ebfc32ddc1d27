"""The tcp node's channels as trio streams: :class:`TcpStream` and :class:`TcpListener`.

So that trio code (h11, trio-websocket, ``trio.serve_listeners``) runs over the user-space TCP
unchanged. Each stream owns **one socket node** with one hook, linked to its channel on the tcp
node: the socket node's inbox then holds that stream's data only, so no demultiplexer task is
needed and one slow stream never holds up another; its message inbox gets the stream's ``hup``
(unused: the end and a reset arrive in-band). A listener owns one socket node too, whose
message inbox receives the ``newcall`` notifications; ``accept`` makes a socket node per call
and links it to the call's channel. In-process graphs only (a ``RemoteSocket`` through the graph
daemon is not supported).

How the stream maps onto the channel:

* ``send_all`` sends the bytes down the hook; the tcp node holds it while its send buffer is
  full (backpressure). ``b""`` is not sent (a zero-length item would be a half-close).
* ``receive_some`` returns what came up the hook, cut to ``max_bytes``; a zero-length item is
  the end of the stream (``b""`` from then on); one tagged ``error`` (a reset or a timeout)
  raises :class:`trio.BrokenResourceError`, as does any send after it.
* ``send_eof`` sends a zero-length item: a FIN after the queued data.
* ``aclose`` makes a round trip to the tcp node (so that nothing sent is still queued there),
  then shuts the stream's socket node down: its hook goes, which closes the connection (FIN; a
  RST if received data was left unread, RFC 1122 4.2.2.13: in the core, or delivered into the
  socket node's inbox and not taken, which the tcp node checks when the hook goes). Bytes
  ``receive_some`` took from the inbox and has not returned yet are only the stream's to know:
  with those, ``aclose`` sends ``reset`` instead of the round trip. Cancelled, it skips the
  round trip (and the reset).
* The receive side is bounded in bytes: the tcp node reads from its core only while this
  stream's share of the socket node's inbox is below one receive buffer (``rcvbuf``), so a
  stream that is not read closes the window after about two receive buffers (see the tcp
  node's "Backpressure, receiving side").
* ``wait_send_all_might_not_block`` returns at once (after a checkpoint): the channel's buffer
  state lives in the tcp node, and trio allows an early return.
"""

from __future__ import annotations

import contextlib
import errno
import operator
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

import trio

from netgraph import Message, NetgraphError, Socket, tags_of
from netgraph.graph import Graph

from .messages import (
    NGM_TCP_CONNECT,
    NGM_TCP_LISTEN,
    NGM_TCP_NEWCALL,
    NGM_TCP_RESET,
    SO_KEEPALIVE,
    TCP_COOKIE,
    TCPC_OK,
    TcpUser,
)
from .node import ERROR_TAG

__all__ = [
    "TcpCallError",
    "TcpListener",
    "TcpStream",
    "open_tcp_listener",
    "open_tcp_stream",
]

HOOK: Final = "tcp"  # the socket node's own hook
Address = IPv4Address | IPv6Address


class TcpCallError(OSError):
    """A call that was not set up: ``code`` is the TCPC_* code, ``errno`` the reason."""

    def __init__(self, code: int, err: int, detail: str) -> None:
        super().__init__(err or errno.ECONNREFUSED, detail)
        self.code = code


class TcpStream(trio.abc.HalfCloseableStream):
    """One connection of a tcp node, through a socket node's hook linked to its channel."""

    def __init__(
        self,
        socket: Socket,
        hook: str = HOOK,
        info: TcpUser | None = None,
        tcp_path: str | None = None,
    ) -> None:
        self.socket = socket
        self.hook = hook
        self.info = info  # the connect or newcall answer: addresses and channel
        self.tcp_path = tcp_path  # the tcp node, absolute ("[id]:"), for aclose's round trip
        self._pending = memoryview(b"")
        self._eof = False
        self._broken: BaseException | None = None
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False

    @property
    def channel(self) -> str:
        return self.info.channel if self.info is not None else ""

    @property
    def local(self) -> tuple[Address | None, int]:
        return (self.info.laddr, self.info.lport) if self.info is not None else (None, 0)

    @property
    def remote(self) -> tuple[Address | None, int]:
        return (self.info.faddr, self.info.fport) if self.info is not None else (None, 0)

    def _gone(self, err: BaseException) -> BaseException:
        if self._closed:
            return trio.ClosedResourceError("the stream was closed")
        self._broken = err
        return trio.BrokenResourceError(f"the connection is gone: {err}")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed or self._eof_sent:
                raise trio.ClosedResourceError("the stream is closed for sending")
            if self._broken is not None:
                raise trio.BrokenResourceError("the connection is gone") from self._broken
            if data:
                try:
                    await self.socket.send_data(self.hook, data)
                except NetgraphError as err:
                    raise self._gone(err) from err
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if not self._eof_sent:
                self._eof_sent = True
                if self._broken is None:
                    try:
                        await self.socket.send_data(self.hook, b"")
                    except NetgraphError as err:
                        raise self._gone(err) from err
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if not self._pending and not self._eof:
                await self._fill()
            view = self._pending
            if not view:
                data = b""
            elif max_bytes is None or max_bytes >= len(view):
                data = bytes(view)
                self._pending = memoryview(b"")
            else:
                data = bytes(view[:max_bytes])
                self._pending = view[max_bytes:]
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def _fill(self) -> None:
        if self._broken is not None:
            raise trio.BrokenResourceError("the connection is gone") from self._broken
        while True:
            try:
                hook, item = await self.socket.recv_data()
            except NetgraphError as err:
                raise self._gone(err) from err
            if hook == self.hook:
                break
        if item:
            self._pending = memoryview(item)
            return
        code = tags_of(item).get(ERROR_TAG)
        if code:
            reset = ConnectionResetError(code, "connection reset")
            self._broken = reset
            raise trio.BrokenResourceError(f"the connection was reset: {reset}")
        self._eof = True

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._pending and self.tcp_path is not None:
                # Bytes taken from the socket node and never returned: thrown away, so the
                # peer hears a reset (RFC 1122 4.2.2.13). What is still in the socket node's
                # inbox or in the core, the tcp node sees itself when the hook goes.
                self._pending = memoryview(b"")
                with contextlib.suppress(NetgraphError):
                    reset = Message(TCP_COOKIE, NGM_TCP_RESET, self.channel, "reset")
                    await self.socket.send_msg(self.tcp_path, reset)
            elif self.tcp_path is not None:
                # A round trip to the tcp node first: an item sent may wait in its queue (the
                # engine queues at a busy node), and removing the hook would drop it there.
                # Messages queue behind items, so once this one is through, they all are.
                # Cancelled (aclose_forcefully), the stream closes at once all the same.
                with contextlib.suppress(NetgraphError):
                    await self.socket.nodeinfo(self.tcp_path)
        finally:
            await close_socket(self.socket)
        await trio.lowlevel.checkpoint()


async def close_socket(sock: Socket) -> None:
    """Shut a socket node down; it happens at once, even in a cancelled scope."""
    await sock.close()  # no await inside that can be cancelled before the node is gone


class TcpListener(trio.abc.Listener[TcpStream]):
    """A listening channel; ``accept`` links each new call to a socket node of its own."""

    def __init__(self, socket: Socket, tcp_path: str, info: TcpUser) -> None:
        self.socket = socket
        self.tcp_path = tcp_path  # absolute: [id]:
        self.info = info
        self._closed = False
        self._accepting = False

    @property
    def port(self) -> int:
        return self.info.lport

    async def accept(self) -> TcpStream:
        if self._accepting:
            raise trio.BusyResourceError("another task is accepting")
        self._accepting = True
        try:
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the listener was closed")
                try:
                    _, msg = await self.socket.recv_msg()
                except NetgraphError as err:
                    raise trio.ClosedResourceError("the listener was closed") from err
                if msg.typecookie != TCP_COOKIE or msg.cmd != NGM_TCP_NEWCALL:
                    continue
                call: TcpUser = msg.args
                sock = self.socket.node.graph.socket()
                try:
                    await sock.connect(".", self.tcp_path, HOOK, call.channel)
                except NetgraphError:
                    await close_socket(sock)  # the call went away before we took it
                    continue
                except BaseException:
                    await close_socket(sock)
                    raise
                return TcpStream(sock, HOOK, call, self.tcp_path)
        finally:
            self._accepting = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await close_socket(self.socket)
        await trio.lowlevel.checkpoint()


async def _socket_at(where: Graph | Socket, tcp_path: str) -> tuple[Socket, str]:
    """A new socket node, and the tcp node's absolute path (resolved from ``where``)."""
    if isinstance(where, Socket):
        info = await where.nodeinfo(tcp_path)
        graph = where.node.graph
    else:
        graph = where
        info = None
    sock = graph.socket()
    try:
        if info is None:
            info = await sock.nodeinfo(tcp_path)
        if info.type != "tcp":
            raise NetgraphError(errno.EINVAL, f"{tcp_path} is a {info.type} node, not tcp")
    except BaseException:
        await close_socket(sock)
        raise
    return sock, f"[{info.id:x}]:"


async def open_tcp_stream(
    where: Graph | Socket,
    tcp_path: str,
    faddr: str | Address,
    fport: int,
    *,
    laddr: str | Address | None = None,
    lport: int = 0,
    keepalive: bool = False,
) -> TcpStream:
    """Place a call through the tcp node at ``tcp_path`` and return its stream once set up.

    ``where`` is the graph, or a socket node from which ``tcp_path`` is resolved. Raises
    :class:`TcpCallError` (an OSError) when the call fails: refused, no route, bad local
    address, port in use...
    """
    sock, tcp = await _socket_at(where, tcp_path)
    try:
        channel = f"s{sock.id:x}"
        await sock.connect(".", tcp, HOOK, channel)
        args = TcpUser(
            channel=channel,
            faddr=ip_address(faddr),
            fport=fport,
            laddr=None if laddr is None else ip_address(laddr),
            lport=lport,
            param=SO_KEEPALIVE if keepalive else 0,
        )
        reply = await sock.request(tcp, TCP_COOKIE, NGM_TCP_CONNECT, args, cmdstr="connect")
        answer: TcpUser = reply.args
        if answer.code != TCPC_OK:
            raise TcpCallError(
                answer.code, answer.param, f"call to {faddr} port {fport}: code {answer.code}"
            )
    except BaseException:
        await close_socket(sock)
        raise
    return TcpStream(sock, HOOK, answer, tcp)


async def open_tcp_listener(
    where: Graph | Socket,
    tcp_path: str,
    lport: int = 0,
    *,
    laddr: str | Address | None = None,
    backlog: int = 0,
) -> TcpListener:
    """Listen on ``lport`` (0: the tcp node picks; see ``listener.port``) of ``laddr`` (None:
    every address of the ip node)."""
    sock, tcp = await _socket_at(where, tcp_path)
    try:
        channel = f"l{sock.id:x}"
        await sock.connect(".", tcp, "listen", channel)
        args = TcpUser(
            channel=channel,
            laddr=None if laddr is None else ip_address(laddr),
            lport=lport,
            param=backlog,
        )
        reply = await sock.request(tcp, TCP_COOKIE, NGM_TCP_LISTEN, args, cmdstr="listen")
        answer: TcpUser = reply.args
        if answer.code != TCPC_OK:
            raise TcpCallError(
                answer.code, answer.param, f"listen on port {lport}: code {answer.code}"
            )
    except BaseException:
        await close_socket(sock)
        raise
    return TcpListener(sock, tcp, answer)
