"""ALB simulator vs HAProxy `mode http`, same routing, same machine, same pinned CPU.

    .venv/bin/python bench/alb.py [--runs 3] [--seconds 8] [--connections 32] [--floor]

Both proxies terminate keep-alive HTTPS (ECDSA P-256 certificate), route `/api/*` to one target
group and everything else to another (both: one HTTP echo backend), add X-Forwarded-For, and
keep pooled keep-alive connections to the backend. The simulator also does everything else it
always does: X-Forwarded-Proto/Port, X-Amzn-Trace-Id, rule evaluation, the access log (written to
a temporary directory), health checks. HAProxy: Debian's /usr/sbin/haproxy, `nbthread 1`,
`http-reuse always`, `option forwardfor`.

The proxy under test runs on CPU 1 (`taskset -c 1`), wrk and the backend on CPU 0. Runs are
interleaved (alb, haproxy, alb, haproxy, ...) and medians reported, because these VMs are noisy
(performance notes: +-10-25 %); CPU time per request of each proxy (from /proc) is printed too,
since it moves much less than req/s when other work shares the machine. Throughput: wrk with
--connections connections. Added latency:
wrk with one connection (closed loop, so latency = service time), p50/p99 difference.

`--floor` adds a third contender, a bare Python relay (uvloop + httptools, TLS, the path rule,
XFF, a pooled backend connection; none of the ALB's behaviours), to show how much of the gap is
Python's I/O floor and how much the simulator's own per-request work. It is not in RESULT.

Before it, the peak resident memory of both proxies after the runs (VmHWM; simulator / HAProxy):
    MEMORY alb sim_peak_rss_mib=<x.x> haproxy_peak_rss_mib=<x.x> rss_ratio=<x.xx>
Then, only when the hypervisor gave more than 5 % of the CPU time to other virtual machines during the
runs (/proc/stat steal), a line starting `STEAL`: the req/s figures of that run are unreliable.
Ends with one line:
    RESULT alb rps_ratio=<x.xx> p50_added_ms=<x.xx> p99_added_ms=<x.xx>
Needs: wrk, taskset, /usr/sbin/haproxy (Debian: apt-get install wrk util-linux haproxy); the
script says what is missing rather than installing anything.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HAPROXY = "/usr/sbin/haproxy"

from bench.procstat import cpu_seconds, cpu_times, memory_line, peak_rss_mib, steal_line  # noqa: E402
from tests.ports import free_ports  # noqa: E402  (distinct, and none a connection can take)


BACKEND = r'''
import asyncio, sys, uvloop, httptools
BODY = b'{"ok":true,"service":"bench"}'
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.p = httptools.HttpRequestParser(self)
    def data_received(self, d):
        try: self.p.feed_data(d)
        except httptools.HttpParserError: self.t.close()
    def on_message_complete(self): self.t.write(RESP)
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True); await asyncio.Event().wait()
uvloop.run(main())
'''


# `--floor` (see above): one pooled backend connection per client connection, no ALB behaviour.
FLOOR = r'''
import asyncio, ssl, sys, uvloop, httptools
PEM, PORT, BACKEND_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class Upstream(asyncio.Protocol):
    def __init__(self, client):
        self.client, self.parser, self.transport, self.lines, self.body = client, httptools.HttpResponseParser(self), None, [], []
    def connection_made(self, t): self.transport = t; self.client.upstream_ready(self)
    def data_received(self, d): self.parser.feed_data(d)
    def on_header(self, n, v): self.lines.append(b"%s: %s\r\n" % (n, v))
    def on_body(self, b): self.body.append(b)
    def on_message_complete(self):
        head = b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code() + b"".join(self.lines) + b"\r\n"
        self.client.transport.write(head + b"".join(self.body)); self.lines, self.body = [], []
class Client(asyncio.Protocol):
    def connection_made(self, t):
        self.transport, self.parser, self.upstream, self.pending = t, httptools.HttpRequestParser(self), None, []
        self.ip = t.get_extra_info("peername")[0].encode()
        loop = asyncio.get_running_loop()
        loop.create_task(loop.create_connection(lambda: Upstream(self), "127.0.0.1", BACKEND_PORT))
    def upstream_ready(self, up):
        self.upstream = up; up.transport.writelines(self.pending); self.pending = []
    def connection_lost(self, exc):
        if self.upstream: self.upstream.transport.close()
    def data_received(self, d): self.parser.feed_data(d)
    def on_message_begin(self): self.lines, self.xff = [], b""
    def on_url(self, u): self.url = u
    def on_header(self, n, v):
        if n.lower() == b"x-forwarded-for": self.xff = v + b", "
        else: self.lines.append(b"%s: %s\r\n" % (n, v))
    def on_message_complete(self):
        group = b"api" if self.url.startswith(b"/api/") else b"frontend"  # the path rule (one backend here)
        req = (b"%s %s HTTP/1.1\r\n" % (self.parser.get_method(), self.url) + b"".join(self.lines)
               + b"X-Forwarded-For: " + self.xff + self.ip + b"\r\n\r\n")
        if self.upstream is None: self.pending.append(req)
        else: self.upstream.transport.write(req)
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(PEM); ctx.set_alpn_protocols(["http/1.1"])
    await asyncio.get_running_loop().create_server(Client, "127.0.0.1", PORT, ssl=ctx, backlog=1024)
    await asyncio.Event().wait()
uvloop.run(main())
'''


def haproxy_cfg(pem: Path, port: int, backend_port: int) -> str:
    return f"""global
    nbthread 1
    maxconn 4000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option forwardfor
    http-reuse always
