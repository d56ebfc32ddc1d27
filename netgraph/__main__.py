"""``python -m netgraph run FILE`` and ``serve --socket PATH [FILE]``: graphs as programs.

``run`` applies a graph file (docs/graph-file.md) and keeps the graph running in the foreground;
``serve`` hosts a graph for clients (docs/wire.md), first applying FILE if given. Both print
nothing while they run (``-v`` logs to stderr, ``-vv`` more) and exit 0 on SIGTERM or SIGINT;
a graph file that fails exits 65 (EX_DATAERR) with ``file:line:column: what (ERRNO)`` and the
line; a control socket that cannot be set up exits 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio

from .daemon import serve
from .graph import Graph, open_graph

EX_DATAERR = 65


class _FileFailed(Exception):
    """The graph file did not apply; its error has been printed."""


async def _load(graph: Graph, filename: str, prog: str) -> None:
    from .errors import NetgraphError
    from .graphfile import GraphFileError, load

    sock = graph.socket()
    try:
        await load(sock, filename)
    except NetgraphError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        if isinstance(err, GraphFileError) and err.context:
            print("\n".join(f"  {line}" for line in err.context.splitlines()), file=sys.stderr)
        raise _FileFailed from None
    finally:
        await sock.close()


async def _run(filename: str, prog: str) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_graph() as graph:
            await _load(graph, filename, prog)
            logging.getLogger("netgraph").info("running %s", filename)
            async for _ in signals:
                break
            graph.close()


async def _serve(path: str, filename: str | None, prog: str) -> None:
    async with open_graph() as graph:
        if filename is not None:
            await _load(graph, filename, prog)
        await serve(path, graph=graph)


def _verbose(parser: argparse.ArgumentParser, dest: str) -> None:
    parser.add_argument(
        "-v", "--verbose", dest=dest, action="count", default=0, help="log to stderr (twice: debug)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m netgraph", description="netgraph for Python: a graph on trio"
    )
    _verbose(parser, "verbose_top")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    daemon = commands.add_parser(
        "serve",
        help="host a graph on a Unix-domain control socket",
        description="Host a graph that clients (netgraph.remote, ngctl -s) attach to. The socket "
        "is created mode 0600 and only this user's processes may connect.",
    )
    daemon.add_argument("-s", "--socket", required=True, metavar="PATH", help="socket file")
    daemon.add_argument("file", nargs="?", metavar="FILE", help="a graph file to apply first")
    _verbose(daemon, "verbose")
    runner = commands.add_parser(
        "run",
        help="run a graph file in the foreground",
        description="Apply a graph file (docs/graph-file.md) to a new graph and keep it running "
        "until SIGINT (Ctrl-C) or SIGTERM.",
    )
    runner.add_argument("file", metavar="FILE", help="the graph file")
    _verbose(runner, "verbose")
    args = parser.parse_args(argv)

    verbosity = args.verbose + args.verbose_top
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s[%(process)d]: %(levelname)s: %(message)s")
    prog = f"{parser.prog} {args.command}"
    try:
        if args.command == "run":
            trio.run(_run, args.file, prog)
        else:
            trio.run(partial(_serve, args.socket, args.file, prog))
    except _FileFailed:
        return EX_DATAERR
    except OSError as err:  # NetgraphError included: the socket could not be set up
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a SIGINT before the daemon listened for it
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
