"""Interactive ngctl: prompt_toolkit in a worker thread beside trio.

The prompt (line editing, history, completion) runs in a thread; trio keeps the socket node and
prints replies and data as they arrive. While the prompt is up, ``patch_stdout`` routes that
printing above the line being typed, so it is never garbled; while a command runs, output is
written straight out, so it comes before the next prompt. Ctrl-C drops the line, Ctrl-D leaves
(exit 0).

Completion draws on a cache the trio side refreshes after every command: command names and
aliases, node names and IDs, the hooks of ngctl's node, and the message names of the node type at
the path given to ``msg`` (from its cmdlist).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.patch_stdout import patch_stdout

from netgraph.errors import NetgraphError

from . import output
from .commands import COMMANDS, Session, Status, lookup, split_words

PROMPT = "+ "
# Commands whose arguments (after any options) are paths.
_PATH_COMMANDS = {"config", "connect", "mkpeer", "msg", "name", "rmhook", "show", "shutdown",
                  "status", "list"}  # fmt: skip


class Cache:
    """What completion knows about the graph, refreshed from the trio side."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.types: dict[str, str] = {}  # path -> node type
        self.commands_of_type: dict[str, list[str]] = {}

    async def refresh(self, session: Session) -> None:
        sock = session.sock
        try:
            nodes = (await sock.listnodes()).nodeinfo
            own = await sock.listhooks(".")
        except NetgraphError:
            return
        paths: list[str] = []
        types: dict[str, str] = {}
        for info in nodes:
            for path in ([f"{info.name}:"] if info.name else []) + [f"[{info.id:x}]:"]:
                paths.append(path)
                types[path] = info.type
        for link in own.linkinfo:
            paths.append(link.ourhook)
            types[link.ourhook] = link.nodeinfo.type
        self.paths, self.types = paths, types
        for type_name in set(types.values()):
            if type_name not in self.commands_of_type:
                self.commands_of_type[type_name] = _message_names(type_name)


def _message_names(type_name: str) -> list[str]:
    from netgraph.ascii import cmdlist_of
    from netgraph.node import Node
    from netgraph.types import TypeRegistry

    try:
        node_type: type[Node] = TypeRegistry().get(type_name)
    except NetgraphError:
        node_type = Node
    return sorted(cmdlist_of(node_type)[0])


class NgctlCompleter(Completer):
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = [w for w, _ in split_words(text)]
        current = "" if not text or text[-1] in " \t" else words.pop()
        if not words:
            names = sorted({n for c in COMMANDS for n in (c.name, *c.aliases)})
            yield from _matching(names, current)
            return
        try:
            command = lookup(words[0]).name
        except Exception:
            return
        if command == "help" and len(words) == 1:
            yield from _matching([c.name for c in COMMANDS], current)
        elif command == "msg" and len(words) == 2:
            yield from _matching(
                self.cache.commands_of_type.get(self.cache.types.get(words[1], ""), []), current
            )
        elif command in _PATH_COMMANDS:
            yield from _matching(self.cache.paths, current)


def _matching(candidates: Iterable[str], current: str) -> Iterable[Completion]:
    for candidate in candidates:
        if candidate.startswith(current):
            yield Completion(candidate, start_position=-len(current))


def history_path() -> Path:
    return Path(os.environ.get("NGCTL_HISTORY", Path.home() / ".ngctl_history"))


async def _print_messages(session: Session) -> None:
    while True:
        path, msg = await session.sock.recv_msg()
        await session.show_reply(path, msg)


async def _print_data(session: Session) -> None:
    while True:
        hook, data = await session.sock.recv_data()
        for line in output.data_packet(hook, bytes(data)):
            session.print(line)


async def _interrupts(current: list[trio.CancelScope]) -> None:
    """SIGINT between prompts (a command running, or the terminal not yet in raw mode for the
    next prompt) stops the running command, not ngctl; at the prompt Ctrl-C is a key."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            for scope in current:
                scope.cancel()


async def interact(session: Session) -> int:
    cache = Cache()
    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(str(history_path())),
        completer=NgctlCompleter(cache),
        complete_while_typing=False,
    )
    await session.run_argv(["help"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_print_messages, session)
        nursery.start_soon(_print_data, session)
        running: list[trio.CancelScope] = []
        nursery.start_soon(_interrupts, running)
        status: Any = Status.OK
        while True:
            await cache.refresh(session)
            try:
                # Only while the prompt is up does output go through prompt_toolkit (above the
                # line being typed); a command's own output is written straight out, in order.
                with patch_stdout(raw=True):
                    line = await trio.to_thread.run_sync(prompt.prompt, PROMPT)
            except KeyboardInterrupt:
                continue
            except EOFError:
                session.print("")
                break
            with trio.CancelScope() as scope:
                running.append(scope)
                try:
                    status = await session.run_line(line)
                finally:
                    running.remove(scope)
            if scope.cancelled_caught:
                session.print("^C")
                continue
            if status == Status.QUIT:
                break
        nursery.cancel_scope.cancel()
    return 0
