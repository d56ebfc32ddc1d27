"""Addresses, routes, link MTUs and path MTUs of one ip node. Sans-IO.

Addresses belong to link hooks (by name, whether or not the hook is connected now) and each one
with a prefix gives a *connected* route to its network through its hook, as Linux's kernel routes
do. Static routes are added by message; a static route and a connected one may share a
destination (the static one wins); two static routes may not (EEXIST). Lookup is longest prefix
match; its results, with the source address chosen for them, are cached by destination until the
next change.

The gateway of a route says which neighbour the packet is for. Links here are point-to-point (a
TUN device, a pipe to another ip node), so it decides nothing on the wire; it picks the hook when
a route names no hook, and the source address when several are on the hook.

Source selection (a small part of RFC 6724): an address on the route's hook of the same family,
preferring one whose network holds the destination (or the gateway), then one of the same scope
(link-local or not); failing that, any address of the family on the node.
"""

from __future__ import annotations

import errno
import itertools
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Final

from netgraph.errors import NetgraphError

from .header import martian_dst4, martian_dst6

__all__ = ["DEFAULT_MTU", "Path", "Route", "Table"]

Addr = IPv4Address | IPv6Address
Iface = IPv4Interface | IPv6Interface
Net = IPv4Network | IPv6Network

DEFAULT_MTU: Final = 1500
MIN_MTU: Final = 68
MAX_MTU: Final = 65535
PMTU_LIFETIME: Final = 600.0  # RFC 1191 / RFC 8201: ten minutes
PMTU_ENTRIES: Final = 4096
CACHE_ENTRIES: Final = 4096
# Generations are unique across tables, so that a cache keyed on one never matches another.
_generations: Final = itertools.count(1)


def is_link_hook(name: str) -> bool:
    return name.startswith("link")


class Route:
    """One route: a destination network, an optional gateway, a link hook."""

    __slots__ = ("connected", "dest", "gateway", "hook")

    def __init__(self, dest: Net, gateway: Addr | None, hook: str, connected: bool) -> None:
        self.dest = dest
        self.gateway = gateway
        self.hook = hook
        self.connected = connected


class Path:
    """What a lookup gives: the route, its hook, and the source address chosen for it."""

    __slots__ = ("hook", "route", "src", "srckey")

    def __init__(self, route: Route, src: Addr | None) -> None:
        self.route = route
        self.hook = route.hook
        self.src = src
        self.srckey: int | bytes | None = None if src is None else _key(src)


def _key(addr: Addr) -> int | bytes:
    return int(addr) if addr.version == 4 else addr.packed


