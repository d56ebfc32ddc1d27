"""Parse types: netgraph's ``ng_parse`` type system (spec 3.2, 3.6-3.9, 10.2-10.4).

A parse type describes one kind of value three ways at once:

* ASCII in: ``convert(node)`` turns a node of the generic value tree (a WORD or STRING token, a
  ``{}`` struct or a ``[]`` array, as the grammar in ``ascii.lark`` reads them) into a Python
  value, raising :class:`ValueProblem` (an errno and the token at fault) when it cannot;
* ASCII out: ``unparse(value)`` gives the canonical text of spec 3.9;
* binary: ``pack``/``unpack`` give FreeBSD's layout of the C struct, with natural alignment and
  host byte order (spec 10.2), so ``binary2ascii``/``ascii2binary`` agree byte for byte.

Python values: integers are ``int``; strings ``str`` (bytes that are not UTF-8 survive as
surrogate escapes); ``ipaddr`` an ``IPv4Address``; ``enaddr`` and byte arrays ``bytes``; arrays
tuples; structs instances of an attrs class (or ``dict``) whose fields declare their parse types
with :func:`field`, which is the one place a struct's layout is written down.
"""

from __future__ import annotations

import errno
import re
import struct as _struct
import sys
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address
from typing import Any, ClassVar, Final

import attrs

__all__ = [
    "BYTES",
    "CMDBUF",
    "ENADDR",
    "HINT8",
    "HINT16",
    "HINT32",
    "HINT64",
    "HOOKBUF",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "IPADDR",
    "NODEBUF",
    "PATHBUF",
    "STRING",
    "TYPEBUF",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "Array",
    "ArrayNode",
    "ByteArray",
    "FixedString",
    "Int",
    "ParseType",
    "SizedString",
    "StringType",
    "Struct",
    "StructNode",
    "ValueProblem",
    "field",
]

BYTE_ORDER: Final = "<" if sys.byteorder == "little" else ">"

# ------------------------------------------------------------------- the generic value tree


class Tok:
    """A WORD or STRING token where a value was read: its text and its offset in the input.

    The grammar's own tokens (lark's ``Token``) have these same attributes, so they serve as
    they are; this class is for values made without the grammar.
    """

    __slots__ = ("start_pos", "type", "value")

    def __init__(self, type: str, value: str, start_pos: int) -> None:
        self.type = type  # "WORD" or "STRING"
        self.value = value
        self.start_pos = start_pos

    def __repr__(self) -> str:
        return f"{self.type}({self.value!r}@{self.start_pos})"


class StructNode:
    """``{ name=value ... }`` as read: field-name tokens with their values, in input order."""

    __slots__ = ("end", "fields", "pos")

    def __init__(self, pos: int, fields: list[tuple[Tok, Node]], end: int) -> None:
        self.pos = pos
        self.fields = fields
        self.end = end


class ArrayNode:
    """``[ value index=value ... ]`` as read: (index token or None, value) in input order."""

    __slots__ = ("elements", "end", "pos")

    def __init__(self, pos: int, elements: list[tuple[Tok | None, Node]], end: int) -> None:
        self.pos = pos
        self.elements = elements
        self.end = end


Node = Tok | StructNode | ArrayNode


class ValueProblem(Exception):
    """A value the type cannot take: an errno, what is wrong, and where (an input offset)."""

    def __init__(self, code: int, detail: str, pos: int | None = None) -> None:
        super().__init__(detail)
        self.errno = code
        self.detail = detail
        self.pos = pos


def _pos(node: Node) -> int:
    return node.pos if isinstance(node, StructNode | ArrayNode) else node.start_pos


def _describe(node: Node) -> str:
    if not isinstance(node, StructNode | ArrayNode):
        return f"{node.value}" if node.type == "WORD" else "a quoted string"
    return "a struct" if isinstance(node, StructNode) else "an array"


# ------------------------------------------------------------------------------- the base


