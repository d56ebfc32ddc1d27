"""ASCII control messages: parse-and-convert and unparse rates, against lark's tree parse.

Contenders, interleaved round by round in one run:

* ours      - ``line_to_message``: the LALR parse with the inline transformer, then the
              type-directed conversion to a typed message;
* lark tree - the same grammar parsed the default way (a parse tree, then a Transformer over
              it), then the same conversion: what a straightforward lark use costs;
* unparse   - ``message_to_text`` of the converted message (canonical text).

Three messages: one2many's ``setconfig``, a nested struct of about the same length (a tee's
statistics) and a long nested struct (a listhooks reply, 172 characters).
Targets (issue 3): at least 10k messages/s parsed and converted, at least 30k/s unparsed.

    .venv/bin/python bench/ascii.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from lark import Lark

from netgraph import Node
from netgraph.ascii import GRAMMAR, _Build, cmdlist_of, line_to_message, message_to_text
from netgraph.message import Message
from nodes.one2many import One2ManyNode
from nodes.tee import TeeNode

SETCONFIG = "setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 ] }"
LISTHOOKS = (
    'listhooks { nodeinfo={ type="ksocket" id=0x9 hooks=1 } linkinfo=[ { ourhook="local/stream/0"'
    ' peerhook="bar" nodeinfo={ name="ngctl1327" type="socket" id=0x8 hooks=1 } } ] }'
)
TEESTATS = "getstats { right={ inOctets=5 inFrames=1 } left={ outOctets=5 outFrames=1 } }"
CASES: list[tuple[str, type[Node], str, bool]] = [
    ("setconfig", One2ManyNode, SETCONFIG, False),
    ("nested struct", TeeNode, TEESTATS, True),
    ("long nested struct", Node, LISTHOOKS, True),
]


def rate(fn: Callable[..., Any], args: tuple[Any, ...], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return n / (time.perf_counter() - start)


def main(rounds: int, n: int) -> None:
    tree_parser = Lark(GRAMMAR.read_text(), parser="lalr", lexer="contextual")
    build = _Build()

    def tree_way(node_type: type[Node], line: str, response: bool) -> Message:
        name, args = line.split(" ", 1)
        cmd = cmdlist_of(node_type)[0][name]
        ptype = cmd.reply if response else cmd.request
        assert ptype is not None
        value = ptype.convert(build.transform(tree_parser.parse(args)), {})
        return Message(cmd.cookie, cmd.cmd, value, name)

    print(f"{rounds} interleaved rounds of {n} messages; median messages per second")
    for label, node_type, line, response in CASES:
        msg = line_to_message(node_type, line, response=response)
        assert tree_way(node_type, line, response).args == msg.args
        assert " ".join(message_to_text(node_type, msg)) == line
        ours, tree, out = [], [], []
        for _ in range(rounds):
            ours.append(rate(line_to_message, (node_type, line, response), n))
            tree.append(rate(tree_way, (node_type, line, response), n))
            out.append(rate(message_to_text, (node_type, msg), n))
        o, t, u = (statistics.median(x) for x in (ours, tree, out))
        print(f"  {label} ({len(line)} chars)")
        print(f"    parse+convert, ours       {o:9.0f}/s  ({1e6 / o:6.1f} us)  target >= 10000/s")
        print(f"    parse+convert, lark tree  {t:9.0f}/s  ({1e6 / t:6.1f} us)")
        print(f"    ours / lark tree          {o / t:9.2f}x")
        print(f"    unparse                   {u:9.0f}/s  ({1e6 / u:6.1f} us)  target >= 30000/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    main(args.rounds, args.n)
