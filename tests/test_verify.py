"""``aims-snaptrade verify`` against the emulator: proves the key, creates nothing, says how to fix."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade.cli.main import main
from aims_snaptrade.secrets import Keyring, SQLiteSecretStore
from aims_snaptrade.testing import SnapTradeEmulator

POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
KEYS = Keyring.generate("v1")


@pytest.fixture(scope="module")
def emu() -> Iterator[SnapTradeEmulator]:
    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture
def env(emu: SnapTradeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A sandbox deployment pointed at the emulator, run from an empty directory that is its data directory."""
    for name in [n for n in os.environ if n.startswith("SNAPTRADE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    values = {
        "SNAPTRADE_CLIENT_ID": emu.client_id,
        "SNAPTRADE_CONSUMER_KEY": emu.consumer_key,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_BASE_URL": emu.base_url,
        "SNAPTRADE_ENCRYPTION_KEYS": KEYS.export(),
        "SNAPTRADE_DATA_DIR": str(tmp_path),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def verify(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["verify", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["exit_code"] == code
    return code, {check["name"]: check for check in document["checks"]}


def failures(checks: dict[str, Any]) -> set[str]:
    return {name for name, check in checks.items() if not check["ok"]}


def test_right_key_passes_wrong_key_fails_and_nothing_is_left_behind(
    env: dict[str, str], tmp_path: Path, emu: SnapTradeEmulator
) -> None:
    # The real command, in a fresh process, as an operator runs it.
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPTRADE_")} | env
    good = subprocess.run(
        [sys.executable, "-m", "aims_snaptrade", "verify", "--json"],
        env=run_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    document = json.loads(good.stdout)
    assert good.returncode == 0, good.stdout + good.stderr
    assert document["ok"] is True
    names = [check["name"] for check in document["checks"]]
    assert names == [
        "settings",
        "encryption keys",
        "secret store",
        "rate-limit storage",
        "start-up guardrails",
        "api status",
        "clock skew",
        "signed request",
    ]
    signed = emu.journal.last(operation="list_snap_trade_users")
    assert signed is not None
    assert signed.status == 200
    wrong_key = "wrong-" + uuid.uuid4().hex + uuid.uuid4().hex
    bad = subprocess.run(
        [sys.executable, "-m", "aims_snaptrade", "verify"],
        env=run_env | {"SNAPTRADE_CONSUMER_KEY": wrong_key},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "FAIL  signed request" in bad.stdout
    assert "1076" in bad.stdout
    assert "SNAPTRADE_CONSUMER_KEY" in bad.stdout
    assert wrong_key not in bad.stdout + bad.stderr
    assert list(tmp_path.iterdir()) == []  # no secret store file, no WAL, nothing


def test_a_trading_service_is_verified_without_creating_its_intent_journal(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SNAPTRADE_TRADING_ENABLED", "true")
    code, checks = verify(capsys)
    assert code == 0, checks
    assert list(tmp_path.iterdir()) == []


def test_an_existing_store_is_read_not_written(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SQLiteSecretStore(tmp_path / "secrets.db", KEYS)
    store.put("ann", "secret-of-ann-123456")
    store.put("bob", "secret-of-bob-123456")
    store.close()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    code, checks = verify(capsys)
    assert code == 0, checks
    assert "2 secrets" in checks["secret store"]["detail"]
    assert "v1: 2" in checks["encryption at rest"]["detail"]
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert after == before


def test_rows_under_a_missing_key_fail_the_encryption_check(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = Keyring.generate("v0")
    store = SQLiteSecretStore(tmp_path / "secrets.db", old)
    store.put("cy", "secret-of-cy-1234567")
    store.close()
    monkeypatch.setenv("SNAPTRADE_ENCRYPTION_KEYS", KEYS.export())  # v1 only: v0 was dropped too early
    code, checks = verify(capsys)
    assert code == 1
    assert failures(checks) == {"encryption at rest"}
    assert "v0" in checks["encryption at rest"]["detail"]
    assert "SNAPTRADE_ENCRYPTION_KEYS" in checks["encryption at rest"]["fix"]


def test_a_wrong_key_under_the_right_name_is_caught(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SQLiteSecretStore(tmp_path / "secrets.db", Keyring.generate("v1"))
    store.put("dee", "secret-of-dee-123456")
    store.close()
    code, checks = verify(capsys)
    assert code == 1
    assert "does not decrypt" in checks["encryption at rest"]["detail"]


def test_unreachable_rate_limit_storage_and_pending_rotation_are_failures(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SQLiteSecretStore(tmp_path / "secrets.db", KEYS)
    store.put("eve", "secret-of-eve-123456")
    store.begin_rotation("eve")
    store.close()
    monkeypatch.setenv("SNAPTRADE_RATE_LIMIT_STORAGE_URL", "redis://127.0.0.1:1/0")
    code, checks = verify(capsys)
    assert code == 1
    assert {"rate-limit storage", "secret store"} <= failures(checks)
    assert "resolve_secret_rotation" in checks["secret store"]["fix"]
    assert "SNAPTRADE_RATE_LIMIT_STORAGE_URL" in (checks["rate-limit storage"]["fix"] or "")


def test_unreadable_settings_exit_2_with_json(env: dict[str, str], monkeypatch, capsys) -> None:
    monkeypatch.delenv("SNAPTRADE_ENVIRONMENT")
    code, checks = verify(capsys)
    assert code == 2
    assert failures(checks) == {"settings"}
    assert "SNAPTRADE_ENVIRONMENT" in checks["settings"]["detail"]


def test_production_uses_the_start_up_guardrails(env: dict[str, str], monkeypatch, capsys) -> None:
    monkeypatch.setenv("SNAPTRADE_ENVIRONMENT", "production")
    monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", "memory://")
    code, checks = verify(capsys)
    assert code == 1
    guardrails = checks["start-up guardrails"]
    assert not guardrails["ok"]
    assert "https://" in guardrails["detail"]
    assert "not persistent" in guardrails["detail"]


def test_a_missing_postgres_table_is_not_created(env: dict[str, str], monkeypatch, capsys) -> None:
    table = f"verify_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", f"{POSTGRES_URL}?table={table}")
    code, checks = verify(capsys)
    assert code == 0, checks
    assert "does not exist yet" in checks["secret store"]["detail"]
    with psycopg.connect(POSTGRES_URL) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone() == (None,)


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    from aims_snaptrade import __version__
    from aims_snaptrade.cli.main import _parser

    subcommands = next(a for a in _parser()._actions if a.dest == "command").choices
    assert "verify" in subcommands
    for argv in (["--help"], *([name, "--help"] for name in subcommands)):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "``" not in text, argv  # no reST markup in terminal help
        if argv[0] in ("--help", "verify"):
            assert "Exit codes" in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"aims-snaptrade {__version__}"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong_key=st.text(alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=20, max_size=64))
def test_no_key_in_any_output(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wrong_key: str
) -> None:
    """Neither the consumer key (right or wrong) nor the encryption keys appear in any report."""
    keys = Keyring.generate("v1")
    monkeypatch.setenv("SNAPTRADE_ENCRYPTION_KEYS", keys.export())
    raw_key = keys.export().split(":", 1)[1]
    for consumer_key, expected in ((env["SNAPTRADE_CONSUMER_KEY"], 0), (wrong_key, 1)):
        monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", consumer_key)
        for argv in (["verify"], ["verify", "--json"]):
            assert main(argv) == expected
            captured = capsys.readouterr()
            for text in (captured.out, captured.err):
                assert consumer_key not in text
                assert raw_key not in text


def test_an_existing_postgres_table_is_read(env: dict[str, str], monkeypatch, capsys) -> None:
    from aims_snaptrade.secrets import PostgresSecretStore

    table = f"verify_{uuid.uuid4().hex[:12]}"
    store = PostgresSecretStore(POSTGRES_URL, KEYS, table=table)
    try:
        store.put("fay", "secret-of-fay-123456")
        monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", f"{POSTGRES_URL}?table={table}")
        code, checks = verify(capsys)
        assert code == 0, checks
        assert "postgresql store opened read-only: 1 secret," in checks["secret store"]["detail"]
        assert "v1: 1" in checks["encryption at rest"]["detail"]
    finally:
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS public."{table}"')


def test_production_passes_start_up_with_environment_variables_alone(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No consent checker is passed anywhere: verify takes the one from_env() opens in production."""
    monkeypatch.setenv("SNAPTRADE_ENVIRONMENT", "production")
    monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", f"sqlite:///{tmp_path}/prod/secrets.db")
    # HTTPS to a closed local port: every start-up rule is met, and nothing leaves the machine.
    monkeypatch.setenv("SNAPTRADE_BASE_URL", "https://127.0.0.2:9/api/v1")
    monkeypatch.setenv("SNAPTRADE_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("SNAPTRADE_AUDIT_KEY", uuid.uuid4().hex + uuid.uuid4().hex)
    (tmp_path / "prod").mkdir()
    code, checks = verify(capsys)
    assert checks["start-up guardrails"]["ok"], checks["start-up guardrails"]
    assert checks["secret store"]["ok"]
    assert code == 1  # SnapTrade (here: nobody) did not answer
    assert not checks["api status"]["ok"]
    assert list((tmp_path / "prod").iterdir()) == []


def test_a_reachable_redis_is_shared_storage(env: dict[str, str], monkeypatch, capsys) -> None:
    from aims_snaptrade.testing import ClientCredentials, EmulatorConfig

    # A client id of its own: the budgets verify's signed call takes in the shared Redis are keyed by it.
    own = ClientCredentials(f"VERIFY-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex + uuid.uuid4().hex)
    with SnapTradeEmulator(EmulatorConfig(clients=(own,))) as emulator:
        monkeypatch.setenv("SNAPTRADE_CLIENT_ID", own.client_id)
        monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", own.consumer_key)
        monkeypatch.setenv("SNAPTRADE_BASE_URL", emulator.base_url)
        monkeypatch.setenv("SNAPTRADE_RATE_LIMIT_STORAGE_URL", "redis://127.0.0.1:6379/0")
        code, checks = verify(capsys)
    assert code == 0, checks
    assert "redis:// answers; budgets are shared by every replica" in checks["rate-limit storage"]["detail"]


def test_a_store_that_cannot_open_stops_before_the_client(env: dict[str, str], tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", f"sqlite:///{tmp_path}/no/such/dir/s.db")
    code, checks = verify(capsys)
    assert code == 1
    assert failures(checks) == {"secret store", "start-up guardrails"}
    assert "does not exist" in checks["secret store"]["detail"]
    assert "not run" in checks["start-up guardrails"]["detail"]
    assert list(tmp_path.iterdir()) == []
