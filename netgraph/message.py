"""Control messages: the ``ng_mesg`` header, flag bits, generic commands and their arguments.

A :class:`Message` is FreeBSD's ``struct ng_mesg`` as a value: the header fields plus typed
arguments. Inside one process messages travel as values; :func:`pack_header` and
:func:`unpack_header` give the 56-byte binary header of spec section 1.7 (host byte order, as
FreeBSD lays it out), and the ASCII issue adds the argument layouts.

Every node type declares its commands once, as a ``cmdlist`` of :class:`Cmd` (cookie, number with
its flag bits, ASCII name, request and reply argument types); message names, the ASCII form and
ngctl's help all derive from it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .parse import (
    CMDBUF,
    HINT32,
    HOOKBUF,
    NODEBUF,
    PATHBUF,
    STRING,
    TYPEBUF,
    UINT8,
    UINT16,
    UINT32,
    Array,
    ByteArray,
    Fields,
    Node,
    ParseType,
    Struct,
    field,
)

__all__ = [
    "GENERIC_COOKIE",
    "HEADER",
    "NGF_ORIG",
    "NGF_RESP",
    "NGM_HASREPLY",
    "NGM_READONLY",
    "NG_VERSION",
    "Cmd",
    "ConnectArgs",
    "HookList",
    "LinkInfo",
    "Message",
    "MessageType",
    "MkNodeArgs",
    "MkPeerArgs",
    "NameArgs",
    "NameList",
    "NodeInfo",
    "RmHookArgs",
    "TypeInfo",
    "TypeList",
    "pack_header",
    "unpack_header",
]

NG_VERSION: Final = 8
NGF_ORIG: Final = 0x0000
NGF_RESP: Final = 0x0001
NGM_READONLY: Final = 0x10000000
NGM_HASREPLY: Final = 0x20000000
RO_HR: Final = NGM_READONLY | NGM_HASREPLY

GENERIC_COOKIE: Final = 1137070366
FLOW_COOKIE: Final = 851672669

NG_TYPESIZ: Final = 32
NG_HOOKSIZ: Final = 32
NG_NODESIZ: Final = 32
NG_CMDSTRSIZ: Final = 32
NG_PATHSIZ: Final = 512
NG_TEXTRESPONSE: Final = 1024

# Generic command numbers, flag bits included (spec section 2).
NGM_SHUTDOWN: Final = 1
NGM_MKPEER: Final = 2
NGM_CONNECT: Final = 3
NGM_NAME: Final = 4
NGM_RMHOOK: Final = 5
NGM_NODEINFO: Final = 6 | RO_HR
NGM_LISTHOOKS: Final = 7 | RO_HR
NGM_LISTNAMES: Final = 8 | RO_HR
NGM_LISTNODES: Final = 9 | RO_HR
NGM_LISTTYPES: Final = 10 | RO_HR
NGM_TEXT_STATUS: Final = 11 | RO_HR
NGM_BINARY2ASCII: Final = 12 | RO_HR
NGM_ASCII2BINARY: Final = 13 | RO_HR
NGM_TEXT_CONFIG: Final = 14
# Ours, not FreeBSD's: make a node with no hooks (graph files need nodes before their links).
# Far from FreeBSD's numbers so that a new one of theirs cannot collide.
NGM_MKNODE: Final = 64 | NGM_HASREPLY

# struct ng_mesg header: version, spare, spare2, arglen, cmd, flags, token, typecookie, cmdstr.
HEADER: Final = struct.Struct("=BBHIIIII32s")
assert HEADER.size == 56


@attrs.frozen
class Message:
    """One control message. ``args`` is a typed value (or ``None`` for no arguments)."""

    typecookie: int
    cmd: int
    args: Any = None
    cmdstr: str = ""
    flags: int = NGF_ORIG
    token: int = 0
    version: int = NG_VERSION

    @property
    def is_response(self) -> bool:
        return bool(self.flags & NGF_RESP)

    @property
    def readonly(self) -> bool:
        return bool(self.cmd & NGM_READONLY)

    def response(self, args: Any = None) -> Message:
        """``NG_MKRESPONSE``: same cookie, cmd, token and cmdstr, NGF_RESP set, new arguments."""
        return attrs.evolve(self, args=args, flags=self.flags | NGF_RESP, version=NG_VERSION)


def pack_header(msg: Message, arglen: int) -> bytes:
    """The 56-byte ``ng_mesg`` header for ``msg`` followed by ``arglen`` bytes of arguments."""
    cmdstr = msg.cmdstr.encode()[: NG_CMDSTRSIZ - 1]
    return HEADER.pack(
        msg.version, 0, 0, arglen, msg.cmd, msg.flags, msg.token, msg.typecookie, cmdstr
    )


def unpack_header(data: bytes) -> tuple[Message, int]:
    """Decode a header; returns the message (``args=None``) and its ``arglen``."""
    version, _spare, _spare2, arglen, cmd, flags, token, cookie, cmdstr = HEADER.unpack_from(data)
    text = cmdstr.split(b"\0", 1)[0].decode(errors="replace")
    msg = Message(cookie, cmd, None, text, flags, token, version)
    return msg, arglen


@attrs.frozen
class Cmd:
    """One entry of a node type's cmdlist: how a (cookie, cmd) pair is named and typed.

    ``request`` and ``reply`` are parse types (:mod:`netgraph.parse`), or None for no arguments.
    """

    cookie: int
    cmd: int
    name: str
    request: ParseType | None = None
    reply: ParseType | None = None
    # What ngctl's help says about it (optional).
    summary: str = ""
    # The command that takes this one's reply, as it is, to recreate the node's configuration
    # (a getter names its setter: ``getcfg`` restores with ``setcfg``). Graph files saved from a
    # running graph record each node's configuration this way.
    restore: str = ""


# Arguments and replies of the generic messages. Field names are the ASCII names of spec
# section 2 (``hook`` for RMHOOK, ``typename`` for typeinfo, ``linkinfo`` for hooklist); each
# field declares its parse type, which fixes the ASCII and the binary form.


@attrs.frozen
class MkPeerArgs:
    type: str = field(TYPEBUF)
    ourhook: str = field(HOOKBUF)
    peerhook: str = field(HOOKBUF)


@attrs.frozen
class MkNodeArgs:
    type: str = field(TYPEBUF)
    name: str = field(NODEBUF)


@attrs.frozen
class ConnectArgs:
    path: str = field(PATHBUF)
    ourhook: str = field(HOOKBUF)
    peerhook: str = field(HOOKBUF)


@attrs.frozen
class NameArgs:
    name: str = field(NODEBUF)


@attrs.frozen
class RmHookArgs:
    hook: str = field(HOOKBUF)


@attrs.frozen
class NodeInfo:
    name: str = field(NODEBUF)
    type: str = field(TYPEBUF)
    id: int = field(HINT32)
    hooks: int = field(UINT32)


@attrs.frozen
class LinkInfo:
    ourhook: str = field(HOOKBUF)
    peerhook: str = field(HOOKBUF)
    nodeinfo: NodeInfo = field(Struct(NodeInfo))


@attrs.frozen
class HookList:
    nodeinfo: NodeInfo = field(Struct(NodeInfo))
    linkinfo: tuple[LinkInfo, ...] = field(
        Array(Struct(LinkInfo), lambda fields: fields["nodeinfo"].hooks)
    )


@attrs.frozen
class NameList:
    numnames: int = field(UINT32)
    nodeinfo: tuple[NodeInfo, ...] = field(
        Array(Struct(NodeInfo), lambda fields: fields["numnames"])
    )

    @classmethod
    def of(cls, infos: tuple[NodeInfo, ...]) -> NameList:
        return cls(len(infos), infos)


@attrs.frozen
class TypeInfo:
    typename: str = field(TYPEBUF)
    numnodes: int = field(UINT32)


@attrs.frozen
class TypeList:
    numtypes: int = field(UINT32)
    typeinfo: tuple[TypeInfo, ...] = field(
        Array(Struct(TypeInfo), lambda fields: fields["numtypes"])
    )

    @classmethod
    def of(cls, infos: tuple[TypeInfo, ...]) -> TypeList:
        return cls(len(infos), infos)


class MessageType(ParseType):
    """``ng_mesg`` as a value (spec 2): the header fields and the arguments as raw bytes.

    Its ASCII form is a struct; its binary form is FreeBSD's header followed by the arguments.
    The value is a :class:`Message` whose ``args`` are ``bytes``.
    """

    type_name = "ng_mesg"
    align = 4

    def __init__(self) -> None:
        self.struct = Struct(
            [
                ("version", UINT8),
                ("spare", UINT8),
                ("spare2", UINT16),
                ("arglen", UINT32),
                ("cmd", UINT32),
                ("flags", HINT32),
                ("token", UINT32),
                ("typecookie", UINT32),
                ("cmdstr", CMDBUF),
                ("data", ByteArray(lambda fields: fields["arglen"])),
            ]
        )

    def _fields(self, msg: Message) -> dict[str, Any]:
        data = msg.args if isinstance(msg.args, bytes) else b""
        return {
            "version": msg.version,
            "spare": 0,
            "spare2": 0,
            "arglen": len(data),
            "cmd": msg.cmd,
            "flags": msg.flags,
            "token": msg.token,
            "typecookie": msg.typecookie,
            "cmdstr": msg.cmdstr,
            "data": data,
        }

    @staticmethod
    def _message(f: Mapping[str, Any]) -> Message:
        return Message(
            f["typecookie"], f["cmd"], f["data"], f["cmdstr"], f["flags"], f["token"], f["version"]
        )

    def default(self) -> Message:
        return self._message(self.struct.default())

    def convert(self, node: Node, fields: Fields) -> Message:
        return self._message(self.struct.convert(node, fields))

    def unparse(self, value: Message) -> str:
        return self.struct.unparse(self._fields(value))

    def pack(self, value: Message, out: bytearray, fields: Fields) -> None:
        self.struct.pack(self._fields(value), out, fields)

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[Message, int]:
        f, pos = self.struct.unpack(data, pos, end, fields)
        return self._message(f), pos


NG_MESG: Final = MessageType()

GENERIC_CMDLIST: Final[tuple[Cmd, ...]] = (
    Cmd(GENERIC_COOKIE, NGM_SHUTDOWN, "shutdown"),
    Cmd(GENERIC_COOKIE, NGM_MKPEER, "mkpeer", Struct(MkPeerArgs)),
    Cmd(GENERIC_COOKIE, NGM_CONNECT, "connect", Struct(ConnectArgs)),
    Cmd(GENERIC_COOKIE, NGM_NAME, "name", Struct(NameArgs)),
    Cmd(GENERIC_COOKIE, NGM_RMHOOK, "rmhook", Struct(RmHookArgs)),
    Cmd(GENERIC_COOKIE, NGM_NODEINFO, "nodeinfo", None, Struct(NodeInfo)),
    Cmd(GENERIC_COOKIE, NGM_LISTHOOKS, "listhooks", None, Struct(HookList)),
    Cmd(GENERIC_COOKIE, NGM_LISTNAMES, "listnames", None, Struct(NameList)),
    Cmd(GENERIC_COOKIE, NGM_LISTNODES, "listnodes", None, Struct(NameList)),
    Cmd(GENERIC_COOKIE, NGM_LISTTYPES, "listtypes", None, Struct(TypeList)),
    Cmd(GENERIC_COOKIE, NGM_TEXT_STATUS, "textstatus", None, STRING),
    Cmd(GENERIC_COOKIE, NGM_BINARY2ASCII, "binary2ascii", NG_MESG, NG_MESG),
    Cmd(GENERIC_COOKIE, NGM_ASCII2BINARY, "ascii2binary", NG_MESG, NG_MESG),
    # FreeBSD: no ASCII request type, a string reply.
    Cmd(GENERIC_COOKIE, NGM_TEXT_CONFIG, "textconfig", None, STRING),
    Cmd(
        GENERIC_COOKIE,
        NGM_MKNODE,
        "mknode",
        Struct(MkNodeArgs),
        Struct(NodeInfo),
        "Make a node of a type, with no hooks, and optionally name it (not in FreeBSD)",
    ),
)
