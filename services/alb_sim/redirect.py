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
from typing import Final

from .model import RedirectAction

STATUS: Final = {"HTTP_301": 301, "HTTP_302": 302}


class RedirectRequest:
    """Made per redirected request: a plain class, as a dataclass's generated __init__ would run
    interpreted (decisions #69)."""
    __slots__ = ("protocol", "host", "port", "path", "query")

    def __init__(self, protocol: str, host: str, port: int, path: str, query: str) -> None:
        self.protocol = protocol  # HTTP | HTTPS: the listener's
        self.host = host  # without port
        self.port = port  # the listener's
        self.path = path  # begins with '/'
        self.query = query  # without '?'


_PLACEHOLDER: Final = re.compile(r"#\{(protocol|host|port|path|query)\}")


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
