"""Graph files (docs/graph-file.md): parsing with positions, applying all or nothing, saving;
``ngctl load`` / ``save``; ``python -m netgraph run`` and ``serve FILE``; the JSON schema."""

from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed
import pytest
import trio
import yaml

import netgraph
import netgraph.cmdlist
from netgraph import Cmd, Hook, Message, NetgraphError, Node, TypeRegistry
from netgraph import graphfile as gf
from netgraph.daemon import Daemon, serve
from netgraph.graphfile import GraphFileError
from netgraph.parse import INT32
from netgraph.remote import connect
from ngctl.commands import LookupProblem, Session, Status, lookup
from ngctl.main import EX_OSERR
from tests.conftest import Capture, Recorder

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "graph-file.md"
SCHEMA = ROOT / "docs" / "graph-file.schema.json"
EX_DATAERR = 65


# --------------------------------------------------------------------------------- helpers


def at(source: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """Line and column (from 1) of the ``nth`` occurrence of ``needle`` in ``source``."""
    index = -1
    for _ in range(nth):
        index = source.index(needle, index + 1)
    before = source[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def parse_error(source: str, filename: str = "f.yaml") -> GraphFileError:
    with pytest.raises(GraphFileError) as info:
        gf.parse(source, filename)
    return info.value


async def apply_error(sock: Any, source: str, filename: str = "f.yaml") -> GraphFileError:
    with pytest.raises(GraphFileError) as info:
        await gf.apply(sock, gf.parse(source, filename))
    return info.value


def where(err: GraphFileError) -> tuple[int, int]:
    return err.line, err.column


async def snapshot(sock: Any) -> tuple[Any, ...]:
    """Everything about the graph's structure, IDs included: nodes, links, names."""
    nodes = (await sock.listnodes()).nodeinfo
    links = {
        n.id: sorted(
            (li.ourhook, li.peerhook, li.nodeinfo.id)
            for li in (await sock.listhooks(f"[{n.id:x}]:")).linkinfo
        )
        for n in nodes
    }
    names = sorted(n.name for n in (await sock.listnames()).nodeinfo)
    return sorted((n.name, n.type, n.id, n.hooks) for n in nodes), links, names


async def shape(sock: Any) -> tuple[Any, ...]:
    """The graph without its socket nodes, modulo IDs: nodes (name, type, hooks) and links
    (name or <type> and hook at each end)."""
    nodes = [n for n in (await sock.listnodes()).nodeinfo if n.type != "socket"]

    def key(info: Any) -> str:
        return str(info.name or f"<{info.type}>")

    links = set()
    for n in nodes:
        for li in (await sock.listhooks(f"[{n.id:x}]:")).linkinfo:
            if li.nodeinfo.type != "socket":
                links.add(tuple(sorted([(key(n), li.ourhook), (key(li.nodeinfo), li.peerhook)])))
    return sorted((n.name, n.type, n.hooks) for n in nodes), sorted(links)


def write(tmp_path: Path, text: str, name: str = "graph.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------- node types of these tests

DIAL_COOKIE = 1790000001
QUIET_COOKIE = 1790000002


class Dial(Node):
    """A plugin type: remembers every message it gets; ``stall`` never gets its reply."""

    typecookie = DIAL_COOKIE
    cmdlist = (
        Cmd(DIAL_COOKIE, 1, "setlevel", INT32, INT32, "Set the level (replies with it)"),
        Cmd(DIAL_COOKIE, 2, "getlevel", None, INT32, "The level", restore="setlevel"),
        Cmd(DIAL_COOKIE, 3, "stall", None, INT32, "A reply that never comes"),
    )

    def constructor(self) -> None:
        self.level = 0
        self.log: list[tuple[int, Any]] = []

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        if msg.typecookie != DIAL_COOKIE:
            return super().rcvmsg(msg, retaddr, lasthook)
        self.log.append((msg.cmd, msg.args))
        if msg.cmd == 1:
            self.level = msg.args
        return None if msg.cmd == 3 else self.level


class Quiet(Node):
    """A plugin type whose setter has no reply, as most setters."""

    typecookie = QUIET_COOKIE
    cmdlist = (Cmd(QUIET_COOKIE, 1, "set", INT32, None, "Set a value (no reply)"),)

    def constructor(self) -> None:
        self.value: int | None = None

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        if msg.typecookie != QUIET_COOKIE:
            return super().rcvmsg(msg, retaddr, lasthook)
        self.value = msg.args
        return None


class Grumpy(Node):
    """A node type whose constructor refuses, as an iface does without CAP_NET_ADMIN."""

    def constructor(self) -> None:
        raise NetgraphError(errno.EPERM, "grumpy needs a capability")


def plugin_types() -> TypeRegistry:
    types = TypeRegistry()
    types.register("test_recorder", Recorder)
    types.register("dial", Dial)
    types.register("quiet", Quiet)
    types.register("grumpy", Grumpy)
    return types


@pytest.fixture
async def pgraph() -> AsyncIterator[netgraph.Graph]:
    async with netgraph.open_graph(types=plugin_types()) as g:
        yield g


@pytest.fixture
def psock(pgraph: netgraph.Graph) -> netgraph.Socket:
    return pgraph.socket("psock")


# ------------------------------------------------------------------------------ round trip

ROUND = """\
# Everything the format has: named and labelled nodes, the two ways to link, messages.
version: 1
nodes:
  - {name: tap, type: tee}
  - {name: sink, type: hole}
  - {label: spare, type: hole}
  - {name: mux, type: one2many}
  - {name: hub, type: hub}
  - name: udp
    type: ksocket
    peer: tap:left
    hook: inet/dgram/udp
links:
  - tap:right sink:in
  - [tap:left2right, spare:in]
  - mux:one hub:up
  - mux:many2 hub:m2
  - mux:many5 hub:m5
messages:
  - mux: setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 0 0 1 0 0 1 ] }
  - hub: setpersistent
  - udp: bind inet/127.0.0.1:0
"""


async def test_round_trip_text_and_structure(sock: netgraph.Socket, tmp_path: Path) -> None:
    infos = await gf.load(sock, str(write(tmp_path, ROUND)))
    assert [(i.name, i.type) for i in infos] == [
        ("tap", "tee"), ("sink", "hole"), ("", "hole"), ("mux", "one2many"), ("hub", "hub"),
        ("udp", "ksocket"),
    ]  # fmt: skip
    first = await gf.save(sock)
    original = await shape(sock)
    spec = gf.parse(first, "saved")
    refs = {n.ref: n for n in spec.nodes}
    assert "sock" not in refs  # the socket node (a client) is not saved
    assert refs["udp"].peer == ("tap", "left")  # a ksocket is born linked
    assert refs["udp"].hook == "inet/dgram/udp"
    assert [n.named for n in spec.nodes].count(False) == 1  # the unnamed hole has a label
    async with netgraph.open_graph() as other:
        other_sock = other.socket("other")
        await gf.load(other_sock, str(write(tmp_path, first, "saved.yaml")))
        assert await shape(other_sock) == original
        second = await gf.save(other_sock)
    assert second == first


async def test_round_trip_keeps_one2many_config(sock: netgraph.Socket, tmp_path: Path) -> None:
    """docs: one2many's getconfig is a getter with ``restore`` (setconfig)."""
    await gf.load(sock, str(write(tmp_path, ROUND)))
    config = (await sock.request_ascii("mux:", "getconfig"))[1]
    assert config == "{ xmitAlg=3 failAlg=1 enabledLinks=[ 2=1 5=1 ] }"
    saved = await gf.save(sock)
    assert f"mux: 'setconfig {config}'" in saved
    async with netgraph.open_graph() as other:
        other_sock = other.socket("other")
        await gf.load(other_sock, str(write(tmp_path, saved, "saved.yaml")))
        assert (await other_sock.request_ascii("mux:", "getconfig"))[1] == config


@pytest.mark.parametrize(
    "source",
    [
        # Two nodes linked only to each other: which one is born linked must not flip.
        "version: 1\nnodes:\n  - {name: x, type: hole}\n  - {name: y, type: hole}\n"
        "links:\n  - x:a y:b\n",
        # An unnamed node made before its unnamed peer: labels must follow the file's order.
        "version: 1\nnodes:\n  - {label: x, type: hole}\n  - {label: p, type: hub}\n"
        "  - {name: q, type: hole}\n  - {name: r, type: hole}\n"
        "links:\n  - p:a x:in\n  - p:b q:in\n  - p:c r:in\n",
        # A node with several links: they are written in the order they were made.
        "version: 1\nnodes:\n  - {name: h, type: hub}\n  - {name: g, type: hub}\n"
        "links:\n  - h:a g:a\n  - h:b g:b\n  - g:c h:c\n",
    ],
    ids=["pair", "labels", "link-order"],
)
async def test_saving_a_loaded_save_gives_the_same_text(source: str) -> None:
    """docs: "Loading a saved file into a new graph and saving again gives the same text"."""
    texts: list[str] = []
    for text in (source, None, None):
        async with netgraph.open_graph() as g:
            s = g.socket("s")
            await gf.apply(s, gf.parse(text or texts[-1], "f.yaml"))
            texts.append(await gf.save(s))
    assert texts[0] == texts[1] == texts[2]


@pytest.mark.parametrize("installed", [True, False], ids=["entry-point", "registered"])
async def test_save_writes_a_plugin_types_configuration(
    psock: netgraph.Socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: bool
) -> None:
    """A plugin type's getter with ``restore`` is saved as its setter, whether the type is
    installed (an entry point, as here pretended) or registered with the graph's registry."""
    if installed:
        monkeypatch.setattr(netgraph.cmdlist, "_installed", plugin_types())
    source = "version: 1\nnodes:\n  - {name: d, type: dial}\nmessages:\n  - d: setlevel 42\n"
    await gf.load(psock, str(write(tmp_path, source)))
    saved = await gf.save(psock)
    assert "- {d: setlevel 42}" in saved.splitlines()
    async with netgraph.open_graph(types=plugin_types()) as other:
        other_sock = other.socket("other")
        await gf.load(other_sock, str(write(tmp_path, saved, "saved.yaml")))
        node = other.names["d"]
        assert isinstance(node, Dial)
        assert node.level == 42


# ------------------------------------------------------------------------ the error table


def test_bad_yaml_at_the_parser_stop() -> None:
    source = "version: 1\nnodes:\n  - {name: a, type: hub]\n"
    err = parse_error(source)
    assert (err.errno, where(err)) == (errno.EINVAL, at(source, "]"))
    assert err.reason.startswith("YAML: ")
    assert str(err) == f"f.yaml:3:24: {err.reason} (EINVAL)"


def test_a_character_yaml_refuses_is_placed() -> None:
    source = "version: 1\nnodes: [\x00]\n"
    err = parse_error(source)
    assert (err.errno, where(err)) == (errno.EINVAL, (2, 9))
    assert "\n" not in str(err)


async def test_not_utf8(sock: netgraph.Socket, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nnodes:\n  - {name: a\xff, type: hub}\n")
    with pytest.raises(GraphFileError) as info:
        await gf.load(sock, str(path))
    err = info.value
    assert (err.errno, err.filename, where(err)) == (errno.EILSEQ, str(path), (3, 13))
    assert str(err).endswith(": not UTF-8 text (EILSEQ)")
    path.write_bytes(b"version: 1\nnodes:\n  - {name: caf\xc3\xa9\xff, type: hub}\n")
    with pytest.raises(GraphFileError) as info:
        await gf.load(sock, str(path))
    assert where(info.value) == (3, 16)  # in characters, as YAML counts: "é" is one
    assert info.value.context.splitlines()[1] == " " * 15 + "^"


async def test_missing_file(sock: netgraph.Socket, tmp_path: Path) -> None:
    with pytest.raises(GraphFileError) as info:
        await gf.load(sock, str(tmp_path / "nope.yaml"))
    assert (info.value.errno, where(info.value)) == (errno.ENOENT, (1, 1))


@pytest.mark.parametrize(
    ("source", "needle", "code", "reason"),
    [
        ("nodes: []\n", "nodes", errno.EINVAL, "'version: 1' is missing"),
        ("# a comment first\n\nnodes: []\n", "nodes", errno.EINVAL, "'version: 1' is missing"),
        ('version: "2"\n', '"2"', errno.EINVAL, "version '2' is not supported"),
        ("version: 1.0\n", "1.0", errno.EINVAL, "version '1.0' is not supported"),
        ("version: 01\n", "01", errno.EINVAL, "version '01' is not supported"),
        ("version: !!int 1\n", "!!int", errno.EINVAL, "YAML tags are not used"),
        ("version: 1\nnodez: []\n", "nodez", errno.ENOENT, "unknown key 'nodez' in the file"),
        ("version: 1\nnodes:\n  - {name: a, type: hub, colour: red}\n", "colour",
         errno.ENOENT, "unknown key 'colour' in a node"),
        ("version: 1\nnodes: []\nversion: 1\n", ("version", 2), errno.EEXIST,
         "'version' appears twice"),
        ("version: 1\nnodes:\n  - {name: a, type: hub, name: b}\n", "name: b",
         errno.EEXIST, "'name' appears twice in a node"),
        ("version: 1\nnodes:\n  - {name: a, type: hub}\n  - {name: a, type: hole}\n", "a, type: ho",
         errno.EADDRINUSE, "duplicate node 'a' (first at line 3, column 12)"),
        ("version: 1\nnodes:\n  - {name: a, type: hub}\n  - {label: a, type: hole}\n",
         "a, type: ho", errno.EADDRINUSE, "duplicate node 'a'"),
        ("version: 1\nnodes:\n  - {name: " + "n" * 32 + ", type: hub}\n", "nnn", errno.EINVAL,
         "is longer than 31 bytes"),
        ("version: 1\nnodes:\n  - {name: " + "é" * 16 + ", type: hub}\n", "é", errno.EINVAL,
         "is longer than 31 bytes"),
        ("version: 1\nnodes:\n  - {name: a.b, type: hub}\n", "a.b", errno.EINVAL,
         "contains '.'"),
        ("version: 1\nnodes:\n  - {name: 'a:b', type: hub}\n", "'a:b'", errno.EINVAL,
         "contains ':'"),
        ("version: 1\nnodes:\n  - {label: x.y, type: hub}\n", "x.y", errno.EINVAL,
         "label 'x.y'"),
        ("version: 1\nnodes:\n  - {name: '[1f]', type: hub}\n", "'[1f]'", errno.EINVAL,
         "looks like a node ID"),
        ("version: 1\nnodes:\n  - {name: a, type: hub, peer: 'b:c', hook: 'd.e'}\n", "'d.e'",
         errno.EINVAL, "hook 'd.e'"),
        ("version: 1\nnodes:\n  - {name: a, type: hub, peer: 'b:c.d', hook: e}\n", "'b:c.d'",
         errno.EINVAL, "contains '.'"),
        ("version: 1\nlinks:\n  - a:b c:d.e\n", "c:d.e", errno.EINVAL, "contains '.'"),
        ("version: 1\nlinks:\n  - [a:b, 'c:']\n", "'c:'", errno.EINVAL, "is not node:hook"),
        ("version: 1\nnodes:\n  - {name: !!int 3, type: hub}\n", "!!int", errno.EINVAL,
         "YAML tags are not used"),
        ("version: 1\nnodes:\n  - {name: !!bool yes, type: hub}\n", "!!bool", errno.EINVAL,
         "YAML tags are not used"),
        ("version: 1\nnodes:\n  - {name: a, type: !hub x}\n", "!hub", errno.EINVAL,
         "YAML tags are not used"),
    ],
)  # fmt: skip
def test_errors_found_before_anything_is_made(
    source: str, needle: str | tuple[str, int], code: int, reason: str
) -> None:
    pos = at(source, *needle) if isinstance(needle, tuple) else at(source, needle)
    err = parse_error(source)
    assert (err.errno, where(err)) == (code, pos), err
    assert reason in err.reason
    assert (err.filename, err.line, err.column) == ("f.yaml", *pos)
    name = errno.errorcode[code]
    assert str(err) == f"f.yaml:{err.line}:{err.column}: {err.reason} ({name})"


def test_the_context_is_the_line_and_a_caret() -> None:
    source = "version: 1\nnodes:\n  - {name: ok, type: hub}\n  - {name: a.b, type: hub}\n"
    err = parse_error(source)
    assert err.context == "  - {name: a.b, type: hub}\n" + " " * 11 + "^"
    assert where(err) == (4, 12)


async def test_unknown_type(sock: netgraph.Socket) -> None:
    source = "version: 1\nnodes:\n  - {name: a, type: hub}\n  - {name: b, type: nosuch}\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENXIO, at(source, "nosuch"))
    assert "no node type 'nosuch'" in err.reason
    source = (
        "version: 1\nnodes:\n  - {name: a, type: hub}\n"
        "  - {name: b, type: nosuch, peer: 'a:x', hook: y}\n"
    )
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENXIO, at(source, "nosuch"))


async def test_a_constructor_that_refuses(psock: netgraph.Socket) -> None:
    source = "version: 1\nnodes:\n  - {name: g, type: grumpy}\n"
    err = await apply_error(psock, source)
    assert (err.errno, where(err)) == (errno.EPERM, at(source, "grumpy"))
    assert "grumpy needs a capability" in err.reason


async def test_a_name_in_use_in_the_graph(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "hub", "h", "in")
    await sock.name_node(".:h", "taken")
    source = "version: 1\nnodes:\n  - {name: free, type: hub}\n  - {name: taken, type: hole}\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.EADDRINUSE, at(source, "taken"))
    assert "'taken' is in use" in err.reason
    # The socket node's own name, in the peer form (named after it is made).
    source = "version: 1\nnodes:\n  - {name: sock, type: hole, peer: 'taken:x', hook: in}\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.EADDRINUSE, at(source, "sock"))


async def test_a_peer_that_is_no_node(sock: netgraph.Socket) -> None:
    source = "version: 1\nnodes:\n  - {name: k, type: hole, peer: 'ghost:x', hook: in}\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENOENT, at(source, "'ghost:x'"))
    # A later node of the file is not there yet.
    source = (
        "version: 1\nnodes:\n  - {name: k, type: hole, peer: 'later:x', hook: in}\n"
        "  - {name: later, type: hub}\n"
    )
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENOENT, at(source, "'later:x'"))


@pytest.mark.parametrize(
    ("entry", "needle", "code", "reason"),
    [
        ("{name: k, type: ksocket, peer: 'tap:right', hook: inet/bogus/tcp}", "inet/bogus",
         errno.EINVAL, "ksocket hook 'inet/bogus/tcp': unknown socket type 'bogus'"),
        ("{name: k, type: ksocket, peer: 'tap:right', hook: inet/dgram/tcp}", "inet/dgram",
         errno.EPROTONOSUPPORT, "inet/dgram/tcp"),
        ("{name: t2, type: tee, peer: 'tap:right', hook: bogus}", "bogus", errno.EINVAL,
         "tee has no hook 'bogus'"),
        ("{name: t2, type: tee, peer: 'tap:left', hook: right}", "'tap:left'", errno.EEXIST,
         "already has hook 'left'"),
    ],
)  # fmt: skip
async def test_a_hook_the_node_refuses(
    sock: netgraph.Socket, entry: str, needle: str, code: int, reason: str
) -> None:
    existing = (
        "version: 1\nnodes:\n  - {name: tap, type: tee}\n"
        "  - {name: h, type: hole, peer: 'tap:left', hook: in}\n"
    )
    await gf.apply(sock, gf.parse(existing))
    source = f"version: 1\nnodes:\n  - {entry}\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (code, at(source, needle)), err
    assert reason in err.reason


async def test_a_link_the_node_refuses(sock: netgraph.Socket) -> None:
    source = (
        "version: 1\nnodes:\n  - {name: tap, type: tee}\n  - {name: sink, type: hole}\n"
        "links:\n  - tap:right sink:in\n  - [tap:bogus, sink:x]\n  - tap:right sink:other\n"
    )
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.EINVAL, at(source, "[tap:bogus"))
    assert "tee has no hook 'bogus'" in err.reason
    source = source.replace("  - [tap:bogus, sink:x]\n", "")
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.EEXIST, at(source, "tap:right sink:other"))


