"""Hardening tests: hypothesis profiles, a fresh redaction registry, and the printed counts.

``AIMS_HARDENING_PROFILE=hardening`` (``nox -s hardening``) runs 10,000 examples per property;
the default ``hardening-ci`` profile runs a few dozen so the normal suite stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hardening_helpers import COUNTS

from aims_snaptrade.redaction import isolated_registry


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """An empty redaction registry for the test, the previous one restored after it."""
    with isolated_registry():
        yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COUNTS:
        return
    terminalreporter.section("hardening figures")
    for name, figures in sorted(COUNTS.items()):
        listed = ", ".join(f"{key}={value}" for key, value in figures.items())
        terminalreporter.write_line(f"{name}: {listed}")
