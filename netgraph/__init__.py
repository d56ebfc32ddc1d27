"""netgraph: a dataflow networking framework on trio, after FreeBSD's netgraph.

Embedding in a trio application::

    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await sock.mkpeer(".", "echo", "a", "b")
        await sock.send_data("a", b"hello")
        print(await sock.recv_data())        # ('a', b'hello')

The names below load on first use, so that a client (ngctl attached to a daemon) that needs
only a few modules does not pay for the rest at startup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import NetgraphError as NetgraphError
    from .graph import Graph as Graph
    from .graph import open_graph as open_graph
    from .item import Item as Item
    from .item import Tagged as Tagged
    from .item import tag as tag
    from .item import tags_of as tags_of
    from .message import Cmd as Cmd
    from .message import Message as Message
    from .node import Hook as Hook
    from .node import Node as Node
    from .path import format_id as format_id
    from .socket import Socket as Socket
    from .socket import SocketNode as SocketNode
    from .types import TypeRegistry as TypeRegistry

_WHERE = {
    "NetgraphError": "errors",
    "Graph": "graph",
    "open_graph": "graph",
    "Item": "item",
    "Tagged": "item",
    "tag": "item",
    "tags_of": "item",
    "Cmd": "message",
    "Message": "message",
    "Hook": "node",
    "Node": "node",
    "format_id": "path",
    "Socket": "socket",
    "SocketNode": "socket",
    "TypeRegistry": "types",
}

__all__ = [
    "Cmd",
    "Graph",
    "Hook",
    "Item",
    "Message",
    "NetgraphError",
    "Node",
    "Socket",
    "SocketNode",
    "Tagged",
    "TypeRegistry",
    "format_id",
    "open_graph",
    "tag",
    "tags_of",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'netgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
