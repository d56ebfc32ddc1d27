"""``tcp``: the TCP node, a thin trio shell around the sans-IO core (spec tcp.md, sections 1-2).

One tcp node sits on an ip node's ``tcp`` hook by its own hook ``ip``, as V10's ``tcp_ld`` is
pushed on an IP stream; IPv4 and IPv6 alike. Every other hook is a *channel*, one connection or
listener, like V10's ``/dev/tcpNN``. The messages (:mod:`nodes.tcp.messages`) are V10's
``struct tcpuser`` in netgraph's ASCII form::

    connect { channel="c1" faddr=192.0.2.2 fport=80 laddr=0.0.0.0 lport=0 param=0 }
        -> (when set up or failed) { code=3 channel="c1" lport=50123 fport=80
                                     laddr=192.0.2.1 faddr=192.0.2.2 }
    listen { channel="l1" laddr=0.0.0.0 lport=80 }    -> { code=3 channel="l1" lport=80 ... }
    newcall { code=3 channel="call7" lport=80 fport=50123 laddr=... faddr=... param=7 }
        (sent to the listener's owner: connect a hook named "call7" to take the stream)
    hup { code=3 channel="c1" ... param=0 }   (FIN; code=4 and param=ECONNRESET: a reset)
    getaddr "c1", maxseg "c1", reset "c1", setopt { channel="c1" name="nodelay" value=1 },
    getopt { channel="c1" name="rcvbuf" }, getstats, clrstats, getclrstats,
    getstack "c1", setstack { channel="c1" stack="newreno" }

Data on a channel hook is the byte stream. A zero-length item sent up a channel is the end of
the stream (the peer's FIN); one that also carries the tag ``error`` (an errno) says the
connection was reset or timed out (a node that ignores tags sees an end of stream, as ksocket
gives one on a reset). A zero-length item sent down a channel half-closes it (FIN after the
queued data); removing the channel hook closes the connection (an orderly FIN; a reset if
received data was left unread, RFC 1122 4.2.2.13 and RFC 2525 2.17: in the core, or delivered
into a socket node's inbox that its owner never took), which lingers in the node until CLOSED
or the end of TIME_WAIT; ``reset`` aborts it.

A channel carries one call: ``connect`` or ``listen`` on a channel that has had one is
TCPC_BADDEV (as on a name with no hook, or on ``ip``). A listener's ``laddr`` left out takes
calls to any address; ``0.0.0.0`` any IPv4 address, ``::`` any IPv6 address; a specific
address (one of the ip node's, or TCPC_BADLOCAL) wins over those. ``lport=0`` lets the node
pick; ``param`` is the backlog (half-open calls plus calls not hooked up yet; 0: 128); SYNs
beyond it are dropped (the peer retries). Options set on a listening channel apply to its calls.

Owners and notifications
========================

The node that sent ``connect`` or ``listen`` owns the channel. ``newcall`` goes to a listener's
owner when a call completes its handshake; the new channel keeps what arrives (bounded by the
receive window: nothing is read from the core until the hook exists) until a hook of that name
is connected. ``hup`` goes to the node holding the channel (the peer of its hook), or to the
owner while there is no hook, once, when the remote end goes away (FIN, RST or a timeout).
Notifications are ordinary messages (NGF_ORIG), queued at their target as replies are.

Theory of operation
===================

Demultiplexing
    A batch from ``ip`` is handled in one pass: each segment's connection is found by its
    4-tuple (the ``dst``/``src`` tags and the header's ports; the ip node shares one tags
    mapping per flow, so a run of segments of one flow is looked up once). A segment no
    connection takes goes to the most specific listener of its port (address, then the
    family's any, then any at all), whose SYN backlog is bounded; otherwise it is answered with
    the reset RFC 9293 3.10.7.1 asks for (:func:`nodes.tcp.connection.stray_reset`). ICMP errors
    (the ``icmp_type`` tag) go to the connection their quote names, when the quoted sequence
    number is in flight (RFC 5927): a destination unreachable during SYN_SENT fails the call
    with TCPC_NOROUTE; other errors are soft (remembered and reported if the connection then
    times out); packet-too-big is counted (the core has no path-MTU input yet).

Output, batched
    After a batch, each connection it touched is asked once for ``segments_to_send``; its
    segments go down ``ip`` as one batch of Tagged items (``dst``, ``src``: one tags mapping per
    connection, shared). The core checksums them. Sending never waits on an application.

Timers
    One task for the whole node sleeps in a cancel scope whose deadline is the top of a heap of
    ``(deadline, seq, connection)``. An earlier deadline moves the scope's deadline (no event,
    no task per connection, no tick). Entries are invalidated lazily: a connection's heap entry
    is live only while it equals ``conn.scheduled``; a deadline that moved later is found when
    its old entry pops, and pushed again. Route lookups wait in the same heap.

Backpressure, sending side
    What a channel's peer sends goes into the core's send buffer; what does not fit waits in
    the connection's *backlog* (a FIFO of items, the end-of-stream marker included), which is
    fed to the core before every output, so after every batch of ACKs. ``rcvdata`` is a
    coroutine: a sender in a task of its own waits (a ``trio.Event`` per connection) until
    its item has left the backlog, so it is held while the buffer is full and no user data is
    dropped; concurrent senders keep their order and never interleave within an item. An item
    that reached the node through the node's own queue (the engine queues at a busy node; its
    sender has moved on already) is only appended: the queue's runner must never wait, or the
    ACKs that would make room could queue up behind it. Removing the hook closes the
    connection once its backlog has gone into the core (the FIN follows the last byte).

Backpressure, receiving side
    Received data is delivered up a channel by a task of that channel, which wakes on the
    core's DataReady, reads what is readable as one item and awaits ``emit``. What is read
    counts as consumed for the core, which reopens the window, so what has been delivered but
    not consumed by the application is bounded, by one receive buffer (``rcvbuf``), per kind
    of channel peer:

    * a node whose ``rcvdata`` takes its time (awaits): while the peer is slow that await
      holds the task, nothing more is read from the core, and the window closes. At most one
      read (at most one receive buffer) is on its way to the peer beyond the window;
    * a socket node (a :class:`~nodes.tcp.stream.TcpStream`, a program's hook): its
      ``rcvdata`` only appends to its owner's inbox, bounded in items (256 of any size), not
      bytes, so awaiting it bounds nothing. The task reads from the core only as much as keeps
      this channel's bytes in that inbox within one receive buffer (all that is readable if it
      fits, else the room left, and nothing while the room is under a quarter of a buffer: no
      trickle of small items); without room it waits for the owner to take an item (the
      socket node's ``data_room`` event, or its channel being woken: hook gone, shutdown).
      The inbox is the application's socket buffer: what is in it is not consumed. A stream
      holds at most one item more (what ``receive_some`` took and has not returned yet).

    Either way a reader that stops closes the window after about two receive buffers (the
    core's and the one outside it). Segments from ``ip`` are never held up by an application.

Re-entrancy
    ``rcvdata``/``rcvbatch`` are coroutines (the channels need them), so the node's handlers
    may be re-entered while they await an ``emit`` (an ACK that a send provoked, coming back
    through a plain path of nodes in the same task). Every handler does all its work on the core
    synchronously and awaits only to send what it has collected, so state is consistent at
    every await. ``readers_block_writers`` is off: control messages (``reset``, ``connect``...)
    never wait for a sender that waits for buffer room.

Addresses, routes and MSS
    ``connect`` asks the ip node for the route to ``faddr`` with its ``getroute`` message: the
    reply (queued back to this node) gives the source address when ``laddr`` is any, and the
    path MTU, from which the core announces its MSS (RFC 6691). A ``laddr`` that is not the ip
    node's is found when the SYN is sent (the ip node refuses it: TCPC_BADLOCAL); no route is
    TCPC_NOROUTE; ``listen`` on a specific address checks it with ``listaddrs``. Passive opens
    announce the MSS from the MTU of the link the SYN came in on (the ip node's ``link`` tag;
    RFC 6691), and the MSS clamp (option ``maxseg``). The node caches each link's MTU, asked of
    the ip node with ``getmtu`` (queued at it, never waited for): the SYN path stays
    synchronous and costs one dict lookup. Only the first SYNs from a link never seen wait for
    the answer (at most 64 per link, held a second at most, then taking the listener's
    configuration, MTU 1500); an entry older than 30 s is still used while it is asked again,
    so a changed link MTU is seen within that time. A SYN without the tag (a tcp node not on
    an ip node) takes the listener's configuration. The ip node fragments for a narrower
    path.
    Ephemeral ports are chosen as RFC 6056's algorithm 1 does (a random start in
    49152-65535, then the first port free for the 4-tuple).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import math
import os
import random
import struct
from collections import deque
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Any, ClassVar, Final

import attrs
import trio

from netgraph import Hook, Item, Message, NetgraphError, Node, Tagged, delivery, tag
from netgraph.socket import SocketNode

from ..ip.messages import (
    IP_COOKIE,
    NGM_IP_GETMTU,
    NGM_IP_GETROUTE,
    NGM_IP_LISTADDRS,
    AddrList,
    LinkEntry,
    RouteInfo,
)
from . import events as ev
from .connection import Connection, Listener, stray_reset
from .messages import (
    CMDLIST,
    DEFAULT_BACKLOG,
    NGM_TCP_CLRSTATS,
    NGM_TCP_CONNECT,
    NGM_TCP_GETADDR,
    NGM_TCP_GETCLRSTATS,
    NGM_TCP_GETOPT,
    NGM_TCP_GETSTACK,
    NGM_TCP_GETSTATS,
    NGM_TCP_HUP,
    NGM_TCP_LISTEN,
    NGM_TCP_MAXSEG,
    NGM_TCP_NEWCALL,
    NGM_TCP_RESET,
    NGM_TCP_SETOPT,
    NGM_TCP_SETSTACK,
    SO_KEEPALIVE,
    TCP_COOKIE,
    TCPC_BADDEV,
    TCPC_BADLOCAL,
    TCPC_BOUND,
    TCPC_NOROUTE,
    TCPC_OK,
    TCPC_SORRY,
    ChanOpt,
    StackArg,
    TcpStats,
    TcpUser,
)
from .segment import ACK, MASK, RST, SYN
from .stack import REGISTRY, StackRegistry
from .tcb import Config, State

__all__ = ["ERROR_TAG", "IP_HOOK", "TcpNode"]

IP_HOOK: Final = "ip"
# The tag on a zero-length item sent up a channel when the connection was reset or timed out.
ERROR_TAG: Final = "error"

EPHEMERAL_LOW: Final = 49152
EPHEMERAL_HIGH: Final = 65535
LOOKUP_TIMEOUT: Final = 5.0  # seconds a connect or listen waits for the ip node's answer
MAX_BACKLOG: Final = 65535
MTU_TTL: Final = 30.0  # seconds a link's MTU is used before it is asked again (used meanwhile)
MTU_LOOKUP_TIMEOUT: Final = 1.0  # seconds SYNs wait for a link's first MTU, then take 1500
MAX_HELD: Final = 64  # SYNs per link waiting for its first MTU; more are dropped

CLOSED: Final = State.CLOSED
SYN_SENT: Final = State.SYN_SENT
ESTABLISHED: Final = State.ESTABLISHED

_PORTS: Final = struct.Struct("!HH")
_QUOTE: Final = struct.Struct("!HHI")
_BROADCAST: Final = IPv4Address("255.255.255.255")

# Phases of a connection in the shell (its TCP state is the core's).
ACTIVE: Final = 0  # made by connect
HALF_OPEN: Final = 1  # made by a listener's SYN, handshake not complete
UNACCEPTED: Final = 2  # established, its channel waiting for a hook
ACCEPTED: Final = 3  # established and hooked (or was)

Address = IPv4Address | IPv6Address
Key = tuple[Address, int, Address, int]  # local address, local port, remote address, port

# Channel options: the name in setopt/getopt -> (Config field, to the config, from it).
_OPTIONS: Final[dict[str, tuple[str, Callable[[int], Any], Callable[[Any], int]]]] = {
    "nodelay": ("nodelay", bool, int),
    "keepalive": ("keepalive", bool, int),
    "keepidle": ("keepidle", float, int),
    "keepintvl": ("keepintvl", float, int),
    "keepcnt": ("keepcnt", int, int),
    "sndbuf": ("sndbuf", int, int),
    "rcvbuf": ("rcvbuf", int, int),
    "maxseg": ("mss_clamp", lambda v: v or None, lambda v: v or 0),
    "user_timeout": (
        "user_timeout",
        lambda v: v / 1000.0 if v else None,
        lambda v: round(v * 1000) if v else 0,
    ),
}
_OPTION_ALIASES: Final = {
    "TCP_NODELAY": "nodelay",
    "SO_KEEPALIVE": "keepalive",
    "TCP_KEEPIDLE": "keepidle",
    "TCP_KEEPINTVL": "keepintvl",
    "TCP_KEEPCNT": "keepcnt",
    "SO_SNDBUF": "sndbuf",
    "SO_RCVBUF": "rcvbuf",
    "TCP_MAXSEG": "maxseg",
    "TCP_USER_TIMEOUT": "user_timeout",
}

# The core's per-connection counters summed into getstats (TcpStats field <- Stats field).
_CORE_STATS: Final = (
    ("bad_checksum", "bad_checksum"),
    ("malformed", "malformed"),
    ("paws_dropped", "paws_dropped"),
    ("out_of_window", "out_of_window"),
    ("challenge_acks", "challenge_acks"),
    ("retransmits", "retransmits"),
    ("rexmt_timeouts", "timeouts"),
    ("fast_retransmits", "fast_retransmits"),
    ("sack_recoveries", "sack_recoveries"),
    ("dupacks", "dupacks"),
    ("ooo_segments", "ooo_segments"),
    ("ooo_dropped", "ooo_dropped"),
    ("persist_probes", "persist_probes"),
    ("keepalive_probes", "keepalive_probes"),
    ("rst_sent", "rst_sent"),
)
_CORE_FIELDS: Final = frozenset(name for name, _ in _CORE_STATS)
_NODE_FIELDS: Final = tuple(a.name for a in attrs.fields(TcpStats) if a.name not in _CORE_FIELDS)

# ICMP errors: (IPv6?, type) of destination unreachable and packet too big.
_ICMP4_UNREACH: Final = 3
_ICMP4_FRAG_NEEDED: Final = 4  # code of type 3
_ICMP6_UNREACH: Final = 1
_ICMP6_TOO_BIG: Final = 2
_ICMP4_ERRNO: Final = {
    0: errno.ENETUNREACH,
    1: errno.EHOSTUNREACH,
    2: errno.ENOPROTOOPT,
    3: errno.ECONNREFUSED,
    6: errno.ENETUNREACH,
    7: errno.EHOSTUNREACH,
}
_ICMP6_ERRNO: Final = {
    0: errno.ENETUNREACH,
    1: errno.EACCES,
    3: errno.EHOSTUNREACH,
    4: errno.ECONNREFUSED,
}


def _is_any(addr: Address | None) -> bool:
    return addr is None or addr.is_unspecified


class Conn:
    """The shell's side of one connection: the core, its 4-tuple, and where it belongs."""

    __slots__ = (
        "appended",
        "backlog",
        "channel",
        "close_pending",
        "connect",
        "consumed",
        "core",
        "error",
        "fail",
        "fed",
        "hup_sent",
        "key",
        "listener",
        "phase",
        "scheduled",
        "shut",
        "soft_error",
        "tags",
    )

    def __init__(self, core: Connection, key: Key, phase: int) -> None:
        self.core = core
        self.key = key
        local, _, remote, _ = key
        self.tags = MappingProxyType({"dst": remote, "src": local})
        self.phase = phase
        self.channel: Channel | None = None
        self.listener: Listen | None = None
        # A connect waiting for its answer: (request, retaddr, its arguments).
        self.connect: tuple[Message, int, TcpUser] | None = None
        self.fail: tuple[int, int] | None = None  # TCPC code and errno, if the call failed
        self.error = 0  # errno of a reset, timeout or local abort
        self.soft_error = 0  # the last ICMP soft error (RFC 1122 4.2.3.9)
        self.scheduled: float | None = None  # its live entry in the timer heap
        self.hup_sent = False
        # User bytes the send buffer has not taken yet, in order (None: the end of stream).
        self.backlog: deque[memoryview | bytes | None] = deque()
        self.appended = 0  # backlog entries ever appended...
        self.consumed = 0  # ...and ever taken (or dropped by a reset)
        self.fed: trio.Event | None = None  # senders wait on it for their entry to be taken
        self.shut = False  # the channel's peer sent the end of the stream
        self.close_pending = False  # the hook went: close once the backlog is in


