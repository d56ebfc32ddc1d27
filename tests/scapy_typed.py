"""scapy's fragment and defragment functions, typed for the tests that use scapy as an oracle."""

from __future__ import annotations

from collections.abc import Sequence

from scapy.layers import inet, inet6
from scapy.packet import Packet


def fragment(packet: Packet, size: int) -> list[Packet]:
    """IPv4 fragments of ``packet`` with ``size`` bytes of data each (a multiple of 8)."""
    return list(inet.fragment(packet, fragsize=size))  # type: ignore[no-untyped-call]


def defragment(packets: Sequence[Packet]) -> list[Packet]:
    """The IPv4 datagrams ``packets`` reassemble into."""
    return list(inet.defragment(packets))  # type: ignore[no-untyped-call]


def fragment6(packet: Packet, mtu: int) -> list[Packet]:
    """IPv6 fragments of ``packet`` (which has a fragment header) of at most ``mtu`` bytes."""
    return list(inet6.fragment6(packet, mtu))  # type: ignore[no-untyped-call]


def defragment6(packets: Sequence[Packet]) -> Packet:
    """The IPv6 packet ``packets`` reassemble into."""
    result: Packet = inet6.defragment6(packets)  # type: ignore[no-untyped-call]
    return result
