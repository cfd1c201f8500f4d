"""Client IP preservation with IP_TRANSPARENT, end to end in throwaway network namespaces.

client ns (198.51.100.50) -- nlb ns (198.51.100.10 | 10.20.1.10) -- target ns (10.20.1.20,
route to 198.51.100.0/24 via the NLB), as in platform.md "Client IP preservation". Needs root,
iproute2 and nftables; skipped otherwise. The NLB runs twice to show the routing setup is
idempotent (one ip rule, one nft table).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = f"nt{os.getpid() % 100000}"
NS = {"c": f"{TAG}c", "n": f"{TAG}n", "t": f"{TAG}t"}

# Not skipped: `make test` installs iproute2 and nftables (lab engine --test-tools); without root
# or those tools this fails and says why.
MISSING = [what for what, ok in (("root", os.geteuid() == 0), ("iproute2 (ip)", shutil.which("ip")),
                                 ("nftables (nft)", shutil.which("nft"))) if not ok]


@pytest.fixture(autouse=True)
def _requirements() -> None:
    if MISSING:
        pytest.fail(f"network-namespace tests need {', '.join(MISSING)}: run `make test` as root on Debian")

TARGET = """
import asyncio
async def h(r, w):
    peer = w.get_extra_info("peername")
    await r.read(100)
    w.write(f"{peer[0]}:{peer[1]}".encode()); await w.drain(); w.close()
async def main():
    s = await asyncio.start_server(h, "10.20.1.20", 8080)
    print("up", flush=True)
    await s.serve_forever()
asyncio.run(main())
"""

CLIENT = """
import asyncio, sys
async def main(port):
    r, w = await asyncio.open_connection("198.51.100.10", port)
    w.write(b"hi")
    print("%s:%d" % w.get_extra_info("sockname")[:2], (await r.read()).decode())
asyncio.run(main(int(sys.argv[1])))
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def namespaces() -> Iterator[None]:
    try:
        for ns in NS.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{TAG}a", "type", "veth", "peer", "name", f"{TAG}b")
        sh("ip", "link", "add", f"{TAG}d", "type", "veth", "peer", "name", f"{TAG}e")
        for dev, ns, addr in ((f"{TAG}a", NS["c"], "198.51.100.50/24"), (f"{TAG}b", NS["n"], "198.51.100.10/24"),
                              (f"{TAG}d", NS["n"], "10.20.1.10/24"), (f"{TAG}e", NS["t"], "10.20.1.20/24")):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", NS["t"], "route", "add", "198.51.100.0/24", "via", "10.20.1.10")
        yield
    finally:
        for ns in NS.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start(ns: str, args: list[str], out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], cwd=ROOT,
                            stdout=out.open("wb"), stderr=subprocess.STDOUT)


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None, f"process exited: {path.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in {path}: {path.read_text()}"
        time.sleep(0.02)


def test_target_sees_client_address_only_when_preserved(tmp_path: Path, namespaces: None) -> None:
    cfg = {"name": "ns-test",
           "nodes": [{"name": "nlb-a", "az": "a", "elastic_ip": "198.51.100.10", "private_ip": "10.20.1.10"}],
           "listeners": [{"protocol": "TCP", "port": 80, "target_group": "keep"},
                         {"protocol": "TCP", "port": 81, "target_group": "snat"}],
           "target_groups": [
               {"name": "keep", "protocol": "TCP", "port": 8080, "target_type": "instance",
                "targets": [{"id": "t", "ip": "10.20.1.20", "az": "a"}]},
               {"name": "snat", "protocol": "TCP", "port": 8080, "target_type": "ip",
                "targets": [{"id": "t", "ip": "10.20.1.20", "az": "a"}]}],
           "log_dir": str(tmp_path / "log"), "admin": {"address": "10.20.1.10", "port": 8080},
           "transparent": True}
    (tmp_path / "nlb.json").write_text(json.dumps(cfg))
    (tmp_path / "target.py").write_text(TARGET)
    (tmp_path / "client.py").write_text(CLIENT)
    procs = [start(NS["t"], [str(tmp_path / "target.py")], tmp_path / "target.out")]
    try:
        wait_for_text(tmp_path / "target.out", "up", procs[0])
        for run in range(2):
            out = tmp_path / f"nlb{run}.out"
            nlb = start(NS["n"], ["-m", "services.nlb_sim", "--config", str(tmp_path / "nlb.json")], out)
            procs.append(nlb)
            wait_for_text(out, "nlb admin:", nlb)
            for port, preserved in ((80, True), (81, False)):
                res = subprocess.run(["ip", "netns", "exec", NS["c"], sys.executable,
                                      str(tmp_path / "client.py"), str(port)],
                                     capture_output=True, text=True, timeout=30, check=True)
                client, seen = res.stdout.split()
                if preserved:
                    assert seen == client
                else:
                    assert seen.startswith("10.20.1.10:"), seen
            nlb.terminate()
            assert nlb.wait(timeout=10) == 0
        rules = sh("ip", "-n", NS["n"], "rule", "show")
        assert rules.count("fwmark 0x1 lookup 100") == 1, rules
        assert sh("ip", "netns", "exec", NS["n"], "nft", "list", "ruleset").count("table ip nlb") == 1
        lines = [json.loads(x) for x in (tmp_path / "log" / "flows.log").read_text().splitlines()]
        closes = [x for x in lines if x["event"] == "close"]
        assert [x["source_seen_by_target"] == x["client"] for x in closes] == [True, False] * 2
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