MUX = "version: 1\nnodes:\n  - {name: mux, type: one2many}\nmessages:\n"


@pytest.mark.parametrize(
    ("message", "line", "needle"),
    [
        ("  - mux: setconfig { xmitAlg=3 failAlg=} }\n", 5, "} }"),
        ("  - mux: 'setconfig { xmitAlg=3 failAlg=} }'\n", 5, "} }"),
        ('  - mux: "setconfig { xmitAlg=3 failAlg=} }"\n', 5, "} }"),
        ("  - mux: |\n      setconfig {\n        xmitAlg=3 failAlg=} }\n", 7, "} }"),
        ("  - mux: |-\n      setconfig { xmitAlg=3\n      failAlg=} }\n", 7, "} }"),
        ("  - {mux: 'getstats 08'}\n", 5, "08"),
        ("  - mux: setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 }\n", 5, "}"),
    ],
    ids=["plain", "single", "double", "block", "block-strip", "flow", "end"],
)
async def test_a_bad_message_at_its_column_in_the_file(
    sock: netgraph.Socket, message: str, line: int, needle: str
) -> None:
    source = MUX + message
    err = await apply_error(sock, source)
    assert err.errno == errno.EINVAL
    assert err.reason.startswith("bad message for 'mux': ")
    expected = at(source, needle, source.count(needle))
    assert expected[0] == line
    assert where(err) == expected, err.context
    assert err.context.splitlines()[1] == " " * (expected[1] - 1) + "^"
    assert (await snapshot(sock))[0] == [("sock", "socket", 1, 0)]  # the one2many is gone


