"""Nodes, names, hooks, paths, the lifecycle and the generic messages (spec 1, 2)."""

from __future__ import annotations

import errno

import pytest

import netgraph
from netgraph import Message, NetgraphError
from netgraph.message import (
    GENERIC_COOKIE,
    HEADER,
    NG_VERSION,
    NGF_RESP,
    NGM_LISTHOOKS,
    NGM_NODEINFO,
    NGM_TEXT_CONFIG,
    NGM_TEXT_STATUS,
    NodeInfo,
    pack_header,
    unpack_header,
)
from tests.conftest import Recorder


def errno_of(excinfo: pytest.ExceptionInfo[NetgraphError]) -> int | None:
    return excinfo.value.errno


# ------------------------------------------------------------------------------ IDs and names


async def test_ids_start_at_one_and_print_as_lowercase_hex(graph: netgraph.Graph) -> None:
    nodes = [graph.make_node("hole") for _ in range(30)]
    assert [n.id for n in nodes] == list(range(1, 31))
    assert nodes[-1].path == "[1e]:"
    assert graph.find("[1E]") is nodes[-1]
    assert graph.find("[0x1e]") is nodes[-1]


async def test_ids_skip_those_in_use_on_wrap(graph: netgraph.Graph) -> None:
    first = graph.make_node("hole")
    graph._next_id = 2**32 - 1
    last = graph.make_node("hole")
    after = graph.make_node("hole")
    assert (first.id, last.id, after.id) == (1, 2**32 - 1, 2)


async def test_name_rules(graph: netgraph.Graph) -> None:
    a, b = graph.make_node("hole"), graph.make_node("hole")
    graph.name_node(a, "test hub")
    graph.name_node(a, "test hub")  # renaming to its own name succeeds (PR241954)
    for bad in ("", "a.b", "a:b", "[12]", "x" * 32):
        with pytest.raises(NetgraphError) as info:
            graph.name_node(b, bad)
        assert errno_of(info) == errno.EINVAL
    with pytest.raises(NetgraphError) as info:
        graph.name_node(b, "test hub")
    assert errno_of(info) == errno.EADDRINUSE
    graph.name_node(a, "renamed")
    assert graph.find("renamed") is a
    with pytest.raises(NetgraphError) as info:
        graph.find("test hub")
    assert errno_of(info) == errno.ENOENT


async def test_name_is_free_once_shutdown_begins(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "hole", "h", "in")
    await sock.name_node("h", "x")
    await sock.shutdown("x:")
    await sock.mkpeer(".", "hole", "h2", "in")
    await sock.name_node("h2", "x")


# ------------------------------------------------------------------------------------- hooks


async def test_hook_names_unique_per_node(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "hub", "a", "x")
    with pytest.raises(NetgraphError) as info:
        await sock.mkpeer(".", "hub", "a", "y")
    assert errno_of(info) == errno.EEXIST
    with pytest.raises(NetgraphError) as info:
        await sock.connect(".", "a", "b", "x")
    assert errno_of(info) == errno.EEXIST


@pytest.mark.parametrize("name", ["", "a.b", "a:b", "h" * 32])
async def test_bad_hook_names_are_einval(sock: netgraph.Socket, name: str) -> None:
    with pytest.raises(NetgraphError) as info:
        await sock.mkpeer(".", "hub", name, "x")
    assert errno_of(info) == errno.EINVAL
    with pytest.raises(NetgraphError) as info:
        await sock.mkpeer(".", "hub", "x", name)
    assert errno_of(info) == errno.EINVAL


