"""The lab CLI and every service type-check (pyproject.toml's [tool.mypy]: lab/ and services/).

The ALB's per-request modules are also compiled by mypyc, which checks them anyway; this keeps the
rest honest too: the topology model's users, the NLB simulator, DNS, the echo service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_errors_in_lab_and_services():
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", "/dev/null"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mypy (exit {result.returncode}):\n{result.stdout}{result.stderr}"
