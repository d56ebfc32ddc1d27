"""The graph daemon (spec 10.10) and its client: clients, frames, errors, security, signals."""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from netgraph import wire
from netgraph.ascii import ParseError
from netgraph.daemon import Daemon, PeerCredentials, check_peer, peer_credentials, serve
from netgraph.errors import NetgraphError
from netgraph.graph import open_graph
from netgraph.message import GENERIC_COOKIE, NGF_RESP, NGM_TEXT_CONFIG, Message, NameList
from netgraph.remote import RemoteSocket, connect
from nodes.echo import ECHO_COOKIE

ROOT = Path(__file__).parent.parent


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "ng.sock"


@pytest.fixture
async def daemon(sock_path: Path, nursery: trio.Nursery) -> Daemon:
    started: Daemon = await nursery.start(serve, sock_path)
    return started


def names(nodes: NameList) -> dict[str, str]:
    return {info.name: info.type for info in nodes.nodeinfo if info.name}


# ----------------------------------------------------------------- a raw protocol client


class Raw:
    """A client speaking the frames by hand, for what RemoteSocket never sends."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames = wire.FrameReader()
        self.backlog: list[tuple[int, bytes]] = []

    @classmethod
    async def open(cls, path: Path, name: str = "") -> Raw:
        raw = cls(await trio.open_unix_socket(path))
        await raw.stream.send_all(wire.pack_hello(name))
        kind, body = await raw.next()
        assert kind == wire.WELCOME
        assert wire.unpack_welcome(body)[0] == wire.VERSION
        return raw

    async def next(self) -> tuple[int, bytes]:
        while not self.backlog:
            data = await self.stream.receive_some(65536)
            assert data, "the daemon closed the connection"
            self.backlog += self.frames.feed(data)
        return self.backlog.pop(0)

    async def until_closed(self) -> list[tuple[int, bytes]]:
        """Every frame up to the end of the stream (the daemon dropped us)."""
        got, self.backlog = self.backlog, []
        while data := await self.stream.receive_some(65536):
            got += self.frames.feed(data)
        return got


# ---------------------------------------------------------------------------- clients


async def test_two_clients_at_once_with_their_own_socket_nodes(
    daemon: Daemon, sock_path: Path
) -> None:
    async with connect(sock_path, "alice") as a, connect(sock_path) as b:
        assert (a.name, a.path, a.sockname()) == ("alice", "alice:", "alice")
        assert b.name is None
        assert (b.path, b.sockname()) == (f"[{b.id:x}]:", f"[{b.id:x}]")
        info_a, info_b = await a.nodeinfo(), await b.nodeinfo()
        assert (info_a.name, info_a.type, info_a.id) == ("alice", "socket", a.id)
        assert (info_b.name, info_b.type, info_b.id) == ("", "socket", b.id)
        await daemon.wait_for_clients(2)
        await b.name_node(".", "bob")
        assert b.path == "bob:"
        assert names(await a.listnames()) == {"alice": "socket", "bob": "socket"}


async def test_many_clients_work_side_by_side(daemon: Daemon, sock_path: Path) -> None:
    async def client(i: int) -> None:
        async with connect(sock_path, f"c{i}") as c:
            await c.mkpeer(".", "echo", "e", "x")
            for n in range(20):
                await c.send_data("e", b"%d:%d" % (i, n))
                assert await c.recv_data() == ("e", b"%d:%d" % (i, n))
            assert (await c.nodeinfo()).hooks == 1

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(client, i)
    await daemon.wait_for_clients(0)
    assert not daemon.graph.nodes


async def test_a_name_in_use_or_bad_is_refused(daemon: Daemon, sock_path: Path) -> None:
    async with connect(sock_path, "same"):
        with pytest.raises(NetgraphError) as in_use:
            async with connect(sock_path, "same"):
                pass  # pragma: no cover
        assert in_use.value.errno == errno.EADDRINUSE
        with pytest.raises(NetgraphError) as bad:
            async with connect(sock_path, "a:b"):
                pass  # pragma: no cover
        assert bad.value.errno == errno.EINVAL
        await daemon.wait_for_clients(1)


async def test_a_graph_built_by_one_client_is_seen_by_the_other(
    daemon: Daemon, sock_path: Path
) -> None:
    async with connect(sock_path, "a") as a, connect(sock_path, "b") as b:
        await a.mkpeer(".", "hub", "h", "l0")
        await a.name_node("h", "hub")
        nodes = await b.listnodes()
        assert names(nodes) == {"a": "socket", "b": "socket", "hub": "hub"}
        hooks = await b.listhooks("hub:")
        assert [(link.ourhook, link.peerhook, link.nodeinfo.name) for link in hooks.linkinfo] == [
            ("l0", "h", "a")
        ]
        types = {t.typename: t.numnodes for t in (await b.listtypes()).typeinfo}
        assert (types["socket"], types["hub"]) == (2, 1)


async def test_data_and_messages_both_ways(daemon: Daemon, sock_path: Path) -> None:
    async with connect(sock_path, "a") as a, connect(sock_path, "b") as b:
        # An echo node: data comes back on the hook it went out of.
        await a.mkpeer(".", "echo", "e", "x")
        await a.send_data("e", b"ping")
        assert await a.recv_data() == ("e", b"ping")
        await a.send_batch(None, [b"1", b"2"])  # the only hook
        assert [await a.recv_data(), await a.recv_data()] == [("e", b"1"), ("e", b"2")]
        # Messages: echo answers with the same (binary, non-generic) arguments.
        reply = await a.request("e", ECHO_COOKIE, 7, b"\x01\x02\x03")
        assert (reply.typecookie, reply.cmd, reply.args) == (ECHO_COOKIE, 7, b"\x01\x02\x03")
        assert reply.flags & NGF_RESP
        # TEXT_CONFIG's text, which the cmdlist does not type, crosses as a C string.
        text = await a.request("e", GENERIC_COOKIE, NGM_TEXT_CONFIG, "a b", cmdstr="textconfig")
        assert text.args == "a b"
        # Not waited for: it comes to recv_msg, from echo's [id]:.
        token = await a.send_msg("e", Message(ECHO_COOKIE, 8, b"x", "eight"))
        path, msg = await a.recv_msg()
        echo_id = (await a.nodeinfo("e")).id
        assert (path, msg.token, msg.args, msg.cmdstr) == (f"[{echo_id:x}]:", token, b"x", "eight")
        # A hub between the two clients' hooks.
        await a.mkpeer(".", "hub", "h", "l0")
        await a.name_node("h", "hub")
        await b.connect(".", "hub:", "x", "l1")
        await a.send_data("h", b"to b")
        assert await b.recv_data() == ("x", b"to b")
        await b.send_batch("x", [b"to a", b"again"])
        assert [await a.recv_data(), await a.recv_data()] == [("h", b"to a"), ("h", b"again")]
        assert (a.pending_data(), b.pending_data()) == (0, 0)
        # Errors come back from the call that caused them.
        with pytest.raises(NetgraphError) as unreachable:
            await a.send_data("nosuch", b"x")
        assert unreachable.value.errno == errno.EHOSTUNREACH
        with pytest.raises(NetgraphError) as exists:
            await a.mkpeer(".", "hub", "h", "l0")
        assert exists.value.errno == errno.EEXIST
        with pytest.raises(NetgraphError) as missing:
            await a.nodeinfo("nosuch:")
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(NetgraphError) as notype:
            await a.mkpeer(".", "nosuchtype", "q", "q")
        assert notype.value.errno == errno.ENXIO


async def test_typed_arguments_of_a_node_type_s_message_are_refused_by_the_client(
    daemon: Daemon, sock_path: Path
) -> None:
    async with connect(sock_path, "a") as a:
        await a.mkpeer(".", "one2many", "m", "one")
        config = (await a.to_binary("m", "setconfig { xmitAlg=1 }")).args
        assert isinstance(config, bytes)
        with pytest.raises(NetgraphError) as typed:
            await a.request("m", 1100897444, 3, {"xmitAlg": 1}, cmdstr="setconfig")
        assert "send_ascii" in typed.value.detail
        # As bytes it goes, and is typed by the node it is sent to.
        await a.send_msg("m", await a.to_binary("m", "setconfig { xmitAlg=1 failAlg=1 }"))


async def test_data_is_flow_controlled_without_loss(daemon: Daemon, sock_path: Path) -> None:
    count = 3 * wire.DATA_WINDOW
    async with connect(sock_path, "a") as a, connect(sock_path, "b") as b:
        await a.mkpeer(".", "hub", "h", "l0")
        await b.connect(".", "a:h", "x", "l1")

        async def send_all() -> None:
            for i in range(count):
                await a.send_data("h", i.to_bytes(4, "big"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            for i in range(count):
                assert b.pending_data() <= wire.DATA_WINDOW
                assert await b.recv_data() == ("x", i.to_bytes(4, "big"))


async def test_text_messages_and_their_errors(daemon: Daemon, sock_path: Path) -> None:
    async with connect(sock_path, "a") as a:
        await a.mkpeer(".", "one2many", "m", "one")
        await a.send_ascii("m", "setconfig { xmitAlg=1 failAlg=1 enabledLinks=[ 1 1 ] }")
        reply, text = await a.request_ascii("m", "getconfig")
        assert text == "{ xmitAlg=1 failAlg=1 enabledLinks=[ 1 1 ] }"
        assert isinstance(reply.args, bytes)  # not a generic message: raw here
        assert await a.to_ascii("m", reply) == text
        msg = await a.to_binary("m", "getconfig")
        assert (msg.cmdstr, msg.token) == ("getconfig", 0)
        with pytest.raises(ParseError) as bad:
            await a.send_ascii("m", "setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 }")
        assert (bad.value.errno, bad.value.line, bad.value.column) == (errno.EINVAL, 1, 52)
        assert bad.value.text == "setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 }"
        with pytest.raises(ParseError) as field:
            await a.send_ascii("m", "setconfig  { xmitAlg=3 nope=1 }")
        assert (field.value.errno, field.value.column) == (errno.ENOENT, 24)
        with pytest.raises(NetgraphError) as nosys:
            await a.send_ascii("m", "nosuch")
        assert nosys.value.errno == errno.ENOSYS
        # NgRecvAsciiMsg: an unsolicited reply, converted by its sender.
        await a.mkpeer(".", "echo", "e", "x")
        await a.send_ascii("e", "nodeinfo")
        path, msg, text = await a.recv_ascii()
        echo = await a.nodeinfo("e")
        assert path == f"[{echo.id:x}]:"
        assert (msg.cmdstr, text) == ("nodeinfo", f'{{ type="echo" id=0x{echo.id:x} hooks=1 }}')


async def test_a_text_typed_argument_converted_by_the_daemon_keeps_its_binary_layout(
    daemon: Daemon, sock_path: Path
) -> None:
    """ASCII2BINARY's reply carries a binary message even when its argument is a hook name (a
    text-typed value): a hole's getstats "in" reaches the hole as its 32-byte hookbuf."""
    async with connect(sock_path, "a") as a:
        await a.mkpeer(".", "hole", "h", "in")
        await a.send_data("h", b"12345")
        msg = await a.to_binary("h", 'getstats "in"')
        assert msg.args == b"in".ljust(32, b"\0")
        _reply, text = await a.request_ascii("h", 'getstats "in"')
        assert text == "{ frames=1 octets=5 }"


