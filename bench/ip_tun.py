"""IPv4 packets per second through a TUN interface: iface -> ip -> a UDP responder and back.

A kernel UDP socket in a network namespace of the benchmark's own sends 64-byte datagrams to a
UDP echo on the far side of a TUN interface, keeping ``--window`` of them in flight, and counts
the answers; this process's CPU time per answer is measured too (the client, a Python loop, may
limit the rate of the fast contenders; CPU per packet is free of that). Four contenders answer,
each on a TUN interface of its own in that namespace, interleaved round by round:

* graph    - ``iface`` -> ``ip`` (192.0.2.2) -> ``udp`` hook -> a responder node (defined here)
  that swaps the ports and sends the datagram back down with ``dst``/``src`` tags (the ip node
  fills in the checksum); every packet is parsed, routed and rebuilt by the ip node;
* iface    - ``iface`` -> a node (defined here) that answers the raw packets as raw does below:
  the iface node's own cost, without the ip node;
* raw      - plain Python on a TUN descriptor (no trio, no graph): read a packet, swap the IP
  addresses and the UDP ports (which leaves both checksums right), write it back;
* raw+vnet - the same with ``IFF_VNET_HDR``, as the iface node opens its device: the cost of the
  10-byte offload header on its own.

The client runs in another process (this file with ``--client``, inside the namespace), so the
contenders have this process to themselves. Prints medians (packets per second answered, CPU
microseconds per packet) and the ratios to raw. Needs root (a namespace and
TUN devices); under a minute.

    .venv/bin/python bench/ip_tun.py [--seconds S] [--rounds N] [--window W] [--quick]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Sequence

import trio

import netgraph
from netgraph import Hook, Item, Node, TypeRegistry, tag, tags_of
from nodes.iface import IFACE_COOKIE, IFF_NO_PI, IFF_TUN, IFF_VNET_HDR, NGM_IFACE_GET_IFNAME
from nodes.iface import TUNSETIFF as _TUNSETIFF

PORT = 7
PAYLOAD = 64
# Each contender's subnet (documentation addresses only): (the kernel's address, the
# contender's, the prefix length).
NETS = {
    "graph": ("192.0.2.1", "192.0.2.2", 26),
    "iface": ("192.0.2.65", "192.0.2.66", 26),
    "raw": ("198.51.100.1", "198.51.100.2", 24),
    "raw+vnet": ("203.0.113.1", "203.0.113.2", 24),
}

# --------------------------------------------------------------------------- the client


def client(dst: str, seconds: float, window: int) -> None:
    """Keep ``window`` datagrams in flight for ``seconds`` (after a warm-up); print the rate."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((dst, PORT))
    sock.settimeout(0.2)
    payload = b"b" * PAYLOAD
    for _ in range(window):
        sock.send(payload)
    start = time.perf_counter()
    warm = start + 0.3
    end = warm + seconds
    counted = total = 0
    counting = False
    while True:
        try:
            sock.recv(2048)
        except TimeoutError:
            pass  # lost: send another, so the window stays full
        else:
            total += 1
            if counting:
                counted += 1
        sock.send(payload)
        if counted & 255 == 0:
            now = time.perf_counter()
            if not counting and now >= warm:
                counting, counted = True, 1
            elif now >= end:
                break
    print(counted / (time.perf_counter() - warm), total)


async def run_client(ns: str, dst: str, seconds: float, window: int) -> tuple[float, float]:
    """Packets answered per second, and this process's CPU time per packet answered (s)."""
    argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "--client", dst]
    argv += [str(seconds), str(window)]
    cpu = time.process_time()
    done = await trio.run_process(argv, capture_stdout=True)
    cpu = time.process_time() - cpu
    rate, total = done.stdout.split()
    return float(rate), cpu / int(total)


# -------------------------------------------------------------------------- the contenders


class Responder(Node):
    """Answers each UDP datagram from the ip node's ``udp`` hook: ports swapped, sent back."""

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        out = []
        for item in items:
            tags = tags_of(item)
            item = bytes(item)
            answer = item[2:4] + item[0:2] + item[4:6] + b"\0\0" + item[8:]
            out.append(tag(answer, dst=tags["src"], src=tags["dst"], csum=6))
        self.send_batch(hook, out)


def open_plain_tun(flags: int) -> tuple[int, str]:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    reply = fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", b"ngb%d", flags))
    return fd, reply[:16].split(b"\0", 1)[0].decode()


def swap(p: bytes) -> bytes | None:
    """The answer to an IPv4 UDP packet: addresses and ports swapped (checksums stay right)."""
    if p[0] >> 4 != 4 or p[9] != 17:
        return None
    hl = (p[0] & 15) * 4
    answer = p[:12] + p[16:20] + p[12:16] + p[20:hl] + p[hl + 2 : hl + 4] + p[hl : hl + 2]
    return answer + p[hl + 4 :]


class Swapper(Node):
    """The iface contender's echo: answers raw packets from the iface's hook, as raw does."""

    def rcvbatch(self, hook: Hook, items: Sequence[Item]) -> None:
        out = [answer for item in items if (answer := swap(bytes(item))) is not None]
        self.send_batch(hook, out)


