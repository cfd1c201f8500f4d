"""Desync mitigation: AWS's request classification and what each mode does with it (pure: no I/O).

AWS (ALB desync mitigation mode; access-log classification reasons; aws/http-desync-guardian):
every request is Compliant, Acceptable, Ambiguous or Severe, with a reason code. The load balancer
attribute `routing.http.desync_mitigation_mode` decides what happens:

| classification | monitor | defensive (default) | strictest |
|---|---|---|---|
| Acceptable | allowed | allowed | blocked |
| Ambiguous | allowed | allowed, then client and target connections closed | blocked |
| Severe | allowed | blocked | blocked |

Blocked: 400 and the client connection closed. Compliant requests log `-` / `-`.

The simulator's parser (llhttp) rejects most Severe and several Acceptable/Ambiguous requests
itself; those are read again by lenient.py (fallback.py), classified from their raw head by
`classify_head` and then handled per the table like any other request (decisions.md #43, #46).
Requests it accepts are classified by `classify` only when the cheap checks in the request path
flag them (`suspicious_name`, an empty or non-ASCII header value, a body on GET/HEAD).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple, Sequence

MODES: Final = ("monitor", "defensive", "strictest")
ACCEPTABLE, AMBIGUOUS, SEVERE = "Acceptable", "Ambiguous", "Severe"
_RANK: Final = {ACCEPTABLE: 1, AMBIGUOUS: 2, SEVERE: 3}

# AWS's classification reason codes (access-log docs) and the classification each one implies.
REASONS: Final[dict[str, str]] = {
    "AmbiguousUri": AMBIGUOUS, "BadContentLength": SEVERE, "BadHeader": SEVERE, "BadTransferEncoding": SEVERE,
    "BadUri": SEVERE, "BadMethod": SEVERE, "BadVersion": SEVERE, "BothTeClPresent": AMBIGUOUS,
    "DuplicateContentLength": AMBIGUOUS, "EmptyHeader": AMBIGUOUS, "GetHeadZeroContentLength": ACCEPTABLE,
    "MultipleContentLength": SEVERE, "MultipleTransferEncodingChunked": SEVERE, "NonCompliantHeader": ACCEPTABLE,
    "NonCompliantVersion": ACCEPTABLE, "SpaceInUri": ACCEPTABLE, "SuspiciousHeader": AMBIGUOUS,
    "UndefinedContentLengthSemantics": AMBIGUOUS, "UndefinedTransferEncodingSemantics": AMBIGUOUS,
}

ALLOW, CLOSE, BLOCK = "allow", "close", "block"

_CL, _TE = b"content-length", b"transfer-encoding"
_NORMALIZED: Final = (b"contentlength", b"transferencoding")
_NOT_ALNUM: Final = bytes(b for b in range(256) if not (48 <= b <= 57 or 97 <= b <= 122))
_TOKEN: Final = re.compile(rb"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_CTL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION_OK: Final = re.compile(rb"^HTTP/1\.[01]$")
_VERSION_NONCOMPLIANT: Final = re.compile(rb"^HTTP/1\.[2-9]$")
_NO_BODY_SEMANTICS: Final = (b"GET", b"HEAD")


class Verdict(NamedTuple):
    classification: str  # Acceptable | Ambiguous | Severe
    reason: str          # AWS's classification reason code


def verdict(reason: str) -> Verdict:
    return Verdict(REASONS[reason], reason)


def mitigation(mode: str, v: Verdict | None) -> str:
    """ALLOW, CLOSE (route, then close client and target connections) or BLOCK (400 and close)."""
    if v is None or mode == "monitor":
        return ALLOW
    if mode == "strictest":
        return BLOCK
    return BLOCK if v.classification == SEVERE else CLOSE if v.classification == AMBIGUOUS else ALLOW


def suspicious_name(lname: bytes) -> bool:
    """A header name that normalizes to Content-Length or Transfer-Encoding without being one
    (`content_length`, `transfer-encoding.`); `lname` is lower case."""
    return lname not in (_CL, _TE) and lname.translate(None, _NOT_ALNUM) in _NORMALIZED


def _worst(current: Verdict | None, reason: str) -> Verdict:
    new = verdict(reason)
    return new if current is None or _RANK[new.classification] > _RANK[current.classification] else current


def classify(method: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Verdict | None:
    """The most severe finding in a request's headers (None = Compliant)."""
    found: Verdict | None = None
    lengths: list[bytes] = []
    chunked = 0
    te = False
    for name, value in headers:
        lname = name.lower()
        if not _TOKEN.match(name):  # only raw heads get here: the parser refuses such names
            found = _worst(found, "BadHeader" if b"\x00" in name or b"\r" in name else
                           "SuspiciousHeader" if lname.translate(None, _NOT_ALNUM) in _NORMALIZED else
                           "NonCompliantHeader")
            continue
        bad_bytes = b"\x00" in value or b"\r" in value
        odd_bytes = not value.isascii() or _CTL.search(value) is not None
        if lname == _CL:
            text = value.strip(b" \t")
            if bad_bytes or odd_bytes or not text.isdigit():
                found = _worst(found, "BadContentLength")
            lengths.append(text)
            continue
        if lname == _TE:
            te = True
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == b"chunked":
                    chunked += 1
                elif token and token != b"identity" or bad_bytes or odd_bytes:
                    found = _worst(found, "BadTransferEncoding")
            continue
        if bad_bytes:
            found = _worst(found, "BadHeader")
        elif not value.strip(b" \t"):
            found = _worst(found, "EmptyHeader")
        elif odd_bytes:
            found = _worst(found, "NonCompliantHeader")
        if suspicious_name(lname):
            found = _worst(found, "SuspiciousHeader")
    if chunked > 1:
        found = _worst(found, "MultipleTransferEncodingChunked")
    if len(lengths) > 1:
        found = _worst(found, "MultipleContentLength" if len(set(lengths)) > 1 else "DuplicateContentLength")
    if lengths and te:
        found = _worst(found, "BothTeClPresent")
    if method in _NO_BODY_SEMANTICS:
        if te:
            found = _worst(found, "UndefinedTransferEncodingSemantics")
        if lengths:
            found = _worst(found, "GetHeadZeroContentLength" if lengths == [b"0"] else
                           "UndefinedContentLengthSemantics")
    return found


