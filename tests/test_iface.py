"""iface: a TUN interface as a node, against the Linux kernel in a namespace of the test's own.

Each test makes its own namespace (tests/netns.py), moves the node's TUN device into it and talks
to the kernel there: packets we build by hand go in through the ``inet``/``inet6`` hooks and reach
kernel sockets; what the kernel sends (UDP, ping) comes out of the hooks. Tests skip, saying
why, without root or /dev/net/tun; the offload code is also checked without the kernel, against
scapy as an oracle.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import netgraph
from netgraph import Hook, Item, Message, NetgraphError, Node, tag, tags_of
from netgraph.cmdlist import cmdlist_of, decode_args, encode_args
from netgraph.message import FLOW_COOKIE, GENERIC_COOKIE, NGM_TEXT_STATUS
from nodes import vnet
from nodes.iface import (
    IFACE_COOKIE,
    NGM_IFACE_GET_IFINDEX,
    NGM_IFACE_GET_IFNAME,
    NGM_IFACE_GET_STATS,
    NGM_IFACE_SET_IFNAME,
    NGM_LINK_IS_DOWN,
    VNET_TAG,
    IfaceNode,
    IfaceOffload,
    IfaceStats,
    open_tun,
)
from nodes.vnet import VnetHdr
from nodes.vnet import checksum as vnet_checksum
from tests.conftest import make_types
from tests.netns import (
    Netns,
    echo_reply,
    ip_header,
    namespace,
    parse_ip,
    pseudo_header,
    require_ping,
    udp_packet,
)

ROOT = Path(__file__).parent.parent
V4_KERNEL, V4_OURS = "192.0.2.1", "192.0.2.2"
V6_KERNEL, V6_OURS = "2001:db8::1", "2001:db8::2"
ADDRESSES = (f"{V4_KERNEL}/24", f"{V6_KERNEL}/64")
WAIT = 10  # seconds: a safety net only; every wait is for data or an event


class Catcher(Node):
    """Records batches as they arrive (their sizes) and wakes whoever waits for enough items."""

    def constructor(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.items: list[Item] = []
        self.want = 0
        self.enough = trio.Event()
        self.gone = trio.Event()

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.batches.append((hook.name, len(items)))
        self.items.extend(items)
        if len(self.items) >= self.want:
            self.enough.set()

    def disconnect(self, hook: Hook) -> None:
        self.gone.set()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
async def ns() -> AsyncIterator[Netns]:
    async with namespace() as made:
        yield made


@pytest.fixture
async def graph(ns: Netns) -> AsyncIterator[netgraph.Graph]:
    """A graph that ends before the namespace goes (the fixture order says so)."""
    types = make_types()
    types.register("test_catcher", Catcher)
    async with netgraph.open_graph(types=types) as g:
        yield g


async def ifname(sock: netgraph.Socket, path: str) -> str:
    reply = await sock.request(path, IFACE_COOKIE, NGM_IFACE_GET_IFNAME)
    assert isinstance(reply.args, str)
    return reply.args


async def stats(sock: netgraph.Socket, path: str) -> IfaceStats:
    reply = await sock.request(path, IFACE_COOKIE, NGM_IFACE_GET_STATS)
    assert isinstance(reply.args, IfaceStats)
    return reply.args


async def iface_in(sock: netgraph.Socket, ns: Netns, *hooks: str) -> str:
    """An iface hooked to the socket node by ``hooks`` (same names both ends), its interface in
    ``ns`` with the kernel's addresses, up; returns the interface's name."""
    await sock.mkpeer(".", "iface", hooks[0], hooks[0])
    name = await ifname(sock, hooks[0])
    for hook in hooks[1:]:
        await sock.connect(".", f"{name}:", hook, hook)
    await ns.adopt(name, ADDRESSES)
    return name


async def recv_where(
    sock: netgraph.Socket, want: Callable[[str, bytes], bool]
) -> tuple[str, bytes]:
    """The next item on any hook that ``want`` accepts; others (IPv6 noise: MLD, RS) are skipped."""
    with trio.fail_after(WAIT):
        while True:
            hook, item = await sock.recv_data()
            if want(hook, bytes(item)):
                return hook, bytes(item)


def udp_to(port: int) -> Callable[[str, bytes], bool]:
    def want(hook: str, packet: bytes) -> bool:
        _, _, proto, body = parse_ip(packet)
        return proto == 17 and struct.unpack_from("!H", body, 2)[0] == port

    return want


# -------------------------------------------------------------------- the node and its interface


async def test_mkpeer_makes_an_interface_named_like_the_node(
    ns: Netns, graph: netgraph.Graph
) -> None:
    sock = graph.socket("app")
    await sock.mkpeer(".", "iface", "inet", "inet")
    name = await ifname(sock, "inet")
    assert name.startswith("ng")
    info = await sock.nodeinfo("inet")
    assert (info.type, info.name) == ("iface", name)  # FreeBSD names the node after it
    shown = await trio.run_process(["ip", "link", "show", "dev", name], capture_stdout=True)
    assert "POINTOPOINT" in shown.stdout.decode()
    _, text = await sock.request_ascii(f"{name}:", "getifname")
    assert text == f'"{name}"'
    reply = await sock.request("inet", IFACE_COOKIE, NGM_IFACE_GET_IFINDEX)
    assert reply.args == socket.if_nametoindex(name)
    await ns.adopt(name)  # in another namespace the index is looked up there
    listed = await ns.ip("-o", "link", "show", "dev", name)
    reply = await sock.request("inet", IFACE_COOKIE, NGM_IFACE_GET_IFINDEX)
    assert listed.startswith(f"{reply.args}: {name}:")


async def test_shutdown_removes_the_interface_and_closes_the_fd(graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    before = fd_count()
    await sock.mkpeer(".", "iface", "inet", "inet")
    name = await ifname(sock, "inet")
    await sock.request("inet", IFACE_COOKIE, NGM_IFACE_GET_IFINDEX)  # makes a control socket
    assert fd_count() > before
    await sock.rmhook(".", "inet")
    assert name in graph.names  # as FreeBSD's, it stays without hooks
    await sock.shutdown(f"{name}:")
    assert name not in graph.names
    gone = await trio.run_process(
        ["ip", "link", "show", "dev", name], check=False, capture_stdout=True, capture_stderr=True
    )
    assert gone.returncode != 0
    assert fd_count() == before


async def test_deleting_the_interface_shuts_the_node_down(ns: Netns, graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    await sock.mkpeer(".", "test_catcher", "c", "x")
    await sock.name_node("c", "catcher")
    await sock.mkpeer("catcher:", "iface", "inet", "inet")
    name = await ifname(sock, "catcher:inet")
    await ns.adopt(name, ADDRESSES)
    catcher = graph.names["catcher"]
    assert isinstance(catcher, Catcher)
    await ns.ip("link", "del", "dev", name)
    with trio.fail_after(WAIT):
        await catcher.gone.wait()  # its hook to the iface went with the iface node
    assert name not in graph.names


async def test_unknown_hooks_are_einval(graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    await sock.mkpeer(".", "iface", "inet", "inet")
    name = await ifname(sock, "inet")
    with pytest.raises(NetgraphError) as caught:
        await sock.connect(".", f"{name}:", "x", "ipx")
    assert caught.value.errno == errno.EINVAL
    await sock.connect(".", f"{name}:", "b", "allip")
    await sock.connect(".", f"{name}:", "c", "inet6")


# -------------------------------------------------------------------------- into the kernel


@pytest.mark.parametrize(
    ("family", "kernel", "ours", "hook"),
    [
        pytest.param(socket.AF_INET, V4_KERNEL, V4_OURS, "inet", id="inet"),
        pytest.param(socket.AF_INET6, V6_KERNEL, V6_OURS, "inet6", id="inet6"),
        pytest.param(socket.AF_INET6, V6_KERNEL, V6_OURS, "allip", id="allip"),
    ],
)
async def test_packets_on_a_hook_reach_a_kernel_socket(
    ns: Netns, graph: netgraph.Graph, family: int, kernel: str, ours: str, hook: str
) -> None:
    sock = graph.socket("app")
    name = await iface_in(sock, ns, hook)
    with ns.socket(family) as ksock:
        await ksock.bind((kernel, 5000))
        payload = b"hello, kernel"
        await sock.send_data(hook, udp_packet(ours, kernel, 4000, 5000, payload))
        with trio.fail_after(WAIT):
            data, source = await ksock.recvfrom(2048)
    assert data == payload
    assert (ipaddress.ip_address(source[0]), source[1]) == (ipaddress.ip_address(ours), 4000)
    counts = await stats(sock, f"{name}:")
    assert (counts.inPackets, counts.inOctets) == (1, len(udp_packet(ours, kernel, 1, 2, payload)))


# ------------------------------------------------------------------------ out of the kernel


@pytest.mark.parametrize(
    ("family", "kernel", "ours"),
    [
        pytest.param(socket.AF_INET, V4_KERNEL, V4_OURS, id="inet"),
        pytest.param(socket.AF_INET6, V6_KERNEL, V6_OURS, id="inet6"),
    ],
)
async def test_kernel_packets_leave_by_their_familys_hook(
    ns: Netns, graph: netgraph.Graph, family: int, kernel: str, ours: str
) -> None:
    sock = graph.socket("app")
    await iface_in(sock, ns, "inet", "inet6")
    with ns.socket(family) as ksock:
        await ksock.bind((kernel, 6000))
        await ksock.sendto(b"from the kernel", (ours, 7000))
        hook, packet = await recv_where(sock, udp_to(7000))
    assert hook == ("inet" if family == socket.AF_INET else "inet6")
    src, dst, proto, body = parse_ip(packet)
    assert (str(src), str(dst), proto) == (
        str(ipaddress.ip_address(kernel)),
        str(ipaddress.ip_address(ours)),
        17,
    )
    assert body[8:] == b"from the kernel"


async def test_allip_takes_both_families(ns: Netns, graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    await iface_in(sock, ns, "allip")
    with ns.socket(socket.AF_INET) as k4, ns.socket(socket.AF_INET6) as k6:
        await k4.sendto(b"4", (V4_OURS, 7004))
        await k6.sendto(b"6", (V6_OURS, 7006))
        assert (await recv_where(sock, udp_to(7004)))[0] == "allip"
        assert (await recv_where(sock, udp_to(7006)))[0] == "allip"


@pytest.mark.parametrize(("ours", "flag"), [(V4_OURS, "-4"), (V6_OURS, "-6")])
async def test_ping_from_the_kernel_answered_through_the_hooks(
    ns: Netns, graph: netgraph.Graph, ours: str, flag: str
) -> None:
    """ping in the namespace: its echo requests come out of a hook, our replies go back in."""
    require_ping()
    sock = graph.socket("app")
    await iface_in(sock, ns, "inet", "inet6")
    result: list[int] = []

    async def ping() -> None:
        done = await ns.run("ping", flag, "-c", "2", "-i", "0.2", "-W", "5", ours, check=False)
        result.append(done.returncode)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping)
            answered = 0
            while answered < 2:
                hook, packet = await sock.recv_data()
                reply = echo_reply(bytes(packet))
                if reply is not None:
                    await sock.send_data(hook, reply)
                    answered += 1
    assert result == [0]


async def test_packets_ready_together_come_as_one_batch(ns: Netns, graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    await sock.mkpeer(".", "test_catcher", "c", "x")
    await sock.name_node("c", "catcher")
    await sock.mkpeer("catcher:", "iface", "inet", "inet")
    await ns.adopt(await ifname(sock, "catcher:inet"), ADDRESSES)
    catcher = graph.names["catcher"]
    assert isinstance(catcher, Catcher)
    catcher.want = 100
    with ns.stdlib_socket(socket.AF_INET) as ksock:
        for i in range(100):  # all queued in the device before the node's reader runs
            ksock.sendto(b"%d" % i, (V4_OURS, 7100))
        with trio.fail_after(WAIT):
            await catcher.enough.wait()
    assert [parse_ip(bytes(p))[3][8:] for p in catcher.items] == [b"%d" % i for i in range(100)]
    # Read until the device was empty, at most 64 at a time (then other tasks get a turn).
    assert catcher.batches == [("inet", 64), ("inet", 36)]


# ------------------------------------------------------------------------------- messages


async def test_statistics_count_packets_octets_and_drops(ns: Netns, graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    await sock.mkpeer(".", "iface", "inet", "inet")
    name = await ifname(sock, "inet")
    path = f"{name}:"
    packet = udp_packet(V4_OURS, V4_KERNEL, 4000, 5000, b"down")
    await sock.send_data("inet", packet)  # the interface is down: EIO, dropped
    await sock.send_data("inet", b"\x10not ip")  # EINVAL, dropped
    counts = await stats(sock, path)
    assert (counts.inPackets, counts.inDown, counts.inInvalid) == (0, 1, 1)
    await ns.adopt(name, ADDRESSES)
    await sock.send_data("inet", packet)
    with ns.stdlib_socket(socket.AF_INET6) as k6, ns.stdlib_socket(socket.AF_INET) as k4:
        k6.sendto(b"no hook for me", (V6_OURS, 7200))  # no inet6 or allip hook: dropped
        k4.sendto(b"after it", (V4_OURS, 7201))  # ...and read after it
        _, out = await recv_where(sock, udp_to(7201))
    reply, text = await sock.request_ascii(path, "getclrstats")
    counts = reply.args
    assert isinstance(counts, IfaceStats)
    assert (counts.inPackets, counts.inOctets) == (1, len(packet))
    assert counts.outPackets >= 1
    assert counts.outOctets >= len(out)
    assert counts.outNoHook >= 1
    assert f"inPackets=1 inOctets={len(packet)}" in text
    assert (await stats(sock, path)).inPackets == 0  # cleared
    status = await sock.request(path, GENERIC_COOKIE, NGM_TEXT_STATUS)
    assert f"Interface: {name}" in status.args


async def test_setifname_renames_the_interface_and_the_node(
    ns: Netns, graph: netgraph.Graph
) -> None:
    """Renamed where it is: in the test's namespace (the root namespace is left alone)."""
    sock = graph.socket("app")
    await sock.mkpeer(".", "iface", "inet", "inet")
    old = await ifname(sock, "inet")
    await ns.adopt(old, ADDRESSES)
    await ns.ip("link", "set", "dev", old, "down")  # older kernels rename only what is down
    new = "ngrenamed"
    await sock.send_ascii("inet", f'setifname "{new}"')
    assert await ifname(sock, "inet") == new
    assert (await sock.nodeinfo("inet")).name == new  # the node's name followed
    assert await ns.link_exists(new)
    assert not await ns.link_exists(old)
    for bad, code in (("lo", errno.EEXIST), ("has space", errno.EINVAL), ("x" * 16, errno.EINVAL)):
        with pytest.raises(NetgraphError) as caught:
            await sock.request("inet", IFACE_COOKIE, NGM_IFACE_SET_IFNAME, bad)
        assert caught.value.errno == code, bad
    await sock.send_ascii("inet", 'setifname "ngt%d"')  # the first free number
    assert await ifname(sock, "inet") == "ngt0"
    assert await ns.link_exists("ngt0")
    assert "192.0.2.1/24" in await ns.ip("addr", "show", "dev", "ngt0")  # the same interface


