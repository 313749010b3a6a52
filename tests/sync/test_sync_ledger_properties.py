"""The built-in ledgers beyond the conformance suite: batch progress in chunks, which marks ask for a
listing, bad input named, the URLs of docs/portfolio-sync.md ("The sync ledger"), the files on disk.

The SQL is shared by SQLite and PostgreSQL (``_sql.py``); the properties run on SQLite in memory,
the PostgreSQL specifics (schema, prefix, libpq parameters) on the test server.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_helpers import POSTGRES_URL

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeStoreError, SnapTradeValidationError
from aims_snaptrade.sync import (
    AccountStatus,
    AccountUpdate,
    LedgerChange,
    SQLiteSyncLedger,
    SyncOutcome,
    open_sync_ledger,
)
from aims_snaptrade.sync import ledger as ledger_package
from aims_snaptrade.sync.ledger import PostgresSyncLedger


@pytest.fixture
def ledger() -> SQLiteSyncLedger:
    ledger = SQLiteSyncLedger(":memory:")
    yield ledger  # type: ignore[misc]
    ledger.close()


def _known(ledger: SQLiteSyncLedger, user: str = "u1") -> None:
    """A user listed once, with account a1 on connection c1 (synced at 1000)."""
    update = AccountUpdate("a1", "c1", AccountStatus.ACTIVE, 1000.0, 1000.0, "2026-01-02", ("x",))
    ledger.save_sync(SyncOutcome(user, 1000.0, 1001.0, 1000.0, (update,)))


# --- batch progress ------------------------------------------------------------------------------

_SIZES = st.sampled_from([0, 1, 2, 499, 500, 501, 999, 1000, 1001, 1234])


@settings(max_examples=25, deadline=None)
@given(_SIZES, st.data())
def test_finished_in_batch_answers_for_any_number_of_users(size: int, data: st.DataObject) -> None:
    """Asked in chunks (a statement has a bounded number of parameters): every chunk's users answered."""
    ids = [f"user-{i:05d}" for i in range(size)]
    finished = set(data.draw(st.lists(st.sampled_from(ids), unique=True))) if ids else set()
    finished |= {ids[i] for i in (499, 500, 999, 1000) if i < size}  # the chunk edges
    ledger = SQLiteSyncLedger(":memory:")
    try:
        for user in finished:
            ledger.finish_in_batch("nightly", user, 1.0)
        ledger.finish_in_batch("other-batch", "user-00000", 1.0)
        assert ledger.finished_in_batch("nightly", ids) == finished
        assert ledger.finished_in_batch("nightly", iter(ids)) == finished  # any iterable
        assert ledger.forget_batch("nightly") == len(finished)
        assert ledger.finished_in_batch("nightly", ids) == set()
        assert ledger.finished_in_batch("other-batch", ids) == ({"user-00000"} if size else set())
    finally:
        ledger.close()


def test_a_loaded_record_names_its_user(ledger: SQLiteSyncLedger) -> None:
    _known(ledger, "user-a")
    ledger.mark("user-b", LedgerChange.ACCOUNTS_DIRTY, 5.0)
    assert [ledger.load_user(u).user_id for u in ("user-a", "user-b")] == ["user-a", "user-b"]  # type: ignore[union-attr]


def test_forget_user_counts_every_row_it_removed(ledger: SQLiteSyncLedger) -> None:
    _known(ledger)
    ledger.finish_in_batch("b1", "u1", 1.0)
    ledger.finish_in_batch("b2", "u1", 1.0)
    assert ledger.forget_user("u1") == 4  # the user, one account, two batch entries
    assert ledger.forget_user("u1") == 0
    assert ledger.forget_batch("b1") == 0


