"""Properties of the ASCII and binary forms of control-message values (spec 3, 10.2-10.5).

Hypothesis builds (parse type, value) pairs for every parse type: integers of every flavour,
strings of every kind (from arbitrary bytes, so escapes, quotes, backslashes and non-UTF-8 bytes
all occur), addresses, byte arrays and arrays of fixed, computed and open length, structs made
from attrs classes and from ``(name, type)`` lists, nested, plus ``ng_mesg``. Then:

* the canonical text parses back to the value, and is the text of what it parses to;
* the binary form unpacks to the value;
* an all-default struct is ``{}``;
* every other way of writing the value (blanks, field order, omitted defaults, explicit indexes,
  integers in hex/octal/negative, C escapes, a byte array as a string) parses to it as well;
* nothing, however mangled, makes the parser raise anything but a ParseError, or hang.

Known bugs have a test each, marked ``xfail(strict=True)`` with a minimal example; the general
strategies steer round them (each place says so) so the other properties keep guarding.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import re
import string
from ipaddress import IPv4Address
from operator import itemgetter
from typing import Any, Protocol, TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lark import Lark

import netgraph
from netgraph.ascii import ParseError, make_parser, parse_value, unparse_value
from netgraph.message import (
    NG_MESG,
    ConnectArgs,
    HookList,
    LinkInfo,
    Message,
    MessageType,
    MkPeerArgs,
    NameList,
    NodeInfo,
    TypeList,
)
from netgraph.parse import (
    BYTES,
    CMDBUF,
    ENADDR,
    HINT8,
    HINT16,
    HINT32,
    HINT64,
    HOOKBUF,
    INT8,
    INT16,
    INT32,
    INT64,
    IPADDR,
    NO_DEFAULT,
    NODEBUF,
    PATHBUF,
    SIZEDSTRING,
    STRING,
    TYPEBUF,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    Array,
    ByteArray,
    EnAddr,
    FixedString,
    Int,
    IpAddr,
    ParseType,
    SizedString,
    StringType,
    Struct,
    ValueProblem,
    field,
)

BLANKS = " \t\n\r\f\v"
T = TypeVar("T")


class Draw(Protocol):
    """What the helpers below draw with: a @composite's draw or st.data()'s draw."""

    def __call__(self, strategy: st.SearchStrategy[T], /) -> T: ...


PARSE_ERRNOS = {errno.EINVAL, errno.ENOENT, errno.EALREADY, errno.E2BIG, errno.ERANGE,
                errno.EOPNOTSUPP}  # fmt: skip
MAX_LEN = 3  # counters (and so computed array lengths) stay this small
INTS = [INT8, UINT8, HINT8, INT16, UINT16, HINT16, INT32, UINT32, HINT32, INT64, UINT64, HINT64]

PROPS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# "Must finish": a few hundred ms per example catches a parse that runs away.
FUZZ = settings(
    max_examples=250,
    deadline=400,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", autouse=True)
def _warm_parser() -> None:
    """Build the shared parser once, so its construction does not count against a deadline."""
    parse_value(UINT8, "0")


# ------------------------------------------------------------------- structs of the module


@attrs.frozen
class Point:
    x: int = field(INT16)
    y: int = field(HINT64)
    label: str = field(STRING)


@attrs.frozen
class Counted:
    n: int = field(UINT32)
    items: tuple[Point, ...] = field(Array(Struct(Point), itemgetter("n")))
    tail: bytes = field(ByteArray(3))


@attrs.frozen(kw_only=True)
class Blob:
    mac: bytes = field(ENADDR)  # no default: the struct has none either
    count: int = field(UINT8)
    data: bytes = field(ByteArray(itemgetter("count")))
    addr: IPv4Address = field(IPADDR)
    ports: tuple[int, ...] = field(Array(UINT16, 3, index_default=lambda i: 1000 + i))
    name: str = field(SIZEDSTRING)


@attrs.frozen
class Nest:
    point: Point = field(Struct(Point))
    hook: str = field(HOOKBUF)
    grid: tuple[tuple[int, ...], ...] = field(Array(Array(INT8, 2), 2))
    counted: Counted = field(Struct(Counted))
    names: tuple[str, ...] = field(Array(NODEBUF, 2))
    blobs: tuple[Blob, ...] = field(Array(Struct(Blob), None))


CANNED = [
    Struct(Point), Struct(Counted), Struct(Blob), Struct(Nest), Struct(MkPeerArgs),
    Struct(ConnectArgs), Struct(NodeInfo), Struct(LinkInfo), Struct(HookList), Struct(NameList),
    Struct(TypeList), NG_MESG,
]  # fmt: skip
# Integer fields with these names give the length of a later array, so they stay small.
COUNTER_NAMES = {"n", "count", "hooks", "numnames", "numtypes"}


def is_counter(name: str) -> bool:
    return name in COUNTER_NAMES or (name[:1] == "n" and name[1:].isdigit())


def describe(t: ParseType) -> str:
    """A readable name for a parse type, for hypothesis' reports."""
    if isinstance(t, Array):
        length = t.length if not callable(t.length) else f"<{t.length!r}>"
        extra = ", index_default" if t.index_default is not None else ""
        return f"Array({describe(t.element)}, {length}{extra})"
    if isinstance(t, ByteArray):
        return f"ByteArray({t.length if not callable(t.length) else f'<{t.length!r}>'})"
    if isinstance(t, Struct) and t.cls is not None and t.cls.__name__.startswith("Gen"):
        inner = ", ".join(f"{n}={describe(ft)}" for n, ft in t.fields)
        return f"Struct(attrs {t.cls.__name__}: {inner})"
    if isinstance(t, Struct) and t.cls is None:
        return f"Struct([{', '.join(f'({n!r}, {describe(ft)})' for n, ft in t.fields)}])"
    if isinstance(t, FixedString | Int | Struct):
        return repr(t)
    if isinstance(t, MessageType):
        return "NG_MESG"
    return str(getattr(t, "type_name", type(t).__name__)).upper()


