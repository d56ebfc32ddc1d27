"""What the owner of a socket node can do, written once over ``send_msg`` and ``request``.

:class:`netgraph.socket.Socket` (in the same process) and :class:`netgraph.remote.RemoteSocket`
(through the graph daemon) both derive from :class:`Owner`: they supply the transport
(``send_msg``, ``request``, ``recv_msg``) and inherit the generic operations and the ASCII
conversions (libnetgraph's NgSendAsciiMsg / NgRecvAsciiMsg).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import attrs

from .cmdlist import installed_type, split_command
from .errors import ParseError
from .message import (
    GENERIC_COOKIE,
    NGM_ASCII2BINARY,
    NGM_BINARY2ASCII,
    NGM_CONNECT,
    NGM_LISTHOOKS,
    NGM_LISTNAMES,
    NGM_LISTNODES,
    NGM_LISTTYPES,
    NGM_MKNODE,
    NGM_MKPEER,
    NGM_NAME,
    NGM_NODEINFO,
    NGM_RMHOOK,
    NGM_SHUTDOWN,
    ConnectArgs,
    HookList,
    Message,
    MkNodeArgs,
    MkPeerArgs,
    NameArgs,
    NameList,
    NodeInfo,
    RmHookArgs,
    TypeList,
)

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Owner"]


class Owner:
    """The generic operations and ASCII conversions of a socket node's owner."""

    async def send_msg(self, path: str, msg: Message) -> int:
        raise NotImplementedError

    async def request(
        self, path: str, cookie: int, cmd: int, args: Any = None, *, cmdstr: str = ""
    ) -> Message:
        raise NotImplementedError

    async def recv_msg(self) -> tuple[str, Message]:
        raise NotImplementedError

    def node_type(self, type_name: str) -> type[Node] | None:
        """The class of node type ``type_name`` as this owner knows it (for its cmdlist): the
        types installed here (entry points); an in-process socket knows its graph's own."""
        return installed_type(type_name)

    async def send_ascii(self, path: str, line: str) -> int:
        """libnetgraph's ``NgSendAsciiMsg``: ``line`` is ``command args...``; the node at
        ``path`` converts it (ASCII2BINARY), then it is sent; returns the token.

        A :class:`netgraph.ParseError` for bad text points into ``line``.
        """
        return await self.send_msg(path, await self.to_binary(path, line))

    async def request_ascii(self, path: str, line: str) -> tuple[Message, str]:
        """Send ``line`` as :meth:`send_ascii` does and wait for the reply; returns the reply and
        its arguments as text (converted by the replying node, as NgRecvAsciiMsg does)."""
        msg = await self.to_binary(path, line)
        reply = await self.request(path, msg.typecookie, msg.cmd, msg.args, cmdstr=msg.cmdstr)
        return reply, await self.to_ascii(path, reply)

    async def to_binary(self, path: str, line: str) -> Message:
        """``command args...`` as a message, converted by the node at ``path`` (ASCII2BINARY)."""
        name, args, offset = split_command(line)
        if not name:
            raise ParseError(errno.EINVAL, "a command name is required", line, 0)
        try:
            reply = await self.request(
                path, GENERIC_COOKIE, NGM_ASCII2BINARY, Message(0, 0, args, name),
                cmdstr="ascii2binary",
            )  # fmt: skip
        except ParseError as err:
            raise err.shifted(line[:offset]) from None
        converted: Message = reply.args
        return attrs.evolve(converted, token=0)

    async def to_ascii(self, path: str, msg: Message) -> str:
        """The arguments of ``msg`` as text, converted by the node at ``path`` (BINARY2ASCII)."""
        reply = await self.request(
            path, GENERIC_COOKIE, NGM_BINARY2ASCII, msg, cmdstr="binary2ascii"
        )
        text: str = reply.args.args
        return text

    async def recv_ascii(self) -> tuple[str, Message, str]:
        """libnetgraph's ``NgRecvAsciiMsg``: the next message, its sender's path, and its
        arguments as text, converted by the sender (BINARY2ASCII)."""
        path, msg = await self.recv_msg()
        return path, msg, await self.to_ascii(path, msg)

    async def _generic(self, path: str, cmd: int, name: str, args: Any = None) -> None:
        await self.send_msg(path, Message(GENERIC_COOKIE, cmd, args, name, 0, 0))

    async def mkpeer(self, path: str, type_name: str, ourhook: str, peerhook: str) -> None:
        await self._generic(path, NGM_MKPEER, "mkpeer", MkPeerArgs(type_name, ourhook, peerhook))

    async def mknode(self, type_name: str, name: str = "") -> NodeInfo:
        """A new node of ``type_name`` with no hooks (our MKNODE), named ``name`` if given."""
        reply = await self.request(
            ".", GENERIC_COOKIE, NGM_MKNODE, MkNodeArgs(type_name, name), cmdstr="mknode"
        )
        return reply.args  # type: ignore[no-any-return]

    async def connect(self, path: str, peerpath: str, ourhook: str, peerhook: str) -> None:
        """CONNECT sent to ``path``: ``peerpath`` is relative to the node at ``path``."""
        args = ConnectArgs(peerpath, ourhook, peerhook)
        await self._generic(path, NGM_CONNECT, "connect", args)

    async def name_node(self, path: str, name: str) -> None:
        await self._generic(path, NGM_NAME, "name", NameArgs(name))

    async def rmhook(self, path: str, hook: str) -> None:
        await self._generic(path, NGM_RMHOOK, "rmhook", RmHookArgs(hook))

    async def shutdown(self, path: str) -> None:
        await self._generic(path, NGM_SHUTDOWN, "shutdown")

    async def nodeinfo(self, path: str = ".") -> NodeInfo:
        reply = await self.request(path, GENERIC_COOKIE, NGM_NODEINFO, cmdstr="nodeinfo")
        return reply.args  # type: ignore[no-any-return]

    async def listhooks(self, path: str = ".") -> HookList:
        reply = await self.request(path, GENERIC_COOKIE, NGM_LISTHOOKS, cmdstr="listhooks")
        return reply.args  # type: ignore[no-any-return]

    async def listnodes(self) -> NameList:
        reply = await self.request(".", GENERIC_COOKIE, NGM_LISTNODES, cmdstr="listnodes")
        return reply.args  # type: ignore[no-any-return]

    async def listnames(self) -> NameList:
        reply = await self.request(".", GENERIC_COOKIE, NGM_LISTNAMES, cmdstr="listnames")
        return reply.args  # type: ignore[no-any-return]

    async def listtypes(self) -> TypeList:
        reply = await self.request(".", GENERIC_COOKIE, NGM_LISTTYPES, cmdstr="listtypes")
        return reply.args  # type: ignore[no-any-return]
