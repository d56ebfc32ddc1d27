"""Checkpoint and migration (TCPCP2): pause, export, import elsewhere, resume; the peer must not
notice. Also the export format: versioned JSON, every TCB field, times relative to the clock."""

from __future__ import annotations

import errno
import hashlib
import json

import attrs
import pytest

from netgraph.errors import NetgraphError
from nodes.tcp.connection import Connection
from nodes.tcp.segment import MASK
from nodes.tcp.stack import REGISTRY, make_registry
from nodes.tcp.tcb import EXPORT_VERSION, Tcb, export_tcb, import_tcb, ts_clock
from nodes.tcp.testing import Pair

from .test_tcp_core import established

DATA = hashlib.shake_256(b"migrate").digest(500_000)


def migrate(pair: Pair, side: str, *, pause_for: float = 0.0) -> Connection:
    """Stop ``side``, export it, import the bytes into a new connection, start that one."""
    old = pair.conn(side)
    old.pause()
    pair.advance(pause_for)  # segments sent to it meanwhile are lost (it consumes nothing)
    blob = old.export_state(pair.now)
    new = Connection.import_state(blob, pair.now)
    assert new.tcb.paused
    new.resume(pair.now)
    old.abort()  # the old one is gone (its RST never reaches the wire: it was paused)
    assert old.segments_to_send(pair.now) == []
    if side == "a":
        pair.a = new
    else:
        pair.b = new
    pair.flush()
    return new


@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("pause_for", [0.0, 0.3])
def test_migration_mid_transfer_is_invisible_to_the_peer(side: str, pause_for: float) -> None:
    pair = established(channel={"loss": 0.02}, seed=7)
    back = DATA[::-1][:200_000]
    pair.write("a", DATA, then_shutdown=True)
    pair.write("b", back)
    pair.run(lambda: len(pair.got["b"]) > len(DATA) // 2)
    peer = pair.conn("b" if side == "a" else "a")
    moved = migrate(pair, side, pause_for=pause_for)
    pair.run(lambda: pair.conn("b").at_eof and len(pair.got["a"]) == len(back))
    assert pair.got["b"] == DATA
    assert pair.got["a"] == back
    assert peer.state not in (0,)  # the peer never saw a reset
    assert "Reset" not in pair.event_types("b" if side == "a" else "a")
    assert moved.state == pair.conn(side).state


def test_export_is_versioned_json_with_every_field() -> None:
    pair = established()
    pair.write("a", DATA[:50_000])
    pair.advance(0.003)
    a = pair.conn("a")
    doc = json.loads(a.export_state(pair.now))
    assert doc["format"] == "netgraph-tcp-tcb"
    assert doc["version"] == EXPORT_VERSION
    assert set(doc["tcb"]) == {f.name for f in attrs.fields(Tcb)}
    assert doc["tcb"]["state"] == "ESTABLISHED"
    assert doc["tcb"]["snd_buf"] == {"$b": doc["tcb"]["snd_buf"]["$b"]}  # bytes as base64


def test_import_rebases_times_and_the_timestamp_clock() -> None:
    pair = established()
    pair.write("a", DATA[:50_000])
    a = pair.conn("a")
    assert a.tcb.rexmt_at is not None
    blob = a.export_state(pair.now)
    later = pair.now + 12345.678  # another process, another clock
    b = Connection.import_state(blob, later)
    assert b.tcb.rexmt_at == pytest.approx(a.tcb.rexmt_at - pair.now + later)
    assert a.tcb.last_rcv_at is not None
    assert b.tcb.last_rcv_at == pytest.approx(a.tcb.last_rcv_at - pair.now + later)
    tsval_before = (ts_clock(pair.now) + a.tcb.ts_offset) & MASK
    tsval_after = (ts_clock(later) + b.tcb.ts_offset) & MASK
    assert tsval_after == tsval_before  # the peer's PAWS sees no jump back
    same = attrs.asdict(a.tcb)
    other = attrs.asdict(b.tcb)
    for name in same:
        if not name.endswith("_at") and name != "ts_offset":
            assert same[name] == other[name], name


def test_bad_exports_are_refused() -> None:
    pair = established()
    blob = pair.conn("a").export_state(pair.now)
    doc = json.loads(blob)
    for bad in (
        b"not json",
        json.dumps({**doc, "version": EXPORT_VERSION + 1}).encode(),
        json.dumps({**doc, "format": "other"}).encode(),
        json.dumps({**doc, "tcb": {**doc["tcb"], "bogus": 1}}).encode(),
        json.dumps({**doc, "tcb": {**doc["tcb"], "state": "DANCING"}}).encode(),
    ):
        with pytest.raises(NetgraphError) as info:
            Connection.import_state(bad, 0.0)
        assert info.value.errno == errno.EINVAL


def test_pending_segments_and_events_travel_with_the_export() -> None:
    pair = established()
    a, b = pair.conn("a"), pair.conn("b")
    a.send(b"x")
    for segment in a.segments_to_send(pair.now):
        b.receive(segment, pair.now)  # queues a DataReady event
    b.abort()  # queues a RST and a Closed event
    tcb, extra = import_tcb(b.export_state(pair.now), pair.now)
    assert [name for name, _ in extra["events"]] == ["DataReady", "Closed"]
    assert len(extra["out"]) == 1
    moved = Connection.import_state(b.export_state(pair.now), pair.now)
    assert [type(e).__name__ for e in moved.next_events()] == ["DataReady", "Closed"]
    assert moved.segments_to_send(pair.now) == b.segments_to_send(pair.now)
    assert tcb.state == 0


def test_a_paused_connection_neither_sends_nor_consumes() -> None:
    pair = established()
    a = pair.conn("a")
    a.pause()
    assert a.next_deadline() is None
    pair.write("a", b"queued while stopped")
    assert a.segments_to_send(pair.now) == []
    before = a.tcb.rcv_nxt
    pair.write("b", b"to a stopped connection")
    pair.advance(1.0)
    assert a.tcb.rcv_nxt == before
    assert a.tcb.stats.dropped_paused >= 1
    a.resume(pair.now)
    pair.flush()
    pair.run(
        lambda: (
            pair.got["a"] == b"to a stopped connection" and pair.got["b"] == b"queued while stopped"
        )
    )


def test_export_keeps_the_stack_and_its_refcount() -> None:
    registry = make_registry()
    pair = established(config_a=attrs.evolve(Pair().config_a, stack="newreno"))
    blob = export_tcb(pair.conn("a").tcb, pair.now)
    moved = Connection.import_state(blob, pair.now, registry=registry)
    assert moved.stack.name == "newreno"
    assert registry.refcount("newreno") == 1
    assert REGISTRY.refcount("newreno") >= 1  # the original, still open
