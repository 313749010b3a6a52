"""What each built-in dedupe store promises beyond the shared conformance suite: where its claims
live (file, schema and table, key prefix), how long they are kept there, how it fails, and which
URLs open it."""

from __future__ import annotations

import importlib
import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from webhook_helpers import KEY, POSTGRES_URL, REDIS_URL, drop_schema, payload, signed

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeWebhookDedupeStoreError
from aims_snaptrade.webhooks import (
    MemoryWebhookDedupeStore,
    SQLiteWebhookDedupeStore,
    WebhookReceiver,
    open_webhook_dedupe_store,
)
from aims_snaptrade.webhooks.dedupe.sqlite import _PURGE_EVERY


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _id() -> str:
    return f"details-{uuid.uuid4()}"


# --- the package ---------------------------------------------------------------------------------


def test_the_redis_and_postgres_stores_are_importable_from_the_package_on_first_use() -> None:
    dedupe = importlib.import_module("aims_snaptrade.webhooks.dedupe")
    postgres = importlib.import_module("aims_snaptrade.webhooks.dedupe.postgres")
    redis_module = importlib.import_module("aims_snaptrade.webhooks.dedupe.redis")
    assert dedupe.PostgresWebhookDedupeStore is postgres.PostgresWebhookDedupeStore
    assert dedupe.RedisWebhookDedupeStore is redis_module.RedisWebhookDedupeStore
    with pytest.raises(AttributeError, match=r"^module 'aims_snaptrade.webhooks.dedupe' has no attribute 'Nope'$"):
        dedupe.Nope  # noqa: B018


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory://", "memory:///", "memory:////"])
def test_memory_urls_without_a_path_open_the_memory_store(url: str) -> None:
    assert isinstance(open_webhook_dedupe_store(url), MemoryWebhookDedupeStore)


def test_a_url_without_a_scheme_names_the_setting() -> None:
    with pytest.raises(SnapTradeConfigurationError) as refused:
        open_webhook_dedupe_store("claims.db")
    assert refused.value.message == (
        "the webhook dedupe store URL 'claims.db' has no scheme; write it as scheme://..., e.g. sqlite:///path/to/file.db"
    )


@pytest.mark.parametrize("url", ["memory://x", "memory://X", "memory:///X/", "memory:// ", "memory://a://"])
def test_memory_urls_with_anything_but_slashes_are_refused(url: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="memory webhook dedupe store URL takes no path"):
        open_webhook_dedupe_store(url)


@pytest.mark.parametrize(
    "url",
    ["sqlite://claims.db", "sqlite:///", "sqlite:///claims.db?mode=ro", "sqlite:///claims.db#x", "sqlite:///?"],
)
def test_sqlite_urls_that_are_not_three_slashes_and_a_path_are_refused(url: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match=r"must be sqlite:///relative/path\.db"):
        open_webhook_dedupe_store(url)


def test_a_sqlite_url_opens_the_file_it_names(tmp_path: Path) -> None:
    odd = tmp_path / "a:"
    odd.mkdir()
    for url, path in (
        (f"sqlite:///{tmp_path}/claims.db", tmp_path / "claims.db"),
        (f"sqlite:///{tmp_path}/with%20space.db", tmp_path / "with space.db"),
        (f"sqlite:///{tmp_path}/a://c.db", odd / "c.db"),
    ):
        store = open_webhook_dedupe_store(url)
        try:
            assert isinstance(store, SQLiteWebhookDedupeStore)
            assert store.path.resolve() == path.resolve() and path.exists()
            assert repr(store) == f"SQLiteWebhookDedupeStore({str(store.path)!r})"
        finally:
            store.close()


# --- SQLite --------------------------------------------------------------------------------------


def test_sqlite_claims_are_durable_before_they_are_answered(tmp_path: Path) -> None:
    store = SQLiteWebhookDedupeStore(tmp_path / "claims.db")
    try:
        for step in (lambda: store.claim("w", "a", 60), lambda: store.complete("w", "a", 60)):
            step()
            (synchronous,) = store._db.connection().execute("PRAGMA synchronous").fetchone()
            assert synchronous == 2  # FULL: flushed to disk before COMMIT returns
    finally:
        store.close()