async def test_mtu_offload_carrier_and_flags(ns: Netns, graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    await sock.mkpeer(".", "iface", "inet", "inet")
    name = await ifname(sock, "inet")
    await sock.send_ascii("inet", "point2point")  # what a TUN interface is anyway
    with pytest.raises(NetgraphError) as caught:
        await sock.send_ascii("inet", "broadcast")
    assert caught.value.errno == errno.EOPNOTSUPP
    await ns.adopt(name, ADDRESSES)
    with pytest.raises(NetgraphError) as caught:
        await sock.send_ascii("inet", "point2point")
    assert caught.value.errno == errno.EBUSY  # as FreeBSD: not while up
    await sock.send_ascii("inet", "setmtu 1400")
    assert (await sock.request_ascii("inet", "getmtu"))[1] == "1400"
    assert "mtu 1400" in await ns.ip("link", "show", "dev", name)
    with pytest.raises(NetgraphError) as caught:
        await sock.send_ascii("inet", "setmtu 10")
    assert caught.value.errno == errno.EINVAL
    await sock.send_ascii("inet", "setoffload { csum=1 tso4=1 tso6=1 rawinet=1 }")
    assert (await sock.request_ascii("inet", "getoffload"))[1] == (
        "{ csum=1 tso4=1 tso6=1 rawinet=1 }"
    )
    with pytest.raises(NetgraphError) as caught:  # TSO without checksum offload: Linux says no
        await sock.send_ascii("inet", "setoffload { tso4=1 }")
    assert caught.value.errno == errno.EINVAL
    await sock.send_msg("inet", Message(FLOW_COOKIE, NGM_LINK_IS_DOWN, None, "linkdown"))
    assert "NO-CARRIER" in await ns.ip("link", "show", "dev", name)
    await sock.send_ascii("inet", "linkup")
    assert "NO-CARRIER" not in await ns.ip("link", "show", "dev", name)


# ---------------------------------------------------------------- without the capability


SCRIPT = """
import trio, netgraph
async def main():
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        try:
            await sock.mkpeer(".", "iface", "inet", "inet")
        except netgraph.NetgraphError as err:
            print(err.errno, err)
        else:
            print("made")
trio.run(main)
"""


def _setpriv() -> str:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to drop capabilities")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun here")
    if os.geteuid() != 0:
        pytest.skip("dropping capabilities and changing user need root")
    return setpriv


