"""The graph daemon: a graph hosted behind a Unix-domain control socket (spec 10.10).

:func:`serve` runs a graph (its own, or one it is given) and listens on a socket file created
mode 0600. Each connection is checked with ``SO_PEERCRED``: only the daemon's own (effective) uid
gets in. A client says HELLO with the name it wants; the daemon makes it a socket node of its own
(:meth:`netgraph.Graph.socket`) and answers WELCOME; from then on the client's frames are sent
from that node and what arrives at that node goes back to the client. The frames are
:mod:`netgraph.wire`'s; docs/wire.md describes them.

Per client, five tasks share one connection:

* the *reader* splits the byte stream into frames; CREDIT it handles at once, MSG, DATA and BATCH
  it queues for the worker (a bounded queue, so a client that sends faster than the graph takes
  is held back by its own connection), and a bad frame too, so that the requests before it are
  answered before the client is dropped;
* the *worker* runs the queued requests one at a time, in order (so data keeps its order), and
  answers each with RESULT: a message is decoded by the cmdlist of the node it is addressed to
  and sent with :meth:`netgraph.Socket.send_msg`, which returns once it has been applied there
  and raises its error; data goes out with ``send_data``/``send_batch``;
* two *forwarders* take what arrives at the socket node: messages (encoded by the cmdlist of
  their sender) as MSG_IN, data as DATA_IN. Data is flow controlled: the daemon sends at most
  :data:`netgraph.wire.DATA_WINDOW` items the client has not given back with CREDIT, so a client
  that does not read leaves items in its socket node's bounded queue, which holds back their
  senders as it does in-process;
* the *writer* alone writes to the connection, from a queue (so a cancelled task never leaves
  half a frame behind).

A malformed, unknown or oversized frame, or a client whose socket node is shut down, gets ERROR
(an errno and a detail) and is dropped; nothing else changes. A client's socket node is shut down
when it goes, and with it its hooks. SIGTERM and SIGINT end :func:`serve`: clients get ERROR
(ESHUTDOWN), the graph is closed and the socket file removed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import socket as _socket
import stat
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import trio

from . import wire
from .errors import NetgraphError
from .graph import Graph, open_graph
from .message import Message
from .node import Node
from .path import decode_id
from .peercred import PeerCredentials, check_peer, peer_credentials
from .socket import Socket

__all__ = [
    "DRAIN_TIMEOUT",
    "HELLO_TIMEOUT",
    "Daemon",
    "PeerCredentials",
    "check_peer",
    "peer_credentials",
    "serve",
]

log = logging.getLogger("netgraph")

# How long a new connection may take to say HELLO.
HELLO_TIMEOUT: Final = 10.0
# How long a dropped client is given to take its ERROR frame (and what was queued before it).
DRAIN_TIMEOUT: Final = 5.0
# How long clients are given to go when the daemon shuts down.
SHUTDOWN_GRACE: Final = 2.0
BACKLOG: Final = 64
READ_SIZE: Final = 65536
# Requests read but not yet run, and frames queued for the writer, per client.
WORK_QUEUE: Final = 64
OUT_QUEUE: Final = 64
ACCEPT_BACKOFF: Final = 0.1

_Job = Callable[[], Awaitable[bytes | None]]


# ---------------------------------------------------------------------------------- daemon


class Daemon:
    """A running daemon: what :func:`serve` hands to ``task_status.started``.

    ``uid`` is the only uid let in (the daemon's effective uid). ``clients`` are the connected
    clients that have their socket node.
    """

    def __init__(self, path: str, graph: Graph) -> None:
        self.path = path
        self.graph = graph
        self.uid = os.geteuid()
        self.sessions: set[Session] = set()
        self._changed = trio.Event()

    @property
    def clients(self) -> list[Session]:
        return [s for s in self.sessions if s.socket is not None]

    async def wait_for_clients(self, count: int) -> None:
        """Return once exactly ``count`` clients are connected (for tests and supervisors)."""
        while len(self.clients) != count:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.warning("cannot accept a client for now: %s", exc)
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            session = Session(self, stream)
            self.sessions.add(session)
            nursery.start_soon(session.run)

    async def _run(
        self,
        listener: trio.SocketListener,
        signals: AsyncIterator[int] | None,
        task_status: trio.TaskStatus[Daemon],
    ) -> bool:
        """Accept clients until a signal comes (True) or we are cancelled."""
        signalled = False
        async with trio.open_nursery() as sessions:
            async with trio.open_nursery() as front:
                front.start_soon(self._accept, listener, sessions)
                log.info("graph daemon listening on %s", self.path)
                task_status.started(self)
                if signals is None:
                    await trio.sleep_forever()
                else:
                    async for signum in signals:  # pragma: no branch
                        log.info("%s: shutting down", signal.Signals(signum).name)
                        signalled = True
                        break
                front.cancel_scope.cancel()
            gone = NetgraphError(errno.ESHUTDOWN, "the graph daemon is shutting down")
            for session in list(self.sessions):
                session.drop(gone)
            sessions.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
        return signalled


async def serve(
    socket_path: str | os.PathLike[str],
    *,
    graph: Graph | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Host ``graph`` (a new one if None) on a control socket at ``socket_path`` until SIGTERM
    or SIGINT, or until cancelled.

    The socket file is made mode 0600; a stale one (nothing listening) is replaced, a live one
    gives EADDRINUSE and anything else at the path EEXIST. ``task_status.started`` gets the
    :class:`Daemon` once clients can connect. On a signal, clients are told (ERROR ESHUTDOWN),
    the graph is closed (a given one too) and ``serve`` returns; when cancelled, it closes only a
    graph it made. Either way the socket file is removed. ``handle_signals=False`` leaves signals
    to the caller (and allows running outside the main thread).
    """
    path = os.fspath(socket_path)
    with contextlib.ExitStack() as stack:
        signals: AsyncIterator[int] | None = None
        if handle_signals:
            signals = stack.enter_context(trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT))
        listener, identity = await _listen(path)
        try:
            async with contextlib.AsyncExitStack() as graphs:
                own = graph is None
                if graph is None:
                    graph = await graphs.enter_async_context(open_graph())
                daemon = Daemon(path, graph)
                if await daemon._run(listener, signals, task_status) and not own:
                    graph.close()
        finally:
            listener.socket.close()
            _remove_socket_file(path, identity)
            log.info("graph daemon on %s stopped", path)


