"""The ip node's control messages: its cookie, command list, argument structs and parse types.

Two parse types of its own:

* ``inaddr`` / ``inprefix`` (:class:`InetType`): an IPv4 or IPv6 address, written naturally in
  ASCII (``192.0.2.1``, ``2001:db8::1``; with ``/len`` for ``inprefix``: ``192.0.2.1/24``).
  Binary layout (18 bytes, no alignment): ``uint8 version`` (0: none, 4, 6), ``uint8 prefixlen``,
  ``uint8 addr[16]`` (an IPv4 address in the first 4 bytes, the rest zero). Values are
  ``IPv4Address``/``IPv6Address`` (``inaddr``) or ``IPv4Interface``/``IPv6Interface``
  (``inprefix``), and None for "none" (the default, left out of canonical text).
* :class:`CountedArray`: ``[ ... ]`` in ASCII, as many elements as written; in binary a
  ``uint32`` count and then the elements, so that several of them fit in one struct.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)
from typing import Any, Final

import attrs

from netgraph import Cmd
from netgraph.parse import (
    BYTE_ORDER,
    HOOKBUF,
    MAX_ELEMENTS,
    UINT8,
    UINT32,
    UINT64,
    Array,
    ArrayNode,
    Fields,
    Node,
    ParseType,
    Struct,
    StructNode,
    ValueProblem,
    field,
)

__all__ = [
    "INADDR",
    "INPREFIX",
    "IP_COOKIE",
    "AddrEntry",
    "AddrList",
    "CountedArray",
    "InetType",
    "IpConfig",
    "IpStats",
    "LinkEntry",
    "RouteEntry",
    "RouteInfo",
    "RouteList",
]

IP_COOKIE: Final = 1727713010

NGM_IP_ADDADDR: Final = 1
NGM_IP_DELADDR: Final = 2
NGM_IP_LISTADDRS: Final = 3
NGM_IP_ADDROUTE: Final = 4
NGM_IP_DELROUTE: Final = 5
NGM_IP_LISTROUTES: Final = 6
NGM_IP_GETROUTE: Final = 7
NGM_IP_SETMTU: Final = 8
NGM_IP_GETMTU: Final = 9
NGM_IP_GETSTATS: Final = 10
NGM_IP_CLRSTATS: Final = 11
NGM_IP_GETCLRSTATS: Final = 12
NGM_IP_SETCONFIG: Final = 13
NGM_IP_GETCONFIG: Final = 14

_INET: Final = struct.Struct("BB16s")

# ------------------------------------------------------------------------------ parse types


class InetType(ParseType):
    """An IPv4 or IPv6 address (``prefix=False``) or address with prefix length (``True``)."""

    align = 1

    def __init__(self, *, prefix: bool) -> None:
        self.prefix = prefix
        self.type_name = "inprefix" if prefix else "inaddr"

    def __repr__(self) -> str:
        return self.type_name.upper()

    def default(self) -> None:
        return None

    def is_default(self, value: Any) -> bool:
        return value is None

    def convert(self, node: Node, fields: Fields) -> Any:
        if isinstance(node, StructNode | ArrayNode) or node.type != "WORD":
            where = node.pos if isinstance(node, StructNode | ArrayNode) else node.start_pos
            what = "192.0.2.1/24 or 2001:db8::1/64" if self.prefix else "192.0.2.1 or 2001:db8::1"
            raise ValueProblem(errno.EINVAL, f"expected an address ({what})", where)
        return self.from_text(node.value, node.start_pos)

    def from_text(self, text: str, pos: int = 0) -> Any:
        host, slash, length = text.partition("/")
        if slash and not self.prefix:
            raise ValueProblem(errno.EINVAL, f"{text!r}: an address here has no /length", pos)
        if "%" in host:
            raise ValueProblem(errno.EINVAL, f"{text!r}: no scope (%) here", pos)
        try:
            ip = ip_address(host)
        except ValueError:
            raise ValueProblem(
                errno.EINVAL, f"{host!r} is not an IPv4 or IPv6 address", pos
            ) from None
        if not self.prefix:
            return ip
        bits: int = ip.max_prefixlen
        if slash:
            if not (length.isascii() and length.isdigit()) or int(length) > bits:
                raise ValueProblem(
                    errno.EINVAL, f"{text!r}: the prefix length is 0..{bits}", pos + len(host) + 1
                )
            bits = int(length)
        return ip_interface((ip, bits))

    def unparse(self, value: Any) -> str:
        if value is None:
            return "0.0.0.0/0" if self.prefix else "0.0.0.0"  # never shown: the default
        return str(value)

    def pack(self, value: Any, out: bytearray, fields: Fields) -> None:
        if value is None:
            out += bytes(_INET.size)
            return
        if self.prefix:
            if not isinstance(value, IPv4Interface | IPv6Interface):
                raise ValueProblem(errno.EINVAL, f"{value!r} is not an address with a prefix")
            ip, plen = value.ip, value.network.prefixlen
        else:
            if not isinstance(value, IPv4Address | IPv6Address):
                raise ValueProblem(errno.EINVAL, f"{value!r} is not an IP address")
            ip, plen = value, value.max_prefixlen
        out += _INET.pack(ip.version, plen, ip.packed)

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[Any, int]:
        if pos + _INET.size > end:
            raise ValueProblem(errno.EINVAL, f"binary data too short for {self.type_name}")
        version, plen, raw = _INET.unpack_from(data, pos)
        stop = pos + _INET.size
        if version == 0:
            return None, stop
        if version == 4:
            ip: IPv4Address | IPv6Address = IPv4Address(raw[:4])
        elif version == 6:
            ip = IPv6Address(raw)
        else:
            raise ValueProblem(errno.EINVAL, f"{self.type_name}: no IP version {version}")
        if plen > ip.max_prefixlen:
            raise ValueProblem(errno.EINVAL, f"{self.type_name}: prefix length {plen} too long")
        return (ip_interface((ip, plen)) if self.prefix else ip), stop


class CountedArray(ParseType):
    """``[ a b ... ]`` in ASCII; a ``uint32`` count and the elements in binary."""

    type_name = "countedarray"

    def __init__(self, element: ParseType) -> None:
        self.element = element
        self.array = Array(element, None)
        self.align = max(4, element.align)
        self._count = struct.Struct(BYTE_ORDER + "I")

    def default(self) -> tuple[Any, ...]:
        return ()

    def is_default(self, value: Any) -> bool:
        return not value

    def convert(self, node: Node, fields: Fields) -> tuple[Any, ...]:
        return self.array.convert(node, fields)

    def unparse(self, value: Sequence[Any]) -> str:
        return self.array.unparse(value)

    def pack(self, value: Sequence[Any], out: bytearray, fields: Fields) -> None:
        if not isinstance(value, tuple | list):
            raise ValueProblem(errno.EINVAL, f"array value {value!r} is not a sequence")
        out += self._count.pack(len(value))
        self.array.pack(value, out, fields)

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[Any, int]:
        if pos + 4 > end:
            raise ValueProblem(errno.EINVAL, "binary data too short for an array count")
        (count,) = self._count.unpack_from(data, pos)
        if count > MAX_ELEMENTS:
            raise ValueProblem(errno.ERANGE, f"an array of {count} elements is too long")
        return Array(self.element, count).unpack(data, pos + 4, end, fields)


INADDR: Final = InetType(prefix=False)
INPREFIX: Final = InetType(prefix=True)

# ---------------------------------------------------------------------------- the structs


@attrs.frozen
class AddrEntry:
    """An address with its prefix length, on a link hook."""

    addr: IPv4Interface | IPv6Interface | None = field(INPREFIX)
    hook: str = field(HOOKBUF)


@attrs.frozen
class AddrList:
    addrs: tuple[AddrEntry, ...] = field(CountedArray(Struct(AddrEntry)))


@attrs.frozen
class RouteEntry:
    """A static route: destination prefix, optional gateway, link hook (found from the gateway
    when left out)."""

    dest: IPv4Interface | IPv6Interface | None = field(INPREFIX)
    gateway: IPv4Address | IPv6Address | None = field(INADDR)
    hook: str = field(HOOKBUF)


@attrs.frozen
class RouteInfo:
    """A route as listed, or the result of a lookup: with its source address, the path MTU and
    whether it is the connected route of an address."""

    dest: IPv4Interface | IPv6Interface | None = field(INPREFIX)
    gateway: IPv4Address | IPv6Address | None = field(INADDR)
    hook: str = field(HOOKBUF)
    src: IPv4Address | IPv6Address | None = field(INADDR)
    mtu: int = field(UINT32)
    connected: int = field(UINT8)


@attrs.frozen
class RouteList:
    routes: tuple[RouteInfo, ...] = field(CountedArray(Struct(RouteInfo)))


@attrs.frozen
class LinkEntry:
    """A link hook's MTU."""

    hook: str = field(HOOKBUF)
    mtu: int = field(UINT32)


