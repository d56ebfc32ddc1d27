"""Bulk TCP transfer through the tcp node: MB/s and CPU seconds per MB, in-graph and with Linux.

Contenders, interleaved round by round in one run (so machine noise hits each alike), each
moving ``--megabytes`` (default 32) through a fresh connection per round, application to
application through the stream face (:class:`~nodes.tcp.stream.TcpStream`, ``--chunk``-byte
writes, default 64 KiB):

* ``graph-1460``   - in-graph: [tcp A] -- [ip A] link0 --- link0 [ip B] -- [tcp B], the ip
  nodes linked directly, link MTU 1500 (``setmtu``): MSS 1460 (1448 of payload with timestamps);
* ``graph-64k``    - the same at link MTU 65535: MSS 65495, what one TSO/GRO step of a TUN
  carries; send and receive buffers 4 MiB (``setopt``). The passive side's MSS comes from the
  tcp node's default channel configuration (MTU 1500, no message sets it), so the bench sets
  that field on node B directly;
* ``ours->linux``  - our sender, through an iface (TUN) node moved into a namespace of the
  bench's own, to a kernel receiver there (a helper process: this file with ``--helper``);
* ``linux->ours``  - the kernel helper sending, our stack receiving, same path;
* ``linux->linux`` - reference: a kernel client (helper process) to the kernel helper, over
  loopback inside the namespace; CPU is both helper processes' (the client's and the server's
  share for that connection).

Each round (``--rounds``, default 5) runs every contender once, after one unmeasured warm-up
each. Our CPU is this process's ``time.process_time`` over the transfer (kernel work done in
this process's system calls included; the kernel helper's own CPU is not ours). Prints medians
(and the range), CPU s/MB, CPU microseconds per data segment and data segments per MB (from the
tcp node's counters: a check that the MSS is what it should be), and the ratios to the targets
of issue 8: >= 40 MB/s in-graph at MSS 1460,
>= 30 MB/s each way against Linux; and to PyTCP 2.7.10 (0.9 MB/s sending, 0.5 MB/s receiving
against Linux over TAP). ``--profile`` runs one graph-1460 transfer under cProfile and prints
where the time goes. Needs root for the namespace and the TUN device (the in-graph contenders
run without: ``--graph-only``). ``--quick``: 8 MB, 2 rounds. A full run takes about 15 s here.

    .venv/bin/python bench/tcp.py [--quick] [--rounds N] [--megabytes M] [--chunk B]
                                  [--graph-only] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import Final

import attrs
import trio

import netgraph
from nodes.iface import IFACE_COOKIE, NGM_IFACE_GET_IFNAME
from nodes.tcp.messages import (
    NGM_TCP_CONNECT,
    NGM_TCP_GETCLRSTATS,
    NGM_TCP_GETSTATS,
    TCP_COOKIE,
    TCPC_OK,
    TcpStats,
    TcpUser,
)
from nodes.tcp.node import TcpNode
from nodes.tcp.stream import TcpCallError, TcpStream, open_tcp_listener

MB: Final = 1 << 20
TARGET_GRAPH: Final = 40.0  # MB/s, in-graph at MSS 1460
TARGET_LINUX: Final = 30.0  # MB/s, each way against Linux
PYTCP: Final = {"ours->linux": 0.9, "linux->ours": 0.5}  # MB/s, PyTCP 2.7.10 over TAP
KERNEL: Final = "192.0.2.1"  # the kernel, in the bench's namespace
OURS: Final = "192.0.2.2"  # the ip node on the TUN interface
HELPER_PORT: Final = 5001
BIG_BUFFER: Final = 4 * MB

# ------------------------------------------------------------- the kernel helper (its own process)

_HEAD: Final = struct.Struct("!cQ")  # b"R": I send, you count; b"S" + size: send me size bytes


def helper_serve(port: int) -> None:
    """A blocking kernel server, run inside the namespace: one connection at a time."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", port))
    listener.listen(8)
    buf = bytearray(MB)
    payload = memoryview(os.urandom(MB))
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while len(head) < _HEAD.size:
                more = conn.recv(_HEAD.size - len(head))
                if not more:
                    break
                head += more
            if len(head) < _HEAD.size:
                continue
            mode, size = _HEAD.unpack(head)
            cpu = time.process_time()
            if mode == b"R":
                got = 0
                while n := conn.recv_into(buf):
                    got += n
                conn.sendall(f"{got} {time.process_time() - cpu:.6f}".encode())
            elif mode == b"S":
                left = size
                while left:
                    left -= conn.send(payload[: min(left, MB)])
                conn.shutdown(socket.SHUT_WR)
                while conn.recv_into(buf):
                    pass


