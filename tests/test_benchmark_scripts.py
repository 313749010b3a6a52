"""The benchmark scripts run (briefly, bounded): instruction_counts.py's clients without valgrind, client_speed.py."""

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


TINY = ["--calls", "3", "--rounds", "1", "--async-calls", "10", "--concurrency", "5", "--cold", "1", "--rss-calls", "3"]


def test_client_speed_prints_every_figure_of_issue_29_with_its_ratio(tmp_path: Path) -> None:
    """A tiny run of client_speed.py (bounded counts, loopback): each figure's line and its JSON ratio."""
    figures = tmp_path / "speed.json"
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "client_speed.py"), *TINY, "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for line in ("sync, per call", "async, 5 in flight", "of it (goal >= 0.8)", "cold start", "peak RSS after 3 calls"):
        assert line in run.stdout
    import json

    results = json.loads(figures.read_text())
    rss = results["peak_rss_after_3_calls"]
    assert rss["raw_mib"] > 10 and rss["ours_mib"] > 10  # a Python process with the SDK imported
    assert rss["ratio"] == rss["ours_mib"] / rss["raw_mib"]
    assert results["async_5_in_flight"]["of_ceiling"] > 0
