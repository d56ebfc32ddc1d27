"""Link emulation for the ``pipe`` node, sans-IO: FreeBSD ng_pipe's model with times passed in.

No trio, no clock, no I/O here. Items and ``now`` (integer nanoseconds) go in; the items due to
leave, and the next time something is due, come out. :mod:`nodes.pipe` is the thin trio shell
that sends what comes out and sleeps until the next deadline.

Theory of operation (one direction, a :class:`Link`)
====================================================

As ng_pipe.c: an item entering a link joins the *inbound queue* (``qin``, bounded by
``queuelen`` frames, default 50; when it overflows one frame is dropped from its tail, or its
head with ``drophead``, and counted as a queue drop). The head of the inbound queue is served
when the emulated wire is free (``link_free``): its serialization time, ``(length + overhead) *
8 / bandwidth``, moves ``link_free`` on, and the item's departure time is the end of its
serialization. Serving it is where the dice are cast, in this fixed order, each only when its
feature is on:

1. ``duplicate`` (percent): a copy leaves and the original stays at the head to be served
   again (so an item may be duplicated several times, as ng_pipe(4) says);
2. ``BER`` (one bit error in BER bits on average): the item survives with probability
   ``(1 - 1/BER) ** (8 * (length + overhead))``, or is dropped (a delay drop);
3. ``loss_ppm`` (extension): dropped with that probability in millionths (a delay drop);
4. the *delay queue* limit (``delaylen``; 0 is FreeBSD's "unlimited", here capped at
   :data:`MAX_QUEUE`): a full delay queue drops the item (a delay drop);
5. ``jitter`` (extension, microseconds): a uniform extra delay in ``[0, jitter]``; jittered
   items still leave in the order they were sent (one slow item holds back those behind it);
6. ``reorder_ppm`` (extension): with that probability the item is held back a further
   ``reorder_delay`` microseconds outside the FIFO, so the items sent in that time overtake it.

Survivors wait ``delay`` microseconds (ng_pipe's delay, here per direction too) in the delay
queue and then leave, in departure-time order. Every random choice comes from the link's own
``random.Random`` (seeded by ``seed``), never the global one, and the number and order of
draws depend only on the items and the configuration: with the same seed and the same arrival
times, a run drops, duplicates, delays and reorders exactly the same items.

Deliberate differences from ng_pipe
-----------------------------------

* Times are exact (nanoseconds); FreeBSD serves its queues on a clock tick and rounds each
  serialization time down to a microsecond (at 1 Gbit/s a 100-byte frame cost it nothing).
* ``duplicate=N`` duplicates with probability N% (FreeBSD's ``random() % 100 <= N`` is (N+1)%).
* ``fifo``, ``wfq`` and ``drr`` (with its quantum) and ``header_offset`` are accepted, kept and
  reported as FreeBSD does, but every link is one FIFO: weighted fair queueing and deficit round
  robin over IPv4 flows are not implemented (nothing here needs them yet).
* A value out of FreeBSD's range is an error (EINVAL), where FreeBSD silently ignores it; and
  ``setcfg`` is all or nothing. The ranges are FreeBSD's; queue limits are capped at
  :data:`MAX_QUEUE` so that every queue is bounded.
* Making a hook keeps its direction's configuration (FreeBSD resets it), so a pipe can be
  configured before it is connected.
* ``delay`` is per direction too; the top-level ``delay`` sets both, and ``getcfg`` reports a
  delay both directions share at the top level, as FreeBSD does for ``bandwidth``.
* ``getcfg`` says ``-1`` ("set to zero") where a zero would otherwise read back as something
  else (``queuelen``, whose default is 50, and ``overhead``, which a top-level ``bandwidth``
  sets), so that its reply given to ``setcfg`` on a new pipe gives the same configuration.

The configuration, statistics and run-state structs keep ng_pipe.h's layout and the ASCII field
names of its parse types (``BER``, ``queuelen``, ``delaylen``, ``FwdOctets``...), with the
extensions appended to each direction's ``ng_pipe_hookcfg``: so a binary ``ng_pipe_cfg`` is
not FreeBSD's byte for byte (each direction takes 88 bytes, not 48; the ASCII form is a
superset of FreeBSD's). The numeric fields of the configuration are signed, so ``-1`` reads and
prints as ``-1``; the bits are FreeBSD's either way.
"""

