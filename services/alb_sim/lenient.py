"""The request heads llhttp refuses but the ALB reads (pure: no I/O; decisions.md #43, #46).

httptools (llhttp) is the ALB's parser. It refuses requests AWS reads and then judges with its
desync classification (desync.py): a method that is an RFC 9110 token llhttp does not know or
that is not upper case (`delete`, `FOO`), a space in the URI, HTTP/1.2, a duplicate Content-Length,
Transfer-Encoding together with Content-Length, control characters. The server hands such a head
to `parse_head` (bytes in, a `Head`, `None` for "need more bytes", or a `HeadError`), classifies it,
and forwards it or not per the mode. A body then goes through `LengthBody` or `ChunkedBody`.

Read leniently: the request line is `method SP request-target SP version` split at the first and
the last space (so `/a b` is one target); header lines are `name ":" value` with the value's
surrounding spaces and tabs dropped; lines that are only spaces/tabs are skipped (the classifier
calls them EmptyHeader). Still refused (400): no CRLF CRLF line ends, a request line without two
spaces (HTTP/0.9), an empty method, target or header name, a header line without a colon, an
obs-fold continuation line. Limits as the hot path: a target over 16K is 414, a header line over
16K or all header lines over 64K are 400 (ALB quotas, limits.py).

Framing of a forwarded request (what length the ALB reads and sends on):
- Transfer-Encoding naming `chunked` wins; every Content-Length line is dropped (RFC 9112 §6.3:
  TE overrides CL, a proxy MUST remove CL before forwarding). BothTeClPresent is forwarded chunked.
- Content-Length lines (or one line with a list) whose values are all the same number: one
  `Content-Length: n` line in place of the first (RFC 9110 §8.6; DuplicateContentLength).
- Different or unparseable Content-Length values (MultipleContentLength, BadContentLength): no
  length can be trusted, `Framing.kind == "unknown"`; the server answers 400 even in monitor mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .limits import MAX_REQUEST_HEADERS, MAX_REQUEST_LINE, MAX_SINGLE_HEADER

_VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
_CTL_OR_SPACE = re.compile(rb"[\x00-\x20\x7f]")
_CL, _TE = b"content-length", b"transfer-encoding"
MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) or a trailer line


class HeadError(Exception):
    """The head cannot be read even leniently: answer `status` and close. `too_large` marks the
    header-size 400 (the ALB's `Request Header Or Cookie Too Large` page)."""

    def __init__(self, status: int, reason: str, too_large: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.too_large = too_large


class BodyError(Exception):
    """A chunked body that cannot be read: 400 and close."""


@dataclass(frozen=True, slots=True)
class Framing:
    kind: Literal["none", "length", "chunked", "unknown"]
    length: int = 0


@dataclass(frozen=True, slots=True)
class Head:
    method: bytes
    target: bytes
    version: bytes                 # as received: b"HTTP/1.2"
    http_version: str | None       # "1.0", "1.1" (also for HTTP/1.2-1.9), "2.0" ...; None if not HTTP/d.d
    headers: tuple[tuple[bytes, bytes], ...]  # as received, values without surrounding SP/HT
    raw: bytes                     # the head up to and including CRLF CRLF (for classification)
    framing: Framing

    @property
    def size(self) -> int:
        return len(self.raw)

    def forward_headers(self) -> list[tuple[bytes, bytes]]:
        """The header lines, with Content-Length normalized to the framing (see module doc)."""
        out: list[tuple[bytes, bytes]] = []
        placed = False
        for name, value in self.headers:
            if name.lower() == _CL:
                if self.framing.kind == "length" and not placed:
                    out.append((name, b"%d" % self.framing.length))
                    placed = True
                continue
            out.append((name, value))
        return out


def parse_head(buf: bytes) -> Head | None:
    """The request head at the start of `buf`; None if more bytes are needed. Raises HeadError."""
    _check_start(buf)
    end = buf.find(b"\r\n\r\n")
    if end == -1:
        _check_partial(buf)
        return None
    lines = buf[:end].split(b"\r\n")
    method, target, version = _request_line(lines[0])
    headers: list[tuple[bytes, bytes]] = []
    total = 0
    for line in lines[1:]:
        _check_header_size(line, total := total + len(line) + 2)
        if not line.strip(b" \t"):
            continue  # a whitespace-only line: EmptyHeader to the classifier, nothing to forward
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obs-fold header continuation line")
        name, colon, value = line.partition(b":")
        if not colon:
            raise HeadError(400, "header line without a colon")
        if not name:
            raise HeadError(400, "header line with an empty name")
        headers.append((name, value.strip(b" \t")))
    m = _VERSION.match(version)
    http_version = None
    if m is not None:
        major, minor = int(m.group(1)), int(m.group(2))
        http_version = "1.1" if major == 1 and minor >= 1 else f"{major}.{minor}"
    return Head(method, target, version, http_version, tuple(headers), buf[:end + 4], frame_of(headers))


def frame_of(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> Framing:
    """How long the body is (see module doc)."""
    lengths: set[bytes] = set()
    cl = chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname == _TE:
            chunked = chunked or any(t.strip(b" \t").lower() == b"chunked" for t in value.split(b","))
        elif lname == _CL:
            cl = True
            lengths.update(v.strip(b" \t") for v in value.split(b","))
    if chunked:
        return Framing("chunked")
    if not cl:
        return Framing("none")
    if len(lengths) != 1:
        return Framing("unknown")
    (text,) = lengths
    if not text.isdigit() or not text.isascii() or len(text) > 18:
        return Framing("unknown")
    return Framing("length", int(text))


def _check_start(buf: bytes) -> None:
    """Refuse at once what waiting cannot turn into a request: a method with control characters
    (binary, a TLS ClientHello on a plain port) or a bare LF line end."""
    stop = min((i for i in (buf.find(b" "), buf.find(b"\r")) if i != -1), default=len(buf))
    if _CTL_OR_SPACE.search(buf, 0, stop) is not None:
        raise HeadError(400, "request line does not start with a method")
    end = buf.find(b"\r\n\r\n")
    head = buf[:end + 4] if end != -1 else buf
    if head.count(b"\n") != head.count(b"\r\n"):
        raise HeadError(400, "bare LF line end")


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    method, sp, rest = line.partition(b" ")
    target, sp2, version = rest.rpartition(b" ")
    if not sp or not sp2:
        raise HeadError(400, "request line is not `method target version`")
    if not method or not target or not version:
        raise HeadError(400, "request line with an empty method, target or version")
    if len(target) > MAX_REQUEST_LINE:
        raise HeadError(414, "request line larger than 16K")
    return method, target, version


def _check_header_size(line: bytes, total: int) -> None:
    if len(line) + 2 > MAX_SINGLE_HEADER or total > MAX_REQUEST_HEADERS:
        raise HeadError(400, "request header larger than 16K / headers larger than 64K", too_large=True)


def _check_partial(buf: bytes) -> None:
    """An incomplete head must still fit the limits, else waiting for more cannot help."""
    first_end = buf.find(b"\r\n")
    if first_end == -1:
        sp = buf.find(b" ")
        if len(buf) - (sp + 1 if sp != -1 else 0) > MAX_REQUEST_LINE + len(b" HTTP/1.1"):
            raise HeadError(414, "request line larger than 16K")
        return
    _request_line(buf[:first_end])
    lines = buf[first_end + 2:].split(b"\r\n")
    total = 0
    for line in lines:
        _check_header_size(line, total := total + len(line) + 2)


class LengthBody:
    """A Content-Length body: `feed` returns (body pieces, leftover bytes once the body is complete, else None)."""

    def __init__(self, length: int) -> None:
        self.remaining = length

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        take = data[:self.remaining]
        self.remaining -= len(take)
        pieces = [take] if take else []
        return pieces, (data[len(take):] if self.remaining == 0 else None)


class ChunkedBody:
    """A chunked body, decoded (the upstream side re-chunks it): `feed` as LengthBody's.
    Chunk extensions and trailer fields are read and dropped. Raises BodyError."""

    def __init__(self) -> None:
        self.state = "size"  # size | data | data_end | trailer
        self.remaining = 0
        self.pending = b""   # the start of a size, CRLF or trailer line

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        pieces: list[bytes] = []
        buf = self.pending + data if self.pending else data
        self.pending = b""
        pos = 0
        while True:
            if self.state == "data":
                if self.remaining == 0:
                    self.state = "data_end"
                    continue
                if pos >= len(buf):
                    return pieces, None
                take = buf[pos:pos + self.remaining]
                pieces.append(take)
                self.remaining -= len(take)
                pos += len(take)
                continue
            eol = buf.find(b"\r\n", pos)
            if (eol if eol != -1 else len(buf)) - pos > MAX_CHUNK_LINE:
                raise BodyError("chunk-size or trailer line too long")
            if eol == -1:
                self.pending = buf[pos:]
                return pieces, None
            line, pos = buf[pos:eol], eol + 2
            if self.state == "data_end":
                if line:
                    raise BodyError("chunk data not followed by CRLF")
                self.state = "size"
            elif self.state == "size":
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.match(size):
                    raise BodyError(f"invalid chunk size {size[:20]!r}")
                self.remaining = int(size, 16)
                self.state = "data" if self.remaining else "trailer"
            elif not line:  # the empty line after the last chunk (and any trailer fields)
                return pieces, buf[pos:]