# -------------------------------------------------------------------------- lifecycle


async def test_a_client_that_goes_takes_only_its_socket_node(
    sock_path: Path, nursery: trio.Nursery
) -> None:
    async with open_graph() as graph:
        daemon: Daemon = await nursery.start(partial(serve, sock_path, graph=graph))
        async with connect(sock_path, "b") as b:
            async with connect(sock_path, "a") as a:
                await a.mkpeer(".", "hub", "h", "l0")
                await a.name_node("h", "hub")
                await a.mkpeer(".", "echo", "e", "x")
                await b.connect(".", "hub:", "x", "l1")
                await daemon.wait_for_clients(2)
            await daemon.wait_for_clients(1)
            # a's socket node went, and with it its hooks: echo (no hooks left) died too.
            assert names(await b.listnodes()) == {"b": "socket", "hub": "hub"}
            assert (await b.nodeinfo("hub:")).hooks == 1
            await b.send_data("x", b"still here")
        await daemon.wait_for_clients(0)
        assert [n.type_name for n in graph.nodes.values()] == []  # the hub went with b's hook


async def test_the_client_s_socket_node_shut_down_ends_the_session(
    daemon: Daemon, sock_path: Path
) -> None:
    async with connect(sock_path, "a") as a, connect(sock_path, "b") as b:
        await a.mkpeer(".", "hub", "h", "l0")
        await a.name_node("h", "hub")
        await b.connect(".", "hub:", "x", "l1")
        await a.shutdown(".")  # answered before the daemon lets the client go
        with pytest.raises(NetgraphError) as gone:
            await a.recv_msg()
        assert gone.value.errno == errno.ENOTCONN
        await daemon.wait_for_clients(1)
        assert names(await b.listnodes()) == {"b": "socket", "hub": "hub"}