def can_be_empty(t: ParseType) -> bool:
    """Whether a value of ``t`` can take no bytes at all."""
    if isinstance(t, ByteArray | Array) and not isinstance(t.length, int):
        return True
    if isinstance(t, ByteArray):
        return t.length == 0
    if isinstance(t, Array):
        return t.length == 0 or can_be_empty(t.element)
    if isinstance(t, Struct):
        return all(can_be_empty(ft) for _, ft in t.fields)
    return False


def has_inner_open(t: ParseType) -> bool:
    """Whether ``t`` holds an open-ended array anywhere but as the type itself."""

    def open_in(t: ParseType) -> bool:
        if isinstance(t, ByteArray):
            return t.length is None
        if isinstance(t, Array):
            return t.length is None or open_in(t.element)
        if isinstance(t, Struct):
            return any(open_in(ft) for _, ft in t.fields)
        return False

    if isinstance(t, Array):
        return open_in(t.element)
    return not isinstance(t, ByteArray) and open_in(t)


@attrs.frozen
class Case:
    """A parse type and a value of it."""

    ptype: ParseType
    value: Any

    def __repr__(self) -> str:
        return f"Case({describe(self.ptype)}, {self.value!r})"


# ------------------------------------------------------------------------------- types


def fixed_leaves() -> st.SearchStrategy[ParseType]:
    return st.one_of(
        st.sampled_from(
            [*INTS, STRING, NODEBUF, HOOKBUF, TYPEBUF, CMDBUF, PATHBUF, SIZEDSTRING, IPADDR, ENADDR]
        ),
        st.integers(1, 6).map(FixedString),
        st.integers(0, 6).map(ByteArray),
    )


_gen_classes = itertools.count()


