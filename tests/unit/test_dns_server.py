"""Lab DNS server on 127.0.0.1: dnspython over UDP and TCP, zone reloads, the admin API, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
import uvloop

from services.dns.server import DnsConfig, DnsServer

REPO = Path(__file__).resolve().parents[2]
WWW = {"name": "www.lab.test", "type": "A", "ttl": 60, "values": ["198.51.100.11", "198.51.100.10"]}
ZONE: dict[str, Any] = {
    "records": [
        WWW,
        {"name": "v6.lab.test", "type": "AAAA", "ttl": 120, "values": ["2001:db8::10"]},
        {"name": "alias.lab.test", "type": "CNAME", "ttl": 30, "values": ["www.lab.test"]},
        {"name": "many.lab.test", "type": "A", "ttl": 60, "values": [f"10.0.0.{i}" for i in range(1, 51)]},
        {"name": "huge.lab.test", "type": "A", "ttl": 60, "values": [f"10.0.1.{i}" for i in range(1, 101)]},
    ]
}
DEADLINE = 10.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def write_zone(path: Path, doc: Any) -> None:
    """Write via rename, like the lab's renderer does, so a poll never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


class ServerThread:
    def __init__(self, config: DnsConfig) -> None:
        self.logs: list[str] = []
        self.server = DnsServer(config, self.logs.append)
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self.server.start())
        self._serving = asyncio.run_coroutine_threadsafe(self.server.serve_forever(), self._loop)
        self.port = self.server.addresses[0][1]
        assert self.server.admin_address is not None
        self.admin = f"http://127.0.0.1:{self.server.admin_address[1]}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._serving.cancel)
        self._call(self.server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def udp(self, name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype, **kwargs), "127.0.0.1", port=self.port, timeout=5)

    def tcp(self, name: str, rdtype: str = "A") -> dns.message.Message:
        return dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1", port=self.port, timeout=5)


@pytest.fixture
def zone_file(tmp_path: Path) -> Path:
    path = tmp_path / "zone.json"
    write_zone(path, ZONE)
    return path


@pytest.fixture
def server(zone_file: Path) -> Iterator[ServerThread]:
    config = DnsConfig(zone_file, (("127.0.0.1", 0),), admin=("127.0.0.1", 0), poll_interval=0.05)
    thread = ServerThread(config)
    yield thread
    thread.stop()


def addresses(response: dns.message.Message, rdtype: str = "A") -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return [rr.to_text() for rrset in response.answer if rrset.rdtype == wanted for rr in rrset]


def a_values(server: ServerThread, name: str) -> list[str] | str:
    response = server.udp(name)
    return addresses(response) if response.rcode() == dns.rcode.NOERROR else dns.rcode.to_text(response.rcode())


# --- queries ----------------------------------------------------------------------------------


def test_udp_and_tcp_answer_in_file_order(server: ServerThread) -> None:
    for response in (server.udp("www.lab.test"), server.tcp("www.lab.test")):
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        assert addresses(response) == ["198.51.100.11", "198.51.100.10"]
        assert response.answer[0].ttl == 60


def test_names_are_case_insensitive_and_question_case_is_kept(server: ServerThread) -> None:
    response = server.udp("WwW.LaB.TeSt.")
    assert addresses(response) == ["198.51.100.11", "198.51.100.10"]
    assert response.answer[0].name.to_text() == "WwW.LaB.TeSt."


