"""``echo``: reflects data back out the hook it came in on, and messages back to their sender.

Every message that reaches echo's rcvmsg comes back as its own response (NGF_RESP set, same
arguments), TEXT_STATUS and TEXT_CONFIG included; generic messages are handled by the engine
before they get here (spec section 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from netgraph import Hook, Item, Message, Node

ECHO_COOKIE: Final = 884298942


class EchoNode(Node):
    typecookie = ECHO_COOKIE

    def rcvdata(self, hook: Hook, item: Item) -> None:
        self.send(hook, item)

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        self.send_batch(hook, items)

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> None:
        self.respond(msg, retaddr, msg.args)
