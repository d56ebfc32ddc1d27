"""A user-space host on a TUN interface in a network namespace: what the TCP examples share.

The graph, in a trio program::

    [iface] inet  --- link0 [ip0] tcp --- ip [tcp0] (channels: TcpStream, TcpListener)
            inet6 --- link1

The iface node's TUN interface is made where the program runs, then moved into a network
namespace (``ip link set dev ng0 netns NS``; the node's descriptor keeps working) and configured
there: the kernel in the namespace gets :data:`KERNEL4` and :data:`KERNEL6`, the ip node has
:data:`OURS4` and :data:`OURS6`. Nothing is configured in the namespace the program runs in, and
only documentation addresses are used (192.0.2.0/24, 2001:db8::/32).

:func:`namespace` makes a namespace of its own (``ngdemo-<pid>``, deleted at the end) unless
one is named (``ip netns add NAME`` first; it is left as it was found, but for the interface,
which goes with the program). Needs root: CAP_NET_ADMIN for the TUN device and the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import trio

import netgraph
from nodes.iface import IFACE_COOKIE, NGM_IFACE_GET_IFNAME

KERNEL4: Final = "192.0.2.1"
KERNEL6: Final = "2001:db8::1"
OURS4: Final = "192.0.2.2"
OURS6: Final = "2001:db8::2"
TCP_PATH: Final = "tcp0:"  # the tcp node, for open_tcp_stream / open_tcp_listener


class SetupError(Exception):
    """Something the user can act on (no root, no ``ip``, a namespace that is not there)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"ip {' '.join(args)}: {done.stderr.strip() or 'failed'}")


async def _ip_async(*args: str) -> None:
    done = await trio.run_process(["ip", *args], capture_stderr=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"ip {' '.join(args)}: {done.stderr.decode().strip() or 'failed'}")


def check_setup(netns: str | None) -> None:
    if os.geteuid() != 0:
        raise SetupError("run as root: a TUN interface and a network namespace need it")
    if shutil.which("ip") is None:
        raise SetupError("needs iproute2's ip (apt-get install iproute2)")
    if netns is not None and not os.path.exists(f"/var/run/netns/{netns}"):
        raise SetupError(f"no network namespace {netns!r} (make it with: ip netns add {netns})")


@contextmanager
def namespace(name: str | None) -> Iterator[str]:
    """The namespace ``name``, or a new one deleted at the end (whatever happens)."""
    check_setup(name)
    if name is not None:
        yield name
        return
    made = f"ngdemo-{os.getpid()}"
    _ip("netns", "add", made)
    try:
        _ip("-n", made, "link", "set", "dev", "lo", "up")
        yield made
    finally:
        subprocess.run(["ip", "netns", "del", made], capture_output=True, check=False)


async def build(graph: netgraph.Graph, netns: str) -> str:
    """The graph of the module docstring, its interface moved into ``netns`` and configured
    there; returns the interface's name."""
    sock = graph.socket()
    try:
        await sock.mknode("ip", "ip0")
        await sock.mknode("tcp", "tcp0")
        await sock.connect("ip0:", "tcp0:", "tcp", "ip")
        await sock.mkpeer("ip0:", "iface", "link0", "inet")
        reply = await sock.request("ip0:link0", IFACE_COOKIE, NGM_IFACE_GET_IFNAME)
        ifname = str(reply.args)
        await sock.connect("ip0:", f"{ifname}:", "link1", "inet6")
        await sock.send_ascii("ip0:", f'addaddr {{ addr={OURS4}/24 hook="link0" }}')
        await sock.send_ascii("ip0:", f'addaddr {{ addr={OURS6}/64 hook="link1" }}')
    finally:
        await sock.close()
    await _ip_async("link", "set", "dev", ifname, "netns", netns)
    await _ip_async("-n", netns, "addr", "add", f"{KERNEL4}/24", "dev", ifname)
    await _ip_async("-n", netns, "addr", "add", f"{KERNEL6}/64", "dev", ifname, "nodad")
    await _ip_async("-n", netns, "link", "set", "dev", ifname, "up")
    return ifname
