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
from typing import Final

from services.common import DIGITS3, iso_time

FIELD_NAMES: Final[tuple[str, ...]] = (
    "type", "time", "elb", "client:port", "target:port", "request_processing_time",
    "target_processing_time", "response_processing_time", "elb_status_code", "target_status_code",
    "received_bytes", "sent_bytes", "request", "user_agent", "ssl_cipher", "ssl_protocol",
    "target_group_arn", "trace_id", "domain_name", "chosen_cert_arn", "matched_rule_priority",
    "request_creation_time", "actions_executed", "redirect_url", "error_reason", "target:port_list",
    "target_status_code_list", "classification", "classification_reason", "conn_trace_id",
)


class AccessLogEntry:
    """One access-log entry, for every request but a plainly relayed one (that one is formatted
    straight from its exchange). A plain class, not a dataclass: mypyc leaves a dataclass's
    generated __init__ to the interpreter (decisions #69)."""

    def __init__(self, *,
                 type: str, time: float, elb: str, client: str, request_creation_time: float,
                 elb_status_code: int | None = None, target: str | None = None,
                 request_processing_time: float | None = None, target_processing_time: float | None = None,
                 response_processing_time: float | None = None, target_status_code: int | None = None,
                 received_bytes: int = 0, sent_bytes: int = 0, request: str = "- - -", user_agent: str | None = None,
                 ssl_cipher: str | None = None, ssl_protocol: str | None = None, target_group_arn: str | None = None,
                 trace_id: str | None = None, domain_name: str | None = None, chosen_cert_arn: str | None = None,
                 matched_rule_priority: int | None = None, actions_executed: tuple[str, ...] = (),
                 redirect_url: str | None = None, error_reason: str | None = None, classification: str | None = None,
                 classification_reason: str | None = None, conn_trace_id: str | None = None) -> None:
        self.type = type  # http | https | h2 | ws | wss
        self.time = time  # epoch seconds the response finished
        self.elb = elb  # app/<name>/<id>
        self.client = client  # ip:port
        self.request_creation_time = request_creation_time  # epoch seconds the request started
        self.elb_status_code = elb_status_code
        self.target = target  # ip:port, None if not dispatched
        self.request_processing_time = request_processing_time  # None -> -1
        self.target_processing_time = target_processing_time
        self.response_processing_time = response_processing_time
        self.target_status_code = target_status_code
        self.received_bytes = received_bytes
        self.sent_bytes = sent_bytes
        self.request = request
        self.user_agent = user_agent
        self.ssl_cipher = ssl_cipher
        self.ssl_protocol = ssl_protocol
        self.target_group_arn = target_group_arn
        self.trace_id = trace_id
        self.domain_name = domain_name
        self.chosen_cert_arn = chosen_cert_arn
        self.matched_rule_priority = matched_rule_priority  # 0 = default rule; None -> '-'
        self.actions_executed = actions_executed
        self.redirect_url = redirect_url
        self.error_reason = error_reason
        self.classification = classification
        self.classification_reason = classification_reason
        self.conn_trace_id = conn_trace_id


def _seconds(value: float | None) -> str:
    return "-1" if value is None else millis(value)


def millis(seconds: float) -> str:
    """`0.000`: seconds with millisecond precision, rounded half up, never negative."""
    ms = int(seconds * 1000.0 + 0.5) if seconds > 0.0 else 0
    return str(ms // 1000) + "." + DIGITS3[ms % 1000]


def _bare(value: object | None) -> str:
    if value is None or value == "":
        return "-"
    text = value if isinstance(value, str) else str(value)
    return text.replace(" ", "%20") if " " in text else text


_NEEDS_ESCAPE: Final = re.compile(r'["\\\x00-\x1f\x7f]')


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group(0)
    return "\\" + ch if ch in ('"', "\\") else f"\\x{ord(ch):02x}"


def _escape(text: str) -> str:
    # isprintable() is False for every control byte (and for some harmless non-ASCII, which the
    # regex then leaves alone): the common case costs three C calls, no regex.
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _NEEDS_ESCAPE.sub(_escape_char, text)


def quoted(value: object | None) -> str:
    if value is None or value == "":
        return '"-"'
    return '"' + _escape(value if isinstance(value, str) else str(value)) + '"'


def request_field(method: str, scheme: str, host: str, port: int, uri: str, version: str) -> str:
    """`GET http://www.example.com:80/ HTTP/1.1`, host without any port of its own."""
    return f"{method} {scheme}://{host}:{port}{uri} {version}"


def malformed_request_field(scheme: str, host: str, port: int) -> str:
    """What AWS logs when the request could not be parsed: `- http://host:80- -`."""
    return f"- {scheme}://{host}:{port}- -"


class ConnectionPart:
    """The fields that are the same for every request on one client connection, rendered once.
    Made once per connection: a plain class, as a dataclass's __init__ would run interpreted
    (decisions #69)."""
    __slots__ = ("type", "elb_client", "tls", "names")

    def __init__(self, type: str, elb_client: str, tls: str, names: str) -> None:
        self.type = type
        self.elb_client = elb_client
        self.tls = tls
        self.names = names


def connection_part(e: AccessLogEntry) -> ConnectionPart:
    return connection_part_of(e.type, e.elb, e.client, e.ssl_cipher, e.ssl_protocol, e.domain_name, e.chosen_cert_arn)


def connection_part_of(type_: str, elb: str, client: str, ssl_cipher: str | None, ssl_protocol: str | None,
                       domain_name: str | None, chosen_cert_arn: str | None) -> ConnectionPart:
    return ConnectionPart(type_, f"{_bare(elb)} {_bare(client)}", f"{_bare(ssl_cipher)} {_bare(ssl_protocol)}",
                          f"{quoted(domain_name)} {quoted(chosen_cert_arn)}")


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
        quoted(e.request), quoted(e.user_agent[:8192] if e.user_agent else None),
        c.tls, _bare(e.target_group_arn), quoted(e.trace_id), c.names,
        "-" if e.matched_rule_priority is None else str(e.matched_rule_priority),
        iso_time(e.request_creation_time), quoted(",".join(e.actions_executed)),
        quoted(e.redirect_url), quoted(e.error_reason), quoted(e.target),
        '"-"' if e.target is None else f'"{target_status}"',
        quoted(e.classification), quoted(e.classification_reason), _bare(e.conn_trace_id),
    ))


# A request the target answered in full: every `-`/`-1` case of format_entry is settled (the relay's
# hot path; tests check it against format_entry field by field).
def relayed_line(part: ConnectionPart, time: float, target: str, request_processing_time: float,
                 target_processing_time: float, status: int, received_bytes: int, sent_bytes: int,
                 request: str, user_agent_field: str, target_group_arn: str, trace_id_field: str,
                 matched_rule_priority: int, request_creation_time: float, actions_field: str,
                 error_reason_field: str, classification_fields: str) -> str:
    """The entry of a request relayed to a target whose response (`status`, the ELB's status too)
    was sent in full. `*_field(s)` are already quoted (`quoted()`); `target` is `ip:port`."""
    code = str(status)
    return (f"{part.type} {iso_time(time)} {part.elb_client} {target} {millis(request_processing_time)} "
            f"{millis(target_processing_time)} 0.000 {code} {code} {received_bytes} {sent_bytes} "
            f"{quoted(request)} {user_agent_field} {part.tls} {target_group_arn} {trace_id_field} {part.names} "
            f"{matched_rule_priority} {iso_time(request_creation_time)} {actions_field} \"-\" "
            f"{error_reason_field} \"{target}\" \"{code}\" {classification_fields} -")