@st.composite
def ptypes(draw: st.DrawFn, depth: int = 2, open_where: str = "anywhere") -> ParseType:
    """A parse type. ``open_where``: where open-ended arrays (length None) may occur:
    "anywhere", "top" (only as this type itself) or "nowhere"."""
    inner = "anywhere" if open_where == "anywhere" else "nowhere"
    kinds = ["leaf", "leaf", "canned"]
    if depth > 0:
        kinds += ["fixed_array", "dict_struct", "attrs_struct", "dict_struct"]
    if open_where != "nowhere":
        kinds += ["open"]
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(fixed_leaves())
    if kind == "canned":
        canned = (
            CANNED
            if inner == "anywhere"
            else [t for t in CANNED if getattr(t, "cls", None) is not Nest]
        )
        return draw(st.sampled_from(canned))
    if kind == "open":
        if depth == 0 or draw(st.booleans()):
            return BYTES
        # Elements of no size could not be counted back from the binary form.
        return Array(draw(ptypes(depth - 1, inner).filter(lambda e: not can_be_empty(e))), None)
    if kind == "fixed_array":
        element = draw(ptypes(depth - 1, inner))
        length = draw(st.integers(0, MAX_LEN))
        if draw(st.booleans()):
            return Array(element, length)
        # A per-index default: a drawn value for each index.
        defaults = tuple(draw(values(element)) for _ in range(length))
        return Array(element, length, index_default=defaults.__getitem__)
    members: list[tuple[str, ParseType]] = []
    for i in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 3)) == 0:
            # A counter, then an array or a byte array whose length it gives.
            counter = draw(st.sampled_from([UINT8, UINT16, UINT32, INT32, HINT64]))
            members.append((f"n{i}", counter))
            if draw(st.booleans()):
                members.append((f"f{i}", ByteArray(itemgetter(f"n{i}"))))
            else:
                members.append(
                    (f"f{i}", Array(draw(ptypes(depth - 1, inner)), itemgetter(f"n{i}")))
                )
        else:
            members.append((f"f{i}", draw(ptypes(depth - 1, inner))))
    if kind == "dict_struct":
        return Struct(members)
    cls = attrs.make_class(
        f"Gen{next(_gen_classes)}",
        {name: field(t) for name, t in members},
        frozen=True,
        kw_only=True,
    )
    return Struct(cls)


# ------------------------------------------------------------------------------ values

# Bytes a string is made of: whatever needs escaping most often, anything else too.
SPECIAL_BYTES = b"\"\\'?\t\n\r\x0b\x0c\x07\x08\x01\x1b\x7f\x80\xa0\xff 0178xX{}[]="
string_bytes = st.lists(
    st.one_of(
        st.sampled_from(list(SPECIAL_BYTES)).map(lambda b: bytes([b])),
        st.integers(1, 255).map(lambda b: bytes([b])),
        st.characters(exclude_categories=["Cs"], exclude_characters="\0").map(lambda c: c.encode()),
    ),
    max_size=12,
).map(b"".join)


