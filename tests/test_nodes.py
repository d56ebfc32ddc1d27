"""The node types echo, hole, hub, tee and one2many, through the embedding API (spec 6, 1.10).

Every ``send_data`` / ``send_batch`` returns once its whole chain has run, so what the socket node
received by then is everything the send produced: :func:`received` reads exactly that, and the
tests compare it (hooks, payloads and order) with what FreeBSD's node would have sent.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

import netgraph
from netgraph import Message, NetgraphError
from netgraph.message import GENERIC_COOKIE, NGF_RESP, NGM_TEXT_STATUS
from nodes.hole import (
    HOLE_COOKIE,
    NGM_HOLE_CLR_STATS,
    NGM_HOLE_GET_STATS,
    NGM_HOLE_GETCLR_STATS,
    HoleHookStats,
)
from nodes.hub import HUB_COOKIE, NGM_HUB_SET_PERSISTENT
from nodes.one2many import (
    MAX_LINKS,
    NGM_ONE2MANY_CLR_STATS,
    NGM_ONE2MANY_GET_CONFIG,
    NGM_ONE2MANY_GET_STATS,
    NGM_ONE2MANY_GETCLR_STATS,
    NGM_ONE2MANY_SET_CONFIG,
    ONE2MANY_COOKIE,
    One2ManyConfig,
    One2ManyLinkStats,
)
from nodes.tee import (
    NGM_TEE_CLR_STATS,
    NGM_TEE_GET_STATS,
    NGM_TEE_GETCLR_STATS,
    TEE_COOKIE,
    TeeHookStats,
    TeeStats,
)
from tests.conftest import Recorder

# ----------------------------------------------------------------------------------- helpers


async def received(sock: netgraph.Socket) -> list[tuple[str, bytes]]:
    """Everything the socket node has received and not yet read, in arrival order."""
    out = []
    while sock.pending_data():
        hook, item = await sock.recv_data()
        out.append((hook, bytes(item)))
    return out


async def ask(sock: netgraph.Socket, path: str, cookie: int, cmd: int, args: Any = None) -> Any:
    """Send a message that has a reply and return the reply's arguments."""
    reply = await sock.request(path, cookie, cmd, args)
    assert reply.is_response
    assert (reply.typecookie, reply.cmd) == (cookie, cmd)
    return reply.args


async def tell(sock: netgraph.Socket, path: str, cookie: int, cmd: int, args: Any = None) -> None:
    """Send a message that has no reply; returns once it has been applied (errors raise)."""
    await sock.send_msg(path, Message(cookie, cmd, args, f"cmd{cmd}"))


async def expect_errno(code: int, call: Any) -> NetgraphError:
    """Await ``call`` and check it fails with NetgraphError ``code``."""
    with pytest.raises(NetgraphError) as info:
        await call
    assert info.value.errno == code, info.value
    return info.value


async def gone(sock: netgraph.Socket, path: str) -> None:
    """The node at ``path`` no longer exists (ENOENT on nodeinfo)."""
    await expect_errno(errno.ENOENT, sock.nodeinfo(path))


# -------------------------------------------------------------------------------------- echo


async def test_echo_returns_data_out_the_hook_it_came_in_on(sock: netgraph.Socket) -> None:
    """ng_echo: data goes back out the hook it arrived on, on every hook independently."""
    await sock.mkpeer(".", "echo", "a", "one")
    await sock.connect(".", "a", "b", "two")
    await sock.send_data("a", b"ping")
    assert await received(sock) == [("a", b"ping")]
    await sock.send_data("b", b"pong")
    await sock.send_data("a", b"again")
    assert await received(sock) == [("b", b"pong"), ("a", b"again")]


async def test_echo_returns_a_message_as_its_response(sock: netgraph.Socket) -> None:
    """ng_echo: a non-generic message comes back as its own response (NGF_RESP, same args)."""
    await sock.mkpeer(".", "echo", "e", "e")
    echo_id = (await sock.nodeinfo("e")).id
    reply = await sock.request("e", 12345, 7, args="x", cmdstr="cmd7")
    assert (reply.typecookie, reply.cmd, reply.args, reply.cmdstr) == (12345, 7, "x", "cmd7")
    assert reply.flags == NGF_RESP
    # Unwaited for, the response lands in the inbox with the request's token and echo's [id]:.
    token = await sock.send_msg("e", Message(12345, 7, "x", "cmd7"))
    sender, msg = await sock.recv_msg()
    assert sender == f"[{echo_id:x}]:"
    assert (msg.typecookie, msg.cmd, msg.args, msg.token) == (12345, 7, "x", token)
    assert msg.flags & NGF_RESP


