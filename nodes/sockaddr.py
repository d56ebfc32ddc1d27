"""Socket addresses for ksocket: the value, its text forms and its binary form (spec 4.3, 10.8).

A :class:`SockAddr` is a family and the bytes after it, laid out as BSD lays out ``struct
sockaddr`` (a length byte, a family byte, then the data), with the host's family numbers
(spec 10.1). Text forms: ``inet/1.2.3.4:80`` (the port left out when 0), ``inet6/[::1]:80`` and
``inet6/[fe80::1%eth0]:80``, ``local/"/path"``, and the generic ``{ len= family= data=[...] }``,
which is also how a sockaddr inside a struct is written (the special forms are for a top-level
argument only, as in FreeBSD).
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final

import attrs

from netgraph.errors import NetgraphError
from netgraph.parse import (
    UINT8,
    ArrayNode,
    ByteArray,
    Fields,
    Node,
    ParseType,
    Struct,
    StructNode,
    ValueProblem,
    decode_string,
    encode_string,
)

__all__ = ["GENERIC_SOCKADDR", "SOCKADDR", "SockAddr"]

FAMILIES: Final = {"local": socket.AF_UNIX, "inet": socket.AF_INET, "inet6": socket.AF_INET6}
MAX_LOCAL_PATH: Final = 253  # so that the length still fits its byte


@attrs.frozen
class SockAddr:
    """A socket address: ``family`` and the bytes that follow it in ``struct sockaddr``."""

    family: int
    data: bytes

    @property
    def len(self) -> int:
        return 2 + len(self.data)

    # -------------------------------------------------------------- Python's socket forms

    @classmethod
    def from_python(cls, family: int, address: Any) -> SockAddr:
        """From what Python's socket functions take and give for ``family``."""
        if family == socket.AF_INET:
            host, port = address
            return cls(family, struct.pack("!H", port) + IPv4Address(host).packed + bytes(8))
        if family == socket.AF_INET6:
            host, port, flowinfo, scope = (*address, 0, 0)[:4]
            ip = IPv6Address(host.split("%", 1)[0])
            return cls(
                family, struct.pack("!HI", port, flowinfo) + ip.packed + struct.pack("=I", scope)
            )
        if family == socket.AF_UNIX:
            if address is None:
                return cls(family, b"")  # an unbound peer has no name
            path = address if isinstance(address, bytes) else str(address).encode()
            return cls(family, path)
        raise NetgraphError(errno.EAFNOSUPPORT, f"address family {family} is not supported")

    def to_python(self) -> Any:
        """What Python's socket functions take for this address."""
        data = self.data
        try:
            if self.family == socket.AF_INET:
                (port,) = struct.unpack_from("!H", data)
                return (str(IPv4Address(data[2:6])), port)
            if self.family == socket.AF_INET6:
                port, flowinfo = struct.unpack_from("!HI", data)
                (scope,) = struct.unpack_from("=I", data, 22)
                return (str(IPv6Address(data[6:22])), port, flowinfo, scope)
        except (struct.error, ValueError) as exc:
            raise NetgraphError(errno.EINVAL, f"sockaddr data too short: {exc}") from None
        if self.family == socket.AF_UNIX:
            return data if data[:1] == b"\0" else data.decode("utf-8", "surrogateescape")
        raise NetgraphError(errno.EAFNOSUPPORT, f"address family {self.family} is not supported")

    # ----------------------------------------------------------------------------- text

    def text(self) -> str:
        """The special text form where there is one, else the generic struct form."""
        try:
            if self.family == socket.AF_INET and len(self.data) >= 6:
                host, port = self.to_python()
                return f"inet/{host}:{port}" if port else f"inet/{host}"
            if self.family == socket.AF_INET6 and len(self.data) >= 26:
                host, port, _flow, scope = self.to_python()
                if scope:
                    try:
                        host = f"{host}%{socket.if_indextoname(scope)}"
                    except OSError:
                        host = f"{host}%{scope}"
                return f"inet6/[{host}]:{port}" if port else f"inet6/[{host}]"
            if self.family == socket.AF_UNIX:
                return "local/" + encode_string(self.data)
        except NetgraphError:
            pass
        return GENERIC_SOCKADDR.unparse(self)


def _parse_inet(text: str) -> SockAddr:
    host, sep, port = text.partition(":")
    octets = host.split(".")
    if len(octets) != 4 or not all(o.isdigit() and o.isascii() and int(o) <= 255 for o in octets):
        raise ValueProblem(errno.EINVAL, f"'inet/{text}': four decimal octets are needed", 5)
    number = 0
    if sep:
        if not (port.isdigit() and port.isascii() and int(port) <= 65535):
            raise ValueProblem(errno.EINVAL, f"'inet/{text}': bad port {port!r}", 6 + len(host))
        number = int(port)
    return SockAddr.from_python(socket.AF_INET, (".".join(str(int(o)) for o in octets), number))


