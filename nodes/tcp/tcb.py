"""The transmission control block: every fact about one connection, as fields of one object.

Nothing about a connection lives anywhere but in its :class:`Tcb` (and the :class:`Config` it
holds): not in closures, tasks or the strategy objects of :mod:`nodes.tcp.stack`, which keep
what they need in TCB fields (the scoreboard, ``recover``, ``dupacks``) or in the JSON-shaped
``stack_state``. That is what lets a connection switch stacks at any time (tcp_functions(9)) and
be stopped, exported, imported elsewhere and started again with the peer none the wiser
(TCPCP2): :func:`export_tcb` and :func:`import_tcb` cover the whole block, buffers included.

Conventions:

* Sequence numbers are wire values, ints in ``[0, 2**32)``; compare them only with the modular
  helpers of :mod:`nodes.tcp.segment` (or the same arithmetic inlined).
* Windows are in bytes, already scaled. ``snd_mss`` is the payload of a full segment, TCP options
  already subtracted (as Linux's mss_cache).
* Times are the caller's ``now`` (seconds, a float on any monotonic clock). Every field whose name
  ends in ``_at`` is an absolute time on that clock, or None: the timers are such deadlines. The
  export writes them relative to the ``now`` of the export, and the import rebases them on its
  own ``now``, so a connection may move to a process whose clock reads differently. The
  timestamp clock (TSval, in milliseconds) moves with it the same way.
* The send buffer ``snd_buf`` holds every byte from ``snd_buf_seq`` on: the sent-but-unacked
  ones, then the unsent ones. ``snd_buf_seq`` is ``snd_una``, or ``snd_una + 1`` while our SYN is
  unacknowledged. The FIN, when queued, follows the last byte.
* The receive buffer ``rcv_buf`` holds in-order bytes the application has not read yet; ``ooo``
  holds out-of-order blocks ``[seq, data]``, disjoint and sorted, all inside the window.
"""

from __future__ import annotations

import base64
import enum
import errno
import json
from typing import Any, Final

import attrs
from attrs import define, field, frozen

from netgraph.errors import NetgraphError

EXPORT_FORMAT: Final = "netgraph-tcp-tcb"
EXPORT_VERSION: Final = 1


class State(enum.IntEnum):
    """RFC 9293's connection states, in its order (LISTEN belongs to listeners)."""

    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise NetgraphError(errno.EINVAL, f"{attribute.name} must be positive, not {value}")


@frozen
class Config:
    """Per-connection settings (the socket options of TCPCP2's list). Defaults follow Linux.

    ``mtu`` is the route MTU the caller looked up; the MSS we announce is derived from it (RFC
    6691), clamped by ``mss_clamp`` (TCP_MAXSEG). ``min_rto`` is 200 ms as in Linux where RFC
    6298 asks for 1 s (it allows less); ``msl`` 30 s makes TIME_WAIT last Linux's 60 s. R1 and R2
    (RFC 1122 4.2.3.5) count retransmissions: at ``r1`` the connection reports
    :class:`~nodes.tcp.events.RetransmitWarning`, at ``r2`` (``syn_r2`` for a SYN) it gives up.
    ``tx_checksum_offload`` leaves the checksum to the device (a TUN with IFF_VNET_HDR): segments
    carry only the pseudo-header's partial sum, see :func:`~nodes.tcp.segment.partial_checksum`.
    """

    mtu: int = field(default=1500, validator=_positive)
    mss_clamp: int | None = field(default=None, validator=_positive)
    sndbuf: int = field(default=256 * 1024, validator=_positive)
    rcvbuf: int = field(default=256 * 1024, validator=_positive)
    nodelay: bool = False
    keepalive: bool = False
    keepidle: float = field(default=7200.0, validator=_positive)
    keepintvl: float = field(default=75.0, validator=_positive)
    keepcnt: int = field(default=9, validator=_positive)
    user_timeout: float | None = field(default=None, validator=_positive)
    delack_time: float = field(default=0.040, validator=_positive)
    ack_every: int = field(default=2, validator=_positive)
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    initial_rto: float = field(default=1.0, validator=_positive)
    min_rto: float = field(default=0.2, validator=_positive)
    max_rto: float = field(default=120.0, validator=_positive)
    r1: int = field(default=3, validator=_positive)
    r2: int = field(default=15, validator=_positive)
    syn_r2: int = field(default=6, validator=_positive)
    msl: float = field(default=30.0, validator=_positive)
    initial_cwnd: int = field(default=10, validator=_positive)
    max_ooo_blocks: int = field(default=64, validator=_positive)
    challenge_ack_limit: int = field(default=10, validator=_positive)
    slow_start_after_idle: bool = True
    tx_checksum_offload: bool = False
    stack: str = "default"

    def __attrs_post_init__(self) -> None:
        if self.delack_time > 0.5:
            raise NetgraphError(errno.EINVAL, "delack_time above 500 ms (RFC 1122 4.2.3.2)")
        if not 68 <= self.mtu <= 65535:
            raise NetgraphError(errno.EINVAL, f"mtu {self.mtu} out of range")
        if self.min_rto > self.max_rto:
            raise NetgraphError(errno.EINVAL, "min_rto above max_rto")


