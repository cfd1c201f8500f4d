"""X-Forwarded-For processing (pure: no I/O).

`routing.http.xff_header_processing.mode` (ALB docs, "X-Forwarded headers"):
- append (default): no XFF -> `X-Forwarded-For: <client>`; existing -> `<existing>, <client>`.
  With `routing.http.xff_client_port.enabled` the appended entry is `ip:port` (`[ip]:port` for
  IPv6).
- preserve: the header is forwarded untouched (absent stays absent); client port ignored.
- remove: the header is deleted; client port ignored.

Decision on SEVERAL X-Forwarded-For header lines (not documented by AWS; in this lab HAProxy's
`option forwardfor` adds its own line after a client-sent one): the lines are combined, in the
order received, joined with ", ", into ONE header; in append mode the peer is then appended to
that single header. This is the RFC 9110 section 5.3 rule for list-valued fields, so the target
sees the same chain as if one proxy had written it.

Counting for HTTP 463: the addresses (comma-separated entries) in the X-Forwarded-For as
RECEIVED (all lines combined), in every mode: AWS documents 463 as "the load balancer received
an X-Forwarded-For request header with more than 30 IP addresses" (decisions.md #41). The peer
the ALB appends is not counted. More than 30 -> 463.
"""

from __future__ import annotations

from typing import Final, Sequence

from .limits import MAX_XFF_ADDRESSES

MODES: Final = ("append", "preserve", "remove")


class XffResult:
    """Made once per request. A plain class, not a dataclass: mypyc compiles a dataclass's fields
    but leaves the generated __init__ to the interpreter (decisions #69)."""
    __slots__ = ("value", "address_count")

    def __init__(self, value: str | None, address_count: int) -> None:
        self.value = value  # the single X-Forwarded-For to send upstream; None = send none
        self.address_count = address_count

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, XffResult)
                and (self.value, self.address_count) == (other.value, other.address_count))

    def __repr__(self) -> str:
        return f"XffResult(value={self.value!r}, address_count={self.address_count!r})"

    @property
    def too_many(self) -> bool:
        return self.address_count > MAX_XFF_ADDRESSES


def client_entry(ip: str, port: int, with_port: bool) -> str:
    if not with_port:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def count_addresses(value: str | None) -> int:
    if not value:
        return 0
    return sum(1 for part in value.split(",") if part.strip())


def combine(lines: Sequence[str]) -> str | None:
    """Several header lines -> one value, received order, ", " between them."""
    kept = [line.strip() for line in lines if line.strip()]
    return ", ".join(kept) if kept else None


def process_xff(lines: Sequence[str], *, mode: str, client_ip: str, client_port: int,
                client_port_enabled: bool = False) -> XffResult:
    """Compute the X-Forwarded-For to forward from the received lines (in order)."""
    if mode not in MODES:
        raise ValueError(f"xff mode {mode!r} is not one of {', '.join(MODES)}")
    if not lines:  # the common case from a client: nothing to combine or count
        return XffResult(client_entry(client_ip, client_port, client_port_enabled) if mode == "append" else None, 0)
    received = combine(lines)
    count = count_addresses(received)
    if mode == "append":
        entry = client_entry(client_ip, client_port, client_port_enabled)
        value = f"{received}, {entry}" if received else entry
        return XffResult(value, count)
    if mode == "preserve":
        return XffResult(received, count)
    return XffResult(None, count)
