"""Network namespaces for tests that talk to the Linux kernel through a TUN interface.

:func:`namespace` makes a namespace of its own (``ip netns add ngtest-<pid>-<n>``) and deletes it
at the end whatever happens; nothing is ever configured in the root namespace. An iface node
makes its TUN device where the test process is (TUNSETIFF creates it in the namespace of whoever
opened ``/dev/net/tun``); :meth:`Netns.adopt` then moves it in (``ip link set dev NAME netns
NS``, which keeps the descriptor working: the node reads and writes it as before), gives it
addresses and brings it up. The other way works too (checked by hand): ``/dev/net/tun`` opened
by a thread that has ``setns()``'d into the namespace, then TUNSETIFF from any thread, makes the
device inside, since a TUN descriptor belongs to the namespace it was opened in; but the node
opens its device itself, in the test process's namespace, so moving it is what tests do.

Only documentation addresses may be configured (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32): :meth:`Netns.adopt` refuses others. Commands run inside with ``ip netns exec``
(:meth:`Netns.run`), and :meth:`Netns.socket` makes a kernel socket inside the namespace that the
test process itself uses with trio (no helper process, no readiness race).

:func:`require_netns` skips a test, saying why, where this cannot work: not root (or no
CAP_NET_ADMIN and CAP_SYS_ADMIN), no ``/dev/net/tun``, no ``ip``.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import pytest
import trio

from nodes.iface import socket_in_netns
from nodes.vnet import checksum

__all__ = [
    "DOC_NETS",
    "Netns",
    "echo_reply",
    "ip_header",
    "namespace",
    "parse_ip",
    "pseudo_header",
    "require_netns",
    "require_ping",
    "skip_reason",
    "udp_datagram",
    "udp_packet",
]

DOC_NETS: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_counter = itertools.count()


def _has_caps(*bits: int) -> bool:
    """Whether this process has the effective capabilities ``bits`` (CAP_NET_ADMIN is 12)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
                    return all(eff >> bit & 1 for bit in bits)
    except OSError:
        pass
    return False


CAP_NET_ADMIN: Final = 12
CAP_SYS_ADMIN: Final = 21


def skip_reason() -> str | None:
    """Why kernel TUN tests cannot run here, or None when they can."""
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun: the kernel has no TUN device here"
    if not _has_caps(CAP_NET_ADMIN, CAP_SYS_ADMIN):
        return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for TUN devices and namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's ip (make sysdeps)"
    return None


def require_netns() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


def require_ping() -> str:
    ping = shutil.which("ping")
    if ping is None:
        pytest.skip("needs ping (iputils-ping; make sysdeps)")
    return ping


def _documentation(address: str) -> None:
    network = ipaddress.ip_interface(address).network
    if not any(network.version == net.version and network.subnet_of(net) for net in DOC_NETS):  # type: ignore[arg-type]
        raise ValueError(f"{address} is not a documentation address; tests use only those")


class Netns:
    """One test namespace, by name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/var/run/netns/{name}"

    async def ip(self, *args: str) -> str:
        """``ip -n NS ARGS``; its output."""
        done = await trio.run_process(["ip", "-n", self.name, *args], capture_stdout=True)
        return done.stdout.decode()

    async def run(
        self, *argv: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside the namespace (``ip netns exec``), capturing its output."""
        return await trio.run_process(
            ["ip", "netns", "exec", self.name, *argv],
            capture_stdout=True,
            capture_stderr=True,
            check=check,
            stdin=input,
        )

    async def adopt(self, ifname: str, addresses: Sequence[str] = ()) -> None:
        """Move interface ``ifname`` in from the test's namespace, address it, bring it up.

        IPv6 addresses skip duplicate address detection, so they work at once.
        """
        for address in addresses:
            _documentation(address)
        await trio.run_process(["ip", "link", "set", "dev", ifname, "netns", self.name])
        for address in addresses:
            extra = ["nodad"] if ipaddress.ip_interface(address).version == 6 else []
            await self.ip("addr", "add", address, "dev", ifname, *extra)
        await self.ip("link", "set", "dev", ifname, "up")

    async def route(self, prefix: str, ifname: str) -> None:
        _documentation(prefix)
        await self.ip("route", "add", prefix, "dev", ifname)

    def stdlib_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
    ) -> socket.socket:
        """A kernel socket inside the namespace (blocking), for synchronous use."""
        with open(self.path) as ns:
            return socket_in_netns(ns.fileno(), family, kind)

    def socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
    ) -> trio.socket.SocketType:
        """A kernel socket inside the namespace, for this process to use with trio."""
        return trio.socket.from_stdlib_socket(self.stdlib_socket(family, kind))

    async def link_exists(self, ifname: str) -> bool:
        done = await trio.run_process(
            ["ip", "-n", self.name, "link", "show", "dev", ifname],
            check=False,
            capture_stdout=True,
            capture_stderr=True,
        )
        return done.returncode == 0