class Table:
    """The node's addresses (by hook), routes, MTUs and learnt path MTUs."""

    def __init__(self) -> None:
        self.addresses: list[tuple[str, Iface]] = []  # in the order they were added
        self.routes: list[Route] = []  # static routes, in order
        self.mtus: dict[str, int] = {}  # set explicitly, by hook name
        # Unicast local addresses by key (IPv4 int, IPv6 bytes) and IPv4 broadcast addresses.
        self.local4: dict[int, IPv4Address] = {}
        self.local6: dict[bytes, IPv6Address] = {}
        self.bcast4: dict[int, IPv4Address] = {0xFFFFFFFF: IPv4Address(0xFFFFFFFF)}
        self._lpm: dict[int, list[tuple[int, int, dict[int, Route]]]] = {4: [], 6: []}
        self._cache: dict[int, dict[int, Path | None]] = {4: {}, 6: {}}
        self.pmtu: dict[tuple[int, int], tuple[int, float]] = {}
        self.generation = 0

    # ------------------------------------------------------------------------- addresses

    def add_address(self, hook: str, iface: Iface) -> None:
        _check_hook(hook)
        ip = iface.ip
        # What the stack would drop as a martian destination cannot be ours either.
        if (
            ip.is_multicast
            or ip == _BROADCAST
            or (martian_dst4(int(ip)) if ip.version == 4 else martian_dst6(ip.packed))
        ):
            raise NetgraphError(errno.EINVAL, f"{ip} cannot be a unicast address of a link")
        for have_hook, have in self.addresses:
            if have_hook == hook and have.ip == ip:
                raise NetgraphError(errno.EEXIST, f"{ip} is already on {hook!r} (as {have})")
        self.addresses.append((hook, iface))
        self._rebuild()

    def del_address(self, hook: str, iface: Iface) -> None:
        for i, (have_hook, have) in enumerate(self.addresses):
            if have_hook == hook and have.ip == iface.ip:
                del self.addresses[i]
                self._rebuild()
                return
        raise NetgraphError(errno.ENOENT, f"{iface.ip} is not on {hook!r}")

    def addresses_on(self, hook: str, version: int) -> list[Iface]:
        return [i for h, i in self.addresses if h == hook and i.version == version]

    # ---------------------------------------------------------------------------- routes

    def add_route(self, dest: Iface, gateway: Addr | None, hook: str) -> Route:
        net = dest.network
        if dest.ip != net.network_address:
            raise NetgraphError(errno.EINVAL, f"{dest} has host bits set (the route is {net}?)")
        if gateway is not None and gateway.version != net.version:
            raise NetgraphError(errno.EINVAL, f"gateway {gateway} is not IPv{net.version}")
        if not hook:
            if gateway is None:
                raise NetgraphError(errno.EINVAL, f"route to {net}: a hook or a gateway is needed")
            path = self.lookup(gateway)
            if path is None or path.route.gateway is not None:
                raise NetgraphError(
                    errno.ENETUNREACH, f"gateway {gateway} is on no link (no connected route)"
                )
            hook = path.hook
        _check_hook(hook)
        if any(r.dest == net for r in self.routes):
            raise NetgraphError(errno.EEXIST, f"a route to {net} exists")
        route = Route(net, gateway, hook, False)
        self.routes.append(route)
        self._rebuild()
        return route

    def del_route(self, dest: Iface, gateway: Addr | None, hook: str) -> None:
        net = dest.network
        for i, route in enumerate(self.routes):
            if (
                route.dest == net
                and (gateway is None or route.gateway == gateway)
                and (not hook or route.hook == hook)
            ):
                del self.routes[i]
                self._rebuild()
                return
        raise NetgraphError(errno.ENOENT, f"no static route to {net} like that")

    def all_routes(self) -> list[Route]:
        """Static routes, then the connected routes not hidden by a static one."""
        static = {r.dest for r in self.routes}
        seen: set[Net] = set()
        connected = []
        for hook, iface in self.addresses:
            net = iface.network
            if net not in static and net not in seen:
                seen.add(net)
                connected.append(Route(net, None, hook, True))
        return [*self.routes, *connected]

    # ---------------------------------------------------------------------------- lookup

    def lookup(self, dst: Addr) -> Path | None:
        """The route to ``dst`` with its source address, or None (cached until a change)."""
        key = int(dst)
        cache = self._cache[dst.version]
        try:
            return cache[key]
        except KeyError:
            pass
        path = None
        for plen_mask, _plen, nets in self._lpm[dst.version]:
            route = nets.get(key & plen_mask)
            if route is not None:
                path = Path(route, self.source(dst, route))
                break
        if len(cache) >= CACHE_ENTRIES:
            cache.clear()
        cache[key] = path
        return path

    def source(self, dst: Addr, route: Route) -> Addr | None:
        """The source address for ``dst`` by ``route`` (None: no address of that family)."""
        target = route.gateway if route.gateway is not None else dst
        mine = self.addresses_on(route.hook, dst.version)
        if not mine:
            mine = [i for _, i in self.addresses if i.version == dst.version]
        if not mine:
            return None
        local_scope = dst.is_link_local

        def rank(iface: Iface) -> tuple[bool, bool]:
            return (target not in iface.network, iface.ip.is_link_local != local_scope)

        return min(mine, key=rank).ip

    def _rebuild(self) -> None:
        """Recompute local addresses, broadcasts and the prefix tables; forget the caches."""
        self.generation = next(_generations)
        self.local4 = {}
        self.local6 = {}
        self.bcast4 = {0xFFFFFFFF: IPv4Address(0xFFFFFFFF)}
        for _, iface in self.addresses:
            if isinstance(iface, IPv4Interface):
                self.local4.setdefault(int(iface.ip), iface.ip)
                if iface.network.prefixlen <= 30:
                    bcast = iface.network.broadcast_address
                    self.bcast4[int(bcast)] = bcast
            else:
                self.local6.setdefault(iface.ip.packed, iface.ip)
        tables: dict[int, dict[int, dict[int, Route]]] = {4: {}, 6: {}}
        for route in self.all_routes():
            nets = tables[route.dest.version].setdefault(route.dest.prefixlen, {})
            nets.setdefault(int(route.dest.network_address), route)
        for version, by_len in tables.items():
            bits = 32 if version == 4 else 128
            full = (1 << bits) - 1
            self._lpm[version] = [
                (full ^ ((1 << (bits - plen)) - 1), plen, routes)
                for plen, routes in sorted(by_len.items(), reverse=True)
            ]
        self._cache = {4: {}, 6: {}}

    # ------------------------------------------------------------------------------ MTUs

    def link_mtu(self, hook: str) -> int:
        return self.mtus.get(hook, DEFAULT_MTU)

    def set_mtu(self, hook: str, mtu: int) -> None:
        _check_hook(hook)
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise NetgraphError(errno.EINVAL, f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")
        self.mtus[hook] = mtu

    def path_mtu(self, version: int, dst: int, hook: str, now: float) -> int:
        """The link's MTU, lowered by what ICMP told us about ``dst`` (if still fresh)."""
        mtu = self.mtus.get(hook, DEFAULT_MTU)
        if self.pmtu:
            learnt = self.pmtu.get((version, dst))
            if learnt is not None:
                if learnt[1] <= now:
                    del self.pmtu[(version, dst)]
                elif learnt[0] < mtu:
                    return learnt[0]
        return mtu

    def learn_mtu(self, version: int, dst: int, mtu: int, now: float) -> None:
        """An ICMP packet-too-big / fragmentation-needed said ``mtu`` for ``dst``."""
        floor = MIN_MTU if version == 4 else 1280
        mtu = max(mtu, floor)
        have = self.pmtu.get((version, dst))
        if have is not None and have[1] > now and have[0] <= mtu:
            return
        if len(self.pmtu) >= PMTU_ENTRIES:
            self.pmtu.clear()
        self.pmtu[(version, dst)] = (mtu, now + PMTU_LIFETIME)


_BROADCAST: Final = IPv4Address("255.255.255.255")


def _check_hook(hook: str) -> None:
    if not is_link_hook(hook):
        raise NetgraphError(errno.EINVAL, f"{hook!r} is not a link hook (link0, link1, ...)")
