"""make demo: run examples/monitor.yaml in a graph daemon, send it datagrams, read the monitor.

Does what a person would type, and prints each command before its output:

    python -m netgraph serve --socket SOCK examples/monitor.yaml &
    ngctl -s SOCK msg udp: getname          # where the sink listens
    (three datagrams to that address)
    ngctl -s SOCK show tap:
    ngctl -s SOCK msg tap: getstats
    ngctl -s SOCK msg monitor: getstats "in"
    kill -TERM <the daemon>

Usage: python examples/monitor_demo.py [GRAPH_FILE]   (default: examples/monitor.yaml)
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def ngctl(sock: Path, *args: str) -> str:
    print(f"$ ngctl -s {sock.name} {shlex.join(args)}", flush=True)
    out = subprocess.run(
        [sys.executable, "-m", "ngctl", "-s", str(sock), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    print(out, end="", flush=True)
    return out


def wait_for(sock: Path, daemon: subprocess.Popen[bytes]) -> None:
    """Until the daemon listens (or has exited: its error is on stderr)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            sys.exit(f"the graph daemon exited with status {daemon.returncode}")
        if sock.exists():
            return
        time.sleep(0.05)  # polling a process we started; not a test
    sys.exit("the graph daemon did not start")


def main() -> None:
    graph_file = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "monitor.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "ng.sock"
        print(f"$ python -m netgraph serve --socket {sock.name} {graph_file} &", flush=True)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "netgraph", "serve", "--socket", str(sock), str(graph_file)]
        )
        try:
            wait_for(sock, daemon)
            reply = ngctl(sock, "msg", "udp:", "getname")
            found = re.search(r"inet/([\d.]+):(\d+)", reply)
            assert found, reply
            address = (found[1], int(found[2]))
            print(f"(three datagrams to {address[0]}:{address[1]})", flush=True)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                for payload in (b"hello", b"netgraph", b"!"):
                    client.sendto(payload, address)
            # The daemon reads datagrams as they come; ask until the monitor has all three.
            for _ in range(100):
                out = subprocess.run(
                    [sys.executable, "-m", "ngctl", "-s", str(sock), "msg", "monitor:",
                     "getstats", '"in"'],
                    check=True, capture_output=True, text=True,
                ).stdout  # fmt: skip
                if "frames=3" in out:
                    break
                time.sleep(0.05)
            ngctl(sock, "list")
            ngctl(sock, "show", "tap:")
            ngctl(sock, "msg", "tap:", "getstats")
            ngctl(sock, "msg", "monitor:", "getstats", '"in"')
        finally:
            print("$ kill -TERM %1", flush=True)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    sys.exit(daemon.returncode)


if __name__ == "__main__":
    main()
