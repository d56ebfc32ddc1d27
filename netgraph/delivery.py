"""How items and messages move between nodes: the concurrency design of the engine.

Theory of operation
===================

FreeBSD runs a node's handlers in whatever thread sends to it, nesting calls down a chain of
nodes, and queues an item only when the destination is busy or the stack is deep (spec 1.12).
Handlers there never sleep. This engine keeps that model and adds one thing trio makes cheap:
handlers that *do* wait, for nodes doing I/O.

Handlers
    A node type's ``rcvdata``/``rcvbatch`` is either a plain function (the usual case, like
    FreeBSD's non-sleeping handlers) or a coroutine function (a node doing I/O, which awaits its
    I/O). ``rcvmsg`` and the structural methods (``newhook``, ``connect``, ``disconnect``,
    ``close``, ``shutdown``) are always plain functions.

Chains
    A *chain* is everything that follows from one item or message entering the graph from
    outside a handler: from the socket node's API, from a node's own task (``Node.emit``), or
    from a node's queue. Inside handlers, ``Node.send`` delivers *synchronously*: the receiving
    plain handler is called directly, in the sender's task, before ``send`` returns, with no
    scheduler hop and no trio checkpoint. Its errors propagate back to the sender, as FreeBSD's
    send returns the handler's error. Delivery to a coroutine handler cannot happen inside a plain
    function, so it is *deferred* to the chain's driver, which awaits it right after the plain
    cascade unwinds, still in the same task; that await is where backpressure happens: the
    originator of the chain is held until the I/O node has taken the item.

Depth (spec 10.7)
    Nested delivery goes at most ``MAX_DEPTH`` hops deep; past that, items are deferred to the
    driver, which starts a fresh cascade from the top. A chain's driver handles at most
    ``HOP_BUDGET`` deferred entries; what remains then goes to the destination nodes' queues, so a
    closed loop circulates through the nodes' queue runners, which checkpoint between items: no
    RecursionError, no starved tasks, and the originator's send returns.

The reader/writer gate (spec 1.12)
    Data items and read-only messages are readers; other messages and queued function calls are
    writers. A reader enters a node unless a writer is running there or the node has queued
    items (FIFO: a queued writer holds back later readers). A writer enters only an idle node: no
    writer running, nothing queued, no reader suspended in a coroutine handler (counted in
    ``Node._readers``) and the node not on the current synchronous stack (a writer re-entering its
    own node directly or around a loop). Otherwise the item joins the node's queue, and the
    node's runner task, started on demand in the graph's nursery, drains it in order, waiting for
    suspended readers before each writer. Since plain handlers never suspend, "on the current
    stack" is the only way a plain reader can be in progress when a writer arrives.

Queues and backpressure
    Every node queue is bounded (``Node.queue_limit``). A sender in a plain handler cannot wait,
    so a full queue fails its send with ENOBUFS (as FreeBSD fails with ENOMEM); senders in async
    code (``emit``, the driver) wait for room instead. Nothing is dropped without an error
    reaching someone: a failure in a queued item, whose sender has moved on, is logged and
    counted on the node (``Node.stats``).

Errors
    A handler that raises ``NetgraphError`` returns that errno to its sender. Any other exception
    is a bug in the node type: it is logged with the node's path and the sender gets
    ``NetgraphError(EIO)``; the graph and the other nodes keep running.
"""

from __future__ import annotations

import contextvars
import errno
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from .errors import NetgraphError

if TYPE_CHECKING:
    from .item import Item
    from .message import Message
    from .node import Hook, Node

__all__ = ["HOP_BUDGET", "MAX_DEPTH", "Chain"]

log = logging.getLogger("netgraph")

MAX_DEPTH: Final = 64
HOP_BUDGET: Final = 256
MAX_NESTED_DRIVERS: Final = 8

# Queue item kinds.
DATA: Final = 0
BATCH: Final = 1
MSG: Final = 2
CALL: Final = 3