async def test_newhook_veto_undoes_mkpeer(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    before = set(graph.nodes)
    with pytest.raises(NetgraphError) as info:
        await sock.mkpeer(".", "tee", "t", "middle")
    assert errno_of(info) == errno.EINVAL
    assert set(graph.nodes) == before
    assert "t" not in sock.node.hooks


async def test_newhook_veto_undoes_connect(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "test_recorder", "r", "in")
    rec = graph.resolve(sock.node, "r")[0]
    assert isinstance(rec, Recorder)
    rec.veto.add("bad")
    with pytest.raises(NetgraphError):
        await sock.connect(".", "r", "mine", "bad")
    assert "mine" not in sock.node.hooks
    assert set(rec.hooks) == {"in"}


async def test_connect_veto_removes_both_hooks(
    graph: netgraph.Graph, sock: netgraph.Socket
) -> None:
    await sock.mkpeer(".", "test_recorder", "r", "in")
    rec = graph.resolve(sock.node, "r")[0]
    assert isinstance(rec, Recorder)
    rec.veto_connect.add("late")
    with pytest.raises(NetgraphError) as info:
        await sock.connect(".", "r", "mine", "late")
    assert errno_of(info) == errno.EINVAL
    assert "mine" not in sock.node.hooks
    assert set(rec.hooks) == {"in"}
    # mkpeer: the new node goes too
    before = set(graph.nodes)
    rec.veto_connect.add("out")
    with pytest.raises(NetgraphError):
        graph.mkpeer(rec, "hole", "out", "in")
    assert set(graph.nodes) == before
    assert set(rec.hooks) == {"in"}


async def test_mkpeer_order_of_callbacks(graph: netgraph.Graph) -> None:
    a = graph.make_node("test_recorder")
    b = graph.mkpeer(a, "test_recorder", "out", "in")
    assert isinstance(a, Recorder)
    assert isinstance(b, Recorder)
    assert a.events == [("constructor",), ("newhook", "out"), ("connect", "out")]
    assert b.events == [("constructor",), ("newhook", "in"), ("connect", "in")]


async def test_unknown_type_is_enxio_and_socket_not_creatable(sock: netgraph.Socket) -> None:
    with pytest.raises(NetgraphError) as info:
        await sock.mkpeer(".", "nosuchtype", "a", "b")
    assert errno_of(info) == errno.ENXIO
    with pytest.raises(NetgraphError) as info:
        await sock.mkpeer(".", "socket", "a", "b")
    assert errno_of(info) == errno.EINVAL


# ------------------------------------------------------------------------------------- paths


async def test_paths_resolve_every_form(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "hub", "h", "up")
    await sock.name_node("h", "hub1")
    await sock.mkpeer("hub1:", "echo", "down", "e")
    hub = graph.find("hub1")
    echo = hub.hooks["down"].peer
    assert echo is not None
    here = sock.node
    for path, node in [
        (".", here),
        (".:", here),
        ("", here),
        ("sock:", here),
        (f"[{here.id:x}]:", here),
        (f"[0x{here.id:x}]:", here),
        ("h", hub),
        (".:h", hub),
        (".h", hub),
        ("h.", hub),
        ("h.down", echo.node),
        ("hub1:down", echo.node),
        ("hub1:down.", echo.node),
        (f"[{hub.id:X}]:down", echo.node),
    ]:
        assert graph.resolve(here, path)[0] is node, path
    _, lasthook = graph.resolve(here, "h.down")
    assert lasthook is echo


async def test_path_errors(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    here = sock.node
    for path, code in [
        ("nosuch:", errno.ENOENT),
        ("[0]:", errno.ENOENT),
        ("nohook", errno.ENOENT),
        ("sock:nohook", errno.ENOENT),
        (":x", errno.EINVAL),
        ("a..b", errno.EINVAL),
        ("a.b:c", errno.EINVAL),
    ]:
        with pytest.raises(NetgraphError) as info:
            graph.resolve(here, path)
        assert errno_of(info) == code, path


async def test_bare_word_is_a_hook_not_a_node(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    graph.name_node(graph.make_node("hole"), "foo")
    with pytest.raises(NetgraphError) as info:
        await sock.nodeinfo("foo")
    assert errno_of(info) == errno.ENOENT
    assert (await sock.nodeinfo("foo:")).name == "foo"


async def test_path_through_invalid_node_is_enxio(graph: netgraph.Graph) -> None:
    a = graph.make_node("test_recorder")
    b = graph.mkpeer(a, "test_recorder", "out", "in")
    b._valid = False  # caught halfway through shutdown
    with pytest.raises(NetgraphError) as info:
        graph.resolve(a, "out")
    assert errno_of(info) == errno.ENXIO


# --------------------------------------------------------------------------------- lifecycle


async def test_connect_path_is_relative_to_receiving_node(
    graph: netgraph.Graph, sock: netgraph.Socket
) -> None:
    await sock.mkpeer(".", "hub", "h", "up")
    await sock.mkpeer("h", "echo", "e", "x")
    # CONNECT sent to the hub: "e" is the hub's hook, not ours.
    await sock.connect("h", "e", "again", "y")
    hub = graph.resolve(sock.node, "h")[0]
    assert set(hub.hooks) == {"up", "e", "again"}


async def test_a_node_may_connect_to_itself(sock: netgraph.Socket) -> None:
    await sock.connect(".", ".", "a", "b")
    await sock.send_data("a", b"loop")
    assert await sock.recv_data() == ("b", b"loop")


async def test_rmhook_of_missing_hook_succeeds(sock: netgraph.Socket) -> None:
    await sock.rmhook(".", "nothing")


async def test_last_hook_kills_but_socket_lingers(
    graph: netgraph.Graph, sock: netgraph.Socket
) -> None:
    await sock.mkpeer(".", "hole", "h", "in")
    hole_id = sock.node.hooks["h"].peer.node.id  # type: ignore[union-attr]
    await sock.rmhook(".", "h")
    assert hole_id not in graph.nodes
    assert sock.node.is_valid


async def test_shutdown_order(graph: netgraph.Graph) -> None:
    """close (still whole), then every hook goes, then shutdown (no hooks left)."""
    a = graph.make_node("test_recorder")
    b = graph.mkpeer(a, "test_recorder", "out", "in")
    graph.mkpeer(a, "test_recorder", "side", "in")
    assert isinstance(a, Recorder)
    del a.events[:]
    graph.rmnode(a)
    assert a.events == [
        ("close", ["out", "side"]),
        ("disconnect", "side"),
        ("disconnect", "out"),
        ("shutdown", []),
    ]
    assert a.id not in graph.nodes
    assert b.id not in graph.nodes  # its last hook went, and it does not linger


async def test_persistent_node_revives(graph: netgraph.Graph) -> None:
    class Persistent(Recorder):
        def shutdown(self) -> None:
            super().shutdown()
            self.revive()

    graph.types.register("test_persistent", Persistent)
    p = graph.make_node("test_persistent")
    graph.name_node(p, "keep")
    graph.mkpeer(p, "hole", "h", "in")
    graph.rmnode(p)
    assert graph.find("keep") is p
    assert p.hooks == {}
    assert p.is_valid
    graph.rmnode(p, really=True)
    assert p.id not in graph.nodes


async def test_listhooks_newest_first(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "hub", "h", "first")
    for name in ("second", "third"):
        await sock.connect(".", "h", name, name)
    hooks = await sock.listhooks("h")
    assert [link.ourhook for link in hooks.linkinfo] == ["third", "second", "first"]
    assert hooks.nodeinfo.hooks == 3
    assert hooks.linkinfo[0].nodeinfo.name == "sock"


async def test_listnodes_listnames_listtypes(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "hub", "h", "x")
    nodes = await sock.listnodes()
    assert [(i.type, i.id) for i in nodes.nodeinfo] == [("socket", 1), ("hub", 2)]
    assert nodes.numnames == 2
    names = await sock.listnames()
    assert [i.name for i in names.nodeinfo] == ["sock"]
    types = {t.typename: t.numnodes for t in (await sock.listtypes()).typeinfo}
    assert types["hub"] == 1
    assert types["socket"] == 1
    assert types["echo"] == 0


# ---------------------------------------------------------------------------------- messages


def test_generic_commands_have_freebsds_numbers() -> None:
    from netgraph.message import GENERIC_CMDLIST

    table = {c.name: c.cmd for c in GENERIC_CMDLIST}
    assert GENERIC_COOKIE == 1137070366
    assert table == {
        "shutdown": 1,
        "mkpeer": 2,
        "connect": 3,
        "name": 4,
        "rmhook": 5,
        "nodeinfo": 805306374,
        "listhooks": 805306375,
        "listnames": 805306376,
        "listnodes": 805306377,
        "listtypes": 805306378,
        "textstatus": 805306379,
        "binary2ascii": 805306380,
        "ascii2binary": 805306381,
        "textconfig": 14,
        "mknode": 0x20000040,  # ours (not FreeBSD's): far from their numbers
    }


def test_header_is_freebsds_56_bytes() -> None:
    msg = Message(GENERIC_COOKIE, NGM_LISTHOOKS, None, "listhooks", NGF_RESP, 77)
    data = pack_header(msg, 136)
    assert len(data) == HEADER.size == 56
    back, arglen = unpack_header(data)
    assert (back, arglen) == (msg, 136)
    assert data[0] == NG_VERSION
    assert int.from_bytes(data[8:12], "little") == 805306375


async def test_replies_are_matched_by_token(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "echo", "e", "x")
    reply = await sock.request("e", 1234, 99, "payload", cmdstr="custom")
    assert reply.is_response
    assert reply.args == "payload"
    assert (reply.typecookie, reply.cmd, reply.cmdstr) == (1234, 99, "custom")
    # A reply nobody waits for goes to the inbox with the sender's [id]: path.
    token = await sock.send_msg("e", Message(1234, 5, "late"))
    sender, msg = await sock.recv_msg()
    echo_id = sock.node.hooks["e"].peer.node.id  # type: ignore[union-attr]
    assert (sender, msg.token, msg.args) == (f"[{echo_id:x}]:", token, "late")


async def test_errors_come_back_from_the_send(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "hole", "h", "in")
    with pytest.raises(NetgraphError) as info:
        await sock.send_msg("h", Message(999, 1))
    assert errno_of(info) == errno.EINVAL
    assert not sock.node.msgs_in


async def test_text_status_goes_to_the_node(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "test_recorder", "r", "in")
    rec = graph.resolve(sock.node, "r")[0]
    assert isinstance(rec, Recorder)
    await sock.send_msg("r", Message(GENERIC_COOKIE, NGM_TEXT_STATUS))
    await sock.send_msg("r", Message(GENERIC_COOKIE, NGM_TEXT_CONFIG, None))
    assert [e[1] for e in rec.events if e[0] == "rcvmsg"] == [NGM_TEXT_STATUS, NGM_TEXT_CONFIG]
    with pytest.raises(NetgraphError) as info:
        await sock.send_msg("r", Message(GENERIC_COOKIE, 55))
    assert errno_of(info) == errno.EINVAL


async def test_message_arrives_with_lasthook(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "test_recorder", "r", "in")
    rec = graph.resolve(sock.node, "r")[0]
    assert isinstance(rec, Recorder)
    await sock.send_msg("r", Message(5, 1))
    await sock.send_msg(f"[{rec.id:x}]:", Message(5, 2))
    assert [e for e in rec.events if e[0] == "rcvmsg"] == [("rcvmsg", 1, "in"), ("rcvmsg", 2, None)]


async def test_wrong_version_and_wrong_args(sock: netgraph.Socket) -> None:
    with pytest.raises(NetgraphError) as info:
        await sock.send_msg(".", Message(GENERIC_COOKIE, NGM_NODEINFO, version=4))
    assert errno_of(info) == errno.EINVAL
    with pytest.raises(NetgraphError) as info:
        await sock.send_msg(".", Message(GENERIC_COOKIE, 2, "not mkpeer args"))
    assert errno_of(info) == errno.EINVAL


async def test_nodeinfo_of_self(sock: netgraph.Socket) -> None:
    assert await sock.nodeinfo() == NodeInfo("sock", "socket", sock.id, 0)


# -------------------------------------------------------------------------------------- data


async def test_tagged_items_keep_their_tags(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "echo", "e", "x")
    item = netgraph.tag(b"data", src="inet/127.0.0.1:80")
    await sock.send_data("e", item)
    _, back = await sock.recv_data()
    assert back == b"data"
    assert netgraph.tags_of(back) == {"src": "inet/127.0.0.1:80"}
    assert netgraph.tags_of(b"plain") == {}
    more = netgraph.tag(back, dst=1)
    assert dict(netgraph.tags_of(more)) == {"src": "inet/127.0.0.1:80", "dst": 1}


async def test_a_batch_travels_as_a_batch(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "test_recorder", "r", "in")
    rec = graph.resolve(sock.node, "r")[0]
    graph.mkpeer(rec, "test_recorder", "out", "in")
    last = rec.hooks["out"].peer.node  # type: ignore[union-attr]
    assert isinstance(rec, Recorder)
    assert isinstance(last, Recorder)
    await sock.send_batch("r", [b"1", b"2", b"3"])
    assert ("rcvbatch", "in", 3) in rec.events
    assert [i for _, i in last.received] == [b"1", b"2", b"3"]


async def test_socket_data_addressing(sock: netgraph.Socket) -> None:
    with pytest.raises(NetgraphError) as info:
        await sock.send_data(None, b"x")
    assert errno_of(info) == errno.EDESTADDRREQ
    await sock.mkpeer(".", "echo", "only", "x")
    await sock.send_data(None, b"to the only hook")
    assert await sock.recv_data() == ("only", b"to the only hook")
    with pytest.raises(NetgraphError) as info:
        await sock.send_data("missing", b"x")
    assert errno_of(info) == errno.EHOSTUNREACH
    with pytest.raises(NetgraphError) as info:
        await sock.send_data("h" * 32, b"x")
    assert errno_of(info) == errno.EINVAL
