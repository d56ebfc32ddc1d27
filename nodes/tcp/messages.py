"""The tcp node's control messages: its cookie, command list and argument structs.

Every message is after V10's ``struct tcpuser`` (tcp(4)): :class:`TcpUser` is that struct with
the channel's name added, and its ASCII form is how a call is placed and received::

    connect { channel="c1" faddr=192.0.2.2 fport=80 laddr=0.0.0.0 lport=0 param=0 }
    listen { channel="l1" laddr=0.0.0.0 lport=80 }

Addresses are the ip node's ``inaddr`` parse type (:data:`nodes.ip.messages.INADDR`): IPv4 or
IPv6, written naturally, and left out (or ``0.0.0.0`` / ``::``) for "any". ``code`` carries
V10's TCPC_* codes in replies; ``param`` carries SO_KEEPALIVE (0x2) in ``connect``, the backlog
in ``listen`` (0: :data:`DEFAULT_BACKLOG`), the errno of a call that failed, the number of the
call in ``newcall``, and the errno of the end (0 for a FIN) in ``hup``.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Final

import attrs

from netgraph import Cmd
from netgraph.parse import HOOKBUF, INT32, INT64, UINT16, UINT64, FixedString, Struct, field

from ..ip.messages import INADDR

__all__ = [
    "CMDLIST",
    "DEFAULT_BACKLOG",
    "SO_KEEPALIVE",
    "TCPC_BADDEV",
    "TCPC_BADLOCAL",
    "TCPC_BOUND",
    "TCPC_CONNECT",
    "TCPC_LISTEN",
    "TCPC_NOROUTE",
    "TCPC_OK",
    "TCPC_SORRY",
    "TCP_COOKIE",
    "ChanOpt",
    "StackArg",
    "TcpStats",
    "TcpUser",
]

TCP_COOKIE: Final = 1723651208

# V10 <sys/inet/tcp_user.h>.
TCPC_LISTEN: Final = 1
TCPC_CONNECT: Final = 2
TCPC_OK: Final = 3
TCPC_SORRY: Final = 4  # unknown error (refused, timed out, aborted: the errno is in param)
TCPC_BADDEV: Final = 5  # the channel is bad: no such hook, or already in use
TCPC_NOROUTE: Final = 6  # no route to the destination
TCPC_BADLOCAL: Final = 7  # the local address is not one of the ip node's
TCPC_BOUND: Final = 8  # address already bound
SO_KEEPALIVE: Final = 0x2

DEFAULT_BACKLOG: Final = 128

NGM_TCP_CONNECT: Final = 1
NGM_TCP_LISTEN: Final = 2
NGM_TCP_NEWCALL: Final = 3
NGM_TCP_HUP: Final = 4
NGM_TCP_GETADDR: Final = 5
NGM_TCP_MAXSEG: Final = 6
NGM_TCP_RESET: Final = 7
NGM_TCP_SETOPT: Final = 8
NGM_TCP_GETOPT: Final = 9
NGM_TCP_GETSTATS: Final = 10
NGM_TCP_CLRSTATS: Final = 11
NGM_TCP_GETCLRSTATS: Final = 12
NGM_TCP_GETSTACK: Final = 13
NGM_TCP_SETSTACK: Final = 14

Address = IPv4Address | IPv6Address


@attrs.frozen
class TcpUser:
    """V10's ``struct tcpuser`` (code, lport, fport, laddr, faddr, param) and the channel."""

    code: int = field(INT32)
    channel: str = field(HOOKBUF)
    lport: int = field(UINT16)
    fport: int = field(UINT16)
    laddr: Address | None = field(INADDR)
    faddr: Address | None = field(INADDR)
    param: int = field(INT32)


OPTNAME: Final = FixedString(32, "optname")


@attrs.frozen
class ChanOpt:
    """One option of a channel (``setopt``/``getopt``): ``nodelay``, ``keepalive`` (0/1),
    ``keepidle``, ``keepintvl`` (seconds), ``keepcnt``, ``sndbuf``, ``rcvbuf`` (bytes),
    ``maxseg`` (the MSS clamp, 0: none), ``user_timeout`` (milliseconds, 0: none). Linux's
    ``TCP_NODELAY``-style names are read too."""

    channel: str = field(HOOKBUF)
    name: str = field(OPTNAME)
    value: int = field(INT64)


@attrs.frozen
class StackArg:
    """The TCP stack (tcp_functions(9)) a channel's connection runs on."""

    channel: str = field(HOOKBUF)
    stack: str = field(FixedString(32, "stackname"))


