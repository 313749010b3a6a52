"""Settings from the environment: every bad variable named at once, secrets never shown."""

from __future__ import annotations

import pytest

from aims_snaptrade import Settings, SnapTradeConfigurationError

KEY = "ck-test-0123456789abcdef"
GOOD = {
    "SNAPTRADE_CLIENT_ID": "AIMS-TEST",
    "SNAPTRADE_CONSUMER_KEY": KEY,
    "SNAPTRADE_ENVIRONMENT": "sandbox",
}


def test_reads_prefixed_variables_with_types():
    s = Settings.from_env(
        {**GOOD, "SNAPTRADE_READ_TIMEOUT": "2.5", "SNAPTRADE_TRADING_ENABLED": "yes", "SNAPTRADE_ACCOUNT_LIMIT": ""}
    )
    assert s.read_timeout == 2.5
    assert s.trading_enabled is True
    assert s.account_limit is None
    assert s.consumer_key.get_secret_value() == KEY


def test_environment_is_never_defaulted():
    env = dict(GOOD)
    del env["SNAPTRADE_ENVIRONMENT"]
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_ENVIRONMENT is missing"):
        Settings.from_env(env)


def test_one_error_names_every_bad_variable_and_never_the_key():
    env = {
        "SNAPTRADE_CONSUMER_KEY": f" {KEY}",
        "SNAPTRADE_ENVIRONMENT": "prod",
        "SNAPTRADE_READ_TIMEOUT": "-1",
        "SNAPTRADE_RATE_LIMIT_PLAN": "gold",
    }
    with pytest.raises(SnapTradeConfigurationError) as info:
        Settings.from_env(env)
    text = str(info.value) + repr(info.value)
    for variable in (
        "SNAPTRADE_CLIENT_ID",
        "SNAPTRADE_CONSUMER_KEY",
        "SNAPTRADE_ENVIRONMENT",
        "SNAPTRADE_READ_TIMEOUT",
        "SNAPTRADE_RATE_LIMIT_PLAN",
    ):
        assert variable in text
    assert "whitespace" in text
    assert KEY not in text


def test_secrets_hidden_in_repr_str_and_dump():
    s = Settings.from_env(GOOD)
    for rendering in (repr(s), str(s), str(s.model_dump()), s.model_dump_json()):
        assert KEY not in rendering


def test_settings_are_immutable():
    s = Settings.from_env(GOOD)
    with pytest.raises(Exception, match="frozen"):
        s.read_timeout = 1  # type: ignore[misc]
    assert s.model_copy(update={"read_timeout": 1.0}).read_timeout == 1.0


def test_unknown_keyword_override_is_refused():
    with pytest.raises(SnapTradeConfigurationError, match="read_timout"):
        Settings.build({"client_id": "c", "consumer_key": KEY, "environment": "sandbox", "read_timout": 3})


def test_every_setting_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`SNAPTRADE_{name.upper()}`" in doc, name


def test_credentials_can_come_from_mounted_files(tmp_path):
    key_file = tmp_path / "consumer_key"
    key_file.write_text(KEY + "\n")
    env = {**GOOD, "SNAPTRADE_CONSUMER_KEY_FILE": str(key_file)}
    del env["SNAPTRADE_CONSUMER_KEY"]
    assert Settings.from_env(env).consumer_key.get_secret_value() == KEY
    with pytest.raises(SnapTradeConfigurationError, match="both SNAPTRADE_CONSUMER_KEY and"):
        Settings.from_env({**env, "SNAPTRADE_CONSUMER_KEY": KEY})
    with pytest.raises(SnapTradeConfigurationError, match="cannot be read"):
        Settings.from_env({**env, "SNAPTRADE_CONSUMER_KEY_FILE": str(tmp_path / "missing")})
