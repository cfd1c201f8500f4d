"""NLB access log for TLS listeners (no I/O in ``format_line``): AWS's version 2.0 fields in AWS's
order (aws-elb.md section 13, NLB-LOG23), one line per TLS connection when it closes, written to
``<log_dir>/access.log`` (AWS writes gzip files to S3 every 5 minutes; the lab keeps one plain file).

    type version time elb listener client:port destination:port connection_time tls_handshake_time
    received_bytes sent_bytes incoming_tls_alert chosen_cert_arn chosen_cert_serial tls_cipher
    tls_protocol_version tls_named_group domain_name alpn_fe_protocol alpn_be_protocol
    alpn_client_preference_list

Fields the simulator cannot know are ``-`` as AWS writes them when absent: incoming_tls_alert,
chosen_cert_serial and tls_named_group (AWS: always ``-``) and alpn_client_preference_list
(Python's ssl module does not expose the ClientHello). alpn_be_protocol is what a TLS target
selected when offered the client's protocol (docs/decisions.md #36).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import IO
from urllib.parse import quote

_TLS_VERSIONS = {"TLSv1": "tlsv10", "TLSv1.1": "tlsv11", "TLSv1.2": "tlsv12", "TLSv1.3": "tlsv13"}


@dataclass(frozen=True, slots=True)
class TlsConnection:
    end_time: datetime.datetime  # UTC
    client: str  # ip:port
    destination: str  # listener ip:port
    connection_ms: int
    handshake_ms: int | None
    received_bytes: int  # from the client, after decryption
    sent_bytes: int  # to the client, before encryption
    cert_arn: str
    cipher: str | None
    protocol: str | None  # "TLSv1.3" as Python reports it
    sni: str | None
    alpn: str | None
    alpn_be: str | None = None  # what the TLS target selected (None: no TLS or no ALPN to the target)


def elb_field(lb_arn: str) -> str:
    """``arn:...:loadbalancer/net/name/id`` -> ``net/name/id``."""
    return lb_arn.split(":loadbalancer/", 1)[-1] if ":loadbalancer/" in lb_arn else lb_arn


def listener_id(lb_arn: str, port: int) -> str:
    return hashlib.sha256(f"{lb_arn}/listener/{port}".encode()).hexdigest()[:16]


def format_line(elb: str, listener: str, c: TlsConnection) -> str:
    def dash(value: object) -> str:
        return "-" if value is None or value == "" else str(value)

    fields = ["tls", "2.0", c.end_time.strftime("%Y-%m-%dT%H:%M:%S"), elb, listener, c.client,
              c.destination, str(c.connection_ms), dash(c.handshake_ms), str(c.received_bytes),
              str(c.sent_bytes), "-", c.cert_arn or "-", "-", dash(c.cipher),
              _TLS_VERSIONS.get(c.protocol or "", "-"), "-", dash(quote(c.sni, safe="") if c.sni else None),
              dash(c.alpn), dash(c.alpn_be), "-"]
    return " ".join(fields)


class AccessLog:
    def __init__(self, log_dir: str, elb: str) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.elb = elb
        self._file: IO[str] | None = open(os.path.join(log_dir, "access.log"), "a", encoding="utf-8",
                                          buffering=1)

    def write(self, listener: str, conn: TlsConnection) -> None:
        if self._file is not None:
            self._file.write(format_line(self.elb, listener, conn) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
