"""The ip node: a thin trio shell around :class:`nodes.ip.stack.IpStack`.

It maps hooks to the stack's links and protocols, hands it batches with ``trio.current_time()``
as ``now``, sends what it produced (synchronously, inside the handler), answers control messages,
and runs the one timer task the node has: it exists only while reassembly holds fragments, sleeps
until the stack's next deadline, and is woken early (a ``trio.Event``) when an earlier deadline
appears.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_interface
from typing import Any, Final

import attrs
import trio

from netgraph import Hook, Item, Message, NetgraphError, Node

from .header import DSTOPTS, FRAGMENT, HOPOPTS, MAX_PACKET, NONEXT, PROTOCOL_NAMES, ROUTING
from .messages import (
    CMDLIST,
    IP_COOKIE,
    NGM_IP_ADDADDR,
    NGM_IP_ADDROUTE,
    NGM_IP_CLRSTATS,
    NGM_IP_DELADDR,
    NGM_IP_DELROUTE,
    NGM_IP_GETCLRSTATS,
    NGM_IP_GETCONFIG,
    NGM_IP_GETMTU,
    NGM_IP_GETROUTE,
    NGM_IP_GETSTATS,
    NGM_IP_LISTADDRS,
    NGM_IP_LISTROUTES,
    NGM_IP_SETCONFIG,
    NGM_IP_SETMTU,
    AddrEntry,
    AddrList,
    IpConfig,
    LinkEntry,
    RouteEntry,
    RouteInfo,
    RouteList,
)
from .stack import IpStack, Settings
from .table import Route, Table, is_link_hook

__all__ = ["IpNode", "protocol_of"]

# Extension-header numbers: the stack walks these itself, so no hook may claim them.
_NOT_PROTOCOLS: Final = frozenset((HOPOPTS, ROUTING, FRAGMENT, NONEXT, DSTOPTS))
_DEFAULTS: Final = Settings()


def protocol_of(name: str) -> int | None:
    """The protocol number a hook name stands for (``udp`` and ``17`` alike), or None."""
    number = PROTOCOL_NAMES.get(name)
    if number is not None:
        return number
    if name.isascii() and name.isdigit() and (name == "0" or name[0] != "0"):
        value = int(name)
        if value <= 255 and value not in _NOT_PROTOCOLS:
            return value
    return None


def settings_of(conf: IpConfig) -> Settings:
    """The stack's settings from a config, whose zeros stand for the defaults."""
    if conf.forwarding not in (0, 1):
        raise NetgraphError(errno.EINVAL, f"forwarding={conf.forwarding} is not 0 or 1")
    return Settings(
        forwarding=bool(conf.forwarding),
        ttl=conf.ttl or _DEFAULTS.ttl,
        reasm_timeout4=float(conf.reasm_timeout4 or _DEFAULTS.reasm_timeout4),
        reasm_timeout6=float(conf.reasm_timeout6 or _DEFAULTS.reasm_timeout6),
        reasm_maxbytes=conf.reasm_maxbytes or _DEFAULTS.reasm_maxbytes,
        reasm_maxdatagram=min(conf.reasm_maxdatagram or MAX_PACKET, MAX_PACKET),
        icmp_rate=float(conf.icmp_rate or _DEFAULTS.icmp_rate),
        icmp_burst=float(conf.icmp_burst or _DEFAULTS.icmp_burst),
    )


def _prefix(route: Route) -> Any:
    return ip_interface((route.dest.network_address, route.dest.prefixlen))


