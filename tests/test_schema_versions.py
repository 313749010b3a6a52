"""Schema versions of every SQL store: older databases migrate in place, newer ones are refused.

``fixtures/schemas/v1`` holds the databases release 0.1.0 wrote (made by that code from git
history: see ``fixtures/schemas/make_fixtures.py``), and what it read back from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SnapTradeSchemaVersionError
from aims_snaptrade._sql.schema import (
    _CREATE_VERSIONS,
    MIGRATE_COMMAND,
    VERSIONS_TABLE,
    SQLiteSession,
    StoreSchema,
    ensure_schema,
    read_schema_version,
)
from aims_snaptrade.compliance.audit import AuditKey, PostgresAuditTrail, SQLiteAuditTrail
from aims_snaptrade.compliance.consent import PostgresConsentStore, SQLiteConsentStore
from aims_snaptrade.secrets import Keyring
from aims_snaptrade.secrets.postgres import PostgresSecretStore
from aims_snaptrade.secrets.sqlite import SQLiteSecretStore
from aims_snaptrade.sync.ledger.postgres import PostgresSyncLedger
from aims_snaptrade.sync.ledger.sqlite import SQLiteSyncLedger
from aims_snaptrade.trading.intents import PostgresOrderIntentStore, SQLiteOrderIntentStore
from aims_snaptrade.webhooks.dedupe.postgres import PostgresWebhookDedupeStore
from aims_snaptrade.webhooks.dedupe.sqlite import SQLiteWebhookDedupeStore

HERE = Path(__file__).parent / "fixtures" / "schemas"
V1 = HERE / "v1"
EXPECTED = json.loads((V1 / "expected.json").read_text(encoding="utf-8"))
_spec = importlib.util.spec_from_file_location("make_fixtures", HERE / "make_fixtures.py")
assert _spec is not None and _spec.loader is not None
FIXTURES = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(FIXTURES)
KEYRING = Keyring.parse(FIXTURES.KEYRING)
AUDIT_KEY = AuditKey(FIXTURES.AUDIT_KEY)
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

# store name -> (fixture file, how the current library opens it there)
SQLITE_STORES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "secrets": ("secrets.db", lambda p: SQLiteSecretStore(p, KEYRING)),
    "consent": ("secrets.db", lambda p: SQLiteConsentStore(p)),
    "audit": ("secrets.db", lambda p: SQLiteAuditTrail(p, AUDIT_KEY)),
    "order_intents": ("order-intents.db", lambda p: SQLiteOrderIntentStore(p)),
    "webhook_claims": ("webhook-claims.db", lambda p: SQLiteWebhookDedupeStore(p)),
    "sync_ledger": ("sync-ledger.db", lambda p: SQLiteSyncLedger(p)),
}


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    """A private copy of the 0.1.0 databases (the checked-in files are never opened for writing)."""
    target = tmp_path / "v1"
    shutil.copytree(V1, target)
    return target


def assert_contains(expected: Any, actual: Any, where: str = "") -> None:
    """``actual`` holds everything ``expected`` does (later releases may add fields)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} is gone"
            assert_contains(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), where
        assert len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_contains(e, a, f"{where}[{i}]")
    else:
        assert actual == expected, where