from __future__ import annotations

import errno
import heapq
import math
import random
from collections import deque
from typing import Any, Final

import attrs

from netgraph.errors import NetgraphError
from netgraph.item import Item
from netgraph.parse import INT32, INT64, UINT32, UINT64, Struct, field

__all__ = [
    "MAX_QUEUE",
    "Link",
    "Pipe",
    "PipeCfg",
    "PipeHookCfg",
    "PipeHookRun",
    "PipeHookStats",
    "PipeRun",
    "PipeStats",
]

# The most frames a queue may hold (a queuelen or delaylen above it is EINVAL; a delaylen of 0,
# unlimited in FreeBSD, means this many).
MAX_QUEUE: Final = 65536
MAX_DELAY_US: Final = 9_999_999  # FreeBSD: 0 < delay < 10 s
MIN_BANDWIDTH: Final = 100
MAX_BANDWIDTH: Final = 1_000_000_000
MAX_BER: Final = 1_000_000_000_000
MAX_OVERHEAD: Final = 255
MAX_HEADER_OFFSET: Final = 63
MAX_DUPLICATE: Final = 50
PPM: Final = 1_000_000
DRR_QUANTUM: Final = 2048
ETHERNET_OVERHEAD: Final = 8 + 4 + 12  # preamble, FCS, inter-frame gap
HDLC_OVERHEAD: Final = 10
NS_PER_US: Final = 1000
_BITS_NS: Final = 8 * 1_000_000_000  # bits per byte times nanoseconds per second
_UINT32_MAX: Final = 0xFFFFFFFF  # ng_pipe_hookrun's counters are 32 bits wide

# ------------------------------------------------------------------------ message structs


@attrs.frozen
class PipeHookCfg:
    """``struct ng_pipe_hookcfg`` (ASCII names as FreeBSD's parse type), then the extensions.

    In ``setcfg`` a 0 leaves a value as it is and -1 sets it to zero (ng_pipe(4)).
    """

    bandwidth: int = field(INT64)  # bits per second
    BER: int = field(INT64)  # one bit error in BER bits, on average
    queuelen: int = field(INT32)  # inbound queue limit, frames
    delaylen: int = field(INT32)  # delay queue limit, frames (0: MAX_QUEUE)
    duplicate: int = field(INT32)  # percent
    fifo: int = field(UINT32)
    drr: int = field(UINT32)  # 1: on with quantum 2048 bytes; >= 32: that quantum
    wfq: int = field(UINT32)
    droptail: int = field(UINT32)
    drophead: int = field(UINT32)
    # Extensions.
    delay: int = field(INT64)  # microseconds, this direction (the top-level delay sets both)
    jitter: int = field(INT64)  # microseconds, uniform extra delay, order kept
    loss_ppm: int = field(INT32)  # drop probability, millionths
    reorder_ppm: int = field(INT32)  # probability of holding an item back, millionths
    reorder_delay: int = field(INT64)  # microseconds an item held back waits
    seed: int = field(UINT64)  # nonzero: reseed this direction's random generator


@attrs.frozen
class PipeCfg:
    """``struct ng_pipe_cfg``: ``downstream`` is upper to lower, ``upstream`` lower to upper."""

    bandwidth: int = field(INT64)  # both directions; also sets overhead (Ethernet or HDLC)
    delay: int = field(INT64)  # microseconds, both directions
    header_offset: int = field(INT32)
    overhead: int = field(INT32)  # bytes of framing counted per frame
    downstream: PipeHookCfg = field(Struct(PipeHookCfg))
    upstream: PipeHookCfg = field(Struct(PipeHookCfg))