async def test_after_close_calls_fail_with_enotconn(daemon: Daemon, sock_path: Path) -> None:
    async with connect(sock_path, "a") as a:
        await a.close()
        await a.close()
        with pytest.raises(NetgraphError) as closed:
            await a.listnodes()
        assert closed.value.errno == errno.ENOTCONN
        with pytest.raises(NetgraphError):
            await a.recv_data()
    await daemon.wait_for_clients(0)


# ----------------------------------------------------------------------- bad clients


async def _other_client_unharmed(b: RemoteSocket) -> None:
    await b.send_data("x", b"after")
    assert names(await b.listnodes()) == {"b": "socket", "hub": "hub"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (wire.pack_frame(0x7F, b"junk"), errno.EPROTO),  # unknown frame type
        (wire.pack_frame(wire.MSG, b"\x00\x00"), errno.EPROTO),  # MSG without its path
        (wire.pack_frame(wire.DATA, b"\x00\x00\x00\x01\x00\x09ab"), errno.EPROTO),
        (wire.pack_frame(wire.HELLO, b"\x00\x01\x00\x00"), errno.EPROTO),  # a second HELLO
        (b"\x00\x00\x00\x00", errno.EPROTO),  # a frame without a type
        (struct.pack(">I", wire.MAX_FRAME + 1), errno.EMSGSIZE),  # oversized: header alone
    ],
    ids=["unknown-type", "short-msg", "short-data", "second-hello", "empty", "oversized"],
)
async def test_a_bad_frame_drops_that_client_only(
    daemon: Daemon, sock_path: Path, frame: bytes, code: int
) -> None:
    async with connect(sock_path, "b") as b:
        await b.mkpeer(".", "hub", "x", "l0")
        await b.name_node("x", "hub")
        raw = await Raw.open(sock_path, "raw")
        await daemon.wait_for_clients(2)
        async with raw.stream:
            await raw.stream.send_all(frame)
            got = await raw.until_closed()
        assert [kind for kind, _ in got] == [wire.ERROR]
        error = wire.unpack_error(got[0][1])
        assert error.errno == code
        assert error.detail
        await daemon.wait_for_clients(1)
        await _other_client_unharmed(b)


