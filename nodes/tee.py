"""``tee``: a snooping tap (spec section 6, FreeBSD ng_tee).

right -> left with a copy to right2left; left -> right with a copy to left2right. Data arriving on
right2left goes out right, and on left2right out left, as FreeBSD's ng_tee.c and ng_tee(4) do
(the spec's table has these two the other way round). With no ``left``, data from ``right`` goes
to ``right2left`` (and likewise the other way). On shutdown with both ``left`` and ``right``
hooked, the tee takes itself out and splices its two peers together.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any, Final

import attrs

from netgraph import Cmd, Hook, Item, Message, NetgraphError, Node
from netgraph.parse import UINT64, Struct, field

TEE_COOKIE: Final = 916107047
NGM_TEE_GET_STATS: Final = 1
NGM_TEE_CLR_STATS: Final = 2
NGM_TEE_GETCLR_STATS: Final = 3

HOOKS: Final = ("right", "left", "right2left", "left2right")
# Where data arriving on a hook goes: (destination, copy), by preference when hooks are missing.
_ROUTES: Final = {
    "right": ("left", "right2left"),
    "left": ("right", "left2right"),
    "right2left": ("right", None),
    "left2right": ("left", None),
}


@attrs.define
class TeeHookStats:
    inOctets: int = field(UINT64)
    inFrames: int = field(UINT64)
    outOctets: int = field(UINT64)
    outFrames: int = field(UINT64)


_HOOKSTATS = Struct(TeeHookStats)


@attrs.define
class TeeStats:
    right: TeeHookStats = field(_HOOKSTATS, factory=TeeHookStats)
    left: TeeHookStats = field(_HOOKSTATS, factory=TeeHookStats)
    right2left: TeeHookStats = field(_HOOKSTATS, factory=TeeHookStats)
    left2right: TeeHookStats = field(_HOOKSTATS, factory=TeeHookStats)


class TeeNode(Node):
    typecookie = TEE_COOKIE
    cmdlist = (
        Cmd(
            TEE_COOKIE,
            NGM_TEE_GET_STATS,
            "getstats",
            None,
            Struct(TeeStats),
            "Get the counts of every hook",
        ),
        Cmd(TEE_COOKIE, NGM_TEE_CLR_STATS, "clrstats", None, None, "Clear the counts"),
        Cmd(
            TEE_COOKIE,
            NGM_TEE_GETCLR_STATS,
            "getclrstats",
            None,
            Struct(TeeStats),
            "Get and clear the counts",
        ),
    )

    def constructor(self) -> None:
        self.counters = TeeStats()

    def newhook(self, hook: Hook) -> None:
        if hook.name not in HOOKS:
            raise NetgraphError(errno.EINVAL, f"tee has no hook {hook.name!r} (only {HOOKS})")
        setattr(self.counters, hook.name, TeeHookStats())

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self._forward(hook, item, len(item), 1, False)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self._forward(hook, items, sum(map(len, items)), len(items), True)

    def _forward(self, hook: Hook, payload: Any, size: int, frames: int, batch: bool) -> None:
        send = self.send_batch if batch else self.send
        stats: TeeHookStats = getattr(self.counters, hook.name)
        stats.inOctets += size
        stats.inFrames += frames
        dest_name, copy_name = _ROUTES[hook.name]
        dest = self.hooks.get(dest_name)
        copy = self.hooks.get(copy_name) if copy_name else None
        if dest is None and copy is not None:
            dest, copy = copy, None
        if copy is not None:
            try:
                send(copy, payload)
            except NetgraphError:
                pass  # a failed copy must not stop the original (as in FreeBSD)
            else:
                out: TeeHookStats = getattr(self.counters, copy.name)
                out.outOctets += size
                out.outFrames += frames
        if dest is not None:
            out = getattr(self.counters, dest.name)
            out.outOctets += size
            out.outFrames += frames
            send(dest, payload)

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> TeeStats | None:
        if msg.typecookie != TEE_COOKIE or msg.cmd not in (1, 2, 3):
            return super().rcvmsg(msg, retaddr, lasthook)  # type: ignore[no-any-return]
        reply = None if msg.cmd == NGM_TEE_CLR_STATS else _copy(self.counters)
        if msg.cmd != NGM_TEE_GET_STATS:
            self.counters = TeeStats()
        return reply

    def close(self) -> None:
        left, right = self.hooks.get("left"), self.hooks.get("right")
        if left is not None and right is not None:
            self.graph.bypass(left, right)


def _copy(stats: TeeStats) -> TeeStats:
    return TeeStats(*(attrs.evolve(getattr(stats, name)) for name in HOOKS))