def _parse_inet6(text: str) -> SockAddr:
    if not text.startswith("["):
        raise ValueProblem(errno.EINVAL, "an inet6 address goes in brackets: inet6/[::1]:80", 6)
    end = text.find("]")
    if end < 0:
        raise ValueProblem(errno.EINVAL, "no ']' after the inet6 address", 6)
    inside, rest = text[1:end], text[end + 1 :]
    host, _, scope_text = inside.partition("%")
    try:
        ip = IPv6Address(host)
    except ValueError:
        raise ValueProblem(errno.EINVAL, f"{host!r} is not an IPv6 address", 7) from None
    scope = 0
    if "%" in inside:
        if not scope_text:
            raise ValueProblem(
                errno.EINVAL, "nothing after '%' in the inet6 address", 8 + len(host)
            )
        if scope_text.isdigit() and scope_text.isascii():
            scope = int(scope_text)
            if scope >= 2**32:
                raise ValueProblem(errno.EINVAL, f"scope {scope} is out of range", 8 + len(host))
        else:
            try:
                scope = socket.if_nametoindex(scope_text)
            except OSError:
                raise ValueProblem(
                    errno.EINVAL, f"no interface {scope_text!r}", 8 + len(host)
                ) from None
    port = 0
    if rest:
        digits = rest[1:]
        if rest[0] != ":" or not (digits.isdigit() and digits.isascii() and int(digits) <= 65535):
            raise ValueProblem(errno.EINVAL, f"bad port after the address: {rest!r}", 7 + end)
        port = int(digits)
    return SockAddr.from_python(socket.AF_INET6, (str(ip), port, 0, scope))


class SockAddrType(ParseType):
    """ksocket's sockaddr (spec 4.3): special forms at the top level, the generic struct
    everywhere. No default."""

    type_name = "sockaddr"

    def __init__(self, *, special: bool) -> None:
        self.special = special
        self.struct = Struct(
            [("len", UINT8), ("family", UINT8), ("data", ByteArray(lambda f: f["len"] - 2))]
        )

    def parse_top(self, text: str) -> SockAddr | None:
        stripped = text.lstrip(" \t\n\r\f\v")
        lead = len(text) - len(stripped)
        if not self.special or not stripped or stripped[0] == "{":
            return None
        family, slash, rest = stripped.partition("/")
        try:
            if not slash or len(family) > 31:
                raise ValueProblem(errno.EINVAL, "a sockaddr is family/address", 0)
            if family not in FAMILIES:
                raise ValueProblem(errno.EINVAL, f"unknown address family {family!r}", 0)
            offset = len(family) + 1
            if family == "local":
                return self._local(rest, offset)
            word = rest.split(None, 1)[0] if rest.strip() else ""
            return _parse_inet(word) if family == "inet" else _parse_inet6(word)
        except ValueProblem as problem:
            from netgraph.errors import ParseError

            raise ParseError(
                problem.errno, problem.detail, text, lead + (problem.pos or 0)
            ) from None

    @staticmethod
    def _local(rest: str, offset: int) -> SockAddr:
        from netgraph.parse import Tok

        end = 1
        while end < len(rest) and rest[0] == '"':
            if rest[end] == "\\":
                end += 2
                continue
            if rest[end] == '"':
                break
            end += 1
        if not rest.startswith('"') or end >= len(rest):
            raise ValueProblem(errno.EINVAL, 'a local address is local/"path"', offset)
        path = decode_string(Tok("STRING", rest[: end + 1], offset))
        if len(path) > MAX_LOCAL_PATH:
            raise ValueProblem(
                errno.E2BIG, f"a local path of {len(path)} bytes is over {MAX_LOCAL_PATH}", offset
            )
        return SockAddr(socket.AF_UNIX, path)

    def convert(self, node: Node, fields: Fields) -> SockAddr:
        if not isinstance(node, StructNode):
            where = node.pos if isinstance(node, ArrayNode) else node.start_pos
            raise ValueProblem(
                errno.EINVAL, "a sockaddr here is { len=... family=... data=[...] }", where
            )
        value = self.struct.convert(node, fields)
        if value["len"] < 2:
            raise ValueProblem(errno.EINVAL, "a sockaddr's len is at least 2", node.pos)
        return SockAddr(value["family"], value["data"])

    def unparse(self, value: SockAddr) -> str:
        if self.special:
            return value.text()
        return self.struct.unparse({"len": value.len, "family": value.family, "data": value.data})

    def default(self) -> Any:
        from netgraph.parse import NO_DEFAULT

        return NO_DEFAULT

    def pack(self, value: SockAddr, out: bytearray, fields: Fields) -> None:
        if value.len > 255:
            raise ValueProblem(errno.E2BIG, "sockaddr longer than 255 bytes")
        out += bytes((value.len, value.family & 0xFF)) + value.data

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[SockAddr, int]:
        if pos + 2 > end or data[pos] < 2 or pos + data[pos] > end:
            raise ValueProblem(errno.EINVAL, "binary sockaddr is short or its len is wrong")
        size = data[pos]
        return SockAddr(data[pos + 1], bytes(data[pos + 2 : pos + size])), pos + size


SOCKADDR: Final = SockAddrType(special=True)
GENERIC_SOCKADDR: Final = SockAddrType(special=False)
