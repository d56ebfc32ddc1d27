"""Loss recovery and congestion control (RFC 5681, 6582, 3042, 2018, 6675), and the stacks.

Chosen segments of a bulk transfer are dropped on their first transmission (by stream offset),
and the tests look at what was retransmitted, when, and what the counters say. Round trip 10 ms,
minimum RTO 200 ms: a retransmission well within one RTO is a fast one.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterable

import pytest

from netgraph.errors import NetgraphError
from nodes.tcp.connection import Connection
from nodes.tcp.segment import FIN, MASK, Segment
from nodes.tcp.stack import (
    REGISTRY,
    DefaultStack,
    NewRenoStack,
    StackRegistry,
    holes,
    make_registry,
)
from nodes.tcp.tcb import Config, State
from nodes.tcp.testing import Pair

from .test_tcp_core import established

DATA = hashlib.shake_256(b"recovery").digest(400_000)
MSS = 1448
RTT = 0.010


def drop_first(pair: Pair, segments: Iterable[int]) -> set[int]:
    """Drop, once each, the a->b data segments that start at these segment numbers (0-based,
    counted in full segments from the first byte written after ``established``)."""
    base = pair.conn("a").tcb.snd_max
    wanted = {n * MSS for n in segments}
    done: set[int] = set()

    def drop(seg: Segment) -> bool:
        offset = (seg.seq - base) & MASK
        if len(seg.payload) and offset in wanted and offset not in done:
            done.add(offset)
            return True
        return False

    pair.ab.drop_if = drop
    return done


def retransmitted(pair: Pair, since: float) -> list[tuple[float, int]]:
    """(time, segment number) of every a->b data segment sent more than once, at resends."""
    base = pair.conn("a").tcb.iss + 2  # the warm-up byte came first
    seen: set[int] = set()
    out = []
    for t, seg in pair.history("ab", since):
        if not len(seg.payload):
            continue
        offset = (seg.seq - base) & MASK
        if offset in seen:
            out.append((t, offset // MSS))
        seen.add(offset)
    return out


def transfer(pair: Pair, data: bytes = DATA) -> float:
    t0 = pair.now
    pair.write("a", data)
    a = pair.conn("a").tcb
    pair.run(lambda: len(pair.got["b"]) == len(data) and a.snd_una == a.snd_max, limit=60)
    assert pair.got["b"] == data
    return t0


NO_SACK = Config(sack=False)


# ------------------------------------------------------------------- NewReno, no SACK


def test_fast_retransmit_after_three_duplicate_acks() -> None:
    pair = established(config_a=NO_SACK, config_b=NO_SACK)
    drop_first(pair, [2])
    t0 = transfer(pair, DATA[: 20 * MSS])
    a = pair.conn("a").tcb
    assert (a.stats.fast_retransmits, a.stats.timeouts) == (1, 0)
    ((at, number),) = retransmitted(pair, t0)
    assert number == 2
    assert at - t0 == pytest.approx(RTT)  # on the third duplicate ACK, one RTT later
    assert a.stats.dupacks >= 3


def test_two_duplicate_acks_are_not_enough() -> None:
    # Three segments in flight and the first lost: two duplicates only, and nothing new to
    # send (so limited transmit cannot help): the retransmission timer has to do it.
    config = Config(sack=False, initial_cwnd=3)
    pair = established(config_a=config, config_b=NO_SACK)
    drop_first(pair, [0])
    t0 = transfer(pair, DATA[: 3 * MSS])
    a = pair.conn("a").tcb
    assert (a.stats.fast_retransmits, a.stats.timeouts) == (0, 1)
    ((at, _),) = retransmitted(pair, t0)
    assert at - t0 == pytest.approx(0.2)


def test_limited_transmit_sends_new_data_on_the_first_two_duplicates() -> None:
    # The same loss with more data queued: each of the first two duplicate ACKs lets one new
    # segment out (RFC 3042), whose ACKs make the third duplicate: no timeout.
    config = Config(sack=False, initial_cwnd=3)
    pair = established(config_a=config, config_b=NO_SACK)
    drop_first(pair, [0])
    t0 = transfer(pair, DATA[: 10 * MSS])
    a = pair.conn("a").tcb
    assert (a.stats.fast_retransmits, a.stats.timeouts) == (1, 0)
    base = a.iss + 2
    sends = [
        (round(t - t0, 6), ((s.seq - base) & MASK) // MSS)
        for t, s in pair.history("ab", t0)
        if len(s.payload)
    ]
    # Segments 0-2 at once; 3 and 4 when the duplicates for 1 and 2 come back; then 0 again.
    assert sends[:6] == [(0.0, 0), (0.0, 1), (0.0, 2), (RTT, 3), (RTT, 4), (2 * RTT, 0)]


def test_newreno_partial_ack_retransmits_the_next_hole_at_once() -> None:
    pair = established(config_a=NO_SACK, config_b=NO_SACK)
    drop_first(pair, [2, 6])
    t0 = transfer(pair, DATA[: 10 * MSS])
    a = pair.conn("a").tcb
    # One recovery episode, two retransmissions, no timeout.
    assert (a.stats.fast_retransmits, a.stats.retransmits, a.stats.timeouts) == (1, 2, 0)
    (t2, n2), (t6, n6) = retransmitted(pair, t0)
    assert (n2, n6) == (2, 6)
    assert t6 - t2 == pytest.approx(RTT)  # the partial ACK's answer, one RTT on
    assert not a.in_recovery
    assert a.cwnd <= a.ssthresh + MSS


def test_fast_recovery_halves_the_window() -> None:
    pair = established(config_a=NO_SACK, config_b=NO_SACK)
    a = pair.conn("a").tcb
    drop_first(pair, [2])
    pair.write("a", DATA[: 10 * MSS])
    pair.run(lambda: a.in_recovery)
    # ssthresh = FlightSize / 2 (10 segments sent, 2 acknowledged), cwnd = ssthresh + 3 SMSS.
    assert a.ssthresh == 4 * MSS
    assert a.cwnd >= a.ssthresh + 3 * MSS


def test_slow_start_then_congestion_avoidance() -> None:
    pair = established(config_a=Config(initial_cwnd=2), channel={"delay": 0.05})
    a = pair.conn("a").tcb
    assert a.cwnd == 2 * MSS
    a.ssthresh = 8 * MSS
    pair.write("a", DATA)
    cwnds = []
    for _ in range(2):  # one RTT at a time
        pair.advance(0.1)
        cwnds.append(a.cwnd // MSS)
    # Slow start doubles per RTT (ACK every 2nd segment, RFC 3465 L = 2) up to ssthresh...
    assert cwnds == [4, 8]
    # ...then congestion avoidance adds one segment per window's worth of bytes acknowledged.
    acked_at_last_growth, last = a.snd_una, a.cwnd
    growths = 0
    while growths < 6:
        pair.step()
        if a.cwnd != last:
            assert a.cwnd == last + MSS
            assert (a.snd_una - acked_at_last_growth) & MASK >= last - 2 * MSS
            acked_at_last_growth, last = a.snd_una, a.cwnd
            growths += 1


# --------------------------------------------------------------------------- SACK


def test_sack_blocks_report_out_of_order_data_most_recent_first() -> None:
    pair = established()
    drop_first(pair, [2, 5])
    t0 = pair.now
    pair.write("a", DATA[: 8 * MSS])
    pair.advance(0.006)  # the first flight arrived, nothing retransmitted yet
    b = pair.conn("b").tcb
    assert b.sack_ok
    base = (pair.conn("a").tcb.iss + 2) & MASK
    blocks = [
        tuple(((x - base) & MASK) // MSS for x in block)
        for _, s in pair.history("ba", t0)
        for block in s.options.sack_blocks[:1]
    ]
    # Each duplicate ACK's first block holds the segment that triggered it.
    assert blocks == [(3, 4), (3, 5), (6, 7), (6, 8)]
    last = pair.history("ba", t0)[-1][1].options.sack_blocks
    assert [tuple(((x - base) & MASK) // MSS for x in blk) for blk in last] == [(6, 8), (3, 5)]


def test_sack_recovery_retransmits_only_the_holes_in_one_round_trip() -> None:
    config = Config(initial_cwnd=40, sndbuf=1 << 20, rcvbuf=1 << 20)
    pair = established(config_a=config, config_b=config)
    holes_sent = [4, 11, 19, 32]
    drop_first(pair, holes_sent)
    t0 = transfer(pair, DATA[: 40 * MSS])
    a = pair.conn("a").tcb
    again = retransmitted(pair, t0)
    assert sorted(n for _, n in again) == holes_sent  # nothing that arrived is sent again
    assert (a.stats.sack_recoveries, a.stats.timeouts) == (1, 0)
    times = [t for t, _ in again]
    assert max(times) - min(times) < RTT  # all holes in the first round trip of recovery


def test_without_sack_the_same_losses_take_a_round_trip_each() -> None:
    config = Config(initial_cwnd=40, sndbuf=1 << 20, rcvbuf=1 << 20, sack=False)
    pair = established(config_a=config, config_b=config)
    drop_first(pair, [4, 11, 19, 32])
    t0 = transfer(pair, DATA[: 40 * MSS])
    times = [t for t, _ in retransmitted(pair, t0)]
    assert max(times) - min(times) == pytest.approx(3 * RTT)
    assert pair.conn("a").tcb.stats.sack_recoveries == 0


def test_sack_is_not_used_unless_both_offer_it() -> None:
    pair = established(config_b=NO_SACK)
    assert not pair.conn("a").tcb.sack_ok
    assert not pair.conn("b").tcb.sack_ok
    drop_first(pair, [2, 6])
    transfer(pair, DATA[: 30 * MSS])
    for direction in ("ab", "ba"):
        assert all(not s.options.sack_blocks for _, s in pair.history(direction))
    assert pair.history("ab")[0][1].options.sack_permitted  # a offered it
    assert not pair.history("ba")[0][1].options.sack_permitted  # b did not


def test_holes_walks_the_scoreboard() -> None:
    board = [(10, 20), (30, 40)]
    assert list(holes(board, 0, 50)) == [(0, 10), (20, 30), (40, 50)]
    assert list(holes(board, 15, 35)) == [(20, 30)]
    assert list(holes([], 0, 5)) == [(0, 5)]


@pytest.mark.parametrize("seed", range(4))
def test_recovery_under_heavy_loss_stays_byte_identical(seed: int) -> None:
    for config in (Config(), NO_SACK):
        pair = established(
            config_a=config,
            config_b=config,
            channel={"loss": 0.15, "reorder": 0.1, "dup": 0.05},
            seed=seed,
        )
        transfer(pair, DATA[:150_000])


# ------------------------------------------------------------------------ the stacks


class Recorder(DefaultStack):
    """The default stack under another name, recording init/fini and optionally refusing."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.refuse = 0

    def init(self, conn: Connection) -> None:
        self.calls.append("init")
        conn.tcb.stack_state["recorder"] = True
        super().init(conn)

    def fini(self, conn: Connection) -> None:
        self.calls.append("fini")
        conn.tcb.stack_state.pop("recorder", None)

    def handoff_ok(self, conn: Connection) -> int:
        self.calls.append("handoff_ok")
        return self.refuse