# --- marks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "target", "listing"),
    [
        (LedgerChange.HOLDINGS_DIRTY, {"account_id": "a1"}, False),
        (LedgerChange.ACTIVITIES_DIRTY, {"account_id": "a1"}, False),
        (LedgerChange.HOLDINGS_DIRTY, {"account_id": "a-new"}, True),
        (LedgerChange.ACTIVITIES_DIRTY, {"account_id": "a-new"}, True),
        (LedgerChange.CONNECTION_BROKEN, {"connection_id": "c1"}, False),
        (LedgerChange.CONNECTION_BROKEN, {"connection_id": "c-new"}, True),
        (LedgerChange.CONNECTION_REMOVED, {"connection_id": "c1"}, False),
        (LedgerChange.CONNECTION_REMOVED, {"connection_id": "c-new"}, True),
        (LedgerChange.CONNECTION_FIXED, {"connection_id": "c1"}, True),
        (LedgerChange.CONNECTION_FIXED, {"connection_id": "c-new"}, True),
        (LedgerChange.ACCOUNT_REMOVED, {"account_id": "a1"}, True),
        (LedgerChange.ACCOUNT_REMOVED, {"account_id": "a-new"}, True),
        (LedgerChange.ACCOUNTS_DIRTY, {}, True),
    ],
)
def test_which_marks_ask_for_a_new_listing(
    ledger: SQLiteSyncLedger, change: LedgerChange, target: dict[str, str], listing: bool
) -> None:
    """docs/portfolio-sync.md: new accounts and connections, repaired connections, a removed account
    and any mark on an account or connection the ledger has not seen ask for a listing; a mark on a
    known account or a known connection's state change does not."""
    _known(ledger)
    ledger.mark("u1", change, 2000.0, **target)
    user = ledger.load_user("u1")
    assert user is not None
    assert user.dirty_at == (2000.0 if listing else None)
    assert [a.account_id for a in user.accounts] == ["a1"]  # a mark never invents an account
    # The string value of a change is accepted too (a change read back from a queue).
    ledger.mark("u2", change.value, 3000.0, account_id="a", connection_id="c")  # type: ignore[arg-type]
    assert ledger.load_user("u2") is not None


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda lg: lg.mark("", LedgerChange.ACCOUNTS_DIRTY, 1.0), "user_id"),
        (lambda lg: lg.mark("u1", LedgerChange.HOLDINGS_DIRTY, 1.0), "account_id"),
        (lambda lg: lg.mark("u1", LedgerChange.ACTIVITIES_DIRTY, 1.0, connection_id="c1"), "account_id"),
        (lambda lg: lg.mark("u1", LedgerChange.ACCOUNT_REMOVED, 1.0, account_id="bad\nid"), "account_id"),
        (lambda lg: lg.mark("u1", LedgerChange.CONNECTION_BROKEN, 1.0, account_id="a1"), "connection_id"),
        (lambda lg: lg.mark("u1", LedgerChange.CONNECTION_FIXED, 1.0), "connection_id"),
        (lambda lg: lg.mark("u1", LedgerChange.CONNECTION_REMOVED, 1.0), "connection_id"),
        (lambda lg: lg.load_user(""), "user_id"),
        (lambda lg: lg.save_sync(SyncOutcome("", 1.0, 2.0)), "user_id"),
        (
            lambda lg: lg.save_sync(SyncOutcome("u1", 1.0, 2.0, None, (AccountUpdate("", "c", AccountStatus.ACTIVE),))),
            "account_id",
        ),
        (lambda lg: lg.acquire_lease("", "w", 1.0, 2.0), "user_id"),
        (lambda lg: lg.acquire_lease("u1", "", 1.0, 2.0), "owner"),
        (lambda lg: lg.finish_in_batch("", "u1", 1.0), "batch_id"),
        (lambda lg: lg.finish_in_batch("b", "", 1.0), "user_id"),
        (lambda lg: lg.finished_in_batch("", ["u1"]), "batch_id"),
        (lambda lg: lg.forget_batch(""), "batch_id"),
        (lambda lg: lg.forget_user(""), "user_id"),
    ],
)
def test_bad_input_is_refused_naming_what_is_wrong_before_any_write(
    ledger: SQLiteSyncLedger, call: object, names: str
) -> None:
    with pytest.raises(SnapTradeValidationError, match=rf"^{names} "):
        call(ledger)  # type: ignore[operator]
    assert ledger.load_user("u1") is None
    assert ledger.due_users(1e12, 1e12, None, 10) == []


