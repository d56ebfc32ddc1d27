"""One TCP connection relayed: the ksocket relay against a hand-written trio relay and socat.

Three contenders pass a connection from a client on to a sink server, all on 127.0.0.1:

* ksocket - a listening ksocket; its accepted clone is linked to an outgoing ksocket connected to
  the sink (what examples/port_forward.py builds for each connection);
* trio    - a hand-written trio relay: one task per direction, ``receive_some(65536)`` then
  ``send_all``;
* socat   - ``socat -b65536`` (when installed; skipped, and said so, when not).

All three read 64 KiB at a time and set TCP_NODELAY on both of their sockets (trio does by
default). The client and the sink run in another process (this file with ``--driver``), on
blocking sockets in two threads, so that the ksocket and trio relays have this process to
themselves. The sink sends one byte when it has its connection; the client starts the clock when
that byte has come through, so connection set-up is not measured.

Two measures, each contender run ``--rounds`` times, interleaved round by round:

* throughput: ``--size`` bytes from the client to the sink, GB/s (10^9 bytes per second) from
  the client's first byte to the sink's last;
* round trips: 64 bytes to the sink and the same 64 back, ``--trips`` times, per second.

Prints the medians and the ratios ksocket/trio and socat/trio. Targets: the ksocket relay at
least 1.0x the trio relay in throughput and in round trips. ``--quick`` is a smoke test.

    .venv/bin/python bench/relay.py [--size BYTES] [--trips N] [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import errno
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from netgraph import NetgraphError, Socket, open_graph
from nodes.ksocket import KSOCKET_COOKIE, NGM_KSOCKET_ACCEPT, NGM_KSOCKET_CONNECT

READ_SIZE = 65536
TRIP = 64
HOST = "127.0.0.1"
NODELAY = "setopt { level=IPPROTO_TCP name=TCP_NODELAY value=[ 1 ] }"
GiB = 1 << 30


# --------------------------------------------------------------------------- the driver
# A separate process: the client and the sink, on blocking sockets. Commands on stdin, one per
# line ("bytes PORT SIZE", "trips PORT COUNT"); each answered with "ok SECONDS" on stdout.


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _sink(listener: socket.socket, mode: str, amount: int, done: list[float]) -> None:
    conn, _ = listener.accept()
    with conn:
        _nodelay(conn)
        conn.sendall(b"R")
        if mode == "bytes":
            buf = bytearray(1 << 20)
            got = 0
            while got < amount:
                n = conn.recv_into(buf)
                if not n:
                    raise SystemExit(f"sink: the stream ended after {got} of {amount} bytes")
                got += n
            done.append(time.perf_counter())
            if conn.recv_into(buf):
                raise SystemExit("sink: more bytes than were sent")
        else:
            while True:
                data = conn.recv(TRIP, socket.MSG_WAITALL)
                if not data:
                    break
                conn.sendall(data)


def _client(port: int, mode: str, amount: int) -> tuple[float, float]:
    """One trial's client side; returns when it started and ended (after the ready byte)."""
    with socket.create_connection((HOST, port)) as sock:
        _nodelay(sock)
        if sock.recv(1) != b"R":
            raise SystemExit("client: no ready byte from the sink")
        start = time.perf_counter()
        if mode == "bytes":
            chunk = memoryview(bytes(1 << 20))
            left = amount
            while left:
                n = min(left, len(chunk))
                sock.sendall(chunk[:n])
                left -= n
        else:
            message = bytes(range(TRIP))
            for _ in range(amount):
                sock.sendall(message)
                if sock.recv(TRIP, socket.MSG_WAITALL) != message:
                    raise SystemExit("client: the reply differs from the request")
        end = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)
        if sock.recv(1):
            raise SystemExit("client: bytes after the end")
    return start, end


def driver() -> None:
    listener = socket.create_server((HOST, 0))
    print(f"sink {listener.getsockname()[1]}", flush=True)
    for line in sys.stdin:
        mode, port, amount = line.split()
        done: list[float] = []
        sink = threading.Thread(target=_sink, args=(listener, mode, int(amount), done))
        sink.start()
        start, end = _client(int(port), mode, int(amount))
        sink.join()
        if mode == "bytes":
            end = done[0]  # the sink's last byte
        print(f"ok {end - start:.6f}", flush=True)


