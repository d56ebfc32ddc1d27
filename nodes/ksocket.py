"""``ksocket``: an operating-system socket as a node (spec 4, 10.8; FreeBSD ng_ksocket).

The node's one hook names the socket to make, ``family/type/proto`` (``inet/stream/tcp``,
``inet6/dgram/udp``, ``local/stream/0``); messages bind, listen, accept, connect, and get and set
options. What the socket receives goes out of the hook (a stream in chunks, datagrams one per
item, the end of a stream as one empty item); what comes in on the hook is sent, and the sender
waits while the socket cannot take more (the handler awaits the socket).

``connect`` on a stream socket returns EINPROGRESS and a ``connect`` reply (an int32 errno)
follows; ``accept`` with nothing waiting returns EWOULDBLOCK and the reply ``{ nodeid= addr= }``
comes later, from a new node (the clone) that owns the accepted socket. A clone takes one hook of
any name; until it has one it is embryonic and goes when its parent does.

Where we go beyond FreeBSD: a zero-length item sent to a stream socket shuts its sending side
(so a relay passes an end of stream on); options shorter than an int are padded to one (Linux
wants an int); ``value`` is sized from what was written and ``getopt { level= name= }`` works;
symbolic levels and names (``SOL_SOCKET``, ``SO_REUSEADDR``) are read besides numbers.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import attrs
import trio

from netgraph import Cmd, Hook, Item, Message, NetgraphError, Node, tag, tags_of
from netgraph.parse import BYTES, HINT32, INT32, Fields, Int, Struct, field

from .sockaddr import GENERIC_SOCKADDR, SOCKADDR, SockAddr

KSOCKET_COOKIE: Final = 942710669
NGM_KSOCKET_BIND: Final = 1
NGM_KSOCKET_LISTEN: Final = 2
NGM_KSOCKET_ACCEPT: Final = 3
NGM_KSOCKET_CONNECT: Final = 4
NGM_KSOCKET_GETNAME: Final = 5
NGM_KSOCKET_GETPEERNAME: Final = 6
NGM_KSOCKET_SETOPT: Final = 7
NGM_KSOCKET_GETOPT: Final = 8

# The tag on items that carries a datagram's source (received) or destination (to send):
# (node ID, SockAddr). A destination applies when its ID is 0 or this node's.
SOCKADDR_TAG: Final = "sockaddr"
RECV_SIZE: Final = 65536
MAX_OPTION: Final = 1024

FAMILY_ALIASES: Final[dict[str, int]] = {
    "local": socket.AF_UNIX,
    "inet": socket.AF_INET,
    "inet6": socket.AF_INET6,
}
TYPE_ALIASES: Final[dict[str, int]] = {
    "stream": socket.SOCK_STREAM,
    "dgram": socket.SOCK_DGRAM,
    "raw": socket.SOCK_RAW,
    "rdm": socket.SOCK_RDM,
    "seqpacket": socket.SOCK_SEQPACKET,
}
_PROTOCOLS: Final = {
    "ip": 0, "raw": 255, "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50,
    "ah": 51, "swipe": 53, "encap": 98, "pim": 103, "divert": 258,
}  # fmt: skip
# Protocol aliases by family: FreeBSD has them for inet only; here inet6 has them too (10.8).
PROTOCOL_ALIASES: Final[dict[int, dict[str, int]]] = {
    socket.AF_INET: _PROTOCOLS,
    socket.AF_INET6: {**_PROTOCOLS, "icmp": 58, "icmp6": 58},
}


def parse_hook_name(name: str) -> tuple[int, int, int]:
    """``family/type/proto`` (aliases or decimal numbers; an empty part is 0) as numbers."""
    parts = name[:31].split("/", 2)
    if len(parts) != 3:
        raise NetgraphError(errno.EINVAL, f"ksocket hook {name!r} is not family/type/proto")

    def number(part: str, aliases: dict[str, int], what: str) -> int:
        if part in aliases:
            return aliases[part]
        if part == "":
            return 0
        if part.isdigit() and part.isascii():
            return int(part)
        raise NetgraphError(errno.EINVAL, f"ksocket hook {name!r}: unknown {what} {part!r}")

    family = number(parts[0], FAMILY_ALIASES, "family")
    kind = number(parts[1], TYPE_ALIASES, "socket type")
    proto = number(parts[2], PROTOCOL_ALIASES.get(family, {}), "protocol")
    return family, kind, proto


class SymbolicInt(Int):
    """An int32 that also reads the socket module's names with the given prefixes."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__(32, "int")
        self.prefixes = prefixes

    def convert(self, node: Any, fields: Fields) -> int:
        if getattr(node, "type", None) == "WORD":
            word = node.value
            if word.startswith(self.prefixes) and isinstance(getattr(socket, word, None), int):
                return int(getattr(socket, word))
        return super().convert(node, fields)


