"""The ASCII form, case by case: spec 3, the value-level cases of spec 8, one test per errno."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address
from typing import Any

import attrs
import pytest

import netgraph
from netgraph.ascii import ParseError, line_to_message, message_to_text, parse_value, unparse_value
from netgraph.message import (
    GENERIC_COOKIE,
    NGM_LISTHOOKS,
    HookList,
    LinkInfo,
    Message,
    NodeInfo,
    RmHookArgs,
    TypeInfo,
    TypeList,
)
from netgraph.parse import (
    BYTES,
    ENADDR,
    HINT8,
    HINT32,
    HINT64,
    HOOKBUF,
    INT8,
    INT32,
    INT64,
    IPADDR,
    STRING,
    UINT8,
    UINT32,
    UINT64,
    Array,
    ByteArray,
    ParseType,
    Struct,
    field,
)
from nodes.one2many import One2ManyConfig, One2ManyNode


def fails(ptype: ParseType, text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_value(ptype, text)
    return info.value


# ---------------------------------------------------------------------------------- integers


@pytest.mark.parametrize(
    ("ptype", "text", "value"),
    [
        (INT32, "010", 8),
        (INT32, "0x1f", 31),
        (INT32, "0X1F", 31),
        (INT32, "-5", -5),
        (INT32, "+7", 7),
        (INT32, "0", 0),
        (UINT32, "-1", 0xFFFFFFFF),
        (INT8, "255", -1),
        (INT8, "-128", -128),
        (UINT8, "-1", 255),
        (HINT8, "200", 200),
        (INT32, "4294967295", -1),
        (UINT64, "18446744073709551615", 2**64 - 1),
        (HINT64, "0xffffffffffffffff", 2**64 - 1),
        (INT64, "-9223372036854775808", -(2**63)),
    ],
)
def test_c_integers(ptype: ParseType, text: str, value: int) -> None:
    assert parse_value(ptype, text) == value


@pytest.mark.parametrize(
    ("ptype", "text"),
    [(INT8, "256"), (INT8, "-129"), (INT32, "4294967296"), (UINT64, "18446744073709551616"),
     (INT32, "12abc"), (INT32, "08"), (INT32, "0x"), (INT32, "-"), (INT32, "abc")],
)  # fmt: skip
def test_bad_integers_are_einval(ptype: ParseType, text: str) -> None:
    assert fails(ptype, text).errno == errno.EINVAL


@pytest.mark.parametrize(
    ("ptype", "value", "text"),
    [(INT32, -1, "-1"), (UINT32, 4294967295, "4294967295"), (HINT32, 31, "0x1f"),
     (HINT32, 0, "0x0"), (HINT64, 2**64 - 1, "0xffffffffffffffff"),
     (UINT64, 2**63, "9223372036854775808")],
)  # fmt: skip
def test_integer_output_by_flavour(ptype: ParseType, value: int, text: str) -> None:
    assert unparse_value(ptype, value) == text
    assert parse_value(ptype, text) == value


# ----------------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'"plain"', "plain"),
        (r'"tab\there"', "tab\there"),
        (r'"\x41B"', "AB"),  # at most two hex digits (FreeBSD would read one byte, 0x1b)
        (r'"\1012"', "A2"),  # at most three octal digits
        (r'"\101"', "A"),
        (r'"\0411"', "!1"),
        (r'"q\"uote"', 'q"uote'),
        (r'"back\\slash"', "back\\slash"),
        (r'"\a\b\v\f\r\n"', "\a\b\v\f\r\n"),
        (r'"\q"', "q"),  # an unknown escape is the character itself
        (r'"\xff"', "\udcff"),  # a byte that is not UTF-8 survives
        ('"caf\u00e9"', "caf\u00e9"),
        ('""', ""),
    ],
)
def test_string_escapes_follow_c(text: str, value: str) -> None:
    assert parse_value(STRING, text) == value
    assert parse_value(STRING, unparse_value(STRING, value)) == value


def test_string_output_escapes() -> None:
    assert unparse_value(STRING, 'a"b\\c\td\x01\x7f') == r'"a\"b\\c\td\x01\x7f"'
    assert unparse_value(STRING, "caf\u00e9") == r'"caf\xc3\xa9"'


def test_escapes_work_inside_structs_and_arrays() -> None:
    """FreeBSD miscounts the length of \\\\, unknown and \\x escapes inside composites (spec 3.4);
    here they work everywhere."""
    pair = Struct([("a", STRING), ("b", Array(STRING, 2))])
    value = parse_value(pair, r'{ a="x\\y\x41\q" b=[ 0="\x42" 1="\\" ] }')
    assert value == {"a": "x\\yAq", "b": ("B", "\\")}
    assert parse_value(pair, unparse_value(pair, value)) == value


def test_string_needs_quotes_and_no_nul() -> None:
    assert fails(STRING, "bare").errno == errno.EINVAL
    assert fails(STRING, r'"a\0b"').errno == errno.EINVAL


def test_unterminated_string_is_einval_with_position() -> None:
    err = fails(STRING, '"never closed')
    assert (err.errno, err.line, err.column) == (errno.EINVAL, 1, 1)
    assert "unterminated" in str(err)


def test_fixedstring_too_long_is_e2big() -> None:
    assert parse_value(HOOKBUF, '"' + "h" * 31 + '"') == "h" * 31
    assert fails(HOOKBUF, '"' + "h" * 32 + '"').errno == errno.E2BIG


# ------------------------------------------------------------------ addresses and bytearrays


@pytest.mark.parametrize(
    ("text", "addr"),
    [("1.2.3.4", "1.2.3.4"), ("010.0.0.1", "8.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
     ("-1.0.0.0", "255.0.0.0")],
)  # fmt: skip
def test_ipaddr(text: str, addr: str) -> None:
    assert parse_value(IPADDR, text) == IPv4Address(addr)
    assert unparse_value(IPADDR, IPv4Address(addr)) == addr


@pytest.mark.parametrize("text", ["1.2.3", "1.2.3.4.5", "1.2.3.256", "a.b.c.d"])
def test_bad_ipaddr(text: str) -> None:
    assert fails(IPADDR, text).errno == errno.EINVAL


def test_enaddr() -> None:
    assert parse_value(ENADDR, "0:1:22:aB:0xcd:ff") == bytes([0, 1, 0x22, 0xAB, 0xCD, 0xFF])
    assert unparse_value(ENADDR, bytes([0, 1, 0x22, 0xAB, 0xCD, 0xFF])) == "00:01:22:ab:cd:ff"
    assert fails(ENADDR, "00:11:22:33:44").errno == errno.EINVAL
    assert fails(ENADDR, "00:11:22:33:44:100").errno == errno.EINVAL


def test_enaddr_has_no_default() -> None:
    with_mac = Struct([("hookname", HOOKBUF), ("ether", ENADDR)])
    assert fails(with_mac, '{ hookname="out0" }').errno == errno.EOPNOTSUPP
    value = parse_value(with_mac, '{ hookname="out0" ether=00:00:00:00:00:01 }')
    assert unparse_value(with_mac, value) == '{ hookname="out0" ether=00:00:00:00:00:01 }'
    # A type without a default is always printed, even all zero.
    zero = {"hookname": "", "ether": bytes(6)}
    assert unparse_value(with_mac, zero) == "{ ether=00:00:00:00:00:00 }"


def test_bytearray_forms() -> None:
    five = ByteArray(5)
    assert parse_value(five, "[ 0x2 3=0x5 ]") == bytes([2, 0, 0, 5, 0])
    assert parse_value(five, '"ab"') == b"ab\0\0\0"
    assert unparse_value(five, bytes([0, 0, 5, 0, 1])) == "[ 2=0x5 4=0x1 ]"
    assert unparse_value(five, bytes(5)) == "[]"
    assert fails(five, '"abcdef"').errno == errno.E2BIG
    assert parse_value(BYTES, "[ 1 0x2 -1 ]") == bytes([1, 2, 255])


# ------------------------------------------------------------------- structs and arrays


@attrs.frozen
class Demo:
    """ng_parse.h's example: ``{ ip=1.2.3.4 label="abc\\n" alen=3 ary=[ 5 2=10 ] }``."""

    ip: IPv4Address = field(IPADDR)
    bar: int = field(INT32)
    label: str = field(STRING)
    alen: int = field(UINT8)
    ary: tuple[int, ...] = field(Array(INT32, lambda f: f["alen"]))