async def test_without_cap_net_admin_a_clear_eperm() -> None:
    setpriv = _setpriv()
    drop = [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]
    done = await trio.run_process(
        [*drop, sys.executable, "-c", SCRIPT], cwd=ROOT, capture_stdout=True, capture_stderr=True
    )
    out = done.stdout.decode()
    assert out.startswith(f"{errno.EPERM} Operation not permitted (EPERM): "), out
    assert "CAP_NET_ADMIN" in out
    # ngctl says so too, and exits with an error, no traceback.
    done = await trio.run_process(
        [*drop, sys.executable, "-m", "ngctl", "mkpeer", "iface", "inet", "inet"],
        cwd=ROOT,
        check=False,
        capture_stdout=True,
        capture_stderr=True,
    )
    err = done.stderr.decode()
    assert done.returncode != 0
    assert "ngctl: send msg: Operation not permitted" in err, err  # as FreeBSD says it
    assert "CAP_NET_ADMIN" in err, err
    assert "Traceback" not in err


async def test_as_nobody_a_clear_eperm() -> None:
    setpriv = _setpriv()
    nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    probe = await trio.run_process(
        [*nobody, sys.executable, "-c", "import netgraph, nodes.iface"],
        cwd=ROOT,
        check=False,
        capture_stdout=True,
        capture_stderr=True,
    )
    if probe.returncode != 0:
        pytest.skip("user nobody cannot run this project's Python here")
    done = await trio.run_process(
        [*nobody, sys.executable, "-c", SCRIPT], cwd=ROOT, capture_stdout=True, capture_stderr=True
    )
    out = done.stdout.decode()
    assert out.startswith(f"{errno.EPERM} Operation not permitted (EPERM): "), out
    assert "/dev/net/tun" in out


