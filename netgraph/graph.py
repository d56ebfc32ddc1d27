"""The graph: nodes by ID and name, hooks and links, the lifecycle and the generic messages.

Structural operations (make a node, add and link hooks, remove hooks and nodes) are plain
functions, as in FreeBSD, so each runs to completion without another task seeing it half done.
Node types' structural methods are plain functions too. A node whose last hook goes and that does
not linger is shut down at the end of the operation that removed the hook (iteratively, so long
chains of dying nodes do not recurse).

Invariants: every hook in ``node.hooks`` is linked to a peer hook that links back; a node in
``nodes`` is valid; ``names`` maps only valid nodes' names.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from . import ascii, delivery
from .errors import NetgraphError
from .message import (
    GENERIC_COOKIE,
    NGM_ASCII2BINARY,
    NGM_BINARY2ASCII,
    NGM_CONNECT,
    NGM_LISTHOOKS,
    NGM_LISTNAMES,
    NGM_LISTNODES,
    NGM_LISTTYPES,
    NGM_MKNODE,
    NGM_MKPEER,
    NGM_NAME,
    NGM_NODEINFO,
    NGM_RMHOOK,
    NGM_SHUTDOWN,
    NGM_TEXT_CONFIG,
    NGM_TEXT_STATUS,
    ConnectArgs,
    HookList,
    LinkInfo,
    Message,
    MkNodeArgs,
    MkPeerArgs,
    NameArgs,
    NameList,
    NodeInfo,
    RmHookArgs,
    TypeInfo,
    TypeList,
)
from .node import Hook, Node
from .path import check_hook_name, check_node_name, decode_id, parse
from .types import TypeRegistry

if TYPE_CHECKING:
    from .socket import Socket

__all__ = ["Graph", "open_graph"]

log = logging.getLogger("netgraph")

_ID_LIMIT = 2**32
_T = TypeVar("_T")


class Graph:
    """A running graph. Make one with :func:`open_graph`."""

    def __init__(self, nursery: trio.Nursery, types: TypeRegistry | None = None) -> None:
        self._nursery = nursery
        self.types = types if types is not None else TypeRegistry()
        self.nodes: dict[int, Node] = {}
        self.names: dict[str, Node] = {}
        self._next_id = 1
        self._dying: deque[Node] = deque()
        self._teardown_depth = 0
        self._closed = False

    # --------------------------------------------------------------------------- embedding

    def socket(self, name: str | None = None) -> Socket:
        """A new socket node, the embedding API's way into the graph (spec 1.14)."""
        from .socket import Socket, SocketNode

        node = self._create(self.types.get("socket"))
        assert isinstance(node, SocketNode)
        if name:
            try:
                self.name_node(node, name)
            except NetgraphError:
                self.rmnode(node)
                raise
        return Socket(node)

    async def start(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Start a task that keeps running, in the graph's nursery; returns its started value."""
        return await self._nursery.start(fn, *args)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(fn, *args)

    def close(self) -> None:
        """Shut every node down (persistent ones too) and end the graph's tasks."""
        if self._closed:
            return
        self._closed = True
        self._dying.clear()
        self._teardown_depth += 1
        try:
            for node in list(self.nodes.values()):
                self.rmnode(node, really=True)
        finally:
            self._teardown_depth -= 1
        self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------------------- nodes

    def make_node(self, type_name: str) -> Node:
        """Construct a node of ``type_name`` (ENXIO unknown type, EINVAL no constructor)."""
        cls = self.types.get(type_name)
        if not cls.creatable:
            raise NetgraphError(errno.EINVAL, f"nodes of type {type_name!r} cannot be made here")
        return self._create(cls)

    def _create(self, cls: type[Node]) -> Node:
        if self._closed:
            raise NetgraphError(errno.ESHUTDOWN, "the graph is closed")
        if not cls.type_name:
            raise NetgraphError(errno.EINVAL, f"{cls.__name__} is not a registered node type")
        node = cls(self, self._alloc_id())
        self.nodes[node.id] = node
        try:
            node.constructor()
        except BaseException:
            node._valid = False
            del self.nodes[node.id]
            for scope in node._scopes:
                scope.cancel()
            raise
        return node

    def _alloc_id(self) -> int:
        for _ in range(len(self.nodes) + 1):
            node_id = self._next_id
            self._next_id = node_id + 1 if node_id + 1 < _ID_LIMIT else 1
            if node_id not in self.nodes:
                return node_id
        raise NetgraphError(errno.ENOMEM, "no node IDs left")  # pragma: no cover

    def name_node(self, node: Node, name: str) -> None:
        """``ng_name_node``: EINVAL for bad names, EADDRINUSE when another node has it."""
        check_node_name(name)
        holder = self.names.get(name)
        if holder is node:
            return
        if holder is not None:
            raise NetgraphError(errno.EADDRINUSE, f"name {name!r} is in use by {holder.path}")
        if node.name is not None:
            del self.names[node.name]
        node.name = name
        self.names[name] = node

    def find(self, ref: str) -> Node:
        """The node named ``ref`` or with ID ``[hex]`` (ENOENT if none)."""
        node_id = decode_id(ref)
        node = self.nodes.get(node_id) if node_id is not None else self.names.get(ref)
        if node is None:
            raise NetgraphError(errno.ENOENT, f"no node {ref + ':'!r}")
        return node

    def resolve(self, here: Node, path: str) -> tuple[Node, Hook | None]:
        """``ng_path2noderef``: the node at ``path`` from ``here`` and the hook it arrived by."""
        address = parse(path)
        node = here if address.node in (None, ".") else self.find(address.node or "")
        lasthook: Hook | None = None
        for name in address.hooks:
            hook = node.hooks.get(name)
            if hook is None or hook.peer is None:
                raise NetgraphError(errno.ENOENT, f"no hook {name!r} on {node.path}")
            lasthook = hook.peer
            node = lasthook.node
            if not node._valid:
                raise NetgraphError(errno.ENXIO, f"node {node.path} is shutting down")
        return node, lasthook

    # ------------------------------------------------------------------------------- hooks

    def _add_hook(self, node: Node, name: str) -> Hook:
        check_hook_name(name)
        if name in node.hooks:
            raise NetgraphError(errno.EEXIST, f"node {node.path} already has hook {name!r}")
        hook = Hook(node, name)
        node.newhook(hook)
        node.hooks[name] = hook
        return hook

    def mkpeer(self, node: Node, type_name: str, ourhook: str, peerhook: str) -> Node:
        """MKPEER: a new node of ``type_name`` linked by ``ourhook`` here to its ``peerhook``."""
        check_hook_name(ourhook)
        check_hook_name(peerhook)
        if ourhook in node.hooks:
            raise NetgraphError(errno.EEXIST, f"node {node.path} already has hook {ourhook!r}")
        peer = self.make_node(type_name)
        ours: Hook | None = None
        with self._teardown():
            try:
                ours = self._add_hook(node, ourhook)
                theirs = self._add_hook(peer, peerhook)
                self._link(ours, theirs)
                node.connect(ours)
                peer.connect(theirs)
            except BaseException:
                if ours is not None and ours.node.hooks.get(ourhook) is ours:
                    self.destroy_hook(ours)
                self.rmnode(peer, really=True)
                raise
        return peer

    def mknode(self, type_name: str, name: str = "") -> Node:
        """MKNODE (ours): a new node with no hooks, named ``name`` unless that is empty. It stays
        until it is shut down: losing its hooks does not end it, as a node made on its own was
        never a link's far end (graph files declare nodes this way, and undoing a failed file
        must not take them with the links it removes)."""
        if name:
            check_node_name(name)
            if name in self.names:
                raise NetgraphError(errno.EADDRINUSE, f"name {name!r} is in use")
        node = self.make_node(type_name)
        node.standalone = True
        if name:
            self.name_node(node, name)
        return node

    def connect(self, node: Node, path: str, ourhook: str, peerhook: str) -> None:
        """CONNECT: link ``ourhook`` here to ``peerhook`` on the node at ``path`` (from here)."""
        peer, _ = self.resolve(node, path)
        check_hook_name(ourhook)
        check_hook_name(peerhook)
        if peerhook in peer.hooks:
            raise NetgraphError(errno.EEXIST, f"node {peer.path} already has hook {peerhook!r}")
        if ourhook in node.hooks:
            raise NetgraphError(errno.EEXIST, f"node {node.path} already has hook {ourhook!r}")
        if peer is node and ourhook == peerhook:
            raise NetgraphError(errno.EEXIST, f"cannot connect hook {ourhook!r} to itself")
        with self._teardown():
            ours = self._add_hook(node, ourhook)
            try:
                theirs = self._add_hook(peer, peerhook)
                self._link(ours, theirs)
                peer.connect(theirs)
                node.connect(ours)
            except BaseException:
                self.destroy_hook(ours)
                stale = peer.hooks.get(peerhook)
                if stale is not None and stale.peer is None:
                    self._remove_hook(stale)
                raise

    @staticmethod
    def _link(a: Hook, b: Hook) -> None:
        a.peer = b
        b.peer = a

    def rmhook(self, node: Node, name: str) -> None:
        """RMHOOK: remove a hook and its peer; a missing hook is success (spec 1.10)."""
        hook = node.hooks.get(name)
        if hook is not None:
            with self._teardown():
                self.destroy_hook(hook)

    def destroy_hook(self, hook: Hook) -> None:
        """Unlink a hook pair, then tell each node (``disconnect``), this end first.

        The far end is told later, from its own queue, when its node is busy in a handler
        right now (FreeBSD queues the peer's side of the removal too): a handler never sees
        its node's hooks go or the node die under its feet.
        """
        with self._teardown():
            peer = hook.peer
            hook.peer = None
            if peer is not None:
                peer.peer = None
            self._remove_hook(hook)
            if peer is not None:
                far = peer.node
                if far is not hook.node and (far._readers or far in delivery.stack):
                    delivery.call_later(far, lambda: self._remove_hook(peer))
                else:
                    self._remove_hook(peer)

    def _remove_hook(self, hook: Hook) -> None:
        node = hook.node
        if node.hooks.get(hook.name) is not hook:
            return
        del node.hooks[hook.name]
        try:
            node.disconnect(hook)
        except Exception as exc:
            delivery.handler_failed(node, exc)
        if (
            not node.hooks
            and node._valid
            and not node._closing
            and not (node.standalone or node.lingers())
        ):
            self._dying.append(node)

    def bypass(self, a: Hook, b: Hook) -> None:
        """``ng_bypass``: link the peers of ``a`` and ``b`` together and drop ``a`` and ``b``."""
        pa, pb = a.peer, b.peer
        if pa is None or pb is None:
            raise NetgraphError(errno.ENOTCONN, "bypass of an unconnected hook")
        with self._teardown():
            a.peer = b.peer = None
            self._link(pa, pb)
            self._remove_hook(a)
            self._remove_hook(b)

    class _Teardown:
        """A structural operation's extent. Outside any handler it also gives the node types'
        callbacks a chain to send in; what they send then goes to the receivers' queues."""

        def __init__(self, graph: Graph) -> None:
            self.graph = graph
            self.chain: delivery.Chain | None = None

        def __enter__(self) -> None:
            self.graph._teardown_depth += 1
            if delivery.current is None:
                self.chain = delivery.current = delivery.Chain(None)

        def __exit__(self, *exc: object) -> None:
            graph = self.graph
            graph._teardown_depth -= 1
            try:
                if graph._teardown_depth == 0:
                    graph._teardown_depth += 1
                    try:
                        while graph._dying:
                            graph.rmnode(graph._dying.popleft())
                    finally:
                        graph._teardown_depth -= 1
            finally:
                if self.chain is not None:
                    delivery.current = None
                    self.spill(self.chain)

        @staticmethod
        def spill(chain: delivery.Chain) -> None:
            for peer, payload, batch in chain.deferred:
                entry = (delivery.BATCH if batch else delivery.DATA, peer, payload, None)
                try:
                    delivery.enqueue_nowait(peer.node, entry)
                except NetgraphError as err:
                    log.warning("item sent during a graph change is lost: %s", err)
            if chain.error is not None:
                log.warning("a send during a graph change failed: %s", chain.error)

    def _teardown(self) -> Graph._Teardown:
        """Group a structural operation; nodes left without hooks die when the outermost ends."""
        return Graph._Teardown(self)

    # ------------------------------------------------------------------------------ shutdown

    def rmnode(self, node: Node, *, really: bool = False) -> None:
        """``ng_rmnode`` in FreeBSD's order (spec 1.11); ``really`` overrides persistence."""
        if node._closing or self.nodes.get(node.id) is not node:
            return
        with self._teardown():
            node._closing = True
            node._valid = False
            node._update_blocked()
            if node.name is not None and self.names.get(node.name) is node:
                del self.names[node.name]
            try:
                node.close()
            except Exception as exc:
                delivery.handler_failed(node, exc)
            for hook in reversed(list(node.hooks.values())):
                self.destroy_hook(hook)
            self._flush(node)
            for scope in list(node._scopes):
                scope.cancel()
            node._revived = False
            try:
                node.shutdown()
            except Exception as exc:
                delivery.handler_failed(node, exc)
            if node._revived and not really and not self._closed:
                node._revived = False
                node._closing = False
                node._valid = True
                node._update_blocked()
                if node.name is not None:
                    if node.name in self.names:
                        node.name = None  # another node took the name meanwhile
                    else:
                        self.names[node.name] = node
                node._kick()
                return
            del self.nodes[node.id]

    def _flush(self, node: Node) -> None:
        queue = node._queue
        while queue:
            kind, _a, b, _c = queue.popleft()
            if kind == delivery.MSG:
                if b[2] is not None:
                    b[2].finish(NetgraphError(errno.ENOENT, f"node {node.path} shut down"))
            elif kind != delivery.CALL:
                node.stats.dropped += 1
        if node._space is not None:
            node._space.set()
            node._space = None
        node._wake()  # a runner waiting for readers sees the queue is gone

    # ------------------------------------------------------------------------------ messages

    def _respond(self, sender: Node, retaddr: int, reply: Message) -> None:
        """Queue a reply to node ID ``retaddr`` (always queued; spec 1.8)."""
        target = self.nodes.get(retaddr)
        if target is None or not target._valid:
            log.debug("reply %s from %s: node [%x]: is gone", reply.cmdstr, sender.path, retaddr)
            return
        delivery.enqueue_nowait(target, (delivery.MSG, reply, (None, sender.id, None), None))

    def _apply_message(self, node: Node, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        """Run one message at ``node``: the generic ones here, the rest in the node's rcvmsg."""
        if (
            msg.typecookie == GENERIC_COOKIE
            and not msg.is_response
            and msg.cmd not in (NGM_TEXT_STATUS, NGM_TEXT_CONFIG)
        ):
            return self._generic(node, msg)
        return node.rcvmsg(msg, retaddr, lasthook)

    def _generic(self, node: Node, msg: Message) -> Any:
        cmd = msg.cmd
        if cmd == NGM_SHUTDOWN:
            self.rmnode(node)
            return None
        if cmd == NGM_MKPEER:
            a = _args(msg, MkPeerArgs)
            self.mkpeer(node, a.type, a.ourhook, a.peerhook)
            return None
        if cmd == NGM_MKNODE:
            m = _args(msg, MkNodeArgs)
            return self.nodeinfo(self.mknode(m.type, m.name))
        if cmd == NGM_CONNECT:
            c = _args(msg, ConnectArgs)
            self.connect(node, c.path, c.ourhook, c.peerhook)
            return None
        if cmd == NGM_NAME:
            self.name_node(node, _args(msg, NameArgs).name)
            return None
        if cmd == NGM_RMHOOK:
            self.rmhook(node, _args(msg, RmHookArgs).hook)
            return None
        if cmd == NGM_NODEINFO:
            return self.nodeinfo(node)
        if cmd == NGM_LISTHOOKS:
            links = tuple(
                LinkInfo(h.name, h.peer.name, self.nodeinfo(h.peer.node))
                for h in reversed(node.hooks.values())
                if h.peer is not None
            )
            return HookList(self.nodeinfo(node), links)
        if cmd == NGM_LISTNAMES:
            return NameList.of(tuple(self.nodeinfo(n) for n in self.nodes.values() if n.name))
        if cmd == NGM_LISTNODES:
            return NameList.of(tuple(self.nodeinfo(n) for n in self.nodes.values() if n._valid))
        if cmd == NGM_LISTTYPES:
            counts: dict[str, int] = dict.fromkeys(self.types.names(), 0)
            for n in self.nodes.values():
                counts[n.type_name] = counts.get(n.type_name, 0) + 1
            return TypeList.of(tuple(TypeInfo(name, count) for name, count in counts.items()))
        if cmd in (NGM_BINARY2ASCII, NGM_ASCII2BINARY):
            return ascii.convert_message(node, msg)
        raise NetgraphError(errno.EINVAL, f"unknown generic message cmd {cmd}")

    @staticmethod
    def nodeinfo(node: Node) -> NodeInfo:
        return NodeInfo(node.name or "", node.type_name, node.id, len(node.hooks))


def _args(msg: Message, cls: type[_T]) -> _T:
    if not isinstance(msg.args, cls):
        raise NetgraphError(
            errno.EINVAL, f"{msg.cmdstr or msg.cmd}: arguments must be {cls.__name__}"
        )
    return msg.args


@asynccontextmanager
async def open_graph(*, types: TypeRegistry | None = None) -> AsyncIterator[Graph]:
    """Run a graph for the duration of the block; leaving it shuts every node down.

    The graph owns a nursery: node tasks and queue runners live there, and
    :meth:`Graph.start` runs an application's own long-lived tasks beside them.
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        graph = Graph(nursery, types)
        try:
            yield graph
        except BaseException as exc:
            # Raised by the caller's block: re-raise it as it is, not inside an ExceptionGroup.
            body_error = exc
        finally:
            graph.close()
    if body_error is not None:
        raise body_error
