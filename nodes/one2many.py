"""``one2many``: a multiplexer between ``one`` and up to 64 ``manyN`` links (FreeBSD ng_one2many).

Data from any ``manyN`` goes out ``one``. Data from ``one`` goes to the many links by the
transmit algorithm: round-robin over the enabled, connected links; to all of them; or to the first
of them (failover). A link is enabled when its hook is made, and ``setconfig`` or, with the
NOTIFY failure algorithm, flow-control LINK_IS_UP / LINK_IS_DOWN messages change that.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Final

import attrs

from netgraph import Cmd, Hook, Item, Message, NetgraphError, Node
from netgraph.message import FLOW_COOKIE
from netgraph.parse import INT32, UINT8, UINT32, UINT64, Array, Struct, field

ONE2MANY_COOKIE: Final = 1100897444
NGM_ONE2MANY_SET_CONFIG: Final = 0
NGM_ONE2MANY_GET_CONFIG: Final = 1
NGM_ONE2MANY_GET_STATS: Final = 2
NGM_ONE2MANY_CLR_STATS: Final = 3
NGM_ONE2MANY_GETCLR_STATS: Final = 4

MAX_LINKS: Final = 64
ONE_LINKNUM: Final = -1
XMIT_ROUNDROBIN: Final = 1
XMIT_ALL: Final = 2
XMIT_FAILOVER: Final = 3
FAIL_MANUAL: Final = 1
FAIL_NOTIFY: Final = 2
NGM_LINK_IS_UP: Final = 32
NGM_LINK_IS_DOWN: Final = 33


def _links(value: Iterable[int]) -> tuple[int, ...]:
    links = tuple(value)
    if len(links) != MAX_LINKS:
        raise NetgraphError(errno.EINVAL, f"enabledLinks has {len(links)} entries, not 64")
    return links


@attrs.frozen
class One2ManyConfig:
    # FreeBSD's ASCII defaults are all zero (an omitted xmitAlg is 0, which setconfig rejects).
    xmitAlg: int = field(UINT32)
    failAlg: int = field(UINT32)
    enabledLinks: tuple[int, ...] = field(Array(UINT8, MAX_LINKS), converter=_links)


@attrs.define
class One2ManyLinkStats:
    recvOctets: int = field(UINT64)
    recvPackets: int = field(UINT64)
    xmitOctets: int = field(UINT64)
    xmitPackets: int = field(UINT64)
    memoryFailures: int = field(UINT64)


_CONFIG = Struct(One2ManyConfig)
_STATS = Struct(One2ManyLinkStats)


class One2ManyNode(Node):
    typecookie = ONE2MANY_COOKIE
    cmdlist = (
        Cmd(
            ONE2MANY_COOKIE,
            NGM_ONE2MANY_SET_CONFIG,
            "setconfig",
            _CONFIG,
            None,
            "Set the transmit and failure algorithms and the enabled links",
        ),
        Cmd(
            ONE2MANY_COOKIE,
            NGM_ONE2MANY_GET_CONFIG,
            "getconfig",
            None,
            _CONFIG,
            "Get the configuration",
            restore="setconfig",
        ),
        Cmd(
            ONE2MANY_COOKIE,
            NGM_ONE2MANY_GET_STATS,
            "getstats",
            INT32,
            _STATS,
            "Get a link's counts (-1 is the one hook)",
        ),
        Cmd(
            ONE2MANY_COOKIE,
            NGM_ONE2MANY_CLR_STATS,
            "clrstats",
            INT32,
            None,
            "Clear a link's counts",
        ),
        Cmd(
            ONE2MANY_COOKIE,
            NGM_ONE2MANY_GETCLR_STATS,
            "getclrstats",
            INT32,
            _STATS,
            "Get and clear a link's counts",
        ),
    )

    def constructor(self) -> None:
        self.xmit_alg = XMIT_ROUNDROBIN
        self.fail_alg = FAIL_MANUAL
        self.enabled = [False] * MAX_LINKS
        self.link_stats = {n: One2ManyLinkStats() for n in range(ONE_LINKNUM, MAX_LINKS)}
        self.next_rr = 0

    @staticmethod
    def linknum(name: str) -> int:
        if name == "one":
            return ONE_LINKNUM
        digits = name[4:] if name.startswith("many") else ""
        if not digits.isdigit() or (digits[0] == "0" and digits != "0") or int(digits) >= 64:
            raise NetgraphError(errno.EINVAL, f"one2many has no hook {name!r} (one, many0-63)")
        return int(digits)

    def newhook(self, hook: Hook) -> None:
        num = self.linknum(hook.name)
        hook.private = num
        self.link_stats[num] = One2ManyLinkStats()
        if num != ONE_LINKNUM:
            self.enabled[num] = True  # links are enabled as they are made (as FreeBSD does)

    def disconnect(self, hook: Hook) -> None:
        if hook.private != ONE_LINKNUM:
            self.enabled[hook.private] = False

    def active_links(self) -> list[Hook]:
        hooks = self.hooks
        return [
            hook
            for num in range(MAX_LINKS)
            if self.enabled[num] and (hook := hooks.get(f"many{num}")) is not None
        ]

    def rcvdata(self, hook: Hook, item: Item) -> None:
        size = len(item)
        stats = self.link_stats[hook.private]
        stats.recvOctets += size
        stats.recvPackets += 1
        if hook.private != ONE_LINKNUM:
            outs = [h for h in (self.hooks.get("one"),) if h is not None]
        else:
            links = self.active_links()
            if not links:
                outs = []
            elif self.xmit_alg == XMIT_ALL:
                outs = links
            elif self.xmit_alg == XMIT_FAILOVER:
                outs = links[:1]
            else:
                turn = self.next_rr % len(links)
                outs = [links[turn]]
                self.next_rr = (turn + 1) % len(links)
        if not outs:
            self.stats.dropped += 1
            raise NetgraphError(errno.ENOTCONN, f"{self.path} has no link to send on")
        for out in outs:
            out_stats = self.link_stats[out.private]
            out_stats.xmitOctets += size
            out_stats.xmitPackets += 1
            self.send(out, item)

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> object:
        if msg.typecookie == FLOW_COOKIE:
            if self.fail_alg == FAIL_NOTIFY and lasthook is not None and lasthook.private >= 0:
                if msg.cmd == NGM_LINK_IS_UP:
                    self.enabled[lasthook.private] = True
                elif msg.cmd == NGM_LINK_IS_DOWN:
                    self.enabled[lasthook.private] = False
            return None
        if msg.typecookie != ONE2MANY_COOKIE:
            return super().rcvmsg(msg, retaddr, lasthook)
        cmd = msg.cmd
        if cmd == NGM_ONE2MANY_SET_CONFIG:
            conf = msg.args
            if not isinstance(conf, One2ManyConfig):
                raise NetgraphError(errno.EINVAL, "setconfig takes a one2many config")
            if conf.xmitAlg not in (XMIT_ROUNDROBIN, XMIT_ALL, XMIT_FAILOVER):
                raise NetgraphError(errno.EINVAL, f"xmitAlg {conf.xmitAlg} is not 1, 2 or 3")
            if conf.failAlg not in (FAIL_MANUAL, FAIL_NOTIFY):
                raise NetgraphError(errno.EINVAL, f"failAlg {conf.failAlg} is not 1 or 2")
            self.xmit_alg, self.fail_alg = conf.xmitAlg, conf.failAlg
            self.enabled = [bool(x) for x in conf.enabledLinks]
            return None
        if cmd == NGM_ONE2MANY_GET_CONFIG:
            return One2ManyConfig(self.xmit_alg, self.fail_alg, tuple(map(int, self.enabled)))
        if cmd in (NGM_ONE2MANY_GET_STATS, NGM_ONE2MANY_CLR_STATS, NGM_ONE2MANY_GETCLR_STATS):
            num = msg.args
            if not isinstance(num, int) or not ONE_LINKNUM <= num < MAX_LINKS:
                raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: no link number {num!r}")
            reply = None if cmd == NGM_ONE2MANY_CLR_STATS else attrs.evolve(self.link_stats[num])
            if cmd != NGM_ONE2MANY_GET_STATS:
                self.link_stats[num] = One2ManyLinkStats()
            return reply
        return super().rcvmsg(msg, retaddr, lasthook)
