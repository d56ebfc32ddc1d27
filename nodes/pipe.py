"""``pipe``: link emulation between ``upper`` and ``lower`` (FreeBSD ng_pipe, and more).

Data from ``upper`` goes out ``lower`` (downstream) and from ``lower`` out ``upper``
(upstream), each direction with its own bandwidth, delay, queue limits, bit error rate and
duplication (ng_pipe's ``setcfg``/``getcfg``/``getstats``/``clrstats``/``getclrstats``/``getrun``,
with its cookie, command numbers and struct layouts), plus loss, jitter, reordering and a seed
for the direction's random generator. What happens to each item is decided by the sans-IO
model in :mod:`nodes.pipe_core`, whose docstring says how and where this differs from FreeBSD.

This module is its trio shell:

* An item that a direction would let straight through (no impairment configured and nothing
  queued) is sent on at once, synchronously (``Node.send``), with no task hop.
* Otherwise it goes into the model with ``now``; whatever the model releases at ``now`` is sent
  synchronously too (a lossy pipe with no delay costs no hop either).
* What is due later is sent by the node's one timer task, started on first need, which sleeps
  in a cancel scope whose deadline is the model's next deadline; an earlier deadline appearing
  moves that deadline (no wake-up event, no task per item, no polling tick). The task sends
  what is due with ``emit``/``emit_batch``; while it does, newly released items wait for it,
  so that a direction's items never overtake each other.
* Shutdown cancels the task (the engine cancels a node's tasks); a pipe with both hooks
  splices its peers together as it goes, as ng_pipe does. A hook that goes takes what was
  queued in both its directions with it (counted as delay drops; FreeBSD drops what came in
  by the hook without counting it).
* Items released but not delivered (no hook to leave by, or the send failed) are counted as
  delay drops, as ng_pipe counts a failed send; a failed batch counts whole.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from typing import Final, NoReturn

import trio

from netgraph import Cmd, Hook, Item, Message, NetgraphError, Node
from netgraph.parse import Struct

from .pipe_core import Link, Pipe, PipeCfg, PipeHookStats, PipeRun, PipeStats

PIPE_COOKIE: Final = 200708191
NGM_PIPE_GET_STATS: Final = 1
NGM_PIPE_CLR_STATS: Final = 2
NGM_PIPE_GETCLR_STATS: Final = 3
NGM_PIPE_GET_RUN: Final = 4
NGM_PIPE_GET_CFG: Final = 5
NGM_PIPE_SET_CFG: Final = 6

HOOK_UPPER: Final = "upper"
HOOK_LOWER: Final = "lower"

_CFG: Final = Struct(PipeCfg)
_STATS: Final = Struct(PipeStats)


class _Side:
    """What a hook's data goes through: its direction's link and the hook it leaves by."""

    __slots__ = ("link", "name", "out", "out_name")

    def __init__(self, name: str, link: Link, out_name: str) -> None:
        self.name = name  # "downstream" or "upstream"
        self.link = link
        self.out_name = out_name
        self.out: Hook | None = None


_NEVER: Final = 1 << 127  # a deadline later than any the model gives


def _now() -> int:
    """trio's clock in integer nanoseconds (the model's time)."""
    return round(trio.current_time() * 1e9)


class PipeNode(Node):
    typecookie = PIPE_COOKIE
    cmdlist = (
        Cmd(PIPE_COOKIE, NGM_PIPE_GET_STATS, "getstats", None, _STATS,
            "Get the counters of both directions"),
        Cmd(PIPE_COOKIE, NGM_PIPE_CLR_STATS, "clrstats", None, None,
            "Clear the counters"),
        Cmd(PIPE_COOKIE, NGM_PIPE_GETCLR_STATS, "getclrstats", None, _STATS,
            "Get and clear the counters"),
        Cmd(PIPE_COOKIE, NGM_PIPE_GET_RUN, "getrun", None, Struct(PipeRun),
            "Get what is queued now"),
        Cmd(PIPE_COOKIE, NGM_PIPE_GET_CFG, "getcfg", None, _CFG,
            "Get the configuration (setcfg takes it back)", restore="setcfg"),
        Cmd(PIPE_COOKIE, NGM_PIPE_SET_CFG, "setcfg", _CFG, None,
            "Set the configuration: 0 leaves a value, -1 zeroes it"),
    )  # fmt: skip

    def constructor(self) -> None:
        self.pipe = Pipe()
        self.sides = {
            HOOK_UPPER: _Side("downstream", self.pipe.down, HOOK_LOWER),
            HOOK_LOWER: _Side("upstream", self.pipe.up, HOOK_UPPER),
        }
        self._timer_running = False
        # The timer's sleep while it sleeps: moving its deadline wakes the timer earlier.
        self._sleep: trio.CancelScope | None = None
        self._wake_ns = _NEVER  # its deadline, in the model's nanoseconds
        # True while the timer task is sending: released items wait for it to finish.
        self._emitting = False

    # ------------------------------------------------------------------------------- hooks

    def newhook(self, hook: Hook) -> None:
        side = self.sides.get(hook.name)
        if side is None:
            raise NetgraphError(errno.EINVAL, f"pipe has no hook {hook.name!r} (upper, lower)")
        hook.private = side

    def connect(self, hook: Hook) -> None:
        self._route()

    def disconnect(self, hook: Hook) -> None:
        side: _Side = hook.private
        side.link.flush()  # what came in by the hook goes with it (as in FreeBSD)
        self.sides[side.out_name].link.flush()  # and what was to leave by it
        self._route()

    def _route(self) -> None:
        for side in self.sides.values():
            side.out = self.hooks.get(side.out_name)

    def close(self) -> None:
        upper, lower = self.hooks.get(HOOK_UPPER), self.hooks.get(HOOK_LOWER)
        if upper is not None and lower is not None:
            self.graph.bypass(upper, lower)

    # -------------------------------------------------------------------------------- data

    def rcvdata(self, hook: Hook, item: Item) -> None:
        side: _Side = hook.private
        link = side.link
        out = side.out
        if out is None:
            self._nowhere(side, (item,))
        if link.direct and not self._emitting:
            link.passed(1, len(item))
            try:
                self.send(out, item)
            except NetgraphError:
                link.undelivered((item,))
                raise
            return
        now = _now()
        link.push(item, now)
        self._released(side, now)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        side: _Side = hook.private
        link = side.link
        out = side.out
        if out is None:
            self._nowhere(side, tuple(items))
        if link.direct and not self._emitting:
            link.passed(len(items), sum(map(len, items)))
            try:
                self.send_batch(out, items)
            except NetgraphError:
                link.undelivered(tuple(items))
                raise
            return
        now = _now()
        push = link.push
        for item in items:
            push(item, now)
        self._released(side, now)

    def _nowhere(self, side: _Side, items: tuple[Item, ...]) -> NoReturn:
        """Items for a direction whose way out is not hooked: dropped, and the sender told."""
        side.link.passed(len(items), sum(map(len, items)))
        side.link.undelivered(items)
        raise NetgraphError(errno.ENOTCONN, f"pipe {self.path} has no {side.out_name} hook")

    def _released(self, side: _Side, now: int) -> None:
        """After items went in: send what is due now, and see the timer wakes for the rest."""
        link = side.link
        if not self._emitting:
            due = link.release(now)
            if due:
                out = side.out
                try:
                    if out is None:
                        raise NetgraphError(errno.ENOTCONN, "no hook to send on")
                    if len(due) == 1:
                        self.send(out, due[0])
                    else:
                        self.send_batch(out, due)
                except NetgraphError:
                    # As ng_pipe: a queued item that cannot be sent is counted, not returned.
                    link.undelivered(due)
        deadline = link.next_deadline()
        if deadline is None:
            return
        if not self._timer_running:
            self._timer_running = True
            self.start_task(self._timer)
        elif self._sleep is not None and deadline < self._wake_ns:
            self._wake_ns = deadline
            self._sleep.deadline = deadline / 1e9

    async def _timer(self) -> None:
        """The node's one task: sleep until the next deadline, then send what is due."""
        sides = tuple(self.sides.values())
        while True:
            wake = None
            for side in sides:
                when = side.link.next_deadline()
                if when is not None and (wake is None or when < wake):
                    wake = when
            self._wake_ns = _NEVER if wake is None else wake
            with trio.CancelScope(deadline=math.inf if wake is None else wake / 1e9) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None
            # trio woke us at the deadline or after it: never let a float rounding of the clock
            # make that a nanosecond early (the deadline would then fire again at once).
            now = max(_now(), self._wake_ns)
            for side in sides:
                due = side.link.release(now)
                if due:
                    self._emitting = True
                    try:
                        await self._emit(side, due)
                    finally:
                        self._emitting = False

    async def _emit(self, side: _Side, due: list[Item]) -> None:
        out = side.out
        try:
            if out is None:
                raise NetgraphError(errno.ENOTCONN, "no hook to send on")
            if len(due) == 1:
                await self.emit(out, due[0])
            else:
                await self.emit_batch(out, due)
        except NetgraphError:
            side.link.undelivered(due)

    # ---------------------------------------------------------------------------- messages

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> object:
        if msg.typecookie != PIPE_COOKIE or msg.is_response:
            return super().rcvmsg(msg, retaddr, lasthook)
        cmd = msg.cmd
        pipe = self.pipe
        if cmd == NGM_PIPE_SET_CFG:
            if not isinstance(msg.args, PipeCfg):
                raise NetgraphError(errno.EINVAL, "setcfg takes a pipe configuration")
            pipe.configure(msg.args)
            return None
        if cmd == NGM_PIPE_GET_CFG:
            return pipe.config()
        if cmd in (NGM_PIPE_GET_STATS, NGM_PIPE_CLR_STATS, NGM_PIPE_GETCLR_STATS):
            reply = None if cmd == NGM_PIPE_CLR_STATS else pipe.stats()
            if cmd != NGM_PIPE_GET_STATS:
                pipe.clear_stats()
            return reply
        if cmd == NGM_PIPE_GET_RUN:
            return pipe.run()
        raise NetgraphError(errno.EINVAL, f"pipe has no command {cmd}")

    def status_text(self) -> str:
        lines = []
        for side in self.sides.values():
            link = side.link
            cfg = link.cfg
            s: PipeHookStats = link.stats
            run = link.run()
            lines.append(
                f"{side.name}: bandwidth {cfg.bandwidth} bit/s, delay {cfg.delay} us,"
                f" jitter {cfg.jitter} us, BER {cfg.BER}, loss {cfg.loss_ppm} ppm,"
                f" duplicate {cfg.duplicate}%, reorder {cfg.reorder_ppm} ppm"
                f" by {cfg.reorder_delay} us\n"
                f"  forwarded {s.FwdFrames} frames ({s.FwdOctets} octets),"
                f" queue drops {s.queueDropFrames} ({s.queueDropOctets}),"
                f" delay drops {s.delayDropFrames} ({s.delayDropOctets})\n"
                f"  queued {run.queuedFrames} of {cfg.queuelen} ({run.queuedOctets} octets),"
                f" delayed {run.delayedFrames} ({run.delayedOctets} octets)"
            )
        return "\n".join(lines)
