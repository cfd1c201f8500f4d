"""NLB simulator vs HAProxy `mode tcp`, same job, same machine, same CPUs.

    .venv/bin/python bench/nlb.py [--runs 3] [--seconds 5] [--proxy-cpu 1] [--load-cpu 0]

Two measurements, each run interleaved (simulator, HAProxy, simulator, ...) and reported as the
median of ``--runs``:
- bulk throughput: one iperf3 stream through the proxy (iperf3 client and server on the load CPU);
- new connections per second: wrk with `Connection: close` (one TCP connection per request)
  through the proxy to an HAProxy HTTP backend that answers 200 itself (load CPU).
The proxy under test is pinned to ``--proxy-cpu`` with taskset. HAProxy runs with its best
settings for this job: `nbthread 1`, `option splice-auto`, `tune.pipesize 1048576`.
The simulator runs exactly as in the lab (uvloop, splice for plain TCP), with an `ip` target group
(no client IP preservation, so no IP_TRANSPARENT or policy routing is needed on the host).

Needs iperf3, wrk, haproxy and taskset; installs nothing: it names what is missing and exits 2.
Before that line, ``MEMORY nlb sim_peak_rss_mib=<x.x> haproxy_peak_rss_mib=<x.x> rss_ratio=<x.xx>`` (peak resident
memory after the runs), and a ``STEAL`` line when other virtual machines took more than 5 % of the CPU
during the runs (the figures are then unreliable). Ends with one line: ``RESULT nlb throughput_ratio=<x.xx> conn_ratio=<x.xx>``
(simulator / HAProxy).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_times, memory_line, peak_rss_mib, steal_line  # noqa: E402

TOOLS = {"iperf3": "iperf3", "wrk": "wrk", "haproxy": "haproxy", "taskset": "util-linux"}

NLB_IP, NLB_PRIVATE, ADMIN_IP = "127.0.0.10", "127.0.0.12", "127.0.0.13"
HAPROXY_IP = "127.0.0.20"
IPERF_PORT, BACKEND_PORT = 15201, 18080
IPERF_FRONT, CONN_FRONT = 15301, 18180


def missing_tools() -> list[str]:
    return [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Poll the socket table (a test connect would count as an iperf3 test)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["ss", "-Htln", f"src {host}:{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.05)


def nlb_config(tmp: Path) -> dict:
    def tg(name: str, port: int) -> dict:
        return {"name": name, "protocol": "TCP", "port": port, "target_type": "ip",
                "targets": [{"id": f"{name}-1", "ip": "127.0.0.1", "port": port, "az": "a"}],
                # Checks go to the HTTP backend, never to iperf3 (which would take them for tests).
                "health_check": {"protocol": "TCP", "port": BACKEND_PORT, "interval_seconds": 300,
                                 "healthy_threshold": 2, "unhealthy_threshold": 2}}
    return {"name": "bench", "nodes": [{"name": "nlb-a", "az": "a", "elastic_ip": NLB_IP,
                                        "private_ip": NLB_PRIVATE}],
            "listeners": [{"protocol": "TCP", "port": IPERF_FRONT, "target_group": "iperf"},
                          {"protocol": "TCP", "port": CONN_FRONT, "target_group": "conn"}],
            "target_groups": [tg("iperf", IPERF_PORT), tg("conn", BACKEND_PORT)],
            "log_dir": str(tmp / "nlb-log"), "admin": {"address": ADMIN_IP, "port": 18081},
            "transparent": False}


HAPROXY_UNDER_TEST = f"""
global
    nbthread 1
    maxconn 4000
    tune.pipesize 1048576
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen iperf
    bind {HAPROXY_IP}:{IPERF_FRONT}
    server s1 127.0.0.1:{IPERF_PORT}
listen conn
    bind {HAPROXY_IP}:{CONN_FRONT}
    server s1 127.0.0.1:{BACKEND_PORT}
"""

HAPROXY_BACKEND = f"""
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend ok
    bind 127.0.0.1:{BACKEND_PORT}
    http-request return status 200 content-type text/plain string ok