@attrs.define
class PipeHookStats:
    """``struct ng_pipe_hookstat``: frames forwarded, dropped from the inbound queue, and
    dropped on the wire or at the delay queue (BER, loss, delay queue full, send failed)."""

    FwdOctets: int = field(UINT64)
    FwdFrames: int = field(UINT64)
    queueDropOctets: int = field(UINT64)
    queueDropFrames: int = field(UINT64)
    delayDropOctets: int = field(UINT64)
    delayDropFrames: int = field(UINT64)


_HOOKSTATS: Final = Struct(PipeHookStats)


@attrs.define
class PipeStats:
    downstream: PipeHookStats = field(_HOOKSTATS, factory=PipeHookStats)
    upstream: PipeHookStats = field(_HOOKSTATS, factory=PipeHookStats)


@attrs.frozen
class PipeHookRun:
    """``struct ng_pipe_hookrun``: what is queued now."""

    queues: int = field(UINT32)
    queuedOctets: int = field(UINT32)
    queuedFrames: int = field(UINT32)
    delayedOctets: int = field(UINT32)
    delayedFrames: int = field(UINT32)


@attrs.frozen
class PipeRun:
    downstream: PipeHookRun = field(Struct(PipeHookRun))
    upstream: PipeHookRun = field(Struct(PipeHookRun))


DEFAULT_HOOKCFG: Final = PipeHookCfg(queuelen=50, fifo=1, droptail=1)

# ------------------------------------------------------------------------- configuration


def _value(name: str, current: int, new: int, low: int, high: int) -> int:
    """ng_pipe's rule for one field: 0 keeps ``current``, -1 is zero, else ``low..high``."""
    if new == 0:
        return current
    if new == -1:
        return 0
    if not low <= new <= high:
        raise NetgraphError(errno.EINVAL, f"{name}={new} is out of range ({low}..{high}, or -1)")
    return new


def merge_hookcfg(where: str, cur: PipeHookCfg, new: PipeHookCfg) -> PipeHookCfg:
    """One direction's configuration after ``setcfg`` (ng_pipe.c's ``parse_cfg``), or EINVAL."""
    out: dict[str, Any] = {
        "BER": _value(f"{where}.BER", cur.BER, new.BER, 1, MAX_BER),
        "queuelen": _value(f"{where}.queuelen", cur.queuelen, new.queuelen, 5, MAX_QUEUE),
        "delaylen": _value(f"{where}.delaylen", cur.delaylen, new.delaylen, 5, MAX_QUEUE),
        "duplicate": _value(f"{where}.duplicate", cur.duplicate, new.duplicate, 1, MAX_DUPLICATE),
        "delay": _value(f"{where}.delay", cur.delay, new.delay, 1, MAX_DELAY_US),
        "jitter": _value(f"{where}.jitter", cur.jitter, new.jitter, 1, MAX_DELAY_US),
        "loss_ppm": _value(f"{where}.loss_ppm", cur.loss_ppm, new.loss_ppm, 1, PPM),
        "reorder_ppm": _value(f"{where}.reorder_ppm", cur.reorder_ppm, new.reorder_ppm, 1, PPM),
        "reorder_delay": _value(
            f"{where}.reorder_delay", cur.reorder_delay, new.reorder_delay, 1, MAX_DELAY_US
        ),
        "seed": new.seed or cur.seed,
    }
    fifo, drr, wfq = cur.fifo, cur.drr, cur.wfq
    if new.fifo:
        fifo, drr, wfq = 1, 0, 0
    if new.wfq:
        fifo, drr, wfq = 0, 0, 1
    if new.drr:
        fifo, wfq = 0, 0
        drr = new.drr if new.drr >= 32 else DRR_QUANTUM
    droptail, drophead = cur.droptail, cur.drophead
    if new.droptail:
        droptail, drophead = 1, 0
    if new.drophead:
        droptail, drophead = 0, 1
    bandwidth = cur.bandwidth
    if new.bandwidth == -1:
        bandwidth, fifo, drr, wfq = 0, 1, 0, 0  # as FreeBSD: no bandwidth, no scheduler
    elif new.bandwidth:
        bandwidth = _value(f"{where}.bandwidth", 0, new.bandwidth, MIN_BANDWIDTH, MAX_BANDWIDTH)
    merged = PipeHookCfg(
        bandwidth=bandwidth,
        fifo=fifo,
        drr=drr,
        wfq=wfq,
        droptail=droptail,
        drophead=drophead,
        **out,
    )
    if merged.reorder_ppm and not merged.reorder_delay:
        raise NetgraphError(
            errno.EINVAL, f"{where}.reorder_ppm needs a reorder_delay (how far, microseconds)"
        )
    return merged


