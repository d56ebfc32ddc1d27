"""Bulk transfer through the sans-IO TCP core: two connections joined in memory, no trio.

Contenders, interleaved round by round in one run so that machine noise hits each alike:

* ``floor``     - what any Python TCP must do per data segment and costs nothing to decide: pack
  the header (with the timestamps option), checksum it with the payload, unpack it, verify the
  checksum and append the payload to a receive buffer (tcp.md section 4's floor), plus the same
  for one pure ACK per two segments; at MSS 1448 (1460 less the timestamps option);
* ``core-1460`` - a client and a server :class:`~nodes.tcp.connection.Connection` at MTU 1500
  (1448 bytes of payload per segment with timestamps), the sender's segments handed to the
  receiver as one batch, the receiver's ACKs back as another, the application writing into the
  send buffer and reading out of the receive buffer as it goes;
* ``core-64k``  - the same at MTU 65535 (MSS 65495, what one TSO/GRO step of a TUN carries);
* ``core-64k-offload`` - the same with the checksums left to the device (``tx_checksum_offload``
  on the sender, ``checksum_ok`` on the receiver), as a TUN with IFF_VNET_HDR allows: what the
  TCP logic itself costs.

Each round moves ``--megabytes`` (default 64) per contender. Prints, per contender, the median
MB/s (wall), CPU seconds per MB, and microseconds per data segment, then the ratio of core-1460
to the floor. Clock: ``time.perf_counter`` passed in as ``now``, so delayed-ACK timers run as
they would.

    .venv/bin/python bench/tcp_core.py [--rounds N] [--megabytes M]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from nodes.tcp.connection import Connection, Listener
from nodes.tcp.segment import (
    ACK,
    HDR_TS,
    MASK,
    OFF32,
    PSH,
    TS_WORD,
    TS_WORD_SUM,
    pseudo_sum,
    words,
)
from nodes.tcp.tcb import Config

CLIENT = ("192.0.2.1", 40000)
SERVER = ("192.0.2.2", 80)
CHUNK = 256 * 1024


def core_transfer(
    total: int, mtu: int, buffers: int, offload: bool = False
) -> tuple[float, float, int]:
    """Move ``total`` bytes client to server; (wall s, cpu s, data segments)."""
    config = Config(mtu=mtu, sndbuf=buffers, rcvbuf=buffers, tx_checksum_offload=offload)
    clock = time.perf_counter
    a = Connection.client(CLIENT, SERVER, clock(), config, secret=b"bench-a")
    listener = Listener(config, secret=b"bench-b")
    (syn,) = a.segments_to_send(clock())
    b, _ = listener.receive(syn, SERVER, CLIENT, clock(), checksum_ok=offload)
    assert b is not None
    for s in b.segments_to_send(clock()):
        a.receive(s, clock(), checksum_ok=offload)
    for s in a.segments_to_send(clock()):
        b.receive(s, clock(), checksum_ok=offload)
    a.next_events()
    b.next_events()
    block = os.urandom(CHUNK)
    view = memoryview(block)
    offered = 0
    received = 0
    segments = 0
    pos = 0
    a_send, a_seg, a_recv = a.send, a.segments_to_send, a.receive
    b_seg, b_recv, b_read = b.segments_to_send, b.receive, b.read
    wall0 = clock()
    cpu0 = time.process_time()
    while received < total:
        while offered < total:
            n = a_send(view[pos : pos + min(CHUNK - pos, total - offered)])
            if not n:
                break
            offered += n
            pos = (pos + n) % CHUNK
        now = clock()
        out = a_seg(now)
        segments += len(out)
        for s in out:
            b_recv(s, now, checksum_ok=offload)
        received += len(b_read())
        now = clock()
        deadline = b.next_deadline()
        if deadline is not None and deadline <= now:
            b.handle_timer(now)
        for s in b_seg(now):
            a_recv(s, now, checksum_ok=offload)
        deadline = a.next_deadline()
        if deadline is not None and deadline <= now:
            a.handle_timer(now)
        if not out and received < total:
            # Nothing moved (a delayed ACK pending): let its timer come due.
            deadline = b.next_deadline()
            while deadline is not None and clock() < deadline:
                pass
    wall = clock() - wall0
    cpu = time.process_time() - cpu0
    assert a.tcb.stats.retransmits == 0, a.tcb.stats
    return wall, cpu, segments


def floor_transfer(total: int, mss: int = 1448) -> tuple[float, float, int]:
    """Pack, checksum, unpack, verify and buffer every segment, and one ACK per two."""
    pseudo = pseudo_sum(CLIENT[0], SERVER[0])
    payload = os.urandom(mss)
    pack, unpack = HDR_TS.pack, HDR_TS.unpack_from
    rcv = bytearray()
    seq = 1
    segments = 0
    clock = time.perf_counter
    wall0 = clock()
    cpu0 = time.process_time()
    moved = 0
    while moved < total:
        # Build a data segment: the checksum summed over the fields and the payload.
        base = pseudo + 32 + mss + 40000 + 80 + seq + 7 + OFF32 + (ACK | PSH) + 512 + TS_WORD_SUM
        v = words(payload) + base + 12345 + 678
        r = v % 0xFFFF
        seg = (
            pack(
                40000,
                80,
                seq,
                7,
                OFF32 | ACK | PSH,
                512,
                0xFFFF - r if r else 0,
                0,
                TS_WORD,
                12345,
                678,
            )
            + payload
        )
        # Receive it: verify, unpack, append.
        n = len(seg)
        if (words(seg) + pseudo + n) % 0xFFFF:
            raise AssertionError("checksum")
        fields = unpack(seg)
        rcv += memoryview(seg)[32:]
        seq = (fields[2] + n - 32) & MASK
        segments += 1
        moved += mss
        if segments & 1 == 0:
            base = pseudo + 32 + 80 + 40000 + 7 + seq + OFF32 + ACK + 512 + TS_WORD_SUM
            r = (base + 678 + 12345) % 0xFFFF
            ack = pack(
                80, 40000, 7, seq, OFF32 | ACK, 512, 0xFFFF - r if r else 0, 0, TS_WORD, 678, 12345
            )
            if (words(ack) + pseudo + 32) % 0xFFFF:
                raise AssertionError("checksum")
            unpack(ack)
        if len(rcv) > 1 << 20:
            rcv.clear()
    return clock() - wall0, time.process_time() - cpu0, segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=64)
    args = parser.parse_args()
    total = args.megabytes * 1_000_000
    contenders: dict[str, Callable[[], tuple[float, float, int]]] = {
        "floor": lambda: floor_transfer(total),
        "core-1460": lambda: core_transfer(total, 1500, 1 << 20),
        "core-64k": lambda: core_transfer(total, 65535, 8 << 20),
        "core-64k-offload": lambda: core_transfer(total, 65535, 8 << 20, offload=True),
    }
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            results[name].append(run())
    print(f"{args.megabytes} MB per transfer, {args.rounds} rounds, medians:")
    medians: dict[str, float] = {}
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        segments = statistics.median(r[2] for r in runs)
        medians[name] = wall
        print(
            f"  {name:16s} {args.megabytes / wall:8.1f} MB/s  {cpu / args.megabytes * 1e3:7.2f} ms "
            f"CPU/MB  {wall / segments * 1e6:7.2f} us/segment ({segments:.0f} segments)"
        )
    print(f"  core-1460 / floor: {medians['core-1460'] / medians['floor']:.2f}x the time")


if __name__ == "__main__":
    main()