@pytest.mark.parametrize("limit", [0, -1, True, 1.0, "10", None])
def test_due_users_needs_a_positive_whole_limit(ledger: SQLiteSyncLedger, limit: object) -> None:
    with pytest.raises(SnapTradeValidationError, match=rf"^limit must be a positive integer, got {limit!r}\."):
        ledger.due_users(0.0, 0.0, None, limit)  # type: ignore[arg-type]


def test_due_users_pages_one_at_a_time(ledger: SQLiteSyncLedger) -> None:
    for user in ("b", "A-1", "a", "0-user", "c"):  # any id, whatever it sorts before
        ledger.mark(user, LedgerChange.ACCOUNTS_DIRTY, 1.0)
    pages, after = [], None
    while page := ledger.due_users(0.0, 0.0, after, 1):
        pages.append(page)
        after = page[-1]
    assert pages == [["0-user"], ["A-1"], ["a"], ["b"], ["c"]]
    assert ledger.due_users(0.0, 0.0, None, 10) == ["0-user", "A-1", "a", "b", "c"]


def test_save_sync_writes_removed_accounts_gone_and_keeps_other_users_apart(ledger: SQLiteSyncLedger) -> None:
    _known(ledger, "u1")
    _known(ledger, "u2")
    ledger.save_sync(SyncOutcome("u1", 2000.0, 2001.0, 2000.0, (), ("a1",)))
    u1, u2 = ledger.load_user("u1"), ledger.load_user("u2")
    assert u1 is not None and u2 is not None
    assert u1.accounts[0].status is AccountStatus.GONE and u2.accounts[0].status is AccountStatus.ACTIVE
    # An update without cursor ids keeps the stored ones; an empty tuple is stored as none.
    ledger.save_sync(SyncOutcome("u2", 3000.0, 3001.0, None, (AccountUpdate("a1", None, AccountStatus.ACTIVE),)))
    u2 = ledger.load_user("u2")
    assert u2 is not None and u2.accounts[0].cursor_ids == ("x",) and u2.accounts[0].connection_id == "c1"
    cleared = AccountUpdate("a1", None, AccountStatus.ACTIVE, activities_cursor="2026-01-03", cursor_ids=())
    ledger.save_sync(SyncOutcome("u2", 3000.0, 3001.0, None, (cleared,)))
    u2 = ledger.load_user("u2")
    assert u2 is not None and (u2.accounts[0].activities_cursor, u2.accounts[0].cursor_ids) == ("2026-01-03", ())


def test_a_lease_is_released_only_by_its_owner_and_for_that_user(ledger: SQLiteSyncLedger) -> None:
    assert ledger.acquire_lease("u1", "w1", 100.0, 400.0)
    assert ledger.acquire_lease("u2", "w1", 100.0, 400.0)
    ledger.release_lease("u1", "w1")
    assert ledger.acquire_lease("u1", "w2", 101.0, 400.0)
    assert not ledger.acquire_lease("u2", "w2", 101.0, 400.0)


# --- opening ledgers from URLs, and what is on disk ---------------------------------------------


def test_sqlite_urls_relative_absolute_and_percent_encoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_sync_ledger("sqlite:///relative.db")
    absolute = open_sync_ledger(f"sqlite:///{tmp_path}/with%20space.db")
    (tmp_path / "odd:").mkdir()
    odd = open_sync_ledger(f"sqlite:///{tmp_path}/odd://name.db")  # "://" in the path is the path's
    assert isinstance(odd, SQLiteSyncLedger) and odd.path == f"{tmp_path}/odd://name.db"
    odd.close()
    try:
        assert isinstance(relative, SQLiteSyncLedger) and isinstance(absolute, SQLiteSyncLedger)
        assert (relative.path, absolute.path) == ("relative.db", f"{tmp_path}/with space.db")
        assert relative.persistent and absolute.persistent
        relative.save_sync(SyncOutcome("u1", 1.0, 2.0, 1.0))
    finally:
        relative.close()
        absolute.close()
    assert (tmp_path / "relative.db").exists() and (tmp_path / "with space.db").exists()
    assert repr(absolute) == f"SQLiteSyncLedger('{tmp_path}/with space.db')"