class Listen:
    """A listening channel: the core's LISTEN state and the calls it has made."""

    __slots__ = ("backlog", "calls", "channel", "core", "embryos", "laddr", "lport", "mtu_base",
                 "mtu_configs", "owner", "unaccepted")  # fmt: skip

    def __init__(
        self, core: Listener, channel: Channel, laddr: Address | None, lport: int, owner: int,
        backlog: int,
    ) -> None:  # fmt: skip
        self.core = core
        self.channel = channel
        self.laddr = laddr
        self.lport = lport
        self.owner = owner
        self.backlog = backlog
        self.embryos: set[Conn] = set()  # half-open
        self.unaccepted: dict[str, Channel] = {}  # reported by newcall, not hooked yet
        self.calls = 0
        self.mtu_base = channel.config  # the channel's configuration the next ones derive from
        self.mtu_configs: dict[int, Config] = {}  # link MTU -> that configuration with it

    def config_for(self, mtu: int) -> Config:
        """The channel's configuration with the MTU of the link a SYN came in on (0: as is)."""
        base = self.channel.config
        if not mtu or mtu == base.mtu:
            return base
        if base is not self.mtu_base:  # setopt or setstack changed it
            self.mtu_base = base
            self.mtu_configs.clear()
        config = self.mtu_configs.get(mtu)
        if config is None:
            config = attrs.evolve(base, mtu=min(max(mtu, 68), 65535))
            self.mtu_configs[mtu] = config
        return config

    def rank(self, dst: Address) -> int:
        """How well this listener's address matches ``dst``: -1 not at all, 2 exactly."""
        laddr = self.laddr
        if laddr is None:
            return 0
        if laddr.is_unspecified:
            return 1 if laddr.version == dst.version else -1
        return 2 if laddr == dst else -1

    def overlaps(self, addr: Address | None) -> bool:
        mine = self.laddr
        if mine is None or addr is None:
            return True
        if mine.version != addr.version:
            return False
        return mine.is_unspecified or addr.is_unspecified or mine == addr