def test_sqlite_expired_claims_are_deleted_as_claims_arrive(tmp_path: Path) -> None:
    """Storage stays bounded: within every run of _PURGE_EVERY claims, expired rows are deleted."""
    clock = Clock(1_000.0)
    store = SQLiteWebhookDedupeStore(tmp_path / "claims.db", clock=clock)
    try:
        for n in range(10):
            assert store.claim(f"lapsed-{n}", "a", 1.0) == "claimed"
        store.claim("done", "a", 1.0)
        store.complete("done", "a", 5.0)
        clock.now += 5.0  # every one of those has expired, "done" at this very instant
        for n in range(_PURGE_EVERY - 11):
            assert store.claim(f"live-{n}", "a", 1_000.0) == "claimed"
        with sqlite3.connect(tmp_path / "claims.db") as reader:
            (count,) = reader.execute("SELECT COUNT(*) FROM webhook_claims").fetchone()
            (lapsed,) = reader.execute(
                "SELECT COUNT(*) FROM webhook_claims WHERE webhook_id LIKE 'lapsed-%'"
            ).fetchone()
        assert (count, lapsed) == (_PURGE_EVERY - 11, 0)
    finally:
        store.close()


def test_sqlite_waits_for_a_held_write_lock_for_busy_timeout_only(tmp_path: Path) -> None:
    store = SQLiteWebhookDedupeStore(tmp_path / "claims.db", busy_timeout=0.3)
    holder = sqlite3.connect(tmp_path / "claims.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(SnapTradeWebhookDedupeStoreError, match=r"SQLite webhook dedupe store .* failed") as busy:
            store.claim("w", "a", 60)
        assert 0.25 < time.monotonic() - started < 5.0
        assert busy.value.retryable
        holder.execute("ROLLBACK")
        assert store.claim("w", "a", 60) == "claimed"
    finally:
        holder.close()
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_closed_store_fails_with_the_dedupe_store_error_and_the_receiver_answers_503(
    kind: str, tmp_path: Path, pg_schema: str
) -> None:
    if kind == "sqlite":
        store = open_webhook_dedupe_store(f"sqlite:///{tmp_path}/claims.db")
        named = f"SQLite webhook dedupe store '{tmp_path}/claims.db' is closed"
    else:
        store = open_webhook_dedupe_store(f"{POSTGRES_URL}?schema={pg_schema}&table=closed_t")
        named = "PostgreSQL webhook dedupe store at postgresql://.* is closed"
    store.close()
    for call in (
        lambda: store.claim("w", "a", 60),
        lambda: store.complete("w", "a", 60),
        lambda: store.release("w", "a"),
    ):
        with pytest.raises(SnapTradeWebhookDedupeStoreError, match=named) as failed:
            call()
        assert type(failed.value) is SnapTradeWebhookDedupeStoreError
    handled: list[object] = []
    response = WebhookReceiver(handled.append, consumer_key=KEY, dedupe=store).handle(*signed(payload()))
    assert (response.status, response.outcome, handled) == (503, "unavailable", [])


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def fresh_schema() -> Iterator[str]:
    schema = f"aims_wh_details_{uuid.uuid4().hex[:10]}"
    yield schema
    drop_schema(schema)


def _tables(schema: str) -> dict[str, list[str]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return tables


def test_postgres_claims_live_in_the_schema_and_table_the_url_names(fresh_schema: str) -> None:
    columns = ["webhook_id", "state", "token", "expires_at"]
    default = open_webhook_dedupe_store(f"{POSTGRES_URL}?schema={fresh_schema}")
    named = open_webhook_dedupe_store(f"{POSTGRES_URL}?schema={fresh_schema}&table=my_claims")
    try:
        assert default.claim("w-default", "a", 60) == "claimed"
        assert named.claim("w-named", "a", 60) == "claimed"
        tables = _tables(fresh_schema)
        assert tables["aims_snaptrade_webhook_claims"] == columns
        assert tables["my_claims"] == columns
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            in_default = conn.execute(
                f'SELECT webhook_id FROM "{fresh_schema}".aims_snaptrade_webhook_claims'
            ).fetchall()
            in_named = conn.execute(f'SELECT webhook_id FROM "{fresh_schema}".my_claims').fetchall()
            versions = conn.execute(
                f'SELECT store, version FROM "{fresh_schema}".aims_snaptrade_schema_versions ORDER BY store'
            ).fetchall()
            names = conn.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE 'aims-snaptrade-%'"
            ).fetchall()
        assert (in_default, in_named) == ([("w-default",)], [("w-named",)])
        assert {("webhook_claims:aims_snaptrade_webhook_claims", 1), ("webhook_claims:my_claims", 1)} <= set(versions)
        assert ("aims-snaptrade-webhook-dedupe-store",) in names
        assert repr(named) == f"PostgresWebhookDedupeStore(table={fresh_schema}.my_claims)"
    finally:
        default.close()
        named.close()


@pytest.mark.parametrize(("query", "label"), [("schema=bad-name", "schema"), ("table=1table", "table")])
def test_postgres_schema_and_table_must_be_plain_identifiers(query: str, label: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match=rf"^invalid PostgreSQL {label} name '[^']+' for the webhook"):
        open_webhook_dedupe_store(f"{POSTGRES_URL}?{query}")


def test_postgres_claims_survive_a_dropped_connection(pg_schema: str) -> None:
    store = open_webhook_dedupe_store(f"{POSTGRES_URL}?schema={pg_schema}&table=dropped_t")

    def drop_connection() -> None:
        pid = store._db.connection().info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    try:
        webhook_id = _id()
        drop_connection()
        assert store.claim(webhook_id, "a", 60) == "claimed"
        drop_connection()
        assert store.complete(webhook_id, "a", 60) is True
        drop_connection()
        assert store.claim(webhook_id, "b", 60) == "processed"
        drop_connection()
        assert store.release(webhook_id, "b") is False
    finally:
        store.close()


def test_postgres_purge_deletes_expired_rows_only(pg_schema: str) -> None:
    from aims_snaptrade.webhooks.dedupe import PostgresWebhookDedupeStore

    store = PostgresWebhookDedupeStore(POSTGRES_URL, schema=pg_schema, table="purge_t")
    try:
        lapsed, done, live = _id(), _id(), _id()
        store.claim(lapsed, "a", 0.05)
        store.claim(done, "a", 60)
        store.complete(done, "a", 0.05)
        store.claim(live, "a", 60)
        time.sleep(0.3)
        assert store.purge_expired() == 2
        assert store.purge_expired() == 0
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            rows = conn.execute(f'SELECT webhook_id FROM "{pg_schema}".purge_t').fetchall()
        assert rows == [(live,)]
    finally:
        store.close()


def test_postgres_gives_up_on_a_silent_server_after_connect_timeout() -> None:
    from aims_snaptrade.webhooks.dedupe import PostgresWebhookDedupeStore

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts the TCP connection, never answers the startup message
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(SnapTradeConfigurationError, match="cannot open the PostgreSQL webhook dedupe store"):
            PostgresWebhookDedupeStore(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout=2)
        assert time.monotonic() - started < 4.5  # libpq's smallest timeout is 2 s; the default is 5 s
    finally:
        silent.close()


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def raw_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def test_redis_keys_are_the_prefix_and_the_id_and_expire_with_the_lease_then_the_retention(
    raw_redis: redis.Redis, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}keys:"
    store = open_webhook_dedupe_store(f"{REDIS_URL}?prefix={prefix}")
    try:
        webhook_id = _id()
        assert store.claim(webhook_id, "tok", 1_000.0) == "claimed"
        assert raw_redis.get(prefix + webhook_id) == b"processing:tok"
        assert 990_000 < raw_redis.pttl(prefix + webhook_id) <= 1_000_000
        assert store.complete(webhook_id, "tok", 2_000.0) is True
        assert raw_redis.get(prefix + webhook_id) == b"done:tok"
        assert 1_990_000 < raw_redis.pttl(prefix + webhook_id) <= 2_000_000
        tiny = _id()
        assert store.claim(tiny, "tok", 0.0001) == "claimed"  # a sub-millisecond lease is 1 ms, not refused
        time.sleep(0.05)
        assert store.claim(tiny, "tok", 60) == "claimed"
    finally:
        store.close()


def test_redis_keys_without_a_prefix_use_the_default_one(raw_redis: redis.Redis) -> None:
    from aims_snaptrade.webhooks.dedupe.redis import DEFAULT_PREFIX

    store = open_webhook_dedupe_store(REDIS_URL)
    webhook_id = _id()
    try:
        assert store.claim(webhook_id, "tok", 60) == "claimed"
        assert raw_redis.get(DEFAULT_PREFIX + webhook_id) == b"processing:tok"
        assert repr(store) == f"RedisWebhookDedupeStore(prefix={DEFAULT_PREFIX!r})"
    finally:
        raw_redis.delete(DEFAULT_PREFIX + webhook_id)
        store.close()


def test_redis_store_uses_a_client_it_is_given(raw_redis: redis.Redis, redis_prefix: str) -> None:
    from aims_snaptrade.webhooks.dedupe import RedisWebhookDedupeStore

    store = RedisWebhookDedupeStore(raw_redis, prefix=f"{redis_prefix}given:")
    webhook_id = _id()
    assert store.claim(webhook_id, "tok", 60) == "claimed"
    store.close()
    assert raw_redis.get(f"{redis_prefix}given:{webhook_id}") == b"processing:tok"  # still usable: not ours to close


def test_redis_a_foreign_value_under_a_claim_key_is_in_progress(raw_redis: redis.Redis, redis_prefix: str) -> None:
    prefix = f"{redis_prefix}foreign:"
    store = open_webhook_dedupe_store(f"{REDIS_URL}?prefix={prefix}")
    try:
        webhook_id = _id()
        raw_redis.set(prefix + webhook_id, b"\xff\xfe not ours", px=60_000)
        assert store.claim(webhook_id, "tok", 60) == "in_progress"
        assert store.complete(webhook_id, "tok", 60) is False
        assert store.release(webhook_id, "tok") is False
    finally:
        store.close()


def test_redis_failures_name_the_cause() -> None:
    store = open_webhook_dedupe_store("redis://127.0.0.1:1/0")
    try:
        for call in (
            lambda: store.claim("w", "a", 60),
            lambda: store.complete("w", "a", 60),
            lambda: store.release("w", "a"),
        ):
            with pytest.raises(SnapTradeWebhookDedupeStoreError, match=r"store failed: .*127\.0\.0\.1:1"):
                call()
    finally:
        store.close()


def test_a_bad_redis_url_is_a_configuration_error_naming_the_problem() -> None:
    with pytest.raises(SnapTradeConfigurationError, match=r"^invalid Redis URL for the webhook dedupe store: Port"):
        open_webhook_dedupe_store("redis://127.0.0.1:notaport/0")


def test_the_redis_store_without_redis_py_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from aims_snaptrade.webhooks.dedupe import RedisWebhookDedupeStore

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis raises ImportError
    with pytest.raises(
        SnapTradeConfigurationError,
        match=r"^the Redis webhook dedupe store needs redis-py: pip install 'aims-snaptrade\[redis\]'",
    ):
        RedisWebhookDedupeStore(REDIS_URL)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_claim_and_a_record_expire_at_the_exact_instant_their_time_runs_out(kind: str, tmp_path: Path) -> None:
    """Like the PostgreSQL store (``expires_at <= clock_timestamp()``): at ``lease_seconds`` the claim is over."""
    clock = Clock(1_000.0)
    store = (
        MemoryWebhookDedupeStore(clock=clock)
        if kind == "memory"
        else SQLiteWebhookDedupeStore(tmp_path / "claims.db", clock=clock)
    )
    try:
        assert store.claim("w", "a", 10.0) == "claimed"
        clock.now = 1_009.5
        assert store.claim("w", "b", 10.0) == "in_progress"
        clock.now = 1_010.0
        assert store.claim("w", "b", 10.0) == "claimed"
        assert store.complete("w", "b", 20.0) is True
        clock.now = 1_029.5
        assert store.claim("w", "c", 10.0) == "processed"
        clock.now = 1_030.0
        assert store.claim("w", "c", 10.0) == "claimed"
    finally:
        store.close()


# --- memory and query strings --------------------------------------------------------------------


def test_memory_expired_claims_are_forgotten_as_claims_arrive() -> None:
    """The memory store's size stays bounded: within every run of its purge period, expired entries go."""
    from aims_snaptrade.webhooks.dedupe.memory import _PURGE_EVERY as MEMORY_PURGE_EVERY

    clock = Clock(1_000.0)
    store = MemoryWebhookDedupeStore(clock=clock)
    for n in range(10):
        store.claim(f"lapsed-{n}", "a", 1.0)
    store.claim("done", "a", 1.0)
    store.complete("done", "a", 5.0)
    clock.now += 5.0  # "done" expires at this very instant: expired
    for n in range(MEMORY_PURGE_EVERY - 11):
        assert store.claim(f"live-{n}", "a", 1_000.0) == "claimed"
    assert repr(store) == f"MemoryWebhookDedupeStore({MEMORY_PURGE_EVERY - 11} entries)"


def test_a_store_url_keeps_the_drivers_query_parameters_and_takes_empty_values_as_given(
    fresh_schema: str, raw_redis: redis.Redis
) -> None:
    name = f"aims-test-{uuid.uuid4().hex[:12]}"
    store = open_webhook_dedupe_store(f"{POSTGRES_URL}?application_name={name}&schema={fresh_schema}&table=q_t")
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            seen = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
        assert seen == (1,)  # the driver got the parameter the store does not read itself
    finally:
        store.close()
    with pytest.raises(SnapTradeConfigurationError, match="invalid PostgreSQL table name ''"):
        open_webhook_dedupe_store(f"{POSTGRES_URL}?schema={fresh_schema}&table=")
    bare = open_webhook_dedupe_store(f"{REDIS_URL}?prefix=")  # an empty prefix: the claim key alone
    webhook_id = _id()
    try:
        assert bare.claim(webhook_id, "tok", 60) == "claimed"
        assert raw_redis.get(webhook_id) == b"processing:tok"
    finally:
        raw_redis.delete(webhook_id)
        bare.close()
