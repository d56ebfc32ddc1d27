"""Binary forms that cross a process boundary: whole messages, and the graph daemon's frames.

Messages (spec 10.2): FreeBSD's 56-byte ``ng_mesg`` header and the arguments in the layout of
their parse type, which the cmdlist of the node type that converts them names (the target's for a
request, the sender's for a reply). A message whose (cookie, cmd) no cmdlist knows keeps its
arguments as raw bytes.

Frames (docs/wire.md): a 4-byte big-endian length of what follows, a 1-byte frame type, a body.
Each frame type has a ``pack_*`` function and an ``unpack_*`` one that takes the body and raises
``NetgraphError(EPROTO)`` when it is malformed. This module only encodes and decodes; the daemon
(:mod:`netgraph.daemon`) and its client (:mod:`netgraph.remote`) are trio shells around it.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from . import cmdlist
from .errors import NetgraphError, ParseError
from .message import (
    GENERIC_COOKIE,
    HEADER,
    NG_MESG,
    NGM_ASCII2BINARY,
    NGM_BINARY2ASCII,
    Message,
    pack_header,
    unpack_header,
)

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "BATCH",
    "CREDIT",
    "DATA",
    "DATA_IN",
    "DATA_WINDOW",
    "ERROR",
    "HELLO",
    "MAX_FRAME",
    "MSG",
    "MSG_IN",
    "RESULT",
    "VERSION",
    "WELCOME",
    "FrameReader",
    "decode_message",
    "encode_message",
    "pack_batch",
    "pack_credit",
    "pack_data",
    "pack_data_in",
    "pack_error",
    "pack_frame",
    "pack_hello",
    "pack_msg",
    "pack_msg_in",
    "pack_result",
    "pack_welcome",
    "unpack_batch",
    "unpack_credit",
    "unpack_data",
    "unpack_data_in",
    "unpack_error",
    "unpack_hello",
    "unpack_msg",
    "unpack_msg_in",
    "unpack_result",
    "unpack_welcome",
]

VERSION: Final = 1
MAX_FRAME: Final = 16 * 1024 * 1024

# Frame types: client to daemon below 0x80, daemon to client from 0x80.
HELLO: Final = 0x01
MSG: Final = 0x02
DATA: Final = 0x03
BATCH: Final = 0x04
CREDIT: Final = 0x05
WELCOME: Final = 0x81
RESULT: Final = 0x83
MSG_IN: Final = 0x84
DATA_IN: Final = 0x85
ERROR: Final = 0x8F

# How many DATA_IN frames the daemon may send that the client has not yet returned with CREDIT.
DATA_WINDOW: Final = 256

_LEN: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_WELCOME: Final = struct.Struct(">HI")


def _is_conversion(msg: Message) -> bool:
    return msg.typecookie == GENERIC_COOKIE and msg.cmd in (NGM_BINARY2ASCII, NGM_ASCII2BINARY)


def encode_message(node_type: type[Node] | None, msg: Message) -> bytes:
    """``msg`` as header and argument bytes, its arguments laid out by ``node_type``'s cmdlist.

    A BINARY2ASCII/ASCII2BINARY message carries a whole message: that inner one is encoded by the
    same node type (the converting node) first; its ASCII text is a NUL-terminated string.
    Raw ``bytes`` arguments are sent as they are.
    """
    args = msg.args
    if args is None:
        data = b""
    elif isinstance(args, bytes | bytearray):
        data = bytes(args)
    elif isinstance(args, Message) and _is_conversion(msg):
        inner = args
        # Text travels in an ASCII2BINARY request and a BINARY2ASCII reply; the other two carry
        # a binary message, whose arguments may be text-typed values (a hook name) all the same.
        if (msg.cmd == NGM_ASCII2BINARY) != msg.is_response and isinstance(inner.args, str):
            inner_data = inner.args.encode("utf-8", "surrogateescape") + b"\0"
        else:
            inner_data = encode_message(node_type, inner)[HEADER.size :]
        data = NG_MESG.to_bytes(_with_args(inner, inner_data))
    else:
        if node_type is None:
            raise NetgraphError(errno.EINVAL, f"cannot encode the arguments of {msg.cmdstr!r}")
        cmd = cmdlist.find_cmd(node_type, msg)
        ptype = cmd.reply if msg.is_response else cmd.request
        if ptype is None and isinstance(args, str):
            # A command whose cmdlist types no arguments but that is given text (TEXT_CONFIG's
            # request, as ngctl's ``config`` sends it): a C string, as FreeBSD sends it.
            data = args.encode("utf-8", "surrogateescape") + b"\0"
        else:
            data = cmdlist.encode_args(ptype, args)
    return pack_header(msg, len(data)) + data


def decode_message(node_type: type[Node] | None, data: bytes) -> Message:
    """A binary message, its arguments typed by ``node_type``'s cmdlist where it knows them."""
    if len(data) < HEADER.size:
        raise NetgraphError(errno.EINVAL, f"message of {len(data)} bytes is shorter than a header")
    msg, arglen = unpack_header(data)
    raw = data[HEADER.size :]
    if len(raw) != arglen:
        raise NetgraphError(errno.EINVAL, f"arglen {arglen} but {len(raw)} bytes of arguments")
    args: Any = raw if raw else None
    if _is_conversion(msg) and raw:
        inner = cmdlist.decode_args(NG_MESG, raw)
        inner_raw: bytes = inner.args
        if (msg.cmd == NGM_ASCII2BINARY) != msg.is_response:
            # The text of a message to convert (or a converted one's ASCII): a C string.
            args = _with_args(inner, inner_raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
        else:
            args = _with_args(inner, _typed(node_type, _with_args(inner, inner_raw)))
    elif raw and node_type is not None:
        args = _typed(node_type, _with_args(msg, raw))
    return msg.__class__(
        msg.typecookie, msg.cmd, args, msg.cmdstr, msg.flags, msg.token, msg.version
    )


def _with_args(msg: Message, args: Any) -> Message:
    return msg.__class__(
        msg.typecookie, msg.cmd, args, msg.cmdstr, msg.flags, msg.token, msg.version
    )


def _typed(node_type: type[Node] | None, msg: Message) -> Any:
    """``msg``'s raw arguments decoded by the cmdlist, or left raw where none knows them."""
    raw: bytes = msg.args
    if node_type is None:
        return raw
    try:
        cmd = cmdlist.find_cmd(node_type, msg)
    except NetgraphError:
        return raw
    ptype = cmd.reply if msg.is_response else cmd.request
    if ptype is None:
        return raw  # arguments the cmdlist does not type are kept, not dropped
    return cmdlist.decode_args(ptype, raw)


def pack_frame(kind: int, *parts: bytes) -> bytes:
    """A whole frame; EMSGSIZE when it would be longer than :data:`MAX_FRAME`."""
    body = b"".join(parts)
    if len(body) + 1 > MAX_FRAME:
        raise NetgraphError(
            errno.EMSGSIZE, f"frame of {len(body) + 1} bytes is over the limit of {MAX_FRAME}"
        )
    return _LEN.pack(len(body) + 1) + bytes((kind,)) + body


def pack_str(text: str) -> bytes:
    """A length-prefixed (u16) UTF-8 string."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) > 0xFFFF:
        raise NetgraphError(errno.EINVAL, "string too long for a frame")
    return struct.pack(">H", len(data)) + data


def unpack_str(body: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(body):
        raise NetgraphError(errno.EPROTO, "frame ends inside a string")
    (size,) = struct.unpack_from(">H", body, pos)
    end = pos + 2 + size
    if end > len(body):
        raise NetgraphError(errno.EPROTO, "frame ends inside a string")
    return body[pos + 2 : end].decode("utf-8", "surrogateescape"), end


def _short(kind: str) -> NetgraphError:
    return NetgraphError(errno.EPROTO, f"{kind} frame is too short")


def _u32(body: bytes, pos: int, kind: str) -> tuple[int, int]:
    if pos + 4 > len(body):
        raise _short(kind)
    return _U32.unpack_from(body, pos)[0], pos + 4


def _done(body: bytes, pos: int, kind: str) -> None:
    if pos != len(body):
        raise NetgraphError(errno.EPROTO, f"{len(body) - pos} stray bytes after a {kind} frame")


# ------------------------------------------------------------------- client to daemon


def pack_hello(name: str, version: int = VERSION) -> bytes:
    """HELLO: the protocol version and the name wanted for the client's socket node."""
    return pack_frame(HELLO, _U16.pack(version), pack_str(name))


def unpack_hello(body: bytes) -> tuple[int, str]:
    if len(body) < 2:
        raise _short("HELLO")
    (version,) = _U16.unpack_from(body)
    if version != VERSION:
        # Later versions may lay the rest out differently: do not read it.
        return version, ""
    name, pos = unpack_str(body, 2)
    _done(body, pos, "HELLO")
    return version, name


def pack_msg(request: int, path: str, message: bytes) -> bytes:
    """MSG: a control message (header and arguments, :func:`encode_message`) for ``path``."""
    return pack_frame(MSG, _U32.pack(request), pack_str(path), message)


def unpack_msg(body: bytes) -> tuple[int, str, bytes]:
    request, pos = _u32(body, 0, "MSG")
    path, pos = unpack_str(body, pos)
    return request, path, body[pos:]


def pack_data(request: int, hook: str, payload: bytes) -> bytes:
    """DATA: one item to send out of the client's hook (an empty name: its only hook)."""
    return pack_frame(DATA, _U32.pack(request), pack_str(hook), payload)


def unpack_data(body: bytes) -> tuple[int, str, bytes]:
    request, pos = _u32(body, 0, "DATA")
    hook, pos = unpack_str(body, pos)
    return request, hook, body[pos:]


def pack_batch(request: int, hook: str, items: Sequence[bytes]) -> bytes:
    """BATCH: several items sent out of one hook as one batch."""
    parts = [_U32.pack(request), pack_str(hook), _U32.pack(len(items))]
    for item in items:
        parts += (_U32.pack(len(item)), item)
    return pack_frame(BATCH, *parts)


def unpack_batch(body: bytes) -> tuple[int, str, list[bytes]]:
    request, pos = _u32(body, 0, "BATCH")
    hook, pos = unpack_str(body, pos)
    count, pos = _u32(body, pos, "BATCH")
    items: list[bytes] = []
    for _ in range(count):
        size, pos = _u32(body, pos, "BATCH")
        if pos + size > len(body):
            raise _short("BATCH")
        items.append(body[pos : pos + size])
        pos += size
    _done(body, pos, "BATCH")
    return request, hook, items


def pack_credit(items: int) -> bytes:
    """CREDIT: the client has taken ``items`` more DATA_IN items; the daemon may send as many."""
    return pack_frame(CREDIT, _U32.pack(items))


def unpack_credit(body: bytes) -> int:
    items, pos = _u32(body, 0, "CREDIT")
    _done(body, pos, "CREDIT")
    return items


# ------------------------------------------------------------------- daemon to client


def pack_welcome(node_id: int, name: str, version: int = VERSION) -> bytes:
    """WELCOME: the version spoken, and the ID and name of the client's socket node."""
    return pack_frame(WELCOME, _WELCOME.pack(version, node_id), pack_str(name))


def unpack_welcome(body: bytes) -> tuple[int, int, str]:
    if len(body) < _WELCOME.size:
        raise _short("WELCOME")
    version, node_id = _WELCOME.unpack_from(body)
    name, pos = unpack_str(body, _WELCOME.size)
    _done(body, pos, "WELCOME")
    return version, node_id, name


def pack_msg_in(sender: str, message: bytes) -> bytes:
    """MSG_IN: a control message that arrived at the client's socket node, and its sender."""
    return pack_frame(MSG_IN, pack_str(sender), message)


def unpack_msg_in(body: bytes) -> tuple[str, bytes]:
    sender, pos = unpack_str(body, 0)
    return sender, body[pos:]


def pack_data_in(hook: str, payload: bytes) -> bytes:
    """DATA_IN: an item that arrived on one of the client's hooks."""
    return pack_frame(DATA_IN, pack_str(hook), payload)


def unpack_data_in(body: bytes) -> tuple[str, bytes]:
    hook, pos = unpack_str(body, 0)
    return hook, body[pos:]


def pack_error(err: NetgraphError) -> bytes:
    """ERROR: the daemon is dropping the client, and why (an errno and a detail)."""
    return pack_frame(ERROR, _U32.pack(err.errno or errno.EPROTO), pack_str(_clip(err.detail)))


def unpack_error(body: bytes) -> NetgraphError:
    code, pos = _u32(body, 0, "ERROR")
    detail, pos = unpack_str(body, pos)
    _done(body, pos, "ERROR")
    return NetgraphError(code or errno.EPROTO, detail)


def _clip(text: str) -> str:
    """``text`` cut to what a u16-prefixed string holds (details may be long; never fail)."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= 0xFFFF:
        return text
    return data[:0xFFFF].decode("utf-8", "ignore")


_RESULT: Final = struct.Struct(">IIi")


def pack_result(request: int, err: NetgraphError | None) -> bytes:
    """RESULT: the outcome of a request: errno (0 for success), the detail, and for bad text
    the text and the offset in it (so the client can show the caret). The text has a u32
    length: it is the argument text of a message, which may be longer than a u16 string."""
    code, pos, detail, text = 0, -1, "", ""
    if isinstance(err, ParseError):
        code, pos, detail, text = err.errno or errno.EINVAL, err.pos, err.reason, err.text
    elif err is not None:
        code, detail = err.errno or errno.EIO, err.detail
    data = text.encode("utf-8", "surrogateescape")
    return pack_frame(
        RESULT, _RESULT.pack(request, code, pos), pack_str(_clip(detail)), _U32.pack(len(data)),
        data,
    )  # fmt: skip


def unpack_result(body: bytes) -> tuple[int, NetgraphError | None]:
    if len(body) < _RESULT.size:
        raise _short("RESULT")
    request, code, pos = _RESULT.unpack_from(body)
    detail, at = unpack_str(body, _RESULT.size)
    size, at = _u32(body, at, "RESULT")
    if at + size > len(body):
        raise _short("RESULT")
    text = body[at : at + size].decode("utf-8", "surrogateescape")
    _done(body, at + size, "RESULT")
    if code == 0:
        return request, None
    if pos >= 0:
        return request, ParseError(code, detail, text, pos)
    return request, NetgraphError(code, detail)


class FrameReader:
    """Splits a byte stream into frames: feed bytes, take complete (type, body) pairs.

    A length over the limit raises EMSGSIZE and a zero length EPROTO, as soon as the 4 length
    bytes are in. Complete frames before the bad one are returned first; the error is raised by
    the next call (``feed(b"")`` after handling them, as the daemon's read loop does).
    """

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.buffer = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buffer
        buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        try:
            while len(buf) - pos >= 4:
                (size,) = _LEN.unpack_from(buf, pos)
                if size < 1:
                    raise NetgraphError(errno.EPROTO, "frame of 0 bytes has no type")
                if size > self.limit:
                    raise NetgraphError(
                        errno.EMSGSIZE, f"frame of {size} bytes is over the limit of {self.limit}"
                    )
                if len(buf) - pos < 4 + size:
                    break
                frames.append((buf[pos + 4], bytes(buf[pos + 5 : pos + 4 + size])))
                pos += 4 + size
        except NetgraphError:
            if not frames:
                raise
        finally:
            del buf[:pos]
        return frames