# ----------------------------------------------------------------------------- one direction


def _copy(item: Item) -> Item:
    """A duplicate: immutable bytes (tags and all) are shared; a mutable buffer is copied."""
    if isinstance(item, bytes):
        return item
    return bytearray(item) if isinstance(item, bytearray) else bytes(item)


class Link:
    """One direction of a pipe: its configuration, queues, random generator and counters."""

    def __init__(self) -> None:
        self.stats = PipeHookStats()
        # Waiting for the wire: items, and their total length.
        self.qin: deque[Item] = deque()
        self.qin_octets = 0
        # On the wire or being delayed, FIFO: (departure ns, item); with jitter an item may be
        # due before the one ahead of it, and then leaves right after it.
        self.qout: deque[tuple[int, Item]] = deque()
        self.qout_octets = 0
        # Held back to be overtaken: a heap of (departure ns, sequence, item).
        self.late: list[tuple[int, int, Item]] = []
        self.late_octets = 0
        self._late_seq = 0
        # When the wire is next free to serve the head of qin (ns).
        self.link_free = 0
        self.rng = random.Random()
        self.cfg = DEFAULT_HOOKCFG
        self.overhead = 0
        # Whether an item may skip the queues altogether: no impairment and nothing queued.
        self.direct = True
        self.apply(DEFAULT_HOOKCFG, 0, reseed=False)

    def apply(self, cfg: PipeHookCfg, overhead: int, *, reseed: bool) -> None:
        """Take a configuration already merged and checked (see :func:`merge_hookcfg`);
        ``reseed``: start the random generator afresh from ``cfg.seed``."""
        if reseed:
            self.rng.seed(cfg.seed)
        self.cfg = cfg
        self.overhead = overhead
        self.bandwidth = cfg.bandwidth
        self.qin_limit = cfg.queuelen
        self.qout_limit = min(cfg.delaylen or MAX_QUEUE, MAX_QUEUE)
        self.drophead = bool(cfg.drophead)
        self.duplicate = cfg.duplicate
        # log(P(a bit is clean)) per byte; a frame of n bytes survives with exp(n * this).
        if cfg.BER == 1:
            self.ber_log: float | None = -math.inf
        elif cfg.BER:
            self.ber_log = 8 * math.log1p(-1 / cfg.BER)
        else:
            self.ber_log = None
        self.loss = cfg.loss_ppm
        self.delay_ns = cfg.delay * NS_PER_US
        self.jitter = cfg.jitter
        self.reorder = cfg.reorder_ppm
        self.reorder_ns = cfg.reorder_delay * NS_PER_US
        self.clean = not (
            cfg.bandwidth
            or cfg.delay
            or cfg.duplicate
            or cfg.BER
            or cfg.jitter
            or cfg.loss_ppm
            or cfg.reorder_ppm
        )
        self._update_direct()

    def _update_direct(self) -> None:
        self.direct = self.clean and not (self.qin or self.qout or self.late)

    # ---------------------------------------------------------------------- items in and out

    def push(self, item: Item, now: int) -> None:
        """An item arrives at ``now``: queue it (dropping one if the queue overflows) and serve
        the queue as far as the wire allows."""
        qin = self.qin
        if not qin and self.link_free < now:
            self.link_free = now
        qin.append(item)
        size = len(item)
        self.qin_octets += size
        self.direct = False
        if len(qin) > self.qin_limit:
            victim = qin.popleft() if self.drophead else qin.pop()
            size = len(victim)
            self.qin_octets -= size
            stats = self.stats
            stats.queueDropFrames += 1
            stats.queueDropOctets += size
        if qin and self.link_free <= now:
            self._serve(now)

    def release(self, now: int) -> list[Item]:
        """Serve the inbound queue up to ``now`` and take every item due to leave by then, in
        departure order. The counters count them forwarded (see :meth:`undelivered`)."""
        if self.qin and self.link_free <= now:
            self._serve(now)
        out: list[Item] = []
        qout, late = self.qout, self.late
        octets = 0
        while qout or late:
            if late and (not qout or late[0][0] < qout[0][0]):
                if late[0][0] > now:
                    break
                item = heapq.heappop(late)[2]
                self.late_octets -= len(item)
            else:
                if qout[0][0] > now:
                    break
                item = qout.popleft()[1]
                self.qout_octets -= len(item)
            octets += len(item)
            out.append(item)
        if out:
            stats = self.stats
            stats.FwdFrames += len(out)
            stats.FwdOctets += octets
            if not self.qin and not qout and not late:
                self._update_direct()
        return out

    def next_deadline(self) -> int | None:
        """When :meth:`release` next has something to do (ns), or None when all is quiet."""
        deadline: int | None = self.link_free if self.qin else None
        if self.qout:
            when = self.qout[0][0]
            if deadline is None or when < deadline:
                deadline = when
        if self.late:
            when = self.late[0][0]
            if deadline is None or when < deadline:
                deadline = when
        return deadline

    def passed(self, items: int, octets: int) -> None:
        """Count items that went straight through (``direct``)."""
        stats = self.stats
        stats.FwdFrames += items
        stats.FwdOctets += octets

    def undelivered(self, items: list[Item] | tuple[Item, ...]) -> None:
        """Released items that could not be sent: delay drops rather than forwarded."""
        octets = sum(map(len, items))
        stats = self.stats
        stats.FwdFrames -= len(items)
        stats.FwdOctets -= octets
        stats.delayDropFrames += len(items)
        stats.delayDropOctets += octets

    def flush(self) -> None:
        """Drop everything queued (a hook went), counted as delay drops."""
        items = [*self.qin, *(i for _, i in self.qout), *(i for _, _, i in self.late)]
        if items:
            self.stats.delayDropFrames += len(items)
            self.stats.delayDropOctets += sum(map(len, items))
        self.qin.clear()
        self.qout.clear()
        self.late.clear()
        self.qin_octets = self.qout_octets = self.late_octets = 0
        self._update_direct()

    def run(self) -> PipeHookRun:
        return PipeHookRun(
            queues=1 if self.qin else 0,
            queuedOctets=min(self.qin_octets, _UINT32_MAX),
            queuedFrames=len(self.qin),
            delayedOctets=min(self.qout_octets + self.late_octets, _UINT32_MAX),
            delayedFrames=len(self.qout) + len(self.late),
        )

    # ------------------------------------------------------------------------------ serving

    def _serve(self, now: int) -> None:
        """Move items from the inbound queue onto the wire while the wire is free by ``now``."""
        qin, qout, rng, stats = self.qin, self.qout, self.rng, self.stats
        bandwidth, overhead = self.bandwidth, self.overhead
        while qin and self.link_free <= now:
            item = qin[0]
            size = len(item)
            if self.duplicate and rng.random() * 100 < self.duplicate:
                item = _copy(item)  # the original stays at the head, to be served again
            else:
                qin.popleft()
                self.qin_octets -= size
            if bandwidth:
                self.link_free += (size + overhead) * _BITS_NS // bandwidth
            departure = self.link_free
            ber_log = self.ber_log
            if (
                (ber_log is not None and rng.random() >= _survival(ber_log, size + overhead))
                or (self.loss and rng.random() * PPM < self.loss)
                or len(qout) + len(self.late) >= self.qout_limit
            ):
                stats.delayDropFrames += 1
                stats.delayDropOctets += size
                continue
            departure += self.delay_ns
            if self.jitter:
                departure += rng.randint(0, self.jitter) * NS_PER_US
            if self.reorder and rng.random() * PPM < self.reorder:
                self._late_seq += 1
                heapq.heappush(self.late, (departure + self.reorder_ns, self._late_seq, item))
                self.late_octets += size
                continue
            # FIFO: an item due before the one ahead of it leaves right after it.
            qout.append((departure, item))
            self.qout_octets += size


