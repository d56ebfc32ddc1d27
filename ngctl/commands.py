"""ngctl's commands: one table (name, usage, aliases, summary, help, handler), FreeBSD's order.

Each command runs against a socket node, in-process (``netgraph.Socket``) or through the graph
daemon (``netgraph.remote.RemoteSocket``): both have the same API. A command returns OK, USAGE or
ERROR as FreeBSD's ``CMDRTN_*`` do; QUIT ends the session.
"""

from __future__ import annotations

import enum
import errno
import getopt
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
import trio

from netgraph.cmdlist import expects_reply
from netgraph.errors import NetgraphError, ParseError
from netgraph.message import (
    GENERIC_COOKIE,
    NG_NODESIZ,
    NGM_BINARY2ASCII,
    NGM_TEXT_CONFIG,
    NGM_TEXT_STATUS,
)
from netgraph.parse import c_integer

from . import output


class Status(enum.IntEnum):
    OK = 0
    USAGE = 1
    ERROR = 2
    QUIT = 3


@attrs.frozen
class Words:
    """A command's arguments: the words after the command name, and the raw text they came
    from with its offset in the input line (``msg`` takes the rest of the line as it is)."""

    args: tuple[str, ...]
    rest: str = ""
    line: str = ""
    offset: int = 0


Handler = Callable[["Session", Words], Awaitable[Status]]


@attrs.frozen
class Command:
    name: str
    usage: str
    summary: str
    help: str
    aliases: tuple[str, ...]
    run: Handler
    # Commands of ours, not FreeBSD's, answer only to their whole name, so that FreeBSD's
    # prefixes keep meaning what they mean there ("l" is still list).
    whole_name_only: bool = False


class LookupProblem(Exception):
    """``"x": unknown command`` or ``"x": ambiguous command``."""


def lookup(word: str) -> Command:
    """FreeBSD's lookup: a case-insensitive prefix of a command's name or of an alias."""
    w = word.lower()
    found = [
        cmd
        for cmd in COMMANDS
        if (cmd.name == w if cmd.whole_name_only else cmd.name.startswith(w))
        or any(alias.lower().startswith(w) for alias in cmd.aliases)
    ]
    if not found:
        raise LookupProblem(f'"{word}": unknown command')
    if len(found) > 1:
        raise LookupProblem(f'"{word}": ambiguous command')
    return found[0]


class Printer(Protocol):
    def __call__(self, text: str, *, err: bool = False) -> None: ...


