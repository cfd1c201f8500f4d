"""bench/alb_path.py keeps working as the simulator's internals change (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_alb_path_relays_every_request_and_prints_its_result_line() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "alb_path.py"), "--requests", "64", "--rounds", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^RESULT alb_path own_us=-?\d+\.\d\d alb_us=\d+\.\d\d floor_us=\d+\.\d\d$", out.stdout, re.M), out.stdout


def test_alb_path_rejects_too_few_requests() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "alb_path.py"), "--requests", "3"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--requests must be at least 16" in out.stderr