def test_registry_names_aliases_and_refcounts() -> None:
    registry = make_registry()
    names = {info.name: info for info in registry.list()}
    assert set(names) == {"default", "newreno"}
    assert names["default"].aliases == ("sack",)
    assert names["default"].default
    assert registry.lookup("sack") is registry.lookup("default")
    with pytest.raises(NetgraphError) as info:
        registry.lookup("bbr")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(NetgraphError) as info:
        registry.register(NewRenoStack())
    assert info.value.errno == errno.EEXIST
    with pytest.raises(NetgraphError) as info:
        registry.deregister("default")
    assert info.value.errno == errno.EBUSY
    conn = Connection.client(
        ("192.0.2.1", 1), ("192.0.2.2", 2), 0.0, secret=b"k", registry=registry
    )
    assert registry.refcount("default") == 1
    conn.switch_stack("newreno")
    assert (registry.refcount("default"), registry.refcount("newreno")) == (0, 1)
    with pytest.raises(NetgraphError) as info:
        registry.deregister("newreno")
    assert info.value.errno == errno.EBUSY
    conn.abort()
    assert registry.refcount("newreno") == 0
    registry.deregister("newreno")
    assert [i.name for i in registry.list()] == ["default"]


def test_connections_start_on_the_configured_stack() -> None:
    pair = established(config_a=Config(stack="newreno"))
    assert pair.conn("a").stack.name == "newreno"
    assert pair.conn("b").stack.name == "default"
    assert pair.conn("a").tcb.stack_name == "newreno"


