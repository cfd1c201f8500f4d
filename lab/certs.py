"""The lab's certificates, generated at `lab up` (never committed).

- public-ca.pem: the lab "public" CA (trustme), standing in for ACM's public issuers. Clients and
  HAProxy trust it.
- public-ca.key: its private key, kept so certificates a later topology names come from the same CA.
- www.pem: the "ACM" certificate for the site (site name, *.zone, zone), chain + key; used by the
  NLB TLS listener and the ALB HTTPS listener.
- acm-<name>.pem: every other certificate the topology defines under `certificates:` (its
  domain_name and subject_alternative_names, its key_algorithm), for listener certificate lists.
- <haproxy>.pem: a self-signed certificate + key per HAProxy instance (the NLB does not verify it).
- <web>.pem: a self-signed certificate + key per echo service (the ALB does not verify targets).
All keys are ECDSA P-256: handshakes cost half of RSA-2048 (notes/performance.md).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from lab import model as m


def self_signed_pem(common_name: str, sans: list[str]) -> bytes:
    """A self-signed (issuer == subject) ECDSA certificate followed by its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "static-ingress-lab internal")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem


def expected_files(topology: m.Topology) -> list[str]:
    return ["public-ca.pem", *(c.pem_file for c in topology.certificates),
            *(f"{h.name}.pem" for h in topology.haproxy.instances),
            *(f"{w.name}.pem" for w in topology.web)]


_KEY_TYPES = {"EC_prime256v1": (trustme.KeyType.ECDSA, ec.EllipticCurvePublicKey),
              "RSA_2048": (trustme.KeyType.RSA, rsa.RSAPublicKey)}


def _issued_as_wanted(path: Path, cert: m.Certificate) -> bool:
    """The file holds a certificate for exactly these names, with this key algorithm."""
    try:
        leaf = x509.load_pem_x509_certificate(path.read_bytes())
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return names == list(cert.domain_names) and isinstance(leaf.public_key(), _KEY_TYPES[cert.key_algorithm][1])


def _public_ca(cert_dir: Path) -> tuple[trustme.CA, bool]:
    """The lab public CA, kept across `lab up`s (its key too, so later topologies can get more
    certificates from it); (CA, True) when it was created now."""
    ca_file, key_file = cert_dir / "public-ca.pem", cert_dir / "public-ca.key"
    if ca_file.exists() and key_file.exists():
        return trustme.CA.from_pem(ca_file.read_bytes(), key_file.read_bytes()), False
    ca = trustme.CA(organization_name="static-ingress-lab public CA", key_type=trustme.KeyType.ECDSA)
    ca.cert_pem.write_to_path(str(ca_file))
    key_file.write_bytes(ca.private_key_pem.bytes())
    key_file.chmod(0o600)
    return ca, True


def ensure_certificates(topology: m.Topology, cert_dir: Path) -> list[str]:
    """Create what is missing (and re-issue an "ACM" certificate whose names or key algorithm the
    topology changed); return the names of the files written."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca, new_ca = _public_ca(cert_dir)
    written = ["public-ca.pem"] if new_ca else []
    for cert in topology.certificates:
        path = cert_dir / cert.pem_file
        if new_ca or not _issued_as_wanted(path, cert):
            leaf = ca.issue_cert(*cert.domain_names, key_type=_KEY_TYPES[cert.key_algorithm][0])
            path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + leaf.private_key_pem.bytes())
            written.append(path.name)
    private = topology.dns.private_zone
    for name in [h.name for h in topology.haproxy.instances] + [w.name for w in topology.web]:
        path = cert_dir / f"{name}.pem"
        if not path.exists():
            path.write_bytes(self_signed_pem(name, [name, f"{name}.{private}"]))
            written.append(path.name)
    return written
