"""ALB access-log entries (pure: no I/O).

Fields 1-30 of the ALB access-log format, in AWS's order, space-separated, quoting exactly as
AWS's example line (quoted: request, user_agent, trace_id, domain_name, chosen_cert_arn,
actions_executed, redirect_url, error_reason, target:port_list, target_status_code_list,
classification, classification_reason; everything else bare). An empty or missing value is `-`.
Decision: inside quoted fields `"` and `\\` are backslash-escaped and control bytes written as
`\\xHH`, so one entry is always one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from services.common import iso_time

FIELD_NAMES: tuple[str, ...] = (
    "type", "time", "elb", "client:port", "target:port", "request_processing_time",
    "target_processing_time", "response_processing_time", "elb_status_code", "target_status_code",
    "received_bytes", "sent_bytes", "request", "user_agent", "ssl_cipher", "ssl_protocol",
    "target_group_arn", "trace_id", "domain_name", "chosen_cert_arn", "matched_rule_priority",
    "request_creation_time", "actions_executed", "redirect_url", "error_reason", "target:port_list",
    "target_status_code_list", "classification", "classification_reason", "conn_trace_id",
)


@dataclass(slots=True)
class AccessLogEntry:
    type: str                      # http | https | h2 | ws | wss
    time: float                    # epoch seconds the response finished
    elb: str                       # app/<name>/<id>
    client: str                    # ip:port
    request_creation_time: float   # epoch seconds the request started
    elb_status_code: int | None = None
    target: str | None = None      # ip:port, None if not dispatched
    request_processing_time: float | None = None   # None -> -1
    target_processing_time: float | None = None
    response_processing_time: float | None = None
    target_status_code: int | None = None
    received_bytes: int = 0
    sent_bytes: int = 0
    request: str = "- - -"
    user_agent: str | None = None
    ssl_cipher: str | None = None
    ssl_protocol: str | None = None
    target_group_arn: str | None = None
    trace_id: str | None = None
    domain_name: str | None = None
    chosen_cert_arn: str | None = None
    matched_rule_priority: int | None = None     # 0 = default rule; None -> '-'
    actions_executed: tuple[str, ...] = ()
    redirect_url: str | None = None
    error_reason: str | None = None
    classification: str | None = None
    classification_reason: str | None = None
    conn_trace_id: str | None = None


def _seconds(value: float | None) -> str:
    return "-1" if value is None else "%.3f" % (value if value > 0.0 else 0.0)


def _bare(value: object | None) -> str:
    if value is None or value == "":
        return "-"
    text = value if isinstance(value, str) else str(value)
    return text.replace(" ", "%20") if " " in text else text


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group(0)
    return "\\" + ch if ch in ('"', "\\") else f"\\x{ord(ch):02x}"


def _escape(text: str) -> str:
    # isprintable() is False for every control byte (and for some harmless non-ASCII, which the
    # regex then leaves alone): the common case costs three C calls, no regex.
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _NEEDS_ESCAPE.sub(_escape_char, text)


def _quoted(value: object | None) -> str:
    if value is None or value == "":
        return '"-"'
    return '"' + _escape(value if isinstance(value, str) else str(value)) + '"'


def request_field(method: str, scheme: str, host: str, port: int, uri: str, version: str) -> str:
    """`GET http://www.example.com:80/ HTTP/1.1`, host without any port of its own."""
    return f"{method} {scheme}://{host}:{port}{uri} {version}"


def malformed_request_field(scheme: str, host: str, port: int) -> str:
    """What AWS logs when the request could not be parsed: `- http://host:80- -`."""
    return f"- {scheme}://{host}:{port}- -"


class ConnectionPart(NamedTuple):
    """The fields that are the same for every request on one client connection, rendered once."""
    type: str
    elb_client: str
    tls: str
    names: str


def connection_part(e: AccessLogEntry) -> ConnectionPart:
    return ConnectionPart(e.type, f"{_bare(e.elb)} {_bare(e.client)}", f"{_bare(e.ssl_cipher)} {_bare(e.ssl_protocol)}",
                          f"{_quoted(e.domain_name)} {_quoted(e.chosen_cert_arn)}")


def format_entry(e: AccessLogEntry, part: ConnectionPart | None = None) -> str:
    """One line; `part` is `connection_part(e)` cached by the caller for its connection."""
    c = part if part is not None else connection_part(e)
    target_status = "-" if e.target_status_code is None else str(e.target_status_code)
    return " ".join((
        c.type, iso_time(e.time), c.elb_client, _bare(e.target),
        _seconds(e.request_processing_time), _seconds(e.target_processing_time),
        _seconds(e.response_processing_time),
        "-" if e.elb_status_code is None else str(e.elb_status_code), target_status,
        str(e.received_bytes), str(e.sent_bytes),
        _quoted(e.request), _quoted(e.user_agent[:8192] if e.user_agent else None),
        c.tls, _bare(e.target_group_arn), _quoted(e.trace_id), c.names,
        "-" if e.matched_rule_priority is None else str(e.matched_rule_priority),
        iso_time(e.request_creation_time), _quoted(",".join(e.actions_executed)),
        _quoted(e.redirect_url), _quoted(e.error_reason), _quoted(e.target),
        '"-"' if e.target is None else f'"{target_status}"',
        _quoted(e.classification), _quoted(e.classification_reason), _bare(e.conn_trace_id),
    ))