@attrs.frozen
class IpConfig:
    """Everything ``setconfig`` sets and ``getconfig`` gives. Zero in a number means the
    default: ttl 64, reassembly timeouts 30 s (IPv4) and 60 s (IPv6), 4 MiB held for
    reassembly in all and datagrams of up to 65535 bytes, 1000 ICMP errors per second in bursts
    of up to 50."""

    addrs: tuple[AddrEntry, ...] = field(CountedArray(Struct(AddrEntry)))
    routes: tuple[RouteEntry, ...] = field(CountedArray(Struct(RouteEntry)))
    links: tuple[LinkEntry, ...] = field(CountedArray(Struct(LinkEntry)))
    forwarding: int = field(UINT8)
    ttl: int = field(UINT8)
    reasm_timeout4: int = field(UINT32)
    reasm_timeout6: int = field(UINT32)
    reasm_maxbytes: int = field(UINT32)
    reasm_maxdatagram: int = field(UINT32)
    icmp_rate: int = field(UINT32)
    icmp_burst: int = field(UINT32)


@attrs.define
class IpStats:
    """The node's counters. Every packet that arrives on a link hook is counted once in
    ``in_packets`` and ends once: delivered, forwarded, held as a fragment, or dropped for one
    reason (the fields from ``truncated`` to ``no_next``); a reassembled datagram is counted in
    ``reassembled`` and then ends the same way."""

    in_packets: int = field(UINT64)
    in_octets: int = field(UINT64)
    delivered: int = field(UINT64)
    forwarded: int = field(UINT64)
    fragments: int = field(UINT64)
    reassembled: int = field(UINT64)
    reasm_timeout: int = field(UINT64)
    # Drops of received packets, by reason.
    truncated: int = field(UINT64)
    bad_version: int = field(UINT64)
    bad_hdrlen: int = field(UINT64)
    bad_length: int = field(UINT64)
    bad_checksum: int = field(UINT64)
    bad_options: int = field(UINT64)
    bad_exthdr: int = field(UINT64)
    bad_src: int = field(UINT64)
    bad_dst: int = field(UINT64)
    not_for_us: int = field(UINT64)
    ttl_expired: int = field(UINT64)
    no_route: int = field(UINT64)
    cant_frag: int = field(UINT64)
    no_proto: int = field(UINT64)
    frag_bad: int = field(UINT64)
    frag_dup: int = field(UINT64)
    frag_overlap: int = field(UINT64)
    reasm_overflow: int = field(UINT64)
    icmp_bad: int = field(UINT64)
    no_next: int = field(UINT64)
    # ICMP.
    icmp_in: int = field(UINT64)
    icmp_echo: int = field(UINT64)
    icmp_reported: int = field(UINT64)
    icmp_out: int = field(UINT64)
    icmp_ratelimited: int = field(UINT64)
    # Sending.
    out_packets: int = field(UINT64)
    out_octets: int = field(UINT64)
    out_fragments: int = field(UINT64)
    out_bad_tags: int = field(UINT64)
    out_no_route: int = field(UINT64)
    out_no_src: int = field(UINT64)
    out_too_big: int = field(UINT64)
    out_link_down: int = field(UINT64)