def text_of(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def byte_values(size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(st.just(0), st.integers(0, 255)), min_size=size, max_size=size).map(
        bytes
    )


def int_range(t: Int) -> tuple[int, int]:
    """The values of ``t`` as Python holds them (signed flavour signed, the others unsigned)."""
    if t.flavour == "int":
        return -(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1
    return 0, (1 << t.bits) - 1


def element_is_default(t: Array, index: int, value: Any) -> bool:
    if t.index_default is not None:
        return bool(value == t.index_default(index))
    return t.element.is_default(value)


def draw_value(draw: Draw, t: ParseType, fields: dict[str, Any]) -> Any:
    """A value of ``t``; ``fields`` are the enclosing struct's fields so far (for lengths)."""
    if isinstance(t, Int):
        return draw(st.integers(*int_range(t)))
    if isinstance(t, StringType):
        return text_of(draw(string_bytes).replace(b"\0", b""))
    if isinstance(t, SizedString):
        return text_of(draw(string_bytes))
    if isinstance(t, FixedString):
        return text_of(draw(string_bytes)[: t.size - 1])
    if isinstance(t, IpAddr):
        return draw(st.one_of(st.just(IPv4Address(0)), st.ip_addresses(v=4)))
    if isinstance(t, EnAddr):
        return draw(st.binary(min_size=6, max_size=6))
    if isinstance(t, ByteArray):
        if t.length is None:
            # Open length: canonical text cannot keep trailing zeros (test_open_array_*).
            return draw(byte_values(draw(st.integers(0, 6)))).rstrip(b"\0")
        return draw(byte_values(t.length if isinstance(t.length, int) else t.length(fields)))
    if isinstance(t, Array):
        if t.length is None:
            size = draw(st.integers(0, MAX_LEN))
        elif isinstance(t.length, int):
            size = t.length
        else:
            size = t.length(fields)
        out = []
        for i in range(size):
            default = t.element_default(i)
            if default is not NO_DEFAULT and draw(st.integers(0, 2)) == 0:
                out.append(default)
            else:
                out.append(draw_value(draw, t.element, fields))
        if t.length is None:
            # Open length: trailing defaults are lost (test_open_array_*), so drop them.
            while out and element_is_default(t, len(out) - 1, out[-1]):
                out.pop()
        return tuple(out)
    if isinstance(t, Struct):
        got: dict[str, Any] = {}
        for name, ft in t.fields:
            default = ft.default()
            computed = isinstance(ft, Array | ByteArray) and callable(ft.length)
            if isinstance(ft, Int) and is_counter(name):
                got[name] = draw(st.integers(0, MAX_LEN))
            elif default is not NO_DEFAULT and not computed and draw(st.integers(0, 2)) == 0:
                got[name] = default
            else:
                got[name] = draw_value(draw, ft, got)
        return t.make(got)
    if isinstance(t, MessageType):
        u32 = st.integers(0, (1 << 32) - 1)
        return Message(
            typecookie=draw(u32),
            cmd=draw(u32),
            args=draw(byte_values(draw(st.integers(0, 5)))),
            cmdstr=text_of(draw(string_bytes)[:31]),
            flags=draw(u32),
            token=draw(u32),
            version=draw(st.integers(0, 255)),
        )
    raise AssertionError(f"no value strategy for {t!r}")


@st.composite
def values(draw: st.DrawFn, t: ParseType) -> Any:
    return draw_value(draw, t, {})


@st.composite
def cases(draw: st.DrawFn, open_where: str = "anywhere") -> Case:
    t = draw(ptypes(open_where=open_where))
    return Case(t, draw(values(t)))


def struct_cases() -> st.SearchStrategy[Case]:
    return cases().filter(lambda c: isinstance(c.ptype, Struct))


# ----------------------------------------------------------------------- round trips


def check_text(t: ParseType, v: Any) -> str:
    """parse(unparse(v)) == v, and the text is canonical; returns the text."""
    text = unparse_value(t, v)
    assert "\n" not in text  # the output is a single line (spec 3.9)
    back = parse_value(t, text)
    assert back == v
    assert unparse_value(t, back) == text  # canonical: the text of what it parses to
    if isinstance(t, Struct) and t.is_default(v):
        assert text == "{}"
    return text


def check_binary(t: ParseType, v: Any) -> None:
    data = t.to_bytes(v)
    assert t.from_bytes(data) == v
    if isinstance(t, Struct):
        assert len(data) % t.align == 0  # padded to its alignment (spec 3.7)


@PROPS
@given(cases())
def test_text_round_trip(case: Case) -> None:
    check_text(case.ptype, case.value)


@PROPS
@given(cases(open_where="top"))
def test_binary_round_trip(case: Case) -> None:
    # Open-ended arrays only at the top: inside a struct one would also swallow what follows it
    # (the struct's tail padding at least), as a C flexible array member would.
    check_binary(case.ptype, case.value)


@PROPS
@given(cases(open_where="top"))
def test_text_and_binary_agree(case: Case) -> None:
    """ascii2binary then binary2ascii gives the canonical text back."""
    t, v = case.ptype, case.value
    text = unparse_value(t, v)
    assert unparse_value(t, t.from_bytes(t.to_bytes(parse_value(t, text)))) == text


@PROPS
@given(struct_cases())
def test_all_default_struct_is_empty_braces(case: Case) -> None:
    t = case.ptype
    assert isinstance(t, Struct)
    default = t.default()
    if default is NO_DEFAULT:
        # Some field (an enaddr) has no default: then it is always written, and "{}" is refused.
        assert any(ft.default() is NO_DEFAULT for _, ft in t.fields)
        with pytest.raises(ParseError) as info:
            parse_value(t, "{}")
        assert info.value.errno == errno.EOPNOTSUPP
        return
    assert unparse_value(t, default) == "{}"
    assert parse_value(t, "{}") == default
    assert parse_value(t, " {\n\t} ") == default
    if not has_inner_open(t):  # an open-ended array inside swallows what follows it
        assert t.from_bytes(t.to_bytes(default)) == default


# -------------------------------------------------------------------- other spellings

_NAMED = {7: "a", 8: "b", 12: "f", 10: "n", 13: "r", 9: "t", 11: "v", 92: "\\", 39: "'",
          34: '"', 63: "?"}  # fmt: skip
# After a backslash these start an escape of their own; any other character stands for itself.
_ESCAPE_STARTS = set("01234567x") | {chr(c) for c in b"abfnrtv"}
_HEX = set(string.hexdigits)
_OCT = set(string.octdigits)


def blanks(draw: Draw, at_least: int = 0) -> str:
    return "".join(draw(st.lists(st.sampled_from(BLANKS), min_size=at_least, max_size=2)))


def int_text(draw: Draw, reading: int) -> str:
    """``reading`` as C's strtol reads it: decimal, hex, octal, with a sign."""
    mag = abs(reading)
    sign = "-" if reading < 0 else draw(st.sampled_from(["", "+"]))
    forms = [f"{sign}{mag}", f"{sign}0x{mag:x}", f"{sign}0X{mag:X}"]
    forms.append(f"{sign}0{mag:o}" if mag else f"{sign}00")
    return draw(st.sampled_from(forms))


def readings(t: Int, value: int) -> list[int]:
    """The integers that stand for ``value`` in ``t``: its signed and its unsigned reading."""
    out = [value]
    if value < 0:
        out.append(value + (1 << t.bits))
    elif value >= 1 << (t.bits - 1):
        out.append(value - (1 << t.bits))
    return out


def byte_escape(draw: Draw, b: int, after: str) -> str:
    """One byte as an escape, given the text that follows it (short escapes must not run on)."""
    forms = [f"\\x{b:02x}", f"\\x{b:02X}", f"\\{b:03o}"]
    if b in _NAMED:
        forms.append("\\" + _NAMED[b])
    if after[:1] not in _HEX or not after:
        forms.append(f"\\x{b:x}")
    if after[:1] not in _OCT or not after:
        forms.append(f"\\{b:o}")
    return draw(st.sampled_from(forms))


def string_text(draw: Draw, value: str, *, escape_newline: bool = False) -> str:
    """A quoted string for ``value`` with C escapes chosen at random, character by character.

    ``escape_newline``: also write a newline as a backslash and a newline (test_backslash_*).
    """
    choices: list[tuple[str, str]] = []
    for c in value:
        options = [("bytes", c)]
        if c not in '"\\':
            options.append(("literal", c))
        if c not in _ESCAPE_STARTS and (escape_newline or c != "\n"):
            options.append(("itself", c))
        choices.append(draw(st.sampled_from(options)))
    out = ""
    for how, c in reversed(choices):  # right to left: what follows an escape is known
        if how == "literal":
            out = c + out
        elif how == "itself":
            out = "\\" + c + out
        else:
            for b in reversed(c.encode("utf-8", "surrogateescape")):
                out = byte_escape(draw, b, out) + out
    return f'"{out}"'


def joined(draw: Draw, parts: list[str]) -> str:
    """Parts separated by blanks, which may be left out after a delimiter or a string."""
    out = ""
    for part in parts:
        if out:
            out += blanks(draw, 0 if out[-1] in '}]"' else 1)
        out += part
    return out


def spell(draw: Draw, t: ParseType, v: Any, fields: dict[str, Any]) -> str:
    """Any text that should parse to ``v`` (not only the canonical one)."""
    if isinstance(t, Int):
        return int_text(draw, draw(st.sampled_from(readings(t, v))))
    if isinstance(t, IpAddr):
        return ".".join(int_text(draw, draw(st.sampled_from(readings(INT8, o)))) for o in v.packed)
    if isinstance(t, EnAddr):
        octets = []
        for o in v:
            digits = draw(st.sampled_from([f"{o:x}", f"{o:02x}", f"{o:02X}", f"{o:X}"]))
            octets.append(draw(st.sampled_from(["", "0x", "0X"])) + digits)
        return ":".join(octets)
    if isinstance(t, StringType | FixedString | SizedString):
        return string_text(draw, v)
    if isinstance(t, ByteArray):
        if draw(st.booleans()):
            # As a string: zero-filled up to the length, so trailing zeros may go.
            data = v if t.length is None else v[: len(v) - draw(st.integers(0, len(v)))]
            if t.length is not None and data.rstrip(b"\0") != v.rstrip(b"\0"):
                data = v
            return string_text(draw, text_of(data))
        # As an array of hint8 (each byte in its signed or unsigned reading).
        return spell(draw, Array(HINT8, t.length if t.length is None else len(v)), tuple(v), fields)
    if isinstance(t, Array):
        entries = []
        for i, e in enumerate(v):
            last_of_open = t.length is None and i == len(v) - 1
            if element_is_default(t, i, e) and not last_of_open and draw(st.booleans()):
                continue
            entries.append((i, spell(draw, t.element, e, fields)))
        if draw(st.booleans()):
            entries = draw(st.permutations(entries))
        parts = []
        previous = -1
        for i, text in entries:
            if i != previous + 1 or text.startswith('"') or draw(st.booleans()):
                index = int_text(draw, i).lstrip("+")
                text = f"{index}{blanks(draw)}={blanks(draw)}{text}"
            parts.append(text)
            previous = i
        return f"[{blanks(draw)}{joined(draw, parts)}{blanks(draw)}]"
    if isinstance(t, Struct):
        got = {name: t.get(v, name) for name, _ in t.fields}
        parts = []
        for name, ft in t.fields:
            if ft.is_default(got[name]) and draw(st.booleans()):
                continue
            text = spell(draw, ft, got[name], got)
            parts.append(f"{name}{blanks(draw)}={blanks(draw)}{text}")
        parts = draw(st.permutations(parts))
        return f"{{{blanks(draw)}{joined(draw, parts)}{blanks(draw)}}}"
    if isinstance(t, MessageType):
        header = {
            "version": v.version, "spare": 0, "spare2": 0, "arglen": len(v.args), "cmd": v.cmd,
            "flags": v.flags, "token": v.token, "typecookie": v.typecookie, "cmdstr": v.cmdstr,
            "data": v.args,
        }  # fmt: skip
        return spell(draw, t.struct, header, fields)
    raise AssertionError(f"cannot spell {t!r}")


TRAILING = ["junk", "}", "] [ {", "= 1", '"quoted"', '"unterminated', "{ a=", "0x5 7", "\\"]


@st.composite
def spelled_cases(draw: st.DrawFn) -> tuple[Case, str]:
    case = draw(cases())
    text = blanks(draw) + spell(draw, case.ptype, case.value, {})
    if draw(st.booleans()):
        # Whatever follows a complete top-level value is ignored (spec 3.10).
        text += blanks(draw, 1) + draw(st.sampled_from(TRAILING))
    return case, text


@PROPS
@given(spelled_cases())
def test_every_spelling_parses_to_the_value(spelled: tuple[Case, str]) -> None:
    case, text = spelled
    assert parse_value(case.ptype, text) == case.value


EVERY_TYPE = [
    *INTS, STRING, NODEBUF, PATHBUF, FixedString(1), FixedString(4), SIZEDSTRING, IPADDR, ENADDR,
    BYTES, ByteArray(0), ByteArray(5), Array(UINT16, 3), Array(STRING, 2), Array(HINT64, None),
    Array(IPADDR, 2, index_default=lambda i: IPv4Address(i)), *CANNED,
]  # fmt: skip


@pytest.mark.parametrize("ptype", EVERY_TYPE, ids=describe)
@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_each_type(ptype: ParseType, data: st.DataObject) -> None:
    """Every property, type by type (the composed strategies reach some leaves rarely)."""
    value = data.draw(values(ptype))
    check_text(ptype, value)
    if not has_inner_open(ptype):  # Nest ends in an open array: its tail padding looks like more
        check_binary(ptype, value)
    text = blanks(data.draw) + spell(data.draw, ptype, value, {}) + blanks(data.draw)
    assert parse_value(ptype, text) == value


@settings(max_examples=60, deadline=None, database=None)
@given(st.sampled_from([FixedString(1), FixedString(4), HOOKBUF]), string_bytes, st.data())
def test_fixed_string_holds_size_minus_one_bytes(
    t: FixedString, data: bytes, more: st.DataObject
) -> None:
    """fixedstring(N) keeps its NUL: N bytes or more is E2BIG (spec 3.6)."""
    data = data.replace(b"\0", b"") + b"a" * t.size
    value = text_of(data[: more.draw(st.integers(t.size, len(data)))])
    assert fails(t, string_text(more.draw, value)).errno == errno.E2BIG
    with pytest.raises(ValueProblem) as info:
        t.to_bytes(value)
    assert info.value.errno == errno.E2BIG
    fits = text_of(data[: t.size - 1])
    assert parse_value(t, string_text(more.draw, fits)) == fits


def signed_bits(t: Int, reading: int) -> int:
    """What a reading is stored as: its low bits, signed for the signed flavour."""
    value = reading % (1 << t.bits)
    if t.flavour == "int" and value >= 1 << (t.bits - 1):
        value -= 1 << t.bits
    return value


@pytest.mark.parametrize("ptype", INTS, ids=repr)
def test_integer_boundaries(ptype: Int) -> None:
    """Each size reads -2^(n-1) .. 2^n-1 whatever the flavour (spec 3.6), uint64 and hint64
    their whole range (spec 10.4), and prints in its flavour: %d, %u or 0x%x."""
    bits = ptype.bits
    low, high = -(1 << (bits - 1)), (1 << bits) - 1
    for reading in (low, low + 1, -1, 0, 1, (1 << (bits - 1)) - 1, 1 << (bits - 1), high):
        value = signed_bits(ptype, reading)
        for text in (str(reading), f"{'-' if reading < 0 else ''}0x{abs(reading):x}",
                     f"{'-' if reading < 0 else ''}0{abs(reading):o}"):  # fmt: skip
            assert parse_value(ptype, text) == value, text
        printed = f"0x{value:x}" if ptype.flavour == "hint" else str(value)
        assert unparse_value(ptype, value) == printed
    for outside in (low - 1, high + 1):
        assert fails(ptype, str(outside)).errno == errno.EINVAL
        assert fails(ptype, hex(outside)).errno == errno.EINVAL


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(INTS), st.data())
def test_integer_readings(t: Int, data: st.DataObject) -> None:
    """Any value, written as either of its readings in any base, reads back."""
    value = data.draw(st.integers(*int_range(t)))
    text = int_text(data.draw, data.draw(st.sampled_from(readings(t, value))))
    assert parse_value(t, text) == value


def fails(t: ParseType, text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_value(t, text)
    return info.value


# --------------------------------------------------------------------------------- fuzz

FUZZ_CHARS = st.one_of(
    st.sampled_from(list('{}[]="\\ \t\n\r\f\v\x00=0123456789xX-+.:abnv_')),
    st.characters(exclude_categories=["Cs"]),  # lone surrogates: test_lone_surrogate_*
)
FUZZ_TYPES = [
    UINT32, INT8, HINT64, STRING, HOOKBUF, SIZEDSTRING, IPADDR, ENADDR, BYTES, ByteArray(4),
    Array(UINT16, 3), Array(STRING, None), Array(Array(HINT8, 2), 2), *CANNED,
    Struct([("n", UINT8), ("d", ByteArray(itemgetter("n"))), ("s", STRING)]),
]  # fmt: skip


def check_error(err: ParseError, text: str) -> None:
    assert isinstance(err, netgraph.NetgraphError)
    assert err.errno in PARSE_ERRNOS, err
    assert 0 <= err.pos <= len(text)
    assert 1 <= err.line <= text.count("\n") + 1
    assert err.line == text.count("\n", 0, err.pos) + 1
    assert 1 <= err.column <= err.pos + 1
    assert f"line {err.line}, column {err.column}" in str(err)
    assert err.context.endswith("^")


def parses_or_fails_cleanly(t: ParseType, text: str) -> None:
    try:
        parse_value(t, text)
    except ParseError as err:
        check_error(err, text)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(chars)))
        how = draw(st.sampled_from(["insert", "delete", "replace"]))
        if how == "insert" or not chars:
            chars.insert(at, draw(FUZZ_CHARS))
        elif how == "delete":
            del chars[min(at, len(chars) - 1)]
        else:
            chars[min(at, len(chars) - 1)] = draw(FUZZ_CHARS)
    return "".join(chars)


