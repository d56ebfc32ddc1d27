"""One item through a chain of 10 forwarding nodes: the engine against plain awaited calls.

Three contenders, interleaved round by round in one run so that machine noise hits each alike:

* plain   - the same chain written as objects whose async ``handle`` awaits the next one's;
* engine  - 10 netgraph nodes linked hook to hook, one item per send (``Node.emit``);
* batched - the same nodes, 64 items per send (``emit_batch``), cost counted per item.

Prints the median ns per hop of each and the ratios. Targets (issue 2): engine <= 2x plain per
hop; batched <= 10 ns per item per hop.

    .venv/bin/python bench/hops.py [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Sequence

import trio

from netgraph import Hook, Item, Node, TypeRegistry, open_graph

HOPS = int(os.environ.get("HOPS", "10"))
BATCH = 64


class Forward(Node):
    """Forwards everything from ``in`` to ``out``; the last node of the chain has no ``out``."""

    def connect(self, hook: Hook) -> None:
        if hook.name == "out":
            self.out: Hook | None = hook

    def constructor(self) -> None:
        self.out = None
        self.count = 0

    def rcvdata(self, hook: Hook, item: Item) -> None:
        out = self.out
        if out is not None:
            self.send(out, item)
        else:
            self.count += 1

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        out = self.out
        if out is not None:
            self.send_batch(out, items)
        else:
            self.count += len(items)


class Plain:
    def __init__(self, nxt: Plain | None) -> None:
        self.nxt = nxt
        self.count = 0

    async def handle(self, item: bytes) -> None:
        nxt = self.nxt
        if nxt is not None:
            await nxt.handle(item)
        else:
            self.count += 1


async def main(rounds: int, sends: int) -> None:
    types = TypeRegistry()
    types.register("bench_forward", Forward)
    plain: Plain | None = None
    for _ in range(HOPS):
        plain = Plain(plain)
    assert plain is not None

    async with open_graph(types=types) as graph:
        source = graph.make_node("bench_forward")
        nodes = [graph.make_node("bench_forward") for _ in range(HOPS)]
        graph.connect(source, nodes[0].path, "out", "in")
        for a, b in itertools.pairwise(nodes):
            graph.connect(a, b.path, "out", "in")
        hook = source.hooks["out"]
        item = b"x" * 64
        batch = [item] * BATCH
        results: dict[str, list[float]] = {"plain": [], "engine": [], "batched": []}

        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            for _ in range(sends):
                await plain.handle(item)
            t1 = time.perf_counter_ns()
            for _ in range(sends):
                await source.emit(hook, item)
            t2 = time.perf_counter_ns()
            for _ in range(sends // BATCH):
                await source.emit_batch(hook, batch)
            t3 = time.perf_counter_ns()
            results["plain"].append((t1 - t0) / sends / HOPS)
            results["engine"].append((t2 - t1) / sends / HOPS)
            results["batched"].append((t3 - t2) / ((sends // BATCH) * BATCH) / HOPS)

        last = nodes[-1]
        assert isinstance(last, Forward)
        expected = rounds * (sends + (sends // BATCH) * BATCH)
        assert last.count == expected, (last.count, expected)

    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"chain of {HOPS} nodes, {rounds} interleaved rounds of {sends} sends; median ns/hop")
    print(f"  plain awaited chain   {med['plain']:8.1f} ns per hop")
    print(f"  engine, one item      {med['engine']:8.1f} ns per hop")
    print(f"  engine, batch of {BATCH}   {med['batched']:8.2f} ns per item per hop")
    ratio = med["engine"] / med["plain"]
    print(f"  engine / plain        {ratio:8.2f}x   (target <= 2.00x)")
    print(f"  batched per item      {med['batched']:8.2f} ns  (target <= 10 ns)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sends", type=int, default=20000)
    args = parser.parse_args()
    trio.run(main, args.rounds, args.sends)
