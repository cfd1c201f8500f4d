"""TLS contexts for NLB TLS listeners (front) and TLS target groups (back).

Policy mapping (AWS names, NLB-TLS23 / NLB-SP), as simulated:

| listener ssl_policy                         | front TLS versions | back (to TLS target group)      |
|---------------------------------------------|--------------------|---------------------------------|
| ELBSecurityPolicy-TLS13-1-3-2021-06         | 1.3 only           | TLS13-1-0-2021-06 -> 1.2..1.3 * |
| other ELBSecurityPolicy-TLS13-* (1-0/1-1/1-2, Res, Ext, PQ) | 1.2..1.3 * | TLS13-1-0-2021-06 -> 1.2..1.3 * |
| every other policy (2016-08, FS-*, TLS-1-*) | 1.2 only *         | 2016-08 -> 1.2 only *           |

\\* AWS also allows TLS 1.0/1.1 under these policies; the lab floors at TLS 1.2 (OpenSSL's default
security level in Debian bookworm refuses 1.0/1.1 anyway). Cipher lists are OpenSSL defaults, not
AWS's per-policy lists. The back side never verifies the target certificate (AWS does not:
self-signed or expired target certificates are accepted, NLB-TG23) and sends no SNI.
"""

from __future__ import annotations

import ssl

from services.elbv2.security_policies import ALPN_PROTOCOLS, DEFAULT_SSL_POLICY, target_policy, tls_versions

def front_versions(policy: str) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """(minimum, maximum) TLS version a listener with ``policy`` negotiates with clients."""
    low, high = tls_versions(policy)
    return ssl.TLSVersion[low], ssl.TLSVersion[high]


def server_context(cert_pem: str, key_pem: str | None, policy: str, alpn_policy: str) -> ssl.SSLContext:
    """Listener-side context. Raises OSError / ssl.SSLError if the certificate cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version, ctx.maximum_version = front_versions(policy)
    ctx.load_cert_chain(cert_pem, key_pem)
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # AWS: no renegotiation (NLB-TLS23)
    protocols = ALPN_PROTOCOLS[alpn_policy]
    if protocols:
        ctx.set_alpn_protocols(list(protocols))
    return ctx


def target_context(front_policy: str, alpn: str | None = None) -> ssl.SSLContext:
    """Context for connections to TLS target groups: never verifies the target's certificate.
    ``alpn``: the protocol the client negotiated with the listener, offered to the target as the
    only choice (the bytes relayed are that protocol's; docs/decisions.md #36)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if alpn:
        ctx.set_alpn_protocols([alpn])
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if target_policy(front_policy) == DEFAULT_SSL_POLICY:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx
