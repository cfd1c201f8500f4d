"""Redirect actions (pure: no I/O).

Location is `protocol://host:port/path?query` built from the action's components after
placeholder expansion (`#{protocol}`, `#{host}`, `#{port}`, `#{path}`, `#{query}`), as AWS does:
- `#{protocol}` is the listener protocol; the scheme is written lower case (`https`);
- `#{host}` is the request's Host without a port;
- `#{port}` is the listener port; the port is always written, even 443 for https;
- `#{path}` is the request path without its leading `/` (AWS's default path is `/#{path}`);
- `#{query}` is the query without `?`; `?` is only written when the expanded query is non-empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import RedirectAction

STATUS = {"HTTP_301": 301, "HTTP_302": 302}


@dataclass(frozen=True)
class RedirectRequest:
    protocol: str  # HTTP | HTTPS: the listener's
    host: str      # without port
    port: int      # the listener's
    path: str      # begins with '/'
    query: str     # without '?'


_PLACEHOLDER = re.compile(r"#\{(protocol|host|port|path|query)\}")


def expand(template: str, req: RedirectRequest) -> str:
    """One pass, so request text that looks like a placeholder is never expanded again."""
    values = {
        "protocol": req.protocol.lower(), "host": req.host, "port": str(req.port),
        "path": req.path[1:] if req.path.startswith("/") else req.path, "query": req.query,
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def build_location(action: RedirectAction, req: RedirectRequest) -> str:
    scheme = expand(action.protocol, req).lower()
    host = expand(action.host, req)
    port = expand(action.port, req)
    path = expand(action.path, req)
    if not path.startswith("/"):
        path = "/" + path
    query = expand(action.query, req)
    return f"{scheme}://{host}:{port}{path}" + (f"?{query}" if query else "")


def redirect_status(action: RedirectAction) -> int:
    return STATUS[action.status_code]
