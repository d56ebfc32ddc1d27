"""IPv4, IPv6 and ICMP wire formats: header layouts, the Internet checksum, address classes.

Pure functions over bytes and ints, no state and no I/O. Addresses inside the stack are ints for
IPv4 (what ``struct`` gives for ``I``) and 16-byte ``bytes`` for IPv6 (``16s``), so that they are
cheap dictionary keys; :mod:`ipaddress` objects appear only at the edges (tags and messages).

The Internet checksum (RFC 1071) is computed as ``int.from_bytes(data, "big") % 0xFFFF``: since
2**16 is 1 modulo 0xFFFF, the big number is congruent to the sum of its 16-bit words, which is
what the one's-complement sum folds to. A block of data verifies when that remainder is 0 (the
one's-complement sum is 0xFFFF, "negative zero"; a block that is all zero, the other way to get
a remainder of 0, sums to +0 and does not verify. It cannot occur in an IP header, which has a
version, nor under a pseudo-header, which has a protocol number; an ICMPv4 message has neither,
so it is checked with :func:`verifies`, and :func:`checksum` gives 0xFFFF for all zeros).
"""

from __future__ import annotations

import struct
from typing import Final

# ---------------------------------------------------------------------------- constants

IPV4_HDR: Final = struct.Struct("!BBHHHBBHII")  # vhl tos len id frag ttl proto sum src dst
IPV6_HDR: Final = struct.Struct("!IHBB16s16s")  # vtcfl plen nxt hlim src dst
FRAG6_HDR: Final = struct.Struct("!BBHI")  # nxt reserved offset|M ident
ICMP_HDR: Final = struct.Struct("!BBHI")  # type code sum rest-of-header
U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")

IPV4_MIN_MTU: Final = 68
IPV6_MIN_MTU: Final = 1280
IPV4_MAX_ERROR: Final = 576  # an ICMPv4 error packet stays within this (RFC 1812 4.3.2.3)
MAX_PACKET: Final = 65535

# IPv4 flags and offset field.
IP_DF: Final = 0x4000
IP_MF: Final = 0x2000
IP_OFFMASK: Final = 0x1FFF

# Protocol numbers (also IPv6 next-header values).
HOPOPTS: Final = 0
ICMP: Final = 1
TCP: Final = 6
UDP: Final = 17
ROUTING: Final = 43
FRAGMENT: Final = 44
ESP: Final = 50
AH: Final = 51
ICMPV6: Final = 58
NONEXT: Final = 59
DSTOPTS: Final = 60

PROTOCOL_NAMES: Final = {"icmp": ICMP, "tcp": TCP, "udp": UDP, "icmp6": ICMPV6}

# The smallest transport header a first fragment must carry whole (RFC 1858, RFC 7112).
MIN_TRANSPORT: Final = {TCP: 20, UDP: 8, ICMP: 8, ICMPV6: 4}

# ICMPv4 types and codes.
ICMP_ECHOREPLY: Final = 0
ICMP_UNREACH: Final = 3
ICMP_SOURCEQUENCH: Final = 4
ICMP_REDIRECT: Final = 5
ICMP_ECHO: Final = 8
ICMP_TIMXCEED: Final = 11
ICMP_PARAMPROB: Final = 12
ICMP_UNREACH_NET: Final = 0
ICMP_UNREACH_HOST: Final = 1
ICMP_UNREACH_PROTOCOL: Final = 2
ICMP_UNREACH_PORT: Final = 3
ICMP_UNREACH_NEEDFRAG: Final = 4
ICMP_TIMXCEED_INTRANS: Final = 0
ICMP_TIMXCEED_REASS: Final = 1
ICMP_ERRORS: Final = frozenset(
    (ICMP_UNREACH, ICMP_SOURCEQUENCH, ICMP_REDIRECT, ICMP_TIMXCEED, ICMP_PARAMPROB)
)
# The errors passed up to the protocol whose packet they quote.
ICMP_REPORTED: Final = frozenset((ICMP_UNREACH, ICMP_TIMXCEED, ICMP_PARAMPROB))

