"""A third-party node type: counts the items it swallows; ``getcount`` replies with the count."""

from __future__ import annotations

from netgraph import Cmd, Hook, Item, Message, Node
from netgraph.parse import UINT32

COUNTER_COOKIE = 1700000001
NGM_COUNTER_GET = 1


class CounterNode(Node):
    typecookie = COUNTER_COOKIE
    cmdlist = (Cmd(COUNTER_COOKIE, NGM_COUNTER_GET, "getcount", None, UINT32),)

    def constructor(self) -> None:
        self.count = 0

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.count += 1

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> int:
        if msg.typecookie == COUNTER_COOKIE and msg.cmd == NGM_COUNTER_GET:
            return self.count
        return super().rcvmsg(msg, retaddr, lasthook)  # type: ignore[no-any-return]