def _survival(ber_log: float, size: int) -> float:
    """The chance that ``size`` bytes cross a wire with that BER without a bit error."""
    return math.exp(size * ber_log) if size else 1.0


# ------------------------------------------------------------------------------- the pipe


class Pipe:
    """Both directions and the node-wide settings: what ``setcfg`` and ``getcfg`` act on."""

    def __init__(self) -> None:
        self.down = Link()  # upper to lower
        self.up = Link()  # lower to upper
        self.overhead = 0
        self.header_offset = 0

    def configure(self, cfg: PipeCfg) -> None:
        """``setcfg``: check everything, then apply everything (EINVAL and no change if a value
        is out of range)."""
        overhead, header_offset = self.overhead, self.header_offset
        down, up = self.down.cfg, self.up.cfg
        if cfg.delay:
            delay = _value("delay", 0, cfg.delay, 1, MAX_DELAY_US)
            down, up = attrs.evolve(down, delay=delay), attrs.evolve(up, delay=delay)
        if cfg.bandwidth == -1:
            down, up = attrs.evolve(down, bandwidth=0), attrs.evolve(up, bandwidth=0)
            overhead = 0
        elif cfg.bandwidth:
            bandwidth = _value("bandwidth", 0, cfg.bandwidth, MIN_BANDWIDTH, MAX_BANDWIDTH)
            down = attrs.evolve(down, bandwidth=bandwidth)
            up = attrs.evolve(up, bandwidth=bandwidth)
            overhead = ETHERNET_OVERHEAD if bandwidth >= 10_000_000 else HDLC_OVERHEAD
        overhead = _value("overhead", overhead, cfg.overhead, 1, MAX_OVERHEAD)
        header_offset = _value(
            "header_offset", header_offset, cfg.header_offset, 1, MAX_HEADER_OFFSET
        )
        down = merge_hookcfg("downstream", down, cfg.downstream)
        up = merge_hookcfg("upstream", up, cfg.upstream)
        self.overhead, self.header_offset = overhead, header_offset
        self.down.apply(down, overhead, reseed=bool(cfg.downstream.seed))
        self.up.apply(up, overhead, reseed=bool(cfg.upstream.seed))

    def config(self) -> PipeCfg:
        """``getcfg``, in a form that ``setcfg`` on a new pipe turns into this configuration."""
        down, up = self.down.cfg, self.up.cfg
        bandwidth = down.bandwidth if down.bandwidth == up.bandwidth else 0
        if bandwidth:
            down, up = attrs.evolve(down, bandwidth=0), attrs.evolve(up, bandwidth=0)
        delay = down.delay if down.delay == up.delay else 0
        if delay:
            down, up = attrs.evolve(down, delay=0), attrs.evolve(up, delay=0)
        down, up = _readable(down), _readable(up)
        # A top-level bandwidth sets the overhead too: say so when it is zero.
        overhead = self.overhead or (-1 if bandwidth else 0)
        return PipeCfg(bandwidth, delay, self.header_offset, overhead, down, up)

    def stats(self) -> PipeStats:
        return PipeStats(attrs.evolve(self.down.stats), attrs.evolve(self.up.stats))

    def clear_stats(self) -> None:
        self.down.stats = PipeHookStats()
        self.up.stats = PipeHookStats()

    def run(self) -> PipeRun:
        return PipeRun(self.down.run(), self.up.run())


def _readable(cfg: PipeHookCfg) -> PipeHookCfg:
    """A zero queuelen reads back as -1 (an omitted one would mean the default, 50)."""
    return attrs.evolve(cfg, queuelen=-1) if not cfg.queuelen else cfg