@pytest.mark.parametrize(
    ("message", "line", "needle"),
    [
        ('  - mux: "setconfig { xmitAlg=\\x33 failAlg=} }"\n', 5, "} }"),
        ("  - mux: >\n      setconfig { xmitAlg=3\n      failAlg=} }\n", 7, "} }"),
        ("  - mux: setconfig { xmitAlg=3\n      failAlg=} }\n", 6, "} }"),
    ],
    ids=["escapes", "folded", "plain-two-lines"],
)
async def test_a_bad_message_column_through_escapes_and_folding(
    sock: netgraph.Socket, message: str, line: int, needle: str
) -> None:
    """The text YAML gives is not the text in the file: an escape is longer in the file, a
    folded line break is a space in the text."""
    source = MUX + message
    err = await apply_error(sock, source)
    assert err.errno == errno.EINVAL
    assert where(err) == at(source, needle, source.count(needle)), err.context


async def test_a_message_the_node_refuses(sock: netgraph.Socket) -> None:
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as taken:
        await taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        source = (
            "version: 1\nnodes:\n  - {name: h, type: hole}\n"
            "  - {name: k, type: ksocket, peer: 'h:k', hook: inet/dgram/udp}\n"
            f"messages:\n  - k: bind inet/127.0.0.1:{port}\n"
        )
        before = await snapshot(sock)
        err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.EADDRINUSE, at(source, "bind"))
    assert err.reason == "k: bind failed: bind: Address already in use"
    assert await snapshot(sock) == before