async def test_echo_returns_text_status(sock: netgraph.Socket) -> None:
    """ng_echo: TEXT_STATUS is forwarded to the node by the base and echoed as the response."""
    await sock.mkpeer(".", "echo", "e", "e")
    token = await sock.send_msg("e", Message(GENERIC_COOKIE, NGM_TEXT_STATUS, None, "textstatus"))
    _, msg = await sock.recv_msg()
    assert (msg.typecookie, msg.cmd, msg.token, msg.args) == (
        GENERIC_COOKIE,
        NGM_TEXT_STATUS,
        token,
        None,
    )
    assert msg.is_response


async def test_echo_dies_with_its_last_hook(sock: netgraph.Socket) -> None:
    """ng_echo shuts down when its last hook disconnects."""
    await sock.mkpeer(".", "echo", "a", "one")
    await sock.connect(".", "a", "b", "two")
    await sock.name_node("a", "mirror")
    await sock.rmhook(".", "a")
    assert (await sock.nodeinfo("mirror:")).hooks == 1
    await sock.rmhook(".", "b")
    await gone(sock, "mirror:")


# -------------------------------------------------------------------------------------- hole


async def test_hole_swallows_data_and_counts_per_hook(sock: netgraph.Socket) -> None:
    """ng_hole: data disappears; getstats "hook" gives frames/octets for that hook only."""
    await sock.mkpeer(".", "hole", "h", "in")
    await sock.name_node("h", "hole")
    await sock.connect(".", "hole:", "h2", "other")
    await sock.send_data("h", b"abc")
    await sock.send_data("h", b"defgh")
    await sock.send_data("h2", b"z")
    assert await received(sock) == []
    assert await ask(sock, "hole:", HOLE_COOKIE, NGM_HOLE_GET_STATS, "in") == HoleHookStats(2, 8)
    assert await ask(sock, "hole:", HOLE_COOKIE, NGM_HOLE_GET_STATS, "other") == HoleHookStats(1, 1)
    # getstats does not clear.
    assert await ask(sock, "hole:", HOLE_COOKIE, NGM_HOLE_GET_STATS, "in") == HoleHookStats(2, 8)


async def test_hole_clrstats_and_getclrstats(sock: netgraph.Socket) -> None:
    """ng_hole: clrstats zeroes a hook's counters; getclrstats returns them, then zeroes."""
    await sock.mkpeer(".", "hole", "h", "in")
    await sock.connect(".", "h", "h2", "other")
    await sock.send_data("h", b"12345")
    await sock.send_data("h2", b"123")
    assert await ask(sock, "h", HOLE_COOKIE, NGM_HOLE_GETCLR_STATS, "in") == HoleHookStats(1, 5)
    assert await ask(sock, "h", HOLE_COOKIE, NGM_HOLE_GET_STATS, "in") == HoleHookStats(0, 0)
    assert await ask(sock, "h", HOLE_COOKIE, NGM_HOLE_GET_STATS, "other") == HoleHookStats(1, 3)
    await tell(sock, "h", HOLE_COOKIE, NGM_HOLE_CLR_STATS, "other")
    assert await ask(sock, "h", HOLE_COOKIE, NGM_HOLE_GET_STATS, "other") == HoleHookStats(0, 0)
    await sock.send_data("h", b"xy")
    assert await ask(sock, "h", HOLE_COOKIE, NGM_HOLE_GET_STATS, "in") == HoleHookStats(1, 2)


async def test_hole_counts_batches(sock: netgraph.Socket) -> None:
    """ng_hole: a batch counts one frame per item and all their octets."""
    await sock.mkpeer(".", "hole", "h", "in")
    await sock.send_batch("h", [b"a", b"bb", b"ccc"])
    await sock.send_data("h", b"dddd")
    assert await ask(sock, "h", HOLE_COOKIE, NGM_HOLE_GET_STATS, "in") == HoleHookStats(4, 10)


