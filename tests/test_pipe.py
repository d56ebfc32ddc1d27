"""The ``pipe`` node (link emulation, FreeBSD ng_pipe plus loss, jitter, reordering and a seed).

Every test runs on trio's autojump clock: a probe node on each side of the pipe records each
item with the virtual time it arrived (in microseconds), and tests wait for arrivals on an event,
so virtual time runs exactly as far as the pipe's own timer takes it. Times are checked to the
microsecond against what ng_pipe's model says.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import netgraph
from netgraph import Hook, Item, Message, NetgraphError, Node, TypeRegistry
from netgraph.message import GENERIC_COOKIE, NGM_TEXT_STATUS
from netgraph.parse import Struct
from nodes.pipe import (
    NGM_PIPE_CLR_STATS,
    NGM_PIPE_GET_CFG,
    NGM_PIPE_GET_RUN,
    NGM_PIPE_GET_STATS,
    NGM_PIPE_GETCLR_STATS,
    NGM_PIPE_SET_CFG,
    PIPE_COOKIE,
    PipeNode,
)
from nodes.pipe_core import PipeCfg, PipeHookCfg, PipeHookStats, PipeStats

# ----------------------------------------------------------------------------------- helpers


class Probe(Node):
    """One end of the pipe under test: sends with ``put`` and records what arrives."""

    def constructor(self) -> None:
        self.got: list[tuple[int, Item]] = []  # (arrival, microseconds of virtual time; item)
        self.tasks: list[trio.lowlevel.Task] = []
        self._want = 0
        self._enough: trio.Event | None = None

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.got.append((round(trio.current_time() * 1e6), item))
        self.tasks.append(trio.lowlevel.current_task())
        if self._enough is not None and len(self.got) >= self._want:
            self._enough.set()

    async def put(self, item: Item) -> None:
        await self.emit(self.hooks["side"], item)

    async def put_all(self, items: Sequence[Item]) -> None:
        for item in items:
            await self.put(item)

    async def wait(self, count: int) -> None:
        """Until ``count`` items have arrived (virtual time runs on meanwhile); a test that
        waits for what never comes fails after ten virtual minutes rather than hanging."""
        with trio.fail_after(600):
            while len(self.got) < count:
                self._want, self._enough = count, trio.Event()
                await self._enough.wait()

    def ids(self) -> list[int]:
        return [ident(item) for _, item in self.got]

    def times(self) -> list[int]:
        return [t for t, _ in self.got]


class Slow(Node):
    """A receiver doing I/O: holds the first item it gets until ``go`` is set."""

    def constructor(self) -> None:
        self.got: list[Item] = []
        self.holding = trio.Event()
        self.go = trio.Event()
        self.two = trio.Event()

    async def rcvdata(self, hook: Hook, item: Item) -> None:
        if not self.holding.is_set():
            self.holding.set()
            await self.go.wait()
        self.got.append(item)
        if len(self.got) == 2:
            self.two.set()


class Rig:
    """probe ``a`` -- upper [pipe p:] lower -- probe ``b``, and a socket node to configure."""

    def __init__(self, graph: netgraph.Graph, sock: netgraph.Socket) -> None:
        self.graph = graph
        self.sock = sock
        pipe = graph.make_node("pipe")
        graph.name_node(pipe, "p")
        assert isinstance(pipe, PipeNode)
        self.pipe = pipe
        self.a = self._probe("upper")
        self.b = self._probe("lower")
        self.t0 = round(trio.current_time() * 1e6)

    def _probe(self, hook: str) -> Probe:
        probe = self.graph.make_node("test_probe")
        assert isinstance(probe, Probe)
        self.graph.connect(probe, "p:", "side", hook)
        return probe

    async def tasks(self) -> int:
        """How many tasks the graph runs once every task has settled (queue runners that
        have drained their queues are gone; a pipe's timer task stays until it shuts down)."""
        await trio.testing.wait_all_tasks_blocked()
        return len(self.graph._nursery.child_tasks)

    async def setcfg(self, text: str) -> None:
        await self.sock.send_ascii("p:", f"setcfg {text}")

    async def ascii(self, line: str) -> str:
        _, text = await self.sock.request_ascii("p:", line)
        return text

    async def stats(self) -> PipeStats:
        reply = await self.sock.request("p:", PIPE_COOKIE, NGM_PIPE_GET_STATS)
        assert isinstance(reply.args, PipeStats)
        return reply.args

    async def config(self) -> PipeCfg:
        reply = await self.sock.request("p:", PIPE_COOKIE, NGM_PIPE_GET_CFG)
        assert isinstance(reply.args, PipeCfg)
        return reply.args

    async def in_flight(self) -> tuple[int, int]:
        """Frames each way that the pipe holds and will still deliver (when nothing waits for
        the wire, every drop and duplicate has already been decided)."""
        reply = await self.sock.request("p:", PIPE_COOKIE, NGM_PIPE_GET_RUN)
        run = reply.args
        assert run.downstream.queuedFrames == run.upstream.queuedFrames == 0
        return run.downstream.delayedFrames, run.upstream.delayedFrames


def types() -> TypeRegistry:
    registry = TypeRegistry()
    registry.register("test_probe", Probe)
    registry.register("test_slow", Slow)
    return registry


@asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    async with netgraph.open_graph(types=types()) as graph:
        yield Rig(graph, graph.socket("s"))


def packet(ident: int, size: int = 1000) -> bytes:
    """An item that says which it is (its first two bytes), ``size`` bytes long."""
    return ident.to_bytes(2, "big") + bytes(size - 2)


def ident(item: Item) -> int:
    return int.from_bytes(bytes(item[:2]), "big")


async def expect_errno(code: int, call: Any) -> NetgraphError:
    with pytest.raises(NetgraphError) as info:
        await call
    assert info.value.errno == code, info.value
    return info.value


# ------------------------------------------------------------------------- pass-through


async def test_unconfigured_pipe_passes_items_straight_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No impairment: both ways the item is delivered synchronously, in the sender's task, at
    the same instant, as the very same object (tags and all); no timer task is started."""
    async with rig() as r:
        item = netgraph.tag(b"hello", origin="test")
        await r.a.put(item)
        await r.b.put(b"back")
        me = trio.lowlevel.current_task()
        assert r.b.got == [(r.t0, item)]
        assert r.b.got[0][1] is item
        assert netgraph.tags_of(r.b.got[0][1]) == {"origin": "test"}
        assert r.a.got == [(r.t0, b"back")]
        assert r.a.tasks == r.b.tasks == [me]
        assert not r.pipe._timer_running
        stats = await r.stats()
        assert stats.downstream == PipeHookStats(FwdOctets=5, FwdFrames=1)
        assert stats.upstream == PipeHookStats(FwdOctets=4, FwdFrames=1)


async def test_batches_pass_through_as_batches(autojump_clock: trio.testing.MockClock) -> None:
    """A batch through an unconfigured pipe stays one batch, counted item by item."""
    async with rig() as r:
        batches: list[int] = []
        original = r.b.rcvbatch

        def rcvbatch(hook: Hook, items: Sequence[Item]) -> None:
            batches.append(len(items))
            original(hook, items)

        r.b.rcvbatch = rcvbatch  # type: ignore[method-assign]
        await r.a.emit_batch(r.a.hooks["side"], [packet(i, 10) for i in range(5)])
        assert batches == [5]
        assert r.b.ids() == [0, 1, 2, 3, 4]
        assert (await r.stats()).downstream.FwdFrames == 5


# ------------------------------------------------------------------ delay and bandwidth


async def test_delay_and_bandwidth_set_arrival_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ng_pipe's timing: a frame leaves when its serialization ends ((length) * 8 / bandwidth
    after the wire is free) plus the delay; frames queue for the wire one after another."""
    async with rig() as r:
        await r.setcfg("{ downstream={ delay=10000 bandwidth=1000000 } }")
        await r.a.put_all([packet(i) for i in range(3)])
        assert r.b.got == []  # nothing before its time
        await r.b.wait(3)
        assert r.b.ids() == [0, 1, 2]
        # 1000 bytes at 1 Mbit/s: 8000 us each, then 10 ms of delay.
        assert r.b.times() == [r.t0 + 18000, r.t0 + 26000, r.t0 + 34000]
        assert all(task is not trio.lowlevel.current_task() for task in r.b.tasks)


async def test_top_level_bandwidth_sets_both_ways_and_the_framing_overhead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A top-level bandwidth applies to both directions and, as in FreeBSD, sets the overhead
    counted per frame: 10 bytes (HDLC) below 10 Mbit/s, 24 (Ethernet) from there."""
    async with rig() as r:
        await r.setcfg("{ bandwidth=1000000 delay=5000 }")
        await r.a.put_all([packet(0), packet(1)])
        await r.b.put(packet(7))
        await r.b.wait(2)
        await r.a.wait(1)
        assert r.b.times() == [r.t0 + 8080 + 5000, r.t0 + 2 * 8080 + 5000]
        assert r.a.times() == [r.t0 + 8080 + 5000]
        cfg = await r.config()
        assert (cfg.bandwidth, cfg.overhead, cfg.delay) == (1000000, 10, 5000)
        await r.setcfg("{ bandwidth=100000000 }")
        assert (await r.config()).overhead == 24


async def test_a_new_earlier_deadline_wakes_the_timer_early(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The one timer sleeps until the next deadline; an item due sooner than what it sleeps
    for is still delivered on time, and items take no task of their own."""
    async with rig() as r:
        before = await r.tasks()
        await r.setcfg("{ downstream={ delay=500000 } upstream={ delay=1000 } }")
        await r.a.put_all([packet(i) for i in range(100)])
        assert await r.tasks() == before + 1  # one timer (asleep till +500 ms), not one per item
        await r.b.put(packet(200))
        await r.a.wait(1)
        assert r.a.got[0][0] == r.t0 + 1000
        await r.b.wait(100)
        assert set(r.b.times()) == {r.t0 + 500000}
        assert await r.tasks() == before + 1


async def test_directions_are_independent(autojump_clock: trio.testing.MockClock) -> None:
    """Each direction has its own configuration, queues and counters."""
    async with rig() as r:
        await r.setcfg("{ downstream={ delay=10000 } upstream={ bandwidth=1000000 } }")
        await r.a.put(packet(1))
        await r.b.put(packet(2))
        await r.b.put(packet(3))
        await r.a.wait(2)
        await r.b.wait(1)
        assert r.b.got == [(r.t0 + 10000, packet(1))]
        assert r.a.got == [(r.t0 + 8000, packet(2)), (r.t0 + 16000, packet(3))]
        stats = await r.stats()
        assert stats.downstream == PipeHookStats(FwdOctets=1000, FwdFrames=1)
        assert stats.upstream == PipeHookStats(FwdOctets=2000, FwdFrames=2)
        # Configuring one way leaves the other a straight wire.
        await r.setcfg("{ downstream={ delay=-1 } }")
        await r.a.put(packet(4))
        assert r.b.got[-1] == (r.t0 + 16000, packet(4))


async def test_items_released_while_the_timer_sends_wait_their_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While the timer task is held sending (a slow receiver), an item that would now pass
    straight through waits behind it: a direction never reorders what it was not told to."""
    async with rig() as r:
        await r.sock.rmhook("p:", "lower")
        slow = r.graph.make_node("test_slow")
        assert isinstance(slow, Slow)
        r.graph.connect(slow, "p:", "side", "lower")
        await r.setcfg("{ downstream={ delay=1000 } }")
        await r.a.put(packet(0))
        await slow.holding.wait()  # the timer is sending item 0, and waits
        await r.setcfg("{ downstream={ delay=-1 } }")  # now a straight wire...
        await r.a.put(packet(1))  # ...but item 1 must not overtake item 0
        slow.go.set()
        with trio.fail_after(1):
            await slow.two.wait()
        assert [ident(item) for item in slow.got] == [0, 1]


# --------------------------------------------------------------------------- queue limits


async def test_inbound_queue_limit_drops_from_the_tail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """queuelen frames (50 by default) wait for the wire; more are dropped (the newest, by
    default) and counted as queue drops."""
    async with rig() as r:
        await r.setcfg("{ downstream={ bandwidth=1000000 } }")
        await r.a.put_all([packet(i) for i in range(60)])
        stats = await r.stats()
        # One is on the wire at once, 50 wait: 9 have no room.
        assert (stats.downstream.queueDropFrames, stats.downstream.queueDropOctets) == (9, 9000)
        await r.b.wait(51)
        assert r.b.ids() == list(range(51))
        assert r.b.times() == [r.t0 + 8000 * (i + 1) for i in range(51)]


async def test_drophead_and_a_smaller_queue(autojump_clock: trio.testing.MockClock) -> None:
    """With drophead the oldest waiting frame makes room; queuelen sets the room."""
    async with rig() as r:
        await r.setcfg("{ downstream={ bandwidth=1000000 queuelen=5 drophead=1 } }")
        await r.a.put_all([packet(i) for i in range(10)])
        assert (await r.stats()).downstream.queueDropFrames == 4
        await r.b.wait(6)
        assert r.b.ids() == [0, 5, 6, 7, 8, 9]


async def test_delay_queue_limit_drops(autojump_clock: trio.testing.MockClock) -> None:
    """delaylen bounds the frames being delayed; the rest are delay drops."""
    async with rig() as r:
        await r.setcfg("{ downstream={ delay=100000 delaylen=5 } }")
        await r.a.put_all([packet(i) for i in range(8)])
        stats = (await r.stats()).downstream
        assert (stats.delayDropFrames, stats.delayDropOctets) == (3, 3000)
        await r.b.wait(5)
        assert r.b.ids() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------ impairments


async def test_ber_drops_frames_by_their_length(autojump_clock: trio.testing.MockClock) -> None:
    """BER: a frame of n bytes survives with (1 - 1/BER)**(8n), so long frames are lost more
    often; BER=1 (every bit wrong) loses them all. Drops are delay drops."""
    async with rig() as r:
        await r.setcfg("{ downstream={ BER=80000 seed=1 } }")
        await r.a.put_all([packet(i, 1000) for i in range(2000)])
        long_lost = 2000 - len(r.b.got)
        await r.a.put_all([packet(i, 100) for i in range(2000)])
        short_lost = 2000 - (len(r.b.got) - (2000 - long_lost))
        # Expected: 2000 * (1 - e**-0.1) = 190 and 2000 * (1 - e**-0.01) = 20.
        assert 140 < long_lost < 240
        assert 5 < short_lost < 40
        assert (await r.stats()).downstream.delayDropFrames == long_lost + short_lost
        await r.setcfg("{ downstream={ BER=1 } }")
        await r.a.put(packet(1))
        assert (await r.stats()).downstream.delayDropFrames == long_lost + short_lost + 1


async def test_loss_drops_that_share_of_frames(autojump_clock: trio.testing.MockClock) -> None:
    """loss_ppm: each frame is lost with that probability; the rest keep their order."""
    async with rig() as r:
        await r.setcfg("{ downstream={ loss_ppm=250000 seed=5 } }")
        await r.a.put_all([packet(i, 100) for i in range(2000)])
        lost = 2000 - len(r.b.got)
        assert 420 < lost < 580
        assert r.b.ids() == sorted(r.b.ids())
        stats = (await r.stats()).downstream
        assert (stats.delayDropFrames, stats.FwdFrames) == (lost, 2000 - lost)
        # No delay: what survives is delivered at once, in the sender's task.
        assert set(r.b.tasks) == {trio.lowlevel.current_task()}


async def test_duplicate_sends_extra_copies(autojump_clock: trio.testing.MockClock) -> None:
    """duplicate (percent): a copy leaves and the original may be copied again, so about
    1 / (1 - p) deliveries per frame; copies are the same item, tags and all, in order."""
    async with rig() as r:
        await r.setcfg("{ downstream={ duplicate=50 seed=3 } }")
        items = [netgraph.tag(packet(i, 50), n=i) for i in range(1000)]
        await r.a.put_all(items)
        got = [item for _, item in r.b.got]
        assert 1800 < len(got) < 2200
        assert r.b.ids() == sorted(r.b.ids())
        assert set(r.b.ids()) == set(range(1000))
        assert all(item is items[ident(item)] for item in got)
        assert (await r.stats()).downstream.FwdFrames == len(got)


async def test_reorder_holds_some_frames_back(autojump_clock: trio.testing.MockClock) -> None:
    """reorder_ppm: a frame chosen is held back reorder_delay microseconds more, and those
    sent meanwhile overtake it; nothing is lost."""
    async with rig() as r:
        await r.setcfg(
            "{ downstream={ bandwidth=1000000 delay=1000 reorder_ppm=100000"
            " reorder_delay=5000 seed=11 } }"
        )
        await r.a.put_all([packet(i, 100) for i in range(50)])
        await r.b.wait(50)
        assert sorted(r.b.ids()) == list(range(50))
        late = 0
        for t, item in r.b.got:
            on_time = r.t0 + (ident(item) + 1) * 800 + 1000
            assert t in (on_time, on_time + 5000)
            late += t != on_time
        assert 2 <= late <= 12
        assert r.b.ids() != sorted(r.b.ids())
        assert r.b.times() == sorted(r.b.times())


async def test_jitter_varies_the_delay_but_keeps_the_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """jitter: each frame waits a further 0..jitter microseconds, uniformly; frames still
    arrive in the order they were sent."""
    async with rig() as r:
        await r.setcfg(
            "{ downstream={ bandwidth=1000000 delay=2000 jitter=500 queuelen=100 seed=2 } }"
        )
        await r.a.put_all([packet(i, 100) for i in range(100)])
        await r.b.wait(100)
        assert r.b.ids() == list(range(100))
        extra = [t - (r.t0 + (i + 1) * 800 + 2000) for i, t in enumerate(r.b.times())]
        assert all(0 <= e <= 500 for e in extra)
        assert len(set(extra)) > 50
        assert max(extra) > 400
        assert min(extra) < 100
        # Sent together, jittered items still leave in order: one drawn a longer delay holds
        # back those behind it.
        await r.setcfg("{ downstream={ bandwidth=-1 jitter=5000 } }")
        sent = round(trio.current_time() * 1e6)
        await r.a.put_all([packet(i, 100) for i in range(200, 220)])
        await r.b.wait(120)
        assert r.b.ids()[100:] == list(range(200, 220))
        times = r.b.times()[100:]
        assert times == sorted(times)
        assert sent + 2000 <= times[0] < times[-1] <= sent + 2000 + 5000


async def test_same_seed_same_fate_other_seed_other_fate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Loss, BER, duplication, jitter and reordering come from each direction's own seeded
    generator: two runs with one seed drop, copy, delay and reorder exactly the same items, at
    the same times; another seed does otherwise."""

    async def run(seed: int) -> tuple[list[tuple[int, Item]], list[tuple[int, Item]]]:
        async with rig() as r:
            impair = (
                f"delay=3000 jitter=700 loss_ppm=100000 BER=400000 duplicate=10"
                f" reorder_ppm=150000 reorder_delay=2000 seed={seed}"
            )
            await r.setcfg(f"{{ downstream={{ {impair} }} upstream={{ {impair} }} }}")
            for i in range(300):
                await r.a.put(packet(i, 200))
                await r.b.put(packet(1000 + i, 200))
            down, up = await r.in_flight()
            await r.b.wait(down)
            await r.a.wait(up)
            return (
                [(t - r.t0, item) for t, item in r.b.got],
                [(t - r.t0, item) for t, item in r.a.got],
            )

    first, again, other = await run(42), await run(42), await run(43)
    assert first == again
    assert first[0] != other[0]
    assert first[1] != other[1]
    ids = [ident(item) for _, item in first[0]]
    assert len(ids) != len(set(ids))  # some copies
    assert len(set(ids)) < 300  # some losses
    assert ids != sorted(ids)  # some reordering


async def test_reseeding_restarts_the_sequence(autojump_clock: trio.testing.MockClock) -> None:
    """setcfg with a seed starts the direction's generator afresh; getcfg reports the seed."""
    async with rig() as r:
        await r.setcfg("{ downstream={ loss_ppm=500000 seed=9 } }")
        await r.a.put_all([packet(i, 10) for i in range(64)])
        first = r.b.ids()
        await r.setcfg("{ downstream={ seed=9 } }")
        await r.a.put_all([packet(i, 10) for i in range(64)])
        assert r.b.ids()[len(first) :] == first
        assert (await r.config()).downstream.seed == 9


# ---------------------------------------------------------------------------------- messages


async def test_stats_clrstats_getclrstats(autojump_clock: trio.testing.MockClock) -> None:
    """getstats, clrstats and getclrstats with ng_pipe's cookie, numbers and field names."""
    async with rig() as r:
        await r.a.put(packet(1, 100))
        await r.b.put(packet(2, 30))
        assert await r.ascii("getstats") == (
            "{ downstream={ FwdOctets=100 FwdFrames=1 } upstream={ FwdOctets=30 FwdFrames=1 } }"
        )
        await r.sock.send_msg("p:", Message(PIPE_COOKIE, NGM_PIPE_CLR_STATS, None, "clrstats"))
        assert await r.stats() == PipeStats()
        await r.a.put(packet(3, 10))
        reply = await r.sock.request("p:", PIPE_COOKIE, NGM_PIPE_GETCLR_STATS)
        assert reply.args.downstream == PipeHookStats(FwdOctets=10, FwdFrames=1)
        assert await r.ascii("getstats") == "{}"
        await r.a.put(packet(4, 10))
        assert await r.ascii("getclrstats") == "{ downstream={ FwdOctets=10 FwdFrames=1 } }"
        await r.sock.send_ascii("p:", "clrstats")
        assert await r.stats() == PipeStats()


async def test_getrun_shows_what_is_queued(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        await r.setcfg("{ downstream={ bandwidth=1000000 delay=1000 } }")
        await r.a.put_all([packet(i) for i in range(4)])
        assert await r.ascii("getrun") == (
            "{ downstream={ queues=1 queuedOctets=3000 queuedFrames=3"
            " delayedOctets=1000 delayedFrames=1 } }"
        )
        await r.b.wait(4)
        assert await r.ascii("getrun") == "{}"


async def test_status_text_has_the_counters(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        await r.setcfg("{ upstream={ loss_ppm=1000000 } }")
        await r.a.put(packet(1, 100))
        await r.b.put(packet(2, 40))
        reply = await r.sock.request("p:", GENERIC_COOKIE, NGM_TEXT_STATUS)
        text = reply.args
        assert "downstream:" in text
        assert "upstream:" in text
        assert "forwarded 1 frames (100 octets)" in text
        assert "delay drops 1 (40)" in text
        assert "loss 1000000 ppm" in text


async def test_setcfg_and_getcfg_in_ascii(autojump_clock: trio.testing.MockClock) -> None:
    """FreeBSD's ASCII forms: a new pipe's configuration, ng_pipe(4)'s example, and the top
    level taking a bandwidth or delay both directions share."""
    async with rig() as r:
        assert await r.ascii("getcfg") == (
            "{ downstream={ queuelen=50 fifo=1 droptail=1 }"
            " upstream={ queuelen=50 fifo=1 droptail=1 } }"
        )
        await r.setcfg("{ downstream={ bandwidth=20000000 fifo=1 } }")
        await r.setcfg("{ upstream={ bandwidth=500000 drr=1 duplicate=2 } }")
        assert await r.ascii("getcfg") == (
            "{ downstream={ bandwidth=20000000 queuelen=50 fifo=1 droptail=1 }"
            " upstream={ bandwidth=500000 queuelen=50 duplicate=2 drr=2048 droptail=1 } }"
        )
        await r.setcfg("{ bandwidth=-1 delay=2000 overhead=7 }")
        await r.setcfg("{ upstream={ bandwidth=64000 } downstream={ bandwidth=64000 } }")
        assert await r.ascii("getcfg") == (
            "{ bandwidth=64000 delay=2000 overhead=7"
            " downstream={ queuelen=50 fifo=1 droptail=1 }"
            " upstream={ queuelen=50 duplicate=2 drr=2048 droptail=1 } }"
        )


@pytest.mark.parametrize(
    "setting",
    [
        "{ bandwidth=2000000 delay=3000 overhead=-1 header_offset=14"
        " downstream={ BER=100000000 queuelen=-1 delaylen=100 duplicate=5 drr=1 jitter=100"
        " loss_ppm=1000 reorder_ppm=2000 reorder_delay=500 seed=7 drophead=1 }"
        " upstream={ bandwidth=64000 delay=9000 wfq=1 } }",
        "{ bandwidth=1000000 overhead=-1 upstream={ jitter=5 } }",
        "{ downstream={ delay=5 } upstream={ bandwidth=100 queuelen=65536 } }",
        "{ overhead=3 }",
    ],
)
async def test_getcfg_reply_given_to_setcfg_gives_the_same_configuration(
    autojump_clock: trio.testing.MockClock, setting: str
) -> None:
    """A graph's "save" records ``setcfg <getcfg's reply>``: on a new pipe that must restore the
    configuration exactly (zeroes that would otherwise read back as defaults say -1)."""
    async with rig() as r:
        await r.setcfg(setting)
        text = await r.ascii("getcfg")
        saved = await r.config()
        fresh = r.graph.make_node("pipe")
        r.graph.name_node(fresh, "q")
        await r.sock.send_ascii("q:", f"setcfg {text}")
        _, restored_text = await r.sock.request_ascii("q:", "getcfg")
        reply = await r.sock.request("q:", PIPE_COOKIE, NGM_PIPE_GET_CFG)
        assert (restored_text, reply.args) == (text, saved)
        # Given back to the same pipe, it changes nothing.
        await r.setcfg(text)
        assert await r.config() == saved


def test_binary_form_is_ng_pipe_cfg_then_the_extensions() -> None:
    """Binary layout: FreeBSD's ng_pipe_hookcfg (48 bytes) then 40 bytes of extensions; the
    configuration round-trips through bytes."""
    hookcfg, cfg = Struct(PipeHookCfg), Struct(PipeCfg)
    value = PipeHookCfg(bandwidth=1, BER=2, queuelen=3, delaylen=4, duplicate=5, drophead=1)
    data = hookcfg.to_bytes(value)
    assert len(data) == 48 + 40
    assert data[:8] == (1).to_bytes(8, "little") or data[:8] == (1).to_bytes(8, "big")
    whole = PipeCfg(1000, -1, 2, 3, value, PipeHookCfg(seed=2**64 - 1))
    assert cfg.from_bytes(cfg.to_bytes(whole)) == whole
    assert len(cfg.to_bytes(whole)) == 24 + 2 * 88


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        ("{ delay=10000000 }", errno.EINVAL),  # FreeBSD: under 10 s
        ("{ delay=-2 }", errno.EINVAL),
        ("{ bandwidth=99 }", errno.EINVAL),  # 100 bit/s .. 1 Gbit/s
        ("{ downstream={ bandwidth=1000000001 } }", errno.EINVAL),
        ("{ overhead=256 }", errno.EINVAL),
        ("{ header_offset=64 }", errno.EINVAL),
        ("{ upstream={ BER=1000000000001 } }", errno.EINVAL),
        ("{ downstream={ queuelen=4 } }", errno.EINVAL),  # FreeBSD: at least 5
        ("{ downstream={ queuelen=65537 } }", errno.EINVAL),  # bounded
        ("{ downstream={ delaylen=3 } }", errno.EINVAL),
        ("{ downstream={ duplicate=51 } }", errno.EINVAL),  # FreeBSD: at most 50%
        ("{ downstream={ loss_ppm=1000001 } }", errno.EINVAL),
        ("{ downstream={ jitter=10000000 } }", errno.EINVAL),
        ("{ downstream={ reorder_ppm=10 } }", errno.EINVAL),  # how far is not said
        ("{ downstream={ ber=5 } }", errno.ENOENT),  # FreeBSD's field is BER
        ("{ downstream={ delay=x } }", errno.EINVAL),
    ],
)
async def test_bad_configuration_is_refused_whole(
    autojump_clock: trio.testing.MockClock, setting: str, code: int
) -> None:
    """A value out of ng_pipe's range is an error with its errno, and nothing of the message is
    applied (here the delay given beside it)."""
    async with rig() as r:
        before = await r.config()
        bad = setting[:-1] + " delay=1234 }" if "delay=" not in setting else setting
        await expect_errno(code, r.setcfg(bad))
        assert await r.config() == before


async def test_bad_messages_and_hooks(autojump_clock: trio.testing.MockClock) -> None:
    """EINVAL for a hook other than upper and lower, an unknown command and a setcfg whose
    argument is not a configuration."""
    async with rig() as r:
        await expect_errno(errno.EINVAL, r.sock.mkpeer("p:", "hole", "middle", "x"))
        await expect_errno(errno.EINVAL, r.sock.request("p:", PIPE_COOKIE, 99))
        await expect_errno(
            errno.EINVAL,
            r.sock.send_msg("p:", Message(PIPE_COOKIE, NGM_PIPE_SET_CFG, "fast", "setcfg")),
        )
        await expect_errno(errno.EEXIST, r.sock.mkpeer("p:", "hole", "upper", "x"))


# ---------------------------------------------------------------------------------- shutdown


async def test_shutdown_with_items_queued(autojump_clock: trio.testing.MockClock) -> None:
    """Shutting a pipe down with items in flight ends its timer task, delivers none of them,
    and splices its two peers together (ng_pipe's ng_bypass)."""
    async with rig() as r:
        base = await r.tasks()
        await r.setcfg("{ downstream={ delay=50000 } upstream={ bandwidth=1000 } }")
        await r.a.put_all([packet(i) for i in range(10)])
        await r.b.put_all([packet(i) for i in range(10)])
        assert await r.tasks() == base + 1
        await r.sock.shutdown("p:")
        assert await r.tasks() == base
        assert not r.pipe._scopes
        await r.a.put(packet(99))
        assert r.b.got == [(r.t0, packet(99))]  # the probes are linked directly now
        with trio.move_on_after(100) as idle:
            await r.b.wait(2)
        assert idle.cancelled_caught
        assert r.a.got == []


async def test_a_hook_going_takes_its_queued_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Removing a hook drops what was queued to leave by it and what came in by it (counted),
    and the pipe carries on with its other hook; the node goes with its last hook, its task
    with it."""
    async with rig() as r:
        base = await r.tasks()
        await r.setcfg("{ delay=50000 }")
        await r.a.put_all([packet(i) for i in range(10)])
        await r.b.put_all([packet(i, 100) for i in range(5)])
        await r.sock.rmhook("p:", "lower")
        stats = await r.stats()
        assert (stats.downstream.delayDropFrames, stats.downstream.delayDropOctets) == (10, 10000)
        assert (stats.upstream.delayDropFrames, stats.upstream.delayDropOctets) == (5, 500)
        assert await r.ascii("getrun") == "{}"
        await expect_errno(errno.ENOTCONN, r.a.put(packet(11)))
        await r.sock.rmhook("p:", "upper")
        await expect_errno(errno.ENOENT, r.sock.nodeinfo("p:"))
        assert await r.tasks() == base
