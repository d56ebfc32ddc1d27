"""``iface``: a Linux TUN interface as a node (FreeBSD's ng_iface; spec tcp.md 1).

Making the node makes the interface: ``/dev/net/tun`` is opened and a TUN device created
(``IFF_TUN | IFF_NO_PI | IFF_VNET_HDR``) with the first free name ``ng0``, ``ng1``...; the node
takes the interface's name as its own when that is free, as FreeBSD's does. The interface goes
when the node shuts down (the descriptor is closed, and a TUN device without ``IFF_PERSIST``
vanishes with it); like FreeBSD's, the node stays when its last hook goes. Creating a TUN device
needs CAP_NET_ADMIN: without it, or without ``/dev/net/tun``, making the node fails with EPERM,
ENOENT or ENXIO and a line saying what is missing.

Hooks ``inet``, ``inet6`` and ``allip`` carry raw IP packets, no link header, one per item.
What the kernel sends out of the interface leaves by ``inet`` (IPv4) or ``inet6`` (IPv6), told
apart by the version nibble, or by ``allip`` when that family's hook is missing; with no hook to
take it a packet is dropped and counted. Whatever arrives on any hook is written to the
interface: the kernel receives it (it reads the version nibble itself, so a hook does not bind a
family on the way in). Other hook names are EINVAL (FreeBSD says EPFNOSUPPORT).

Data path. The descriptor is non-blocking and waited on with trio (as ``trio/_unix_pipes.py``
does). The node's reader task reads until EAGAIN, at most ``BATCH_LIMIT`` packets, and sends
them on as one batch per hook (no checkpoint per packet); it waits for readability only when the
device is drained. Writes happen in the sender's chain (coroutine ``rcvdata``/``rcvbatch``): on
EAGAIN the sender waits until the device is writable (backpressure); on any other error (EIO:
the interface is down; EINVAL: not an IP packet; ENOBUFS) the packet is dropped and counted, and
the sender goes on. The counters: "in" is from the hooks into the kernel (the interface's input,
as FreeBSD counts it), "out" from the kernel out of the hooks.

Offloads. Every packet read or written carries a 10-byte ``virtio_net_hdr`` (``IFF_VNET_HDR``;
``bench/ip_tun.py`` measures what that costs a plain echo loop), so that offloads can be
switched on while the node runs: ``setoffload { csum=1 tso4=1 tso6=1 }`` lets the kernel hand
over packets with unfinished checksums and 64 KB TCP (and with ``uso4``/``uso6`` UDP)
super-packets, one read each. Hooks still carry plain IP packets: the node finishes checksums
and cuts super-packets up (:mod:`nodes.vnet`), unless a hook opts in (``rawinet=1``...): then
its items are what the kernel gave, those with offload state tagged ``vnet`` (a
:class:`nodes.vnet.VnetHdr`). An item sent to the node with a ``vnet`` tag is written with that
header, so a 64 KB TCP segment goes into the kernel in one write (GRO's effect). Offloads are
all off when the node is made.

Messages (cookie 858821773, FreeBSD's; numbers 1-4 are FreeBSD's, 5 is 6WIND's Linux port's):

========================= ================================================================
``getifname``             the interface's name: ``"ng0"``
``point2point``           no-op: a TUN interface is always point-to-point (EBUSY while up)
``broadcast``             EOPNOTSUPP: TUN has no broadcast mode (EBUSY while up, as FreeBSD)
``getifindex``            the interface index, in its network namespace
``setifname "tun7"``      rename the interface (EEXIST, EINVAL, EPERM as Linux says, and
                          EBUSY while up where Linux renames only interfaces that are down;
                          ``"x%d"`` takes the first free number); the node's name follows
                          when it was the interface's
``getstats``              ``{ inPackets= inOctets= outPackets= outOctets= outNoHook= ... }``
``clrstats``, ``getclrstats``
``setmtu 9000``, ``getmtu``  the interface's MTU (Linux checks the range: EINVAL)
``setoffload { ... }``    ``csum tso4 tso6 tsoecn uso4 uso6`` (TUNSETOFFLOAD; TSO needs csum)
                          and ``rawinet rawinet6 rawallip`` (the hooks that take raw packets)
``getoffload``            the same structure
``linkup``, ``linkdown``  flow messages (FreeBSD's NGM_LINK_IS_UP/DOWN): the carrier on or off
========================= ================================================================

``getstats``, ``getmtu`` and ``getoffload`` carry NGM_READONLY: they are answered even while a
sender is held back by a full device (other messages wait for it, spec 1.12).

The interface may be moved to another network namespace (``ip link set dev ng0 netns NS``); the
descriptor keeps working, and the messages act on the interface where it is (the node enters
that namespace, with CAP_SYS_ADMIN, only to make a control socket there). If the interface is
deleted under the node (``ip link del``, or its namespace goes), the node shuts down.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import attrs
import trio

from netgraph import Cmd, Hook, Item, Message, NetgraphError, Node, tag
from netgraph.message import FLOW_COOKIE, NGM_HASREPLY, NGM_READONLY
from netgraph.parse import STRING, UINT8, UINT32, UINT64, Struct, field

from . import vnet
from .vnet import HDR_LEN, ZERO_HDR, OffloadError, VnetHdr

log = logging.getLogger("netgraph")

IFACE_COOKIE: Final = 858821773
NGM_IFACE_GET_IFNAME: Final = 1
NGM_IFACE_POINT2POINT: Final = 2
NGM_IFACE_BROADCAST: Final = 3
NGM_IFACE_GET_IFINDEX: Final = 4
NGM_IFACE_SET_IFNAME: Final = 5
# Getters of our own are read-only (NGM_READONLY, NGM_HASREPLY): they pass a write that is
# waiting for the device (the gate of spec 1.12 holds other messages back until it is done).
RO_HR: Final = NGM_READONLY | NGM_HASREPLY
NGM_IFACE_GET_STATS: Final = 6 | RO_HR
NGM_IFACE_CLR_STATS: Final = 7
NGM_IFACE_GETCLR_STATS: Final = 8
NGM_IFACE_SET_MTU: Final = 9
NGM_IFACE_GET_MTU: Final = 10 | RO_HR
NGM_IFACE_SET_OFFLOAD: Final = 11
NGM_IFACE_GET_OFFLOAD: Final = 12 | RO_HR
NGM_LINK_IS_UP: Final = 32
NGM_LINK_IS_DOWN: Final = 33

HOOK_INET: Final = "inet"
HOOK_INET6: Final = "inet6"
HOOK_ALLIP: Final = "allip"
HOOKS: Final = (HOOK_INET, HOOK_INET6, HOOK_ALLIP)
# The tag on raw items: their virtio_net_hdr, when it says anything (a VnetHdr).
VNET_TAG: Final = "vnet"

IFNAME_PATTERN: Final = "ng%d"
IFNAMSIZ: Final = 16
TUN_DEVICE: Final = "/dev/net/tun"
# At most this many packets read in one go (one batch); then other tasks get a turn.
BATCH_LIMIT: Final = 64
# A 64 KB GSO packet and its header fit; os.read gives back what it does not use.
READ_SIZE: Final = 65536 + HDR_LEN

# <linux/if_tun.h>
TUNSETIFF: Final = 0x400454CA
TUNGETIFF: Final = 0x800454D2
TUNSETOFFLOAD: Final = 0x400454D0
TUNSETCARRIER: Final = 0x400454E2
TUNGETDEVNETNS: Final = 0x54E3
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08
TUN_F_USO4: Final = 0x20
TUN_F_USO6: Final = 0x40
# <linux/sockios.h>, <net/if.h>
SIOCGIFFLAGS: Final = 0x8913
SIOCSIFNAME: Final = 0x8923
SIOCGIFMTU: Final = 0x8921
SIOCSIFMTU: Final = 0x8922
SIOCGIFINDEX: Final = 0x8933
IFF_UP: Final = 0x1
CLONE_NEWNET: Final = 0x40000000
IFREQ: Final = struct.Struct("16s24x")
IFREQ_INT: Final = struct.Struct("16si20x")
IFREQ_FLAGS: Final = struct.Struct("16sH22x")


@attrs.define
class IfaceStats:
    """Counters; "in" is into the kernel (from the hooks), "out" out of it (to the hooks)."""

    inPackets: int = field(UINT64)
    inOctets: int = field(UINT64)
    outPackets: int = field(UINT64)
    outOctets: int = field(UINT64)
    outNoHook: int = field(UINT64)  # read, but no hook for its family: dropped
    outRefused: int = field(UINT64)  # sent out of a hook whose peer failed to take it
    outBadOffload: int = field(UINT64)  # an offloaded packet that could not be undone: dropped
    inWaits: int = field(UINT64)  # writes that found the device full (EAGAIN) and waited
    inDown: int = field(UINT64)  # EIO: written while the interface was down; dropped
    inInvalid: int = field(UINT64)  # EINVAL: not an IP packet (or empty); dropped
    inNoBufs: int = field(UINT64)  # ENOBUFS/ENOMEM: dropped
    inErrors: int = field(UINT64)  # any other write error: dropped
    readErrors: int = field(UINT64)  # reads that failed other than with EAGAIN


@attrs.frozen
class IfaceOffload:
    """What TUNSETOFFLOAD switches on, and which hooks take offloaded packets as they are."""

    csum: int = field(UINT8)
    tso4: int = field(UINT8)
    tso6: int = field(UINT8)
    tsoecn: int = field(UINT8)
    uso4: int = field(UINT8)
    uso6: int = field(UINT8)
    rawinet: int = field(UINT8)
    rawinet6: int = field(UINT8)
    rawallip: int = field(UINT8)

    def tun_flags(self) -> int:
        bits = (
            (self.csum, TUN_F_CSUM),
            (self.tso4, TUN_F_TSO4),
            (self.tso6, TUN_F_TSO6),
            (self.tsoecn, TUN_F_TSO_ECN),
            (self.uso4, TUN_F_USO4),
            (self.uso6, TUN_F_USO6),
        )
        return sum(flag for on, flag in bits if on)

    def raw_hooks(self) -> frozenset[str]:
        pairs = (
            (self.rawinet, HOOK_INET),
            (self.rawinet6, HOOK_INET6),
            (self.rawallip, HOOK_ALLIP),
        )
        return frozenset(name for on, name in pairs if on)


_STATS = Struct(IfaceStats)
_OFFLOAD = Struct(IfaceOffload)


# ------------------------------------------------------------------- the TUN device


def open_tun(pattern: str = IFNAME_PATTERN) -> tuple[int, str]:
    """Create a TUN device; its descriptor (non-blocking, close-on-exec) and its name.

    Every failure is a NetgraphError saying what is missing.
    """
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetgraphError(
            errno.ENOENT, f"no {TUN_DEVICE}: this system has no TUN device node (modprobe tun)"
        ) from None
    except PermissionError:
        raise NetgraphError(
            errno.EPERM,
            f"cannot open {TUN_DEVICE}: permission denied; an iface node needs root or"
            " CAP_NET_ADMIN and access to the device",
        ) from None
    except OSError as err:
        code = err.errno or errno.ENXIO
        if code in (errno.ENODEV, errno.ENXIO):
            raise NetgraphError(
                errno.ENXIO, f"{TUN_DEVICE}: the kernel has no TUN driver (modprobe tun)"
            ) from None
        raise NetgraphError(code, f"cannot open {TUN_DEVICE}: {err.strerror}") from None
    try:
        request = IFREQ_FLAGS.pack(pattern.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
        reply = fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError as err:
        os.close(fd)
        code = err.errno or errno.EIO
        if code == errno.EPERM:
            raise NetgraphError(
                errno.EPERM,
                "creating a TUN interface needs CAP_NET_ADMIN (run as root, or grant the"
                " capability)",
            ) from None
        raise NetgraphError(code, f"TUNSETIFF {pattern!r}: {err.strerror}") from None
    return fd, _name_of(reply)


def _name_of(ifreq: bytes) -> str:
    return ifreq[:IFNAMSIZ].split(b"\0", 1)[0].decode(errors="surrogateescape")


_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def socket_in_netns(
    ns_fd: int, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
) -> socket.socket:
    """A socket made in the network namespace ``ns_fd`` refers to.

    ``setns`` changes only the calling thread's namespace, so a short-lived thread enters it,
    makes the socket (which keeps its namespace for life) and ends.
    """
    result: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            _setns(ns_fd)
            result.append(socket.socket(family, kind))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=make, name="netns-socket")
    thread.start()
    thread.join()
    made = result[0]
    if isinstance(made, BaseException):
        raise made
    return made


def _own_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


# ------------------------------------------------------------------------- the node


class IfaceNode(Node):
    typecookie = IFACE_COOKIE
    dies_with_last_hook = False  # FreeBSD's iface stays when its hooks go
    # rcvdata waits only on the TUN descriptor, which shutdown closes (with notify_closing).
    handlers_woken_by_close = True
    batch_limit: ClassVar[int] = BATCH_LIMIT
    cmdlist = (
        Cmd(IFACE_COOKIE, NGM_IFACE_GET_IFNAME, "getifname", None, STRING,
            "The interface's name"),
        Cmd(IFACE_COOKIE, NGM_IFACE_POINT2POINT, "point2point", None, None,
            "Make the interface point-to-point (a TUN interface always is)"),
        Cmd(IFACE_COOKIE, NGM_IFACE_BROADCAST, "broadcast", None, None,
            "Make the interface broadcast (not possible for TUN)"),
        Cmd(IFACE_COOKIE, NGM_IFACE_GET_IFINDEX, "getifindex", None, UINT32,
            "The interface's index"),
        Cmd(IFACE_COOKIE, NGM_IFACE_SET_IFNAME, "setifname", STRING, None,
            "Rename the interface"),
        Cmd(IFACE_COOKIE, NGM_IFACE_GET_STATS, "getstats", None, _STATS,
            "Get the packet, octet and drop counts"),
        Cmd(IFACE_COOKIE, NGM_IFACE_CLR_STATS, "clrstats", None, None, "Clear the counts"),
        Cmd(IFACE_COOKIE, NGM_IFACE_GETCLR_STATS, "getclrstats", None, _STATS,
            "Get and clear the counts"),
        Cmd(IFACE_COOKIE, NGM_IFACE_SET_MTU, "setmtu", UINT32, None, "Set the interface's MTU"),
        Cmd(IFACE_COOKIE, NGM_IFACE_GET_MTU, "getmtu", None, UINT32,
            "The interface's MTU"),
        Cmd(IFACE_COOKIE, NGM_IFACE_SET_OFFLOAD, "setoffload", _OFFLOAD, None,
            "Switch TUN offloads and raw hooks: { csum=1 tso4=1 tso6=1 rawinet=0 }"),
        Cmd(IFACE_COOKIE, NGM_IFACE_GET_OFFLOAD, "getoffload", None, _OFFLOAD,
            "The offloads and raw hooks"),
        Cmd(FLOW_COOKIE, NGM_LINK_IS_UP, "linkup", None, None, "Carrier on"),
        Cmd(FLOW_COOKIE, NGM_LINK_IS_DOWN, "linkdown", None, None, "Carrier off"),
    )  # fmt: skip

    def constructor(self) -> None:
        self.fd = -1
        self.counters = IfaceStats()
        self.offload = IfaceOffload()
        self.raw: frozenset[str] = frozenset()
        # Where packets read go, by IP version (4, 6, anything else): recomputed on hook changes.
        self.routes: dict[int, Hook | None] = {}
        self.fallback: Hook | None = None
        self._ctl: tuple[int, socket.socket] | None = None  # (netns inode, control socket)
        self.fd, self.ifname = open_tun()
        try:
            self.graph.name_node(self, self.ifname)
        except NetgraphError:
            log.info("iface %s: the node name %r is taken", self.path, self.ifname)
        self.start_task(self._read_loop)

    # --------------------------------------------------------------------------- hooks

    def newhook(self, hook: Hook) -> None:
        if hook.name not in HOOKS:
            raise NetgraphError(
                errno.EINVAL, f"iface has hooks inet, inet6 and allip; not {hook.name!r}"
            )

    def connect(self, hook: Hook) -> None:
        self._route()

    def disconnect(self, hook: Hook) -> None:
        self._route()

    def _route(self) -> None:
        hooks = self.hooks
        allip = hooks.get(HOOK_ALLIP)
        self.routes = {4: hooks.get(HOOK_INET) or allip, 6: hooks.get(HOOK_INET6) or allip}
        self.fallback = allip

    def shutdown(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)  # the TUN device goes with its last descriptor
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            ctl[1].close()

    # ------------------------------------------------------------- kernel to graph

    async def _read_loop(self) -> None:
        """Read what the kernel sends, a batch at a time, and send it out of the hooks."""
        read = os.read
        limit = self.batch_limit
        while True:
            fd = self.fd
            if fd < 0:
                return  # shut down (never touch the old number: it may be reused)
            packets: list[bytes] = []
            drained = True
            try:
                while len(packets) < limit:
                    packets.append(read(fd, READ_SIZE))
                drained = False
            except BlockingIOError:
                pass
            except OSError as err:
                if err.errno in (errno.EBADFD, errno.EBADF):
                    self._gone(err)
                    return
                self.counters.readErrors += 1
            if packets:
                await self._deliver(packets)
                if self.fd != fd:
                    return
            if drained:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except (trio.ClosedResourceError, ValueError, OSError):
                    return
            else:
                await trio.lowlevel.checkpoint()  # a busy device must not starve other tasks

    def _gone(self, err: OSError) -> None:
        log.warning("iface %s: interface %s is gone (%s); shutting down", self.path, self.ifname,
                    err.strerror)  # fmt: skip
        self.rmnode_self()

    async def _deliver(self, packets: list[bytes]) -> None:
        """Send packets read out of their hooks: runs of one hook go as one batch."""
        routes = self.routes
        fallback = self.fallback
        counters = self.counters
        runs: list[tuple[Hook, list[Item]]] = []
        hook: Hook | None = None
        items: list[Item] = []
        for data in packets:
            packet = data[HDR_LEN:]
            plain: list[Item] = [packet] if data.startswith(ZERO_HDR) else []
            target = routes.get(packet[0] >> 4, fallback) if packet else None
            if target is None:
                counters.outNoHook += 1
                continue
            if not plain:
                plain = self._unoffload(target, VnetHdr.unpack(data), packet)
            if target is not hook:
                if items and hook is not None:
                    runs.append((hook, items))
                hook, items = target, []
            items.extend(plain)
        if items and hook is not None:
            runs.append((hook, items))
        for hook, items in runs:
            try:
                if len(items) == 1:
                    await self.emit(hook, items[0])
                else:
                    await self.emit_batch(hook, items)
            except NetgraphError:
                self.counters.outRefused += len(items)  # (the counters may be new by now)
            else:
                self.counters.outPackets += len(items)
                self.counters.outOctets += sum(map(len, items))

    def _unoffload(self, hook: Hook, hdr: VnetHdr, packet: bytes) -> list[Item]:
        if hook.name in self.raw:
            return [tag(packet, **{VNET_TAG: hdr})]
        try:
            return list(vnet.unoffload(packet, hdr))
        except OffloadError as err:
            self.counters.outBadOffload += 1
            log.debug("iface %s: dropped an offloaded packet: %s", self.path, err)
            return []

    # ------------------------------------------------------------- graph to kernel

    async def rcvdata(self, hook: Hook, item: Item) -> None:
        await self.rcvbatch(hook, (item,))

    async def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        fd = self.fd
        if fd < 0:
            raise NetgraphError(errno.ENXIO, f"iface {self.path} has no interface (shut down)")
        writev = os.writev
        packets = octets = 0
        try:
            for item in items:
                tags = getattr(item, "tags", None)
                header = ZERO_HDR
                if tags is not None and VNET_TAG in tags:
                    try:
                        header = VnetHdr(*tags[VNET_TAG]).pack()
                    except (TypeError, struct.error):
                        self.counters.inInvalid += 1  # a tag that is no virtio_net_hdr
                        continue
                while True:
                    try:
                        writev(fd, (header, item))
                    except BlockingIOError:
                        self.counters.inWaits += 1
                        await self._writable(fd)
                        continue
                    except OSError as err:
                        self._count_drop(err.errno or errno.EIO)
                    else:
                        packets += 1
                        octets += len(item)
                    break
        finally:
            counters = self.counters  # clrstats may have replaced them while we waited
            counters.inPackets += packets
            counters.inOctets += octets

    async def _writable(self, fd: int) -> None:
        with contextlib.suppress(trio.ClosedResourceError, ValueError, OSError):
            await trio.lowlevel.wait_writable(fd)
        if self.fd != fd:
            raise NetgraphError(errno.EIO, f"iface {self.path} shut down while sending")

    def _count_drop(self, code: int) -> None:
        counters = self.counters
        if code == errno.EIO:
            counters.inDown += 1
        elif code == errno.EINVAL:
            counters.inInvalid += 1
        elif code in (errno.ENOBUFS, errno.ENOMEM):
            counters.inNoBufs += 1
        elif code in (errno.EBADFD, errno.EBADF):
            counters.inErrors += 1
            if self.fd >= 0:
                self._gone(OSError(code, os.strerror(code)))
        else:
            counters.inErrors += 1

    # --------------------------------------------------------------------- messages

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        if msg.is_response:
            return super().rcvmsg(msg, retaddr, lasthook)
        if msg.typecookie == FLOW_COOKIE and msg.cmd in (NGM_LINK_IS_UP, NGM_LINK_IS_DOWN):
            self._ioctl_tun(TUNSETCARRIER, struct.pack("i", msg.cmd == NGM_LINK_IS_UP), msg)
            return None
        if msg.typecookie != IFACE_COOKIE:
            return super().rcvmsg(msg, retaddr, lasthook)
        handler = self._HANDLERS.get(msg.cmd)
        if handler is None:
            raise NetgraphError(errno.EINVAL, f"iface has no command {msg.cmd}")
        if self.fd < 0:
            raise NetgraphError(errno.ENXIO, f"iface {self.path} has no interface")
        try:
            return handler(self, msg)
        except NetgraphError:
            raise
        except OSError as err:
            code = err.errno or errno.EINVAL
            raise NetgraphError(code, f"{msg.cmdstr}: {os.strerror(code)}") from None

    def _current_name(self) -> str:
        """The interface's name now (someone may have renamed it behind our back)."""
        self.ifname = _name_of(fcntl.ioctl(self.fd, TUNGETIFF, bytes(IFREQ.size)))
        return self.ifname

    def _control(self) -> socket.socket:
        """A socket for interface ioctls, in the network namespace the interface is in now."""
        try:
            ns_fd = fcntl.ioctl(self.fd, TUNGETDEVNETNS)
        except OSError:
            ns_fd = -1  # a kernel before 5.2: the interface is where we are, we hope
        try:
            ino = os.fstat(ns_fd).st_ino if ns_fd >= 0 else _own_netns()
            if self._ctl is not None and self._ctl[0] == ino:
                return self._ctl[1]
            if ino == _own_netns():
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            else:
                try:
                    sock = socket_in_netns(ns_fd)
                except OSError as err:
                    raise NetgraphError(
                        err.errno or errno.EPERM,
                        f"interface {self.ifname} is in another network namespace, and entering"
                        f" it failed: {err.strerror} (it needs CAP_SYS_ADMIN)",
                    ) from None
        finally:
            if ns_fd >= 0:
                os.close(ns_fd)
        if self._ctl is not None:
            self._ctl[1].close()
        self._ctl = (ino, sock)
        return sock

    def _ifreq(self, request: int, data: bytes) -> bytes:
        return fcntl.ioctl(self._control(), request, data)

    def _int_ioctl(self, request: int, value: int = 0) -> int:
        name = self._current_name().encode()
        return int(IFREQ_INT.unpack(self._ifreq(request, IFREQ_INT.pack(name, value)))[1])

    def _is_up(self) -> bool:
        name = self._current_name().encode()
        flags = IFREQ_FLAGS.unpack(self._ifreq(SIOCGIFFLAGS, IFREQ_FLAGS.pack(name, 0)))[1]
        return bool(flags & IFF_UP)

    def _ioctl_tun(self, request: int, arg: bytes | int, msg: Message) -> None:
        if self.fd < 0:
            raise NetgraphError(errno.ENXIO, f"iface {self.path} has no interface")
        try:
            fcntl.ioctl(self.fd, request, arg)
        except OSError as err:
            code = err.errno or errno.EINVAL
            raise NetgraphError(code, f"{msg.cmdstr}: {os.strerror(code)}") from None

    def _getifname(self, msg: Message) -> str:
        return self._current_name()

    def _point2point(self, msg: Message) -> None:
        if self._is_up():
            raise NetgraphError(errno.EBUSY, f"interface {self.ifname} is up")

    def _broadcast(self, msg: Message) -> None:
        if self._is_up():
            raise NetgraphError(errno.EBUSY, f"interface {self.ifname} is up")
        raise NetgraphError(errno.EOPNOTSUPP, "a TUN interface is point-to-point only")

    def _getifindex(self, msg: Message) -> int:
        return self._int_ioctl(SIOCGIFINDEX)

    def _setifname(self, msg: Message) -> None:
        new = msg.args
        if not isinstance(new, str):
            raise NetgraphError(errno.EINVAL, "setifname takes a string")
        raw = new.encode(errors="surrogateescape")
        if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw:
            raise NetgraphError(
                errno.EINVAL, f"interface name {new!r} is not 1 to {IFNAMSIZ - 1} bytes"
            )
        old = self._current_name()
        self._ifreq(SIOCSIFNAME, struct.pack("16s16s8x", old.encode(), raw))
        new_name = self._current_name()
        if self.name == old:
            with contextlib.suppress(NetgraphError):  # else the node keeps its name
                self.graph.name_node(self, new_name)

    def _getstats(self, msg: Message) -> IfaceStats | None:
        reply = None if msg.cmd == NGM_IFACE_CLR_STATS else attrs.evolve(self.counters)
        if msg.cmd != NGM_IFACE_GET_STATS:
            self.counters = IfaceStats()
        return reply

    def _setmtu(self, msg: Message) -> None:
        if not isinstance(msg.args, int):
            raise NetgraphError(errno.EINVAL, "setmtu takes a number")
        self._int_ioctl(SIOCSIFMTU, msg.args)

    def _getmtu(self, msg: Message) -> int:
        return self._int_ioctl(SIOCGIFMTU)

    def _setoffload(self, msg: Message) -> None:
        config = msg.args
        if not isinstance(config, IfaceOffload):
            raise NetgraphError(errno.EINVAL, "setoffload takes { csum= tso4= tso6= ... }")
        self._ioctl_tun(TUNSETOFFLOAD, config.tun_flags(), msg)
        self.offload = config
        self.raw = config.raw_hooks()

    def _getoffload(self, msg: Message) -> IfaceOffload:
        return self.offload

    _HANDLERS: ClassVar[dict[int, Any]] = {
        NGM_IFACE_GET_IFNAME: _getifname,
        NGM_IFACE_POINT2POINT: _point2point,
        NGM_IFACE_BROADCAST: _broadcast,
        NGM_IFACE_GET_IFINDEX: _getifindex,
        NGM_IFACE_SET_IFNAME: _setifname,
        NGM_IFACE_GET_STATS: _getstats,
        NGM_IFACE_CLR_STATS: _getstats,
        NGM_IFACE_GETCLR_STATS: _getstats,
        NGM_IFACE_SET_MTU: _setmtu,
        NGM_IFACE_GET_MTU: _getmtu,
        NGM_IFACE_SET_OFFLOAD: _setoffload,
        NGM_IFACE_GET_OFFLOAD: _getoffload,
    }

    def status_text(self) -> str | None:
        c = self.counters
        if self.fd < 0:
            return "no interface (shut down)"
        with contextlib.suppress(OSError):  # else the name last seen will do
            self._current_name()
        offloads = [f.name for f in attrs.fields(IfaceOffload) if getattr(self.offload, f.name)]
        lines = [
            f"Interface: {self.ifname}",
            f"Offloads: {' '.join(offloads) if offloads else 'none'}",
            f"Into the kernel: {c.inPackets} packets, {c.inOctets} octets; dropped: down"
            f" {c.inDown}, invalid {c.inInvalid}, no buffers {c.inNoBufs}, other {c.inErrors}"
            f" (waited {c.inWaits} times)",
            f"Out of the kernel: {c.outPackets} packets, {c.outOctets} octets; dropped: no hook"
            f" {c.outNoHook}, refused {c.outRefused}, bad offload {c.outBadOffload}",
        ]
        return "\n".join(lines) + "\n"


__all__ = [
    "HOOKS",
    "IFACE_COOKIE",
    "VNET_TAG",
    "IfaceNode",
    "IfaceOffload",
    "IfaceStats",
    "open_tun",
    "socket_in_netns",
]