@FUZZ
@given(st.sampled_from(FUZZ_TYPES), st.text(FUZZ_CHARS, max_size=40))
@example(Array(UINT8, 2), "[" * 3000)
@example(Struct(Point), "{ x=" * 1000)
@example(STRING, '"\\')
@example(STRING, '"a\\"')
@example(BYTES, "\0")
@example(UINT32, "")
@example(UINT32, "9" * 5000)
@example(ByteArray(4), "[ 0x" + "f" * 40 + "=1 ]")
@example(Array(UINT8, 2), "[" * 3000 + "]" * 3000)
def test_arbitrary_text_only_raises_parse_error(t: ParseType, text: str) -> None:
    parses_or_fails_cleanly(t, text)


@FUZZ
@given(st.data())
def test_mutated_text_only_raises_parse_error(data: st.DataObject) -> None:
    case = data.draw(cases())
    text = data.draw(mutated(unparse_value(case.ptype, case.value)))
    parses_or_fails_cleanly(case.ptype, text)
    # The same text read as some other type.
    parses_or_fails_cleanly(data.draw(st.sampled_from(FUZZ_TYPES)), text)


@FUZZ
@given(st.sampled_from(FUZZ_TYPES), st.binary(max_size=80))
def test_arbitrary_bytes_only_raise_value_problem(t: ParseType, data: bytes) -> None:
    """binary2ascii of arbitrary arguments: a value or a ValueProblem, nothing else."""
    try:
        value = t.from_bytes(data)
    except ValueProblem as problem:
        code = problem.errno
    else:
        unparse_value(t, value)
        return
    assert code in PARSE_ERRNOS


