"""ELB security policies: the names AWS lists for TLS (NLB) and HTTPS (ALB) listeners, and the TLS
versions the lab negotiates under each (the lab floors at TLS 1.2; cipher lists are OpenSSL's)."""

from __future__ import annotations

from .errors import ApiError

DEFAULT_SSL_POLICY = "ELBSecurityPolicy-2016-08"  # the CLI's and CloudFormation's default (NLB-TLS23)
# What AWS uses towards TLS/HTTPS targets: a TLS 1.3 front policy -> TLS13-1-0-2021-06, else 2016-08.
TARGET_SSL_POLICY_TLS13 = "ELBSecurityPolicy-TLS13-1-0-2021-06"

SSL_POLICIES: tuple[str, ...] = tuple(f"ELBSecurityPolicy-{p}" for p in (
    "TLS13-1-2-2021-06", "TLS13-1-2-Res-2021-06", "TLS13-1-2-Ext1-2021-06",
    "TLS13-1-2-Ext2-2021-06", "TLS13-1-0-2021-06", "TLS13-1-1-2021-06", "TLS13-1-3-2021-06",
    "TLS13-1-2-Res-PQ-2025-09", "TLS13-1-2-PQ-2025-09", "TLS13-1-3-PQ-2025-09",
    "FS-1-2-Res-2020-10", "FS-1-2-Res-2019-08", "FS-1-2-2019-08", "FS-1-1-2019-08", "FS-2018-06",
    "TLS-1-2-Ext-2018-06", "TLS-1-2-2017-01", "TLS-1-1-2017-01", "2016-08", "TLS-1-0-2015-04",
    "2015-05",
))

# ALPN policy -> protocols offered, in the load balancer's preference order (NLB-TLS23).
ALPN_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "None": (),
    "HTTP1Only": ("http/1.1", "http/1.0"),
    "HTTP2Only": ("h2",),
    "HTTP2Optional": ("http/1.1", "http/1.0", "h2"),
    "HTTP2Preferred": ("h2", "http/1.1", "http/1.0"),
}
ALPN_POLICIES: tuple[str, ...] = tuple(ALPN_PROTOCOLS)


def check_ssl_policy(name: object) -> str:
    """The policy name, or ApiError SSLPolicyNotFound as AWS answers an unknown name."""
    if not isinstance(name, str) or name not in SSL_POLICIES:
        raise ApiError("SSLPolicyNotFound", f"SSL policy '{name}' not found (known: {', '.join(SSL_POLICIES)})")
    return name


def check_alpn_policy(name: object) -> str:
    if not isinstance(name, str) or name not in ALPN_PROTOCOLS:
        raise ApiError("ALPNPolicyNotFound", f"ALPN policy '{name}' not found (known: {', '.join(ALPN_POLICIES)})")
    return name


def tls_versions(policy: str) -> tuple[str, str]:
    """(minimum, maximum) TLS version a listener with ``policy`` negotiates with clients, as
    ``ssl.TLSVersion`` member names."""
    if policy.startswith("ELBSecurityPolicy-TLS13-1-3"):
        return "TLSv1_3", "TLSv1_3"
    if policy.startswith("ELBSecurityPolicy-TLS13-"):
        return "TLSv1_2", "TLSv1_3"
    return "TLSv1_2", "TLSv1_2"


def target_policy(front_policy: str) -> str:
    """The policy AWS uses towards TLS target groups for a listener's front policy."""
    return TARGET_SSL_POLICY_TLS13 if front_policy.startswith("ELBSecurityPolicy-TLS13-") else DEFAULT_SSL_POLICY
