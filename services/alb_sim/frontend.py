"""What the ALB's two client-side front ends share: HTTP/1.1 (server.py) and HTTP/2 (h2front.py).

Small helpers for the asyncio shells; the request decisions themselves are pipeline.py's.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .runtime import ListenerRuntime

TlsFields = tuple[str | None, str | None, str | None, str | None]  # cipher, protocol, SNI, certificate ARN
NO_TLS: TlsFields = (None, None, None, None)


class IdleTimed(Protocol):
    """A client connection with an idle timer (either front end)."""

    closing: bool
    last_activity: float
    idle_timeout: float
    idle_timer: asyncio.TimerHandle | None
    loop: asyncio.AbstractEventLoop

    def arm_idle(self) -> None: ...


def idle_timer_expired(conn: IdleTimed, busy: bool) -> bool:
    """The idle timer of a client connection went off: True if the connection really was idle for
    the idle timeout, else the timer is re-armed. A connection with requests in flight counts as
    active (the upstream side times those requests out)."""
    conn.idle_timer = None
    if conn.closing:
        return False
    if busy or conn.loop.time() - conn.last_activity < conn.idle_timeout:
        if busy:
            conn.last_activity = conn.loop.time()
        conn.arm_idle()
        return False
    return True


def tls_fields(ssl_obj: ssl.SSLObject, lr: ListenerRuntime) -> TlsFields:
    """Access-log ssl_cipher, ssl_protocol, domain_name (SNI) and chosen_cert_arn of a TLS connection."""
    cipher = ssl_obj.cipher()
    cert = lr.listener.certificate
    chosen = "session-reused" if ssl_obj.session_reused else (
        getattr(ssl_obj, "alb_cert", None) or (cert.arn if cert else None))
    return cipher[0] if cipher else None, ssl_obj.version(), getattr(ssl_obj, "alb_sni", None), chosen