DEMO = Struct(Demo)


def test_ng_parse_h_example() -> None:
    value = parse_value(DEMO, '{ ip=1.2.3.4 label="abc\\n" alen=3 ary=[ 5 2=10 ] }')
    assert value == Demo(IPv4Address("1.2.3.4"), 0, "abc\n", 3, (5, 0, 10))
    assert unparse_value(DEMO, value) == '{ ip=1.2.3.4 label="abc\\n" alen=3 ary=[ 5 2=10 ] }'


def test_field_order_is_free_on_input_declared_on_output() -> None:
    value = parse_value(DEMO, "{ ary=[ 1 ] alen=1 ip=0.0.0.1 }")
    assert unparse_value(DEMO, value) == "{ ip=0.0.0.1 alen=1 ary=[ 1 ] }"


def test_all_default_struct_prints_braces() -> None:
    assert unparse_value(DEMO, parse_value(DEMO, "{}")) == "{}"
    assert parse_value(DEMO, "{a=1}".replace("a", "bar")).bar == 1  # no blanks needed


@pytest.mark.parametrize(
    ("text", "value"),
    [("[ 5 2=10 ]", (5, 0, 10, 0)), ("[ 010=1 ]", None), ("[ 0x2=7 ]", (0, 0, 7, 0)),
     ("[ 3=1 0=2 9 ]", (2, 9, 0, 1)), ("[1 2]", (1, 2, 0, 0)), ("[ 2=1 3 ]", (0, 0, 1, 3))],
)  # fmt: skip
def test_array_indexes(text: str, value: tuple[int, ...] | None) -> None:
    four = Array(INT32, 4)
    if value is None:  # 010= is index 8: past the end
        assert fails(four, text).errno == errno.E2BIG
    else:
        assert parse_value(four, text) == value


