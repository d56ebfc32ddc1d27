"""The concurrency design of netgraph/delivery.py: one test (at least) for each point."""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import Any

import pytest
import trio

import netgraph
from netgraph import Hook, Item, Message, NetgraphError, Node, delivery
from tests.conftest import Gate, make_types

# ----------------------------------------------------------------------------- the fast path


class TaskSpy(Node):
    """Records the task its handler runs in, then forwards to ``out``."""

    def constructor(self) -> None:
        self.tasks: list[trio.lowlevel.Task] = []

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.tasks.append(trio.lowlevel.current_task())
        out = self.hooks.get("out")
        if out is not None:
            self.send(out, item)


@pytest.fixture
def spy_types() -> netgraph.TypeRegistry:
    types = make_types()
    types.register("test_spy", TaskSpy)
    return types


async def chain_of_spies(graph: netgraph.Graph, length: int) -> tuple[Node, list[TaskSpy]]:
    source = graph.make_node("test_recorder")
    spies = []
    prev, hook = source, "out"
    for _ in range(length):
        spy = graph.mkpeer(prev, "test_spy", hook, "in")
        assert isinstance(spy, TaskSpy)
        spies.append(spy)
        prev, hook = spy, "out"
    graph.mkpeer(prev, "hole", "out", "in")
    return source, spies


async def test_delivery_runs_in_the_senders_task(spy_types: netgraph.TypeRegistry) -> None:
    async with netgraph.open_graph(types=spy_types) as graph:
        source, spies = await chain_of_spies(graph, 5)
        await source.emit(source.hooks["out"], b"x")
        me = trio.lowlevel.current_task()
        assert [spy.tasks for spy in spies] == [[me]] * 5


async def test_delivery_takes_no_checkpoint(spy_types: netgraph.TypeRegistry) -> None:
    """Through a chain of plain handlers a send never checkpoints: even inside a cancelled
    scope it completes without raising Cancelled."""
    async with netgraph.open_graph(types=spy_types) as graph:
        source, spies = await chain_of_spies(graph, 10)
        with trio.CancelScope() as scope:
            scope.cancel()
            for _ in range(100):
                await source.emit(source.hooks["out"], b"x")
        assert not scope.cancelled_caught
        assert all(len(spy.tasks) == 100 for spy in spies)


async def test_deep_chains_are_deferred_not_recursed(spy_types: netgraph.TypeRegistry) -> None:
    """A chain longer than MAX_DEPTH still delivers everything, once: nested calls up to the
    limit, in the sender's task, then through the nodes' queues (as FreeBSD queues)."""
    async with netgraph.open_graph(types=spy_types) as graph:
        source, spies = await chain_of_spies(graph, delivery.MAX_DEPTH * 3)
        await source.emit(source.hooks["out"], b"x")
        await trio.testing.wait_all_tasks_blocked()
        me = trio.lowlevel.current_task()
        assert all(len(spy.tasks) == 1 for spy in spies)
        assert all(spy.tasks == [me] for spy in spies[: delivery.MAX_DEPTH - 1])
        assert all(spy.tasks != [me] for spy in spies[delivery.MAX_DEPTH :])


# ----------------------------------------------------------------------------- backpressure


async def test_sender_is_held_while_the_receiver_waits(graph: netgraph.Graph) -> None:
    sock = graph.socket("s")
    await sock.mkpeer(".", "tee", "in", "right")
    await sock.mkpeer("in", "test_gate", "left", "in")  # through a plain node, to an I/O node
    gate = graph.resolve(sock.node, "in.left")[0]
    assert isinstance(gate, Gate)
    done = trio.Event()

    async def sender() -> None:
        await sock.send_data("in", b"held")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await gate.entered.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        gate.open.set()
        await done.wait()
    assert gate.received == [b"held"]


