"""Node names, node IDs and addresses (spec sections 1.2, 1.3, 1.5 and 10.6).

An address is ``[NODE ":"] [PATH]``: NODE is ``.`` (the sender), ``[hex]`` (an ID) or a name, and
PATH is hook names joined by ``.``, walked hop by hop from NODE (or from the sender when there is
no NODE). This module only parses; the graph resolves.
"""

from __future__ import annotations

import errno

import attrs

from .errors import NetgraphError
from .message import NG_HOOKSIZ, NG_NODESIZ, NG_PATHSIZ

__all__ = ["Address", "check_hook_name", "check_node_name", "decode_id", "format_id", "parse"]

_ULONG_MAX = 2**64 - 1


def format_id(node_id: int) -> str:
    """``[1f]:`` for ID 0x1f: IDs are lowercase hex without ``0x`` everywhere in text."""
    return f"[{node_id:x}]:"


def decode_id(text: str) -> int | None:
    """FreeBSD's ``ng_decodeidname``: ``[1f]``, ``[1F]`` and ``[0x1f]`` give 0x1f, else ``None``.

    At least three characters, ``[`` first and ``]`` last, a hex digit second, and the whole inside
    converting as base 16 to a value that is neither 0 nor ULONG_MAX.
    """
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        return None
    inner = text[1:-1]
    if inner[0] not in "0123456789abcdefABCDEF":
        return None
    if inner[:2] in ("0x", "0X"):
        inner = inner[2:]
    if not inner or any(c not in "0123456789abcdefABCDEF" for c in inner):
        return None
    value = int(inner, 16)
    if value == 0 or value >= _ULONG_MAX:
        return None
    return value


def check_node_name(name: str) -> None:
    """Raise EINVAL unless ``name`` may name a node (spec 1.3)."""
    if not name:
        raise NetgraphError(errno.EINVAL, "node name is empty")
    if len(name.encode()) > NG_NODESIZ - 1:
        raise NetgraphError(errno.EINVAL, f"node name {name!r} is longer than 31 bytes")
    for bad in ".:":
        if bad in name:
            raise NetgraphError(errno.EINVAL, f"node name {name!r} contains {bad!r}")
    if decode_id(name) is not None:
        raise NetgraphError(errno.EINVAL, f"node name {name!r} looks like a node ID")


def check_hook_name(name: str) -> None:
    """Raise EINVAL unless ``name`` may name a hook (spec 10.6)."""
    if not name:
        raise NetgraphError(errno.EINVAL, "hook name is empty")
    if len(name.encode()) > NG_HOOKSIZ - 1:
        raise NetgraphError(errno.EINVAL, f"hook name {name!r} is longer than 31 bytes")
    for bad in ".:":
        if bad in name:
            raise NetgraphError(errno.EINVAL, f"hook name {name!r} contains {bad!r}")


@attrs.frozen
class Address:
    """A parsed address: ``node`` is ``None`` (start at the sender), ``"."``, ``[id]`` or a name."""

    node: str | None
    hooks: tuple[str, ...]


def parse(text: str) -> Address:
    """FreeBSD's ``ng_path_parse``, raising EINVAL for malformed addresses."""
    if len(text.encode()) > NG_PATHSIZ - 1:
        raise NetgraphError(errno.EINVAL, f"path is longer than {NG_PATHSIZ - 1} bytes")
    node: str | None = None
    path = text
    if ":" in text:
        node, path = text.split(":", 1)
        if not node:
            raise NetgraphError(errno.EINVAL, f"path {text!r} has an empty node name before ':'")
        if "." in node and node != ".":
            raise NetgraphError(errno.EINVAL, f"node name {node!r} in path contains '.'")
        if ":" in path:
            raise NetgraphError(errno.EINVAL, f"path {text!r} has more than one ':'")
    if ".." in path:
        raise NetgraphError(errno.EINVAL, f"path {text!r} contains '..'")
    if path.startswith("."):
        path = path[1:]
    if path.endswith("."):
        path = path[:-1]
    hooks = tuple(path.split(".")) if path else ()
    if any(not h for h in hooks):
        raise NetgraphError(errno.EINVAL, f"path {text!r} has an empty hook name")
    return Address(node, hooks)
