"""Alternate TCP stacks, after FreeBSD's tcp_functions(9): loss recovery, congestion control and
output policy as replaceable strategy objects, and the registry that names them.

The state machine (:mod:`nodes.tcp.connection`) owns everything RFC 9293 and RFC 1122 define
for every TCP: sequence-number checks, the states, RST and challenge ACKs, the windows, Nagle
and silly-window avoidance, the timers. It calls a connection's :class:`Stack` where TCPs may
differ:

* ``on_ack(conn, acked, now)`` after SND.UNA advanced by ``acked`` (the send buffer is already
  trimmed and the RTT measured): grow the congestion window, leave or continue recovery.
* ``on_sack(conn, blocks) -> int`` with the SACK blocks of an arriving ACK: update the
  scoreboard, return how many bytes were newly SACKed.
* ``on_dupack(conn, classic, newly_sacked, now)`` for an ACK that did not advance SND.UNA while
  data is outstanding; ``classic`` says whether it is a duplicate by RFC 5681's definition.
* ``on_timeout(conn, now)`` when the retransmission timer fired (the state machine then goes back
  to SND.UNA: SND.NXT = SND.UNA).
* ``output(conn, now, out)`` to send what may be sent now: retransmissions first, then new data
  through ``conn.send_new(budget, now, out)`` (which applies the peer's window, Nagle and SWS),
  retransmissions through ``conn.retransmit(seq, length, now, out)``.

A stack is stateless: it keeps what it knows about a connection in TCB fields (``cwnd``,
``ssthresh``, ``recover``, ``dupacks``, ``in_recovery``, the ``sacked`` scoreboard,
``high_rxt``) or, for facts only it has, in the JSON-shaped ``tcb.stack_state``. So a connection
can switch stacks at any time and be exported with them. As in tcp_functions(9), switching asks
the new stack's ``handoff_ok(conn)`` first (0 or an errno), then calls ``init(conn)`` on it and
``fini(conn)`` on the old one; the registry counts the connections on each stack and will not
remove one in use, nor the default stack.

Stacks here:

``default`` (alias ``sack``)
    RFC 5681 slow start and congestion avoidance (byte counting with L = 2 SMSS, RFC 3465),
    RFC 3042 limited transmit, and for loss recovery RFC 6675 (SACK scoreboard, pipe, NextSeg)
    when SACK was negotiated, else RFC 6582 NewReno.
``newreno``
    The same without SACK-based recovery: NewReno always (SACK blocks are still generated for
    the peer and parsed, but not used for recovery).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from attrs import frozen

from netgraph.errors import NetgraphError

from .segment import HALF, MASK

if TYPE_CHECKING:
    from .connection import Connection

DUP_THRESH: Final = 3


class Stack:
    """The interface of a stack; this base does nothing and refuses nothing."""

    name: str = "abstract"

    def init(self, conn: Connection) -> None:
        """Take over a connection (at creation, import, or a switch)."""

    def fini(self, conn: Connection) -> None:
        """Give a connection up (on a switch away, or when it closes)."""

    def handoff_ok(self, conn: Connection) -> int:
        """0 if ``conn`` may switch to this stack now, else an errno."""
        return 0

    def on_ack(self, conn: Connection, acked: int, now: float) -> None:
        raise NotImplementedError

    def on_sack(self, conn: Connection, blocks: tuple[tuple[int, int], ...]) -> int:
        return 0

    def on_dupack(self, conn: Connection, classic: bool, newly_sacked: int, now: float) -> None:
        raise NotImplementedError

    def on_timeout(self, conn: Connection, now: float) -> None:
        raise NotImplementedError

    def output(self, conn: Connection, now: float, out: list[bytes]) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------- NewReno


class NewRenoStack(Stack):
    """RFC 5681 + RFC 3465 (L = 2) + RFC 3042 + RFC 6582 (NewReno, "slow but steady")."""

    name = "newreno"

    def init(self, conn: Connection) -> None:
        tcb = conn.tcb
        # NewReno keeps no scoreboard; a recovery under way goes on with partial ACKs.
        tcb.sacked.clear()

    def on_ack(self, conn: Connection, acked: int, now: float) -> None:
        tcb = conn.tcb
        if tcb.sacked:
            prune_scoreboard(conn)
        mss = tcb.snd_mss
        if tcb.in_recovery:
            if ((tcb.snd_una - tcb.recover) & MASK) < HALF:
                self.exit_recovery(conn)
            else:
                self.partial_ack(conn, acked)
            return
        tcb.dupacks = 0
        # Grow only while the window is what limits the sender (RFC 7661): one held back by
        # the application or the peer's window keeps its cwnd.
        if not tcb.cwnd_limited:
            return
        cwnd = tcb.cwnd
        if cwnd < tcb.ssthresh:
            tcb.cwnd = cwnd + (acked if acked < 2 * mss else 2 * mss)
        else:
            counted = tcb.bytes_acked + acked
            if counted >= cwnd:
                counted -= cwnd
                tcb.cwnd = cwnd + mss
            tcb.bytes_acked = counted

    def partial_ack(self, conn: Connection, acked: int) -> None:
        """RFC 6582 3.2 step 3: retransmit the next hole, deflate by what was acked."""
        tcb = conn.tcb
        mss = tcb.snd_mss
        tcb.rexmit_una = True
        cwnd = tcb.cwnd - acked
        if acked >= mss:
            cwnd += mss
        tcb.cwnd = max(cwnd, mss)

    def exit_recovery(self, conn: Connection) -> None:
        tcb = conn.tcb
        flight = (tcb.snd_max - tcb.snd_una) & MASK
        tcb.cwnd = min(tcb.ssthresh, max(flight, tcb.snd_mss) + tcb.snd_mss)
        tcb.in_recovery = False
        tcb.dupacks = 0
        tcb.rexmit_una = False
        tcb.bytes_acked = 0

    def on_dupack(self, conn: Connection, classic: bool, newly_sacked: int, now: float) -> None:
        if not classic:
            return
        tcb = conn.tcb
        tcb.dupacks += 1
        tcb.stats.dupacks += 1
        mss = tcb.snd_mss
        if tcb.in_recovery:
            tcb.cwnd += mss  # inflation: a segment left the network
            return
        if tcb.dupacks == DUP_THRESH and ((tcb.snd_una - tcb.recover) & MASK) < HALF:
            # RFC 6582 3.2 step 2: enter fast recovery (only past ``recover``).
            flight = (tcb.snd_max - tcb.snd_una) & MASK
            tcb.ssthresh = max(flight // 2, 2 * mss)
            tcb.recover = tcb.snd_max
            tcb.cwnd = tcb.ssthresh + DUP_THRESH * mss
            tcb.in_recovery = True
            tcb.rexmit_una = True
            tcb.stats.fast_retransmits += 1

    def on_timeout(self, conn: Connection, now: float) -> None:
        tcb = conn.tcb
        mss = tcb.snd_mss
        if tcb.rxt_shift <= 1:
            # RFC 5681 eq. 4, once: a second timeout of the same data keeps ssthresh.
            flight = (tcb.snd_max - tcb.snd_una) & MASK
            tcb.ssthresh = max(flight // 2, 2 * mss)
        tcb.cwnd = mss  # the loss window
        tcb.bytes_acked = 0
        tcb.in_recovery = False
        tcb.dupacks = 0
        tcb.recover = tcb.snd_max
        tcb.rexmit_una = False
        # RFC 2018 8: after a timeout the SACKed bits are suspect (the receiver may renege).
        tcb.sacked.clear()
        tcb.high_rxt = tcb.snd_una

    def output(self, conn: Connection, now: float, out: list[bytes]) -> None:
        tcb = conn.tcb
        mss = tcb.snd_mss
        if tcb.rexmit_una:
            tcb.rexmit_una = False
            conn.retransmit(tcb.snd_una, mss, now, out)
        cwnd = tcb.cwnd
        flight = (tcb.snd_nxt - tcb.snd_una) & MASK
        if not flight and tcb.last_sent_at is not None:
            restart_after_idle(conn, now)
            cwnd = tcb.cwnd
        if 0 < tcb.dupacks < DUP_THRESH and not tcb.in_recovery:
            cwnd += tcb.dupacks * mss  # RFC 3042 limited transmit: new data only
        conn.send_new(cwnd - flight, now, out)


def restart_after_idle(conn: Connection, now: float) -> None:
    """RFC 5681 4.1: after an idle period longer than an RTO, restart from the initial window."""
    tcb = conn.tcb
    if (
        tcb.config.slow_start_after_idle
        and tcb.last_sent_at is not None
        and now - tcb.last_sent_at > tcb.rto
    ):
        tcb.cwnd = min(tcb.cwnd, initial_window(conn))


def initial_window(conn: Connection) -> int:
    tcb = conn.tcb
    return tcb.config.initial_cwnd * tcb.snd_mss


# ------------------------------------------------------------------------ SACK scoreboard


def _blocks(conn: Connection) -> list[tuple[int, int]]:
    """The scoreboard as offsets from SND.UNA, in order."""
    tcb = conn.tcb
    una = tcb.snd_una
    return [((left - una) & MASK, (right - una) & MASK) for left, right in tcb.sacked]


def _store(conn: Connection, blocks: list[tuple[int, int]]) -> None:
    tcb = conn.tcb
    una = tcb.snd_una
    tcb.sacked = [[(una + lo) & MASK, (una + hi) & MASK] for lo, hi in blocks]


def prune_scoreboard(conn: Connection) -> None:
    """Forget SACKed ranges that the cumulative ACK has covered since."""
    tcb = conn.tcb
    una = tcb.snd_una
    kept: list[list[int]] = []
    for left, right in tcb.sacked:
        if ((right - una) & MASK) >= HALF or right == una:
            continue  # wholly below SND.UNA
        if ((left - una) & MASK) >= HALF:
            left = una
        kept.append([left, right])
    tcb.sacked = kept


def sack_update(conn: Connection, blocks: tuple[tuple[int, int], ...]) -> int:
    """Merge an ACK's SACK blocks into the scoreboard; the bytes newly SACKed.

    Blocks that are empty, reach past SND.MAX or lie below SND.UNA (D-SACK, RFC 2883) are
    ignored."""
    tcb = conn.tcb
    una = tcb.snd_una
    limit = (tcb.snd_max - una) & MASK
    board = _blocks(conn)
    before = sum(hi - lo for lo, hi in board)
    changed = False
    for left, right in blocks:
        lo = (left - una) & MASK
        hi = (right - una) & MASK
        if lo >= HALF or hi > limit or lo >= hi:
            continue
        changed = True
        merged: list[tuple[int, int]] = []
        for blo, bhi in board:
            if bhi < lo or blo > hi:
                merged.append((blo, bhi))
            else:
                lo, hi = min(lo, blo), max(hi, bhi)
        merged.append((lo, hi))
        merged.sort()
        board = merged
    if not changed:
        return 0
    _store(conn, board)
    return sum(hi - lo for lo, hi in board) - before


def lost_boundary(conn: Connection, board: list[tuple[int, int]]) -> int:
    """RFC 6675 IsLost as one offset: unSACKed bytes below it count as lost (DupThresh SACKed
    blocks, or more than (DupThresh - 1) * SMSS SACKed bytes, lie above them)."""
    mss = conn.tcb.snd_mss
    total = 0
    for count, (lo, hi) in enumerate(reversed(board), 1):
        total += hi - lo
        if count >= DUP_THRESH or total > (DUP_THRESH - 1) * mss:
            return lo
    return 0


def _unsacked_below(board: list[tuple[int, int]], x: int) -> int:
    covered = 0
    for lo, hi in board:
        if lo >= x:
            break
        covered += min(hi, x) - lo
    return x - covered


def holes(board: list[tuple[int, int]], start: int, end: int) -> Iterator[tuple[int, int]]:
    """The unSACKed ranges within [start, end), in order."""
    pos = start
    for lo, hi in board:
        if hi <= pos:
            continue
        if lo >= end:
            break
        if lo > pos:
            yield pos, min(lo, end)
        pos = max(pos, hi)
        if pos >= end:
            return
    if pos < end:
        yield pos, end


class DefaultStack(NewRenoStack):
    """NewReno, with RFC 6675 SACK-based loss recovery whenever SACK was negotiated."""

    name = "default"

    def init(self, conn: Connection) -> None:
        tcb = conn.tcb
        if ((tcb.high_rxt - tcb.snd_una) & MASK) >= HALF:
            tcb.high_rxt = tcb.snd_una

    def on_sack(self, conn: Connection, blocks: tuple[tuple[int, int], ...]) -> int:
        return sack_update(conn, blocks)

    def on_ack(self, conn: Connection, acked: int, now: float) -> None:
        tcb = conn.tcb
        if not tcb.in_recovery and not tcb.sacked:
            tcb.high_rxt = tcb.snd_una  # (kept fresh: compared modulo 2**32)
            NewRenoStack.on_ack(self, conn, acked, now)  # the common case, first
            return
        if not tcb.sack_ok:
            NewRenoStack.on_ack(self, conn, acked, now)
            return
        if tcb.sacked:
            prune_scoreboard(conn)
        if ((tcb.high_rxt - tcb.snd_una) & MASK) >= HALF:
            tcb.high_rxt = tcb.snd_una
        if tcb.in_recovery:
            if ((tcb.snd_una - tcb.recover) & MASK) < HALF:
                tcb.cwnd = tcb.ssthresh  # RFC 6675 5: recovery ends, cwnd = ssthresh
                tcb.in_recovery = False
                tcb.dupacks = 0
                tcb.bytes_acked = 0
                tcb.rexmit_una = False
            return  # a partial ACK: the pipe computation does the rest
        NewRenoStack.on_ack(self, conn, acked, now)

    def on_dupack(self, conn: Connection, classic: bool, newly_sacked: int, now: float) -> None:
        tcb = conn.tcb
        if not tcb.sack_ok:
            super().on_dupack(conn, classic, newly_sacked, now)
            return
        # RFC 6675 2: with SACK, a duplicate ACK is one that SACKs something new.
        if not newly_sacked and not (classic and not tcb.sacked):
            return
        tcb.dupacks += 1
        tcb.stats.dupacks += 1
        if tcb.in_recovery:
            return
        board = _blocks(conn)
        lost = board and lost_boundary(conn, board) > 0
        if (tcb.dupacks >= DUP_THRESH or lost) and ((tcb.snd_una - tcb.recover) & MASK) < HALF:
            mss = tcb.snd_mss
            flight = (tcb.snd_max - tcb.snd_una) & MASK
            tcb.recover = tcb.snd_max  # RecoveryPoint = HighData
            tcb.ssthresh = tcb.cwnd = max(flight // 2, 2 * mss)
            tcb.in_recovery = True
            tcb.rexmit_una = True  # (4.3): retransmit HighACK + 1 now
            tcb.high_rxt = tcb.snd_una
            tcb.stats.fast_retransmits += 1
            tcb.stats.sack_recoveries += 1

    def output(self, conn: Connection, now: float, out: list[bytes]) -> None:
        tcb = conn.tcb
        if not (tcb.sack_ok and tcb.in_recovery):
            super().output(conn, now, out)
            return
        mss = tcb.snd_mss
        board = _blocks(conn)
        outstanding = (tcb.snd_max - tcb.snd_una) & MASK
        if tcb.rexmit_una:
            tcb.rexmit_una = False
            first = board[0][0] if board else outstanding
            length = min(mss, first) or mss
            sent = conn.retransmit(tcb.snd_una, length, now, out)
            tcb.high_rxt = (tcb.snd_una + sent) & MASK
        # SetPipe (RFC 6675 4): unSACKed bytes not deemed lost, plus those retransmitted.
        boundary = lost_boundary(conn, board)
        high_rxt = (tcb.high_rxt - tcb.snd_una) & MASK
        if high_rxt >= HALF:
            high_rxt = 0
        sacked = sum(hi - lo for lo, hi in board)
        pipe = (
            outstanding
            - sacked
            - _unsacked_below(board, boundary)
            + _unsacked_below(board, min(high_rxt, outstanding))
        )
        cwnd = tcb.cwnd
        # NextSeg rule 1: the lost holes above HighRxt, in order.
        if boundary > high_rxt:
            for lo, hi in holes(board, high_rxt, boundary):
                pos = lo
                while pos < hi and cwnd - pipe >= mss:
                    length = min(mss, hi - pos)
                    sent = conn.retransmit((tcb.snd_una + pos) & MASK, length, now, out)
                    if not sent:
                        break
                    pos += sent
                    pipe += sent
                    tcb.high_rxt = (tcb.snd_una + pos) & MASK
                if cwnd - pipe < mss:
                    return
        # Rule 2: new data, as the window allows.
        if cwnd - pipe >= mss:
            conn.send_new(cwnd - pipe, now, out)


# ------------------------------------------------------------------------------ registry


@frozen
class StackInfo:
    """One registered stack, as ``list`` reports it."""

    name: str
    aliases: tuple[str, ...]
    refcount: int
    default: bool


class StackRegistry:
    """Named stacks with aliases and reference counts (tcp_functions(9)'s registration)."""

    def __init__(self) -> None:
        self._stacks: dict[str, Stack] = {}
        self._aliases: dict[str, str] = {}
        self._refs: dict[str, int] = {}
        self.default = ""

    def register(self, stack: Stack, aliases: tuple[str, ...] = ()) -> None:
        for name in (stack.name, *aliases):
            if name in self._stacks or name in self._aliases:
                raise NetgraphError(errno.EEXIST, f"stack {name!r} already registered")
        self._stacks[stack.name] = stack
        self._refs[stack.name] = 0
        for alias in aliases:
            self._aliases[alias] = stack.name
        if not self.default:
            self.default = stack.name

    def deregister(self, name: str) -> None:
        canonical = self._canonical(name)
        if canonical == self.default:
            raise NetgraphError(errno.EBUSY, f"stack {canonical!r} is the default")
        if self._refs[canonical]:
            raise NetgraphError(
                errno.EBUSY, f"stack {canonical!r} has {self._refs[canonical]} connections"
            )
        del self._stacks[canonical]
        del self._refs[canonical]
        for alias in [a for a, c in self._aliases.items() if c == canonical]:
            del self._aliases[alias]

    def set_default(self, name: str) -> None:
        self.default = self._canonical(name)

    def _canonical(self, name: str) -> str:
        canonical = self._aliases.get(name, name)
        if canonical not in self._stacks:
            raise NetgraphError(errno.ENOENT, f"no TCP stack {name!r}")
        return canonical

    def lookup(self, name: str) -> Stack:
        """The stack a name or alias stands for (``"default"`` may name the default stack)."""
        return self._stacks[self._canonical(name)]

    def acquire(self, name: str) -> Stack:
        stack = self.lookup(name)
        self._refs[stack.name] += 1
        return stack

    def release(self, stack: Stack) -> None:
        if self._refs.get(stack.name, 0) > 0:
            self._refs[stack.name] -= 1

    def refcount(self, name: str) -> int:
        return self._refs[self._canonical(name)]

    def list(self) -> list[StackInfo]:
        return [
            StackInfo(
                name,
                tuple(sorted(a for a, c in self._aliases.items() if c == name)),
                self._refs[name],
                name == self.default,
            )
            for name in self._stacks
        ]


def make_registry() -> StackRegistry:
    """A registry with the built-in stacks: ``default`` (alias ``sack``) and ``newreno``."""
    registry = StackRegistry()
    registry.register(DefaultStack(), aliases=("sack",))
    registry.register(NewRenoStack())
    return registry


REGISTRY: Final = make_registry()
