"""Opening stores from URLs and settings; the app's credentials from the environment or files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.redaction import redact
from aims_snaptrade.secrets import (
    EnvCredentials,
    Keyring,
    MemorySecretStore,
    SQLiteSecretStore,
    keyring_from_settings,
    open_secret_store,
    open_secret_store_from_settings,
    read_env_or_file,
)
from aims_snaptrade.settings import Settings


def test_memory_url(keyring: Keyring) -> None:
    store = open_secret_store("memory://", keyring)
    assert isinstance(store, MemorySecretStore)
    assert store.encrypted
    assert isinstance(open_secret_store("MEMORY://"), MemorySecretStore)


def test_sqlite_relative_and_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_secret_store("sqlite:///rel.db")
    assert isinstance(relative, SQLiteSecretStore)
    assert (tmp_path / "rel.db").exists()
    relative.close()
    absolute = open_secret_store(f"sqlite:///{tmp_path}/sub%20dir.db")
    assert isinstance(absolute, SQLiteSecretStore)
    assert absolute.path == tmp_path / "sub dir.db"
    absolute.close()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis://localhost/0", "unknown secret store scheme 'redis'"),
        ("secrets.db", "has no scheme"),
        ("memory://somewhere", "takes no path"),
        ("sqlite://relative.db", "must be sqlite:///"),
        ("sqlite:///", "names no file"),
        ("sqlite:///:memory:", "use memory://"),
        ("sqlite:///x.db?mode=ro", "must be sqlite:///"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, fragment: str) -> None:
    with pytest.raises(SnapTradeConfigurationError) as info:
        open_secret_store(url)
    assert fragment in str(info.value)


def _settings(**values: object) -> Settings:
    base: dict[str, object] = {"client_id": "cid", "consumer_key": "ck-0123456789", "environment": "sandbox"}
    return Settings.build({**base, **values})


def test_open_from_settings_uses_the_keyring(tmp_path: Path, keyring: Keyring) -> None:
    settings = _settings(secret_store_url=f"sqlite:///{tmp_path}/s.db", encryption_keys=keyring.export())
    parsed = keyring_from_settings(settings)
    assert parsed is not None
    assert parsed.versions == keyring.versions
    store = open_secret_store_from_settings(settings)
    assert isinstance(store, SQLiteSecretStore)
    assert store.encrypted
    store.close()
    assert keyring_from_settings(_settings()) is None


def test_bad_keyring_in_settings_is_a_configuration_error(tmp_path: Path) -> None:
    settings = _settings(secret_store_url=f"sqlite:///{tmp_path}/s.db", encryption_keys="v1:tooshort")
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_ENCRYPTION_KEYS"):
        open_secret_store_from_settings(settings)


def test_env_credentials_from_variables() -> None:
    creds = EnvCredentials.from_env({"SNAPTRADE_CLIENT_ID": "client-1", "SNAPTRADE_CONSUMER_KEY": "ck-from-env-42"})
    assert creds.client_id == "client-1"
    assert creds.consumer_key is not None
    assert creds.consumer_key.get_secret_value() == "ck-from-env-42"
    assert creds.encryption_keys is None
    assert "ck-from-env-42" not in repr(creds)
    assert "ck-from-env-42" not in str(creds)
    assert redact("key=ck-from-env-42!") == "key=***!"


def test_env_credentials_from_mounted_files(tmp_path: Path, keyring: Keyring) -> None:
    (tmp_path / "id").write_text("client-from-file\n")
    (tmp_path / "key").write_text("ck-from-file-0042\r\n")
    (tmp_path / "keys").write_text(keyring.export())
    creds = EnvCredentials.from_env(
        {
            "SNAPTRADE_CLIENT_ID_FILE": str(tmp_path / "id"),
            "SNAPTRADE_CONSUMER_KEY_FILE": str(tmp_path / "key"),
            "SNAPTRADE_ENCRYPTION_KEYS_FILE": str(tmp_path / "keys"),
        }
    )
    assert creds.client_id == "client-from-file"
    assert creds.consumer_key == SecretStr("ck-from-file-0042")
    overrides = creds.settings_overrides()
    assert set(overrides) == {"client_id", "consumer_key", "encryption_keys"}
    settings = Settings.from_env({"SNAPTRADE_ENVIRONMENT": "sandbox"}, **overrides)
    assert settings.consumer_key.get_secret_value() == "ck-from-file-0042"
    assert keyring.export() not in repr(creds)


def test_file_keeps_inner_whitespace_for_settings_to_flag(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(" ck-padded \n")
    value = read_env_or_file("SNAPTRADE_CONSUMER_KEY", {"SNAPTRADE_CONSUMER_KEY_FILE": str(tmp_path / "key")})
    assert value == " ck-padded "
    with pytest.raises(SnapTradeConfigurationError, match="whitespace"):
        Settings.from_env({"SNAPTRADE_ENVIRONMENT": "sandbox", "SNAPTRADE_CLIENT_ID": "c"}, consumer_key=value)


def test_env_file_problems_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="keep only one"):
        read_env_or_file("SNAPTRADE_CONSUMER_KEY", {"SNAPTRADE_CONSUMER_KEY": "a", "SNAPTRADE_CONSUMER_KEY_FILE": "b"})
    with pytest.raises(SnapTradeConfigurationError, match="cannot be read"):
        read_env_or_file("SNAPTRADE_CONSUMER_KEY", {"SNAPTRADE_CONSUMER_KEY_FILE": str(tmp_path / "absent")})
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SnapTradeConfigurationError, match="not UTF-8"):
        read_env_or_file("SNAPTRADE_CONSUMER_KEY", {"SNAPTRADE_CONSUMER_KEY_FILE": str(tmp_path / "bin")})
    assert read_env_or_file("SNAPTRADE_CONSUMER_KEY", {}) is None
