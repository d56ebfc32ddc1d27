"""What a connection tells its user, as events from :meth:`Connection.next_events`.

Events mark changes of state, never each segment: received bytes wait in the connection's
receive buffer (:meth:`Connection.read`), and :class:`DataReady` says only that the buffer went
from empty to non-empty. Every connection that leaves CLOSED ends with exactly one
:class:`Closed`, after a :class:`Reset` or :class:`TimedOut` if that is how it ended.
"""

from __future__ import annotations

import errno
from typing import Final

from attrs import field, frozen


@frozen
class Established:
    """The three-way handshake (or a simultaneous open) completed: data may flow."""


@frozen
class DataReady:
    """The receive buffer went from empty to non-empty: call ``read``."""


@frozen
class EndOfStream:
    """The peer's FIN arrived in order: once the buffer is read, ``read`` returns ``b""``."""


@frozen
class Writable:
    """The send buffer has room again after a ``send`` accepted less than it was given."""


@frozen
class Reset:
    """The peer reset the connection: ``ECONNREFUSED`` in answer to our SYN, else
    ``ECONNRESET``."""

    errno: int = errno.ECONNRESET


@frozen
class TimedOut:
    """The connection gave up: ``reason`` is ``"retransmit"`` (R2), ``"user timeout"``,
    ``"keepalive"`` or ``"persist"``."""

    reason: str
    errno: int = field(default=errno.ETIMEDOUT)


@frozen
class RetransmitWarning:
    """R1 reached (RFC 1122 4.2.3.5): the path may be broken; the IP layer may want to know."""

    retransmits: int


@frozen
class Closed:
    """The connection reached CLOSED: its TCB may be forgotten."""


Event = (
    Established | DataReady | EndOfStream | Writable | Reset | TimedOut | RetransmitWarning | Closed
)

EVENT_TYPES: Final = {
    cls.__name__: cls
    for cls in (
        Established,
        DataReady,
        EndOfStream,
        Writable,
        Reset,
        TimedOut,
        RetransmitWarning,
        Closed,
    )
}

# The field-less events are immutable: one instance each serves every connection.
ESTABLISHED: Final = Established()
DATA_READY: Final = DataReady()
END_OF_STREAM: Final = EndOfStream()
WRITABLE: Final = Writable()
CLOSED: Final = Closed()