class NoDefault:
    """The default of a type that has none (enaddr, sockaddr): omitting it is EOPNOTSUPP."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = NoDefault()

# The enclosing struct's fields parsed so far, for types whose size depends on them.
Fields = Mapping[str, Any]


class ParseType:
    """One parse type. Subclasses override what differs, as FreeBSD's types do."""

    name: ClassVar[str] = "type"
    align: int = 1

    def default(self) -> Any:
        """The value an omitted field or element takes (NO_DEFAULT if there is none)."""
        return NO_DEFAULT

    def default_in(self, fields: Fields) -> Any:
        """The default of a field omitted from a struct whose earlier fields are ``fields``
        (an array counted by an earlier field takes that many default elements)."""
        return self.default()

    def convert(self, node: Node, fields: Fields) -> Any:
        """ASCII in: a value from the generic tree."""
        raise NotImplementedError

    def unparse(self, value: Any) -> str:
        """ASCII out: the canonical text of ``value``."""
        raise NotImplementedError

    def pack(self, value: Any, out: bytearray, fields: Fields) -> None:
        """Binary out: append ``value``'s bytes (the caller has aligned ``out``)."""
        raise NotImplementedError

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[Any, int]:
        """Binary in: the value at ``data[pos:]`` (no further than ``end``) and where it ends."""
        raise NotImplementedError

    def is_default(self, value: Any) -> bool:
        """Whether canonical output omits ``value`` (spec 3.9 compares against the default)."""
        default = self.default()
        return default is not NO_DEFAULT and value == default

    # Conveniences over the whole value.

    def to_bytes(self, value: Any) -> bytes:
        out = bytearray()
        self.pack(value, out, {})
        return bytes(out)

    def from_bytes(self, data: bytes) -> Any:
        value, _ = self.unpack(data, 0, len(data), {})
        return value

    def parse_top(self, text: str) -> Any | None:
        """A type's own reading of a whole top-level argument, or None to use the grammar.

        Custom types whose text the generic grammar cannot lex (``local/"path"``,
        ``inet6/[::1]:80``) read the raw text here (spec 3.12).
        """
        return None


def _need_word(node: Node, what: str) -> Tok:
    if isinstance(node, StructNode | ArrayNode) or node.type != "WORD":
        raise ValueProblem(errno.EINVAL, f"expected {what}, found {_describe(node)}", _pos(node))
    return node


def _need_string(node: Node) -> Tok:
    if isinstance(node, StructNode | ArrayNode) or node.type != "STRING":
        raise ValueProblem(
            errno.EINVAL, f"expected a quoted string, found {_describe(node)}", _pos(node)
        )
    return node


def _pad(out: bytearray, align: int) -> None:
    if align > 1:
        out.extend(bytes(-len(out) % align))


def _aligned(pos: int, align: int) -> int:
    return pos + (-pos % align) if align > 1 else pos


def _short(what: str) -> ValueProblem:
    return ValueProblem(errno.EINVAL, f"binary data too short for {what}")


# ------------------------------------------------------------------------------- integers


def c_integer(text: str) -> int | None:
    """C ``strtol``/``strtoul`` with base 0 on a whole word: ``0x1f``, ``010`` (= 8), ``-5``.

    Unlike C, trailing characters are an error rather than silently ignored.
    """
    match = _C_INTEGER.fullmatch(text)
    if match is None:
        return None
    sign, hexa, octal, decimal = match.groups()
    if len(text) > 64:
        return None  # far out of any range, and too long for int() to read in Python 3.11+
    if hexa is not None:
        value = int(hexa, 16)
    elif octal is not None:
        value = int(octal, 8) if octal else 0
    else:
        value = int(decimal, 10)
    return -value if sign == "-" else value


# One optional sign, then 0x and hex digits, 0 and octal digits, or decimal digits: ASCII only.
_C_INTEGER: Final = re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]+)|0([0-7]*)|([1-9][0-9]*))", re.ASCII)