@asynccontextmanager
async def namespace() -> AsyncIterator[Netns]:
    """A fresh namespace with its loopback up; deleted at the end, whatever happens."""
    require_netns()
    name = f"ngtest-{os.getpid()}-{next(_counter)}"
    await trio.run_process(["ip", "netns", "add", name])
    try:
        ns = Netns(name)
        await ns.ip("link", "set", "dev", "lo", "up")
        yield ns
    finally:
        # Synchronous, so that a cancelled test still removes it; a namespace left behind is an
        # error, not a quiet leak.
        done = subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        if done.returncode != 0 or os.path.exists(f"/var/run/netns/{name}"):
            raise RuntimeError(f"ip netns del {name} failed: {done.stderr.decode().strip()}")


# ------------------------------------------------------------ packets for the kernel, by hand

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def pseudo_header(src: IPAddress, dst: IPAddress, proto: int, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, proto)


def ip_header(src: IPAddress, dst: IPAddress, proto: int, length: int, ttl: int = 64) -> bytes:
    """An IPv4 or IPv6 header (no options) for ``length`` octets of ``proto`` payload."""
    if src.version == 6:
        return struct.pack("!IHBB", 6 << 28, length, proto, ttl) + src.packed + dst.packed
    header = bytearray(
        struct.pack("!BBHHHBBH", 0x45, 0, 20 + length, 0x1234, 0, ttl, proto, 0)
        + src.packed
        + dst.packed
    )
    struct.pack_into("!H", header, 10, checksum(header))
    return bytes(header)


def udp_datagram(src: IPAddress, dst: IPAddress, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header and payload, checksummed for ``src`` and ``dst``."""
    length = 8 + len(payload)
    datagram = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(pseudo_header(src, dst, 17, length) + datagram)
    return datagram[:6] + struct.pack("!H", csum) + datagram[8:]


def udp_packet(
    src: IPAddress | str, dst: IPAddress | str, sport: int, dport: int, payload: bytes
) -> bytes:
    """A whole IPv4 or IPv6 UDP packet with correct checksums."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    datagram = udp_datagram(s, d, sport, dport, payload)
    return ip_header(s, d, 17, len(datagram)) + datagram


def parse_ip(packet: bytes) -> tuple[IPAddress, IPAddress, int, bytes]:
    """Source, destination, protocol and payload of a packet without options or extensions."""
    if packet[0] >> 4 == 4:
        hl = (packet[0] & 15) * 4
        src4, dst4 = ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])
        return src4, dst4, packet[9], packet[hl : struct.unpack_from("!H", packet, 2)[0]]
    src6, dst6 = ipaddress.IPv6Address(packet[8:24]), ipaddress.IPv6Address(packet[24:40])
    return src6, dst6, packet[6], packet[40 : 40 + struct.unpack_from("!H", packet, 4)[0]]


def echo_reply(request: bytes) -> bytes | None:
    """The ICMP or ICMPv6 echo reply to ``request``, or None if it is no echo request."""
    src, dst, proto, body = parse_ip(request)
    if (proto, body[:1]) == (1, b"\x08"):
        reply = bytearray(b"\x00\x00\x00\x00" + body[4:])
        struct.pack_into("!H", reply, 2, checksum(reply))
    elif (proto, body[:1]) == (58, b"\x80"):
        reply = bytearray(b"\x81\x00\x00\x00" + body[4:])
        struct.pack_into("!H", reply, 2, checksum(pseudo_header(dst, src, 58, len(reply)) + reply))
    else:
        return None
    return ip_header(dst, src, proto, len(reply)) + bytes(reply)