async def _listen(path: str) -> tuple[trio.SocketListener, tuple[int, int]]:
    """A listener on a new socket file at ``path``, mode 0600 before anyone can connect."""
    await _clear_stale(path)
    sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    bound: tuple[int, int] | None = None
    try:
        try:
            await sock.bind(path)
        except OSError as exc:
            code = exc.errno or errno.EINVAL
            reason = exc.strerror or str(exc)
            raise NetgraphError(code, f"cannot listen on {path}: {reason}") from None
        info = os.stat(path)
        bound = (info.st_dev, info.st_ino)
        # Nobody can connect before listen(): the mode is right before the first client.
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        if bound is not None:
            _remove_socket_file(path, bound)
        raise
    return trio.SocketListener(sock), bound


async def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; EADDRINUSE if a daemon does, EEXIST if ``path``
    is not a socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise NetgraphError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        except OSError as exc:
            raise NetgraphError(
                exc.errno or errno.EINVAL,
                f"cannot tell whether a daemon listens on {path}: {exc.strerror or exc}",
            ) from None
        else:
            raise NetgraphError(errno.EADDRINUSE, f"{path} is in use by a running daemon")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        log.info("removed the stale socket file %s", path)


def _remove_socket_file(path: str, identity: tuple[int, int]) -> None:
    """Remove the socket file, if it is still the one we made."""
    try:
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == identity:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)


# --------------------------------------------------------------------------------- clients


