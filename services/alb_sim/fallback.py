"""A request llhttp refused, read the way the ALB reads it (decisions.md #43, #46).

Runs only from ClientConnection.data_received's HttpParserError handler, so compliant requests
never get here. `fall_back` checks that the refused request begins at the first byte of the read
that failed (otherwise llhttp has already swallowed part of its head and the answer stays 400),
then puts a `LenientParser` in the place of the connection's httptools parser. That reads the head
with lenient.py (buffering reads until CRLF CRLF or a size limit), classifies it with desync.py
and, per `routing.http.desync_mitigation_mode`:
- blocks it: 400 and close, logged with the classification, as before;
- or feeds it to the connection's own `on_headers_complete` (limits, 501/505/405, rules, XFF,
  trace id, forward, access log, metrics: the normal pipeline), reads its body (Content-Length or
  chunked, per lenient.py's framing), and then either gives the connection a fresh httptools
  parser for the next request or, if the connection is to close after this request (Ambiguous
  in defensive mode, `Connection: close`, HTTP/1.0), ignores whatever else the client sends.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import httptools

from . import desync, httpmsg, lenient
from .exchange import Exchange
from .httpmsg import HEADER_TOO_LARGE, Reject
from .runtime import log_event

if TYPE_CHECKING:
    from .runtime import AlbRuntime


class Connection(Protocol):
    """The HTTP/1.1 client connection a lenient read stands in for (server.ClientConnection): its
    parser's place, the request being read, and the callbacks httptools would call."""

    parser: httptools.HttpRequestParser
    current: Exchange | None
    closing: bool
    last_activity: float
    alb: AlbRuntime
    loop: asyncio.AbstractEventLoop

    def data_received(self, data: bytes) -> None: ...

    def on_headers_complete(self) -> None: ...

    def on_body(self, body: bytes) -> None: ...

    def on_message_complete(self) -> None: ...

    def protocol_error(self, status: int, detail: str, page: str | None = None,
                       verdict: desync.Verdict | None = None) -> None: ...


def fall_back(conn: Connection, data: bytes, exc: Exception) -> None:
    """llhttp raised `exc` on `data`: read the request leniently, or answer 400 as before."""
    try:
        if not starts_here(conn, data):
            conn.protocol_error(400, f"malformed request: {exc}", verdict=desync.classify_head(data))
            return
        feeder = LenientParser(conn)
        conn.parser = feeder  # type: ignore[assignment]  # until this request's body has been read
        feeder.feed_data(data)
    except Exception as err:  # bad bytes must never take the process down
        log_event("error", where="lenient fallback", error=repr(err))
        conn.protocol_error(400, f"internal error: {err!r}")


