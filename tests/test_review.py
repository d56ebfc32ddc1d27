"""Findings of a review of the engine: each test shows a bug that was found, and fixed."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest
import trio
import trio.testing

import netgraph
from netgraph import Hook, Item, Message, NetgraphError, Node, delivery
from netgraph.message import GENERIC_COOKIE, NGM_SHUTDOWN
from tests.conftest import Gate, Recorder, make_types

WRITER_CMD = 77  # a non-readonly command for the test node types


class Mute(Node):
    """Takes no data: the base rcvdata fails with EOPNOTSUPP."""

    dies_with_last_hook = False


class Notifier(Node):
    """Announces the loss of any hook other than ``status`` out of ``status``."""

    dies_with_last_hook = False

    def constructor(self) -> None:
        self.failures: list[BaseException] = []

    def rcvdata(self, hook: Hook, item: Item) -> None:
        pass

    def disconnect(self, hook: Hook) -> None:
        status = self.hooks.get("status")
        if hook.name != "status" and status is not None:
            try:
                self.send(status, b"down:" + hook.name.encode())
            except Exception as exc:
                self.failures.append(exc)
                raise


class Farewell(Node):
    """Says goodbye out of ``out`` when it closes, and records what its send returned."""

    def constructor(self) -> None:
        self.outcome: list[Any] = []

    def rcvdata(self, hook: Hook, item: Item) -> None:
        pass

    def close(self) -> None:
        out = self.hooks.get("out")
        if out is not None:
            try:
                self.send(out, b"bye")
            except NetgraphError as err:
                self.outcome.append(err.errno)
            else:
                self.outcome.append("ok")


class Asker(Node):
    """On data, sends a writer message to ``target`` and records what send_msg did."""

    target = "."

    def constructor(self) -> None:
        self.outcome: list[Any] = []

    def rcvdata(self, hook: Hook, item: Item) -> None:
        try:
            self.send_msg(self.target, Message(4242, WRITER_CMD, None, "boom"))
        except NetgraphError as err:
            self.outcome.append(err.errno)
        else:
            self.outcome.append("ok")

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        raise NetgraphError(errno.EPROTO, "no such command here")


class Killer(Node):
    """On data, shuts down the node across ``out`` and records its own events meanwhile."""

    def constructor(self) -> None:
        self.events: list[str] = []

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.events.append("rcvdata begins")
        self.send_msg("out", Message(GENERIC_COOKIE, NGM_SHUTDOWN, None, "shutdown"))
        self.events.append("rcvdata ends")

    def disconnect(self, hook: Hook) -> None:
        self.events.append(f"disconnect {hook.name}")

    def shutdown(self) -> None:
        self.events.append("shutdown")


class PersistentGate(Gate):
    """A Gate that revives when shut down (like ng_ether)."""

    def shutdown(self) -> None:
        self.revive()


class ReplyingGate(Gate):
    """A Gate whose messages get a reply."""

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        self.log.append(("msg", msg.cmd))
        return "pong"


@pytest.fixture
async def g() -> Any:
    types = make_types()
    types.register("t_mute", Mute)
    types.register("t_notifier", Notifier)
    types.register("t_farewell", Farewell)
    types.register("t_asker", Asker)
    types.register("t_killer", Killer)
    types.register("t_pgate", PersistentGate)
    types.register("t_rgate", ReplyingGate)
    async with netgraph.open_graph(types=types) as graph:
        yield graph


def writer_msg(args: Any = None) -> Message:
    return Message(4242, WRITER_CMD, args, "w")


# --------------------------------------------------------------------------------- tests


async def test_error_of_message_queued_from_handler_is_heard(
    g: netgraph.Graph, caplog: pytest.LogCaptureFixture
) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "t_asker", "a", "in")
    asker = g.resolve(sock.node, "a")[0]
    assert isinstance(asker, Asker)
    # The writer message to itself is queued: the asker is on the stack (spec 1.12 re-entry).
    await sock.send_data("a", b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert asker.outcome == ["ok"]
    assert asker.stats.errors == 1 or any(r.levelno >= logging.WARNING for r in caplog.records)


async def test_sender_waiting_for_room_hears_of_shutdown(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "test_gate", "g", "in")
    gate = g.resolve(sock.node, "g")[0]
    assert isinstance(gate, Gate)
    gate.queue_limit = 1  # type: ignore[misc]
    outcome: dict[str, Any] = {}

    async def send_msg(key: str) -> None:
        try:
            await sock.send_msg("g", writer_msg())
        except NetgraphError as err:
            outcome[key] = err.errno
        else:
            outcome[key] = "ok"

    async def send_data() -> None:
        with pytest.raises(NetgraphError) as info:
            await sock.send_data("g", b"1")
        outcome["data"] = info.value.errno

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_data)
        await gate.entered.wait()
        nursery.start_soon(send_msg, "queued")  # queued behind the suspended reader: full
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(send_msg, "waiting")  # waits for room
        await trio.testing.wait_all_tasks_blocked()
        g.rmnode(gate)
        gate.open.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert outcome.get("queued") == errno.ENOENT  # flushed from the queue (spec 1.11 step 5)
    assert outcome.get("waiting") == errno.EINVAL  # a message for a closing node (step 2)
    assert outcome.get("data") == errno.EIO  # the handler holding it was ended


async def test_revived_node_keeps_draining_its_queue(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "t_pgate", "g", "in")
    pgate = g.resolve(sock.node, "g")[0]
    assert isinstance(pgate, PersistentGate)

    async def held_sender() -> None:
        with pytest.raises(NetgraphError) as info:
            await sock.send_data("g", b"1")
        assert info.value.errno == errno.EIO

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held_sender)
        await pgate.entered.wait()

        async def queued_writer() -> None:
            with pytest.raises(NetgraphError):
                await sock.send_msg("g", writer_msg())

        nursery.start_soon(queued_writer)  # the runner now waits for the reader
        await trio.testing.wait_all_tasks_blocked()
        g.rmnode(pgate)  # flushes the queue; the node revives
        assert pgate.is_valid
        pgate.open.set()
        await trio.testing.wait_all_tasks_blocked()
    ran: list[int] = []
    delivery.call_later(pgate, lambda: ran.append(1))
    await trio.testing.wait_all_tasks_blocked()
    assert ran == [1]  # a runner left stuck after the revive would never run it


async def test_runner_never_waits_for_its_own_queue(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "test_recorder", "s", "in")
    rec = g.resolve(sock.node, "s")[0]
    assert isinstance(rec, Recorder)
    g.mkpeer(rec, "test_gate", "out", "in")
    gate = g.resolve(rec, "out")[0]
    assert isinstance(gate, Gate)
    g.connect(gate, "s:s", "out", "back")
    rec.queue_limit = 1  # type: ignore[misc]

    delivery.call_later(rec, lambda: None)  # something queued: the next item queues behind it
    await sock.send_data("s", b"1")
    await gate.entered.wait()  # rec's runner is now driving the gate's handler
    delivery.call_later(rec, lambda: None)  # rec's queue is full again
    gate.open.set()  # the gate emits to rec's "back": its runner waits for room in its queue
    await trio.testing.wait_all_tasks_blocked()
    assert ("back", b"1") in rec.received


async def test_disconnect_may_send_when_socket_closes(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "t_notifier", "a", "in")
    notifier = g.resolve(sock.node, "a")[0]
    assert isinstance(notifier, Notifier)
    g.mkpeer(notifier, "test_recorder", "status", "in")
    rec = g.resolve(notifier, "status")[0]
    assert isinstance(rec, Recorder)
    await sock.close()
    await trio.testing.wait_all_tasks_blocked()
    assert notifier.failures == []
    assert rec.received == [("in", b"down:in")]


async def test_error_after_queued_call_is_heard(
    g: netgraph.Graph, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = g.make_node("t_notifier")
    assert isinstance(notifier, Notifier)
    g.mkpeer(notifier, "t_mute", "status", "in")
    mute = g.resolve(notifier, "status")[0]
    g.mkpeer(notifier, "hole", "x", "in")
    notifier.rmhook_self(notifier.hooks["x"])  # disconnect sends to mute, which fails
    await trio.testing.wait_all_tasks_blocked()
    assert "x" not in notifier.hooks
    assert notifier.failures == []
    heard = notifier.stats.errors + mute.stats.errors + notifier.stats.dropped
    assert heard or any(r.levelno >= logging.WARNING for r in caplog.records)


async def test_two_receivers_both_get_data(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "echo", "e", "in")
    got: list[tuple[str, Item]] = []

    async def receiver() -> None:
        got.append(await sock.recv_data())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await sock.send_data("e", b"1")
        await trio.testing.wait_all_tasks_blocked()
        await sock.send_data("e", b"2")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert sorted(got) == [("e", b"1"), ("e", b"2")]


async def test_two_message_receivers_wake_on_shutdown(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    woken: list[int] = []

    async def receiver() -> None:
        with pytest.raises(NetgraphError):
            await sock.recv_msg()
        woken.append(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await sock.close()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert woken == [1, 1]


async def test_peer_teardown_waits_for_running_handler(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "t_killer", "k", "in")
    killer = g.resolve(sock.node, "k")[0]
    assert isinstance(killer, Killer)
    g.mkpeer(killer, "hole", "out", "in")
    await sock.send_data("k", b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert killer.events == ["rcvdata begins", "rcvdata ends", "disconnect out"]


async def test_shutdown_releases_sender_held_by_io_handler(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "test_gate", "g", "in")
    gate = g.resolve(sock.node, "g")[0]
    assert isinstance(gate, Gate)
    done = trio.Event()

    async def sender() -> None:
        with pytest.raises(NetgraphError):
            await sock.send_data("g", b"1")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await gate.entered.wait()
        g.rmnode(gate)
        await trio.testing.wait_all_tasks_blocked()
        released = done.is_set()
        nursery.cancel_scope.cancel()
    assert released


async def test_data_to_closing_node_fails_with_eio(g: netgraph.Graph) -> None:
    sock = g.socket("s")
    await sock.mkpeer(".", "t_farewell", "f", "in")
    farewell = g.resolve(sock.node, "f")[0]
    assert isinstance(farewell, Farewell)
    g.mkpeer(farewell, "echo", "out", "x")  # echo sends the goodbye straight back
    await sock.shutdown("f")
    assert farewell.outcome == [errno.EIO]


async def test_rmhook_self_removes_that_hook_only(g: netgraph.Graph) -> None:
    rec = g.make_node("test_recorder")
    g.mkpeer(rec, "hole", "keep", "in")
    g.mkpeer(rec, "hole", "x", "in")
    rec.rmhook_self(rec.hooks["x"])
    g.rmhook(rec, "x")  # the hook goes before the queued call runs...
    g.mkpeer(rec, "hole", "x", "in")  # ...and another one takes its name
    await trio.testing.wait_all_tasks_blocked()
    assert "x" in rec.hooks


async def test_unqueueable_reply_does_not_crash_the_graph() -> None:
    types = make_types()
    types.register("t_rgate", ReplyingGate)
    outcome: list[Any] = []
    crash: BaseException | None = None
    try:
        async with netgraph.open_graph(types=types) as graph:
            sock = graph.socket("s")
            await sock.mkpeer(".", "t_rgate", "g", "in")
            gate = graph.resolve(sock.node, "g")[0]
            assert isinstance(gate, ReplyingGate)
            sock.node.queue_limit = 0  # type: ignore[misc]  # no room for the reply

            async def writer() -> None:
                try:
                    await sock.send_msg("g", writer_msg())
                except NetgraphError as err:
                    outcome.append(err.errno)
                else:
                    outcome.append("ok")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sock.send_data, "g", b"1")
                await gate.entered.wait()
                nursery.start_soon(writer)  # queued behind the suspended reader
                await trio.testing.wait_all_tasks_blocked()
                gate.open.set()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
    except BaseException as exc:
        crash = exc
    assert crash is None
    assert outcome == ["ok"]


class Bomb(Node):
    """Defers an item to the I/O node on ``out`` and then dies with a BaseException."""

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.send(self.hooks["out"], item)
        raise KeyboardInterrupt


async def test_scratch_chain_is_clean_after_base_exception() -> None:
    types = make_types()
    types.register("t_bomb", Bomb)
    async with netgraph.open_graph(types=types) as graph:
        s1 = graph.socket("s1")
        await s1.mkpeer(".", "t_bomb", "b", "in")
        bomb = graph.resolve(s1.node, "b")[0]
        graph.mkpeer(bomb, "test_gate", "out", "in")
        gate = graph.resolve(bomb, "out")[0]
        assert isinstance(gate, Gate)
        with pytest.raises(KeyboardInterrupt):
            await s1.send_data("b", b"stale")
        s2 = graph.socket("s2")
        await s2.mkpeer(".", "hole", "h", "in")
        done = trio.Event()

        async def unrelated() -> None:
            await s2.send_data("h", b"fresh")
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(unrelated)
            await trio.testing.wait_all_tasks_blocked()
            stale = gate.entered.is_set()
            gate.open.set()
        assert done.is_set()
        assert not stale
        assert gate.received == []


class Merge(Node):
    """Sends the name of the hook each item came in on out of ``out``."""

    def rcvdata(self, hook: Hook, item: Item) -> None:
        if hook.name != "out":
            self.send(self.hooks["out"], hook.name.encode())


async def test_depth_deferral_keeps_hook_fifo() -> None:
    types = make_types()
    types.register("t_merge", Merge)
    async with netgraph.open_graph(types=types) as graph:
        sock = graph.socket("s")
        await sock.mkpeer(".", "hub", "h", "in")
        hub = graph.resolve(sock.node, "h")[0]
        merge = graph.make_node("t_merge")
        graph.mkpeer(merge, "test_recorder", "out", "in")
        observer = graph.resolve(merge, "out")[0]
        assert isinstance(observer, Recorder)
        # hub -> long chain -> merge:l puts merge at depth MAX_DEPTH; hub -> merge:s is shallow.
        prev, hook = hub, "long"
        for _ in range(delivery.MAX_DEPTH - 2):
            prev, hook = graph.mkpeer(prev, "test_recorder", hook, "in"), "out"
        graph.connect(prev, f"[{merge.id:x}]:", hook, "l")
        graph.connect(hub, f"[{merge.id:x}]:", "short", "s")
        await sock.send_data("h", b"x")
        await trio.testing.wait_all_tasks_blocked()
        # merge sent b"l" first, then b"s", out of the same hook
        assert [item for _, item in observer.received] == [b"l", b"s"]


class Looper(Node):
    """Starts its I/O task in the constructor, then fails to construct."""

    running: int = 0

    def constructor(self) -> None:
        self.start_task(self.loop)
        raise NetgraphError(errno.EADDRINUSE, "cannot bind")

    async def loop(self) -> None:
        Looper.running += 1
        try:
            await trio.sleep_forever()
        finally:
            Looper.running -= 1


async def test_failed_constructor_leaks_no_task() -> None:
    types = make_types()
    types.register("t_looper", Looper)
    async with netgraph.open_graph(types=types) as graph:
        with pytest.raises(NetgraphError):
            graph.make_node("t_looper")
        await trio.testing.wait_all_tasks_blocked()
        assert Looper.running == 0  # the task never runs, or ran and was cancelled
