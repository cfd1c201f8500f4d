"""Compiled (mypyc) builds of the ALB simulator's per-request modules: which build runs.

The Python source stays the one implementation; mypyc compiles the modules on the request path
to C extension modules with the same behaviour (decisions.md #57; services/native_build.py makes
a build). A build is used only when it was made from exactly the source next to it (a SHA-256 of
each file it read, in its manifest) and imports on this Python; otherwise the source runs, and
`state()` says why.

LAB_NATIVE=0 runs the source even where a build matches; LAB_NATIVE=1 makes a missing or stale
build an error (`make test` sets it, so the suite tests what the lab runs).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import sysconfig
from pathlib import Path

# Module by module (paths under services/), what a request touches, and the configuration model
# whose objects it reads on every request (compiled, they are native classes too). Left out:
# start-up, admin API, health-check prober and node rotation (async code, not per request) and
# the HTTP/1 fallback reader.
MODULES = ("common", *(f"alb_sim/{m}" for m in (
    "limits", "exchange", "xff", "trace_id", "httpmsg", "access_log", "metrics", "health", "desync", "redirect",
    "stickiness", "rules", "runtime", "upstream", "pipeline", "frontend", "server", "h2msg", "h2front", "model",
    "config", "config_changes")))
MANIFEST = "manifest.json"

SOURCE_DIR = Path(__file__).resolve().parent  # services/
_state = "source (not checked yet)"
_active: Path | None = None  # the build in use


def default_dir() -> Path:
    return Path(os.environ.get("LAB_NATIVE_DIR") or Path(__file__).resolve().parents[1] / ".build" / "native")


def inputs(source_dir: Path = SOURCE_DIR) -> list[str]:
    """What a build reads, under services/: the compiled modules and every module they may import
    from this tree (mypy type-checks them against those; a change in any of them can change what
    the compiled code may assume)."""
    return sorted(str(p.relative_to(source_dir)) for p in [*source_dir.glob("*.py"), *source_dir.glob("alb_sim/*.py")])


def source_digests(source_dir: Path = SOURCE_DIR) -> dict[str, str]:
    return {name: hashlib.sha256((source_dir / name).read_bytes()).hexdigest() for name in inputs(source_dir)}


def abi() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def check(build_dir: Path, source_dir: Path = SOURCE_DIR) -> str | None:
    """None if `build_dir` holds a build of exactly this source for this Python, else why not."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no compiled build in {build_dir}"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest in {build_dir}: {exc}"
    if manifest.get("abi") != abi():
        return f"built for {manifest.get('abi')}, this Python loads {abi()}"
    if manifest.get("modules") != source_digests(source_dir):
        return "the source changed since the build (run `lab compile`)"
    return None


def activate(package_path: list[str]) -> str:
    """Called by services/__init__.py: put a matching build first on the package's path."""
    global _state, _active
    build_dir = default_dir()
    if os.environ.get("LAB_NATIVE", "1") == "0":
        _state = "source (LAB_NATIVE=0)"
        return _state
    problem = check(build_dir, Path(package_path[-1]))
    if problem is None:
        sys.path.append(str(build_dir))  # mypyc's shared library, imported by its top-level name
        try:
            importlib.import_module(json.loads((build_dir / MANIFEST).read_text())["runtime"])
        except ImportError as exc:
            sys.path.remove(str(build_dir))
            problem = f"compiled build does not load: {exc}"
    if problem is not None:
        if os.environ.get("LAB_NATIVE") == "1":
            raise ImportError(f"LAB_NATIVE=1 but {problem}")
        _state = f"source ({problem})"
        return _state
    _active = build_dir
    package_path.insert(0, str(build_dir / "services"))
    _state = f"compiled ({build_dir})"
    return _state


def extend(subpackage_path: list[str], name: str) -> None:
    """Called by a subpackage's __init__.py (services/alb_sim): its compiled modules come first too."""
    if _active is not None:
        subpackage_path.insert(0, str(_active / "services" / name))


def state() -> str:
    """`compiled (DIR)` or `source (why)`: what this process runs."""
    return _state


def compiled() -> bool:
    """True if this process runs a compiled build."""
    return _active is not None