"""


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], cpu: int, log: Path, **kw) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(["taskset", "-c", str(cpu), *argv], stdout=out,
                                    stderr=subprocess.STDOUT, **kw)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:  # only what we started, by pid
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def iperf(host: str, seconds: int, cpu: int) -> float:
    out = subprocess.run(["taskset", "-c", str(cpu), "iperf3", "-c", host, "-p", str(IPERF_FRONT),
                          "-t", str(seconds), "-J"], capture_output=True, text=True, timeout=seconds + 30)
    doc = json.loads(out.stdout)
    if "error" in doc:
        raise RuntimeError(f"iperf3 through {host}: {doc['error']}")
    return doc["end"]["sum_received"]["bits_per_second"] / 8 / 1e9  # GB/s


def wrk(host: str, seconds: int, cpu: int) -> float:
    out = subprocess.run(["taskset", "-c", str(cpu), "wrk", "-t1", "-c64", f"-d{seconds}s",
                          "-H", "Connection: close", f"http://{host}:{CONN_FRONT}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if match is None:
        raise RuntimeError(f"wrk through {host}: no Requests/sec in output:\n{out}")
    if errors and int(errors.group(1)) + int(errors.group(4)) > 0:
        print(f"  (wrk through {host}: {errors.group(0)})", flush=True)
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--proxy-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3 (the result is a median)")
    missing = missing_tools()
    if missing:
        print("bench/nlb.py: missing tools: " + ", ".join(missing) + "; install them (e.g. apt-get install -y"
              " iperf3 wrk haproxy) and run again", file=sys.stderr)
        return 2
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="nlb-bench-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "nlb.json").write_text(json.dumps(nlb_config(tmp)))
        (tmp / "under-test.cfg").write_text(HAPROXY_UNDER_TEST)
        (tmp / "backend.cfg").write_text(HAPROXY_BACKEND)
        try:
            procs.start(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT)], args.load_cpu, tmp / "iperf3.log")
            procs.start(["haproxy", "-db", "-f", str(tmp / "backend.cfg")], args.load_cpu, tmp / "backend.log")
            wait_port("127.0.0.1", BACKEND_PORT)
            wait_port("127.0.0.1", IPERF_PORT)
            under_test = procs.start(["haproxy", "-db", "-f", str(tmp / "under-test.cfg")], args.proxy_cpu,
                                     tmp / "haproxy.log")
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            sim = procs.start([sys.executable, "-m", "services.nlb_sim", "--config", str(tmp / "nlb.json"),
                               "--log-level", "WARNING"], args.proxy_cpu, tmp / "nlb.log", env=env, cwd=ROOT)
            wait_port(HAPROXY_IP, CONN_FRONT)
            wait_port(NLB_IP, CONN_FRONT)
            time.sleep(0.5)  # the simulator's first health check (against the HTTP backend)
            contenders = {"nlb": NLB_IP, "haproxy": HAPROXY_IP}
            throughput: dict[str, list[float]] = {k: [] for k in contenders}
            conns: dict[str, list[float]] = {k: [] for k in contenders}
            steal0 = cpu_times()
            for run in range(args.runs):
                order = list(contenders) if run % 2 == 0 else list(reversed(contenders))
                for name in order:
                    throughput[name].append(iperf(contenders[name], args.seconds, args.load_cpu))
                    print(f"run {run + 1} {name:8} throughput {throughput[name][-1]:.2f} GB/s", flush=True)
                for name in order:
                    conns[name].append(wrk(contenders[name], args.seconds, args.load_cpu))
                    print(f"run {run + 1} {name:8} new connections {conns[name][-1]:.0f}/s", flush=True)
            memory = memory_line("nlb", peak_rss_mib(sim.pid), peak_rss_mib(under_test.pid))
            steal = steal_line(steal0, cpu_times())
        except RuntimeError as exc:
            logs = "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-600:]}" for p in sorted(tmp.glob("*.log")))
            print(f"bench/nlb.py: {exc}\n{logs}", file=sys.stderr)
            return 1
        finally:
            procs.stop()
    med = {k: (statistics.median(throughput[k]), statistics.median(conns[k])) for k in ("nlb", "haproxy")}
    print(f"median  nlb      {med['nlb'][0]:.2f} GB/s  {med['nlb'][1]:.0f} conn/s")
    print(f"median  haproxy  {med['haproxy'][0]:.2f} GB/s  {med['haproxy'][1]:.0f} conn/s"
          " (mode tcp, nbthread 1, option splice-auto, tune.pipesize 1048576)")
    print(memory)
    if steal:
        print(steal)
    print(f"RESULT nlb throughput_ratio={med['nlb'][0] / med['haproxy'][0]:.2f}"
          f" conn_ratio={med['nlb'][1] / med['haproxy'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
