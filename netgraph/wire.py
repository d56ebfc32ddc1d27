"""Binary forms that cross a process boundary: whole messages, and the graph daemon's frames.

Messages (spec 10.2): FreeBSD's 56-byte ``ng_mesg`` header and the arguments in the layout of
their parse type, which the cmdlist of the node type that converts them names (the target's for a
request, the sender's for a reply). A message whose (cookie, cmd) no cmdlist knows keeps its
arguments as raw bytes.

Frames (docs/wire.md): a 4-byte big-endian length of what follows, a 1-byte frame type, a body.
This module only encodes and decodes; the daemon and its client are trio shells around it.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Any, Final

from . import ascii
from .errors import NetgraphError
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
    "MAX_FRAME",
    "VERSION",
    "decode_message",
    "encode_message",
    "pack_frame",
]

VERSION: Final = 1
MAX_FRAME: Final = 16 * 1024 * 1024

# Frame types: client to daemon below 0x80, daemon to client from 0x80.
HELLO: Final = 0x01
MSG: Final = 0x02
DATA: Final = 0x03
WELCOME: Final = 0x81
RESULT: Final = 0x83
MSG_IN: Final = 0x84
DATA_IN: Final = 0x85
ERROR: Final = 0x8F

_LEN: Final = struct.Struct(">I")


def _is_conversion(msg: Message) -> bool:
    return msg.typecookie == GENERIC_COOKIE and msg.cmd in (NGM_BINARY2ASCII, NGM_ASCII2BINARY)


def encode_message(node_type: type[Node] | None, msg: Message) -> bytes:
    """``msg`` as header and argument bytes, its arguments laid out by ``node_type``'s cmdlist.

    A BINARY2ASCII/ASCII2BINARY message carries a whole message: that inner one is encoded by the
    same node type (the converting node) first; its ASCII text is a NUL-terminated string.
    """
    args = msg.args
    if args is None:
        data = b""
    elif isinstance(args, bytes | bytearray):
        data = bytes(args)
    elif isinstance(args, Message) and _is_conversion(msg):
        inner = args
        if isinstance(inner.args, str):
            inner_data = inner.args.encode("utf-8", "surrogateescape") + b"\0"
        else:
            inner_data = encode_message(node_type, inner)[HEADER.size :]
        data = NG_MESG.to_bytes(_with_args(inner, inner_data))
    else:
        if node_type is None:
            raise NetgraphError(errno.EINVAL, f"cannot encode the arguments of {msg.cmdstr!r}")
        cmd = ascii.find_cmd(node_type, msg)
        ptype = cmd.reply if msg.is_response else cmd.request
        data = ascii.encode_args(ptype, args)
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
        inner = ascii.decode_args(NG_MESG, raw)
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
        cmd = ascii.find_cmd(node_type, msg)
    except NetgraphError:
        return raw
    ptype = cmd.reply if msg.is_response else cmd.request
    if ptype is None:
        return None
    return ascii.decode_args(ptype, raw)


def pack_frame(kind: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
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


def pack_result(request: int, err: NetgraphError | None) -> bytes:
    """RESULT: the outcome of a request: errno (0 for success), the detail, and for bad text
    the text and the offset in it (so the client can show the caret)."""
    if err is None:
        return pack_frame(RESULT, struct.pack(">IIi", request, 0, -1), pack_str(""), pack_str(""))
    if isinstance(err, ascii.ParseError):
        return pack_frame(
            RESULT, struct.pack(">IIi", request, err.errno or errno.EINVAL, err.pos),
            pack_str(err.reason), pack_str(err.text),
        )  # fmt: skip
    return pack_frame(
        RESULT, struct.pack(">IIi", request, err.errno or errno.EIO, -1), pack_str(err.detail),
        pack_str(""),
    )  # fmt: skip


def unpack_result(body: bytes) -> tuple[int, NetgraphError | None]:
    if len(body) < 12:
        raise NetgraphError(errno.EPROTO, "short RESULT frame")
    request, code, pos = struct.unpack_from(">IIi", body)
    detail, at = unpack_str(body, 12)
    text, _ = unpack_str(body, at)
    if code == 0:
        return request, None
    if pos >= 0:
        return request, ascii.ParseError(code, detail, text, pos)
    return request, NetgraphError(code, detail)


class FrameReader:
    """Splits a byte stream into frames: feed bytes, take complete (type, body) pairs."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.buffer = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames = []
        buf = self.buffer
        while len(buf) >= 4:
            (size,) = _LEN.unpack_from(buf)
            if size < 1 or size > self.limit:
                raise NetgraphError(errno.EMSGSIZE, f"frame of {size} bytes (limit {self.limit})")
            if len(buf) < 4 + size:
                break
            frames.append((buf[4], bytes(buf[5 : 4 + size])))
            del buf[: 4 + size]
        return frames
