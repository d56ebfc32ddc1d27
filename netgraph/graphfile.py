"""Graph files: a graph described once in YAML, applied to a running graph, and saved from one.

The format is documented in ``docs/graph-file.md`` (schema: ``docs/graph-file.schema.json``)::

    version: 1
    nodes:
      - {name: tap, type: tee}
      - {name: sink, type: hole}
      - {name: udp, type: ksocket, peer: "tap:left", hook: inet/dgram/udp}   # born linked
    links:
      - tap:right sink:in
    messages:
      - udp: bind inet/127.0.0.1:5028

Three steps, each through a socket node's owner API (:class:`netgraph.owner.Owner`), so the same
code applies a file in-process and through the graph daemon, with no code per node type:

- :func:`parse` reads the text into a :class:`GraphSpec`. YAML is only *composed* (a tree of nodes
  with positions), never resolved: every scalar stays the text that was written, so YAML 1.1's
  implicit types (``on``, ``no``, ``0755``, ``1e3``) cannot change a name or a message.
- :func:`apply` makes the nodes (MKNODE, or MKPEER for a node born with its first link), names
  them, links them (CONNECT), then sends the messages in order (ASCII2BINARY by the target node,
  then the message). All or nothing: on the first failure every node the file made is shut down
  and every link it made between nodes that were there before is removed, and the error names
  the file, line and column and carries the node's own errno.
- :func:`save` describes a running graph as a file that recreates it: nodes, names, links, and
  the configuration each node type can report (a cmdlist entry with ``restore``: the reply of
  ``getcfg``, given to ``setcfg``). Socket nodes (the graph's clients) and their links are left out.

Invariant: every error a file can cause is a :class:`GraphFileError` (a NetgraphError) with a
position; nothing in a file raises anything else.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Sequence
from typing import Any, Final

import attrs
import trio
import yaml

from .cmdlist import cmdlist_of, split_command
from .errors import NetgraphError, ParseError, errno_name
from .message import HookList, NodeInfo
from .owner import Owner
from .path import check_hook_name, check_node_name

__all__ = [
    "VERSION",
    "GraphFileError",
    "GraphSpec",
    "LinkSpec",
    "MessageSpec",
    "NodeSpec",
    "Pos",
    "apply",
    "dump",
    "load",
    "parse",
    "save",
]

VERSION: Final = 1
_TOP_KEYS: Final = ("version", "nodes", "links", "messages")
_NODE_KEYS: Final = ("name", "label", "type", "peer", "hook")
# A message that started something that finishes later (a TCP ksocket's connect) is applied.
_LATER: Final = (errno.EINPROGRESS,)
# Seconds the undoing of a failed file may take.
UNDO_WAIT: Final = 10.0


@attrs.frozen
class Pos:
    """A place in a file: line and column from 1."""

    line: int
    column: int

    @classmethod
    def of(cls, node: yaml.Node) -> Pos:
        return cls(node.start_mark.line + 1, node.start_mark.column + 1)


class GraphFileError(NetgraphError):
    """What is wrong with a graph file, and where: ``file:line:column: reason``."""

    def __init__(self, code: int, reason: str, filename: str, pos: Pos, source: str = "") -> None:
        self.filename = filename
        self.line = pos.line
        self.column = pos.column
        self.reason = reason
        self.source = source
        super().__init__(code, f"{filename}:{pos.line}:{pos.column}: {reason}")

    def __str__(self) -> str:
        name = errno_name(self.errno or 0)
        return f"{self.filename}:{self.line}:{self.column}: {self.reason} ({name})"

    @property
    def context(self) -> str:
        """The offending line of the file with a caret under the column ("" if unknown)."""
        lines = self.source.splitlines()
        if not 0 < self.line <= len(lines):
            return ""
        return f"{lines[self.line - 1]}\n{' ' * (self.column - 1)}^"


# ------------------------------------------------------------------------------- the model


@attrs.frozen
class NodeSpec:
    """A node to make: ``name`` is its netgraph name, or a ``label`` that only the file uses.
    With ``peer`` (``node:hook``) it is born linked there by its own ``hook`` (MKPEER)."""

    ref: str
    named: bool
    type: str
    peer: tuple[str, str] | None
    hook: str | None
    pos: Pos
    type_pos: Pos
    ref_pos: Pos
    peer_pos: Pos | None
    hook_pos: Pos | None


@attrs.frozen
class LinkSpec:
    a: tuple[str, str]
    b: tuple[str, str]
    pos: Pos


@attrs.frozen
class MessageSpec:
    """``text`` (``command args``) for the node at ``target`` (a node of the file, by name or
    label, or a path in the graph). ``where`` maps a (line, column) of the text to the file."""

    target: str
    text: str
    pos: Pos
    text_pos: Pos
    # Where each character of ``text`` was written, and one place past its end.
    places: tuple[Pos, ...]

    def where(self, line: int, column: int) -> Pos:
        """The file position of ``column`` (from 1) on ``line`` (from 1) of the text."""
        offset = 0
        for _ in range(line - 1):
            found = self.text.find("\n", offset)
            if found < 0:
                break
            offset = found + 1
        offset = min(offset + column - 1, len(self.places) - 1)
        return self.places[offset]


@attrs.frozen
class GraphSpec:
    filename: str
    source: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    messages: tuple[MessageSpec, ...]


# ----------------------------------------------------------------------------- parsing


class _Reader:
    """Walks the composed YAML tree, raising GraphFileError at the right place."""

    def __init__(self, filename: str, source: str) -> None:
        self.filename = filename
        self.source = source

    def error(self, pos: Pos, reason: str, code: int = errno.EINVAL) -> GraphFileError:
        return GraphFileError(code, reason, self.filename, pos, self.source)

    def text(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(Pos.of(node), f"{what} must be text, not a {_kind(node)}")
        if node.tag != _STR:
            raise self.error(Pos.of(node), f"{what}: YAML tags are not used in graph files")
        value: str = node.value
        return value

    def mapping(self, node: yaml.Node, what: str, keys: Sequence[str]) -> dict[str, yaml.Node]:
        """A mapping's values by key: only ``keys`` and ``x-`` keys (ignored), each once."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(Pos.of(node), f"{what} must be a mapping, not a {_kind(node)}")
        found: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = self.text(key_node, "a key")
            if key.startswith("x-"):
                continue
            if key in found:
                raise self.error(Pos.of(key_node), f"{key!r} appears twice in {what}", errno.EEXIST)
            if key not in keys:
                known = ", ".join(keys)
                raise self.error(
                    Pos.of(key_node),
                    f"unknown key {key!r} in {what} (known: {known})",
                    errno.ENOENT,
                )
            found[key] = value
        return found

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.value == "" and node.style is None:
            return []  # "links:" with nothing after it
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(Pos.of(node), f"{what} must be a list, not a {_kind(node)}")
        items: list[yaml.Node] = node.value
        return items

    def endpoint(self, node: yaml.Node, text: str, pos: Pos) -> tuple[str, str]:
        """``node:hook``: the node part is a name or label of the file, a name or ``[id]``."""
        where, colon, hook = text.rpartition(":")
        if not colon or not where or not hook:
            raise self.error(pos, f"{text!r} is not node:hook")
        try:
            check_hook_name(hook)
        except NetgraphError as err:
            raise self.error(
                pos, f"{text!r}: {err.detail or err.strerror}", err.errno or 22
            ) from None
        return where, hook


