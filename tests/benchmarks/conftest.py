from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_benchmark() -> Callable[..., str]:
    """Runs a benchmark script of this tree (``benchmarks/NAME.py ARGS``) and returns its output;
    a non-zero exit fails the test."""

    def run(script: str, *args: str) -> str:
        completed = subprocess.run(
            [sys.executable, f"benchmarks/{script}.py", *args],
            cwd=ROOT,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
        return completed.stdout

    return run