@pytest.mark.parametrize("cmd", [NGM_HOLE_GET_STATS, NGM_HOLE_CLR_STATS, NGM_HOLE_GETCLR_STATS])
async def test_hole_stats_errors(sock: netgraph.Socket, cmd: int) -> None:
    """ng_hole: an unknown hook name is ENOENT, an argument that is not a hook name EINVAL."""
    await sock.mkpeer(".", "hole", "h", "in")
    await expect_errno(errno.ENOENT, tell(sock, "h", HOLE_COOKIE, cmd, "nosuchhook"))
    await expect_errno(errno.EINVAL, tell(sock, "h", HOLE_COOKIE, cmd, 0))
    await expect_errno(errno.EINVAL, tell(sock, "h", HOLE_COOKIE, cmd, None))
    assert not sock.node.msgs_in  # a failed request produces no reply


# --------------------------------------------------------------------------------------- hub


async def hub_with(sock: netgraph.Socket, *hooks: str) -> None:
    """A hub named "hub" linked to each of ``hooks`` on the socket (same hook names)."""
    first, *rest = hooks
    await sock.mkpeer(".", "hub", first, first)
    await sock.name_node(first, "hub")
    for hook in rest:
        await sock.connect(".", "hub:", hook, hook)


async def test_hub_floods_to_every_other_hook(sock: netgraph.Socket) -> None:
    """ng_hub: a packet goes out every other hook, once each, never back out the arrival hook."""
    await hub_with(sock, "a", "b", "c", "d")
    for src in "abcd":
        await sock.send_data(src, src.encode())
        got = await received(sock)
        assert sorted(got) == [(h, src.encode()) for h in "abcd" if h != src]


async def test_hub_after_rmhook_floods_to_the_rest(sock: netgraph.Socket) -> None:
    """ng_hub: after rmhook, only the remaining hooks get copies."""
    await hub_with(sock, "a", "b", "c")
    await sock.rmhook(".", "b")
    await sock.send_data("a", b"x")
    assert await received(sock) == [("c", b"x")]
    assert (await sock.nodeinfo("hub:")).hooks == 2


async def test_hub_setpersistent_survives_losing_its_last_hook(sock: netgraph.Socket) -> None:
    """ng_hub: setpersistent keeps the node when its last hook goes; shutdown still kills it."""
    await hub_with(sock, "a")
    await tell(sock, "hub:", HUB_COOKIE, NGM_HUB_SET_PERSISTENT)
    await sock.rmhook(".", "a")
    info = await sock.nodeinfo("hub:")
    assert (info.type, info.hooks) == ("hub", 0)
    await sock.connect(".", "hub:", "b", "b")  # still usable
    assert (await sock.nodeinfo("hub:")).hooks == 1
    await sock.shutdown("hub:")
    await gone(sock, "hub:")


async def test_hub_without_persistence_dies_with_its_last_hook(sock: netgraph.Socket) -> None:
    """ng_hub: by default the hub shuts down when its last hook disconnects."""
    await hub_with(sock, "a", "b")
    await sock.rmhook(".", "a")
    assert (await sock.nodeinfo("hub:")).hooks == 1
    await sock.rmhook(".", "b")
    await gone(sock, "hub:")


# --------------------------------------------------------------------------------------- tee


async def tee_with(sock: netgraph.Socket, *hooks: str) -> None:
    """A tee named "tee" whose ``hooks`` each link to the socket hook of the same name."""
    first, *rest = hooks
    await sock.mkpeer(".", "tee", first, first)
    await sock.name_node(first, "tee")
    for hook in rest:
        await sock.connect(".", "tee:", hook, hook)


ALL_TEE_HOOKS = ("right", "left", "right2left", "left2right")


async def test_tee_routes(sock: netgraph.Socket) -> None:
    """ng_tee: right->left plus a copy to right2left, left->right plus a copy to left2right;
    right2left->right and left2right->left (as ng_tee.c and ng_tee(4) do; spec section 6 has
    these two the other way round). The copy goes first, as in FreeBSD's rcvdata."""
    await tee_with(sock, *ALL_TEE_HOOKS)
    await sock.send_data("right", b"R")
    assert await received(sock) == [("right2left", b"R"), ("left", b"R")]
    await sock.send_data("left", b"L")
    assert await received(sock) == [("left2right", b"L"), ("right", b"L")]
    await sock.send_data("right2left", b"r2l")
    assert await received(sock) == [("right", b"r2l")]
    await sock.send_data("left2right", b"l2r")
    assert await received(sock) == [("left", b"l2r")]


