"""ALB functions through the default chain (client -> NLB -> HAProxy -> ALB -> echo): weighted_random,
app_cookie stickiness, desync classification and mitigation modes; 414 / 400 for oversized requests
at the ALB itself (HAProxy's own buffer limit answers first through the chain)."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from lab.load import load_topology
from services.alb_sim.access_log import FIELD_NAMES
from tests.integration.conftest import exec_in, lab
from tests.integration.test_alb_chain import alb_log_lines

TOPOLOGY = "default"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]
SITE = "www.lab.test"
CURL = "curl -sS --max-time 30 --cacert /lab/certs/public-ca.pem"


def client_sh(script: str) -> str:
    result = exec_in("client", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    return result.stdout


def nodes_answering(path: str, n: int, cookie_args: str = "") -> list[str]:
    out = client_sh(f"for i in $(seq {n}); do {CURL} {cookie_args} 'https://{SITE}{path}?i='$i; echo; done")
    return [json.loads(line)["node"] for line in out.splitlines() if line.strip()]


def log_entry(marker: str) -> dict[str, str]:
    lines = [l for l in alb_log_lines() if marker in l]
    assert lines, f"no ALB access-log entry for {marker}"
    return dict(zip(FIELD_NAMES, shlex.split(lines[-1])))


def tg_attributes(group: str, *pairs: str, check: bool = True):
    return lab("alb", "tg-attributes", group, *pairs, "--json", check=check)


def test_weighted_random_spreads_requests_and_validates_anomaly_mitigation():
    doc = json.loads(tg_attributes("api", "load_balancing.algorithm.type=weighted_random").stdout)
    assert {"Key": "load_balancing.algorithm.type", "Value": "weighted_random"} in doc["Attributes"]
    try:
        picks = nodes_answering("/api/wr", 24)
        assert set(picks) == {"web-api-a", "web-api-b"}
        alternating = all(a != b for a, b in zip(picks, picks[1:]))
        assert not alternating, picks  # round robin would alternate; 24 random picks practically never do
        tg_attributes("api", "load_balancing.algorithm.anomaly_mitigation=on")
        refused = tg_attributes("api", "load_balancing.algorithm.type=round_robin", check=False)
        assert refused.returncode != 0
        # The admin API's answer, in the words the NLB's and the topology's errors use (decisions #72).
        assert ("lab alb: error: ValidationError: Anomaly mitigation is only supported with the weighted random load"
                " balancing algorithm") in refused.stderr, refused.stderr
    finally:
        tg_attributes("api", "load_balancing.algorithm.type=round_robin",
                      "load_balancing.algorithm.anomaly_mitigation=off")


def test_app_cookie_stickiness_through_the_chain():
    tg_attributes("api", "stickiness.enabled=true", "stickiness.type=app_cookie",
                  "stickiness.app_cookie.cookie_name=SESSIONID", "stickiness.app_cookie.duration_seconds=600")
    try:
        head = client_sh(f"rm -f /tmp/jar; {CURL} -c /tmp/jar -D - -o /dev/null "
                         f"'https://{SITE}/api/login?set-cookie=SESSIONID=s1'")
        cookies = [l.split(":", 1)[1].strip() for l in head.splitlines() if l.lower().startswith("set-cookie:")]
        assert cookies[0] == "SESSIONID=s1; Path=/"
        assert [c.split("=", 1)[0] for c in cookies[1:]] == ["AWSALBAPP-0", "AWSALBAPP-1", "AWSALBAPP-2",
                                                              "AWSALBAPP-3"]
        assert all(c.startswith(f"AWSALBAPP-{i}=_remove_; Expires=") for i, c in enumerate(cookies[2:], 1))
        sticky = nodes_answering("/api/sticky", 8, "-b /tmp/jar -c /tmp/jar")
        assert len(set(sticky)) == 1, sticky
        assert set(nodes_answering("/api/free", 8)) == {"web-api-a", "web-api-b"}  # no cookies, no stickiness
    finally:
        tg_attributes("api", "stickiness.enabled=false", "stickiness.type=lb_cookie")


def test_desync_classification_and_modes_through_the_chain():
    marker = f"/api/desync-{time.monotonic_ns()}"
    client_sh(f"{CURL} -o /dev/null -X GET --data hello 'https://{SITE}{marker}-ambiguous'")
    entry = log_entry(f"{marker}-ambiguous")
    assert (entry["elb_status_code"], entry["target_status_code"]) == ("200", "200")
    assert (entry["classification"], entry["classification_reason"]) == ("Ambiguous", "UndefinedContentLengthSemantics")
    client_sh(f"{CURL} -o /dev/null 'https://{SITE}{marker}-plain'")
    entry = log_entry(f"{marker}-plain")
    assert (entry["classification"], entry["classification_reason"], entry["error_reason"]) == ("-", "-", "-")
    lab("alb", "attributes", "routing.http.desync_mitigation_mode=strictest")
    try:
        out = client_sh(f"{CURL} -i -X GET --data hello 'https://{SITE}{marker}-strict'")
        assert out.startswith("HTTP/1.1 400") and "<title>400 Bad Request</title>" in out
        entry = log_entry(f"{marker}-strict")
        assert (entry["elb_status_code"], entry["target:port"]) == ("400", "-")
        assert entry["classification"] == "Ambiguous"
    finally:
        lab("alb", "attributes", "routing.http.desync_mitigation_mode=defensive")


# Runs in the alb container: one request straight to an ALB node over TLS, as HAProxy would send it;
# prints the response (head and body) in hex.
RAW = r"""
import socket, ssl, sys
node, request = sys.argv[1], bytes.fromhex(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
tls = ctx.wrap_socket(socket.create_connection((node, 443), timeout=10), server_hostname="www.lab.test")
tls.sendall(request)
reply = b""
while True:
    data = tls.recv(65536)
    if not data:
        break
    reply += data
print(reply.hex())
"""


def at_alb(request: bytes) -> str:
    node = str(load_topology(TOPOLOGY).alb.nodes[0].address)
    result = exec_in("alb", "python3", "-c", RAW, node, request.hex())
    assert result.returncode == 0, result.stderr
    return bytes.fromhex(result.stdout.strip()).decode("latin-1")


def test_oversized_url_gets_414_and_oversized_header_400_from_the_alb():
    marker = f"/api/long-{time.monotonic_ns()}-"
    url = marker + "a" * (16 * 1024)
    reply = at_alb(b"GET " + url.encode() + b" HTTP/1.1\r\nHost: www.lab.test\r\n\r\n")
    assert reply.startswith("HTTP/1.1 414 Request-URI Too Large\r\nServer: awselb/2.0\r\n"), reply[:200]
    assert "<title>414 Request-URI Too Large</title>" in reply
    reply = at_alb(b"GET /api/x HTTP/1.1\r\nHost: www.lab.test\r\nCookie: " + b"c" * (16 * 1024) + b"\r\n\r\n")
    assert reply.startswith("HTTP/1.1 400 Bad Request\r\nServer: awselb/2.0\r\n"), reply[:200]
    assert "<title>400 Request Header Or Cookie Too Large</title>" in reply
    # Through the chain, HAProxy's own request buffer (tune.bufsize 16384) refuses such a URL first.
    out = client_sh(f"{CURL} -i 'https://{SITE}{url}'")
    assert out.split(" ", 2)[1] in ("400", "414") and "awselb" not in out, out[:300]