async def test_a_message_to_no_node(sock: netgraph.Socket) -> None:
    source = "version: 1\nmessages:\n  - ghost: getstats\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENOENT, at(source, "ghost"))
    source = "version: 1\nmessages:\n  - sock: frobnicate 1\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENOSYS, at(source, "frobnicate"))


async def test_messages_are_sent_not_waited_on(
    pgraph: netgraph.Graph, psock: netgraph.Socket
) -> None:
    """docs: a message is sent, not waited on; its reply, if any, reaches the socket node that
    applied the file like any late reply. A reply that never comes (``stall``) holds nothing up."""
    source = (
        "version: 1\nnodes:\n  - {name: d, type: dial}\nmessages:\n"
        "  - d: stall\n  - d: setlevel 5\n  - d: getlevel\n"
    )
    with trio.fail_after(5):
        await gf.apply(psock, gf.parse(source))
        replies = [await psock.recv_msg() for _ in range(2)]
    d = pgraph.names["d"]
    assert isinstance(d, Dial)
    assert d.log == [(3, None), (1, 5), (2, None)]
    assert [(msg.cmd, msg.args, msg.is_response) for _, msg in replies] == [
        (1, 5, True), (2, 5, True)
    ]  # fmt: skip
    assert {path for path, _ in replies} == {f"[{d.id:x}]:"}


# ----------------------------------------------------------------- YAML without surprises

TRICKY = ["on", "no", "yes", "off", "0755", "1e3", "null", "~", "0x1F", "12", "true", "café"]


async def test_yaml_11_words_stay_text(pgraph: netgraph.Graph, psock: netgraph.Socket) -> None:
    nodes = "".join(f"  - {{name: {name}, type: dial}}\n" for name in TRICKY)
    messages = "".join(f"  - {name}: setlevel {n + 1}\n" for n, name in enumerate(TRICKY))
    await gf.apply(psock, gf.parse(f"version: 1\nnodes:\n{nodes}messages:\n{messages}"))
    names = {i.name for i in (await psock.listnames()).nodeinfo}
    assert names == {"psock", *TRICKY}
    for n, name in enumerate(TRICKY):
        node = pgraph.names[name]
        assert isinstance(node, Dial)
        assert node.log == [(1, n + 1)], name


@pytest.mark.parametrize("name", [".inf", ".nan", "1.0", "[1]"])
def test_yaml_11_words_that_are_bad_names(name: str) -> None:
    source = f"version: 1\nnodes:\n  - name: {name}\n    type: hub\n"
    err = parse_error(source)
    assert (err.errno, where(err)) == (errno.EINVAL, (3, 11))