@pytest.mark.parametrize("url", ["sqlite:///x.db?mode=ro", "sqlite:///x.db#frag", "sqlite://x.db", "sqlite:///"])
def test_sqlite_urls_with_a_query_fragment_or_no_path_are_refused_with_the_fix(url: str) -> None:
    with pytest.raises(SnapTradeConfigurationError) as caught:
        open_sync_ledger(url)
    text = caught.value.message
    assert f"SQLite sync ledger URL {url!r} must be sqlite:///relative/path.db or sqlite:////absolute/path.db; " in text
    assert text.endswith(
        "set SNAPTRADE_SYNC_LEDGER_URL to sqlite:///path/to/sync.db, postgresql://user@host:5432/dbname or memory://"
    )


def test_memory_urls(tmp_path: Path) -> None:
    for url in ("memory://", "memory:///", "MEMORY://"):
        ledger = open_sync_ledger(url)
        try:
            assert isinstance(ledger, SQLiteSyncLedger) and ledger.persistent is False and ledger.path == ":memory:"
            assert repr(ledger) == "SQLiteSyncLedger(':memory:')"
        finally:
            ledger.close()
    for url in ("memory://somewhere", "memory://X", "memory:///db", "memory://x://"):
        with pytest.raises(SnapTradeConfigurationError) as caught:
            open_sync_ledger(url)
        assert caught.value.message == (
            "a memory sync ledger URL takes no path: use memory://; set SNAPTRADE_SYNC_LEDGER_URL to "
            "sqlite:///path/to/sync.db, postgresql://user@host:5432/dbname or memory://"
        )


def test_a_url_without_a_scheme_names_the_setting() -> None:
    with pytest.raises(SnapTradeConfigurationError) as caught:
        open_sync_ledger("sync.db")
    assert caught.value.message == (
        "SNAPTRADE_SYNC_LEDGER_URL 'sync.db' has no scheme; write it as scheme://..., e.g. sqlite:///path/to/file.db"
    )


def test_a_url_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(SnapTradeConfigurationError) as caught:
        open_sync_ledger(None)  # type: ignore[arg-type]
    assert caught.value.message == (
        "the sync ledger URL must be a string; set SNAPTRADE_SYNC_LEDGER_URL to sqlite:///path/to/sync.db, "
        "postgresql://user@host:5432/dbname or memory://"
    )


def test_the_sqlite_file_keeps_its_tables_under_their_names(tmp_path: Path) -> None:
    """Files outlive versions: a later release reads the tables an earlier one wrote."""
    path = tmp_path / "sync.db"
    ledger = SQLiteSyncLedger(path)
    try:
        _known(ledger)
        ledger.finish_in_batch("b1", "u1", 1.0)
    finally:
        ledger.close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"sync_users", "sync_accounts", "sync_batches"} <= tables
        assert conn.execute("SELECT user_id, account_id FROM sync_accounts").fetchall() == [("u1", "a1")]
        # The schema's version, recorded for the ledger's tables (aims-snaptrade migrate reads it).
        versions = conn.execute("SELECT store, version, compatible_from FROM aims_snaptrade_schema_versions")
        assert versions.fetchall() == [("sync_ledger:sync_users", 1, 1)]
    conn.close()


def test_postgres_url_schema_prefix_and_libpq_parameters(pg_schema: str) -> None:
    """``schema=`` and ``prefix=`` name the tables; every other query parameter goes to libpq."""
    prefix = f"p{uuid.uuid4().hex[:8]}_"
    name = f"aims-ledger-{uuid.uuid4().hex[:8]}"
    url = f"{POSTGRES_URL}?application_name={name}&schema={pg_schema}&prefix={prefix}&connect_timeout=5"
    ledger = open_sync_ledger(url)
    try:
        assert isinstance(ledger, PostgresSyncLedger) and ledger.kind == "postgresql" and ledger.persistent
        assert ledger.schema == pg_schema and repr(ledger) == f"PostgresSyncLedger(schema={pg_schema!r})"
        _known(ledger)  # type: ignore[arg-type]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_name LIKE %s",
                (pg_schema, prefix + "%"),
            ).fetchall()
            assert sorted(t[0] for t in tables) == [prefix + t for t in ("accounts", "batches", "users")]
            apps = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
            assert apps is not None and apps[0] >= 1
    finally:
        ledger.close()