class Lookup:
    """A connect or listen waiting for the ip node's answer (a route, or its addresses)."""

    __slots__ = ("args", "channel", "kind", "request", "retaddr", "scheduled", "token")

    def __init__(
        self, token: int, kind: int, channel: Channel, request: Message, retaddr: int,
        args: TcpUser,
    ) -> None:  # fmt: skip
        self.token = token
        self.kind = kind
        self.channel = channel
        self.request = request
        self.retaddr = retaddr
        self.args = args
        self.scheduled: float | None = None


class MtuQuery:
    """A ``getmtu`` asked of the ip node for a link a SYN came in on, and the SYNs waiting for
    its answer (only the first SYNs from a link not seen yet wait)."""

    __slots__ = ("held", "link", "scheduled", "token")

    def __init__(self, token: int, link: str) -> None:
        self.token = token
        self.link = link
        self.held: list[Item] = []
        self.scheduled: float | None = None


class Channel:
    """A hook other than ``ip`` (or the name of one to come): idle, a connection or a
    listener."""

    __slots__ = ("config", "conn", "delivering", "end_sent", "hook", "listen", "lookup", "name",
                 "owner", "sink", "stall", "wake")  # fmt: skip

    def __init__(self, name: str, config: Config) -> None:
        self.name = name
        self.config = config
        self.hook: Hook | None = None
        self.conn: Conn | None = None
        self.listen: Listen | None = None
        self.lookup: Lookup | None = None
        self.owner = 0  # node ID: who sent connect or listen (for accepted calls, the listener's)
        self.delivering = False
        self.end_sent = False
        self.wake: trio.Event | None = None  # the delivery task waits on it
        # The peer's inbox when the peer is a socket node: (the node, its hook's name).
        self.sink: tuple[SocketNode, str] | None = None
        self.stall: trio.CancelScope | None = None  # a delivery waiting for room in the sink

    @property
    def idle(self) -> bool:
        return self.conn is None and self.listen is None and self.lookup is None


def _need(args: Any, kind: type, msg: Message) -> Any:
    if not isinstance(args, kind):
        raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: the argument is a {kind.__name__}")
    return args