def classify_head(data: bytes) -> Verdict | None:
    """Classify a raw request head (what the parser refused): request line, then headers.
    `data` starts at the request line; anything after the first empty line is ignored."""
    head = data.split(b"\r\n\r\n", 1)[0]
    line, _, rest = head.partition(b"\r\n")
    found: Verdict | None = None
    method, _, tail = line.partition(b" ")
    uri, _, version = tail.rpartition(b" ")
    if not _TOKEN.match(method):
        found = _worst(found, "BadMethod")
    if b"\x00" in uri or b"\r" in uri:
        found = _worst(found, "BadUri")
    elif _CTL.search(uri) or b"\t" in uri:
        found = _worst(found, "AmbiguousUri")
    elif b" " in uri:
        found = _worst(found, "SpaceInUri")
    if not _VERSION_OK.match(version):
        found = _worst(found, "NonCompliantVersion" if _VERSION_NONCOMPLIANT.match(version) else "BadVersion")
    headers: list[tuple[bytes, bytes]] = []
    for raw in rest.split(b"\r\n") if rest else ():
        name, colon, value = raw.partition(b":")
        if not raw.strip(b" \t"):
            found = _worst(found, "EmptyHeader")
        elif colon:
            headers.append((name, value.strip(b" \t")))
    parsed = classify(method, headers)
    if parsed is not None:
        found = _worst(found, parsed.reason)
    return found