def test_index_010_is_eight() -> None:
    assert parse_value(Array(INT32, 9), "[ 010=1 ]") == (0,) * 8 + (1,)


def test_one_errno_each() -> None:
    """EINVAL, ENOENT, EALREADY, E2BIG, EOPNOTSUPP here; ENOSYS at the message level below."""
    assert fails(DEMO, "{ bar= }").errno == errno.EINVAL
    assert fails(DEMO, "{ bar 1 }").errno == errno.EINVAL
    assert fails(DEMO, "{ nope=1 }").errno == errno.ENOENT
    assert fails(DEMO, "{ bar=1 bar=2 }").errno == errno.EALREADY
    assert fails(Array(INT32, 2), "[ 0=1 0=2 ]").errno == errno.EALREADY
    assert fails(Array(INT32, 1), "[ 1 1 ]").errno == errno.E2BIG
    assert fails(Struct([("mac", ENADDR)]), "{}").errno == errno.EOPNOTSUPP
    assert fails(Array(STRING, 2), '[ "a" "b" ]').errno == errno.EINVAL
    assert fails(Array(INT32, 2), "[ x=1 ]").errno == errno.EINVAL


def test_trailing_text_after_a_complete_value_is_ignored() -> None:
    assert parse_value(INT32, "5 junk") == 5
    assert parse_value(DEMO, '{ bar=1 } extra ] } "unterminated').bar == 1


def test_missing_argument_is_einval() -> None:
    assert fails(INT32, "").errno == errno.EINVAL
    assert fails(DEMO, "   ").errno == errno.EINVAL


