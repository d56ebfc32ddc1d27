"""The ASCII form of control messages: text to values and back (spec 3, 10.3-10.5).

``ascii.lark`` reads the generic shape of an argument (structs, arrays, words, strings) with
lark's LALR parser; an inline transformer builds the light value tree of :mod:`netgraph.parse`
as it goes, and the expected parse type then converts that tree. A type that reads its own
top-level text (``local/"/tmp/x"``, ``inet6/[::1]:80``) gets the raw argument instead.

Errors are :class:`ParseError`: FreeBSD's errno, plus what FreeBSD never says, the line, the
column and a caret under the offending token.

Message level: a node type's cmdlist (and the generic one after it) names each message and types
its arguments; :func:`text_to_message` and :func:`message_to_text` convert whole messages, and
:func:`convert_message` is the engine's BINARY2ASCII / ASCII2BINARY.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .cmdlist import BLANKS, cmdlist_of, decode_args, find_cmd, split_command
from .errors import NetgraphError, ParseError
from .message import (
    NGF_RESP,
    NGM_ASCII2BINARY,
    NGM_BINARY2ASCII,
    Message,
)
from .parse import ArrayNode, ParseType, StructNode, ValueProblem

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "ParseError",
    "cmdlist_of",
    "convert_message",
    "find_cmd",
    "line_to_message",
    "make_parser",
    "message_to_text",
    "parse_value",
    "split_command",
    "text_to_message",
    "unparse_value",
]

GRAMMAR: Final = Path(__file__).with_name("ascii.lark")


# ---------------------------------------------------------------------------------- grammar


class _Build(Transformer[Token, Any]):
    """Builds the value tree while the parser runs (no parse tree is made)."""

    def start(self, children: list[Any]) -> Any:
        return children[0]

    def struct(self, c: list[Any]) -> StructNode:
        return StructNode(c[0].start_pos, c[1:-1], c[-1].start_pos)

    def field(self, c: list[Any]) -> tuple[Token, Any]:
        return (c[0], c[2])

    def array(self, c: list[Any]) -> ArrayNode:
        return ArrayNode(c[0].start_pos, c[1:-1], c[-1].start_pos)

    def indexed(self, c: list[Any]) -> tuple[Token, Any]:
        return (c[0], c[2])

    def plain(self, c: list[Any]) -> tuple[None, Any]:
        return (None, c[0])


def make_parser(*, strict: bool = False) -> Lark:
    """The LALR parser with the contextual lexer (``strict`` checks the grammar, for tests)."""
    return Lark(
        GRAMMAR.read_text(),
        parser="lalr",
        lexer="contextual",
        transformer=_Build(),
        cache=not strict,
        strict=strict,
    )


@functools.cache
def _parser() -> Lark:
    return make_parser()


_SYMBOLS: Final = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LBRACK": "'['",
    "RBRACK": "']'",
    "EQ": "'='",
    "STRING": "a quoted string",
    "WORD": "a word",
    "BADSTRING": "a quoted string",
    "$END": "the end",
}


def _expected(names: Iterable[str]) -> str:
    wanted = sorted({_SYMBOLS.get(n, n) for n in names})
    return " or ".join(wanted) if wanted else "nothing"


def _syntax_error(exc: UnexpectedInput, text: str) -> ParseError:
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        char = text[pos : pos + 1]
        if char == '"':
            return ParseError(errno.EINVAL, "unterminated quoted string", text, pos)
        if char == "\0":
            return ParseError(errno.EINVAL, "NUL character in the text", text, pos)
        return ParseError(
            errno.EINVAL, f"unexpected {char!r}; expected {_expected(exc.allowed)}", text, pos
        )
    if isinstance(exc, UnexpectedEOF):
        return ParseError(
            errno.EINVAL, f"unexpected end of text; expected {_expected(exc.expected)}", text,
            len(text.rstrip(BLANKS)),
        )  # fmt: skip
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "BADSTRING":
            return ParseError(errno.EINVAL, "unterminated quoted string", text, tok.start_pos or 0)
        if tok.type == "$END":
            return ParseError(
                errno.EINVAL, f"unexpected end of text; expected {_expected(exc.expected)}",
                text, len(text.rstrip(BLANKS)),
            )  # fmt: skip
        found = f"'{tok.value}'" if tok.type != "STRING" else "a quoted string"
        if tok.type == "WORD":
            found = repr(tok.value)
        return ParseError(
            errno.EINVAL, f"unexpected {found}; expected {_expected(exc.expected)}", text,
            tok.start_pos or 0,
        )  # fmt: skip
    return ParseError(errno.EINVAL, str(exc), text, 0)  # pragma: no cover


# ------------------------------------------------------------------------------ values


def parse_value(ptype: ParseType, text: str) -> Any:
    """ASCII in: a value of ``ptype`` from argument text (trailing text is ignored)."""
    custom = ptype.parse_top(text)
    if custom is not None:
        return custom
    if not text.strip(BLANKS):
        raise ParseError(errno.EINVAL, "an argument is required here", text, len(text))
    try:
        tree: Any = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    try:
        return ptype.convert(tree, {})
    except ValueProblem as problem:
        at = problem.pos if problem.pos is not None else 0
        raise ParseError(problem.errno, problem.detail, text, at) from None


def unparse_value(ptype: ParseType | None, value: Any) -> str:
    """ASCII out: canonical text (empty for a command without arguments)."""
    if ptype is None:
        return ""
    try:
        return ptype.unparse(value)
    except ValueProblem as problem:
        raise NetgraphError(problem.errno, problem.detail) from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise NetgraphError(errno.EINVAL, f"cannot write {value!r} as {ptype!r}: {exc}") from None


# ---------------------------------------------------------------------------- messages


def text_to_message(
    node_type: type[Node], name: str, args: str, *, response: bool = False
) -> Message:
    """Command ``name`` with argument text ``args`` as a message for a node of ``node_type``
    (token left at 0). ENOSYS for an unknown command; parse errors point into ``args``."""
    cmd = cmdlist_of(node_type)[0].get(name)
    if cmd is None:
        raise NetgraphError(
            errno.ENOSYS, f"node type {node_type.type_name} has no command {name!r}"
        )
    ptype = cmd.reply if response else cmd.request
    # A command without arguments ignores any text it is given (spec 3.10).
    value = parse_value(ptype, args) if ptype is not None else None
    return Message(cmd.cookie, cmd.cmd, value, cmd.name, NGF_RESP if response else 0)


def line_to_message(node_type: type[Node], line: str, response: bool = False) -> Message:
    """``setconfig { ... }`` as a message; errors carry positions in the whole ``line``."""
    name, args, offset = split_command(line)
    if not name:
        raise ParseError(errno.EINVAL, "a command name is required", line, 0)
    try:
        return text_to_message(node_type, name, args, response=response)
    except ParseError as err:
        raise err.shifted(line[:offset]) from None
    except NetgraphError as err:
        lead = len(line) - len(line.lstrip(BLANKS))
        raise ParseError(err.errno or errno.EINVAL, err.detail, line, lead) from None


def message_to_text(node_type: type[Node], msg: Message) -> tuple[str, str]:
    """A message's ASCII name and its arguments as canonical text."""
    cmd = find_cmd(node_type, msg)
    ptype = cmd.reply if msg.is_response else cmd.request
    args = msg.args
    if isinstance(args, bytes) and ptype is not None:
        args = decode_args(ptype, args)
    return cmd.name, unparse_value(ptype, args)


def convert_message(node: Node, msg: Message) -> Message:
    """BINARY2ASCII / ASCII2BINARY sent to ``node``: convert the message in the arguments.

    BINARY2ASCII takes a message (its arguments typed or binary) and returns it with the ASCII
    name in ``cmdstr`` and the argument text as ``args``. ASCII2BINARY takes a message whose
    ``cmdstr`` names the command and whose ``args`` is the text, and returns it typed.
    """
    inner = msg.args
    if not isinstance(inner, Message):
        raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: the argument is a whole message")
    node_type = type(node)
    if msg.cmd == NGM_BINARY2ASCII:
        name, text = message_to_text(node_type, inner)
        return Message(inner.typecookie, inner.cmd, text, name, inner.flags, inner.token)
    assert msg.cmd == NGM_ASCII2BINARY
    text = inner.args if isinstance(inner.args, str) else ""
    converted = text_to_message(node_type, inner.cmdstr, text, response=inner.is_response)
    return Message(
        converted.typecookie, converted.cmd, converted.args, converted.cmdstr, inner.flags,
        inner.token,
    )  # fmt: skip