def _kind(node: yaml.Node) -> str:
    return {yaml.ScalarNode: "text", yaml.SequenceNode: "list"}.get(type(node), "mapping")


class _Composer(yaml.SafeLoader):
    """Composes without resolving implicit types: every plain scalar is text."""


# Resolve every plain scalar as a string; the reader interprets the few numbers itself. A
# scalar with another tag had one written (``!!int 3``).
_Composer.yaml_implicit_resolvers = {}
_STR: Final = "tag:yaml.org,2002:str"


def parse(source: str, filename: str = "<graph>") -> GraphSpec:
    """A graph file's text as a :class:`GraphSpec` (GraphFileError on anything wrong)."""
    r = _Reader(filename, source)
    try:
        root = yaml.compose(source, Loader=_Composer)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        pos = Pos(mark.line + 1, mark.column + 1) if mark else Pos(1, 1)
        raise r.error(pos, f"YAML: {err.problem or err.context}") from None
    except yaml.reader.ReaderError as err:  # a character YAML does not allow, at an index
        before = source[: err.position]
        pos = Pos(before.count("\n") + 1, err.position - (before.rfind("\n") + 1) + 1)
        character = err.character if isinstance(err.character, int) else ord(err.character)
        raise r.error(pos, f"YAML: {err.reason} #x{character:04x}") from None
    except yaml.YAMLError as err:
        raise r.error(Pos(1, 1), f"YAML: {err}") from None
    if root is None:
        raise r.error(Pos(1, 1), "the file is empty: it needs at least 'version: 1'")
    top = r.mapping(root, "the file", _TOP_KEYS)
    if "version" not in top:
        raise r.error(Pos.of(root), "'version: 1' is missing")
    version = r.text(top["version"], "version")
    if version != str(VERSION):
        raise r.error(
            Pos.of(top["version"]), f"version {version!r} is not supported (this reads {VERSION})"
        )

    nodes: list[NodeSpec] = []
    refs: dict[str, Pos] = {}
    for entry in r.sequence(top["nodes"], "nodes") if "nodes" in top else []:
        spec = _node(r, entry)
        if spec.ref in refs:
            first = refs[spec.ref]
            raise r.error(
                spec.ref_pos,
                f"duplicate node {spec.ref!r} (first at line {first.line}, column {first.column})",
                errno.EADDRINUSE,
            )
        refs[spec.ref] = spec.ref_pos
        nodes.append(spec)

    links: list[LinkSpec] = []
    for entry in r.sequence(top["links"], "links") if "links" in top else []:
        links.append(_link(r, entry))

    messages: list[MessageSpec] = []
    for entry in r.sequence(top["messages"], "messages") if "messages" in top else []:
        messages.append(_message(r, entry))
    return GraphSpec(filename, source, tuple(nodes), tuple(links), tuple(messages))


