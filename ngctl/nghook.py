"""nghook: connect standard input and output to a hook of a netgraph node (spec 5.5).

``nghook [-adln] [-s socket] [-m msg]... path [hookname]``
``nghook -e [-n] [-s socket] [-m msg]... path hookname prog [args...]``

An unnamed socket node's hook ``hook`` is linked to ``hookname`` (default ``debug``) of the node
at ``path``; each ``-m`` message is sent to ``path`` first. Then what comes on standard input goes
out of the hook, and what comes in on the hook goes to standard output (``-a``: as a hex dump and
a blank line). ``-l`` loops what comes in back out, ``-n`` does not read standard input, ``-e``
runs ``prog`` with its standard input and output on the hook instead.

Differences from FreeBSD: ``-s SOCKET`` attaches to a graph daemon (FreeBSD's ``-s``/``-S``, which
swap file descriptors 0 and 1, are not offered); standard input's end ends nghook with status 0
once what had already come back is written out.
"""

from __future__ import annotations

import getopt
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import trio

from netgraph.errors import NetgraphError

from .main import EX_OSERR, EX_USAGE, open_socket
from .output import hexdump

USAGE = (
    "usage: nghook [-adln] [-s socket] [-m msg] path [hookname]\n"
    "       nghook -e [-n] [-s socket] [-m msg] path hookname prog [args ...]"
)
HOOK = "hook"
CHUNK = 65536


class Options:
    def __init__(self) -> None:
        self.ascii = False
        self.loop = False
        self.no_stdin = False
        self.execute = False
        self.debug = 0
        self.socket: str | None = None
        self.messages: list[str] = []
        self.path = ""
        self.hookname = "debug"
        self.program: list[str] = []


def parse_options(argv: Sequence[str]) -> Options:
    opts = Options()
    found, rest = getopt.getopt(list(argv), "+adlnem:s:")
    for flag, value in found:
        if flag == "-a":
            opts.ascii = True
        elif flag == "-d":
            opts.debug += 1
        elif flag == "-l":
            opts.loop = True
        elif flag == "-n":
            opts.no_stdin = True
        elif flag == "-e":
            opts.execute = True
        elif flag == "-m":
            opts.messages.append(value)
        elif flag == "-s":
            opts.socket = value
    if opts.execute:
        if len(rest) < 3:
            raise getopt.GetoptError("-e needs a path, a hook name and a program")
        opts.path, opts.hookname, opts.program = rest[0], rest[1], rest[2:]
    else:
        if not 1 <= len(rest) <= 2:
            raise getopt.GetoptError("a path and at most a hook name")
        opts.path = rest[0]
        if len(rest) == 2:
            opts.hookname = rest[1]
    return opts


async def _from_stream(sock: Any, stream: trio.abc.ReceiveStream) -> None:
    """What comes on ``stream`` goes out of the hook, until its end."""
    while True:
        data = await stream.receive_some(CHUNK)
        if not data:
            return
        await sock.send_data(HOOK, data)


class Relay:
    """What comes in on the hook goes to ``stream``, until ``stop``: an item already taken
    from the socket node is always written out, never cut off halfway."""

    def __init__(self, sock: Any, stream: trio.abc.SendStream, opts: Options) -> None:
        self.sock, self.stream, self.opts = sock, stream, opts
        self.waiting: trio.CancelScope | None = None
        self.stopped = False
        self.count = 0

    async def run(self) -> None:
        while not self.stopped:
            with trio.CancelScope() as self.waiting:
                _, data = await self.sock.recv_data()
            self.waiting = None
            self.count += 1
            if self.stopped:
                return
            await _write(self.sock, self.stream, bytes(data), self.opts)

    async def settle(self, quiet: float = 0.2, most: float = 2.0) -> None:
        """Let what is still on its way back arrive: wait until nothing has come for
        ``quiet`` seconds (at most ``most`` in all). Through a daemon, replies to the last
        packets may still be in flight when standard input ends."""
        with trio.move_on_after(most):
            while True:
                before = self.count
                await trio.sleep(quiet)
                if self.count == before and self.waiting is not None:
                    return

    def stop(self) -> None:
        self.stopped = True
        if self.waiting is not None:
            self.waiting.cancel()


async def _write(sock: Any, stream: trio.abc.SendStream, data: bytes, opts: Options) -> None:
    if opts.ascii:
        await stream.send_all(("\n".join(hexdump(data)) + "\n\n").encode())
    else:
        await stream.send_all(data)
    if opts.loop:
        await sock.send_data(HOOK, data)


async def _drain(sock: Any, stream: trio.abc.SendStream, opts: Options) -> None:
    while sock.pending_data():
        _, data = await sock.recv_data()
        await _write(sock, stream, bytes(data), opts)


async def run(opts: Options) -> int:
    try:
        async with open_socket(opts.socket, "") as sock:
            await sock.connect(".", opts.path, HOOK, opts.hookname)
            for message in opts.messages:
                await sock.send_ascii(opts.path, message)
            if opts.execute:
                return await _execute(sock, opts)
            stdout = trio.lowlevel.FdStream(os.dup(1))
            async with stdout:
                relay = Relay(sock, stdout, opts)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(relay.run)
                    if opts.no_stdin:
                        await trio.sleep_forever()
                    async with trio.lowlevel.FdStream(os.dup(0)) as stdin:
                        await _from_stream(sock, stdin)
                    await relay.settle()
                    relay.stop()
                await _drain(sock, stdout, opts)
            return 0
    except NetgraphError as err:
        print(f"nghook: {err.strerror}", file=sys.stderr)
        if err.detail:
            print(f"nghook: {err.detail}", file=sys.stderr)
        return EX_OSERR


async def _execute(sock: Any, opts: Options) -> int:
    """``-e``: the program's standard input and output are the hook."""
    process = await trio.lowlevel.open_process(
        opts.program, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        relay = Relay(sock, process.stdin, opts)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            if not opts.no_stdin:
                await _from_stream(sock, process.stdout)
            await process.wait()
            relay.stop()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
    return process.returncode or 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_options(sys.argv[1:] if argv is None else argv)
    except getopt.GetoptError as err:
        print(f"nghook: {err.msg}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return EX_USAGE
    try:
        return trio.run(run, opts)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