def dump(path: Path) -> list[str]:
    """Every table and row of the database, as SQL."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    """``(version, compatible_from)`` this library writes for each store: what a fresh database records."""
    found = {}
    for store, (_, opener) in SQLITE_STORES.items():
        path = tmp_path_factory.mktemp("fresh") / f"{store}.db"
        opener(path).close()
        found[store] = versions(path)[store]
    return found


def versions(path: Path) -> dict[str, tuple[int, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(f"SELECT store, version, compatible_from FROM {VERSIONS_TABLE}").fetchall()
    return {store.partition(":")[0]: (version, compatible) for store, version, compatible in rows}


def test_the_databases_release_0_1_0_wrote_open_with_this_release_and_keep_every_row(
    v1: Path, current: dict[str, tuple[int, int]]
) -> None:
    secrets = SQLiteSecretStore(v1 / "secrets.db", KEYRING)
    assert {u: secrets.get(u) for u in secrets.user_ids()} == EXPECTED["secrets"]["secrets"]
    assert secrets.pending_rotations() == EXPECTED["secrets"]["pending"]
    secrets.close()

    consent = SQLiteConsentStore(v1 / "secrets.db")
    for user, records in EXPECTED["consent"].items():
        assert_contains(records, [r.to_json() for r in consent.records(user)], f"consent {user}")
    consent.close()

    trail = SQLiteAuditTrail(v1 / "secrets.db", AUDIT_KEY)
    assert_contains(EXPECTED["audit"]["records"], [r.to_json() for r in trail.tail(100)], "audit")
    assert trail.verify().ok is EXPECTED["audit"]["verified"] is True
    trail.close()

    intents = SQLiteOrderIntentStore(v1 / "order-intents.db")
    for coid, intent in EXPECTED["order_intents"]["intents"].items():
        found = intents.get(coid)
        assert found is not None
        assert_contains(intent, json.loads(found.to_json()), coid)
    assert [i.client_order_id for i in intents.pending()] == EXPECTED["order_intents"]["pending"]
    assert intents.claimed_order_ids("acct-1") == EXPECTED["order_intents"]["claimed"]
    intents.close()

    claims = SQLiteWebhookDedupeStore(v1 / "webhook-claims.db")
    for webhook_id, outcome in EXPECTED["webhook_claims"].items():
        assert claims.claim(webhook_id, "new-token", 60) == outcome
    claims.close()

    ledger = SQLiteSyncLedger(v1 / "sync-ledger.db")
    for user, record in EXPECTED["sync_ledger"].items():
        loaded = ledger.load_user(user)
        assert loaded is not None
        assert_contains(record, json.loads(json.dumps(dataclasses.asdict(loaded), default=str)), user)
    assert sorted(ledger.finished_in_batch("batch-1", ["user-1", "user 3"])) == EXPECTED["sync_ledger_batch"]
    ledger.close()

    for name, before in EXPECTED["rows"].items():
        after = FIXTURES.table_counts(v1 / name)
        assert {t: after[t] for t in before} == before, f"{name} lost or gained rows"
        assert VERSIONS_TABLE in after  # (a migration may add tables; it keeps the old ones and their rows)
    recorded = {store: versions(v1 / file) for store, (file, _) in SQLITE_STORES.items()}
    assert {store: found[store] for store, found in recorded.items()} == current


def _write_future(path: Path, store: str, version: int, compatible_from: int) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(_CREATE_VERSIONS.format(versions=VERSIONS_TABLE))
        table = {
            "secrets": "user_secrets",
            "consent": "aims_snaptrade_consents",
            "audit": "aims_snaptrade_audit",
            "order_intents": "aims_snaptrade_order_intents",
            "webhook_claims": "webhook_claims",
            "sync_ledger": "sync_users",
        }[store]
        conn.execute(
            f"INSERT OR REPLACE INTO {VERSIONS_TABLE} VALUES (?, ?, ?, '9.0.0', 0)",
            (f"{store}:{table}", version, compatible_from),
        )


@pytest.mark.parametrize("store", sorted(SQLITE_STORES))
def test_a_schema_from_a_newer_incompatible_release_is_refused_and_left_untouched(
    v1: Path, store: str, current: dict[str, tuple[int, int]]
) -> None:
    file, opener = SQLITE_STORES[store]
    _write_future(v1 / file, store, 99, 99)
    before = dump(v1 / file)
    with pytest.raises(SnapTradeSchemaVersionError) as refused:
        opener(v1 / file)
    assert (refused.value.store, refused.value.found, refused.value.supported) == (store, 99, current[store][0])
    assert "newer aims-snaptrade" in refused.value.message
    assert "Upgrade aims-snaptrade" in refused.value.hint
    assert dump(v1 / file) == before
    assert versions(v1 / file)[store] == (99, 99)


@pytest.mark.parametrize("store", sorted(SQLITE_STORES))
def test_a_newer_schema_that_declares_itself_compatible_is_used_and_not_downgraded(
    v1: Path, store: str, current: dict[str, tuple[int, int]]
) -> None:
    file, opener = SQLITE_STORES[store]
    opener(v1 / file).close()  # migrated to this release's version first, as a newer release would have
    newer = (current[store][0] + 5, current[store][0])  # e.g. a column added later: this release keeps working
    _write_future(v1 / file, store, *newer)
    opener(v1 / file).close()
    assert versions(v1 / file)[store] == newer


def test_a_read_only_open_reads_a_0_1_0_store_and_refuses_a_newer_one(v1: Path) -> None:
    store = SQLiteSecretStore(v1 / "secrets.db", KEYRING, create=False)
    assert store.get("user-1") == EXPECTED["secrets"]["secrets"]["user-1"]
    store.close()
    assert VERSIONS_TABLE not in FIXTURES.table_counts(v1 / "secrets.db")  # read-only: nothing recorded
    _write_future(v1 / "secrets.db", "secrets", 5, 5)
    with pytest.raises(SnapTradeSchemaVersionError):
        SQLiteSecretStore(v1 / "secrets.db", KEYRING, create=False)


def test_migrate_command_brings_every_store_of_the_data_directory_up_to_date(
    v1: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], current: dict[str, tuple[int, int]]
) -> None:
    from aims_snaptrade.cli.main import main

    for name in ("SNAPTRADE_SECRET_STORE_URL", "SNAPTRADE_CONSENT_STORE_URL", "SNAPTRADE_AUDIT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "SNAPTRADE_CLIENT_ID": "AIMS-MIGRATE",
        "SNAPTRADE_CONSUMER_KEY": "migrate-" + uuid.uuid4().hex,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_DATA_DIR": str(v1),  # the fixtures carry the default file names
        "SNAPTRADE_ENCRYPTION_KEYS": FIXTURES.KEYRING,
        "SNAPTRADE_AUDIT_KEY": FIXTURES.AUDIT_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    v1.chmod(0o700)
    assert main(["migrate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-6:] == [f"{store}: up to date" for store in SQLITE_ORDER]
    said = "\n".join(lines[:-6])
    for store in SQLITE_ORDER:  # what happened to each store's tables of 0.1.0
        assert f"the {store} tables in" in said
    assert main(["migrate"]) == 0  # a second run has nothing to do
    assert capsys.readouterr().out.splitlines() == [f"{store}: up to date" for store in SQLITE_ORDER]
    for store, (file, _) in SQLITE_STORES.items():
        assert versions(v1 / file)[store] == current[store]
    newer = current["sync_ledger"][0] + 2
    _write_future(v1 / "sync-ledger.db", "sync_ledger", newer, newer)
    assert main(["migrate"]) == 1
    out = capsys.readouterr().out
    assert "sync_ledger: the sync_ledger tables in" in out
    assert f"schema version {newer}" in out


SQLITE_ORDER = ("secrets", "consent", "audit", "order_intents", "sync_ledger", "webhook_claims")


# --- the shared helper, on a schema with real migrations ------------------------------------------

_TOY = StoreSchema(
    store="toy",
    table="toy_items",
    version=3,
    create=(
        "CREATE TABLE toy_items (id TEXT PRIMARY KEY, body TEXT NOT NULL, note TEXT NOT NULL DEFAULT '')",
        "CREATE TABLE toy_tags (id TEXT NOT NULL, tag TEXT NOT NULL)",
    ),
    migrations={
        1: ("ALTER TABLE toy_items ADD COLUMN note TEXT NOT NULL DEFAULT ''",),
        2: ("CREATE TABLE toy_tags (id TEXT NOT NULL, tag TEXT NOT NULL)",),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.dictionaries(st.text(min_size=1), st.text(), max_size=20), start=st.sampled_from([1, 2]))
def test_migrating_from_any_older_version_keeps_every_row(rows: dict[str, str], start: int) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    session = SQLiteSession(conn)
    conn.execute("CREATE TABLE toy_items (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    conn.executemany("INSERT INTO toy_items VALUES (?, ?)", rows.items())
    if start == 2:  # written by a release that recorded version 2
        for statement in _TOY.migrations[1]:
            conn.execute(statement)
        conn.execute(_CREATE_VERSIONS.format(versions=VERSIONS_TABLE))
        conn.execute(f"INSERT INTO {VERSIONS_TABLE} VALUES ('toy:toy_items', 2, 1, 'old', 0)")
    conn.execute("BEGIN IMMEDIATE")
    assert ensure_schema(session, _TOY, where="memory") == start
    conn.execute("COMMIT")
    assert dict(conn.execute("SELECT id, body FROM toy_items").fetchall()) == rows
    assert {note for (note,) in conn.execute("SELECT note FROM toy_items")} <= {""}
    assert read_schema_version(session, _TOY) == (3, 1)
    conn.execute("SELECT count(*) FROM toy_tags")  # the version-3 table exists


def test_a_failed_migration_leaves_the_old_schema_and_rows() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE toy_items (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    conn.execute("INSERT INTO toy_items VALUES ('a', 'b')")
    broken = dataclasses.replace(_TOY, migrations={1: _TOY.migrations[1], 2: ("CREATE TABLE toy_items (x)",)})
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        ensure_schema(SQLiteSession(conn), broken, where="memory")
    conn.execute("ROLLBACK")  # what every store's set-up transaction does on an exception
    assert read_schema_version(SQLiteSession(conn), _TOY) == (1, 1)
    assert conn.execute("SELECT * FROM toy_items").fetchall() == [("a", "b")]


def test_a_schema_without_a_migration_for_every_older_version_is_a_bug_caught_at_import() -> None:
    with pytest.raises(ValueError, match="no migration"):
        StoreSchema(store="x", table="x", version=2, create=())


# --- PostgreSQL: the same rules, in a schema of our own -------------------------------------------

PG_STORES: dict[str, Callable[[str], Any]] = {
    "secrets": lambda s: PostgresSecretStore(POSTGRES_URL, KEYRING, schema=s),
    "consent": lambda s: PostgresConsentStore(POSTGRES_URL, schema=s),
    "audit": lambda s: PostgresAuditTrail(POSTGRES_URL, AUDIT_KEY, schema=s),
    "order_intents": lambda s: PostgresOrderIntentStore(POSTGRES_URL, schema=s),
    "webhook_claims": lambda s: PostgresWebhookDedupeStore(POSTGRES_URL, schema=s),
    "sync_ledger": lambda s: PostgresSyncLedger(POSTGRES_URL, schema=s),
}


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = "schema_versions_" + uuid.uuid4().hex[:12]
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _pg_counts(schema: str) -> dict[str, int]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
        return {t: conn.execute(f'SELECT count(*) FROM "{schema}"."{t}"').fetchone()[0] for t in tables}  # type: ignore[index]


PG_READS: dict[str, Callable[[Any], object]] = {
    "secrets": lambda st_: {u: st_.get(u) for u in st_.user_ids()},
    "consent": lambda st_: [r.to_json()["disclosure_version"] for r in st_.records("user-1")],
    "audit": lambda st_: (st_.verify().ok, [r.action for r in st_.tail(10)]),
    "order_intents": lambda st_: [i.client_order_id for i in st_.pending()],
    "webhook_claims": lambda st_: st_.claim("wh-pg", "other-token", 60),
    "sync_ledger": lambda st_: sorted(st_.finished_in_batch("batch-1", ["user-1", "user-2"])),
}
PG_EXPECTED: dict[str, object] = {
    "secrets": FIXTURES.USERS,
    "consent": ["disclosure-v1"],
    "audit": (True, ["op"]),
    "order_intents": ["coid-pg"],
    "webhook_claims": "in_progress",
    "sync_ledger": ["user-1"],
}


def _load_postgres_fixture(schema: str) -> None:
    """The tables and rows release 0.1.0 wrote (``fixtures/schemas/v1/postgres.sql``), in ``schema``."""
    dump = (V1 / "postgres.sql").read_text(encoding="utf-8").replace(FIXTURES.PG_PLACEHOLDER, schema)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:  # its own session: the dump resets search_path
        conn.execute(dump.encode())


@pytest.mark.parametrize("store", sorted(PG_STORES))
def test_postgres_tables_of_0_1_0_migrate_in_place_and_a_newer_schema_is_refused(pg_schema: str, store: str) -> None:
    _load_postgres_fixture(pg_schema)
    before = _pg_counts(pg_schema)
    opened = PG_STORES[store](pg_schema)
    assert PG_READS[store](opened) == PG_EXPECTED[store]
    opened.close()
    after = _pg_counts(pg_schema)
    assert {t: after[t] for t in before} == before, "rows lost or invented"
    assert after[VERSIONS_TABLE] == 1
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        (version,) = conn.execute(f'SELECT version FROM "{pg_schema}"."{VERSIONS_TABLE}"').fetchone()  # type: ignore[misc]
        newer = version + 40
        conn.execute(f'UPDATE "{pg_schema}"."{VERSIONS_TABLE}" SET version = %s, compatible_from = %s', (newer, newer))
    with pytest.raises(SnapTradeSchemaVersionError) as refused:
        PG_STORES[store](pg_schema)
    assert (refused.value.store, refused.value.found, refused.value.supported) == (store, newer, version)
    assert {t: n for t, n in _pg_counts(pg_schema).items() if t != VERSIONS_TABLE} == {
        t: n for t, n in after.items() if t != VERSIONS_TABLE
    }


def _open_and_close(store: str, file: str) -> str:
    SQLITE_STORES[store][1](Path(file)).close()
    return store


def test_processes_starting_together_on_0_1_0_files_migrate_once_and_keep_every_row(v1: Path) -> None:
    import concurrent.futures
    import multiprocessing

    jobs = [(store, str(v1 / file)) for store, (file, _) in SQLITE_STORES.items() for _ in range(3)]
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("fork")) as pool:
        assert sorted(pool.map(_open_and_close, *zip(*jobs, strict=True))) == sorted(s for s, _ in jobs)
    for name, before in EXPECTED["rows"].items():
        after = FIXTURES.table_counts(v1 / name)
        assert {t: after[t] for t in before} == before
        assert after[VERSIONS_TABLE] == len({s for s, (f, _) in SQLITE_STORES.items() if f == name})


def test_every_store_of_one_postgres_schema_starting_at_once_migrates_it_once(pg_schema: str) -> None:
    import concurrent.futures

    _load_postgres_fixture(pg_schema)
    before = _pg_counts(pg_schema)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        for opened in pool.map(lambda store: PG_STORES[store](pg_schema), sorted(PG_STORES) * 2):
            opened.close()
    after = _pg_counts(pg_schema)
    assert {t: after[t] for t in before} == before
    assert after[VERSIONS_TABLE] == len(PG_STORES)  # the versions table made once, one row per store


def test_a_postgres_role_that_may_not_migrate_is_told_the_command(pg_schema: str) -> None:
    role = "aims_schema_" + uuid.uuid4().hex[:12]
    _load_postgres_fixture(pg_schema)  # tables of release 0.1.0
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT USAGE ON SCHEMA "{pg_schema}" TO "{role}"')
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{pg_schema}" TO "{role}"')
    as_role = POSTGRES_URL.replace("postgres@", f"{role}@")
    try:
        with pytest.raises(SnapTradeSchemaVersionError) as refused:
            PostgresSecretStore(as_role, KEYRING, schema=pg_schema)
        assert MIGRATE_COMMAND in refused.value.hint
        assert refused.value.store == "secrets"
        PostgresSecretStore(POSTGRES_URL, KEYRING, schema=pg_schema).close()  # what `migrate` does, as the owner
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{pg_schema}" TO "{role}"')
        least = PostgresSecretStore(as_role, KEYRING, schema=pg_schema)  # now current: no DDL needed
        least.put("u", "s")
        least.close()
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{pg_schema}" CASCADE')
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')