def raw_echo(fd: int, vnet: bool, stop: list[float]) -> None:
    """The plain-Python reference: read, swap addresses and ports, write; until ``stop[0]``."""
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    read, write, writev = os.read, os.write, os.writev
    skip = 10 if vnet else 0
    header = bytes(10)
    while time.monotonic() < stop[0]:
        try:
            data = read(fd, 65546)
        except BlockingIOError:
            poller.poll(100)
            continue
        answer = swap(data[skip:])
        if answer is None:
            continue
        if vnet:
            writev(fd, (header, answer))
        else:
            write(fd, answer)


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def adopt(ns: str, name: str, net: tuple[str, str, int]) -> None:
    subprocess.run(["ip", "link", "set", "dev", name, "netns", ns], check=True)
    ip(ns, "addr", "add", f"{net[0]}/{net[2]}", "dev", name)
    ip(ns, "link", "set", "dev", name, "up")


async def main(seconds: float, rounds: int, window: int) -> None:
    ns = f"ngbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    raw_fds: dict[str, int] = {}
    try:
        ip(ns, "link", "set", "dev", "lo", "up")
        names = {}
        for name, flags in (("raw", 0), ("raw+vnet", IFF_VNET_HDR)):
            raw_fds[name], names[name] = open_plain_tun(IFF_TUN | IFF_NO_PI | flags)
        for name, ifname in names.items():  # once all exist: a moved one frees its name
            adopt(ns, ifname, NETS[name])
        types = TypeRegistry()
        types.register("bench_responder", Responder)
        types.register("bench_swapper", Swapper)
        async with netgraph.open_graph(types=types) as graph:
            sock = graph.socket("bench")
            await sock.mkpeer(".", "bench_responder", "r", "r")
            await sock.mkpeer("r", "ip", "udp", "udp")
            await sock.name_node("r.udp", "ip0")
            await sock.mkpeer("ip0:", "iface", "link0", "allip")
            _, ours, length = NETS["graph"]
            await sock.send_ascii("ip0:", f'addaddr {{ addr={ours}/{length} hook="link0" }}')
            await sock.mkpeer(".", "bench_swapper", "s", "s")
            await sock.mkpeer("s", "iface", "inet", "inet")
            # Both made before either moves: a moved interface frees its name here.
            for path, name in (("ip0:link0", "graph"), ("s.inet", "iface")):
                reply = await sock.request(path, IFACE_COOKIE, NGM_IFACE_GET_IFNAME)
                names[name] = reply.args
            for name in ("graph", "iface"):
                adopt(ns, names[name], NETS[name])
            rates: dict[str, list[float]] = {name: [] for name in NETS}
            cpus: dict[str, list[float]] = {name: [] for name in NETS}
            for _ in range(rounds):
                for name in NETS:
                    dst = NETS[name][1]
                    if name in ("graph", "iface"):
                        rate, cpu = await run_client(ns, dst, seconds, window)
                    else:
                        fd, vnet = raw_fds[name], name == "raw+vnet"
                        stop = [time.monotonic() + seconds + 5]

                        async def echo(
                            fd: int = fd, vnet: bool = vnet, stop: list[float] = stop
                        ) -> None:
                            await trio.to_thread.run_sync(raw_echo, fd, vnet, stop)

                        async with trio.open_nursery() as nursery:
                            # The reference runs in a thread while this one waits for the client.
                            nursery.start_soon(echo)
                            rate, cpu = await run_client(ns, dst, seconds, window)
                            stop[0] = 0.0  # the thread sees it within one poll
                    rates[name].append(rate)
                    cpus[name].append(cpu * 1e6)
                    print(f"  {name:9} {rate:10.0f} packets/s {cpu * 1e6:6.1f} us CPU", flush=True)
            graph.close()
    finally:
        for fd in raw_fds.values():
            os.close(fd)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    med = {name: statistics.median(values) for name, values in rates.items()}
    per = {name: statistics.median(values) for name, values in cpus.items()}
    print(f"medians over {rounds} rounds of {seconds} s, {window} datagrams in flight")
    print("  (packets answered per second; this process's CPU time per packet answered)")
    for name, values in rates.items():
        print(
            f"  {name:9} {med[name]:10.0f} packets/s ({min(values):.0f}-{max(values):.0f})"
            f" {per[name]:6.1f} us CPU"
        )
    print("ratios of the medians (rate; CPU per packet)")
    print(f"  graph/raw      {med['graph'] / med['raw']:.3f}  {per['graph'] / per['raw']:.2f}")
    print(f"  iface/raw      {med['iface'] / med['raw']:.3f}  {per['iface'] / per['raw']:.2f}")
    print(
        f"  raw+vnet/raw   {med['raw+vnet'] / med['raw']:.3f}  {per['raw+vnet'] / per['raw']:.2f}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1 round of 0.5 s")
    opts = parser.parse_args()
    if opts.quick:
        opts.seconds, opts.rounds = 0.5, 1
    trio.run(main, opts.seconds, opts.rounds, opts.window)
