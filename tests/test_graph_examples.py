"""The graph-file examples run as the README shows them: ``make demo`` (monitor.yaml in a graph
daemon, with traffic), the UDP tunnel as two ``python -m netgraph run`` processes, and the port
forwarder's listener from a graph file. Fixed ports are swapped for free ones first."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from netgraph import graphfile, open_graph

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
HOST = "127.0.0.1"


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def with_ports(name: str, ports: dict[int, int], into: Path) -> Path:
    """A copy of an example graph file with its ports replaced (each ``:PORT`` ending a line)."""
    text = (EXAMPLES / name).read_text()
    assert set(ports) <= {int(port) for port in re.findall(r":(\d+)$", text, re.M)}, name
    text = re.sub(r":(\d+)$", lambda m: f":{ports.get(int(m[1]), m[1])}", text, flags=re.M)
    path = into / name
    path.write_text(text)
    return path


def test_make_demo_runs_the_monitor_example(tmp_path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/python examples/monitor_demo.py" in makefile
    graph = with_ports("monitor.yaml", {5555: free_port(socket.SOCK_DGRAM)}, tmp_path)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "monitor_demo.py"), str(graph)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    # The daemon really ran the file: the nodes and links it describes, and the tap counted.
    assert "  Name: udp             Type: ksocket         ID: 00000005   Num hooks: 1" in out
    assert any(line.split()[:2] == ["left2right", "monitor"] for line in out)
    assert out[-2:] == ["Args:\t{ frames=3 octets=14 }", "$ kill -TERM %1"]
    assert "left={ inOctets=14 inFrames=3 }" in "\n".join(out)


async def run_graph(path: Path) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "netgraph", "run", str(path)], stderr=subprocess.PIPE
    )


async def test_udp_tunnel_files_carry_datagrams_both_ways(tmp_path: Path) -> None:
    program_a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    program_b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await program_a.bind((HOST, 0))
    await program_b.bind((HOST, 0))
    tunnel_a, tunnel_b, inside_a, inside_b = (free_port(socket.SOCK_DGRAM) for _ in range(4))
    tunnel = {4028: tunnel_a, 4029: tunnel_b}
    file_a = with_ports(
        "udp_tunnel.yaml", {**tunnel, 5028: inside_a, 6028: program_a.getsockname()[1]}, tmp_path
    )
    file_b = with_ports(
        "udp_tunnel_peer.yaml",
        {**tunnel, 5029: inside_b, 6029: program_b.getsockname()[1]},
        tmp_path,
    )
    end_a, end_b = await run_graph(file_a), await run_graph(file_b)
    try:
        with program_a, program_b, trio.fail_after(30):
            # Until both ends have bound (the processes start as they will): resend until through.
            got = None
            while got is None:
                await program_a.sendto(b"a to b", (HOST, inside_a))
                with trio.move_on_after(0.2):
                    got = await program_b.recvfrom(2048)
            assert got == (b"a to b", (HOST, inside_b))
            await program_b.sendto(b"b to a, longer", (HOST, inside_b))
            assert await program_a.recvfrom(2048) == (b"b to a, longer", (HOST, inside_a))
    finally:
        for proc in (end_a, end_b):
            proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await end_a.wait() == 0
            assert await end_b.wait() == 0


async def test_port_forward_file_listens() -> None:
    port = free_port(socket.SOCK_STREAM)
    text = (EXAMPLES / "port_forward.yaml").read_text().replace(":8080", f":{port}")
    async with open_graph() as graph:
        sock = graph.socket("me")
        await graphfile.apply(sock, graphfile.parse(text, "port_forward.yaml"))
        _, reply = await sock.request_ascii("fwd_listen:", "getname")
        assert reply == f"inet/127.0.0.1:{port}"
        client = trio.socket.socket()
        with client, trio.fail_after(10):
            await client.connect((HOST, port))  # the listening socket takes the connection
        graph.close()


def test_every_example_parses() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert {f.name for f in files} >= {
        "monitor.yaml", "udp_tunnel.yaml", "udp_tunnel_peer.yaml", "port_forward.yaml",
    }  # fmt: skip
    for path in files:
        graphfile.parse(path.read_text(), str(path))