# ------------------------------------------------------------------------------- offloads


def partial(packet: bytes, l4: int, proto: int, field: int) -> bytes:
    """``packet`` with its transport checksum only started, as the kernel hands it over with
    checksum offload: the field holds the pseudo-header sum (not complemented)."""
    src, dst, _, _ = parse_ip(packet)
    length = len(packet) - l4
    start = 0xFFFF - vnet_checksum(pseudo_header(src, dst, proto, length))
    out = bytearray(packet)
    struct.pack_into("!H", out, l4 + field, start)
    return bytes(out)


def valid_l4(packet: bytes) -> bool:
    src, dst, proto, body = parse_ip(packet)
    return vnet_checksum(pseudo_header(src, dst, proto, len(body)) + body) == 0xFFFF


@pytest.mark.parametrize("version", [4, 6])
def test_unoffload_cuts_tso_packets_as_scapy_reads_them(version: int) -> None:
    inet = pytest.importorskip("scapy.layers.inet")
    inet6 = pytest.importorskip("scapy.layers.inet6")
    payload = bytes(range(256)) * 20  # 5120 bytes: 3 segments of 1448 and one of 776
    if version == 4:
        ip = inet.IP(src=V4_KERNEL, dst=V4_OURS, id=100)
        gso, l4 = vnet.GSO_TCPV4, 20
    else:
        ip = inet6.IPv6(src=V6_KERNEL, dst=V6_OURS)
        gso, l4 = vnet.GSO_TCPV6, 40
    whole = bytes(ip / inet.TCP(sport=80, dport=4000, seq=0xFFFFF000, flags="FPAC") / payload)
    hdr = VnetHdr(vnet.NEEDS_CSUM, gso, l4 + 20, 1448, l4, 16)
    segments = vnet.unoffload(partial(whole, l4, 6, 16), hdr)
    assert [len(s) - l4 - 20 for s in segments] == [1448, 1448, 1448, 776]
    parsed = [(inet.IP if version == 4 else inet6.IPv6)(s) for s in segments]
    seqs = [(0xFFFFF000 + i * 1448) & 0xFFFFFFFF for i in range(4)]
    assert [p[inet.TCP].seq for p in parsed] == seqs  # wrapping round 2**32
    assert [str(p[inet.TCP].flags) for p in parsed] == ["AC", "A", "A", "FPA"]
    assert b"".join(bytes(p[inet.TCP].payload) for p in parsed) == payload
    for segment in segments:
        assert valid_l4(segment)
        fresh = (inet.IP if version == 4 else inet6.IPv6)(segment)
        del fresh[inet.TCP].chksum  # scapy computes what it deletes: its checksums are ours
        if version == 4:
            del fresh.chksum
        assert bytes(fresh) == segment
    if version == 4:
        assert [p.id for p in parsed] == [100, 101, 102, 103]
        assert [p.len for p in parsed] == [1488, 1488, 1488, 816]
    else:
        assert [p.plen for p in parsed] == [1468, 1468, 1468, 796]