async def test_a_bad_frame_is_answered_before_the_client_goes(
    daemon: Daemon, sock_path: Path
) -> None:
    async with connect(sock_path, "a") as a:
        # A MSG whose message is bad: an error for that request only.
        raw = await Raw.open(sock_path)
        async with raw.stream:
            await raw.stream.send_all(wire.pack_msg(5, ".", b"short"))
            kind, body = await raw.next()
            assert kind == wire.RESULT
            request, err = wire.unpack_result(body)
            assert request == 5
            assert isinstance(err, NetgraphError)
            assert err.errno == errno.EINVAL
            # A good request, then junk in the same write: the request is answered first.
            await raw.stream.send_all(
                wire.pack_data(6, "nosuch", b"x") + struct.pack(">I", wire.MAX_FRAME + 1)
            )
            got = await raw.until_closed()
        assert [kind for kind, _ in got] == [wire.RESULT, wire.ERROR]
        request, err = wire.unpack_result(got[0][1])
        assert request == 6
        assert isinstance(err, NetgraphError)
        assert err.errno == errno.EHOSTUNREACH
        assert wire.unpack_error(got[1][1]).errno == errno.EMSGSIZE
        # The remote client sees a daemon's ERROR as the error of the calls it ends.
        a._out_send.send_nowait(wire.pack_frame(0x7E))
        with pytest.raises(NetgraphError) as dropped:
            await a.listnodes()
        assert dropped.value.errno == errno.EPROTO
        with pytest.raises(NetgraphError) as later:
            await a.listnodes()
        assert later.value.errno == errno.ENOTCONN
    await daemon.wait_for_clients(0)


