"""TCP segments on the wire: the header and its options, parsed and built, and the checksum.

Pure functions over bytes and ints: no state, no clock, no I/O. The connection's fast paths
(:mod:`nodes.tcp.connection`) use the precompiled structs and constants directly and inline
what they need; the functions here serve the slow paths, listeners and tests.

The checksum (RFC 9293 3.1, RFC 1071) is taken as ``int.from_bytes(data, "big") % 0xFFFF``:
since 2**16 is 1 modulo 0xFFFF, the big number is congruent to the sum of its 16-bit words, and
so is a 32-bit field to the sum of its halves. So the pseudo-header's contribution is just
``src + dst + 6 + length`` with the addresses as ints, a header's the sum of its fields as ints,
and a block verifies when the remainder of its sum with the pseudo-header is 0. The field is
``0xFFFF - rest`` (0 when ``rest`` is 0); an odd-length block counts as if padded with a zero.

Options: MSS (2), window scale (3), SACK-permitted (4), SACK (5), timestamps (8), NOP (1), EOL
(0) are understood; unknown kinds are skipped by their length. A known option with the wrong
length is ignored, as Linux does. An option whose length is below 2 or runs past the header is
*malformed*: :func:`parse_options` raises :class:`Malformed`, and the segment is dropped and
counted by whoever parsed it.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

MASK: Final = 0xFFFFFFFF
HALF: Final = 0x80000000

# Header flags (the low byte of the offset/flags word; 0x100 is the old NS / new AE bit).
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

FLAG_NAMES: Final = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"))

# Option kinds.
OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMP: Final = 8

MAX_WSCALE: Final = 14  # RFC 7323 2.3
MAX_SACK_BLOCKS: Final = 4

HDR: Final = struct.Struct("!HHIIHHHH")  # sport dport seq ack off|flags wnd sum urp
# The header with the usual timestamps layout (NOP NOP TS 10 tsval tsecr) as one struct: the
# connection's fast paths pack and unpack data segments and pure ACKs with it in one call.
HDR_TS: Final = struct.Struct("!HHIIHHHHIII")
TS_WORD: Final = 0x0101080A  # NOP NOP kind=8 len=10
TS_PREFIX: Final = b"\x01\x01\x08\x0a"
TS_WORD_SUM: Final = 0x0101 + 0x080A
U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")
TS_VALUES: Final = struct.Struct("!II")

PROTO_TCP: Final = 6
HEADER_MIN: Final = 20

# The data offset in the high nibble of the offset/flags word, for a header of n bytes: n/4 << 12.
OFF20: Final = 5 << 12
OFF32: Final = 8 << 12


class Malformed(ValueError):
    """A segment that cannot be parsed: too short, a bad data offset, or malformed options."""


# ------------------------------------------------------------------------------ checksum


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def pseudo_sum(src: Address | str, dst: Address | str) -> int:
    """The pseudo-header's contribution to the checksum, less the TCP length (RFC 9293 3.1,
    RFC 8200 8.1): the two addresses as ints plus the protocol number. The same both ways."""
    return int(ipaddress.ip_address(src)) + int(ipaddress.ip_address(dst)) + PROTO_TCP


_MASKS: dict[int, int] = {}


def words(data: bytes | bytearray | memoryview) -> int:
    """An int congruent modulo 0xFFFF to the 16-bit word sum of ``data``, and small.

    ``int.from_bytes`` makes one big number of the data; a remainder of it by 0xFFFF costs a
    machine division per 30-bit digit, so it is first folded: ``hi * 2**k + lo`` is congruent
    to ``hi + lo`` when k is a multiple of 16, and a shift, a mask and an add per halving are
    much cheaper than the divisions (about 3 us instead of 4.5 for 1448 bytes, 80 instead of
    160 for 64 KiB). The masks are cached (a bounded dict: segment sizes repeat)."""
    n = len(data)
    x = int.from_bytes(data, "big")
    if n & 1:
        x <<= 8
    k = (n >> 2) << 4
    masks = _MASKS
    while k > 512:
        m = masks.get(k)
        if m is None:
            if len(masks) >= 128:
                masks.clear()
            m = masks[k] = (1 << k) - 1
        x = (x >> k) + (x & m)
        k = (k >> 5) << 4
    return x


def fold(total: int) -> int:
    """The checksum field for a segment whose words (pseudo-header included) sum to ``total``."""
    rest = total % 0xFFFF
    return 0xFFFF - rest if rest else 0


def partial_checksum(pseudo: int, length: int) -> int:
    """The checksum field for transmit checksum offload (Linux's CHECKSUM_PARTIAL, virtio-net's
    NEEDS_CSUM with csum_start at the TCP header and csum_offset 16): the pseudo-header's folded
    sum, not complemented, for the device to add the segment's words to and complement."""
    rest = (pseudo + length) % 0xFFFF
    return rest or 0xFFFF


