"""ksocket: hook names, sockaddr forms, messages, data, backpressure, shutdown (spec 4, 7, 8, 10.8).

Peers are plain trio sockets on 127.0.0.1, ::1 and local paths; the node is driven through the
embedding API (binary and ASCII messages), through in-process ngctl sessions and through ngctl as a
subprocess.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.socket as tsocket
import trio.testing

import netgraph
from netgraph import Message, NetgraphError, tag, tags_of
from netgraph.wire import encode_message
from ngctl.commands import Session, Status
from nodes.ksocket import (
    KSOCKET_COOKIE,
    NGM_KSOCKET_BIND,
    NGM_KSOCKET_CONNECT,
    NGM_KSOCKET_GETNAME,
    NGM_KSOCKET_GETOPT,
    KsocketNode,
    SockOpt,
    parse_hook_name,
)
from nodes.sockaddr import SOCKADDR, SockAddr
from tests.conftest import Capture

ROOT = Path(__file__).parent.parent
KS = KSOCKET_COOKIE
HDR = 56  # FreeBSD's struct ng_mesg header
EWOULDBLOCK = errno.EWOULDBLOCK  # == EAGAIN on Linux
LOOPBACKS = [
    pytest.param(socket.AF_INET, "127.0.0.1", "inet", id="inet"),
    pytest.param(socket.AF_INET6, "::1", "inet6", id="inet6"),
]


# ----------------------------------------------------------------------------------- helpers


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def text_addr(family: int, host: str, port: int) -> str:
    return f"inet/{host}:{port}" if family == socket.AF_INET else f"inet6/[{host}]:{port}"


async def raises(code: int, coro: Any, match: str | None = None) -> NetgraphError:
    with pytest.raises(NetgraphError) as info:
        await coro
    assert info.value.errno == code, str(info.value)
    if match is not None:
        assert match in str(info.value), str(info.value)
    return info.value


async def status_of(coro: Any) -> int:
    """0 when ``coro`` succeeds, else its errno."""
    try:
        await coro
    except NetgraphError as err:
        return err.errno or 0
    return 0


async def getname(s: netgraph.Socket, path: str) -> Any:
    reply = await s.request(path, KS, NGM_KSOCKET_GETNAME, cmdstr="getname")
    return reply.args.to_python()


async def send_all(sock: tsocket.SocketType, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


async def recv_exactly(sock: tsocket.SocketType, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = await sock.recv(size - len(out))
        assert chunk, f"EOF after {len(out)} of {size} bytes"
        out += chunk
    return bytes(out)


async def recv_to_eof(sock: tsocket.SocketType) -> bytes:
    out = bytearray()
    while chunk := await sock.recv(65536):
        out += chunk
    return bytes(out)


async def recv_stream(s: netgraph.Socket, size: int) -> bytes:
    """Items from the socket node until ``size`` bytes came (stream chunks, any boundaries)."""
    out = bytearray()
    while len(out) < size:
        _hook, item = await s.recv_data()
        assert item, "an unexpected end of stream"
        out += item
    return bytes(out)


async def listener(s: netgraph.Socket, hook: str, family: int, host: str) -> tuple[str, Any]:
    """A listening ksocket on ``hook`` of ``s``, bound to an ephemeral port; path and address."""
    kind = "inet" if family == socket.AF_INET else "inet6"
    await s.mkpeer(".", "ksocket", hook, f"{kind}/stream/tcp")
    path = f".:{hook}"
    await s.send_ascii(path, f"bind {text_addr(family, host, 0).rsplit(':', 1)[0]}")
    await s.send_ascii(path, "listen 8")
    return path, await getname(s, path)


async def accepted(s: netgraph.Socket) -> tuple[str, Message]:
    path, msg = await s.recv_msg()
    assert (msg.typecookie, msg.cmd, msg.is_response) == (KS, 3, True)
    assert path == f"[{msg.args.nodeid:x}]:"  # the reply comes from the clone
    return path, msg


async def plain_tcp_server(family: int, host: str) -> tuple[tsocket.SocketType, int]:
    srv = tsocket.socket(family, socket.SOCK_STREAM)
    await srv.bind((host, 0))
    srv.listen(8)
    return srv, srv.getsockname()[1]


@pytest.fixture
async def ngctl() -> AsyncIterator[tuple[Session, Capture]]:
    async with netgraph.open_graph() as graph:
        cap = Capture()
        yield Session(graph.socket("ngctl1234"), printer=cap, msg_wait=0.25), cap


async def run_ngctl(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    with trio.fail_after(60):
        proc = await trio.run_process(
            [sys.executable, "-m", "ngctl", *args],
            stdin=stdin.encode() if stdin is not None else b"",
            capture_stdout=True,
            capture_stderr=True,
            cwd=ROOT,
            check=False,
        )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def raw_divert_ok() -> int:
    """0 if this host lets us make ``inet/raw/divert`` (PF_INET, SOCK_RAW, 258), else the errno."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, 258).close()
    except OSError as err:
        return err.errno or errno.EPERM
    return 0


# -------------------------------------------------------------------------------- hook names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("inet/stream/tcp", (socket.AF_INET, socket.SOCK_STREAM, 6)),
        ("inet/dgram/udp", (socket.AF_INET, socket.SOCK_DGRAM, 17)),
        (f"{int(socket.AF_INET)}/2/17", (socket.AF_INET, socket.SOCK_DGRAM, 17)),
        ("inet/raw/divert", (socket.AF_INET, socket.SOCK_RAW, 258)),
        ("inet/raw/raw", (socket.AF_INET, socket.SOCK_RAW, 255)),
        ("inet/raw/pim", (socket.AF_INET, socket.SOCK_RAW, 103)),
        ("inet/raw/gre", (socket.AF_INET, socket.SOCK_RAW, 47)),
        ("inet/seqpacket/ip", (socket.AF_INET, socket.SOCK_SEQPACKET, 0)),
        ("inet/rdm/esp", (socket.AF_INET, socket.SOCK_RDM, 50)),
        ("inet//", (socket.AF_INET, 0, 0)),
        ("inet6/dgram/udp", (socket.AF_INET6, socket.SOCK_DGRAM, 17)),
        ("inet6/stream/tcp", (socket.AF_INET6, socket.SOCK_STREAM, 6)),
        ("inet6/raw/icmp6", (socket.AF_INET6, socket.SOCK_RAW, 58)),
        ("inet6/raw/icmp", (socket.AF_INET6, socket.SOCK_RAW, 58)),
        ("local/stream/0", (socket.AF_UNIX, socket.SOCK_STREAM, 0)),
        ("local/dgram/", (socket.AF_UNIX, socket.SOCK_DGRAM, 0)),
        ("local/seqpacket/0", (socket.AF_UNIX, socket.SOCK_SEQPACKET, 0)),
    ],
)
def test_hook_name_aliases_and_numbers(name: str, expected: tuple[int, int, int]) -> None:
    assert parse_hook_name(name) == expected


