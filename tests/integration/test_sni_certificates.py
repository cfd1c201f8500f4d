"""Listener certificate lists through the running lab (topology sni): curl from the client container
sends an SNI name and must see the certificate AWS would present (verified against the lab public
CA for that name), and the load balancers' access logs name the certificate chosen.

NLB TLS:443 terminates TLS itself (its list: api, apps-rsa, apps); NLB TCP:8443 passes TLS through
to the ALB (alb target type), whose HTTPS listener has its own list (shop)."""

from __future__ import annotations

import json
import re

import pytest

from lab.load import load_topology
from tests.integration.conftest import exec_in, wait_for

TOPOLOGY = "sni"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]


def arns() -> dict[str, str]:
    return {c.name: c.arn for c in load_topology(TOPOLOGY).certificates}


def eip() -> str:
    return str(load_topology(TOPOLOGY).nlb.nodes[0].elastic_ip)


def curl_with_sni(name: str, port: int, source: str) -> str:
    """The certificate name curl matched the SNI name against (curl -v), after verifying the chain."""
    result = exec_in("client", "curl", "-sSv", "--max-time", "20", "--cacert", "/lab/certs/public-ca.pem",
                     "--interface", source, "--resolve", f"{name}:{port}:{eip()}",
                     f"https://{name}:{port}/api/sni-{name}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["path"] == f"/api/sni-{name}"
    matched = re.search(r'subjectAltName: host "([^"]+)" matched cert\'s "([^"]+)"', result.stderr)
    assert matched and matched.group(1) == name, result.stderr[-2000:]
    return matched.group(2)


def nlb_access_log_choice(source: str) -> tuple[str, str]:
    """(domain_name, chosen_cert_arn) of the NLB access-log line for a connection from `source`."""
    def find():
        for line in reversed(exec_in("nlb", "cat", "/var/log/lab/nlb/access.log").stdout.splitlines()):
            fields = line.split()
            if fields[5].startswith(source + ":"):
                return fields[17], fields[12]
        return None
    return wait_for(find, f"the NLB access-log line of {source}", timeout=20)


@pytest.mark.parametrize("name, source, pattern, cert", [
    ("api.lab.test", "198.51.100.131", "api.lab.test", "api"),         # www's *.lab.test would match too: the list wins
    ("x.apps.lab.test", "198.51.100.132", "*.apps.lab.test", "apps"),  # two matches: ECDSA over RSA (apps-rsa is listed first)
    ("www.lab.test", "198.51.100.133", "www.lab.test", "www"),         # no listed certificate matches: the default
])
def test_nlb_tls_listener_presents_the_certificate_chosen_by_sni(name, source, pattern, cert):
    assert curl_with_sni(name, 443, source) == pattern
    assert nlb_access_log_choice(source) == (name, arns()[cert])


def test_nlb_tls_listener_without_sni_presents_the_default_certificate():
    # An IP address in the URL: curl sends no SNI. -k because the certificate names no IP address.
    result = exec_in("client", "curl", "-sSk", "--max-time", "20", "--interface", "198.51.100.134",
                     "-o", "/dev/null", "-w", "%{certs}", f"https://{eip()}/api/no-sni")
    assert result.returncode == 0, result.stderr[-2000:]
    sans = re.search(r"Subject Alternative Name:(.*)", result.stdout)
    assert sans and sans.group(1).strip() == "DNS:www.lab.test, DNS:*.lab.test, DNS:lab.test", result.stdout[:2000]
    assert nlb_access_log_choice("198.51.100.134") == ("-", arns()["www"])


@pytest.mark.parametrize("name, source, pattern, cert", [
    ("shop.example.test", "198.51.100.135", "shop.example.test", "shop"),
    ("www.lab.test", "198.51.100.136", "www.lab.test", "www"),
])
def test_alb_https_listener_presents_the_certificate_chosen_by_sni(name, source, pattern, cert):
    # TCP:8443 on the NLB forwards the client's TLS bytes to the ALB: the ALB sees the client's SNI.
    assert curl_with_sni(name, 8443, source) == pattern

    def logged():
        text = exec_in("alb", "sh", "-c", "cat /var/log/lab/alb/*/access.log").stdout
        return [line for line in text.splitlines() if f"/api/sni-{name}" in line and f" {source}:" in line]
    line = wait_for(logged, f"the ALB access-log line of {source}", timeout=20)[-1]
    assert f'"{name}" "{arns()[cert]}"' in line  # domain_name, chosen_cert_arn