def verify(data: bytes | bytearray | memoryview, pseudo: int) -> bool:
    """Whether a whole segment's checksum is right, given :func:`pseudo_sum` of its addresses."""
    return (words(data) + pseudo + len(data)) % 0xFFFF == 0


# ------------------------------------------------------------------------------- options


class Options:
    """The options of one segment, parsed. ``tsval`` is None when there is no timestamp.

    A plain slotted class: made only on slow paths (handshakes, SACK, odd layouts)."""

    __slots__ = ("mss", "sack_blocks", "sack_permitted", "tsecr", "tsval", "wscale")

    def __init__(self) -> None:
        self.mss: int | None = None
        self.wscale: int | None = None
        self.sack_permitted = False
        self.tsval: int | None = None
        self.tsecr = 0
        self.sack_blocks: tuple[tuple[int, int], ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.__slots__))
        return f"Options({fields})"


NO_OPTIONS: Final = Options()


def parse_options(data: bytes | bytearray | memoryview, start: int, end: int) -> Options:
    """Parse the options in ``data[start:end]``; raise :class:`Malformed` on a bad length."""
    opts = Options()
    i = start
    while i < end:
        kind = data[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise Malformed(f"option {kind} has no length")
        size = data[i + 1]
        if size < 2 or i + size > end:
            raise Malformed(f"option {kind} has length {size}")
        if kind == OPT_TIMESTAMP:
            if size == 10:
                opts.tsval, opts.tsecr = TS_VALUES.unpack_from(data, i + 2)
        elif kind == OPT_MSS:
            if size == 4:
                opts.mss = U16.unpack_from(data, i + 2)[0]
        elif kind == OPT_WSCALE:
            if size == 3:
                opts.wscale = min(data[i + 2], MAX_WSCALE)
        elif kind == OPT_SACK_PERMITTED:
            if size == 2:
                opts.sack_permitted = True
        elif kind == OPT_SACK and (size - 2) % 8 == 0 and size > 2:
            opts.sack_blocks = tuple(
                TS_VALUES.unpack_from(data, j) for j in range(i + 2, i + size, 8)
            )
        i += size
    return opts


def encode_options(
    *,
    mss: int | None = None,
    wscale: int | None = None,
    sack_permitted: bool = False,
    timestamp: tuple[int, int] | None = None,
    sack_blocks: tuple[tuple[int, int], ...] | list[tuple[int, int]] = (),
) -> bytes:
    """Options in Linux's layout, padded with NOPs to a multiple of 4 bytes.

    A SYN carries ``MSS, SACK-permitted, TS, NOP, WS`` (20 bytes) as Linux sends it; other
    segments ``NOP NOP TS`` then ``NOP NOP SACK``. At most 4 SACK blocks fit (3 with TS)."""
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, mss)
    if timestamp is not None:
        if sack_permitted:
            out += bytes((OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10))
        else:
            out += bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10))
        out += TS_VALUES.pack(*timestamp)
    elif sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, wscale))
    if sack_blocks:
        room = (40 - len(out) - 4) // 8
        blocks = list(sack_blocks)[: min(room, MAX_SACK_BLOCKS)]
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
        for left, right in blocks:
            out += TS_VALUES.pack(left, right)
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)  # EOL padding
    return bytes(out)


# ------------------------------------------------------------------------------- segments


