"""The one exception family of the project.

FreeBSD netgraph reports failures as errno values returned to whoever sent the item or message
(never as messages). Here that is :class:`NetgraphError`, an :class:`OSError` whose ``errno`` is the
host's errno (spec section 10.1) and whose ``detail`` adds what FreeBSD never says: which node,
hook or field was at fault.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = ["NetgraphError", "ParseError", "errno_name"]


def errno_name(code: int) -> str:
    """``EINVAL`` for 22, or the number as text for unknown codes."""
    return _errno.errorcode.get(code, str(code))


class NetgraphError(OSError):
    """An errno with a human-readable detail.

    ``str()`` gives ``"<strerror>: <detail>"``; ``strerror`` alone is what FreeBSD's tools print.
    """

    detail: str

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, os.strerror(code))
        self.detail = detail

    def __str__(self) -> str:
        base = f"{self.strerror} ({errno_name(self.errno or 0)})"
        return f"{base}: {self.detail}" if self.detail else base

    def __reduce__(self) -> tuple[type[NetgraphError], tuple[int, str]]:
        return (type(self), (self.errno or 0, self.detail))


class ParseError(NetgraphError):
    """Bad ASCII input: an errno, what is wrong, and where (line and column from 1)."""

    def __init__(self, code: int, detail: str, text: str, pos: int) -> None:
        pos = max(0, min(pos, len(text)))
        self.text = text
        self.pos = pos
        self.line = text.count("\n", 0, pos) + 1
        self.column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        self.reason = detail
        super().__init__(code, f"line {self.line}, column {self.column}: {detail}")

    @property
    def context(self) -> str:
        """The offending line with a caret under the column."""
        start = self.text.rfind("\n", 0, self.pos) + 1
        end = self.text.find("\n", self.pos)
        line = self.text[start : end if end >= 0 else len(self.text)]
        return f"{line}\n{' ' * (self.column - 1)}^"

    def shifted(self, prefix: str) -> ParseError:
        """The same error in a text that had ``prefix`` before this one (for whole lines)."""
        return ParseError(self.errno or _errno.EINVAL, self.reason, prefix + self.text,
                          self.pos + len(prefix))  # fmt: skip