_ADDR = Struct(AddrEntry)
_ROUTE = Struct(RouteEntry)
_LINK = Struct(LinkEntry)
_STATS = Struct(IpStats)

CMDLIST: Final = (
    Cmd(IP_COOKIE, NGM_IP_ADDADDR, "addaddr", _ADDR, None, "Add an address/len on a link hook"),
    Cmd(IP_COOKIE, NGM_IP_DELADDR, "deladdr", _ADDR, None, "Remove an address from a link hook"),
    Cmd(IP_COOKIE, NGM_IP_LISTADDRS, "listaddrs", None, Struct(AddrList), "List the addresses"),
    Cmd(IP_COOKIE, NGM_IP_ADDROUTE, "addroute", _ROUTE, None, "Add a static route"),
    Cmd(IP_COOKIE, NGM_IP_DELROUTE, "delroute", _ROUTE, None, "Remove a static route"),
    Cmd(
        IP_COOKIE,
        NGM_IP_LISTROUTES,
        "listroutes",
        None,
        Struct(RouteList),
        "List the routes, static and connected",
    ),
    Cmd(
        IP_COOKIE,
        NGM_IP_GETROUTE,
        "getroute",
        INADDR,
        Struct(RouteInfo),
        "Look up the route, source address and path MTU for a destination",
    ),
    Cmd(IP_COOKIE, NGM_IP_SETMTU, "setmtu", _LINK, None, "Set a link hook's MTU"),
    Cmd(IP_COOKIE, NGM_IP_GETMTU, "getmtu", HOOKBUF, _LINK, "Get a link hook's MTU"),
    Cmd(IP_COOKIE, NGM_IP_GETSTATS, "getstats", None, _STATS, "Get the counters"),
    Cmd(IP_COOKIE, NGM_IP_CLRSTATS, "clrstats", None, None, "Clear the counters"),
    Cmd(IP_COOKIE, NGM_IP_GETCLRSTATS, "getclrstats", None, _STATS, "Get and clear the counters"),
    Cmd(
        IP_COOKIE,
        NGM_IP_SETCONFIG,
        "setconfig",
        Struct(IpConfig),
        None,
        "Replace addresses, routes, MTUs and settings",
    ),
    Cmd(
        IP_COOKIE,
        NGM_IP_GETCONFIG,
        "getconfig",
        None,
        Struct(IpConfig),
        "Get the configuration (setconfig takes the reply as it is)",
        restore="setconfig",
    ),
)