async def test_message_arguments_are_the_text_written(
    pgraph: netgraph.Graph, psock: netgraph.Socket
) -> None:
    """The ASCII parser reads numbers as C does: 0755 octal, 0x10 hex; YAML never sees them."""
    source = (
        "version: 1\nnodes:\n  - {name: d, type: dial}\nmessages:\n"
        "  - d: setlevel 0755\n  - d: setlevel 010\n  - d: setlevel 0x10\n  - d: setlevel 1e3\n"
    )
    err = await apply_error(psock, source)
    assert (err.errno, where(err)) == (errno.EINVAL, at(source, "1e3"))
    await gf.apply(psock, gf.parse(source.replace("  - d: setlevel 1e3\n", "")))
    node = pgraph.names["d"]
    assert isinstance(node, Dial)
    assert node.log == [(1, 0o755), (1, 8), (1, 16)]


async def test_one2many_clrstats_010_is_link_8(sock: netgraph.Socket) -> None:
    await gf.apply(sock, gf.parse(
        "version: 1\nnodes:\n  - {name: mux, type: one2many}\n  - {name: out, type: hole}\n"
        "links:\n  - mux:one out:in\n"))  # fmt: skip
    await sock.connect(".", "mux:", "m8", "many8")
    await sock.connect(".", "mux:", "m10", "many10")
    await sock.send_data("m8", b"eight")
    await sock.send_data("m10", b"ten")

    async def received(link: int) -> int:
        reply = await sock.request_ascii("mux:", f"getstats {link}")
        return int(reply[0].args.recvPackets)

    assert (await received(8), await received(10)) == (1, 1)
    await gf.apply(sock, gf.parse("version: 1\nmessages:\n  - mux: clrstats 010\n"))
    assert (await received(8), await received(10)) == (0, 1)
    err = await apply_error(sock, "version: 1\nmessages:\n  - mux: getstats 0755\n")
    assert "no link number 493" in err.reason


@pytest.mark.parametrize("version", ["1.0", '"2"', "2", "'1.0'", "one", "[1]", "{v: 1}"])
def test_only_version_1(version: str) -> None:
    err = parse_error(f"version: {version}\n")
    assert (err.errno, where(err)) == (errno.EINVAL, (1, 10))


@pytest.mark.parametrize("version", ["1", '"1"', "'1'"])
def test_version_1_however_quoted(version: str) -> None:
    assert gf.parse(f"version: {version}\n").nodes == ()


# --------------------------------------------------------------------------------- x- keys


async def test_x_keys_are_ignored(sock: netgraph.Socket) -> None:
    source = (
        "version: 1\nx-about: {author: me, tags: [a, b]}\nx-version: 99\n"
        "nodes:\n  - {name: a, type: hub, x-colour: red, x-pos: [1, 2]}\n"
        "  - name: b\n    x-note: |\n      anything at all\n    type: hole\n"
        "links:\n  - a:x b:in\n"
    )
    spec = gf.parse(source)
    assert [(n.ref, n.type) for n in spec.nodes] == [("a", "hub"), ("b", "hole")]
    await gf.apply(sock, spec)
    assert {i.name for i in (await sock.listnames()).nodeinfo} == {"sock", "a", "b"}


async def test_a_message_key_is_always_a_node(
    pgraph: netgraph.Graph, psock: netgraph.Socket
) -> None:
    """A message is one pair whose key is the node (docs: ``node: command arguments``), so a
    node named ``x-ray`` gets its messages, and an ``x-`` note beside a message is refused."""
    source = "version: 1\nnodes:\n  - {name: x-ray, type: dial}\nmessages:\n  - x-ray: setlevel 4\n"
    await gf.apply(psock, gf.parse(source))
    node = pgraph.names["x-ray"]
    assert isinstance(node, Dial)
    assert node.log == [(1, 4)]
    source = "version: 1\nmessages:\n  - {x-ray: setlevel 5, x-note: why}\n"
    err = parse_error(source)
    assert (err.errno, where(err)) == (errno.EINVAL, at(source, "{x-ray"))


# ------------------------------------------------------------------------- odd documents


@pytest.mark.parametrize(
    ("source", "pos", "reason"),
    [
        ("", (1, 1), "the file is empty"),
        ("# only a comment\n", (1, 1), "the file is empty"),
        ("\n\n   \n", (1, 1), "the file is empty"),
        ("- version: 1\n", (1, 1), "the file must be a mapping, not a list"),
        ("hello\n", (1, 1), "the file must be a mapping, not a text"),
        ("version: 1\nnodes:\n  tap: {type: tee}\n", (3, 3), "nodes must be a list, not a mapping"),
        ("version: 1\nnodes: tap\n", (2, 8), "nodes must be a list, not a text"),
        ("version: 1\nnodes:\n  - tap\n", (3, 5), "a node must be a mapping, not a text"),
        ("version: 1\nmessages:\n  - tap getstats\n", (3, 5), "a message is one"),
        ("version: 1\nlinks:\n  - a:b\n", (3, 5), "a link is two ends"),
        ("version: 1\nlinks:\n  - [a:b, c:d, e:f]\n", (3, 5), "a link is two ends"),
        ("version: 1\nnodes:\n  - {name: a}\n", (3, 5), "a node needs a type"),
        ("version: 1\nnodes:\n  - {type: hub}\n", (3, 5), "a node needs a name"),
        ("version: 1\nnodes:\n  - {name: a, label: b, type: hub}\n", (3, 5), "a node needs a name"),
        ("version: 1\nnodes:\n  - {name: a, type: hub, hook: x}\n", (3, 5), "needs both peer"),
        ("version: 1\n---\nversion: 1\n", (2, 1), "YAML: "),
    ],
)  # fmt: skip
def test_odd_documents(source: str, pos: tuple[int, int], reason: str) -> None:
    err = parse_error(source)
    assert (err.errno, where(err)) == (errno.EINVAL, pos)
    assert reason in err.reason


async def test_empty_sections_and_a_bom(sock: netgraph.Socket) -> None:
    before = await snapshot(sock)
    for source in ("version: 1\nnodes:\nlinks:\nmessages:\n", "\ufeffversion: 1\nnodes: []\n"):
        assert await gf.apply(sock, gf.parse(source)) == []
    assert await snapshot(sock) == before


# --------------------------------------------------------------------------- all or nothing


async def _existing(sock: netgraph.Socket) -> None:
    """Two nodes that were there before (each linked to the socket node, so they stay)."""
    await sock.mkpeer(".", "hub", "h", "in")
    await sock.name_node(".:h", "pre")
    await sock.mkpeer(".", "hole", "o", "in")
    await sock.name_node(".:o", "pre2")


GOOD = (
    "version: 1\nnodes:\n  - {name: a, type: hub}\n  - {label: b, type: hole}\n"
    "  - {name: c, type: tee, peer: 'pre:c', hook: left}\n"
    "links:\n  - a:x b:in\n  - pre:y pre2:y\n  - [a:pre, pre:a]\n  - c:right a:c\n"
    "messages:\n  - a: setpersistent\n"
)