LEVEL: Final = SymbolicInt(("SOL_", "IPPROTO_"))
OPTION: Final = SymbolicInt(("SO_", "TCP_", "IP_", "IPV6_", "UDP_"))


@attrs.frozen
class SockOpt:
    level: int = field(LEVEL)
    name: int = field(OPTION)
    value: bytes = field(BYTES)


@attrs.frozen
class AcceptReply:
    nodeid: int = field(HINT32)
    addr: SockAddr = field(GENERIC_SOCKADDR, kw_only=True)  # no default: always given


_SOCKOPT: Final = Struct(SockOpt)


class KsocketNode(Node):
    typecookie = KSOCKET_COOKIE
    # rcvdata waits only on this node's socket (closed by shutdown) and on ``peered`` (set by
    # shutdown): no cancel scope per item is needed to release a sender.
    handlers_woken_by_close = True
    cmdlist = (
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_BIND, "bind", SOCKADDR, None,
            "Bind the socket to an address"),
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_LISTEN, "listen", INT32, None,
            "Listen for connections, with a backlog"),
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_ACCEPT, "accept", None, Struct(AcceptReply),
            "Take the next connection; a new node owns it"),
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_CONNECT, "connect", SOCKADDR, INT32,
            "Connect to an address (a reply follows for a stream socket)"),
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_GETNAME, "getname", None, SOCKADDR,
            "The socket's own address"),
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_GETPEERNAME, "getpeername", None, SOCKADDR,
            "The address of the connected peer"),
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_SETOPT, "setopt", _SOCKOPT, None,
            "Set a socket option: { level= name= value=[ ... ] }"),
        Cmd(KSOCKET_COOKIE, NGM_KSOCKET_GETOPT, "getopt", _SOCKOPT, _SOCKOPT,
            "Get a socket option: { level= name= }"),
    )  # fmt: skip

    def constructor(self) -> None:
        self.sock: socket.socket | None = None
        self.kind = 0
        self.stream = False
        self.cloned = False
        self.parent: KsocketNode | None = None
        self.embryos: set[KsocketNode] = set()
        self.connecting: tuple[Message, int] | None = None
        self.accepting: tuple[Message, int] | None = None
        self.eof_seen = False
        # Set once the socket has a peer: a stream socket reads only then; a datagram socket
        # tags what it reads with the source only until then.
        self.peered = trio.Event()
        self.failed = 0  # the errno of a connect that failed

    # ------------------------------------------------------------------------- hooks

    def newhook(self, hook: Hook) -> None:
        if self.hooks:
            raise NetgraphError(errno.EISCONN, f"ksocket {self.path} already has its hook")
        if self.cloned:
            return  # a clone's socket exists already; any hook name will do
        family, kind, proto = parse_hook_name(hook.name)
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as err:
            raise NetgraphError(err.errno or errno.EINVAL, f"socket({hook.name}): {err}") from None
        sock.setblocking(False)
        self.sock, self.kind = sock, kind
        self.stream = kind == socket.SOCK_STREAM

    def connect(self, hook: Hook) -> None:
        if self.parent is not None:
            self.parent.embryos.discard(self)  # hooked: no longer the parent's embryo
            self.parent = None
        self.start_task(self._receive, hook, self._socket())

    def shutdown(self) -> None:
        self.peered.set()  # senders held while connecting go on, and hear the socket is gone
        for embryo in list(self.embryos):
            self.graph.rmnode(embryo)
        if self.parent is not None:
            self.parent.embryos.discard(self)
        sock, self.sock = self.sock, None
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise NetgraphError(errno.ENXIO, f"ksocket {self.path} has no socket yet (no hook)")
        return self.sock

    # ------------------------------------------------------------------ socket to graph

    async def _receive(self, hook: Hook, sock: socket.socket) -> None:
        """What the socket receives goes out of the hook, until the stream ends."""
        stream = self.kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET)
        if stream and not self.peered.is_set():
            await self.peered.wait()  # a listening or unconnected stream socket reads nothing
        unyielding = 0  # reads in a row that did not have to wait (and so did not yield)
        while hook.peer is not None:
            try:
                if stream or self.peered.is_set():
                    data: Item = sock.recv(RECV_SIZE)
                    source = None
                else:
                    data, address = sock.recvfrom(RECV_SIZE)
                    source = SockAddr.from_python(sock.family, address)
            except (BlockingIOError, InterruptedError):
                unyielding = 0
                try:
                    await trio.lowlevel.wait_readable(sock)
                except (trio.ClosedResourceError, ValueError):
                    return  # shut down while waiting
                continue
            except OSError:
                if not stream:
                    self.stats.errors += 1  # e.g. an ICMP error for an earlier datagram
                    continue
                data, source = b"", None  # a reset or a timeout ends the stream too
            if source is not None:
                data = tag(data, **{SOCKADDR_TAG: (self.id, source)})
            if stream and not data:
                if not self.eof_seen:
                    self.eof_seen = True
                    await self._emit(hook, b"")
                return
            await self._emit(hook, data)
            unyielding += 1
            if unyielding >= 16:
                # A socket that always has more would otherwise never let other tasks run.
                unyielding = 0
                await trio.lowlevel.checkpoint()

    async def _emit(self, hook: Hook, data: Item) -> None:
        try:
            await self.emit(hook, data)
        except NetgraphError as err:
            # Whoever took the item failed; the socket goes on (and says so once).
            self.stats.errors += 1
            if err.errno == errno.ENOTCONN:
                return

    # ------------------------------------------------------------------ graph to socket

    async def rcvdata(self, hook: Hook, item: Item) -> None:
        sock = self.sock
        if sock is None:
            sock = self._socket()  # raises ENXIO
        if self.stream:
            if not item:
                try:
                    sock.shutdown(socket.SHUT_WR)  # the end of the stream, passed on
                except OSError as err:
                    raise NetgraphError(err.errno or errno.EIO, str(err)) from None
                return
            if not self.peered.is_set() and self.connecting is not None:
                # Connecting: hold the sender until the connection is made (or fails).
                await self.peered.wait()
            view = memoryview(item)
            while view:
                try:
                    sent = sock.send(view)
                except (BlockingIOError, InterruptedError):
                    await self._writable(sock)
                    continue
                except OSError as err:
                    code = err.errno or errno.EIO
                    if code == errno.EPIPE and (self.failed or not self.peered.is_set()):
                        code = errno.ENOTCONN  # never connected: FreeBSD says ENOTCONN
                    raise NetgraphError(code, f"send: {os.strerror(code)}") from None
                view = view[sent:]
            return
        destination = tags_of(item).get(SOCKADDR_TAG)
        address = None
        if destination is not None and destination[0] in (0, self.id):
            address = self._python_address(sock, destination[1])
        while True:
            try:
                if address is not None:
                    sock.sendto(item, address)
                else:
                    sock.send(item)
                return
            except (BlockingIOError, InterruptedError):
                await self._writable(sock)
            except OSError as err:
                raise NetgraphError(err.errno or errno.EIO, f"send: {err.strerror}") from None

    async def _writable(self, sock: socket.socket) -> None:
        try:
            await trio.lowlevel.wait_writable(sock)
        except (trio.ClosedResourceError, ValueError):
            self.stats.dropped += 1
            raise NetgraphError(errno.EIO, f"ksocket {self.path} shut down while sending") from None

    async def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        for item in items:
            await self.rcvdata(hook, item)

    # ------------------------------------------------------------------------ messages

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        if msg.typecookie != KSOCKET_COOKIE or msg.is_response:
            return super().rcvmsg(msg, retaddr, lasthook)
        handler = self._HANDLERS.get(msg.cmd)
        if handler is None:
            raise NetgraphError(errno.EINVAL, f"ksocket has no command {msg.cmd}")
        sock = self._socket()
        try:
            return handler(self, sock, msg, retaddr)
        except OSError as err:
            if isinstance(err, NetgraphError):
                raise
            raise NetgraphError(
                err.errno or errno.EINVAL, f"{msg.cmdstr}: {err.strerror}"
            ) from None

    @staticmethod
    def _address(msg: Message) -> SockAddr:
        if not isinstance(msg.args, SockAddr):
            raise NetgraphError(errno.EINVAL, f"{msg.cmdstr} takes a sockaddr")
        return msg.args

    def _bind(self, sock: socket.socket, msg: Message, retaddr: int) -> None:
        sock.bind(self._python_address(sock, self._address(msg)))

    def _listen(self, sock: socket.socket, msg: Message, retaddr: int) -> None:
        if not isinstance(msg.args, int):
            raise NetgraphError(errno.EINVAL, "listen takes a backlog (int32)")
        sock.listen(msg.args)

    def _python_address(self, sock: socket.socket, address: SockAddr) -> Any:
        if address.family != sock.family:
            raise NetgraphError(
                errno.EAFNOSUPPORT, f"a family {address.family} address for a family "
                f"{int(sock.family)} socket",
            )  # fmt: skip
        return address.to_python()

    def _connect(self, sock: socket.socket, msg: Message, retaddr: int) -> None:
        if self.connecting is not None:
            raise NetgraphError(errno.EALREADY, "a connect is already in progress")
        code = sock.connect_ex(self._python_address(sock, self._address(msg)))
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            self.connecting = (msg, retaddr)
            self.start_task(self._finish_connect, sock)
            raise NetgraphError(errno.EINPROGRESS, "the connect reply follows when it completes")
        if code:
            raise NetgraphError(code, "connect")
        self.peered.set()

    async def _finish_connect(self, sock: socket.socket) -> None:
        await trio.lowlevel.wait_writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        pending, self.connecting = self.connecting, None
        # Either way, senders held while connecting go on (to send, or to hear the error).
        self.peered.set()
        if code:
            self.failed = code
        if pending is not None:
            self.respond(pending[0], pending[1], code)

    def _accept(self, sock: socket.socket, msg: Message, retaddr: int) -> None:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise NetgraphError(errno.EINVAL, "accept needs a listening socket")
        if self.accepting is not None:
            raise NetgraphError(errno.EALREADY, "an accept is already waiting")
        # Saved before trying, so a connection already queued is reported (spec 10.8).
        self.accepting = (msg, retaddr)
        if self._take_connection(sock):
            return
        self.start_task(self._wait_connection, sock)
        raise NetgraphError(errno.EWOULDBLOCK, "the accept reply comes with the next connection")

    async def _wait_connection(self, sock: socket.socket) -> None:
        while self.accepting is not None:
            await trio.lowlevel.wait_readable(sock)
            self._take_connection(sock)

    def _take_connection(self, sock: socket.socket) -> bool:
        try:
            conn, address = sock.accept()
        except (BlockingIOError, InterruptedError):
            return False
        conn.setblocking(False)
        clone = self.graph.make_node(self.type_name)
        assert isinstance(clone, KsocketNode)
        clone.sock, clone.kind, clone.cloned, clone.parent = conn, self.kind, True, self
        clone.stream = self.stream
        clone.peered.set()
        self.embryos.add(clone)
        pending, self.accepting = self.accepting, None
        assert pending is not None
        peer = SockAddr.from_python(conn.family, address or "")
        clone.respond(pending[0], pending[1], AcceptReply(clone.id, addr=peer))
        return True

    def _getname(self, sock: socket.socket, msg: Message, retaddr: int) -> SockAddr:
        return SockAddr.from_python(sock.family, sock.getsockname())

    def _getpeername(self, sock: socket.socket, msg: Message, retaddr: int) -> SockAddr:
        if self.connecting is not None:
            raise NetgraphError(errno.ENOTCONN, "the connect is still in progress")
        return SockAddr.from_python(sock.family, sock.getpeername())

    def _setopt(self, sock: socket.socket, msg: Message, retaddr: int) -> None:
        opt = msg.args
        if not isinstance(opt, SockOpt):
            raise NetgraphError(errno.EINVAL, "setopt takes { level= name= value=[ ... ] }")
        value = opt.value if len(opt.value) >= 4 else opt.value.ljust(4, b"\0")
        sock.setsockopt(opt.level, opt.name, value)

    def _getopt(self, sock: socket.socket, msg: Message, retaddr: int) -> SockOpt:
        opt = msg.args
        if not isinstance(opt, SockOpt):
            raise NetgraphError(errno.EINVAL, "getopt takes { level= name= }")
        value = sock.getsockopt(opt.level, opt.name, MAX_OPTION)
        return SockOpt(opt.level, opt.name, value)

    _HANDLERS: ClassVar[dict[int, Any]] = {
        NGM_KSOCKET_BIND: _bind,
        NGM_KSOCKET_LISTEN: _listen,
        NGM_KSOCKET_ACCEPT: _accept,
        NGM_KSOCKET_CONNECT: _connect,
        NGM_KSOCKET_GETNAME: _getname,
        NGM_KSOCKET_GETPEERNAME: _getpeername,
        NGM_KSOCKET_SETOPT: _setopt,
        NGM_KSOCKET_GETOPT: _getopt,
    }


__all__ = ["SOCKADDR_TAG", "AcceptReply", "KsocketNode", "SockOpt", "parse_hook_name"]
