r"""The TCP connection as a sans-IO state machine: segments and ``now`` in; segments, events and
the next deadline out.

Theory of operation
===================

A :class:`Connection` is one TCB (:class:`~nodes.tcp.tcb.Tcb`, every fact as a field) plus the
code that moves it. It reads no clock, starts no task and does no I/O: every call that may
depend on time takes ``now`` (seconds on the caller's monotonic clock), and the caller -- the tcp
node's trio shell, or a test -- carries segments between connections and the network. The shape
is h11's and aioquic's:

``Connection.client(local, remote, now, config, secret=...)``
    an active open: the TCB in SYN_SENT, with the SYN waiting in ``segments_to_send``.
``Listener(config, secret=...).receive(segment, local, remote, now)``
    the LISTEN state, kept outside connections: validates a segment for a listening port and
    returns a new connection in SYN_RECEIVED (its SYN-ACK waiting) or a reset to send. How many
    half-open connections to keep (the SYN backlog) is the caller's choice; it sees their state.
``receive(segment, now)``
    one arriving segment (header and payload, as the ip node delivers it); checks it and moves
    the state machine. Returns True only in one case: a new SYN hit this connection in TIME_WAIT,
    which has closed so that the caller may hand the segment to a listener.
``send(data) -> int``, ``shutdown_write()``, ``close()``, ``abort()``, ``read(max)``
    the user's side: queue bytes (as many as the send buffer takes), queue a FIN after them,
    close both ways (a reset if unread data is thrown away), reset, take received bytes.
``segments_to_send(now) -> list[bytes]``
    every segment due now, checksummed, in order. Call it after any batch of the calls above.
``next_events() -> list``
    :mod:`~nodes.tcp.events` since the last call: Established, DataReady, EndOfStream, Writable,
    Reset, TimedOut, RetransmitWarning, Closed.
``next_deadline() -> float | None`` and ``handle_timer(now)``
    the earliest timer deadline, and firing whatever is due at ``now`` (then call
    ``segments_to_send``). A node keeps one heap of these for all its connections.
``pause()``, ``resume(now)``, ``export_state(now)``, ``Connection.import_state(data, now)``
    TCPCP2: a paused connection neither sends nor consumes segments and runs no timers; its
    export carries the whole TCB, buffers and all, and an import elsewhere resumes it.
``switch_stack(name)``
    move a live connection to another loss-recovery/output stack (:mod:`~nodes.tcp.stack`).

States
------

RFC 9293's, in :class:`~nodes.tcp.tcb.State` (LISTEN is the :class:`Listener`'s)::

      client(): SYN out                        Listener: SYN in, SYN-ACK out
           |                                              |
           v            SYN in (simultaneous open)        v
       SYN_SENT ---------------------------------> SYN_RECEIVED
           | SYN-ACK in, ACK out                          | ACK in
           v                                              v
       ESTABLISHED <--------------------------------------+
           | shutdown_write: FIN out      \ FIN in
           v                               v
       FIN_WAIT_1 --FIN in--> CLOSING    CLOSE_WAIT --shutdown_write: FIN out--> LAST_ACK
           | ACK of FIN in       | ACK of FIN in                                     | ACK in
           v                     v                                                   v
       FIN_WAIT_2 --FIN in--> TIME_WAIT --2 MSL--> CLOSED                          CLOSED

A RST accepted, ``abort``, or giving up (R2, user timeout, keepalive) goes to CLOSED from
anywhere.

Arriving segments follow RFC 9293 3.10.7 step by step (:meth:`Connection._receive_slow`), with
RFC 7323's PAWS check first and RFC 5961's rules for RST (only an exact match of RCV.NXT resets;
elsewhere in the window a rate-limited challenge ACK; never a RST for a RST), for SYN in a
synchronized state (a challenge ACK) and for ACK values (too old or not yet sent: drop and
ACK). A RST from us is sent only where RFC 9293 says: an unacceptable ACK in SYN_SENT or
SYN_RECEIVED, ``abort``, a give-up in a synchronized state, data after ``close``. An
unacceptable segment that carries data is always answered with an ACK (its sender needs it); one
that carries none, at most once per 500 ms (Linux's tcp_invalid_ratelimit), so that two ends
that each find the other's ACKs unacceptable cannot answer each other forever.

Timers
------

All are deadlines in the TCB (``*_at``); :meth:`Connection.next_deadline` is their minimum.

``rexmt_at``
    retransmission (RFC 6298): RTO = SRTT + max(G, 4 RTTVAR) from timestamp echoes or one timed
    segment at a time (Karn: never a retransmitted one; nor, after a timeout, an echo older than
    the retransmission), initial 1 s, at least 200 ms (Linux's floor, where RFC 6298 asks for 1 s
    and allows less), at most 120 s, doubled per consecutive timeout. A timeout goes back to
    SND.UNA with the loss window; R1 = 3 timeouts report RetransmitWarning, R2 = 15 (6 for a
    SYN, as Linux) give up with TimedOut("retransmit").
``persist_at``
    the peer's window is too small for what is queued and nothing is in flight (RFC 9293
    3.8.6.1): probe with one byte beyond a zero window (or what a small one takes), backing off
    from the RTO; R2 unanswered probes give up.
``delack_at``
    the delayed ACK, 40 ms by default (Linux's), at most 500 ms (RFC 1122 4.2.3.2).
``keep_at``
    keepalive, off by default (idle 7200 s, interval 75 s, 9 probes, as Linux).
``timewait_at``
    2 MSL in TIME_WAIT (60 s by default, as Linux).
``user_at``
    the user timeout: how long sent data may stay unacknowledged (Linux's TCP_USER_TIMEOUT).

The fast path
-------------

:meth:`Connection.receive` first tries header prediction (Van Jacobson's, as in BSD's
tcp_input): flags exactly ACK (PSH allowed), the usual timestamps layout or none, SEG.SEQ =
RCV.NXT, nothing out of order, not recovering, no probe under way. Then a pure ACK that
acknowledges new data (in ESTABLISHED or CLOSE_WAIT), or in-order data that acknowledges nothing
new (in ESTABLISHED or FIN_WAIT_2), is handled in a few lines: no parse object, no event object
except on the empty-to-non-empty edge of the receive buffer, and an ACK built at once for every
second full-sized segment (RFC 1122 4.2.3.2), else the delayed-ACK deadline. On the way out,
:meth:`Connection.send_new` builds as many segments as the windows allow in one call, each
header packed with one struct call and its checksum summed arithmetically (or left to the device
with ``tx_checksum_offload``). Everything else takes :meth:`Connection._receive_slow`.

Invariants
----------

* SND.UNA <= SND.NXT <= SND.MAX and RCV.NXT only grow (modulo 2**32); SND.NXT falls back to
  SND.UNA only when the retransmission timer fires (go-back-N, as BSD does).
* ``snd_buf`` holds exactly the bytes of [snd_buf_seq, snd_buf_seq + len); the FIN, when queued,
  follows them; SND.UNA is ``snd_buf_seq`` once the SYN is acknowledged.
* We never advertise a window we have no buffer for, and never move the right edge of the
  window left (``rcv_adv`` only grows); with silly-window avoidance it grows only in steps of at
  least min(RCV.BUFF / 2, MSS).
* ``rexmt_at`` is set exactly while data, SYN or FIN is unacknowledged, unless the persist timer
  (``persist_at``) runs instead because the peer's window is closed.
* No segment goes beyond SND.MAX except by ``send_new`` (which moves SND.MAX): a retransmission
  covers only what was sent before.
* Every segment we send with ACK carries RCV.NXT and cancels the delayed ACK.
* EndOfStream is reported only for the peer's FIN, once every byte before it is in the receive
  buffer; a reset reports Reset instead. Never otherwise.
* A connection that leaves CLOSED ends with exactly one Closed event.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import struct
from collections.abc import Iterator
from typing import Any, Final

import attrs

from netgraph.errors import NetgraphError

from . import events as ev
from .segment import (
    ACK,
    FIN,
    HALF,
    HDR,
    HDR_TS,
    MASK,
    OFF20,
    OFF32,
    PSH,
    RST,
    SYN,
    TS_WORD,
    TS_WORD_SUM,
    Malformed,
    Options,
    Segment,
    build,
    encode_options,
    parse,
    partial_checksum,
    pseudo_sum,
    reset_for,
    words,
)
from .stack import REGISTRY, Stack, StackRegistry
from .tcb import Config, State, Tcb, export_tcb, import_tcb

CLOSED: Final = State.CLOSED
SYN_SENT: Final = State.SYN_SENT
SYN_RECEIVED: Final = State.SYN_RECEIVED
ESTABLISHED: Final = State.ESTABLISHED
FIN_WAIT_1: Final = State.FIN_WAIT_1
FIN_WAIT_2: Final = State.FIN_WAIT_2
CLOSE_WAIT: Final = State.CLOSE_WAIT
CLOSING: Final = State.CLOSING
LAST_ACK: Final = State.LAST_ACK
TIME_WAIT: Final = State.TIME_WAIT

RECEIVING: Final = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))
SENDING: Final = frozenset((SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT))
KEEPALIVE_STATES: Final = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2))
PREDICTED: Final = KEEPALIVE_STATES  # where header prediction is tried
RST_ON_ABORT: Final = frozenset((SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT))

PAWS_IDLE: Final = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent expires after 24 days idle
OOW_ACK_INTERVAL: Final = 0.5  # Linux's tcp_invalid_ratelimit
CLOCK_G: Final = 0.001  # the timestamp clock's granularity (RFC 6298's G)
TS_OPT: Final = struct.Struct("!III")
MIN_MSS: Final = 64

Endpoint = tuple[Any, int]


# ------------------------------------------------------------------------- ISN, TS offset


def _tuple_bytes(local: Endpoint, remote: Endpoint) -> bytes:
    la = ipaddress.ip_address(local[0]).packed
    ra = ipaddress.ip_address(remote[0]).packed
    return la + local[1].to_bytes(2, "big") + ra + remote[1].to_bytes(2, "big")


def make_isn(secret: bytes, local: Endpoint, remote: Endpoint, now: float) -> int:
    """RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), with M a 4 us
    clock (from ``now``) and F a keyed hash (BLAKE2s keyed with ``secret``)."""
    digest = hashlib.blake2s(_tuple_bytes(local, remote), key=secret, digest_size=4).digest()
    return (int.from_bytes(digest, "big") + int(now * 250_000)) & MASK


def make_ts_offset(secret: bytes, local: Endpoint, remote: Endpoint) -> int:
    """A per-connection random timestamp offset (RFC 7323 7.1), keyed like the ISN."""
    digest = hashlib.blake2s(
        _tuple_bytes(local, remote), key=secret, digest_size=4, person=b"tcp-ts"
    ).digest()
    return int.from_bytes(digest, "big")


EPHEMERAL_PORTS: Final = (32768, 60999)  # Linux's ip_local_port_range


def ephemeral_ports(
    secret: bytes, local_addr: Any, remote: Endpoint, start: int = 0
) -> Iterator[int]:
    """RFC 6056 algorithm 3 (as Linux): the local ports to try for a connection to ``remote``,
    in order, each once. The order starts at a keyed hash of (local address, remote address,
    remote port), so it is unpredictable from outside yet spreads connections to different
    peers apart; ``start`` is the caller's running counter (its ``next_ephemeral``)."""
    low, high = EPHEMERAL_PORTS
    count = high - low + 1
    data = (
        ipaddress.ip_address(local_addr).packed
        + ipaddress.ip_address(remote[0]).packed
        + int(remote[1]).to_bytes(2, "big")
    )
    digest = hashlib.blake2s(data, key=secret, digest_size=4, person=b"tcp-port").digest()
    offset = int.from_bytes(digest, "big")
    for i in range(count):
        yield low + (offset + start + i) % count


