"""NLB TLS listener certificate list: SNI picks the certificate (AWS smart selection), the access
log names the chosen certificate; certselect's ranking as a table."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from services.certselect import CertFacts, choose, name_matches, read_facts
from tests.unit.test_nlb_relay import (LO, Server, echo, nlb_config, run, running, target_group, tls_listener,
                                       wait_healthy, wait_until)

EC, RSA = "EC_prime256v1", "RSA_2048"


@pytest.mark.parametrize("pattern,name,ok", [
    ("*.example.com", "a.example.com", True), ("*.example.com", "a.b.example.com", False),
    ("*.example.com", "example.com", False), ("www.example.com", "www.example.com", True),
    ("www.example.com", "api.example.com", False),
])
def test_name_matches(pattern: str, name: str, ok: bool) -> None:
    assert name_matches(pattern, name) is ok


@pytest.mark.parametrize("certs,sni,expected", [
    ([CertFacts(("api.lab.test",))], None, None),                       # no SNI: the default
    ([CertFacts(("api.lab.test",))], "", None),
    ([CertFacts(("api.lab.test",))], "other.lab.test", None),           # no match: the default
    ([CertFacts(("api.lab.test",))], "API.lab.test.", 0),               # case and trailing dot ignored
    # Several matches: ECDSA over RSA, whatever the list order ...
    ([CertFacts(("*.lab.test",), RSA), CertFacts(("*.lab.test",), EC)], "x.lab.test", 1),
    # ... SHA over MD5 ...
    ([CertFacts(("*.lab.test",), RSA, "MD5"), CertFacts(("*.lab.test",), RSA, "SHA1")], "x.lab.test", 1),
    # ... the larger key ...
    ([CertFacts(("*.lab.test",), "RSA_2048"), CertFacts(("*.lab.test",), "RSA_4096")], "x.lab.test", 1),
    ([CertFacts(("*.lab.test",), "EC_secp384r1"), CertFacts(("*.lab.test",), EC)], "x.lab.test", 0),
    # ... the longer validity ...
    ([CertFacts(("*.lab.test",), EC, not_after=100.0), CertFacts(("*.lab.test",), EC, not_after=200.0)],
     "x.lab.test", 1),
    # ... and only on a full tie: the exact name over the wildcard, then list order.
    ([CertFacts(("*.lab.test",)), CertFacts(("x.lab.test",))], "x.lab.test", 1),
    ([CertFacts(("x.lab.test",)), CertFacts(("x.lab.test",))], "x.lab.test", 0),
    # The algorithm outranks exactness: an ECDSA wildcard beats an RSA exact name.
    ([CertFacts(("x.lab.test",), RSA), CertFacts(("*.lab.test",), EC)], "x.lab.test", 1),
])
def test_choose(certs: list[CertFacts], sni: str | None, expected: int | None) -> None:
    assert choose(certs, sni) == expected


def test_read_facts(tmp_path: Path) -> None:
    pem = tmp_path / "c.pem"
    trustme.CA().issue_cert("a.lab.test", "*.b.lab.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
    facts = read_facts(str(pem), RSA)
    assert facts.names == ("a.lab.test", "*.b.lab.test") and facts.key_algorithm == RSA and facts.not_after > 0


ARN = "arn:aws:acm:eu-west-2:123456789012:certificate/"


def test_sni_picks_the_certificate_and_the_access_log_names_it(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = {}
    for name, sans, key_type in [("www", ["www.lab.test"], trustme.KeyType.ECDSA),
                                 ("api", ["api.lab.test"], trustme.KeyType.ECDSA),
                                 ("apps-rsa", ["*.apps.lab.test"], trustme.KeyType.RSA),
                                 ("apps-ec", ["*.apps.lab.test"], trustme.KeyType.ECDSA)]:
        files[name] = tmp_path / f"{name}.pem"
        ca.issue_cert(*sans, key_type=key_type).private_key_and_cert_chain_pem.write_to_path(str(files[name]))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.check_hostname = False

    async def main() -> None:
        async with Server(echo) as t:
            listener = tls_listener("tg", files["www"])
            listener["certificate"]["arn"] = ARN + "www"
            listener["certificates"] = [{"arn": ARN + "api", "pem": str(files["api"])},
                                        {"arn": ARN + "apps-rsa", "pem": str(files["apps-rsa"]), "key_algorithm": RSA},
                                        {"arn": ARN + "apps-ec", "pem": str(files["apps-ec"]), "key_algorithm": EC}]
            cfg = nlb_config(tmp_path, [listener], [target_group("tg", [("t-1", t.port, "a")])])
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-1"])
                seen = {}
                for sni in ("api.lab.test", "x.apps.lab.test", "nobody.test", None):
                    r, w = await asyncio.open_connection(LO, listener["port"], ssl=client, server_hostname=sni)
                    cert = w.get_extra_info("ssl_object").getpeercert()
                    seen[sni] = [v for k, v in cert["subjectAltName"] if k == "DNS"][0]
                    w.write(b"ping")
                    assert await r.readexactly(4) == b"ping"
                    w.close()
                assert seen == {"api.lab.test": "api.lab.test", "x.apps.lab.test": "*.apps.lab.test",
                                "nobody.test": "www.lab.test", None: "www.lab.test"}
                path = Path(cfg["log_dir"]) / "access.log"
                await wait_until(lambda: path.exists() and len(path.read_text().splitlines()) == 4, "4 access-log lines")
                chosen = {f[17]: f[12] for f in (line.split() for line in path.read_text().splitlines())}
                # domain_name -> chosen_cert_arn; ECDSA wins among the two *.apps certificates.
                assert chosen == {"api.lab.test": ARN + "api", "x.apps.lab.test": ARN + "apps-ec",
                                  "nobody.test": ARN + "www", "-": ARN + "www"}
    run(main())