# -------------------------------------------------------------------------- error messages


def test_typo_in_a_field_name_names_field_and_column() -> None:
    err = fails(Struct(RmHookArgs), "{ hok=1 }")
    assert err.errno == errno.ENOENT
    assert (err.line, err.column) == (1, 3)
    assert "'hok'" in str(err)
    assert "hook" in str(err)
    assert err.context == "{ hok=1 }\n  ^"


def test_missing_bracket_names_token_and_column() -> None:
    err = fails(Struct(One2ManyConfig), "{ xmitAlg=3 enabledLinks=[ 1 1 }")
    assert err.errno == errno.EINVAL
    assert err.column == 32
    assert "'}'" in str(err)
    assert "']'" in str(err)


def test_errors_report_the_line_on_multi_line_text() -> None:
    err = fails(DEMO, "{\n  ip=1.2.3.4\n  bar=zz\n}")
    assert (err.line, err.column) == (3, 7)
    assert err.context == "  bar=zz\n      ^"


def test_whole_line_errors_point_into_the_line() -> None:
    with pytest.raises(ParseError) as info:
        line_to_message(One2ManyNode, "setconfig  { xmitAlg=3 nope=1 }")
    assert (info.value.errno, info.value.column) == (errno.ENOENT, 24)
    with pytest.raises(ParseError) as info:
        line_to_message(One2ManyNode, "  nosuchcmd { }")
    assert (info.value.errno, info.value.column) == (errno.ENOSYS, 3)


def test_sockopt_data_field_hint() -> None:
    sockopt = Struct([("level", INT32), ("name", INT32), ("value", BYTES)])
    err = fails(sockopt, "{ level=1 name=2 data=[ 1 ] }")
    assert err.errno == errno.ENOENT
    assert "value" in str(err)


# ------------------------------------------------------------------------- custom types


class Local(ParseType):
    """A toy custom type that reads its own top-level text: ``local/"path"``."""

    type_name = "local"

    def parse_top(self, text: str) -> Any | None:
        if not text.startswith("local/"):
            return None
        return parse_value(STRING, text[len("local/") :])

    def unparse(self, value: str) -> str:
        return "local/" + unparse_value(STRING, value)


def test_custom_top_level_forms() -> None:
    assert parse_value(Local(), 'local/"/tmp/x y"') == "/tmp/x y"
    assert unparse_value(Local(), "/tmp/x") == 'local/"/tmp/x"'


# ----------------------------------------------------------------------------- messages


def test_generic_ascii_forms_match_freebsd() -> None:
    hooks = HookList(
        NodeInfo("", "ksocket", 9, 1),
        (LinkInfo("local/stream/0", "bar", NodeInfo("ngctl1327", "socket", 8, 1)),),
    )
    reply = Message(GENERIC_COOKIE, NGM_LISTHOOKS, hooks, "listhooks", 1)
    assert message_to_text(netgraph.Node, reply) == (
        "listhooks",
        '{ nodeinfo={ type="ksocket" id=0x9 hooks=1 } linkinfo=[ { ourhook="local/stream/0" '
        'peerhook="bar" nodeinfo={ name="ngctl1327" type="socket" id=0x8 hooks=1 } } ] }',
    )
    types = TypeList.of((TypeInfo("socket", 1), TypeInfo("hole", 0)))
    listtypes = Message(GENERIC_COOKIE, 0x3000000A, types, "listtypes", 1)
    assert message_to_text(netgraph.Node, listtypes)[1] == (
        '{ numtypes=2 typeinfo=[ { typename="socket" numnodes=1 } { typename="hole" } ] }'
    )
    rmhook = line_to_message(netgraph.Node, 'rmhook { hook="h" }')
    assert rmhook.args == RmHookArgs("h")
    # A command without arguments ignores the text it is given.
    assert line_to_message(netgraph.Node, "nodeinfo foo bar").args is None