class Session:
    """One client connection and its socket node."""

    def __init__(self, daemon: Daemon, stream: trio.SocketStream) -> None:
        self.daemon = daemon
        self.graph = daemon.graph
        self.stream = stream
        self.creds: PeerCredentials | None = None
        self.socket: Socket | None = None
        self.fatal: NetgraphError | None = None
        self._dropping = False
        self._scope = trio.CancelScope()
        self._frames = wire.FrameReader()
        self._backlog: deque[tuple[int, bytes]] = deque()
        self._out_send, self._out_recv = trio.open_memory_channel[bytes](OUT_QUEUE)
        self._work_send, self._work_recv = trio.open_memory_channel[_Job](WORK_QUEUE)
        self._credit = wire.DATA_WINDOW
        self._credit_added = trio.Event()

    def __repr__(self) -> str:
        who = f"pid {self.creds.pid}" if self.creds is not None else "?"
        node = self.socket.path if self.socket is not None else "-"
        return f"<client {who} {node}>"

    def drop(self, err: NetgraphError | None) -> None:
        """End the session; ``err`` (the first reason given wins) goes to the client as ERROR."""
        if not self._dropping:
            self._dropping = True
            self.fatal = err
        self._scope.cancel()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._write_loop)
                try:
                    with self._scope:
                        try:
                            await self._serve()
                        except NetgraphError as err:
                            self.drop(err)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            self.drop(None)
                    if self.fatal is not None:
                        # A socket node shut down or the daemon going are no one's fault.
                        quiet = self.fatal.errno in (errno.ENOTCONN, errno.ESHUTDOWN)
                        level = logging.INFO if quiet else logging.WARNING
                        log.log(level, "%r dropped: %s", self, self.fatal)
                        outer.cancel_scope.deadline = trio.current_time() + DRAIN_TIMEOUT
                        await self._out_send.send(wire.pack_error(self.fatal))
                finally:
                    self._out_send.close()
        except Exception:
            log.exception("%r: the session failed", self)
        finally:
            with trio.CancelScope(shield=True):
                if self.socket is not None:
                    await self.socket.close()
                await trio.aclose_forcefully(self.stream)
            self.daemon.sessions.discard(self)
            self.daemon._notify()
            if self.socket is not None:
                log.info("%r gone", self)

    async def _serve(self) -> None:
        self.creds = peer_credentials(self.stream.socket)
        check_peer(self.creds, self.daemon.uid)
        with trio.move_on_after(HELLO_TIMEOUT) as waited:
            frame = await self._next_frame()
        if waited.cancelled_caught:
            raise NetgraphError(errno.ETIMEDOUT, f"no HELLO within {HELLO_TIMEOUT:g} s")
        if frame is None:
            return
        kind, body = frame
        if kind != wire.HELLO:
            raise NetgraphError(errno.EPROTO, f"the first frame must be HELLO, not 0x{kind:02x}")
        version, name = wire.unpack_hello(body)
        if version != wire.VERSION:
            raise NetgraphError(
                errno.EPROTONOSUPPORT,
                f"protocol version {version} is not supported (this daemon speaks {wire.VERSION})",
            )
        sock = self.socket = self.graph.socket(name or None)
        await self._out_send.send(wire.pack_welcome(sock.id, sock.name or ""))
        log.info("%r connected (uid %d)", self, self.creds.uid)
        self.daemon._notify()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_loop)
            nursery.start_soon(self._work_loop)
            nursery.start_soon(self._forward_data, sock)
            nursery.start_soon(self._forward_msgs, sock)

    # ------------------------------------------------------------------------- reading

    async def _next_frame(self) -> tuple[int, bytes] | None:
        """The next frame, or None when the client has gone."""
        while not self._backlog:
            self._backlog.extend(self._frames.feed(b""))  # an error after the last frames
            if self._backlog:
                break
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                return None
            self._backlog.extend(self._frames.feed(data))
        return self._backlog.popleft()

    async def _read_loop(self) -> None:
        try:
            await self._read_frames()
        except NetgraphError as err:
            # Behind the requests read before the bad frame: they are answered first.
            await self._work_send.send(functools.partial(self._fatal, err))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.drop(None)

    async def _read_frames(self) -> None:
        while True:
            frame = await self._next_frame()
            if frame is None:
                self.drop(None)
                return
            kind, body = frame
            job: _Job
            if kind == wire.CREDIT:
                self._credit += wire.unpack_credit(body)
                self._credit_added.set()
                continue
            if kind == wire.MSG:
                job = functools.partial(self._do_msg, *wire.unpack_msg(body))
            elif kind == wire.DATA:
                job = functools.partial(self._do_data, *wire.unpack_data(body))
            elif kind == wire.BATCH:
                job = functools.partial(self._do_batch, *wire.unpack_batch(body))
            elif kind == wire.HELLO:
                raise NetgraphError(errno.EPROTO, "HELLO after the handshake")
            else:
                raise NetgraphError(errno.EPROTO, f"unknown frame type 0x{kind:02x}")
            await self._work_send.send(job)

    # ---------------------------------------------------------------------- requests

    async def _work_loop(self) -> None:
        async for job in self._work_recv:
            frame = await job()
            if frame is not None:
                await self._out_send.send(frame)

    async def _do_msg(self, request: int, path: str, data: bytes) -> bytes:
        sock = self.socket
        assert sock is not None
        try:
            # Decoded by the cmdlist of the node it goes to (spec 10.2).
            target, _ = self.graph.resolve(sock.node, path)
            msg = _decode(type(target), data)
            await sock.send_msg(path, msg)
        except NetgraphError as err:
            return wire.pack_result(request, err)
        return wire.pack_result(request, None)

    async def _do_data(self, request: int, hook: str, payload: bytes) -> bytes:
        sock = self.socket
        assert sock is not None
        try:
            await sock.send_data(hook or None, payload)
        except NetgraphError as err:
            return wire.pack_result(request, err)
        return wire.pack_result(request, None)

    async def _do_batch(self, request: int, hook: str, items: list[bytes]) -> bytes:
        sock = self.socket
        assert sock is not None
        try:
            await sock.send_batch(hook or None, items)
        except NetgraphError as err:
            return wire.pack_result(request, err)
        return wire.pack_result(request, None)

    async def _fatal(self, err: NetgraphError) -> None:
        self.drop(err)

    async def _gone(self) -> None:
        sock = self.socket
        path = sock.path if sock is not None else "?"
        self.drop(NetgraphError(errno.ENOTCONN, f"socket node {path} has shut down"))

    # -------------------------------------------------------------------- forwarding

    async def _forward_data(self, sock: Socket) -> None:
        while True:
            while self._credit <= 0:
                if self._credit_added.is_set():
                    self._credit_added = trio.Event()
                await self._credit_added.wait()
            try:
                hook, item = await sock.recv_data()
            except NetgraphError:
                # Queued behind the requests already read: their RESULTs go out first.
                await self._work_send.send(self._gone)
                return
            try:
                frame = wire.pack_data_in(hook, bytes(item))
            except NetgraphError as err:
                sock.node.stats.dropped += 1
                log.warning("%r: an item on hook %r is lost: %s", self, hook, err)
                continue
            self._credit -= 1
            await self._out_send.send(frame)

    async def _forward_msgs(self, sock: Socket) -> None:
        while True:
            try:
                sender, msg = await sock.recv_msg()
            except NetgraphError:
                await self._work_send.send(self._gone)
                return
            # Encoded by the cmdlist of the node that sent it (spec 10.2).
            node_id = decode_id(sender.rstrip(":"))
            node = self.graph.nodes.get(node_id) if node_id is not None else None
            node_type = type(node) if node is not None else Node
            try:
                frame = wire.pack_msg_in(sender, wire.encode_message(node_type, msg))
            except Exception as exc:
                sock.node.stats.dropped += 1
                log.warning("%r: message %r from %s is lost: %s", self, msg.cmdstr, sender, exc)
                continue
            await self._out_send.send(frame)

    # ------------------------------------------------------------------------ writing

    async def _write_loop(self) -> None:
        broken = False
        async with self._out_recv:
            async for frame in self._out_recv:
                if broken:
                    continue  # keep taking frames so that nobody waits on a full queue
                try:
                    await self.stream.send_all(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    broken = True
                    self.drop(None)


def _decode(node_type: type[Node], data: bytes) -> Message:
    try:
        return wire.decode_message(node_type, data)
    except NetgraphError:
        raise
    except Exception as exc:
        raise NetgraphError(errno.EINVAL, f"cannot decode the message: {exc}") from None
