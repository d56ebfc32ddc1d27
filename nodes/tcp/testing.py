"""Two connections over a fake link on virtual time: the test harness of the TCP core.

Sans-IO like the core: a :class:`Pair` owns the clock (``pair.now``) and moves it straight to
the next thing that happens (a delivery on a :class:`Channel` or a connection's deadline), so
a minute of TCP timers costs nothing. Each channel is seeded: with the same seed and the same
traffic it drops, duplicates, reorders, delays and re-segments exactly the same segments.

The server side is made the way a tcp node would make it: the first SYN that reaches it goes
to a :class:`~nodes.tcp.connection.Listener`; segments for nobody get
:func:`~nodes.tcp.connection.stray_reset`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from .connection import Connection, Listener, stray_reset
from .segment import (
    ACK,
    FIN,
    MASK,
    PSH,
    Malformed,
    Segment,
    build,
    encode_options,
    parse,
    pseudo_sum,
)
from .tcb import Config

CLIENT = ("192.0.2.1", 40000)
SERVER = ("192.0.2.2", 80)
CLIENT6 = ("2001:db8::1", 40000)
SERVER6 = ("2001:db8::2", 80)


class Channel:
    """One direction of the link: FIFO with delay, plus seeded impairments.

    ``loss``, ``dup``, ``reorder`` and ``split`` are probabilities per segment; a reordered
    segment is held back ``reorder_delay`` more; a split one has its payload cut into two or
    three segments with their own headers (what a re-segmenting middlebox or a different sender
    might have sent). ``drop_if`` lets a test drop chosen segments (parsed) on purpose."""

    def __init__(
        self,
        *,
        seed: int = 0,
        delay: float = 0.005,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 0.003,
        split: float = 0.0,
        pseudo: int = 0,
    ) -> None:
        self.rng = random.Random(seed)
        self.delay = delay
        self.loss = loss
        self.dup = dup
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.split = split
        self.pseudo = pseudo
        self.drop_if: Callable[[Any], bool] | None = None
        self.queue: list[tuple[float, int, bytes]] = []
        self.counter = 0
        self.sent: list[tuple[float, bytes]] = []  # everything offered, with its time
        self.dropped = 0
        self.record = True

    def push(self, segment: bytes, now: float) -> None:
        if self.record:
            self.sent.append((now, segment))
        if self.drop_if is not None and self.drop_if(parse(segment)):
            self.dropped += 1
            return
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.dropped += 1
            return
        pieces = [segment]
        if self.split and rng.random() < self.split:
            pieces = resegment(segment, self.pseudo, rng)
        copies = 2 if self.dup and rng.random() < self.dup else 1
        for _ in range(copies):
            for piece in pieces:
                at = now + self.delay
                if self.reorder and rng.random() < self.reorder:
                    at += self.reorder_delay
                self.counter += 1
                heapq.heappush(self.queue, (at, self.counter, piece))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: float) -> list[bytes]:
        out = []
        queue = self.queue
        while queue and queue[0][0] <= now:
            out.append(heapq.heappop(queue)[2])
        return out


def resegment(segment: bytes, pseudo: int, rng: random.Random) -> list[bytes]:
    """Cut a data segment's payload into 2 or 3 segments with correct headers (same options,
    the FIN and PSH on the last piece only). Segments without payload come back whole."""
    try:
        seg = parse(segment)
    except Malformed:
        return [segment]
    payload = bytes(seg.payload)
    if len(payload) < 2:
        return [segment]
    cuts = sorted(rng.sample(range(1, len(payload)), min(rng.choice((1, 2)), len(payload) - 1)))
    bounds = [0, *cuts, len(payload)]
    options = bytes(segment[20 : seg.hlen])
    out = []
    for i in range(len(bounds) - 1):
        last = i == len(bounds) - 2
        flags = seg.flags if last else seg.flags & ~(FIN | PSH)
        out.append(
            build(
                seg.sport,
                seg.dport,
                (seg.seq + bounds[i]) & MASK,
                seg.ack,
                flags,
                seg.wnd,
                pseudo,
                options,
                payload[bounds[i] : bounds[i + 1]],
            )
        )
    return out


class Pair:
    """A client connection ``a`` and a server connection ``b`` (made from ``a``'s SYN by a
    listener), joined by channels ``ab`` and ``ba``, with simple applications on both ends:
    ``pair.write(side, data)`` queues bytes that are fed to ``send`` as room allows, and each
    side's received bytes collect in ``pair.got[side]``."""

    def __init__(
        self,
        config_a: Config | None = None,
        config_b: Config | None = None,
        *,
        seed: int = 0,
        isn_a: int | None = None,
        isn_b: int | None = None,
        start: float = 1000.0,
        ipv6: bool = False,
        connect: bool = True,
        channel: dict[str, Any] | None = None,
        channel_ab: dict[str, Any] | None = None,
        channel_ba: dict[str, Any] | None = None,
        auto_read: bool = True,
    ) -> None:
        self.now = start
        self.local, self.remote = (CLIENT6, SERVER6) if ipv6 else (CLIENT, SERVER)
        self.pseudo = pseudo_sum(self.local[0], self.remote[0])
        base = dict(channel or {})
        self.ab = Channel(seed=seed, pseudo=self.pseudo, **{**base, **(channel_ab or {})})
        self.ba = Channel(seed=seed + 1, pseudo=self.pseudo, **{**base, **(channel_ba or {})})
        self.config_a = config_a or Config()
        self.config_b = config_b or Config()
        self.isn_a = isn_a
        self.isn_b = isn_b
        self.listener: Listener | None = Listener(self.config_b, secret=b"server-secret")
        self.a: Connection | None = None
        self.b: Connection | None = None
        self.pending: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}
        self.shutdown_after: dict[str, bool] = {"a": False, "b": False}
        self.got: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}
        self.events: dict[str, list[Any]] = {"a": [], "b": []}
        self.strays: list[bytes] = []  # resets sent for segments nobody took
        self.auto_read = auto_read
        self.stopped = False
        if connect:
            self.connect()

    # ----------------------------------------------------------------------- setup

    def connect(self) -> Connection:
        self.a = Connection.client(
            self.local,
            self.remote,
            self.now,
            self.config_a,
            secret=b"client-secret",
            isn=self.isn_a,
        )
        self.flush()
        return self.a

    def conn(self, side: str) -> Connection:
        conn = self.a if side == "a" else self.b
        assert conn is not None, f"no connection on side {side}"
        return conn

    # ------------------------------------------------------------------------- moves

    def write(self, side: str, data: bytes, *, then_shutdown: bool = False) -> None:
        self.pending[side] += data
        if then_shutdown:
            self.shutdown_after[side] = True
        self._apps()
        self.flush()

    def flush(self) -> None:
        if self.a is not None:
            for segment in self.a.segments_to_send(self.now):
                self.ab.push(segment, self.now)
        if self.b is not None:
            for segment in self.b.segments_to_send(self.now):
                self.ba.push(segment, self.now)

    def _deliver_to_b(self, segment: bytes) -> None:
        b = self.b
        if b is not None and b.tcb.state != 0 and not b.receive(segment, self.now):
            return  # taken (True would mean: closed from TIME_WAIT, a SYN for the listener)
        if self.listener is None:
            reset = stray_reset(segment, self.remote[0], self.local[0])
            if reset is not None:
                self.ba.push(reset, self.now)
                self.strays.append(reset)
        else:
            conn, reset = self.listener.receive(segment, self.remote, self.local, self.now)
            if conn is not None:
                if self.isn_b is not None:
                    self._set_iss(conn, self.isn_b)
                self.b = conn
            elif reset is not None:
                self.ba.push(reset, self.now)
                self.strays.append(reset)

    @staticmethod
    def _set_iss(conn: Connection, iss: int) -> None:
        tcb = conn.tcb
        tcb.iss = tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.recover = tcb.high_rxt = iss
        tcb.snd_buf_seq = (iss + 1) & MASK
        tcb.snd_wl2 = iss

    def _deliver_to_a(self, segment: bytes) -> None:
        if self.a is not None and self.a.tcb.state != 0:
            self.a.receive(segment, self.now)
            return
        reset = stray_reset(segment, self.local[0], self.remote[0])
        if reset is not None:
            self.ab.push(reset, self.now)
            self.strays.append(reset)

    def _apps(self) -> None:
        for side in ("a", "b"):
            conn = self.a if side == "a" else self.b
            if conn is None:
                continue
            self.events[side].extend(conn.next_events())
            pending = self.pending[side]
            if pending and conn.tcb.state in (2, 3, 4, 7) and not conn.tcb.fin_queued:
                n = conn.send(pending)
                del pending[:n]
            if not pending and self.shutdown_after[side] and conn.tcb.state in (2, 3, 4, 7):
                conn.shutdown_write()
                self.shutdown_after[side] = False
            if self.auto_read and conn.readable:
                self.got[side] += conn.read()

    def next_time(self) -> float | None:
        times = [self.ab.next_time(), self.ba.next_time()]
        for conn in (self.a, self.b):
            if conn is not None:
                times.append(conn.next_deadline())
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def step(self) -> bool:
        """Advance to the next happening and process it; False when nothing is left to do."""
        t = self.next_time()
        if t is None:
            return False
        if t > self.now:
            self.now = t
        now = self.now
        for segment in self.ab.due(now):
            self._deliver_to_b(segment)
        for segment in self.ba.due(now):
            self._deliver_to_a(segment)
        for conn in (self.a, self.b):
            if conn is not None:
                deadline = conn.next_deadline()
                if deadline is not None and deadline <= now:
                    conn.handle_timer(now)
        self._apps()
        self.flush()
        self._apps()
        return True

    def run(self, until: Callable[[], bool] | None = None, *, limit: float = 600.0) -> None:
        """Step until ``until()`` holds (or, without it, until nothing is left to do), failing
        if virtual time passes ``limit`` seconds from now."""
        end = self.now + limit
        self._apps()
        while until is None or not until():
            if not self.step():
                if until is None:
                    return
                raise AssertionError("nothing left to do, condition not met")
            if self.now > end:
                raise AssertionError(f"condition not met within {limit} s of virtual time")

    def advance(self, seconds: float) -> None:
        """Run everything due within ``seconds`` of virtual time, then set the clock there."""
        end = self.now + seconds
        while True:
            t = self.next_time()
            if t is None or t > end:
                break
            self.step()
        self.now = end
        self._apps()
        self.flush()

    def established(self) -> bool:
        return (
            self.a is not None
            and self.b is not None
            and self.a.tcb.state == 4
            and self.b.tcb.state == 4
        )

    def event_types(self, side: str) -> list[str]:
        self._apps()
        return [type(e).__name__ for e in self.events[side]]

    def history(self, direction: str, since: float = 0.0) -> list[tuple[float, Segment]]:
        """What ``"ab"`` or ``"ba"`` carried (dropped segments included), parsed, with times."""
        channel = self.ab if direction == "ab" else self.ba
        return [(t, parse(s)) for t, s in channel.sent if t >= since]

    def inject(
        self,
        side: str,
        *,
        seq: int | None = None,
        ack: int | None = None,
        flags: int = ACK,
        wnd: int = 0xFFFF,
        payload: bytes = b"",
        options: bytes = b"",
        timestamp: tuple[int, int] | None = None,
    ) -> list[Segment]:
        """Hand ``side``'s connection a segment as its peer would send it (by default in order
        and acknowledging everything, with the peer's timestamps when they are in use); return
        what the connection sends in reply, parsed, without putting it on the link."""
        conn = self.conn(side)
        tcb = conn.tcb
        if timestamp is None and tcb.ts_ok and not options:
            peer = self.conn("b" if side == "a" else "a").tcb
            timestamp = ((int(self.now * 1000) + peer.ts_offset) & MASK, tcb.ts_recent)
        if timestamp is not None:
            options = encode_options(timestamp=timestamp) + options
        segment = build(
            tcb.remote_port,
            tcb.local_port,
            tcb.rcv_nxt if seq is None else seq & MASK,
            tcb.snd_max if ack is None else ack & MASK,
            flags,
            wnd,
            self.pseudo,
            options,
            payload,
        )
        conn.receive(segment, self.now)
        self._apps()
        return [parse(s) for s in conn.segments_to_send(self.now)]


def exchange(x: Connection, y: Connection, now: float, *, rounds: int = 100) -> int:
    """Carry segments between two connections directly (no delay, no loss) until both are
    quiet; returns how many moved."""
    moved = 0
    for _ in range(rounds):
        out_x = x.segments_to_send(now)
        for segment in out_x:
            y.receive(segment, now)
        out_y = y.segments_to_send(now)
        for segment in out_y:
            x.receive(segment, now)
        if not out_x and not out_y:
            return moved
        moved += len(out_x) + len(out_y)
    raise AssertionError("the connections never went quiet")
