"""How ``Settings.from_env`` reads the environment, as properties (docs/configuration.md):

- booleans accept 1/true/yes/on and 0/false/no/off/empty in any case and around spaces; anything
  else is refused naming the variable;
- values are stripped of surrounding spaces, except secrets, whose every character counts;
- an empty optional value means unset; a keyword override of ``None`` leaves the environment's value;
- only the credentials may come from ``*_FILE`` variables;
- one error lists every bad variable with its reason and, where there is one, its fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade import SnapTradeConfigurationError
from aims_snaptrade.settings import Settings

BASE = {
    "SNAPTRADE_CLIENT_ID": "AIMS",
    "SNAPTRADE_CONSUMER_KEY": "consumer-key-0123456789",
    "SNAPTRADE_ENVIRONMENT": "sandbox",
}


def _spelled(word: str) -> st.SearchStrategy[str]:
    """``word`` in any mix of cases, with spaces around it."""
    cased = st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flags: "".join(c.upper() if f else c.lower() for c, f in zip(word, flags, strict=True))
    )
    return st.tuples(st.sampled_from(["", " ", "  "]), cased, st.sampled_from(["", " ", "\t"])).map("".join)


truthy = st.sampled_from(["1", "true", "yes", "on"]).flatmap(_spelled)
falsy = st.sampled_from(["0", "false", "no", "off", ""]).flatmap(_spelled)


@given(text=truthy)
@settings(max_examples=50)
def test_every_spelling_of_true_reads_as_true(text: str) -> None:
    assert Settings.from_env({**BASE, "SNAPTRADE_TRADING_ENABLED": text}).trading_enabled is True


@given(text=falsy)
@settings(max_examples=50)
def test_every_spelling_of_false_reads_as_false(text: str) -> None:
    env = {**BASE, "SNAPTRADE_CONSENT_REQUIRED": text, "SNAPTRADE_TELEMETRY_INCLUDE_USER_IDS": text}
    loaded = Settings.from_env(env)
    assert loaded.consent_required is False
    assert loaded.telemetry_include_user_ids is False


@pytest.mark.parametrize("text", ["maybe", "2", "enabled", "tru"])
def test_a_boolean_that_is_neither_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_TRADING_ENABLED"):
        Settings.from_env({**BASE, "SNAPTRADE_TRADING_ENABLED": text})


def test_the_process_environment_is_read_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SNAPTRADE_READ_TIMEOUT", " 12.5 ")
    loaded = Settings.from_env()
    assert loaded.client_id == "AIMS" and loaded.read_timeout == 12.5


def test_values_are_stripped_but_a_secret_keeps_every_character() -> None:
    loaded = Settings.from_env({**BASE, "SNAPTRADE_RATE_LIMIT_STORAGE_URL": "  memory://  "})
    assert loaded.rate_limit_storage_url == "memory://"
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_CONSUMER_KEY"):
        Settings.from_env({**BASE, "SNAPTRADE_CONSUMER_KEY": " consumer-key-0123456789 "})


def test_an_empty_optional_value_means_unset_and_an_empty_required_one_is_refused() -> None:
    loaded = Settings.from_env({**BASE, "SNAPTRADE_ACCOUNT_LIMIT": "", "SNAPTRADE_ROLLOUT": "  "})
    assert loaded.account_limit is None and loaded.rollout is None
    assert Settings.from_env({**BASE, "SNAPTRADE_ACCOUNT_LIMIT": " 7 "}).account_limit == 7
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_RATE_LIMIT_MODE"):
        Settings.from_env({**BASE, "SNAPTRADE_RATE_LIMIT_MODE": ""})


def test_a_keyword_override_of_none_keeps_the_environments_value() -> None:
    env = {**BASE, "SNAPTRADE_READ_TIMEOUT": "12"}
    assert Settings.from_env(env, read_timeout=None).read_timeout == 12.0
    assert Settings.from_env(env, read_timeout=3).read_timeout == 3.0


def test_only_credentials_come_from_files(tmp_path: Path) -> None:
    path = tmp_path / "environment"
    path.write_text("production\n")
    env = {k: v for k, v in BASE.items() if k != "SNAPTRADE_ENVIRONMENT"}
    with pytest.raises(SnapTradeConfigurationError) as raised:
        Settings.from_env({**env, "SNAPTRADE_ENVIRONMENT_FILE": str(path)})
    assert "SNAPTRADE_ENVIRONMENT is missing" in str(raised.value)
    key_file = tmp_path / "key"
    key_file.write_text("file-consumer-key-0123456789\n")
    env = {k: v for k, v in BASE.items() if k != "SNAPTRADE_CONSUMER_KEY"}
    loaded = Settings.from_env({**env, "SNAPTRADE_CONSUMER_KEY_FILE": str(key_file)})
    assert loaded.consumer_key.get_secret_value() == "file-consumer-key-0123456789"


def test_a_file_path_with_a_nul_is_refused_naming_the_variable() -> None:
    env = {k: v for k, v in BASE.items() if k != "SNAPTRADE_CONSUMER_KEY"}
    with pytest.raises(SnapTradeConfigurationError) as raised:
        Settings.from_env({**env, "SNAPTRADE_CONSUMER_KEY_FILE": "/run/secrets/\x00key"})
    assert str(raised.value).startswith(
        "SNAPTRADE_CONSUMER_KEY_FILE is not a usable file path; set it to the path of the mounted secret file."
    )


def test_one_error_lists_every_problem_with_its_reason_and_fix() -> None:
    with pytest.raises(SnapTradeConfigurationError) as raised:
        Settings.from_env({"SNAPTRADE_READ_TIMEOUT": "-1", "SNAPTRADE_KEY_TYPE": "enterprise"})
    text = str(raised.value)
    assert text.startswith("Invalid SnapTrade settings from environment: ")
    for part in (
        "SNAPTRADE_CLIENT_ID is missing (set SNAPTRADE_CLIENT_ID to the client id from the SnapTrade dashboard)",
        "SNAPTRADE_CONSUMER_KEY is missing (set SNAPTRADE_CONSUMER_KEY to the consumer key",
        "SNAPTRADE_ENVIRONMENT is missing (set SNAPTRADE_ENVIRONMENT to 'sandbox' or 'production'",
        "SNAPTRADE_KEY_TYPE ",
        "(set SNAPTRADE_KEY_TYPE to 'commercial' or 'personal')",
        "SNAPTRADE_READ_TIMEOUT Input should be greater than 0",
    ):
        assert part in text
    assert "Value error, " not in text and "https://errors.pydantic.dev" not in text
    listed = text.split(" Hint: ")[0]
    assert listed.count("; ") == 4  # five problems, each after the one before
    assert "dashboard); SNAPTRADE_CONSUMER_KEY is missing" in listed
    assert listed.endswith("; SNAPTRADE_READ_TIMEOUT Input should be greater than 0.")  # no fix: nothing added


def test_arguments_are_named_as_given_and_a_validator_message_is_kept_plain() -> None:
    with pytest.raises(SnapTradeConfigurationError) as raised:
        Settings.build({"client_id": "AIMS", "consumer_key": "k" * 20, "environment": "sandbox", "base_url": "ftp://x"})
    text = str(raised.value)
    assert text.startswith("Invalid SnapTrade settings from arguments: base_url must start with https://")
    assert "Value error" not in text


@pytest.mark.parametrize("values", [None, ["client_id"], "client_id=AIMS"])
def test_settings_from_something_that_is_not_a_mapping_are_refused_naming_its_type(values: object) -> None:
    with pytest.raises(SnapTradeConfigurationError) as raised:
        Settings.build(values)  # type: ignore[arg-type]
    assert f"Settings need a mapping of names to values, got {type(values).__name__}." in str(raised.value)
