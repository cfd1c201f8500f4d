"""`lab compile`: the compiled (mypyc) build of the ALB simulator for this machine's Python.

The lab image compiles its own copy; this one is for what runs on the host: the tests'
in-process ALB and bench/alb.py. See services/native.py."""

from __future__ import annotations

from lab.errors import LabError


def register(verbs) -> None:
    parser = verbs.add_parser("compile", help="compile the ALB simulator's per-request modules for the host (mypyc)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the build matches the source")
    parser.set_defaults(run=run)


def run(args) -> int:
    from services import native, native_build

    out = native.default_dir()
    problem = native_build.outdated(out)
    if problem is None and not args.force:
        print(f"lab: compiled ALB simulator in {out} is up to date")
        return 0
    if problem is not None and (out / native.MANIFEST).exists():  # say why an existing build is replaced
        print(f"lab: rebuilding: {problem.removesuffix(' (run `lab compile`)')}")
    try:
        native_build.build(out, say=lambda message: print(f"lab: {message}", flush=True))
    except (RuntimeError, OSError) as exc:
        raise LabError(str(exc)) from exc
    return 0