async def test_full_queue_holds_async_senders(graph: netgraph.Graph) -> None:
    sock = graph.socket("s")
    await sock.mkpeer(".", "test_gate", "g", "in")
    gate = graph.resolve(sock.node, "g")[0]
    assert isinstance(gate, Gate)
    gate.queue_limit = 2  # type: ignore[misc]
    sent: list[int] = []

    async def sender(n: int) -> None:
        await sock.send_data("g", b"%d" % n)
        sent.append(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, 0)
        await gate.entered.wait()  # 0 is suspended in the handler, so a writer must queue
        nursery.start_soon(sock.send_msg, "g", Message(1, 1))
        await trio.testing.wait_all_tasks_blocked()
        for n in (1, 2, 3):
            nursery.start_soon(sender, n)
        await trio.testing.wait_all_tasks_blocked()
        # The writer and one item are queued; that item's sender has returned (the node took
        # it), the other two wait for room.
        assert len(gate._queue) == 2
        assert len(sent) == 1
        gate.open.set()
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(map(bytes, gate.received)) == [b"0", b"1", b"2", b"3"]
    assert sorted(sent) == [0, 1, 2, 3]


async def test_full_queue_fails_a_plain_sender_with_enobufs(graph: netgraph.Graph) -> None:
    """A plain handler cannot wait: its send to a node with a full queue fails with ENOBUFS."""
    source = graph.make_node("test_recorder")
    a = graph.mkpeer(source, "test_recorder", "out", "in")
    b = graph.mkpeer(a, "test_recorder", "out", "in")
    b.queue_limit = 1  # type: ignore[misc]
    b._queue.append((delivery.CALL, lambda: None, None, None))  # busy, with a full queue
    b._update_blocked()
    with pytest.raises(NetgraphError) as info:
        await source.emit(source.hooks["out"], b"x")
    assert info.value.errno == errno.ENOBUFS
    assert b.stats.dropped == 1


# ------------------------------------------------------------------------ the reader/writer gate


async def test_writer_waits_for_a_suspended_reader(graph: netgraph.Graph) -> None:
    sock = graph.socket("s")
    await sock.mkpeer(".", "test_gate", "g", "in")
    gate = graph.resolve(sock.node, "g")[0]
    assert isinstance(gate, Gate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sock.send_data, "g", b"reader")
        await gate.entered.wait()
        writer_done = trio.Event()

        async def writer() -> None:
            await sock.send_msg("g", Message(7, 1))
            writer_done.set()

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.log == [("enter", b"reader")]
        assert not writer_done.is_set()
        gate.open.set()
        await writer_done.wait()
    assert gate.log == [("enter", b"reader"), ("data", b"reader"), ("msg", 1)]


async def test_read_only_message_does_not_wait_for_readers(graph: netgraph.Graph) -> None:
    sock = graph.socket("s")
    await sock.mkpeer(".", "test_gate", "g", "in")
    gate = graph.resolve(sock.node, "g")[0]
    assert isinstance(gate, Gate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sock.send_data, "g", b"reader")
        await gate.entered.wait()
        info = await sock.nodeinfo("g")  # a reader: runs beside the suspended one
        assert info.type == "test_gate"
        gate.open.set()


