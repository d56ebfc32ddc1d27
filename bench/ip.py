"""IPv4 input through the ip node against a minimal hand-written parse of the same packets.

Two contenders, interleaved round by round in one run so that machine noise hits each alike:

* struct - a plain loop over the packets: ``struct.unpack_from`` of the header, version and
  header length, total length, fragment bits, header checksum (``int.from_bytes % 0xFFFF``),
  destination ours, source not multicast or broadcast, then demultiplexed by protocol into lists
  of (payload, source, destination, TTL);
* ip     - an ip node with hooks ``tcp`` and ``udp`` to a counting sink, fed batches of the same
  packets by a source node (``emit_batch``): validation, demultiplexing, a tagged item per
  packet, delivery to the sink.

The packets: 256 IPv4 packets from 16 sources to one address, half TCP segments of 20 bytes
(bare ACKs), half UDP datagrams of 1000 bytes. Prints median ns per packet, packets per second
and the ratio. Targets: ip >= 200k packets/s and ip <= 2x struct.

For information, the other direction too: the same payloads sent down the node's ``udp`` hook,
tagged with a destination, routed, given a header and sent out of ``link0`` to a sink.

    .venv/bin/python bench/ip.py [--rounds N] [--batches N]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

import trio

from netgraph import Hook, Item, Node, TypeRegistry, open_graph, tag
from nodes.ip.header import header4

BATCH = 256
OURS = IPv4Address("192.0.2.1")
HEADER = struct.Struct("!BBHHHBBHII")


class Source(Node):
    """Where the packets come from (its hook ``out`` goes to the ip node's ``link0``); counts
    what the node sends back out of ``link0``."""

    def constructor(self) -> None:
        self.count = 0

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.count += len(items)


class Sink(Node):
    """Counts what the ip node delivers (hooks tcp, udp); its hook ``top`` is ip's ``17``."""

    def constructor(self) -> None:
        self.count = 0

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.count += len(items)


def make_packets() -> list[bytes]:
    packets = []
    for i in range(BATCH):
        src = int(IPv4Address("198.51.100.1")) + i % 16
        if i % 2:
            proto, payload = 6, bytes(range(20))
        else:
            proto, payload = 17, bytes(1000)
        head = header4(0, 20 + len(payload), i, 0x4000, 64, proto, src, int(OURS))
        packets.append(head + payload)
    return packets


def parse_struct(
    packets: Sequence[bytes], ours: frozenset[int]
) -> dict[int, list[tuple[bytes, int, int, int]]]:
    """The minimal hand-written IPv4 input: parse, validate, demultiplex."""
    out: dict[int, list[tuple[bytes, int, int, int]]] = {6: [], 17: []}
    unpack = HEADER.unpack_from
    for packet in packets:
        vhl, _tos, tlen, _ident, frag, ttl, proto, _sum, src, dst = unpack(packet)
        if (
            vhl != 0x45
            or tlen != len(packet)
            or frag & 0x3FFF
            or int.from_bytes(packet[:20], "big") % 0xFFFF
            or dst not in ours
            or src >> 28 >= 14
        ):
            continue
        items = out.get(proto)
        if items is not None:
            items.append((packet[20:], src, dst, ttl))
    return out


async def main(rounds: int, batches: int) -> None:
    types = TypeRegistry()
    types.register("bench_source", Source)
    types.register("bench_sink", Sink)
    packets = make_packets()
    ours = frozenset([int(OURS)])
    async with open_graph(types=types) as graph:
        source = graph.make_node("bench_source")
        sink = graph.make_node("bench_sink")
        ip = graph.make_node("ip")
        graph.connect(source, ip.path, "out", "link0")
        graph.connect(sink, ip.path, "top", "17")
        graph.connect(sink, ip.path, "tcp", "tcp")
        assert isinstance(sink, Sink)
        assert isinstance(source, Source)
        hook = source.hooks["out"]
        top = sink.hooks["top"]
        peer = IPv4Address("192.0.2.2")
        down = [tag(packet[20:], dst=peer) for packet in packets]
        await graph.socket("ctl").send_ascii(ip.path, f'addaddr {{ addr={OURS}/24 hook="link0" }}')
        await source.emit_batch(hook, packets)  # warm up: sources seen, caches filled
        await sink.emit_batch(top, down)
        assert (sink.count, source.count) == (BATCH, BATCH)
        sink.count = 0
        parsed = parse_struct(packets, ours)
        assert sum(map(len, parsed.values())) == BATCH
        results: dict[str, list[float]] = {"struct": [], "ip": [], "send": []}
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            for _ in range(batches):
                parse_struct(packets, ours)
            t1 = time.perf_counter_ns()
            for _ in range(batches):
                await source.emit_batch(hook, packets)
            t2 = time.perf_counter_ns()
            for _ in range(batches):
                await sink.emit_batch(top, down)
            t3 = time.perf_counter_ns()
            results["struct"].append((t1 - t0) / (batches * BATCH))
            results["ip"].append((t2 - t1) / (batches * BATCH))
            results["send"].append((t3 - t2) / (batches * BATCH))
        assert sink.count == rounds * batches * BATCH, sink.count
        assert source.count == (rounds * batches + 1) * BATCH, source.count

    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"IPv4 input, {rounds} interleaved rounds of {batches} batches of {BATCH} packets")
    print(
        f"  struct parse   {med['struct']:8.1f} ns/packet  {1e9 / med['struct']:10,.0f} packets/s"
    )
    print(f"  ip node        {med['ip']:8.1f} ns/packet  {1e9 / med['ip']:10,.0f} packets/s")
    ratio = med["ip"] / med["struct"]
    print(f"  ip / struct    {ratio:8.2f}x   (target <= 2.00x; ip >= 200,000 packets/s)")
    print(f"  ip sending     {med['send']:8.1f} ns/packet  {1e9 / med['send']:10,.0f} packets/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    trio.run(main, args.rounds, args.batches)
