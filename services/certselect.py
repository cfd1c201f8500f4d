"""Which certificate a TLS listener presents for a client's SNI (no I/O).

AWS (NLB-TLS23, "Certificate list"): the default certificate is used when the client sends no SNI
or no certificate in the listener's certificate list matches; one match is used; several matches
are ranked by public key algorithm (ECDSA over RSA), hashing algorithm (SHA over MD5), key length
(largest first), validity period. Not documented, the lab's choice (docs/decisions.md #29): the
validity criterion prefers the certificate valid longest (latest notAfter); on a full tie an exact
name beats a wildcard, then the list order decides.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Callable, Sequence

# ACM KeyAlgorithm names (RequestCertificate / DescribeCertificate) -> (family, key bits).
KEY_ALGORITHMS: dict[str, tuple[str, int]] = {
    "RSA_1024": ("RSA", 1024), "RSA_2048": ("RSA", 2048), "RSA_3072": ("RSA", 3072), "RSA_4096": ("RSA", 4096),
    "EC_prime256v1": ("EC", 256), "EC_secp384r1": ("EC", 384), "EC_secp521r1": ("EC", 521),
}
DEFAULT_KEY_ALGORITHM = "EC_prime256v1"  # every lab certificate is ECDSA P-256 unless the topology says otherwise


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What selection looks at: the certificate's DNS names and the four ranking criteria."""

    names: tuple[str, ...]  # DNS subject alternative names, lower case
    key_algorithm: str = DEFAULT_KEY_ALGORITHM  # a KEY_ALGORITHMS key
    signature_hash: str = "SHA256"  # SHA1 / SHA256 / ... / MD5
    not_after: float = 0.0  # epoch seconds


def name_matches(pattern: str, server_name: str) -> bool:
    """Exact, or `*.example.com` covering exactly one more label (not `example.com` itself)."""
    if pattern == server_name:
        return True
    return pattern.startswith("*.") and server_name.count(".") >= 2 and \
        server_name.split(".", 1)[1] == pattern[2:]


def _rank(facts: CertFacts, name: str, index: int) -> tuple:
    family, bits = KEY_ALGORITHMS.get(facts.key_algorithm, ("RSA", 0))
    return (family != "EC", facts.signature_hash.upper() == "MD5", -bits, -facts.not_after,
            name not in facts.names, index)


def choose(certificates: Sequence[CertFacts], server_name: str | None) -> int | None:
    """Index into the certificate list for SNI `server_name`; None: the default certificate."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    matching = [i for i, c in enumerate(certificates) if any(name_matches(p, name) for p in c.names)]
    if not matching:
        return None
    return min(matching, key=lambda i: _rank(certificates[i], name, i))


def read_facts(pem: str, key_algorithm: str = DEFAULT_KEY_ALGORITHM) -> CertFacts:
    """Names and notAfter of the first certificate in a PEM file (stdlib decoder: the simulators'
    image has no `cryptography`). Raises OSError / ssl.SSLError when it cannot be read."""
    decoded = ssl._ssl._test_decode_cert(pem)  # type: ignore[attr-defined]
    names = tuple(v.lower() for k, v in decoded.get("subjectAltName", ()) if k == "DNS")
    not_after = ssl.cert_time_to_seconds(decoded["notAfter"]) if "notAfter" in decoded else 0.0
    return CertFacts(names=names, key_algorithm=key_algorithm, not_after=float(not_after))


def select_by_sni(contexts: Sequence[ssl.SSLContext], listed: Sequence[CertFacts],
                  presented: Callable[[ssl.SSLObject, str | None, int], None]) -> None:
    """Install the selection on a listener's contexts: ``contexts[0]`` holds the default
    certificate, ``contexts[1:]`` the listed ones (``listed``: their facts, same order). On each
    ClientHello the connection switches to the chosen context, then ``presented(ssl_object,
    server_name, index)`` learns which certificate went out (index 0: the default)."""
    def on_sni(obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        chosen = choose(listed, server_name) if listed else None
        index = 0 if chosen is None else chosen + 1
        if index:
            obj.context = contexts[index]
        presented(obj, server_name, index)
    for ctx in contexts:
        ctx.sni_callback = on_sni