# ------------------------------------------------------------------------- the contenders


class Driver:
    """The driver process, run one trial at a time."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.buffer = b""

    async def line(self) -> str:
        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            data = await self.proc.stdout.receive_some()
            if not data:
                raise RuntimeError("the driver process ended")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def trial(self, mode: str, port: int, amount: int) -> float:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(f"{mode} {port} {amount}\n".encode())
        answer = await self.line()
        if not answer.startswith("ok "):
            raise RuntimeError(f"driver: {answer}")
        return float(answer.split()[1])


class KsocketRelay:
    """A listening ksocket; per connection, its clone linked to an outgoing ksocket."""

    def __init__(self, sock: Socket, sink: int) -> None:
        self.sock = sock
        self.sink = sink
        self.port = 0

    async def listen(self) -> None:
        sock = self.sock
        await sock.mkpeer(".", "ksocket", "listen", "inet/stream/tcp")
        await sock.send_ascii("listen", f"bind inet/{HOST}:0")
        await sock.send_ascii("listen", "listen 16")
        _, name = await sock.request_ascii("listen", "getname")
        self.port = int(name.rsplit(":", 1)[1])

    async def finish(self, path: str, line: str, cmd: int) -> tuple[str, Any]:
        """Send ``line``, which completes later (EWOULDBLOCK, EINPROGRESS); wait for its reply."""
        try:
            await self.sock.send_ascii(path, line)
        except NetgraphError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EINPROGRESS):
                raise
        while True:
            sender, msg = await self.sock.recv_msg()
            if msg.is_response and msg.typecookie == KSOCKET_COOKIE and msg.cmd == cmd:
                return sender, msg.args

    async def setup(self) -> Callable[[], Awaitable[None]]:
        """Accept the next connection and link it to a new ksocket connected to the sink.

        The clone reads as soon as it is linked, before the outgoing ksocket is connected; that
        is safe here only because the client waits for the sink's ready byte before it sends
        (examples/port_forward.py orders things so that no client need wait)."""
        clone, _ = await self.finish("listen", "accept", NGM_KSOCKET_ACCEPT)
        sock = self.sock
        await sock.send_ascii(clone, NODELAY)
        await sock.mkpeer(clone, "ksocket", "out", "inet/stream/tcp")
        outgoing = f"{clone}out"
        await sock.send_ascii(outgoing, NODELAY)
        _, code = await self.finish(
            outgoing, f"connect inet/{HOST}:{self.sink}", NGM_KSOCKET_CONNECT
        )
        if code != 0:
            raise NetgraphError(code, "connect to the sink")

        async def teardown() -> None:
            await sock.shutdown(clone)  # the outgoing ksocket goes with its hook

        return teardown


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    while data := await source.receive_some(READ_SIZE):
        await sink.send_all(data)
    await sink.send_eof()


class TrioRelay:
    def __init__(self, sink: int) -> None:
        self.sink = sink
        self.port = 0

    async def handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(HOST, self.sink)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, server)
            nursery.start_soon(_pump, server, client)

    async def run(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self.handle, listeners, task_status=task_status)


async def start_socat(socat: str, sink: int, nursery: trio.Nursery) -> tuple[int, trio.Process]:
    with socket.create_server((HOST, 0)) as probe:
        port = probe.getsockname()[1]
    command = [
        socat, "-d", "-d", f"-b{READ_SIZE}",
        f"TCP-LISTEN:{port},bind={HOST},reuseaddr,fork,nodelay", f"TCP:{HOST}:{sink},nodelay",
    ]  # fmt: skip
    proc = await trio.lowlevel.open_process(command, stderr=-1)
    assert proc.stderr is not None
    stderr = proc.stderr
    seen = b""
    with trio.fail_after(10):
        while b"listening on" not in seen:
            data = await stderr.receive_some()
            if not data:
                raise RuntimeError(f"socat ended: {seen.decode(errors='replace')}")
            seen += data

    async def drain() -> None:  # socat logs every connection; keep its pipe from filling
        while await stderr.receive_some():
            pass

    nursery.start_soon(drain)
    return port, proc


# ------------------------------------------------------------------------------- the run


def median_line(name: str, gbps: list[float], trips: list[float]) -> str:
    return (
        f"  {name:8} {statistics.median(gbps):6.3f} GB/s ({min(gbps):.3f}-{max(gbps):.3f})"
        f"  {statistics.median(trips):7.0f} /s ({min(trips):.0f}-{max(trips):.0f})"
    )


async def main(size: int, trips: int, rounds: int) -> None:
    socat = shutil.which("socat")
    command = [sys.executable, __file__, "--driver"]
    async with trio.open_nursery() as nursery, open_graph() as graph:
        proc = await trio.lowlevel.open_process(command, stdin=-1, stdout=-1)
        driver = Driver(proc)
        sink = int((await driver.line()).split()[1])

        ks = KsocketRelay(graph.socket("relay"), sink)
        await ks.listen()
        tr = TrioRelay(sink)
        await nursery.start(tr.run)
        socat_proc: trio.Process | None = None
        socat_port = 0
        if socat is not None:
            socat_port, socat_proc = await start_socat(socat, sink, nursery)

        async def via_ksocket(mode: str, amount: int) -> float:
            async with trio.open_nursery() as inner:
                teardowns: list[Callable[[], Awaitable[None]]] = []

                async def arm() -> None:
                    teardowns.append(await ks.setup())

                inner.start_soon(arm)
                seconds = await driver.trial(mode, ks.port, amount)
            for teardown in teardowns:
                await teardown()
            return seconds

        contenders: dict[str, Callable[[str, int], Awaitable[float]]] = {
            "ksocket": via_ksocket,
            "trio": lambda mode, amount: driver.trial(mode, tr.port, amount),
        }
        if socat is not None:
            contenders["socat"] = lambda mode, amount: driver.trial(mode, socat_port, amount)
        gbps: dict[str, list[float]] = {name: [] for name in contenders}
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for round_ in range(rounds):
            # Interleaved, and each round starts with the next contender: no one is always first.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                run = contenders[name]
                gbps[name].append(size / await run("bytes", size) / 1e9)
                rates[name].append(trips / await run("trips", trips))

        assert proc.stdin is not None
        await proc.stdin.aclose()
        await proc.wait()
        if socat_proc is not None:
            socat_proc.terminate()
            await socat_proc.wait()
        nursery.cancel_scope.cancel()

    med_g = {name: statistics.median(values) for name, values in gbps.items()}
    med_r = {name: statistics.median(values) for name, values in rates.items()}
    amount = (
        f"{size // GiB} GiB" if size % GiB == 0
        else f"{size >> 20} MiB" if size % (1 << 20) == 0
        else f"{size} bytes"
    )  # fmt: skip
    print(
        f"one TCP connection through a relay on {HOST}, reads of {READ_SIZE // 1024} KiB: "
        f"{amount} and {trips} round trips of {TRIP} bytes per run, {rounds} interleaved runs; "
        "medians"
    )
    print(f"  {'relay':8} {'throughput (min-max)':>26}  {'round trips (min-max)':>24}")
    for name in contenders:
        print(median_line(name, gbps[name], rates[name]))
    if socat is None:
        print("  socat    skipped: not installed")
    print("ratios of the medians")
    for name, note in (("ksocket", "   (target >= 1.00x both)"), ("socat", "")):
        if name not in med_g:
            print(f"  {name:7} / trio skipped: socat is not installed")
            continue
        ratio_g = med_g[name] / med_g["trio"]
        ratio_r = med_r[name] / med_r["trio"]
        print(f"  {name:7} / trio {ratio_g:5.2f}x throughput {ratio_r:5.2f}x round trips{note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=GiB, help="bytes per throughput run")
    parser.add_argument("--trips", type=int, default=10000, help="round trips per run")
    parser.add_argument("--rounds", type=int, default=7, help="runs of each contender")
    parser.add_argument("--quick", action="store_true", help="a smoke test: small and once")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver()
    else:
        if args.quick:
            args.size, args.trips, args.rounds = 8 << 20, 200, 1
        trio.run(main, args.size, args.trips, args.rounds)