class IpNode(Node):
    """IPv4 and IPv6: link hooks below, protocol hooks above (see :mod:`nodes.ip`)."""

    typecookie = IP_COOKIE
    cmdlist = CMDLIST

    def constructor(self) -> None:
        self.core = IpStack()
        self.proto_hooks: dict[int, Hook] = {}
        self.params = IpConfig()  # the numbers of the last setconfig, zeros kept
        self._timer_running = False
        self._timer_at = math.inf
        self._timer_wake = trio.Event()

    # ------------------------------------------------------------------------------ hooks

    def newhook(self, hook: Hook) -> None:
        name = hook.name
        if is_link_hook(name):
            hook.private = None
            self.core.links.add(name)
            return
        proto = protocol_of(name)
        if proto is None:
            raise NetgraphError(
                errno.EINVAL,
                f"ip has no hook {name!r}: link<N>, tcp, udp, icmp, icmp6 or a protocol number",
            )
        have = self.proto_hooks.get(proto)
        if have is not None:
            raise NetgraphError(
                errno.EEXIST, f"protocol {proto} already has a hook here: {have.name!r}"
            )
        hook.private = proto
        self.proto_hooks[proto] = hook
        self.core.set_upper(self.proto_hooks)

    def disconnect(self, hook: Hook) -> None:
        if hook.private is None:
            self.core.drop_link(hook.name)
        elif self.proto_hooks.get(hook.private) is hook:
            del self.proto_hooks[hook.private]
            self.core.set_upper(self.proto_hooks)

    # ------------------------------------------------------------------------------- data

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        core = self.core
        now = trio.current_time()
        proto = hook.private
        error = None
        if proto is None:
            core.receive(hook.name, items, now)
        else:
            error = core.send_many(proto, items, now)
        failure = self._flush()
        if core.reasm.datagrams:
            self._arm_timer()
        if error is not None or failure is not None:
            raise error or failure  # type: ignore[misc]

    def _flush(self) -> NetgraphError | None:
        """Send what the stack produced: up the protocol hooks, out of the link hooks. Errors
        from the receivers are returned (the first), after everything has been sent."""
        up, out = self.core.take()
        failure = None
        for proto, items in up.items():
            hook = self.proto_hooks[proto]
            try:
                if len(items) == 1:
                    self.send(hook, items[0])
                else:
                    self.send_batch(hook, items)
            except NetgraphError as err:
                failure = failure or err
        if out:
            groups: dict[str, list[bytes]] = {}
            for name, packet in out:
                groups.setdefault(name, []).append(packet)
            for name, packets in groups.items():
                link = self.hooks.get(name)
                if link is None:
                    self.core.counts["out_link_down"] += len(packets)
                    continue
                try:
                    if len(packets) == 1:
                        self.send(link, packets[0])
                    else:
                        self.send_batch(link, packets)
                except NetgraphError as err:
                    failure = failure or err
        return failure

    # ------------------------------------------------------------------------------ timer

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        if not self._timer_running:
            self._timer_running = True
            self._timer_at = deadline
            self.start_task(self._run_timer)
        elif deadline < self._timer_at:
            self._timer_wake.set()

    async def _run_timer(self) -> None:
        try:
            while True:
                deadline = self.core.next_deadline()
                if deadline is None:
                    return
                self._timer_at = deadline
                self._timer_wake = trio.Event()
                with trio.move_on_at(deadline):
                    await self._timer_wake.wait()
                self.core.expire(trio.current_time())
                _, out = self.core.take()
                for name, packet in out:
                    link = self.hooks.get(name)
                    if link is None:
                        self.core.counts["out_link_down"] += 1
                        continue
                    try:
                        await self.emit(link, packet)
                    except NetgraphError:
                        self.stats.dropped += 1
        finally:
            self._timer_running = False
            self._timer_at = math.inf

    # --------------------------------------------------------------------------- messages

    def rcvmsg(self, msg: Message, retaddr: int, lasthook: Hook | None) -> Any:
        if msg.typecookie != IP_COOKIE or msg.is_response:
            return super().rcvmsg(msg, retaddr, lasthook)
        cmd, args = msg.cmd, msg.args
        core = self.core
        table = core.table
        if cmd in (NGM_IP_ADDADDR, NGM_IP_DELADDR):
            entry = _need(args, AddrEntry, msg)
            if entry.addr is None:
                raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: addr= is needed")
            if cmd == NGM_IP_ADDADDR:
                table.add_address(entry.hook, entry.addr)
            else:
                table.del_address(entry.hook, entry.addr)
            return None
        if cmd == NGM_IP_LISTADDRS:
            return AddrList(tuple(AddrEntry(iface, hook) for hook, iface in table.addresses))
        if cmd in (NGM_IP_ADDROUTE, NGM_IP_DELROUTE):
            route = _need(args, RouteEntry, msg)
            if route.dest is None:
                raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: dest= is needed")
            if cmd == NGM_IP_ADDROUTE:
                table.add_route(route.dest, route.gateway, route.hook)
            else:
                table.del_route(route.dest, route.gateway, route.hook)
            return None
        if cmd == NGM_IP_LISTROUTES:
            return RouteList(tuple(self._route_info(r) for r in table.all_routes()))
        if cmd == NGM_IP_GETROUTE:
            if not isinstance(args, IPv4Address | IPv6Address):
                raise NetgraphError(errno.EINVAL, "getroute takes an address")
            found = core.route(args, trio.current_time())
            if found is None:
                raise NetgraphError(errno.EHOSTUNREACH, f"no route to {args}")
            path, mtu = found
            return attrs.evolve(self._route_info(path.route), src=path.src, mtu=mtu)
        if cmd == NGM_IP_SETMTU:
            link = _need(args, LinkEntry, msg)
            if link.mtu:
                table.set_mtu(link.hook, link.mtu)
            elif is_link_hook(link.hook):
                table.mtus.pop(link.hook, None)
            else:
                raise NetgraphError(errno.EINVAL, f"{link.hook!r} is not a link hook")
            return None
        if cmd == NGM_IP_GETMTU:
            if not isinstance(args, str) or not is_link_hook(args):
                raise NetgraphError(errno.EINVAL, f"getmtu: {args!r} is not a link hook name")
            return LinkEntry(args, table.link_mtu(args))
        if cmd in (NGM_IP_GETSTATS, NGM_IP_CLRSTATS, NGM_IP_GETCLRSTATS):
            reply = None if cmd == NGM_IP_CLRSTATS else core.stats()
            if cmd != NGM_IP_GETSTATS:
                core.clear_stats()
            return reply
        if cmd == NGM_IP_SETCONFIG:
            self._set_config(_need(args, IpConfig, msg))
            return None
        if cmd == NGM_IP_GETCONFIG:
            return attrs.evolve(
                self.params,
                addrs=tuple(AddrEntry(iface, hook) for hook, iface in table.addresses),
                routes=tuple(RouteEntry(_prefix(r), r.gateway, r.hook) for r in table.routes),
                links=tuple(LinkEntry(hook, mtu) for hook, mtu in table.mtus.items()),
            )
        return super().rcvmsg(msg, retaddr, lasthook)

    def _route_info(self, route: Route) -> RouteInfo:
        table = self.core.table
        src = table.source(route.dest.network_address, route)
        mtu = table.link_mtu(route.hook)
        return RouteInfo(_prefix(route), route.gateway, route.hook, src, mtu, int(route.connected))

    def _set_config(self, conf: IpConfig) -> None:
        """Replace addresses, routes, MTUs and settings, all or nothing."""
        settings = settings_of(conf)
        table = Table()
        for entry in conf.addrs:
            if entry.addr is None:
                raise NetgraphError(errno.EINVAL, "setconfig: an address entry without addr=")
            table.add_address(entry.hook, entry.addr)
        for route in conf.routes:
            if route.dest is None:
                raise NetgraphError(errno.EINVAL, "setconfig: a route without dest=")
            table.add_route(route.dest, route.gateway, route.hook)
        for link in conf.links:
            table.set_mtu(link.hook, link.mtu or table.link_mtu(link.hook))
        self.core.table = table
        self.core.configure(settings)
        self.params = attrs.evolve(conf, addrs=(), routes=(), links=())

    def status_text(self) -> str:
        core = self.core
        table = core.table
        lines = []
        hooks = sorted({h for h, _ in table.addresses} | core.links | set(table.mtus))
        for name in hooks:
            state = "up" if name in core.links else "down"
            addrs = " ".join(str(i) for h, i in table.addresses if h == name) or "-"
            lines.append(f"{name} ({state}, mtu {table.link_mtu(name)}): {addrs}")
        protos = " ".join(h.name for _, h in sorted(self.proto_hooks.items())) or "-"
        lines.append(f"protocols: {protos}; routes: {len(table.all_routes())}")
        counts = [f"{name}={value}" for name, value in core.counts.items() if value]
        lines.append(" ".join(counts) or "no packets")
        return "\n".join(lines)


def _need(args: Any, kind: type, msg: Message) -> Any:
    if not isinstance(args, kind):
        raise NetgraphError(errno.EINVAL, f"{msg.cmdstr}: the argument is a {kind.__name__}")
    return args