class Int(ParseType):
    """int8 .. int64 in signed, unsigned and hex flavours (spec 3.6, 10.4)."""

    def __init__(self, bits: int, flavour: str) -> None:
        self.bits = bits
        self.flavour = flavour  # "int", "uint" or "hint"
        self.align = bits // 8
        self._struct = _struct.Struct(BYTE_ORDER + {8: "b", 16: "h", 32: "i", 64: "q"}[bits])
        if flavour != "int":
            self._struct = _struct.Struct(BYTE_ORDER + {8: "B", 16: "H", 32: "I", 64: "Q"}[bits])
        self.low = -(1 << (bits - 1))
        self.high = (1 << bits) - 1
        self.type_name = f"{flavour}{bits}"

    def __repr__(self) -> str:
        return self.type_name.upper()

    def default(self) -> int:
        return 0

    def normal(self, value: int) -> int:
        """The value as this flavour reads the same bits: signed or not."""
        value &= self.high
        if self.flavour == "int" and value >> (self.bits - 1):
            value -= 1 << self.bits
        return value

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueProblem(errno.EINVAL, f"{self.type_name} value {value!r} is not an integer")
        if not self.low <= value <= self.high:
            raise ValueProblem(errno.EINVAL, f"{value} is out of range for {self.type_name}")
        return self.normal(value)

    def convert(self, node: Node, fields: Fields) -> int:
        tok = _need_word(node, f"an integer ({self.type_name})")
        value = c_integer(tok.value)
        if value is None:
            raise ValueProblem(errno.EINVAL, f"{tok.value!r} is not a number", tok.start_pos)
        if not self.low <= value <= self.high:
            raise ValueProblem(
                errno.EINVAL,
                f"{tok.value} is out of range for {self.type_name} ({self.low}..{self.high})",
                tok.start_pos,
            )
        return self.normal(value)

    def unparse(self, value: int) -> str:
        if self.flavour == "hint":
            return f"0x{value & self.high:x}"
        return str(value)

    def pack(self, value: int, out: bytearray, fields: Fields) -> None:
        out += self._struct.pack(self.check(value))

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[int, int]:
        size = self._struct.size
        if pos + size > end:
            raise _short(self.type_name)
        return self.normal(self._struct.unpack_from(data, pos)[0]), pos + size


INT8: Final = Int(8, "int")
UINT8: Final = Int(8, "uint")
HINT8: Final = Int(8, "hint")
INT16: Final = Int(16, "int")
UINT16: Final = Int(16, "uint")
HINT16: Final = Int(16, "hint")
INT32: Final = Int(32, "int")
UINT32: Final = Int(32, "uint")
HINT32: Final = Int(32, "hint")
INT64: Final = Int(64, "int")
UINT64: Final = Int(64, "uint")
HINT64: Final = Int(64, "hint")

# -------------------------------------------------------------------------------- strings

_ESCAPES: Final = {
    "a": 7,
    "b": 8,
    "f": 12,
    "n": 10,
    "r": 13,
    "t": 9,
    "v": 11,
    "\\": 92,
    "'": 39,
    '"': 34,
    "?": 63,
}
_OUT_ESCAPES: Final = {9: "\\t", 12: "\\f", 10: "\\n", 13: "\\r", 11: "\\v", 34: '\\"', 92: "\\\\"}


def decode_string(tok: Tok) -> bytes:
    """The bytes of a quoted STRING token, with C escapes (spec 10.3)."""
    try:
        return _decode_string(tok)
    except UnicodeEncodeError as exc:
        raise ValueProblem(
            errno.EINVAL,
            f"a string holds {exc.object[exc.start]!r}, which is no character",
            tok.start_pos + 1 + exc.start,
        ) from None


