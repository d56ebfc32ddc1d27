"""Fragment reassembly for IPv4 and IPv6: bounded, timed, strict about overlaps. Sans-IO.

A :class:`Reassembler` holds the fragments of incomplete datagrams, keyed by whatever identifies
a datagram (IPv4: source, destination, protocol, identification; IPv6: source, destination,
identification). Fragments are kept sorted by offset as ``(start, end, data)``.

Invariants and policy:

* Overlap discards the datagram (RFC 5722 for IPv6; for IPv4 too, as Linux does since 2018):
  its fragments are freed at once, and the key is remembered as *dead* until the datagram's
  deadline, so that fragments still to come are discarded too. An exact duplicate (same start
  and end) is not an overlap: it is dropped and the datagram goes on (RFC 8200 4.5).
* Inconsistent lengths (two different ends, data past the end a last fragment set) make the
  datagram dead the same way.
* Memory: each fragment is charged its length plus :data:`OVERHEAD`, the first one also what
  the caller keeps of it (``kept``: the stack's whole packet, headers and all); a fragment that
  would take the total over ``max_bytes`` is refused (the datagram keeps what it has, and times
  out if it cannot complete). A fragment reaching past ``max_datagram`` kills its datagram.
  A completed datagram lets go of its fragments at once, though its heap entry waits.
* Time: a datagram's deadline is fixed by its first fragment (``now + timeout``). ``now`` is
  always passed in; :meth:`Reassembler.next_deadline` says when :meth:`Reassembler.expire`
  next has work.
* What the caller gives with the first fragment is kept (``first``): the stack keeps the whole
  packet, rebuilds the datagram's header from it, and quotes it in an ICMP time-exceeded
  message when the datagram times out.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Hashable
from typing import Final

__all__ = ["OVERHEAD", "Datagram", "Reassembler"]

OVERHEAD: Final = 64

# What ``add`` reports.
HELD: Final = 0
DONE: Final = 1
DUP: Final = 2
OVERLAP: Final = 3
OVERFLOW: Final = 4
DEAD: Final = 5


class Datagram:
    """One datagram being reassembled."""

    __slots__ = ("charge", "dead", "deadline", "first", "frags", "link", "size", "total")

    def __init__(self, deadline: float, link: str) -> None:
        self.frags: list[tuple[int, int, bytes]] = []
        self.size = 0  # data bytes held
        self.total = -1  # the datagram's length, once its last fragment came
        self.charge = OVERHEAD
        self.deadline = deadline
        self.first: object = None
        self.dead = False
        self.link = link  # where the last fragment came from


class Reassembler:
    """Incomplete datagrams and their deadlines."""

    def __init__(self, max_bytes: int = 4 << 20, max_datagram: int = 65535) -> None:
        self.max_bytes = max_bytes
        self.max_datagram = max_datagram
        self.datagrams: dict[Hashable, Datagram] = {}
        self.charged = 0
        self._heap: list[tuple[float, int, Hashable, Datagram]] = []
        self._seq = 0

    def add(
        self,
        key: Hashable,
        start: int,
        data: bytes,
        more: bool,
        now: float,
        timeout: float,
        first: object = None,
        link: str = "",
        kept: int = 0,
    ) -> tuple[int, tuple[object, bytes] | None]:
        """Take one fragment: its data covers ``start`` to ``start + len(data)``; ``more`` is
        the more-fragments flag; ``first`` is what the caller keeps of the first fragment (the
        stack: its whole packet), given when this is the first fragment, and ``kept`` how many
        bytes that holds besides ``data`` (charged with it).

        Returns a status (HELD, DONE, DUP, OVERLAP, OVERFLOW, DEAD) and, for DONE, the first
        fragment's packet and the reassembled data.
        """
        end = start + len(data)
        dgram = self.datagrams.get(key)
        if dgram is None:
            if self.charged + OVERHEAD + len(data) + kept > self.max_bytes:
                return OVERFLOW, None
            dgram = self.datagrams[key] = Datagram(now + timeout, link)
            self.charged += OVERHEAD
            self._seq += 1
            heapq.heappush(self._heap, (dgram.deadline, self._seq, key, dgram))
        elif dgram.dead:
            return DEAD, None
        if end > self.max_datagram:
            self._kill(dgram)
            return OVERFLOW, None
        frags = dgram.frags
        i = bisect.bisect_left(frags, start, key=_start)
        if i < len(frags) and frags[i][0] == start and frags[i][1] == end:
            return DUP, None
        if (i and frags[i - 1][1] > start) or (i < len(frags) and frags[i][0] < end):
            self._kill(dgram)
            return OVERLAP, None
        if not more:
            if (dgram.total >= 0 and dgram.total != end) or (frags and frags[-1][1] > end):
                self._kill(dgram)
                return OVERLAP, None
            dgram.total = end
        elif dgram.total >= 0 and end >= dgram.total:
            self._kill(dgram)
            return OVERLAP, None
        charge = len(data) + OVERHEAD + kept
        if self.charged + charge > self.max_bytes:
            return OVERFLOW, None
        frags.insert(i, (start, end, data))
        dgram.link = link
        dgram.size += len(data)
        dgram.charge += charge
        self.charged += charge
        if start == 0:
            dgram.first = first
        if dgram.size != dgram.total or dgram.first is None:
            return HELD, None
        del self.datagrams[key]
        self.charged -= dgram.charge
        dgram.charge = 0
        done = dgram.first, b"".join([f[2] for f in frags])
        # Its heap entry stays until the deadline: it must not keep the data alive that long.
        dgram.frags = []
        dgram.first = None
        self._compact()
        return DONE, done

    def _compact(self) -> None:
        """Drop the heap entries of completed datagrams once they outnumber the live ones, so
        that the heap stays proportional to what is held, however fast datagrams complete."""
        heap = self._heap
        if len(heap) > 2 * len(self.datagrams) + 64:
            datagrams = self.datagrams
            heap[:] = [entry for entry in heap if datagrams.get(entry[2]) is entry[3]]
            heapq.heapify(heap)

    def _kill(self, dgram: Datagram) -> None:
        """Free a datagram's fragments; its key stays, dead, until its deadline."""
        dgram.dead = True
        dgram.frags = []
        dgram.first = None
        self.charged -= dgram.charge - OVERHEAD
        dgram.charge = OVERHEAD

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing is held)."""
        heap = self._heap
        while heap and self.datagrams.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[tuple[object, str, bool]]:
        """Drop every datagram whose deadline has come; returns, for each, what was kept of its
        first fragment (None if it never came), the link its last fragment came from, and
        whether it was dead already. The stack sends ICMP time-exceeded messages from that."""
        heap = self._heap
        out: list[tuple[object, str, bool]] = []
        while heap and heap[0][0] <= now:
            _, _, key, dgram = heapq.heappop(heap)
            if self.datagrams.get(key) is not dgram:
                continue  # completed, or the key was reused
            del self.datagrams[key]
            self.charged -= dgram.charge
            out.append((dgram.first, dgram.link, dgram.dead))
        return out


def _start(frag: tuple[int, int, bytes]) -> int:
    return frag[0]