def test_switch_stack_mid_transfer_under_loss() -> None:
    recorder = Recorder()
    REGISTRY.register(recorder)
    try:
        pair = established(channel={"loss": 0.05}, seed=5)
        a = pair.conn("a")
        pair.write("a", DATA)
        pair.run(lambda: len(pair.got["b"]) > len(DATA) // 3)
        a.switch_stack("recorder")
        assert recorder.calls == ["handoff_ok", "init"]
        assert a.stack is recorder
        assert a.tcb.stack_state == {"recorder": True}
        assert REGISTRY.refcount("recorder") == 1
        pair.run(lambda: len(pair.got["b"]) > 2 * len(DATA) // 3)
        a.switch_stack("newreno")
        assert recorder.calls[-1] == "fini"
        assert a.tcb.stack_state == {}
        pair.run(lambda: len(pair.got["b"]) == len(DATA))
        assert pair.got["b"] == DATA
        assert REGISTRY.refcount("recorder") == 0
        # A stack may refuse a connection: it stays where it was.
        recorder.refuse = errno.EINVAL
        with pytest.raises(NetgraphError) as info:
            a.switch_stack("recorder")
        assert info.value.errno == errno.EINVAL
        assert a.stack.name == "newreno"
    finally:
        REGISTRY.deregister("recorder")


def test_newreno_stack_ignores_sack_for_recovery() -> None:
    config = Config(initial_cwnd=40, sndbuf=1 << 20, rcvbuf=1 << 20, stack="newreno")
    pair = established(config_a=config, config_b=Config(sndbuf=1 << 20, rcvbuf=1 << 20))
    assert pair.conn("a").tcb.sack_ok  # negotiated, so the peer sends blocks...
    drop_first(pair, [4, 11, 19, 32])
    t0 = transfer(pair, DATA[: 40 * MSS])
    times = [t for t, _ in retransmitted(pair, t0)]
    assert max(times) - min(times) == pytest.approx(3 * RTT)  # ...but recovery is NewReno's
    assert pair.conn("a").tcb.sacked == []


def test_private_registry() -> None:
    registry = StackRegistry()
    registry.register(NewRenoStack(), aliases=("reno",))
    conn = Connection.client(
        ("192.0.2.1", 1), ("192.0.2.2", 2), 0.0, secret=b"k", registry=registry
    )
    assert conn.stack.name == "newreno"  # "default" means the registry's default
    assert conn.state == State.SYN_SENT


def test_a_lost_fin_segment_is_recovered_by_the_partial_ack_retransmission() -> None:
    pair = established(config_a=NO_SACK, config_b=NO_SACK)
    drop_first(pair, [2, 9])  # 9 is the last segment, which carries the FIN
    pair.write("a", DATA[: 10 * MSS], then_shutdown=True)
    pair.run(lambda: pair.conn("b").at_eof)
    assert pair.got["b"] == DATA[: 10 * MSS]
    a = pair.conn("a").tcb
    assert (a.stats.fast_retransmits, a.stats.timeouts) == (1, 0)
    fins = [s for _, s in pair.history("ab") if s.flags & FIN]
    assert len(fins) == 2
    assert len(fins[1].payload) == MSS