def test_unoffload_finishes_checksums_and_cuts_uso_packets() -> None:
    inet = pytest.importorskip("scapy.layers.inet")
    whole = udp_packet(V4_KERNEL, V4_OURS, 53, 4000, b"q" * 3000)
    hdr = VnetHdr(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 20, 6)
    (done,) = vnet.unoffload(partial(whole, 20, 17, 6), hdr)
    assert done == whole  # the checksum finished is the one computed whole
    assert inet.IP(done)[inet.UDP].chksum == inet.IP(whole)[inet.UDP].chksum
    hdr = VnetHdr(vnet.NEEDS_CSUM, vnet.GSO_UDP_L4, 28, 1000, 20, 6)
    segments = vnet.unoffload(partial(whole, 20, 17, 6), hdr)
    assert [parse_ip(s)[3][8:] for s in segments] == [b"q" * 1000] * 3
    assert all(valid_l4(s) for s in segments)
    assert [inet.IP(s)[inet.UDP].len for s in segments] == [1008] * 3
    with pytest.raises(vnet.OffloadError):
        vnet.unoffload(whole, VnetHdr(0, vnet.GSO_UDP, 28, 1000, 20, 6))  # UFO: not handled
    with pytest.raises(vnet.OffloadError):
        vnet.unoffload(whole[:30], VnetHdr(vnet.NEEDS_CSUM, 0, 0, 0, 20, 60))


