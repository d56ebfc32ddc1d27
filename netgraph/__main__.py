"""``python -m netgraph serve --socket PATH``: host a graph for clients (docs/wire.md).

Prints nothing while it runs (``-v`` logs to stderr, ``-vv`` more); exits 0 on SIGTERM or SIGINT,
and 1 with a message when it cannot listen (the path in use, a bad directory...).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial

import trio

from .daemon import serve


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
    _verbose(daemon, "verbose")
    args = parser.parse_args(argv)

    verbosity = args.verbose + args.verbose_top
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s[%(process)d]: %(levelname)s: %(message)s")
    try:
        trio.run(partial(serve, args.socket))
    except OSError as err:  # NetgraphError included: the socket could not be set up
        print(f"{parser.prog} serve: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a SIGINT before the daemon listened for it
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
