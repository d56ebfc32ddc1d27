"""``hub``: every packet goes out of every other hook, never back out the one it came in on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from netgraph import Cmd, Hook, Item, Message, NetgraphError, Node

HUB_COOKIE: Final = 1082189597
NGM_HUB_SET_PERSISTENT: Final = 1


class HubNode(Node):
    typecookie = HUB_COOKIE
    cmdlist = (
        Cmd(
            HUB_COOKIE,
            NGM_HUB_SET_PERSISTENT,
            "setpersistent",
            None,
            None,
            "Stay when the last hook goes",
        ),
    )

    def constructor(self) -> None:
        self.persistent = False

    def lingers(self) -> bool:
        return self.persistent

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self._flood(hook, item, False)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self._flood(hook, items, True)

    def _flood(self, hook: Hook, payload: object, batch: bool) -> None:
        # A failure on one hook must not keep the packet from the others (FreeBSD goes on too);
        # the first error still reaches the sender once every hook has had its copy.
        first: NetgraphError | None = None
        for out in tuple(self.hooks.values()):
            if out is hook:
                continue
            try:
                if batch:
                    self.send_batch(out, payload)  # type: ignore[arg-type]
                else:
                    self.send(out, payload)  # type: ignore[arg-type]
            except NetgraphError as err:
                first = first or err
        if first is not None:
            raise first

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> None:
        if msg.typecookie == HUB_COOKIE and msg.cmd == NGM_HUB_SET_PERSISTENT:
            self.persistent = True
            return None
        return super().rcvmsg(msg, retaddr, lasthook)  # type: ignore[no-any-return]
