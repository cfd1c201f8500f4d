"""The listener's certificate list: SNI picks the certificate, the access log names it."""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Iterator

import pytest
import trustme

from services.alb_sim.config import Certificate
from services.alb_sim.config import ConfigError, load_config
from tests.unit.test_alb_config import BASE, mutate
from services.alb_sim.runtime import certificate_facts
from services.certselect import CertFacts, choose, name_matches
from tests.unit.test_alb_server import Lab

OTHER_ARN = "arn:aws:acm:eu-west-2:123456789012:certificate/other"
WILD_ARN = "arn:aws:acm:eu-west-2:123456789012:certificate/wild"


@pytest.mark.parametrize("pattern,name,ok", [
    ("*.example.com", "a.example.com", True), ("*.example.com", "a.b.example.com", False),
    ("*.example.com", "example.com", False), ("www.example.com", "www.example.com", True),
])
def test_name_matches(pattern: str, name: str, ok: bool) -> None:
    assert name_matches(pattern, name) is ok


def test_exact_names_win_over_wildcards_on_a_tie() -> None:
    candidates = [CertFacts(("*.lab.test",)), CertFacts(("api.lab.test",))]
    assert choose(candidates, "API.lab.test") == 1
    assert choose(candidates, "x.lab.test") == 0
    assert choose(candidates, "elsewhere.test") is None
    assert choose(candidates, None) is None


def test_the_alb_ranks_matches_as_aws_documents(tmp_path) -> None:
    """ALB and NLB share AWS's smart selection: an ECDSA match beats an RSA one listed first."""
    ca = trustme.CA()
    rsa, ec = tmp_path / "rsa.pem", tmp_path / "ec.pem"
    ca.issue_cert("api.lab.test", key_type=trustme.KeyType.RSA).private_key_and_cert_chain_pem.write_to_path(str(rsa))
    ca.issue_cert("*.lab.test", key_type=trustme.KeyType.ECDSA).private_key_and_cert_chain_pem.write_to_path(str(ec))
    listed = [Certificate(OTHER_ARN, str(rsa), key_algorithm="RSA_2048"), Certificate(WILD_ARN, str(ec))]
    assert choose([certificate_facts(c) for c in listed], "api.lab.test") == 1
    assert certificate_facts(Certificate(OTHER_ARN, str(tmp_path / "missing.pem"))).names == ()


def test_listed_certificates_take_a_key_algorithm() -> None:
    def listed(algorithm: str):
        def change(d) -> None:
            d["listeners"][0]["certificates"] = [{"arn": OTHER_ARN, "pem": "/x.pem", "key_algorithm": algorithm}]
        return mutate(change)
    assert load_config(listed("RSA_2048")).listeners[0].certificates[0].key_algorithm == "RSA_2048"
    assert load_config(BASE).listeners[0].certificate.key_algorithm == "EC_prime256v1"
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.certificates\[0\]\.key_algorithm: ValidationError: "
                                          r"Key algorithm 'DSA' must be one of 'RSA_1024, "):
        load_config(listed("DSA"))


@pytest.fixture(scope="module")
def slab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("alb-sni"))
    other, wild = lab.tmp / "other.pem", lab.tmp / "wild.pem"
    lab.ca.issue_cert("other.lab.test").private_key_and_cert_chain_pem.write_to_path(str(other))
    lab.ca.issue_cert("*.apps.lab.test").private_key_and_cert_chain_pem.write_to_path(str(wild))
    https = dataclasses.replace(lab.config.listeners[0], certificates=(
        Certificate(OTHER_ARN, str(other)), Certificate(WILD_ARN, str(wild))))
    lab.config = dataclasses.replace(lab.config, listeners=(https, *lab.config.listeners[1:]))
    lab.start()
    yield lab
    lab.stop()


def handshake(lab: Lab, sni: str) -> str:
    ctx = lab.client_ctx()
    ctx.check_hostname = False
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", lab.https_port), 10), server_hostname=sni) as tls:
        names = [v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS"]
        tls.sendall(f"GET /sni-{sni} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        while tls.recv(65536):
            pass
    return names[0]


@pytest.mark.parametrize("sni,cert,arn", [
    ("other.lab.test", "other.lab.test", OTHER_ARN),
    ("x.apps.lab.test", "*.apps.lab.test", WILD_ARN),
    ("www.lab.test", "www.lab.test", "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www"),
    ("nobody.test", "www.lab.test", "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www"),  # default
])
def test_sni_picks_the_certificate(slab: Lab, sni: str, cert: str, arn: str) -> None:
    assert handshake(slab, sni) == cert
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and f"/sni-{sni}" not in "\n".join(slab.log_lines()):
        time.sleep(0.05)
    line = [l for l in slab.log_lines() if f"/sni-{sni}" in l][-1]
    assert f'"{sni}" "{arn}"' in line  # domain_name, chosen_cert_arn