async def test_failing_at_the_last_message_undoes_everything(sock: netgraph.Socket) -> None:
    await _existing(sock)
    before = await snapshot(sock)
    source = GOOD + '  - pre2: getstats "nosuch"\n'
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENOENT, at(source, "getstats"))
    assert await snapshot(sock) == before  # links between pre and pre2 removed too
    made = await gf.apply(sock, gf.parse(GOOD))  # the names are free again
    assert [i.name for i in made] == ["a", "", "c"]


async def test_failing_among_the_nodes_undoes_the_earlier_ones(sock: netgraph.Socket) -> None:
    await _existing(sock)
    before = await snapshot(sock)
    source = GOOD.replace("  - {label: b, type: hole}\n", "  - {label: b, type: nosuch}\n")
    source = source.replace(
        "nodes:\n", "nodes:\n  - {name: z, type: hole, peer: 'pre:z', hook: in}\n"
    )
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.ENXIO, at(source, "nosuch"))
    assert await snapshot(sock) == before


async def test_failing_after_a_peer_form_node_was_made(sock: netgraph.Socket) -> None:
    await _existing(sock)
    before = await snapshot(sock)
    source = "version: 1\nnodes:\n  - {name: pre2, type: hole, peer: 'pre:new', hook: in}\n"
    err = await apply_error(sock, source)
    assert (err.errno, where(err)) == (errno.EADDRINUSE, at(source, "pre2"))
    assert await snapshot(sock) == before  # the node made, unnamed, by mkpeer is gone


async def test_undo_keeps_nodes_that_had_no_hooks(sock: netgraph.Socket) -> None:
    """Nodes made by an earlier file have no hooks and stay; a failed file that linked them
    must not leave them without the hooks they never had, which would end them."""
    await gf.apply(sock, gf.parse("version: 1\nnodes:\n  - {name: p, type: hole}\n"
                                  "  - {name: q, type: tee}\n"))  # fmt: skip
    before = await snapshot(sock)
    source = (
        "version: 1\nnodes:\n  - {name: r, type: hole, peer: 'q:left', hook: in}\n"
        "links:\n  - p:x q:right\nmessages:\n  - p: bogus\n"
    )
    await apply_error(sock, source)
    assert await snapshot(sock) == before


class _CancelledAtMessages:
    """A socket node's owner whose message sends are cancelled (as when a load is interrupted
    between its links and its messages)."""

    def __init__(self, sock: netgraph.Socket, scope: trio.CancelScope) -> None:
        self._sock = sock
        self._scope = scope

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    async def send_msg(self, path: str, msg: Message) -> int:
        self._scope.cancel()
        await trio.lowlevel.checkpoint()
        raise AssertionError("not cancelled")


async def test_a_cancelled_load_is_undone(sock: netgraph.Socket) -> None:
    await _existing(sock)
    before = await snapshot(sock)
    with trio.CancelScope() as scope:
        await gf.apply(_CancelledAtMessages(sock, scope), gf.parse(GOOD))  # type: ignore[arg-type]
    assert scope.cancelled_caught
    assert await snapshot(sock) == before


async def test_a_file_may_shut_down_its_own_node(sock: netgraph.Socket) -> None:
    source = (
        "version: 1\nnodes:\n  - {name: a, type: hub}\n  - {name: b, type: hole}\n"
        "messages:\n  - b: shutdown\n"
    )
    made = await gf.apply(sock, gf.parse(source))
    assert [i.name for i in made] == ["a"]
    assert {i.name for i in (await sock.listnames()).nodeinfo} == {"sock", "a"}


# --------------------------------------------------------------------------------- messages


async def test_messages_in_order(
    pgraph: netgraph.Graph, psock: netgraph.Socket, tmp_path: Path
) -> None:
    source = (
        "version: 1\nnodes:\n  - {name: d, type: dial}\n  - {name: mux, type: one2many}\n"
        "messages:\n  - d: setlevel 1\n  - d: getlevel\n  - d: setlevel 2\n  - d: setlevel 3\n"
        "  - mux: setconfig { xmitAlg=2 failAlg=1 enabledLinks=[ 1 ] }\n"
        "  - mux: getconfig\n"
        "  - mux: setconfig { xmitAlg=3 failAlg=2 enabledLinks=[ 0 1 ] }\n"
    )
    await gf.load(psock, str(write(tmp_path, source)))
    node = pgraph.names["d"]
    assert isinstance(node, Dial)
    assert node.log == [(1, 1), (2, None), (1, 2), (1, 3)]
    assert (await psock.request_ascii("mux:", "getconfig"))[1] == (
        "{ xmitAlg=3 failAlg=2 enabledLinks=[ 1=1 ] }"
    )


async def test_messages_to_nodes_of_the_graph(
    pgraph: netgraph.Graph, psock: netgraph.Socket
) -> None:
    await psock.mkpeer(".", "hub", "h", "in")
    await psock.name_node(".:h", "pre")
    await psock.mkpeer("pre:", "dial", "d", "x")
    await psock.mkpeer(".", "dial", "byid", "x")
    dial_id = (await psock.nodeinfo(".:byid")).id
    await psock.mkpeer(".", "dial", "named", "x")
    await psock.name_node(".:named", "dd")
    source = (
        "version: 1\nnodes:\n  - {label: mine, type: hub}\n"
        "  - {label: far, type: dial, peer: 'mine:far', hook: x}\n"
        "messages:\n"
        "  - dd: setlevel 1\n"
        f'  - "[{dial_id:x}]": setlevel 2\n'
        f"  - '[{dial_id:x}]:': setlevel 3\n"
        "  - pre.d: setlevel 4\n"
        "  - dd:: setlevel 5\n"
        "  - mine.far: setlevel 6\n"
        "  - far: setlevel 7\n"
    )
    made = await gf.apply(psock, gf.parse(source))
    levels = {
        name: pgraph.nodes[(await psock.nodeinfo(path)).id]
        for name, path in [("dd", "dd:"), ("id", ".:byid"), ("pre.d", "pre:d")]
    }
    logs = {name: node.log for name, node in levels.items() if isinstance(node, Dial)}
    assert logs == {"dd": [(1, 1), (1, 5)], "id": [(1, 2), (1, 3)], "pre.d": [(1, 4)]}
    far = pgraph.nodes[made[1].id]
    assert isinstance(far, Dial)
    assert far.log == [(1, 6), (1, 7)]