@pytest.mark.parametrize(
    "name", ["inet/stream/tcp", "inet/dgram/udp", "inet6/dgram/udp", "inet6/stream/tcp",
             "local/stream/0", "local/dgram/", "local/seqpacket/0", "2/1/6", "10/2/17"],
)  # fmt: skip
async def test_hook_name_makes_that_socket(sock: netgraph.Socket, name: str) -> None:
    """The socket really is of that family, type and protocol (read back with ASCII getopt)."""
    family, kind, proto = parse_hook_name(name)
    await sock.mkpeer(".", "ksocket", "k", name)
    values = []
    for option in ("SO_DOMAIN", "SO_TYPE", "SO_PROTOCOL"):
        reply, text = await sock.request_ascii(
            ".:k", f"getopt {{ level=SOL_SOCKET name={option} }}"
        )
        assert text.startswith(f"{{ level={socket.SOL_SOCKET} name={getattr(socket, option)} ")
        values.append(int.from_bytes(reply.args.value, sys.byteorder))
    defaults: dict[int, int] = {socket.SOCK_STREAM: 6, socket.SOCK_DGRAM: 17}
    expect_proto = proto or defaults.get(kind, 0)
    if family == socket.AF_UNIX:
        expect_proto = 0
    assert values == [family, kind, expect_proto]
    await sock.shutdown(".:k")


@pytest.mark.parametrize(
    ("name", "code", "detail"),
    [
        ("inet/stream", errno.EINVAL, "ksocket hook 'inet/stream' is not family/type/proto"),
        ("inet", errno.EINVAL, "is not family/type/proto"),
        ("foo/stream/tcp", errno.EINVAL, "unknown family 'foo'"),
        ("INET/stream/tcp", errno.EINVAL, "unknown family 'INET'"),
        ("atm/dgram/0", errno.EINVAL, "unknown family 'atm'"),
        ("inet/foo/tcp", errno.EINVAL, "unknown socket type 'foo'"),
        ("inet/Stream/tcp", errno.EINVAL, "unknown socket type 'Stream'"),
        ("inet/stream/-1", errno.EINVAL, "unknown protocol '-1'"),
        ("inet/stream/ 6", errno.EINVAL, "unknown protocol ' 6'"),
        ("inet/dgram/0x11", errno.EINVAL, "unknown protocol '0x11'"),
        ("inet/dgram/\uff11\uff17", errno.EINVAL, "unknown protocol"),
        ("inet/stream/tcp/x", errno.EINVAL, "unknown protocol 'tcp/x'"),
        ("local/stream/tcp", errno.EINVAL, "unknown protocol 'tcp'"),  # aliases: inet, inet6
        ("inet/stream/udp", errno.EPROTONOSUPPORT, "socket(inet/stream/udp)"),
        ("inet/seqpacket/0", errno.ESOCKTNOSUPPORT, "socket(inet/seqpacket/0)"),
        ("/stream/0", errno.EAFNOSUPPORT, "socket(/stream/0)"),
    ],
)
async def test_bad_hook_names(sock: netgraph.Socket, name: str, code: int, detail: str) -> None:
    await raises(code, sock.mkpeer(".", "ksocket", "k", name), detail)
    assert (await sock.nodeinfo(".")).hooks == 0
    assert [n.type for n in (await sock.listnodes()).nodeinfo] == ["socket"]