def _node(r: _Reader, entry: yaml.Node) -> NodeSpec:
    m = r.mapping(entry, "a node", _NODE_KEYS)
    pos = Pos.of(entry)
    if "type" not in m:
        raise r.error(pos, "a node needs a type")
    if ("name" in m) == ("label" in m):
        raise r.error(pos, "a node needs a name (its netgraph name) or a label (the file's only)")
    key = "name" if "name" in m else "label"
    ref = r.text(m[key], key)
    ref_pos = Pos.of(m[key])
    try:
        check_node_name(ref)
    except NetgraphError as err:
        raise r.error(
            ref_pos, f"{key} {ref!r}: {err.detail or err.strerror}", err.errno or 22
        ) from None
    type_name = r.text(m["type"], "type")
    if not type_name:
        raise r.error(Pos.of(m["type"]), "the type is empty")
    peer = hook = None
    peer_pos = hook_pos = None
    if ("peer" in m) != ("hook" in m):
        raise r.error(pos, "a node born linked needs both peer (node:hook) and hook (its own)")
    if "peer" in m:
        peer_pos = Pos.of(m["peer"])
        peer = r.endpoint(m["peer"], r.text(m["peer"], "peer"), peer_pos)
        hook = r.text(m["hook"], "hook")
        hook_pos = Pos.of(m["hook"])
        try:
            check_hook_name(hook)
        except NetgraphError as err:
            raise r.error(hook_pos, f"hook {hook!r}: {err.detail}", err.errno or 22) from None
    type_pos = Pos.of(m["type"])
    return NodeSpec(
        ref, key == "name", type_name, peer, hook, pos, type_pos, ref_pos, peer_pos, hook_pos
    )


