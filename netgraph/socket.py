"""The socket node and the embedding API (spec 1.14).

A socket node is how code outside the graph takes part in it, as ``ng_socket`` is for FreeBSD's
user space: it has a name and an ID and hooks of any name; data arriving on its hooks and control
messages addressed to it (replies and unsolicited ones) wait in bounded inboxes for its owner.
:class:`Socket` is the owner's handle: ``send_data``/``recv_data`` by hook name,
``send_msg``/``recv_msg``/``request`` by path (relative to the socket node, so ``.`` is the socket
node itself), and the generic operations as methods.

A send of a control message returns when the message has been applied at its destination, and
raises the destination's error (the apply-callback behaviour of spec 1.14); a reply arrives later,
matched by token in :meth:`Socket.request` or delivered by :meth:`Socket.recv_msg`.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import trio

from . import delivery
from .errors import NetgraphError
from .item import Item
from .message import (
    NG_HOOKSIZ,
    NG_VERSION,
    Message,
)
from .node import Hook, Node
from .owner import Owner
from .path import format_id

__all__ = ["SOCKET_COOKIE", "Socket", "SocketNode"]

SOCKET_COOKIE: Final = 851601233
NGM_SOCK_CMD_NOLINGER: Final = 1
NGM_SOCK_CMD_LINGER: Final = 2


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Message | None = None


class SocketNode(Node):
    """The user-space edge: lingers without hooks unless told NOLINGER; accepts any hook name."""

    typecookie = SOCKET_COOKIE
    creatable = False
    dies_with_last_hook = False
    readers_block_writers = False
    recv_limit: ClassVar[int] = 256
    msg_limit: ClassVar[int] = 256

    def constructor(self) -> None:
        self.nolinger = False
        self.data_in: deque[tuple[str, Item]] = deque()
        self.msgs_in: deque[tuple[str, Message]] = deque()
        self.waiters: dict[int, _Waiter] = {}
        self.data_ready = trio.Event()
        self.data_room = trio.Event()
        self.msg_ready = trio.Event()
        self.next_token = 1

    def lingers(self) -> bool:
        return not self.nolinger

    async def rcvdata(self, hook: Hook, item: Item) -> None:
        await self._take(hook, (item,), delivery.origin())

    async def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        await self._take(hook, items, delivery.origin())

    async def _take(self, hook: Hook, items: Sequence[Item], origin: Node | None) -> None:
        for item in items:
            while len(self.data_in) >= self.recv_limit:
                if origin is self or not self._valid:
                    # Our own owner is the one sending: waiting would wait for ourselves.
                    self.stats.dropped += 1
                    raise NetgraphError(errno.ENOBUFS, f"receive queue of {self.path} is full")
                if self.data_room.is_set():
                    self.data_room = trio.Event()
                await self.data_room.wait()
            self.data_in.append((hook.name, item))
            self.data_ready.set()

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        if msg.typecookie == SOCKET_COOKIE and not msg.is_response:
            if msg.cmd == NGM_SOCK_CMD_NOLINGER:
                self.nolinger = True
                if not self.hooks:
                    self.rmnode_self()
                return None
            if msg.cmd == NGM_SOCK_CMD_LINGER:
                self.nolinger = False
                return None
            raise NetgraphError(errno.EINVAL, f"unknown socket node message {msg.cmd}")
        if msg.is_response:
            waiter = self.waiters.pop(msg.token, None)
            if waiter is not None:
                waiter.reply = msg
                waiter.event.set()
                return None
        if len(self.msgs_in) >= self.msg_limit:
            self.stats.dropped += 1
            raise NetgraphError(errno.ENOBUFS, f"message queue of {self.path} is full")
        self.msgs_in.append((format_id(retaddr), msg))
        self.msg_ready.set()
        return None

    def shutdown(self) -> None:
        # Wake every owner task waiting on us; they see the node is gone.
        self.data_ready.set()
        self.data_room.set()
        self.msg_ready.set()
        for waiter in self.waiters.values():
            waiter.event.set()
        self.waiters.clear()


class Socket(Owner):
    """The owner's handle on a socket node (libnetgraph's control and data sockets in one)."""

    def __init__(self, node: SocketNode) -> None:
        self.node = node

    def node_type(self, type_name: str) -> type[Node] | None:
        """The class of ``type_name`` in this socket's graph (plugins registered on it too)."""
        try:
            return self.node.graph.types.get(type_name)
        except NetgraphError:
            return None

    @property
    def id(self) -> int:
        return self.node.id

    @property
    def name(self) -> str | None:
        return self.node.name

    @property
    def path(self) -> str:
        return self.node.path

    def sockname(self) -> str:
        """``getsockname``: the node's name, or ``[id]`` when it has none (socket/getsockname)."""
        return self.node.name or format_id(self.node.id)[:-1]

    def _alive(self) -> SocketNode:
        if not self.node._valid:
            raise NetgraphError(errno.ENOTCONN, f"socket node {self.node.path} has shut down")
        return self.node

    # --------------------------------------------------------------------------- messages

    def new_token(self) -> int:
        node = self.node
        token = node.next_token
        node.next_token = token + 1 if token < 0x7FFFFFFF else 1
        return token

    async def send_msg(self, path: str, msg: Message) -> int:
        """Send ``msg`` to ``path``; return its token once it has been applied there."""
        node = self._alive()
        if msg.version != NG_VERSION:
            raise NetgraphError(errno.EINVAL, f"message version {msg.version} is not {NG_VERSION}")
        if msg.token == 0:
            msg = msg.__class__(
                msg.typecookie, msg.cmd, msg.args, msg.cmdstr, msg.flags, self.new_token()
            )
        target, lasthook = node.graph.resolve(node, path)
        await delivery.send_message_from_outside(node, target, msg, lasthook, node.id)
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
        """Send a message and wait for its reply, matched by token.

        Bound the wait with a trio cancel scope (``trio.fail_after``) where no reply may come.
        """
        node = self._alive()
        token = self.new_token()
        waiter = _Waiter()
        node.waiters[token] = waiter
        try:
            await self.send_msg(path, Message(cookie, cmd, args, cmdstr or f"cmd{cmd}", 0, token))
            await waiter.event.wait()
        finally:
            node.waiters.pop(token, None)
        if waiter.reply is None:
            raise NetgraphError(errno.ENOTCONN, f"socket node {node.path} shut down")
        return waiter.reply

    async def recv_msg(self) -> tuple[str, Message]:
        """The next message that was not a matched reply, with its sender's ``[id]:`` path."""
        node = self.node
        while not node.msgs_in:
            self._alive()
            # Several tasks may wait: the event is replaced only once it has fired.
            if node.msg_ready.is_set():
                node.msg_ready = trio.Event()
            await node.msg_ready.wait()
        return node.msgs_in.popleft()

    # ------------------------------------------------------------------------------- data

    def _hook(self, hook: str | None) -> Hook:
        node = self._alive()
        if not hook:
            if len(node.hooks) == 1:
                return next(iter(node.hooks.values()))
            raise NetgraphError(errno.EDESTADDRREQ, "no hook named and not exactly one hook")
        if len(hook.encode()) >= NG_HOOKSIZ:
            raise NetgraphError(errno.EINVAL, f"hook name {hook!r} is too long")
        found = node.hooks.get(hook)
        if found is None:
            raise NetgraphError(errno.EHOSTUNREACH, f"no hook {hook!r} on {node.path}")
        return found

    async def send_data(self, hook: str | None, item: Item) -> None:
        """Send one item out of ``hook`` and see its chain through (errors raise here)."""
        await self.node.emit(self._hook(hook), item)

    async def send_batch(self, hook: str | None, items: Sequence[Item]) -> None:
        """Send several items as one batch."""
        await self.node.emit_batch(self._hook(hook), items)

    async def recv_data(self) -> tuple[str, Item]:
        """The next item that arrived on any hook, with the hook's name."""
        node = self.node
        while not node.data_in:
            self._alive()
            if node.data_ready.is_set():
                node.data_ready = trio.Event()
            await node.data_ready.wait()
        entry = node.data_in.popleft()
        node.data_room.set()
        return entry

    def pending_data(self) -> int:
        return len(self.node.data_in)

    # ------------------------------------------------------------------ generic operations

    async def close(self) -> None:
        """Shut the socket node down (its hooks go with it)."""
        node = self.node
        if node._valid:
            node.graph.rmnode(node, really=True)
