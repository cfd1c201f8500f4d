"""What the echo service answers: a received request in, a JSON document and response bytes out.

No sockets, no asyncio: the shell in ``server.py`` collects a ``ReceivedRequest`` from the
wire and this module turns it into the document described in the project brief::

    {"service", "node", "az", "peer": {"ip", "port"}, "method", "path", "query",
     "headers": {lower-case name: values joined with ", "},
     "raw_headers": [[name as received, value], ...],
     "tls": {"version", "cipher", "sni"} | null, "body_bytes"}

plus ``"proxy": {"command", "source", "destination"}`` on listeners that expect a PROXY
protocol header.

One test knob: a query parameter ``set-cookie=NAME=VALUE`` (token characters only) makes the
answer carry ``Set-Cookie: NAME=VALUE; Path=/``, as an application's session cookie would
(the ALB's application-based stickiness starts from such a cookie).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who answers: the topology's service name, node (compose service) and AZ."""

    service: str
    node: str
    az: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int

    def as_json(self) -> dict[str, Any]:
        return {"ip": self.ip, "port": self.port}


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str
    cipher: str
    sni: str | None

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "cipher": self.cipher, "sni": self.sni}


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """The addresses a PROXY protocol header announced (None for LOCAL / UNSPEC)."""

    command: str
    source: Endpoint | None
    destination: Endpoint | None

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source.as_json() if self.source else None,
            "destination": self.destination.as_json() if self.destination else None,
            "command": self.command,
        }


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request exactly as it arrived (header bytes decoded as latin-1, lossless)."""

    method: str
    target: str
    raw_headers: tuple[tuple[str, str], ...]
    body_bytes: int
    peer: Endpoint
    tls: TlsInfo | None
    proxy: ProxyInfo | None = None


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into (path, raw query without '?'); a fragment is dropped."""
    target = target.split("#", 1)[0]
    path, _, query = target.partition("?")
    return path, query


def join_headers(raw_headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Lower-case names; repeated fields joined with ", " in received order."""
    joined: dict[str, str] = {}
    for name, value in raw_headers:
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def describe(identity: Identity, request: ReceivedRequest) -> dict[str, Any]:
    """The JSON document the echo service answers with."""
    path, query = split_target(request.target)
    doc: dict[str, Any] = {
        "service": identity.service,
        "node": identity.node,
        "az": identity.az,
        "peer": request.peer.as_json(),
        "method": request.method,
        "path": path,
        "query": query,
        "headers": join_headers(request.raw_headers),
        "raw_headers": [[name, value] for name, value in request.raw_headers],
        "tls": request.tls.as_json() if request.tls else None,
        "body_bytes": request.body_bytes,
    }
    if request.proxy is not None:
        doc["proxy"] = request.proxy.as_json()
    return doc


_SET_COOKIE = re.compile(r"(?:^|&)set-cookie=([A-Za-z0-9!#$%'*+.^_`|~-]+=[A-Za-z0-9!#$%'*+.^_`|~-]*)(?:&|$)")


def cookie_to_set(target: str) -> str | None:
    """`NAME=VALUE` from a `set-cookie=NAME=VALUE` query parameter, if there is a well-formed one."""
    match = _SET_COOKIE.search(split_target(target)[1])
    return match.group(1) if match else None


def encode_json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"


def encode_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    head: bool = False,
    content_type: str = JSON_CONTENT_TYPE,
    cookie: str | None = None,
) -> bytes:
    """HTTP/1.1 response bytes; a HEAD answer keeps Content-Length but drops the body."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if cookie is not None:
        lines.append(f"Set-Cookie: {cookie}; Path=/")
    if not keep_alive:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head_bytes if head else head_bytes + body


def error_response(status: int, detail: str) -> bytes:
    """The answer to bytes we could not take as a request: always closes the connection."""
    doc = {"error": HTTPStatus(status).phrase.lower(), "detail": detail}
    return encode_response(status, encode_json(doc), keep_alive=False)