def _link(r: _Reader, entry: yaml.Node) -> LinkSpec:
    pos = Pos.of(entry)
    if isinstance(entry, yaml.SequenceNode):
        ends = [(r.text(e, "a link's end"), Pos.of(e)) for e in entry.value]
    else:
        text = r.text(entry, "a link")
        ends = []
        for word in text.split():
            offset = text.index(word, sum(len(w) for w, _ in ends))
            ends.append((word, Pos(pos.line, pos.column + offset)))
    if len(ends) != 2:
        raise r.error(pos, "a link is two ends: 'node:hook node:hook' or [node:hook, node:hook]")
    a, b = (r.endpoint(entry, text, where) for text, where in ends)
    return LinkSpec(a, b, pos)


def _message(r: _Reader, entry: yaml.Node) -> MessageSpec:
    pos = Pos.of(entry)
    if not isinstance(entry, yaml.MappingNode) or len(entry.value) != 1:
        raise r.error(pos, "a message is one 'node: command arguments' pair")
    key_node, value = entry.value[0]
    target = r.text(key_node, "a message's node")
    text = r.text(value, "a message")
    if not split_command(text)[0]:
        raise r.error(Pos.of(value), "the message has no command")
    return MessageSpec(target, text, pos, Pos.of(value), _places(r.source, value))


_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}


def _places(source: str, node: yaml.ScalarNode) -> tuple[Pos, ...]:
    """Where each character of a scalar's value was written: YAML's quoting, escapes, folding
    and indentation undone alongside the text. Falls back to the scalar's start for text it
    cannot follow (it checks itself against the value YAML read)."""
    start, end = node.start_mark, node.end_mark
    raw = source[start.index : end.index]
    places: list[Pos] = []
    chars: list[str] = []
    line, column = start.line + 1, start.column + 1
    marks: list[Pos] = []
    for ch in raw:  # the file position of every raw character
        marks.append(Pos(line, column))
        line, column = (line + 1, 1) if ch == "\n" else (line, column + 1)
    marks.append(Pos(line, column))

    def put(text: str, at: int) -> None:
        chars.append(text)
        places.extend([marks[at]] * len(text))

    style = node.style
    if style in ("|", ">"):
        lines = raw.split("\n")
        body = [ln for ln in lines[1:] if ln.strip()]
        indent = min((len(ln) - len(ln.lstrip(" ")) for ln in body), default=0)
        at = len(lines[0]) + 1
        content = lines[1:]
        for n, text in enumerate(content):
            for k, ch in enumerate(text[indent:]):
                put(ch, at + indent + k)
            at += len(text) + 1
            if n < len(content) - 1:
                after = content[n + 1]
                # Folded (>): a break between two lines of text at the indent is a space.
                joins = style == ">" and text.strip() and after.strip() and after[indent] != " "
                put(" " if joins else "\n", at - 1)
    else:
        i = 1 if style in ("'", '"') else 0
        stop = len(raw) - (1 if style in ("'", '"') else 0)
        while i < stop:
            ch = raw[i]
            if ch in " \t" or ch == "\n":
                # Folding: spaces around line breaks go; one break is a space, n breaks n-1.
                j = i
                while j < stop and raw[j] in " \t\n":
                    j += 1
                breaks = raw.count("\n", i, j)
                if breaks == 0:
                    put(raw[i:j], i)
                elif j < stop or style in ("'", '"'):
                    put("\n" * (breaks - 1) if breaks > 1 else " ", i)
                i = j
            elif style == "'" and raw.startswith("''", i):
                put("'", i)
                i += 2
            elif style == '"' and ch == "\\" and i + 1 < stop:
                code = raw[i + 1]
                if code == "\n":  # an escaped line break joins the lines
                    j = i + 2
                    while j < stop and raw[j] in " \t":
                        j += 1
                    i = j
                    continue
                width = _ESCAPES.get(code, 0)
                text = raw[i : i + 2 + width]
                try:
                    put(text.encode("latin-1", "backslashreplace").decode("unicode_escape"), i)
                except UnicodeDecodeError:
                    put("?", i)
                i += 2 + width
            else:
                put(ch, i)
                i += 1
    places.append(marks[-1] if style not in ("'", '"') else marks[-2])
    # A block's last line breaks depend on its chomping indicator (|- |+): not compared.
    if "".join(chars).rstrip("\n") != node.value.rstrip("\n"):
        return tuple([Pos.of(node)] * (len(node.value) + 1))
    return tuple(places)