def test_a_postgres_url_without_a_schema_uses_public() -> None:
    prefix = f"p{uuid.uuid4().hex[:10]}_"
    ledger = open_sync_ledger(f"{POSTGRES_URL}?prefix={prefix}")
    direct = PostgresSyncLedger(POSTGRES_URL, prefix=prefix)
    try:
        assert isinstance(ledger, PostgresSyncLedger) and ledger.schema == "public" and direct.schema == "public"
    finally:
        ledger.close()
        direct.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for table in ("users", "accounts", "batches"):
                conn.execute(f'DROP TABLE IF EXISTS public."{prefix}{table}"')


def test_a_blank_schema_or_prefix_in_a_postgres_url_is_refused_not_defaulted() -> None:
    for query, label in (("schema=&prefix=p_", "schema"), ("prefix=", "prefix")):
        with pytest.raises(SnapTradeConfigurationError) as caught:
            open_sync_ledger(f"{POSTGRES_URL}?{query}")
        assert caught.value.message == (
            f"PostgreSQL sync ledger {label} '' must be a plain identifier (letters, digits, underscore)"
        )


def test_postgres_defaults_and_bad_identifiers(pg_schema: str) -> None:
    ledger = PostgresSyncLedger(POSTGRES_URL, schema=pg_schema)
    try:
        ledger.save_sync(SyncOutcome("default-prefix-user", 1.0, 2.0, 1.0))
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            found = conn.execute(
                f'SELECT user_id FROM "{pg_schema}".aims_snaptrade_sync_users WHERE user_id = %s',
                ("default-prefix-user",),
            ).fetchall()
        assert found == [("default-prefix-user",)]
    finally:
        ledger.close()
    for label, kwargs in (
        ("schema", {"schema": "bad-name"}),
        ("prefix", {"prefix": "1x"}),
        ("prefix", {"prefix": "a" * 42}),
    ):
        with pytest.raises(SnapTradeConfigurationError) as caught:
            PostgresSyncLedger(POSTGRES_URL, **kwargs)  # type: ignore[arg-type]
        value = next(iter(kwargs.values()))
        assert caught.value.message == (
            f"PostgreSQL sync ledger {label} {value!r} must be a plain identifier (letters, digits, underscore)"
        )
    longest = PostgresSyncLedger(POSTGRES_URL, schema=pg_schema, prefix="a" * 41)
    longest.close()


def test_an_unreachable_postgres_names_the_ledger_and_the_setting() -> None:
    with pytest.raises(SnapTradeConfigurationError) as caught:
        PostgresSyncLedger("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1)
    text = caught.value.message
    assert text.startswith("cannot use the PostgreSQL sync ledger at postgresql://postgres@127.0.0.1:1/test: ")
    assert text.endswith("; check SNAPTRADE_SYNC_LEDGER_URL")


def test_sqlite_files_that_cannot_be_used_name_the_ledger_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SnapTradeConfigurationError) as caught:
        SQLiteSyncLedger(tmp_path / "missing" / "sync.db")
    assert caught.value.message == (
        f"the directory of the SQLite sync ledger '{tmp_path}/missing/sync.db' does not exist; "
        "create it or fix SNAPTRADE_SYNC_LEDGER_URL"
    )
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 512)
    with pytest.raises(SnapTradeConfigurationError) as caught:
        SQLiteSyncLedger(garbage)
    assert caught.value.message.startswith(f"cannot open the SQLite sync ledger '{garbage}': ")
    assert caught.value.message.endswith("; check SNAPTRADE_SYNC_LEDGER_URL")