# ICMPv6 types and codes.
ICMP6_DST_UNREACH: Final = 1
ICMP6_PACKET_TOO_BIG: Final = 2
ICMP6_TIME_EXCEEDED: Final = 3
ICMP6_PARAM_PROB: Final = 4
ICMP6_ECHO_REQUEST: Final = 128
ICMP6_ECHO_REPLY: Final = 129
ICMP6_REDIRECT: Final = 137
ICMP6_DST_UNREACH_NOROUTE: Final = 0
ICMP6_DST_UNREACH_ADDR: Final = 3
ICMP6_DST_UNREACH_NOPORT: Final = 4
ICMP6_TIME_EXCEED_TRANSIT: Final = 0
ICMP6_TIME_EXCEED_REASSEMBLY: Final = 1
ICMP6_PARAMPROB_HEADER: Final = 0
ICMP6_PARAMPROB_NEXTHEADER: Final = 1
ICMP6_PARAMPROB_OPTION: Final = 2
ICMP6_PARAMPROB_FIRSTFRAG: Final = 3
ICMP6_REPORTED: Final = frozenset(
    (ICMP6_DST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROB)
)

# ------------------------------------------------------------------------------ checksum


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's-complement sum of ``data`` modulo 0xFFFF (0 stands for 0xFFFF and for 0)."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def fold(total: int) -> int:
    """The checksum field for a block whose words sum to ``total`` (any size, not yet folded)."""
    rest = total % 0xFFFF
    return 0xFFFF - rest if rest else 0


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (with the field it goes in taken as zero)."""
    total = ones_sum(data) + initial
    if not total and not initial and not int.from_bytes(data, "big"):
        return 0xFFFF  # all zero: the sum is +0, not -0, and its complement is 0xFFFF
    return fold(total)


def verifies(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data``, its checksum field included, sums to -0 (0xFFFF): a remainder of 0
    that is not all zero (which sums to +0, and no checksum field can make so)."""
    value = int.from_bytes(data, "big")  # (an odd length's padding changes no remainder)
    return bool(value) and not value % 0xFFFF


def pseudo4(src: int, dst: int, proto: int, length: int) -> int:
    """The IPv4 pseudo-header's word sum (RFC 768, RFC 9293): addresses, protocol, length."""
    return src + dst + proto + length