# ----------------------------------------------------------------------------- applying


@attrs.define
class _Applied:
    """What applying has done so far, to undo it."""

    created: list[int] = attrs.Factory(list)
    linked: list[tuple[str, str]] = attrs.Factory(list)  # (path of one end, its hook)
    paths: dict[str, str] = attrs.Factory(dict)  # file ref -> [id]: path


async def load(owner: Owner, path: str) -> list[NodeInfo]:
    """Read the graph file at ``path`` and apply it (see :func:`apply`)."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as err:
        raise GraphFileError(
            err.errno or errno.EIO, err.strerror or str(err), path, Pos(1, 1)
        ) from None
    except UnicodeDecodeError as err:
        # The column in characters, as YAML's; the text before the first bad byte is UTF-8.
        line = err.object[: err.start].count(b"\n") + 1
        start = err.object.rfind(b"\n", 0, err.start) + 1
        column = len(err.object[start : err.start].decode("utf-8")) + 1
        shown = err.object.decode("utf-8", "replace")
        raise GraphFileError(
            errno.EILSEQ, "not UTF-8 text", path, Pos(line, column), shown
        ) from None
    return await apply(owner, parse(source, path))


async def apply(owner: Owner, spec: GraphSpec) -> list[NodeInfo]:
    """Apply ``spec`` to the graph ``owner`` is in; all or nothing. Returns the new nodes."""
    done = _Applied()
    try:
        for node in spec.nodes:
            await _make(owner, spec, node, done)
        for link in spec.links:
            await _connect(owner, spec, link, done)
        for message in spec.messages:
            await _send(owner, spec, message, done)
        infos = []
        for node_id in done.created:
            with contextlib.suppress(NetgraphError):  # a message of the file shut it down
                infos.append(await owner.nodeinfo(f"[{node_id:x}]:"))
        return infos
    except BaseException:
        await _undo(owner, done)
        raise


def _path(done: _Applied, ref: str) -> str:
    """The path of a node the file names: its own nodes by ID, others as written."""
    found = done.paths.get(ref)
    if found is not None:
        return found
    return ref if ref.endswith(":") else f"{ref}:"


def _failed(spec: GraphSpec, pos: Pos, err: NetgraphError, what: str) -> GraphFileError:
    reason = f"{what}: {err.detail}" if err.detail else f"{what}: {err.strerror}"
    return GraphFileError(err.errno or errno.EIO, reason, spec.filename, pos, spec.source)


async def _make(owner: Owner, spec: GraphSpec, node: NodeSpec, done: _Applied) -> None:
    name = node.ref if node.named else ""
    if node.peer is None:
        try:
            info = await owner.mknode(node.type, name)
        except NetgraphError as err:
            pos = node.ref_pos if err.errno == errno.EADDRINUSE else node.type_pos
            raise _failed(
                spec, pos, err, f"cannot make node {node.ref!r} of type {node.type!r}"
            ) from None
        done.created.append(info.id)
        done.paths[node.ref] = f"[{info.id:x}]:"
        return
    where, ourhook = node.peer
    peer_path = _path(done, where)
    assert node.hook is not None
    assert node.peer_pos is not None
    assert node.hook_pos is not None
    try:
        await owner.mkpeer(peer_path, node.type, ourhook, node.hook)
    except NetgraphError as err:
        # Which part is at fault: the peer (missing, or its hook taken), the type, or a hook
        # one of the two nodes refused (the detail says which).
        pos = {
            errno.ENOENT: node.peer_pos,
            errno.EEXIST: node.peer_pos,
            errno.ENXIO: node.type_pos,
        }.get(err.errno or 0, node.hook_pos)
        raise _failed(
            spec,
            pos,
            err,
            f"cannot make {node.ref!r} ({node.type}) at {where}:{ourhook}",
        ) from None
    info = await owner.nodeinfo(f"{peer_path}{ourhook}")
    done.created.append(info.id)
    done.paths[node.ref] = f"[{info.id:x}]:"
    if name:
        try:
            await owner.name_node(done.paths[node.ref], name)
        except NetgraphError as err:
            raise _failed(spec, node.ref_pos, err, f"cannot name the node {name!r}") from None


async def _connect(owner: Owner, spec: GraphSpec, link: LinkSpec, done: _Applied) -> None:
    (a, ahook), (b, bhook) = link.a, link.b
    a_path, b_path = _path(done, a), _path(done, b)
    try:
        await owner.connect(a_path, b_path, ahook, bhook)
    except NetgraphError as err:
        raise _failed(spec, link.pos, err, f"cannot link {a}:{ahook} to {b}:{bhook}") from None
    done.linked.append((a_path, ahook))


async def _send(owner: Owner, spec: GraphSpec, message: MessageSpec, done: _Applied) -> None:
    target, _, hooks = message.target.partition(".")
    path = _path(done, target) + hooks
    try:
        await owner.nodeinfo(path)
    except NetgraphError as err:
        raise _failed(
            spec, message.pos, err, f"no node {message.target!r} for the message"
        ) from None
    try:
        msg = await owner.to_binary(path, message.text)
    except ParseError as err:
        pos = message.where(err.line, err.column)
        reason = f"bad message for {message.target!r}: {err.reason}"
        raise GraphFileError(err.errno or 22, reason, spec.filename, pos, spec.source) from None
    except NetgraphError as err:
        raise _failed(spec, message.text_pos, err, f"bad message for {message.target!r}") from None
    try:
        # Sent, not waited on: a node's error comes back from the send, and a reply (which a
        # command may or may not send: a ksocket's connect answers only when it completes
        # later) goes to the sender like any late one.
        await owner.send_msg(path, msg)
    except NetgraphError as err:
        if err.errno in _LATER:
            return
        command = split_command(message.text)[0]
        raise _failed(spec, message.text_pos, err, f"{message.target}: {command} failed") from None


async def _undo(owner: Owner, done: _Applied) -> None:
    """Remove the links the file made between nodes it did not make, then its nodes (shielded:
    a cancelled load still leaves the graph as it was)."""
    with trio.CancelScope(shield=True), trio.move_on_after(UNDO_WAIT):
        await _undo_steps(owner, done)


async def _undo_steps(owner: Owner, done: _Applied) -> None:
    for path, hook in reversed(done.linked):
        with contextlib.suppress(NetgraphError):  # its node went (one the file made...)
            await owner.rmhook(path, hook)
    for node_id in reversed(done.created):
        with contextlib.suppress(NetgraphError):  # gone already, with its last hook
            await owner.shutdown(f"[{node_id:x}]:")


# ------------------------------------------------------------------------------- saving


async def save(owner: Owner) -> str:
    """The graph ``owner`` is in, as graph-file text that recreates it (see :func:`dump`)."""
    infos = [i for i in (await owner.listnodes()).nodeinfo if i.type != "socket"]
    hooks = {i.id: await owner.listhooks(f"[{i.id:x}]:") for i in infos}
    configs: dict[int, list[str]] = {}
    for info in infos:
        configs[info.id] = [line async for line in _config(owner, info)]
    return dump(infos, hooks, configs)


async def _config(owner: Owner, info: NodeInfo) -> Any:
    """``setter text`` for each getter of the node's type that names its ``restore``."""
    node_type = owner.node_type(info.type)
    if node_type is None:
        return
    for cmd in cmdlist_of(node_type)[0].values():
        if not cmd.restore:
            continue
        try:
            _reply, text = await owner.request_ascii(f"[{info.id:x}]:", cmd.name)
        except NetgraphError:
            continue  # nothing to report now (a getter that needs a state the node is not in)
        yield f"{cmd.restore} {text}".rstrip()


