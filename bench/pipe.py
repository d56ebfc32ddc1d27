"""Items through a pipe node, against the same path through a trivial forwarding node.

Four contenders, interleaved round by round in one run so that machine noise hits each alike;
each sends one 64-byte item at a time (``Node.emit``) into a node whose other hook leads to a
counting sink:

* forward  - a node that only forwards (the floor: what any node in between costs);
* pipe     - an unconfigured pipe (items pass straight through, synchronously);
* lossy    - a pipe with loss_ppm=1000 and no delay (each item through the model, still
  synchronous);
* delayed  - a pipe with a 1 ms delay (each item queued, released by the pipe's timer task in
  batches); a round ends when the sink has them all.

Prints the median items per second of each and the ratios to ``forward``.

    .venv/bin/python bench/pipe.py [--rounds N] [--sends N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import trio

from netgraph import Hook, Item, Node, TypeRegistry, open_graph


class Forward(Node):
    """Forwards ``in`` to ``out``."""

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.send(self.hooks["out"], item)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.send_batch(self.hooks["out"], items)


class Sink(Node):
    """Counts what arrives; ``done`` is set once ``target`` items have."""

    def constructor(self) -> None:
        self.count = 0
        self.target = 0
        self.done = trio.Event()

    def expect(self, more: int) -> trio.Event:
        self.target = self.count + more
        self.done = trio.Event()
        return self.done

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.count += len(items)
        if self.count >= self.target:
            self.done.set()


class Source(Node):
    """Where the items come from (its ``out`` hook)."""


CONTENDERS = ("forward", "pipe", "lossy", "delayed")
SETUP = {
    "forward": ("bench_forward", "in", "out", None),
    "pipe": ("pipe", "upper", "lower", None),
    "lossy": ("pipe", "upper", "lower", "{ downstream={ loss_ppm=1000 seed=1 } }"),
    "delayed": ("pipe", "upper", "lower", "{ downstream={ delay=1000 } }"),
}


async def main(rounds: int, sends: int) -> None:
    types = TypeRegistry()
    types.register("bench_forward", Forward)
    types.register("bench_sink", Sink)
    types.register("bench_source", Source)
    async with open_graph(types=types) as graph:
        sock = graph.socket("bench")
        paths: dict[str, tuple[Source, Sink]] = {}
        for name in CONTENDERS:
            type_name, inner, outer, cfg = SETUP[name]
            source, middle, sink = (
                graph.make_node("bench_source"),
                graph.make_node(type_name),
                graph.make_node("bench_sink"),
            )
            graph.name_node(middle, name)
            graph.connect(source, f"{name}:", "out", inner)
            graph.connect(sink, f"{name}:", "in", outer)
            if cfg is not None:
                await sock.send_ascii(f"{name}:", f"setcfg {cfg}")
            assert isinstance(source, Source)
            assert isinstance(sink, Sink)
            paths[name] = (source, sink)

        item = b"x" * 64
        results: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        for _ in range(rounds):
            for name in CONTENDERS:
                source, sink = paths[name]
                hook = source.hooks["out"]
                done = sink.expect(sends)
                t0 = time.perf_counter_ns()
                for _ in range(sends):
                    await source.emit(hook, item)
                if name == "delayed":
                    await done.wait()
                t1 = time.perf_counter_ns()
                results[name].append(sends / ((t1 - t0) / 1e9))

    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"{rounds} interleaved rounds of {sends} items of 64 bytes; median items per second")
    for name in CONTENDERS:
        ratio = med["forward"] / med[name]
        print(f"  {name:8s} {med[name]:12,.0f} /s   {ratio:5.2f}x the time of forward")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sends", type=int, default=20000)
    args = parser.parse_args()
    trio.run(main, args.rounds, args.sends)
