"""The TCP examples run as their docstrings say, against the kernel in a network namespace.

* ``examples/http_server.py`` (h11 on the user-space TCP) is run as a program: with ``--netns``
  in the test's namespace, and without it (the example makes and deletes a namespace of its
  own, which it names); ``curl`` in the namespace fetches pages over IPv4 and IPv6, keep-alive,
  HEAD, 404 and a few MB, and SIGINT stops it cleanly.
* ``examples/tcp_client.py`` (an h11 client on the user-space TCP) fetches from a kernel server
  that the test runs inside the namespace (a socket made there, used with trio: it listens
  before the client starts), and reports a refused call in one line.

The programs say when they are ready on their standard output; nothing here sleeps.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.netns import Netns, namespace, require_netns

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
WAIT = 30  # seconds: a safety net only


def require_curl() -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl (make sysdeps)")


@pytest.fixture
async def ns() -> AsyncIterator[Netns]:
    async with namespace() as made:
        yield made


class Program:
    """An example running as a process, its standard output read line by line."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.out = b""

    async def read_until(self, pattern: str) -> re.Match[str]:
        """Read until ``pattern`` matches a line of what the program printed."""
        assert self.proc.stdout is not None
        while True:
            text = self.out.decode(errors="replace")
            found = re.search(pattern, text, re.MULTILINE)
            if found is not None:
                return found
            data = await self.proc.stdout.receive_some(4096)
            assert data, f"the program ended without printing {pattern!r}:\n{text}"
            self.out += data

    async def rest(self) -> str:
        assert self.proc.stdout is not None
        while data := await self.proc.stdout.receive_some(4096):
            self.out += data
        return self.out.decode(errors="replace")


@asynccontextmanager
async def program(*argv: str) -> AsyncIterator[Program]:
    """Run ``python examples/ARGV...``; killed at the end if it is still running."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield Program(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()


async def curl(ns: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``ip netns exec NS curl -sS ARGS`` (10 s at most)."""
    return await trio.run_process(
        ["ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "10", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=True,
    )


async def fetch_pages(netns: str, port: int) -> None:
    """What a user of the http_server example would try, checked."""
    page = (await curl(netns, f"http://192.0.2.2:{port}/")).stdout.decode()
    assert "Hello from a user-space TCP/IP stack" in page
    assert re.search(rf"You are 192\.0\.2\.1 port \d+; this is 192\.0\.2\.2 port {port},", page)
    six = (await curl(netns, "-g", f"http://[2001:db8::2]:{port}/")).stdout.decode()
    assert re.search(rf"You are 2001:db8::1 port \d+; this is 2001:db8::2 port {port},", six)
    # Two requests on one connection (curl keeps it alive): one channel, two requests.
    both = (await curl(netns, f"http://192.0.2.2:{port}/", f"http://192.0.2.2:{port}/")).stdout
    channels = re.findall(r"channel (\w+) of the tcp node", both.decode())
    numbers = [int(n) for n in re.findall(r"Request (\d+) since", both.decode())]
    assert len(channels) == 2, both
    assert channels[0] == channels[1], both
    assert numbers[1] == numbers[0] + 1, both
    head = await curl(netns, "-I", f"http://192.0.2.2:{port}/")
    assert head.stdout.startswith(b"HTTP/1.1 200"), head.stdout
    assert b"content-length: " in head.stdout.lower()
    missing = await curl(
        netns, "-o", "/dev/null", "-w", "%{http_code}", f"http://192.0.2.2:{port}/x"
    )
    assert missing.stdout == b"404"
    size = 5_000_000
    bulk = await curl(netns, f"http://192.0.2.2:{port}/bytes/{size}")
    assert hashlib.sha256(bulk.stdout).digest() == hashlib.sha256(b"x" * size).digest()


async def test_http_server_in_the_tests_namespace(ns: Netns) -> None:
    require_curl()
    with trio.fail_after(WAIT):
        async with program("examples/http_server.py", "--netns", ns.name, "--port", "8080") as p:
            await p.read_until(rf"^try: ip netns exec {ns.name} curl -g http://\[2001:db8::2\]")
            await fetch_pages(ns.name, 8080)
            p.proc.send_signal(signal.SIGINT)
            rest = await p.rest()
            assert await p.proc.wait() == 0, rest
    assert "stopped by SIGINT" in rest
    assert "Traceback" not in rest
    # The TUN interface went with the program; the namespace stays (it is the test's).
    links = (await ns.ip("-o", "link")).splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]


async def test_http_server_in_a_namespace_of_its_own() -> None:
    """As the docstring says to run it: it makes a namespace, says its name, deletes it."""
    require_curl()
    require_netns()
    made = None
    try:
        with trio.fail_after(WAIT):
            async with program("examples/http_server.py", "--port", "8081") as p:
                found = await p.read_until(r"in namespace (ngdemo-\d+)$")
                made = found[1]
                await p.read_until(r"^try: .* curl -g ")
                page = await curl(made, "http://192.0.2.2:8081/")
                assert b"Hello from a user-space TCP/IP stack" in page.stdout
                p.proc.send_signal(signal.SIGTERM)
                rest = await p.rest()
                assert await p.proc.wait() == 0, rest
        assert "stopped by SIGTERM" in rest
        assert not os.path.exists(f"/var/run/netns/{made}"), "the example left its namespace"
    finally:
        if made is not None and os.path.exists(f"/var/run/netns/{made}"):
            subprocess.run(["ip", "netns", "del", made], check=False)


# ------------------------------------------------------------------------------ tcp_client


async def kernel_http_server(
    listener: trio.socket.SocketType, body: bytes, requests: list[bytes]
) -> None:
    """Answer one request (HTTP/1.1, Content-Length) and close."""
    conn, _ = await listener.accept()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            more = await conn.recv(4096)
            assert more, data
            data += more
        requests.append(data)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        view = memoryview(head + body)
        while view:
            view = view[await conn.send(view) :]


@pytest.mark.parametrize("host", ["192.0.2.1", "[2001:db8::1]"])
async def test_tcp_client_fetches_from_a_kernel_server(ns: Netns, host: str) -> None:
    body = os.urandom(1_000_000)
    requests: list[bytes] = []
    with ns.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        await listener.bind(("::", 8000))
        listener.listen(1)
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kernel_http_server, listener, body, requests)
                done = await trio.run_process(
                    [sys.executable, "examples/tcp_client.py", "--netns", ns.name, "-i",
                     f"http://{host}:8000/hello?x=1"],
                    cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
                )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == body
    assert done.stderr.startswith(b"HTTP/1.1 200 OK\n"), done.stderr
    request = requests[0].decode()
    assert request.startswith("GET /hello?x=1 HTTP/1.1\r\n"), request
    assert f"host: {host}:8000\r\n" in request.lower(), request


async def test_tcp_client_says_when_the_call_is_refused(ns: Netns) -> None:
    with trio.fail_after(WAIT):
        done = await trio.run_process(
            [sys.executable, "examples/tcp_client.py", "--netns", ns.name, "http://192.0.2.1:8000/"],
            cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.decode() == (
        "tcp_client: connect to 192.0.2.1 port 8000: Connection refused\n"
    )
