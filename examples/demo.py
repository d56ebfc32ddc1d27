"""The demo graph: data through several node types, built with the embedding API.

    socket "demo" --in-----right-- tee --left-----one-- one2many --many0-- hole "sink0"
                                    |                              \\-many1-- hole "sink1"
                                    \\--right2left-- hole "tap"
    socket "demo" --ping---------- echo

Sends a few packets in, prints what came back and every node's statistics.
Run: ``make demo`` (or ``.venv/bin/python examples/demo.py``).
"""

from __future__ import annotations

import trio

from netgraph import Socket, open_graph
from nodes.hole import HOLE_COOKIE, NGM_HOLE_GET_STATS
from nodes.one2many import NGM_ONE2MANY_GET_STATS, ONE2MANY_COOKIE
from nodes.tee import NGM_TEE_GET_STATS, TEE_COOKIE


async def build(sock: Socket) -> None:
    await sock.mkpeer(".", "tee", "in", "right")
    await sock.name_node("in", "tee")
    await sock.mkpeer("tee:", "one2many", "left", "one")
    await sock.name_node("tee:left", "mux")
    for n in (0, 1):
        await sock.mkpeer("mux:", "hole", f"many{n}", "in")
        await sock.name_node(f"mux:many{n}", f"sink{n}")
    await sock.mkpeer("tee:", "hole", "right2left", "in")
    await sock.name_node("tee:right2left", "tap")
    await sock.mkpeer(".", "echo", "ping", "mirror")


async def show(sock: Socket) -> None:
    print("nodes:")
    for info in (await sock.listnodes()).nodeinfo:
        print(f"  [{info.id:x}]  {info.name or '<unnamed>':10} {info.type:9} hooks={info.hooks}")
    tee = (await sock.request("tee:", TEE_COOKIE, NGM_TEE_GET_STATS, cmdstr="getstats")).args
    print("tee statistics:")
    for hook in ("right", "left", "right2left", "left2right"):
        s = getattr(tee, hook)
        print(
            f"  {hook:10} in {s.inFrames} frames / {s.inOctets} octets,"
            f" out {s.outFrames} frames / {s.outOctets} octets"
        )
    print("one2many link statistics:")
    for link in (-1, 0, 1):
        reply = await sock.request(
            "mux:", ONE2MANY_COOKIE, NGM_ONE2MANY_GET_STATS, link, cmdstr="getstats"
        )
        s = reply.args
        name = "one" if link < 0 else f"many{link}"
        print(
            f"  {name:6} recv {s.recvPackets} packets / {s.recvOctets} octets,"
            f" xmit {s.xmitPackets} packets / {s.xmitOctets} octets"
        )
    print("hole statistics:")
    for hole in ("sink0", "sink1", "tap"):
        reply = await sock.request(
            f"{hole}:", HOLE_COOKIE, NGM_HOLE_GET_STATS, "in", cmdstr="getstats"
        )
        print(f"  {hole:6} {reply.args.frames} frames / {reply.args.octets} octets")


async def main() -> None:
    async with open_graph() as graph:
        sock = graph.socket("demo")
        await build(sock)
        packets = [f"packet {n}".encode() for n in range(6)]
        for packet in packets:
            await sock.send_data("in", packet)
        await sock.send_batch("in", [b"batch a", b"batch b"])
        await sock.send_data("ping", b"hello, echo")
        hook, item = await sock.recv_data()
        print(f"arrived on hook {hook!r}: {bytes(item)!r}")
        await show(sock)


if __name__ == "__main__":
    trio.run(main)
