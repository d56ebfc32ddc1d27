"""Node types' command lists: finding a message's entry, and its arguments as bytes.

Every node type declares its commands once (``Node.cmdlist``, then the generic ones); this module
looks them up by name and by (cookie, cmd), and lays arguments out in binary by their parse types.
It needs no grammar, so clients that only move binary messages (ngctl attached to a daemon) load
it without the ASCII parser.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Final

from .errors import NetgraphError
from .message import GENERIC_CMDLIST, NG_CMDSTRSIZ, Cmd, Message
from .parse import ParseType, ValueProblem

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "cmdlist_of",
    "decode_args",
    "encode_args",
    "expects_reply",
    "find_cmd",
    "installed_type",
    "split_command",
]

BLANKS: Final = " \t\n\r\f\v"

_Cmdlists = tuple[dict[str, Cmd], dict[tuple[int, int], Cmd]]
_cmdlists: dict[type[Node], _Cmdlists] = {}


def cmdlist_of(node_type: type[Node]) -> _Cmdlists:
    """A node type's commands by name and by (cookie, cmd), the generic ones after its own."""
    found = _cmdlists.get(node_type)
    if found is None:
        by_name: dict[str, Cmd] = {}
        by_number: dict[tuple[int, int], Cmd] = {}
        for cmd in (*node_type.cmdlist, *GENERIC_CMDLIST):
            by_name.setdefault(cmd.name, cmd)
            by_number.setdefault((cmd.cookie, cmd.cmd), cmd)
        found = _cmdlists[node_type] = (by_name, by_number)
    return found


def find_cmd(node_type: type[Node], msg: Message) -> Cmd:
    """The cmdlist entry for ``msg`` (ENOSYS when the node type cannot convert it)."""
    cmd = cmdlist_of(node_type)[1].get((msg.typecookie, msg.cmd))
    if cmd is None:
        raise NetgraphError(
            errno.ENOSYS,
            f"node type {node_type.type_name} has no ASCII form for cookie {msg.typecookie}"
            f" cmd {msg.cmd}",
        )
    return cmd


_installed: Any = None


def installed_type(type_name: str) -> type[Node] | None:
    """The class of ``type_name`` as installed here (entry points), or None. A client of a
    graph daemon uses it to read the cmdlist of a remote node's type."""
    global _installed
    from .types import TypeRegistry

    if _installed is None:
        _installed = TypeRegistry()
    try:
        cls: type[Node] = _installed.get(type_name)
    except NetgraphError:
        return None
    return cls


def expects_reply(type_name: str, msg: Message) -> bool:
    """Whether ``msg`` to a node of ``type_name`` gets a reply worth waiting for: the cmdlist
    says so (a reply type, or NGM_HASREPLY). Commands the cmdlist does not know are waited for
    (echo answers anything)."""
    from .message import NGM_HASREPLY

    if msg.cmd & NGM_HASREPLY:
        return True
    node_type = installed_type(type_name)
    if node_type is None:
        return True
    cmd = cmdlist_of(node_type)[1].get((msg.typecookie, msg.cmd))
    return cmd is None or cmd.reply is not None


def split_command(line: str) -> tuple[str, str, int]:
    """``name args...`` as libnetgraph splits it: the name, the argument text and its offset."""
    stripped = line.lstrip(BLANKS)
    lead = len(line) - len(stripped)
    end = lead
    while end < len(line) and line[end] not in BLANKS:
        end += 1
    name = line[lead:end][: NG_CMDSTRSIZ - 1]
    rest = end
    while rest < len(line) and line[rest] in BLANKS:
        rest += 1
    return name, line[rest:], rest


def encode_args(ptype: ParseType | None, value: Any) -> bytes:
    """The binary arguments of a message (spec 10.2)."""
    if ptype is None:
        return b""
    try:
        return ptype.to_bytes(value)
    except ValueProblem as problem:
        raise NetgraphError(problem.errno, problem.detail) from None


def decode_args(ptype: ParseType, data: bytes) -> Any:
    try:
        return ptype.from_bytes(data)
    except ValueProblem as problem:
        raise NetgraphError(problem.errno, problem.detail) from None