def helper_client(host: str, port: int, size: int) -> None:
    """Send ``size`` bytes to the helper server; print seconds, our CPU and the server's."""
    payload = memoryview(os.urandom(MB))
    with socket.create_connection((host, port)) as conn:
        start, cpu = time.perf_counter(), time.process_time()
        conn.sendall(_HEAD.pack(b"R", size))
        left = size
        while left:
            left -= conn.send(payload[: min(left, MB)])
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while more := conn.recv(100):
            reply += more
        elapsed, mine = time.perf_counter() - start, time.process_time() - cpu
    got, server_cpu = reply.split()
    assert int(got) == size, (got, size)
    print(f"{elapsed:.6f} {mine + float(server_cpu):.6f}")


# ---------------------------------------------------------------------------- measurements


@attrs.frozen
class Sample:
    seconds: float
    cpu: float  # seconds of CPU, ours or (for linux->linux) the helpers'
    segments: int = 0  # data-carrying direction's segments, as our tcp node counted them


async def clear_stats(sock: netgraph.Socket, tcp: str) -> None:
    await sock.request(tcp, TCP_COOKIE, NGM_TCP_GETCLRSTATS, cmdstr="getclrstats")


async def tcp_stats(sock: netgraph.Socket, tcp: str) -> TcpStats:
    reply = await sock.request(tcp, TCP_COOKIE, NGM_TCP_GETSTATS, cmdstr="getstats")
    assert isinstance(reply.args, TcpStats)
    return reply.args


async def measured(fn: Callable[[], Awaitable[None]]) -> Sample:
    start, cpu = time.perf_counter(), time.process_time()
    await fn()
    return Sample(time.perf_counter() - start, time.process_time() - cpu)


def payload_views(size: int, chunk: int) -> list[memoryview]:
    block = memoryview(os.urandom(chunk))
    views = [block] * (size // chunk)
    if size % chunk:
        views.append(block[: size % chunk])
    return views


async def send_stream(stream: TcpStream, views: list[memoryview]) -> None:
    for view in views:
        await stream.send_all(view)
    await stream.send_eof()


async def drain_stream(stream: TcpStream) -> int:
    got = 0
    while data := await stream.receive_some():
        got += len(data)
    return got


async def open_stream(
    sock: netgraph.Socket, tcp: str, faddr: str, fport: int, options: dict[str, int]
) -> TcpStream:
    """``open_tcp_stream``, with channel options set before the call is placed (so that the
    buffers are known when the window scale is chosen)."""
    own = sock.node.graph.socket()
    channel = f"b{own.id:x}"
    await own.connect(".", tcp, "tcp", channel)
    for name, value in options.items():
        await own.send_ascii(tcp, f'setopt {{ channel="{channel}" name="{name}" value={value} }}')
    args = TcpUser(0, channel, 0, fport, None, ip_address(faddr), 0)
    reply = await own.request(tcp, TCP_COOKIE, NGM_TCP_CONNECT, args, cmdstr="connect")
    if reply.args.code != TCPC_OK:
        await own.close()
        raise TcpCallError(reply.args.code, reply.args.param, f"call to {faddr}: refused")
    return TcpStream(own, "tcp", reply.args)


class InGraph:
    """Two hosts in the graph: [tcp a] -- [ip a] link0 --- link0 [ip b] -- [tcp b]."""

    def __init__(self, name: str, mtu: int, options: dict[str, int]) -> None:
        self.name = name
        self.mtu = mtu
        self.options = options
        self.port = 0

    async def build(self, graph: netgraph.Graph) -> None:
        sock = self.sock = graph.socket()
        a, b = f"{self.name}a", f"{self.name}b"
        for host in (a, b):
            await sock.mknode("ip", f"ip{host}")
            await sock.mknode("tcp", f"tcp{host}")
            await sock.connect(f"ip{host}:", f"tcp{host}:", "tcp", "ip")
            await sock.send_ascii(f"ip{host}:", f'setmtu {{ hook="link0" mtu={self.mtu} }}')
        await sock.connect(f"ip{a}:", f"ip{b}:", "link0", "link0")
        await sock.send_ascii(f"ip{a}:", 'addaddr { addr=198.51.100.1/24 hook="link0" }')
        await sock.send_ascii(f"ip{b}:", 'addaddr { addr=198.51.100.2/24 hook="link0" }')
        server = graph.find(f"tcp{b}")
        assert isinstance(server, TcpNode)
        # No message sets the MTU a passive open announces its MSS from (see the docstring).
        server.default_config = attrs.evolve(server.default_config, mtu=self.mtu)
        self.tcp_a = f"tcp{a}:"
        self.listener = await open_tcp_listener(graph, f"tcp{b}:", 80)
        for name, value in self.options.items():
            await sock.send_ascii(
                f"tcp{b}:",
                f'setopt {{ channel="{self.listener.info.channel}" name="{name}" value={value} }}',
            )

    async def run(self, size: int, chunk: int) -> Sample:
        views = payload_views(size, chunk)
        client = await open_stream(self.sock, self.tcp_a, "198.51.100.2", 80, self.options)
        server = await self.listener.accept()
        await clear_stats(self.sock, self.tcp_a)
        got: list[int] = []

        async def transfer() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_stream, client, views)
                got.append(await drain_stream(server))

        sample = await measured(transfer)
        segments = (await tcp_stats(self.sock, self.tcp_a)).segs_out
        assert got == [size], (got, size)
        await client.aclose()
        await server.aclose()
        return attrs.evolve(sample, segments=segments)