@define
class Stats:
    """Counters of the exceptional: nothing here is touched on the fast paths."""

    bad_checksum: int = 0
    malformed: int = 0
    paws_dropped: int = 0
    out_of_window: int = 0
    challenge_acks: int = 0
    challenge_acks_suppressed: int = 0
    rst_sent: int = 0
    retransmits: int = 0
    timeouts: int = 0
    fast_retransmits: int = 0
    sack_recoveries: int = 0
    dupacks: int = 0
    ooo_segments: int = 0
    ooo_dropped: int = 0
    persist_probes: int = 0
    keepalive_probes: int = 0
    dropped_paused: int = 0
    rtt_samples: int = 0


@define(eq=False)
class Tcb:
    """Every fact about one connection. See the module docstring for the conventions."""

    # Identity: the 4-tuple, addresses as text (canonical, architecture-independent).
    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    config: Config = field(factory=Config)
    state: State = State.CLOSED
    passive: bool = False  # made from a listener's SYN

    # Send sequence space (RFC 9293 3.3.1), plus SND.MAX: the highest sequence sent.
    iss: int = 0
    snd_una: int = 0
    snd_nxt: int = 0
    snd_max: int = 0
    snd_wnd: int = 0
    snd_wl1: int = 0
    snd_wl2: int = 0
    max_snd_wnd: int = 0
    snd_wscale: int = 0  # the peer's shift, applied to the windows it sends
    snd_buf: bytearray = field(factory=bytearray)
    snd_buf_seq: int = 0
    fin_queued: bool = False

    # Receive sequence space. RCV.WND is what we last advertised: ``rcv_adv - rcv_nxt``.
    irs: int = 0
    rcv_nxt: int = 0
    rcv_adv: int = 0
    rcv_wscale: int = 0  # our shift
    last_ack_sent: int = 0
    rcv_buf: bytearray = field(factory=bytearray)
    ooo: list[list[Any]] = field(factory=list)  # [seq, bytearray], disjoint, in order
    ooo_fin: int | None = None  # sequence number of a FIN that came out of order
    ooo_recent: int | None = None  # start of the block the latest out-of-order data joined
    fin_received: bool = False
    rcv_closed: bool = False  # the user closed: new data is answered with a reset
    rcv_seg_max: int = 536  # the largest payload seen (Linux's rcv_mss): "full-sized"

    # Negotiated options and MSS (RFC 6691, RFC 7323, RFC 2018).
    our_mss: int = 536  # what we announced
    peer_mss: int = 536  # what the peer announced, or the default
    snd_mss: int = 536  # payload of a full segment we send, options subtracted
    ws_ok: bool = False
    sack_ok: bool = False
    ts_ok: bool = False
    ts_recent: int = 0
    ts_recent_at: float | None = None
    ts_offset: int = 0  # TSval = milliseconds of ``now`` + ts_offset

    # Congestion control and loss recovery (RFC 5681, 6582, 6675, 3042).
    cwnd: int = 0
    ssthresh: int = 0x7FFFFFFF
    recover: int = 0
    dupacks: int = 0
    in_recovery: bool = False
    bytes_acked: int = 0  # congestion avoidance's byte counter
    cwnd_limited: bool = False  # the last output stopped at cwnd (RFC 7661: then grow it)
    sacked: list[list[int]] = field(factory=list)  # scoreboard: [left, right) above SND.UNA
    high_rxt: int = 0  # RFC 6675 HighRxt
    rexmit_una: bool = False  # a retransmission of SND.UNA's segment is due
    last_sent_at: float | None = None

    # RTT estimation and retransmission timeout (RFC 6298, RFC 7323 4).
    srtt: float | None = None
    rttvar: float = 0.0
    rto: float = 1.0
    rxt_shift: int = 0  # consecutive timeouts: the backoff exponent, and the R1/R2 count
    rtt_seq: int = 0  # without timestamps: the sequence being timed...
    rtt_at: float | None = None  # ...and when it was sent (None: nothing timed)
    syn_rto_expired: bool = False  # RFC 6298 5.7
    rxt_ts: int | None = None  # our TSval when the timer last retransmitted (Karn for echoes)

    # Timers, as deadlines.
    rexmt_at: float | None = None
    persist_at: float | None = None
    keep_at: float | None = None
    delack_at: float | None = None
    timewait_at: float | None = None
    user_at: float | None = None
    persist_shift: int = 0
    persist_force: bool = False
    keep_probes: int = 0
    last_rcv_at: float | None = None

    # Acknowledgment and RFC 5961 challenge-ACK rate state.
    ack_now: bool = False
    challenge_at: float | None = None
    challenge_count: int = 0
    oow_ack_at: float | None = None  # the last ACK for a data-less unacceptable segment

    # The user's side: paused (TCPCP2 stop), and edge-triggered event state.
    paused: bool = False
    want_writable: bool = False

    # The stack (tcp_functions) running this connection, and its private JSON-shaped state.
    stack_name: str = "default"
    stack_state: dict[str, Any] = field(factory=dict)

    stats: Stats = field(factory=Stats)