class TcpNode(Node):
    """TCP for the ip node below it; one channel per connection or listener (see module)."""

    typecookie = TCP_COOKIE
    cmdlist = CMDLIST
    # Senders waiting for buffer room must not hold up control messages (reset, connect...).
    readers_block_writers = False
    # Handlers wait only on this node's events, which disconnect and shutdown set.
    handlers_woken_by_close = True

    _CONNECT: ClassVar[int] = 0
    _LISTEN: ClassVar[int] = 1

    def constructor(self) -> None:
        self.ip_hook: Hook | None = None
        self.channels: dict[str, Channel] = {}
        self.conns: dict[Key, Conn] = {}
        self.listeners: dict[int, list[Listen]] = {}
        self.lookups: dict[int, Lookup] = {}
        self.port_refs: dict[int, int] = {}  # local port -> connections using it
        self.registry: StackRegistry = REGISTRY
        self.secret = os.urandom(16)  # RFC 6528's key for ISNs and timestamp offsets
        self.rng = random.Random(os.urandom(16))
        self.default_config = Config()
        self.counts: dict[str, int] = dict.fromkeys(_NODE_FIELDS, 0)
        self.closed_stats: dict[str, int] = dict.fromkeys(_CORE_FIELDS, 0)
        self.heap: list[tuple[float, int, Any]] = []
        self.link_mtus: dict[str, tuple[int, float]] = {}  # link -> (MTU or 0, when learnt)
        self.mtu_queries: dict[int, MtuQuery] = {}  # by token
        self.mtu_asking: dict[str, MtuQuery] = {}  # by link
        self._seq = itertools.count()
        self._sleep: trio.CancelScope | None = None
        self._wake_at = math.inf
        self._tokens = itertools.count(1)
        self._calls = itertools.count(1)
        self.tasks = 1  # running: the timer task, and a delivery task per hooked connection
        self.start_task(self._timer)

    # ------------------------------------------------------------------------------ hooks

    def newhook(self, hook: Hook) -> None:
        if hook.name == IP_HOOK:
            hook.private = None
            return
        ch = self.channels.get(hook.name)
        if ch is None:
            ch = self.channels[hook.name] = Channel(hook.name, self.default_config)
        elif ch.hook is not None:  # pragma: no cover - the graph refuses a second hook
            raise NetgraphError(errno.EEXIST, f"channel {hook.name!r} is in use")
        ch.hook = hook
        hook.private = ch
        conn = ch.conn
        if conn is not None and conn.phase == UNACCEPTED:
            lst = conn.listener
            if lst is not None:
                lst.unaccepted.pop(ch.name, None)
            conn.phase = ACCEPTED

    def connect(self, hook: Hook) -> None:
        if hook.name == IP_HOOK:
            self.ip_hook = hook
            self.link_mtus.clear()  # another ip node: its links may differ
            return
        self._start_delivery(hook.private)

    def disconnect(self, hook: Hook) -> None:
        ch: Channel | None = hook.private
        if ch is None:
            if self.ip_hook is hook:
                self.ip_hook = None
            return
        if ch.hook is not hook:
            return
        ch.hook = None
        if self.channels.get(ch.name) is ch:
            del self.channels[ch.name]
        self._wake_channel(ch)
        lookup = ch.lookup
        if lookup is not None:
            ch.lookup = None
            self.lookups.pop(lookup.token, None)
            lookup.scheduled = None
            self._reply(lookup.request, lookup.retaddr, lookup.args, TCPC_SORRY, errno.ECONNABORTED)
        if ch.listen is not None:
            self._stop_listen(ch.listen)
        conn = ch.conn
        if conn is not None:
            if conn.core.state != CLOSED and self.is_valid:
                if conn.connect is not None:
                    conn.fail = (TCPC_SORRY, errno.ECONNABORTED)
                    conn.backlog.clear()
                if self._unread(ch):
                    # Data delivered into the peer's inbox was never taken: it is thrown away,
                    # so the remote end must hear a reset, not an orderly end (RFC 1122
                    # 4.2.2.13, RFC 2525 2.17), as when it is still in the core.
                    conn.core.abort()
                elif conn.backlog:
                    conn.close_pending = True  # the FIN follows what the peer sent
                else:
                    conn.core.close()
                self._send_now(conn, self._output(conn, trio.current_time()))
            conn.channel = None

    def shutdown(self) -> None:
        for ch in self.channels.values():
            self._wake_channel(ch)
        self.heap.clear()

    # -------------------------------------------------------------------------------- data

    async def rcvdata(self, hook: Hook, item: Item) -> None:
        ch: Channel | None = hook.private
        if ch is None:
            await self._from_ip((item,))
        else:
            await self._from_user(ch, item)

    async def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        ch: Channel | None = hook.private
        if ch is None:
            await self._from_ip(items)
        else:
            for item in items:
                await self._from_user(ch, item)

    # ------------------------------------------------------------------------- from ip

    async def _from_ip(self, items: Sequence[Item]) -> None:
        """Demultiplex a batch from the ip node; then send what the connections have."""
        now = trio.current_time()
        touched, strays = self._demux(items, now)
        for conn in touched:
            out = self._output(conn, now)
            if out:
                await self._emit(conn, out)
        if strays:
            await self._emit(None, strays)

    def _demux(self, items: Sequence[Item], now: float) -> tuple[dict[Conn, None], list[Item]]:
        """Hand each segment to its connection or listener: the connections touched, and the
        resets (and segments of a TIME_WAIT a SYN ended) to send."""
        counts = self.counts
        conns = self.conns
        touched: dict[Conn, None] = {}
        strays: list[Item] = []
        last_tags: Any = None
        last_ports = -1
        last: Conn | None = None
        for item in items:
            tags = getattr(item, "tags", None)
            if tags is None:
                counts["bad_tags"] += 1
                continue
            if "icmp_type" in tags:
                self._icmp(item, tags, touched)
                continue
            counts["segs_in"] += 1
            if len(item) < 20:
                counts["short"] += 1
                continue
            ports = (item[0] << 24) | (item[1] << 16) | (item[2] << 8) | item[3]
            if tags is last_tags and ports == last_ports and last is not None:
                conn: Conn | None = last
            else:
                try:
                    key = (tags["dst"], ports & 0xFFFF, tags["src"], ports >> 16)
                except KeyError:
                    counts["bad_tags"] += 1
                    continue
                conn = conns.get(key)
                last_tags, last_ports, last = tags, ports, conn
            if conn is not None:
                if not conn.core.receive(item, now):
                    touched[conn] = None
                    continue
                # A new SYN ended TIME_WAIT: the connection is gone, the SYN is a listener's.
                self._events(conn)
                strays.extend(self._output(conn, now))
                last = None
            self._unmatched(item, tags, ports, now, touched, strays)
            last_tags = None
        return touched, strays

    def _unmatched(
        self, item: Item, tags: Any, ports: int, now: float, touched: dict[Conn, None],
        strays: list[Item],
    ) -> None:  # fmt: skip
        """A segment for no connection: a listener's, or answered with a reset."""
        counts = self.counts
        src, dst = tags["src"], tags["dst"]
        sport, dport = ports >> 16, ports & 0xFFFF
        lst = self._find_listener(dst, dport)
        if lst is None:
            counts["no_listener"] += 1
            reset = stray_reset(item, dst, src)
            if reset is not None:
                strays.append(self._tagged_one(reset, src, dst))
                counts["resets_sent"] += 1
            return
        flags = item[13]
        if flags & SYN and not flags & (ACK | RST):
            if dst.is_multicast or dst == _BROADCAST:
                counts["bad_dst"] += 1  # RFC 9293 3.10.7.2: a SYN to a group is ignored
                return
            if len(lst.embryos) + len(lst.unaccepted) >= lst.backlog:
                counts["backlog_full"] += 1  # dropped: the peer sends its SYN again
                return
            link = tags.get("link")
            mtu = 0
            if link is not None and self.ip_hook is not None:
                found = self._link_mtu(link, item, now)
                if found is None:
                    return  # held until the ip node tells the link's MTU (or dropped)
                mtu = found
            lst.core.config = lst.config_for(mtu)
        core, reset = lst.core.receive(item, (dst, dport), (src, sport), now)
        if reset is not None:
            strays.append(self._tagged_one(reset, src, dst))
            counts["resets_sent"] += 1
        if core is None:
            if reset is None:
                counts["listener_dropped"] += 1
            return
        conn = Conn(core, (dst, dport, src, sport), HALF_OPEN)
        conn.listener = lst
        lst.embryos.add(conn)
        self._register(conn)
        counts["passive_opens"] += 1
        touched[conn] = None

    def _link_mtu(self, link: str, syn: Item, now: float) -> int | None:
        """The MTU of the link a SYN came in on (0: unknown, the listener's is used), or None
        when the SYN waits for the ip node's answer (the link is new) or is dropped."""
        known = self.link_mtus.get(link)
        if known is not None and now - known[1] < MTU_TTL:
            return known[0]
        query = self.mtu_asking.get(link)
        if query is None:
            query = self._ask_mtu(link, now)
            if query is None:
                return self.link_mtus[link][0]  # the ip node refused: not asked again soon
        if known is not None:
            return known[0]  # stale, refreshed meanwhile
        if len(query.held) >= MAX_HELD:
            self.counts["backlog_full"] += 1
            return None
        query.held.append(syn)
        return None

    def _ask_mtu(self, link: str, now: float) -> MtuQuery | None:
        token = next(self._tokens) & 0x7FFFFFFF or 1
        query = MtuQuery(token, link)
        msg = Message(IP_COOKIE, NGM_IP_GETMTU, link, "getmtu", 0, token)
        try:
            # Queued at the ip node, as notifications go: never run here, so this works in a
            # coroutine handler too, and the SYN path never waits; the answer comes to rcvmsg.
            target, lasthook = self.graph.resolve(self, IP_HOOK)
            delivery.enqueue_nowait(target, (delivery.MSG, msg, (lasthook, self.id, None), None))
        except NetgraphError:
            known = self.link_mtus.get(link)
            self.link_mtus[link] = (known[0] if known is not None else 0, now)
            return None
        self.mtu_queries[token] = query
        self.mtu_asking[link] = query
        self._schedule(query, now + MTU_LOOKUP_TIMEOUT)
        return query

    def _mtu_answer(self, query: MtuQuery, mtu: int) -> list[tuple[Conn | None, list[Item]]]:
        """The ip node told a link's MTU (0: it did not): learn it, and take the SYNs that
        waited for it; returns what to send."""
        self.mtu_queries.pop(query.token, None)
        if self.mtu_asking.get(query.link) is query:
            del self.mtu_asking[query.link]
        query.scheduled = None
        now = trio.current_time()
        if mtu or query.link not in self.link_mtus:
            self.link_mtus[query.link] = (mtu, now)
        else:  # no answer: keep what was known, for a while
            self.link_mtus[query.link] = (self.link_mtus[query.link][0], now)
        held, query.held = query.held, []
        if not held or not self.is_valid:
            return []
        self.counts["segs_in"] -= len(held)  # counted when they came
        touched, strays = self._demux(held, now)
        sends: list[tuple[Conn | None, list[Item]]] = [
            (conn, self._output(conn, now)) for conn in touched
        ]
        sends.append((None, strays))
        return sends

    def _find_listener(self, dst: Address, dport: int) -> Listen | None:
        candidates = self.listeners.get(dport)
        if not candidates:
            return None
        best, best_rank = None, -1
        for lst in candidates:
            rank = lst.rank(dst)
            if rank > best_rank:
                best, best_rank = lst, rank
        return best

    def _icmp(self, item: Item, tags: Any, touched: dict[Conn, None]) -> None:
        """An ICMP error about a segment we sent (RFC 5927 checks, RFC 1122 4.2.3.9)."""
        counts = self.counts
        counts["icmp_in"] += 1
        src, dst = tags.get("src"), tags.get("dst")
        if len(item) < 8 or src is None or dst is None:
            counts["icmp_ignored"] += 1
            return
        sport, dport, seq = _QUOTE.unpack_from(item)
        conn = self.conns.get((src, sport, dst, dport))
        if conn is None:
            counts["icmp_ignored"] += 1
            return
        tcb = conn.core.tcb
        flight = (tcb.snd_max - tcb.snd_una) & MASK
        if not flight or ((seq - tcb.snd_una) & MASK) >= flight:
            counts["icmp_ignored"] += 1  # not about anything in flight: maybe forged
            return
        kind, code = tags.get("icmp_type"), tags.get("icmp_code")
        v6 = isinstance(src, IPv6Address)
        if (v6 and kind == _ICMP6_TOO_BIG) or (
            not v6 and kind == _ICMP4_UNREACH and code == _ICMP4_FRAG_NEEDED
        ):
            counts["icmp_mtu"] += 1  # the ip node fragments meanwhile (see the module doc)
            return
        unreach = kind == (_ICMP6_UNREACH if v6 else _ICMP4_UNREACH)
        table = _ICMP6_ERRNO if v6 else _ICMP4_ERRNO
        err = table.get(code, errno.EHOSTUNREACH) if unreach else errno.EHOSTUNREACH
        conn.soft_error = err
        if unreach and conn.core.state == SYN_SENT:
            counts["icmp_hard"] += 1
            conn.fail = (TCPC_NOROUTE, err)
            conn.error = err
            conn.core.abort()
            touched[conn] = None
        else:
            counts["icmp_soft"] += 1

    # ---------------------------------------------------------------------- from channels

    async def _from_user(self, ch: Channel, item: Item) -> None:
        """Bytes (or the end, a zero-length item) from a channel's peer: into the send
        buffer, the rest into the backlog; a sender in its own task waits until its item has
        been taken (backpressure), the node's own queue runner never waits."""
        conn = ch.conn
        if conn is None:
            raise NetgraphError(errno.ENOTCONN, f"channel {ch.name!r} has no connection")
        self._sendable(conn)
        if conn.shut:
            raise NetgraphError(errno.EPIPE, f"channel {ch.name!r} was half-closed")
        core = conn.core
        backlog = conn.backlog
        runner = self._runner_task is trio.lowlevel.current_task()
        if not item:
            conn.shut = True
            if not backlog:
                core.shutdown_write()
                await self._flush(conn)
                return
            backlog.append(None)
        elif not backlog:
            n = core.send(item)
            self.counts["bytes_out"] += n
            if n == len(item):
                await self._flush(conn)
                return
            rest = memoryview(item)[n:]
            backlog.append(bytes(rest) if runner else rest)
        else:
            backlog.append(bytes(item) if runner else memoryview(item))
        conn.appended += 1
        mine = conn.appended
        await self._flush(conn)
        if runner:
            return  # its sender moved on when it was queued; the backlog keeps it
        while conn.consumed < mine:
            self._sendable(conn)
            if ch.hook is None:
                raise NetgraphError(errno.EPIPE, f"channel {ch.name!r} is closing")
            fed = conn.fed = trio.Event()
            await fed.wait()
        self._sendable(conn)

    def _sendable(self, conn: Conn) -> None:
        if not self.is_valid:
            raise NetgraphError(errno.EIO, f"tcp node {self.path} is shutting down")
        if conn.error:
            raise NetgraphError(conn.error, os.strerror(conn.error))

    def _feed(self, conn: Conn) -> None:
        """Move what the send buffer takes from the backlog into it, in order."""
        backlog = conn.backlog
        core = conn.core
        taken = 0
        try:
            while backlog:
                head = backlog[0]
                if head is None:
                    core.shutdown_write()
                else:
                    n = core.send(head)
                    self.counts["bytes_out"] += n
                    if n < len(head):
                        if n:
                            backlog[0] = head[n:]
                        break
                backlog.popleft()
                taken += 1
        except NetgraphError:
            taken += len(backlog)  # the connection is gone: so is what waited for it
            backlog.clear()
        if taken:
            conn.consumed += taken
            if conn.fed is not None:
                conn.fed.set()
        if not backlog and conn.close_pending:
            conn.close_pending = False
            core.close()

    async def _flush(self, conn: Conn) -> None:
        out = self._output(conn, trio.current_time())
        if out:
            await self._emit(conn, out)

    # ------------------------------------------------------------------- up the channels

    def _start_delivery(self, ch: Channel) -> None:
        hook = ch.hook
        if ch.conn is None or hook is None or hook.peer is None or ch.delivering:
            return
        ch.delivering = True
        self.tasks += 1
        self.start_task(self._deliver, ch, hook)

    async def _deliver(self, ch: Channel, hook: Hook) -> None:
        """A channel's delivery task: what is readable goes up as one item (within the sink's
        room, for a socket node); then the end."""
        peer = hook.peer
        ch.sink = (peer.node, peer.name) if peer is not None and isinstance(
            peer.node, SocketNode) else None  # fmt: skip
        try:
            while ch.hook is hook and hook.peer is not None and not ch.end_sent:
                wake = ch.wake = trio.Event()
                conn = ch.conn
                assert conn is not None
                core = conn.core
                if core.readable:
                    limit = self._room(ch, core)
                    if not limit:
                        await self._wait_room(ch)
                        continue
                    data = core.read(limit)
                    self.counts["bytes_in"] += len(data)
                    out = self._output(conn, trio.current_time())  # the window update
                    if out:
                        await self._emit(conn, out)
                    await self._up(hook, data)
                    continue
                if core.at_eof:
                    ch.end_sent = True
                    await self._up(hook, b"")
                elif core.state == CLOSED and conn.error:
                    ch.end_sent = True
                    await self._up(hook, tag(b"", **{ERROR_TAG: conn.error}))
                else:
                    await wake.wait()
        finally:
            ch.delivering = False
            self.tasks -= 1

    @staticmethod
    def _sink_bytes(ch: Channel) -> int:
        """Bytes delivered into the channel's socket-node peer and not taken by its owner."""
        assert ch.sink is not None
        node, name = ch.sink
        return sum(len(item) for came, item in node.data_in if came == name)

    def _room(self, ch: Channel, core: Connection) -> int:
        """How much to read from the core for the channel's peer now: -1 all of it, 0 none (wait
        for room). A socket node's inbox is bounded in items, not bytes: its share of this
        channel is kept within one receive buffer, and it is given at least a quarter of one at
        a time (or all that is readable), never a trickle."""
        if ch.sink is None or not ch.sink[0].is_valid:
            return -1  # a node that awaits in rcvdata: its await is the bound
        rcvbuf = core.tcb.config.rcvbuf
        room = rcvbuf - self._sink_bytes(ch)
        if room >= core.readable:
            return -1
        return room if room >= rcvbuf // 4 else 0

    async def _wait_room(self, ch: Channel) -> None:
        """Wait until the socket node's owner takes an item (or the channel is woken)."""
        assert ch.sink is not None
        node = ch.sink[0]
        if node.data_room.is_set():  # as SocketNode does: replaced only once it has fired
            node.data_room = trio.Event()
        room = node.data_room
        with trio.CancelScope() as stall:
            ch.stall = stall
            await room.wait()
        ch.stall = None

    def _unread(self, ch: Channel) -> bool:
        """Data in the channel's socket-node peer that its owner never took."""
        sink = ch.sink
        if sink is None:
            return False
        node, name = sink
        return any(item and came == name for came, item in node.data_in)

    async def _up(self, hook: Hook, item: Item) -> None:
        try:
            await self.emit(hook, item)
        except NetgraphError:
            # The channel's peer refused it (or its hook went): it is not ours to keep.
            self.counts["deliver_errors"] += 1

    @staticmethod
    def _wake_channel(ch: Channel) -> None:
        if ch.wake is not None:
            ch.wake.set()
        if ch.stall is not None:
            ch.stall.cancel()
        conn = ch.conn
        if conn is not None and conn.fed is not None:
            conn.fed.set()

    # ------------------------------------------------------------------------- output

    def _output(self, conn: Conn, now: float) -> list[Item]:
        """What a connection has to send now, tagged; its events handled; its timer set."""
        if conn.backlog:
            self._feed(conn)
        segments = conn.core.segments_to_send(now)
        self._events(conn)
        self._schedule(conn)
        if not segments:
            return []
        tags = conn.tags
        out: list[Item] = []
        for segment in segments:
            item = Tagged(segment)
            item.tags = tags
            out.append(item)
        return out

    @staticmethod
    def _tagged_one(segment: bytes, dst: Address, src: Address) -> Tagged:
        item = Tagged(segment)
        item.tags = MappingProxyType({"dst": dst, "src": src})
        return item

    async def _emit(self, conn: Conn | None, out: list[Item]) -> None:
        """Send a connection's segments down ``ip`` from a task or a coroutine handler."""
        hook = self.ip_hook
        if hook is None or hook.peer is None:
            self._no_ip(conn, len(out))
            return
        self.counts["segs_out"] += len(out)
        try:
            if len(out) == 1:
                await self.emit(hook, out[0])
            else:
                await self.emit_batch(hook, out)
        except NetgraphError as err:
            self._send_failed(conn, err)

    def _send_now(self, conn: Conn | None, out: list[Item]) -> None:
        """The same from a plain handler (a message, a hook going)."""
        if not out or not self.is_valid:
            return
        hook = self.ip_hook
        if hook is None or hook.peer is None:
            self._no_ip(conn, len(out))
            return
        self.counts["segs_out"] += len(out)
        try:
            if len(out) == 1:
                self.send(hook, out[0])
            else:
                self.send_batch(hook, out)
        except NetgraphError as err:
            self._send_failed(conn, err)

    def _no_ip(self, conn: Conn | None, n: int) -> None:
        self.counts["no_ip_hook"] += n
        self._send_failed(conn, NetgraphError(errno.ENETDOWN, "no ip hook"), count=False)

    def _send_failed(self, conn: Conn | None, err: NetgraphError, *, count: bool = True) -> None:
        """The ip node refused what we sent: a call being placed fails at once; otherwise TCP
        retransmits later, as over a lossy link."""
        if count:
            self.counts["send_errors"] += 1
        if conn is None or conn.connect is None or conn.core.state != SYN_SENT:
            return
        code = err.errno
        if code == errno.EADDRNOTAVAIL:
            conn.fail = (TCPC_BADLOCAL, code)
        elif code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN):
            conn.fail = (TCPC_NOROUTE, code)
        else:
            conn.fail = (TCPC_SORRY, code or errno.EIO)
        conn.error = code or errno.EIO
        conn.backlog.clear()
        conn.core.abort()
        self._events(conn)

    # -------------------------------------------------------------------------- events

    def _events(self, conn: Conn) -> None:
        for event in conn.core.next_events():
            kind = type(event)
            if kind is ev.DataReady:
                ch = conn.channel
                if ch is not None and ch.wake is not None:
                    ch.wake.set()
            # Writable needs nothing: the backlog is fed before every output.
            elif kind is ev.Established:
                self._established(conn)
            elif kind is ev.EndOfStream:
                ch = conn.channel
                if ch is not None and ch.wake is not None:
                    ch.wake.set()
                self._hup(conn, TCPC_OK, 0)
            elif kind is ev.Reset or kind is ev.TimedOut:
                if kind is ev.Reset:
                    self.counts["resets_received"] += 1
                    err = event.errno
                else:
                    self.counts["timeouts"] += 1
                    err = conn.soft_error or event.errno
                conn.error = conn.error or err
                if conn.connect is not None:
                    noroute = err in (errno.EHOSTUNREACH, errno.ENETUNREACH)
                    conn.fail = conn.fail or (TCPC_NOROUTE if noroute else TCPC_SORRY, err)
                else:
                    self._hup(conn, TCPC_SORRY, err)
            elif kind is ev.Closed:
                self._closed(conn)

    def _established(self, conn: Conn) -> None:
        self.counts["established"] += 1
        pending = conn.connect
        if pending is not None:
            conn.connect = None
            request, retaddr, args = pending
            self._reply(request, retaddr, args, TCPC_OK, args.param, conn)
            return
        lst = conn.listener
        if lst is None or conn.phase != HALF_OPEN:
            return
        lst.embryos.discard(conn)
        conn.phase = UNACCEPTED
        name = self._call_name()
        ch = Channel(name, lst.channel.config)
        ch.owner = lst.owner
        ch.conn = conn
        conn.channel = ch
        self.channels[name] = ch
        lst.unaccepted[name] = ch
        lst.calls += 1
        self._notify(lst.owner, NGM_TCP_NEWCALL, "newcall", self._user(conn, TCPC_OK, lst.calls))

    def _call_name(self) -> str:
        while True:
            name = f"call{next(self._calls)}"
            if name not in self.channels and name not in self.hooks:
                return name

    def _closed(self, conn: Conn) -> None:
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]
            port = conn.key[1]
            left = self.port_refs.get(port, 1) - 1
            if left:
                self.port_refs[port] = left
            else:
                self.port_refs.pop(port, None)
            stats = conn.core.tcb.stats
            closed = self.closed_stats
            for name, field in _CORE_STATS:
                closed[name] += getattr(stats, field, 0)
        conn.scheduled = None
        pending = conn.connect
        if pending is not None:
            conn.connect = None
            code, err = conn.fail or (TCPC_SORRY, conn.error or errno.ECONNABORTED)
            request, retaddr, args = pending
            self._reply(request, retaddr, args, code, err)
        lst = conn.listener
        if lst is not None and conn.phase == HALF_OPEN:
            lst.embryos.discard(conn)
        conn.backlog.clear()
        if conn.fed is not None:
            conn.fed.set()
        ch = conn.channel
        if ch is not None:
            self._wake_channel(ch)

    def _hup(self, conn: Conn, code: int, err: int) -> None:
        """Tell whoever holds the channel that the remote end went away (once)."""
        if conn.hup_sent:
            return
        ch = conn.channel
        if ch is None:
            return
        conn.hup_sent = True
        hook = ch.hook
        peer = hook.peer if hook is not None else None
        target = peer.node.id if peer is not None else ch.owner
        if target:
            self._notify(target, NGM_TCP_HUP, "hup", self._user(conn, code, err))

    def _notify(self, target: int, cmd: int, name: str, args: TcpUser) -> None:
        """Send a notification (NGF_ORIG) as replies travel: queued at the target, never run
        here. So it may be raised anywhere (the timer task, a coroutine handler), never waits
        for the target (which may be slow), never queues anything at this node (which would
        hold up its data), and notifications to one node arrive in order."""
        node = self.graph.nodes.get(target)
        if node is None or not node.is_valid:
            self.counts["notify_lost"] += 1
            return
        msg = Message(TCP_COOKIE, cmd, args, name)
        try:
            delivery.enqueue_nowait(node, (delivery.MSG, msg, (None, self.id, None), None))
        except NetgraphError:
            self.counts["notify_lost"] += 1

    def _user(self, conn: Conn, code: int, param: int) -> TcpUser:
        laddr, lport, faddr, fport = conn.key
        name = conn.channel.name if conn.channel is not None else ""
        return TcpUser(code, name, lport, fport, laddr, faddr, param)

    def _reply(
        self, request: Message, retaddr: int, args: TcpUser, code: int, param: int,
        conn: Conn | None = None,
    ) -> None:  # fmt: skip
        if conn is not None:
            laddr, lport, faddr, fport = conn.key
            answer = TcpUser(code, args.channel, lport, fport, laddr, faddr, param)
        else:
            answer = attrs.evolve(args, code=code, param=param)
        self.respond(request, retaddr, answer)

    # --------------------------------------------------------------------------- timers

    def _schedule(self, item: Conn | Lookup | MtuQuery, deadline: float | None = None) -> None:
        if deadline is None:
            if not isinstance(item, Conn):
                return
            deadline = item.core.next_deadline()
            if deadline is None:
                return
        current = item.scheduled
        if current is not None and current <= deadline:
            return  # the entry in the heap comes first; it is pushed again when it pops
        item.scheduled = deadline
        heapq.heappush(self.heap, (deadline, next(self._seq), item))
        if deadline < self._wake_at:
            self._wake_at = deadline
            if self._sleep is not None:
                self._sleep.deadline = deadline

    async def _timer(self) -> None:
        """The node's one timer task: sleep until the earliest deadline, fire what is due."""
        heap = self.heap
        while True:
            wake = heap[0][0] if heap else math.inf
            self._wake_at = wake
            with trio.CancelScope(deadline=wake) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None
            # Woken at the deadline or after: never a float rounding early.
            now = max(trio.current_time(), self._wake_at)
            self._wake_at = -math.inf  # while firing, new deadlines need not move a scope
            due: list[Conn] = []
            unanswered: list[MtuQuery] = []
            while heap and heap[0][0] <= now:
                deadline, _, item = heapq.heappop(heap)
                if item.scheduled != deadline:
                    continue  # stale: the deadline moved
                item.scheduled = None
                if isinstance(item, Lookup):
                    self._lookup_timeout(item)
                elif isinstance(item, MtuQuery):
                    unanswered.append(item)
                else:
                    due.append(item)
            for conn in due:
                core = conn.core
                nxt = core.next_deadline()
                if nxt is None:
                    continue
                if nxt > now:
                    self._schedule(conn)
                    continue
                core.handle_timer(now)
                out = self._output(conn, now)
                if out:
                    await self._emit(conn, out)
            for query in unanswered:
                for whose, out in self._mtu_answer(query, 0):
                    if out:
                        await self._emit(whose, out)

    # -------------------------------------------------------------------------- messages

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        if msg.is_response:
            if msg.typecookie == IP_COOKIE:
                query = self.mtu_queries.get(msg.token)
                if query is None:
                    self._ip_answer(msg)
                    return None
                answer = msg.args
                mtu = answer.mtu if isinstance(answer, LinkEntry) else 0
                for whose, out in self._mtu_answer(query, mtu):
                    self._send_now(whose, out)
            return None  # replies to notifications, if any, need nothing
        if msg.typecookie != TCP_COOKIE:
            return super().rcvmsg(msg, retaddr, lasthook)
        handler = self._HANDLERS.get(msg.cmd)
        if handler is None:
            raise NetgraphError(errno.EINVAL, f"tcp has no command {msg.cmdstr or msg.cmd}")
        return handler(self, msg, retaddr)

    def _channel(self, name: Any) -> Channel:
        if not isinstance(name, str):
            raise NetgraphError(errno.EINVAL, "a channel name (string) is needed")
        ch = self.channels.get(name)  # hooked, or a call waiting for its hook
        if ch is None:
            raise NetgraphError(errno.ENOENT, f"no channel {name!r}")
        return ch

    def _connected(self, name: Any) -> Conn:
        ch = self._channel(name)
        if ch.conn is None:
            raise NetgraphError(errno.ENOTCONN, f"channel {name!r} has no connection")
        return ch.conn

    def _query_ip(self, kind: int, ch: Channel, msg: Message, retaddr: int, args: TcpUser,
                  cmd: int, name: str, arg: Any) -> None:  # fmt: skip
        """Ask the ip node (the path ``ip``); its answer comes back to ``rcvmsg``."""
        token = next(self._tokens) & 0x7FFFFFFF or 1
        lookup = Lookup(token, kind, ch, msg, retaddr, args)
        self.send_msg(IP_HOOK, Message(IP_COOKIE, cmd, arg, name, 0, token))  # may raise
        self.lookups[token] = lookup
        ch.lookup = lookup
        ch.owner = retaddr
        self._schedule(lookup, trio.current_time() + LOOKUP_TIMEOUT)

    def _connect(self, msg: Message, retaddr: int) -> TcpUser | None:
        args: TcpUser = _need(msg.args, TcpUser, msg)
        faddr, laddr = args.faddr, args.laddr
        if faddr is None or faddr.is_unspecified:
            raise NetgraphError(errno.EINVAL, "connect: faddr= is needed")
        if not args.fport:
            raise NetgraphError(errno.EINVAL, "connect: fport= is needed")
        if laddr is not None and laddr.version != faddr.version:
            raise NetgraphError(errno.EINVAL, f"connect: laddr {laddr} and faddr {faddr} differ")
        if args.param & ~SO_KEEPALIVE:
            raise NetgraphError(errno.EINVAL, f"connect: param {args.param:#x} (0 or 0x2)")
        ch = self.channels.get(args.channel)
        if ch is None or ch.hook is None or not ch.idle:
            return attrs.evolve(args, code=TCPC_BADDEV, param=errno.EBADF)
        if args.lport and any(lst.overlaps(laddr) for lst in self.listeners.get(args.lport, ())):
            return attrs.evolve(args, code=TCPC_BOUND, param=errno.EADDRINUSE)
        if self.ip_hook is None:
            return attrs.evolve(args, code=TCPC_NOROUTE, param=errno.ENETDOWN)
        try:
            self._query_ip(self._CONNECT, ch, msg, retaddr, args, NGM_IP_GETROUTE, "getroute",
                           faddr)  # fmt: skip
        except NetgraphError as err:
            code = TCPC_NOROUTE if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH,
                                                 errno.ENOENT) else TCPC_SORRY  # fmt: skip
            return attrs.evolve(args, code=code, param=err.errno or errno.EIO)
        return None  # the answer follows

    def _listen(self, msg: Message, retaddr: int) -> TcpUser | None:
        args: TcpUser = _need(msg.args, TcpUser, msg)
        if not 0 <= args.param <= MAX_BACKLOG:
            raise NetgraphError(errno.EINVAL, f"listen: backlog {args.param} (0..{MAX_BACKLOG})")
        ch = self.channels.get(args.channel)
        if ch is None or ch.hook is None or not ch.idle:
            return attrs.evolve(args, code=TCPC_BADDEV, param=errno.EBADF)
        if _is_any(args.laddr):
            ch.owner = retaddr
            return self._start_listen(ch, args)
        if self.ip_hook is None:
            return attrs.evolve(args, code=TCPC_BADLOCAL, param=errno.EADDRNOTAVAIL)
        try:
            self._query_ip(self._LISTEN, ch, msg, retaddr, args, NGM_IP_LISTADDRS, "listaddrs",
                           None)  # fmt: skip
        except NetgraphError as err:
            return attrs.evolve(args, code=TCPC_SORRY, param=err.errno or errno.EIO)
        return None

    def _ip_answer(self, msg: Message) -> None:
        lookup = self.lookups.pop(msg.token, None)
        if lookup is None:
            return
        lookup.scheduled = None
        ch = lookup.channel
        if ch.lookup is not lookup or ch.hook is None:
            return
        ch.lookup = None
        args = lookup.args
        if lookup.kind == self._LISTEN:
            mine = isinstance(msg.args, AddrList) and any(
                entry.addr is not None and entry.addr.ip == args.laddr for entry in msg.args.addrs
            )
            if mine:
                answer = self._start_listen(ch, args)
            else:
                answer = attrs.evolve(args, code=TCPC_BADLOCAL, param=errno.EADDRNOTAVAIL)
            self.respond(lookup.request, lookup.retaddr, answer)
            return
        if not isinstance(msg.args, RouteInfo):
            self._reply(lookup.request, lookup.retaddr, args, TCPC_SORRY, errno.EIO)
            return
        self._place_call(ch, lookup, msg.args)

    def _lookup_timeout(self, lookup: Lookup) -> None:
        self.lookups.pop(lookup.token, None)
        ch = lookup.channel
        if ch.lookup is lookup:
            ch.lookup = None
            self._reply(lookup.request, lookup.retaddr, lookup.args, TCPC_SORRY, errno.ETIMEDOUT)

    def _place_call(self, ch: Channel, lookup: Lookup, route: RouteInfo) -> None:
        """The route is known: make the connection and send its SYN."""
        args = lookup.args
        faddr, fport = args.faddr, args.fport
        assert faddr is not None
        local = args.laddr if not _is_any(args.laddr) else route.src
        if local is None or local.version != faddr.version:
            self._reply(lookup.request, lookup.retaddr, args, TCPC_BADLOCAL, errno.EADDRNOTAVAIL)
            return
        lport = args.lport or self._ephemeral(local, faddr, fport)
        if not lport or (local, lport, faddr, fport) in self.conns:
            self._reply(lookup.request, lookup.retaddr, args, TCPC_BOUND, errno.EADDRINUSE)
            return
        now = trio.current_time()
        config = attrs.evolve(ch.config, mtu=min(max(route.mtu or 1500, 68), 65535))
        if args.param & SO_KEEPALIVE:
            config = attrs.evolve(config, keepalive=True)
        ch.config = config
        core = Connection.client(
            (local, lport), (faddr, fport), now, config, secret=self.secret, registry=self.registry
        )
        conn = Conn(core, (local, lport, faddr, fport), ACTIVE)
        conn.channel = ch
        conn.connect = (lookup.request, lookup.retaddr, args)
        ch.conn = conn
        self._register(conn)
        self.counts["active_opens"] += 1
        self._start_delivery(ch)
        self._send_now(conn, self._output(conn, now))

    def _register(self, conn: Conn) -> None:
        self.conns[conn.key] = conn
        port = conn.key[1]
        self.port_refs[port] = self.port_refs.get(port, 0) + 1

    def _ephemeral(self, local: Address, faddr: Address, fport: int) -> int:
        """RFC 6056 algorithm 1: a random start, then the first free port (one no connection
        uses, else one whose 4-tuple is free); never a port a listener holds."""
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        start = self.rng.randrange(span)
        for shared in (False, True):
            for i in range(span):
                port = EPHEMERAL_LOW + (start + i) % span
                if port in self.listeners and any(
                    lst.overlaps(local) for lst in self.listeners[port]
                ):
                    continue
                if shared:
                    if (local, port, faddr, fport) not in self.conns:
                        return port
                elif port not in self.port_refs:
                    return port
        return 0

    def _start_listen(self, ch: Channel, args: TcpUser) -> TcpUser:
        laddr, lport = args.laddr, args.lport
        if lport:
            if any(lst.laddr == laddr for lst in self.listeners.get(lport, ())):
                return attrs.evolve(args, code=TCPC_BOUND, param=errno.EADDRINUSE)
        else:
            span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
            start = self.rng.randrange(span)
            for i in range(span):
                port = EPHEMERAL_LOW + (start + i) % span
                if port not in self.listeners and port not in self.port_refs:
                    lport = port
                    break
            else:
                return attrs.evolve(args, code=TCPC_BOUND, param=errno.EADDRINUSE)
        backlog = args.param or DEFAULT_BACKLOG
        core = Listener(ch.config, secret=self.secret, registry=self.registry)
        lst = Listen(core, ch, laddr, lport, ch.owner, backlog)
        self.listeners.setdefault(lport, []).append(lst)
        ch.listen = lst
        return attrs.evolve(args, code=TCPC_OK, lport=lport, param=backlog)

    def _stop_listen(self, lst: Listen) -> None:
        """The listener's channel went: its calls not yet taken are reset."""
        ch = lst.channel
        ch.listen = None
        same = self.listeners.get(lst.lport, [])
        if lst in same:
            same.remove(lst)
            if not same:
                del self.listeners[lst.lport]
        now = trio.current_time()
        for pending in list(lst.unaccepted.values()):
            if self.channels.get(pending.name) is pending:
                del self.channels[pending.name]
            if pending.conn is not None:
                lst.embryos.add(pending.conn)
        lst.unaccepted.clear()
        for conn in list(lst.embryos):
            conn.channel = None
            conn.core.abort()
            self._send_now(conn, self._output(conn, now))
        lst.embryos.clear()

    def _getaddr(self, msg: Message, retaddr: int) -> TcpUser:
        ch = self._channel(msg.args)
        if ch.conn is not None:
            return self._user(ch.conn, TCPC_OK, 0)
        if ch.listen is not None:
            return TcpUser(TCPC_OK, ch.name, ch.listen.lport, 0, ch.listen.laddr, None, 0)
        raise NetgraphError(
            errno.ENOTCONN, f"channel {ch.name!r} is neither connected nor listening"
        )

    def _maxseg(self, msg: Message, retaddr: int) -> int:
        return self._connected(msg.args).core.mss

    def _reset(self, msg: Message, retaddr: int) -> None:
        conn = self._connected(msg.args)
        if conn.core.state == CLOSED:
            return
        conn.error = conn.error or errno.ECONNABORTED
        if conn.connect is not None:
            conn.fail = (TCPC_SORRY, errno.ECONNABORTED)
        conn.core.abort()
        self._send_now(conn, self._output(conn, trio.current_time()))

    @staticmethod
    def _option(opt: ChanOpt) -> tuple[str, tuple[str, Callable[[int], Any], Callable[[Any], int]]]:
        name = _OPTION_ALIASES.get(opt.name, opt.name)
        spec = _OPTIONS.get(name)
        if spec is None:
            known = " ".join(_OPTIONS)
            raise NetgraphError(errno.ENOPROTOOPT, f"no option {opt.name!r}; options: {known}")
        return name, spec

    def _setopt(self, msg: Message, retaddr: int) -> None:
        opt: ChanOpt = _need(msg.args, ChanOpt, msg)
        ch = self._channel(opt.channel)
        _, (attr, to_config, _) = self._option(opt)
        if opt.value < 0:
            raise NetgraphError(errno.EINVAL, f"setopt {opt.name}: {opt.value} is negative")
        value = to_config(opt.value)
        config = attrs.evolve(ch.config, **{attr: value})  # validated: EINVAL
        ch.config = config
        if ch.listen is not None:
            ch.listen.core.config = config
        if ch.conn is not None and ch.conn.core.state != CLOSED:
            conn = ch.conn
            now = trio.current_time()
            conn.core.configure(now, **{attr: value})
            self._send_now(conn, self._output(conn, now))

    def _getopt(self, msg: Message, retaddr: int) -> ChanOpt:
        opt: ChanOpt = _need(msg.args, ChanOpt, msg)
        ch = self._channel(opt.channel)
        _, (attr, _, from_config) = self._option(opt)
        config = ch.conn.core.tcb.config if ch.conn is not None else ch.config
        return ChanOpt(opt.channel, opt.name, from_config(getattr(config, attr)))

    def tcp_stats(self) -> TcpStats:
        values: dict[str, int] = {**self.counts, **self.closed_stats}
        for conn in self.conns.values():
            stats = conn.core.tcb.stats
            for name, field in _CORE_STATS:
                values[name] += getattr(stats, field, 0)
        return TcpStats(**values)

    def clear_stats(self) -> None:
        self.counts = dict.fromkeys(_NODE_FIELDS, 0)
        self.closed_stats = dict.fromkeys(_CORE_FIELDS, 0)
        for conn in self.conns.values():
            stats = conn.core.tcb.stats
            for _, field in _CORE_STATS:
                if hasattr(stats, field):
                    setattr(stats, field, 0)

    def _getstats(self, msg: Message, retaddr: int) -> TcpStats | None:
        reply = None if msg.cmd == NGM_TCP_CLRSTATS else self.tcp_stats()
        if msg.cmd != NGM_TCP_GETSTATS:
            self.clear_stats()
        return reply

    def _getstack(self, msg: Message, retaddr: int) -> StackArg:
        ch = self._channel(msg.args)
        if ch.conn is not None:
            return StackArg(ch.name, ch.conn.core.stack.name)
        return StackArg(ch.name, self.registry.lookup(ch.config.stack).name)

    def _setstack(self, msg: Message, retaddr: int) -> None:
        arg: StackArg = _need(msg.args, StackArg, msg)
        ch = self._channel(arg.channel)
        stack = self.registry.lookup(arg.stack)  # ENOENT
        conn = ch.conn
        if conn is not None and conn.core.state != CLOSED:
            conn.core.switch_stack(stack.name)  # the stack may refuse (handoff_ok)
        ch.config = attrs.evolve(ch.config, stack=stack.name)
        if ch.listen is not None:
            ch.listen.core.config = ch.config

    def _notification(self, msg: Message, retaddr: int) -> None:
        raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: the tcp node sends it, not takes it")

    _HANDLERS: ClassVar[dict[int, Callable[[TcpNode, Message, int], Any]]] = {
        NGM_TCP_CONNECT: _connect,
        NGM_TCP_LISTEN: _listen,
        NGM_TCP_NEWCALL: _notification,
        NGM_TCP_HUP: _notification,
        NGM_TCP_GETADDR: _getaddr,
        NGM_TCP_MAXSEG: _maxseg,
        NGM_TCP_RESET: _reset,
        NGM_TCP_SETOPT: _setopt,
        NGM_TCP_GETOPT: _getopt,
        NGM_TCP_GETSTATS: _getstats,
        NGM_TCP_CLRSTATS: _getstats,
        NGM_TCP_GETCLRSTATS: _getstats,
        NGM_TCP_GETSTACK: _getstack,
        NGM_TCP_SETSTACK: _setstack,
    }

    # ---------------------------------------------------------------------------- status

    def status_text(self) -> str:
        lines = []
        for ch in self.channels.values():
            if ch.listen is not None:
                lst = ch.listen
                where = "*" if lst.laddr is None else str(lst.laddr)
                lines.append(
                    f"{ch.name}: LISTEN {where}:{lst.lport} backlog {lst.backlog}"
                    f" half-open {len(lst.embryos)} unaccepted {len(lst.unaccepted)}"
                )
            elif ch.lookup is not None:
                lines.append(f"{ch.name}: looking up a route")
        for conn in self.conns.values():
            tcb = conn.core.tcb
            name = conn.channel.name if conn.channel is not None else "-"
            laddr, lport, faddr, fport = conn.key
            lines.append(
                f"{name}: {tcb.state.name} {laddr}:{lport} {faddr}:{fport}"
                f" snd {len(tcb.snd_buf)} rcv {len(tcb.rcv_buf)} rexmt {tcb.stats.retransmits}"
            )
        s = self.tcp_stats()
        drops = (
            f"no_listener={s.no_listener} backlog_full={s.backlog_full}"
            f" listener_dropped={s.listener_dropped} short={s.short} bad_tags={s.bad_tags}"
            f" bad_checksum={s.bad_checksum} malformed={s.malformed} paws={s.paws_dropped}"
            f" out_of_window={s.out_of_window} ooo_dropped={s.ooo_dropped}"
        )
        head = (
            f"connections {len(self.conns)}, listeners"
            f" {sum(len(v) for v in self.listeners.values())}, ip hook"
            f" {'up' if self.ip_hook is not None else 'down'}\n"
            f"segments in {s.segs_in} out {s.segs_out}, retransmits {s.retransmits},"
            f" resets sent {s.resets_sent + s.rst_sent}, icmp {s.icmp_in}\n"
            f"drops: {drops}"
        )
        return "\n".join([head, *lines])
