"""The instruction-count benchmark's client script runs each of its clients (without valgrind, briefly)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _instruction_counts() -> object:
    spec = importlib.util.spec_from_file_location("instruction_counts", BENCHMARKS / "instruction_counts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape", ["bench", "production"])
@pytest.mark.parametrize("variant", ["raw", "transport", "call", "ours"])
def test_each_counted_client_makes_its_calls(variant: str, shape: str) -> None:
    module = _instruction_counts()
    users = str(module.WARM_UP + 3)  # type: ignore[attr-defined]
    run = subprocess.run(
        [sys.executable, "-c", module.CHILD, variant, "3", str(BENCHMARKS), shape, users],  # type: ignore[attr-defined]
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
