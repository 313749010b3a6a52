"""Key rotation (rotate_keys, the CLI command) and interrupted user-secret rotation reporting."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from secret_store_helpers import POSTGRES_URL, table_for

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeSecretRotationError
from aims_snaptrade.secrets import (
    BatchOutcome,
    Keyring,
    MemorySecretStore,
    PostgresSecretStore,
    SecretStore,
    SQLiteSecretStore,
    check_pending_rotations,
    rotate_keys,
    rotate_keys_command,
)
from aims_snaptrade.settings import Settings

OLD = Keyring.generate("v1")
NEW = OLD.rotated("v2")
USERS = [f"user-{n:03d}" for n in range(120)]


def secret_of(user: str) -> str:
    return f"rotation-secret-of-{user}-x9"


Opener = Callable[[Keyring], SecretStore]


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str) -> Iterator[Opener]:
    """Opens the same backing store with different keyrings (memory: shares the rows)."""
    opened: list[SecretStore] = []
    shared: dict[str, MemorySecretStore] = {}

    def open_with(keyring: Keyring) -> SecretStore:
        store: SecretStore
        if request.param == "memory":
            # A memory store cannot be reopened: swap the codec to emulate a restart with new keys.
            base = shared.setdefault("store", MemorySecretStore(keyring))
            base._codec = MemorySecretStore(keyring)._codec
            store = base
        elif request.param == "sqlite":
            store = SQLiteSecretStore(tmp_path / "s.db", keyring)
        else:
            store = PostgresSecretStore(POSTGRES_URL, keyring, schema=pg_schema, table=table_for(tmp_path))
        opened.append(store)
        return store

    yield open_with
    for store in opened:
        store.close()


def fill(store: SecretStore) -> None:
    for user in USERS:
        store.put(user, secret_of(user))


def assert_all_readable(store: SecretStore) -> None:
    assert store.user_ids() == USERS
    for user in USERS:
        assert store.get(user) == secret_of(user)


def test_rotation_reencrypts_everything_and_is_idempotent(opener: Opener) -> None:
    fill(opener(OLD))
    store = opener(NEW)
    report = rotate_keys(store, batch_size=40)
    assert (report.scanned, report.reencrypted, report.already_current) == (120, 120, 0)
    assert report.batches == 3
    assert report.failed == ()
    assert report.versions_after == {"v2": 120}
    assert report.complete
    assert_all_readable(opener(Keyring.parse(NEW.export().split(",")[0])))  # v2 alone reads everything
    again = rotate_keys(store, batch_size=40)
    assert (again.reencrypted, again.already_current, again.complete) == (0, 120, True)


class Crash(Exception):
    pass


def test_interrupted_rotation_leaves_rows_readable_and_a_rerun_finishes(opener: Opener) -> None:
    fill(opener(OLD))
    store = opener(NEW)
    seen: list[BatchOutcome] = []

    def crash_after_three(batch: BatchOutcome) -> None:
        seen.append(batch)
        if len(seen) == 3:
            raise Crash

    with pytest.raises(Crash):
        rotate_keys(store, batch_size=30, progress=crash_after_three)
    assert store.key_version_counts() == {"v2": 90, "v1": 30}  # type: ignore[attr-defined]
    assert_all_readable(opener(NEW))
    report = rotate_keys(store, batch_size=30)
    assert (report.reencrypted, report.already_current, report.complete) == (30, 90, True)
    assert_all_readable(opener(NEW))


def test_rows_no_key_opens_are_reported_not_touched(opener: Opener) -> None:
    fill(opener(OLD))
    stranger = Keyring.generate("v0")
    opener(stranger).put("user-stray", "stray-secret-123456")
    report = rotate_keys(opener(NEW), batch_size=64)
    assert report.failed == ("user-stray",)
    assert report.reencrypted == 120
    assert report.versions_after == {"v2": 120, "v0": 1}
    assert not report.complete
    assert "user-stray" in report.summary()
    assert "add the key" in report.summary()
    assert opener(stranger).get("user-stray") == "stray-secret-123456"


def test_rotation_never_overwrites_a_concurrent_write(opener: Opener) -> None:
    fill(opener(OLD))
    rotating, writing = opener(NEW), opener(NEW)
    latest: dict[str, str] = {}
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            user = USERS[(n * 7) % len(USERS)]
            value = f"concurrent-{n}-{user}"
            writing.put(user, value)
            latest[user] = value
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = rotate_keys(rotating, batch_size=5)
    finally:
        stop.set()
        thread.join()
    assert report.complete
    assert latest, "the writer made no write during the rotation"
    for user in USERS:
        assert rotating.get(user) == latest.get(user, secret_of(user))


def test_rotation_refuses_unsuitable_stores(tmp_path: Path) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="needs SNAPTRADE_ENCRYPTION_KEYS"):
        rotate_keys(SQLiteSecretStore(tmp_path / "plain.db"))
    with pytest.raises(SnapTradeConfigurationError, match="batch_size"):
        rotate_keys(MemorySecretStore(NEW), batch_size=0)

    class VaultLike:
        def pending_rotations(self) -> list[str]:
            return []

    with pytest.raises(SnapTradeConfigurationError, match="its own tooling"):
        rotate_keys(VaultLike())  # type: ignore[arg-type]


def _settings(url: str, keys: str | None) -> Settings:
    values: dict[str, object] = {
        "client_id": "cid",
        "consumer_key": "ck-0123456789",
        "environment": "sandbox",
        "secret_store_url": url,
    }
    if keys is not None:
        values["encryption_keys"] = keys
    return Settings.build(values)


def test_rotate_keys_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = SQLiteSecretStore(tmp_path / "s.db", OLD)
    fill(store)
    store.close()
    out, err = io.StringIO(), io.StringIO()
    assert rotate_keys_command(_settings(url, NEW.export()), batch_size=20, out=out, err=err) == 0
    text = out.getvalue()
    assert "re-encrypted 120" in text
    assert "v2=120" in text
    assert "may now be removed" in text
    assert err.getvalue() == ""
    for user in USERS[:5]:
        assert secret_of(user) not in text
    for key_text in NEW.export().split(","):
        assert key_text.split(":")[1] not in text


def test_rotate_keys_command_failures(tmp_path: Path) -> None:
    err = io.StringIO()
    assert rotate_keys_command(_settings(f"sqlite:///{tmp_path}/p.db", None), out=io.StringIO(), err=err) == 2
    assert "SNAPTRADE_ENCRYPTION_KEYS" in err.getvalue()
    err = io.StringIO()
    assert rotate_keys_command(_settings("nosuch://x", NEW.export()), out=io.StringIO(), err=err) == 2
    assert "unknown secret store scheme" in err.getvalue()
    for keys in (None, NEW.export()):
        err = io.StringIO()
        assert rotate_keys_command(_settings("memory://", keys), out=io.StringIO(), err=err) == 2
        assert "nothing to rotate" in err.getvalue()
        assert "set SNAPTRADE_ENCRYPTION_KEYS first" not in err.getvalue()
    store = SQLiteSecretStore(tmp_path / "s.db", Keyring.generate("v0"))
    store.put("user-stray", "stray-secret-123456")
    store.close()
    out = io.StringIO()
    url = f"sqlite:///{tmp_path}/s.db"
    assert rotate_keys_command(_settings(url, NEW.export()), out=out, err=io.StringIO()) == 1
    assert "Could not decrypt the secrets of 1 users (user-stray)" in out.getvalue()


def test_check_pending_rotations_reports_every_user_with_the_recovery_path() -> None:
    store = MemorySecretStore(NEW)
    check_pending_rotations(store)  # nothing pending: silent
    for user in ("alice", "bob", "carol"):
        store.put(user, f"secret-of-{user}-0000")
    store.begin_rotation("bob")
    store.begin_rotation("alice")
    with pytest.raises(SnapTradeSecretRotationError) as info:
        check_pending_rotations(store)
    text = str(info.value)
    assert "2 user-secret rotation(s)" in text
    assert "'alice', 'bob'" in text
    assert "delete the SnapTrade user, register it again" in text


def test_no_secret_or_key_reaches_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets = ["log-canary-secret-one-77", "log-canary-secret-two-88"]
    with caplog.at_level(logging.DEBUG):
        plain = SQLiteSecretStore(tmp_path / "s.db")
        plain.put("alice", secrets[0])
        plain.close()
        store = SQLiteSecretStore(tmp_path / "s.db", NEW)
        rotate_keys(store)
        store.begin_rotation("alice")
        store.complete_rotation("alice", secrets[1])
        assert store.get("alice") == secrets[1]
        store.close()
    assert caplog.records, "expected the store to log its warnings"
    for value in [*secrets, *(part.split(":")[1] for part in NEW.export().split(","))]:
        assert value not in caplog.text
