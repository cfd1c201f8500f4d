"""Compiled (mypyc) builds of the ALB simulator's per-request modules.

The Python source stays the one implementation; mypyc compiles the modules on the request path
to C extension modules with the same behaviour (decisions.md #57). A build is used only when it
was made from exactly the source next to it (a SHA-256 per module in its manifest) and imports
on this Python; otherwise the source runs, and `state()` says why.

    python -m services.native build [DIR]    compile into DIR (default: LAB_NATIVE_DIR or .build/native)
    python -m services.native status [DIR]   print whether DIR's build matches the source

LAB_NATIVE=0 runs the source even where a build matches; LAB_NATIVE=1 makes a missing or stale
build an error (`make test` sets it, so the suite tests what the lab runs).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

# Module by module (paths under services/), what a request touches. Left out: start-up, admin API,
# health-check prober and node rotation (async code, not per request), config parsing and the
# HTTP/1 fallback reader.
MODULES = ("common", *(f"alb_sim/{m}" for m in (
    "limits", "exchange", "xff", "trace_id", "httpmsg", "access_log", "metrics", "health", "desync", "redirect",
    "stickiness", "rules", "runtime", "upstream", "server", "h2msg", "h2front")))
MANIFEST = "manifest.json"
MYPY_FLAGS = ("--ignore-missing-imports", "--follow-imports=silent", "--python-version=3.11")

SOURCE_DIR = Path(__file__).resolve().parent  # services/
_state = "source (not checked yet)"
_active: Path | None = None  # the build in use


def default_dir() -> Path:
    return Path(os.environ.get("LAB_NATIVE_DIR") or Path(__file__).resolve().parents[1] / ".build" / "native")


def source_digests(source_dir: Path = SOURCE_DIR) -> dict[str, str]:
    return {m: hashlib.sha256((source_dir / f"{m}.py").read_bytes()).hexdigest() for m in MODULES}


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


def build(out: Path, say=print) -> None:
    """Compile MODULES with mypyc into `out` (replaced as a whole, so a failed build leaves none)."""
    root = SOURCE_DIR.parent
    out = out.resolve()
    digests = source_digests()
    say(f"compiling {len(MODULES)} modules of the ALB simulator with mypyc into {out} (about a minute) ...")
    with tempfile.TemporaryDirectory(prefix="alb-native-") as tmp:
        staged = Path(tmp) / "out"
        script = (
            "import sys\n"
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            "paths, c_dir, lib, temp = sys.argv[1].split(','), sys.argv[2], sys.argv[3], sys.argv[4]\n"
            "setup(name='alb-sim-native', script_args=['build_ext', '--build-lib', lib, '--build-temp', temp],\n"
            "      ext_modules=mypycify(paths, opt_level='3', debug_level='0', target_dir=c_dir))\n")
        paths = [*MYPY_FLAGS, *(f"services/{m}.py" for m in MODULES)]
        result = subprocess.run([sys.executable, "-c", script, ",".join(paths), str(Path(tmp) / "c"), str(staged),
                                 str(Path(tmp) / "temp")], cwd=root, capture_output=True, text=True)
        if result.returncode != 0:
            log = out.with_name(out.name + "-build.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(result.stdout + result.stderr)
            errors = [ln.strip() for ln in (result.stdout + result.stderr).splitlines()
                      if "error" in ln.lower() and not ln.startswith(("gcc ", "cc1:"))]
            raise RuntimeError(f"mypyc build failed: {errors[0] if errors else 'see the log'} (whole output: {log})")
        if source_digests() != digests:
            raise RuntimeError("the source changed during the build; run it again")
        runtime = [p.name.split(".")[0] for p in staged.glob("*__mypyc*")]  # named after a hash of the modules
        if len(runtime) != 1:
            raise RuntimeError(f"expected one mypyc runtime library in the build, found {runtime}")
        (staged / MANIFEST).write_text(json.dumps({"abi": abi(), "runtime": runtime[0], "modules": digests},
                                                  indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(out))
    say(f"compiled build ready in {out}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("build", "status") or len(argv) > 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(argv[1]) if len(argv) > 1 else default_dir()
    if argv[0] == "status":
        problem = check(out)
        print(problem or f"compiled build in {out} matches the source")
        return 1 if problem else 0
    try:
        build(out)
    except (RuntimeError, OSError) as exc:
        print(f"services.native: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
