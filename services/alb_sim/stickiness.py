"""Sticky sessions (`stickiness.type` lb_cookie and app_cookie), pure: no I/O.

AWS (ALB sticky sessions): the ALB sets `AWSALB` (and `AWSALBCORS` with `SameSite=None; Secure`),
values opaque and encrypted, cookie `Expires` fixed at 7 days while the stickiness duration
(`stickiness.lb_cookie.duration_seconds`, default 1 day) is enforced by the ALB and reset on every
request; a missing, invalid or expired cookie, or a target that is unhealthy or deregistered, gets
a new target and a new cookie. Here the value is base64url(`<group>|<ip:port>|<expiry>`) plus an
HMAC-SHA256 tag under a per-process random key: opaque to the client and unforgeable.

Application-based (`app_cookie`): once the target sets the cookie named
`stickiness.app_cookie.cookie_name`, the ALB adds its own `AWSALBAPP-0` .. `AWSALBAPP-3` (AWS shards
the encrypted value over up to four cookies; ours fits in the first, the others carry `_remove_`,
decisions.md #48), Expires 7 days; the stickiness duration is enforced by the ALB and reset on every
response. Stickiness needs both cookies in the request.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
from typing import Final

COOKIE: Final = "AWSALB"
CORS_COOKIE: Final = "AWSALBCORS"
GROUP_COOKIE: Final = "AWSALBTG"  # target group stickiness of a weighted forward action
GROUP_CORS_COOKIE: Final = "AWSALBTGCORS"
APP_COOKIES: Final = tuple(f"AWSALBAPP-{i}" for i in range(4))
APP_COOKIE_REMOVED: Final = "_remove_"
COOKIE_LIFETIME: Final = 7 * 24 * 3600


class StickyCodec:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def _tag(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload, hashlib.sha256).digest()[:18]).decode()

    def encode(self, group: str, target: str, expires: float) -> str:
        payload = f"{group}|{target}|{int(expires)}".encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._tag(payload)

    def _payload(self, value: str) -> bytes | None:
        """The cookie's payload if its tag is ours (whatever its expiry), else None."""
        body, _, tag = value.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, TypeError):
            return None
        return payload if hmac.compare_digest(tag, self._tag(payload)) else None

    def authentic(self, value: str) -> bool:
        """True if this ALB made the cookie (expired or not): false for forged, damaged or URL-encoded ones."""
        return self._payload(value) is not None

    def decode(self, value: str, group: str, now: float) -> str | None:
        """The `ip:port` the cookie sticks to, if it is ours, for `group` and not expired."""
        payload = self._payload(value)
        if payload is None:
            return None
        parts = payload.decode("latin-1").split("|")
        if len(parts) != 3 or parts[0] != group or not parts[2].isdigit() or int(parts[2]) < now:
            return None
        return parts[1]


def app_cookie_set(headers: list[tuple[bytes, bytes]], name: bytes) -> bool:
    """True if a response sets the application cookie `name` (`Set-Cookie: <name>=...`)."""
    prefix = b"".join((name, b"="))
    return any(n.lower() == b"set-cookie" and v.lstrip().startswith(prefix) for n, v in headers)


def cookie_value(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie `name` in the request's Cookie header lines (first one wins)."""
    prefix = b"".join((name.encode(), b"="))
    for n, v in headers:
        if n.lower() != b"cookie":
            continue
        for part in v.split(b";"):
            part = part.strip()
            if part.startswith(prefix):
                return part[len(prefix):].decode("latin-1")
    return None


def set_cookie_headers(value: str, now: float, names: tuple[str, str] = (COOKIE, CORS_COOKIE)
                       ) -> list[tuple[bytes, bytes]]:
    expires = email.utils.formatdate(now + COOKIE_LIFETIME, usegmt=True)
    plain, cors = names
    return [(b"Set-Cookie", f"{plain}={value}; Expires={expires}; Path=/".encode()),
            (b"Set-Cookie", f"{cors}={value}; Expires={expires}; Path=/; SameSite=None; Secure".encode())]


def app_set_cookie_headers(value: str, now: float) -> list[tuple[bytes, bytes]]:
    """AWSALBAPP-0 with the value, AWSALBAPP-1..3 emptied (`_remove_`), all expiring in 7 days."""
    expires = email.utils.formatdate(now + COOKIE_LIFETIME, usegmt=True)
    return [(b"Set-Cookie", f"{name}={value if i == 0 else APP_COOKIE_REMOVED}; Expires={expires}; Path=/".encode())
            for i, name in enumerate(APP_COOKIES)]