class Chain:
    """The state of one chain: its originator, deferred entries, and the first error."""

    __slots__ = ("deferred", "error", "origin")

    def __init__(self, origin: Node | None) -> None:
        self.origin = origin
        # (hook on the receiving node, payload, is_batch)
        self.deferred: deque[tuple[Hook, Any, bool]] = deque()
        self.error: NetgraphError | None = None

    def fail(self, err: NetgraphError) -> None:
        if self.error is None:
            self.error = err


# Plain handlers cannot suspend, so at most one synchronous cascade runs at any moment in the
# process: these two describe it. ``current`` is the chain it belongs to (None when no plain
# handler is running) and ``stack`` the nodes whose plain handlers are running, innermost last;
# its length is the nesting depth.
current: Chain | None = None
stack: list[Node] = []
_push = stack.append
_pop = stack.pop
# The chain whose driver is starting a coroutine handler, for handlers that need to know who
# originated the item before their first await (see ``origin``).
_driving: Chain | None = None
# How many drivers are nested in the current task (async handlers that emit, recursively).
_nesting: contextvars.ContextVar[int] = contextvars.ContextVar("netgraph_nesting", default=0)


def origin() -> Node | None:
    """The node that started the chain delivering the current item, read at a handler's start."""
    chain = current if current is not None else _driving
    return chain.origin if chain is not None else None


def handler_failed(node: Node, exc: BaseException) -> NetgraphError:
    """Turn a bug in a node type's handler into EIO for its sender, logging it with the path."""
    log.error("node %s (%s) raised in a handler", node.path, node.type_name, exc_info=exc)
    node.stats.errors += 1
    return NetgraphError(errno.EIO, f"node {node.path} failed: {type(exc).__name__}: {exc}")


def deliver_sync(chain: Chain, peer: Hook, payload: Any, batch: bool) -> None:
    """Run a plain handler at the top of a cascade, with ``chain`` current, capturing errors."""
    global current
    node = peer.node
    current = chain
    _push(node)
    try:
        if batch:
            node.rcvbatch(peer, payload)
        else:
            node.rcvdata(peer, payload)
    except NetgraphError as err:
        chain.fail(err)
    except Exception as exc:
        chain.fail(handler_failed(node, exc))
    finally:
        _pop()
        current = None


async def deliver_async(chain: Chain, peer: Hook, payload: Any, batch: bool) -> None:
    """Await a coroutine handler, counting it as a reader of its node while it runs.

    The handler runs in a cancel scope of the node's, so that shutting the node down releases
    whoever is held by it (with EIO) rather than leaving them waiting on a node that is gone;
    types whose handlers wait only on what their shutdown closes skip that cost.
    """
    global _driving
    node = peer.node
    node._readers += 1
    scope = None if node.handlers_woken_by_close else trio.CancelScope()
    if scope is not None:
        node._scopes.add(scope)
    _driving = chain
    try:
        handler = node.rcvbatch(peer, payload) if batch else node.rcvdata(peer, payload)
        if scope is None:
            await handler
        else:
            with scope:
                await handler
    except NetgraphError as err:
        chain.fail(err)
    except Exception as exc:
        chain.fail(handler_failed(node, exc))
    finally:
        _driving = None
        if scope is not None:
            node._scopes.discard(scope)
        node._readers -= 1
        if not node._readers and node._queue:
            node._wake()
    if scope is not None and scope.cancelled_caught:
        node.stats.dropped += 1
        chain.fail(NetgraphError(errno.EIO, f"node {node.path} shut down while taking the item"))


def send(self: Node, hook: Hook, item: Item) -> None:
    """``Node.send``: deliver one item out of ``hook`` from inside a handler.

    The hot path of the engine: a plain, idle, shallow receiver is called right here.
    """
    peer = hook.peer
    if peer is None:
        raise NetgraphError(errno.ENOTCONN, f"hook {hook.name!r} is not connected")
    node = peer.node
    if not node._direct or not 0 < len(stack) < MAX_DEPTH:
        defer(current, peer, item, False)
        return
    _push(node)
    try:
        node.rcvdata(peer, item)
    except NetgraphError:
        raise
    except Exception as exc:
        raise handler_failed(node, exc) from exc
    finally:
        _pop()