def _decode_string(tok: Tok) -> bytes:
    raw = tok.value[1:-1]
    if "\\" not in raw:
        return raw.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != "\\":
            j = raw.find("\\", i)
            j = n if j < 0 else j
            out += raw[i:j].encode("utf-8", "surrogateescape")
            i = j
            continue
        if i + 1 >= n:
            out.append(92)  # a backslash right before the end is kept
            break
        e = raw[i + 1]
        if e in "01234567":
            j = i + 1
            while j < n and j < i + 4 and raw[j] in "01234567":
                j += 1
            value = int(raw[i + 1 : j], 8)
            if value > 0xFF:
                raise ValueProblem(
                    errno.EINVAL,
                    f"octal escape \\{raw[i + 1 : j]} is over 0377",
                    tok.start_pos + 1 + i,
                )
            out.append(value)
            i = j
        elif e == "x":
            j = i + 2
            while j < n and j < i + 4 and raw[j] in "0123456789abcdefABCDEF":
                j += 1
            if j == i + 2:
                raise ValueProblem(errno.EINVAL, "\\x with no hex digits", tok.start_pos + 1 + i)
            out.append(int(raw[i + 2 : j], 16))
            i = j
        else:
            # C's escapes; an unknown one stands for the character itself (as FreeBSD reads it).
            code = _ESCAPES.get(e)
            if code is not None:
                out.append(code)
            else:
                out += e.encode("utf-8", "surrogateescape")
            i += 2
    return bytes(out)


def encode_string(data: bytes) -> str:
    """A quoted string for ``data``: the canonical escapes of spec 3.4."""
    parts = ['"']
    for b in data:
        esc = _OUT_ESCAPES.get(b)
        if esc is not None:
            parts.append(esc)
        elif b < 0x20 or b > 0x7E:
            parts.append(f"\\x{b:02x}")
        else:
            parts.append(chr(b))
    parts.append('"')
    return "".join(parts)


def _text_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueProblem(errno.EINVAL, f"{what} value {value!r} is not a string")
    return value.encode("utf-8", "surrogateescape")


def _no_nul(data: bytes, pos: int | None) -> bytes:
    if 0 in data:
        raise ValueProblem(errno.EINVAL, "a string cannot hold a NUL byte", pos)
    return data


def _as_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class StringType(ParseType):
    """``string``: NUL-terminated, variable length."""

    type_name = "string"

    def default(self) -> str:
        return ""

    def convert(self, node: Node, fields: Fields) -> str:
        tok = _need_string(node)
        return _as_text(_no_nul(decode_string(tok), tok.start_pos))

    def unparse(self, value: str) -> str:
        return encode_string(_text_bytes(value, self.type_name))

    def pack(self, value: str, out: bytearray, fields: Fields) -> None:
        out += _no_nul(_text_bytes(value, self.type_name), None) + b"\0"

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[str, int]:
        nul = data.find(b"\0", pos, end)
        if nul < 0:
            raise ValueProblem(errno.EINVAL, "string is not NUL-terminated")
        return _as_text(data[pos:nul]), nul + 1


class FixedString(ParseType):
    """``fixedstring(N)``: N bytes, NUL-terminated and zero-filled (nodebuf, hookbuf, ...)."""

    def __init__(self, size: int, type_name: str = "") -> None:
        self.size = size
        self.type_name = type_name or f"fixedstring({size})"

    def __repr__(self) -> str:
        return self.type_name.upper()

    def default(self) -> str:
        return ""

    def _check(self, data: bytes, pos: int | None) -> bytes:
        _no_nul(data, pos)
        if len(data) >= self.size:
            raise ValueProblem(
                errno.E2BIG, f"string of {len(data)} bytes is too long for {self.type_name}", pos
            )
        return data

    def convert(self, node: Node, fields: Fields) -> str:
        tok = _need_string(node)
        return _as_text(self._check(decode_string(tok), tok.start_pos))

    def unparse(self, value: str) -> str:
        return encode_string(_text_bytes(value, self.type_name))

    def pack(self, value: str, out: bytearray, fields: Fields) -> None:
        data = self._check(_text_bytes(value, self.type_name), None)
        out += data + bytes(self.size - len(data))

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[str, int]:
        if pos + self.size > end:
            raise _short(self.type_name)
        raw = data[pos : pos + self.size]
        return _as_text(raw.split(b"\0", 1)[0]), pos + self.size