def test_aaaa_cname_nodata_nxdomain_refused(server: ServerThread) -> None:
    v6 = server.udp("v6.lab.test", "AAAA")
    assert addresses(v6, "AAAA") == ["2001:db8::10"] and v6.answer[0].ttl == 120

    alias = server.tcp("alias.lab.test")
    assert alias.answer[0].rdtype == dns.rdatatype.CNAME
    assert alias.answer[0][0].target.to_text() == "www.lab.test."
    assert addresses(alias) == ["198.51.100.11", "198.51.100.10"]

    nodata = server.udp("www.lab.test", "AAAA")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA

    nx = server.udp("missing.lab.test")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.flags & dns.flags.AA
    soa = nx.authority[0]
    assert (soa.name.to_text(), soa[0].mname.to_text(), soa[0].minimum) == ("lab.test.", "ns.lab.test.", 5)

    refused = server.tcp("www.example.com")
    assert refused.rcode() == dns.rcode.REFUSED
    assert not refused.flags & dns.flags.AA
    assert (refused.answer, refused.authority) == ([], [])


def test_udp_truncates_and_tcp_carries_everything(server: ServerThread) -> None:
    plain = server.udp("many.lab.test")
    assert plain.flags & dns.flags.TC and plain.answer == []
    with_edns = server.udp("many.lab.test", use_edns=0, payload=4096)
    assert not with_edns.flags & dns.flags.TC
    assert with_edns.payload == 1232
    assert len(addresses(with_edns)) == 50
    assert server.udp("huge.lab.test", use_edns=0, payload=4096).flags & dns.flags.TC
    assert addresses(server.tcp("huge.lab.test")) == [f"10.0.1.{i}" for i in range(1, 101)]


def test_query_log_line(server: ServerThread) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        client_port = sock.getsockname()[1]
        for name, rdtype in (("www.lab.test", "A"), ("nope.lab.test", "AAAA")):
            query = dns.message.make_query(name, rdtype)
            dns.query.udp(query, "127.0.0.1", port=server.port, sock=sock, timeout=5)
    peer = f"127.0.0.1:{client_port}"
    assert f"dns query www.lab.test A from {peer} -> NOERROR 198.51.100.11,198.51.100.10" in server.logs
    assert f"dns query nope.lab.test AAAA from {peer} -> NXDOMAIN -" in server.logs


def test_garbage_gets_formerr_or_is_dropped_and_server_keeps_serving(server: ServerThread) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"\x12\x34" + b"\x01\x00" + b"\x00\x01" + b"\x00" * 6 + b"\x3fbroken", ("127.0.0.1", server.port))
        reply = dns.message.from_wire(sock.recv(512))
        assert reply.id == 0x1234
        assert reply.rcode() == dns.rcode.FORMERR
        sock.sendto(b"\x00", ("127.0.0.1", server.port))  # too short to answer: dropped
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as tcp:
        tcp.sendall(b"\x00\x03abc")
        size = int.from_bytes(tcp.recv(2), "big")
        assert size == 0 or tcp.recv(size)  # FORMERR or closed; either way no crash
    assert addresses(server.tcp("www.lab.test")) == ["198.51.100.11", "198.51.100.10"]