async def test_tee_without_left_sends_right_data_to_right2left(sock: netgraph.Socket) -> None:
    """ng_tee: with no left hook, data from right goes to right2left (and vice versa)."""
    await tee_with(sock, "right", "right2left")
    await sock.send_data("right", b"R")
    assert await received(sock) == [("right2left", b"R")]
    await sock.connect(".", "tee:", "left", "left")
    await sock.send_data("right", b"R2")
    assert await received(sock) == [("right2left", b"R2"), ("left", b"R2")]
    await sock.rmhook(".", "left")
    await sock.send_data("right", b"R3")
    assert await received(sock) == [("right2left", b"R3")]


async def test_tee_without_right_sends_left_data_to_left2right(sock: netgraph.Socket) -> None:
    """ng_tee: with no right hook, data from left goes to left2right."""
    await tee_with(sock, "left", "left2right")
    await sock.send_data("left", b"L")
    assert await received(sock) == [("left2right", b"L")]


async def test_tee_with_no_destination_drops_silently(sock: netgraph.Socket) -> None:
    """ng_tee: data with nowhere to go is freed without an error."""
    await tee_with(sock, "right")
    await sock.send_data("right", b"lost")
    assert await received(sock) == []
    stats = await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS)
    assert stats.right == TeeHookStats(4, 1, 0, 0)


async def test_tee_getstats_matches_freebsd_accounting(sock: netgraph.Socket) -> None:
    """ng_tee: in-stats on the arrival hook, out-stats on the destination and on the copy."""
    await tee_with(sock, *ALL_TEE_HOOKS)
    await sock.send_data("right", b"abc")  # right in, right2left out (copy), left out
    await sock.send_data("left", b"hello")  # left in, left2right out (copy), right out
    await sock.send_data("right2left", b"xy")  # right2left in, right out
    await sock.send_data("left2right", b"z")  # left2right in, left out
    await received(sock)
    stats = await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS)
    assert stats == TeeStats(
        right=TeeHookStats(inOctets=3, inFrames=1, outOctets=7, outFrames=2),
        left=TeeHookStats(inOctets=5, inFrames=1, outOctets=4, outFrames=2),
        right2left=TeeHookStats(inOctets=2, inFrames=1, outOctets=3, outFrames=1),
        left2right=TeeHookStats(inOctets=1, inFrames=1, outOctets=5, outFrames=1),
    )
    # getstats does not clear
    assert await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS) == stats


async def test_tee_failed_copy_is_not_counted_failed_forward_is(sock: netgraph.Socket) -> None:
    """ng_tee: a copy counts as out only if its send succeeded, and its failure does not stop
    the original; the destination's out-stats count before forwarding, even if that fails."""
    await tee_with(sock, "right", "left")
    # A one2many with no many links fails every packet from "one" with ENOTCONN.
    await sock.mkpeer("tee:", "one2many", "right2left", "one")
    await sock.send_data("right", b"abcd")
    assert await received(sock) == [("left", b"abcd")]
    stats = await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS)
    assert stats.right2left == TeeHookStats(0, 0, 0, 0)
    assert stats.left == TeeHookStats(0, 0, 4, 1)

    await sock.rmhook(".", "left")
    await sock.mkpeer("tee:", "one2many", "left", "one")
    await sock.connect(".", "tee:", "left2right", "left2right")
    await expect_errno(errno.ENOTCONN, sock.send_data("right", b"xyz"))
    stats = await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS)
    assert stats.left == TeeHookStats(0, 0, 3, 1)  # a new hook: its counters started at zero
    assert stats.right == TeeHookStats(7, 2, 0, 0)