class _Flow(dict[str, str]):
    """A mapping written on one line (``- {name: tap, type: tee}``)."""


class _Dumper(yaml.SafeDumper):
    """Block style for the file's lists, one line for each entry; strings that YAML 1.1 would
    read as something else (``on``, ``0755``) quoted, for other readers' sake."""


_Dumper.add_representer(
    _Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)


def dump(
    infos: Sequence[NodeInfo], hooks: dict[int, HookList], configs: dict[int, list[str]]
) -> str:
    """The file for nodes ``infos`` (no socket nodes), their ``hooks`` and configurations.

    A node with one link is written born linked to its peer (as FreeBSD's mkpeer makes it,
    which a ksocket needs), after that peer; every other node is made on its own and linked
    in ``links``. Unnamed nodes get labels (``node1``, ``node2``... in order, unlike any name).
    """
    ids = {i.id for i in infos}

    def links_of(node_id: int) -> list[tuple[str, str, int]]:
        # LISTHOOKS gives the newest hook first: written oldest first, a loaded file makes its
        # links in the same order, and saving it again gives the same text.
        return [
            (li.ourhook, li.peerhook, li.nodeinfo.id)
            for li in reversed(hooks[node_id].linkinfo)
            if li.nodeinfo.id in ids
        ]

    # Which nodes are born linked, and from which peer.
    born: dict[int, tuple[str, str, int]] = {}
    order = {info.id: n for n, info in enumerate(infos)}
    for info in infos:
        mine = links_of(info.id)
        if len(mine) != 1:
            continue
        ourhook, peerhook, peer = mine[0]
        if len(links_of(peer)) == 1 and order[peer] > order[info.id]:
            continue  # two one-link nodes: the first is made on its own, the second born of it
        born[info.id] = (ourhook, peerhook, peer)

    # The order nodes are written in (each born-linked node after its peer); a loaded file
    # makes them in this order, so labels and links follow it too.
    by_id = {i.id: i for i in infos}
    written: list[NodeInfo] = []
    placed: set[int] = set()

    def place(info: NodeInfo) -> None:
        if info.id not in placed:
            placed.add(info.id)
            if info.id in born:
                place(by_id[born[info.id][2]])
            written.append(info)

    for info in infos:
        place(info)

    names = {i.name for i in infos if i.name}
    refs: dict[int, str] = {}
    counter = 0
    for info in written:
        if info.name:
            refs[info.id] = info.name
            continue
        counter += 1
        while f"node{counter}" in names:
            counter += 1
        refs[info.id] = f"node{counter}"

    nodes: list[_Flow] = []
    for info in written:
        entry = _Flow({"name" if info.name else "label": refs[info.id], "type": info.type})
        if info.id in born:
            ourhook, peerhook, peer = born[info.id]
            entry["peer"] = f"{refs[peer]}:{peerhook}"
            entry["hook"] = ourhook
        nodes.append(entry)

    links: list[str] = []
    seen: set[tuple[int, str]] = set()
    for info in written:
        for ourhook, peerhook, peer in links_of(info.id):
            if (info.id, ourhook) in seen:
                continue
            seen.add((peer, peerhook))
            if born.get(info.id, ("", "", -1))[0] == ourhook or (
                born.get(peer, ("", "", -1))[0] == peerhook
            ):
                continue
            links.append(f"{refs[info.id]}:{ourhook} {refs[peer]}:{peerhook}")
    messages = [_Flow({refs[i.id]: text}) for i in written for text in configs.get(i.id, [])]
    document: dict[str, Any] = {"version": VERSION, "nodes": nodes}
    if links:
        document["links"] = links
    if messages:
        document["messages"] = messages
    # One line for each entry however long: a message reads as it would after "ngctl msg".
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1 << 16)
    return "# A netgraph graph file (docs/graph-file.md), saved from a running graph.\n" + body
