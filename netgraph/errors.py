"""The one exception family of the project.

FreeBSD netgraph reports failures as errno values returned to whoever sent the item or message
(never as messages). Here that is :class:`NetgraphError`, an :class:`OSError` whose ``errno`` is the
host's errno (spec section 10.1) and whose ``detail`` adds what FreeBSD never says: which node,
hook or field was at fault.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = ["NetgraphError", "errno_name"]


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