def send_batch(self: Node, hook: Hook, items: Sequence[Item]) -> None:
    """``Node.send_batch``: deliver several items out of ``hook`` from inside a handler."""
    peer = hook.peer
    if peer is None:
        raise NetgraphError(errno.ENOTCONN, f"hook {hook.name!r} is not connected")
    node = peer.node
    if not node._direct or not 0 < len(stack) < MAX_DEPTH:
        defer(current, peer, items, True)
        return
    _push(node)
    try:
        node.rcvbatch(peer, items)
    except NetgraphError:
        raise
    except Exception as exc:
        raise handler_failed(node, exc) from exc
    finally:
        _pop()


def defer(chain: Chain | None, peer: Hook, payload: Any, batch: bool) -> None:
    """What ``send`` does when it cannot call the receiver right here.

    A coroutine handler waits for the chain's driver. A busy node, or one past the depth limit,
    gets the item in its queue, as FreeBSD queues there: later items on the same hook then queue
    behind it, so the order on a hook holds.
    """
    if chain is None:
        raise RuntimeError("Node.send() outside a handler: use 'await node.emit()' there")
    node = peer.node
    if node._blocked or not node._async_rcv:
        enqueue_nowait(node, (BATCH if batch else DATA, peer, payload, None))
    else:
        chain.deferred.append((peer, payload, batch))


async def drive(chain: Chain) -> None:
    """Run a chain's deferred entries (coroutine handlers, deep cascades) until done or budget."""
    token = _nesting.set(_nesting.get() + 1)
    try:
        budget = HOP_BUDGET
        deferred = chain.deferred
        while deferred:
            if budget == 0:
                # Spill the rest to the nodes' queues: loops go on in the runners, fairly.
                while deferred:
                    peer, payload, batch = deferred.popleft()
                    if peer.peer is None or not peer.node._valid:
                        peer.node.stats.dropped += 1
                        chain.fail(NetgraphError(errno.ENOTCONN, f"hook {peer.name!r} went away"))
                        continue
                    await enqueue(peer.node, (BATCH if batch else DATA, peer, payload, None))
                return
            budget -= 1
            peer, payload, batch = deferred.popleft()
            node = peer.node
            if not node._valid or peer.node is not node or peer.peer is None:
                chain.fail(NetgraphError(errno.ENOTCONN, f"hook {peer.name!r} went away"))
                node.stats.dropped += 1
                continue
            if node._blocked:
                await enqueue(node, (BATCH if batch else DATA, peer, payload, None))
            elif node._async_rcv:
                await deliver_async(chain, peer, payload, batch)
            else:
                deliver_sync(chain, peer, payload, batch)
    finally:
        _nesting.reset(token)


# The chain of a synchronous cascade started by ``start_chain``, reused: cascades never overlap,
# and one that leaves work for later hands it to a chain of its own.
_scratch = Chain(None)


async def start_chain(origin: Node | None, peer: Hook, payload: Any, batch: bool) -> None:
    """Deliver one item (or batch) from outside any handler and see the whole chain through."""
    global current
    node = peer.node
    if node._direct:
        chain = _scratch
        chain.origin = origin
        current = chain
        _push(node)
        try:
            if batch:
                node.rcvbatch(peer, payload)
            else:
                node.rcvdata(peer, payload)
        except NetgraphError as err:
            chain.fail(err)
        except Exception as exc:
            chain.fail(handler_failed(node, exc))
        except BaseException:
            chain.deferred.clear()
            chain.error = None
            raise
        finally:
            _pop()
            current = None
        if chain.deferred or chain.error is not None:
            rest = Chain(origin)
            rest.deferred, chain.deferred = chain.deferred, deque()
            rest.error, chain.error = chain.error, None
            if rest.deferred:
                await drive(rest)
            if rest.error is not None:
                raise rest.error
        return
    if not node._valid:
        raise NetgraphError(errno.EIO, f"node {node.path} is shutting down")
    chain = Chain(origin)
    nesting = _nesting.get()
    if nesting >= MAX_NESTED_DRIVERS or node._blocked:
        # Deep async recursion (two I/O nodes feeding each other) or a busy node: queue it.
        await enqueue(node, (BATCH if batch else DATA, peer, payload, None))
        return
    if node._async_rcv:
        token = _nesting.set(nesting + 1)
        try:
            await deliver_async(chain, peer, payload, batch)
        finally:
            _nesting.reset(token)
    else:
        deliver_sync(chain, peer, payload, batch)
    if chain.deferred:
        await drive(chain)
    if chain.error is not None:
        raise chain.error


