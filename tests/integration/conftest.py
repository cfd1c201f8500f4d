"""Integration tests: the real engine, real HAProxy, real containers, driven through the `lab` CLI
exactly as a user would. Each test module owns its topology (module-scoped `lab up` / `lab down`)."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.cli._common import running_state
from lab.errors import EngineError
from lab.runtime import docker_client, project_containers

ROOT = Path(__file__).resolve().parents[2]


def lab(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def lab_json(*args: str):
    return json.loads(lab(*args).stdout)


def container_id(service: str) -> str:
    """The service's container, running or stopped (by compose labels, so Compose v1 and v2 names both work)."""
    found = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=static-ingress-lab",
                            "--filter", f"label=com.docker.compose.service={service}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert found, f"no container for {service}"
    return found[0]


def exec_in(service: str, *argv: str) -> subprocess.CompletedProcess:
    """Run a command in a lab container."""
    return subprocess.run(["docker", "exec", container_id(service), *argv], capture_output=True, text=True, timeout=60)


def wait_for(predicate, what: str, timeout: float = 60.0, step: float = 0.5):
    """Poll until `predicate()` is truthy (returned); fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


LOCK_FILE = "/tmp/static-ingress-lab.lock"
LAB_BEFORE = pytest.StashKey[str]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """A lab the user left up is replaced by each module's topology and is down after the tests:
    say so before and after, rather than let it vanish silently."""
    try:
        if not any(c.status == "running" for c in project_containers(docker_client())):
            return
    except EngineError:  # no engine: no lab either (the fixtures say what is wrong)
        return
    state = running_state()
    which = f"topology {state['topology']}" if state else "started from another checkout"
    session.config.stash[LAB_BEFORE] = which
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"a lab is up ({which}): the integration tests replace it and leave it down")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    which = config.stash.get(LAB_BEFORE, None)
    if which is not None:
        terminalreporter.write_line(f"the lab that was up before the tests ({which}) is down: `make up` brings it back")


@pytest.fixture(scope="module")
def running_lab(request):
    """`lab up --topology <module's TOPOLOGY>`; `lab down` afterwards. One lab runs on a machine at a
    time (same project name and subnets), so the module holds a machine-wide lock while it runs."""
    topology = request.module.TOPOLOGY
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        up = lab("up", "--topology", topology, timeout=900)
        try:
            yield up.stdout
        finally:
            lab("down", timeout=300)