async def test_tee_clrstats_and_getclrstats(sock: netgraph.Socket) -> None:
    """ng_tee: getclrstats returns the counters and zeroes them all; clrstats zeroes them."""
    await tee_with(sock, *ALL_TEE_HOOKS)
    await sock.send_data("right", b"abc")
    await received(sock)
    first = await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GETCLR_STATS)
    assert first == TeeStats(
        right=TeeHookStats(3, 1, 0, 0),
        left=TeeHookStats(0, 0, 3, 1),
        right2left=TeeHookStats(0, 0, 3, 1),
    )
    assert await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS) == TeeStats()
    await sock.send_data("left", b"hello")
    await received(sock)
    await tell(sock, "tee:", TEE_COOKIE, NGM_TEE_CLR_STATS)
    assert await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS) == TeeStats()
    assert not sock.node.msgs_in  # clrstats has no reply


@pytest.mark.parametrize("name", ["middle", "Left", "right2", "one"])
async def test_tee_rejects_other_hook_names(sock: netgraph.Socket, name: str) -> None:
    """ng_tee: only right, left, right2left and left2right; any other name is EINVAL."""
    await expect_errno(errno.EINVAL, sock.mkpeer(".", "tee", "t", name))
    assert "t" not in sock.node.hooks
    await tee_with(sock, "right")
    await expect_errno(errno.EINVAL, sock.connect(".", "tee:", "t", name))
    assert (await sock.nodeinfo("tee:")).hooks == 1


async def test_tee_shutdown_splices_left_and_right(sock: netgraph.Socket) -> None:
    """ng_tee: shutting down a tee with left and right hooked links their peers together
    (close + ng_bypass); the tee is gone and a node only it was hooked to dies with it."""
    await tee_with(sock, "left", "right")
    await sock.mkpeer("tee:", "hole", "right2left", "in")
    await sock.name_node("tee:right2left", "tap")
    await sock.shutdown("tee:")
    await gone(sock, "tee:")
    await gone(sock, "tap:")
    await sock.send_data("left", b"direct")
    assert await received(sock) == [("right", b"direct")]
    await sock.send_data("right", b"back")
    assert await received(sock) == [("left", b"back")]
    hooks = await sock.listhooks()
    links = sorted((li.ourhook, li.peerhook, li.nodeinfo.id) for li in hooks.linkinfo)
    assert links == [("left", "right", sock.id), ("right", "left", sock.id)]


async def test_tee_shutdown_without_both_sides_just_dies(sock: netgraph.Socket) -> None:
    """ng_tee: with only one of left/right there is nothing to splice; the hooks just go."""
    await tee_with(sock, "left", "left2right")
    await sock.shutdown("tee:")
    await gone(sock, "tee:")
    assert sock.node.hooks == {}


# ---------------------------------------------------------------------------------- one2many


async def mux_with(sock: netgraph.Socket, links: int) -> None:
    """A one2many named "mux": its "one" and many0..many<links-1> on same-named socket hooks."""
    await sock.mkpeer(".", "one2many", "one", "one")
    await sock.name_node("one", "mux")
    for n in range(links):
        await sock.connect(".", "mux:", f"many{n}", f"many{n}")


def config(xmit: int = 1, fail: int = 1, enabled: tuple[int, ...] = ()) -> One2ManyConfig:
    links = [0] * MAX_LINKS
    for n in enabled:
        links[n] = 1
    return One2ManyConfig(xmitAlg=xmit, failAlg=fail, enabledLinks=tuple(links))