class SizedString(ParseType):
    """``sizedstring``: a 16-bit length, then the bytes (no NUL)."""

    type_name = "sizedstring"
    align = 2

    def default(self) -> str:
        return ""

    def _check(self, data: bytes, pos: int | None) -> bytes:
        if len(data) > 0xFFFF:
            raise ValueProblem(errno.EINVAL, "sizedstring is longer than 65535 bytes", pos)
        return data

    def convert(self, node: Node, fields: Fields) -> str:
        tok = _need_string(node)
        return _as_text(self._check(decode_string(tok), tok.start_pos))

    def unparse(self, value: str) -> str:
        return encode_string(_text_bytes(value, self.type_name))

    def pack(self, value: str, out: bytearray, fields: Fields) -> None:
        data = self._check(_text_bytes(value, self.type_name), None)
        out += _struct.pack(BYTE_ORDER + "H", len(data)) + data

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[str, int]:
        if pos + 2 > end:
            raise _short(self.type_name)
        (size,) = _struct.unpack_from(BYTE_ORDER + "H", data, pos)
        if pos + 2 + size > end:
            raise _short(self.type_name)
        return _as_text(data[pos + 2 : pos + 2 + size]), pos + 2 + size


STRING: Final = StringType()
NODEBUF: Final = FixedString(32, "nodebuf")
HOOKBUF: Final = FixedString(32, "hookbuf")
TYPEBUF: Final = FixedString(32, "typebuf")
CMDBUF: Final = FixedString(32, "cmdbuf")
PATHBUF: Final = FixedString(512, "pathbuf")
SIZEDSTRING: Final = SizedString()

# --------------------------------------------------------------------- addresses and bytes


class IpAddr(ParseType):
    """``ipaddr``: ``a.b.c.d``, each part read as a C integer (``010`` is 8, ``-1`` is 255)."""

    type_name = "ipaddr"
    align = 4

    def default(self) -> IPv4Address:
        return IPv4Address(0)

    def convert(self, node: Node, fields: Fields) -> IPv4Address:
        tok = _need_word(node, "an IPv4 address")
        parts = tok.value.split(".")
        if len(parts) != 4:
            raise ValueProblem(errno.EINVAL, f"{tok.value!r} is not an IPv4 address", tok.start_pos)
        octets = []
        for part in parts:
            value = c_integer(part)
            if value is None or not -128 <= value <= 255:
                raise ValueProblem(
                    errno.EINVAL, f"bad octet {part!r} in {tok.value!r}", tok.start_pos
                )
            octets.append(value & 0xFF)
        return IPv4Address(bytes(octets))

    def unparse(self, value: IPv4Address) -> str:
        return str(value)

    def pack(self, value: IPv4Address, out: bytearray, fields: Fields) -> None:
        out += IPv4Address(value).packed

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[IPv4Address, int]:
        if pos + 4 > end:
            raise _short(self.type_name)
        return IPv4Address(data[pos : pos + 4]), pos + 4


class EnAddr(ParseType):
    """``enaddr``: ``00:11:22:33:44:55`` (hex octets); it has no default (spec 3.6)."""

    type_name = "enaddr"

    def convert(self, node: Node, fields: Fields) -> bytes:
        tok = _need_word(node, "an Ethernet address")
        parts = tok.value.split(":")
        if len(parts) != 6:
            raise ValueProblem(
                errno.EINVAL, f"{tok.value!r} is not an Ethernet address", tok.start_pos
            )
        octets = []
        for part in parts:
            digits = part[2:] if part[:2] in ("0x", "0X") else part
            value = int(digits, 16) if _HEX_OCTET.fullmatch(digits) else -1
            if not 0 <= value <= 0xFF:
                raise ValueProblem(
                    errno.EINVAL, f"bad octet {part!r} in {tok.value!r}", tok.start_pos
                )
            octets.append(value)
        return bytes(octets)

    def unparse(self, value: bytes) -> str:
        return ":".join(f"{b:02x}" for b in value)

    def pack(self, value: bytes, out: bytearray, fields: Fields) -> None:
        if not isinstance(value, bytes | bytearray) or len(value) != 6:
            raise ValueProblem(errno.EINVAL, f"enaddr {value!r} is not 6 bytes")
        out += value

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[bytes, int]:
        if pos + 6 > end:
            raise _short(self.type_name)
        return bytes(data[pos : pos + 6]), pos + 6


_HEX_OCTET: Final = re.compile(r"[0-9a-fA-F]{1,2}", re.ASCII)
IPADDR: Final = IpAddr()
ENADDR: Final = EnAddr()

