"""The compiled (mypyc) build of the ALB simulator: used only when it matches the source, and the
source, its fallback, still passes the in-process server tests (services/native.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from services import native, native_build

ROOT = Path(__file__).resolve().parents[2]


def run_on_source(*pytest_args: str) -> str:
    """Run pytest in a child process on the ALB's source (LAB_NATIVE=0); its output if it passed."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                            env={**os.environ, "LAB_NATIVE": "0"}, cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def ran_on_source_instead(test_file: str, test_name: str) -> bool:
    """For a test that patches a method: compiled classes cannot be patched, so under the compiled
    build the test runs (and must pass) in a child on the source; True if it did."""
    if not native.compiled():
        return False
    assert "1 passed" in run_on_source(f"{test_file}::{test_name}")
    return True


def test_the_suite_runs_the_build_make_test_asks_for() -> None:
    """`make test` sets LAB_NATIVE=1 after `lab compile`: this process must run the compiled build."""
    import services.alb_sim.server as server

    wanted = os.environ.get("LAB_NATIVE")
    if wanted == "1":
        assert native.compiled(), native.state()
        assert server.__file__.endswith(native.abi())
    elif wanted == "0":
        assert native.state() == "source (LAB_NATIVE=0)" and server.__file__.endswith("server.py")
    else:
        assert native.compiled() == (native.check(native.default_dir()) is None)


def _fake_build(tmp_path: Path, **changes: object) -> Path:
    build = tmp_path / "native"
    build.mkdir()
    manifest = {"abi": native.abi(), "runtime": "nothing__mypyc",
                "modules": native.source_digests(), **changes}
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    return build


def test_a_build_of_other_source_or_for_another_python_is_not_used(tmp_path: Path) -> None:
    assert native.check(tmp_path) == f"no compiled build in {tmp_path}"
    assert native.check(_fake_build(tmp_path)) is None
    shutil.rmtree(tmp_path / "native")
    edited = {**native.source_digests(), "alb_sim/admin.py": "0" * 64}  # not compiled, but read by the build
    assert native.check(_fake_build(tmp_path, modules=edited)) == "the source changed since the build (run `lab compile`)"
    shutil.rmtree(tmp_path / "native")
    other = native.check(_fake_build(tmp_path, abi=".cpython-312-aarch64-linux-gnu.so"))
    assert other is not None and other.startswith("built for .cpython-312-aarch64-linux-gnu.so")


def test_lab_compile_rebuilds_a_build_another_compiler_made_but_it_still_runs(tmp_path: Path) -> None:
    """A mypy upgrade must reach the host's build (mypy 1.13's code leaked memory, #61), but where no
    compiler is installed (the image's runtime stage) the build is still the one to run."""
    installed = native_build.compiler()
    assert installed is not None and installed.startswith("mypy ")
    assert native_build.outdated(_fake_build(tmp_path, compiler=installed)) is None
    shutil.rmtree(tmp_path / "native")
    old = _fake_build(tmp_path, compiler="mypy 1.13.0")
    assert native_build.outdated(old) == f"built by mypy 1.13.0, {installed} is installed"
    assert native.check(old) is None
    shutil.rmtree(tmp_path / "native")
    assert native_build.outdated(_fake_build(tmp_path)) == f"built by an older mypy, {installed} is installed"
    assert native_build.main(["--status", str(tmp_path / "native")]) == 1


def test_lab_compile_says_why_it_rebuilds_and_skips_a_current_build(tmp_path: Path, monkeypatch, capsys) -> None:
    from types import SimpleNamespace

    from lab.cli import native as compile_verb

    built: list[Path] = []
    monkeypatch.setattr(native_build, "build", lambda out, say: built.append(out))
    monkeypatch.setenv("LAB_NATIVE_DIR", str(tmp_path / "native"))
    assert compile_verb.run(SimpleNamespace(force=False)) == 0  # nothing there yet: built, no "rebuilding"
    assert built == [tmp_path / "native"] and "rebuilding" not in capsys.readouterr().out
    _fake_build(tmp_path, compiler="mypy 1.13.0")
    assert compile_verb.run(SimpleNamespace(force=False)) == 0
    assert f"lab: rebuilding: built by mypy 1.13.0, {native_build.compiler()} is installed" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "native")
    _fake_build(tmp_path, compiler=native_build.compiler())
    assert compile_verb.run(SimpleNamespace(force=False)) == 0
    assert "is up to date" in capsys.readouterr().out and len(built) == 2


def test_a_stale_or_broken_build_falls_back_to_the_source_or_fails_when_required(tmp_path: Path) -> None:
    build = _fake_build(tmp_path)  # matches the source, but its runtime library is missing
    probe = "import services.alb_sim.server as s, services.native as n; print(n.state()); print(s.__file__)"
    env = {**os.environ, "LAB_NATIVE_DIR": str(build)}
    env.pop("LAB_NATIVE", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    state, path = out.stdout.splitlines()
    assert state.startswith("source (compiled build does not load: No module named 'nothing__mypyc'")
    assert path.endswith("services/alb_sim/server.py")
    strict = subprocess.run([sys.executable, "-c", probe], env={**env, "LAB_NATIVE": "1"}, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode != 0 and "LAB_NATIVE=1 but compiled build does not load" in strict.stderr


def test_the_in_process_alb_passes_its_server_tests_on_the_source_too() -> None:
    """The source is the reference and the fallback: the in-process ALB's end-to-end tests (HTTP/1.1
    and HTTP/2, TLS, rules, pooling, errors, the access log) run on it in a child process."""
    out = run_on_source("tests/unit/test_alb_server.py", "tests/unit/test_alb_h2.py")
    assert " passed" in out and "failed" not in out


def test_building_without_a_compiler_or_mypyc_says_what_is_missing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(native_build.shutil, "which", lambda name: None)
    assert native_build.main([str(tmp_path / "out")]) == 1
    assert "error: no C compiler: " in capsys.readouterr().err
    monkeypatch.setattr(native_build.importlib.util, "find_spec", lambda name: None)
    assert native_build.main([str(tmp_path / "out")]) == 1
    assert "error: mypyc is not installed for" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert native_build.main(["--bogus"]) == 2


def test_the_modules_that_call_compiled_code_type_check(tmp_path: Path) -> None:
    """Compiled functions check their arguments' types at run time, and the build type-checks only
    the compiled modules. So the whole ALB package, callers too (admin API, config, fallback
    reader, start-up), must pass mypy: a wrong type there would be a TypeError in the lab only."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                             "--python-version=3.11", f"--cache-dir={tmp_path}", "services/alb_sim/",
                             "services/common.py", "services/native.py", "services/native_build.py"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
