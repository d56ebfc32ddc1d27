"""``hole``: swallows all data, counting frames and octets per hook (spec section 6)."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Final

import attrs

from netgraph import Cmd, Hook, Item, Message, NetgraphError, Node
from netgraph.parse import HOOKBUF, UINT64, Struct, field

HOLE_COOKIE: Final = 915433206
NGM_HOLE_GET_STATS: Final = 1
NGM_HOLE_CLR_STATS: Final = 2
NGM_HOLE_GETCLR_STATS: Final = 3


@attrs.define
class HoleHookStats:
    frames: int = field(UINT64)
    octets: int = field(UINT64)


class HoleNode(Node):
    typecookie = HOLE_COOKIE
    cmdlist = (
        Cmd(
            HOLE_COOKIE,
            NGM_HOLE_GET_STATS,
            "getstats",
            HOOKBUF,
            Struct(HoleHookStats),
            "Get a hook's frame and octet counts",
        ),
        Cmd(HOLE_COOKIE, NGM_HOLE_CLR_STATS, "clrstats", HOOKBUF, None, "Clear a hook's counts"),
        Cmd(
            HOLE_COOKIE,
            NGM_HOLE_GETCLR_STATS,
            "getclrstats",
            HOOKBUF,
            Struct(HoleHookStats),
            "Get and clear a hook's counts",
        ),
    )

    def newhook(self, hook: Hook) -> None:
        hook.private = HoleHookStats()

    def rcvdata(self, hook: Hook, item: Item) -> None:
        stats: HoleHookStats = hook.private
        stats.frames += 1
        stats.octets += len(item)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        stats: HoleHookStats = hook.private
        stats.frames += len(items)
        stats.octets += sum(map(len, items))

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> HoleHookStats | None:
        if msg.typecookie != HOLE_COOKIE or msg.cmd not in (1, 2, 3):
            return super().rcvmsg(msg, retaddr, lasthook)  # type: ignore[no-any-return]
        if not isinstance(msg.args, str):
            raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: the argument is a hook name")
        hook = self.hooks.get(msg.args)
        if hook is None:
            raise NetgraphError(errno.ENOENT, f"no hook {msg.args!r} on {self.path}")
        stats: HoleHookStats = hook.private
        reply = None if msg.cmd == NGM_HOLE_CLR_STATS else attrs.evolve(stats)
        if msg.cmd != NGM_HOLE_GET_STATS:
            hook.private = HoleHookStats()
        return reply