async def test_checksum_offload_finished_unless_the_hook_takes_it_raw(
    ns: Netns, graph: netgraph.Graph
) -> None:
    """With checksum offload the kernel leaves UDP checksums to us: the node finishes them, or
    passes them on unfinished, tagged, to a hook that asked for raw packets."""
    sock = graph.socket("app")
    name = await iface_in(sock, ns, "inet")
    payload = b"offloaded" * 100
    with ns.stdlib_socket(socket.AF_INET) as k4:
        k4.sendto(payload, (V4_OURS, 7300))
        _, plain = await recv_where(sock, udp_to(7300))
        assert valid_l4(plain)
        await sock.send_ascii(f"{name}:", "setoffload { csum=1 }")
        k4.sendto(payload, (V4_OURS, 7301))
        _, finished = await recv_where(sock, udp_to(7301))
        assert valid_l4(finished)
        assert not tags_of(finished)
        await sock.send_ascii(f"{name}:", "setoffload { csum=1 rawinet=1 }")
        k4.sendto(payload, (V4_OURS, 7302))
        with trio.fail_after(WAIT):
            while True:
                _, item = await sock.recv_data()
                if parse_ip(bytes(item))[2] == 17:
                    break
    hdr = tags_of(item)[VNET_TAG]
    assert hdr.flags & vnet.NEEDS_CSUM
    assert (hdr.csum_start, hdr.csum_offset) == (20, 6)
    assert not valid_l4(bytes(item))  # left for whoever asked to finish
    assert valid_l4(vnet.unoffload(bytes(item), hdr)[0])