Length = int | Callable[[Fields], int] | None

# The most elements an array read from text may have (FreeBSD converts into a 20 KiB buffer and
# fails with ERANGE past it; this is the same idea, counted in elements).
MAX_ELEMENTS: Final = 65536


def _length(length: Length, fields: Fields, pos: int | None = None) -> int | None:
    if length is None or isinstance(length, int):
        return length
    try:
        size = int(length(fields))
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueProblem(errno.EINVAL, f"array length is not known yet: {exc}") from exc
    if size > MAX_ELEMENTS:
        raise ValueProblem(
            errno.ERANGE, f"an array of {size} elements is more than {MAX_ELEMENTS}", pos
        )
    return size


class ByteArray(ParseType):
    """``bytearray``: a hex array ``[ 0x1 2=0x5 ]`` or a quoted string, of a fixed or computed
    length (``None``: as long as what was written, or the rest of the binary data)."""

    type_name = "bytearray"

    def __init__(self, length: Length = None) -> None:
        self.length = length

    def default(self) -> bytes:
        return bytes(self.length) if isinstance(self.length, int) else b""

    def default_in(self, fields: Fields) -> bytes:
        return bytes(_length(self.length, fields) or 0)

    def convert(self, node: Node, fields: Fields) -> bytes:
        size = _length(self.length, fields, _pos(node))
        if not isinstance(node, StructNode | ArrayNode) and node.type == "STRING":
            data = decode_string(node)
            if size is None:
                return data
            if len(data) > size:
                raise ValueProblem(
                    errno.E2BIG, f"string of {len(data)} bytes is longer than {size}", _pos(node)
                )
            return data + bytes(size - len(data))
        values = Array(HINT8, size).convert(node, fields)
        return bytes(v & 0xFF for v in values)

    def unparse(self, value: bytes) -> str:
        return Array(HINT8, None if self.length is None else len(value)).unparse(tuple(value))

    def is_default(self, value: bytes) -> bool:
        return not any(value) if self.length is not None else not value

    def _check(self, value: Any, fields: Fields) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise ValueProblem(errno.EINVAL, f"bytearray value {value!r} is not bytes")
        size = _length(self.length, fields)
        if size is not None and len(value) != size:
            raise ValueProblem(errno.EINVAL, f"bytearray holds {len(value)} bytes, not {size}")
        return bytes(value)

    def pack(self, value: bytes, out: bytearray, fields: Fields) -> None:
        out += self._check(value, fields)

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[bytes, int]:
        size = _length(self.length, fields)
        stop = end if size is None else pos + size
        if stop > end:
            raise _short(self.type_name)
        return bytes(data[pos:stop]), stop


BYTES: Final = ByteArray()

# ---------------------------------------------------------------------------------- arrays


