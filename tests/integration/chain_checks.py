"""Checks both topologies must pass: what the echo service, the client and every hop report."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

from cryptography import x509

from lab.load import load_topology
from tests.integration.conftest import exec_in, lab, lab_json

SITE = "www.lab.test"
CLIENTS = ["198.51.100.100", "198.51.100.123", "198.51.100.150", "198.51.100.199"]

# Run in a container: connect, optionally send a PROXY v2 LOCAL header, do TLS without verifying,
# print the peer certificate (DER, hex). With a CA file, verify and print the issuer instead.
PEER_CERT = """
import socket, ssl, sys
host, port, proxy, sni = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
sock = socket.create_connection((host, port), timeout=10)
if proxy:
    sys.path.insert(0, "/opt/lab")
    from services.nlb_sim.proxy_v2 import encode_v2_local
    sock.sendall(encode_v2_local())
tls = ctx.wrap_socket(sock, server_hostname=sni)
print(tls.getpeercert(binary_form=True).hex())
"""


def haproxy_addresses(topology_name: str) -> set[str]:
    return {str(h.address) for h in load_topology(topology_name).haproxy.instances}


def check_client_ip_reaches_echo(topology_name: str) -> None:
    haproxies = haproxy_addresses(topology_name)
    seen_haproxies = set()
    for client in CLIENTS:
        echo = json.loads(lab("curl", "--from", client, f"https://{SITE}/api/hello?x=1").stdout)
        assert echo["service"] == "api" and echo["node"].startswith("web-api-")
        first, second = [p.strip() for p in echo["headers"]["x-forwarded-for"].split(",")]
        assert first == client, echo["headers"]["x-forwarded-for"]
        assert second in haproxies
        seen_haproxies.add(second)
        assert echo["headers"]["x-forwarded-proto"] == "https"
        assert echo["headers"]["x-forwarded-port"] == "443"
        assert echo["headers"]["x-amzn-trace-id"].startswith("Root=1-")
        assert echo["path"] == "/api/hello" and echo["query"] == "x=1"
        assert echo["peer"]["ip"] in {str(n.address) for n in load_topology(topology_name).alb.nodes}
    assert seen_haproxies  # at least one HAProxy carried traffic


def check_each_nlb_node_sends_to_its_own_az(topology_name: str) -> None:
    """Cross-zone load balancing is off: the node behind each Elastic IP uses its own AZ's HAProxy."""
    topology = load_topology(topology_name)
    haproxy_by_az = {h.az: str(h.address) for h in topology.haproxy.instances}
    for node in topology.nlb.nodes:
        for _ in range(3):
            result = exec_in("client", "curl", "-sS", "--cacert", "/lab/certs/public-ca.pem", "--interface",
                             "198.51.100.160", "--resolve", f"{SITE}:443:{node.elastic_ip}", f"https://{SITE}/api/az")
            assert result.returncode == 0, result.stderr
            xff = json.loads(result.stdout)["headers"]["x-forwarded-for"]
            assert xff == f"198.51.100.160, {haproxy_by_az[node.az]}", (node.name, xff)


def check_path_routing() -> None:
    for path, service in [("/api/x", "api"), ("/api/", "api"), ("/", "frontend"), ("/apix", "frontend"),
                          ("/static/app.js", "frontend"), ("/API/x", "frontend")]:
        echo = json.loads(lab("curl", f"https://{SITE}{path}").stdout)
        assert echo["service"] == service, (path, echo["service"])
        assert echo["path"] == path


def check_http_redirect() -> None:
    out = lab("curl", "-i", f"http://{SITE}/some/path?q=1&r=2").stdout.replace("\r\n", "\n")
    status_line, *header_lines = out.split("\n\n")[0].split("\n")
    assert status_line.split()[1] == "301", status_line
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    assert headers["location"] == f"https://{SITE}/some/path?q=1&r=2"


def check_client_sees_public_ca_certificate() -> None:
    result = exec_in("client", "python3", "-c", PEER_CERT, SITE, "443", "0", SITE)
    assert result.returncode == 0, result.stderr
    cert = x509.load_der_x509_certificate(bytes.fromhex(result.stdout.strip()))
    assert "static-ingress-lab public CA" in cert.issuer.rfc4514_string()
    assert cert.issuer != cert.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert SITE in sans
    # Without the lab CA, the client refuses the chain: it is the lab's "public" CA, nothing else.
    refused = exec_in("client", "curl", "-sS", "-o", "/dev/null", f"https://{SITE}/")
    assert refused.returncode == 60, refused


def check_haproxy_certificate_is_self_signed(topology_name: str) -> None:
    topology = load_topology(topology_name)
    proxy = "1" if topology.haproxy.accept_proxy else "0"
    for instance in topology.haproxy.instances:
        result = exec_in("nlb", "python3", "-c", PEER_CERT, str(instance.address), "443", proxy, instance.name)
        assert result.returncode == 0, result.stderr
        cert = x509.load_der_x509_certificate(bytes.fromhex(result.stdout.strip()))
        assert cert.issuer == cert.subject
        assert instance.name in cert.subject.rfc4514_string()


def check_trace(topology_name: str, client: str = "198.51.100.142") -> list[dict]:
    hops = lab_json("trace", "--json", "--from", client, f"https://{SITE}/api/trace")
    by_hop = {h["hop"]: h for h in hops}
    assert list(by_hop) == ["client", "nlb", "haproxy", "alb", "web"], hops
    for hop in hops:
        assert hop.get("client_ip") == client, hop
        assert hop["node"], hop
    assert by_hop["client"]["source_ip"] == client
    assert by_hop["nlb"]["source_ip"] == client
    assert by_hop["haproxy"]["source_ip"] == client
    assert by_hop["haproxy"]["source_port"] == by_hop["client"]["source_port"]
    assert IPv4Address(by_hop["alb"]["source_ip"]) in {IPv4Address(a) for a in haproxy_addresses(topology_name)}
    assert by_hop["alb"]["matched_rule_priority"] == "10"
    assert by_hop["web"]["service"] == "api"
    return hops


class ChainSuite:
    """The checks every topology must pass; a test module subclasses this with its TOPOLOGY."""

    TOPOLOGY = ""

    def test_client_ip_reaches_the_echo_service(self):
        check_client_ip_reaches_echo(self.TOPOLOGY)

    def test_each_nlb_node_sends_to_its_own_az(self):
        check_each_nlb_node_sends_to_its_own_az(self.TOPOLOGY)

    def test_path_routing(self):
        check_path_routing()

    def test_http_redirects_to_https(self):
        check_http_redirect()

    def test_client_sees_the_public_ca_certificate(self):
        check_client_sees_public_ca_certificate()

    def test_haproxy_certificate_is_self_signed(self):
        check_haproxy_certificate_is_self_signed(self.TOPOLOGY)