def wscale_for(rcvbuf: int) -> int:
    """The smallest window shift that lets the whole receive buffer be advertised."""
    shift = 0
    while (rcvbuf >> shift) > 0xFFFF and shift < 14:
        shift += 1
    return shift


def _endpoint(endpoint: Endpoint) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    try:
        addr = ipaddress.ip_address(endpoint[0])
        port = int(endpoint[1])
    except (ValueError, TypeError, IndexError) as exc:
        raise NetgraphError(errno.EINVAL, f"bad endpoint {endpoint!r}") from exc
    if not 0 < port < 65536:
        raise NetgraphError(errno.EINVAL, f"bad port {port}")
    return addr, port


def _new_tcb(
    local: Endpoint, remote: Endpoint, config: Config, now: float, secret: bytes, isn: int | None
) -> Tcb:
    """A TCB for either kind of open: addresses, MSS, RTO, scales, our ISS and TS offset."""
    laddr, lport = _endpoint(local)
    raddr, rport = _endpoint(remote)
    if laddr.version != raddr.version:
        raise NetgraphError(errno.EINVAL, f"address families differ: {laddr} and {raddr}")
    our_mss = config.mtu - (60 if laddr.version == 6 else 40)
    if config.mss_clamp is not None:
        our_mss = min(our_mss, config.mss_clamp)
    our_mss = max(our_mss, MIN_MSS)
    tcb = Tcb(str(laddr), lport, str(raddr), rport, config=config)
    tcb.our_mss = our_mss
    tcb.peer_mss = tcb.snd_mss = 1220 if laddr.version == 6 else 536
    tcb.rto = config.initial_rto
    tcb.rcv_wscale = wscale_for(config.rcvbuf) if config.window_scaling else 0
    iss = make_isn(secret, local, remote, now) if isn is None else isn & MASK
    tcb.iss = tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.recover = tcb.high_rxt = iss
    tcb.snd_buf_seq = (iss + 1) & MASK
    tcb.ts_offset = make_ts_offset(secret, local, remote)
    tcb.stack_name = config.stack
    return tcb


def stray_reset(segment: bytes | bytearray | memoryview, local: Any, remote: Any) -> bytes | None:
    """The reset answering a segment for which there is no connection and no listener (RFC 9293
    3.10.7.1), or None (for a RST, or an unparseable segment). ``local`` and ``remote`` are the
    addresses the segment came to and from."""
    pseudo = pseudo_sum(local, remote)
    try:
        seg = parse(segment, pseudo)
    except Malformed:
        return None
    return reset_for(seg, pseudo)


# ------------------------------------------------------------------------------ connection