class Array(ParseType):
    """``fixedarray(elem, N)`` for an int length; ``array(elem, f)`` when ``f(fields)`` gives the
    length from the enclosing struct's earlier fields; ``None``: as many as written."""

    type_name = "array"

    def __init__(
        self,
        element: ParseType,
        length: Length,
        index_default: Callable[[int], Any] | None = None,
    ) -> None:
        self.element = element
        self.length = length
        self.index_default = index_default
        self.align = element.align

    def element_default(self, index: int) -> Any:
        if self.index_default is not None:
            return self.index_default(index)
        return self.element.default()

    def default(self) -> Any:
        if not isinstance(self.length, int):
            return ()
        return self._defaults(self.length)

    def default_in(self, fields: Fields) -> Any:
        return self._defaults(_length(self.length, fields) or 0)

    def _defaults(self, count: int) -> Any:
        values = tuple(self.element_default(i) for i in range(count))
        return NO_DEFAULT if any(v is NO_DEFAULT for v in values) else values

    def is_default(self, value: Any) -> bool:
        if self.length is None:
            return not value
        return all(self._elem_is_default(i, v) for i, v in enumerate(value))

    def _elem_is_default(self, index: int, value: Any) -> bool:
        if self.index_default is not None:
            default = self.index_default(index)
            return default is not NO_DEFAULT and value == default
        return self.element.is_default(value)

    def convert(self, node: Node, fields: Fields) -> tuple[Any, ...]:
        if not isinstance(node, ArrayNode):
            raise ValueProblem(
                errno.EINVAL, f"expected an array, found {_describe(node)}", _pos(node)
            )
        size = _length(self.length, fields, _pos(node))
        given: dict[int, tuple[Node, int]] = {}
        index = 0
        for index_tok, value in node.elements:
            if index_tok is not None:
                explicit = c_integer(index_tok.value)
                if explicit is None or explicit < 0:
                    raise ValueProblem(
                        errno.EINVAL, f"array index {index_tok.value!r} is not a number",
                        index_tok.start_pos,
                    )  # fmt: skip
                index = explicit
                at = index_tok.start_pos
            else:
                if not isinstance(value, StructNode | ArrayNode) and value.type == "STRING":
                    raise ValueProblem(
                        errno.EINVAL, "a string in an array needs an explicit index (0=\"...\")",
                        _pos(value),
                    )  # fmt: skip
                at = _pos(value)
            if size is not None and index >= size:
                raise ValueProblem(
                    errno.E2BIG, f"array index {index} is past the end (length {size})", at
                )
            if index >= MAX_ELEMENTS:
                raise ValueProblem(
                    errno.ERANGE, f"array index {index} is past {MAX_ELEMENTS} elements", at
                )
            if index in given:
                raise ValueProblem(errno.EALREADY, f"array index {index} is given twice", at)
            given[index] = (value, at)
            index += 1
        count = size if size is not None else (max(given) + 1 if given else 0)
        if self.index_default is None:
            out = [self.element.default()] * count
        else:
            out = [self.index_default(i) for i in range(count)]
        element = self.element
        for i, (value, _) in given.items():
            out[i] = element.convert(value, fields)
        if len(given) < count and NO_DEFAULT in out:
            missing = out.index(NO_DEFAULT)
            raise ValueProblem(
                errno.EOPNOTSUPP, f"array element {missing} has no default and was not given",
                _pos(node),
            )  # fmt: skip
        return tuple(out)

    def unparse(self, value: Sequence[Any]) -> str:
        parts = []
        last = -1
        # A string element always gets its index: without one it could not be read back.
        quoted = isinstance(self.element, StringType | FixedString | SizedString)
        # An open-ended array's last element shows even when it is a default: it is what
        # says how long the array is.
        last_index = len(value) - 1 if self.length is None else -1
        for i, v in enumerate(value):
            if i != last_index and self._elem_is_default(i, v):
                continue
            text = self.element.unparse(v)
            parts.append(text if i == last + 1 and not quoted else f"{i}={text}")
            last = i
        return f"[ {' '.join(parts)} ]" if parts else "[]"

    def pack(self, value: Sequence[Any], out: bytearray, fields: Fields) -> None:
        size = _length(self.length, fields)
        if not isinstance(value, tuple | list):
            raise ValueProblem(errno.EINVAL, f"array value {value!r} is not a sequence")
        if size is not None and len(value) != size:
            raise ValueProblem(errno.EINVAL, f"array holds {len(value)} elements, not {size}")
        element = self.element
        for v in value:
            _pad(out, element.align)
            element.pack(v, out, fields)

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[Any, int]:
        size = _length(self.length, fields)
        element = self.element
        out: list[Any] = []
        while (size is None and _aligned(pos, element.align) < end) or (
            size is not None and len(out) < size
        ):
            start = _aligned(pos, element.align)
            v, pos = element.unpack(data, start, end, fields)
            if size is None and pos == start:
                break  # elements that take no bytes: "the rest of the data" holds none
            out.append(v)
        return tuple(out), pos


# --------------------------------------------------------------------------------- structs


def field(ptype: ParseType, **kwargs: Any) -> Any:
    """An attrs field that declares its parse type; its default is the type's default."""
    if "default" not in kwargs and "factory" not in kwargs:
        default = ptype.default()
        if default is not NO_DEFAULT:
            kwargs["default"] = default
    metadata = dict(kwargs.pop("metadata", {}))
    metadata["ng"] = ptype
    return attrs.field(metadata=metadata, **kwargs)


