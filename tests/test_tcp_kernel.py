"""The user-space TCP against the Linux kernel's, through an iface (TUN) node in a test namespace.

The graph (spec tcp.md 1)::

    [iface] inet  --- link0 [ip0] tcp --- ip [tcp0] s5, call1... --- socket nodes (TcpStream)
            inet6 --- link1

The interface is moved into a namespace of the test's own (:mod:`tests.netns`); there the kernel
has 192.0.2.1/24 and 2001:db8::1/64 on it, and the ip node has 192.0.2.2/24 and 2001:db8::2/64.
Kernel sockets are made inside the namespace and used by this process with trio, so a kernel
listener is listening before our SYN leaves, and no helper process races anything.

What is checked:

* bulk transfers both ways at once, our stack as client (the kernel listens) and as server (the
  kernel connects), IPv4 and IPv6, each direction's bytes compared by sha256: 100 MB each way
  (``NG_TCP_BIG_MB`` changes it; about 3 s a test here), a few MB in the other tests;
* half-close from each side, with data flowing the other way after it;
* resets both ways: the kernel's SO_LINGER-0 close reaches our stream as a reset (and a ``hup``
  with ECONNRESET), our ``reset`` message makes the kernel's ``recv`` raise ECONNRESET;
* the kernel's SACK, timestamps and window scaling each off and on (the namespace's sysctls), and
  its congestion controls: both ends agree on what was negotiated (the kernel's view from ``ss
  -tin``, ours from the TCB);
* on this clean link, no retransmission storm on either side;
* calls refused both ways; sixteen connections at once on one listener; small request/response
  writes with ``nodelay``; a reader that stops (the window closes, the kernel probes, all
  arrives when it reads again); the MSS announced from a 9000-byte link MTU; an ECN-setup SYN;
  a new call from the same port ending our TIME_WAIT; closing with unread data.

Our side's TCB is read from the tcp node's internals (``Stack.tcb``), to compare it with the
kernel's view.

Waits are bounded by ``trio.fail_after`` only, as a safety net; nothing sleeps for timing.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import random
import re
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import netgraph
from nodes.iface import IFACE_COOKIE, NGM_IFACE_GET_IFNAME
from nodes.tcp.messages import NGM_TCP_GETSTATS, NGM_TCP_HUP, TCP_COOKIE, TCPC_SORRY, TcpStats
from nodes.tcp.node import TcpNode
from nodes.tcp.stream import TcpCallError, TcpStream, open_tcp_listener, open_tcp_stream
from nodes.tcp.tcb import Tcb
from tests.netns import Netns, namespace

KERNEL = {4: "192.0.2.1", 6: "2001:db8::1"}
OURS = {4: "192.0.2.2", 6: "2001:db8::2"}
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
MB = 1 << 20
# The big transfer of the default suite, in MB each way (spec: 100 MB; NG_TCP_BIG_MB=n to change).
BIG_MB = int(os.environ.get("NG_TCP_BIG_MB", "100"))
SMALL_MB = 4
WAIT = 10  # seconds: a safety net for anything but a bulk transfer
CHUNK = 64 * 1024


def transfer_wait(mb: int) -> float:
    """A safety net for a bulk transfer: generous (1 MB/s), never a timing."""
    return 30.0 + mb


# ------------------------------------------------------------------------------- the graph


@attrs.define
class Stack:
    """The graph of the module docstring, built in a test namespace."""

    graph: netgraph.Graph
    sock: netgraph.Socket
    ns: Netns
    ifname: str
    tcp: TcpNode
    # Kernel sockets made for the test, closed at its end whatever happens.
    kernel_sockets: list[trio.socket.SocketType] = attrs.Factory(list)

    def tcb(self, stream: TcpStream) -> Tcb:
        """Our side's TCB of ``stream``'s connection (to compare with the kernel's view)."""
        conn = self.tcp.channels[stream.channel].conn
        assert conn is not None
        return conn.core.tcb

    async def stats(self) -> TcpStats:
        reply = await self.sock.request("tcp0:", TCP_COOKIE, NGM_TCP_GETSTATS, cmdstr="getstats")
        assert isinstance(reply.args, TcpStats)
        return reply.args


async def build(graph: netgraph.Graph, ns: Netns) -> Stack:
    sock = graph.socket("app")
    await sock.mknode("ip", "ip0")
    await sock.mknode("tcp", "tcp0")
    await sock.connect("ip0:", "tcp0:", "tcp", "ip")
    await sock.mkpeer("ip0:", "iface", "link0", "inet")
    reply = await sock.request("ip0:link0", IFACE_COOKIE, NGM_IFACE_GET_IFNAME)
    ifname = reply.args
    assert isinstance(ifname, str)
    await sock.connect("ip0:", f"{ifname}:", "link1", "inet6")
    await sock.send_ascii("ip0:", f'addaddr {{ addr={OURS[4]}/24 hook="link0" }}')
    await sock.send_ascii("ip0:", f'addaddr {{ addr={OURS[6]}/64 hook="link1" }}')
    await ns.adopt(ifname, (f"{KERNEL[4]}/24", f"{KERNEL[6]}/64"))
    tcp = graph.find("tcp0")
    assert isinstance(tcp, TcpNode)
    return Stack(graph, sock, ns, ifname, tcp)


@pytest.fixture
async def ns() -> AsyncIterator[Netns]:
    async with namespace() as made:
        yield made


@pytest.fixture
async def stack(ns: Netns) -> AsyncIterator[Stack]:
    """The graph ends before the namespace goes (the fixture order says so)."""
    async with netgraph.open_graph() as graph:
        made = await build(graph, ns)
        try:
            yield made
        finally:
            for ksock in made.kernel_sockets:
                ksock.close()


async def sysctl(ns: Netns, name: str, value: str | int) -> None:
    """Set one of the namespace's sysctls (``net.ipv4.tcp_sack``...). Through /proc/sys, which
    shows the namespace of whoever opens it (``tee``, inside: no need for procps' sysctl)."""
    path = "/proc/sys/" + name.replace(".", "/")
    await ns.run("tee", path, input=f"{value}\n".encode())
    done = await ns.run("cat", path)
    assert done.stdout.split()[0] == str(value).encode(), (name, done.stdout)


# --------------------------------------------------------------------------- connections


@attrs.define
class Pair:
    """One connection: our stream and the kernel's socket."""

    ours: TcpStream
    kernel: trio.socket.SocketType


async def connect_pair(
    stack: Stack, version: int, role: str, port: int = 5001, *, congestion: str | None = None
) -> Pair:
    """``role`` "client": we call a kernel listener; "server": the kernel calls our listener.

    ``congestion``: the kernel socket's congestion control (TCP_CONGESTION; a namespace may set
    its default only to those in ``tcp_allowed_congestion_control``, a socket to any).
    """
    ns = stack.ns

    def kernel_socket() -> trio.socket.SocketType:
        made = ns.socket(FAMILY[version], socket.SOCK_STREAM)
        stack.kernel_sockets.append(made)
        if congestion is not None:
            made.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
        return made

    with trio.fail_after(WAIT):
        if role == "client":
            with kernel_socket() as listener:
                await listener.bind((KERNEL[version], port))
                listener.listen(1)
                ours = await open_tcp_stream(stack.graph, "tcp0:", KERNEL[version], port)
                kernel, _ = await listener.accept()
                stack.kernel_sockets.append(kernel)
        else:
            lst = await open_tcp_listener(stack.graph, "tcp0:", port)
            try:
                kernel = kernel_socket()
                await kernel.connect((OURS[version], port))
                ours = await lst.accept()
            finally:
                await lst.aclose()
    assert ours.remote == (ipaddress.ip_address(KERNEL[version]), kernel.getsockname()[1])
    assert ours.local[0] == ipaddress.ip_address(OURS[version])
    return Pair(ours, kernel)


async def close_pair(pair: Pair) -> None:
    await pair.ours.aclose()
    pair.kernel.close()


# --------------------------------------------------------------------------------- payload

# Random bytes, read at shifting offsets: a stream that does not repeat at any short period, so
# a segment put in the wrong place changes the hash; cheap to make for 100 MB.
_POOL = random.Random(8).randbytes(5 * MB)
_POOL_VIEW = memoryview(_POOL)


def chunks(total: int, seed: int, size: int = CHUNK) -> Iterator[memoryview]:
    assert size <= MB  # a piece starts in the first 4 MB of the 5 MB pool
    rng = random.Random(seed)
    left = total
    while left:
        n = min(size, left)
        offset = rng.randrange(4 * MB)
        yield _POOL_VIEW[offset : offset + n]
        left -= n


async def stream_send(stream: TcpStream, total: int, seed: int) -> str:
    digest = hashlib.sha256()
    for piece in chunks(total, seed):
        digest.update(piece)
        await stream.send_all(piece)
    return digest.hexdigest()


async def stream_recv(stream: TcpStream, total: int) -> str:
    """Exactly ``total`` bytes: an early end of stream fails."""
    digest = hashlib.sha256()
    got = 0
    while got < total:
        data = await stream.receive_some(total - got)
        assert data, f"end of stream after {got} of {total} bytes"
        digest.update(data)
        got += len(data)
    return digest.hexdigest()


async def kernel_send_all(ksock: trio.socket.SocketType, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[await ksock.send(view) :]


async def kernel_send(ksock: trio.socket.SocketType, total: int, seed: int) -> str:
    digest = hashlib.sha256()
    for piece in chunks(total, seed, 4 * CHUNK):
        digest.update(piece)
        await kernel_send_all(ksock, piece)
    return digest.hexdigest()


async def kernel_recv(ksock: trio.socket.SocketType, total: int) -> str:
    digest = hashlib.sha256()
    got = 0
    while got < total:
        data = await ksock.recv(min(total - got, 1 << 20))
        assert data, f"the kernel saw the end of stream after {got} of {total} bytes"
        digest.update(data)
        got += len(data)
    return digest.hexdigest()


async def kernel_recv_all(ksock: trio.socket.SocketType) -> bytes:
    """Everything up to the end of stream."""
    parts = []
    while data := await ksock.recv(1 << 16):
        parts.append(data)
    return b"".join(parts)


async def stream_recv_all(stream: TcpStream) -> bytes:
    parts = []
    while data := await stream.receive_some():
        parts.append(data)
    return b"".join(parts)


async def both_ways(pair: Pair, total: int) -> None:
    """``total`` bytes each way at once, compared by sha256."""
    hashes: dict[str, str] = {}

    async def run(name: str, fn: Any, *args: Any) -> None:
        hashes[name] = await fn(*args)

    with trio.fail_after(transfer_wait(total // MB)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "ours sent", stream_send, pair.ours, total, 1)
            nursery.start_soon(run, "kernel got", kernel_recv, pair.kernel, total)
            nursery.start_soon(run, "kernel sent", kernel_send, pair.kernel, total, 2)
            nursery.start_soon(run, "ours got", stream_recv, pair.ours, total)
    assert hashes["kernel got"] == hashes["ours sent"], "our stack to the kernel"
    assert hashes["ours got"] == hashes["kernel sent"], "the kernel to our stack"


async def end_both(pair: Pair) -> None:
    """Half-close both sides; each sees the other's end of stream and nothing before it."""
    with trio.fail_after(WAIT):
        await pair.ours.send_eof()
        pair.kernel.shutdown(socket.SHUT_WR)
        assert await pair.ours.receive_some() == b""
        assert await pair.kernel.recv(1) == b""


# ------------------------------------------------------------------- the kernel's view (ss)


@attrs.frozen
class KernelView:
    """A kernel socket's ``ss -tin`` line, as flags and ``name:value`` fields."""

    flags: frozenset[str]
    fields: dict[str, str]

    def number(self, name: str, default: int = 0) -> int:
        value = self.fields.get(name)
        return default if value is None else int(value)

    @property
    def retrans_total(self) -> int:
        """Retransmissions over the connection's life ("retrans:now/total")."""
        value = self.fields.get("retrans")
        return 0 if value is None else int(value.split("/")[1])

    @property
    def wscale(self) -> tuple[int, int] | None:
        """(the shift we announced, the kernel's own), when window scaling is on."""
        value = self.fields.get("wscale")
        if value is None:
            return None
        snd, rcv = value.split(",")
        return int(snd), int(rcv)


def parse_ss(text: str, peer: str) -> KernelView | None:
    """The entry for the connection to ``peer`` ("192.0.2.2:5001", "[2001:db8::2]:5001") in
    ``ss -tineH state established`` output (columns: Recv-Q Send-Q local peer extras; then a
    tab-indented line of details), or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        columns = line.split()
        if len(columns) >= 4 and columns[3] == peer and not line.startswith("\t"):
            details = lines[i + 1].split() if i + 1 < len(lines) else []
            flags = frozenset(word for word in details if ":" not in word)
            fields = dict(word.split(":", 1) for word in details if ":" in word)
            return KernelView(flags, fields)
    return None


async def kernel_view(ns: Netns, version: int, ours: TcpStream) -> KernelView:
    """The kernel's ``ss -tin`` entry for the connection to ``ours``.

    With ``-e`` too: iproute2's ss (6.1 at least) prints the ``ts`` and ``sack`` flags only then.
    """
    done = await ns.run("ss", "-tineH", "state", "established")
    _, our_port = ours.local
    peer = f"[{OURS[6]}]:{our_port}" if version == 6 else f"{OURS[4]}:{our_port}"
    view = parse_ss(done.stdout.decode(), peer)
    assert view is not None, f"no kernel socket to {peer} in ss:\n{done.stdout.decode()}"
    return view


def assert_no_storm(view: KernelView, ours: TcpStats) -> None:
    """A clean link: few retransmissions either way (a TUN queue may drop a handful)."""
    segs = view.number("data_segs_out")
    assert view.retrans_total <= max(20, segs // 100), (view.retrans_total, segs)
    sent = ours.segs_out
    assert ours.retransmits <= max(20, sent // 100), (ours.retransmits, sent)


def assert_negotiated(
    view: KernelView, tcb: Tcb, *, sack: bool, timestamps: bool, window_scaling: bool
) -> None:
    """Both ends agree on the options, and they are the ones expected."""
    assert ("sack" in view.flags) == sack, view
    assert ("ts" in view.flags) == timestamps, view
    assert (view.wscale is not None) == window_scaling, view
    assert (tcb.sack_ok, tcb.ts_ok, tcb.ws_ok) == (sack, timestamps, window_scaling)
    if window_scaling:
        assert view.wscale is not None
        # ss shows (the peer's shift, its own): ours is what the kernel applies to our windows.
        assert view.wscale == (tcb.rcv_wscale, tcb.snd_wscale), (view.wscale, tcb)
    # Each side's full segment: the MSS the other announced, less the timestamps option.
    assert view.number("mss") == tcb.our_mss - (12 if timestamps else 0), (view, tcb.our_mss)
    assert tcb.snd_mss == tcb.peer_mss - (12 if timestamps else 0), tcb
    header = 40 if isinstance(ipaddress.ip_address(tcb.local_addr), ipaddress.IPv4Address) else 60
    assert tcb.peer_mss == 1500 - header, tcb.peer_mss


# ------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("role", ["client", "server"])
async def test_bulk_both_ways_against_the_kernel(stack: Stack, role: str, version: int) -> None:
    """BIG_MB each way at once (100 MB by default)."""
    total = BIG_MB * MB
    pair = await connect_pair(stack, version, role)
    await both_ways(pair, total)
    view = await kernel_view(stack.ns, version, pair.ours)
    assert_negotiated(view, stack.tcb(pair.ours), sack=True, timestamps=True, window_scaling=True)
    stats = await stack.stats()
    assert_no_storm(view, stats)
    assert stats.bytes_in == stats.bytes_out == total
    await end_both(pair)
    await close_pair(pair)


@pytest.mark.parametrize("version", [4, 6])
async def test_we_half_close_and_still_receive(stack: Stack, version: int) -> None:
    """A request and our FIN; the kernel reads to the end, answers at length and closes."""
    pair = await connect_pair(stack, version, "client")
    answer = bytes(_POOL_VIEW[: 2 * MB])
    with trio.fail_after(WAIT):
        await pair.ours.send_all(b"GET / and that is all\r\n")
        await pair.ours.send_eof()
        assert await kernel_recv_all(pair.kernel) == b"GET / and that is all\r\n"
        async with trio.open_nursery() as nursery:

            async def answer_and_close() -> None:
                await kernel_send_all(pair.kernel, answer)
                pair.kernel.close()

            nursery.start_soon(answer_and_close)
            assert await stream_recv_all(pair.ours) == answer
        with pytest.raises(trio.ClosedResourceError):
            await pair.ours.send_all(b"more")
    await pair.ours.aclose()


@pytest.mark.parametrize("version", [4, 6])
async def test_the_kernel_half_closes_and_still_receives(stack: Stack, version: int) -> None:
    """The kernel's request and FIN; we read to the end, answer at length and close."""
    pair = await connect_pair(stack, version, "server")
    answer = bytes(_POOL_VIEW[MB : 3 * MB])
    with trio.fail_after(WAIT):
        await kernel_send_all(pair.kernel, b"a request, then FIN")
        pair.kernel.shutdown(socket.SHUT_WR)
        assert await stream_recv_all(pair.ours) == b"a request, then FIN"
        assert await pair.ours.receive_some() == b""  # and it stays at the end
        async with trio.open_nursery() as nursery:

            async def answer_and_close() -> None:
                await pair.ours.send_all(answer)
                await pair.ours.aclose()

            nursery.start_soon(answer_and_close)
            assert await kernel_recv_all(pair.kernel) == answer
    pair.kernel.close()


@pytest.mark.parametrize("version", [4, 6])
async def test_a_kernel_reset_reaches_our_stream(stack: Stack, version: int) -> None:
    """SO_LINGER 0 and close: our reader, waiting, gets a reset (and its socket a hup)."""
    pair = await connect_pair(stack, version, "client")
    with trio.fail_after(WAIT):
        await kernel_send_all(pair.kernel, b"before the reset")
        assert await pair.ours.receive_some() == b"before the reset"
        async with trio.open_nursery() as nursery:

            async def reset_soon() -> None:
                pair.kernel.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                pair.kernel.close()

            nursery.start_soon(reset_soon)
            with pytest.raises(trio.BrokenResourceError, match="reset"):
                await pair.ours.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await pair.ours.send_all(b"after the reset")
        _, hup = await pair.ours.socket.recv_msg()
    assert (hup.typecookie, hup.cmd) == (TCP_COOKIE, NGM_TCP_HUP)
    assert (hup.args.code, hup.args.param) == (TCPC_SORRY, errno.ECONNRESET)
    assert (await stack.stats()).resets_received == 1
    await pair.ours.aclose()


@pytest.mark.parametrize("version", [4, 6])
async def test_our_reset_reaches_the_kernel(stack: Stack, version: int) -> None:
    """``reset`` (in its ASCII form) on our channel: the kernel's recv raises ECONNRESET."""
    pair = await connect_pair(stack, version, "server")
    with trio.fail_after(WAIT):
        await pair.ours.send_all(b"before the reset")
        assert await pair.kernel.recv(100) == b"before the reset"
        async with trio.open_nursery() as nursery:

            async def reset_soon() -> None:
                await stack.sock.send_ascii("tcp0:", f'reset "{pair.ours.channel}"')

            nursery.start_soon(reset_soon)
            with pytest.raises(ConnectionResetError) as info:
                await pair.kernel.recv(100)
    assert info.value.errno == errno.ECONNRESET
    await close_pair(pair)


KNOBS = {
    "sack": "net.ipv4.tcp_sack",
    "timestamps": "net.ipv4.tcp_timestamps",
    "window_scaling": "net.ipv4.tcp_window_scaling",
}


@pytest.mark.parametrize("role", ["client", "server"])
@pytest.mark.parametrize("on", [0, 1])
@pytest.mark.parametrize("knob", sorted(KNOBS))
async def test_the_kernels_tcp_options_on_and_off(
    stack: Stack, knob: str, on: int, role: str
) -> None:
    """One of the kernel's options switched by its sysctl: both ends use it, or neither."""
    await sysctl(stack.ns, KNOBS[knob], on)
    pair = await connect_pair(stack, 4, role)
    await both_ways(pair, SMALL_MB * MB)
    view = await kernel_view(stack.ns, 4, pair.ours)
    expected = {name: True for name in KNOBS}
    expected[knob] = bool(on)
    assert_negotiated(view, stack.tcb(pair.ours), **expected)
    assert_no_storm(view, await stack.stats())
    await end_both(pair)
    await close_pair(pair)


@pytest.mark.parametrize("role", ["client", "server"])
async def test_every_option_off_over_ipv6(stack: Stack, role: str) -> None:
    """No SACK, no timestamps, no window scaling: a 1981-style peer, 64 KB window at most."""
    for name in KNOBS.values():
        await sysctl(stack.ns, name, 0)
    pair = await connect_pair(stack, 6, role)
    await both_ways(pair, SMALL_MB * MB)
    view = await kernel_view(stack.ns, 6, pair.ours)
    assert_negotiated(
        view, stack.tcb(pair.ours), sack=False, timestamps=False, window_scaling=False
    )
    assert_no_storm(view, await stack.stats())
    await end_both(pair)
    await close_pair(pair)


def congestion_controls() -> list[str]:
    try:
        with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
            found = f.read().split()
    except OSError:
        found = []
    return [name for name in ("reno", "cubic", "bbr") if name in found] or ["reno"]


@pytest.mark.parametrize("cc", congestion_controls())
async def test_the_kernel_sends_with_each_congestion_control(stack: Stack, cc: str) -> None:
    """The kernel as sender (its congestion control matters there): bytes intact, no storm."""
    pair = await connect_pair(stack, 4, "server", congestion=cc)
    total = SMALL_MB * 4 * MB
    with trio.fail_after(transfer_wait(total // MB)):
        async with trio.open_nursery() as nursery:
            sent: list[str] = []

            async def send() -> None:
                sent.append(await kernel_send(pair.kernel, total, 3))

            nursery.start_soon(send)
            got = await stream_recv(pair.ours, total)
    assert sent == [got]
    view = await kernel_view(stack.ns, 4, pair.ours)
    assert cc in view.flags, view
    assert_no_storm(view, await stack.stats())
    await end_both(pair)
    await close_pair(pair)


SS_SAMPLE = """\
0      0      192.0.2.1:5001 192.0.2.2:65162 ino:162854 sk:1 cgroup:unreachable:1 <->
\t ts sack cubic wscale:7,10 rto:204 rtt:0.654/0.261 mss:1448 pmtu:1500 retrans:0/2 \
data_segs_out:14628 pacing_rate 1065373528bps
0      0      [2001:db8::1]:5001 [2001:db8::2]:65162 ino:162855 sk:2 cgroup:unreachable:1 <->
\t bbr rto:204 mss:1428
"""


def test_ss_parsing() -> None:
    """The parser of ``ss -tineH`` output, on lines iproute2 6.1 printed (Linux 6.18)."""
    view = parse_ss(SS_SAMPLE, "192.0.2.2:65162")
    assert view is not None
    assert {"ts", "sack", "cubic"} <= view.flags
    assert view.wscale == (7, 10)
    assert view.retrans_total == 2
    assert (view.number("mss"), view.number("data_segs_out")) == (1448, 14628)
    assert re.fullmatch(r"\d+\.\d+/\d+\.\d+", view.fields["rtt"])
    six = parse_ss(SS_SAMPLE, "[2001:db8::2]:65162")
    assert six is not None
    assert ("ts" in six.flags, six.wscale, six.retrans_total) == (False, None, 0)
    assert parse_ss(SS_SAMPLE, "192.0.2.2:1") is None


@pytest.mark.parametrize("version", [4, 6])
async def test_refused_both_ways(stack: Stack, version: int) -> None:
    """No listener: the kernel's reset fails our call (TCPC_SORRY, ECONNREFUSED), and ours
    refuses the kernel's connect."""
    with trio.fail_after(WAIT):
        with pytest.raises(TcpCallError) as info:
            await open_tcp_stream(stack.graph, "tcp0:", KERNEL[version], 5999)
        assert (info.value.code, info.value.errno) == (TCPC_SORRY, errno.ECONNREFUSED)
        kernel = stack.ns.socket(FAMILY[version], socket.SOCK_STREAM)
        stack.kernel_sockets.append(kernel)
        with pytest.raises(ConnectionRefusedError):
            await kernel.connect((OURS[version], 5999))
    assert (await stack.stats()).no_listener >= 1


async def test_many_connections_at_once(stack: Stack) -> None:
    """Sixteen kernel clients on one listener of ours, each echoed at once, both families."""
    lst = await open_tcp_listener(stack.graph, "tcp0:", 7)
    size = 256 * 1024

    async def echo(stream: TcpStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.aclose()

    async def client(i: int) -> None:
        version = 4 if i % 2 else 6
        kernel = stack.ns.socket(FAMILY[version], socket.SOCK_STREAM)
        stack.kernel_sockets.append(kernel)
        await kernel.connect((OURS[version], 7))
        payload = bytes(_POOL_VIEW[i * size : (i + 1) * size])
        async with trio.open_nursery() as inner:

            async def send() -> None:
                await kernel_send_all(kernel, payload)
                kernel.shutdown(socket.SHUT_WR)

            inner.start_soon(send)
            assert await kernel_recv_all(kernel) == payload, i

    with trio.fail_after(transfer_wait(16 * size // MB)):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                while True:
                    nursery.start_soon(echo, await lst.accept())

            nursery.start_soon(serve)
            async with trio.open_nursery() as clients:
                for i in range(16):
                    clients.start_soon(client, i)
            nursery.cancel_scope.cancel()
    await lst.aclose()
    stats = await stack.stats()
    assert (stats.passive_opens, stats.established) == (16, 16)


@pytest.mark.parametrize("role", ["client", "server"])
async def test_request_response_in_small_writes(stack: Stack, role: str) -> None:
    """Two hundred round trips, each request written in two pieces (header, then body), each
    answer in one: every byte in order. With Nagle on, each round trip would wait for the
    kernel's delayed ACK (40 ms; Linux to Linux does the same), so ``nodelay`` is set, in its
    ASCII form, as an application doing this would."""
    pair = await connect_pair(stack, 4, role)
    await stack.sock.send_ascii(
        "tcp0:", f'setopt {{ channel="{pair.ours.channel}" name="nodelay" value=1 }}'
    )
    with trio.fail_after(WAIT * 3):
        for i in range(200):
            body = b"%d" % i * (i % 7 + 1)
            await pair.ours.send_all(b"%04d" % len(body))
            await pair.ours.send_all(body)
            header = await kernel_recv_exactly(pair.kernel, 4)
            assert await kernel_recv_exactly(pair.kernel, int(header)) == body
            await kernel_send_all(pair.kernel, b"ok %d;" % i)
            expected = b"ok %d;" % i
            got = b""
            while len(got) < len(expected):
                got += await pair.ours.receive_some(len(expected) - len(got))
            assert got == expected
    await end_both(pair)
    await close_pair(pair)


async def kernel_recv_exactly(ksock: trio.socket.SocketType, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = await ksock.recv(n - len(data))
        assert more, "early end of stream"
        data += more
    return data


# ---------------------------------------------------------------- a reader that stops reading


async def kernel_sender(ksock: trio.socket.SocketType, total: int, sent: list[int]) -> str:
    """:func:`kernel_send` that counts what the kernel took, as it goes, in ``sent[0]``."""
    digest = hashlib.sha256()
    for piece in chunks(total, 4, 4 * CHUNK):
        digest.update(piece)
        view = piece
        while view:
            n = await ksock.send(view)
            sent[0] += n
            view = view[n:]
    return digest.hexdigest()


async def test_a_reader_that_stops_closes_the_window_and_resumes(stack: Stack) -> None:
    """Our application stops reading: the window closes, the kernel waits (probing the zero
    window), and when we read again everything arrives intact."""
    pair = await connect_pair(stack, 4, "server")
    total = 96 * MB  # more than the stack holds (see the next test), so the window must close
    sent = [0]
    hashes: list[str] = []
    with trio.fail_after(transfer_wait(total // MB)):
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                hashes.append(await kernel_sender(pair.kernel, total, sent))

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            assert 0 < sent[0] < total, "the kernel was never held back"
            tcb = stack.tcb(pair.ours)
            assert (tcb.rcv_adv - tcb.rcv_nxt) & 0xFFFFFFFF == 0, "our window is not closed"
            hashes.append(await stream_recv(pair.ours, total))
    assert hashes[0] == hashes[1]
    await end_both(pair)
    await close_pair(pair)


async def test_a_reader_that_stops_holds_back_the_sender_within_the_buffers(
    stack: Stack,
) -> None:
    """SO_RCVBUF's meaning: what the kernel can push at a reader that reads nothing is bounded
    by our receive buffer (and one read on its way up) plus the kernel's own send buffer."""
    kernel_sndbuf = 256 * 1024
    pair = await connect_pair(stack, 4, "server")
    pair.kernel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, kernel_sndbuf)
    held = pair.kernel.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)  # Linux doubles it
    rcvbuf = stack.tcb(pair.ours).config.rcvbuf
    total = 96 * MB
    sent = [0]
    with trio.fail_after(transfer_wait(total // MB)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kernel_sender, pair.kernel, total, sent)
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            absorbed = sent[0]
            nursery.cancel_scope.cancel()
    await close_pair(pair)
    assert absorbed <= held + 2 * rcvbuf + 64 * 1024, f"{absorbed / MB:.1f} MB absorbed"


# ------------------------------------------------------------------------------- MSS and MTU


@pytest.mark.parametrize("role", ["client", "server"])
async def test_the_mss_follows_the_link_mtu(stack: Stack, role: str) -> None:
    """A 9000-byte MTU on the TUN link (both ends): each side announces MSS 8960 and sends
    full 8948-byte segments (timestamps on)."""
    await stack.sock.send_ascii(f"{stack.ifname}:", "setmtu 9000")
    await stack.sock.send_ascii("ip0:", 'setmtu { hook="link0" mtu=9000 }')
    pair = await connect_pair(stack, 4, role)
    await both_ways(pair, SMALL_MB * MB)
    view = await kernel_view(stack.ns, 4, pair.ours)
    tcb = stack.tcb(pair.ours)
    assert (tcb.our_mss, tcb.peer_mss) == (8960, 8960)
    assert view.number("mss") == 8948, view  # what the kernel sends us
    assert tcb.snd_mss == 8948
    await end_both(pair)
    await close_pair(pair)


# ------------------------------------------------------------------- more of the kernel's ways


async def test_an_ecn_setup_syn_is_answered_without_ecn(stack: Stack) -> None:
    """The kernel asks for ECN (tcp_ecn=1: ECE and CWR on its SYN, RFC 3168): we do not
    negotiate it, and must not refuse the SYN for it; the connection works without ECN."""
    await sysctl(stack.ns, "net.ipv4.tcp_ecn", 1)
    pair = await connect_pair(stack, 4, "server")
    await both_ways(pair, SMALL_MB * MB)
    view = await kernel_view(stack.ns, 4, pair.ours)
    assert "ecn" not in view.flags, view
    assert {"ts", "sack"} <= view.flags, view
    await end_both(pair)
    await close_pair(pair)


async def test_a_new_call_from_the_same_port_ends_our_time_wait(stack: Stack) -> None:
    """We close first (so we hold TIME_WAIT); the kernel calls again from the same address and
    port, three times: each SYN ends our TIME_WAIT and is a new call (RFC 9293 3.10.7.4,
    RFC 6191), as a kernel server would take it."""
    lst = await open_tcp_listener(stack.graph, "tcp0:", 80)
    for i in range(3):
        kernel = stack.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        stack.kernel_sockets.append(kernel)
        kernel.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await kernel.bind((KERNEL[4], 40000))
        with trio.fail_after(WAIT):
            await kernel.connect((OURS[4], 80))
            ours = await lst.accept()
            await ours.send_all(b"call %d" % i)
            await ours.aclose()
            assert await kernel_recv_all(kernel) == b"call %d" % i
            kernel.close()
            # Our ACK of the kernel's FIN must be in before it may use the 4-tuple again.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    await lst.aclose()
    stats = await stack.stats()
    assert (stats.passive_opens, stats.resets_sent, stats.rst_sent) == (3, 0, 0)


async def test_closing_with_unread_data_resets_the_kernel(stack: Stack) -> None:
    """Closing our stream with data the application never read: the kernel learns that data
    was lost (a reset, RFC 1122 4.2.2.13 and RFC 2525 2.17), not an orderly end."""
    pair = await connect_pair(stack, 4, "server")
    with trio.fail_after(WAIT):
        await kernel_send_all(pair.kernel, b"never read")
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # it has reached our stack
        await pair.ours.aclose()
        with pytest.raises(ConnectionResetError):
            await kernel_recv_all(pair.kernel)
    pair.kernel.close()