class Connection:
    """One TCP connection. See the module docstring."""

    __slots__ = (
        "_ack_base",
        "_events",
        "_out",
        "_port_l",
        "_port_r",
        "_pseudo",
        "_released",
        "registry",
        "stack",
        "tcb",
    )

    def __init__(self, tcb: Tcb, *, registry: StackRegistry | None = None) -> None:
        """Wrap a TCB (made by :meth:`client`, :meth:`server_from_syn` or an import)."""
        self.tcb = tcb
        self.registry = registry if registry is not None else REGISTRY
        name = self.registry.default if tcb.stack_name == "default" else tcb.stack_name
        self.stack: Stack = self.registry.acquire(name)
        tcb.stack_name = self.stack.name
        self._released = False
        self._out: list[bytes] = []
        self._events: list[Any] = []
        self._pseudo = pseudo_sum(tcb.local_addr, tcb.remote_addr)
        self._port_l = tcb.local_port
        self._port_r = tcb.remote_port
        # The checksum of a pure ACK with timestamps, less its variable fields.
        self._ack_base = (
            self._pseudo + 32 + self._port_l + self._port_r + (OFF32 | ACK) + TS_WORD_SUM
        )
        self.stack.init(self)

    # -------------------------------------------------------------------- construction

    @classmethod
    def client(
        cls,
        local: Endpoint,
        remote: Endpoint,
        now: float,
        config: Config | None = None,
        *,
        secret: bytes,
        isn: int | None = None,
        registry: StackRegistry | None = None,
    ) -> Connection:
        """An active open: SYN_SENT, the SYN ready in :meth:`segments_to_send`."""
        config = config if config is not None else Config()
        tcb = _new_tcb(local, remote, config, now, secret, isn)
        tcb.state = SYN_SENT
        return cls(tcb, registry=registry)

    @classmethod
    def server_from_syn(
        cls,
        local: Endpoint,
        remote: Endpoint,
        syn: Segment,
        now: float,
        config: Config | None = None,
        *,
        secret: bytes,
        isn: int | None = None,
        registry: StackRegistry | None = None,
    ) -> Connection:
        """A passive open from a validated SYN: SYN_RECEIVED, the SYN-ACK ready to send."""
        config = config if config is not None else Config()
        tcb = _new_tcb(local, remote, config, now, secret, isn)
        tcb.irs = syn.seq
        tcb.rcv_nxt = tcb.rcv_adv = tcb.last_ack_sent = (syn.seq + 1) & MASK
        tcb.state = SYN_RECEIVED
        tcb.passive = True
        tcb.last_rcv_at = now
        conn = cls(tcb, registry=registry)
        conn._negotiate(syn.options, now)
        tcb.snd_wnd = tcb.max_snd_wnd = syn.wnd  # never scaled in a SYN (RFC 7323 2.2)
        tcb.snd_wl1 = syn.seq
        tcb.snd_wl2 = tcb.iss
        return conn

    @classmethod
    def import_state(
        cls, data: bytes, now: float, *, registry: StackRegistry | None = None
    ) -> Connection:
        """A connection from :meth:`export_state`'s bytes, on this caller's clock (TCPCP2
        set_si). It stays paused if it was exported paused: :meth:`resume` starts it."""
        tcb, extra = import_tcb(data, now)
        conn = cls(tcb, registry=registry)
        conn._out = [bytes(s) for s in extra.get("out", [])]
        conn._events = [ev.EVENT_TYPES[name](**fields) for name, fields in extra.get("events", [])]
        return conn

    def export_state(self, now: float) -> bytes:
        """Everything about this connection (TCPCP2 get_si) as versioned JSON bytes: the TCB with
        its buffers, plus segments and events not yet collected."""
        extra = {
            "out": [bytes(s) for s in self._out],
            "events": [[type(e).__name__, attrs.asdict(e)] for e in self._events],
        }
        return export_tcb(self.tcb, now, extra)

    # ------------------------------------------------------------------------ queries

    @property
    def state(self) -> State:
        return self.tcb.state

    @property
    def closed(self) -> bool:
        return self.tcb.state == CLOSED

    @property
    def readable(self) -> int:
        """Bytes waiting in the receive buffer."""
        return len(self.tcb.rcv_buf)

    @property
    def at_eof(self) -> bool:
        """The peer's FIN arrived and everything before it has been read."""
        return self.tcb.fin_received and not self.tcb.rcv_buf

    @property
    def send_space(self) -> int:
        """How many bytes :meth:`send` would accept now."""
        tcb = self.tcb
        return max(tcb.config.sndbuf - len(tcb.snd_buf), 0)

    @property
    def unsent(self) -> int:
        """Bytes queued that have not been sent once yet."""
        tcb = self.tcb
        if tcb.state in (SYN_SENT, SYN_RECEIVED):
            return len(tcb.snd_buf)
        sent = (tcb.snd_max - tcb.snd_buf_seq) & MASK
        return max(len(tcb.snd_buf) - sent, 0) if sent < HALF else len(tcb.snd_buf)

    @property
    def mss(self) -> int:
        """The payload of a full segment we send (TCPMAXSEG)."""
        return self.tcb.snd_mss

    def next_events(self) -> list[Any]:
        events = self._events
        self._events = []
        return events

    def next_deadline(self) -> float | None:
        tcb = self.tcb
        if tcb.paused:
            return None
        best: float | None = None
        for t in (
            tcb.rexmt_at,
            tcb.delack_at,
            tcb.persist_at,
            tcb.keep_at,
            tcb.timewait_at,
            tcb.user_at,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    # ------------------------------------------------------------------ the user's side

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes to send; returns how many the send buffer took (maybe 0). When that is
        less than offered, a :class:`~nodes.tcp.events.Writable` event follows once there is
        room again."""
        tcb = self.tcb
        if tcb.fin_queued or tcb.state not in SENDING:
            if tcb.state == CLOSED:
                raise NetgraphError(errno.ENOTCONN, "connection closed")
            raise NetgraphError(errno.EPIPE, f"cannot send in {tcb.state.name}")
        buf = tcb.snd_buf
        room = tcb.config.sndbuf - len(buf)
        n = len(data)
        if n > room:
            n = max(room, 0)
            tcb.want_writable = True
            if n:
                buf += memoryview(data)[:n]
            return n
        buf += data
        return n

    def shutdown_write(self) -> None:
        """Queue a FIN after the queued data (half-close). Idempotent."""
        tcb = self.tcb
        state = tcb.state
        if state == CLOSED:
            raise NetgraphError(errno.ENOTCONN, "connection closed")
        if tcb.fin_queued or state not in SENDING:
            return
        tcb.fin_queued = True
        if state == ESTABLISHED:
            tcb.state = FIN_WAIT_1
        elif state == CLOSE_WAIT:
            tcb.state = LAST_ACK
        # In SYN_SENT and SYN_RECEIVED the FIN waits for ESTABLISHED (RFC 9293 3.10.4).

    def close(self) -> None:
        """Close both ways: a FIN after the queued data; data arriving from now on, or unread
        data thrown away now, is answered with a reset (RFC 9293 3.10.4, RFC 2525 2.17)."""
        tcb = self.tcb
        if tcb.state == CLOSED:
            return
        if tcb.state == SYN_SENT:
            self._close(None)
            return
        if tcb.rcv_buf or tcb.ooo:
            self.abort()
            return
        tcb.rcv_closed = True
        self.shutdown_write()

    def abort(self) -> None:
        """Reset the connection (RFC 9293 ABORT): a RST in synchronized states, then CLOSED."""
        tcb = self.tcb
        if tcb.state == CLOSED:
            return
        if tcb.state in RST_ON_ABORT:
            self._send_rst()
        tcb.snd_buf.clear()
        tcb.ooo.clear()
        self._close(None)

    def read(self, max_bytes: int = -1) -> bytes:
        """Take up to ``max_bytes`` (all if negative) received bytes. ``b""`` means nothing is
        waiting; :attr:`at_eof` tells whether more can ever come."""
        tcb = self.tcb
        buf = tcb.rcv_buf
        if not buf:
            return b""
        if max_bytes < 0 or max_bytes >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        if tcb.state in RECEIVING:
            # A window update when the window grows by two segments and that matters: by a
            # quarter of the buffer, or from a window of an eighth or less (FreeBSD's rule).
            rcvbuf = tcb.config.rcvbuf
            free = rcvbuf - len(buf)
            cur = (tcb.rcv_adv - tcb.rcv_nxt) & MASK
            if cur >= HALF:
                cur = 0
            grow = free - cur
            seg = tcb.rcv_seg_max
            if grow >= 2 * seg and (4 * grow >= rcvbuf or 8 * cur <= rcvbuf or rcvbuf <= 8 * seg):
                tcb.ack_now = True
        return data

    def configure(self, now: float, **changes: Any) -> None:
        """Change settings (nodelay, keepalive..., see :class:`~nodes.tcp.tcb.Config`). Buffer
        sizes may change at any time; window scaling and MSS apply from the next SYN only."""
        tcb = self.tcb
        tcb.config = attrs.evolve(tcb.config, **changes)
        if tcb.config.keepalive and tcb.state in KEEPALIVE_STATES:
            if tcb.keep_at is None:
                tcb.keep_at = (tcb.last_rcv_at or now) + tcb.config.keepidle
        elif not tcb.config.keepalive:
            tcb.keep_at = None
            tcb.keep_probes = 0

    def pause(self) -> None:
        """TCPCP2 stop: neither send nor consume segments, run no timers, until resume."""
        self.tcb.paused = True

    def resume(self, now: float) -> None:
        """TCPCP2 start. Timers that fell due meanwhile fire at the next ``handle_timer``."""
        self.tcb.paused = False

    def switch_stack(self, name: str) -> None:
        """Move to another stack (tcp_functions(9)): ``handoff_ok``, then ``init``/``fini``."""
        new = self.registry.lookup(name)
        if new is self.stack:
            return
        err = new.handoff_ok(self)
        if err:
            raise NetgraphError(err, f"stack {new.name!r} refuses this connection")
        self.registry.acquire(new.name)
        old = self.stack
        new.init(self)
        self.stack = new
        self.tcb.stack_name = new.name
        old.fini(self)
        self.registry.release(old)

    # ------------------------------------------------------------------------- receive

    def receive(
        self, segment: bytes | bytearray | memoryview, now: float, *, checksum_ok: bool = False
    ) -> bool:
        """Process one arriving segment (TCP header and payload). ``checksum_ok`` skips the
        checksum (verified by offload). Returns True only when a new SYN closed this connection
        from TIME_WAIT and should go to a listener."""
        tcb = self.tcb
        if tcb.paused:
            tcb.stats.dropped_paused += 1
            return False
        n = len(segment)
        if n < 20:
            tcb.stats.malformed += 1
            return False
        if not checksum_ok and (words(segment) + self._pseudo + n) % 0xFFFF:
            tcb.stats.bad_checksum += 1
            return False
        state = tcb.state
        if state in PREDICTED:
            # Header prediction: pure ACKs in ESTABLISHED and CLOSE_WAIT (a sender whose peer
            # has half-closed), in-order data in ESTABLISHED and FIN_WAIT_2.
            if tcb.ts_ok:
                if n < 32:
                    return self._receive_slow(segment, now)
                _sp, _dp, seq, ack, offflags, wnd, _s, _u, word, tsval, tsecr = HDR_TS.unpack_from(
                    segment
                )
                hlen = 32
                if (
                    offflags & 0xF037 != OFF32 | ACK
                    or word != TS_WORD
                    or ((tsval - tcb.ts_recent) & MASK) >= HALF  # PAWS' business
                ):
                    return self._receive_slow(segment, now)
            else:
                _sp, _dp, seq, ack, offflags, wnd, _s, _u = HDR.unpack_from(segment)
                hlen = 20
                tsval = tsecr = 0
                if offflags & 0xF037 != OFF20 | ACK:
                    return self._receive_slow(segment, now)
            if (
                seq != tcb.rcv_nxt
                or tcb.ooo
                or tcb.in_recovery
                or tcb.dupacks
                or tcb.persist_at is not None
                or tcb.snd_nxt != tcb.snd_max
            ):
                return self._receive_slow(segment, now)
            una = tcb.snd_una
            if n == hlen:
                acked = (ack - una) & MASK
                if not acked or acked > ((tcb.snd_max - una) & MASK):
                    return self._receive_slow(segment, now)
            elif (
                ack != una
                or (n - hlen) > ((tcb.rcv_adv - seq) & MASK)
                or state == CLOSE_WAIT
                or tcb.rcv_closed
            ):
                return self._receive_slow(segment, now)
            # The segment is predicted: in order, acceptable, nothing unusual.
            tcb.last_rcv_at = now
            if hlen == 32 and seq == tcb.last_ack_sent:
                tcb.ts_recent = tsval
                tcb.ts_recent_at = now
            d = (seq - tcb.snd_wl1) & MASK
            if (d and d < HALF) or (not d and ((ack - tcb.snd_wl2) & MASK) < HALF):
                sw = wnd << tcb.snd_wscale
                tcb.snd_wnd = sw
                tcb.snd_wl1 = seq
                tcb.snd_wl2 = ack
                if sw > tcb.max_snd_wnd:
                    tcb.max_snd_wnd = sw
            if n == hlen:
                self._ack_new(ack, acked, tsecr, now)
                return False
            plen = n - hlen
            buf = tcb.rcv_buf
            if not buf:
                self._events.append(ev.DATA_READY)
            # A slice copies; for a small segment that is cheaper than making a view.
            buf += segment[hlen:] if n < 4096 else memoryview(segment)[hlen:]
            nxt = tcb.rcv_nxt = (seq + plen) & MASK
            if plen > tcb.rcv_seg_max:
                tcb.rcv_seg_max = plen
            if ((nxt - tcb.last_ack_sent) & MASK) >= tcb.config.ack_every * tcb.rcv_seg_max:
                self._out.append(self._ack_segment(now))
            elif tcb.delack_at is None:
                tcb.delack_at = now + tcb.config.delack_time
            return False
        return self._receive_slow(segment, now)

    def _receive_slow(self, data: bytes | bytearray | memoryview, now: float) -> bool:
        """RFC 9293 3.10.7, step by step, for everything header prediction did not take."""
        tcb = self.tcb
        try:
            seg = parse(data)
        except Malformed:
            tcb.stats.malformed += 1
            return False
        state = tcb.state
        if state == CLOSED:
            reply = reset_for(seg, self._pseudo)
            if reply is not None:
                self._out.append(reply)
                tcb.stats.rst_sent += 1
            return False
        if state == SYN_SENT:
            self._syn_sent(seg, now)
            return False
        flags = seg.flags
        opts = seg.options
        orig_seq = seq = seg.seq
        ack = seg.ack
        payload = seg.payload
        syn = flags & SYN
        fin = flags & FIN
        rst = flags & RST
        tsval = opts.tsval

        if state == SYN_RECEIVED and syn and not flags & ACK and not rst and seq == tcb.irs:
            # Our SYN-ACK was lost and the peer sent its SYN again: send the SYN-ACK again
            # (as Linux does) rather than an ACK the peer in SYN_SENT would ignore; echo the
            # new SYN's timestamp, so that the peer measures the RTT of this exchange.
            tcb.snd_nxt = tcb.iss
            if tcb.ts_ok and tsval is not None:
                tcb.ts_recent = tsval
                tcb.ts_recent_at = now
            return False
        if (
            state == SYN_RECEIVED
            and syn
            and flags & ACK
            and not payload
            and ((seq + 1) & MASK) == tcb.rcv_nxt
        ):
            # Simultaneous open (RFC 9293 figure 7): the peer's SYN-ACK repeats the SYN we
            # have; its ACK is what counts (Linux lets exactly this one pass).
            syn = 0
            seq = orig_seq = tcb.rcv_nxt
        if state == TIME_WAIT and syn and not flags & (ACK | RST):
            # RFC 6191 / RFC 1122 4.2.2.13: a new incarnation may take over from TIME_WAIT
            # when its SYN is beyond the old sequence space (or its timestamp newer).
            newer_ts = tcb.ts_ok and tsval is not None and ((tsval - tcb.ts_recent) & MASK) < HALF
            if (0 < ((seq - tcb.rcv_nxt) & MASK) < HALF) or (newer_ts and tsval != tcb.ts_recent):
                self._close(None)
                return True

        # RFC 7323 5.3: PAWS, before anything else.
        if (
            tcb.ts_ok
            and tsval is not None
            and not rst
            and tcb.ts_recent_at is not None
            and ((tsval - tcb.ts_recent) & MASK) >= HALF
        ):
            if now - tcb.ts_recent_at > PAWS_IDLE:
                tcb.ts_recent_at = None
            else:
                tcb.stats.paws_dropped += 1
                self._dupack(len(payload), now)
                return False

        # Step 1: is the segment acceptable?
        plen = len(payload)
        seglen = plen + (1 if syn else 0) + (1 if fin else 0)
        nxt = tcb.rcv_nxt
        wnd = (tcb.rcv_adv - nxt) & MASK
        if wnd >= HALF:
            wnd = 0
        off = (seq - nxt) & MASK
        if seglen == 0:
            ok = off == 0 if wnd == 0 else off < wnd
        elif wnd == 0:
            ok = False
        else:
            ok = off < wnd or ((seq + seglen - 1 - nxt) & MASK) < wnd
        if not ok:
            if wnd == 0 and off == 0 and not syn and not rst:
                # A zero-window probe: take its ACK, drop its data, answer with our window.
                payload = payload[:0]
                fin = 0
                tcb.ack_now = True
            else:
                tcb.stats.out_of_window += 1
                if not rst:
                    if state == TIME_WAIT and fin:
                        tcb.timewait_at = now + 2 * tcb.config.msl  # the FIN again
                    self._dupack(seglen, now)
                return False
        tcb.last_rcv_at = now
        tcb.keep_probes = 0
        # RFC 7323 4.3: remember the timestamp to echo.
        if (
            tcb.ts_ok
            and tsval is not None
            and ((tcb.last_ack_sent - orig_seq) & MASK) < HALF
            and ((tsval - tcb.ts_recent) & MASK) < HALF
        ):
            tcb.ts_recent = tsval
            tcb.ts_recent_at = now
        # Trim to the window: what is below RCV.NXT is old, what is beyond the window is early.
        if off >= HALF:
            skip = (nxt - seq) & MASK
            if syn:
                syn = 0
                skip -= 1
            if skip > plen:
                fin = 0
                skip = plen
            payload = payload[skip:]
            seq = nxt
            tcb.ack_now = True  # a duplicate: acknowledge at once
            off = 0
        plen = len(payload)
        if off + plen > wnd:
            payload = payload[: max(wnd - off, 0)]
            plen = len(payload)
            fin = 0
            tcb.ack_now = True

        # Step 2: RST (RFC 5961 3.2).
        if rst:
            if orig_seq == nxt:
                self._reset_received()
            else:
                self._challenge_ack(now)
            return False
        # Step 4: SYN in a synchronized state (RFC 5961 4.2).
        if syn:
            self._challenge_ack(now)
            return False
        # Step 5: ACK.
        if not flags & ACK:
            return False
        if state == SYN_RECEIVED:
            if 0 < ((ack - tcb.snd_una) & MASK) <= ((tcb.snd_max - tcb.snd_una) & MASK):
                self._establish(now)
                tcb.snd_wnd = seg.wnd << tcb.snd_wscale
                tcb.max_snd_wnd = max(tcb.max_snd_wnd, tcb.snd_wnd)
                tcb.snd_wl1 = orig_seq
                tcb.snd_wl2 = ack
            else:
                self._out.append(self._bare_rst(ack))
                tcb.stats.rst_sent += 1
                return False
        una = tcb.snd_una
        acked = (ack - una) & MASK
        if acked >= HALF:
            # An old ACK: fine if within the window we could have sent (RFC 5961 5.2).
            if ((una - ack) & MASK) > tcb.max_snd_wnd:
                self._dupack(plen, now)
                return False
            acked = 0
        elif acked > ((tcb.snd_max - una) & MASK):
            self._dupack(plen, now)  # acknowledges what we never sent
            return False
        newly_sacked = 0
        if acked:
            self._window_update(orig_seq, ack, seg.wnd)
            self._ack_new(ack, acked, opts.tsecr, now)
            if tcb.sack_ok and opts.sack_blocks:
                self.stack.on_sack(self, opts.sack_blocks)
        else:
            if tcb.sack_ok and opts.sack_blocks:
                newly_sacked = self.stack.on_sack(self, opts.sack_blocks)
            if ack == una and tcb.snd_max != una and tcb.persist_at is None:
                classic = not plen and not fin and (seg.wnd << tcb.snd_wscale) == tcb.snd_wnd
                if classic or newly_sacked:
                    self.stack.on_dupack(self, bool(classic), newly_sacked, now)
            self._window_update(orig_seq, ack, seg.wnd)
        state = tcb.state
        if state != ESTABLISHED and self._fin_acked():
            if state == FIN_WAIT_1:
                tcb.state = state = FIN_WAIT_2
            elif state == CLOSING:
                self._enter_time_wait(now)
                return False
            elif state == LAST_ACK:
                self._close(None)
                return False

        # Steps 7 and 8: text and FIN.
        if (plen or fin) and state in RECEIVING:
            self._rcv_data(seq, payload, fin, now)
        if tcb.ack_now and tcb.state != CLOSED:
            self._out.append(self._ack_segment(now))
        return False

    def _syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        tcb = self.tcb
        flags = seg.flags
        ack = seg.ack
        if flags & ACK and not (0 < ((ack - tcb.iss) & MASK) <= ((tcb.snd_max - tcb.iss) & MASK)):
            if not flags & RST:
                self._out.append(self._bare_rst(ack))
                tcb.stats.rst_sent += 1
            return
        if flags & RST:
            if flags & ACK:
                tcb.snd_buf.clear()
                self._close(ev.Reset(errno.ECONNREFUSED))
            return
        if not flags & SYN:
            return
        tcb.irs = seg.seq
        tcb.rcv_nxt = tcb.last_ack_sent = (seg.seq + 1) & MASK
        tcb.last_rcv_at = now
        self._negotiate(seg.options, now)
        tcb.rcv_adv = (tcb.rcv_nxt + min(tcb.config.rcvbuf, 0xFFFF)) & MASK
        tcb.snd_wnd = tcb.max_snd_wnd = seg.wnd  # unscaled in a SYN
        tcb.snd_wl1 = seg.seq
        tcb.snd_wl2 = ack
        if flags & ACK:
            self._establish(now)
            self._ack_new(ack, (ack - tcb.snd_una) & MASK, seg.options.tsecr, now)
            tcb.ack_now = True
            if len(seg.payload) or flags & FIN:
                self._rcv_data(tcb.rcv_nxt, seg.payload, flags & FIN, now)
            if tcb.ack_now and tcb.state != CLOSED:
                self._out.append(self._ack_segment(now))
        else:
            # Simultaneous open: answer with SYN-ACK (our SYN again, now acknowledging theirs).
            tcb.state = SYN_RECEIVED
            tcb.snd_nxt = tcb.iss
            tcb.rexmt_at = None

    def _negotiate(self, opts: Options, now: float) -> None:
        """Take the options of the peer's SYN (RFC 6691, 7323, 2018)."""
        tcb = self.tcb
        cfg = tcb.config
        tcb.peer_mss = opts.mss if opts.mss else (1220 if ":" in tcb.local_addr else 536)
        tcb.ws_ok = cfg.window_scaling and opts.wscale is not None
        if tcb.ws_ok:
            tcb.snd_wscale = opts.wscale or 0
        else:
            tcb.snd_wscale = tcb.rcv_wscale = 0
        tcb.sack_ok = cfg.sack and opts.sack_permitted
        tcb.ts_ok = cfg.timestamps and opts.tsval is not None
        if tcb.ts_ok:
            tcb.ts_recent = opts.tsval or 0
            tcb.ts_recent_at = now
        tcb.snd_mss = max(min(tcb.peer_mss, tcb.our_mss) - (12 if tcb.ts_ok else 0), MIN_MSS)
        tcb.rcv_seg_max = min(tcb.our_mss - (12 if tcb.ts_ok else 0), 536)

    def _establish(self, now: float) -> None:
        tcb = self.tcb
        tcb.state = FIN_WAIT_1 if tcb.fin_queued else ESTABLISHED
        # RFC 5681 3.1: one segment if the SYN had to be retransmitted, else the IW (RFC 6928).
        tcb.cwnd = tcb.snd_mss if tcb.syn_rto_expired else tcb.config.initial_cwnd * tcb.snd_mss
        tcb.ssthresh = 0x7FFFFFFF
        if tcb.syn_rto_expired and tcb.srtt is None and tcb.rto < 3.0:
            tcb.rto = 3.0  # RFC 6298 5.7
        if tcb.config.keepalive:
            tcb.keep_at = now + tcb.config.keepidle
        self._events.append(ev.ESTABLISHED)

    def _window_update(self, seq: int, ack: int, wnd: int) -> None:
        """RFC 9293 3.10.7.4 step 5: take SEG.WND if the segment is newer than the last one."""
        tcb = self.tcb
        d = (seq - tcb.snd_wl1) & MASK
        if (d and d < HALF) or (not d and ((ack - tcb.snd_wl2) & MASK) < HALF):
            sw = wnd << tcb.snd_wscale
            tcb.snd_wnd = sw
            tcb.snd_wl1 = seq
            tcb.snd_wl2 = ack
            if sw > tcb.max_snd_wnd:
                tcb.max_snd_wnd = sw
            if sw and tcb.persist_at is not None:
                tcb.persist_at = None
                tcb.persist_shift = 0
                tcb.persist_force = False

    def _ack_new(self, ack: int, acked: int, tsecr: int, now: float) -> None:
        """SND.UNA advances to ``ack``: trim the send buffer, measure the RTT, restart the
        retransmission timer, and let the stack grow its window."""
        tcb = self.tcb
        buf = tcb.snd_buf
        nbuf = (ack - tcb.snd_buf_seq) & MASK
        if nbuf and nbuf < HALF:
            if nbuf > len(buf):
                nbuf = len(buf)  # the rest is our FIN
            if nbuf:
                del buf[:nbuf]
                tcb.snd_buf_seq = (tcb.snd_buf_seq + nbuf) & MASK
        tcb.snd_una = ack
        if ((tcb.snd_nxt - ack) & MASK) >= HALF:
            tcb.snd_nxt = ack
        # RTT (RFC 6298, RFC 7323 4): from the echoed timestamp, else from one timed segment
        # that was never retransmitted (Karn).
        if tcb.ts_ok:
            if tsecr:
                if tcb.rxt_ts is not None:
                    # Karn's rule for echoes: after a timeout, an echo older than the
                    # retransmission may answer it (a duplicate at the receiver echoes the
                    # original's timestamp) and would count the whole timeout as RTT.
                    if ((tsecr - tcb.rxt_ts) & MASK) >= HALF:
                        tsecr = 0
                    else:
                        tcb.rxt_ts = None
                if tsecr:
                    rtt = (int(now * 1000.0) + tcb.ts_offset - tsecr) & MASK
                    if rtt < HALF:
                        self._rtt_sample(rtt / 1000.0)
        elif tcb.rtt_at is not None and 0 < ((ack - tcb.rtt_seq) & MASK) < HALF:
            self._rtt_sample(now - tcb.rtt_at)
            tcb.rtt_at = None
        tcb.rxt_shift = 0
        if ack == tcb.snd_max:
            tcb.rexmt_at = None
            tcb.user_at = None
        else:
            rto = tcb.rto
            tcb.rexmt_at = now + rto
            ut = tcb.config.user_timeout
            if ut is not None:
                tcb.user_at = now + ut
        self.stack.on_ack(self, acked, now)
        if tcb.want_writable and 2 * len(buf) <= tcb.config.sndbuf:
            tcb.want_writable = False
            self._events.append(ev.WRITABLE)

    def _rtt_sample(self, r: float) -> None:
        tcb = self.tcb
        srtt = tcb.srtt
        if srtt is None:
            tcb.srtt = srtt = r
            tcb.rttvar = r / 2
        else:
            tcb.rttvar = 0.75 * tcb.rttvar + 0.25 * abs(srtt - r)
            tcb.srtt = srtt = 0.875 * srtt + 0.125 * r
        var = 4 * tcb.rttvar
        rto = srtt + (var if var > CLOCK_G else CLOCK_G)
        cfg = tcb.config
        tcb.rto = cfg.min_rto if rto < cfg.min_rto else cfg.max_rto if rto > cfg.max_rto else rto

    def _fin_acked(self) -> bool:
        tcb = self.tcb
        return (
            tcb.fin_queued
            and not tcb.snd_buf
            and tcb.snd_una == tcb.snd_max
            and ((tcb.snd_una - tcb.snd_buf_seq) & MASK) == 1
        )

    def _rcv_data(self, seq: int, payload: memoryview, fin: int, now: float) -> None:
        """Steps 7 and 8 for a trimmed, acceptable segment: deliver, queue out of order, FIN."""
        tcb = self.tcb
        plen = len(payload)
        if tcb.rcv_closed and plen:
            # Data for a closed reader: nobody will read it (RFC 9293 3.10.4, RFC 2525).
            self._send_rst()
            tcb.snd_buf.clear()
            self._close(None)
            return
        if seq == tcb.rcv_nxt:
            buf = tcb.rcv_buf
            if plen:
                if not buf:
                    self._events.append(ev.DATA_READY)
                buf += payload
                tcb.rcv_nxt = (seq + plen) & MASK
                if plen > tcb.rcv_seg_max:
                    tcb.rcv_seg_max = plen
            filled = False
            if tcb.ooo:
                filled = self._ooo_drain()
            if fin or (tcb.ooo_fin is not None and tcb.ooo_fin == tcb.rcv_nxt):
                self._fin_received(now)
                return
            if (
                filled
                or tcb.ack_now
                or ((tcb.rcv_nxt - tcb.last_ack_sent) & MASK)
                >= tcb.config.ack_every * tcb.rcv_seg_max
            ):
                tcb.ack_now = True
            elif plen and tcb.delack_at is None:
                tcb.delack_at = now + tcb.config.delack_time
        else:
            if plen:
                self._ooo_insert(seq, payload)
            if fin:
                tcb.ooo_fin = (seq + plen) & MASK
            tcb.ack_now = True  # RFC 5681 4.2: a duplicate ACK at once (with SACK blocks)

    def _ooo_insert(self, seq: int, payload: memoryview) -> None:
        """Keep an out-of-order segment, merged with its neighbours; bounded in blocks."""
        tcb = self.tcb
        tcb.stats.ooo_segments += 1
        nxt = tcb.rcv_nxt
        start = (seq - nxt) & MASK
        end = start + len(payload)
        blocks = tcb.ooo
        i = 0
        while i < len(blocks) and ((blocks[i][0] - nxt) & MASK) + len(blocks[i][1]) < start:
            i += 1
        j = i
        while j < len(blocks) and ((blocks[j][0] - nxt) & MASK) <= end:
            j += 1
        if i == j:
            if len(blocks) >= tcb.config.max_ooo_blocks:
                tcb.stats.ooo_dropped += 1
                return
            blocks.insert(i, [seq, bytearray(payload)])
            tcb.ooo_recent = seq
            return
        first_start = (blocks[i][0] - nxt) & MASK
        if start < first_start:
            merged = bytearray(payload[: first_start - start])
            merged += blocks[i][1]
            mstart = start
        else:
            merged = blocks[i][1]
            mstart = first_start
        mend = mstart + len(merged)
        for k in range(i + 1, j):
            bstart = (blocks[k][0] - nxt) & MASK
            if bstart > mend:
                merged += payload[mend - start : bstart - start]
                mend = bstart
            bdata = blocks[k][1]
            bend = bstart + len(bdata)
            if bend > mend:
                merged += memoryview(bdata)[mend - bstart :]
                mend = bend
        if end > mend:
            merged += payload[mend - start :]
        head = (nxt + mstart) & MASK
        blocks[i:j] = [[head, merged]]
        tcb.ooo_recent = head

    def _ooo_drain(self) -> bool:
        """Move out-of-order blocks that RCV.NXT has reached into the receive buffer."""
        tcb = self.tcb
        blocks = tcb.ooo
        moved = False
        buf = tcb.rcv_buf
        while blocks:
            bseq, bdata = blocks[0]
            behind = (tcb.rcv_nxt - bseq) & MASK
            if behind >= HALF:
                break  # still a hole before it
            if behind < len(bdata):
                if not buf:
                    self._events.append(ev.DATA_READY)
                buf += memoryview(bdata)[behind:]
                tcb.rcv_nxt = (bseq + len(bdata)) & MASK
            del blocks[0]
            moved = True
        if not blocks:
            tcb.ooo_recent = None
        return moved

    def _fin_received(self, now: float) -> None:
        tcb = self.tcb
        tcb.rcv_nxt = (tcb.rcv_nxt + 1) & MASK
        tcb.fin_received = True
        tcb.ooo_fin = None
        tcb.ooo.clear()
        tcb.ooo_recent = None
        tcb.ack_now = True
        self._events.append(ev.END_OF_STREAM)
        state = tcb.state
        if state == ESTABLISHED:
            tcb.state = CLOSE_WAIT
        elif state == FIN_WAIT_1:
            tcb.state = CLOSING
        elif state == FIN_WAIT_2:
            self._enter_time_wait(now)

    def _reset_received(self) -> None:
        """An acceptable RST (RFC 9293 3.10.7.4 step 2)."""
        tcb = self.tcb
        state = tcb.state
        tcb.snd_buf.clear()
        tcb.ooo.clear()
        if state == SYN_RECEIVED:
            code = errno.ECONNRESET if tcb.passive else errno.ECONNREFUSED
            self._close(ev.Reset(code))
        elif state in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self._close(ev.Reset(errno.ECONNRESET))
        else:
            self._close(None)

    def _dupack(self, seglen: int, now: float) -> None:
        """The ACK that answers an unacceptable segment. For one that carries data, always (the
        sender needs it); for one that does not, at most one per 500 ms, as Linux's
        tcp_invalid_ratelimit: two ends that each find the other's ACKs unacceptable must not
        answer each other forever."""
        tcb = self.tcb
        if not seglen:
            if tcb.oow_ack_at is not None and now - tcb.oow_ack_at < OOW_ACK_INTERVAL:
                tcb.stats.challenge_acks_suppressed += 1
                return
            tcb.oow_ack_at = now
        self._out.append(self._ack_segment(now))

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 3.2, 4.2: answer with an ACK, at most ``challenge_ack_limit`` a second."""
        tcb = self.tcb
        if tcb.challenge_at is None or now - tcb.challenge_at >= 1.0:
            tcb.challenge_at = now
            tcb.challenge_count = 0
        if tcb.challenge_count >= tcb.config.challenge_ack_limit:
            tcb.stats.challenge_acks_suppressed += 1
            return
        tcb.challenge_count += 1
        tcb.stats.challenge_acks += 1
        self._out.append(self._ack_segment(now))

    # --------------------------------------------------------------------------- output

    def segments_to_send(self, now: float) -> list[bytes]:
        """Every segment due now, in order: control segments queued by ``receive`` and timers,
        then what the stack sends (retransmissions, new data, FIN), then an ACK if one is owed.
        Nothing while paused."""
        tcb = self.tcb
        if tcb.paused:
            return []
        out = self._out
        self._out = []
        state = tcb.state
        if ESTABLISHED <= state <= LAST_ACK:
            if tcb.persist_force:
                self._persist_probe(now, out)
            elif tcb.persist_at is None:
                self.stack.output(self, now, out)
            if tcb.ack_now:
                out.append(self._ack_segment(now))
            if (
                not tcb.snd_wnd
                and tcb.persist_at is None
                and (tcb.snd_max != tcb.snd_una or self._unsent_or_fin())
            ):
                # The peer's window is closed: what is in flight lies beyond it (so will not
                # be taken), and retransmitting it would only time out until R2. The persist
                # timer takes over from SND.UNA, probing (as BSD's tcp_output does).
                tcb.rexmt_at = None
                tcb.rxt_shift = 0
                tcb.snd_nxt = tcb.snd_una
                self._arm_persist(now)
            if tcb.rexmt_at is None and tcb.persist_at is None:
                if tcb.snd_max != tcb.snd_una:
                    self._arm_rexmt(now)
                elif self._unsent_or_fin():
                    self._arm_persist(now)
        elif state in (SYN_SENT, SYN_RECEIVED):
            if tcb.snd_nxt == tcb.iss:
                out.append(self._syn_segment(now))
            elif tcb.ack_now and state == SYN_RECEIVED:
                out.append(self._ack_segment(now))
            tcb.ack_now = False
        elif state == TIME_WAIT and tcb.ack_now:
            out.append(self._ack_segment(now))
        return out

    def _unsent_or_fin(self) -> bool:
        tcb = self.tcb
        sent = (tcb.snd_max - tcb.snd_buf_seq) & MASK
        return sent < len(tcb.snd_buf) or (tcb.fin_queued and sent == len(tcb.snd_buf))

    def _arm_rexmt(self, now: float) -> None:
        tcb = self.tcb
        cfg = tcb.config
        tcb.rexmt_at = now + min(tcb.rto * (1 << min(tcb.rxt_shift, 16)), cfg.max_rto)
        if cfg.user_timeout is not None and tcb.user_at is None:
            tcb.user_at = now + cfg.user_timeout

    def _arm_persist(self, now: float) -> None:
        tcb = self.tcb
        cfg = tcb.config
        tcb.persist_at = now + min(tcb.rto * (1 << min(tcb.persist_shift, 16)), cfg.max_rto)
        if cfg.user_timeout is not None and tcb.user_at is None:
            tcb.user_at = now + cfg.user_timeout

    def send_new(self, budget: int, now: float, out: list[bytes]) -> int:
        """Send from SND.NXT as much as ``budget`` (the stack's congestion allowance, bytes)
        and the peer's window allow, in full segments, with Nagle (unless nodelay) and
        sender-side SWS avoidance (RFC 1122 4.2.3.4) for a short last one, and the FIN when its
        turn comes. Returns the number of segments. Called by stacks."""
        tcb = self.tcb
        una = tcb.snd_una
        nxt = tcb.snd_nxt
        buf = tcb.snd_buf
        idx = (nxt - tcb.snd_buf_seq) & MASK
        avail = len(buf) - idx
        fin_q = tcb.fin_queued
        if idx >= HALF or avail < 0 or (not avail and not fin_q):
            tcb.cwnd_limited = False
            return 0
        in_flight = (nxt - una) & MASK
        wnd_room = tcb.snd_wnd - in_flight
        room = budget if budget < wnd_room else wnd_room
        tcb.cwnd_limited = budget < wnd_room and budget < avail
        mss = tcb.snd_mss
        idle = tcb.snd_max == una
        cfg = tcb.config
        nodelay = cfg.nodelay
        max_wnd = tcb.max_snd_wnd
        smax = tcb.snd_max
        start = nxt
        count = 0
        use_sack = tcb.sack_ok and bool(tcb.ooo)
        ts_ok = tcb.ts_ok
        wnd = self._wnd_field()
        ack = tcb.rcv_nxt
        sport = self._port_l
        dport = self._port_r
        offload = cfg.tx_checksum_offload
        if ts_ok:
            tsval = (int(now * 1000.0) + tcb.ts_offset) & MASK
            tsecr = tcb.ts_recent
            base = (
                self._pseudo + 32 + sport + dport + ack + OFF32 + wnd + TS_WORD_SUM + tsval + tsecr
            )
            pack_ts = HDR_TS.pack
            hlen = 32
        else:
            tsval = tsecr = 0
            base = self._pseudo + 20 + sport + dport + ack + OFF20 + wnd
            pack = HDR.pack
            hlen = 20
        append = out.append
        while True:
            if avail > 0:
                if room <= 0:
                    break
                length = mss if avail > mss else avail
                if length > room:
                    length = room
                if (
                    length < mss
                    and not (length == avail and (idle or nodelay or fin_q))
                    and 2 * length < max_wnd
                    and ((nxt - smax) & MASK) < HALF
                ):
                    # Nagle or SWS (BSD's rules): hold a short segment of new data unless it
                    # empties the buffer while nothing is in flight (or NODELAY, or with the
                    # FIN), or fills half the largest window the peer offered.
                    break
                flags = ACK
                if length == avail:
                    flags = ACK | PSH | FIN if fin_q else ACK | PSH
            elif fin_q and wnd_room > 0:
                length = 0
                flags = ACK | FIN
            else:
                break
            payload = buf[idx : idx + length]
            if use_sack:
                append(self._build(nxt, flags, payload, now))
            else:
                if offload:
                    csum = partial_checksum(self._pseudo, hlen + length)
                else:
                    r = (base + nxt + flags + length + words(payload)) % 0xFFFF
                    csum = 0xFFFF - r if r else 0
                if ts_ok:
                    head = pack_ts(
                        sport, dport, nxt, ack, OFF32 | flags, wnd, csum, 0, TS_WORD, tsval, tsecr
                    )
                else:
                    head = pack(sport, dport, nxt, ack, OFF20 | flags, wnd, csum, 0)
                append(head + payload)
            count += 1
            if flags & FIN:
                nxt = (nxt + length + 1) & MASK
                break
            nxt = (nxt + length) & MASK
            idx += length
            avail -= length
            room -= length
        if not count:
            return 0
        tcb.snd_nxt = nxt
        if ((smax - start) & MASK) and ((smax - start) & MASK) < HALF:
            # Go-back-N after a timeout: some of these were sent before (Karn: no timing).
            tcb.stats.retransmits += count
            tcb.rtt_at = None
        elif not ts_ok and tcb.rtt_at is None:
            tcb.rtt_seq = start
            tcb.rtt_at = now
        if ((nxt - smax) & MASK) < HALF:
            tcb.snd_max = nxt
        if tcb.rexmt_at is None:
            self._arm_rexmt(now)
        tcb.last_sent_at = now
        tcb.last_ack_sent = ack
        tcb.delack_at = None
        tcb.ack_now = False
        return count

    def retransmit(self, seq: int, length: int, now: float, out: list[bytes]) -> int:
        """Send again up to ``length`` bytes from ``seq`` (with the FIN if they reach it and it
        was sent); returns the sequence space covered. Called by stacks."""
        tcb = self.tcb
        idx = (seq - tcb.snd_buf_seq) & MASK
        buflen = len(tcb.snd_buf)
        sent = (tcb.snd_max - seq) & MASK
        if idx >= HALF or idx > buflen or sent >= HALF:
            return 0
        avail = buflen - idx
        if length > avail:
            length = avail
        if length > sent:
            length = sent  # never beyond SND.MAX: that is new data, send_new's business
        flags = ACK
        if idx + length == buflen:
            flags |= PSH
            if tcb.fin_queued and ((tcb.snd_max - tcb.snd_buf_seq) & MASK) > buflen:
                flags |= FIN
        if not length and not flags & FIN:
            return 0
        out.append(self._build(seq, flags, tcb.snd_buf[idx : idx + length], now))
        tcb.stats.retransmits += 1
        tcb.rtt_at = None  # Karn
        if tcb.rexmt_at is None:
            self._arm_rexmt(now)
        tcb.last_sent_at = now
        return length + (1 if flags & FIN else 0)

    def _persist_probe(self, now: float, out: list[bytes]) -> None:
        """The persist timer fired (RFC 9293 3.8.6.1): send one byte beyond a zero window, or
        what a too-small window takes, whatever Nagle and SWS say; then back off."""
        tcb = self.tcb
        tcb.persist_force = False
        tcb.stats.persist_probes += 1
        if tcb.snd_max != tcb.snd_una:
            self.retransmit(tcb.snd_una, 1, now, out)
            tcb.stats.retransmits -= 1  # a probe, not a loss
        else:
            buf = tcb.snd_buf
            idx = (tcb.snd_nxt - tcb.snd_buf_seq) & MASK
            avail = len(buf) - idx
            length = min(max(tcb.snd_wnd, 1), tcb.snd_mss, max(avail, 0))
            flags = ACK
            if length == avail:
                flags |= PSH | (FIN if tcb.fin_queued else 0)
            if length or flags & FIN:
                out.append(self._build(tcb.snd_nxt, flags, buf[idx : idx + length], now))
                tcb.snd_nxt = tcb.snd_max = (
                    tcb.snd_nxt + length + (1 if flags & FIN else 0)
                ) & MASK
                tcb.last_sent_at = now
        tcb.persist_shift += 1
        tcb.persist_at = None
        tcb.rexmt_at = None
        self._arm_persist(now)

    def _wnd_field(self) -> int:
        """The window field for a segment now, and ``rcv_adv`` moved to match: never shrinking,
        and grown only by min(RCV.BUFF / 2, MSS) or more (receiver SWS, RFC 1122 4.2.3.3)."""
        tcb = self.tcb
        rcvbuf = tcb.config.rcvbuf
        free = rcvbuf - len(tcb.rcv_buf)
        nxt = tcb.rcv_nxt
        cur = (tcb.rcv_adv - nxt) & MASK
        if cur >= HALF:
            cur = 0
        if free > cur:
            grow = free - cur
            if grow < tcb.rcv_seg_max and 2 * grow < rcvbuf:
                free = cur
        else:
            free = cur
        shift = tcb.rcv_wscale
        field = free >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        edge = (nxt + (field << shift)) & MASK
        if ((edge - tcb.rcv_adv) & MASK) < HALF:
            tcb.rcv_adv = edge
        return field

    def _sack_blocks(self) -> list[tuple[int, int]]:
        """Our SACK blocks (RFC 2018 4): the most recently changed block first."""
        tcb = self.tcb
        blocks = [(seq, (seq + len(data)) & MASK) for seq, data in tcb.ooo]
        recent = tcb.ooo_recent
        if recent is not None:
            for i, block in enumerate(blocks):
                if block[0] == recent:
                    if i:
                        blocks.insert(0, blocks.pop(i))
                    break
        return blocks

    def _build(self, seq: int, flags: int, payload: bytes | bytearray, now: float) -> bytes:
        """A non-SYN segment with our current ACK, window, timestamps and SACK blocks."""
        tcb = self.tcb
        wnd = self._wnd_field()
        ack = 0
        if flags & ACK:
            ack = tcb.rcv_nxt
            tcb.last_ack_sent = ack
            tcb.delack_at = None
            tcb.ack_now = False
        sack = tcb.sack_ok and bool(tcb.ooo) and bool(flags & ACK)
        if tcb.ts_ok:
            ts = ((int(now * 1000.0) + tcb.ts_offset) & MASK, tcb.ts_recent)
            if sack:
                opts = encode_options(timestamp=ts, sack_blocks=self._sack_blocks())
            else:
                opts = TS_OPT.pack(TS_WORD, *ts)
        elif sack:
            opts = encode_options(sack_blocks=self._sack_blocks())
        else:
            opts = b""
        return build(
            self._port_l,
            self._port_r,
            seq,
            ack,
            flags,
            wnd,
            self._pseudo,
            opts,
            payload,
            offload=tcb.config.tx_checksum_offload,
        )

    def _ack_segment(self, now: float) -> bytes:
        """A pure ACK. Its sequence number is SND.MAX, not a rewound SND.NXT (as BSD)."""
        tcb = self.tcb
        if not tcb.ts_ok or (tcb.ooo and tcb.sack_ok) or tcb.config.tx_checksum_offload:
            return self._build(tcb.snd_max, ACK, b"", now)
        wnd = self._wnd_field()
        ack = tcb.last_ack_sent = tcb.rcv_nxt
        tcb.delack_at = None
        tcb.ack_now = False
        seq = tcb.snd_max
        tsval = (int(now * 1000.0) + tcb.ts_offset) & MASK
        tsecr = tcb.ts_recent
        r = (self._ack_base + seq + ack + wnd + tsval + tsecr) % 0xFFFF
        return HDR_TS.pack(
            self._port_l,
            self._port_r,
            seq,
            ack,
            OFF32 | ACK,
            wnd,
            0xFFFF - r if r else 0,
            0,
            TS_WORD,
            tsval,
            tsecr,
        )

    def _syn_segment(self, now: float) -> bytes:
        tcb = self.tcb
        cfg = tcb.config
        window = min(max(cfg.rcvbuf - len(tcb.rcv_buf), 0), 0xFFFF)
        tsval = (int(now * 1000.0) + tcb.ts_offset) & MASK
        if tcb.state == SYN_SENT:
            flags = SYN
            ack = 0
            opts = encode_options(
                mss=tcb.our_mss,
                wscale=tcb.rcv_wscale if cfg.window_scaling else None,
                sack_permitted=cfg.sack,
                timestamp=(tsval, 0) if cfg.timestamps else None,
            )
        else:
            flags = SYN | ACK
            ack = tcb.rcv_nxt
            tcb.last_ack_sent = ack
            edge = (ack + window) & MASK
            if ((edge - tcb.rcv_adv) & MASK) < HALF:
                tcb.rcv_adv = edge
            opts = encode_options(
                mss=tcb.our_mss,
                wscale=tcb.rcv_wscale if tcb.ws_ok else None,
                sack_permitted=tcb.sack_ok,
                timestamp=(tsval, tcb.ts_recent) if tcb.ts_ok else None,
            )
        segment = build(
            self._port_l,
            self._port_r,
            tcb.iss,
            ack,
            flags,
            window,
            self._pseudo,
            opts,
            offload=cfg.tx_checksum_offload,
        )
        tcb.snd_nxt = (tcb.iss + 1) & MASK
        if tcb.snd_max == tcb.iss:
            tcb.snd_max = tcb.snd_nxt
        if tcb.rxt_shift == 0 and tcb.rtt_at is None:
            tcb.rtt_seq = tcb.iss
            tcb.rtt_at = now
        if tcb.rexmt_at is None:
            self._arm_rexmt(now)
        tcb.ack_now = False
        return segment

    def _bare_rst(self, seq: int) -> bytes:
        """<SEQ=seq><CTL=RST>, for an unacceptable ACK in SYN_SENT or SYN_RECEIVED."""
        offload = self.tcb.config.tx_checksum_offload
        return build(self._port_l, self._port_r, seq, 0, RST, 0, self._pseudo, offload=offload)

    def _send_rst(self) -> None:
        """A RST for ``abort`` and give-ups: SEQ = SND.MAX, with our ACK (as Linux)."""
        tcb = self.tcb
        self._out.append(
            build(
                self._port_l,
                self._port_r,
                tcb.snd_max,
                tcb.rcv_nxt,
                RST | ACK,
                0,
                self._pseudo,
                offload=tcb.config.tx_checksum_offload,
            )
        )
        tcb.stats.rst_sent += 1

    # --------------------------------------------------------------------------- timers

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``; then call :meth:`segments_to_send`."""
        tcb = self.tcb
        if tcb.paused or tcb.state == CLOSED:
            return
        t = tcb.timewait_at
        if t is not None and now >= t:
            self._close(None)
            return
        t = tcb.user_at
        if t is not None and now >= t:
            self._give_up("user timeout")
            return
        t = tcb.rexmt_at
        if t is not None and now >= t:
            self._rexmt_timeout(now)
            if self.closed:
                return
        t = tcb.persist_at
        if t is not None and now >= t:
            if tcb.keep_probes >= tcb.config.r2:
                self._give_up("persist")
                return
            tcb.keep_probes += 1
            tcb.persist_force = True
        t = tcb.keep_at
        if t is not None and now >= t:
            self._keepalive(now)
            if self.closed:
                return
        t = tcb.delack_at
        if t is not None and now >= t:
            tcb.delack_at = None
            tcb.ack_now = True

    def _rexmt_timeout(self, now: float) -> None:
        """RFC 6298 5.4-5.7 and RFC 1122 R1/R2."""
        tcb = self.tcb
        cfg = tcb.config
        tcb.rexmt_at = None
        tcb.rxt_shift += 1
        tcb.stats.timeouts += 1
        syn_state = tcb.state in (SYN_SENT, SYN_RECEIVED)
        if tcb.rxt_shift > (cfg.syn_r2 if syn_state else cfg.r2):
            self._give_up("retransmit")
            return
        if tcb.rxt_shift == cfg.r1:
            self._events.append(ev.RetransmitWarning(tcb.rxt_shift))
        tcb.rtt_at = None  # Karn
        if tcb.ts_ok:
            tcb.rxt_ts = (int(now * 1000.0) + tcb.ts_offset) & MASK
        if syn_state:
            tcb.syn_rto_expired = True
            tcb.snd_nxt = tcb.iss
            return
        self.stack.on_timeout(self, now)
        tcb.snd_nxt = tcb.snd_una
        self._arm_rexmt(now)

    def _keepalive(self, now: float) -> None:
        """RFC 1122 4.2.3.6: after ``keepidle`` of silence, probe every ``keepintvl``; give up
        after ``keepcnt`` unanswered probes. Probes are ACKs with SEQ = SND.UNA - 1, no data."""
        tcb = self.tcb
        cfg = tcb.config
        if not cfg.keepalive or tcb.state not in KEEPALIVE_STATES:
            tcb.keep_at = None
            return
        last = tcb.last_rcv_at if tcb.last_rcv_at is not None else now
        if now - last < cfg.keepidle:
            tcb.keep_probes = 0
            tcb.keep_at = last + cfg.keepidle
            return
        if tcb.snd_max != tcb.snd_una or self._unsent_or_fin():
            tcb.keep_at = now + cfg.keepidle  # the retransmission timer watches the path
            return
        if tcb.keep_probes >= cfg.keepcnt:
            self._give_up("keepalive")
            return
        tcb.keep_probes += 1
        tcb.stats.keepalive_probes += 1
        self._out.append(self._build((tcb.snd_una - 1) & MASK, ACK, b"", now))
        tcb.keep_at = now + cfg.keepintvl

    # ------------------------------------------------------------------- state changes

    def _enter_time_wait(self, now: float) -> None:
        tcb = self.tcb
        tcb.state = TIME_WAIT
        tcb.timewait_at = now + 2 * tcb.config.msl
        tcb.rexmt_at = tcb.persist_at = tcb.keep_at = tcb.delack_at = tcb.user_at = None

    def _give_up(self, reason: str) -> None:
        tcb = self.tcb
        if tcb.state in RST_ON_ABORT or tcb.state in (CLOSING, LAST_ACK):
            self._send_rst()
        tcb.snd_buf.clear()
        tcb.ooo.clear()
        self._close(ev.TimedOut(reason))

    def _close(self, event: Any) -> None:
        tcb = self.tcb
        tcb.state = CLOSED
        tcb.rexmt_at = tcb.persist_at = tcb.keep_at = tcb.delack_at = None
        tcb.timewait_at = tcb.user_at = None
        tcb.ack_now = False
        if event is not None:
            self._events.append(event)
        self._events.append(ev.CLOSED)
        if not self._released:
            self._released = True
            self.stack.fini(self)
            self.registry.release(self.stack)


# -------------------------------------------------------------------------------- listener


class Listener:
    """RFC 9293's LISTEN state for one local port (or many: the caller demultiplexes).

    Stateless between calls apart from its settings: the caller keeps the connections it makes,
    bounds how many may be half-open, and sends the resets it returns."""

    __slots__ = ("config", "registry", "secret", "stats")

    def __init__(
        self,
        config: Config | None = None,
        *,
        secret: bytes,
        registry: StackRegistry | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        self.secret = secret
        self.registry = registry
        self.stats: dict[str, int] = {"syns": 0, "resets": 0, "dropped": 0}

    def receive(
        self,
        segment: bytes | bytearray | memoryview,
        local: Endpoint,
        remote: Endpoint,
        now: float,
        *,
        checksum_ok: bool = False,
    ) -> tuple[Connection | None, bytes | None]:
        """A segment for the listening port, from ``remote`` to ``local``: a new connection in
        SYN_RECEIVED for a SYN, a reset to send for an ACK, or nothing (RFC 9293 3.10.7.2)."""
        pseudo = pseudo_sum(local[0], remote[0])
        try:
            seg = parse(segment, None if checksum_ok else pseudo)
        except Malformed:
            self.stats["dropped"] += 1
            return None, None
        flags = seg.flags
        if flags & RST:
            return None, None
        if flags & ACK:
            self.stats["resets"] += 1
            return None, reset_for(seg, pseudo)
        if not flags & SYN or flags & FIN:
            self.stats["dropped"] += 1
            return None, None
        self.stats["syns"] += 1
        # Data on a SYN is not taken: the peer sends it again (no TCP Fast Open).
        conn = Connection.server_from_syn(
            local, remote, seg, now, self.config, secret=self.secret, registry=self.registry
        )
        return conn, None