async def setconfig(sock: netgraph.Socket, conf: Any) -> None:
    await tell(sock, "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_SET_CONFIG, conf)


async def link_stats(sock: netgraph.Socket, link: int, cmd: int = NGM_ONE2MANY_GET_STATS) -> Any:
    return await ask(sock, "mux:", ONE2MANY_COOKIE, cmd, link)


async def test_one2many_new_links_are_enabled(sock: netgraph.Socket) -> None:
    """ng_one2many: round-robin/manual by default; a new many link is auto-enabled."""
    await mux_with(sock, 2)
    await sock.connect(".", "mux:", "many5", "many5")
    assert await ask(sock, "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_GET_CONFIG) == config(
        1, 1, (0, 1, 5)
    )


async def test_one2many_round_robin(sock: netgraph.Socket) -> None:
    """ng_one2many: xmitAlg 1 sends packets from one to the enabled links in turn."""
    await mux_with(sock, 3)
    for n in range(7):
        await sock.send_data("one", b"%d" % n)
    assert await received(sock) == [
        ("many0", b"0"),
        ("many1", b"1"),
        ("many2", b"2"),
        ("many0", b"3"),
        ("many1", b"4"),
        ("many2", b"5"),
        ("many0", b"6"),
    ]


async def test_one2many_round_robin_skips_disabled_links(sock: netgraph.Socket) -> None:
    """ng_one2many: a link disabled in enabledLinks gets nothing; enabled links without a hook
    are not active either."""
    await mux_with(sock, 3)
    await setconfig(sock, config(1, 1, (0, 2, 7)))
    for n in range(4):
        await sock.send_data("one", b"%d" % n)
    assert await received(sock) == [
        ("many0", b"0"),
        ("many2", b"1"),
        ("many0", b"2"),
        ("many2", b"3"),
    ]


async def test_one2many_xmit_all(sock: netgraph.Socket) -> None:
    """ng_one2many: xmitAlg 2 sends a copy of each packet to every enabled link."""
    await mux_with(sock, 3)
    await setconfig(sock, config(2, 1, (0, 1, 2)))
    await sock.send_data("one", b"all")
    assert sorted(await received(sock)) == [("many0", b"all"), ("many1", b"all"), ("many2", b"all")]
    await setconfig(sock, config(2, 1, (0, 2)))
    await sock.send_data("one", b"some")
    assert sorted(await received(sock)) == [("many0", b"some"), ("many2", b"some")]
    for link in (0, 2):
        assert await link_stats(sock, link) == One2ManyLinkStats(0, 0, 7, 2)
    assert await link_stats(sock, 1) == One2ManyLinkStats(0, 0, 3, 1)
    assert await link_stats(sock, -1) == One2ManyLinkStats(7, 2, 0, 0)


async def test_one2many_failover(sock: netgraph.Socket) -> None:
    """ng_one2many: xmitAlg 3 sends everything to the first enabled link."""
    await mux_with(sock, 3)
    await setconfig(sock, config(3, 1, (0, 1, 2)))
    await sock.send_data("one", b"a")
    await sock.send_data("one", b"b")
    assert await received(sock) == [("many0", b"a"), ("many0", b"b")]
    await setconfig(sock, config(3, 1, (1, 2)))
    await sock.send_data("one", b"c")
    await sock.send_data("one", b"d")
    assert await received(sock) == [("many1", b"c"), ("many1", b"d")]


async def test_one2many_many_to_one(sock: netgraph.Socket) -> None:
    """ng_one2many: data from any many link goes out one, whatever the xmit algorithm."""
    await mux_with(sock, 3)
    await sock.send_data("many2", b"up")
    await sock.send_data("many0", b"up0")
    assert await received(sock) == [("one", b"up"), ("one", b"up0")]
    # A disabled link still delivers towards one.
    await setconfig(sock, config(3, 1, (0,)))
    await sock.send_data("many1", b"from disabled")
    assert await received(sock) == [("one", b"from disabled")]


@pytest.mark.parametrize(
    ("xmit", "fail"),
    [(0, 1), (4, 1), (-1, 1), (1, 0), (1, 3), (2, 99)],
)
async def test_one2many_setconfig_validation(sock: netgraph.Socket, xmit: int, fail: int) -> None:
    """ng_one2many: setconfig with an unknown xmitAlg or failAlg is EINVAL and changes nothing."""
    await mux_with(sock, 2)
    before = await ask(sock, "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_GET_CONFIG)
    await expect_errno(errno.EINVAL, setconfig(sock, config(xmit, fail, (1,))))
    assert await ask(sock, "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_GET_CONFIG) == before


async def test_one2many_setconfig_needs_a_config(sock: netgraph.Socket) -> None:
    """ng_one2many: setconfig whose argument is not a config is EINVAL."""
    await mux_with(sock, 1)
    await expect_errno(errno.EINVAL, setconfig(sock, None))
    await expect_errno(errno.EINVAL, setconfig(sock, (2, 1)))
    with pytest.raises(NetgraphError) as info:
        One2ManyConfig(enabledLinks=(1,) * 63)
    assert info.value.errno == errno.EINVAL


async def test_one2many_setconfig_normalises_enabled_links(sock: netgraph.Socket) -> None:
    """ng_one2many: enabledLinks values are normalised to 0/1 (FreeBSD's !!)."""
    await mux_with(sock, 2)
    links = [0] * MAX_LINKS
    links[1] = 7
    await setconfig(sock, One2ManyConfig(2, 2, tuple(links)))
    assert await ask(sock, "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_GET_CONFIG) == config(2, 2, (1,))


async def test_one2many_stats(sock: netgraph.Socket) -> None:
    """ng_one2many: per-link recv/xmit counters; link -1 is one, N is manyN."""
    await mux_with(sock, 2)
    await sock.send_data("one", b"abc")  # -> many0
    await sock.send_data("one", b"defgh")  # -> many1
    await sock.send_data("many1", b"wxyz")  # -> one
    await received(sock)
    assert await link_stats(sock, -1) == One2ManyLinkStats(
        recvOctets=8, recvPackets=2, xmitOctets=4, xmitPackets=1, memoryFailures=0
    )
    assert await link_stats(sock, 0) == One2ManyLinkStats(0, 0, 3, 1, 0)
    assert await link_stats(sock, 1) == One2ManyLinkStats(4, 1, 5, 1, 0)
    assert await link_stats(sock, 63) == One2ManyLinkStats()

    assert await link_stats(sock, 1, NGM_ONE2MANY_GETCLR_STATS) == One2ManyLinkStats(4, 1, 5, 1)
    assert await link_stats(sock, 1) == One2ManyLinkStats()
    assert await link_stats(sock, -1) == One2ManyLinkStats(8, 2, 4, 1)  # only link 1 cleared
    await tell(sock, "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_CLR_STATS, -1)
    assert await link_stats(sock, -1) == One2ManyLinkStats()
    assert await link_stats(sock, 0) == One2ManyLinkStats(0, 0, 3, 1)


@pytest.mark.parametrize(
    "cmd", [NGM_ONE2MANY_GET_STATS, NGM_ONE2MANY_CLR_STATS, NGM_ONE2MANY_GETCLR_STATS]
)
@pytest.mark.parametrize("link", [-2, 64, 1000, "0", None])
async def test_one2many_stats_bad_link(sock: netgraph.Socket, cmd: int, link: Any) -> None:
    """ng_one2many: a link number outside -1..63 (or not a number) is EINVAL."""
    await mux_with(sock, 1)
    await expect_errno(errno.EINVAL, tell(sock, "mux:", ONE2MANY_COOKIE, cmd, link))


@pytest.mark.parametrize("name", ["many64", "many01", "other", "many", "many-1", "One", "many1x"])
async def test_one2many_bad_hook_names(sock: netgraph.Socket, name: str) -> None:
    """ng_one2many: only one and many0..many63 (no leading zeros); anything else is EINVAL."""
    await expect_errno(errno.EINVAL, sock.mkpeer(".", "one2many", "m", name))
    await mux_with(sock, 0)
    await expect_errno(errno.EINVAL, sock.connect(".", "mux:", "m", name))
    assert (await sock.nodeinfo("mux:")).hooks == 1


async def test_one2many_highest_link_is_many63(sock: netgraph.Socket) -> None:
    """ng_one2many: many63 is a valid link and can be used."""
    await mux_with(sock, 0)
    await sock.connect(".", "mux:", "many63", "many63")
    await sock.send_data("one", b"x")
    assert await received(sock) == [("many63", b"x")]


async def test_one2many_no_link_is_enotconn(sock: netgraph.Socket) -> None:
    """ng_one2many: data from one with no active many link fails with ENOTCONN to the sender."""
    await mux_with(sock, 0)
    await expect_errno(errno.ENOTCONN, sock.send_data("one", b"x"))
    await sock.connect(".", "mux:", "many0", "many0")
    await setconfig(sock, config(1, 1, ()))
    await expect_errno(errno.ENOTCONN, sock.send_data("one", b"y"))
    assert await received(sock) == []
    assert (await link_stats(sock, -1)).recvPackets == 2  # counted on receipt, as FreeBSD does


async def test_one2many_dies_with_its_last_hook(sock: netgraph.Socket) -> None:
    """ng_one2many shuts down when its last hook disconnects."""
    await mux_with(sock, 1)
    await sock.rmhook(".", "one")
    assert (await sock.nodeinfo("mux:")).hooks == 1
    await sock.rmhook(".", "many0")
    await gone(sock, "mux:")


async def test_one2many_rmhook_disables_link(sock: netgraph.Socket) -> None:
    """ng_one2many: disconnecting a many link clears its enabledLinks entry."""
    await mux_with(sock, 3)
    await sock.rmhook(".", "many1")
    conf = await ask(sock, "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_GET_CONFIG)
    assert conf == config(1, 1, (0, 2))


async def test_one2many_round_robin_restarts_after_a_full_round(sock: netgraph.Socket) -> None:
    """ng_one2many: after a complete round the next packet goes to the first active link, even
    when the set of active links has just changed."""
    await mux_with(sock, 3)
    for n in range(3):
        await sock.send_data("one", b"%d" % n)
    assert [h for h, _ in await received(sock)] == ["many0", "many1", "many2"]
    await setconfig(sock, config(1, 1, (0, 1)))
    await sock.send_data("one", b"3")
    await sock.send_data("one", b"4")
    assert await received(sock) == [("many0", b"3"), ("many1", b"4")]


# ------------------------------------------------------------------------------------ batches


async def test_batch_through_echo(sock: netgraph.Socket) -> None:
    """A batch sent to echo comes back out the same hook, every item, in order."""
    await sock.mkpeer(".", "echo", "e", "e")
    await sock.send_batch("e", [b"1", b"22", b"333"])
    assert await received(sock) == [("e", b"1"), ("e", b"22"), ("e", b"333")]


async def test_batch_through_hub(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    """A batch into a hub reaches every other hook, whole, and not the arrival hook."""
    await hub_with(sock, "a", "b", "c")
    await sock.send_batch("a", [b"1", b"2", b"3"])
    got = await received(sock)
    assert sorted(got) == sorted([(h, i) for h in "bc" for i in (b"1", b"2", b"3")])
    assert [i for h, i in got if h == "b"] == [b"1", b"2", b"3"]
    # It travels as one batch: a recorder behind the hub gets a single rcvbatch of 3.
    await sock.mkpeer("hub:", "test_recorder", "rec", "in")
    rec = graph.resolve(sock.node, "hub:rec")[0]
    assert isinstance(rec, Recorder)
    await sock.send_batch("a", [b"4", b"5", b"6"])
    assert len(await received(sock)) == 6
    assert [e for e in rec.events if e[0] == "rcvbatch"] == [("rcvbatch", "in", 3)]
    assert rec.received == [("in", b"4"), ("in", b"5"), ("in", b"6")]


async def test_batch_through_tee(sock: netgraph.Socket) -> None:
    """A batch into a tee goes to the destination and the copy hook, and counts per item."""
    await tee_with(sock, *ALL_TEE_HOOKS)
    await sock.send_batch("right", [b"ab", b"cde"])
    got = await received(sock)
    assert [i for h, i in got if h == "left"] == [b"ab", b"cde"]
    assert [i for h, i in got if h == "right2left"] == [b"ab", b"cde"]
    assert len(got) == 4
    stats = await ask(sock, "tee:", TEE_COOKIE, NGM_TEE_GET_STATS)
    assert stats == TeeStats(
        right=TeeHookStats(5, 2, 0, 0),
        left=TeeHookStats(0, 0, 5, 2),
        right2left=TeeHookStats(0, 0, 5, 2),
    )


async def test_batch_through_hole_then_hub_counts(sock: netgraph.Socket) -> None:
    """A batch through a hub into a hole counts every item at the hole."""
    await hub_with(sock, "a", "b")
    await sock.mkpeer("hub:", "hole", "sink", "in")
    await sock.send_batch("a", [b"x" * n for n in range(1, 6)])
    assert len(await received(sock)) == 5
    assert await ask(sock, "hub:sink", HOLE_COOKIE, NGM_HOLE_GET_STATS, "in") == HoleHookStats(
        5, 15
    )


async def test_batch_through_one2many(sock: netgraph.Socket) -> None:
    """A batch into one2many is handled item by item (round-robin per packet)."""
    await mux_with(sock, 2)
    await sock.send_batch("one", [b"0", b"1", b"2"])
    assert await received(sock) == [("many0", b"0"), ("many1", b"1"), ("many0", b"2")]