async def test_oversized_data_is_refused_by_the_client(daemon: Daemon, sock_path: Path) -> None:
    async with connect(sock_path, "a") as a:
        await a.mkpeer(".", "echo", "e", "x")
        with pytest.raises(NetgraphError) as big:
            await a.send_data("e", bytes(wire.MAX_FRAME))
        assert big.value.errno == errno.EMSGSIZE
        await a.send_data("e", b"fine")
        assert await a.recv_data() == ("e", b"fine")


async def test_a_wrong_protocol_version_or_no_hello_is_refused(
    daemon: Daemon, sock_path: Path
) -> None:
    async with await trio.open_unix_socket(sock_path) as stream:
        await stream.send_all(wire.pack_hello("x", version=2))
        raw = Raw(stream)
        got = await raw.until_closed()
    assert [kind for kind, _ in got] == [wire.ERROR]
    assert wire.unpack_error(got[0][1]).errno == errno.EPROTONOSUPPORT
    async with await trio.open_unix_socket(sock_path) as stream:
        await stream.send_all(wire.pack_credit(1))
        got = await Raw(stream).until_closed()
    assert wire.unpack_error(got[0][1]).errno == errno.EPROTO
    await daemon.wait_for_clients(0)


async def test_a_client_that_never_says_hello_is_dropped(
    daemon: Daemon, sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("netgraph.daemon.HELLO_TIMEOUT", 0.05)
    async with await trio.open_unix_socket(sock_path) as stream:
        got = await Raw(stream).until_closed()
    assert [kind for kind, _ in got] == [wire.ERROR]
    assert wire.unpack_error(got[0][1]).errno == errno.ETIMEDOUT


async def test_a_client_gone_in_the_middle_of_a_frame_harms_nobody(
    daemon: Daemon, sock_path: Path
) -> None:
    async with connect(sock_path, "b") as b:
        await b.mkpeer(".", "hub", "x", "l0")
        await b.name_node("x", "hub")
        raw = await Raw.open(sock_path, "half")
        await daemon.wait_for_clients(2)
        await raw.stream.send_all(wire.pack_data(1, "x", b"0123456789")[:9])
        await raw.stream.aclose()
        await daemon.wait_for_clients(1)
        assert "half" not in daemon.graph.names
        await _other_client_unharmed(b)


# --------------------------------------------------------------------------- security


async def test_the_socket_file_is_mode_0600(daemon: Daemon, sock_path: Path) -> None:
    mode = os.stat(sock_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_peer_credentials_come_from_so_peercred() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right, trio.socket.from_stdlib_socket(left) as tsock:
        creds = peer_credentials(tsock)
    assert creds == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())
    check_peer(creds, os.geteuid())


def test_a_peer_with_another_uid_is_refused() -> None:
    other = PeerCredentials(pid=4242, uid=os.geteuid() + 1, gid=0)
    with pytest.raises(NetgraphError) as refused:
        check_peer(other, os.geteuid())
    assert refused.value.errno == errno.EPERM
    assert "4242" in refused.value.detail


async def test_the_daemon_refuses_a_uid_it_does_not_run_as(daemon: Daemon, sock_path: Path) -> None:
    daemon.uid = os.geteuid() + 1  # as if we were somebody else
    with pytest.raises(NetgraphError) as refused:
        async with connect(sock_path, "intruder"):
            pass  # pragma: no cover
    assert refused.value.errno == errno.EPERM
    assert "intruder" not in daemon.graph.names
    daemon.uid = os.geteuid()
    async with connect(sock_path, "friend") as friend:
        assert (await friend.nodeinfo()).name == "friend"


async def test_a_client_refuses_a_daemon_of_another_uid(
    daemon: Daemon, sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)  # as if we were somebody else
    with pytest.raises(NetgraphError) as refused:
        async with connect(sock_path, "spoofed"):
            pass  # pragma: no cover
    assert refused.value.errno == errno.EPERM
    assert "graph daemon" in refused.value.detail
    monkeypatch.undo()
    await daemon.wait_for_clients(0)
    assert "spoofed" not in daemon.graph.names


# -------------------------------------------------------------------- the socket path


async def test_a_socket_path_in_use_is_refused_and_a_stale_one_replaced(
    daemon: Daemon, sock_path: Path, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with pytest.raises(NetgraphError) as in_use:
        await serve(sock_path)
    assert in_use.value.errno == errno.EADDRINUSE
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)  # the running daemon's file is untouched
    async with connect(sock_path, "a") as a:
        assert (await a.nodeinfo()).name == "a"

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))  # bound, never listening: nobody is there
    second: Daemon = await nursery.start(serve, stale)
    async with connect(stale, "b") as b:
        assert (await b.nodeinfo()).name == "b"
    assert second.graph is not daemon.graph

    plain = tmp_path / "plain"
    plain.write_text("not a socket")
    with pytest.raises(NetgraphError) as exists:
        await serve(plain)
    assert exists.value.errno == errno.EEXIST
    assert plain.read_text() == "not a socket"