# ------------------------------------------------------------------------------ grammar


def test_grammar_builds_strict() -> None:
    """No LALR conflicts and no terminal that can shadow another (lark's strict mode)."""
    parser = make_parser(strict=True)
    assert isinstance(parser, Lark)
    assert parser.options.parser == "lalr"
    for text in ['{ a=1 b="x" c=[ 1 2=[] ] d={} }', "[]", '"s" junk', "0x5"]:
        parser.parse(text)


# --------------------------------------------------------------------------- known bugs


@PROPS
@given(st.sampled_from([BYTES, Array(UINT8, None), Array(Struct(Point), None)]), st.data())
@example(BYTES, None)
def test_open_array_keeps_trailing_defaults(t: ParseType, data: st.DataObject | None) -> None:
    if data is None:
        value: Any = b"\x01\x00"
    else:
        value = data.draw(values(t))
        value += b"\0" if isinstance(value, bytes) else (t.element.default(),)  # type: ignore[attr-defined]
    assert parse_value(t, unparse_value(t, value)) == value


COUNTED = Struct([("n", UINT32), ("items", Array(UINT8, itemgetter("n")))])


@PROPS
@given(st.sampled_from([COUNTED, Struct(Counted), NG_MESG]), st.integers(1, MAX_LEN))
@example(COUNTED, 1)
def test_omitted_counted_array_takes_its_length(t: ParseType, n: int) -> None:
    name = "arglen" if t is NG_MESG else "n"
    value = parse_value(t, f"{{ {name}={n} }}")
    assert parse_value(t, unparse_value(t, value)) == value
    t.to_bytes(value)  # a consistent value: the array holds n elements
    if t is COUNTED:
        assert value == {"n": n, "items": (0,) * n}


