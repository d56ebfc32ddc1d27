"""ngctl's output, byte for byte as FreeBSD's ngctl prints it (spec 5.4)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

from netgraph.message import HookList, NodeInfo

UNNAMED = "<unnamed>"


def node_line(info: NodeInfo) -> str:
    """``  Name: foo             Type: hub             ID: 00000003   Num hooks: 2``"""
    return (
        f"  Name: {info.name or UNNAMED:<15} Type: {info.type:<15} ID: {info.id:08x}"
        f"   Num hooks: {info.hooks}"
    )


def _row(a: str, b: str, c: str, d: str, e: str) -> str:
    return f"  {a:<15} {b:<15} {c:<12} {d:<15} {e:<15}"


def show(hooks: HookList, *, with_hooks: bool = True) -> list[str]:
    """``show``: the node line, then (unless ``-n``) the hook table, newest hook first."""
    lines = [node_line(hooks.nodeinfo)]
    if with_hooks and hooks.linkinfo:
        lines.append(_row("Local hook", "Peer name", "Peer type", "Peer ID", "Peer hook"))
        lines.append(_row("----------", "---------", "---------", "-------", "---------"))
        for link in hooks.linkinfo:
            peer = link.nodeinfo
            lines.append(
                _row(link.ourhook, peer.name or UNNAMED, peer.type, f"{peer.id:08x}", link.peerhook)
            )
    return lines


def node_list(infos: Sequence[NodeInfo], *, named: bool) -> list[str]:
    header = f"There are {len(infos)} total {'named ' if named else ''}nodes:"
    return [header, *(node_line(info) for info in infos)]


def type_list(types: Sequence[tuple[str, int]]) -> list[str]:
    lines = [f"There are {len(types)} total types:"]
    if types:
        lines.append(f"{'Type name':>15}   Number of living nodes")
        lines.append(f"{'---------':>15}   {'-' * 22}")
        lines.extend(f"{name:>15}   {count:5d}" for name, count in types)
    return lines


def signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def reply_header(response: bool, cmdstr: str, cmd: int, path: str) -> str:
    """``Rec'd response "getname" (5) from "[9]:":`` (cmd as a signed decimal, flags included)."""
    kind = "response" if response else "command"
    return f'Rec\'d {kind} "{cmdstr}" ({signed32(cmd)}) from "{path}":'


def reply_args(text: str) -> str:
    return f"Args:\t{text}" if text else "No arguments"


def hexdump(data: bytes) -> list[str]:
    """16 bytes a line: offset, hex cells, then the printable characters (spec 5.4)."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        cells = "".join(f"{b:02x} " for b in chunk) + "   " * (16 - len(chunk))
        chars = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:04x}:  {cells} {chars:<16}")
    return lines


def data_packet(hook: str, data: bytes) -> list[str]:
    return [f'Rec\'d data packet on hook "{hook}":', *hexdump(data)]


def help_summary(commands: Iterable[tuple[str, str]]) -> list[str]:
    return ["Available commands:", *(f"  {name:<10} {summary}" for name, summary in commands)]


def help_command(usage: str, aliases: Sequence[str], summary: str, description: str) -> list[str]:
    lines = [f"usage:    {usage}"]
    if aliases:
        lines.append(f"Aliases:  {', '.join(aliases)}")
    lines.append(f"Summary:  {summary}")
    if description:
        lines.append("Description:")
        lines.extend(f"  {line}" for line in textwrap.wrap(description, 63))
    return lines


def _dot_id(text: str) -> str:
    """A quoted Graphviz ID."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _record(text: str) -> str:
    """Text inside a record label: escape the record syntax and the quotes."""
    return "".join("\\" + ch if ch in '{}|<>"\\' else ch for ch in text)


def dot(nodes: Sequence[NodeInfo], hooks: Sequence[HookList]) -> list[str]:
    """``dot``: the whole graph for Graphviz, laid out as FreeBSD's ngctl lays it out, with
    quoting that keeps any node or hook name valid Graphviz.

    ``hooks`` holds each node's hook list, in the order of ``nodes``.
    """
    lines = [
        "graph netgraph {",
        "\tedge [ weight = 1.0 ];",
        "\tnode [ shape = record, fontsize = 12 ] {",
    ]
    for info in nodes:
        name = _record(info.name) if info.name else "\\<unnamed\\>"
        label = f"{{{name}:|{{{_record(info.type)}|[{info.id:x}]:}}}}"
        lines.append(f'\t\t"{info.id:x}" [ label = "{label}" ];')
    lines.append("\t};")
    lines.append("\tsubgraph cluster_disconnected {")
    lines.append("\t\tbgcolor = pink;")
    lines.extend(f'\t\t"{info.id:x}";' for info in nodes if info.hooks == 0)
    lines.append("\t};")
    for info, hooklist in zip(nodes, hooks, strict=True):
        links = hooklist.linkinfo
        if not links:
            continue
        lines.append("\tnode [ shape = octagon, fontsize = 10 ] {")
        for link in links:
            lines.append(
                f"\t\t{_dot_id(f'{info.id:x}.{link.ourhook}')} [ label = {_dot_id(link.ourhook)} ];"
            )
        lines.append("\t};")
        lines.append("\t{")
        lines.append("\t\tedge [ weight = 2.0, style = bold ];")
        for link in links:
            lines.append(f'\t\t"{info.id:x}" -- {_dot_id(f"{info.id:x}.{link.ourhook}")};')
        lines.append("\t};")
        for link in links:
            if link.nodeinfo.id > info.id:
                continue  # each link once, from the node with the higher ID
            ours = _dot_id(f"{info.id:x}.{link.ourhook}")
            theirs = _dot_id(f"{link.nodeinfo.id:x}.{link.peerhook}")
            lines.append(f"\t{ours} -- {theirs};")
    # FreeBSD closes with "};", which Graphviz today refuses: a graph ends with "}".
    lines.append("}")
    return lines