class Segment:
    """A parsed segment (slow paths, listeners, tests). ``payload`` is a view of the input."""

    __slots__ = (
        "ack",
        "dport",
        "flags",
        "hlen",
        "options",
        "payload",
        "seq",
        "sport",
        "urp",
        "wnd",
    )

    def __init__(
        self,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        wnd: int,
        urp: int,
        hlen: int,
        options: Options,
        payload: memoryview,
    ) -> None:
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.wnd = wnd
        self.urp = urp
        self.hlen = hlen
        self.options = options
        self.payload = payload

    @property
    def seg_len(self) -> int:
        """SEG.LEN: the payload plus one for each of SYN and FIN."""
        return len(self.payload) + (self.flags & SYN != 0) + (self.flags & FIN != 0)

    def __repr__(self) -> str:
        names = "".join(name for bit, name in FLAG_NAMES if self.flags & bit)
        return (
            f"Segment({self.sport}>{self.dport} [{names}] seq={self.seq} ack={self.ack} "
            f"wnd={self.wnd} len={len(self.payload)} {self.options!r})"
        )


def parse(data: bytes | bytearray | memoryview, pseudo: int | None = None) -> Segment:
    """Parse a whole segment; with ``pseudo`` (:func:`pseudo_sum`), verify its checksum too.

    Raises :class:`Malformed` for a short segment, a bad data offset, bad options or (when
    checked) a bad checksum."""
    n = len(data)
    if n < HEADER_MIN:
        raise Malformed(f"segment of {n} bytes")
    if pseudo is not None and not verify(data, pseudo):
        raise Malformed("bad checksum")
    sport, dport, seq, ack, offflags, wnd, _sum, urp = HDR.unpack_from(data)
    hlen = (offflags >> 12) << 2
    if hlen < HEADER_MIN or hlen > n:
        raise Malformed(f"data offset {hlen} in a segment of {n} bytes")
    opts = parse_options(data, HEADER_MIN, hlen) if hlen > HEADER_MIN else NO_OPTIONS
    view = data if isinstance(data, memoryview) else memoryview(data)
    return Segment(sport, dport, seq, ack, offflags & 0xFF, wnd, urp, hlen, opts, view[hlen:])


def build(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    wnd: int,
    pseudo: int,
    options: bytes = b"",
    payload: bytes | bytearray | memoryview = b"",
    urp: int = 0,
    *,
    offload: bool = False,
) -> bytes:
    """A whole segment with its checksum (the sum taken over the fields arithmetically); with
    ``offload``, only the pseudo-header's part of it (:func:`partial_checksum`)."""
    hlen = HEADER_MIN + len(options)
    offflags = (hlen << 10) | flags
    if offload:
        head = HDR.pack(
            sport,
            dport,
            seq,
            ack,
            offflags,
            wnd,
            partial_checksum(pseudo, hlen + len(payload)),
            urp,
        )
        return head + options + payload if payload else head + options
    total = (
        pseudo
        + hlen
        + len(payload)
        + sport
        + dport
        + seq
        + ack
        + offflags
        + wnd
        + urp
        + (int.from_bytes(options, "big") if options else 0)
        + (words(payload) if payload else 0)
    )
    head = HDR.pack(sport, dport, seq, ack, offflags, wnd, fold(total), urp)
    return head + options + payload if payload else head + options


def reset_for(segment: Segment, pseudo: int) -> bytes | None:
    """The reset that answers ``segment`` when no connection (and no listener) takes it, per
    RFC 9293 3.10.7.1: nothing for a RST; ``<SEQ=SEG.ACK><CTL=RST>`` for an ACK; otherwise
    ``<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>``. Ports are swapped; the pseudo-header sum is
    the same both ways."""
    if segment.flags & RST:
        return None
    if segment.flags & ACK:
        return build(segment.dport, segment.sport, segment.ack, 0, RST, 0, pseudo)
    ack = (segment.seq + segment.seg_len) & MASK
    return build(segment.dport, segment.sport, 0, ack, RST | ACK, 0, pseudo)


# -------------------------------------------------------------------- sequence arithmetic


def seq_lt(a: int, b: int) -> bool:
    """a < b modulo 2**32 (RFC 9293 3.4): b is less than 2**31 ahead of a."""
    return 0 < ((b - a) & MASK) < HALF


def seq_le(a: int, b: int) -> bool:
    return ((b - a) & MASK) < HALF


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed distance modulo 2**32 (in [-2**31, 2**31))."""
    return ((a - b + HALF) & MASK) - HALF