def tcp_packet(
    src: str, dst: str, ports: tuple[int, int], seq: int, ack: int, flags: int, options: bytes = b""
) -> bytes:
    """An IPv4 TCP segment without payload (a SYN-ACK or an ACK from our side)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    header = bytearray(
        struct.pack("!HHIIBBHHH", *ports, seq, ack, (20 + len(options)) << 2, flags, 65535, 0, 0)
        + options
    )
    struct.pack_into("!H", header, 16, vnet_checksum(pseudo_header(s, d, 6, len(header)) + header))
    return ip_header(s, d, 6, len(header)) + bytes(header)


async def test_tso_from_the_kernel_cut_into_segments_unless_raw(
    ns: Netns, graph: netgraph.Graph
) -> None:
    """A kernel TCP connection through the interface with TSO on: a raw hook gets the kernel's
    super-packets (more than one MSS in one item); a plain hook gets them cut to the MSS, each
    segment checksummed, in sequence."""
    sock = graph.socket("app")
    name = await iface_in(sock, ns, "inet")
    await sock.send_ascii(f"{name}:", "setoffload { csum=1 tso4=1 rawinet=1 }")
    mss = 1400
    data = bytes(range(256)) * 400  # 102400 bytes, more than two flights

    def tcp_to_80(hook: str, packet: bytes) -> bool:
        _, _, proto, body = parse_ip(packet)
        return proto == 6 and struct.unpack_from("!H", body, 2)[0] == 80

    with ns.socket(socket.AF_INET, socket.SOCK_STREAM) as ksock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ksock.connect, (V4_OURS, 80))
            _, syn = await recv_where(sock, tcp_to_80)
            sport, _, kseq = struct.unpack_from("!HHI", parse_ip(syn)[3])
            synack = tcp_packet(
                V4_OURS,
                V4_KERNEL,
                (80, sport),
                1000,
                kseq + 1,
                0x12,
                struct.pack("!BBH", 2, 4, mss),
            )
            await sock.send_data("inet", synack)
        await ksock.send(data)
        received: dict[int, bytes] = {}  # by sequence number
        raw_sizes: list[int] = []
        first = kseq + 1
        while sum(map(len, received.values())) < 10 * mss:  # the initial window
            _, item = await recv_where(sock, tcp_to_80)
            body = parse_ip(item)[3]
            raw_sizes.append(len(body) - (body[12] >> 4) * 4)
            received[struct.unpack_from("!I", body, 4)[0]] = body[(body[12] >> 4) * 4 :]
        assert max(raw_sizes) > mss  # the kernel did send super-packets
        await sock.send_ascii(f"{name}:", "setoffload { csum=1 tso4=1 }")
        acked = first + sum(map(len, received.values()))
        await sock.send_data("inet", tcp_packet(V4_OURS, V4_KERNEL, (80, sport), 1001, acked, 0x10))
        segments: list[bytes] = []
        while sum(len(parse_ip(s)[3]) - 20 for s in segments) < 10 * mss:
            segments.append((await recv_where(sock, tcp_to_80))[1])
    assert all(valid_l4(s) for s in segments)
    bodies = [parse_ip(s)[3] for s in segments]
    assert max(len(b) - (b[12] >> 4) * 4 for b in bodies) <= mss
    seqs = [struct.unpack_from("!I", b, 4)[0] for b in bodies]
    assert seqs[0] == acked
    stream = b"".join(b[(b[12] >> 4) * 4 :] for b in bodies)
    assert all(s == acked + i for s, i in zip(seqs, _offsets(bodies), strict=True))
    assert stream == data[acked - first : acked - first + len(stream)]


def _offsets(bodies: list[bytes]) -> list[int]:
    out, at = [], 0
    for b in bodies:
        out.append(at)
        at += len(b) - (b[12] >> 4) * 4
    return out


async def test_an_item_tagged_for_gso_goes_into_the_kernel_in_one_write(
    ns: Netns, graph: netgraph.Graph
) -> None:
    """An item with a ``vnet`` tag is written with that header: one UDP super-packet in, three
    datagrams out of the kernel socket (GRO's effect, done by the sender)."""
    sock = graph.socket("app")
    name = await iface_in(sock, ns, "inet")
    whole = udp_packet(V4_OURS, V4_KERNEL, 4000, 5000, b"g" * 3000)
    hdr = VnetHdr(vnet.NEEDS_CSUM, vnet.GSO_UDP_L4, 28, 1000, 20, 6)
    with ns.socket(socket.AF_INET) as ksock:
        await ksock.bind((V4_KERNEL, 5000))
        await sock.send_data("inet", tag(partial(whole, 20, 17, 6), **{VNET_TAG: hdr}))
        with trio.fail_after(WAIT):
            got = [await ksock.recv(2048) for _ in range(3)]
    assert got == [b"g" * 1000] * 3
    counts = await stats(sock, f"{name}:")
    assert (counts.inPackets, counts.inOctets) == (1, len(whole))


# ------------------------------------------------------- the data path over a stand-in device


@pytest.fixture
async def fake_tun(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[socket.socket, socket.socket]]:
    """The node's device replaced by one end of a datagram socketpair; the test has the other
    end, which sees what the node writes (header and all) and can send it packets. No root."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    theirs.setblocking(False)
    monkeypatch.setattr("nodes.iface.open_tun", lambda: (os.dup(ours.fileno()), "fake0"))
    with ours, theirs:
        yield ours, theirs


async def test_a_full_device_holds_the_sender_back(
    fake_tun: tuple[socket.socket, socket.socket],
) -> None:
    """EAGAIN on write: the sender waits until the device takes the packet (backpressure)."""
    ours, theirs = fake_tun
    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await sock.mkpeer(".", "iface", "inet", "inet")
        filler = 0
        while True:  # fill the device's queue from the node's own end
            try:
                ours.send(b"filler")
            except BlockingIOError:
                break
            filler += 1
        packet = udp_packet(V4_OURS, V4_KERNEL, 1, 2, b"waits")
        sent = trio.Event()

        async def send() -> None:
            await sock.send_data("inet", packet)
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            assert (await stats(sock, "fake0:")).inWaits == 1
            for _ in range(filler):  # the device takes some: the packet goes
                await trio.lowlevel.wait_readable(theirs)
                assert theirs.recv(2048) == b"filler"
        assert sent.is_set()
        await trio.lowlevel.wait_readable(theirs)
        assert theirs.recv(2048) == bytes(vnet.HDR_LEN) + packet  # the offload header first
        counts = await stats(sock, "fake0:")
        assert (counts.inPackets, counts.inWaits) == (1, 1)
        # The other way: what the device gives, after its header, leaves by the family's hook.
        theirs.send(bytes(vnet.HDR_LEN) + packet)
        with trio.fail_after(WAIT):
            assert await sock.recv_data() == ("inet", packet)
        graph.close()


@given(
    size=st.integers(1, 9000),
    mss=st.integers(1, 3000),
    version=st.sampled_from([4, 6]),
    proto=st.sampled_from([6, 17]),
)
def test_unoffload_keeps_every_byte_in_checksummed_segments(
    size: int, mss: int, version: int, proto: int
) -> None:
    payload = bytes(i & 0xFF for i in range(size))
    src, dst = (V4_KERNEL, V4_OURS) if version == 4 else (V6_KERNEL, V6_OURS)
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    l4 = 20 if version == 4 else 40
    if proto == 17:
        whole = udp_packet(src, dst, 53, 4000, payload)
        gso, field, l4_len = vnet.GSO_UDP_L4, 6, 8
    else:
        header = struct.pack("!HHIIBBHHH", 80, 4000, 7, 9, 5 << 4, 0x18, 100, 0, 0)
        whole = ip_header(s, d, 6, 20 + size) + header + payload
        gso = vnet.GSO_TCPV4 if version == 4 else vnet.GSO_TCPV6
        field, l4_len = 16, 20
    hdr = VnetHdr(vnet.NEEDS_CSUM, gso, l4 + l4_len, mss, l4, field)
    segments = vnet.unoffload(partial(whole, l4, proto, field), hdr)
    assert len(segments) == -(-size // mss)
    assert all(valid_l4(segment) for segment in segments)
    assert b"".join(parse_ip(segment)[3][l4_len:] for segment in segments) == payload
    assert max(len(parse_ip(segment)[3]) - l4_len for segment in segments) <= mss


def test_every_message_has_a_binary_form() -> None:
    """One cmdlist gives both forms: what a daemon client sends and gets back is FreeBSD's
    layout (uint64 counters, uint8 flags, a NUL-terminated name, a uint32 index)."""
    by_name = cmdlist_of(IfaceNode)[0]
    counts = IfaceStats(inPackets=3, inOctets=300, outNoHook=2)
    reply = by_name["getstats"].reply
    assert reply is not None
    data = encode_args(reply, counts)
    assert len(data) == 8 * len(attrs.fields(IfaceStats))
    assert decode_args(reply, data) == counts
    offload = IfaceOffload(csum=1, tso4=1, rawinet6=1)
    request = by_name["setoffload"].request
    assert request is not None
    assert encode_args(request, offload) == bytes([1, 1, 0, 0, 0, 0, 0, 1, 0])
    assert decode_args(request, encode_args(request, offload)) == offload
    name_type = by_name["getifname"].reply
    assert name_type is not None
    assert encode_args(name_type, "ng0") == b"ng0\0"
    index_type = by_name["getifindex"].reply
    assert index_type is not None
    assert encode_args(index_type, 7) == struct.pack("=I", 7)
    assert (by_name["getifname"].cookie, by_name["getifname"].cmd) == (858821773, 1)  # FreeBSD's
    assert by_name["getifindex"].cmd == 4


def test_without_dev_net_tun_a_clear_enoent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nodes.iface.TUN_DEVICE", "/nonexistent/net/tun")
    with pytest.raises(NetgraphError) as caught:
        open_tun()
    assert caught.value.errno == errno.ENOENT
    assert "no /nonexistent/net/tun" in str(caught.value)