async def test_no_daemon_gives_a_connect_error(sock_path: Path) -> None:
    with pytest.raises(NetgraphError) as missing:
        async with connect(sock_path):
            pass  # pragma: no cover
    assert missing.value.errno == errno.ENOENT


# ---------------------------------------------------------------------------- signals


async def test_sigterm_ends_serve_cleanly(sock_path: Path) -> None:
    async with open_graph() as graph, trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(partial(serve, sock_path, graph=graph))
        async with connect(sock_path, "a") as a:
            await a.mkpeer(".", "hub", "h", "l0")
            await daemon.wait_for_clients(1)
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(NetgraphError) as shut:
                await a.recv_data()
            assert shut.value.errno == errno.ENOTCONN
            assert "shutting down" in shut.value.detail
        # serve returned: the graph it was given is closed and the socket file is gone.
    assert not graph.nodes
    assert not sock_path.exists()


async def accepting(path: Path) -> bool:
    """Whether a daemon accepts connections at ``path`` yet."""
    try:
        stream = await trio.open_unix_socket(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    await stream.aclose()
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
async def test_python_m_netgraph_serve(tmp_path: Path, signum: int) -> None:
    path = tmp_path / "d.sock"
    command = [sys.executable, "-m", "netgraph", "serve", "--socket", str(path)]
    done: list[subprocess.CompletedProcess[bytes]] = []

    async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
        finished = await trio.run_process(
            command, cwd=ROOT, check=False, capture_stdout=True, capture_stderr=True,
            task_status=task_status,
        )  # fmt: skip
        done.append(finished)

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(run)
        with trio.fail_after(10):
            while True:
                if await accepting(path):
                    break
                await trio.sleep(0.02)  # not up yet: try again
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with connect(path, "client") as client:
            await client.mkpeer(".", "hub", "h", "l0")
            assert names(await client.listnodes()) == {"client": "socket"}
            # A second daemon on the same path: a clear error, exit 1.
            second = await trio.run_process(
                command, cwd=ROOT, check=False, capture_stdout=True, capture_stderr=True
            )
            assert (second.returncode, second.stdout) == (1, b"")
            assert b"in use" in second.stderr
            process.send_signal(signum)
            with pytest.raises(NetgraphError) as shut:
                await client.recv_data()
            assert "shutting down" in shut.value.detail
        with trio.fail_after(10):
            await process.wait()
    assert (done[0].returncode, done[0].stdout, done[0].stderr) == (0, b"", b"")
    assert not path.exists()


# ------------------------------------------------------------------------------ frames


def test_every_frame_round_trips() -> None:
    def one(frame: bytes) -> tuple[int, bytes]:
        (got,) = wire.FrameReader().feed(frame)
        return got

    assert one(wire.pack_hello("app")) == (wire.HELLO, b"\x00\x01\x00\x03app")
    assert wire.unpack_hello(one(wire.pack_hello("app"))[1]) == (1, "app")
    assert wire.unpack_msg(one(wire.pack_msg(7, "a:b", b"mesg"))[1]) == (7, "a:b", b"mesg")
    assert wire.unpack_data(one(wire.pack_data(8, "h", b"\0x"))[1]) == (8, "h", b"\0x")
    batch = one(wire.pack_batch(9, "h", [b"", b"ab", b"c"]))
    assert batch[0] == wire.BATCH
    assert wire.unpack_batch(batch[1]) == (9, "h", [b"", b"ab", b"c"])
    assert wire.unpack_credit(one(wire.pack_credit(64))[1]) == 64
    assert wire.unpack_welcome(one(wire.pack_welcome(0x1F, "app"))[1]) == (1, 0x1F, "app")
    assert wire.unpack_msg_in(one(wire.pack_msg_in("[1f]:", b"m"))[1]) == ("[1f]:", b"m")
    assert wire.unpack_data_in(one(wire.pack_data_in("h", b"d"))[1]) == ("h", b"d")
    err = wire.unpack_error(one(wire.pack_error(NetgraphError(errno.EPERM, "no")))[1])
    assert (err.errno, err.detail) == (errno.EPERM, "no")
    assert wire.unpack_result(one(wire.pack_result(3, None))[1]) == (3, None)
    _, plain = wire.unpack_result(one(wire.pack_result(4, NetgraphError(2, "x")))[1])
    assert isinstance(plain, NetgraphError)
    assert not isinstance(plain, ParseError)
    assert (plain.errno, plain.detail) == (2, "x")


def test_a_parse_error_crosses_whole_even_with_a_long_text() -> None:
    text = "{ " + "x" * 70000 + "=1 }"
    sent = ParseError(errno.ENOENT, "no field", text, 2)
    (frame,) = wire.FrameReader().feed(wire.pack_result(5, sent))
    request, got = wire.unpack_result(frame[1])
    assert request == 5
    assert isinstance(got, ParseError)
    assert (got.errno, got.reason, got.text, got.pos) == (errno.ENOENT, "no field", text, 2)


def test_the_frame_reader_takes_a_stream_in_any_pieces() -> None:
    stream = wire.pack_hello("a") + wire.pack_credit(1) + wire.pack_data(1, "h", b"x" * 100)
    reader = wire.FrameReader()
    got = [frame for i in range(len(stream)) for frame in reader.feed(stream[i : i + 1])]
    assert [kind for kind, _ in got] == [wire.HELLO, wire.CREDIT, wire.DATA]
    assert reader.buffer == b""
    # Frames before a bad length come out first; the error comes with the next call.
    reader = wire.FrameReader(limit=10)
    assert [k for k, _ in reader.feed(wire.pack_credit(1) + b"\x00\x00\x00\x0b")] == [wire.CREDIT]
    with pytest.raises(NetgraphError) as big:
        reader.feed(b"")
    assert big.value.errno == errno.EMSGSIZE


@pytest.mark.parametrize(
    ("unpack", "body"),
    [
        (wire.unpack_msg, b"\x00\x00\x00"),
        (wire.unpack_batch, b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01"),
        (wire.unpack_credit, b"\x00\x00\x00\x01\x00"),
        (wire.unpack_welcome, b"\x00\x01"),
        (wire.unpack_result, b"\x00" * 14),
        (wire.unpack_error, b"\x00\x00\x00\x01\x00\x05ab"),
        (wire.unpack_hello, b"\x00"),
    ],
)
def test_malformed_bodies_are_eproto(unpack: Callable[[bytes], object], body: bytes) -> None:
    with pytest.raises(NetgraphError) as bad:
        unpack(body)
    assert bad.value.errno == errno.EPROTO


def test_a_frame_over_the_limit_cannot_be_made() -> None:
    with pytest.raises(NetgraphError) as big:
        wire.pack_data(1, "h", bytes(wire.MAX_FRAME))
    assert big.value.errno == errno.EMSGSIZE