HUGE = 1 << 20  # FreeBSD refuses anything over its 20 KiB buffer (ERANGE, spec 3.6, 3.11)


@pytest.mark.parametrize(
    ("ptype", "text"),
    [
        (BYTES, f"[ {HUGE:#x}=1 ]"),
        (Array(UINT8, None), f"[ {HUGE}=1 ]"),
        (COUNTED, f"{{ n={HUGE} items=[] }}"),
        (COUNTED, f"{{ n={HUGE} }}"),
        (NG_MESG, f'{{ arglen={HUGE} data="" }}'),
    ],
)
def test_huge_lengths_are_refused(ptype: ParseType, text: str) -> None:
    fails(ptype, text)


@FUZZ
@given(
    st.sampled_from([STRING, HOOKBUF, SIZEDSTRING, BYTES]),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
)
@example(STRING, "\ud800")
def test_lone_surrogate_in_string_is_a_parse_error(t: ParseType, inside: str) -> None:
    parses_or_fails_cleanly(t, f'"{inside}"')


@PROPS
@given(st.data())
@example(None)
def test_backslash_escapes_any_character(data: st.DataObject | None) -> None:
    if data is None:
        value, text = "\n", '"\\\n"'
    else:
        value = text_of(data.draw(string_bytes).replace(b"\0", b""))
        text = string_text(data.draw, value, escape_newline=True)
    assert parse_value(STRING, text) == value


@pytest.mark.timeout(1)
@pytest.mark.parametrize(
    "ptype",
    [Array(ByteArray(0), None), Struct([("a", Array(Struct([]), None)), ("b", UINT8)])],
)
def test_open_array_of_empty_elements_terminates(ptype: ParseType) -> None:
    with contextlib.suppress(ValueProblem):  # a value or a ValueProblem, within the second
        ptype.from_bytes(b"\0")


C_INTEGER = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", re.ASCII)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(st.sampled_from(list("0123456789abfxX+-_.\xa0\u0663")), min_size=1, max_size=6))
@example("1_0")
def test_integers_are_c_integers(word: str) -> None:
    if C_INTEGER.fullmatch(word):
        assert parse_value(INT64, word) == int(
            word, 16 if "x" in word.lower() else 8 if re.fullmatch(r"[+-]?0\d+", word) else 10
        )
    else:
        assert fails(INT64, word).errno == errno.EINVAL