def default_printer(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


BLANKS = " \t\n\r\f\v"


def split_words(line: str) -> list[tuple[str, int]]:
    """Plain whitespace splitting with no quoting (spec 5.2), with each word's offset."""
    words = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in BLANKS:
            i += 1
        start = i
        while i < n and line[i] not in BLANKS:
            i += 1
        if i > start:
            words.append((line[start:i], start))
    return words


class Session:
    """One ngctl: a socket node, the debug level, how long ``msg`` waits for its reply."""

    def __init__(
        self,
        sock: Any,
        *,
        printer: Printer = default_printer,
        msg_wait: float = 1.0,
        debug: int = 0,
        read_depth: int = 0,
    ) -> None:
        self.sock = sock
        self.print = printer
        self.msg_wait = msg_wait
        self.debug = debug
        self.read_depth = read_depth

    # ------------------------------------------------------------------------- running

    def warn(self, text: str) -> None:
        self.print(f"ngctl: {text}", err=True)

    def fail(self, what: str, err: NetgraphError, words: Words | None = None) -> Status:
        """``ngctl: send msg: <strerror>`` as FreeBSD says it, then what went wrong exactly."""
        self.warn(f"{what}: {err.strerror}")
        if isinstance(err, ParseError) and words is not None and words.line:
            column = words.offset + err.pos + 1
            self.warn(f"column {column}: {err.reason}")
            self.print(f"  {words.line}", err=True)
            self.print(f"  {' ' * (column - 1)}^", err=True)
        elif err.detail:
            self.warn(err.detail)
        return Status.ERROR

    async def run_line(self, line: str) -> Status:
        """One line of a file or of interactive input."""
        if line.lstrip(BLANKS).startswith("#"):
            return Status.OK
        words = split_words(line)
        if not words:
            return Status.OK
        (name, _), rest = words[0], words[1:]
        offset = rest[0][1] if rest else len(line)
        text = line[offset:].rstrip(BLANKS)
        return await self.run(name, Words(tuple(w for w, _ in rest), text, line, offset))

    async def run_argv(self, argv: Sequence[str]) -> Status:
        """A command given on ngctl's own command line: the words as they are (no re-split)."""
        rest = " ".join(argv[1:])
        line = " ".join(argv)
        return await self.run(argv[0], Words(tuple(argv[1:]), rest, line, len(argv[0]) + 1))

    async def run(self, name: str, words: Words) -> Status:
        try:
            cmd = lookup(name)
        except LookupProblem as problem:
            self.warn(str(problem))
            return Status.ERROR
        status = await cmd.run(self, words)
        if status == Status.USAGE:
            self.warn(f"usage: {cmd.usage}")
        return status

    async def run_lines(self, lines: Iterable[str]) -> Status:
        """A file's lines: stop at the first that fails (``ngctl: line N: error in file``)."""
        for number, line in enumerate(lines, 1):
            status = await self.run_line(line.rstrip("\n"))
            if status == Status.QUIT:
                return Status.QUIT
            if status != Status.OK:
                self.warn(f"line {number}: error in file")
                return status
        return Status.OK

    # ------------------------------------------------------------------------ helpers

    async def reply_to(self, path: str, cookie: int, cmd: int, args: Any, cmdstr: str) -> Any:
        """Send and wait up to ``msg_wait`` for the reply (None if none came)."""
        with trio.move_on_after(self.msg_wait):
            return await self.sock.request(path, cookie, cmd, args, cmdstr=cmdstr)
        return None

    async def show_reply(self, path: str, msg: Any) -> None:
        """``Rec'd response "cmd" (N) from "[id]:":`` then ``Args:<TAB>...``, the arguments
        converted by the sender (spec 5.4); a hex dump when it cannot convert them."""
        try:
            converted = await self.sock.request(
                path, GENERIC_COOKIE, NGM_BINARY2ASCII, msg, cmdstr="binary2ascii"
            )
            name, text = converted.args.cmdstr, converted.args.args
        except NetgraphError:
            kind = "response" if msg.is_response else "command"
            self.print(f'Rec\'d {kind} {output.signed32(msg.cmd)} from "{path}":')
            data = msg.args if isinstance(msg.args, bytes) else b""
            self.print("\n".join(output.hexdump(data)) if data else "No arguments")
            return
        self.print(output.reply_header(msg.is_response, name, msg.cmd, path))
        self.print(output.reply_args(text))


# ----------------------------------------------------------------------------- commands


async def config_cmd(s: Session, w: Words) -> Status:
    return await _text_query(s, w, NGM_TEXT_CONFIG, "Config", "config")


async def status_cmd(s: Session, w: Words) -> Status:
    return await _text_query(s, w, NGM_TEXT_STATUS, "Status", "status")


async def _text_query(s: Session, w: Words, cmd: int, label: str, noun: str) -> Status:
    if not w.args or (cmd == NGM_TEXT_STATUS and len(w.args) != 1):
        return Status.USAGE
    path = w.args[0]
    args = " ".join(w.args[1:]) if cmd == NGM_TEXT_CONFIG else None
    name = "textconfig" if cmd == NGM_TEXT_CONFIG else "textstatus"
    try:
        reply = await s.reply_to(path, GENERIC_COOKIE, cmd, args, name)
    except NetgraphError as err:
        if err.errno != errno.EINVAL:
            return s.fail("send msg", err)
        reply = None
    if reply is None or not isinstance(reply.args, str | bytes):
        s.print(f'No {noun} available for "{path}"')
        return Status.OK
    text = reply.args if isinstance(reply.args, str) else reply.args.split(b"\0")[0].decode()
    s.print(f'{label} for "{path}":')
    s.print(text)
    return Status.OK


def with_path(args: Sequence[str], count: int) -> tuple[str, ...] | None:
    """FreeBSD's optional leading path, chosen by the number of arguments: ``count`` of them
    means the path is ``.``; one more means the first is the path; else None (usage)."""
    if len(args) == count:
        return (".", *args)
    if len(args) == count + 1:
        return tuple(args)
    return None


async def connect_cmd(s: Session, w: Words) -> Status:
    args = with_path(w.args, 3)
    if args is None:
        return Status.USAGE
    path, relpath, hook, peerhook = args
    try:
        await s.sock.connect(path, relpath, hook, peerhook)
    except NetgraphError as err:
        return s.fail("send msg", err)
    return Status.OK


async def debug_cmd(s: Session, w: Words) -> Status:
    if len(w.args) > 1:
        return Status.USAGE
    if w.args:
        arg = w.args[0]
        if arg == "+":
            s.debug += 1
        elif arg == "-":
            s.debug = max(0, s.debug - 1)
        else:
            level = c_integer(arg)
            if level is None or level < 0:
                return Status.USAGE
            s.debug = level
    s.print(f"Current debug level is {s.debug}")
    return Status.OK


async def dot_cmd(s: Session, w: Words) -> Status:
    if len(w.args) > 1:
        return Status.USAGE
    try:
        nodes = (await s.sock.listnodes()).nodeinfo
        hooks = [await s.sock.listhooks(f"[{info.id:x}]:") for info in nodes]
    except NetgraphError as err:
        return s.fail("send msg", err)
    text = "\n".join(output.dot(nodes, hooks)) + "\n"
    if w.args:
        try:
            with open(w.args[0], "w") as f:
                f.write(text)
        except OSError as err:
            s.warn(f"Could not open {w.args[0]} for writing: {err.strerror}")
            return Status.ERROR
    else:
        s.print(text.rstrip("\n"))
    return Status.OK


async def help_cmd(s: Session, w: Words) -> Status:
    if not w.args:
        for line in output.help_summary((c.name, c.summary) for c in COMMANDS):
            s.print(line)
        return Status.OK
    if len(w.args) > 1:
        return Status.USAGE
    try:
        cmd = lookup(w.args[0])
    except LookupProblem as problem:
        s.warn(str(problem))
        return Status.ERROR
    for line in output.help_command(cmd.usage, cmd.aliases, cmd.summary, cmd.help):
        s.print(line)
    return Status.OK


async def list_cmd(s: Session, w: Words) -> Status:
    try:
        opts, rest = getopt.getopt(list(w.args), "ln")
    except getopt.GetoptError:
        return Status.USAGE
    if rest:
        return Status.USAGE
    flags = {flag for flag, _ in opts}
    named = "-n" in flags
    try:
        found = await (s.sock.listnames() if named else s.sock.listnodes())
    except NetgraphError as err:
        return s.fail("send msg", err)
    infos = found.nodeinfo
    if "-l" not in flags:
        for line in output.node_list(infos, named=named):
            s.print(line)
        return Status.OK
    s.print(output.node_list(infos, named=named)[0])
    for i, info in enumerate(infos):
        if i:
            s.print("")
        status = await _show(s, f"[{info.id:x}]:", with_hooks=True)
        if status != Status.OK:
            return status
    return Status.OK


async def mkpeer_cmd(s: Session, w: Words) -> Status:
    args = with_path(w.args, 3)
    if args is None:
        return Status.USAGE
    path, type_name, hook, peerhook = args
    try:
        await s.sock.mkpeer(path, type_name, hook, peerhook)
    except NetgraphError as err:
        return s.fail("send msg", err)
    return Status.OK


async def msg_cmd(s: Session, w: Words) -> Status:
    if len(w.args) < 2:
        return Status.USAGE
    path = w.args[0]
    # The command and its arguments: the rest of the line as written (spec 10.9).
    words = split_words(w.rest)
    text = w.rest[words[1][1] :] if len(words) > 1 else w.args[1]
    offset = w.offset + (words[1][1] if len(words) > 1 else 0)
    try:
        msg = await s.sock.to_binary(path, text)
        info = await s.sock.nodeinfo(path)
        if expects_reply(info.type, msg):
            reply = await s.reply_to(path, msg.typecookie, msg.cmd, msg.args, msg.cmdstr)
        else:
            await s.sock.send_msg(path, msg)
            reply = None
    except NetgraphError as err:
        return s.fail("send msg", err, Words(w.args, w.rest, w.line, offset))
    if reply is not None:
        await s.show_reply(f"[{info.id:x}]:", reply)
    return Status.OK


async def name_cmd(s: Session, w: Words) -> Status:
    if len(w.args) != 2:
        return Status.USAGE
    path, name = w.args
    name = name.encode()[: NG_NODESIZ - 1].decode(errors="ignore")  # as FreeBSD truncates
    try:
        await s.sock.name_node(path, name)
    except NetgraphError as err:
        return s.fail("send msg", err)
    return Status.OK


async def read_cmd(s: Session, w: Words) -> Status:
    if len(w.args) != 1:
        return Status.USAGE
    if s.read_depth > 32:
        s.warn(f"{w.args[0]}: files read each other too deeply")
        return Status.ERROR
    try:
        with open(w.args[0]) as f:
            lines = f.readlines()
    except OSError as err:
        s.warn(f"{w.args[0]}: {err.strerror}")
        return Status.ERROR
    s.read_depth += 1
    try:
        status = await s.run_lines(lines)
    finally:
        s.read_depth -= 1
    return Status.QUIT if status == Status.QUIT else (Status.OK if status == Status.OK else status)


async def rmhook_cmd(s: Session, w: Words) -> Status:
    args = with_path(w.args, 1)
    if args is None:
        return Status.USAGE
    path, hook = args
    try:
        await s.sock.rmhook(path, hook)
    except NetgraphError as err:
        return s.fail("send msg", err)
    return Status.OK


async def show_cmd(s: Session, w: Words) -> Status:
    try:
        opts, rest = getopt.getopt(list(w.args), "n")
    except getopt.GetoptError:
        return Status.USAGE
    if len(rest) != 1:
        return Status.USAGE
    return await _show(s, rest[0], with_hooks=not opts)


async def _show(s: Session, path: str, *, with_hooks: bool) -> Status:
    try:
        hooks = await s.sock.listhooks(path)
    except NetgraphError as err:
        return s.fail("send msg", err)
    for line in output.show(hooks, with_hooks=with_hooks):
        s.print(line)
    return Status.OK


async def shutdown_cmd(s: Session, w: Words) -> Status:
    if len(w.args) != 1:
        return Status.USAGE
    try:
        await s.sock.shutdown(w.args[0])
    except NetgraphError as err:
        return s.fail("shutdown", err)
    return Status.OK


async def types_cmd(s: Session, w: Words) -> Status:
    if w.args:
        return Status.USAGE
    try:
        found = await s.sock.listtypes()
    except NetgraphError as err:
        return s.fail("send msg", err)
    for line in output.type_list([(t.typename, t.numnodes) for t in found.typeinfo]):
        s.print(line)
    return Status.OK


async def write_cmd(s: Session, w: Words) -> Status:
    if len(w.args) < 2:
        return Status.USAGE
    hook, rest = w.args[0], w.args[1:]
    if rest[0] == "-f":
        if len(rest) != 2:
            return Status.USAGE
        try:
            with open(rest[1], "rb") as f:
                data = f.read(8192)
        except OSError:
            s.warn("can't read file")
            return Status.ERROR
        if not data:
            s.warn(f'file "{rest[1]}" is empty')
            return Status.ERROR
    else:
        values = []
        for word in rest:
            value = c_integer(word)
            if value is None or not -128 <= value <= 255:
                s.warn(f'invalid byte "{word}"')
                return Status.ERROR
            values.append(value & 0xFF)
        data = bytes(values)
    try:
        await s.sock.send_data(hook, data)
    except NetgraphError as err:
        return s.fail("send data", err)
    return Status.OK


async def load_cmd(s: Session, w: Words) -> Status:
    if len(w.args) != 1:
        return Status.USAGE
    from netgraph.graphfile import load

    try:
        await load(s.sock, w.args[0])
    except NetgraphError as err:
        s.warn(str(err))
        context = getattr(err, "context", "")
        for line in context.splitlines():
            s.print(f"  {line}", err=True)
        return Status.ERROR
    return Status.OK


async def save_cmd(s: Session, w: Words) -> Status:
    if len(w.args) != 1:
        return Status.USAGE
    from netgraph.graphfile import save

    try:
        text = await save(s.sock)
    except NetgraphError as err:
        return s.fail("save", err)
    try:
        with open(w.args[0], "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        s.warn(f"Could not open {w.args[0]} for writing: {err.strerror}")
        return Status.ERROR
    return Status.OK


async def quit_cmd(s: Session, w: Words) -> Status:
    return Status.QUIT


COMMANDS: tuple[Command, ...] = (
    Command("config", "config <path> [arguments]",
            "Get or set the configuration of the node at <path>",
            "Asks the node at <path> for its configuration as text; with arguments, they are "
            "sent along as the configuration to apply. Nodes that keep no text configuration "
            "say so.", (), config_cmd),
    Command("connect", "connect [path] <relpath> <hook> <peerhook>",
            "Link <hook> of the node at <path> to <peerhook> of the node at <relpath>",
            "Creates a link from hook <hook> of the node at <path> to hook <peerhook> of the "
            "node at <relpath>, which is looked up starting from <path> rather than from "
            "ngctl. Without <path>, ngctl's own node (\".\") is meant.", ("join",), connect_cmd),
    Command("debug", "debug [level]", "Show or change the debugging level",
            "With no argument, prints the current level. \"+\" and \"-\" raise and lower it "
            "by one; a number sets it.", (), debug_cmd),
    Command("dot", "dot [outputfile]", "Write the whole graph in GraphViz (.dot) form",
            "Describes every node and link for GraphViz's dot program, on standard output or "
            "in <outputfile>.", ("graphviz", "confdot"), dot_cmd),
    Command("help", "help [command]", "List the commands, or explain one", "", ("?",),
            help_cmd),
    Command("list", "list [-ln]", "List the nodes of the graph",
            "Prints one line per node. With -n, only nodes that have names; with -l, each "
            "node's hooks too.", ("ls",), list_cmd),
    Command("load", "load <file>", "Apply a graph file (YAML) to the graph",
            "Makes the nodes, links and messages the graph file describes (docs/graph-file.md). "
            "All or nothing: when a line of the file fails, everything the file made is undone "
            "and the error names the file, line and column. Not a FreeBSD command: only the "
            "whole name calls it.", (), load_cmd, whole_name_only=True),
    Command("mkpeer", "mkpeer [path] <type> <hook> <peerhook>",
            "Make a node of type <type> linked to the node at <path>",
            "Makes a new node of type <type> and, in the same step, links its hook <peerhook> "
            "to hook <hook> of the node at <path>. Without <path>, ngctl's own node is meant.",
            (), mkpeer_cmd),
    Command("msg", "msg path command [args ... ]",
            "Send a netgraph control message, written as text, to the node at \"path\"",
            "The node at \"path\" turns the command name and the rest of the line into a "
            "control message, which is then sent to it. A reply that comes within a moment is "
            "printed; later ones are printed as they arrive in interactive use.", ("cmd",),
            msg_cmd),
    Command("name", "name <path> <name>", "Give the node at <path> the name <name>", "", (),
            name_cmd),
    Command("read", "read <filename>", "Run the commands in a file", "", ("source", "."),
            read_cmd),
    Command("rmhook", "rmhook [path] <hook>", "Remove hook <hook> of the node at <path>",
            "Breaks the link made by hook <hook> of the node at <path>; a hook that is not "
            "there is no error. Without <path>, ngctl's own node is meant.", ("disconnect",),
            rmhook_cmd),
    Command("save", "save <file>", "Write the graph as a graph file (YAML)",
            "Writes a graph file that recreates the graph: its nodes, names, links and the "
            "configuration each node type can report. Socket nodes (ngctl and other clients) "
            "are left out. Not a FreeBSD command: only the whole name calls it.", (),
            save_cmd, whole_name_only=True),
    Command("show", "show [-n] <path>", "Describe the node at <path> and its hooks",
            "Prints the node's name, type, ID and hook count, then a table of its hooks and "
            "their peers, unless -n is given.", ("inquire", "info"), show_cmd),
    Command("shutdown", "shutdown <path>", "Remove the node at <path>",
            "Shuts the node at <path> down; its links go with it.", ("kill", "rmnode"),
            shutdown_cmd),
    Command("status", "status <path>", "Print the status of the node at <path> as text", "",
            (), status_cmd),
    Command("types", "types", "List the node types and how many nodes each has", "", (),
            types_cmd),
    Command("write", "write hook < -f file | byte ... >",
            "Send one data packet out of ngctl's hook <hook>",
            "The packet is the contents of a file (at most 8192 bytes) or the bytes given as "
            "numbers (decimal, 0x hex or 0 octal).", ("w",), write_cmd),
    Command("quit", "quit", "Leave ngctl", "", ("exit",), quit_cmd),
)  # fmt: skip
