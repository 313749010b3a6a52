"""Fixtures of the compliance tests: an emulator, a connected user, SQLite and PostgreSQL stores.

PostgreSQL is the real server (127.0.0.1:5432, override with AIMS_TEST_POSTGRES_URL); each test
gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from compliance_helpers import AUDIT_SECRET, POSTGRES_URL

from aims_snaptrade.compliance import AuditKey, SQLiteAuditTrail, SQLiteConsentStore
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator


class Clock:
    """A simulated UTC clock the consent store reads."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def emu() -> Iterator[SnapTradeEmulator]:
    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture
def secrets() -> MemorySecretStore:
    return MemorySecretStore()


@pytest.fixture
def alice(emu: SnapTradeEmulator, secrets: MemorySecretStore) -> ConnectedUser:
    user = emu.connect("alice", brokerage="ALPACA")
    secrets.put(user.user_id, user.user_secret)
    return user


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "compliance.db"


@pytest.fixture
def consents(db_path: Path, clock: Clock) -> Iterator[SQLiteConsentStore]:
    store = SQLiteConsentStore(db_path, clock=clock)
    yield store
    store.close()


@pytest.fixture
def audit_key() -> AuditKey:
    return AuditKey(AUDIT_SECRET)


@pytest.fixture
def trail(db_path: Path, audit_key: AuditKey) -> Iterator[SQLiteAuditTrail]:
    store = SQLiteAuditTrail(db_path, audit_key)
    yield store
    store.close()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"aims_compliance_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def client_kwargs(emu: SnapTradeEmulator, secrets: MemorySecretStore, **overrides: Any) -> dict[str, Any]:
    return {
        "client_id": emu.client_id,
        "consumer_key": emu.consumer_key,
        "environment": "sandbox",
        "base_url": emu.base_url,
        "secret_store": secrets,
        "retry": "none",
        **overrides,
    }


@pytest.fixture
def kwargs(emu: SnapTradeEmulator, secrets: MemorySecretStore) -> Callable[..., dict[str, Any]]:
    return lambda **overrides: client_kwargs(emu, secrets, **overrides)
