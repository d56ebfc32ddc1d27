"""Nodes and hooks: the base class every node type derives from.

A node type is a subclass of :class:`Node` with a ``type_name`` and a ``typecookie``, registered by
name through the ``netgraph.node_types`` entry-point group. It overrides the methods FreeBSD's
``struct ng_type`` names (``constructor``, ``newhook``, ``connect``, ``rcvdata``, ``rcvmsg``,
``disconnect``, ``close``, ``shutdown``) and uses the engine's verbs (``send``, ``send_batch``,
``emit``, ``send_msg``, ``respond``, ``rmhook_self``, ``rmnode_self``, ``start_task``).

``rcvdata``/``rcvbatch`` are plain functions for nodes that only compute and forward, or
coroutine functions for nodes that wait on I/O; see :mod:`netgraph.delivery` for what each
means. Inside handlers ``send`` delivers synchronously; from a node's own tasks use ``emit``.
"""

from __future__ import annotations

import errno
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import trio

from . import delivery
from .errors import NetgraphError
from .item import Item
from .message import GENERIC_COOKIE, NG_TEXTRESPONSE, NGM_TEXT_STATUS, Cmd, Message
from .path import format_id

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["Hook", "Node", "NodeStats"]


class Hook:
    """One end of a link. ``peer`` is the other end, on the peer node, or ``None`` once gone."""

    __slots__ = ("name", "node", "peer", "private")

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name
        self.peer: Hook | None = None
        self.private: Any = None

    def __repr__(self) -> str:
        peer = f"{self.peer.node.path}{self.peer.name}" if self.peer is not None else "-"
        return f"<Hook {self.node.path}{self.name} <-> {peer}>"


@attrs.define
class NodeStats:
    """What the engine counts per node: items dropped with an error, and handler failures."""

    dropped: int = 0
    errors: int = 0


