"""netgraph: a dataflow networking framework on trio, after FreeBSD's netgraph.

Embedding in a trio application::

    async with netgraph.open_graph() as graph:
        sock = graph.socket("app")
        await sock.mkpeer(".", "echo", "a", "b")
        await sock.send_data("a", b"hello")
        print(await sock.recv_data())        # ('a', b'hello')
"""

from .errors import NetgraphError
from .graph import Graph, open_graph
from .item import Item, Tagged, tag, tags_of
from .message import Cmd, Message
from .node import Hook, Node
from .path import format_id
from .socket import Socket, SocketNode
from .types import TypeRegistry

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
