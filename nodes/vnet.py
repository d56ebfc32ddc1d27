"""TUN offloads without I/O: the ``virtio_net_hdr`` and undoing what it stands for.

A TUN device opened with ``IFF_VNET_HDR`` puts a 10-byte ``struct virtio_net_hdr`` before every
packet, both ways. With offloads switched on (``TUNSETOFFLOAD``) the kernel may then hand over

* packets whose transport checksum is only started (``VIRTIO_NET_HDR_F_NEEDS_CSUM``: the field
  at ``csum_start + csum_offset`` holds the pseudo-header sum; the sum from ``csum_start`` to
  the end, complemented, belongs there), and
* GSO packets of up to 64 KB (TSO for TCP, USO for UDP): one IP and transport header for many
  segments of ``gso_size`` bytes each, to be cut up as the wire would have them.

In the other direction a writer may pass the same: one 64 KB TCP packet with a GSO header goes
into the kernel as one buffer (the kernel treats it as received by GRO).

:func:`unoffload` turns what the kernel handed over into plain, fully checksummed IP packets (what
hooks carry unless they opt in to raw offloaded packets); :func:`checksum` is the Internet
checksum computed the fast way in Python (one big integer modulo 0xFFFF, spec 4). Nothing here
reads the clock or touches a file descriptor.

Invariants: the header is in host byte order (legacy virtio, as TUN uses it unless told
``TUNSETVNETLE``); there is no link header (TUN), so offsets count from the IP header.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

__all__ = [
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP",
    "GSO_UDP_L4",
    "HDR_LEN",
    "NEEDS_CSUM",
    "ZERO_HDR",
    "OffloadError",
    "VnetHdr",
    "checksum",
    "unoffload",
]

HDR_LEN: Final = 10
HDR: Final = struct.Struct("=BBHHHH")
ZERO_HDR: Final = bytes(HDR_LEN)

# virtio_net_hdr.flags
NEEDS_CSUM: Final = 1
DATA_VALID: Final = 2
# virtio_net_hdr.gso_type
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3  # UFO: IP fragmentation; never switched on by the iface node
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80

TCP: Final = 6
UDP: Final = 17
_FIN: Final = 0x01
_PSH: Final = 0x08
_CWR: Final = 0x80


class OffloadError(ValueError):
    """A packet whose offload header cannot be undone (malformed, or a GSO kind not handled)."""


class VnetHdr(NamedTuple):
    """``struct virtio_net_hdr`` as a value (the tag raw hooks carry, and what they may send)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def unpack(cls, data: bytes) -> VnetHdr:
        return cls(*HDR.unpack_from(data))

    def pack(self) -> bytes:
        return HDR.pack(*self)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data``: never 0, so a UDP sender may use it as is.

    The sum of 16-bit words modulo 0xFFFF is the one's complement sum (65536 is 1 modulo
    0xFFFF), and Python computes it over the whole buffer at C speed.
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return 0xFFFF - int.from_bytes(data, "big") % 0xFFFF


def _pseudo(packet: bytes | bytearray | memoryview, proto: int, length: int) -> bytes:
    """The transport pseudo-header of ``packet``'s IP header, for ``length`` transport octets."""
    if packet[0] >> 4 == 4:
        return bytes(packet[12:20]) + struct.pack("!BBH", 0, proto, length)
    return bytes(packet[8:40]) + struct.pack("!I3xB", length, proto)


def _complete(packet: bytes, start: int, offset: int) -> bytes:
    """Finish a checksum the kernel started: sum from ``start`` over the partial field."""
    end = start + offset + 2
    if start <= 0 or end > len(packet):
        raise OffloadError(f"checksum at {start}+{offset} lies outside a {len(packet)}-byte packet")
    out = bytearray(packet)
    struct.pack_into("!H", out, start + offset, checksum(memoryview(out)[start:]))
    return bytes(out)


def _l4_offset(packet: bytes, hdr: VnetHdr) -> int:
    if hdr.flags & NEEDS_CSUM:
        return hdr.csum_start
    if packet[0] >> 4 == 4:
        return (packet[0] & 0x0F) * 4
    return 40


def _segment(packet: bytes, hdr: VnetHdr, proto: int) -> list[bytes]:
    """Cut a TSO or USO packet into segments of ``gso_size``, each with its own headers."""
    if len(packet) < 20:
        raise OffloadError("a GSO packet shorter than an IP header")
    v4 = packet[0] >> 4 == 4
    l4 = _l4_offset(packet, hdr)
    if proto == TCP:
        if l4 + 20 > len(packet):
            raise OffloadError("a TSO packet without a whole TCP header")
        l4_len = (packet[l4 + 12] >> 4) * 4
        if l4_len < 20:
            raise OffloadError(f"a TSO packet with a TCP data offset of {l4_len} bytes")
    else:
        l4_len = 8
    start = l4 + l4_len
    mss = hdr.gso_size
    if mss <= 0 or start > len(packet) or l4 < 20:
        raise OffloadError(f"a GSO packet with gso_size {mss} and headers of {start} bytes")
    payload = memoryview(packet)[start:]
    ip_header = bytearray(packet[:l4])
    l4_header = bytearray(packet[l4:start])
    seq = struct.unpack_from("!I", packet, l4 + 4)[0] if proto == TCP else 0
    flags = packet[l4 + 13] if proto == TCP else 0
    ident = struct.unpack_from("!H", packet, 4)[0] if v4 else 0
    count = max(1, -(-len(payload) // mss))
    out = []
    for i in range(count):
        chunk = payload[i * mss : (i + 1) * mss]
        last = i == count - 1
        th = bytearray(l4_header)
        length = l4_len + len(chunk)
        if proto == TCP:
            struct.pack_into("!I", th, 4, (seq + i * mss) & 0xFFFFFFFF)
            f = flags if last else flags & ~(_FIN | _PSH)
            th[13] = f & ~_CWR if i else f
            th[16:18] = b"\0\0"
        else:
            struct.pack_into("!HH", th, 4, length, 0)
        ih = bytearray(ip_header)
        if v4:
            struct.pack_into("!HH", ih, 2, l4 + length, (ident + i) & 0xFFFF)
            ih[10:12] = b"\0\0"
            struct.pack_into("!H", ih, 10, checksum(ih[: (ih[0] & 0x0F) * 4]))
        else:
            struct.pack_into("!H", ih, 4, l4 - 40 + length)
        csum = checksum(_pseudo(ih, proto, length) + th + chunk)
        struct.pack_into("!H", th, 16 if proto == TCP else 6, csum)
        out.append(bytes(ih + th + chunk))
    return out


def unoffload(packet: bytes, hdr: VnetHdr) -> list[bytes]:
    """Plain IP packets, checksums complete, for ``packet`` as read with header ``hdr``.

    Raises :class:`OffloadError` for what cannot be undone (UFO, malformed headers).
    """
    gso = hdr.gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if hdr.flags & NEEDS_CSUM:
            return [_complete(packet, hdr.csum_start, hdr.csum_offset)]
        return [packet]
    if gso in (GSO_TCPV4, GSO_TCPV6):
        return _segment(packet, hdr, TCP)
    if gso == GSO_UDP_L4:
        return _segment(packet, hdr, UDP)
    raise OffloadError(f"GSO type {hdr.gso_type} is not handled")