class Struct(ParseType):
    """``struct``: fields in declaration order with C padding (spec 3.7, 3.9).

    ``of`` is an attrs class whose fields were declared with :func:`field`, or a list of
    ``(name, type)`` pairs for a struct whose value is a ``dict``.
    """

    type_name = "struct"

    def __init__(self, of: type | Sequence[tuple[str, ParseType]]) -> None:
        if isinstance(of, type):
            self.cls: type | None = of
            self.fields = [(f.name, f.metadata["ng"]) for f in attrs.fields(of)]
        else:
            self.cls = None
            self.fields = list(of)
        self.by_name = dict(self.fields)
        self.align = max((t.align for _, t in self.fields), default=1)

    def __repr__(self) -> str:
        return f"Struct({self.cls.__name__ if self.cls else [n for n, _ in self.fields]})"

    def make(self, values: dict[str, Any]) -> Any:
        return self.cls(**values) if self.cls is not None else dict(values)

    def get(self, value: Any, name: str) -> Any:
        return value[name] if isinstance(value, dict) else getattr(value, name)

    def default(self) -> Any:
        values = {}
        for name, ptype in self.fields:
            default = ptype.default()
            if default is NO_DEFAULT:
                return NO_DEFAULT
            values[name] = default
        return self.make(values)

    def is_default(self, value: Any) -> bool:
        return all(ptype.is_default(self.get(value, name)) for name, ptype in self.fields)

    def convert(self, node: Node, fields: Fields) -> Any:
        if not isinstance(node, StructNode):
            raise ValueProblem(
                errno.EINVAL, f"expected a struct, found {_describe(node)}", _pos(node)
            )
        given: dict[str, tuple[Tok, Node]] = {}
        by_name = self.by_name
        for name_tok, value in node.fields:
            name = name_tok.value
            if name not in by_name:
                known = " ".join(by_name)
                hint = ""
                if name == "data" and "value" in by_name:
                    hint = " (the field is called 'value')"
                raise ValueProblem(
                    errno.ENOENT, f"no field {name!r} here{hint}; fields are: {known}",
                    name_tok.start_pos,
                )  # fmt: skip
            if name in given:
                raise ValueProblem(
                    errno.EALREADY, f"field {name!r} is given twice", name_tok.start_pos
                )
            given[name] = (name_tok, value)
        values: dict[str, Any] = {}
        for name, ptype in self.fields:
            if name in given:
                values[name] = ptype.convert(given[name][1], values)
            else:
                default = ptype.default_in(values)
                if default is NO_DEFAULT:
                    raise ValueProblem(
                        errno.EOPNOTSUPP, f"field {name!r} has no default and must be given",
                        node.end,
                    )  # fmt: skip
                values[name] = default
        return self.make(values)

    def unparse(self, value: Any) -> str:
        parts = [
            f"{name}={ptype.unparse(v)}"
            for name, ptype in self.fields
            if not ptype.is_default(v := self.get(value, name))
        ]
        return f"{{ {' '.join(parts)} }}" if parts else "{}"

    def pack(self, value: Any, out: bytearray, fields: Fields) -> None:
        start = len(out)
        done: dict[str, Any] = {}
        for name, ptype in self.fields:
            try:
                v = self.get(value, name)
            except (KeyError, AttributeError) as exc:
                raise ValueProblem(errno.EINVAL, f"struct value has no field {name!r}") from exc
            _pad(out, ptype.align)
            ptype.pack(v, out, done)
            done[name] = v
        size = len(out) - start
        out.extend(bytes(-size % self.align))

    def unpack(self, data: bytes, pos: int, end: int, fields: Fields) -> tuple[Any, int]:
        start = pos
        values: dict[str, Any] = {}
        for name, ptype in self.fields:
            pos = _aligned(pos, ptype.align)
            values[name], pos = ptype.unpack(data, pos, end, values)
        pos += -(pos - start) % self.align
        return self.make(values), pos
