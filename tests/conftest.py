"""Fixtures for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import aims_snaptrade
from aims_snaptrade.redaction import isolated_registry


def pytest_configure(config: pytest.Config) -> None:
    # .ci/run runs part of the suite against the installed wheel (docs/testing.md, "The installed
    # wheel"): it names the virtual environment, and the package must come from there, not src/.
    installed = os.environ.get("AIMS_SNAPTRADE_INSTALLED")
    if installed:
        imported = Path(aims_snaptrade.__file__).resolve()
        if not imported.is_relative_to(Path(installed).resolve()):
            raise pytest.UsageError(f"aims_snaptrade was imported from {imported}, not from the wheel in {installed}")


@pytest.fixture(autouse=True)
def _redaction_registry_per_test() -> Iterator[None]:
    # What a test registers for redaction is forgotten after it: no test sees another's secrets,
    # so every test passes alone and in any order.
    with isolated_registry(empty=False):
        yield


@pytest.fixture(autouse=True, scope="session")
def _private_user_data_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The embedded stores' default directory is the platform's user data directory
    # (XDG_DATA_HOME on Linux): give the session its own, so no test writes into the real one.
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data-home"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved
