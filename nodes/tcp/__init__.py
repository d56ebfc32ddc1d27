"""The TCP core: a sans-IO TCP (no trio, no clock, no I/O) that the tcp node drives.

* :mod:`nodes.tcp.segment`: the wire format (header, options, checksum), pure functions;
* :mod:`nodes.tcp.tcb`: the transmission control block, every fact as a field, and its
  versioned export and import;
* :mod:`nodes.tcp.connection`: the state machine (:class:`Connection`, :class:`Listener`),
  with the theory of operation in its docstring;
* :mod:`nodes.tcp.stack`: loss recovery, congestion control and output policy as replaceable
  stacks, and their registry (tcp_functions(9));
* :mod:`nodes.tcp.events`: what a connection tells its user;
* :mod:`nodes.tcp.testing`: two connections over a seeded lossy link on virtual time (the test
  harness, sans-IO too).
"""

from __future__ import annotations

from .connection import Connection, Listener, ephemeral_ports, make_isn, stray_reset
from .stack import REGISTRY, Stack, StackRegistry
from .tcb import Config, State, Tcb

__all__ = [
    "REGISTRY",
    "Config",
    "Connection",
    "Listener",
    "Stack",
    "StackRegistry",
    "State",
    "Tcb",
    "ephemeral_ports",
    "make_isn",
    "stray_reset",
]