def pseudo6(src: bytes, dst: bytes, nxt: int, length: int) -> int:
    """The IPv6 pseudo-header's word sum (RFC 8200 8.1)."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + length + nxt


# --------------------------------------------------------------------------- IPv4 header


def header4(
    tos: int, total: int, ident: int, frag: int, ttl: int, proto: int, src: int, dst: int
) -> bytes:
    """A 20-byte IPv4 header with its checksum, the sum taken over the fields arithmetically."""
    total_sum = 0x4500 + tos + total + ident + frag + (ttl << 8) + proto + src + dst
    return IPV4_HDR.pack(0x45, tos, total, ident, frag, ttl, proto, fold(total_sum), src, dst)


def with_checksum4(header: bytearray) -> bytearray:
    """Recompute the checksum of a whole IPv4 header (options included) in place."""
    header[10:12] = b"\0\0"
    header[10:12] = U16.pack(checksum(header))
    return header


def options4_ok(options: bytes | bytearray | memoryview) -> bool:
    """Whether IPv4 options are well formed: each an EOL, a NOP, or a type-length-value whose
    length is at least 2 and stays inside the header (RFC 791)."""
    i, end = 0, len(options)
    while i < end:
        kind = options[i]
        if kind == 0:
            return True
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            return False
        size = options[i + 1]
        if size < 2 or i + size > end:
            return False
        i += size
    return True


def copied_options4(options: bytes | bytearray | memoryview) -> bytes:
    """The options that go into every fragment (the copied flag, 0x80), padded to 4 bytes."""
    out = bytearray()
    i, end = 0, len(options)
    while i < end:
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        size = options[i + 1]
        if kind & 0x80:
            out += options[i : i + size]
        i += size
    out += bytes(-len(out) % 4)
    return bytes(out)


def fragment4(
    header: bytes | bytearray, payload: bytes | bytearray | memoryview, mtu: int
) -> list[bytes]:
    """Cut an IPv4 datagram (``header``, options included, and ``payload``) into fragments of at
    most ``mtu`` bytes (RFC 791): the first keeps every option, later ones only the copied ones.
    A fragment of a fragment keeps its offset base and last MF. Empty if the MTU is too small."""
    hlen = (header[0] & 15) << 2
    (frag,) = U16.unpack_from(header, 6)
    base = (frag & IP_OFFMASK) << 3
    last_mf = frag & IP_MF
    df = frag & IP_DF
    later = bytes(header[:20]) + copied_options4(header[20:hlen])
    out: list[bytes] = []
    pos, size = 0, len(payload)
    head: bytes | bytearray = header
    while pos < size:
        room = (mtu - len(head)) & ~7
        if room <= 0:
            return []
        piece = payload[pos : pos + room]
        end = pos + len(piece)
        flags = df | (last_mf if end >= size else IP_MF) | ((base + pos) >> 3)
        top = bytearray(head)
        top[0] = 0x40 | (len(head) >> 2)
        top[2:4] = U16.pack(len(head) + len(piece))
        top[6:8] = U16.pack(flags)
        out.append(bytes(with_checksum4(top)) + piece)
        pos, head = end, later
    return out


def martian_src4(src: int) -> bool:
    """A source no packet from a link may carry: 0/8, loopback, multicast, class E, broadcast."""
    top = src >> 24
    return top == 0 or top == 127 or top >= 224


def martian_dst4(dst: int) -> bool:
    """A destination no packet from a link may carry: 0/8, loopback, class E (not broadcast)."""
    top = dst >> 24
    return top == 0 or top == 127 or (top >= 240 and dst != 0xFFFFFFFF)


def multicast4(addr: int) -> bool:
    return addr >> 28 == 14


# --------------------------------------------------------------------------- IPv6 header

V6_UNSPECIFIED: Final = bytes(16)
V6_LOOPBACK: Final = bytes(15) + b"\1"
V6_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"


def martian_src6(src: bytes) -> bool:
    """A source no packet from a link may carry: multicast, loopback, IPv4-mapped (RFC 4291)."""
    return src[0] == 0xFF or src == V6_LOOPBACK or src[:12] == V6_MAPPED_PREFIX


def martian_dst6(dst: bytes) -> bool:
    return dst in (V6_UNSPECIFIED, V6_LOOPBACK) or dst[:12] == V6_MAPPED_PREFIX


def multicast6(addr: bytes) -> bool:
    return addr[0] == 0xFF


def link_local6(addr: bytes) -> bool:
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def header6(tclass: int, plen: int, nxt: int, hlim: int, src: bytes, dst: bytes) -> bytes:
    return IPV6_HDR.pack(0x60000000 | (tclass << 20), plen, nxt, hlim, src, dst)


def walk6(
    packet: bytes | bytearray | memoryview, nxt: int, offset: int, end: int
) -> tuple[int, int, int]:
    """Skip the extension headers of an IPv6 packet (or of a quoted one, which may be cut short)
    starting with next-header ``nxt`` at ``offset``: the upper-layer protocol, where its header
    starts, and where the next-header field that names it is. The protocol is -1 when the chain
    is cut short or malformed, or when it holds a fragment header that is not the first fragment.
    """
    field = 6
    while nxt in (HOPOPTS, ROUTING, DSTOPTS, FRAGMENT, AH):
        if offset + 8 > end:
            return -1, offset, field
        field = offset
        if nxt == FRAGMENT:
            if U16.unpack_from(packet, offset + 2)[0] & 0xFFF8:
                return -1, offset, field  # a later fragment: no upper-layer header here
            nxt, size = packet[offset], 8
        elif nxt == AH:
            nxt, size = packet[offset], (packet[offset + 1] + 2) * 4
        else:
            nxt, size = packet[offset], (packet[offset + 1] + 1) * 8
        offset += size
    if offset > end:
        return -1, offset, field
    return nxt, offset, field


def options6_action(
    packet: bytes | bytearray | memoryview, start: int, end: int, known: frozenset[int]
) -> tuple[int, int]:
    """Walk the type-length-value options of a hop-by-hop or destination options header that
    spans ``packet[start:end]`` (RFC 8200 4.2). Returns ``(action, offset)``: action 0 to go
    on, 1 to discard silently, 2 to discard and send a parameter problem (code 2, pointing at
    ``offset``), 3 the same unless the destination is multicast, 4 malformed (code 0)."""
    i = start + 2
    while i < end:
        kind = packet[i]
        if kind == 0:
            i += 1
            continue
        if i + 2 > end:
            return 4, i
        size = packet[i + 1]
        if i + 2 + size > end:
            return 4, i + 1
        if kind != 1 and kind not in known:
            action = kind >> 6
            if action:
                return action, i
        i += 2 + size
    return 0, 0