@attrs.define
class TcpStats:
    """The node's counters. ``segs_in`` counts every segment from the ip node that was not an
    ICMP error; one that no connection took ends in a listener or, for one reason, in the
    counters from ``no_listener`` to ``bad_dst``. The counters from ``bad_checksum`` on are the
    connections' own (:class:`nodes.tcp.tcb.Stats`), summed over live and closed ones."""

    segs_in: int = field(UINT64)
    segs_out: int = field(UINT64)
    bytes_in: int = field(UINT64)  # delivered up the channels
    bytes_out: int = field(UINT64)  # taken from the channels into send buffers
    active_opens: int = field(UINT64)
    passive_opens: int = field(UINT64)
    established: int = field(UINT64)
    resets_received: int = field(UINT64)
    timeouts: int = field(UINT64)
    # Segments no connection took, by reason.
    no_listener: int = field(UINT64)
    backlog_full: int = field(UINT64)
    listener_dropped: int = field(UINT64)
    short: int = field(UINT64)
    bad_tags: int = field(UINT64)
    bad_dst: int = field(UINT64)
    resets_sent: int = field(UINT64)
    # ICMP errors from the ip node.
    icmp_in: int = field(UINT64)
    icmp_ignored: int = field(UINT64)
    icmp_soft: int = field(UINT64)
    icmp_hard: int = field(UINT64)
    icmp_mtu: int = field(UINT64)
    # Sending and delivering.
    send_errors: int = field(UINT64)
    no_ip_hook: int = field(UINT64)
    deliver_errors: int = field(UINT64)
    notify_lost: int = field(UINT64)
    # The connections' counters.
    bad_checksum: int = field(UINT64)
    malformed: int = field(UINT64)
    paws_dropped: int = field(UINT64)
    out_of_window: int = field(UINT64)
    challenge_acks: int = field(UINT64)
    retransmits: int = field(UINT64)
    rexmt_timeouts: int = field(UINT64)
    fast_retransmits: int = field(UINT64)
    sack_recoveries: int = field(UINT64)
    dupacks: int = field(UINT64)
    ooo_segments: int = field(UINT64)
    ooo_dropped: int = field(UINT64)
    persist_probes: int = field(UINT64)
    keepalive_probes: int = field(UINT64)
    rst_sent: int = field(UINT64)


_USER: Final = Struct(TcpUser)
_OPT: Final = Struct(ChanOpt)
_STACK: Final = Struct(StackArg)
_STATS: Final = Struct(TcpStats)

CMDLIST: Final = (
    Cmd(TCP_COOKIE, NGM_TCP_CONNECT, "connect", _USER, _USER,
        "Place a call on a channel; the reply comes when it is set up or has failed"),
    Cmd(TCP_COOKIE, NGM_TCP_LISTEN, "listen", _USER, _USER,
        "Take calls on a channel: { channel= laddr= lport= param=backlog }"),
    Cmd(TCP_COOKIE, NGM_TCP_NEWCALL, "newcall", _USER, None,
        "(sent to a listener's owner) a new call: hook up the channel it names"),
    Cmd(TCP_COOKIE, NGM_TCP_HUP, "hup", _USER, None,
        "(sent to a channel's holder) the remote end went away: param=0 FIN, else an errno"),
    Cmd(TCP_COOKIE, NGM_TCP_GETADDR, "getaddr", HOOKBUF, _USER,
        "The local and foreign addresses of a channel"),
    Cmd(TCP_COOKIE, NGM_TCP_MAXSEG, "maxseg", HOOKBUF, INT32,
        "The maximum segment size of a channel's connection"),
    Cmd(TCP_COOKIE, NGM_TCP_RESET, "reset", HOOKBUF, None,
        "Abort a channel's connection (RST)"),
    Cmd(TCP_COOKIE, NGM_TCP_SETOPT, "setopt", _OPT, None,
        "Set a channel option: { channel= name= value= }"),
    Cmd(TCP_COOKIE, NGM_TCP_GETOPT, "getopt", _OPT, _OPT,
        "Get a channel option: { channel= name= }"),
    Cmd(TCP_COOKIE, NGM_TCP_GETSTATS, "getstats", None, _STATS, "Get the counters"),
    Cmd(TCP_COOKIE, NGM_TCP_CLRSTATS, "clrstats", None, None, "Clear the counters"),
    Cmd(TCP_COOKIE, NGM_TCP_GETCLRSTATS, "getclrstats", None, _STATS,
        "Get and clear the counters"),
    Cmd(TCP_COOKIE, NGM_TCP_GETSTACK, "getstack", HOOKBUF, _STACK,
        "The TCP stack a channel runs on"),
    Cmd(TCP_COOKIE, NGM_TCP_SETSTACK, "setstack", _STACK, None,
        "Move a channel (and its live connection) to another TCP stack"),
)  # fmt: skip