def _closed(node: Node, entry: tuple[int, Any, Any, Any]) -> NetgraphError:
    """What an item for a node that is shutting down gets (spec 1.11: EIO data, EINVAL messages)."""
    code = errno.EINVAL if entry[0] == MSG else errno.EIO
    return NetgraphError(code, f"node {node.path} is shutting down")


def enqueue_nowait(node: Node, entry: tuple[int, Any, Any, Any]) -> None:
    """Queue an item from a plain function: ENOBUFS when the queue is full."""
    if not node._valid:
        raise _closed(node, entry)
    queue = node._queue
    if len(queue) >= node.queue_limit:
        node.stats.dropped += 1
        raise NetgraphError(errno.ENOBUFS, f"queue of node {node.path} is full")
    queue.append(entry)
    node._update_blocked()
    node._kick()


async def enqueue(node: Node, entry: tuple[int, Any, Any, Any]) -> None:
    """Queue an item from async code, waiting while the queue is full.

    The node's own runner never waits for room in its own queue (it is what makes room).
    """
    runner = node._runner_task
    while (
        node._valid
        and len(node._queue) >= node.queue_limit
        and (runner is None or runner is not trio.lowlevel.current_task())
    ):
        if node._space is None:
            node._space = trio.Event()
        await node._space.wait()
    if not node._valid:
        raise _closed(node, entry)
    node._queue.append(entry)
    node._update_blocked()
    node._kick()


class Completion:
    """Where a queued message's outcome goes when its sender waits for it."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: NetgraphError | None = None

    def finish(self, error: NetgraphError | None) -> None:
        self.error = error
        self.done.set()


def is_writer(entry: tuple[int, Any, Any, Any]) -> bool:
    kind = entry[0]
    if kind == MSG:
        msg: Message = entry[1]
        return not msg.readonly
    return kind == CALL


async def run_queue(node: Node) -> None:
    """A node's runner: drain its queue in FIFO order, then exit (it is restarted on demand)."""
    queue = node._queue
    node._runner_task = trio.lowlevel.current_task()
    try:
        while queue and node._valid:
            entry = queue[0]
            if is_writer(entry) and node._readers and node.readers_block_writers:
                node._idle = trio.Event()
                await node._idle.wait()
                continue
            queue.popleft()
            node._update_blocked()
            if node._space is not None:
                node._space.set()
                node._space = None
            try:
                await run_entry(node, entry)
            except Exception as exc:
                # Whatever a node type does wrong, the runner and the graph go on.
                handler_failed(node, exc)
            await trio.lowlevel.checkpoint()
    finally:
        node._runner_task = None
        node._runner_active = False
        node._update_blocked()


