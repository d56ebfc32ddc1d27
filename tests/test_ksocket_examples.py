"""The ksocket examples, run as the README shows them against graph daemons, carry real traffic
between plain sockets on 127.0.0.1; and the relay benchmark runs (its speed is not judged here).

The scripts' fixed ports are swapped for free ones before ngctl reads them (``-f -``)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

from netgraph.daemon import serve

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
HOST = "127.0.0.1"


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def script(name: str, ports: dict[int, int]) -> str:
    """An example script with its ports replaced (each ``:PORT`` that ends a line)."""
    text = (EXAMPLES / name).read_text()
    assert set(ports) <= {int(port) for port in re.findall(r":(\d+)$", text, re.M)}, name
    return re.sub(r":(\d+)$", lambda m: f":{ports.get(int(m[1]), m[1])}", text, flags=re.M)


async def ngctl(sock: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    with trio.fail_after(60):
        proc = await trio.run_process(
            [sys.executable, "-m", "ngctl", "-s", str(sock), *args], stdin=stdin.encode(),
            capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT,
        )  # fmt: skip
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


# ---------------------------------------------------------------------------- UDP tunnel


async def test_udp_tunnel_carries_datagrams_both_ways(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    end_a, end_b = tmp_path / "a.sock", tmp_path / "b.sock"
    await nursery.start(serve, end_a)
    await nursery.start(serve, end_b)
    program_a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    program_b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await program_a.bind((HOST, 0))
    await program_b.bind((HOST, 0))
    tunnel_a, tunnel_b, inside_a, inside_b = (free_port(socket.SOCK_DGRAM) for _ in range(4))
    tunnel = {4028: tunnel_a, 4029: tunnel_b}
    ports_a = {**tunnel, 5028: inside_a, 6028: program_a.getsockname()[1]}
    ports_b = {**tunnel, 5029: inside_b, 6029: program_b.getsockname()[1]}
    for sock, name, ports in (
        (end_a, "udp_tunnel.ngctl", ports_a),
        (end_b, "udp_tunnel_peer.ngctl", ports_b),
    ):
        assert await ngctl(sock, "-f", "-", stdin=script(name, ports)) == (0, "", "")

    with program_a, program_b, trio.fail_after(10):
        await program_a.sendto(b"a to b", (HOST, inside_a))
        assert await program_b.recvfrom(2048) == (b"a to b", (HOST, inside_b))
        await program_b.sendto(b"b to a, longer", (HOST, inside_b))
        assert await program_a.recvfrom(2048) == (b"b to a, longer", (HOST, inside_a))
        await program_a.sendto(b"again", (HOST, inside_a))
        assert await program_b.recvfrom(2048) == (b"again", (HOST, inside_b))

    # Each end's tee counted what went into the tunnel (right) and what came out of it (left).
    code, out, _ = await ngctl(end_a, "msg", "tunnel:", "getstats")
    assert code == 0
    assert "right={ inOctets=11 inFrames=2 outOctets=14 outFrames=1 }" in out
    code, out, _ = await ngctl(end_b, "msg", "tunnel:", "getstats")
    assert "left={ inOctets=11 inFrames=2 outOctets=14 outFrames=1 }" in out


# ------------------------------------------------------------------------- port forwarder

BANNER = b"hello from the target\n"


def target(banner: bytes) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """The server connections are forwarded to: ``banner`` first, then what it gets, in upper
    case, then ``bye`` when the client's stream ends."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(banner)
            while data := await stream.receive_some(65536):
                await stream.send_all(data.upper())
            await stream.send_all(b"bye\n")

    return handle


async def start_target(nursery: trio.Nursery, banner: bytes) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, target(banner), 0, host=HOST))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def through(port: int, payload: bytes, *, wait_for: bytes = b"") -> bytes:
    """A client: sends its payload (once ``wait_for`` has come, if given) and the end of its
    stream, while taking in everything that comes back, which it returns."""
    stream = await trio.open_tcp_stream(HOST, port)
    got = bytearray()
    greeted = trio.Event()
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            if wait_for:
                await greeted.wait()
            await stream.send_all(payload)
            await stream.send_eof()

        nursery.start_soon(send)
        while data := await stream.receive_some(65536):
            got += data
            if got.startswith(wait_for):
                greeted.set()
    return bytes(got)


