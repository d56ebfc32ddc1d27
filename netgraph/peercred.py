"""Who is at the other end of a Unix-domain connection (``SO_PEERCRED``).

The graph daemon lets in only its own uid, and its clients talk only to a daemon of theirs.
"""

from __future__ import annotations

import errno
import socket as _socket
import struct
from typing import Final

import attrs
import trio

from .errors import NetgraphError

__all__ = ["PeerCredentials", "check_peer", "peer_credentials"]

_UCRED: Final = struct.Struct("3i")


@attrs.frozen
class PeerCredentials:
    """``struct ucred``: who is at the other end of a Unix-domain connection."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: trio.socket.SocketType) -> PeerCredentials:
    """The peer's credentials from ``SO_PEERCRED`` (EOPNOTSUPP where the host has none)."""
    option = getattr(_socket, "SO_PEERCRED", None)
    if option is None:  # pragma: no cover - Linux has it
        raise NetgraphError(errno.EOPNOTSUPP, "this host cannot tell who a peer is (SO_PEERCRED)")
    raw = sock.getsockopt(_socket.SOL_SOCKET, option, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def check_peer(creds: PeerCredentials, uid: int, peer: str = "peer") -> None:
    """EPERM unless the peer runs as ``uid`` (the daemon's, or for a client its own)."""
    if creds.uid != uid:
        raise NetgraphError(
            errno.EPERM, f"{peer} (pid {creds.pid}) runs as uid {creds.uid}, not as uid {uid}"
        )
