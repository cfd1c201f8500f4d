"""The lab's certificates, generated at `lab up` (never committed).

- public-ca.pem: the lab "public" CA (trustme), standing in for ACM's public issuers. Clients and
  HAProxy trust it.
- www.pem: the "ACM" certificate for the site (site name, *.zone, zone), chain + key; used by the
  NLB TLS listener and the ALB HTTPS listener.
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
from cryptography.hazmat.primitives.asymmetric import ec
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
    return ["public-ca.pem", "www.pem",
            *(f"{h.name}.pem" for h in topology.haproxy.instances),
            *(f"{w.name}.pem" for w in topology.web)]


def ensure_certificates(topology: m.Topology, cert_dir: Path) -> list[str]:
    """Create what is missing; return the names of the files written."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    written = []
    ca_file, www_file = cert_dir / "public-ca.pem", cert_dir / "www.pem"
    if not ca_file.exists() or not www_file.exists():
        ca = trustme.CA(organization_name="static-ingress-lab public CA", key_type=trustme.KeyType.ECDSA)
        zone = topology.dns.public_zone
        leaf = ca.issue_cert(topology.site, f"*.{zone}", zone, key_type=trustme.KeyType.ECDSA)
        ca.cert_pem.write_to_path(str(ca_file))
        www_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + leaf.private_key_pem.bytes())
        written += [ca_file.name, www_file.name]
    private = topology.dns.private_zone
    for name in [h.name for h in topology.haproxy.instances] + [w.name for w in topology.web]:
        path = cert_dir / f"{name}.pem"
        if not path.exists():
            path.write_bytes(self_signed_pem(name, [name, f"{name}.{private}"]))
            written.append(path.name)
    return written