def test_a_closed_ledger_says_which_it_is(tmp_path: Path) -> None:
    ledger = SQLiteSyncLedger(tmp_path / "sync.db")
    ledger.close()
    ledger.close()  # idempotent
    with pytest.raises(SnapTradeStoreError, match=rf"^the SQLite sync ledger '{tmp_path}/sync.db' is closed"):
        ledger.load_user("u1")


def test_the_package_names_its_ledgers_lazily() -> None:
    assert ledger_package.PostgresSyncLedger is PostgresSyncLedger
    with pytest.raises(AttributeError, match=r"^module 'aims_snaptrade.sync.ledger' has no attribute 'Nope'$"):
        ledger_package.Nope  # noqa: B018


def _every_write(ledger: SQLiteSyncLedger | PostgresSyncLedger) -> None:
    _known(ledger)  # type: ignore[arg-type]
    ledger.mark("u1", LedgerChange.HOLDINGS_DIRTY, 2000.0, account_id="a1")
    assert ledger.acquire_lease("u1", "w", 1.0, 2.0)
    ledger.release_lease("u1", "w")
    ledger.finish_in_batch("b", "u1", 1.0)
    ledger.forget_batch("b")
    ledger.forget_user("u1")


def test_the_postgres_ledger_writes_durably_with_its_own_settings(
    monkeypatch: pytest.MonkeyPatch, pg_schema: str
) -> None:
    """Its module docs: every method one transaction, durable (``synchronous_commit=on``); errors name
    the sync ledger and ``SNAPTRADE_SYNC_LEDGER_URL``; ``connect_timeout`` reaches the connection."""
    from aims_snaptrade.sync.ledger import postgres

    opened: list[dict[str, object]] = []
    writes: list[bool] = []

    class Watched(postgres.PostgresDatabase):
        def __init__(self, conninfo: str, **kwargs: object) -> None:
            opened.append(kwargs)
            super().__init__(conninfo, **kwargs)  # type: ignore[arg-type]

        def transaction(self, *, durable: bool, lock: str | None = None) -> object:  # type: ignore[override]
            writes.append(durable)
            return super().transaction(durable=durable, lock=lock)

    monkeypatch.setattr(postgres, "PostgresDatabase", Watched)
    ledger = postgres.PostgresSyncLedger(
        POSTGRES_URL, schema=pg_schema, prefix=f"d{uuid.uuid4().hex[:8]}_", connect_timeout=3
    )
    try:
        writes.clear()
        _every_write(ledger)
    finally:
        ledger.close()
    assert opened == [
        {"what": "sync ledger", "schema": pg_schema, "connect_timeout": 3, "setting": "SNAPTRADE_SYNC_LEDGER_URL"}
    ]
    assert len(writes) >= 7 and all(d is True for d in writes)


def test_the_sqlite_ledger_does_not_pay_an_fsync_per_write(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Its module docs: WAL and ``synchronous=NORMAL`` (a lost last commit costs one repeated fetch);
    a busy file is retried up to ``busy_timeout``; errors name the sync ledger and its setting."""
    from aims_snaptrade.sync.ledger import sqlite

    opened: list[dict[str, object]] = []
    writes: list[bool] = []

    class Watched(sqlite.SQLiteDatabase):
        def __init__(self, path: str, **kwargs: object) -> None:
            opened.append(kwargs)
            super().__init__(path, **kwargs)  # type: ignore[arg-type]

        def transaction(self, *, durable: bool, lock: str | None = None) -> object:  # type: ignore[override]
            writes.append(durable)
            return super().transaction(durable=durable, lock=lock)

    monkeypatch.setattr(sqlite, "SQLiteDatabase", Watched)
    for busy, kwargs in ((10.0, {}), (2.5, {"busy_timeout": 2.5})):
        ledger = sqlite.SQLiteSyncLedger(tmp_path / f"sync-{busy}.db", **kwargs)  # type: ignore[arg-type]
        try:
            writes.clear()
            _every_write(ledger)
        finally:
            ledger.close()
        assert opened.pop() == {"what": "sync ledger", "busy_timeout": busy, "setting": "SNAPTRADE_SYNC_LEDGER_URL"}
        assert len(writes) >= 7 and not any(writes)
