"""The sans-IO TCP core's state machine (RFC 9293, 1122, 5961, 6298, 6528, 6691, 7323).

Two connections talk over :class:`nodes.tcp.testing.Pair`'s fake link on virtual time (10 ms
round trip unless a test says otherwise; the client ``a`` opens to the server ``b``, made by a
listener). Tests that need an odd segment hand it to a connection with ``Pair.inject`` and look
at the reply. Times are checked exactly: virtual time moves only to the next deadline.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import struct

import pytest

from netgraph.errors import NetgraphError
from nodes.tcp import events as ev
from nodes.tcp.connection import (
    Connection,
    Listener,
    ephemeral_ports,
    make_isn,
    make_ts_offset,
)
from nodes.tcp.segment import (
    ACK,
    FIN,
    MASK,
    RST,
    SYN,
    Segment,
    build,
    fold,
    parse,
    pseudo_sum,
    verify,
    words,
)
from nodes.tcp.tcb import Config, State
from nodes.tcp.testing import CLIENT, SERVER, Pair, exchange

DATA = hashlib.shake_256(b"tcp core").digest(300_000)
RTT = 0.010


def established(**kw: object) -> Pair:
    """A pair past its handshake, with one byte each way exchanged and read, so that both
    receive windows are fully open (a SYN announces at most 64 KiB) and no timer is pending."""
    pair = Pair(**kw)  # type: ignore[arg-type]
    pair.run(pair.established, limit=30)
    auto_read = pair.auto_read
    pair.auto_read = True
    pair.write("a", b"!")
    pair.write("b", b"!")
    pair.run(lambda: pair.got["a"] == pair.got["b"] == b"!", limit=30)
    pair.advance(1.0)
    pair.got = {"a": bytearray(), "b": bytearray()}
    pair.auto_read = auto_read
    pair.events = {"a": [], "b": []}
    return pair


def data_segments(pair: Pair, direction: str, since: float = 0.0) -> list[tuple[float, Segment]]:
    return [(t, s) for t, s in pair.history(direction, since) if len(s.payload)]


def acks(pair: Pair, direction: str, since: float = 0.0) -> list[tuple[float, Segment]]:
    return [
        (t, s)
        for t, s in pair.history(direction, since)
        if not len(s.payload) and s.flags & (SYN | FIN | RST) == 0
    ]


# ------------------------------------------------------------------------ handshake, data


def test_handshake_and_transfer_both_ways_are_byte_identical() -> None:
    pair = established()
    back = os.urandom(123_457)
    pair.write("a", DATA, then_shutdown=True)
    pair.write("b", back, then_shutdown=True)
    pair.run(lambda: pair.conn("a").state == State.CLOSED and pair.b is not None)
    pair.run(lambda: pair.conn("b").state == State.CLOSED)
    assert pair.got["b"] == DATA
    assert pair.got["a"] == back
    assert pair.event_types("b").count("EndOfStream") == 1
    assert pair.event_types("a")[-1] == "Closed"


def test_three_way_handshake_segments() -> None:
    pair = Pair()
    pair.run(pair.established)
    (t1, syn), (t3, ack) = pair.history("ab")[:2]
    ((t2, synack),) = pair.history("ba")[:1]
    assert syn.flags == SYN
    assert synack.flags == SYN | ACK
    assert ack.flags == ACK
    assert synack.ack == (syn.seq + 1) & MASK
    assert (ack.seq, ack.ack) == ((syn.seq + 1) & MASK, (synack.seq + 1) & MASK)
    assert (t2 - t1, t3 - t1) == pytest.approx((0.005, 0.010))
    assert pair.event_types("a") == ["Established"]
    assert pair.event_types("b") == ["Established"]


def test_listener_answers_a_stray_ack_with_a_reset_and_ignores_rst() -> None:
    listener = Listener(secret=b"k")
    pseudo = pseudo_sum(CLIENT[0], SERVER[0])
    conn, reset = listener.receive(build(40000, 80, 5, 77, ACK, 100, pseudo), SERVER, CLIENT, 0.0)
    assert conn is None
    assert reset is not None
    rst = parse(reset)
    assert (rst.flags, rst.seq) == (RST, 77)
    assert listener.receive(build(40000, 80, 5, 0, RST, 0, pseudo), SERVER, CLIENT, 0.0) == (
        None,
        None,
    )
    # A SYN with FIN is dropped, as Linux does.
    syn_fin = build(40000, 80, 5, 0, SYN | FIN, 100, pseudo)
    assert listener.receive(syn_fin, SERVER, CLIENT, 0.0) == (None, None)


def test_simultaneous_open() -> None:
    now = 50.0
    x = Connection.client(CLIENT, SERVER, now, secret=b"x")
    y = Connection.client(SERVER, CLIENT, now, secret=b"y")
    (syn_x,) = x.segments_to_send(now)
    (syn_y,) = y.segments_to_send(now)
    x.receive(syn_y, now)
    y.receive(syn_x, now)
    assert (x.state, y.state) == (State.SYN_RECEIVED, State.SYN_RECEIVED)
    (synack_x,) = x.segments_to_send(now)
    assert parse(synack_x).flags == SYN | ACK
    assert parse(synack_x).seq == parse(syn_x).seq  # the same SYN, now with an ACK
    (synack_y,) = y.segments_to_send(now)
    x.receive(synack_y, now)
    y.receive(synack_x, now)
    assert (x.state, y.state) == (State.ESTABLISHED, State.ESTABLISHED)
    assert x.send(b"ping") == 4
    assert y.send(b"pong") == 4
    exchange(x, y, now)
    assert (x.read(), y.read()) == (b"pong", b"ping")
    assert ev.ESTABLISHED in x.next_events()
    assert ev.ESTABLISHED in y.next_events()


def test_simultaneous_close_goes_through_closing_to_time_wait() -> None:
    pair = established()
    a, b = pair.conn("a"), pair.conn("b")
    a.shutdown_write()
    b.shutdown_write()
    assert (a.state, b.state) == (State.FIN_WAIT_1, State.FIN_WAIT_1)
    pair.flush()
    t0 = pair.now
    pair.run(lambda: a.state != State.FIN_WAIT_1)
    assert (a.state, b.state) == (State.CLOSING, State.CLOSING)  # the FINs crossed
    pair.run(lambda: a.state == State.TIME_WAIT and b.state == State.TIME_WAIT)
    pair.run(lambda: a.state == State.CLOSED and b.state == State.CLOSED, limit=100)
    assert pair.now == pytest.approx(t0 + RTT + 60.0)
    assert pair.event_types("a") == ["EndOfStream", "Closed"]


@pytest.mark.parametrize("closer", ["a", "b"])
def test_half_close_lets_the_other_direction_finish(closer: str) -> None:
    other = "b" if closer == "a" else "a"
    pair = established()
    pair.conn(closer).shutdown_write()
    pair.flush()
    pair.run(lambda: pair.conn(other).at_eof and pair.conn(closer).state == State.FIN_WAIT_2)
    assert pair.conn(other).state == State.CLOSE_WAIT
    assert pair.conn(closer).state == State.FIN_WAIT_2
    assert pair.event_types(other) == ["EndOfStream"]
    with pytest.raises(NetgraphError) as info:
        pair.conn(closer).send(b"more")
    assert info.value.errno == errno.EPIPE
    # The other side goes on sending for as long as it likes, then closes.
    pair.write(other, DATA, then_shutdown=True)
    pair.run(lambda: pair.conn(closer).at_eof)
    assert pair.got[closer] == DATA
    pair.run(lambda: pair.conn(other).state == State.CLOSED)
    assert pair.conn(closer).state == State.TIME_WAIT


def test_end_of_stream_is_not_reported_before_the_fin() -> None:
    # A long transfer over a bad link: the reader never sees an end of stream early.
    pair = established(channel={"loss": 0.05, "reorder": 0.1, "dup": 0.05}, seed=3)
    b = pair.conn("b")
    pair.write("a", DATA)
    while len(pair.got["b"]) < len(DATA):
        pair.step()
        assert not b.at_eof
        assert "EndOfStream" not in pair.event_types("b")
    pair.conn("a").shutdown_write()
    pair.flush()
    pair.run(lambda: b.at_eof)
    assert pair.got["b"] == DATA


def test_close_with_unread_data_resets_and_data_after_close_resets() -> None:
    pair = established(auto_read=False)
    pair.write("a", b"unread")
    pair.run(lambda: pair.conn("b").readable == 6)
    pair.conn("b").close()  # RFC 2525: unread data thrown away -> RST, not FIN
    (rst,) = [s for s in pair.conn("b").segments_to_send(pair.now)]
    assert parse(rst).flags & RST
    # A reader that closed, then gets data: reset.
    pair = established()
    pair.conn("b").close()
    pair.flush()
    pair.run(lambda: pair.conn("a").state == State.CLOSE_WAIT)
    pair.write("a", b"late")
    pair.run(lambda: pair.conn("a").state == State.CLOSED)
    assert "Reset" in pair.event_types("a")
    assert pair.event_types("b")[-1] == "Closed"


# ------------------------------------------------------------------------------ resets


def test_exact_rst_resets() -> None:
    pair = established()
    b = pair.conn("b")
    replies = pair.inject("b", seq=b.tcb.rcv_nxt, flags=RST)
    assert replies == []
    assert b.state == State.CLOSED
    assert pair.event_types("b") == ["Reset", "Closed"]
    assert pair.events["b"][0] == ev.Reset(errno.ECONNRESET)


def test_in_window_rst_gets_a_challenge_ack_and_no_reset() -> None:
    pair = established()
    b = pair.conn("b")
    replies = pair.inject("b", seq=b.tcb.rcv_nxt + 1000, flags=RST)
    assert b.state == State.ESTABLISHED
    (challenge,) = replies
    assert challenge.flags == ACK
    assert challenge.ack == b.tcb.rcv_nxt  # tells the sender the exact sequence to use
    assert b.tcb.stats.challenge_acks == 1


def test_out_of_window_rst_is_dropped_silently() -> None:
    pair = established()
    b = pair.conn("b")
    for seq in (b.tcb.rcv_nxt - 1, b.tcb.rcv_nxt + 10_000_000):
        assert pair.inject("b", seq=seq, flags=RST) == []
    assert b.state == State.ESTABLISHED


def test_challenge_acks_are_rate_limited() -> None:
    pair = established()
    b = pair.conn("b")
    sent = 0
    for _ in range(50):
        sent += len(pair.inject("b", seq=b.tcb.rcv_nxt + 10, flags=RST))
    assert sent == b.tcb.config.challenge_ack_limit == 10
    assert b.tcb.stats.challenge_acks_suppressed == 40
    pair.now += 1.0
    assert len(pair.inject("b", seq=b.tcb.rcv_nxt + 10, flags=RST)) == 1


def test_syn_on_an_established_connection_gets_a_challenge_ack() -> None:
    pair = established()
    b = pair.conn("b")
    for seq in (b.tcb.rcv_nxt, b.tcb.rcv_nxt + 5, b.tcb.rcv_nxt - 100_000):
        replies = pair.inject("b", seq=seq, flags=SYN, ack=0)
        assert [s.flags for s in replies] == [ACK]
    assert b.state == State.ESTABLISHED


def test_no_rst_in_reply_to_a_rst() -> None:
    pair = established()
    a = pair.conn("a")
    a.abort()
    (rst,) = [parse(s) for s in a.segments_to_send(pair.now)]
    assert rst.flags & RST
    assert rst.seq == a.tcb.snd_max
    # A closed connection answers an ACK with a RST, a RST with nothing.
    assert [s.flags for s in pair.inject("a", flags=ACK)] == [RST]
    assert pair.inject("a", flags=RST | ACK) == []
    assert pair.inject("a", flags=RST) == []


def test_ack_loops_cannot_form() -> None:
    # Data-less segments that are unacceptable (old, or acknowledging what was never sent) are
    # answered at most once per 500 ms: two confused ends cannot ping-pong ACKs forever.
    pair = established()
    b = pair.conn("b")
    replies = [pair.inject("b", ack=b.tcb.snd_max + 100) for _ in range(5)]
    replies += [pair.inject("b", seq=b.tcb.rcv_nxt - 1000) for _ in range(5)]
    assert [len(r) for r in replies] == [1] + [0] * 9
    pair.now += 0.5
    assert len(pair.inject("b", seq=b.tcb.rcv_nxt - 1000)) == 1
    # Old data is always answered: its sender needs the ACK.
    assert all(len(pair.inject("b", seq=b.tcb.rcv_nxt - 1, payload=b"!")) for _ in range(3))


def test_a_retransmission_never_goes_beyond_snd_max() -> None:
    pair = established(config_a=Config(nodelay=True))
    a = pair.conn("a")
    a.send(b"abc")
    pair.flush()
    a.send(b"defghij")  # queued behind the three in flight, not sent yet
    out: list[bytes] = []
    assert a.retransmit(a.tcb.snd_una, 1448, pair.now, out) == 3
    assert bytes(parse(out[0]).payload) == b"abc"


def test_ack_for_data_never_sent_is_dropped_and_answered() -> None:
    pair = established()
    b = pair.conn("b")
    una = b.tcb.snd_una
    (reply,) = pair.inject("b", ack=una + 5000, payload=b"xyz")
    assert reply.flags == ACK
    assert reply.ack == b.tcb.rcv_nxt
    assert b.tcb.snd_una == una
    assert pair.got["b"] == b""  # the segment was dropped, data and all (RFC 5961 5.2)


def test_syn_sent_rejects_a_bad_ack_with_a_reset_and_takes_a_good_rst() -> None:
    a = Connection.client(CLIENT, SERVER, 0.0, secret=b"s")
    (syn,) = a.segments_to_send(0.0)
    iss = parse(syn).seq
    pseudo = pseudo_sum(CLIENT[0], SERVER[0])
    a.receive(build(80, 40000, 999, iss + 7, SYN | ACK, 1000, pseudo), 0.0)
    (rst,) = [parse(s) for s in a.segments_to_send(0.0)]
    assert (rst.flags, rst.seq) == (RST, iss + 7)
    assert a.state == State.SYN_SENT
    a.receive(build(80, 40000, 0, iss + 7, RST | ACK, 0, pseudo), 0.0)  # bad ACK: ignored
    assert not a.closed
    a.receive(build(80, 40000, 0, iss + 1, RST | ACK, 0, pseudo), 0.0)
    assert a.closed
    assert a.next_events() == [ev.Reset(errno.ECONNREFUSED), ev.CLOSED]


# ------------------------------------------------------------------- closing and timers


def test_time_wait_lasts_two_msl_and_acks_a_repeated_fin() -> None:
    pair = established()
    a, b = pair.conn("a"), pair.conn("b")
    a.shutdown_write()
    pair.flush()
    pair.run(lambda: b.state == State.CLOSE_WAIT)
    b.shutdown_write()
    pair.flush()
    pair.run(lambda: a.state == State.TIME_WAIT)
    entered = pair.now
    assert a.tcb.timewait_at == pytest.approx(entered + 60.0)
    pair.advance(30.0)
    assert a.state == State.TIME_WAIT
    # The peer's FIN again (its ACK lost, say): ACKed, and the 2MSL wait starts over.
    fin_seq = (a.tcb.rcv_nxt - 1) & MASK
    (reply,) = pair.inject("a", seq=fin_seq, flags=FIN | ACK)
    assert reply.flags == ACK
    assert reply.ack == a.tcb.rcv_nxt
    assert a.tcb.timewait_at == pytest.approx(pair.now + 60.0)
    restarted = pair.now
    pair.run(lambda: a.state == State.CLOSED, limit=100)
    assert pair.now == pytest.approx(restarted + 60.0)
    assert pair.event_types("a")[-1] == "Closed"


def test_a_new_syn_takes_over_from_time_wait() -> None:
    pair = established()
    a, b = pair.conn("a"), pair.conn("b")
    b.shutdown_write()  # the server closes first: it holds the TIME_WAIT
    pair.flush()
    pair.run(lambda: a.state == State.CLOSE_WAIT)
    a.shutdown_write()
    pair.flush()
    pair.run(lambda: b.state == State.TIME_WAIT and a.state == State.CLOSED)
    old = b
    # The client comes back from the same port with a higher sequence number.
    pair.isn_a = (a.tcb.snd_max + 100_000) & MASK
    pair.connect()
    pair.run(pair.established)
    assert pair.conn("b") is not old
    assert old.state == State.CLOSED


def test_syn_is_retransmitted_with_backoff_then_gives_up() -> None:
    pair = Pair(connect=False, channel_ab={"loss": 1.0})
    pair.connect()
    start = pair.now
    pair.run(lambda: pair.conn("a").state == State.CLOSED, limit=300)
    times = [t - start for t, s in pair.history("ab") if s.flags == SYN]
    assert times == pytest.approx([0, 1, 3, 7, 15, 31, 63])  # Linux: 6 retries
    assert pair.now - start == pytest.approx(127)
    assert pair.event_types("a") == ["RetransmitWarning", "TimedOut", "Closed"]
    assert pair.events["a"][1] == ev.TimedOut("retransmit")
    assert [s.flags & RST for t, s in pair.history("ab")].count(RST) == 0  # no RST in SYN_SENT


@pytest.mark.parametrize("timestamps", [True, False])
def test_lost_synack_is_resent_when_the_syn_comes_again(timestamps: bool) -> None:
    config = Config(timestamps=timestamps)
    pair = Pair(config, config, connect=False)
    drops = [0]

    def drop_first_synack(seg: Segment) -> bool:
        if seg.flags == SYN | ACK and not drops[0]:
            drops[0] = 1
            return True
        return False

    pair.ba.drop_if = drop_first_synack
    pair.connect()
    pair.run(pair.established)
    # The client's SYN came again after 1 s and got a SYN-ACK at once.
    assert pair.now == pytest.approx(1000.0 + 1.0 + RTT + 0.005)
    assert pair.conn("a").tcb.cwnd == pair.conn("a").tcb.snd_mss  # RFC 5681 3.1: one segment
    # RFC 6298 5.7: RTO 3 s after a retransmitted SYN, unless a timestamp measured the RTT.
    assert pair.conn("a").tcb.rto == (0.2 if timestamps else 3.0)


def test_fin_is_retransmitted() -> None:
    pair = established()
    dropped: list[float] = []

    def drop_first_fin(seg: Segment) -> bool:
        if seg.flags & FIN and not dropped:
            dropped.append(pair.now)
            return True
        return False

    pair.ab.drop_if = drop_first_fin
    pair.write("a", b"last words", then_shutdown=True)
    pair.run(lambda: pair.conn("b").at_eof)
    fins = [t for t, s in pair.history("ab") if s.flags & FIN]
    assert len(fins) == 2
    assert fins[1] - fins[0] == pytest.approx(pair.conn("a").tcb.config.min_rto)
    assert pair.got["b"] == b"last words"


def test_delayed_ack_comes_after_40_ms() -> None:
    pair = established()
    t0 = pair.now
    pair.write("a", b"x" * 100)
    pair.advance(0.2)
    (at, ack), *_ = acks(pair, "ba", since=t0)
    assert at - t0 == pytest.approx(0.005 + 0.040)
    assert ack.ack == pair.conn("a").tcb.snd_max


def test_every_second_full_segment_is_acked_at_once() -> None:
    pair = established()
    mss = pair.conn("a").tcb.snd_mss
    t0 = pair.now
    pair.write("a", b"y" * (4 * mss))
    pair.advance(0.2)
    times = [t - t0 for t, s in acks(pair, "ba", since=t0)]
    assert times == pytest.approx([0.005, 0.005])  # after the 2nd and the 4th, no timer


def test_keepalive_is_off_by_default() -> None:
    pair = established()
    pair.advance(3 * 3600)
    assert pair.history("ab", since=pair.now - 3 * 3600 + 1) == []
    assert pair.conn("a").state == State.ESTABLISHED


def test_keepalive_probes_then_gives_up() -> None:
    config = Config(keepalive=True, keepidle=10.0, keepintvl=2.0, keepcnt=3)
    pair = established(config_a=config)
    pair.ab.loss = 1.0
    a = pair.conn("a")
    last_heard = a.tcb.last_rcv_at
    assert last_heard is not None
    pair.run(lambda: a.state == State.CLOSED, limit=100)
    probes = [(t, s) for t, s in pair.history("ab") if t > last_heard and not s.flags & RST]
    assert [t - last_heard for t, s in probes] == pytest.approx([10.0, 12.0, 14.0])
    for _, probe in probes:
        assert probe.flags == ACK
        assert not len(probe.payload)
        assert probe.seq == (a.tcb.snd_una - 1) & MASK
    assert pair.now - last_heard == pytest.approx(16.0)
    assert pair.events["a"][-2] == ev.TimedOut("keepalive")


def test_answered_keepalives_keep_the_connection() -> None:
    config = Config(keepalive=True, keepidle=10.0, keepintvl=2.0, keepcnt=3)
    pair = established(config_a=config)
    pair.advance(100.0)
    a = pair.conn("a")
    assert a.state == State.ESTABLISHED
    assert a.tcb.stats.keepalive_probes in (9, 10)  # one every 10 s (+ RTT) of silence
    assert a.tcb.keep_probes <= 1  # each was answered
    assert pair.conn("b").state == State.ESTABLISHED


def test_keepalive_can_be_switched_on_later() -> None:
    pair = established()
    pair.conn("a").configure(pair.now, keepalive=True, keepidle=5.0)
    pair.advance(5.5)
    assert pair.conn("a").tcb.stats.keepalive_probes == 1


# ------------------------------------------------------------------ RTO (RFC 6298)


@pytest.mark.parametrize("timestamps", [True, False])
def test_rto_from_srtt_and_rttvar(timestamps: bool) -> None:
    config = Config(timestamps=timestamps)
    pair = Pair(config, config, channel={"delay": 0.25})
    pair.run(pair.established)
    a = pair.conn("a")
    # One sample (the handshake's): SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
    assert a.tcb.srtt == pytest.approx(0.5)
    assert a.tcb.rttvar == pytest.approx(0.25)
    assert a.tcb.rto == pytest.approx(1.5)


def test_rto_has_a_200_ms_floor() -> None:
    pair = Pair(channel={"delay": 0.0001})
    pair.run(pair.established)
    assert pair.conn("a").tcb.rto == pytest.approx(0.2)
    assert pair.conn("a").tcb.srtt == pytest.approx(0.0002, abs=0.001)


def test_karn_no_rtt_sample_from_a_retransmitted_segment() -> None:
    config = Config(timestamps=False)
    pair = established(config_a=config, config_b=config, channel={"delay": 0.25})
    a = pair.conn("a")
    srtt, rto = a.tcb.srtt, a.tcb.rto
    pair.ab.drop_if = lambda seg: len(seg.payload) > 0 and pair.ab.drop_if is not None
    pair.write("a", b"z" * 100)
    pair.ab.drop_if = None
    pair.run(lambda: pair.got["b"] == b"z" * 100)
    pair.advance(1.0)
    assert a.tcb.stats.timeouts == 1
    assert a.tcb.srtt == srtt  # the 2 s the ACK took is no sample
    assert a.tcb.rto == rto


def test_retransmission_backs_off_exponentially_up_to_max_rto_then_gives_up() -> None:
    config = Config(r2=7, max_rto=1.0)
    pair = established(config_a=config)
    pair.ab.loss = 1.0
    t0 = pair.now
    pair.write("a", b"into the void")
    pair.run(lambda: pair.conn("a").state == State.CLOSED, limit=100)
    sends = [t for t, s in pair.history("ab", since=t0) if len(s.payload)]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(sends)]
    assert gaps == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
    types = pair.event_types("a")
    assert types == ["RetransmitWarning", "TimedOut", "Closed"]
    assert pair.events["a"][0] == ev.RetransmitWarning(3)  # R1
    assert pair.history("ab")[-1][1].flags & RST  # the give-up resets


def test_user_timeout_aborts() -> None:
    pair = established(config_a=Config(user_timeout=5.0))
    pair.ab.loss = 1.0
    t0 = pair.now
    pair.write("a", b"anyone?")
    pair.run(lambda: pair.conn("a").state == State.CLOSED, limit=100)
    assert pair.now - t0 == pytest.approx(5.0)
    assert pair.events["a"][-2] == ev.TimedOut("user timeout")


# ------------------------------------------------------------------ windows, Nagle, SWS


def test_persist_timer_probes_a_zero_window_then_the_transfer_resumes() -> None:
    config_a = Config(nodelay=True)
    config_b = Config(rcvbuf=2 * 1448)  # two segments of room (less the warm-up byte)
    pair = established(config_a=config_a, config_b=config_b, auto_read=False)
    a, b = pair.conn("a"), pair.conn("b")
    t0 = pair.now
    pair.write("a", DATA[:20_000])
    pair.advance(5.0)
    assert b.readable == 2 * 1448 - 1  # the window is full...
    assert a.tcb.snd_wnd == 0
    probes = [(t, s) for t, s in data_segments(pair, "ab", since=t0) if len(s.payload) == 1]
    # ...and a probes it with one byte beyond it, backing off from the RTO each time.
    assert len(probes) >= 3
    gaps = [y - x for (x, _), (y, _) in itertools.pairwise(probes)]
    assert gaps == pytest.approx([0.2 * 2 ** (i + 2) for i in range(len(gaps))])
    assert {s.seq for _, s in probes} == {a.tcb.snd_una}  # the same byte each time
    assert a.tcb.stats.retransmits == 0
    assert a.tcb.stats.timeouts == 0
    assert a.tcb.stats.persist_probes == len(probes) + 1  # and the first, which filled it
    pair.auto_read = True  # the application reads: a window update restarts the flow
    pair.run(lambda: len(pair.got["b"]) == 20_000)
    assert pair.got["b"] == DATA[:20_000]


def test_zero_window_probes_do_not_count_as_duplicate_acks() -> None:
    pair = established(config_a=Config(nodelay=True), config_b=Config(rcvbuf=1448), auto_read=False)
    pair.write("a", DATA[:10_000])
    pair.advance(20.0)
    assert pair.conn("a").tcb.stats.fast_retransmits == 0
    assert pair.conn("a").tcb.dupacks == 0


def test_nagle_holds_a_small_segment_while_data_is_unacknowledged() -> None:
    pair = established()
    t0 = pair.now
    pair.write("a", b"first")
    pair.write("a", b"second")
    pair.advance(0.5)
    sends = [(t - t0, bytes(s.payload)) for t, s in data_segments(pair, "ab", since=t0)]
    # The second waits for the (delayed) ACK of the first.
    assert sends == [(0.0, b"first"), (pytest.approx(0.050), b"second")]


def test_nodelay_sends_small_segments_at_once() -> None:
    pair = established(config_a=Config(nodelay=True))
    t0 = pair.now
    pair.write("a", b"first")
    pair.write("a", b"second")
    sends = [(t - t0, bytes(s.payload)) for t, s in data_segments(pair, "ab", since=t0)]
    assert sends == [(0.0, b"first"), (0.0, b"second")]


def test_sender_sws_does_not_send_a_runt_into_a_window_remnant() -> None:
    pair = established(config_a=Config(nodelay=True), config_b=Config(rcvbuf=8192), auto_read=False)
    t0 = pair.now
    pair.write("a", DATA[:20_000])
    pair.advance(0.1)  # before the persist timer
    sent = sum(len(s.payload) for _, s in data_segments(pair, "ab", since=t0))
    assert sent == 5 * 1448  # not the 952 bytes that would fill the window


def test_receiver_sws_does_not_advertise_a_small_window_increase() -> None:
    pair = established(config_a=Config(nodelay=True), config_b=Config(rcvbuf=8192), auto_read=False)
    b = pair.conn("b")
    pair.write("a", DATA[:8191])  # the window (less the warm-up byte), all of it
    pair.advance(0.1)
    assert b.readable == 8191
    b.read(100)
    # An old byte again: ACKed at once, with our window.
    (reply,) = pair.inject("b", seq=b.tcb.rcv_nxt - 1, payload=b"!")
    assert reply.wnd == 0  # 100 bytes of room are not worth announcing
    b.read(1400)
    (reply,) = pair.inject("b", seq=b.tcb.rcv_nxt - 1, payload=b"!")
    assert reply.wnd == 1501  # all the room (the warm-up byte, read, counts too)


def test_reading_sends_a_window_update() -> None:
    pair = established(config_b=Config(rcvbuf=4 * 1448), auto_read=False)
    b = pair.conn("b")
    pair.write("a", DATA[:50_000])
    pair.advance(0.5)
    t0 = pair.now
    b.read()
    pair.flush()
    ((at, update),) = acks(pair, "ba", since=t0)
    assert at == t0
    assert update.wnd == 4 * 1448


# -------------------------------------------------------------------- options (7323, 6691)


def test_syn_announces_mss_from_the_mtu() -> None:
    for kw, ipv6, mss in [
        ({}, False, 1460),
        ({}, True, 1440),
        ({"mtu": 9000}, False, 8960),
        ({"mss_clamp": 1000}, False, 1000),
    ]:
        pair = Pair(Config(**kw), ipv6=ipv6)  # type: ignore[arg-type]
        (_, syn), *_ = pair.history("ab")
        assert syn.options.mss == mss


def test_mss_negotiation_honours_the_peers_mss() -> None:
    pair = established(config_b=Config(mtu=576))
    a = pair.conn("a")
    assert a.tcb.peer_mss == 536
    assert a.tcb.snd_mss == 536 - 12  # the timestamps option comes out of it
    pair.write("a", DATA[:20_000])
    pair.advance(1.0)
    assert max(len(s.payload) for _, s in data_segments(pair, "ab")) == 524
    assert pair.conn("b").tcb.snd_mss == 524  # and b sends at most its own


def test_no_mss_option_means_536() -> None:
    pseudo = pseudo_sum(CLIENT[0], SERVER[0])
    syn = build(40000, 80, 1, 0, SYN, 1000, pseudo)  # no options at all
    conn, _ = Listener(secret=b"k").receive(syn, SERVER, CLIENT, 0.0)
    assert conn is not None
    assert conn.tcb.snd_mss == 536
    assert not (conn.tcb.ws_ok)
    assert not (conn.tcb.sack_ok)
    assert not (conn.tcb.ts_ok)
    synack = parse(conn.segments_to_send(0.0)[0])
    # Only the MSS: no option the SYN did not offer.
    assert synack.options.wscale is None
    assert synack.options.tsval is None
    assert not synack.options.sack_permitted


def test_window_scaling_is_negotiated_and_applied() -> None:
    config = Config(rcvbuf=1 << 20, sndbuf=1 << 20)
    pair = established(config_a=config, config_b=config)
    a, b = pair.conn("a"), pair.conn("b")
    assert a.tcb.ws_ok
    assert b.tcb.ws_ok
    assert a.tcb.rcv_wscale == b.tcb.snd_wscale == 5  # 1 MiB >> 5 < 64 KiB
    pair.write("a", DATA)
    pair.run(lambda: len(pair.got["b"]) == len(DATA))
    assert max(s.wnd for _, s in acks(pair, "ba")) << 5 > 0xFFFF
    peak = max(
        (s.seq + len(s.payload) - b.tcb.irs) & MASK for _, s in data_segments(pair, "ab")
    ) - max((s.ack - b.tcb.irs) & MASK for _, s in acks(pair, "ba") if s.ack)
    assert peak >= 0  # sanity
    assert a.tcb.max_snd_wnd > 0xFFFF  # the scaled window is in use


def test_window_scaling_is_not_used_if_the_peer_does_not_offer_it() -> None:
    pair = established(config_b=Config(window_scaling=False, rcvbuf=1 << 20))
    a, b = pair.conn("a"), pair.conn("b")
    (_, synack), *_ = pair.history("ba")
    assert synack.options.wscale is None
    assert not a.tcb.ws_ok
    assert a.tcb.rcv_wscale == 0
    assert a.tcb.snd_wscale == 0
    assert b.tcb.snd_wscale == 0
    pair.write("b", DATA)
    pair.run(lambda: len(pair.got["a"]) == len(DATA))
    assert a.tcb.snd_wnd == 0xFFFF  # b's window field, taken as is


def test_timestamps_measure_rtt_and_echo() -> None:
    pair = established(channel={"delay": 0.05})
    a = pair.conn("a")
    pair.write("a", DATA[:100_000])
    pair.run(lambda: len(pair.got["b"]) == 100_000)
    assert a.tcb.ts_ok
    assert a.tcb.srtt == pytest.approx(0.1, abs=0.045)  # delayed ACKs add up to 40 ms
    segs = data_segments(pair, "ab")
    assert all(s.options.tsval is not None for _, s in segs)
    echoes = {s.options.tsecr for _, s in acks(pair, "ba")}
    sent = {s.options.tsval for _, s in segs}
    assert echoes <= sent | {a.tcb.ts_recent, pair.history("ab")[0][1].options.tsval}


def test_timestamps_off_when_one_side_declines() -> None:
    pair = established(config_b=Config(timestamps=False))
    assert not pair.conn("a").tcb.ts_ok
    pair.write("a", b"data")
    pair.advance(0.1)
    assert all(s.options.tsval is None for _, s in pair.history("ab")[1:])


def test_paws_drops_an_old_duplicate() -> None:
    pair = established()
    b = pair.conn("b")
    old = (b.tcb.ts_recent - 1000) & MASK
    replies = pair.inject("b", payload=b"stale", timestamp=(old, 0))
    assert pair.got["b"] == b""
    assert b.tcb.stats.paws_dropped == 1
    assert [s.flags for s in replies] == [ACK]
    pair.inject("b", payload=b"fresh")
    assert pair.got["b"] == b"fresh"


def test_timestamp_offsets_are_random_per_connection() -> None:
    offsets = {
        make_ts_offset(b"secret", ("192.0.2.1", port), SERVER) for port in range(40000, 40010)
    }
    assert len(offsets) == 10
    pair = Pair()
    (_, syn), *_ = pair.history("ab")
    assert syn.options.tsval != int(pair.now * 1000) & MASK


# --------------------------------------------------------------------- ISN (RFC 6528)


def test_isn_is_a_keyed_hash_plus_a_4_microsecond_clock() -> None:
    isn = make_isn(b"key", CLIENT, SERVER, 10.0)
    assert make_isn(b"key", CLIENT, SERVER, 10.0) == isn
    assert make_isn(b"key", CLIENT, SERVER, 11.0) == (isn + 250_000) & MASK
    assert make_isn(b"other", CLIENT, SERVER, 10.0) != isn
    assert make_isn(b"key", ("192.0.2.1", 40001), SERVER, 10.0) != isn
    digest = hashlib.blake2s(
        bytes([192, 0, 2, 1, 0x9C, 0x40, 192, 0, 2, 2, 0, 80]), key=b"key", digest_size=4
    ).digest()
    assert isn == (int.from_bytes(digest, "big") + 2_500_000) & MASK


def test_ephemeral_ports_follow_rfc6056_algorithm_3() -> None:
    ports = list(ephemeral_ports(b"key", "192.0.2.1", SERVER))
    assert len(ports) == len(set(ports)) == 60999 - 32768 + 1  # each port once
    assert all(32768 <= p <= 60999 for p in ports)
    assert ports[1] == ports[0] + 1 or ports[1] == 32768  # consecutive from a hashed start
    assert next(ephemeral_ports(b"key", "192.0.2.1", SERVER, start=5)) == ports[5]
    others = {next(ephemeral_ports(b"key", "192.0.2.1", ("192.0.2.9", p))) for p in range(10)}
    assert len(others) == 10  # a different peer, a different place in the range
    assert next(ephemeral_ports(b"other", "192.0.2.1", SERVER)) != ports[0]


# ---------------------------------------------------------------- sequence wrap-around


@pytest.mark.parametrize("below", [1, 700, 100_000, 200_001])
def test_sequence_numbers_wrap_anywhere(below: int) -> None:
    # The ISS puts 2**32 in the SYN, in the first segment, mid-stream, or on the FIN.
    iss = (1 << 32) - below
    pair = established(isn_a=iss, isn_b=iss, channel={"loss": 0.03, "reorder": 0.05}, seed=below)
    data = DATA[:200_000]
    pair.write("a", data, then_shutdown=True)
    pair.write("b", data, then_shutdown=True)
    pair.run(lambda: pair.conn("a").at_eof and pair.conn("b").at_eof)
    assert pair.got["a"] == pair.got["b"] == data
    assert pair.conn("a").tcb.iss == iss


def test_segments_cut_up_and_duplicated_arrive_byte_identical() -> None:
    pair = established(channel={"split": 1.0, "dup": 0.3, "reorder": 0.3}, seed=11)
    pair.write("a", DATA, then_shutdown=True)
    pair.run(lambda: pair.conn("b").at_eof)
    assert pair.got["b"] == DATA
    assert pair.conn("b").tcb.stats.ooo_segments > 0


def test_more_than_4_gib_of_sequence_space_crossed() -> None:
    # 4 GiB + 1 MiB from an ISS 1000 below 2**32: the sequence numbers wrap at the start and
    # again at the end. 64 KiB segments with the checksum offloaded keep it to seconds.
    total = (4 << 30) + (1 << 20)
    config = Config(mtu=65535, sndbuf=8 << 20, rcvbuf=8 << 20, tx_checksum_offload=True)
    now = 0.0
    a = Connection.client(CLIENT, SERVER, now, config, secret=b"a", isn=(1 << 32) - 1000)
    (syn,) = a.segments_to_send(now)
    b, _ = Listener(config, secret=b"b").receive(syn, SERVER, CLIENT, now, checksum_ok=True)
    assert b is not None
    chunk = os.urandom(1 << 20)
    expected = chunk * 2
    view = memoryview(chunk)
    sent = got = 0
    while got < total:
        if sent < total:
            sent += a.send(view[sent % len(chunk) :][: total - sent])
        now += 0.0001
        for segment in a.segments_to_send(now):
            b.receive(segment, now, checksum_ok=True)
        while piece := b.read(len(chunk)):
            offset = got % len(chunk)
            assert expected[offset : offset + len(piece)] == piece
            got += len(piece)
        for segment in b.segments_to_send(now):
            a.receive(segment, now, checksum_ok=True)
    assert b.tcb.rcv_nxt == ((1 << 32) - 1000 + 1 + total) & MASK  # wrapped twice
    assert a.tcb.stats.retransmits == 0
    assert b.tcb.stats.ooo_segments == 0


def test_transmit_checksum_offload_leaves_the_pseudo_header_sum() -> None:
    config = Config(tx_checksum_offload=True)
    a = Connection.client(CLIENT, SERVER, 0.0, config, secret=b"a")
    (syn,) = a.segments_to_send(0.0)
    b, _ = Listener(config, secret=b"b").receive(syn, SERVER, CLIENT, 0.0, checksum_ok=True)
    assert b is not None
    (synack,) = b.segments_to_send(0.0)
    a.receive(synack, 0.0, checksum_ok=True)
    a.send(b"offloaded")
    ack, data = a.segments_to_send(0.0)
    pseudo = pseudo_sum(CLIENT[0], SERVER[0])
    for segment in (syn, synack, ack, data):
        # The field holds the folded pseudo-header sum (length included), not complemented...
        assert struct.unpack_from("!H", segment, 16)[0] == (pseudo + len(segment)) % 0xFFFF
        assert not verify(segment, pseudo)
        # ...for the device to complete: add the segment's words, complement.
        device = bytearray(segment)
        struct.pack_into("!H", device, 16, fold(words(segment)))
        assert verify(device, pseudo)
    assert bytes(parse(data).payload) == b"offloaded"


def test_a_corrupt_segment_is_dropped_and_counted() -> None:
    pair = established()
    b = pair.conn("b")
    a = pair.conn("a")
    a.send(b"precious")
    (segment,) = a.segments_to_send(pair.now)
    corrupt = bytearray(segment)
    corrupt[-1] ^= 0x20
    b.receive(bytes(corrupt), pair.now)
    assert (b.readable, b.tcb.stats.bad_checksum) == (0, 1)
    assert b.segments_to_send(pair.now) == []  # not even an ACK
    b.receive(segment, pair.now)
    assert b.read() == b"precious"
    b.receive(bytes(corrupt[:15]), pair.now)  # too short to be a segment
    assert b.tcb.stats.malformed == 1


def test_data_and_fin_queued_before_the_handshake_go_after_it() -> None:
    pair = Pair()
    a = pair.conn("a")
    assert a.state == State.SYN_SENT
    assert a.send(b"early bird") == 10
    a.shutdown_write()
    assert a.state == State.SYN_SENT  # the FIN waits for ESTABLISHED
    pair.run(lambda: pair.b is not None and pair.conn("b").at_eof)
    assert pair.got["b"] == b"early bird"
    assert pair.event_types("a")[0] == "Established"
    assert a.state in (State.FIN_WAIT_1, State.FIN_WAIT_2)


def test_send_after_close_and_on_a_closed_connection_fail() -> None:
    pair = established()
    a = pair.conn("a")
    a.shutdown_write()
    with pytest.raises(NetgraphError) as info:
        a.send(b"x")
    assert info.value.errno == errno.EPIPE
    a.abort()
    with pytest.raises(NetgraphError) as info:
        a.send(b"x")
    assert info.value.errno == errno.ENOTCONN
    with pytest.raises(NetgraphError):
        Connection.client(("192.0.2.1", 0), SERVER, 0.0, secret=b"k")  # no port
    with pytest.raises(NetgraphError):
        Connection.client(("2001:db8::1", 5), SERVER, 0.0, secret=b"k")  # families differ
    with pytest.raises(NetgraphError):
        Config(delack_time=0.6)  # RFC 1122: at most 500 ms


def test_send_buffer_bounds_send_and_writable_follows() -> None:
    pair = established(config_a=Config(sndbuf=10_000), auto_read=False)
    a = pair.conn("a")
    assert a.send(DATA[:25_000]) == 10_000
    assert a.send(b"more") == 0
    assert a.send_space == 0
    pair.auto_read = True
    pair.flush()
    pair.run(lambda: "Writable" in pair.event_types("a"))
    assert a.send_space >= 5_000


def test_a_window_closed_with_data_in_flight_hands_over_to_the_persist_timer() -> None:
    pair = established(config_a=Config(nodelay=True))
    a = pair.conn("a")
    pair.ab.loss = 1.0  # what a sends now is lost...
    pair.write("a", DATA[:3000])
    assert a.tcb.snd_max != a.tcb.snd_una
    pair.inject("a", ack=a.tcb.snd_una, wnd=0)  # ...and the peer closes its window
    pair.flush()
    assert a.tcb.persist_at is not None
    assert a.tcb.rexmt_at is None
    assert a.tcb.snd_nxt == a.tcb.snd_una  # probing starts from the first unacknowledged byte
    pair.ab.loss = 0.0
    pair.run(lambda: len(pair.got["b"]) == 3000, limit=5.0)  # the probe reopens the flow
    assert pair.got["b"] == DATA[:3000]
    assert a.tcb.stats.timeouts == 0