def test_binary_layout_of_generic_replies() -> None:
    info = NodeInfo("foo", "ksocket", 9, 1)
    data = Struct(NodeInfo).to_bytes(info)
    assert len(data) == 72
    assert data[:4] == b"foo\0"
    assert data[64:] == (9).to_bytes(4, "little") + (1).to_bytes(4, "little")
    assert len(Struct(LinkInfo).to_bytes(LinkInfo("a", "b", info))) == 136
    assert len(Struct(TypeInfo).to_bytes(TypeInfo("hub", 2))) == 36
    assert Struct(NodeInfo).from_bytes(data) == info


async def test_send_and_receive_as_text(sock: netgraph.Socket) -> None:
    await sock.send_ascii(".", 'mkpeer { type="one2many" ourhook="m" peerhook="one" }')
    await sock.send_ascii("m", "setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 ] }")
    reply, text = await sock.request_ascii("m", "getconfig")
    assert (reply.cmdstr, text) == ("getconfig", "{ xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 ] }")
    _, text = await sock.request_ascii(".", "nodeinfo")
    assert text == f'{{ name="sock" type="socket" id=0x{sock.id:x} hooks=1 }}'
    _, text = await sock.request_ascii("m", "nodeinfo")  # generic messages work on any node
    assert text == '{ type="one2many" id=0x2 hooks=1 }'
    # NgRecvAsciiMsg: an unsolicited message, converted by its sender.
    await sock.mkpeer(".", "echo", "e", "x")
    await sock.send_ascii("e", "nodeinfo")  # echo... no: generic messages never reach echo
    path, msg, text = await sock.recv_ascii()
    assert (msg.cmdstr, text) == ("nodeinfo", '{ type="echo" id=0x3 hooks=1 }')
    assert path == "[3]:"


async def test_text_errors_from_a_node(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "one2many", "m", "one")
    with pytest.raises(ParseError) as info:
        await sock.send_ascii("m", "setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 }")
    assert info.value.column == 52
    with pytest.raises(netgraph.NetgraphError) as nosys:
        await sock.send_ascii("m", "nosuch")
    assert nosys.value.errno == errno.ENOSYS
    with pytest.raises(netgraph.NetgraphError) as nosys:
        await sock.send_ascii(".", "nolinger")  # the socket node has no ASCII cmdlist
    assert nosys.value.errno == errno.ENOSYS


async def test_node_types_ascii_forms(sock: netgraph.Socket) -> None:
    await sock.send_ascii(".", 'mkpeer { type="tee" ourhook="t" peerhook="right" }')
    await sock.send_ascii("t", 'mkpeer { type="hole" ourhook="left" peerhook="in" }')
    await sock.send_data("t", b"12345")
    _, text = await sock.request_ascii("t", "getstats")
    assert text == "{ right={ inOctets=5 inFrames=1 } left={ outOctets=5 outFrames=1 } }"
    _, text = await sock.request_ascii("t.left", 'getclrstats "in"')
    assert text == "{ frames=1 octets=5 }"
    _, text = await sock.request_ascii("t.left", 'getstats "in"')
    assert text == "{}"
    await sock.send_ascii(".", 'mkpeer { type="hub" ourhook="h" peerhook="x" }')
    await sock.send_ascii("h", "setpersistent")
    await sock.rmhook(".", "h")
    _, text = await sock.request_ascii("[4]:", "nodeinfo")
    assert text == '{ type="hub" id=0x4 }'
    await sock.send_ascii(".", 'mkpeer { type="one2many" ourhook="m" peerhook="many3" }')
    _, text = await sock.request_ascii("m", "getstats 3")
    assert text == "{}"
    _, text = await sock.request_ascii("m", "getconfig")
    assert text == "{ xmitAlg=1 failAlg=1 enabledLinks=[ 3=1 ] }"
    await sock.send_ascii(".", 'mkpeer { type="echo" ourhook="e" peerhook="x" }')
    _, text = await sock.request_ascii("e", "nodeinfo")
    assert text == '{ type="echo" id=0x6 hooks=1 }'
