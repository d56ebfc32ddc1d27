"""The IPv4 and IPv6 layer as a sans-IO state machine: everything the ip node does, without trio.

Theory of operation
===================

:class:`IpStack` is driven by three calls, each given ``now`` (seconds, any monotonic clock):

* :meth:`IpStack.receive` takes raw packets from a link (by the link hook's name);
* :meth:`IpStack.send` takes one item from a protocol (by protocol number) to send;
* :meth:`IpStack.expire` runs the timers; :meth:`IpStack.next_deadline` says when next.

What they produce waits in two places until :meth:`IpStack.take` hands it over: ``up``, items
for each protocol hook (by protocol number), and ``out``, ``(link hook, packet)`` pairs. The
stack knows which link hooks are connected (``links``) and which protocols have hooks
(:meth:`IpStack.set_upper`); it never sends to anything else.

Receiving
    A packet from a link is validated (version, header length, total/payload length, IPv4
    header checksum, IPv4 options well-formed, no martian source or destination), trimmed to its
    stated length, and then: delivered (one of our unicast addresses, an IPv4 broadcast address
    of ours or 255.255.255.255, or a multicast address, taken as joined), forwarded (only with
    ``forwarding`` on; hosts do not forward), held for reassembly, or dropped. Every packet ends
    in exactly one counter (see :class:`nodes.ip.messages.IpStats`), and nothing in a packet
    can make :meth:`IpStack.receive` raise. A host does not drop a packet for its TTL (RFC 1122
    3.2.1.7): ``ttl_expired`` counts packets that could not be forwarded.

    The common case (IPv4 without options or IPv6 without extension headers, unfragmented, to
    one of our unicast addresses, from a source already seen, for a protocol with a hook) runs
    inline in :meth:`IpStack.receive`; everything else takes the general path.

    IPv6 extension headers are walked in order: hop-by-hop options (first only), destination
    options and their option TLVs (unknown options handled by their two high bits), routing
    headers (ignored when segments-left is 0, otherwise a parameter problem: we are a host),
    fragment headers (reassembly; an atomic fragment is just skipped, RFC 6946), and No Next
    Header. ESP and AH are protocols like any other (hooks ``50`` and ``51``).

Reassembly (see :mod:`nodes.ip.reassembly`)
    Tiny-fragment rules: an IPv4 fragment at offset 8 of a TCP datagram, a first fragment
    shorter than its transport header (RFC 1858), an IPv6 first fragment without the whole
    header chain (RFC 7112, answered with a parameter problem, code 3), a fragment that is not
    the last and not a multiple of 8 long, a datagram longer than 65535: all ``frag_bad``.

ICMP and ICMPv6
    Echo requests to a unicast address of ours are answered (not those to broadcast or
    multicast addresses). Errors received (destination unreachable, time exceeded, parameter
    problem, packet too big) are checked (the quoted packet must be from one of our addresses)
    and passed up to the protocol hook of the quoted packet; packet-too-big and
    fragmentation-needed also lower the path MTU to the quoted destination for ten minutes.
    Every valid ICMP message received, errors and echo requests included, also goes up the
    ``icmp`` / ``icmp6`` hook if there is one. Echo replies are not rate-limited.

    Errors sent: protocol unreachable (IPv6: parameter problem, unrecognized next header) for a
    protocol without a hook, port unreachable for UDP without a ``udp`` hook or when the
    protocol asks (the ``unreach`` tag), time exceeded for reassembly timeouts, parameter
    problems for bad IPv6 headers and fragments, and, when forwarding, time exceeded in
    transit, net unreachable and fragmentation needed / packet too big. Never about an ICMP
    error, a packet to or from a broadcast or multicast address (IPv6: multicast destinations
    get only packet-too-big and unrecognized-option problems, RFC 4443 2.4), an IPv4 fragment
    other than the first, or a martian source; at most ``icmp_rate`` per second in bursts of
    ``icmp_burst`` (a token bucket). An error quotes as much of the packet as fits in 576
    bytes (IPv4) or 1280 bytes (IPv6).

Sending
    The ``dst`` tag picks the route (longest prefix match); the source is the ``src`` tag (one
    of our addresses) or the route's; TTL/hop limit, TOS/traffic class, DF from tags or
    defaults; a ``csum`` tag asks for the transport checksum over the pseudo-header. IPv4
    datagrams over the path MTU are fragmented unless DF is set; IPv6 ones are fragmented at
    the source unless ``df`` is set. Problems raise :class:`netgraph.NetgraphError` (and are
    counted): EINVAL bad tags, EHOSTUNREACH no route (or our own address: there is no
    loopback), ENETDOWN the route's hook is not connected, EADDRNOTAVAIL no source address,
    EMSGSIZE too big with DF.

    Packets the stack makes itself (echo replies, errors) go by the route to their destination,
    or, with no usable route, back out of the link the packet they answer came from.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from types import MappingProxyType
from typing import Any, Final

import attrs

from netgraph.errors import NetgraphError
from netgraph.item import Item, Tagged

from . import reassembly as ra
from .header import (
    DSTOPTS,
    FRAG6_HDR,
    FRAGMENT,
    HOPOPTS,
    ICMP,
    ICMP6_DST_UNREACH,
    ICMP6_DST_UNREACH_NOPORT,
    ICMP6_DST_UNREACH_NOROUTE,
    ICMP6_ECHO_REPLY,
    ICMP6_ECHO_REQUEST,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_PARAM_PROB,
    ICMP6_PARAMPROB_FIRSTFRAG,
    ICMP6_PARAMPROB_HEADER,
    ICMP6_PARAMPROB_NEXTHEADER,
    ICMP6_PARAMPROB_OPTION,
    ICMP6_REDIRECT,
    ICMP6_REPORTED,
    ICMP6_TIME_EXCEED_REASSEMBLY,
    ICMP6_TIME_EXCEED_TRANSIT,
    ICMP6_TIME_EXCEEDED,
    ICMP_ECHO,
    ICMP_ECHOREPLY,
    ICMP_ERRORS,
    ICMP_HDR,
    ICMP_REPORTED,
    ICMP_TIMXCEED,
    ICMP_TIMXCEED_INTRANS,
    ICMP_TIMXCEED_REASS,
    ICMP_UNREACH,
    ICMP_UNREACH_NEEDFRAG,
    ICMP_UNREACH_NET,
    ICMP_UNREACH_PORT,
    ICMP_UNREACH_PROTOCOL,
    ICMPV6,
    IP_DF,
    IP_MF,
    IP_OFFMASK,
    IPV4_HDR,
    IPV4_MAX_ERROR,
    IPV6_HDR,
    IPV6_MIN_MTU,
    MAX_PACKET,
    MIN_TRANSPORT,
    NONEXT,
    ROUTING,
    TCP,
    U16,
    U32,
    UDP,
    V6_UNSPECIFIED,
    checksum,
    fragment4,
    header4,
    header6,
    link_local6,
    martian_dst4,
    martian_dst6,
    martian_src4,
    martian_src6,
    multicast4,
    multicast6,
    ones_sum,
    options4_ok,
    options6_action,
    pseudo4,
    pseudo6,
    verifies,
    walk6,
    with_checksum4,
)
from .messages import IpStats
from .table import Path, Table

__all__ = ["COUNTERS", "DROPS", "IpStack", "Settings"]

COUNTERS: Final = tuple(f.name for f in attrs.fields(IpStats))
# Why a received packet was dropped: every packet ends in one of these or in delivered,
# forwarded or fragments.
DROPS: Final = COUNTERS[COUNTERS.index("truncated") : COUNTERS.index("no_next") + 1]
OUTCOMES: Final = ("delivered", "forwarded", "fragments", *DROPS)

# IPv6 extension headers we walk, and what the fast path leaves to the general one.
_EXTHDRS: Final = frozenset((HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, NONEXT))
_SLOW6: Final = _EXTHDRS | {ICMPV6}
_KNOWN_HOPOPTS: Final = frozenset((5,))  # router alert: nothing to do for a host
_KNOWN_DSTOPTS: Final[frozenset[int]] = frozenset()
_NO_TAGS: Final[Mapping[str, Any]] = MappingProxyType({})
_SOURCE_CACHE: Final = 4096
_FLOW_CACHE: Final = 4096
# RFC 1191's plateau table, for routers that send fragmentation-needed without an MTU.
_PLATEAUS: Final = (32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)


@attrs.frozen
class Settings:
    """The stack's tunables (the node maps its config's zeros to these defaults)."""

    forwarding: bool = False
    ttl: int = 64
    reasm_timeout4: float = 30.0
    reasm_timeout6: float = 60.0
    reasm_maxbytes: int = 4 << 20
    reasm_maxdatagram: int = MAX_PACKET
    icmp_rate: float = 1000.0
    icmp_burst: float = 50.0


def _tagged(data: Item, tags: dict[str, Any]) -> Tagged:
    item = Tagged(data)
    item.tags = MappingProxyType(tags)
    return item


def _as_address(value: Any) -> IPv4Address | IPv6Address | None:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return ip_address(value)
        except ValueError:
            return None
    return None


def _byte_tag(tags: Mapping[str, Any], name: str, default: int, low: int) -> int:
    value = tags.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 255:
        raise NetgraphError(errno.EINVAL, f"tag {name}={value!r} is not an integer {low}..255")
    return value


class IpStack:
    """One node's IP layer: addresses and routes (``table``), reassembly, counters."""

    def __init__(self, settings: Settings | None = None, seed: int | None = None) -> None:
        self.settings = settings or Settings()
        self.table = Table()
        self.reasm = ra.Reassembler(self.settings.reasm_maxbytes, self.settings.reasm_maxdatagram)
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.links: set[str] = set()
        self.upper: frozenset[int] = frozenset()
        self.up: dict[int, list[Tagged]] = {}
        self.out: list[tuple[str, bytes]] = []
        self._fast4: dict[int, list[Tagged]] = {}
        self._fast6: dict[int, list[Tagged]] = {}
        # Address objects of sources seen (for tags), and the fast path's flows by link.
        self._src4: dict[int, IPv4Address] = {}
        self._src6: dict[bytes, IPv6Address] = {}
        self._flows4: dict[str, dict[tuple[int, int, int, int, int], Mapping[str, Any]]] = {}
        self._flows6: dict[str, dict[tuple[bytes, bytes, int, int, int], Mapping[str, Any]]] = {}
        self._generation = -1
        rng = random.Random(seed)
        self._ident4 = rng.getrandbits(16)
        self._ident6 = rng.getrandbits(32)
        self._tokens = self.settings.icmp_burst
        self._token_time: float | None = None

    # ------------------------------------------------------------------------ the outside

    def configure(self, settings: Settings) -> None:
        self.settings = settings
        self.reasm.max_bytes = settings.reasm_maxbytes
        self.reasm.max_datagram = settings.reasm_maxdatagram
        self._tokens = min(self._tokens, settings.icmp_burst)

    def drop_link(self, link: str) -> None:
        """Link hook ``link`` has gone: forget it and the flows cached for it."""
        self.links.discard(link)
        self._flows4.pop(link, None)
        self._flows6.pop(link, None)

    def set_upper(self, protocols: Iterable[int]) -> None:
        """The protocols that have hooks now."""
        self.upper = frozenset(protocols)
        self._reset_up()
        self._forget_flows()

    def _reset_up(self) -> None:
        up = self.up = {proto: [] for proto in self.upper}
        self._fast4 = {proto: items for proto, items in up.items() if proto != ICMP}
        self._fast6 = {proto: items for proto, items in up.items() if proto not in _SLOW6}

    def take(self) -> tuple[dict[int, list[Tagged]], list[tuple[str, bytes]]]:
        """What is to go up (by protocol, only those with items) and out (by link hook) since
        the last call. The lists handed over are the receivers' to keep."""
        up = self.up
        taken = {proto: items for proto, items in up.items() if items}
        if taken:
            fast4, fast6 = self._fast4, self._fast6
            for proto in taken:
                fresh: list[Tagged] = []
                up[proto] = fresh
                if proto in fast4:
                    fast4[proto] = fresh
                if proto in fast6:
                    fast6[proto] = fresh
        out = self.out
        if out:
            self.out = []
            self.counts["out_packets"] += len(out)
            self.counts["out_octets"] += sum([len(packet) for _, packet in out])
        return taken, out

    def stats(self) -> IpStats:
        return IpStats(**self.counts)

    def clear_stats(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)

    def next_deadline(self) -> float | None:
        return self.reasm.next_deadline()

    def expire(self, now: float) -> None:
        """Time out reassembly; send time-exceeded for datagrams whose first fragment came."""
        for first, link, dead in self.reasm.expire(now):
            if dead:
                continue
            self.counts["reasm_timeout"] += 1
            if isinstance(first, tuple):
                self._error6(
                    first[0], ICMP6_TIME_EXCEEDED, ICMP6_TIME_EXCEED_REASSEMBLY, 0, link, now
                )
            elif isinstance(first, bytes):
                self._error4(first, ICMP_TIMXCEED, ICMP_TIMXCEED_REASS, 0, link, now)

    # -------------------------------------------------------------------------- receiving

    def receive(self, link: str, packets: Sequence[Item], now: float) -> None:
        """Packets from link hook ``link``. Never raises for anything in a packet."""
        if self._generation != self.table.generation:
            self._forget_flows()
        flows4 = self._flows4.get(link)
        if flows4 is None:
            flows4 = self._flows4[link] = {}
        flows6 = self._flows6.get(link)
        if flows6 is None:
            flows6 = self._flows6[link] = {}
        fast4, fast6 = self._fast4, self._fast6
        unpack4, unpack6 = IPV4_HDR.unpack_from, IPV6_HDR.unpack_from
        delivered = octets = 0
        for packet in packets:
            size = len(packet)
            octets += size
            if size >= 20 and packet[0] == 0x45:
                _, tos, tlen, ident, frag, ttl, proto, total, src, dst = unpack4(packet)
                # The header checksum, from the fields already unpacked.
                words = 0x4500 + tos + tlen + ident + frag + (ttl << 8) + proto + total
                if tlen == size and not frag & 0x3FFF and not (words + src + dst) % 0xFFFF:
                    key = (src, dst, proto, ttl, tos)
                    tags = flows4.get(key)
                    if tags is None:
                        tags = self._flow4(flows4, key, link)
                    if tags is not None:
                        item = Tagged(packet[20:])
                        item.tags = tags
                        fast4[proto].append(item)
                        delivered += 1
                        continue
            elif size >= 40 and packet[0] >> 4 == 6:
                vtf, plen, nxt, hlim, src6, dst6 = unpack6(packet)
                if plen + 40 == size:
                    key6 = (src6, dst6, nxt, hlim, (vtf >> 20) & 0xFF)
                    tags = flows6.get(key6)
                    if tags is None:
                        tags = self._flow6(flows6, key6, link)
                    if tags is not None:
                        item = Tagged(packet[40:])
                        item.tags = tags
                        fast6[nxt].append(item)
                        delivered += 1
                        continue
            self._input(packet, link, now)
        counts = self.counts
        counts["in_packets"] += len(packets)
        counts["in_octets"] += octets
        counts["delivered"] += delivered

    # The fast path keeps, per link, the tags of each flow (source, destination, protocol,
    # TTL, TOS) it may deliver: a header that matches a cached flow needs no other check than
    # the ones done inline. The caches go when addresses or protocol hooks change.

    def _forget_flows(self) -> None:
        self._generation = self.table.generation
        self._flows4.clear()
        self._flows6.clear()
        self._src4.clear()
        self._src6.clear()

    def _flow4(
        self, flows: dict[tuple[int, int, int, int, int], Mapping[str, Any]], key: Any, link: str
    ) -> Mapping[str, Any] | None:
        src, dst, proto, ttl, tos = key
        there = self.table.local4.get(dst)
        if (
            proto not in self._fast4
            or there is None
            or martian_src4(src)
            or src in self.table.bcast4
        ):
            return None
        if len(flows) >= _FLOW_CACHE:
            flows.clear()
        tags = flows[key] = MappingProxyType(
            {
                "src": self._source4(src),
                "dst": there,
                "proto": proto,
                "ttl": ttl,
                "tos": tos,
                "link": link,
            }
        )
        return tags

    def _flow6(
        self,
        flows: dict[tuple[bytes, bytes, int, int, int], Mapping[str, Any]],
        key: Any,
        link: str,
    ) -> Mapping[str, Any] | None:
        src, dst, nxt, hlim, tclass = key
        there = self.table.local6.get(dst)
        if nxt not in self._fast6 or there is None or martian_src6(src):
            return None
        if len(flows) >= _FLOW_CACHE:
            flows.clear()
        tags = flows[key] = MappingProxyType(
            {
                "src": self._source6(src),
                "dst": there,
                "proto": nxt,
                "ttl": hlim,
                "tos": tclass,
                "link": link,
            }
        )
        return tags

    def _input(self, packet: Item, link: str, now: float) -> None:
        data = packet if type(packet) is bytes else bytes(packet)
        if not data:
            self.counts["truncated"] += 1
            return
        version = data[0] >> 4
        if version == 4:
            self._input4(data, link, now, False)
        elif version == 6:
            self._input6(data, link, now, False)
        else:
            self.counts["bad_version"] += 1

    def _source4(self, src: int) -> IPv4Address:
        source = self._src4.get(src)
        if source is None:
            if len(self._src4) >= _SOURCE_CACHE:
                self._src4.clear()
            source = self._src4[src] = IPv4Address(src)
        return source

    def _source6(self, src: bytes) -> IPv6Address:
        source = self._src6.get(src)
        if source is None:
            if len(self._src6) >= _SOURCE_CACHE:
                self._src6.clear()
            source = self._src6[src] = IPv6Address(src)
        return source

    def _deliver(self, proto: int, data: bytes, tags: dict[str, Any]) -> bool:
        items = self.up.get(proto)
        if items is None:
            return False
        items.append(_tagged(data, tags))
        return True

    # ------------------------------------------------------------------------------ IPv4

    def _input4(self, packet: bytes, link: str, now: float, reassembled: bool) -> None:
        counts = self.counts
        size = len(packet)
        if size < 20:
            counts["truncated"] += 1
            return
        vhl, tos, tlen, ident, frag, ttl, proto, _, src, dst = IPV4_HDR.unpack_from(packet)
        hlen = (vhl & 15) << 2
        if hlen < 20:
            counts["bad_hdrlen"] += 1
            return
        if size < hlen or tlen > size:
            counts["truncated"] += 1
            return
        if tlen < hlen:
            counts["bad_length"] += 1
            return
        if ones_sum(packet[:hlen]):
            counts["bad_checksum"] += 1
            return
        if tlen < size:
            packet = packet[:tlen]  # link-layer padding
        if hlen > 20 and not options4_ok(packet[20:hlen]):
            counts["bad_options"] += 1
            return
        table = self.table
        if martian_src4(src) or src in table.bcast4:
            counts["bad_src"] += 1
            return
        if martian_dst4(dst):
            counts["bad_dst"] += 1
            return
        there = table.local4.get(dst)
        cast = False
        if there is None:
            there = table.bcast4.get(dst)
            if there is None and multicast4(dst):
                there = IPv4Address(dst)
            if there is None:
                self._forward4(packet, hlen, frag, ttl, dst, link, now)
                return
            cast = True
        if frag & (IP_MF | IP_OFFMASK):
            if reassembled:
                counts["frag_bad"] += 1
            else:
                self._fragment4(packet, hlen, ident, frag, proto, src, dst, link, now)
            return
        if cast and proto == TCP:
            counts["bad_dst"] += 1  # TCP takes no broadcast or multicast (RFC 1122 4.2.3.10)
            return
        source = self._source4(src)
        payload = packet[hlen:]
        if proto == ICMP:
            self._icmp4(packet, payload, tos, ttl, src, dst, source, there, cast, link, now)
            return
        tags = {"src": source, "dst": there, "proto": proto, "ttl": ttl, "tos": tos, "link": link}
        if self._deliver(proto, payload, tags):
            counts["delivered"] += 1
            return
        counts["no_proto"] += 1
        code = ICMP_UNREACH_PORT if proto == UDP else ICMP_UNREACH_PROTOCOL
        self._error4(packet, ICMP_UNREACH, code, 0, link, now)

    def _fragment4(
        self,
        packet: bytes,
        hlen: int,
        ident: int,
        frag: int,
        proto: int,
        src: int,
        dst: int,
        link: str,
        now: float,
    ) -> None:
        offset = (frag & IP_OFFMASK) << 3
        more = bool(frag & IP_MF)
        data = packet[hlen:]
        size = len(data)
        if (
            (more and (size & 7 or not size))
            or offset + size > MAX_PACKET - hlen
            or (offset == 8 and proto == TCP)
            or (offset == 0 and size < MIN_TRANSPORT.get(proto, 0))
        ):
            self.counts["frag_bad"] += 1
            return
        status, done = self.reasm.add(
            (src, dst, proto, ident),
            offset,
            data,
            more,
            now,
            self.settings.reasm_timeout4,
            packet if offset == 0 else None,
            link,
            len(packet) if offset == 0 else 0,
        )
        self._count_fragment(status)
        if done is None:
            return
        first, payload = done
        assert isinstance(first, bytes)
        fhlen = (first[0] & 15) << 2
        total = fhlen + len(payload)
        if total > MAX_PACKET:
            self.counts["bad_length"] += 1
            return
        head = bytearray(first[:fhlen])
        head[2:4] = U16.pack(total)
        head[6:8] = U16.pack(U16.unpack_from(first, 6)[0] & IP_DF)
        self._input4(bytes(with_checksum4(head)) + payload, link, now, True)

    def _count_fragment(self, status: int) -> None:
        counts = self.counts
        if status == ra.HELD:
            counts["fragments"] += 1
        elif status == ra.DONE:
            counts["fragments"] += 1
            counts["reassembled"] += 1
        elif status == ra.DUP:
            counts["frag_dup"] += 1
        elif status == ra.OVERFLOW:
            counts["reasm_overflow"] += 1
        else:
            counts["frag_overlap"] += 1

    def _forward4(
        self, packet: bytes, hlen: int, frag: int, ttl: int, dst: int, link: str, now: float
    ) -> None:
        counts = self.counts
        if not self.settings.forwarding:
            counts["not_for_us"] += 1
            return
        if ttl <= 1:
            counts["ttl_expired"] += 1
            self._error4(packet, ICMP_TIMXCEED, ICMP_TIMXCEED_INTRANS, 0, link, now)
            return
        path = self.table.lookup(IPv4Address(dst))
        if path is None or path.hook not in self.links:
            counts["no_route"] += 1
            self._error4(packet, ICMP_UNREACH, ICMP_UNREACH_NET, 0, link, now)
            return
        mtu = self.table.path_mtu(4, dst, path.hook, now)
        head = bytearray(packet[:hlen])
        head[8] = ttl - 1
        with_checksum4(head)
        payload = packet[hlen:]
        if len(packet) <= mtu:
            self.out.append((path.hook, bytes(head) + payload))
        elif frag & IP_DF:
            counts["cant_frag"] += 1
            self._error4(packet, ICMP_UNREACH, ICMP_UNREACH_NEEDFRAG, mtu, link, now)
            return
        else:
            pieces = fragment4(head, payload, mtu)
            if not pieces:
                counts["cant_frag"] += 1
                return
            self.out.extend([(path.hook, piece) for piece in pieces])
            counts["out_fragments"] += len(pieces)
        counts["forwarded"] += 1

    def _icmp4(
        self,
        packet: bytes,
        msg: bytes,
        tos: int,
        ttl: int,
        src: int,
        dst: int,
        source: IPv4Address,
        there: IPv4Address,
        cast: bool,
        link: str,
        now: float,
    ) -> None:
        counts = self.counts
        if len(msg) < 8 or not verifies(msg):
            counts["icmp_bad"] += 1
            return
        kind = msg[0]
        if kind in ICMP_REPORTED and not self._report4(msg, source, link, now):
            counts["icmp_bad"] += 1
            return
        counts["icmp_in"] += 1
        if kind == ICMP_ECHO and not cast:
            reply = bytearray(msg)
            reply[0] = ICMP_ECHOREPLY
            reply[2:4] = b"\0\0"
            reply[2:4] = U16.pack(checksum(reply))
            if self._emit4(dst, src, ICMP, tos, bytes(reply), link, now):
                counts["icmp_echo"] += 1
        tags = {"src": source, "dst": there, "proto": ICMP, "ttl": ttl, "tos": tos, "link": link}
        self._deliver(ICMP, msg, tags)
        counts["delivered"] += 1

    def _report4(self, msg: bytes, reporter: IPv4Address, link: str, now: float) -> bool:
        """An ICMP error about a packet of ours: up to the quoted packet's protocol."""
        quoted = msg[8:]
        if len(quoted) < 28 or quoted[0] >> 4 != 4:
            return False
        qhlen = (quoted[0] & 15) << 2
        if qhlen < 20 or len(quoted) < qhlen + 8:
            return False
        _, _, qtlen, _, _, _, qproto, _, qsrc, qdst = IPV4_HDR.unpack_from(quoted)
        mine = self.table.local4.get(qsrc)
        if mine is None:
            return False
        kind, code = msg[0], msg[1]
        tags: dict[str, Any] = {
            "src": mine,
            "dst": IPv4Address(qdst),
            "proto": qproto,
            "link": link,
            "icmp_type": kind,
            "icmp_code": code,
            "icmp_src": reporter,
        }
        if kind == ICMP_UNREACH and code == ICMP_UNREACH_NEEDFRAG:
            (mtu,) = U16.unpack_from(msg, 6)
            if not mtu:
                mtu = next((p for p in _PLATEAUS if p < qtlen), 68)
            mtu = max(mtu, 68)
            self.table.learn_mtu(4, qdst, mtu, now)
            tags["mtu"] = mtu
        self.counts["icmp_reported"] += 1
        self._deliver(qproto, quoted[qhlen:], tags)
        return True

    def _error4(
        self, packet: bytes, kind: int, code: int, rest: int, link: str, now: float
    ) -> None:
        """Send an ICMP error about ``packet`` (an IPv4 packet we received), if allowed."""
        if len(packet) < 20:
            return
        vhl, _, _, _, frag, _, proto, _, src, dst = IPV4_HDR.unpack_from(packet)
        table = self.table
        if (
            frag & IP_OFFMASK
            or martian_src4(src)
            or src in table.bcast4
            or multicast4(dst)
            or dst in table.bcast4
        ):
            return
        hlen = (vhl & 15) << 2
        if proto == ICMP and (len(packet) <= hlen or packet[hlen] in ICMP_ERRORS):
            return
        if not self._allow_error(now):
            return
        me = dst if dst in table.local4 else self._address4(link)
        if me is None:
            return
        body = bytearray(ICMP_HDR.pack(kind, code, 0, rest))
        body += packet[: IPV4_MAX_ERROR - 28]
        body[2:4] = U16.pack(checksum(body))
        if self._emit4(me, src, ICMP, 0xC0, bytes(body), link, now):
            self.counts["icmp_out"] += 1

    def _address4(self, link: str) -> int | None:
        ifaces = self.table.addresses_on(link, 4) or [
            i for _, i in self.table.addresses if i.version == 4
        ]
        return int(ifaces[0].ip) if ifaces else None

    def _emit4(
        self, src: int, dst: int, proto: int, tos: int, payload: bytes, link: str, now: float
    ) -> bool:
        """Send a packet the stack made itself: by the route, else back out of ``link``."""
        hook = self._hook_for(self.table.lookup(IPv4Address(dst)), link)
        if hook is None:
            self.counts["out_no_route"] += 1
            return False
        mtu = self.table.path_mtu(4, dst, hook, now)
        self._output4(src, dst, proto, tos, self.settings.ttl, False, payload, hook, mtu)
        return True

    def _hook_for(self, path: Path | None, link: str) -> str | None:
        if path is not None and path.hook in self.links:
            return path.hook
        return link if link in self.links else None

    def _output4(
        self,
        src: int,
        dst: int,
        proto: int,
        tos: int,
        ttl: int,
        df: bool,
        payload: Item,
        hook: str,
        mtu: int,
    ) -> None:
        ident = self._ident4 = (self._ident4 + 1) & 0xFFFF
        total = 20 + len(payload)
        if total <= mtu:
            flags = IP_DF if df else 0
            self.out.append(
                (hook, header4(tos, total, ident, flags, ttl, proto, src, dst) + payload)
            )
            return
        pieces = fragment4(header4(tos, total, ident, 0, ttl, proto, src, dst), payload, mtu)
        self.out.extend([(hook, piece) for piece in pieces])
        self.counts["out_fragments"] += len(pieces)

    # ------------------------------------------------------------------------------ IPv6

    def _input6(self, packet: bytes, link: str, now: float, reassembled: bool) -> None:
        counts = self.counts
        size = len(packet)
        if size < 40:
            counts["truncated"] += 1
            return
        vtf, plen, nxt, hlim, src, dst = IPV6_HDR.unpack_from(packet)
        end = 40 + plen
        if end > size:
            counts["truncated"] += 1
            return
        if plen == 0 and nxt == HOPOPTS:
            counts["bad_length"] += 1  # a jumbogram (RFC 2675): not on these links
            return
        if end < size:
            packet = packet[:end]
        if martian_src6(src):
            counts["bad_src"] += 1
            return
        if martian_dst6(dst):
            counts["bad_dst"] += 1
            return
        there = self.table.local6.get(dst)
        cast = False
        if there is None:
            if not multicast6(dst):
                self._forward6(packet, hlim, src, dst, link, now)
                return
            there = IPv6Address(dst)
            cast = True
        offset, field = 40, 6
        while nxt in _EXTHDRS:
            if nxt == NONEXT:
                counts["no_next"] += 1
                return
            if offset + 8 > end:
                counts["bad_exthdr"] += 1
                return
            if nxt == FRAGMENT:
                fnxt, _, offm, ident = FRAG6_HDR.unpack_from(packet, offset)
                if not offm & 0xFFF9:
                    field, nxt, offset = offset, fnxt, offset + 8  # atomic (RFC 6946)
                    continue
                if reassembled:
                    counts["bad_exthdr"] += 1  # a fragment header inside a fragment
                    return
                self._fragment6(packet, offset, field, fnxt, offm, ident, src, dst, link, now)
                return
            hsize = (packet[offset + 1] + 1) << 3
            if offset + hsize > end:
                counts["bad_exthdr"] += 1
                return
            if nxt == ROUTING:
                if packet[offset + 3]:  # segments left: we route nothing
                    counts["bad_exthdr"] += 1
                    self._error6(
                        packet, ICMP6_PARAM_PROB, ICMP6_PARAMPROB_HEADER, offset + 2, link, now
                    )
                    return
            elif nxt == HOPOPTS and offset != 40:
                counts["bad_exthdr"] += 1
                self._error6(packet, ICMP6_PARAM_PROB, ICMP6_PARAMPROB_NEXTHEADER, field, link, now)
                return
            else:
                known = _KNOWN_HOPOPTS if nxt == HOPOPTS else _KNOWN_DSTOPTS
                action, where = options6_action(packet, offset, offset + hsize, known)
                if action:
                    counts["bad_options"] += 1
                    if action == 4:
                        kind = ICMP6_PARAMPROB_HEADER
                        self._error6(packet, ICMP6_PARAM_PROB, kind, where, link, now)
                    elif action == 2 or (action == 3 and not cast):
                        kind = ICMP6_PARAMPROB_OPTION
                        self._error6(packet, ICMP6_PARAM_PROB, kind, where, link, now, True)
                    return
            field, nxt, offset = offset, packet[offset], offset + hsize
        if cast and nxt == TCP:
            counts["bad_dst"] += 1
            return
        source = self._source6(src)
        payload = packet[offset:]
        tos = (vtf >> 20) & 0xFF
        if nxt == ICMPV6:
            self._icmp6(payload, tos, hlim, src, dst, source, there, cast, link, now)
            return
        tags = {"src": source, "dst": there, "proto": nxt, "ttl": hlim, "tos": tos, "link": link}
        if self._deliver(nxt, payload, tags):
            counts["delivered"] += 1
            return
        counts["no_proto"] += 1
        if nxt == UDP:
            self._error6(packet, ICMP6_DST_UNREACH, ICMP6_DST_UNREACH_NOPORT, 0, link, now)
        else:
            self._error6(packet, ICMP6_PARAM_PROB, ICMP6_PARAMPROB_NEXTHEADER, field, link, now)

    def _fragment6(
        self,
        packet: bytes,
        offset: int,
        field: int,
        nxt: int,
        offm: int,
        ident: int,
        src: bytes,
        dst: bytes,
        link: str,
        now: float,
    ) -> None:
        counts = self.counts
        start = offset + 8
        data = packet[start:]
        size = len(data)
        fo = offm & 0xFFF8
        more = bool(offm & 1)
        if more and (size & 7 or not size):
            counts["frag_bad"] += 1
            self._error6(packet, ICMP6_PARAM_PROB, ICMP6_PARAMPROB_HEADER, 4, link, now)
            return
        if fo + size > MAX_PACKET - (offset - 40):  # the fragment header goes when reassembled
            counts["frag_bad"] += 1
            self._error6(packet, ICMP6_PARAM_PROB, ICMP6_PARAMPROB_HEADER, offset + 2, link, now)
            return
        if fo == 0:
            proto, upper, _ = walk6(packet, nxt, start, len(packet))
            if proto < 0 or (proto != NONEXT and upper + MIN_TRANSPORT.get(proto, 0) > len(packet)):
                counts["frag_bad"] += 1
                self._error6(packet, ICMP6_PARAM_PROB, ICMP6_PARAMPROB_FIRSTFRAG, 0, link, now)
                return
        status, done = self.reasm.add(
            (src, dst, ident),
            fo,
            data,
            more,
            now,
            self.settings.reasm_timeout6,
            (packet, offset, field) if fo == 0 else None,
            link,
            len(packet) if fo == 0 else 0,
        )
        self._count_fragment(status)
        if done is None:
            return
        first, payload = done
        assert isinstance(first, tuple)
        fpacket, foffset, ffield = first
        # The first fragment's headers up to its fragment header, which goes; the header
        # before it now names what the fragment header named.
        head = bytearray(fpacket[:foffset])
        head[ffield] = fpacket[foffset]
        plen = foffset - 40 + len(payload)
        if plen > MAX_PACKET:
            counts["bad_length"] += 1
            return
        head[4:6] = U16.pack(plen)
        self._input6(bytes(head) + payload, link, now, True)

    def _forward6(
        self, packet: bytes, hlim: int, src: bytes, dst: bytes, link: str, now: float
    ) -> None:
        counts = self.counts
        if not self.settings.forwarding or link_local6(src) or link_local6(dst):
            counts["not_for_us"] += 1
            return
        if hlim <= 1:
            counts["ttl_expired"] += 1
            self._error6(packet, ICMP6_TIME_EXCEEDED, ICMP6_TIME_EXCEED_TRANSIT, 0, link, now)
            return
        path = self.table.lookup(IPv6Address(dst))
        if path is None or path.hook not in self.links:
            counts["no_route"] += 1
            self._error6(packet, ICMP6_DST_UNREACH, ICMP6_DST_UNREACH_NOROUTE, 0, link, now)
            return
        mtu = self.table.path_mtu(6, int.from_bytes(dst, "big"), path.hook, now)
        if len(packet) > mtu:
            counts["cant_frag"] += 1
            self._error6(packet, ICMP6_PACKET_TOO_BIG, 0, mtu, link, now)
            return
        head = bytearray(packet[:40])
        head[7] = hlim - 1
        self.out.append((path.hook, bytes(head) + packet[40:]))
        counts["forwarded"] += 1

    def _icmp6(
        self,
        msg: bytes,
        tos: int,
        hlim: int,
        src: bytes,
        dst: bytes,
        source: IPv6Address,
        there: IPv6Address,
        cast: bool,
        link: str,
        now: float,
    ) -> None:
        counts = self.counts
        size = len(msg)
        if size < 4 or (ones_sum(msg) + pseudo6(src, dst, ICMPV6, size)) % 0xFFFF:
            counts["icmp_bad"] += 1
            return
        kind = msg[0]
        if (kind in ICMP6_REPORTED and not self._report6(msg, source, link, now)) or (
            kind == ICMP6_ECHO_REQUEST and size < 8
        ):
            counts["icmp_bad"] += 1
            return
        counts["icmp_in"] += 1
        if kind == ICMP6_ECHO_REQUEST and not cast:
            reply = bytearray(msg)
            reply[0] = ICMP6_ECHO_REPLY
            reply[2:4] = b"\0\0"
            reply[2:4] = U16.pack(checksum(reply, pseudo6(dst, src, ICMPV6, size)))
            if self._emit6(dst, src, ICMPV6, tos, bytes(reply), link, now):
                counts["icmp_echo"] += 1
        tags = {"src": source, "dst": there, "proto": ICMPV6, "ttl": hlim, "tos": tos, "link": link}
        self._deliver(ICMPV6, msg, tags)
        counts["delivered"] += 1

    def _report6(self, msg: bytes, reporter: IPv6Address, link: str, now: float) -> bool:
        quoted = msg[8:]
        if len(quoted) < 48 or quoted[0] >> 4 != 6:
            return False
        mine = self.table.local6.get(quoted[8:24])
        if mine is None:
            return False
        qproto, qoffset, _ = walk6(quoted, quoted[6], 40, len(quoted))
        if qproto < 0 or qoffset + 8 > len(quoted):
            return False
        kind, code = msg[0], msg[1]
        qdst = quoted[24:40]
        tags: dict[str, Any] = {
            "src": mine,
            "dst": IPv6Address(qdst),
            "proto": qproto,
            "link": link,
            "icmp_type": kind,
            "icmp_code": code,
            "icmp_src": reporter,
        }
        if kind == ICMP6_PACKET_TOO_BIG:
            mtu = max(U32.unpack_from(msg, 4)[0], IPV6_MIN_MTU)
            self.table.learn_mtu(6, int.from_bytes(qdst, "big"), mtu, now)
            tags["mtu"] = mtu
        self.counts["icmp_reported"] += 1
        self._deliver(qproto, quoted[qoffset:], tags)
        return True

    def _error6(
        self,
        packet: bytes,
        kind: int,
        code: int,
        value: int,
        link: str,
        now: float,
        to_multicast: bool = False,
    ) -> None:
        """Send an ICMPv6 error about ``packet`` (an IPv6 packet we received), if allowed."""
        if len(packet) < 40:
            return
        src, dst = packet[8:24], packet[24:40]
        if src == V6_UNSPECIFIED or martian_src6(src):
            return
        if multicast6(dst) and not (to_multicast or kind == ICMP6_PACKET_TOO_BIG):
            return
        proto, upper, _ = walk6(packet, packet[6], 40, len(packet))
        if proto == ICMPV6 and (
            upper >= len(packet) or packet[upper] < 128 or packet[upper] == ICMP6_REDIRECT
        ):
            return
        if not self._allow_error(now):
            return
        me = dst if dst in self.table.local6 else self._address6(link, src)
        if me is None:
            return
        body = bytearray(ICMP_HDR.pack(kind, code, 0, value))
        body += packet[: IPV6_MIN_MTU - 48]
        body[2:4] = U16.pack(checksum(body, pseudo6(me, src, ICMPV6, len(body))))
        if self._emit6(me, src, ICMPV6, 0, bytes(body), link, now):
            self.counts["icmp_out"] += 1

    def _address6(self, link: str, dst: bytes) -> bytes | None:
        ifaces = self.table.addresses_on(link, 6) or [
            i for _, i in self.table.addresses if i.version == 6
        ]
        if not ifaces:
            return None
        scope = link_local6(dst)
        best = min(ifaces, key=lambda i: i.ip.is_link_local != scope)
        return best.ip.packed

    def _emit6(
        self, src: bytes, dst: bytes, nxt: int, tclass: int, payload: bytes, link: str, now: float
    ) -> bool:
        hook = self._hook_for(self.table.lookup(IPv6Address(dst)), link)
        if hook is None:
            self.counts["out_no_route"] += 1
            return False
        mtu = self.table.path_mtu(6, int.from_bytes(dst, "big"), hook, now)
        self._output6(src, dst, nxt, tclass, self.settings.ttl, payload, hook, mtu)
        return True

    def _output6(
        self,
        src: bytes,
        dst: bytes,
        nxt: int,
        tclass: int,
        hlim: int,
        payload: Item,
        hook: str,
        mtu: int,
    ) -> None:
        size = len(payload)
        if 40 + size <= mtu:
            self.out.append((hook, header6(tclass, size, nxt, hlim, src, dst) + payload))
            return
        ident = self._ident6 = (self._ident6 + 1) & 0xFFFFFFFF
        room = (mtu - 48) & ~7
        pieces = []
        for start in range(0, size, room):
            piece = payload[start : start + room]
            more = 1 if start + room < size else 0
            head = header6(tclass, 8 + len(piece), FRAGMENT, hlim, src, dst)
            pieces.append((hook, head + FRAG6_HDR.pack(nxt, 0, start | more, ident) + piece))
        self.out.extend(pieces)
        self.counts["out_fragments"] += len(pieces)

    # -------------------------------------------------------------------------- sending

    def send_many(self, proto: int, items: Sequence[Item], now: float) -> NetgraphError | None:
        """:meth:`send` each item; the first error is returned, the rest are only counted."""
        first = None
        for item in items:
            try:
                self.send(proto, item, now)
            except NetgraphError as err:
                if first is None:
                    first = err
        return first

    def send(self, proto: int, item: Item, now: float) -> None:
        """Send ``item`` (a transport packet) for protocol ``proto`` as its tags say."""
        counts = self.counts
        tags = getattr(item, "tags", _NO_TAGS)
        get = tags.get
        try:
            if "unreach" in tags:
                self._unreach(proto, item, tags, now)
                return
            dst = get("dst")
            if type(dst) is not IPv4Address and type(dst) is not IPv6Address:
                dst = _as_address(dst)
                if dst is None:
                    raise NetgraphError(
                        errno.EINVAL, f"an item to send needs a dst tag, not {get('dst')!r}"
                    )
            ttl = get("ttl")
            ttl = self.settings.ttl if ttl is None else _byte_tag(tags, "ttl", 0, 1)
            tos = get("tos")
            if tos is not None:
                tos = _byte_tag(tags, "tos", 0, 0)
            else:
                tos = 0 if get("tclass") is None else _byte_tag(tags, "tclass", 0, 0)
        except NetgraphError:
            counts["out_bad_tags"] += 1
            raise
        table = self.table
        version = dst.version
        key = int(dst)
        if key in table.local4 if version == 4 else dst.packed in table.local6:
            counts["out_no_route"] += 1
            raise NetgraphError(errno.EHOSTUNREACH, f"{dst} is this node's own (no loopback)")
        path = table.lookup(dst)
        if path is None:
            counts["out_no_route"] += 1
            raise NetgraphError(errno.EHOSTUNREACH, f"no route to {dst}")
        hook = path.hook
        if hook not in self.links:
            counts["out_link_down"] += 1
            raise NetgraphError(errno.ENETDOWN, f"the route to {dst} is by {hook!r}, not connected")
        src = tags.get("src")
        srckey = path.srckey if src is None else self._own_source(src, version)
        if srckey is None:
            counts["out_no_src"] += 1
            if src is None:
                raise NetgraphError(errno.EADDRNOTAVAIL, f"no IPv{version} address to send from")
            raise NetgraphError(errno.EADDRNOTAVAIL, f"src {src!r} is not an address of ours")
        payload: Item = item
        if "csum" in tags:
            try:
                payload = _fill_checksum(payload, tags["csum"], proto, srckey, dst)
            except NetgraphError:
                counts["out_bad_tags"] += 1
                raise
        df = bool(tags.get("df", False))
        size = len(payload)
        mtu = table.path_mtu(version, key, hook, now)
        if version == 4:
            assert isinstance(srckey, int)
            if 20 + size > MAX_PACKET or (df and 20 + size > mtu):
                counts["out_too_big"] += 1
                raise NetgraphError(errno.EMSGSIZE, f"{20 + size} bytes to {dst}: the MTU is {mtu}")
            self._output4(srckey, key, proto, tos, ttl, df, payload, hook, mtu)
        else:
            assert isinstance(srckey, bytes)
            if size > MAX_PACKET or (df and 40 + size > mtu):
                counts["out_too_big"] += 1
                raise NetgraphError(errno.EMSGSIZE, f"{40 + size} bytes to {dst}: the MTU is {mtu}")
            self._output6(srckey, dst.packed, proto, tos, ttl, payload, hook, mtu)

    def _own_source(self, src: Any, version: int) -> int | bytes | None:
        address = _as_address(src)
        if address is None or address.version != version:
            return None
        if version == 4:
            return int(address) if int(address) in self.table.local4 else None
        return address.packed if address.packed in self.table.local6 else None

    def _unreach(self, proto: int, item: Item, tags: Mapping[str, Any], now: float) -> None:
        """The protocol hook hands back an item it received, asking for destination
        unreachable (code ``unreach``) to its sender: rebuild the header from its tags."""
        code = _byte_tag(tags, "unreach", 0, 0)
        src, dst = _as_address(tags.get("src")), _as_address(tags.get("dst"))
        if src is None or dst is None or src.version != dst.version:
            raise NetgraphError(errno.EINVAL, "unreach needs the src and dst tags it came up with")
        ttl = _byte_tag(tags, "ttl", 64, 0)
        tos = _byte_tag(tags, "tos", 0, 0)
        link = tags.get("link", "")
        link = link if isinstance(link, str) else ""
        data = bytes(item)
        if len(data) + (20 if src.version == 4 else 0) > MAX_PACKET:
            raise NetgraphError(errno.EINVAL, f"unreach: {len(data)} bytes never came up")
        if src.version == 4:
            head = header4(tos, 20 + len(data), 0, 0, ttl, proto, int(src), int(dst))
            self._error4(head + data, ICMP_UNREACH, code, 0, link, now)
        else:
            head = header6(tos, len(data), proto, ttl, src.packed, dst.packed)
            self._error6(head + data, ICMP6_DST_UNREACH, code, 0, link, now)

    def _allow_error(self, now: float) -> bool:
        """The ICMP error token bucket."""
        settings = self.settings
        tokens = self._tokens
        if self._token_time is not None:
            tokens = min(
                settings.icmp_burst, tokens + (now - self._token_time) * settings.icmp_rate
            )
        self._token_time = now
        if tokens < 1:
            self._tokens = tokens
            self.counts["icmp_ratelimited"] += 1
            return False
        self._tokens = tokens - 1
        return True

    # ----------------------------------------------------------------------------- lookups

    def route(self, dst: IPv4Address | IPv6Address, now: float) -> tuple[Path, int] | None:
        """The route to ``dst`` with its source and the path MTU (for the getroute message)."""
        path = self.table.lookup(dst)
        if path is None:
            return None
        mtu = self.table.path_mtu(dst.version, int(dst), path.hook, now)
        return path, mtu


def _fill_checksum(
    payload: Item, offset: Any, proto: int, src: int | bytes, dst: IPv4Address | IPv6Address
) -> bytearray:
    """The transport checksum over the pseudo-header, written at ``offset`` (RFC 768/9293/8200)."""
    size = len(payload)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= size - 2:
        raise NetgraphError(errno.EINVAL, f"csum={offset!r} is not an offset in the payload")
    data = bytearray(payload)
    data[offset : offset + 2] = b"\0\0"
    if isinstance(src, int):
        pseudo = pseudo4(src, int(dst), proto, size)
    else:
        pseudo = pseudo6(src, dst.packed, proto, size)
    value = checksum(data, pseudo)
    if value == 0 and proto == UDP:
        value = 0xFFFF  # zero means "no checksum" in UDP
    data[offset : offset + 2] = U16.pack(value)
    return data