async def forwarder(nursery: trio.Nursery, *args: str) -> trio.Process:
    command = [sys.executable, str(EXAMPLES / "port_forward.py"), *args]
    proc: trio.Process = await nursery.start(
        partial(trio.run_process, command, stdout=subprocess.PIPE, check=False, cwd=ROOT)
    )
    return proc


async def read_all(proc: trio.Process) -> bytes:
    assert proc.stdout is not None
    out = bytearray()
    while data := await proc.stdout.receive_some():
        out += data
    return bytes(out)


async def count_nodes(sock: Path) -> int:
    code, out, _ = await ngctl(sock, "list")
    assert code == 0
    return int(out.split()[2])  # "There are N total nodes:"


BIG = bytes(range(97, 123)) * 40_000  # 1 MB of a-z


async def test_port_forward_through_a_daemon(tmp_path: Path, nursery: trio.Nursery) -> None:
    daemon = tmp_path / "ng.sock"
    await nursery.start(serve, daemon)
    listen = free_port(socket.SOCK_STREAM)
    code, out, err = await ngctl(
        daemon, "-f", "-", stdin=script("port_forward.ngctl", {8080: listen})
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == f"Args:\tinet/{HOST}:{listen}"
    # Through a daemon, what a server sends the moment it accepts may be lost (the forwarder's
    # docstring says why), so this one speaks only when spoken to.
    target_port = await start_target(nursery, b"")
    before = await count_nodes(daemon)  # the hole, the listener and the ngctl asking
    proc = await forwarder(
        nursery, "--sweep", "0.05", "-s", str(daemon), "fwd_listen:", f"inet/{HOST}:{target_port}"
    )
    results: dict[str, bytes] = {}

    async def client(name: str, payload: bytes) -> None:
        results[name] = await through(listen, payload)

    with trio.fail_after(30):
        async with trio.open_nursery() as clients:
            clients.start_soon(client, "big", BIG)  # 1 MB each way, both at once
            clients.start_soon(client, "small", b"one line\n")
        assert results["big"] == BIG.upper() + b"bye\n"
        assert results["small"] == b"ONE LINE\nbye\n"
        # Both connections are closed at both ends: the forwarder removes their nodes.
        while await count_nodes(daemon) != before + 1:  # + the forwarder's own socket node
            pass
    assert proc.returncode is None
    proc.terminate()
    lines = (await read_all(proc)).decode().splitlines()
    assert lines[0] == f"forwarding inet/{HOST}:{listen} to inet/{HOST}:{target_port}"
    assert sorted(line.split(":")[0] for line in lines[1:]) == ["connection 1", "connection 2"]


async def test_port_forward_in_a_graph_of_its_own(nursery: trio.Nursery) -> None:
    target_port = await start_target(nursery, BANNER)
    listen = free_port(socket.SOCK_STREAM)
    proc = await forwarder(nursery, f"inet/{HOST}:{listen}", f"inet/{HOST}:{target_port}")
    assert proc.stdout is not None
    results: dict[str, bytes] = {}

    async def client(name: str, payload: bytes, wait_for: bytes) -> None:
        results[name] = await through(listen, payload, wait_for=wait_for)

    with trio.fail_after(30):
        assert (await proc.stdout.receive_some()).startswith(b"forwarding ")  # listening
        async with trio.open_nursery() as clients:
            # One speaks before the target has, one after: neither side's first bytes are lost.
            clients.start_soon(client, "eager", BIG, b"")
            clients.start_soon(client, "polite", b"one line\n", BANNER)
        assert results["eager"] == BANNER + BIG.upper() + b"bye\n"
        assert results["polite"] == BANNER + b"ONE LINE\nbye\n"
    proc.terminate()
    await proc.wait()
    assert b"connection 2: inet/127.0.0.1:" in await read_all(proc)


# ---------------------------------------------------------------------------- benchmark


def test_relay_benchmark_runs_quick() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--quick"],
        check=True, capture_output=True, text=True, cwd=ROOT, timeout=100,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    ratios = {line.split()[0]: line for line in lines if line.split()[1:3] == ["/", "trio"]}
    assert "x throughput" in ratios["ksocket"]
    assert "x round trips" in ratios["ksocket"]
    assert "x throughput" in ratios["socat"] or "skipped" in ratios["socat"]
    for name in ("ksocket", "trio"):
        assert any(line.split()[:1] == [name] and "GB/s" in line for line in lines), name