class OverTun:
    """Our stack on a TUN interface in the bench's namespace; the kernel helper there."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    async def build(self, graph: netgraph.Graph) -> None:
        sock = self.sock = graph.socket()
        await sock.mknode("ip", "iptun")
        await sock.mknode("tcp", "tcptun")
        await sock.connect("iptun:", "tcptun:", "tcp", "ip")
        await sock.mkpeer("iptun:", "iface", "link0", "inet")
        reply = await sock.request("iptun:link0", IFACE_COOKIE, NGM_IFACE_GET_IFNAME)
        ifname = str(reply.args)
        await sock.send_ascii("iptun:", f'addaddr {{ addr={OURS}/24 hook="link0" }}')
        for argv in (
            ["ip", "link", "set", "dev", ifname, "netns", self.ns],
            ["ip", "-n", self.ns, "addr", "add", f"{KERNEL}/24", "dev", ifname],
            ["ip", "-n", self.ns, "link", "set", "dev", ifname, "up"],
        ):
            await trio.run_process(argv)

    async def send(self, size: int, chunk: int) -> Sample:
        """ours->linux: until the kernel has counted every byte."""
        views = payload_views(size, chunk)
        stream = await open_stream(self.sock, "tcptun:", KERNEL, HELPER_PORT, {})
        await clear_stats(self.sock, "tcptun:")
        reply: list[bytes] = []

        async def transfer() -> None:
            await stream.send_all(_HEAD.pack(b"R", size))
            await send_stream(stream, views)
            while data := await stream.receive_some():
                reply.append(data)

        sample = await measured(transfer)
        segments = (await tcp_stats(self.sock, "tcptun:")).segs_out
        await stream.aclose()
        assert int(b"".join(reply).split()[0]) == size, reply
        return attrs.evolve(sample, segments=segments)

    async def receive(self, size: int, chunk: int) -> Sample:
        """linux->ours: until our receiver has the last byte."""
        stream = await open_stream(self.sock, "tcptun:", KERNEL, HELPER_PORT, {})
        await clear_stats(self.sock, "tcptun:")
        got: list[int] = []

        async def transfer() -> None:
            await stream.send_all(_HEAD.pack(b"S", size))
            got.append(await drain_stream(stream))

        sample = await measured(transfer)
        segments = (await tcp_stats(self.sock, "tcptun:")).segs_in
        await stream.send_eof()
        await stream.aclose()
        assert got == [size], (got, size)
        return attrs.evolve(sample, segments=segments)

    async def kernel(self, size: int, chunk: int) -> Sample:
        """linux->linux over loopback in the namespace (a helper client process)."""
        argv = ["ip", "netns", "exec", self.ns, sys.executable, __file__]
        argv += ["--helper-client", "127.0.0.1", str(HELPER_PORT), str(size)]
        done = await trio.run_process(argv, capture_stdout=True)
        seconds, cpu = done.stdout.split()
        return Sample(float(seconds), float(cpu))


# ---------------------------------------------------------------------------------- report


def report(results: dict[str, list[Sample]], size: int) -> None:
    mb = size / MB
    print(f"\n{'contender':14} {'MB/s median':>11} {'(min-max)':>15} {'CPU s/MB':>9}"
          f" {'us/seg':>7} {'segs/MB':>8} {'target':>7} {'ratio':>6}")  # fmt: skip
    medians: dict[str, float] = {}
    for name, samples in results.items():
        rates = [mb / s.seconds for s in samples]
        cpu = statistics.median(s.cpu / mb for s in samples)
        rate = medians[name] = statistics.median(rates)
        target = TARGET_GRAPH if name == "graph-1460" else TARGET_LINUX if "ours" in name else None
        ratio = f"{rate / target:6.2f}" if target else "      "
        shown = f"{target:7.0f}" if target else "      -"
        segments = statistics.median(s.segments for s in samples)
        per_seg = f"{cpu * mb / segments * 1e6:7.1f}" if segments else "      -"
        seg_mb = f"{segments / mb:8.0f}" if segments else "       -"
        print(f"{name:14} {rate:11.1f} {f'({min(rates):.1f}-{max(rates):.1f})':>15}"
              f" {cpu:9.4f} {per_seg} {seg_mb} {shown} {ratio}")  # fmt: skip
    print()
    for name, pytcp in PYTCP.items():
        if name in medians:
            print(f"{name} / PyTCP ({pytcp} MB/s): {medians[name] / pytcp:.0f}x")
    for name in ("ours->linux", "linux->ours"):
        if name in medians and "linux->linux" in medians:
            print(f"{name} / linux->linux: {medians[name] / medians['linux->linux']:.4f}")
    if "graph-64k" in medians and "graph-1460" in medians:
        print(f"graph-64k / graph-1460: {medians['graph-64k'] / medians['graph-1460']:.2f}")


async def bench(args: argparse.Namespace) -> None:
    size, chunk = args.megabytes * MB, args.chunk
    ns = None if args.graph_only else f"ngbench-tcp-{os.getpid()}"
    helper: trio.Process | None = None
    if ns is not None:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        async with netgraph.open_graph() as graph:
            small = InGraph("s", 1500, {})
            big = InGraph("b", 65535, {"sndbuf": BIG_BUFFER, "rcvbuf": BIG_BUFFER})
            await small.build(graph)
            await big.build(graph)
            contenders: dict[str, Callable[[int, int], Awaitable[Sample]]] = {
                "graph-1460": small.run,
                "graph-64k": big.run,
            }
            if ns is not None:
                await trio.run_process(["ip", "-n", ns, "link", "set", "dev", "lo", "up"])
                tun = OverTun(ns)
                await tun.build(graph)
                argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "--helper"]
                helper = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
                assert helper.stdout is not None
                assert (await helper.stdout.receive_some(100)).strip() == b"ready"
                contenders["ours->linux"] = tun.send
                contenders["linux->ours"] = tun.receive
                contenders["linux->linux"] = tun.kernel
            if args.profile:
                await profile(small, size, chunk)
                return
            results: dict[str, list[Sample]] = {name: [] for name in contenders}
            for fn in contenders.values():  # warm-up, not counted
                await fn(min(size, 4 * MB), chunk)
            for round_ in range(args.rounds):
                line = []
                for name, fn in contenders.items():
                    sample = await fn(size, chunk)
                    results[name].append(sample)
                    line.append(f"{name} {size / MB / sample.seconds:.1f}")
                print(f"round {round_ + 1}: " + ", ".join(line), flush=True)
            report(results, size)
    finally:
        if helper is not None:
            helper.kill()
            await helper.wait()
        if ns is not None:
            subprocess.run(["ip", "netns", "del", ns], check=False)


async def profile(host: InGraph, size: int, chunk: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    sample = await host.run(size, chunk)
    profiler.disable()
    print(f"graph-1460 under cProfile: {size / MB / sample.seconds:.1f} MB/s"
          f" ({sample.seconds:.2f} s, CPU {sample.cpu:.2f} s for {size // MB} MB)\n")  # fmt: skip
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(30)
        print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=64 * 1024, help="bytes per send_all")
    parser.add_argument("--quick", action="store_true", help="8 MB, 2 rounds")
    parser.add_argument("--graph-only", action="store_true", help="no namespace, no TUN")
    parser.add_argument("--profile", action="store_true", help="one graph-1460 run, cProfiled")
    parser.add_argument("--helper", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--helper-client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.helper:
        helper_serve(HELPER_PORT)
        return
    if args.helper_client:
        host, port, size = args.helper_client
        helper_client(host, int(port), int(size))
        return
    if args.quick:
        args.megabytes, args.rounds = 8, 2
    if not args.graph_only and os.geteuid() != 0:
        sys.exit("bench/tcp.py: needs root for the namespace and TUN (or --graph-only)")
    trio.run(bench, args)


if __name__ == "__main__":
    main()