def test_tcp_connection_carries_several_queries(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for name in ("www.lab.test", "v6.lab.test", "missing.lab.test"):
            dns.query.send_tcp(sock, dns.message.make_query(name, "A"))
            response, _ = dns.query.receive_tcp(sock)
            assert response.question[0].name.to_text() == name + "."


# --- zone file reloads ------------------------------------------------------------------------


def test_zone_file_change_is_picked_up(server: ServerThread, zone_file: Path) -> None:
    late = {"name": "late.lab.test", "type": "A", "ttl": 5, "values": ["203.0.113.6"]}
    changed = {"records": [dict(WWW, values=["203.0.113.5"]), late]}
    write_zone(zone_file, changed)
    wait_for(lambda: a_values(server, "www.lab.test") == ["203.0.113.5"], "the new www answer")
    assert a_values(server, "late.lab.test") == ["203.0.113.6"]
    assert a_values(server, "v6.lab.test") == "NXDOMAIN"
    assert a_values(server, "alias.lab.test") == "NXDOMAIN"
    assert f"dns zone reloaded from {zone_file}: 2 record sets" in server.logs


def test_in_place_rewrite_is_picked_up(server: ServerThread, zone_file: Path) -> None:
    zone_file.write_text(json.dumps({"records": [dict(WWW, values=["203.0.113.9"])]}))
    wait_for(lambda: a_values(server, "www.lab.test") == ["203.0.113.9"], "the rewritten answer")


def test_invalid_zone_file_keeps_previous_records(server: ServerThread, zone_file: Path) -> None:
    write_zone(zone_file, {"records": [dict(WWW, ttl=-5)]})
    error = wait_for(lambda: [line for line in server.logs if line.startswith("dns zone error:")], "the error line")
    assert error == [
        f"dns zone error: records[0].ttl: -5 is not a valid TTL (integer 0-2147483647) in {zone_file};"
        " keeping the previous 5 record sets"
    ]
    assert a_values(server, "www.lab.test") == ["198.51.100.11", "198.51.100.10"]
    write_zone(zone_file, "{not json")
    wait_for(lambda: len([line for line in server.logs if line.startswith("dns zone error:")]) == 2, "a second error")
    zone_file.unlink()
    missing = "cannot read it (No such file or directory)"
    wait_for(lambda: any(missing in line for line in server.logs), "the missing-file error")
    assert a_values(server, "www.lab.test") == ["198.51.100.11", "198.51.100.10"]
    write_zone(zone_file, {"records": [dict(WWW, values=["192.0.2.1"])]})
    wait_for(lambda: a_values(server, "www.lab.test") == ["192.0.2.1"], "recovery")
    assert len([line for line in server.logs if line.startswith("dns zone error:")]) == 3


# --- admin API --------------------------------------------------------------------------------


def test_admin_get_records(server: ServerThread) -> None:
    response = httpx.get(f"{server.admin}/records")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == ZONE
    one = httpx.get(f"{server.admin}/records/WWW.lab.test.")
    assert one.json() == {"records": [WWW]}
    assert httpx.get(f"{server.admin}/records/nope.lab.test").status_code == 404


def test_admin_put_delete_and_persist_across_reloads(server: ServerThread, zone_file: Path) -> None:
    with httpx.Client(base_url=server.admin) as client:
        put = client.put("/records/www.lab.test", json={"type": "A", "ttl": 5, "values": ["192.0.2.7", "192.0.2.8"]})
        assert put.status_code == 200
        assert put.json() == {
            "record": {"name": "www.lab.test", "type": "A", "ttl": 5, "values": ["192.0.2.7", "192.0.2.8"]}
        }
        response = server.udp("www.lab.test")
        assert addresses(response) == ["192.0.2.7", "192.0.2.8"] and response.answer[0].ttl == 5

        added = client.put("/records/new.lab.test", json={"type": "AAAA", "ttl": 60, "values": ["2001:db8::99"]})
        assert added.status_code == 200
        assert addresses(server.tcp("new.lab.test", "AAAA"), "AAAA") == ["2001:db8::99"]

        deleted = client.delete("/records/v6.lab.test")
        assert deleted.json() == {"deleted": [ZONE["records"][1]]}
        assert server.udp("v6.lab.test", "AAAA").rcode() == dns.rcode.NXDOMAIN
        assert client.delete("/records/v6.lab.test").status_code == 404

        z = {"name": "z.lab.test", "type": "A", "ttl": 1, "values": ["10.9.9.9"]}
        write_zone(zone_file, {"records": [*ZONE["records"], z]})
        wait_for(lambda: a_values(server, "z.lab.test") == ["10.9.9.9"], "the reload")
        assert a_values(server, "www.lab.test") == ["192.0.2.7", "192.0.2.8"]
        assert server.udp("v6.lab.test", "AAAA").rcode() == dns.rcode.NXDOMAIN
        names = [r["name"] for r in client.get("/records").json()["records"]]
        # file order with the override in place, then names only the API added
        assert names == [
            "www.lab.test", "alias.lab.test", "many.lab.test", "huge.lab.test", "z.lab.test", "new.lab.test"
        ]
    assert "dns admin PUT www.lab.test A ttl=5 192.0.2.7,192.0.2.8" in server.logs
    assert "dns admin DELETE v6.lab.test (AAAA)" in server.logs


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("PUT", "/records/www.lab.test", {"type": "MX", "ttl": 5, "values": ["x"]}, 400,
         'type: "MX" is not a supported type (A, AAAA, CNAME)'),
        ("PUT", "/records/www.lab.test", {"type": "A", "ttl": 5, "values": ["192.0.2.300"]}, 400,
         'values[0]: "192.0.2.300" is not an IPv4 address (type A)'),
        ("PUT", "/records/www.lab.test", {"type": "A", "values": ["192.0.2.3"]}, 400, "ttl: missing"),
        ("PUT", "/records/bad%20name", {"type": "A", "ttl": 5, "values": ["192.0.2.3"]}, 400,
         "name: \"bad name\" is not a valid DNS name"
         " (labels of 1-63 letters, digits, '-' or '_', at most 253 characters)"),
        ("PUT", "/records/www.lab.test", {"type": "CNAME", "ttl": 5, "values": ["v6.lab.test"]}, 400,
         "type: www.lab.test would have a CNAME and A record sets; a CNAME must be the only record set at its name"),
        ("PUT", "/records/www.lab.test", "{oops", 400, None),
        ("PUT", "/records/www.lab.test", "[" * 5000 + "]" * 5000, 400, None),  # json's recursion limit
        ("POST", "/records", {}, 405, "method POST not allowed on /records (allowed: GET)"),
        ("GET", "/zones", None, 404, "no such resource: /zones (try /records or /records/<name>)"),
    ],
)
def test_admin_errors(
    server: ServerThread, method: str, path: str, body: Any, status: int, error: str | None
) -> None:
    content = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
    response = httpx.request(method, f"{server.admin}{path}", content=content)
    assert response.status_code == status
    if error is None:
        assert response.json()["error"].startswith("body: not valid JSON (")
    else:
        assert response.json() == {"error": error}
    assert a_values(server, "www.lab.test") == ["198.51.100.11", "198.51.100.10"]  # nothing changed


