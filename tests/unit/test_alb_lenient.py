"""lenient.py: the request heads (and bodies) the ALB reads where llhttp refuses them (decisions.md #43, #46)."""

from __future__ import annotations

import pytest

from services.alb_sim.lenient import (BodyError, ChunkedBody, Framing, HeadError, LengthBody, frame_of, parse_head)

H = b"Host: a\r\n"


@pytest.mark.parametrize("raw,method,target,version,http_version,headers,framing", [
    (b"delete /x HTTP/1.1\r\n" + H + b"\r\n", b"delete", b"/x", b"HTTP/1.1", "1.1", [(b"Host", b"a")], Framing("none")),
    (b"FOO / HTTP/1.1\r\n\r\n", b"FOO", b"/", b"HTTP/1.1", "1.1", [], Framing("none")),
    (b"PROPFOO /d HTTP/1.0\r\n\r\n", b"PROPFOO", b"/d", b"HTTP/1.0", "1.0", [], Framing("none")),
    (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", b"GET", b"/a b", b"HTTP/1.1", "1.1", [(b"Host", b"a")], Framing("none")),
    (b"GET / HTTP/1.2\r\n\r\n", b"GET", b"/", b"HTTP/1.2", "1.1", [], Framing("none")),
    (b"GET / HTTP/2.0\r\n\r\n", b"GET", b"/", b"HTTP/2.0", "2.0", [], Framing("none")),
    (b"GET / HTTPS/1.1\r\n\r\n", b"GET", b"/", b"HTTPS/1.1", None, [], Framing("none")),
    # values lose surrounding spaces and tabs; whitespace-only lines are dropped
    (b"GET / HTTP/1.1\r\nX:  v \t\r\n   \r\nY:\r\n\r\n", b"GET", b"/", b"HTTP/1.1", "1.1", [(b"X", b"v"), (b"Y", b"")],
     Framing("none")),
    # a name with a space before the colon stays as it came (SuspiciousHeader), and frames nothing
    (b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", b"POST", b"/", b"HTTP/1.1", "1.1",
     [(b"Transfer-Encoding ", b"chunked")], Framing("none")),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", b"POST", b"/", b"HTTP/1.1", "1.1",
     [(b"Content-Length", b"3"), (b"Content-Length", b"3")], Framing("length", 3)),
    (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", b"POST", b"/", b"HTTP/1.1", "1.1",
     [(b"Content-Length", b"3, 3")], Framing("length", 3)),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"POST", b"/", b"HTTP/1.1", "1.1",
     [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], Framing("chunked")),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", b"POST", b"/", b"HTTP/1.1", "1.1",
     [(b"Content-Length", b"3"), (b"Content-Length", b"4")], Framing("unknown")),
    (b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", b"POST", b"/", b"HTTP/1.1", "1.1",
     [(b"Content-Length", b"1x")], Framing("unknown")),
    (b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa3\r\n\r\n", b"POST", b"/", b"HTTP/1.1", "1.1",  # Arabic-Indic 3
     [(b"Content-Length", b"\xd9\xa3")], Framing("unknown")),
])
def test_parse_head(raw: bytes, method: bytes, target: bytes, version: bytes, http_version: str | None,
                    headers: list[tuple[bytes, bytes]], framing: Framing) -> None:
    head = parse_head(raw + b"body")
    assert head is not None
    assert (head.method, head.target, head.version, head.http_version) == (method, target, version, http_version)
    assert list(head.headers) == headers and head.framing == framing
    assert head.raw == raw and head.size == len(raw)


@pytest.mark.parametrize("raw,forwarded", [
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nX: 1\r\ncontent-length: 3\r\n\r\n",
     [(b"Content-Length", b"3"), (b"X", b"1")]),
    (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", [(b"Content-Length", b"3")]),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", [(b"Transfer-Encoding", b"chunked")]),
    (b"GET / HTTP/1.1\r\nX: 1\r\n\r\n", [(b"X", b"1")]),
])
def test_forward_headers_normalize_content_length(raw: bytes, forwarded: list[tuple[bytes, bytes]]) -> None:
    head = parse_head(raw)
    assert head is not None and head.forward_headers() == forwarded


@pytest.mark.parametrize("partial", [
    b"", b"delete", b"delete /x HTTP/1.1", b"delete /x HTTP/1.1\r\n", b"delete /x HTTP/1.1\r\nHost: a\r\n",
    b"delete /x HTTP/1.1\r\nHost: a\r\n\r", b"GET /" + b"a" * 16000,
])
def test_truncated_heads_need_more_bytes(partial: bytes) -> None:
    assert parse_head(partial) is None