async def test_queued_writer_holds_back_later_readers(graph: netgraph.Graph) -> None:
    """FIFO: data arriving after a queued writer is handled after it."""
    sock = graph.socket("s")
    await sock.mkpeer(".", "test_gate", "g", "in")
    gate = graph.resolve(sock.node, "g")[0]
    assert isinstance(gate, Gate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sock.send_data, "g", b"first")
        await gate.entered.wait()
        nursery.start_soon(sock.send_msg, "g", Message(7, 1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(sock.send_data, "g", b"second")
        await trio.testing.wait_all_tasks_blocked()
        gate.open.set()
    await trio.testing.wait_all_tasks_blocked()
    assert [e for e in gate.log if e[0] != "enter"] == [
        ("data", b"first"),
        ("msg", 1),
        ("data", b"second"),
    ]


class Reentrant(Node):
    """On message ``c`` in ``script`` sends message ``script[c]`` to ``target`` (a path).

    Logs ``(id, c)`` on entry and ``(id, -c)`` once its own send has returned.
    """

    log: list[tuple[int, int]] = []

    def constructor(self) -> None:
        self.target = "."
        self.script: dict[int, int] = {}

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> None:
        Reentrant.log.append((self.id, msg.cmd))
        if msg.cmd in self.script:
            self.send_msg(self.target, Message(3, self.script[msg.cmd]))
            Reentrant.log.append((self.id, -msg.cmd))


@pytest.fixture
def reentrant_types() -> netgraph.TypeRegistry:
    types = make_types()
    types.register("test_reentrant", Reentrant)
    Reentrant.log = []
    return types


async def test_writer_reentering_its_own_node_is_queued(
    reentrant_types: netgraph.TypeRegistry,
) -> None:
    async with netgraph.open_graph(types=reentrant_types) as graph:
        sock = graph.socket("s")
        await sock.mkpeer(".", "test_reentrant", "r", "in")
        node = graph.resolve(sock.node, "r")[0]
        assert isinstance(node, Reentrant)
        node.script = {1: 2}
        await sock.send_msg("r", Message(3, 1))
        await trio.testing.wait_all_tasks_blocked()
        assert Reentrant.log == [(node.id, 1), (node.id, -1), (node.id, 2)]


async def test_writer_reentering_around_a_loop_is_queued(
    reentrant_types: netgraph.TypeRegistry,
) -> None:
    """A's writer sends to B (idle: runs now); B's sends back to A (busy: queued, runs later)."""
    async with netgraph.open_graph(types=reentrant_types) as graph:
        a = graph.make_node("test_reentrant")
        b = graph.mkpeer(a, "test_reentrant", "ab", "ba")
        assert isinstance(a, Reentrant)
        assert isinstance(b, Reentrant)
        a.target, a.script = "ab", {1: 2}
        b.target, b.script = "ba", {2: 3}
        sock = graph.socket("s")
        await sock.send_msg(f"[{a.id:x}]:", Message(3, 1))
        await trio.testing.wait_all_tasks_blocked()
        assert Reentrant.log == [(a.id, 1), (b.id, 2), (b.id, -2), (a.id, -1), (a.id, 3)]


async def test_data_reentering_a_writing_node_is_queued(
    reentrant_types: netgraph.TypeRegistry,
) -> None:
    """A writer that sends data around a loop back into its own node: the data waits."""

    class Looper(Node):
        seen: list[str] = []

        def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> None:
            Looper.seen.append("writer start")
            self.send(self.hooks["a"], b"around")
            Looper.seen.append("writer end")

        def rcvdata(self, hook: Hook, item: Item) -> None:
            Looper.seen.append(f"data on {hook.name}")

    reentrant_types.register("test_looper", Looper)
    async with netgraph.open_graph(types=reentrant_types) as graph:
        sock = graph.socket("s")
        await sock.mkpeer(".", "test_looper", "l", "x")
        await sock.connect("l", ".", "a", "b")  # the looper's a to its own b
        await sock.send_msg("l", Message(9, 1))
        await trio.testing.wait_all_tasks_blocked()
        assert Looper.seen == ["writer start", "writer end", "data on b"]


# -------------------------------------------------------------------------------------- loops


async def test_closed_loop_circulates_without_starving_others() -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("s")
        await sock.mkpeer(".", "hub", "h1", "up")
        await sock.name_node("h1", "hub1")
        await sock.mkpeer("hub1:", "hub", "loop_a", "loop_a")
        await sock.name_node("hub1:loop_a", "hub2")
        await sock.connect("hub1:", "hub2:", "loop_b", "loop_b")
        await sock.connect(".", "hub2:", "h2", "down")
        await sock.send_data("h1", b"round and round")
        # The loop goes on in the hubs' queue runners; this task still gets to run.
        ticks = 0
        for _ in range(50):
            await trio.lowlevel.checkpoint()
            ticks += 1
        got = [await sock.recv_data() for _ in range(100)]
        assert ticks == 50
        assert all(item == b"round and round" for _, item in got)
        assert {hook for hook, _ in got} == {"h1", "h2"}
        await sock.shutdown("hub1:")
        await sock.shutdown("hub2:")
        await trio.testing.wait_all_tasks_blocked()
        leftover = sock.pending_data()
        await trio.testing.wait_all_tasks_blocked()
        assert sock.pending_data() == leftover
        assert list(graph.nodes) == [sock.id]


# ------------------------------------------------------------------------------------- errors


class Faulty(Node):
    def rcvdata(self, hook: Hook, item: Item) -> None:
        raise ValueError("a bug in the node type")

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        raise KeyError("another bug")


async def test_a_raising_handler_gives_eio_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    types = make_types()
    types.register("test_faulty", Faulty)
    async with netgraph.open_graph(types=types) as graph:
        sock = graph.socket("s")
        await sock.mkpeer(".", "tee", "t", "right")  # the fault is one hop away
        await sock.mkpeer("t", "test_faulty", "left", "in")
        await sock.name_node("t.left", "bad")
        with caplog.at_level(logging.ERROR, logger="netgraph"):
            with pytest.raises(NetgraphError) as info:
                await sock.send_data("t", b"x")
            assert info.value.errno == errno.EIO
            assert "bad:" in str(info.value)
            with pytest.raises(NetgraphError) as info:
                await sock.send_msg("bad:", Message(1, 1))
            assert info.value.errno == errno.EIO
        assert any("bad:" in r.getMessage() and r.exc_info for r in caplog.records)
        # The graph goes on.
        await sock.mkpeer(".", "echo", "e", "x")
        await sock.send_data("e", b"still here")
        assert await sock.recv_data() == ("e", b"still here")
        assert graph.find("bad").stats.errors == 2


async def test_deferred_item_for_a_removed_hook_fails_its_sender(graph: netgraph.Graph) -> None:
    """An item on its way to a coroutine handler whose hook goes first: ENOTCONN, not lost."""

    class Remover(Node):
        def rcvdata(self, hook: Hook, item: Item) -> None:
            out = self.hooks["out"]
            self.send(out, item)  # deferred: the gate is a coroutine handler
            self.graph.destroy_hook(out)

    graph.types.register("test_remover", Remover)
    source = graph.make_node("test_recorder")
    remover = graph.mkpeer(source, "test_remover", "out", "in")
    graph.mkpeer(remover, "test_gate", "out", "in")
    graph.mkpeer(remover, "hole", "keep", "in")  # so the remover does not die with "out"
    with pytest.raises(NetgraphError) as info:
        await source.emit(source.hooks["out"], b"x")
    assert info.value.errno == errno.ENOTCONN


async def test_send_outside_a_handler_is_a_clear_error(graph: netgraph.Graph) -> None:
    a = graph.make_node("test_recorder")
    graph.mkpeer(a, "hole", "out", "in")
    with pytest.raises(RuntimeError, match="emit"):
        a.send(a.hooks["out"], b"x")


# -------------------------------------------------------------------------------- closing down


class Worker(Node):
    """Runs a task until shut down; remembers that its task ended."""

    ended: list[int] = []

    def constructor(self) -> None:
        self.start_task(self.work)

    async def work(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            Worker.ended.append(self.id)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        pass


async def test_closing_the_graph_ends_every_node_and_task() -> None:
    types = make_types()
    types.register("test_worker", Worker)
    Worker.ended = []
    async with netgraph.open_graph(types=types) as graph:
        sock = graph.socket("s")
        for n in range(3):
            await sock.mkpeer(".", "test_worker", f"w{n}", "in")
        await sock.mkpeer(".", "test_gate", "g", "in")
        nodes = list(graph.nodes.values())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.send_data, "g", b"stuck in a handler")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert sorted(Worker.ended) == [2, 3, 4]
    assert not any(n.is_valid for n in nodes)
    assert graph.nodes == {}


async def test_graph_start_runs_a_service_with_task_status() -> None:
    async def service(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started("ready")
        await trio.sleep_forever()

    async with netgraph.open_graph() as graph:
        assert await graph.start(service) == "ready"
    # leaving the block ended the service (else this test would never finish)


async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    with pytest.raises(KeyError):
        async with netgraph.open_graph():
            raise KeyError("mine")


async def test_shutting_a_node_down_ends_its_tasks(graph: netgraph.Graph) -> None:
    graph.types.register("test_worker", Worker)
    Worker.ended = []
    node = graph.make_node("test_worker")
    await trio.testing.wait_all_tasks_blocked()
    graph.rmnode(node)
    await trio.testing.wait_all_tasks_blocked()
    assert Worker.ended == [node.id]
