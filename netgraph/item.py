"""Data items: bytes-like payloads with optional metadata tags.

An item is any bytes-like object. Plain ``bytes`` carry no tags; :class:`Tagged` is a ``bytes``
subclass that carries a mapping of tags (a source sockaddr, a destination, a timestamp...), so a
node that does not care about tags handles both alike and pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["Item", "Tagged", "tag", "tags_of"]

Item = bytes | bytearray | memoryview

_NO_TAGS: Mapping[str, Any] = MappingProxyType({})


class Tagged(bytes):
    """``bytes`` with metadata tags. Tags are read-only once made; use :func:`tag` to add more."""

    tags: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"Tagged({bytes(self)!r}, {dict(self.tags)!r})"


def tag(data: Item, **tags: Any) -> Tagged:
    """Return ``data`` as a :class:`Tagged` item carrying ``tags`` (merged over existing ones)."""
    merged = {**tags_of(data), **tags}
    out = Tagged(data)
    out.tags = MappingProxyType(merged)
    return out


def tags_of(item: Item) -> Mapping[str, Any]:
    """The tags of an item; an empty mapping for plain bytes."""
    return getattr(item, "tags", _NO_TAGS)