@pytest.mark.parametrize("raw,status,message,too_large", [
    (b"GET\r\n\r\n", 400, "request line is not `method target version`", False),
    (b"GET /\r\n\r\n", 400, "request line is not `method target version`", False),            # HTTP/0.9
    (b"GET /\r\n", 400, "request line is not `method target version`", False),                # known before the end
    (b" / HTTP/1.1\r\n\r\n", 400, "request line with an empty method, target or version", False),
    (b"GET  HTTP/1.1\r\n\r\n", 400, "request line with an empty method, target or version", False),
    (b"GET / \r\n\r\n", 400, "request line with an empty method, target or version", False),
    (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "header line without a colon", False),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF line end", False),
    (b"GET / HTTP/1.1\r\nHost: a\n", 400, "bare LF line end", False),                        # known before the end
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "request line does not start with a method", False),
    (b"GE\x00T / HTTP/1.1\r\n\r\n", 400, "request line does not start with a method", False),
    (b"\r\nGET / HTTP/1.1\r\n\r\n", 400, "request line is not `method target version`", False),
    (b"GET / HTTP/1.1\r\n: v\r\n\r\n", 400, "header line with an empty name", False),
    (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400, "obs-fold header continuation line", False),
    (b"GET /" + b"a" * (16 * 1024) + b" HTTP/1.1\r\n\r\n", 414, "request line larger than 16K", False),
    (b"GET /" + b"a" * (16 * 1024 + 16), 414, "request line larger than 16K", False),           # no CRLF yet
    (b"GET / HTTP/1.1\r\nX: " + b"v" * (16 * 1024) + b"\r\n\r\n", 400,
     "request header larger than 16K / headers larger than 64K", True),
    (b"GET / HTTP/1.1\r\nX: " + b"v" * (16 * 1024), 400,                                         # still arriving
     "request header larger than 16K / headers larger than 64K", True),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: " % i + b"v" * 8000 + b"\r\n" for i in range(9)), 400,
     "request header larger than 16K / headers larger than 64K", True),
])
def test_heads_refused_even_leniently(raw: bytes, status: int, message: str, too_large: bool) -> None:
    with pytest.raises(HeadError) as info:
        parse_head(raw)
    assert (info.value.status, str(info.value), info.value.too_large) == (status, message, too_large)


def test_limits_are_the_hot_paths() -> None:
    """A 16K target and 64K of header lines in all (7 x 8K here) are still read."""
    head = parse_head(b"GET /" + b"a" * (16 * 1024 - 1) + b" HTTP/1.1\r\n\r\n")
    assert head is not None and len(head.target) == 16 * 1024
    many = b"".join(b"X%d: " % i + b"v" * 8000 + b"\r\n" for i in range(7))
    assert parse_head(b"get / HTTP/1.1\r\n" + many + b"\r\n") is not None


@pytest.mark.parametrize("headers,expected", [
    ([], Framing("none")),
    ([(b"content-length", b"0")], Framing("length", 0)),
    ([(b"Transfer-Encoding", b"gzip, Chunked")], Framing("chunked")),
    ([(b"Transfer-Encoding", b"identity"), (b"Content-Length", b"2")], Framing("length", 2)),
    ([(b"Content-Length", b"")], Framing("unknown")),
    ([(b"Content-Length", b"-1")], Framing("unknown")),
    ([(b"Content-Length", b"9" * 19)], Framing("unknown")),
])
def test_frame_of(headers: list[tuple[bytes, bytes]], expected: Framing) -> None:
    assert frame_of(headers) == expected


def test_length_body_in_pieces_then_leftover() -> None:
    body = LengthBody(5)
    assert body.feed(b"he") == ([b"he"], None)
    assert body.feed(b"lloGET /") == ([b"llo"], b"GET /")
    assert LengthBody(0).feed(b"next") == ([], b"next")


@pytest.mark.parametrize("cuts", [[], [1], [3, 4, 5], [8], [15, 16], list(range(1, 52))])
def test_chunked_body_decodes_across_any_split(cuts: list[int]) -> None:
    raw = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    assert len(raw) == 52  # the last case cuts between every two bytes
    body = ChunkedBody()
    out, rest = b"", None
    for a, b in zip([0, *cuts], [*cuts, len(raw)]):
        if rest is not None:  # the body has ended: what follows is the next request's
            rest += raw[a:b]
            continue
        pieces, rest = body.feed(raw[a:b])
        out += b"".join(pieces)
    assert out == b"hello0123456789" and rest == b"NEXT"


@pytest.mark.parametrize("raw,message", [
    (b"zz\r\n", "invalid chunk size b'zz'"),
    (b"-1\r\n", "invalid chunk size b'-1'"),
    (b"\r\n", "invalid chunk size b''"),
    (b"11111111111111111\r\n", "invalid chunk size b'11111111111111111'"),
    (b"2\r\nabc\r\n", "chunk data not followed by CRLF"),
    (b"1" * 5000, "chunk-size or trailer line too long"),
])
def test_chunked_body_errors(raw: bytes, message: str) -> None:
    with pytest.raises(BodyError, match="^" + message.replace("(", r"\(").replace("[", r"\[") + "$"):
        ChunkedBody().feed(raw)


def test_chunked_body_incomplete_waits() -> None:
    assert ChunkedBody().feed(b"5\r\nhel") == ([b"hel"], None)
    assert ChunkedBody().feed(b"0\r\n") == ([], None)