# -------------------------------------------------------------------------- export/import


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return bytearray(base64.b64decode(value["$b"]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def ts_clock(now: float) -> int:
    """The timestamp clock before the offset: milliseconds of ``now`` (RFC 7323 5.4)."""
    return int(now * 1000.0)


def export_tcb(tcb: Tcb, now: float, extra: dict[str, Any] | None = None) -> bytes:
    """The whole TCB as versioned JSON (UTF-8): times relative to ``now``, bytes in base64."""
    fields: dict[str, Any] = {}
    for a in attrs.fields(Tcb):
        value = getattr(tcb, a.name)
        if a.name.endswith("_at"):
            value = None if value is None else value - now
        elif a.name == "ts_offset":
            # Carry the timestamp clock's reading, not its offset from this process's clock.
            value = (ts_clock(now) + value) & 0xFFFFFFFF
        elif a.name == "state":
            value = value.name
        elif isinstance(value, Config | Stats):
            value = attrs.asdict(value)
        fields[a.name] = _encode(value)
    doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "tcb": fields}
    if extra:
        doc["extra"] = _encode(extra)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def import_tcb(data: bytes, now: float) -> tuple[Tcb, dict[str, Any]]:
    """The TCB :func:`export_tcb` wrote, rebased on ``now``; and the export's ``extra``."""
    try:
        doc = json.loads(data)
        if doc.get("format") != EXPORT_FORMAT:
            raise ValueError("not a TCB export")
        if doc.get("version") != EXPORT_VERSION:
            raise ValueError(f"TCB export version {doc.get('version')}")
        raw = doc["tcb"]
        known = {a.name: a for a in attrs.fields(Tcb)}
        unknown = set(raw) - set(known)
        if unknown:
            raise ValueError(f"unknown TCB fields {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in raw.items():
            value = _decode(value)
            if name.endswith("_at"):
                value = None if value is None else now + float(value)
            elif name == "ts_offset":
                value = (int(value) - ts_clock(now)) & 0xFFFFFFFF
            elif name == "state":
                value = State[value]
            elif name == "config":
                value = Config(**value)
            elif name == "stats":
                value = Stats(**value)
            kwargs[name] = value
        tcb = Tcb(**kwargs)
        extra = _decode(doc.get("extra", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NetgraphError(errno.EINVAL, f"bad TCB export: {exc}") from exc
    return tcb, extra
