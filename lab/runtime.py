"""The Docker engine and Compose driver: the only module that talks to Docker.

- ensure_engine(): a running engine, or (root on Debian/Ubuntu) install docker.io + docker-compose
  from the distribution and start dockerd, saying so; otherwise a clear error with what to install.
- build_image(): the one lab image, built with nothing pulled when no registry is reachable
  (debootstrap base + `docker import`, wheels downloaded on the host).
- Compose: v2 (`docker compose`) when present, else v1.29 (`docker-compose`).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from lab.errors import EngineError, LabNotRunning
from lab.render import ROOT, STATE_DIR
from lab.render.compose import IMAGE, PROJECT

BASE_IMAGE = "static-ingress-lab/base:bookworm"
UPSTREAM_BASE = "debian:bookworm-slim"
IMAGE_DIR = ROOT / "image"
WHEEL_DIR = STATE_DIR / "wheels"
DOCKERD_LOG = Path("/var/log/static-ingress-lab-dockerd.log")
# What the image's services need and what its build stage compiles with: pyproject.toml's
# `services` and `native` extras, the one list of each.
_EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
SERVICE_REQUIREMENTS = tuple(_EXTRAS["services"])
NATIVE_REQUIREMENTS = tuple(_EXTRAS["native"])

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(f"lab: {message}", flush=True)


def _run(args: list[str], *, check: bool = True, capture: bool = True, input: bytes | None = None,
         timeout: float | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, check=check, capture_output=capture, input=input, timeout=timeout)
    except FileNotFoundError:
        raise EngineError(f"{args[0]} is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise EngineError(f"`{' '.join(args[:3])} ...` failed: {detail[-1] if detail else f'exit {exc.returncode}'}") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"`{' '.join(args[:3])} ...` did not finish within {timeout:.0f} s") from None


# -- engine ----------------------------------------------------------------------------------------
def engine_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def _debian_root() -> bool:
    return platform.system() == "Linux" and os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(packages: list[str], say: Say) -> None:
    say(f"installing {' '.join(packages)} from the distribution (apt-get) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        result = subprocess.run(args, capture_output=True, env=env)
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise EngineError(f"`{' '.join(args)}` failed: {' / '.join(tail)}")


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def ensure_engine(say: Say = _say) -> None:
    """A running Docker engine and a Compose, installing and starting them where we may."""
    missing = [p for p, ok in (("docker.io", shutil.which("dockerd") is not None),
                               ("docker-compose", compose_command() is not None)) if not ok]
    if engine_running() and "docker-compose" not in missing:
        return
    if not _debian_root():
        what = "a Docker engine (Docker Desktop or Docker Engine) with Compose v2"
        raise EngineError(f"no running Docker engine/Compose found: install and start {what}, "
                          "or run as root on Debian/Ubuntu and `make up` will install docker.io")
    if missing:
        _apt_install(missing, say)
    if not engine_running():
        say(f"starting dockerd (log: {DOCKERD_LOG}) ...")
        log = open(DOCKERD_LOG, "ab")
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while not engine_running():
            if time.monotonic() > deadline:
                raise EngineError(f"dockerd did not become ready within 90 s; see {DOCKERD_LOG}")
            time.sleep(0.5)
        say("dockerd is running")


TEST_TOOLS = {"haproxy": "haproxy", "nft": "nftables", "ip": "iproute2"}


def ensure_test_tools(say: Say = _say) -> None:
    """What the unit tests run on the host: real HAProxy (PROXY v2 interop, haproxy -c), and
    iproute2 + nftables (the NLB's transparent-proxy test in network namespaces)."""
    missing = [package for tool, package in TEST_TOOLS.items() if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if not missing:
        return
    if not _debian_root():
        raise EngineError(f"the tests need {', '.join(missing)} on this machine: install them "
                          "(as root on Debian/Ubuntu `make test` does it)")
    _apt_install(missing, say)


def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # docker raises several unrelated types for "no engine"
        raise EngineError(f"cannot reach the Docker engine ({exc.__class__.__name__}); run `make up` "
                          "or start Docker") from None
    return client


# -- image -----------------------------------------------------------------------------------------
def _image_exists(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_base_image(client, say: Say = _say) -> str:
    if _image_exists(client, BASE_IMAGE):
        return BASE_IMAGE
    say(f"base image: trying to pull {UPSTREAM_BASE} ...")
    try:
        image = client.images.pull(UPSTREAM_BASE)
        image.tag(BASE_IMAGE)
        return BASE_IMAGE
    except Exception as exc:
        say(f"cannot pull ({exc.__class__.__name__}: no registry reachable); building the base locally "
            "with debootstrap (about a minute)")
    if shutil.which("debootstrap") is None:
        if not _debian_root():
            raise EngineError(f"{UPSTREAM_BASE} cannot be pulled and debootstrap is not installed: "
                              "install debootstrap, or make the registry reachable")
        _apt_install(["debootstrap"], say)
    with tempfile.TemporaryDirectory(prefix="lab-rootfs-") as rootfs:
        mirror = os.environ.get("LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        _run(["debootstrap", "--variant=minbase", "bookworm", rootfs, mirror], timeout=900)
        say(f"importing the root filesystem as {BASE_IMAGE} ...")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True)
        tar.wait()
        if imported.returncode != 0:
            raise EngineError(f"docker import failed: {imported.stderr.decode(errors='replace').strip()}")
    return BASE_IMAGE


def _engine_arch(client) -> str:
    arch = client.info().get("Architecture", "x86_64")
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def download_wheels(arch: str, say: Say = _say) -> Path:
    """Wheels for the image's Python (Debian bookworm: CPython 3.11), fetched on the host."""
    target = WHEEL_DIR / arch
    stamp = target / ".requirements"
    requirements = SERVICE_REQUIREMENTS + NATIVE_REQUIREMENTS
    wanted = "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return target
    say(f"downloading service wheels for cp311/{arch} on the host ...")
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.whl"):
        old.unlink()
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
          "--platform", f"manylinux2014_{arch}", "--platform", f"manylinux_2_17_{arch}",
          "--platform", f"manylinux_2_28_{arch}", "-d", str(target), *requirements], timeout=600)
    stamp.write_text(wanted)
    return target


def native_sources() -> list[str]:
    """What the image's mypyc build reads (services/native.py), relative to the repository."""
    from services import native
    return [f"services/{name}" for name in native.inputs()]


def _context_tar(wheels: Path) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        files = [(IMAGE_DIR / "Dockerfile", "Dockerfile")] + [(w, f"wheels/{w.name}") for w in sorted(wheels.glob("*.whl"))]
        files += [(ROOT / name, f"native-src/{name}") for name in native_sources()]
        for path, name in files:
            tar.add(str(path), arcname=name)
            digest.update(name.encode() + path.read_bytes())
        for name, requirements in (("services", SERVICE_REQUIREMENTS), ("native", NATIVE_REQUIREMENTS)):
            text = ("\n".join(requirements) + "\n").encode()
            info = tarfile.TarInfo(f"requirements/{name}.txt")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
            digest.update(info.name.encode() + text)
    return buffer.getvalue(), digest.hexdigest()[:16]


def build_image(say: Say = _say, force: bool = False) -> str:
    client = docker_client()
    base = ensure_base_image(client, say)
    wheels = download_wheels(_engine_arch(client), say)
    context, digest = _context_tar(wheels)
    if not force and _image_exists(client, IMAGE) and client.images.get(IMAGE).labels.get("lab.context") == digest:
        say(f"image {IMAGE} is up to date")
        return IMAGE
    say(f"building image {IMAGE} from {base} (apt inside the build, wheels from the host) ...")
    for chunk in client.api.build(fileobj=io.BytesIO(context), custom_context=True, tag=IMAGE, rm=True,
                                  decode=True, buildargs={"BASE": base}, labels={"lab.context": digest}):
        if "error" in chunk:
            raise EngineError(f"image build failed: {chunk['error'].strip()}")
        line = chunk.get("stream", "").strip()
        if line.startswith("Step "):
            say(f"  {line}")
    say(f"image {IMAGE} built")
    return IMAGE


# -- compose ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compose:
    file: Path

    def run(self, *args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        command = compose_command()
        if command is None:
            raise EngineError("neither `docker compose` (v2) nor `docker-compose` (1.29) is installed")
        full = [*command, "-p", PROJECT, "-f", str(self.file), "--project-directory", str(ROOT), *args]
        result = subprocess.run(full, capture_output=capture)
        if check and result.returncode != 0:
            detail = (result.stderr or b"").decode(errors="replace").strip().splitlines()
            raise EngineError(f"`{' '.join(command)} {' '.join(args)}` failed"
                              + (f": {detail[-1]}" if detail else f" (exit {result.returncode})"))
        return result


def project_containers(client, service: str | None = None) -> list:
    labels = [f"com.docker.compose.project={PROJECT}"]
    if service:
        labels.append(f"com.docker.compose.service={service}")
    return client.containers.list(all=True, filters={"label": labels})


def container(client, service: str):
    found = [c for c in project_containers(client, service) if c.status == "running"]
    if not found:
        raise LabNotRunning(f"service {service!r} is not running; start the lab with `make up` (or `lab up`)")
    return found[0]


def exec_in(client, service: str, args: Iterable[str], *, check: bool = False) -> tuple[int, bytes, bytes]:
    result = container(client, service).exec_run(list(args), demux=True)
    out, err = result.output if result.output else (b"", b"")
    return result.exit_code, out or b"", err or b""


def wait_healthy(client, services: Iterable[str], timeout: float, say: Say = _say) -> None:
    pending = set(services)
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while pending:
        for service in sorted(pending):
            found = project_containers(client, service)
            if not found:
                continue
            state = found[0].attrs["State"]
            health = state.get("Health", {}).get("Status", "none")
            if state.get("Status") == "exited":
                logs = found[0].logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                raise EngineError(f"service {service} exited: {logs}")
            if health in ("healthy", "none") and state.get("Running"):
                pending.discard(service)
            found[0].reload()
        if not pending:
            return
        if time.monotonic() > deadline:
            raise EngineError(f"not healthy after {timeout:.0f} s: {', '.join(sorted(pending))} (see `make logs`)")
        if time.monotonic() - last_report > 5:
            say(f"waiting for {', '.join(sorted(pending))} ...")
            last_report = time.monotonic()
        time.sleep(0.5)