async def test_a_connect_in_progress_counts_as_applied(sock: netgraph.Socket) -> None:
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        source = (
            "version: 1\nnodes:\n  - {name: mirror, type: echo}\n"
            "  - {name: conn, type: ksocket, peer: 'mirror:s', hook: inet/stream/tcp}\n"
            f"messages:\n  - conn: connect inet/127.0.0.1:{port}\n"
        )
        made = await gf.apply(sock, gf.parse(source))
        assert [i.name for i in made] == ["mirror", "conn"]
        with trio.fail_after(30):
            peer, _ = await listener.accept()
            with peer:
                await peer.send(b"ping")
                got = b""
                while len(got) < 4:
                    got += await peer.recv(64)
                assert got == b"ping"  # through the echo node and back


# ---------------------------------------------------------------------- plugin node types


async def test_a_plugin_type_in_a_file(pgraph: netgraph.Graph, psock: netgraph.Socket) -> None:
    source = (
        "version: 1\nnodes:\n  - {name: rec, type: test_recorder}\n"
        "  - {name: d, type: dial, peer: 'rec:side', hook: in}\n"
        "links:\n  - [rec:in, psock:feed]\nmessages:\n  - d: setlevel 9\n"
    )
    await gf.apply(psock, gf.parse(source))
    await psock.send_data("feed", b"data")
    rec = pgraph.names["rec"]
    assert isinstance(rec, Recorder)
    assert [(hook, bytes(item)) for hook, item in rec.received] == [("in", b"data")]
    dial = pgraph.names["d"]
    assert isinstance(dial, Dial)
    assert dial.log == [(1, 9)]


async def test_a_plugin_setter_without_a_reply(
    pgraph: netgraph.Graph, psock: netgraph.Socket
) -> None:
    """A setter with no reply, of a type known only to the graph's registry (not installed, so
    no cmdlist on the client side to say so): sent, not waited on, it applies at once."""
    source = "version: 1\nnodes:\n  - {name: q, type: quiet}\nmessages:\n  - q: set 3\n"
    with trio.fail_after(5):
        await gf.apply(psock, gf.parse(source))
    node = pgraph.names["q"]
    assert isinstance(node, Quiet)
    assert node.value == 3


# ----------------------------------------------------------------------------------- ngctl


def test_load_and_save_answer_only_to_their_whole_names() -> None:
    assert lookup("l").name == "list"
    assert lookup("load").name == "load"
    assert lookup("LOAD").name == "load"
    assert lookup("save").name == "save"
    for word in ("lo", "loa", "sa", "sav"):
        with pytest.raises(LookupProblem, match=f'"{word}": unknown command'):
            lookup(word)


async def test_ngctl_load_and_save_in_process(sock: netgraph.Socket, tmp_path: Path) -> None:
    cap = Capture()
    s = Session(sock, printer=cap)
    path = write(tmp_path, ROUND)
    assert await s.run_line(f"load {path}") == Status.OK
    assert cap.take() == ([], [])
    assert await s.run_line("l -n") == Status.OK
    assert cap.take()[0][0] == "There are 6 total named nodes:"
    out = tmp_path / "out.yaml"
    assert await s.run_line(f"save {out}") == Status.OK
    assert cap.take() == ([], [])
    assert out.read_text(encoding="utf-8") == await gf.save(sock)
    assert await s.run_line("load") == Status.USAGE
    assert cap.take()[1] == ["ngctl: usage: load <file>"]
    assert await s.run_line(f"save {tmp_path / 'nodir' / 'x.yaml'}") == Status.ERROR
    assert cap.take()[1][0].startswith("ngctl: Could not open ")


async def test_ngctl_load_error_output(sock: netgraph.Socket, tmp_path: Path) -> None:
    cap = Capture()
    s = Session(sock, printer=cap)
    source = "version: 1\nnodes:\n  - {name: a, type: hub}\n  - {name: b, type: nosuch}\n"
    path = write(tmp_path, source)
    before = await snapshot(sock)
    assert await s.run_line(f"load {path}") == Status.ERROR
    out, err = cap.take()
    assert out == []
    line, column = at(source, "nosuch")
    assert err == [
        f"ngctl: {path}:{line}:{column}: cannot make node 'b' of type 'nosuch': no node type "
        "'nosuch' (ENXIO)",
        "    - {name: b, type: nosuch}",
        "  " + " " * (column - 1) + "^",
    ]
    assert await snapshot(sock) == before


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "ng.sock"


@pytest.fixture
async def daemon(sock_path: Path, nursery: trio.Nursery) -> Daemon:
    started: Daemon = await nursery.start(serve, sock_path)
    return started


async def run_module(module: str, *args: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        proc = await trio.run_process(
            [sys.executable, "-m", module, *args], capture_stdout=True, capture_stderr=True,
            check=False, cwd=ROOT,
        )  # fmt: skip
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def test_ngctl_load_and_save_through_the_daemon(
    daemon: Daemon, sock_path: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, GOOD.replace("'pre:c'", "'a:c2'").replace("  - pre:y pre2:y\n", "")
                 .replace("  - [a:pre, pre:a]\n", ""))  # fmt: skip
    assert await run_module("ngctl", "-s", str(sock_path), "load", str(path)) == (0, "", "")
    code, out, err = await run_module("ngctl", "-s", str(sock_path), "show", "a:")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("  Name: a               Type: hub")
    saved = tmp_path / "saved.yaml"
    assert await run_module("ngctl", "-s", str(sock_path), "save", str(saved)) == (0, "", "")
    async with connect(sock_path, "viewer") as remote:
        assert saved.read_text(encoding="utf-8") == await gf.save(remote)
    # An error: the file:line:column line and the caret, and ngctl's error status.
    source = MUX.replace("mux", "mux2") + "  - mux2: |\n      setconfig {\n        xmitAlg=} }\n"
    bad = write(tmp_path, source, "bad.yaml")
    code, out, err = await run_module("ngctl", "-s", str(sock_path), "load", str(bad))
    line, column = at(source, "} }")
    assert (code, out) == (EX_OSERR, "")
    assert err.splitlines() == [
        f"ngctl: {bad}:{line}:{column}: bad message for 'mux2': unexpected '}}'; expected '[' "
        "or '{' or a quoted string or a word (EINVAL)",
        "          xmitAlg=} }",
        "  " + " " * (column - 1) + "^",
    ]
    code, out, _ = await run_module("ngctl", "-s", str(sock_path), "list", "-n")
    assert "mux2" not in out


async def test_load_through_a_remote_socket(daemon: Daemon, sock_path: Path) -> None:
    async with connect(sock_path, "remote") as remote:
        before = await snapshot(remote)
        source = MUX + "  - mux: 'setconfig { xmitAlg=3 failAlg=} }'\n"
        err = await apply_error(remote, source)
        assert where(err) == at(source, "} }")
        assert await snapshot(remote) == before
        made = await gf.apply(remote, gf.parse(ROUND))
        assert len(made) == 6


# ------------------------------------------------------------- python -m netgraph run/serve


async def test_run_a_bad_file_exits_65(tmp_path: Path) -> None:
    source = "version: 1\nnodes:\n  - {name: a, type: hub}\n  - {name: a.b, type: hub}\n"
    path = write(tmp_path, source)
    code, out, err = await run_module("netgraph", "run", str(path))
    assert (code, out) == (EX_DATAERR, "")
    assert err.splitlines() == [
        f"python -m netgraph run: {path}:4:12: name 'a.b': node name 'a.b' contains '.' (EINVAL)",
        "    - {name: a.b, type: hub}",
        "  " + " " * 11 + "^",
    ]
    sock_path = tmp_path / "ng.sock"
    code, out, err = await run_module("netgraph", "serve", "--socket", str(sock_path), str(path))
    assert code == EX_DATAERR
    assert err.splitlines()[0].startswith(f"python -m netgraph serve: {path}:4:12: ")
    assert not sock_path.exists()


async def _read_until(stream: trio.abc.ReceiveStream, marker: bytes, seen: bytearray) -> None:
    while marker not in seen:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"the process ended before {marker!r}: {bytes(seen)!r}")
        seen += chunk


