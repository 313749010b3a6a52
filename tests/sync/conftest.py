"""Fixtures of the portfolio-sync tests: an emulator with a shrunk window, ledgers, clients.

PostgreSQL is the real server (override with AIMS_TEST_POSTGRES_URL); every test session uses a
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sync_helpers import LOAD_WINDOW, POSTGRES_URL

from aims_snaptrade.testing import RateLimit, SnapTradeEmulator
from aims_snaptrade.testing.config import ClientCredentials

# The files whose tests run in-process, without the emulator, servers or subprocesses (seconds in all).
_QUICK = frozenset(
    {
        "test_sync_policy_properties.py",
        "test_sync_flow_properties.py",
        "test_sync_ledger_properties.py",
        "test_sync_ledger_conformance.py",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under a mutant (``nox -s mutants``: mutmut runs the tests with ``-x`` in the order it lists
    them), the in-process tests go first, so that a killed mutant fails in seconds rather than after
    the emulator tests. Every other run keeps its order (pytest-randomly's, or the files')."""
    if "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        items.sort(key=lambda item: item.path.name not in _QUICK)


@pytest.fixture
def emu() -> Iterator[SnapTradeEmulator]:
    # A unique client id keeps this emulator's budgets apart from other tests' in a shared Redis.
    client = ClientCredentials(f"SYNC-{uuid.uuid4().hex[:12]}", "sync-test-consumer-key-0000000000000000")
    with SnapTradeEmulator(customer_rate_limit=RateLimit(*LOAD_WINDOW), clients=(client,)) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A schema private to this test session, dropped afterwards."""
    schema = f"aims_sync_test_{uuid.uuid4().hex[:10]}"
    yield schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
