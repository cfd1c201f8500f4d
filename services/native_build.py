"""Make a compiled (mypyc) build of the modules services/native.py lists.

    python -m services.native_build [DIR]          compile into DIR (default: LAB_NATIVE_DIR or .build/native)
    python -m services.native_build --status [DIR] say whether DIR's build matches the source

`lab compile` calls this on the host; the image's build stage runs it (image/Dockerfile).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from services.native import MANIFEST, MODULES, SOURCE_DIR, abi, check, default_dir, source_digests

MYPY_FLAGS = ("--ignore-missing-imports", "--follow-imports=silent", "--python-version=3.11")


def compiler() -> str | None:
    """The installed compiler, as a build's manifest names it (`mypy 2.4.1`); None if none is."""
    try:
        return f"mypy {importlib.metadata.version('mypy')}"
    except importlib.metadata.PackageNotFoundError:
        return None


def outdated(out: Path) -> str | None:
    """Why `lab compile` must rebuild `out`, or None: another source or Python (native.check), or
    another compiler than the installed one (its code generation, and its bugs, differ: #61, #64).
    Only a rebuild reads this; a build made by another compiler still runs where none is installed."""
    problem = check(out)
    if problem is not None:
        return problem
    installed = compiler()
    try:
        made_by = json.loads((out / MANIFEST).read_text()).get("compiler")
    except (OSError, ValueError) as exc:
        return f"unreadable manifest in {out}: {exc}"
    if installed is not None and made_by != installed:
        return f"built by {made_by or 'an older mypy'}, {installed} is installed"
    return None


def build(out: Path, say=print) -> None:
    """Compile MODULES with mypyc into `out` (replaced as a whole, so a failed build leaves none)."""
    root = SOURCE_DIR.parent
    out = out.resolve()
    if importlib.util.find_spec("mypyc") is None:
        raise RuntimeError(f"mypyc is not installed for {sys.executable} (pyproject.toml's `native` or `test` extra)")
    c_compiler = str(sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(c_compiler) is None:
        raise RuntimeError(f"no C compiler: {c_compiler} is not on PATH")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        raise RuntimeError(f"no Python headers: {sysconfig.get_paths()['include']}/Python.h is missing")
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
        paths = [*MYPY_FLAGS, f"--cache-dir={Path(tmp) / 'mypy-cache'}", *(f"services/{m}.py" for m in MODULES)]
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
        (staged / MANIFEST).write_text(json.dumps({"abi": abi(), "runtime": runtime[0], "compiler": compiler(),
                                                   "modules": digests}, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(out))
    say(f"compiled build ready in {out}")


def main(argv: list[str]) -> int:
    status = argv[:1] == ["--status"]
    args = argv[1:] if status else argv
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(args[0]) if args else default_dir()
    if status:
        problem = outdated(out)
        print(problem or f"compiled build in {out} matches the source and the compiler")
        return 1 if problem else 0
    try:
        build(out)
    except (RuntimeError, OSError) as exc:
        print(f"services.native_build: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