async def _finish(proc: trio.Process, sig: int, seen: bytearray) -> int:
    proc.send_signal(sig)
    assert proc.stderr is not None
    while chunk := await proc.stderr.receive_some():
        seen += chunk
    return await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_run_keeps_the_graph_running_until_a_signal(
    tmp_path: Path, nursery: trio.Nursery, sig: int
) -> None:
    """A TCP ksocket of the running graph connects to us; what we send comes back through its
    echo node; then a signal ends the program with status 0."""
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        path = write(tmp_path, (
            "version: 1\nnodes:\n  - {name: mirror, type: echo}\n"
            "  - {name: conn, type: ksocket, peer: 'mirror:s', hook: inet/stream/tcp}\n"
            f"messages:\n  - conn: connect inet/127.0.0.1:{port}\n"
        ))  # fmt: skip
        argv = [sys.executable, "-m", "netgraph", "run", "-v", str(path)]
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, argv, stderr=subprocess.PIPE, check=False, cwd=ROOT)
        )
        assert proc.stderr is not None
        seen = bytearray()
        with trio.fail_after(60):
            await _read_until(proc.stderr, b"running " + str(path).encode(), seen)
            peer, _ = await listener.accept()
            with peer:
                await peer.send(b"are you there")
                got = b""
                while len(got) < 13:
                    got += await peer.recv(64)
                assert got == b"are you there"
                assert proc.returncode is None
                assert await _finish(proc, sig, seen) == 0, seen.decode()


async def test_serve_a_file_and_query_it_with_ngctl(tmp_path: Path, nursery: trio.Nursery) -> None:
    sock_path = tmp_path / "ng.sock"
    path = write(tmp_path, (
        "version: 1\nnodes:\n  - {name: hub1, type: hub}\n  - {name: sink, type: hole}\n"
        "  - {label: echoes, type: echo, peer: 'hub1:e', hook: x}\n"
        "links:\n  - hub1:s sink:in\nmessages:\n  - hub1: setpersistent\n"
    ))  # fmt: skip
    argv = [sys.executable, "-m", "netgraph", "serve", "-v", "--socket", str(sock_path), str(path)]
    proc: trio.Process = await nursery.start(
        partial(trio.run_process, argv, stderr=subprocess.PIPE, check=False, cwd=ROOT)
    )
    assert proc.stderr is not None
    seen = bytearray()
    with trio.fail_after(60):
        await _read_until(proc.stderr, b"listening on", seen)
        code, out, err = await run_module("ngctl", "-s", str(sock_path), "list")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == "There are 4 total nodes:"  # hub1, sink, the echo, this ngctl
        assert any(line.startswith("  Name: sink            Type: hole") for line in lines)
        code, out, _ = await run_module("ngctl", "-s", str(sock_path), "show", "hub1:")
        first = out.splitlines()[0]
        assert first.startswith("  Name: hub1            Type: hub             ID: ")
        assert first.endswith("   Num hooks: 2")
        assert await _finish(proc, signal.SIGTERM, seen) == 0, seen.decode()
    assert not sock_path.exists()


# ---------------------------------------------------------------------------------- schema


class _TextLoader(yaml.SafeLoader):
    """Every scalar as text, as graph files are read."""


_TextLoader.yaml_implicit_resolvers = {}


def _schema_validator() -> Any:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _doc_examples() -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 3
    # Excerpts (a links: or messages: section alone) are files once they have their version.
    return [b if re.search(r"^version:", b, re.MULTILINE) else "version: 1\n" + b for b in blocks]


@pytest.mark.parametrize("source", _doc_examples())
def test_doc_examples_validate_and_parse(source: str) -> None:
    validator = _schema_validator()
    for loader in (_TextLoader, yaml.SafeLoader):
        errors = [e.message for e in validator.iter_errors(yaml.load(source, Loader=loader))]
        assert errors == [], source
    gf.parse(source, "docs/graph-file.md")


def test_example_files_validate_and_parse() -> None:
    validator = _schema_validator()
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        source = path.read_text(encoding="utf-8")
        errors = [e.message for e in validator.iter_errors(yaml.load(source, Loader=_TextLoader))]
        assert errors == [], path
        gf.parse(source, str(path))


@pytest.mark.parametrize(
    "source",
    [
        "nodes: []\n",
        "version: 2\n",
        "version: 1\nnodez: []\n",
        "version: 1\nnodes:\n  tap: {type: tee}\n",
        "version: 1\nnodes:\n  - {name: a}\n",
        "version: 1\nnodes:\n  - {name: a, label: b, type: hub}\n",
        "version: 1\nnodes:\n  - {name: a.b, type: hub}\n",
        "version: 1\nnodes:\n  - {name: '" + "n" * 32 + "', type: hub}\n",
        "version: 1\nnodes:\n  - {name: a, type: hub, peer: 'b:c'}\n",
        "version: 1\nnodes:\n  - {name: a, type: hub, colour: red}\n",
        "version: 1\nlinks:\n  - a:b c:d e:f\n",
        "version: 1\nlinks:\n  - [a:b]\n",
        "version: 1\nmessages:\n  - {a: getstats, b: getstats}\n",
        "version: 1\nmessages:\n  - a getstats\n",
    ],
)
def test_invalid_documents_are_rejected_by_both(source: str) -> None:
    validator = _schema_validator()
    assert list(validator.iter_errors(yaml.load(source, Loader=_TextLoader))) != []
    with pytest.raises(GraphFileError):
        gf.parse(source)