async def run_entry(node: Node, entry: tuple[int, Any, Any, Any]) -> None:
    kind, a, b, _ = entry
    if kind in (DATA, BATCH):
        peer: Hook = a
        if peer.peer is None or peer.node is not node:
            node.stats.dropped += 1
            log.warning("node %s: dropped a queued item for removed hook %r", node.path, peer.name)
            return
        chain = Chain(None)
        if node._async_rcv:
            await deliver_async(chain, peer, b, kind == BATCH)
        else:
            deliver_sync(chain, peer, b, kind == BATCH)
        if chain.deferred:
            await drive(chain)
        if chain.error is not None:
            node.stats.errors += 1
            log.warning("node %s: queued item failed: %s", node.path, chain.error)
    elif kind == MSG:
        msg: Message = a
        lasthook: Hook | None
        retaddr: int
        completion: Completion | None
        lasthook, retaddr, completion = b
        chain = Chain(None)
        err = run_message(chain, node, msg, lasthook, retaddr)
        if chain.deferred:
            await drive(chain)
        err = err or chain.error
        if completion is not None:
            completion.finish(err)
        elif err is not None:
            node.stats.errors += 1
            log.warning("node %s: queued message %s failed: %s", node.path, msg.cmdstr, err)
    else:
        fn: Callable[[], None] = a
        chain = Chain(None)
        global current
        current = chain
        try:
            fn()
        except NetgraphError as err:
            chain.fail(err)
        except Exception as exc:
            handler_failed(node, exc)
        finally:
            current = None
        if chain.deferred:
            await drive(chain)
        if chain.error is not None:
            node.stats.errors += 1
            log.warning("node %s: queued call failed: %s", node.path, chain.error)


def run_message(
    chain: Chain, node: Node, msg: Message, lasthook: Hook | None, retaddr: int
) -> NetgraphError | None:
    """Apply one message to ``node`` now, as a reader or writer; return its error, if any."""
    global current
    saved = current
    current = chain
    writer = not msg.readonly
    if writer:
        node._writing = True
        node._update_blocked()
    _push(node)
    try:
        reply = node.graph._apply_message(node, msg, retaddr, lasthook)
    except NetgraphError as err:
        return err
    except Exception as exc:
        return handler_failed(node, exc)
    finally:
        _pop()
        current = saved
        if writer:
            node._writing = False
            node._update_blocked()
    if reply is not None:
        try:
            node.graph._respond(node, retaddr, msg.response(reply))
        except NetgraphError as err:
            # The message was applied; only its reply was lost: say so, but not as its error.
            node.stats.errors += 1
            log.warning("node %s: reply to %s lost: %s", node.path, msg.cmdstr or msg.cmd, err)
    return None


def message_blocked(node: Node, msg: Message) -> bool:
    """Whether ``msg`` must queue at ``node`` rather than run now (the gate of spec 1.12)."""
    if node._blocked:
        return True
    if msg.readonly:
        return False
    if node._readers and node.readers_block_writers:
        return True
    return node in stack


def send_message(
    node: Node, msg: Message, lasthook: Hook | None, retaddr: int
) -> NetgraphError | None:
    """From a handler: apply a message now if the gate allows (returning its error), else queue
    it; the error of a queued one is logged and counted on its node when it runs."""
    if not node._valid:
        raise NetgraphError(errno.EINVAL, f"node {node.path} is shutting down")
    if message_blocked(node, msg):
        enqueue_nowait(node, (MSG, msg, (lasthook, retaddr, None), None))
        return None
    chain = current
    if chain is None:
        raise RuntimeError("Node.send_msg() outside a handler")
    return run_message(chain, node, msg, lasthook, retaddr)


async def send_message_from_outside(
    origin: Node | None, node: Node, msg: Message, lasthook: Hook | None, retaddr: int
) -> None:
    """Deliver a message from async code and wait until it has been applied (spec 1.14)."""
    if not node._valid:
        raise NetgraphError(errno.EINVAL, f"node {node.path} is shutting down")
    if message_blocked(node, msg):
        completion = Completion()
        await enqueue(node, (MSG, msg, (lasthook, retaddr, completion), None))
        await completion.done.wait()
        if completion.error is not None:
            raise completion.error
        return
    chain = Chain(origin)
    err = run_message(chain, node, msg, lasthook, retaddr)
    if chain.deferred:
        await drive(chain)
    err = err or chain.error
    if err is not None:
        raise err


def call_later(node: Node, fn: Callable[[], None]) -> None:
    """Queue a function call on ``node`` as a writer (FreeBSD's ``ng_send_fn`` with NG_QUEUE)."""
    node._queue.append((CALL, fn, None, None))
    node._update_blocked()
    node._kick()
