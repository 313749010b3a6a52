"""Fixtures of the emulator tests (the plugin's own fixtures are tested in test_emulator_plugin.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator


@pytest.fixture
def emu() -> Iterator[SnapTradeEmulator]:
    """A fresh emulator with the default configuration."""
    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture
def sdk(emu: SnapTradeEmulator) -> Any:
    """The official SDK against ``emu``, with urllib3 retries off so every failure is visible."""
    return emu.sdk(retries=False)


@pytest.fixture
def alice(emu: SnapTradeEmulator) -> ConnectedUser:
    """A user with one self-directed connection at a trading brokerage."""
    return emu.connect("alice", brokerage="ALPACA")
