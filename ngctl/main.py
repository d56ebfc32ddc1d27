"""The ngctl command: options, the three modes (one command, a file, interactive), exit codes.

``ngctl [-d] [-f file] [-n name] [-s socket] [-t seconds] [command [argument ...]]``

Without ``-s`` ngctl hosts a graph of its own, so it works with nothing else running; with
``-s SOCKET`` it attaches to a graph daemon (``python -m netgraph serve``).
"""

from __future__ import annotations

import getopt
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from netgraph.errors import NetgraphError

from .commands import Session, Status

EX_OK = 0
EX_USAGE = 64
EX_NOINPUT = 66
EX_OSERR = 71

USAGE = "usage: ngctl [-d] [-f file] [-n nodename] [-s socket] [-t seconds] [command ...]"


class Options:
    def __init__(self) -> None:
        self.debug = 0
        self.file: str | None = None
        self.name = f"ngctl{os.getpid()}"
        self.socket: str | None = None
        self.msg_wait = 1.0
        self.command: list[str] = []


def parse_options(argv: Sequence[str]) -> Options:
    """FreeBSD's getopt: options stop at the first word that is not one."""
    opts = Options()
    found, rest = getopt.getopt(list(argv), "+df:n:s:t:")
    for flag, value in found:
        if flag == "-d":
            opts.debug += 1
        elif flag == "-f":
            opts.file = value
        elif flag == "-n":
            opts.name = value
        elif flag == "-s":
            opts.socket = value
        elif flag == "-t":
            try:
                opts.msg_wait = float(value)
            except ValueError:
                raise getopt.GetoptError(f"-t wants seconds, not {value!r}") from None
    opts.command = rest
    return opts


@asynccontextmanager
async def open_socket(socket: str | None, name: str) -> AsyncIterator[Any]:
    """A socket node: in a graph of ngctl's own, or on a graph daemon's."""
    if socket is not None:
        from netgraph.remote import connect

        async with connect(socket, name) as sock:
            yield sock
        return
    from netgraph import open_graph

    async with open_graph() as graph:
        yield graph.socket(name)


def exit_code(status: Status) -> int:
    return {Status.OK: EX_OK, Status.QUIT: EX_OK, Status.USAGE: EX_USAGE}.get(status, EX_OSERR)


async def run(opts: Options) -> int:
    lines: list[str] | None = None
    if not opts.command and opts.file is not None:
        try:
            if opts.file == "-":
                lines = sys.stdin.readlines()
            else:
                with open(opts.file) as f:
                    lines = f.readlines()
        except OSError as err:
            print(f"ngctl: {opts.file}: {err.strerror}", file=sys.stderr)
            return EX_NOINPUT
    interactive = not opts.command and lines is None
    if interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("ngctl: no command specified", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return EX_USAGE
    try:
        async with open_socket(opts.socket, opts.name) as sock:
            session = Session(sock, msg_wait=opts.msg_wait, debug=opts.debug)
            if opts.command:
                return exit_code(await session.run_argv(opts.command))
            if lines is not None:
                return exit_code(await session.run_lines(lines))
            from .interactive import interact

            return await interact(session)
    except NetgraphError as err:
        where = f" on {opts.socket}" if opts.socket else ""
        print(f"ngctl: can't create node{where}: {err.strerror}", file=sys.stderr)
        if err.detail:
            print(f"ngctl: {err.detail}", file=sys.stderr)
        return EX_OSERR
    except OSError as err:
        print(f"ngctl: can't reach {opts.socket}: {err.strerror}", file=sys.stderr)
        return EX_OSERR


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_options(sys.argv[1:] if argv is None else argv)
    except getopt.GetoptError as err:
        print(f"ngctl: {err.msg}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return EX_USAGE
    if opts.debug:
        logging.basicConfig(level=logging.DEBUG if opts.debug > 1 else logging.INFO)
    try:
        return trio.run(run, opts)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
