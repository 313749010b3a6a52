"""The embedded stores' data directory: one place, owner-only, and never chosen silently in production."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient, Settings, SnapTradeConfigurationError, SnapTradeValidationError
from aims_snaptrade.data_dir import (
    DEFAULT_FILES,
    default_data_dir,
    default_store_url,
    ensure_data_dir,
    prepare_store_locations,
)
from aims_snaptrade.secrets import Keyring, MemorySecretStore
from aims_snaptrade.testing import SnapTradeEmulator
from aims_snaptrade.webhooks import WebhookReceiver

BASE = {"client_id": "AIMS-DATA-DIR", "consumer_key": "data-dir-key-0123456789", "environment": "sandbox"}
URL_SETTINGS = sorted(DEFAULT_FILES)


def test_unset_store_urls_name_files_in_the_platform_data_directory_never_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    values = Settings.build(BASE)
    assert default_data_dir() == tmp_path / "xdg" / "aims-snaptrade"
    for setting, file in DEFAULT_FILES.items():
        assert getattr(values, setting) == f"sqlite:///{tmp_path}/xdg/aims-snaptrade/{file}"
    assert not (tmp_path / "xdg").exists(), "reading settings creates nothing"


def test_a_relative_data_dir_is_made_absolute_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    values = Settings.from_env(
        {"SNAPTRADE_DATA_DIR": "state", **{f"SNAPTRADE_{k.upper()}": v for k, v in BASE.items()}}
    )
    assert values.secret_store_url == f"sqlite:///{tmp_path}/state/secrets.db"


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_the_directory_is_created_owner_only_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        made = ensure_data_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_a_directory_others_may_write_or_another_user_owns_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SnapTradeConfigurationError, match="writable by its group or others"):
        ensure_data_dir(shared)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    assert ensure_data_dir(mine) == mine  # readable by the group is the operator's choice
    if os.getuid() == 0:  # only root can give a directory away; CI runs as root
        os.chown(mine, 65534, 65534)
        with pytest.raises(SnapTradeConfigurationError, match="belongs to another user"):
            ensure_data_dir(mine)
    not_dir = tmp_path / "file"
    not_dir.write_text("")
    with pytest.raises(SnapTradeConfigurationError, match="not a directory"):
        ensure_data_dir(not_dir)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(explicit=st.sets(st.sampled_from(URL_SETTINGS)), opened=st.sets(st.sampled_from(URL_SETTINGS), min_size=1))
def test_production_refuses_every_unset_location_it_would_open_naming_each(
    explicit: set[str], opened: set[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    where = tmp_path_factory.mktemp("prod")
    values = Settings.build(
        {**BASE, "environment": "production", **{name: f"sqlite:///{where}/{name}.db" for name in explicit}}
    )
    unset = sorted(opened - explicit)
    if not unset:
        prepare_store_locations(values, sorted(opened))
        return
    with pytest.raises(SnapTradeConfigurationError) as refused:
        prepare_store_locations(values, sorted(opened))
    named = refused.value.message.rsplit(": ", 1)[1].split(", ")
    assert named == [f"SNAPTRADE_{name.upper()}" for name in unset]
    assert "SNAPTRADE_DATA_DIR" in refused.value.hint
    assert list(where.iterdir()) == []
    # An operator-chosen directory makes the defaults acceptable.
    chosen = values.model_copy(update={"data_dir": str(where / "data")})
    prepare_store_locations(chosen, sorted(opened))
    assert stat.S_IMODE((where / "data").stat().st_mode) == 0o700


def test_a_production_client_on_defaults_is_refused_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with pytest.raises(SnapTradeConfigurationError) as refused:
        SafeSnapTradeClient(**{**BASE, "environment": "production", "trading_enabled": True})
    assert "SNAPTRADE_SECRET_STORE_URL, SNAPTRADE_ORDER_INTENT_STORE_URL" in refused.value.message
    assert not (tmp_path / "xdg").exists()


def test_a_sandbox_client_and_a_receiver_on_defaults_write_only_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    with SnapTradeEmulator() as emu:
        values = Settings.build(
            {
                **BASE,
                "client_id": emu.client_id,
                "consumer_key": emu.consumer_key,
                "base_url": emu.base_url,
                "data_dir": str(data),
                "trading_enabled": True,
                "encryption_keys": Keyring.generate("v1").export(),
            }
        )
        with SafeSnapTradeClient(values) as client:
            client.ensure_user("u1")
            client.sync_portfolio("u1")
        receiver = WebhookReceiver.from_settings(lambda event: None, values)
        receiver.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert {p.name for p in data.iterdir() if not p.name.endswith(("-wal", "-shm"))} == set(DEFAULT_FILES.values())
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_a_store_passed_in_needs_no_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with SafeSnapTradeClient(**{**BASE, "environment": "sandbox"}, secret_store=MemorySecretStore()):
        pass
    assert not (tmp_path / "xdg").exists()


@pytest.mark.parametrize("bad", ["a\0b", "state\0"])
def test_a_malformed_data_dir_is_a_configuration_error_naming_the_variable(bad: str) -> None:
    environ = {f"SNAPTRADE_{name.upper()}": value for name, value in BASE.items()}
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_DATA_DIR"):
        Settings.from_env({**environ, "SNAPTRADE_DATA_DIR": bad})


def test_bad_arguments_to_the_helpers_are_typed_errors() -> None:
    values = Settings.build(BASE)
    with pytest.raises(SnapTradeValidationError, match="unknown store settings"):
        prepare_store_locations(values, ["secret_store"])
    with pytest.raises(SnapTradeValidationError, match="unknown store settings"):
        default_store_url(None, "rate_limit_storage_url")
    with pytest.raises(SnapTradeValidationError, match="NUL"):
        ensure_data_dir("a\0b")
    with pytest.raises(SnapTradeValidationError):
        ensure_data_dir(42)  # type: ignore[arg-type]