frontend fe
    bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1
    acl is_api path_beg /api/
    use_backend api if is_api
    default_backend frontend
backend api
    server b1 127.0.0.1:{backend_port}
backend frontend
    server b1 127.0.0.1:{backend_port}
"""


def alb_config(pem: Path, port: int, admin_port: int, backend_port: int, log_dir: Path) -> dict:
    hc = {"protocol": "HTTP", "port": "traffic-port", "path": "/healthz", "interval_seconds": 30,
          "timeout_seconds": 5, "healthy_threshold": 2, "unhealthy_threshold": 2, "matcher": "200"}

    def tg(name: str) -> dict:
        return {"name": name, "arn": f"arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/{name}/0",
                "protocol": "HTTP", "port": backend_port, "health_check": hc,
                "targets": [{"id": "backend", "ip": "127.0.0.1", "port": backend_port}]}

    return {
        "name": "bench", "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/app/bench/0",
        "dns_name": "bench.lab.internal", "nodes": [{"name": "alb-a", "az": "a", "address": "127.0.0.1"}],
        "attributes": {"routing.http.xff_header_processing.mode": "append"},
        "listeners": [{"protocol": "HTTPS", "port": port,
                       "certificate": {"arn": "arn:aws:acm:eu-west-2:123456789012:certificate/bench", "pem": str(pem)},
                       "rules": [{"priority": 10, "conditions": [{"field": "path-pattern", "values": ["/api/*"]}],
                                  "actions": [{"type": "forward", "target_group": "api"}]}],
                       "default_actions": [{"type": "forward", "target_group": "frontend"}]}],
        "target_groups": [tg("api"), tg("frontend")],
        "log_dir": str(log_dir), "admin": {"address": "127.0.0.1", "port": admin_port},
    }


def wait_port(port: int, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {what} does not listen on 127.0.0.1:{port} after {timeout:g} s")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    result = {"rps": float(rps.group(1)) if rps else 0.0, "requests": float(total.group(1)) if total else 0.0}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[f"p{pct}"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    result["errors"] = 1.0 if errors else 0.0
    return result


def wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          f"https://127.0.0.1:{port}/api/bench"], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--floor", action="store_true",
                        help="also measure a bare Python relay with no ALB behaviours (for reference; not in RESULT)")
    args = parser.parse_args()
    missing = [t for t in ("wrk", "taskset") if shutil.which(t) is None] + ([] if Path(HAPROXY).exists() else [HAPROXY])
    if missing:
        print(f"bench: missing {', '.join(missing)} (Debian: apt-get install -y wrk util-linux haproxy)",
              file=sys.stderr)
        return 2
    import trustme

    sys.path.insert(0, str(ROOT))
    import services.alb_sim  # noqa: F401  # decides, as the simulator process will, which build runs
    from services import native
    print(f"bench: ALB simulator runs its {native.state()}"
          + ("" if native.compiled() else "; `lab compile` (make bench does) builds it"))
    tmp = Path(tempfile.mkdtemp(prefix="alb-bench-"))
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    pem = tmp / "www.pem"
    ca.issue_cert("www.lab.test", key_type=trustme.KeyType.ECDSA).private_key_and_cert_chain_pem.write_to_path(str(pem))
    backend_port, alb_port, admin_port, hap_port, floor_port = free_ports(5)
    (tmp / "alb.json").write_text(json.dumps(alb_config(pem, alb_port, admin_port, backend_port, tmp / "logs")))
    (tmp / "haproxy.cfg").write_text(haproxy_cfg(pem, hap_port, backend_port))
    py = sys.executable
    procs = [subprocess.Popen(["taskset", "-c", "0", py, "-c", BACKEND, str(backend_port)], stdout=subprocess.DEVNULL)]
    try:
        wait_port(backend_port, "the backend")
        procs.append(subprocess.Popen(["taskset", "-c", "1", py, "-m", "services.alb_sim", "--config",
                                       str(tmp / "alb.json")], cwd=ROOT, stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["taskset", "-c", "1", HAPROXY, "-f", str(tmp / "haproxy.cfg"), "-db"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        contenders = [("alb", alb_port), ("haproxy", hap_port)]
        if args.floor:
            procs.append(subprocess.Popen(["taskset", "-c", "1", py, "-c", FLOOR, str(pem), str(floor_port),
                                           str(backend_port)], stdout=subprocess.DEVNULL))
            contenders.append(("floor", floor_port))
        wait_port(alb_port, "the ALB simulator")
        wait_port(hap_port, "haproxy")
        if args.floor:
            wait_port(floor_port, "the bare relay")
        urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/health", timeout=5).read()
        for _, port in contenders:  # warm up: TLS sessions, pools, caches
            wrk(port, 2, args.connections)
        results: dict[str, dict[str, list[float]]] = {name: {} for name, _ in contenders}
        pids = {name: proc.pid for (name, _), proc in zip(contenders, procs[1:])}
        steal0 = cpu_times()
        for run in range(args.runs):
            for name, port in contenders:
                cpu0 = cpu_seconds(pids[name])
                tput = wrk(port, args.seconds, args.connections)
                cpu_us = (cpu_seconds(pids[name]) - cpu0) / max(tput["requests"], 1) * 1e6
                lat = wrk(port, max(3, args.seconds // 2), 1)
                r = results[name]
                r.setdefault("rps", []).append(tput["rps"])
                r.setdefault("cpu_us", []).append(cpu_us)
                r.setdefault("p50", []).append(lat["p50"])
                r.setdefault("p99", []).append(lat["p99"])
                r.setdefault("load_p50", []).append(tput["p50"])
                r.setdefault("load_p99", []).append(tput["p99"])
                print(f"run {run + 1} {name:8} {tput['rps']:9.0f} req/s {cpu_us:6.1f} us CPU/req "
                      f"(c={args.connections}: p50 {tput['p50']:.2f} ms "
                      f"p99 {tput['p99']:.2f} ms)  c=1: p50 {lat['p50']:.3f} ms p99 {lat['p99']:.3f} ms", flush=True)
        med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
        log_lines = sum(1 for _ in (tmp / "logs" / "alb-a" / "access.log").open())
        print(f"median alb {med['alb']['rps']:.0f} req/s, haproxy {med['haproxy']['rps']:.0f} req/s; "
              f"CPU per request alb {med['alb']['cpu_us']:.1f} us, haproxy {med['haproxy']['cpu_us']:.1f} us "
              f"(ratio {med['haproxy']['cpu_us'] / med['alb']['cpu_us']:.2f}: less sensitive to a busy machine); "
              f"alb access log: {log_lines} entries")
        if args.floor:
            print(f"median floor (bare relay, no ALB behaviours) {med['floor']['rps']:.0f} req/s, "
                  f"{med['floor']['cpu_us']:.1f} us CPU per request: rps ratio to haproxy "
                  f"{med['floor']['rps'] / med['haproxy']['rps']:.2f}")
        print(memory_line("alb", peak_rss_mib(pids["alb"]), peak_rss_mib(pids["haproxy"])))
        if warning := steal_line(steal0, cpu_times()):
            print(warning)
        print(f"RESULT alb rps_ratio={med['alb']['rps'] / med['haproxy']['rps']:.2f} "
              f"p50_added_ms={med['alb']['p50'] - med['haproxy']['p50']:.2f} "
              f"p99_added_ms={med['alb']['p99'] - med['haproxy']['p99']:.2f}")
        return 0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
