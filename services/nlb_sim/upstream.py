"""Sockets towards targets: source-address choice (client IP preservation) and connect.

Client IP preservation (platform.md, "Client IP preservation", verified end to end): the socket
gets ``IP_TRANSPARENT`` and is bound to the client's own (ip, port) before connecting, so the
target sees the client. Replies reach this socket only with the policy routing that
``netsetup`` installs. Without preservation the socket is bound to the node's private IP.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import os
import socket
import ssl
import struct
from typing import Any

from .idle import TCP_INFO_BYTES, tcp_info_fields

SOL_IP = 0
IP_TRANSPARENT = 19
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: bind(ip, 0) defers the port choice to connect()


def bind_source(sock: _socket.socket, source: tuple[str, int] | None, transparent: bool,
                *, defer_port: bool = False) -> None:
    """Bind an upstream socket to ``source`` (the client's address with ``transparent``, needs
    CAP_NET_ADMIN); a taken source port (EADDRINUSE) falls back to an ephemeral one on the same IP.
    ``defer_port``: with port 0, let connect() pick the port knowing the whole 4-tuple."""
    if transparent:
        sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
    if source is None:
        return
    if defer_port and source[1] == 0:  # connect() picks a port unique for the 4-tuple
        sock.setsockopt(SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(source)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or source[1] == 0:
            raise
        sock.bind((source[0], 0))
_LINGER_RST = struct.pack("ii", 1, 0)


async def connect_target(loop: asyncio.AbstractEventLoop, target: tuple[str, int], *,
                         source: tuple[str, int] | None, transparent: bool,
                         timeout: float) -> socket.socket:
    """A connected non-blocking socket to ``target``, bound to ``source`` (None: kernel's choice).

    With ``transparent`` the socket may bind a non-local ``source`` (needs CAP_NET_ADMIN); if the
    source port is taken (EADDRINUSE) it falls back to an ephemeral port on the same IP.
    Raises OSError / TimeoutError; the socket is closed on any failure or cancellation.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bind_source(sock, source, transparent)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, target)
    except BaseException:
        sock.close()
        raise
    return sock


def reset(transport: asyncio.WriteTransport) -> None:
    """Close ``transport`` with a TCP RST (SO_LINGER 0 + abort), not a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
    transport.abort()


TCP_KEEPCNT_MAX = 127  # Linux's limit


def tcp_counters(sock: Any) -> tuple[int, int] | None:
    """(tcpi_segs_in, tcpi_last_ack_recv ms) of a TCP socket (or an asyncio transport's socket);
    None when it cannot tell (closed, or a kernel that does not count segments)."""
    if sock is None:
        return None
    try:
        return tcp_info_fields(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES))
    except OSError:
        return None


def keep_alive(sock: Any, seconds: float | None) -> None:
    """The kernel sends a TCP keep-alive probe after ``seconds`` without a packet from the peer, then
    every ``seconds``; None: no more probes. At 20 s it never gives up on an unanswered peer before
    a TLS listener's 350 s idle timeout does (TCP_KEEPCNT at its maximum: 127 probes)."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0 if seconds is None else 1)
        if seconds is not None:
            whole = max(1, round(seconds))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, whole)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, whole)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPCNT_MAX)
    except OSError:
        pass


def describe(exc: BaseException) -> str:
    """Short text for a connect/relay error: ``Connection refused``, ``timed out``..."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # uvloop's strerror reads "Connect call failed (...)"
    return str(exc) or type(exc).__name__
