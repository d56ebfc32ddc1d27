"""A client of the graph daemon, with the embedding API of :class:`netgraph.Socket`.

::

    async with netgraph.remote.connect("/run/netgraph.sock", "app") as sock:
        await sock.mkpeer(".", "hub", "a", "link0")
        print(await sock.listnodes())

:func:`connect` says HELLO and gets its own socket node in the daemon's graph; the
:class:`RemoteSocket` it yields has :class:`netgraph.Socket`'s methods, and each call's outcome
(the daemon's RESULT) is returned or raised by that call: a :class:`netgraph.NetgraphError` with
the errno, or a :class:`netgraph.ParseError` with the text, line and column.

Messages travel in their binary form (spec 10.2). The client only knows the generic cmdlist: the
arguments of generic messages and replies are typed values (``NodeInfo``, ``NameList``...),
others stay as raw bytes in ``Message.args``. To send a node type's own message with typed
arguments, send it as text (``send_ascii``, converted by the node it goes to) or as raw bytes;
``to_ascii`` has the sender of a message convert it (BINARY2ASCII), as libnetgraph does.

Differences from the in-process socket: data items arrive as ``bytes`` (tags do not cross the
connection), and unsolicited messages beyond :data:`MSG_LIMIT` not yet taken with ``recv_msg``
are dropped (logged and counted in ``dropped_msgs``), where the in-process socket node gives
their sender ENOBUFS. When the connection ends (``close``, the daemon drops the client or goes),
what was already received can still be taken; then every call raises ENOTCONN.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import attrs
import trio

from . import wire
from .errors import NetgraphError
from .item import Item
from .message import (
    Message,
)
from .node import Node
from .owner import Owner
from .path import format_id
from .peercred import check_peer, peer_credentials

__all__ = ["MSG_LIMIT", "RemoteSocket", "connect"]

log = logging.getLogger("netgraph")

# Unsolicited messages held for recv_msg (the socket node's own limit).
MSG_LIMIT: Final = 256
# Items taken by recv_data before they are given back to the daemon as CREDIT.
CREDIT_BATCH: Final = wire.DATA_WINDOW // 4
READ_SIZE: Final = 65536


class _Call:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: NetgraphError | None = None


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Message | None = None


class _Dropped(Exception):
    def __init__(self, err: NetgraphError) -> None:
        super().__init__(err)
        self.err = err


def _copy(err: NetgraphError) -> NetgraphError:
    """A fresh exception for each task that raises it (one object raised twice gets confused
    tracebacks)."""
    return NetgraphError(err.errno or errno.ENOTCONN, err.detail)


class RemoteSocket(Owner):
    """A socket node in a graph daemon, driven over its control socket. Made by :func:`connect`."""

    def __init__(
        self,
        stream: trio.SocketStream,
        frames: wire.FrameReader,
        early: list[tuple[int, bytes]],
        node_id: int,
        name: str,
        socket_path: str,
    ) -> None:
        self.socket_path = socket_path
        self.dropped_msgs = 0
        self._stream = stream
        self._frames = frames
        self._early = early
        self._id = node_id
        self._name = name or None
        self._out_send, self._out_recv = trio.open_memory_channel[bytes](math.inf)
        self._calls: dict[int, _Call] = {}
        self._next_call = 1
        self._waiters: dict[int, _Waiter] = {}
        self._next_token = 1
        self._data: deque[tuple[str, bytes]] = deque()
        self._data_ready = trio.Event()
        self._msgs: deque[tuple[str, Message]] = deque()
        self._msg_ready = trio.Event()
        self._consumed = 0
        self._error: NetgraphError | None = None
        self._scope = trio.CancelScope()

    # ------------------------------------------------------------------------ identity

    @property
    def id(self) -> int:
        return self._id

    @property
    def name(self) -> str | None:
        """The node's name as the client knows it: from WELCOME, and ``name_node(".", ...)``."""
        return self._name

    @property
    def path(self) -> str:
        return f"{self._name}:" if self._name else format_id(self._id)

    def sockname(self) -> str:
        return self._name or format_id(self._id)[:-1]

    def _alive(self) -> None:
        if self._error is not None:
            raise NetgraphError(
                errno.ENOTCONN, f"not connected to the graph daemon ({self._error})"
            )

    # ---------------------------------------------------------------------- messages

    def new_token(self) -> int:
        token = self._next_token
        self._next_token = token + 1 if token < 0x7FFFFFFF else 1
        return token

    async def send_msg(self, path: str, msg: Message) -> int:
        """Send ``msg`` to ``path``; return its token once it has been applied there."""
        self._alive()
        if msg.token == 0:
            msg = attrs.evolve(msg, token=self.new_token())
        try:
            data = wire.encode_message(Node, msg)
        except NetgraphError as err:
            raise NetgraphError(
                err.errno or errno.EINVAL,
                f"cannot encode the arguments of {msg.cmdstr or msg.cmd!r} ({err.detail}): this "
                "client types only generic messages; give bytes, or send it with send_ascii",
            ) from None
        await self._call(lambda request: wire.pack_msg(request, path, data))
        return msg.token

    async def request(
        self,
        path: str,
        cookie: int,
        cmd: int,
        args: Any = None,
        *,
        cmdstr: str = "",
    ) -> Message:
        """Send a message and wait for its reply, matched by token (bound the wait with
        ``trio.fail_after`` where no reply may come)."""
        self._alive()
        token = self.new_token()
        waiter = _Waiter()
        self._waiters[token] = waiter
        try:
            await self.send_msg(path, Message(cookie, cmd, args, cmdstr or f"cmd{cmd}", 0, token))
            await waiter.event.wait()
        finally:
            self._waiters.pop(token, None)
        if waiter.reply is None:
            self._alive()
            raise NetgraphError(errno.ENOTCONN, "no reply")  # pragma: no cover
        return waiter.reply

    async def recv_msg(self) -> tuple[str, Message]:
        """The next message that was not a matched reply, with its sender's ``[id]:`` path."""
        while not self._msgs:
            self._alive()
            if self._msg_ready.is_set():
                self._msg_ready = trio.Event()
            await self._msg_ready.wait()
        return self._msgs.popleft()

    # -------------------------------------------------------------------------- data

    async def send_data(self, hook: str | None, item: Item) -> None:
        """Send one item out of ``hook`` and see its chain through (errors raise here)."""
        self._alive()
        payload = bytes(item)
        await self._call(lambda request: wire.pack_data(request, hook or "", payload))

    async def send_batch(self, hook: str | None, items: Sequence[Item]) -> None:
        """Send several items as one batch."""
        self._alive()
        payloads = [bytes(item) for item in items]
        await self._call(lambda request: wire.pack_batch(request, hook or "", payloads))

    async def recv_data(self) -> tuple[str, bytes]:
        """The next item that arrived on any hook, with the hook's name."""
        while not self._data:
            self._alive()
            if self._data_ready.is_set():
                self._data_ready = trio.Event()
            await self._data_ready.wait()
        entry = self._data.popleft()
        self._consumed += 1
        if self._consumed >= CREDIT_BATCH and self._error is None:
            self._out_send.send_nowait(wire.pack_credit(self._consumed))
            self._consumed = 0
        return entry

    def pending_data(self) -> int:
        """Items received and not yet taken."""
        return len(self._data)

    # ------------------------------------------------------------ generic operations

    async def name_node(self, path: str, name: str) -> None:
        await super().name_node(path, name)
        if path in (".", self.path, format_id(self._id)):
            self._name = name

    async def close(self) -> None:
        """Close the connection; the daemon shuts the socket node down (its hooks go with it)."""
        self._lost(NetgraphError(errno.ENOTCONN, "the connection was closed"))
        self._scope.cancel()
        await trio.aclose_forcefully(self._stream)

    # ------------------------------------------------------------------- the connection

    async def _call(self, make_frame: Callable[[int], bytes]) -> None:
        """Send a request frame and wait for its RESULT; raise the error it carries."""
        self._alive()
        request = self._next_call
        self._next_call = (request + 1) & 0xFFFFFFFF
        frame = make_frame(request)
        call = self._calls[request] = _Call()
        try:
            self._out_send.send_nowait(frame)
            await call.done.wait()
        finally:
            self._calls.pop(request, None)
        if call.error is not None:
            raise call.error

    def _lost(self, err: NetgraphError) -> None:
        """The connection is over: fail what waits on it, once."""
        if self._error is not None:
            return
        self._error = err
        for call in self._calls.values():
            call.error = _copy(err)
            call.done.set()
        for waiter in self._waiters.values():
            waiter.event.set()
        self._data_ready.set()
        self._msg_ready.set()
        self._out_send.close()

    async def _run(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                await self._read_loop()
                nursery.cancel_scope.cancel()

    async def _write_loop(self) -> None:
        broken = False
        async with self._out_recv:
            async for frame in self._out_recv:
                if broken:
                    continue
                try:
                    await self._stream.send_all(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The reader learns why (ERROR, or the end of the stream).
                    broken = True

    async def _read_loop(self) -> None:
        err: NetgraphError
        try:
            frames = self._early
            while True:
                while frames:
                    for kind, body in frames:
                        self._dispatch(kind, body)
                    frames = self._frames.feed(b"")
                data = await self._stream.receive_some(READ_SIZE)
                if not data:
                    err = NetgraphError(errno.ENOTCONN, "the graph daemon closed the connection")
                    break
                frames = self._frames.feed(data)
        except _Dropped as dropped:
            err = dropped.err
        except NetgraphError as bad:
            err = NetgraphError(bad.errno or errno.EPROTO, f"bad frame from the daemon: {bad}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            err = NetgraphError(errno.ENOTCONN, "the connection to the graph daemon broke")
        self._lost(err)

    def _dispatch(self, kind: int, body: bytes) -> None:
        if kind == wire.RESULT:
            request, error = wire.unpack_result(body)
            call = self._calls.get(request)
            if call is not None:
                call.error = error
                call.done.set()
        elif kind == wire.MSG_IN:
            sender, data = wire.unpack_msg_in(body)
            msg = _decode(sender, data)
            if msg is None:
                return
            if msg.is_response:
                waiter = self._waiters.pop(msg.token, None)
                if waiter is not None:
                    waiter.reply = msg
                    waiter.event.set()
                    return
            if len(self._msgs) >= MSG_LIMIT:
                self.dropped_msgs += 1
                log.warning("message %r from %s dropped: %d not taken", msg.cmdstr, sender,
                            MSG_LIMIT)  # fmt: skip
                return
            self._msgs.append((sender, msg))
            self._msg_ready.set()
        elif kind == wire.DATA_IN:
            self._data.append(wire.unpack_data_in(body))
            self._data_ready.set()
        elif kind == wire.ERROR:
            raise _Dropped(wire.unpack_error(body))
        else:
            raise NetgraphError(errno.EPROTO, f"unexpected frame type 0x{kind:02x}")


def _decode(sender: str, data: bytes) -> Message | None:
    """A message from the daemon: generic arguments typed, others raw."""
    try:
        return wire.decode_message(Node, data)
    except NetgraphError:
        pass
    try:
        return wire.decode_message(None, data)
    except NetgraphError as err:
        log.warning("undecodable message from %s dropped: %s", sender, err)
        return None


async def _handshake(stream: trio.SocketStream, path: str, name: str) -> RemoteSocket:
    frames = wire.FrameReader()
    # The daemon may have refused us already: its ERROR is there to read.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(wire.pack_hello(name))
    got: list[tuple[int, bytes]] = []
    while not got:
        try:
            data = await stream.receive_some(READ_SIZE)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            raise NetgraphError(errno.ECONNRESET, f"the graph daemon at {path} hung up")
        got = frames.feed(data)
    kind, body = got[0]
    if kind == wire.ERROR:
        raise wire.unpack_error(body)
    if kind != wire.WELCOME:
        raise NetgraphError(errno.EPROTO, f"expected WELCOME, got frame type 0x{kind:02x}")
    version, node_id, node_name = wire.unpack_welcome(body)
    if version != wire.VERSION:
        raise NetgraphError(errno.EPROTONOSUPPORT, f"the daemon speaks version {version}")
    return RemoteSocket(stream, frames, got[1:], node_id, node_name, path)


@contextlib.asynccontextmanager
async def connect(
    socket_path: str | os.PathLike[str], name: str | None = ""
) -> AsyncIterator[RemoteSocket]:
    """Connect to the graph daemon at ``socket_path`` and get a socket node named ``name``
    (unnamed if empty); leaving the block closes the connection and the daemon removes the node.

    Errors: the daemon's (EPERM for another uid, EADDRINUSE for a name in use, EINVAL for a bad
    name) as :class:`netgraph.NetgraphError`, and the connect's own (ENOENT, ECONNREFUSED; EPERM
    when the daemon does not run as our uid).
    """
    path = os.fspath(socket_path)
    try:
        stream = await trio.open_unix_socket(path)
    except OSError as exc:
        raise NetgraphError(
            exc.errno or errno.ECONNREFUSED,
            f"cannot connect to the graph daemon at {path}: {exc.strerror or exc}",
        ) from None
    try:
        # Both ways: the daemon lets in only its own uid, and we talk only to a daemon of ours
        # (not to whoever made a socket file where we looked).
        check_peer(peer_credentials(stream.socket), os.geteuid(), "the graph daemon")
        remote = await _handshake(stream, path, name or "")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(remote._run)
        try:
            yield remote
        except BaseException as exc:
            # The caller's own exception: re-raised as it is, not inside an ExceptionGroup.
            body_error = exc
        finally:
            await remote.close()
    if body_error is not None:
        raise body_error