def test_admin_survives_malformed_http(server: ServerThread) -> None:
    admin_port = int(server.admin.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 nonsense\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert httpx.get(f"{server.admin}/records").status_code == 200


# --- CLI --------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.dns", *args], cwd=REPO, capture_output=True, text=True, timeout=30
    )


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"records": [dict(WWW, type="TXT")]}))
    cases = [
        (["--zone-file", str(bad), "--listen", "127.0.0.1:0"],
         f'records[0].type: "TXT" is not a supported type (A, AAAA, CNAME) in {bad}'),
        (["--zone-file", str(bad), "--listen", "localhost:53"],
         "argument --listen: 'localhost:53': 'localhost' is not an IP address"),
        (["--zone-file", str(bad)], "the following arguments are required: --listen"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert (result.returncode, result.stderr) == (2, f"python3 -m services.dns: error: {message}\n")


def test_cli_ready_line_and_answers(zone_file: Path) -> None:
    command = [sys.executable, "-m", "services.dns", "--zone-file", str(zone_file),
               "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            line = process.stdout.readline()  # blocks until the ready line (or exit)
            assert line.startswith("dns ready on 127.0.0.1:"), line
            assert " (udp+tcp), admin http://127.0.0.1:" in line, line
            port = int(line.split()[3].rsplit(":", 1)[1])
            query = dns.message.make_query("www.lab.test", "A")
            assert addresses(dns.query.udp(query, "127.0.0.1", port=port, timeout=5)) == [
                "198.51.100.11", "198.51.100.10"
            ]
            assert process.stdout.readline().startswith("dns query www.lab.test A from 127.0.0.1:")
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == ""
