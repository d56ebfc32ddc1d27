"""The ip node against the Linux kernel, through an iface (TUN) node in a test namespace.

The graph: ``app:udp -- udp:[ip] link0 -- inet:[iface]`` and ``[ip] link1 -- inet6:[iface]``, the
interface moved into a namespace of the test's own. The kernel side has 192.0.2.1/24 and
2001:db8::1/64 on the interface; the ip node has 192.0.2.2/24 on link0 and 2001:db8::2/64 on
link1. ping in the namespace is answered by the ip node; UDP from a kernel socket comes up the
ip node's ``udp`` hook tagged, and our answer goes back down to the kernel socket. The same graph
is also built from ngctl lines, as a user would.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio

import netgraph
from netgraph import tag, tags_of
from ngctl.commands import Session, Status
from nodes.iface import IFACE_COOKIE, NGM_IFACE_GET_IFNAME
from tests.conftest import Capture
from tests.netns import Netns, namespace, require_ping, udp_datagram

KERNEL = {4: "192.0.2.1", 6: "2001:db8::1"}
OURS = {4: "192.0.2.2", 6: "2001:db8::2"}
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
WAIT = 10  # seconds: a safety net only


@pytest.fixture
async def ns() -> AsyncIterator[Netns]:
    async with namespace() as made:
        yield made


@pytest.fixture
async def graph(ns: Netns) -> AsyncIterator[netgraph.Graph]:
    """A graph that ends before the namespace goes (the fixture order says so)."""
    async with netgraph.open_graph() as g:
        yield g


async def build(sock: netgraph.Socket, ns: Netns) -> str:
    """The graph of the module docstring, through the API; returns the interface's name."""
    await sock.mkpeer(".", "ip", "udp", "udp")
    await sock.name_node("udp", "ip0")
    await sock.mkpeer("ip0:", "iface", "link0", "inet")
    reply = await sock.request("ip0:link0", IFACE_COOKIE, NGM_IFACE_GET_IFNAME)
    name = reply.args
    assert isinstance(name, str)
    await sock.connect("ip0:", f"{name}:", "link1", "inet6")
    await sock.send_ascii("ip0:", f'addaddr {{ addr={OURS[4]}/24 hook="link0" }}')
    await sock.send_ascii("ip0:", f'addaddr {{ addr={OURS[6]}/64 hook="link1" }}')
    await ns.adopt(name, (f"{KERNEL[4]}/24", f"{KERNEL[6]}/64"))
    return name


async def ping_both(ns: Netns) -> None:
    require_ping()
    for version in (4, 6):
        done = await ns.run(
            "ping", f"-{version}", "-c", "3", "-i", "0.2", "-W", "5", OURS[version], check=False
        )
        out = done.stdout.decode()
        assert done.returncode == 0, out + done.stderr.decode()
        assert "3 received" in out, out


async def udp_round_trip(sock: netgraph.Socket, ns: Netns, version: int) -> None:
    """A kernel socket's datagram comes up the ip node's udp hook; our answer goes back."""
    kernel, ours = ipaddress.ip_address(KERNEL[version]), ipaddress.ip_address(OURS[version])
    with ns.socket(FAMILY[version]) as ksock:
        await ksock.bind((KERNEL[version], 5000))
        await ksock.sendto(b"question", (OURS[version], 6000))
        with trio.fail_after(WAIT):
            hook, item = await sock.recv_data()
        assert hook == "udp"
        tags = tags_of(item)
        assert (tags["src"], tags["dst"], tags["proto"]) == (kernel, ours, 17)
        assert tags["link"] == ("link0" if version == 4 else "link1")
        assert tags["ttl"] == 64
        sport, dport, length = struct.unpack_from("!HHH", item)
        assert (sport, dport, length, bytes(item[8:])) == (5000, 6000, 16, b"question")
        answer = udp_datagram(ours, kernel, 6000, 5000, b"answer")
        await sock.send_data("udp", tag(answer, dst=kernel, src=ours))
        with trio.fail_after(WAIT):
            data, source = await ksock.recvfrom(2048)
    assert data == b"answer"
    assert (ipaddress.ip_address(source[0]), source[1]) == (ours, 6000)


async def test_kernel_pings_the_ip_node(ns: Netns, graph: netgraph.Graph) -> None:
    sock = graph.socket("app")
    await build(sock, ns)
    await ping_both(ns)


@pytest.mark.parametrize("version", [4, 6])
async def test_udp_between_a_kernel_socket_and_the_udp_hook(
    ns: Netns, graph: netgraph.Graph, version: int
) -> None:
    sock = graph.socket("app")
    await build(sock, ns)
    await udp_round_trip(sock, ns, version)


NGCTL_LINES = f"""\
# An ip node on a TUN interface: link0 carries IPv4, link1 IPv6.
mkpeer . ip udp udp
name udp ip0
mkpeer ip0: iface link0 inet
name ip0:link0 kif
connect ip0: kif: link1 inet6
msg ip0: addaddr {{ addr={OURS[4]}/24 hook="link0" }}
msg ip0: addaddr {{ addr={OURS[6]}/64 hook="link1" }}
msg kif: getifname
"""


async def test_the_same_graph_from_ngctl_lines(ns: Netns, graph: netgraph.Graph) -> None:
    sock = graph.socket("ngctl1")
    cap = Capture()
    session = Session(sock, printer=cap, msg_wait=5.0)
    assert await session.run_lines(NGCTL_LINES.splitlines()) == Status.OK, cap.err
    out, err = cap.take()
    assert not err
    found = re.search(r'^Args:\t"(\w+)"$', "\n".join(out), re.MULTILINE)
    assert found is not None, out
    await ns.adopt(found[1], (f"{KERNEL[4]}/24", f"{KERNEL[6]}/64"))
    await ping_both(ns)
    for version in (4, 6):
        await udp_round_trip(sock, ns, version)


GRAPH_FILE = f"""\
# An ip node on a TUN interface, as a graph file: link0 carries IPv4, link1 IPv6.
version: 1
nodes:
  - {{name: ip0, type: ip}}
  - {{name: kif, type: iface}}
links:
  - ip0:link0 kif:inet
  - ip0:link1 kif:inet6
messages:
  - ip0: addaddr {{ addr={OURS[4]}/24 hook="link0" }}
  - ip0: addaddr {{ addr={OURS[6]}/64 hook="link1" }}
"""


async def test_the_same_graph_from_a_graph_file(ns: Netns, graph: netgraph.Graph) -> None:
    from netgraph import graphfile

    sock = graph.socket("app")
    made = await graphfile.apply(sock, graphfile.parse(GRAPH_FILE, "kernel.yaml"))
    assert sorted(info.type for info in made) == ["iface", "ip"]
    reply = await sock.request("kif:", IFACE_COOKIE, NGM_IFACE_GET_IFNAME)
    await ns.adopt(reply.args, (f"{KERNEL[4]}/24", f"{KERNEL[6]}/64"))
    await sock.connect(".", "ip0:", "udp", "udp")
    await ping_both(ns)
    for version in (4, 6):
        await udp_round_trip(sock, ns, version)