class _Replay:
    """What a fresh llhttp parser reports for the bytes of the failed read."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.begun = self.completed = 0

    def on_message_begin(self) -> None:
        self.begun += 1
        self.url, self.headers = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.completed += 1


def starts_here(conn: Connection, data: bytes) -> bool:
    """True if the refused request begins at data[0]: its head is still being read, it began in
    this read, and a fresh parser fed `data` fails on its first message having reported exactly
    what the connection's parser reported (URL, headers, method). A request pipelined behind
    another in the same read, or whose head began in an earlier read, is not read leniently."""
    ex = conn.current
    if ex is not None and (ex.method or ex.t0 < conn.last_activity):
        return False
    replay = _Replay()
    parser = httptools.HttpRequestParser(replay)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    except Exception:  # HttpParserUpgrade and the like: not the same failure
        return False
    else:
        return False
    if replay.begun != 1 or replay.completed:
        return False
    url = b"".join(ex.url) if ex is not None else b""
    if replay.url != url or replay.headers != (ex.headers if ex is not None else []):
        return False
    if url:  # llhttp had read the method: both parsers must agree on it
        try:
            return bool(conn.parser.get_method() == parser.get_method())
        except Exception:
            return False
    return True


class LenientParser:
    """Stands in for the connection's httptools parser from a refused head to the end of that
    request's body. `on_headers_complete` reads the request through the three methods httptools
    offers (get_method, get_http_version, should_keep_alive)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.buf = b""
        self.head: lenient.Head | None = None
        self.body: lenient.LengthBody | lenient.ChunkedBody | None = None
        self.version = "1.1"
        self.keep_alive = True
        self.done = False
        self.ex: Exchange | None = None

    # --- what on_headers_complete asks the parser ------------------------------------------
    def get_method(self) -> bytes:
        assert self.head is not None
        return self.head.method

    def get_http_version(self) -> str:
        return self.version

    def should_keep_alive(self) -> bool:
        return self.keep_alive

    # --- bytes from the client ---------------------------------------------------------------
    def feed_data(self, data: bytes) -> None:
        if self.done or self.conn.closing:
            return
        if self.body is None:
            self.buf += data
            try:
                head = lenient.parse_head(self.buf)
            except lenient.HeadError as exc:
                self._refuse(exc.status, str(exc), HEADER_TOO_LARGE if exc.too_large else None,
                             desync.classify_head(self.buf))
                return
            if head is None:
                return  # wait for the rest of the head
            data, self.buf = self.buf[head.size:], b""
            if not self._begin(head):
                return
        self._body(data)

    def _refuse(self, status: int, detail: str, page: str | None, verdict: desync.Verdict | None) -> None:
        self.done = True
        self.conn.protocol_error(status, detail, page, verdict)

    def _begin(self, head: lenient.Head) -> bool:
        """Classify, then block or hand the request to the pipeline. True if its body follows."""
        conn = self.conn
        self.head = head
        v = desync.classify_head(head.raw)
        action = desync.mitigation(conn.alb.attributes.desync_mode, v)
        if action == desync.BLOCK:
            assert v is not None
            self._refuse(400, f"desync mitigation blocked a {v.classification} request ({v.reason})", None, v)
            return False
        if head.http_version is None:  # not HTTP/d.d: no protocol to forward it as (monitor mode too)
            self._refuse(400, f"malformed request: version {head.version[:20]!r}", None, v)
            return False
        if head.framing.kind == "unknown":  # MultipleContentLength / BadContentLength in monitor mode
            self._refuse(400, "malformed request: no trustworthy Content-Length", None, v)
            return False
        if v is not None:
            conn.alb.metrics.desync_noncompliant()
        began = conn.current
        ex = self.ex = Exchange(began.created, began.t0) if began is not None else Exchange(
            conn.alb.clock(), conn.loop.time())
        ex.url = [head.target]
        ex.url_len = len(head.target)
        ex.headers = head.forward_headers()
        ex.header_bytes = sum(len(n) + len(val) + 4 for n, val in ex.headers)
        ex.verdict = v  # from the raw head: on_headers_complete does not classify it again
        ex.close_target = action == desync.CLOSE
        self.version = head.http_version
        tokens = httpmsg.connection_tokens(ex.headers)
        persistent = b"keep-alive" in tokens if self.version == "1.0" else b"close" not in tokens
        self.keep_alive = persistent and action != desync.CLOSE
        conn.current = ex
        try:
            conn.on_headers_complete()
        except Reject as exc:  # 501 for a Transfer-Encoding other than chunked/identity
            self._refuse(exc.status, str(exc), exc.page, exc.verdict or v)
            return False
        if conn.closing:
            self.done = True
            return False
        self.body = (lenient.ChunkedBody() if head.framing.kind == "chunked" else
                     lenient.LengthBody(head.framing.length))
        return True

    def _body(self, data: bytes) -> None:
        conn, ex = self.conn, self.ex
        assert self.body is not None and ex is not None
        try:
            pieces, rest = self.body.feed(data)
        except lenient.BodyError as exc:
            self._refuse(400, f"malformed request body: {exc}", None, None)
            return
        for piece in pieces:
            if conn.current is ex:
                conn.on_body(piece)
        if rest is None:
            return
        self.done = True
        if conn.current is ex:
            conn.on_message_complete()
        if conn.closing or not ex.keep_alive:
            return  # the connection closes after this response: nothing more is read
        conn.parser = httptools.HttpRequestParser(conn)
        if rest:
            conn.data_received(rest)
