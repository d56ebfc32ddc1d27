"""Addresses, node IDs and names as text (spec 1.2, 1.3, 1.5, 10.6)."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netgraph import NetgraphError
from netgraph.path import Address, check_hook_name, check_node_name, decode_id, format_id, parse


@pytest.mark.parametrize(
    ("text", "value"),
    [("[1f]", 0x1F), ("[1F]", 0x1F), ("[0x1f]", 0x1F), ("[3]", 3), ("[ffffffff]", 0xFFFFFFFF)],
)
def test_decode_id_accepts_freebsd_forms(text: str, value: int) -> None:
    assert decode_id(text) == value


@pytest.mark.parametrize("text", ["[0]", "[]", "[x1]", "1f", "[1f", "1f]", "[1g]", "[0x]", "[-1]"])
def test_decode_id_rejects(text: str) -> None:
    assert decode_id(text) is None


@given(st.integers(1, 2**32 - 1))
def test_format_id_round_trips(node_id: int) -> None:
    text = format_id(node_id)
    assert text == f"[{node_id:x}]:"
    assert decode_id(text[:-1]) == node_id


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (".", Address(None, ())),
        (".:", Address(".", ())),
        ("foo:", Address("foo", ())),
        ("[3f]:", Address("[3f]", ())),
        ("[0x1f]:", Address("[0x1f]", ())),
        (".:hook1", Address(".", ("hook1",))),
        ("hook1", Address(None, ("hook1",))),
        ("hook1.hook2", Address(None, ("hook1", "hook2"))),
        ("foo:hook1.hook2", Address("foo", ("hook1", "hook2"))),
        ("[d80]:hook1", Address("[d80]", ("hook1",))),
        (".path_1", Address(None, ("path_1",))),
        ("foo:.", Address("foo", ())),
        ("foo:hook.", Address("foo", ("hook",))),
        ("test hub:", Address("test hub", ())),
    ],
)
def test_parse_every_form(text: str, address: Address) -> None:
    assert parse(text) == address


@pytest.mark.parametrize("text", [":foo", "a.b:c", "foo:a:b", "a..b", "foo:a..b", "x" * 512])
def test_parse_malformed_is_einval(text: str) -> None:
    with pytest.raises(NetgraphError) as info:
        parse(text)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("name", ["", "a.b", "a:b", "[1f]", "[0x2]", "x" * 32])
def test_bad_node_names(name: str) -> None:
    with pytest.raises(NetgraphError) as info:
        check_node_name(name)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("name", ["test hub", "a/b", "[0]", "x" * 31, "[zz]"])
def test_good_node_names(name: str) -> None:
    check_node_name(name)


@pytest.mark.parametrize("name", ["", "a.b", "a:b", "h" * 32])
def test_bad_hook_names(name: str) -> None:
    with pytest.raises(NetgraphError) as info:
        check_hook_name(name)
    assert info.value.errno == errno.EINVAL


@given(st.text(min_size=1, max_size=40))
def test_parse_never_raises_anything_else(text: str) -> None:
    code = errno.EINVAL
    try:
        parse(text)
    except NetgraphError as err:
        code = err.errno or 0
    assert code == errno.EINVAL


def test_error_text_names_errno_and_detail() -> None:
    err = NetgraphError(errno.ENOENT, "no node 'x:'")
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOENT
    assert err.strerror == "No such file or directory"
    assert str(err) == "No such file or directory (ENOENT): no node 'x:'"
