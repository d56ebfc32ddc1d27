"""``ip``: the IPv4 and IPv6 layer of the user-space TCP/IP stack (spec tcp.md, section 1).

Hooks
=====

``link0``, ``link1``, ... (any name starting with ``link``)
    Raw IP packets, IPv4 or IPv6 by the version nibble, no link-layer header, as any bytes-like
    item (``bytes``, ``bytearray``, ``memoryview``, :class:`netgraph.Tagged`; tags on them are
    ignored). What goes out is ``bytes``. Each link hook has an MTU: 1500 unless set by
    ``setmtu`` or ``setconfig`` (68..65535), kept by hook name whether or not it is connected.

``tcp``, ``udp``, ``icmp``, ``icmp6``, or a protocol number in decimal (``"17"``)
    A name and its number are one protocol: ``udp`` and ``17`` cannot both exist (the second
    gets EEXIST). Numbers of IPv6 extension headers (0, 43, 44, 59, 60) are not protocols
    (EINVAL). Protocol numbers are shared by IPv4 and IPv6, so one hook carries both.

Up: what a protocol hook receives
---------------------------------

The transport payload (IP header and extension headers stripped) as a :class:`netgraph.Tagged`
with the tags:

==========  =================================================================================
``src``     the sender, ``IPv4Address`` / ``IPv6Address``
``dst``     the destination: one of our addresses, or a broadcast or multicast address
``proto``   the protocol number (``int``)
``ttl``     TTL (IPv4) or hop limit (IPv6), ``int``
``tos``     TOS byte (IPv4) or traffic class (IPv6), ``int`` (ECN is its low two bits)
``link``    the name of the link hook it came in by
==========  =================================================================================

An ICMP or ICMPv6 error (destination unreachable, time exceeded, parameter problem, packet too
big) about a packet a protocol sent arrives on that protocol's hook as a Tagged item whose
payload is the quoted transport header and whatever the error quotes after it (at least 8
bytes), with the tags ``icmp_type``, ``icmp_code`` (ints, of ICMP or ICMPv6 as the family
says), ``src`` and ``dst`` of the quoted (our original) packet, ``proto``, ``link``,
``icmp_src`` (who sent the error), and, for fragmentation-needed and packet-too-big, ``mtu``
(the path MTU now in use for that destination). An item with an ``icmp_type`` tag is an error,
never data. The ``icmp`` / ``icmp6`` hooks also get every ICMP message received whole (with the
ordinary tags; those with a bad checksum or, for errors, a quote that is not of a packet of
ours are dropped), echo requests the node has answered included.

Down: what a protocol hook sends
--------------------------------

The transport payload, tagged (plain bytes have no ``dst`` and are refused):

============  ===============================================================================
``dst``       required: ``IPv4Address`` / ``IPv6Address`` (or text or int ipaddress reads)
``src``       one of our addresses; default: the route's source address
``ttl``       1..255; default 64 (``setconfig ttl=``)
``tos``       TOS / traffic class (``tclass`` is accepted too); default 0
``df``        true: do not fragment; too big is then EMSGSIZE (IPv4 DF bit; IPv6: no source
              fragmentation). Default false
``csum``      an offset in the payload: fill in the transport checksum there, over the IPv4 or
              IPv6 pseudo-header with the source chosen here (UDP's zero becomes 0xFFFF)
``unreach``   not data: the item is one this hook received (payload and tags as they came
              up); send its sender an ICMP destination unreachable with this code (3, port
              unreachable, in IPv4; 4 in ICMPv6). Rate-limited like every error
============  ===============================================================================

The node routes by ``dst`` (longest prefix), builds the header, fragments to the path MTU (the
link's, lowered by ICMP), and sends the packet out of the route's link hook. A bad item is
counted and raises :class:`netgraph.NetgraphError` to the sender: EINVAL (bad or missing tags),
EHOSTUNREACH (no route, or our own address: there is no loopback), ENETDOWN (the route's hook
is not connected), EADDRNOTAVAIL (no source address), EMSGSIZE (too big with ``df``, or over
65535). In a batch every item is tried and the first error raised.

Messages (cookie :data:`IP_COOKIE`, 1727713010; ASCII and binary, from one cmdlist)
====================================================================================

Addresses are written naturally: ``192.0.2.1``, ``2001:db8::1``, with ``/len`` where a prefix is
meant. ::

    addaddr { addr=192.0.2.1/24 hook="link0" }        (EEXIST twice on a hook; EINVAL bad)
    deladdr { addr=192.0.2.1/24 hook="link0" }        (ENOENT if absent)
    listaddrs                    -> { addrs=[ { addr=192.0.2.1/24 hook="link0" } ] }
    addroute { dest=0.0.0.0/0 gateway=192.0.2.254 hook="link0" }
        (hook may be left out when a connected route reaches the gateway; EEXIST, ENETUNREACH)
    delroute { dest=0.0.0.0/0 }                       (ENOENT if absent)
    listroutes                   -> { routes=[ { dest=... gateway=... hook=... src=... mtu=...
                                     connected=1 } ] }   (connected: an address's own route)
    getroute 198.51.100.7        -> { dest=0.0.0.0/0 gateway=192.0.2.254 hook="link0"
                                     src=192.0.2.1 mtu=1500 }   (EHOSTUNREACH)
    setmtu { hook="link0" mtu=1400 }                  (mtu=0: back to 1500)
    getmtu "link0"               -> { hook="link0" mtu=1400 }
    getstats / clrstats / getclrstats  -> { in_packets=... delivered=... bad_checksum=... }
    getconfig                    -> { addrs=[...] routes=[...] links=[...] forwarding=1 ... }
                                    (static routes, MTUs set, settings not at 0: the default)
    setconfig { addrs=[ { addr=192.0.2.1/24 hook="link0" } ] links=[ { hook="link0" mtu=1400 } ]
                forwarding=1 ttl=64 reasm_timeout4=30 reasm_timeout6=60 reasm_maxbytes=4194304
                reasm_maxdatagram=65535 icmp_rate=1000 icmp_burst=50 }

``setconfig`` replaces the whole configuration, all or nothing; given ``getconfig``'s reply text
unchanged it recreates addresses, routes, MTUs and settings. Zero in a setting is its default.
The counters are :class:`nodes.ip.messages.IpStats`; ``ngctl status`` shows links, addresses,
protocols and the non-zero counters.

What the node does (details in :mod:`nodes.ip.stack`)
=====================================================

A host: validates, reassembles (bounded; 30 s IPv4 and 60 s IPv6 timeouts), delivers,
answers echo requests, sends and receives ICMP errors (rate-limited), fragments on send.
Forwarding between links is off unless ``setconfig forwarding=1``. No ARP or neighbor discovery
(links are point-to-point), no loopback, no multicast group membership (multicast and broadcast
packets are delivered to the protocol hooks as they come), no IP options on send, no jumbograms.
"""

from __future__ import annotations

from .messages import IP_COOKIE
from .node import IpNode

__all__ = ["IP_COOKIE", "IpNode"]
