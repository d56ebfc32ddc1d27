"""The node type registry: type names to classes, through the ``netgraph.node_types`` entry points.

Built-in types and third-party plugins register the same way: an entry point in the group
``netgraph.node_types`` whose name is the type name and whose object is a :class:`Node` subclass.
Classes load on first use, as FreeBSD loads ``ng_<type>.ko`` on the first ``mkpeer``. An
application may also register a class directly with :meth:`TypeRegistry.register`.
"""

from __future__ import annotations

import errno
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from .errors import NetgraphError
from .message import NG_TYPESIZ
from .node import Node

__all__ = ["ENTRY_POINT_GROUP", "TypeRegistry"]

ENTRY_POINT_GROUP: Final = "netgraph.node_types"


class TypeRegistry:
    """Type names in registration order, loaded lazily."""

    def __init__(self, *, discover: bool = True) -> None:
        self._entry_points: dict[str, EntryPoint] = {}
        self._classes: dict[str, type[Node]] = {}
        if discover:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._entry_points.setdefault(ep.name, ep)

    def register(self, name: str, cls: type[Node]) -> None:
        """Register ``cls`` as type ``name`` (EEXIST if the name is taken)."""
        _check_type_name(name)
        if name in self._classes or name in self._entry_points:
            raise NetgraphError(errno.EEXIST, f"node type {name!r} is already registered")
        self._classes[name] = _adopt(name, cls)

    def get(self, name: str) -> type[Node]:
        """The class of type ``name``; ENXIO if there is no such type."""
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        ep = self._entry_points.get(name)
        if ep is None:
            raise NetgraphError(errno.ENXIO, f"no node type {name!r}")
        try:
            loaded = ep.load()
        except Exception as exc:
            raise NetgraphError(
                errno.ENXIO, f"node type {name!r} failed to load from {ep.value}: {exc}"
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Node)):
            raise NetgraphError(errno.ENXIO, f"entry point {ep.value} is not a Node subclass")
        cls = _adopt(name, loaded)
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        """Every registered type name: entry points first, then direct registrations."""
        return list(dict.fromkeys([*self._entry_points, *self._classes]))


def _check_type_name(name: str) -> None:
    if not name or len(name.encode()) > NG_TYPESIZ - 1:
        raise NetgraphError(errno.EINVAL, f"bad node type name {name!r}")


def _adopt(name: str, cls: type[Node]) -> type[Node]:
    """Give ``cls`` its registered name (the registration is where a type's name is declared)."""
    own = cls.__dict__.get("type_name")
    if own and own != name:
        raise NetgraphError(errno.EINVAL, f"class {cls.__name__} is type {own!r}, not {name!r}")
    cls.type_name = name
    return cls