class Node:
    """A node in a graph. Subclasses are node types."""

    type_name: ClassVar[str] = ""
    typecookie: ClassVar[int] = 0
    cmdlist: ClassVar[tuple[Cmd, ...]] = ()
    # False for types like the socket node that only the engine creates (mkpeer gives EINVAL).
    creatable: ClassVar[bool] = True
    # Most types shut down when their last hook goes (spec 1.11); hub makes this switchable.
    dies_with_last_hook: ClassVar[bool] = True
    queue_limit: ClassVar[int] = 4096
    # Whether a control message waits for items suspended in this type's coroutine handlers
    # (the gate of spec 1.12). The socket node, whose handler only waits for its owner to read,
    # lets its owner's messages through instead of deadlocking it.
    readers_block_writers: ClassVar[bool] = True
    # Coroutine handlers run in a cancel scope of the node so that shutdown releases their
    # senders. A type whose handlers wait only on the node's own file descriptors, which its
    # shutdown closes (waking them with an error), can say so and save that cost per item.
    handlers_woken_by_close: ClassVar[bool] = False
    # Set for each subclass: whether rcvdata/rcvbatch are coroutine functions.
    _async_rcv: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        data_async = inspect.iscoroutinefunction(cls.rcvdata)
        batch_async = inspect.iscoroutinefunction(cls.rcvbatch)
        own_data = cls.rcvdata is not Node.rcvdata
        own_batch = cls.rcvbatch is not Node.rcvbatch
        if own_data and not own_batch and data_async:
            cls.rcvbatch = Node._rcvbatch_async  # type: ignore[method-assign]
            batch_async = True
        elif own_batch and not own_data:
            cls.rcvdata = Node._rcvdata_async if batch_async else Node._rcvdata_one  # type: ignore[method-assign]
            data_async = batch_async
        if data_async != batch_async:
            raise TypeError(f"{cls.__name__}: rcvdata and rcvbatch must both be async or neither")
        cls._async_rcv = data_async

    def __init__(self, graph: Graph, node_id: int) -> None:
        self.graph = graph
        self.id = node_id
        self.name: str | None = None
        self.hooks: dict[str, Hook] = {}
        self.stats = NodeStats()
        # Made by MKNODE: stays when its last hook goes, until shut down.
        self.standalone = False
        self._valid = True
        self._closing = False
        self._revived = False
        self._writing = False
        self._readers = 0
        self._blocked = False
        self._direct = not self._async_rcv
        self._queue: deque[tuple[int, Any, Any, Any]] = deque()
        self._runner_active = False
        self._runner_task: trio.lowlevel.Task | None = None
        self._idle: trio.Event | None = None
        self._space: trio.Event | None = None
        self._scopes: set[trio.CancelScope] = set()

    # ----------------------------------------------------------------- what node types override

    def constructor(self) -> None:
        """Set up a new node; raising NetgraphError aborts its creation."""

    def newhook(self, hook: Hook) -> None:
        """Accept or veto (by raising NetgraphError) a new hook; may set ``hook.private``."""

    def connect(self, hook: Hook) -> None:
        """The hook is now linked to its peer."""

    def rcvdata(self, hook: Hook, item: Item) -> Any:
        """Receive one item on ``hook`` (plain or coroutine function)."""
        raise NetgraphError(errno.EOPNOTSUPP, f"node type {self.type_name} takes no data")

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> Any:
        """Receive several items at once; by default item by item."""
        for item in items:
            self.rcvdata(hook, item)

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        """Handle a control message from node ID ``retaddr`` (arrived by ``lasthook`` if sent
        along a path); return the reply's arguments, or None for no reply. Replies and late
        replies sent with ``respond`` arrive here too (``msg.is_response``)."""
        if (
            msg.typecookie == GENERIC_COOKIE
            and msg.cmd == NGM_TEXT_STATUS
            and not msg.is_response
            and (text := self.status_text()) is not None
        ):
            return text[: NG_TEXTRESPONSE - 1]  # a text reply is shorter than 1 KiB (spec 1.7)
        raise NetgraphError(
            errno.EINVAL, f"node type {self.type_name or type(self).__name__} has no {msg.cmdstr!r}"
        )

    def disconnect(self, hook: Hook) -> None:
        """``hook`` has been removed (its peer is already unlinked)."""

    def close(self) -> None:
        """Shutdown is starting; the node is still whole (tee splices its peers here)."""

    def shutdown(self) -> None:
        """The node has no hooks left and is going away; call ``revive()`` to persist."""

    def status_text(self) -> str | None:
        """What ``ngctl status`` shows (TEXT_STATUS); None: the type has no status."""
        return None

    def lingers(self) -> bool:
        """Whether the node stays when its last hook goes (instance-level switch)."""
        return not self.dies_with_last_hook

    # ------------------------------------------------------------------------- engine verbs

    @property
    def path(self) -> str:
        """How this node is addressed in logs: ``name:`` or ``[id]:``."""
        return f"{self.name}:" if self.name else format_id(self.id)

    @property
    def numhooks(self) -> int:
        return len(self.hooks)

    @property
    def is_valid(self) -> bool:
        return self._valid

    # Inside handlers: synchronous delivery (defined beside the rest of the delivery machinery).
    send = delivery.send
    send_batch = delivery.send_batch

    def emit(self, hook: Hook, item: Item) -> Awaitable[None]:
        """Send one item from outside a handler (a node's own task) and see it through: await
        the result. Errors anywhere in the chain raise here."""
        peer = hook.peer
        if peer is None or hook.node is not self:
            raise NetgraphError(errno.ENOTCONN, f"hook {hook.name!r} is not connected")
        return delivery.start_chain(self, peer, item, False)

    def emit_batch(self, hook: Hook, items: Sequence[Item]) -> Awaitable[None]:
        """Send a batch from outside a handler and see it through: await the result."""
        peer = hook.peer
        if peer is None or hook.node is not self:
            raise NetgraphError(errno.ENOTCONN, f"hook {hook.name!r} is not connected")
        return delivery.start_chain(self, peer, items, True)

    def send_msg(self, path: str, msg: Message) -> None:
        """Send a control message from inside a handler; a reply comes back to ``rcvmsg``.

        Runs the message now if the destination is idle (raising its error), else queues it.
        """
        target, lasthook = self.graph.resolve(self, path)
        outcome = delivery.send_message(target, msg, lasthook, self.id)
        if isinstance(outcome, NetgraphError):
            raise outcome

    def respond(self, request: Message, retaddr: int, args: Any = None) -> None:
        """Send a late (unsolicited) reply to ``request``'s sender at ID ``retaddr``."""
        self.graph._respond(self, retaddr, request.response(args))

    def rmhook_self(self, hook: Hook) -> None:
        """Remove one of this node's hooks, later (never synchronously; spec 1.11)."""

        def remove() -> None:
            if self.hooks.get(hook.name) is hook:
                self.graph.destroy_hook(hook)

        delivery.call_later(self, remove)

    def rmnode_self(self) -> None:
        """Shut this node down, later (never synchronously; spec 1.11)."""
        delivery.call_later(self, lambda: self.graph.rmnode(self))

    def revive(self) -> None:
        """Called from ``shutdown``: the node persists (FreeBSD's NG_NODE_REVIVE)."""
        self._revived = True

    def start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the graph's nursery until it returns or this node shuts down."""
        if not self._valid:
            raise NetgraphError(errno.ENXIO, f"node {self.path} is shutting down")
        scope = trio.CancelScope()
        self._scopes.add(scope)

        async def run() -> None:
            try:
                if scope.cancel_called:
                    return  # the node shut down before the task began
                with scope:
                    await fn(*args)
            except Exception as exc:
                # A bug in a node's task ends that task, not the graph.
                delivery.handler_failed(self, exc)
            finally:
                self._scopes.discard(scope)

        self.graph._nursery.start_soon(run)

    # ---------------------------------------------------------------------------- internals

    def _update_blocked(self) -> None:
        self._blocked = self._writing or bool(self._queue) or not self._valid
        # Whether ``send`` may call this node's plain handler right away.
        self._direct = not self._blocked and not self._async_rcv

    def _kick(self) -> None:
        if not self._runner_active and self._queue and self._valid:
            self._runner_active = True
            self.graph._nursery.start_soon(delivery.run_queue, self)

    def _wake(self) -> None:
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    def _rcvdata_one(self, hook: Hook, item: Item) -> Any:
        return self.rcvbatch(hook, (item,))

    async def _rcvdata_async(self, hook: Hook, item: Item) -> None:
        await self.rcvbatch(hook, (item,))

    async def _rcvbatch_async(self, hook: Hook, items: Sequence[Item]) -> None:
        for item in items:
            await self.rcvdata(hook, item)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} hooks={len(self.hooks)}>"