async def test_bad_hook_names_through_ngctl(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    assert await s.run_line("mkpeer ksocket k inet/bogus/tcp") == Status.ERROR
    assert cap.take()[1] == [
        "ngctl: send msg: Invalid argument",
        "ngctl: ksocket hook 'inet/bogus/tcp': unknown socket type 'bogus'",
    ]
    assert await s.run_line("mkpeer ksocket k inet/stream/udp") == Status.ERROR
    assert cap.take()[1][0] == "ngctl: send msg: Protocol not supported"


async def test_one_hook_only(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet/dgram/udp")
    await raises(errno.EISCONN, sock.connect(".", ".:k", "k2", "other"), "already has")
    await raises(errno.EISCONN, sock.mkpeer(".:k", "hole", "x", "in"))
    assert (await sock.nodeinfo(".:k")).hooks == 1


async def test_enxio_before_the_hook(graph: netgraph.Graph, sock: netgraph.Socket) -> None:
    node = graph.make_node("ksocket")
    path = f"[{node.id:x}]:"
    for line in ("bind inet/127.0.0.1", "listen 1", "accept", "connect inet/127.0.0.1:9",
                 "getname", "getpeername", "setopt { level=1 name=2 value=[ 1 ] }",
                 "getopt { level=1 name=2 }"):  # fmt: skip
        await raises(errno.ENXIO, sock.send_ascii(path, line), "no socket yet")
    graph.rmnode(node)


async def test_unknown_ksocket_command(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet/dgram/udp")
    await raises(errno.EINVAL, sock.send_msg(".:k", Message(KS, 99, None, "cmd99", 0, 0)))
    await raises(errno.ENOSYS, sock.send_ascii(".:k", "frob"), "no command 'frob'")


# ---------------------------------------------------------------------------- sockaddr forms


@pytest.mark.parametrize(
    ("text", "canonical", "python"),
    [
        ("inet/1.2.3.4:80", "inet/1.2.3.4:80", (socket.AF_INET, ("1.2.3.4", 80))),
        ("inet/192.168.1.1", "inet/192.168.1.1", (socket.AF_INET, ("192.168.1.1", 0))),
        ("inet/010.0.0.1:0", "inet/10.0.0.1", (socket.AF_INET, ("10.0.0.1", 0))),
        ("inet/1.2.3.4:65535", "inet/1.2.3.4:65535", (socket.AF_INET, ("1.2.3.4", 65535))),
        ("{ family=2 len=16 data=[ 2=192 168 1 1 ] }", "inet/192.168.1.1",
         (socket.AF_INET, ("192.168.1.1", 0))),
        ("inet6/[2001:db8::1]:80", "inet6/[2001:db8::1]:80",
         (socket.AF_INET6, ("2001:db8::1", 80, 0, 0))),
        ("inet6/[::1]", "inet6/[::1]", (socket.AF_INET6, ("::1", 0, 0, 0))),
        ("inet6/[fe80::1%lo]:80", "inet6/[fe80::1%lo]:80",
         (socket.AF_INET6, ("fe80::1", 80, 0, socket.if_nametoindex("lo")))),
        (f"inet6/[fe80::1%{socket.if_nametoindex('lo')}]", "inet6/[fe80::1%lo]",
         (socket.AF_INET6, ("fe80::1", 0, 0, socket.if_nametoindex("lo")))),
        ('local/"/tmp/x.sock"', 'local/"/tmp/x.sock"', (socket.AF_UNIX, "/tmp/x.sock")),
        ('local/"/tmp/a b\\"c"', 'local/"/tmp/a b\\"c"', (socket.AF_UNIX, '/tmp/a b"c')),
    ],
)  # fmt: skip
async def test_sockaddr_forms(
    sock: netgraph.Socket, text: str, canonical: str, python: tuple[int, Any]
) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet/dgram/udp")
    msg = await sock.to_binary(".:k", f"bind {text}")
    addr = msg.args
    assert isinstance(addr, SockAddr)
    assert addr == SockAddr.from_python(*python)
    assert addr.to_python() == python[1]
    assert SOCKADDR.unparse(addr) == canonical
    assert await sock.to_ascii(".:k", msg) == canonical
    # BSD's layout: sa_len, sa_family, then the data.
    wire = encode_message(KsocketNode, msg)[HDR:]
    assert wire[:2] == bytes((addr.len, python[0]))
    assert wire[2:] == addr.data
    if python[0] == socket.AF_INET:
        assert addr.len == 16
    elif python[0] == socket.AF_INET6:
        assert addr.len == 28


async def test_generic_sockaddr_of_an_unknown_family(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet/dgram/udp")
    msg = await sock.to_binary(".:k", "bind { len=4 family=99 data=[ 1 2 ] }")
    assert msg.args == SockAddr(99, b"\x01\x02")
    assert await sock.to_ascii(".:k", msg) == "{ len=4 family=99 data=[ 0x1 0x2 ] }"
    await raises(errno.EAFNOSUPPORT, sock.send_msg(".:k", msg))


BAD_SOCKADDRS = [
    ("inet/1.2.3", errno.EINVAL, "four decimal octets are needed", 11),
    ("inet/1.2.3.256", errno.EINVAL, "four decimal octets are needed", 11),
    ("inet/1.2.3.4.5", errno.EINVAL, "four decimal octets are needed", 11),
    ("inet/-1.2.3.4", errno.EINVAL, "four decimal octets are needed", 11),
    ("inet/0x1.2.3.4", errno.EINVAL, "four decimal octets are needed", 11),
    ("inet/\uff11.2.3.4", errno.EINVAL, "four decimal octets are needed", 11),
    ("inet/", errno.EINVAL, "four decimal octets are needed", 11),
    ("inet/1.2.3.4:", errno.EINVAL, "bad port ''", 19),
    ("inet/1.2.3.4:65536", errno.EINVAL, "bad port '65536'", 19),
    ("inet/1.2.3.4:x", errno.EINVAL, "bad port 'x'", 19),
    ("inet/1.2.3.4:-1", errno.EINVAL, "bad port '-1'", 19),
    ("inet6/::1", errno.EINVAL, "an inet6 address goes in brackets", 12),
    ("inet6/[::1", errno.EINVAL, "no ']' after the inet6 address", 12),
    ("inet6/[zz]", errno.EINVAL, "'zz' is not an IPv6 address", 13),
    ("inet6/[1.2.3.4]", errno.EINVAL, "'1.2.3.4' is not an IPv6 address", 13),
    ("inet6/[::1]80", errno.EINVAL, "bad port after the address: '80'", 17),
    ("inet6/[::1]:", errno.EINVAL, "bad port after the address", 17),
    ("inet6/[::1]:65536", errno.EINVAL, "bad port after the address", 17),
    ("inet6/[fe80::1%nosuchif0]", errno.EINVAL, "no interface 'nosuchif0'", 21),
    ("local/path", errno.EINVAL, 'a local address is local/"path"', 12),
    ('local/"unterminated', errno.EINVAL, 'a local address is local/"path"', 12),
    ("local/", errno.EINVAL, 'a local address is local/"path"', 12),
    ('local/"' + "a" * 300 + '"', errno.E2BIG, "a local path of 300 bytes is over", 12),
    ("foo/1.2.3.4", errno.EINVAL, "unknown address family 'foo'", 6),
    ("atm/1", errno.EINVAL, "unknown address family 'atm'", 6),
    ("nofamily", errno.EINVAL, "a sockaddr is family/address", 6),
    ("a" * 40 + "/1.2.3.4", errno.EINVAL, "a sockaddr is family/address", 6),
    ("5", errno.EINVAL, "a sockaddr is family/address", 6),
    ("[ 1 2 ]", errno.EINVAL, "a sockaddr is family/address", 6),
    ("{ len=1 family=2 data=[] }", errno.EINVAL, "a sockaddr's len is at least 2", 6),
    ("{ len=4 family=2 data=[ 1 2 3 ] }", errno.E2BIG, "past the end", None),
    ("{ len=16 family=2 daat=[ 1 ] }", errno.ENOENT, "daat", None),
    ("", errno.EINVAL, "an argument is required", 5),
]


@pytest.mark.parametrize(("text", "code", "detail", "column"), BAD_SOCKADDRS)
async def test_bad_sockaddrs(
    sock: netgraph.Socket, text: str, code: int, detail: str, column: int | None
) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet/dgram/udp")
    for command in ("bind", "connect"):
        line = f"{command} {text}".rstrip()
        err = await raises(code, sock.send_ascii(".:k", line), detail)
        if column is not None:
            assert getattr(err, "column", None) == column + len(command) - 4, str(err)


async def test_bad_sockaddr_huge_numeric_scope(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet6/dgram/udp")
    await raises(errno.EINVAL, sock.send_ascii(".:k", "bind inet6/[::1%99999999999]"))


async def test_bad_sockaddr_empty_scope(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet6/dgram/udp")
    await raises(errno.EINVAL, sock.to_binary(".:k", "bind inet6/[::1%]"))


async def test_sockaddr_of_the_wrong_family(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "k", "inet/dgram/udp")
    await raises(errno.EAFNOSUPPORT, sock.send_ascii(".:k", "bind inet6/[::1]"), "family")
    await raises(errno.EAFNOSUPPORT, sock.send_ascii(".:k", 'connect local/"/x"'), "family")
    await raises(errno.EINVAL, sock.send_msg(".:k", Message(KS, NGM_KSOCKET_BIND, 5, "bind", 0, 0)))
    short = SockAddr(socket.AF_INET, b"\x00")
    await raises(errno.EINVAL, sock.send_msg(".:k", Message(KS, NGM_KSOCKET_BIND, short, "", 0, 0)))


# --------------------------------------------------------------- FreeBSD's tests (ksocket.c)


async def test_freebsd_udp_connect(sock: netgraph.Socket) -> None:
    """ksocket.c udp_connect: binary MKPEER, a binary CONNECT with a raw 16-byte sockaddr from
    getsockname to ``.:ks``; data written on ``ks`` arrives at a plain UDP socket."""
    peer = tsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await peer.bind(("127.0.0.1", 0))
    host, port = peer.getsockname()
    raw = bytes((16, socket.AF_INET)) + port.to_bytes(2, "big") + socket.inet_aton(host) + bytes(8)
    addr, end = SOCKADDR.unpack(raw, 0, len(raw), {})
    assert end == 16
    await sock.mkpeer(".", "ksocket", "ks", "inet/dgram/udp")
    await sock.send_msg(".:ks", Message(KS, NGM_KSOCKET_CONNECT, addr, "connect", 0, 0))
    await sock.send_data("ks", b"test")
    data, source = await peer.recvfrom(100)
    assert data == b"test"
    assert source == await getname(sock, ".:ks")
    peer.close()


async def test_freebsd_udp_bind(sock: netgraph.Socket) -> None:
    """ksocket.c udp_bind: BIND a zero sockaddr_in; GETNAME's reply is header + 16 bytes; a plain
    UDP socket connects to that address and what it sends arrives on the hook."""
    await sock.mkpeer(".", "ksocket", "ks", "inet/dgram/udp")
    zero = SockAddr(socket.AF_INET, bytes(14))
    await sock.send_msg(".:ks", Message(KS, NGM_KSOCKET_BIND, zero, "bind", 0, 0))
    reply = await sock.request(".:ks", KS, NGM_KSOCKET_GETNAME, cmdstr="getname")
    assert len(encode_message(KsocketNode, reply)) == HDR + 16
    host, port = reply.args.to_python()
    assert host == "0.0.0.0"
    assert port != 0
    peer = tsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await peer.connect(("127.0.0.1", port))
    await peer.send(b"test")
    hook, item = await sock.recv_data()
    assert (hook, item) == ("ks", b"test")
    node_id, source = tags_of(item)["sockaddr"]
    assert node_id == (await sock.nodeinfo(".:ks")).id
    assert source.to_python() == peer.getsockname()
    peer.close()


# ------------------------------------------------------------------------------------- UDP


@pytest.mark.parametrize(("family", "host", "kind"), LOOPBACKS)
async def test_udp_unconnected_tags(
    sock: netgraph.Socket, family: int, host: str, kind: str
) -> None:
    await sock.mkpeer(".", "ksocket", "u", f"{kind}/dgram/udp")
    await sock.send_ascii(".:u", f"bind {text_addr(family, host, 0)}")
    _, name = await sock.request_ascii(".:u", "getname")
    address = await getname(sock, ".:u")
    assert name == text_addr(family, host, address[1])
    my_id = (await sock.nodeinfo(".:u")).id
    peer = tsocket.socket(family, socket.SOCK_DGRAM)
    await peer.bind((host, 0))
    peer_addr = SockAddr.from_python(family, peer.getsockname())
    for data in (b"one", b"", b"three" * 1000):  # one datagram per item, the empty one too
        await peer.sendto(data, address)
    for data in (b"one", b"", b"three" * 1000):
        hook, item = await sock.recv_data()
        assert (hook, bytes(item)) == ("u", data)
        assert tags_of(item)["sockaddr"] == (my_id, peer_addr)
    # No destination: EDESTADDRREQ, as FreeBSD.
    await raises(errno.EDESTADDRREQ, sock.send_data("u", b"nowhere"))
    # A destination tag for node 0 or this node is honoured; another node's is not.
    await sock.send_data("u", tag(b"to zero", sockaddr=(0, peer_addr)))
    await sock.send_data("u", tag(b"to me", sockaddr=(my_id, peer_addr)))
    await raises(
        errno.EDESTADDRREQ, sock.send_data("u", tag(b"x", sockaddr=(my_id + 7, peer_addr)))
    )
    await sock.send_data("u", tag(b"", sockaddr=(0, peer_addr)))
    for data in (b"to zero", b"to me", b""):
        got, source = await peer.recvfrom(100)
        assert got == data
        assert source[:2] == address[:2]
    # A received item sent back as it is goes back to where it came from.
    await peer.sendto(b"echo me", address)
    _, item = await sock.recv_data()
    await sock.send_data("u", item)
    assert (await peer.recvfrom(100))[0] == b"echo me"
    await raises(errno.EMSGSIZE, sock.send_data("u", tag(b"x" * 70000, sockaddr=(0, peer_addr))))
    peer.close()


async def test_udp_destination_of_the_wrong_family(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "u", "inet/dgram/udp")
    dest = SockAddr.from_python(socket.AF_INET6, ("::1", 5))
    await raises(errno.EAFNOSUPPORT, sock.send_data("u", tag(b"x", sockaddr=(0, dest))))


@pytest.mark.parametrize(("family", "host", "kind"), LOOPBACKS)
async def test_udp_bound_and_connected(
    sock: netgraph.Socket, family: int, host: str, kind: str
) -> None:
    peer = tsocket.socket(family, socket.SOCK_DGRAM)
    await peer.bind((host, 0))
    port = peer.getsockname()[1]
    await sock.mkpeer(".", "ksocket", "u", f"{kind}/dgram/udp")
    await sock.send_ascii(".:u", f"bind {text_addr(family, host, 0)}")
    await sock.send_ascii(".:u", f"connect {text_addr(family, host, port)}")  # at once: no error
    _, text = await sock.request_ascii(".:u", "getpeername")
    assert text == text_addr(family, host, port)
    address = await getname(sock, ".:u")
    await sock.send_data("u", b"hello")
    data, source = await peer.recvfrom(100)
    assert (data, source[:2]) == (b"hello", address[:2])
    await peer.sendto(b"back", address)
    hook, item = await sock.recv_data()
    assert (hook, item) == ("u", b"back")
    assert "sockaddr" not in tags_of(item)  # connected: no source tag
    peer.close()


# ------------------------------------------------------------------------------------- TCP


@pytest.mark.parametrize(("family", "host", "kind"), LOOPBACKS)
async def test_tcp_listen_accept(sock: netgraph.Socket, family: int, host: str, kind: str) -> None:
    path, address = await listener(sock, "l", family, host)
    _, text = await sock.request_ascii(path, "getname")
    assert text == text_addr(family, host, address[1])
    await raises(EWOULDBLOCK, sock.send_ascii(path, "accept"), "accept reply")
    await raises(errno.EALREADY, sock.send_ascii(path, "accept"))
    client = tsocket.socket(family, socket.SOCK_STREAM)
    await client.connect(address[:2])
    clone_path, msg, text = await sock.recv_ascii()
    assert clone_path == f"[{msg.args.nodeid:x}]:"
    assert msg.args.addr == SockAddr.from_python(family, client.getsockname())
    size = 16 if family == socket.AF_INET else 28
    assert text.startswith(f"{{ nodeid=0x{msg.args.nodeid:x} addr={{ len={size} family={family} ")
    info = await sock.nodeinfo(clone_path)
    assert (info.type, info.hooks) == ("ksocket", 0)
    await sock.connect(".", clone_path, "c", "whatever-name")  # a clone takes any hook name
    await raises(errno.EISCONN, sock.connect(".", clone_path, "c2", "other"))
    _, peer_text = await sock.request_ascii(".:c", "getpeername")
    assert peer_text == text_addr(family, host, client.getsockname()[1])
    # Data both ways; a stream has no record boundaries.
    for piece in (b"abc", b"defg", b"h" * 100000):
        await send_all(client, piece)
    assert await recv_stream(sock, 100007) == b"abcdefg" + b"h" * 100000
    await sock.send_data("c", b"from the graph")
    assert await recv_exactly(client, 14) == b"from the graph"
    # The client's end of stream: one empty item, once; an empty item from us shuts our side.
    client.shutdown(socket.SHUT_WR)
    assert await sock.recv_data() == ("c", b"")
    await sock.send_data("c", b"last")
    await sock.send_data("c", b"")
    assert await recv_to_eof(client) == b"last"
    client.close()
    await trio.testing.wait_all_tasks_blocked()
    assert sock.pending_data() == 0
    # accept needs a listening socket
    await raises(errno.EINVAL, sock.send_ascii(".:c", "accept"), "listening")


@pytest.mark.parametrize(("family", "host", "kind"), LOOPBACKS)
async def test_accept_reports_a_queued_connection(
    sock: netgraph.Socket, family: int, host: str, kind: str
) -> None:
    """Spec 10.8: a connection already queued when accept arrives is reported."""
    path, address = await listener(sock, "l", family, host)
    client = tsocket.socket(family, socket.SOCK_STREAM)
    await client.connect(address[:2])
    await sock.send_ascii(path, "accept")  # no EWOULDBLOCK: there is one waiting
    _clone, msg = await accepted(sock)
    assert msg.args.addr.to_python()[:2] == client.getsockname()[:2]
    client.close()


async def test_data_before_the_hook_is_kept(sock: netgraph.Socket) -> None:
    path, address = await listener(sock, "l", socket.AF_INET, "127.0.0.1")
    await raises(EWOULDBLOCK, sock.send_ascii(path, "accept"))
    client = tsocket.socket()
    await client.connect(address)
    clone_path, _ = await accepted(sock)
    await send_all(client, b"early bird")
    client.shutdown(socket.SHUT_WR)
    await trio.testing.wait_all_tasks_blocked()
    assert sock.pending_data() == 0
    await sock.connect(".", clone_path, "c", "x")
    assert await recv_stream(sock, 10) == b"early bird"
    assert await sock.recv_data() == ("c", b"")
    client.close()


async def test_embryonic_clones_go_with_their_parent(sock: netgraph.Socket) -> None:
    before = fd_count()
    path, address = await listener(sock, "l", socket.AF_INET, "127.0.0.1")
    clients, clones = [], []
    for _ in range(3):
        await raises(EWOULDBLOCK, sock.send_ascii(path, "accept"))
        client = tsocket.socket()
        await client.connect(address)
        clients.append(client)
        clones.append((await accepted(sock))[0])
    await sock.connect(".", clones[0], "kept", "any")  # hooked: no longer an embryo
    await sock.shutdown(path)
    for embryo in clones[1:]:
        await raises(errno.ENOENT, sock.nodeinfo(embryo))
        client = clients[clones.index(embryo)]
        assert await client.recv(10) == b""  # its socket was closed
    assert (await sock.nodeinfo(clones[0])).hooks == 1
    await send_all(clients[0], b"still here")
    assert await recv_stream(sock, 10) == b"still here"
    await sock.rmhook(".", "kept")
    assert await clients[0].recv(10) == b""
    await raises(errno.ENOENT, sock.nodeinfo(clones[0]))
    for client in clients:
        client.close()
    await trio.testing.wait_all_tasks_blocked()
    assert fd_count() == before


@pytest.mark.parametrize(("family", "host", "kind"), LOOPBACKS)
async def test_tcp_connect_outgoing(
    sock: netgraph.Socket, family: int, host: str, kind: str
) -> None:
    srv, port = await plain_tcp_server(family, host)
    await sock.mkpeer(".", "ksocket", "o", f"{kind}/stream/tcp")
    node_id = (await sock.nodeinfo(".:o")).id
    await raises(
        errno.EINPROGRESS, sock.send_ascii(".:o", f"connect {text_addr(family, host, port)}")
    )
    server, _ = await srv.accept()
    path, msg, text = await sock.recv_ascii()
    assert (path, msg.cmd, msg.is_response, msg.args, text) == (f"[{node_id:x}]:", 4, True, 0, "0")
    _, peer = await sock.request_ascii(".:o", "getpeername")
    assert peer == text_addr(family, host, port)
    assert (await getname(sock, ".:o"))[:2] == server.getpeername()[:2]
    await send_all(server, b"server speaks")
    assert await recv_stream(sock, 13) == b"server speaks"
    await sock.send_data("o", b"client answers")
    assert await recv_exactly(server, 14) == b"client answers"
    server.close()
    assert await sock.recv_data() == ("o", b"")
    srv.close()


async def test_tcp_connect_refused_and_already(sock: netgraph.Socket) -> None:
    probe = tsocket.socket()
    await probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    await sock.mkpeer(".", "ksocket", "o", "inet/stream/tcp")
    await raises(errno.EINPROGRESS, sock.send_ascii(".:o", f"connect inet/127.0.0.1:{port}"))
    _, msg, text = await sock.recv_ascii()
    assert (msg.cmd, msg.args, text) == (4, errno.ECONNREFUSED, str(errno.ECONNREFUSED))
    await raises(errno.ENOTCONN, sock.send_ascii(".:o", "getpeername"))
    # A connect that cannot complete soon: a second one is EALREADY. A loopback listener whose
    # accept queue is full drops SYNs (Linux), so the connect stays in progress; no traffic
    # leaves this machine's loopback.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)  # room for one connection not yet accepted
    target = full.getsockname()
    taken = socket.create_connection(target, timeout=10)
    try:
        await sock.mkpeer(".", "ksocket", "p", "inet/stream/tcp")
        address = f"inet/127.0.0.1:{target[1]}"
        await raises(errno.EINPROGRESS, sock.send_ascii(".:p", f"connect {address}"))
        await raises(errno.EALREADY, sock.send_ascii(".:p", f"connect {address}"))
        await raises(errno.ENOTCONN, sock.send_ascii(".:p", "getpeername"))
        await trio.testing.wait_all_tasks_blocked()  # see test_shutdown_right_after_accept
        await sock.shutdown(".:p")
    finally:
        taken.close()
        full.close()


async def test_tcp_unconnected_send(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "t", "inet/stream/tcp")
    await raises(errno.ENOTCONN, sock.send_data("t", b""))
    await raises(errno.ENOTCONN, sock.send_ascii(".:t", "getpeername"))


async def test_tcp_unconnected_send_is_enotconn(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "t", "inet/stream/tcp")
    await raises(errno.ENOTCONN, sock.send_data("t", b"x"))


# ----------------------------------------------------------------------------------- local


async def test_local_stream(sock: netgraph.Socket, tmp_path: Path) -> None:
    where = str(tmp_path / "ls.sock")
    await sock.mkpeer(".", "ksocket", "l", "local/stream/0")
    await sock.send_ascii(".:l", f'bind local/"{where}"')
    await sock.send_ascii(".:l", "listen 4")
    _, text = await sock.request_ascii(".:l", "getname")
    assert text == f'local/"{where}"'
    await raises(EWOULDBLOCK, sock.send_ascii(".:l", "accept"))
    client = tsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await client.connect(where)
    clone_path, msg, text = await sock.recv_ascii()
    assert msg.args.addr == SockAddr(socket.AF_UNIX, b"")
    assert text == f"{{ nodeid=0x{msg.args.nodeid:x} addr={{ len=2 family={socket.AF_UNIX} }} }}"
    await sock.connect(".", clone_path, "c", "x")
    await send_all(client, b"local data")
    assert await recv_stream(sock, 10) == b"local data"
    # An outgoing local stream ksocket, to the same listener.
    await raises(EWOULDBLOCK, sock.send_ascii(".:l", "accept"))
    await sock.mkpeer(".", "ksocket", "o", "local/stream/0")
    code = await status_of(sock.send_ascii(".:o", f'connect local/"{where}"'))
    assert code in (0, errno.EINPROGRESS)  # a local connect completes at once
    if code:
        assert (await sock.recv_msg())[1].args == 0
    other_path, _ = await accepted(sock)
    _, text = await sock.request_ascii(".:o", "getpeername")
    assert text == f'local/"{where}"'
    await sock.connect(".", other_path, "d", "y")
    await sock.send_data("o", b"ping")
    assert await sock.recv_data() == ("d", b"ping")
    await sock.send_data("d", b"pong")
    assert await sock.recv_data() == ("o", b"pong")
    client.close()
    assert await sock.recv_data() == ("c", b"")


async def test_local_dgram(sock: netgraph.Socket, tmp_path: Path) -> None:
    ours, theirs = str(tmp_path / "ks.sock"), str(tmp_path / "peer.sock")
    await sock.mkpeer(".", "ksocket", "d", "local/dgram/0")
    await sock.send_ascii(".:d", f'bind local/"{ours}"')
    peer = tsocket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await peer.bind(theirs)
    await peer.sendto(b"one", ours)
    await peer.sendto(b"two", ours)
    my_id = (await sock.nodeinfo(".:d")).id
    for data in (b"one", b"two"):
        hook, item = await sock.recv_data()
        assert (hook, item) == ("d", data)
        assert tags_of(item)["sockaddr"] == (my_id, SockAddr(socket.AF_UNIX, theirs.encode()))
        await sock.send_data("d", tag(b"re:" + data, sockaddr=tags_of(item)["sockaddr"]))
        assert await peer.recvfrom(100) == (b"re:" + data, ours)
    await sock.send_ascii(".:d", f'connect local/"{theirs}"')
    await sock.send_data("d", b"connected")
    assert (await peer.recv(100)) == b"connected"
    peer.close()


async def test_local_dgram_from_an_unbound_sender(sock: netgraph.Socket, tmp_path: Path) -> None:
    ours = str(tmp_path / "ks.sock")
    await sock.mkpeer(".", "ksocket", "d", "local/dgram/0")
    await sock.send_ascii(".:d", f'bind local/"{ours}"')
    with tsocket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer:
        await peer.sendto(b"anonymous", ours)
    _, item = await sock.recv_data()
    assert tags_of(item)["sockaddr"][1] == SockAddr(socket.AF_UNIX, b"")


# ------------------------------------------------------------------------- setopt / getopt


async def test_setopt_getopt(sock: netgraph.Socket) -> None:
    await sock.mkpeer(".", "ksocket", "t", "inet/stream/tcp")
    lvl, reuse = socket.SOL_SOCKET, socket.SO_REUSEADDR
    _, text = await sock.request_ascii(".:t", "getopt { level=SOL_SOCKET name=SO_REUSEADDR }")
    assert text == f"{{ level={lvl} name={reuse} value=[ 3=0x0 ] }}"
    # value sized from what was written: one byte, padded to an int for Linux
    await sock.send_ascii(".:t", "setopt { level=SOL_SOCKET name=SO_REUSEADDR value=[ 1 ] }")
    _, text = await sock.request_ascii(".:t", f"getopt {{ level={lvl} name={reuse} }}")
    assert text == f"{{ level={lvl} name={reuse} value=[ 0x1 3=0x0 ] }}"
    # numeric and symbolic, IPPROTO_ levels, hex numbers
    await sock.send_ascii(".:t", "setopt { level=IPPROTO_TCP name=TCP_NODELAY value=[ 1 0 0 0 ] }")
    reply, _ = await sock.request_ascii(
        ".:t", f"getopt {{ level={socket.IPPROTO_TCP:#x} name={socket.TCP_NODELAY} }}"
    )
    assert reply.args == SockOpt(socket.IPPROTO_TCP, socket.TCP_NODELAY, (1).to_bytes(4, "little"))
    await sock.send_ascii(".:t", "setopt { level=SOL_SOCKET name=SO_RCVBUF value=[ 0 0 1 ] }")
    reply, _ = await sock.request_ascii(".:t", "getopt { level=SOL_SOCKET name=SO_RCVBUF }")
    assert int.from_bytes(reply.args.value, sys.byteorder) >= 65536
    # binary getopt with an empty value
    reply = await sock.request(".:t", KS, NGM_KSOCKET_GETOPT, SockOpt(lvl, reuse, b""))
    assert reply.args == SockOpt(lvl, reuse, (1).to_bytes(4, sys.byteorder))
    # errors
    await raises(
        errno.ENOENT,
        sock.send_ascii(".:t", "setopt { level=SOL_SOCKET name=SO_SETFIB data=[ 2 ] }"),
    )
    err = await raises(
        errno.ENOENT, sock.send_ascii(".:t", "setopt { level=0xffff name=0x1014 data=[ 2 ] }")
    )
    assert "value" in err.detail
    await raises(
        errno.EINVAL, sock.send_ascii(".:t", "getopt { level=SOL_NOPE name=1 }"), "SOL_NOPE"
    )
    await raises(errno.EINVAL, sock.send_ascii(".:t", "getopt { level=1 name=IP_NOPE }"))
    await raises(errno.ENOPROTOOPT, sock.send_ascii(".:t", "getopt { level=SOL_SOCKET name=9999 }"))
    await raises(
        errno.ENOPROTOOPT,
        sock.send_ascii(".:t", "setopt { level=SOL_SOCKET name=9999 value=[ 1 ] }"),
    )


# ------------------------------------------------------------------------ backpressure, EOF


async def test_backpressure_the_sender_waits(sock: netgraph.Socket) -> None:
    srv, port = await plain_tcp_server(socket.AF_INET, "127.0.0.1")
    await sock.mkpeer(".", "ksocket", "o", "inet/stream/tcp")
    await raises(errno.EINPROGRESS, sock.send_ascii(".:o", f"connect inet/127.0.0.1:{port}"))
    server, _ = await srv.accept()
    assert (await sock.recv_msg())[1].args == 0
    payload = random.Random(7).randbytes(64 << 20)
    done = trio.Event()

    async def sender() -> None:
        await sock.send_data("o", payload)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set(), "64 MiB went into a socket nobody reads"
        received = await recv_exactly(server, len(payload))
        await done.wait()
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    server.close()
    srv.close()


# ------------------------------------------------------------------------------- shutdown


async def test_rmhook_and_shutdown_close_the_socket(sock: netgraph.Socket) -> None:
    before = fd_count()
    srv, port = await plain_tcp_server(socket.AF_INET, "127.0.0.1")
    servers = []
    for hook in ("a", "b"):
        await sock.mkpeer(".", "ksocket", hook, "inet/stream/tcp")
        await raises(
            errno.EINPROGRESS, sock.send_ascii(f".:{hook}", f"connect inet/127.0.0.1:{port}")
        )
        servers.append((await srv.accept())[0])
        assert (await sock.recv_msg())[1].args == 0
    node_a = (await sock.nodeinfo(".:a")).id
    node_b = (await sock.nodeinfo(".:b")).id
    await sock.rmhook(".", "a")  # spec 8 line 11: the ksocket goes, its socket is closed
    assert await servers[0].recv(10) == b""
    await raises(errno.ENOENT, sock.nodeinfo(f"[{node_a:x}]:"))
    await sock.shutdown(f"[{node_b:x}]:")  # NGM_SHUTDOWN
    assert await servers[1].recv(10) == b""
    assert (await sock.nodeinfo(".")).hooks == 0
    # A listening parent with an embryo and a pending accept
    path, address = await listener(sock, "l", socket.AF_INET, "127.0.0.1")
    await raises(EWOULDBLOCK, sock.send_ascii(path, "accept"))
    client = tsocket.socket()
    await client.connect(address)
    await accepted(sock)
    await raises(EWOULDBLOCK, sock.send_ascii(path, "accept"))
    await trio.testing.wait_all_tasks_blocked()  # see test_shutdown_right_after_accept
    await sock.shutdown(path)
    assert await client.recv(10) == b""
    for s in (*servers, client, srv):
        s.close()
    await trio.testing.wait_all_tasks_blocked()
    assert [n.type for n in (await sock.listnodes()).nodeinfo] == ["socket"]
    assert fd_count() == before


async def test_rmhook_right_after_mkpeer() -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("s")
        for _ in range(5):
            await sock.mkpeer(".", "ksocket", "k", "inet/dgram/udp")
            await sock.rmhook(".", "k")
            await sock.mkpeer(".", "ksocket", "k", "inet/stream/tcp")
            await sock.shutdown(".:k")


async def test_spec_section_8_line_14_at_once() -> None:
    async with netgraph.open_graph() as graph:
        s = Session(graph.socket("ngctl1234"), printer=Capture(), msg_wait=0.25)
        for kill in ("shutdown", "kill", "rmnode"):
            assert await s.run_line("mkpeer ksocket k inet/dgram/udp") == Status.OK
            assert await s.run_line("name k victim") == Status.OK
            assert await s.run_line(f"{kill} victim:") == Status.OK


@pytest.mark.parametrize("command", ["accept", "connect"])
async def test_shutdown_right_after_accept(command: str) -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("s")
        await sock.mkpeer(".", "ksocket", "k", "inet/stream/tcp")
        await trio.testing.wait_all_tasks_blocked()
        if command == "accept":
            await sock.send_ascii(".:k", "bind inet/127.0.0.1")
            await sock.send_ascii(".:k", "listen 1")
            await raises(EWOULDBLOCK, sock.send_ascii(".:k", "accept"))
        else:
            probe, port = await plain_tcp_server(socket.AF_INET, "127.0.0.1")
            probe.close()
            code = await status_of(sock.send_ascii(".:k", f"connect inet/127.0.0.1:{port}"))
            assert code == errno.EINPROGRESS
        await sock.shutdown(".:k")


async def test_one_shot_mkpeer_ksocket() -> None:
    assert await run_ngctl("mkpeer", "ksocket", "k", "inet/dgram/udp") == (0, "", "")


# ---------------------------------------------------------------------------------- relay


CHUNK = 1 << 20
TOTAL = 1 << 30


async def _relay(sock: netgraph.Socket, read_size: int) -> None:
    """A client -> listening ksocket's clone -> outgoing ksocket -> server, 1 GiB, sha256."""
    before = fd_count()
    srv, port = await plain_tcp_server(socket.AF_INET, "127.0.0.1")
    path, address = await listener(sock, "l", socket.AF_INET, "127.0.0.1")
    await raises(EWOULDBLOCK, sock.send_ascii(path, "accept"))
    client = tsocket.socket()
    await client.connect(address)
    clone_path, _ = await accepted(sock)
    await sock.mkpeer(clone_path, "ksocket", "relay", "inet/stream/tcp")
    await sock.shutdown(path)  # the listener goes; the clone, hooked, stays
    await raises(
        errno.EINPROGRESS, sock.send_ascii(f"{clone_path}relay", f"connect inet/127.0.0.1:{port}")
    )
    server, _ = await srv.accept()
    srv.close()
    assert (await sock.recv_msg())[1].args == 0
    assert [n.hooks for n in (await sock.listnodes()).nodeinfo] == [0, 1, 1]

    base = random.Random(1).randbytes(CHUNK + 65536)
    view = memoryview(base)
    sums: dict[str, Any] = {}

    async def write() -> None:
        digest = hashlib.sha256()
        for i in range(TOTAL // CHUNK):
            offset = (i * 4099) % 65536
            chunk = view[offset : offset + CHUNK]
            digest.update(chunk)
            await send_all(client, chunk)
        client.shutdown(socket.SHUT_WR)
        sums["sent"] = digest.hexdigest()
        # The server's answer and end of stream come back through the relay too.
        sums["back"] = await recv_to_eof(client)

    async def read() -> None:
        digest = hashlib.sha256()
        count = 0
        while data := await server.recv(read_size):
            digest.update(data)
            count += len(data)
        sums["received"], sums["count"] = digest.hexdigest(), count
        await send_all(server, b"got it all")
        server.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        nursery.start_soon(read)
    assert sums["count"] == TOTAL
    assert sums["received"] == sums["sent"]
    assert sums["back"] == b"got it all"
    client.close()
    # Both streams ended; as in FreeBSD the nodes stay until told. One goes, the other with it.
    assert len((await sock.listnodes()).nodeinfo) == 3
    await sock.shutdown(clone_path)
    await trio.testing.wait_all_tasks_blocked()
    assert [n.type for n in (await sock.listnodes()).nodeinfo] == ["socket"]
    assert fd_count() == before


@pytest.mark.timeout(300)
async def test_relay_1gib_fast_reader(sock: netgraph.Socket) -> None:
    await _relay(sock, 1 << 20)


@pytest.mark.timeout(300)
async def test_relay_1gib_slow_reader(sock: netgraph.Socket) -> None:
    await _relay(sock, 4096)


# ---------------------------------------------------------------------- ngctl, spec section 8


async def test_spec_section_8_management_lines(ngctl: tuple[Session, Capture]) -> None:
    """Lines 1-5, 11, 13, 14, 22, 23 with a ksocket."""
    s, cap = ngctl
    ok = Status.OK
    divert = raw_divert_ok()
    hook = "inet/raw/divert" if divert == 0 else "inet/dgram/udp"
    if divert:
        assert await s.run_line("mkpeer ksocket foo inet/raw/divert") == Status.ERROR
        assert cap.take()[1][0] == f"ngctl: send msg: {os.strerror(divert)}"
    assert await s.run_line(f"mkpeer ksocket foo {hook}") == ok  # 1
    assert await s.run_line(f"mkpeer . ksocket foo2 {hook}") == ok  # 2
    assert await s.run_line("name foo fred") == ok  # 3
    assert await s.run_line('msg foo name { name="fred" }') == ok  # 4
    assert await s.run_line("name fred: fred") == ok  # 5
    assert await s.run_line("status fred:") == ok  # 22
    assert await s.run_line("config fred:") == ok  # 23
    assert await s.run_line("show -n fred:") == ok
    out, err = cap.take()
    assert err == []
    assert out == [
        'No status available for "fred:"',
        'No config available for "fred:"',
        "  Name: fred            Type: ksocket         ID: 00000002   Num hooks: 1",
    ]
    assert await s.run_line(f"disconnect fred: {hook}") == ok  # 13: it loses its only hook
    assert await s.run_line("show fred:") == Status.ERROR
    assert cap.take()[1] == ["ngctl: send msg: No such file or directory", "ngctl: no node 'fred:'"]
    for kill in ("shutdown", "kill", "rmnode"):  # 14
        assert await s.run_line(f"mkpeer ksocket k {hook}") == ok
        assert await s.run_line("name k victim") == ok
        await trio.testing.wait_all_tasks_blocked()  # see test_spec_section_8_line_14_at_once
        assert await s.run_line(f"{kill} victim:") == ok
    assert await s.run_line("rmhook foo2") == ok  # 11
    assert cap.take() == ([], [])
    assert await s.run_line("list") == ok
    assert cap.take()[0][0] == "There are 1 total nodes:"


async def test_spec_section_8_bind_getname(ngctl: tuple[Session, Capture]) -> None:
    """Lines 29-31."""
    s, cap = ngctl
    assert await s.run_line("mkpeer ksocket foo inet/dgram/udp") == Status.OK
    assert await s.run_line("name foo fred") == Status.OK
    node_id = (await s.sock.nodeinfo("fred:")).id
    special = await s.sock.to_binary("fred:", "bind inet/192.168.1.1")  # 29
    generic = await s.sock.to_binary(
        "fred:", "bind { family=2 len=16 data=[ 2=192 168 1 1 ] }"
    )  # 30
    assert special.args == generic.args == SockAddr.from_python(socket.AF_INET, ("192.168.1.1", 0))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("192.168.1.1", 0))
        problem = ""
    except OSError as exc:
        problem = exc.strerror or ""
    if problem:
        assert await s.run_line("msg fred: bind inet/192.168.1.1") == Status.ERROR
        assert cap.take()[1][0] == f"ngctl: send msg: {problem}"
        line = "msg fred: bind { family=2 len=16 data=[ 2=127 0 0 1 ] }"
        assert await s.run_line(line) == Status.OK
        host = "127.0.0.1"
    else:
        host = "192.168.1.1"
        assert await s.run_line("msg fred: bind inet/192.168.1.1") == Status.OK
    assert cap.take() == ([], [])
    assert await s.run_line("msg fred: getname") == Status.OK  # 31
    out, err = cap.take()
    port = (await getname(s.sock, "fred:"))[1]
    assert err == []
    assert out == [
        f'Rec\'d response "getname" (5) from "[{node_id:x}]:":',
        f"Args:\tinet/{host}:{port}",
    ]


async def test_spec_section_8_udp_tunnel(ngctl: tuple[Session, Capture]) -> None:
    """Lines 32-34 (share/examples/netgraph/udp.tunnel), a hub standing in for ng0."""
    s, cap = ngctl
    far = tsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await far.bind(("127.0.0.1", 0))
    probe = tsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await probe.bind(("127.0.0.1", 0))
    local_port = probe.getsockname()[1]
    probe.close()
    for line in ("mkpeer hub h in", "name h ng0",
                 "mkpeer ng0: ksocket inet inet/dgram/udp",  # 32
                 f"msg ng0:inet bind inet/127.0.0.1:{local_port}",  # 33
                 f"msg ng0:inet connect inet/127.0.0.1:{far.getsockname()[1]}"):  # 34  # fmt: skip
        assert await s.run_line(line) == Status.OK, (line, cap.take())
    assert cap.take() == ([], [])
    assert await s.run_line("write h 0x45 0 0 28") == Status.OK
    assert await far.recvfrom(100) == (bytes([0x45, 0, 0, 28]), ("127.0.0.1", local_port))
    await far.sendto(b"tunnelled", ("127.0.0.1", local_port))
    assert await s.sock.recv_data() == ("h", b"tunnelled")
    far.close()


async def test_spec_section_8_tcp_connect(ngctl: tuple[Session, Capture], tmp_path: Path) -> None:
    """Lines 35, 36 and 52."""
    s, cap = ngctl
    srv, port = await plain_tcp_server(socket.AF_INET, "127.0.0.1")
    assert await s.run_line("mkpeer ksocket bar inet/stream/tcp") == Status.OK
    node_id = (await s.sock.nodeinfo("bar")).id
    assert await s.run_line(f"msg bar connect inet/127.0.0.1:{port}") == Status.ERROR  # 35
    assert cap.take() == (
        [],
        ["ngctl: send msg: Operation now in progress",
         "ngctl: the connect reply follows when it completes"],
    )  # fmt: skip
    server, _ = await srv.accept()
    path, msg = await s.sock.recv_msg()  # what interactive ngctl prints when it arrives
    await s.show_reply(path, msg)
    assert cap.take() == ([f'Rec\'d response "connect" (4) from "[{node_id:x}]:":', "Args:\t0"], [])
    where = tmp_path / "bar.socket"
    assert await s.run_line("mkpeer ksocket lbar local/stream/0") == Status.OK  # 36
    assert await s.run_line(f'msg lbar bind local/"{where}"') == Status.OK
    assert where.exists()
    lbar = (await s.sock.nodeinfo("lbar")).id
    assert await s.run_line("msg lbar listhooks") == Status.OK  # 52
    assert cap.take()[0][1] == (
        f'Args:\t{{ nodeinfo={{ type="ksocket" id=0x{lbar:x} hooks=1 }} linkinfo=[ '
        '{ ourhook="local/stream/0" peerhook="lbar" nodeinfo={ name="ngctl1234" type="socket" '
        "id=0x1 hooks=2 } } ] }"
    )
    server.close()
    srv.close()


async def test_ngctl_subprocess_udp() -> None:
    far = tsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await far.bind(("127.0.0.1", 0))
    script = (
        "mkpeer ksocket k inet/dgram/udp\n"
        f"msg k connect inet/127.0.0.1:{far.getsockname()[1]}\n"
        "msg k getpeername\n"
        "write k 0x68 0x69\n"
    )
    code, out, err = await run_ngctl("-f", "-", stdin=script)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        'Rec\'d response "getpeername" (6) from "[2]:":',
        f"Args:\tinet/127.0.0.1:{far.getsockname()[1]}",
    ]
    assert (await far.recvfrom(100))[0] == b"hi"
    far.close()


async def test_ngctl_subprocess_tcp_connect_in_progress() -> None:
    srv, port = await plain_tcp_server(socket.AF_INET, "127.0.0.1")
    with srv:
        script = (
            f"mkpeer ksocket bar inet/stream/tcp\nmsg bar connect inet/127.0.0.1:{port}\nlist\n"
        )
        code, out, err = await run_ngctl("-f", "-", stdin=script)
        conn, _ = await srv.accept()  # the connection was made
        conn.close()
    assert (code, out) == (71, "")
    assert err.splitlines() == [
        "ngctl: send msg: Operation now in progress",
        "ngctl: the connect reply follows when it completes",
        "ngctl: line 2: error in file",
    ]


async def test_ngctl_subprocess_bad_input() -> None:
    script = "mkpeer ksocket k inet/dgram/udp\nmsg k bind inet/1.2.3.4:99999\n"
    code, out, err = await run_ngctl("-f", "-", stdin=script)
    assert (code, out) == (71, "")
    assert err.splitlines() == [
        "ngctl: send msg: Invalid argument",
        "ngctl: column 25: 'inet/1.2.3.4:99999': bad port '99999'",
        "  msg k bind inet/1.2.3.4:99999",
        "  " + " " * 24 + "^",
        "ngctl: line 2: error in file",
    ]


async def test_ngctl_bad_input(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    assert await s.run_line("mkpeer ksocket k inet/dgram/udp") == Status.OK
    for line, code, reason in [
        ("msg k bind inet/1.2.3.4:99999", errno.EINVAL, "'inet/1.2.3.4:99999': bad port '99999'"),
        ("msg k connect inet6/[::1", errno.EINVAL, "no ']' after the inet6 address"),
        ('msg k bind local/"' + "x" * 260 + '"', errno.E2BIG, "a local path of 260 bytes is over"),
        ("msg k setopt { level=1 name=2 data=[ 1 ] }", errno.ENOENT, "no field 'data' here"),
    ]:
        assert await s.run_line(line) == Status.ERROR
        err = cap.take()[1]
        assert err[0] == f"ngctl: send msg: {os.strerror(code)}"
        assert err[1].startswith("ngctl: column "), err
        assert reason in err[1], err
        assert err[2] == f"  {line}"
        assert err[3].endswith("^")
    assert await s.run_line("mkpeer ksocket j inet/nope/0") == Status.ERROR
    assert cap.take()[1] == [
        "ngctl: send msg: Invalid argument",
        "ngctl: ksocket hook 'inet/nope/0': unknown socket type 'nope'",
    ]
