"""Shared fixtures: a running graph and a socket node in it, and small node types for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio

import netgraph
from netgraph import Hook, Item, Message, Node, TypeRegistry


class Capture:
    """Stands in for ngctl's printer: collects what it prints, stdout and stderr apart."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []

    def __call__(self, text: str, *, err: bool = False) -> None:
        (self.err if err else self.out).extend(text.split("\n"))

    def take(self) -> tuple[list[str], list[str]]:
        out, err = self.out, self.err
        self.out, self.err = [], []
        return out, err


class Recorder(Node):
    """Records what happens to it, in order, in ``self.events``; forwards ``in`` to ``out``."""

    def constructor(self) -> None:
        self.events: list[tuple[Any, ...]] = [("constructor",)]
        self.received: list[tuple[str, Item]] = []
        self.veto: set[str] = set()
        self.veto_connect: set[str] = set()

    def newhook(self, hook: Hook) -> None:
        if hook.name in self.veto:
            raise netgraph.NetgraphError(22, f"vetoed {hook.name}")
        self.events.append(("newhook", hook.name))

    def connect(self, hook: Hook) -> None:
        if hook.name in self.veto_connect:
            raise netgraph.NetgraphError(22, f"vetoed connecting {hook.name}")
        self.events.append(("connect", hook.name))

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.received.append((hook.name, item))
        out = self.hooks.get("out")
        if hook.name == "in" and out is not None:
            self.send(out, item)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.events.append(("rcvbatch", hook.name, len(items)))
        for item in items:
            self.rcvdata(hook, item)

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        self.events.append(("rcvmsg", msg.cmd, lasthook.name if lasthook else None))
        return msg.args

    def disconnect(self, hook: Hook) -> None:
        self.events.append(("disconnect", hook.name))

    def close(self) -> None:
        self.events.append(("close", sorted(self.hooks)))

    def shutdown(self) -> None:
        self.events.append(("shutdown", sorted(self.hooks)))


class Gate(Node):
    """An I/O-like node: ``rcvdata`` waits until ``self.open`` is set, then records the item.

    ``log`` has every item and message in the order the node handled them.
    """

    dies_with_last_hook = False

    def constructor(self) -> None:
        self.open = trio.Event()
        self.entered = trio.Event()
        self.received: list[Item] = []
        self.log: list[tuple[str, Any]] = []

    async def rcvdata(self, hook: Hook, item: Item) -> None:
        self.log.append(("enter", item))
        self.entered.set()
        await self.open.wait()
        self.received.append(item)
        self.log.append(("data", item))
        out = self.hooks.get("out")
        if out is not None:
            await self.emit(out, item)

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> None:
        self.log.append(("msg", msg.cmd))


def make_types() -> TypeRegistry:
    types = TypeRegistry()
    types.register("test_recorder", Recorder)
    types.register("test_gate", Gate)
    return types


@pytest.fixture
async def graph() -> AsyncIterator[netgraph.Graph]:
    async with netgraph.open_graph(types=make_types()) as g:
        yield g


@pytest.fixture
def sock(graph: netgraph.Graph) -> netgraph.Socket:
    return graph.socket("sock")
