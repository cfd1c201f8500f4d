"""Free TCP ports on 127.0.0.1 for servers a test starts later.

A port from `bind(("127.0.0.1", 0))` comes from the kernel's ephemeral range, the same range it
draws from for the local end of every outgoing connection. Between the test choosing such a port
and the server binding it, a connection made meanwhile (a health check, a pooled target connection
of an earlier test's simulator) can take it, and the server then fails with EADDRINUSE. These ports
come from below that range instead, where only an explicit bind can take them.

No port is handed out twice in one test process: a test that chooses ports in several calls
(listener, admin port, a "dead" target) before starting anything would otherwise get the same port
twice about once in 12,000 pairs, and a server would fail to bind or a dead target would answer.
"""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path

_LOWEST = 20000
_given: set[int] = set()
_rng = random.Random()  # not the global one, which Hypothesis seeds for repeatable examples


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that were free on 127.0.0.1 a moment ago, all below the ephemeral range."""
    top = _ephemeral_start()
    if top - _LOWEST < 1000:  # an unusual ephemeral range: the kernel's choice is all there is
        return _kernel_ports(n)
    held: list[socket.socket] = []
    try:
        if len(_given) + n > (top - _LOWEST) // 2:  # a very long session: start over
            _given.clear()
        while len(held) < n:
            port = _rng.randrange(_LOWEST, top)
            if port in _given:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                s.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            held.append(s)  # held until all are chosen, so none is handed out twice
            _given.add(port)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def _kernel_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
